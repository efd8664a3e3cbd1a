"""What a user drives and sees, on a real API server: ``kubectl get`` and ``kubectl events`` through
a canary, an automatic rollback on a CloudWatch alarm, a deletion mid-shift, the kubectl plugin's
actions, ``kubectl apply`` with the server's validation (client-side and server-side), ``kubectl
explain``, and an API server stopped mid-rollout.

Each scenario has its own namespace and function and runs ``lambda-rollouts run`` as deploy/'s
ClusterRole allows (a certificate user bound to it); the peering scenario (two replicas, as
deploy/ runs them) lives in ``test_peering.py``. Every alias write is counted on moto's side
(``Scene.writes``): each planned weight must be written exactly once, in order.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from lambda_rollouts.sandbox.aws import publish_demo_release, seed_demo_function

from .apiserver import ApiServer
from .harness import (
    CERT_USER,
    REGION,
    Scene,
    audit_denials,
    conditions,
    phase_is,
    rollout_events,
    set_alarm,
    status_is,
    table,
    unique,
    wait_until,
    weight_is,
)

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("NAME", "FUNCTION", "ALIAS", "STABLE", "CANARY", "WEIGHT", "PHASE", "AGE")
WIDE_COLUMNS = (*COLUMNS, "STEP", "MESSAGE")
RESOURCE = "lambdarollout.lambda.rollouts.dev"


# -- helpers --------------------------------------------------------------------------------------


def started(scene: Scene, steps: Sequence[Mapping[str, Any]], **spec: Any) -> str:
    """Start an operator for the scene's namespace (as the certificate user that deploy/'s
    ClusterRole is bound to), apply a rollout of the scene's function with ``steps``; its name."""
    scene.start_operator()
    name = unique("checkout")
    scene.apply(scene.manifest(name, steps=steps, **spec))
    return name


def succeeded() -> dict[str, tuple[str, str]]:
    """The conditions of a rollout that promoted its version."""
    return {
        "Ready": ("True", "Succeeded"),
        "Reconciling": ("False", "Succeeded"),
        "Stalled": ("False", "Succeeded"),
    }


def stalled(reason: str) -> dict[str, tuple[str, str]]:
    """The conditions of a rollout that rolled back and stopped, for ``reason``."""
    return {"Ready": ("False", reason), "Reconciling": ("False", reason), "Stalled": ("True", reason)}


def lro_row(scene: Scene, name: str, *, wide: bool = False) -> dict[str, str]:
    """The rollout's line of ``kubectl get lro`` (``-o wide``), by the printer columns' headers."""
    shown = scene.kubectl("get", "lro", name, *(["-o", "wide"] if wide else []))
    columns = WIDE_COLUMNS if wide else COLUMNS
    header = shown.stdout.splitlines()[0]
    assert header.split() == list(columns), header
    rows = table(shown.stdout, columns)
    assert len(rows) == 1, shown.stdout
    row = rows[0]
    # A date column shows the object's age, as kubectl words it.
    assert re.fullmatch(r"\d+s|\d+m\d*s?", row.pop("AGE")), shown.stdout
    return row


def events_until(scene: Scene, name: str, last_reason: str) -> list[dict[str, str]]:
    """The rollout's Events once ``last_reason`` is among them (Events are posted in the background)."""

    def listed() -> list[dict[str, str]] | None:
        events = rollout_events(scene.server, scene.namespace, name)
        return events if any(event["REASON"] == last_reason for event in events) else None

    return wait_until(listed, timeout=30, what=f"a {last_reason} Event of {scene.namespace}/{name}")


def event_lines(events: Sequence[Mapping[str, str]]) -> list[tuple[str, str, str]]:
    return [(event["TYPE"], event["REASON"], event["MESSAGE"]) for event in events]


def delete(scene: Scene, name: str) -> None:
    deleted = scene.delete(name)
    assert deleted.stdout.strip() == f'{RESOURCE} "{name}" deleted from {scene.namespace} namespace', (
        deleted.stdout
    )


def plugin(scene: Scene, *args: str) -> Any:
    """``kubectl lambdarollout ... -n NAMESPACE``: kubectl finds the plugin on the venv's PATH."""
    return scene.kubectl("lambdarollout", *args, check=False, timeout=90)


# -- 1. a canary, as kubectl shows it ---------------------------------------------------------------


def test_a_canary_in_kubectl_get_and_kubectl_events(scene: Scene) -> None:
    fn = scene.function
    scene.start_operator()
    name = unique("checkout")
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"pause": {"duration": "4s"}},
        {"setWeight": 50},
        {"pause": {"duration": "2s"}},
    ]
    created = scene.apply(scene.manifest(name, steps=steps))
    assert created.stdout.strip() == f"{RESOURCE}/{name} created"

    scene.wait_for(name, weight_is(10), what="10% in status")
    common = {"NAME": name, "FUNCTION": fn, "ALIAS": "live"}
    mid = {**common, "STABLE": "1", "CANARY": "2", "WEIGHT": "10", "PHASE": "Progressing"}
    assert lro_row(scene, name) == mid
    wide = lro_row(scene, name, wide=True)
    # The time left is as of the operator's last pass (a second one may follow the first at once).
    assert re.fullmatch(r"step 2/4: pause 4s \([34]s left\)", wide.pop("MESSAGE")), wide
    assert wide == {**mid, "STEP": "2/4"}

    body = scene.reached(name, phase_is("Healthy"), what="Healthy")
    done = {**common, "STABLE": "2", "CANARY": "2", "WEIGHT": "100", "PHASE": "Healthy"}
    assert lro_row(scene, name) == done
    assert lro_row(scene, name, wide=True) == {
        **done,
        "STEP": "done",
        "MESSAGE": "promoted version 2: all traffic on it (was 50%)",
    }
    assert conditions(body) == succeeded()
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]

    events = events_until(scene, name, "Succeeded")
    assert {event["OBJECT"] for event in events} == {f"LambdaRollout/{name}"}
    assert event_lines(events) == [
        ("Normal", "Progressing", "rolling out version 2 over version 1"),
        ("Normal", "WeightSet", "step 1/4: set weight 10% on version 2"),
        ("Normal", "StepCompleted", "step 2/4: pause 4s done"),
        ("Normal", "WeightSet", "step 3/4: set weight 50% on version 2"),
        ("Normal", "StepCompleted", "step 4/4: pause 2s done"),
        ("Normal", "Succeeded", "promoted version 2: all traffic on it (was 50%)"),
    ]
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {"2": 0.5}), ("2", {})]
    delete(scene, name)
    assert scene.alias() == ("2", {})
    assert audit_denials(scene.server, CERT_USER) == []


# -- 2. an automatic rollback on a CloudWatch alarm -------------------------------------------------


def test_an_alarm_in_alarm_rolls_the_alias_back(scene: Scene) -> None:
    alarm = unique("checkout-errors")
    set_alarm(scene.aws.endpoint_url, alarm, "OK", function=scene.function, reason="no errors")
    analysis = {"interval": "1s", "alarms": [alarm]}
    name = started(scene, [{"setWeight": 10}, {"pause": {}}], analysis=analysis)
    scene.wait_for(name, status_is(canaryWeight=10, phase="Paused"), what="held at 10%")
    assert scene.alias() == ("1", {"2": 0.1})

    set_alarm(scene.aws.endpoint_url, alarm, "ALARM", function=scene.function, reason="errors above 1%")
    body = scene.reached(name, status_is(phase="Degraded", canaryWeight=0), what="rolled back")
    assert scene.alias() == ("1", {})
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {})]
    assert conditions(body) == stalled("AnalysisFailed")
    message = body["status"]["message"]
    assert message.startswith(f"analysis failed: alarm {alarm} is in ALARM"), message
    assert message.endswith("; rolled back to version 1"), message
    assert lro_row(scene, name) == {
        "NAME": name,
        "FUNCTION": scene.function,
        "ALIAS": "live",
        "STABLE": "1",
        "CANARY": "2",
        "WEIGHT": "0",
        "PHASE": "Degraded",
    }
    events = events_until(scene, name, "AnalysisFailed")
    assert ("Warning", "AnalysisFailed", message) in event_lines(events)

    delete(scene, name)
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {})]
    assert audit_denials(scene.server, CERT_USER) == []


# -- 3. deletion mid-shift ---------------------------------------------------------------------------


def test_kubectl_delete_mid_shift_puts_all_traffic_back_on_stable(scene: Scene) -> None:
    name = started(scene, [{"setWeight": 10}, {"pause": {}}])
    scene.wait_for(name, weight_is(10), what="10% in status")
    assert scene.alias() == ("1", {"2": 0.1})

    # kubectl waits until the object is gone: until the finalizer has released the alias.
    delete(scene, name)
    assert scene.alias() == ("1", {})
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {})]

    def rolled_back_event() -> str | None:
        listed = scene.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
        messages = [
            item["message"] for item in json.loads(listed.stdout)["items"] if item["reason"] == "RolledBack"
        ]
        return messages[0] if messages else None

    message = wait_until(rolled_back_event, what="the RolledBack Event")
    assert message == "rollout deleted mid-shift: all traffic sent back to version 1"
    assert audit_denials(scene.server, CERT_USER) == []


# -- 4. manual actions through the kubectl plugin ---------------------------------------------------


def test_the_plugin_pauses_and_resumes_a_timed_canary_then_promotes_its_indefinite_pause(
    scene: Scene,
) -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"pause": {"duration": "3s"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    name = started(scene, steps)
    scene.wait_for(name, weight_is(10), what="10% in status")

    paused = plugin(scene, "pause", name, "--id", "hold-1")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    held = "pause: paused by a pause action at step 2/4 with 10% on version 2"
    assert paused.stdout.strip() == f"{name}: Applied: {held}"
    body = scene.read(name)
    assert body is not None
    last = body["status"]["lastAction"]
    assert {key: last[key] for key in ("action", "id", "result", "message")} == {
        "action": "pause",
        "id": "hold-1",
        "result": "Applied",
        "message": held,
    }
    assert body["status"]["phase"] == "Paused"
    assert body["status"]["pausedByAction"] is True
    # Held past the end of its 3 s pause: nothing moves (a negative, so it takes a wait).
    time.sleep(4)
    assert scene.alias() == ("1", {"2": 0.1})
    assert (scene.read(name) or {})["status"]["phase"] == "Paused"

    resumed = plugin(scene, "resume", name)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.startswith(f"{name}: Applied: resume: step 2/4: pause 3s ("), resumed.stdout
    body = scene.read(name)
    assert body is not None
    assert body["status"]["lastAction"]["id"].startswith("kubectl-")
    assert "pausedByAction" not in body["status"]

    scene.wait_for(name, status_is(canaryWeight=50, phase="Paused"), what="held at 50%")
    promoted = plugin(scene, "promote", name, "--id", "ship-it")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert promoted.stdout.startswith(f"{name}: Applied: promote: "), promoted.stdout
    body = scene.reached(name, phase_is("Healthy"), what="Healthy")
    assert body["status"]["lastAction"]["id"] == "ship-it"
    assert body["status"]["lastAction"]["result"] == "Applied"
    assert scene.alias() == ("2", {})
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {"2": 0.5}), ("2", {})]

    # Nothing left to promote: the operator says so, and the plugin exits 1 with its words.
    again = plugin(scene, "promote", name)
    assert again.returncode == 1, again.stdout + again.stderr
    assert again.stderr.strip() == f"{name}: Rejected: promote: nothing to promote: version 2 is Healthy"

    delete(scene, name)
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {"2": 0.5}), ("2", {})]


def test_the_plugin_aborts_mid_shift(scene: Scene) -> None:
    name = started(scene, [{"setWeight": 20}, {"pause": {}}])
    scene.wait_for(name, weight_is(20), what="20% in status")

    aborted = plugin(scene, "abort", name, "--id", "stop-1")
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    rolled_back = "abort: aborted by request; rolled back to version 1"
    assert aborted.stdout.strip() == f"{name}: Applied: {rolled_back}"
    body = scene.reached(name, weight_is(0), what="0% in status")
    assert scene.alias() == ("1", {})
    assert scene.writes() == [("1", {"2": 0.2}), ("1", {})]
    assert body["status"]["phase"] == "Degraded"
    assert conditions(body) == stalled("Aborted")
    last = body["status"]["lastAction"]
    assert (last["action"], last["id"], last["result"], last["message"]) == (
        "abort",
        "stop-1",
        "Applied",
        rolled_back,
    )

    # CI's view: the plugin's status exits 1 on a stalled rollout and says why.
    shown = plugin(scene, "status", name)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert shown.stdout.startswith(f"{name}: Degraded (Aborted), weight 0%"), shown.stdout

    delete(scene, name)
    assert scene.writes() == [("1", {"2": 0.2}), ("1", {})]


# -- 6. kubectl apply, client-side and server-side ------------------------------------------------


def test_kubectl_apply_validates_with_the_servers_schema_client_side_and_server_side(scene: Scene) -> None:
    scene.start_operator()
    client_side_fn = scene.function
    server_side_fn = seed_demo_function(scene.aws.endpoint_url, REGION, name=unique("fn"))["function_name"]

    # A typo is refused either way, in the server's words; nothing is created.
    typo = scene.manifest("typo", steps=[{"setWeight": 10}, {"pause": {}}])
    typo["spec"]["pasued"] = True
    refused = scene.apply(typo, check=False)
    assert refused.returncode != 0, refused.stdout
    assert 'strict decoding error: unknown field "spec.pasued"' in refused.stderr, refused.stderr
    refused = scene.apply(typo, "--server-side", check=False)
    assert refused.returncode != 0, refused.stdout
    assert ".spec.pasued: field not declared in schema" in refused.stderr, refused.stderr
    assert scene.read("typo") is None

    # kubectl's default validation (strict, on the server) takes a valid rollout.
    client_side = unique("client-side")
    created = scene.apply(scene.manifest(client_side, strategy={"allAtOnce": {}}))
    assert created.stdout.strip() == f"{RESOURCE}/{client_side} created"
    scene.wait_for(client_side, phase_is("Healthy"), what="Healthy")
    assert scene.writes(client_side_fn) == [("2", {})]

    # Server-side apply, as Argo CD and Flux apply.
    server_side = unique("server-side")
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"duration": "2s"}}]
    manifest = scene.manifest(server_side, steps=steps, functionName=server_side_fn)
    applied = scene.apply(manifest, "--server-side")
    assert applied.stdout.strip() == f"{RESOURCE}/{server_side} serverside-applied"
    scene.wait_for(server_side, phase_is("Healthy"), what="Healthy")

    # A new version, applied server-side again: a new rollout, from version 2. The apply meets no
    # conflict, so the operator's writes took no field of the spec from its owner.
    assert publish_demo_release(scene.aws.endpoint_url, REGION, 3, name=server_side_fn) == "3"
    manifest = scene.manifest(server_side, "3", steps=steps, functionName=server_side_fn)
    applied = scene.apply(manifest, "--server-side")
    assert applied.stdout.strip() == f"{RESOURCE}/{server_side} serverside-applied"
    body = scene.reached(server_side, status_is(phase="Healthy", canaryVersion="3"), what="version 3 Healthy")
    assert body["metadata"]["generation"] == 2
    assert body["status"]["observedGeneration"] == 2
    assert scene.alias(server_side_fn) == ("3", {})
    assert scene.writes(server_side_fn) == [("1", {"2": 0.5}), ("2", {}), ("2", {"3": 0.5}), ("3", {})]
    events = events_until(scene, server_side, "Succeeded")
    assert ("Normal", "Progressing", "rolling out version 3 over version 2") in event_lines(events)

    delete(scene, client_side)
    delete(scene, server_side)


# -- 7. kubectl explain ------------------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    documents = [
        doc for doc in yaml.safe_load_all((ROOT / "crds" / "lambdarollouts.yaml").read_text()) if doc
    ]
    schema: dict[str, Any] = documents[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _flat(text: str) -> str:
    # kubectl wraps descriptions to the terminal's width: compare word by word.
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("path", "schema_path"),
    [
        ("lambdarollouts.spec", ("spec",)),
        ("lro.spec.strategy.canary.steps", ("spec", "strategy", "canary", "steps")),
    ],
)
def test_kubectl_explain_prints_the_crds_descriptions(
    deployed: ApiServer, path: str, schema_path: tuple[str, ...]
) -> None:
    node = _schema()
    for part in schema_path:
        node = node["properties"][part]
    described = node.get("description") or node["items"]["description"]
    fields = (node.get("items") or node)["properties"]

    explained = deployed.kubectl("explain", path).stdout
    assert "KIND:       LambdaRollout" in explained, explained
    assert "VERSION:    v1alpha1" in explained, explained
    assert _flat(described) in _flat(explained), explained
    for field, sub in fields.items():
        assert re.search(rf"^\s+{field}\s+<", explained, re.MULTILINE), f"{field} missing:\n{explained}"
        assert _flat(sub["description"]) in _flat(explained), f"{field}'s description missing:\n{explained}"


# -- 8. the API server stopped mid-rollout ---------------------------------------------------------


@pytest.mark.timeout(240)
def test_an_api_server_stopped_for_10s_mid_rollout_loses_and_doubles_nothing(scene: Scene) -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"pause": {"duration": "3s"}},
        {"setWeight": 30},
        {"pause": {"duration": "3s"}},
        {"setWeight": 60},
        {"pause": {"duration": "2s"}},
    ]
    name = started(scene, steps)
    scene.wait_for(name, weight_is(10), what="10% in status")

    # The pause at 10% ends while the API server is away: the operator moves the alias on with no
    # one to tell, then must tell it once the server is back, and not move it twice.
    scene.server.stop_apiserver()
    stopped_at = datetime.datetime.now(datetime.UTC)
    time.sleep(10)
    scene.server.start_apiserver()  # answers 429 "storage is (re)initializing" for a moment at first
    ready_at = datetime.datetime.now(datetime.UTC)

    body = scene.reached(name, phase_is("Healthy"), what="Healthy", timeout=120)
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {"2": 0.3}), ("1", {"2": 0.6}), ("2", {})]
    assert scene.alias() == ("2", {})
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert (status["stableVersion"], status["canaryVersion"], status["canaryWeight"]) == ("2", "2", 100)
    assert (status["currentStepIndex"], status["stepCount"], status["retryCount"]) == (6, 6, 0)
    assert conditions(body) == succeeded()
    events = events_until(scene, name, "Succeeded")
    weights_set = [event["MESSAGE"] for event in events if event["REASON"] == "WeightSet"]
    # Each weight told once at most. The Event of a weight set while the server was away is lost
    # with it (Kopf's retries end first); the pass after the outage tells where it found the alias.
    assert len(weights_set) == len(set(weights_set)), weights_set
    told = " | ".join(event["MESSAGE"] for event in events)
    for weight in (10, 30, 60):
        assert f"set weight {weight}% on version 2" in told or f"found {weight}% of traffic" in told, told
    assert [event["REASON"] for event in events].count("Succeeded") == 1
    delete(scene, name)
    # Refused only while the restarted server's authorizer had not read the RBAC objects yet.
    assert audit_denials(scene.server, CERT_USER, except_between=(stopped_at, ready_at)) == []
