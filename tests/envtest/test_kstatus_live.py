"""What Flux sees of a rollout on the real API server: the object as kube-apiserver serves it at each
point of one rollout's life, judged by kstatus itself (``status.Compute`` of sigs.k8s.io/cli-utils,
through ``tests/gitops/kstatus_go.py``, all points in one run of the program).

The operator (``lambda-rollouts run``, moto as AWS) drives one rollout whose background analysis
watches a CloudWatch alarm: Progressing (10% in a pause of an hour), Paused (20% in an indefinite
``pause: {}``, reached by a promote), Healthy (promoted again). With the operator stopped,
``spec.version`` is patched to a new release: a generation not yet observed. With the operator back,
the new version's canary is rolled back when the test sets the alarm to ALARM: Degraded. Last, the
rollout is deleted while the operator is stopped (its finalizer holds the object: Terminating), and
let go once the operator is back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from tests.gitops.kstatus_go import CURRENT, FAILED, IN_PROGRESS, TERMINATING, judge, kstatus_binary

from lambda_rollouts.sandbox.aws import MotoSandbox, publish_demo_release, sandbox_session

from .apiserver import ApiServer
from .harness import REGION, OperatorProcess, get_rollout, phase_is, rollout_manifest, unique, wait_for

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "1h"}},
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 50},
]


def set_alarm(aws: MotoSandbox, name: str, state: Literal["OK", "ALARM"]) -> None:
    """Create (or keep) the alarm in moto and force its state: moto does not evaluate alarms."""
    cloudwatch = sandbox_session(REGION).client(
        "cloudwatch", region_name=REGION, endpoint_url=aws.endpoint_url
    )
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=f"set to {state} by the test")


def alias_of(aws: MotoSandbox, function: str) -> tuple[str, dict[str, float]]:
    client = sandbox_session(REGION).client("lambda", region_name=REGION, endpoint_url=aws.endpoint_url)
    alias = client.get_alias(FunctionName=function, Name="live")
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return alias["FunctionVersion"], dict(weights)


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [item for item in body["status"]["conditions"] if item["type"] == kind]
    assert len(found) == 1, found
    return found[0]


def status_is(**fields: Any) -> Callable[[dict[str, Any] | None], bool]:
    def check(body: dict[str, Any] | None) -> bool:
        status = (body or {}).get("status") or {}
        return all(status.get(key) == value for key, value in fields.items())

    return check


@dataclass
class Scene:
    """One rollout on the real server, and the operator that drives it (stopped and started at will)."""

    server: ApiServer
    namespace: str
    name: str
    operators: Callable[..., OperatorProcess]
    operator: OperatorProcess | None = None

    def start(self) -> None:
        self.operator = self.operators(
            self.server.admin_kubeconfig, args=["--standalone", "-n", self.namespace]
        )

    def stop(self) -> None:
        assert self.operator is not None
        self.operator.stop()

    def kubectl(self, *args: str) -> None:
        self.server.kubectl(*args, "-n", self.namespace)

    def reached(self, what: str, predicate: Callable[[dict[str, Any] | None], bool]) -> dict[str, Any]:
        body = wait_for(
            self.server, self.namespace, self.name, predicate, what=what, operator=self.operator, timeout=60
        )
        assert body is not None
        return body

    def gone(self) -> None:
        wait_for(
            self.server,
            self.namespace,
            self.name,
            lambda body: body is None,
            what="gone",
            operator=self.operator,
            timeout=60,
        )

    def read(self) -> dict[str, Any]:
        body = get_rollout(self.server, self.namespace, self.name)
        assert body is not None, f"{self.namespace}/{self.name} is gone"
        return body


# A first build of tools/go/kstatus takes about a minute of CPU; the rollout itself well under one.
@pytest.mark.timeout(600)
def test_flux_reads_each_point_of_a_rollout_from_the_real_server(
    apiserver: ApiServer,
    aws: MotoSandbox,
    namespace: str,
    function: dict[str, str],
    operators: Callable[..., OperatorProcess],
) -> None:
    kstatus_binary()  # a missing Go or a failed build fails here, before the rollout starts
    fn, alarm = function["function_name"], unique("errors")
    set_alarm(aws, alarm, "OK")
    scene = Scene(apiserver, namespace, unique("flux"), operators)
    scene.start()
    # Nothing invokes the function here, so every measurement is inconclusive on its invocations:
    # Continue lets the alarm alone decide (the default, Pause, would hold the rollout instead).
    analysis = {"interval": "2s", "alarms": [alarm], "onInconclusive": "Continue"}
    manifest = rollout_manifest(scene.name, namespace, fn, steps=STEPS, analysis=analysis)
    apiserver.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    at_10 = status_is(phase="Progressing", canaryWeight=10, currentStepIndex=1)
    progressing = scene.reached("10% in the timed pause", at_10)
    scene.kubectl("lambdarollout", "promote", scene.name, "--wait=60s")
    paused = scene.reached("Paused at 20%", status_is(phase="Paused", canaryWeight=20))
    scene.kubectl("lambdarollout", "promote", scene.name, "--wait=60s")
    healthy = scene.reached("Healthy", phase_is("Healthy"))
    assert alias_of(aws, fn) == ("2", {})

    # A commit asks for a new release while the operator is down: nothing has observed it yet.
    scene.stop()
    release = publish_demo_release(aws.endpoint_url, REGION, release=3, name=fn)
    patch = json.dumps({"spec": {"version": release}})
    scene.kubectl("patch", "lambdarollout", scene.name, "--type=merge", "-p", patch)
    unobserved = scene.read()

    # The operator comes back, starts the new canary, and rolls it back when its alarm fires.
    scene.start()
    scene.reached(f"version {release} at 10%", status_is(canaryVersion=release, canaryWeight=10))
    set_alarm(aws, alarm, "ALARM")
    degraded = scene.reached("rolled back", phase_is("Degraded"))
    assert alias_of(aws, fn) == ("2", {})

    # Deleted while the operator is down: its finalizer holds the object.
    scene.stop()
    scene.kubectl("delete", "lambdarollout", scene.name, "--wait=false")
    terminating = scene.read()

    points = [progressing, paused, healthy, unobserved, degraded, terminating]
    assert judge(points) == [
        (IN_PROGRESS, condition(progressing, "Reconciling")["message"], "Progressing"),
        (IN_PROGRESS, "step 4/5: paused until promoted, 20% on version 2", "PausedByStep"),
        (CURRENT, "Resource is Ready", ""),
        (
            IN_PROGRESS,
            "LambdaRollout generation is 2, but latest observed generation is 1",
            "LatestGenerationNotObserved",
        ),
        (FAILED, condition(degraded, "Stalled")["message"], "AnalysisFailed"),
        (TERMINATING, "Resource scheduled for deletion", ""),
    ]
    # What the verdicts rest on, as the server served it.
    assert condition(progressing, "Reconciling")["message"].startswith("step 2/5: pause 1h (")
    assert condition(degraded, "Stalled")["message"].startswith(f"analysis failed: alarm {alarm} is in ALARM")
    assert (unobserved["metadata"]["generation"], unobserved["status"]["observedGeneration"]) == (2, 1)
    assert terminating["metadata"]["finalizers"] == ["lambda.rollouts.dev/finalizer"]

    # Back again, the operator lets the deleted rollout go.
    scene.start()
    scene.gone()
