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
from typing import Any

import pytest
from tests.gitops.kstatus_go import CURRENT, FAILED, IN_PROGRESS, TERMINATING, judge, kstatus_binary

from lambda_rollouts.sandbox.aws import publish_demo_release

from .apiserver import ApiServer
from .harness import REGION, Scene, phase_is, set_alarm, status_is, unique

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "1h"}},
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 50},
]


@pytest.fixture
def scene_server(apiserver: ApiServer) -> ApiServer:
    """The API server without deploy/: the operator runs as the admin."""
    return apiserver


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [item for item in body["status"]["conditions"] if item["type"] == kind]
    assert len(found) == 1, found
    return found[0]


def read(scene: Scene, name: str) -> dict[str, Any]:
    body = scene.read(name)
    assert body is not None, f"{scene.namespace}/{name} is gone"
    return body


# A first build of tools/go/kstatus takes about a minute of CPU; the rollout itself well under one.
@pytest.mark.timeout(600)
def test_flux_reads_each_point_of_a_rollout_from_the_real_server(scene: Scene) -> None:
    kstatus_binary()  # a missing Go or a failed build fails here, before the rollout starts
    fn, alarm, name = scene.function, unique("errors"), unique("flux")
    set_alarm(scene.aws.endpoint_url, alarm, "OK")
    operator = scene.start_operator(scene.server.admin_kubeconfig)
    # Nothing invokes the function here, so every measurement is inconclusive on its invocations:
    # Continue lets the alarm alone decide (the default, Pause, would hold the rollout instead).
    analysis = {"interval": "2s", "alarms": [alarm], "onInconclusive": "Continue"}
    scene.apply(scene.manifest(name, steps=STEPS, analysis=analysis))

    at_10 = status_is(phase="Progressing", canaryWeight=10, currentStepIndex=1)
    progressing = scene.reached(name, at_10, what="10% in the timed pause")
    scene.kubectl("lambdarollout", "promote", name, "--wait=60s")
    paused = scene.reached(name, status_is(phase="Paused", canaryWeight=20), what="Paused at 20%")
    scene.kubectl("lambdarollout", "promote", name, "--wait=60s")
    healthy = scene.reached(name, phase_is("Healthy"), what="Healthy")
    assert scene.alias() == ("2", {})

    # A commit asks for a new release while the operator is down: nothing has observed it yet.
    operator.stop()
    release = publish_demo_release(scene.aws.endpoint_url, REGION, release=3, name=fn)
    patch = json.dumps({"spec": {"version": release}})
    scene.kubectl("patch", "lambdarollout", name, "--type=merge", "-p", patch)
    unobserved = read(scene, name)

    # The operator comes back, starts the new canary, and rolls it back when its alarm fires.
    operator = scene.start_operator(scene.server.admin_kubeconfig)
    scene.reached(name, status_is(canaryVersion=release, canaryWeight=10), what=f"version {release} at 10%")
    set_alarm(scene.aws.endpoint_url, alarm, "ALARM")
    degraded = scene.reached(name, phase_is("Degraded"), what="rolled back")
    assert scene.alias() == ("2", {})

    # Deleted while the operator is down: its finalizer holds the object.
    operator.stop()
    scene.kubectl("delete", "lambdarollout", name, "--wait=false")
    terminating = read(scene, name)

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
    scene.start_operator(scene.server.admin_kubeconfig)
    scene.wait_for(name, lambda body: body is None, what="gone")
