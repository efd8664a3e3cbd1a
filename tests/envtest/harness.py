"""The operator as a user runs it (``lambda-rollouts run``, a process of its own) against the real
API server, with moto serving AWS, and the helpers the scenarios share.

Contract:
- ``OperatorProcess`` starts ``lambda-rollouts run`` with a kubeconfig (or in-cluster variables),
  moto as its only AWS (``AWS_ENDPOINT_URL``, dummy credentials) and short intervals; its output
  goes to a log file that ``log()`` returns and failures quote. ``stop()`` sends SIGTERM, as the
  kubelet does, and waits.
- ``Scene`` (the fixture ``scene``) is one test's namespace and function, the operators it starts
  there (by default as the certificate user that deploy/'s ClusterRole is bound to, standalone, in
  that namespace) and moto's record of its alias writes; it applies, waits for, reads and deletes
  the test's rollouts, and reads its alias.
- ``rollout_manifest`` builds a LambdaRollout; ``wait_for`` polls the API server until a predicate
  holds on the object (real time: the steps of these rollouts are seconds long); ``status_is``,
  ``phase_is`` and ``weight_is`` are such predicates, ``conditions`` reads a status's conditions.
- ``run_canary`` applies a canary and sees it through: every step's status, its Events, the alias
  promoted, the rollout deleted.
- ``audit_denials`` reads the API server's audit log: every request of a user that RBAC refused
  (optionally leaving out those received while a restarted server's authorizer was not ready);
  ``audit_writes`` every write a user sent to the rollouts and Events of one namespace;
  ``audit_events`` every audited request of a user. Each reads the part of the log written since
  the test began (the fixture ``audit_log_of_the_test``): an earlier test's refusals are its own.
- ``AliasWrites`` records, on moto's side, every ``UpdateAlias`` that moto accepted (whoever sent
  it), in order; ``alias_of`` reads an alias as Lambda serves it; ``set_alarm`` puts a CloudWatch
  alarm in moto in the state the test says (moto evaluates no alarm).
- ``table`` reads kubectl's table output (``get``, ``events``) by its header, as a person reads it;
  ``wait_until`` polls any check until it holds.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from moto.awslambda.models import LambdaBackend

from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session

from ..processes import stop_process
from .apiserver import VENV_BIN, ApiServer, clean_environment

GROUP_VERSION = "lambda.rollouts.dev/v1alpha1"
REGION = "us-east-1"
# The certificate user that deploy/'s ClusterRole is bound to (the package fixture ``deployed``).
CERT_USER = "lambda-rollouts-operator"
# The user of deploy/'s ServiceAccount.
SERVICE_ACCOUNT_USER = "system:serviceaccount:lambda-rollouts:lambda-rollouts"
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
        returncode = stop_process(self.process, timeout)
        self._log.close()
        return returncode

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


Body = dict[str, Any] | None


def status_is(**fields: Any) -> Callable[[Body], bool]:
    """Whether the rollout is there with all of ``fields`` in its status (``phase="Paused"``...)."""

    def check(body: Body) -> bool:
        status = (body or {}).get("status") or {}
        return body is not None and all(status.get(key) == value for key, value in fields.items())

    return check


def phase_is(phase: str) -> Callable[[Body], bool]:
    return status_is(phase=phase)


def weight_is(weight: float) -> Callable[[Body], bool]:
    return status_is(canaryWeight=weight)


def conditions(body: Body) -> dict[str, tuple[str, str]]:
    """{type: (status, reason)} of the rollout's conditions."""
    found = ((body or {}).get("status") or {}).get("conditions") or []
    return {condition["type"]: (condition["status"], condition["reason"]) for condition in found}


def audit_events(server: ApiServer, user: str) -> Iterator[dict[str, Any]]:
    """Every request of ``user`` that the API server's audit log holds since the test began, in order."""
    if not server.audit_log.exists():
        raise AssertionError("the API server wrote no audit log")
    for line in server.audit_lines():
        event: dict[str, Any] = json.loads(line)
        if (event.get("user") or {}).get("username") == user:
            yield event


def _received_at(event: Mapping[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))


def audit_denials(
    server: ApiServer, user: str, *, except_between: tuple[datetime.datetime, datetime.datetime] | None = None
) -> list[str]:
    """Requests of ``user`` that the authorizer refused, from the API server's audit log.

    ``except_between`` (when an API server was stopped, when it was ready again) leaves out those
    received in between: a restarted server refuses until its authorizer has read the RBAC objects.
    """
    denied = []
    for event in audit_events(server, user):
        if (event.get("annotations") or {}).get("authorization.k8s.io/decision") != "forbid":
            continue
        if except_between is not None and except_between[0] < _received_at(event) < except_between[1]:
            continue
        denied.append(f"{event.get('verb')} {event.get('requestURI')}")
    return denied


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


def alias_of(
    endpoint_url: str, function: str, alias: str = "live", *, region: str = REGION
) -> tuple[str, dict[str, float]]:
    """(primary version, additional version weights) of ``alias``, as Lambda (moto) serves it."""
    client = sandbox_session(region).client("lambda", region_name=region, endpoint_url=endpoint_url)
    served = client.get_alias(FunctionName=function, Name=alias)
    weights = (served.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return served["FunctionVersion"], dict(weights)


def set_alarm(
    endpoint_url: str,
    name: str,
    state: Literal["OK", "ALARM"],
    *,
    function: str | None = None,
    reason: str | None = None,
) -> None:
    """Put the alarm in moto (on the Errors of ``function``, else of every function) in ``state``.

    moto evaluates no alarm: the test says what CloudWatch would (``reason`` is the alarm's).
    """
    cloudwatch = sandbox_session(REGION).client("cloudwatch", region_name=REGION, endpoint_url=endpoint_url)
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": function}] if function is not None else [],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.set_alarm_state(
        AlarmName=name, StateValue=state, StateReason=reason or f"set to {state} by the test"
    )


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

    def __exit__(self, *exc_info: object) -> None:
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
    for event in audit_events(server, user):
        reference = event.get("objectRef") or {}
        if (
            event.get("verb") not in _WRITE_VERBS
            or reference.get("namespace") != namespace
            or reference.get("resource") not in ("lambdarollouts", "events")
        ):
            continue
        resource = reference["resource"]
        if reference.get("subresource"):
            resource = f"{resource}/{reference['subresource']}"
        writes.append(
            AuditedWrite(
                at=_received_at(event),
                verb=event["verb"],
                resource=resource,
                name=reference.get("name", ""),
                code=(event.get("responseStatus") or {}).get("code", 0),
            )
        )
    return writes


# -- one test's scene ---------------------------------------------------------------------------------


@dataclass
class Scene:
    """One test's namespace and function on ``server``, the operators it starts there, and moto's
    record of the alias writes (the fixture ``scene``)."""

    server: ApiServer
    aws: MotoSandbox
    namespace: str
    function: str
    operators: Callable[..., OperatorProcess]
    alias_writes: AliasWrites
    # The operator started last: whose log ``wait_for`` quotes by default when it fails.
    operator: OperatorProcess | None = None

    def start_operator(
        self, kubeconfig: Path | None = None, *, in_cluster: bool = False, **options: Any
    ) -> OperatorProcess:
        """``lambda-rollouts run`` (``args``: ``--standalone -n NAMESPACE`` unless given) with
        ``kubeconfig``: by default the certificate user's that deploy/'s ClusterRole is bound to;
        ``in_cluster``: none, the process finds the API server as a pod does."""
        if kubeconfig is None and not in_cluster:
            kubeconfig = self.server.kubeconfig_data(unique("operator"), self.server.pki.client(CERT_USER))
        options.setdefault("args", ["--standalone", "-n", self.namespace])
        self.operator = self.operators(kubeconfig, **options)
        return self.operator

    def manifest(self, name: str, version: str = "2", **options: Any) -> dict[str, Any]:
        """``rollout_manifest`` in the scene's namespace, of the scene's function."""
        return rollout_manifest(name, self.namespace, self.function, version, **options)

    def kubectl(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        """kubectl as the admin, in the scene's namespace."""
        return self.server.kubectl(*args, "-n", self.namespace, **options)

    def apply(
        self, manifest: Mapping[str, Any] | str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply ARGS -f -`` of a manifest: YAML text as written, anything else as JSON."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.server.kubectl("apply", *args, "-f", "-", input=text, check=check)

    def read(self, name: str) -> Body:
        return get_rollout(self.server, self.namespace, name)

    def wait_for(
        self,
        name: str,
        predicate: Callable[[Body], bool],
        *,
        what: str,
        timeout: float = 60.0,
        operator: OperatorProcess | None = None,
    ) -> Body:
        """``wait_for`` the rollout ``name``; a failure quotes ``operator``'s log (the last started's)."""
        return wait_for(
            self.server,
            self.namespace,
            name,
            predicate,
            what=what,
            operator=operator or self.operator,
            timeout=timeout,
        )

    def reached(self, name: str, predicate: Callable[[Body], bool], **options: Any) -> dict[str, Any]:
        """``wait_for`` (same options) a state of a rollout that is still there."""
        body = self.wait_for(name, predicate, **options)
        assert body is not None, f"{self.namespace}/{name} is gone"
        return body

    def delete(self, name: str) -> subprocess.CompletedProcess[str]:
        """``kubectl delete lro NAME``, which waits until the finalizer has let the rollout go."""
        deleted = self.kubectl("delete", "lro", name, "--timeout=60s")
        assert self.read(name) is None, f"{self.namespace}/{name} is still there"
        return deleted

    def alias(self, function: str | None = None) -> tuple[str, dict[str, float]]:
        """The scene's function's alias (or ``function``'s), as Lambda (moto) serves it."""
        return alias_of(self.aws.endpoint_url, function or self.function)

    def writes(self, function: str | None = None) -> list[tuple[str, dict[str, float]]]:
        """Every alias write moto accepted for the scene's function (or ``function``), in order."""
        return self.alias_writes.of(function or self.function)


def run_canary(scene: Scene, *, mid_rollout: Callable[[str], None] | None = None) -> None:
    """Apply a canary, see every step's status, its Events and the alias promoted; then delete it.

    With ``mid_rollout``, the canary waits at 10% (an indefinite pause) until ``mid_rollout(name)``
    has promoted it.
    """
    name = unique("canary")
    pause: dict[str, str] = {} if mid_rollout is not None else {"duration": "4s"}
    steps = [{"setWeight": 10}, {"pause": pause}, {"setWeight": 50}, {"pause": {"duration": "4s"}}]
    scene.apply(scene.manifest(name, steps=steps))
    scene.wait_for(name, weight_is(10), what="weight 10 in status")
    assert scene.alias() == ("1", {"2": 0.1})
    if mid_rollout is not None:
        mid_rollout(name)
    scene.wait_for(name, weight_is(50), what="weight 50 in status")
    body = scene.reached(name, phase_is("Healthy"), what="Healthy")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert scene.alias() == ("2", {})
    events = scene.kubectl("events", "--for", f"lambdarollout/{name}", "-o", "json")
    reasons = [item["reason"] for item in json.loads(events.stdout)["items"]]
    assert reasons.count("WeightSet") >= 2, reasons
    assert "Succeeded" in reasons, reasons
    scene.delete(name)
