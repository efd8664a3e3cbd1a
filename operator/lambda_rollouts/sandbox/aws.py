"""The AWS half of the local sandbox: moto served over HTTP from this process, and its functions.

Contract:
- ``MotoSandbox`` (also via ``start_moto_server``) serves moto on a loopback port picked by the
  OS; ``endpoint_url`` reaches every emulated service (Lambda, STS, IAM, CloudWatch). Starting it
  wipes moto's in-process state and switches Lambda to moto's Docker-free backend, so functions
  can be created and versions published without a Docker engine; ``stop()`` restores the
  previous Lambda setting and closes the port. moto's state and settings are process-wide:
  run one sandbox per process, and not while ``mock_aws`` is active.
- While it runs, ``Invoke`` runs the function's code (``_Invocations``), where moto without
  Docker would answer every call with a 200 and the request's own body: a Python function whose
  package is a .zip is run in this process by ``lambda_runtime.PythonRuntime`` (its answer,
  ``FunctionError: Unhandled`` and the error payload included, is Lambda's); ``Qualifier`` (a
  version, an alias, ``$LATEST``) picks the code run, an alias with ``RoutingConfig`` sends each
  invocation to one of its versions by the weights, at random as Lambda does, and
  ``X-Amz-Executed-Version`` says which. ``DryRun`` runs nothing, ``Event`` runs in the
  background. A function that does not exist is a 404; one the runtime cannot run (another
  language, a container image) gets moto's own answer. Every run invocation counts in
  CloudWatch as Lambda counts it (``_LambdaMetrics``): ``Invocations``, ``Errors`` and
  ``Duration`` in ``AWS/Lambda`` under ``{FunctionName}``, ``{FunctionName, Resource}`` when
  qualified, and ``{FunctionName, Resource=<function>:<alias>, ExecutedVersion}`` through an
  alias, published once a second.
- ``seed_demo_function`` creates an execution role, a Python function from an in-memory zip,
  publishes versions 1 and 2 (with different code, as Lambda only publishes a new version when
  something changed) and an alias on version 1. It returns the names and ARNs it made.
- ``seed_hook_functions`` creates the hook function ``examples/hooks.yaml`` names:
  ``checkout-smoke``, version 1 and alias ``live`` on it, a smoke test that raises for the
  versions in ``SMOKE_FAILS`` (version 2: the example fails in the sandbox, as it says) and
  passes for any other.
- ``publish_demo_release`` ships release N of that function the way a team does: new code, then
  ``PublishVersion`` (description ``release N``); it returns the new version's number. The demo's
  second scenario publishes release 3 with it, and the rollback benchmark its bad versions.
  ``publish_next_release`` does the same with the next version's number as N (what
  ``lambda-rollouts sandbox publish`` runs). ``release_zip(N, fail_rate)`` is release N's code:
  it answers ``{"release": N}``, and with ``fail_rate`` raises for that share of its
  invocations, evenly spread (every fourth for 0.25), so an error rate reads back exactly.
- ``AliasTraffic`` is the alias's clients: a daemon thread invoking it ``per_second`` times a
  second through the emulator's own ``Invoke`` (in-process, no HTTP), so each version's code
  decides how its share of the traffic fares and CloudWatch has Lambda's metrics to show.
- Every client made here carries ``SANDBOX_CREDENTIALS`` explicitly; the process environment is
  left alone. ``sandbox_session`` gives a boto3 session with the same dummy credentials, and with
  ``endpoint_url`` one whose clients reach the emulator without being told (the operator's).

moto validates few of Lambda's alias rules (weight range, ``$LATEST``...); the project enforces
them itself (``lambda_rollouts.aws.weights``) and tests them on ``FakeLambda``. The one the
operator's safety rests on, ``RevisionId`` (a new one per update; a write with a stale one is
refused with 412), the sandbox adds to moto while it runs (``_AliasRevisions``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import tempfile
import textwrap
import threading
import time
import urllib.request
import uuid
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import unquote

import boto3
import botocore.session
from moto.awslambda.exceptions import LambdaClientError, PreconditionFailedException
from moto.awslambda.models import LambdaAlias
from moto.awslambda.responses import LambdaResponse
from moto.awslambda.utils import get_backend
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.exceptions import JsonRESTError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from lambda_rollouts.sandbox.lambda_runtime import FunctionCode, Invocation, PythonRuntime, can_run
from lambda_rollouts.sandbox.wsgi import KeepAliveWsgiServer

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_lambda import LambdaClient

LOOPBACK = "127.0.0.1"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}
# moto's server mode reads its Lambda backend choice from this config, not from mock_aws(config=).
_DOCKER_FREE_LAMBDA: dict[str, Any] = {"lambda": {"use_docker": False}}
SMOKE_FUNCTION = "checkout-smoke"
SMOKE_ALIAS = "live"
# The versions of checkout-api whose smoke test fails, and how: examples/hooks.yaml rolls out 2.
SMOKE_FAILS: Final[Mapping[str, str]] = {"2": "POST /cart answered 502"}
logger = logging.getLogger(__name__)
# A CloudWatch dimension set: (name, value) pairs.
Dimensions = tuple[tuple[str, str], ...]
_ASSUME_ROLE_BY_LAMBDA = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


class MotoSandbox:
    """moto on a loopback port of this process; a context manager."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self._host, self._port = host, port
        self._server: KeepAliveWsgiServer | None = None
        self._endpoint_url: str | None = None
        self._previous_lambda_config: Any = None

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("the moto sandbox is not running")
        return self._endpoint_url

    @property
    def running(self) -> bool:
        return self._endpoint_url is not None

    def start(self) -> Self:
        if self.running:
            return self
        # moto's app over a keep-alive server: see lambda_rollouts.sandbox.wsgi for why.
        self._server = KeepAliveWsgiServer(
            DomainDispatcherApplication(create_backend_app), self._host, self._port
        )
        self._server.start()
        host, port = self._server.address
        self._endpoint_url = f"http://{host}:{port}"
        _AliasRevisions.enforce()
        _Invocations.enforce()
        self._moto_api("reset", {})
        self._previous_lambda_config = self._moto_api("config")["lambda"]
        self._moto_api("config", _DOCKER_FREE_LAMBDA)
        return self

    def stop(self) -> None:
        if not self.running:
            return
        try:
            self._moto_api("config", {"lambda": self._previous_lambda_config})
        finally:
            _AliasRevisions.restore()
            _Invocations.restore()
            if self._server is not None:
                self._server.stop()
                self._server = None
            self._endpoint_url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _moto_api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call moto's own control API (``/moto-api/...``): GET without a body, POST with one."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/{path}",
            data=data,
            method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
        return json.loads(payload) if payload else None


class _AliasRevisions:
    """Lambda's alias ``RevisionId`` rules, which moto leaves out, while a sandbox runs.

    Lambda gives an alias a new ``RevisionId`` on every update and refuses an ``UpdateAlias`` whose
    ``RevisionId`` is not the current one (412 ``PreconditionFailedException``); moto keeps the
    first id forever and ignores the parameter. The operator's writes rely on the rule to never
    overwrite someone else's change, so the sandbox has it too. moto is process-wide: the rule is
    put in on start and taken out on stop.
    """

    _originals: tuple[Any, Any] | None = None

    @classmethod
    def enforce(cls) -> None:
        if cls._originals is not None:
            return
        original_update, original_response = LambdaAlias.update, LambdaResponse.update_alias

        def update(alias: LambdaAlias, *args: Any, **kwargs: Any) -> None:
            original_update(alias, *args, **kwargs)
            alias.revision_id = str(uuid.uuid4())

        def update_alias(response: LambdaResponse) -> Any:
            wanted = json.loads(response.body or "{}").get("RevisionId")
            if wanted:
                function_name = unquote(response.path.rsplit("/")[-3])
                alias_name = unquote(response.path.rsplit("/", 2)[-1])
                current = response.backend.get_alias(alias_name, function_name)
                if current.revision_id != wanted:
                    raise PreconditionFailedException(
                        "The Revision Id provided does not match the latest Revision Id. "
                        "Call the GetAlias API to retrieve the latest Revision Id"
                    )
            return original_response(response)

        cls._originals = (original_update, original_response)
        LambdaAlias.update = update  # type: ignore[method-assign,assignment]
        LambdaResponse.update_alias = update_alias  # type: ignore[method-assign,assignment]

    @classmethod
    def restore(cls) -> None:
        if cls._originals is None:
            return
        LambdaAlias.update, LambdaResponse.update_alias = cls._originals  # type: ignore[method-assign]
        cls._originals = None


class _Invocations:
    """Lambda's ``Invoke`` running the function's code, while a sandbox runs (see the module docstring).

    moto's Docker-free backend answers every ``Invoke`` with a 200 and the request's body, whether
    the function exists or not: a hook could never fail. Its ``invoke`` is replaced on start and
    put back on stop, as ``_AliasRevisions`` does with the alias updates. So is the reading of
    the request's ``Qualifier``: moto looks for ``qualifier`` (never in the query string, where
    the SDKs put ``Qualifier``, then in the event itself) and so always runs ``$LATEST``.
    """

    _original: Any = None
    _original_response: Any = None
    runtime = PythonRuntime()
    metrics: _LambdaMetrics | None = None
    # Lambda picks the version of a weighted alias at random for each invocation.
    routing = random.Random()

    @classmethod
    def enforce(cls) -> None:
        if cls._original is not None:
            return
        cls._original, cls._original_response = LambdaSimpleBackend.invoke, LambdaResponse.invoke
        cls.runtime.clear()
        cls.metrics = _LambdaMetrics()
        cls.metrics.start()
        original_response = cls._original_response

        def invoke(
            backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, answer: Any
        ) -> bytes | str | None:
            return cls.invoke(backend, function_name, qualifier or None, body, headers, answer)

        def invoke_response(response: LambdaResponse) -> Any:
            # What moto reads as the qualifier: the request's, or none (an empty one).
            response.querystring["qualifier"] = response.querystring.get("Qualifier") or [""]
            return original_response(response)

        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]
        LambdaResponse.invoke = invoke_response  # type: ignore[method-assign]

    @classmethod
    def restore(cls) -> None:
        if cls._original is None:
            return
        LambdaSimpleBackend.invoke = cls._original  # type: ignore[method-assign]
        LambdaResponse.invoke = cls._original_response  # type: ignore[method-assign]
        cls._original = cls._original_response = None
        if cls.metrics is not None:
            cls.metrics.stop()
            cls.metrics = None
        cls.runtime.clear()

    @classmethod
    def invoke(
        cls,
        backend: Any,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: dict[str, str],
    ) -> bytes | str | None:
        """moto's ``invoke``: the payload to answer with; Lambda's headers into ``response_headers``."""
        name, qualifier = _split_qualifier(function_name, qualifier)
        # Raises moto's 404 (ResourceNotFoundException) for a function, version or alias that is not there.
        function = backend.get_function(name, qualifier)
        alias = (
            qualifier
            if qualifier is not None and qualifier != "$LATEST" and not qualifier.isdigit()
            else None
        )
        executed = cls._route(backend, name, alias) if alias is not None else function
        if not can_run(executed.run_time, executed.package_type, executed.code_bytes):
            return cls._original(backend, function_name, qualifier, body, headers, response_headers)  # type: ignore[no-any-return]
        event = _decode_event(body)
        invocation_type = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type == "DryRun":
            return b""
        code = _function_code(executed)
        dimensions: list[Dimensions] = [(("FunctionName", code.function_name),)]
        if qualifier is not None:
            dimensions.append((("FunctionName", code.function_name), ("Resource", f"{name}:{qualifier}")))
        if alias is not None:
            dimensions.append(
                (
                    ("FunctionName", code.function_name),
                    ("Resource", f"{name}:{qualifier}"),
                    ("ExecutedVersion", code.version),
                )
            )
        place = (backend.account_id, backend.region_name)

        def run() -> Invocation:
            invocation = cls.runtime.invoke(code, event)
            if cls.metrics is not None:
                cls.metrics.record(place, dimensions, invocation)
            return invocation

        response_headers["x-amz-executed-version"] = code.version
        if invocation_type == "Event":
            threading.Thread(target=run, name=f"lambda event {code.function_name}", daemon=True).start()
            return b""
        invocation = run()
        if invocation.function_error is not None:
            response_headers["x-amz-function-error"] = invocation.function_error
        response_headers["Content-Length"] = str(len(invocation.payload))
        return invocation.payload

    @classmethod
    def _route(cls, backend: Any, name: str, alias_name: str) -> Any:
        """The version an invocation of the alias runs: one of its weighted versions, or its primary."""
        alias = backend.get_alias(alias_name, name)
        weights: Mapping[str, float] = (alias.routing_config or {}).get("AdditionalVersionWeights") or {}
        draw = cls.routing.random()
        for version, weight in weights.items():
            if draw < weight:
                return backend.get_function(name, version)
            draw -= weight
        return backend.get_function(name, alias.function_version)


def _split_qualifier(function_name: str, qualifier: str | None) -> tuple[str, str | None]:
    """(name, qualifier) from a name, ``name:qualifier`` or an ARN; one in the name comes first, as
    in moto's lookup."""
    tail = function_name.split(":function:", 1)[-1] if function_name.startswith("arn:") else function_name
    name, _, in_name = tail.partition(":")
    return name, in_name or qualifier


def _decode_event(body: Any) -> Any:
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        raise LambdaClientError(
            "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
        ) from exc


def _function_code(function: Any) -> FunctionCode:
    version = str(function.version)
    arn = function.function_arn if version != "$LATEST" else f"{function.function_arn}:$LATEST"
    return FunctionCode(
        function_name=function.function_name,
        version=version,
        function_arn=arn,
        handler=function.handler or "",
        package=function.code_bytes,
        code_sha256=function.code_sha_256,
        timeout_seconds=float(function.timeout),
        memory_mb=int(function.memory_size),
    )


@dataclass
class _Tally:
    """Invocations of one dimension set since the last publication."""

    at: datetime
    invocations: int = 0
    errors: int = 0
    duration_sum: float = 0.0
    duration_min: float = math.inf
    duration_max: float = 0.0

    def add(self, invocation: Invocation) -> None:
        self.invocations += 1
        self.errors += invocation.errored
        self.duration_sum += invocation.duration_ms
        self.duration_min = min(self.duration_min, invocation.duration_ms)
        self.duration_max = max(self.duration_max, invocation.duration_ms)

    def metric_data(self, dimensions: Dimensions) -> list[dict[str, Any]]:
        named = [{"Name": name, "Value": value} for name, value in dimensions]
        common = {"Dimensions": named, "Timestamp": self.at}
        durations = {
            "SampleCount": float(self.invocations),
            "Sum": self.duration_sum,
            "Minimum": self.duration_min,
            "Maximum": self.duration_max,
        }
        return [
            {"MetricName": "Invocations", "Value": float(self.invocations), "Unit": "Count", **common},
            {"MetricName": "Errors", "Value": float(self.errors), "Unit": "Count", **common},
            {"MetricName": "Duration", "StatisticValues": durations, "Unit": "Milliseconds", **common},
        ]


class _LambdaMetrics:
    """Lambda's metrics of the invocations run, into moto's CloudWatch once a second.

    One datapoint per metric and dimension set per second, whatever the traffic: CloudWatch sums
    them on reading, and moto scans every datapoint it holds on each GetMetricData.
    """

    INTERVAL_SECONDS: Final = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[tuple[tuple[str, str], Dimensions], _Tally] = {}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._publish_every_interval, name="lambda-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def record(
        self, place: tuple[str, str], dimension_sets: list[Dimensions], invocation: Invocation
    ) -> None:
        """Count one invocation under each dimension set, in ``place`` (account, region)."""
        # moto keeps metric times as naive UTC.
        now = datetime.now(UTC).replace(tzinfo=None)
        with self._lock:
            for dimensions in dimension_sets:
                self._tallies.setdefault((place, dimensions), _Tally(now)).add(invocation)

    def publish(self) -> None:
        with self._lock:
            tallies, self._tallies = self._tallies, {}
        by_place: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for (place, dimensions), tally in tallies.items():
            by_place.setdefault(place, []).extend(tally.metric_data(dimensions))
        for (account_id, region), data in by_place.items():
            cloudwatch_backends[account_id][region].put_metric_data("AWS/Lambda", data)

    def _publish_every_interval(self) -> None:
        while not self._stopped.wait(self.INTERVAL_SECONDS):
            try:
                self.publish()
            except Exception:  # the next second tries again; the sandbox carries on
                logger.exception("could not publish the sandbox's Lambda metrics")


class AliasTraffic:
    """Clients of an alias: ``per_second`` invocations a second through the emulator's own ``Invoke``.

    Runs in a daemon thread from ``start()`` to ``stop()``, in a sandbox started in this process
    (``MotoSandbox``): each invocation is the one an ``Invoke`` of ``function_name:alias`` makes,
    without HTTP (so a version's code runs, and counts in CloudWatch, as with any client).
    ``invocations`` and ``errors`` count them per executed version. A failed call (the alias gone)
    is logged and the traffic carries on.
    """

    TICK_SECONDS: Final = 1.0

    def __init__(
        self,
        region: str,
        function_name: str,
        alias: str,
        per_second: float,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
    ) -> None:
        self.region, self.function_name, self.alias = region, function_name, alias
        self.per_second = per_second
        self.account_id = account_id
        self.invocations: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._event = json.dumps({"path": "/checkout", "source": "lambda-rollouts sandbox traffic"})
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="alias-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def invoke_once(self) -> None:
        answer: dict[str, str] = {}
        try:
            get_backend(self.account_id, self.region).invoke(
                self.function_name, self.alias, self._event, {}, answer
            )
        except JsonRESTError as exc:
            if not self._failing:
                logger.warning("traffic to %s:%s failed: %s", self.function_name, self.alias, exc.message)
            self._failing = True
            return
        self._failing = False
        version = answer.get("x-amz-executed-version", "")
        self.invocations[version] += 1
        if "x-amz-function-error" in answer:
            self.errors[version] += 1

    def _run(self) -> None:
        owed = 0.0
        next_at = time.monotonic()
        while not self._stopped.is_set():
            owed += self.per_second * self.TICK_SECONDS
            for _ in range(int(owed)):
                if self._stopped.is_set():
                    return
                self.invoke_once()
            owed -= int(owed)
            # A steady rate, whatever the invocations took; after a stall, no burst to catch up.
            next_at = max(next_at + self.TICK_SECONDS, time.monotonic() - self.TICK_SECONDS)
            self._stopped.wait(max(0.0, next_at - time.monotonic()))


def start_moto_server(host: str = LOOPBACK, port: int = 0) -> MotoSandbox:
    """A started ``MotoSandbox``; stop it (or use it as a context manager) when done."""
    return MotoSandbox(host, port).start()


def sandbox_session(region: str | None = None, *, endpoint_url: str | None = None) -> boto3.session.Session:
    """A boto3 session holding the sandbox's dummy credentials (nothing read from the environment).

    With ``endpoint_url``, the session's own shared configuration names it (``endpoint_url`` of its
    profile, as ``~/.aws/config`` would), so every client it makes reaches the emulator without
    being told, by botocore's own endpoint resolution: how the sandbox points the operator's
    clients at moto. ``AWS_ENDPOINT_URL*`` variables, when set, still come first, as in every SDK.
    """
    core = None
    if endpoint_url is not None:
        core = botocore.session.Session(profile="default")
        handle, path = tempfile.mkstemp(prefix="lambda-rollouts-aws-", suffix=".ini")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as config:
                config.write(f"[default]\nendpoint_url = {endpoint_url}\n")
            core.set_config_variable("config_file", path)
            # Read now and kept by the session, so the file is gone before the session is used.
            core.full_config  # noqa: B018
        finally:
            os.remove(path)
    return boto3.session.Session(
        aws_access_key_id=SANDBOX_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=SANDBOX_CREDENTIALS["aws_secret_access_key"],
        aws_session_token=SANDBOX_CREDENTIALS["aws_session_token"],
        region_name=region,
        botocore_session=core,
    )


def seed_demo_function(
    endpoint_url: str | None,
    region: str,
    name: str = "checkout-api",
    alias: str | None = "live",
    *,
    session: boto3.session.Session | None = None,
) -> dict[str, str]:
    """Create a function with versions 1 and 2 and ``alias`` on version 1; return what was made.

    ``endpoint_url=None`` uses the SDK's default endpoint (for moto's in-process ``mock_aws``);
    ``alias=None`` creates no alias; ``session`` defaults to ``sandbox_session(region)`` (passing
    one that is reused saves loading the service models again).
    """
    session = session or sandbox_session(region)
    iam: IAMClient = session.client("iam", region_name=region, endpoint_url=endpoint_url)
    lambda_client: LambdaClient = session.client("lambda", region_name=region, endpoint_url=endpoint_url)
    role_arn = _execution_role(iam, f"{name}-execution")

    function_arn = lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role_arn,
        Handler="index.handler",
        Code={"ZipFile": release_zip(release=1)},
        Description="lambda-rollouts sandbox demo",
    )["FunctionArn"]
    stable_version = lambda_client.publish_version(FunctionName=name, Description="release 1")["Version"]
    canary_version = _publish_release(lambda_client, name, release=2)
    seeded = {
        "region": region,
        "function_name": name,
        "function_arn": function_arn,
        "role_arn": role_arn,
        "stable_version": stable_version,
        "canary_version": canary_version,
    }
    if endpoint_url is not None:
        seeded["endpoint_url"] = endpoint_url
    if alias is not None:
        created = lambda_client.create_alias(FunctionName=name, Name=alias, FunctionVersion=stable_version)
        seeded["alias"] = alias
        seeded["alias_arn"] = created["AliasArn"]
    return seeded


def seed_hook_functions(
    endpoint_url: str | None, region: str, *, session: boto3.session.Session | None = None
) -> dict[str, str]:
    """Create ``checkout-smoke`` (version 1, alias ``live`` on it): the smoke test ``examples/hooks.yaml``
    names. It raises for the versions of ``SMOKE_FAILS`` and passes any other; arguments as
    ``seed_demo_function``'s. Returns the function's name, alias and version."""
    session = session or sandbox_session(region)
    iam: IAMClient = session.client("iam", region_name=region, endpoint_url=endpoint_url)
    lambda_client: LambdaClient = session.client("lambda", region_name=region, endpoint_url=endpoint_url)
    lambda_client.create_function(
        FunctionName=SMOKE_FUNCTION,
        Runtime="python3.12",
        Role=_execution_role(iam, f"{SMOKE_FUNCTION}-execution"),
        Handler="index.handler",
        Code={"ZipFile": smoke_test_zip(SMOKE_FAILS)},
        Description="lambda-rollouts sandbox smoke test (a beforeAllowTraffic hook)",
    )
    version = lambda_client.publish_version(FunctionName=SMOKE_FUNCTION, Description="smoke test 1")[
        "Version"
    ]
    lambda_client.create_alias(FunctionName=SMOKE_FUNCTION, Name=SMOKE_ALIAS, FunctionVersion=version)
    return {"function_name": SMOKE_FUNCTION, "alias": SMOKE_ALIAS, "version": version}


def _execution_role(iam: IAMClient, role_name: str) -> str:
    """The ARN of the role ``role_name``, which Lambda may assume; created when missing."""
    try:
        return iam.get_role(RoleName=role_name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        return iam.create_role(
            RoleName=role_name, AssumeRolePolicyDocument=json.dumps(_ASSUME_ROLE_BY_LAMBDA)
        )["Role"]["Arn"]


def publish_demo_release(
    endpoint_url: str | None,
    region: str,
    release: int,
    name: str = "checkout-api",
    *,
    fail_rate: float = 0.0,
    session: boto3.session.Session | None = None,
) -> str:
    """Publish release ``release`` of a function made by ``seed_demo_function``; return its version.

    Same arguments as ``seed_demo_function``; the code is ``release_zip(release, fail_rate)``. The
    new version shares the function's execution role and dead-letter config, so the operator may
    split traffic between it and the earlier ones.
    """
    session = session or sandbox_session(region)
    lambda_client: LambdaClient = session.client("lambda", region_name=region, endpoint_url=endpoint_url)
    return _publish_release(lambda_client, name, release=release, fail_rate=fail_rate)


def publish_next_release(
    endpoint_url: str | None,
    region: str,
    name: str,
    *,
    fail_rate: float = 0.0,
    session: boto3.session.Session | None = None,
) -> str:
    """Publish the next release of function ``name``, numbered as the version it becomes; return
    that version. Raises botocore's errors (e.g. ``ResourceNotFoundException``) as they come."""
    session = session or sandbox_session(region)
    lambda_client: LambdaClient = session.client("lambda", region_name=region, endpoint_url=endpoint_url)
    published = [
        int(version["Version"])
        for page in lambda_client.get_paginator("list_versions_by_function").paginate(FunctionName=name)
        for version in page["Versions"]
        if version["Version"].isdigit()
    ]
    return _publish_release(lambda_client, name, release=max(published, default=0) + 1, fail_rate=fail_rate)


def _publish_release(lambda_client: LambdaClient, name: str, *, release: int, fail_rate: float = 0.0) -> str:
    # Publishing unchanged code returns the existing version (in Lambda and in moto): each release
    # gets its own code first.
    lambda_client.update_function_code(FunctionName=name, ZipFile=release_zip(release, fail_rate))
    return lambda_client.publish_version(FunctionName=name, Description=f"release {release}")["Version"]


def release_zip(release: int, fail_rate: float = 0.0) -> bytes:
    """A deployment package whose handler answers ``{"release": release}``: each release's own code.

    With ``fail_rate`` (0 to 1) it raises for that share of its invocations, evenly spread: the
    n-th fails when ``n * fail_rate`` passes a whole number (every fourth for 0.25, all for 1).
    """
    if not 0.0 <= fail_rate <= 1.0:
        raise ValueError(f"fail_rate is a share of the invocations, from 0 to 1: {fail_rate}")
    if fail_rate == 0.0:
        return _zip({"index.py": f"def handler(event, context):\n    return {{'release': {release}}}\n"})
    source = textwrap.dedent(
        f"""\
        import itertools

        RELEASE = {release}
        # In millionths, so that the share of failures is exact.
        FAILS_PER_MILLION = {round(fail_rate * 1_000_000)}
        _calls = itertools.count(1)


        def handler(event, context):
            n = next(_calls)
            if n * FAILS_PER_MILLION // 1_000_000 > (n - 1) * FAILS_PER_MILLION // 1_000_000:
                raise RuntimeError(
                    f"release {{RELEASE}} failed invocation {{n}}: it fails {fail_rate:.0%} of them"
                )
            return {{"release": RELEASE}}
        """
    )
    return _zip({"index.py": source})


def smoke_test_zip(fails: Mapping[str, str]) -> bytes:
    """The package of ``checkout-smoke``: a hook that raises ``AssertionError`` (Lambda answers
    ``FunctionError: Unhandled``) for the new versions in ``fails``, with their reason, and answers
    ``{"status": "ok", ...}`` for any other."""
    source = textwrap.dedent(
        f"""\
        # The sandbox's smoke test of a new version, as a beforeAllowTraffic hook runs it.
        FAILS = {dict(fails)!r}


        def handler(event, context):
            version = str(event.get("newVersion", ""))
            tested = f"{{event.get('functionName')}} version {{version}}"
            if version in FAILS:
                raise AssertionError(f"smoke test of {{tested}} failed: {{FAILS[version]}}")
            return {{"status": "ok", "message": f"smoke test of {{tested}} passed"}}
        """
    )
    return _zip({"index.py": source})


def _zip(files: Mapping[str, str]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, source in files.items():
            bundle.writestr(name, source)
    return archive.getvalue()
