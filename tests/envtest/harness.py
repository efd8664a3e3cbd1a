"""The operator as a user runs it (``lambda-rollouts run``, a process of its own) against the real
API server, with moto serving AWS, and the helpers the scenarios share.

Contract:
- ``OperatorProcess`` starts ``lambda-rollouts run`` with a kubeconfig (or in-cluster variables),
  moto as its only AWS (``AWS_ENDPOINT_URL``, dummy credentials) and short intervals; its output
  goes to a log file that ``log()`` returns and failures quote. ``stop()`` sends SIGTERM, as the
  kubelet does, and waits.
- ``rollout_manifest`` builds a LambdaRollout; ``wait_for`` polls the API server until a predicate
  holds on the object (real time: the steps of these rollouts are seconds long).
- ``audit_denials`` reads the API server's audit log: every request of a user that RBAC refused
  (``timed_audit_denials``: with the time each was received); ``audit_writes`` every write a user
  sent to the rollouts and Events of one namespace.
- ``AliasWrites`` records, on moto's side, every ``UpdateAlias`` that moto accepted (whoever sent
  it), in order; ``alias_of`` reads an alias as Lambda serves it.
- ``table`` reads kubectl's table output (``get``, ``events``) by its header, as a person reads it;
  ``wait_until`` polls any check until it holds.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from moto.awslambda.models import LambdaBackend

from lambda_rollouts.sandbox.aws import sandbox_session

from .apiserver import VENV_BIN, ApiServer, clean_environment

GROUP_VERSION = "lambda.rollouts.dev/v1alpha1"
REGION = "us-east-1"
# The certificate user that deploy/'s ClusterRole is bound to (the package fixture ``deployed``).
CERT_USER = "lambda-rollouts-operator"
# Operator settings for real-time tests: quick retries and drift checks.
FAST_SETTINGS = {
    "LAMBDA_ROLLOUTS_RETRY_INITIAL_DELAY_SECONDS": "1",
    "LAMBDA_ROLLOUTS_RETRY_MAX_DELAY_SECONDS": "5",
    "LAMBDA_ROLLOUTS_DRIFT_CHECK_INTERVAL_SECONDS": "30",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class OperatorProcess:
    """``lambda-rollouts run`` in a process of its own."""

    def __init__(
        self,
        log_path: Path,
        aws_endpoint: str,
        *,
        kubeconfig: Path | None = None,
        args: Sequence[str] = ("--standalone",),
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.log_path = log_path
        environment = clean_environment(
            {
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_REGION": REGION,
                "PYTHONUNBUFFERED": "1",
                **FAST_SETTINGS,
            }
        )
        # Nothing of the machine's AWS set-up leaks in (profiles, config files).
        for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            environment.pop(key, None)
        environment["HOME"] = str(log_path.parent)
        if kubeconfig is not None:
            environment["KUBECONFIG"] = str(kubeconfig)
        environment.update(env or {})
        command = [*wrapper, str(VENV_BIN / "lambda-rollouts"), "run", *args]
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=environment)

    def log(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


def rollout_manifest(
    name: str,
    namespace: str,
    function: str,
    version: str = "2",
    *,
    steps: Sequence[Mapping[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "functionName": function,
        "alias": "live",
        "version": version,
        "strategy": {
            "canary": {
                "steps": list(
                    steps
                    or [
                        {"setWeight": 10},
                        {"pause": {"duration": "3s"}},
                        {"setWeight": 50},
                        {"pause": {"duration": "3s"}},
                    ]
                )
            }
        },
    }
    body_spec.update(spec)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LambdaRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body_spec,
    }


def rollout_url(server: ApiServer, namespace: str, name: str = "") -> str:
    base = f"{server.url}/apis/{GROUP_VERSION}/namespaces/{namespace}/lambdarollouts"
    return f"{base}/{name}" if name else base


def get_rollout(server: ApiServer, namespace: str, name: str) -> dict[str, Any] | None:
    with server.session() as session:
        response = session.get(rollout_url(server, namespace, name), timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def wait_for(
    server: ApiServer,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any] | None], bool],
    *,
    timeout: float = 60.0,
    what: str = "the condition",
    operator: OperatorProcess | None = None,
) -> dict[str, Any] | None:
    """Poll the rollout until ``predicate(body)`` (``None`` when it is gone); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        try:
            body = get_rollout(server, namespace, name)
        except Exception:  # the API server may be restarting under the test: ask again
            body = None
            time.sleep(0.5)
            continue
        if predicate(body):
            return body
        time.sleep(0.3)
    status = json.dumps((body or {}).get("status"), indent=1)[:3000]
    log = f"\noperator log:\n{operator.log()}" if operator is not None else ""
    raise AssertionError(f"{namespace}/{name}: {what} not met within {timeout}s; status: {status}{log}")


def phase_is(phase: str) -> Callable[[dict[str, Any] | None], bool]:
    def check(body: dict[str, Any] | None) -> bool:
        return body is not None and (body.get("status") or {}).get("phase") == phase

    return check


def audit_denials(server: ApiServer, user: str) -> list[str]:
    """Requests of ``user`` that the authorizer refused, from the API server's audit log."""
    path = server.audit_log
    denied = []
    if not path.exists():
        raise AssertionError("the API server wrote no audit log")
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if (event.get("user") or {}).get("username") != user:
            continue
        if (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid":
            denied.append(f"{event.get('verb')} {event.get('requestURI')}")
    return denied


def timed_audit_denials(server: ApiServer, user: str) -> list[tuple[datetime.datetime, str]]:
    """``audit_denials`` with the time each refused request was received."""
    denied = []
    for line in server.audit_log.read_text().splitlines():
        event = json.loads(line)
        if (event.get("user") or {}).get("username") != user:
            continue
        if (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid":
            at = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            denied.append((at, f"{event.get('verb')} {event.get('requestURI')}"))
    return denied


def env_with_path(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = clean_environment(extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


# -- what the scenarios observe ---------------------------------------------------------------------

_T = TypeVar("_T")


def wait_until(check: Callable[[], _T | None], *, timeout: float = 30.0, what: str = "the condition") -> _T:
    """Call ``check`` until it returns something other than None or False; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.3)


def table(output: str, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of kubectl's table output, each cell cut at its column's header, as it is aligned.

    ``columns`` are the headers in order (a header may hold a space, as ``LAST SEEN``); the last
    column runs to the end of the line.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return []
    header, rows = lines[0], lines[1:]
    starts: list[int] = []
    for column in columns:
        # Each header as a whole word, after the one before it ("AGE" is also the end of "MESSAGE").
        word = re.compile(rf"(?<!\S){re.escape(column)}(?!\S)")
        found = word.search(header, starts[-1] + 1 if starts else 0)
        assert found is not None, f"no column {column} in order {columns} in {header!r}"
        starts.append(found.start())
    cells: list[dict[str, str]] = []
    for row in rows:
        bounds = [*starts[1:], len(row)]
        cells.append(
            {
                column: row[start:end].strip()
                for column, start, end in zip(columns, starts, bounds, strict=True)
            }
        )
    return cells


EVENT_COLUMNS = ("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE")


def rollout_events(server: ApiServer, namespace: str, name: str) -> list[dict[str, str]]:
    """``kubectl events --for lambdarollout/NAME``: the rollout's Events as kubectl lists them."""
    shown = server.kubectl("events", "-n", namespace, "--for", f"lambdarollout/{name}")
    return table(shown.stdout, EVENT_COLUMNS)


def alias_of(endpoint_url: str, function: str, alias: str = "live") -> tuple[str, dict[str, float]]:
    """(primary version, additional version weights) of ``alias``, as Lambda (moto) serves it."""
    client = sandbox_session(REGION).client("lambda", region_name=REGION, endpoint_url=endpoint_url)
    served = client.get_alias(FunctionName=function, Name=alias)
    weights = (served.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return served["FunctionVersion"], dict(weights)


@dataclass(frozen=True)
class AliasWrite:
    function: str
    alias: str
    primary: str
    weights: dict[str, float]


class AliasWrites:
    """Every ``UpdateAlias`` that moto accepted while this is entered, recorded in moto's backend.

    moto serves the operator from this process (``MotoSandbox``), so wrapping its backend's
    ``update_alias`` sees every write, whichever operator sent it; a write that moto refused (a
    stale ``RevisionId``, an unknown version) raises before it gets there and is not recorded.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: list[AliasWrite] = []
        self._original: Any = None

    def __enter__(self) -> Self:
        original = self._original = LambdaBackend.update_alias

        def update_alias(
            backend: LambdaBackend,
            name: str,
            function_name: str,
            function_version: str,
            description: str,
            routing_config: Any,
        ) -> Any:
            alias = original(backend, name, function_name, function_version, description, routing_config)
            weights = (routing_config or {}).get("AdditionalVersionWeights") or {}
            with self._lock:
                self._writes.append(AliasWrite(function_name, name, function_version, dict(weights)))
            return alias

        LambdaBackend.update_alias = update_alias  # type: ignore[method-assign,assignment]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        LambdaBackend.update_alias = self._original  # type: ignore[method-assign]

    def of(self, function: str, alias: str = "live") -> list[tuple[str, dict[str, float]]]:
        """(primary, weights) of every accepted write to ``function``'s ``alias``, in order."""
        with self._lock:
            return [
                (write.primary, write.weights)
                for write in self._writes
                if write.function == function and write.alias == alias
            ]


@dataclass(frozen=True)
class AuditedWrite:
    at: datetime.datetime
    verb: str
    resource: str  # "lambdarollouts", "lambdarollouts/status" or "events"
    name: str
    code: int


_WRITE_VERBS = ("create", "update", "patch", "delete")


def audit_writes(server: ApiServer, user: str, namespace: str) -> list[AuditedWrite]:
    """Every write ``user`` sent to the LambdaRollouts and Events of ``namespace``, from the audit log."""
    writes = []
    for line in server.audit_log.read_text().splitlines():
        event = json.loads(line)
        reference = event.get("objectRef") or {}
        if (
            (event.get("user") or {}).get("username") != user
            or event.get("verb") not in _WRITE_VERBS
            or reference.get("namespace") != namespace
            or reference.get("resource") not in ("lambdarollouts", "events")
        ):
            continue
        resource = reference["resource"]
        if reference.get("subresource"):
            resource = f"{resource}/{reference['subresource']}"
        writes.append(
            AuditedWrite(
                at=datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")),
                verb=event["verb"],
                resource=resource,
                name=reference.get("name", ""),
                code=(event.get("responseStatus") or {}).get("code", 0),
            )
        )
    return writes
