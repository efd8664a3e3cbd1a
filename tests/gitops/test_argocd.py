"""Argo CD's view of LambdaRollouts: the health check and resource actions in deploy/argocd/.

The Lua runs on Lua 5.1, the language of gopher-lua that Argo CD embeds, with only the base and
table libraries of Argo CD's sandbox (which adds ``package`` and a cut-down ``os``, unused here, and
has no ``string``, ``math``, ``io`` or ``debug``), so a script that relies on a missing library
fails here as it would in Argo CD. The object goes in as
Argo CD passes it (``obj``, arrays as 1-based tables) and comes back as Argo CD reads it (an empty
table takes the shape the original field had).

The statuses come from the real planner driven through whole rollouts (``lifecycle.py``), manual
actions included; the hand-written ones are the incomplete or odd statuses the script must survive.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import lupa.lua51 as lua51
import pytest
import yaml

from lambda_rollouts.errors import (
    AccessDeniedError,
    AlarmNotFoundError,
    AliasConflictError,
    ThrottledError,
    VersionNotFoundError,
)
from lambda_rollouts.model import (
    ACTION_ANNOTATION,
    ActionResult,
    ManualAction,
    Phase,
    Reason,
    RolloutStatus,
    parse_action_request,
)
from lambda_rollouts.observed import AliasState
from lambda_rollouts.planner import build_conditions

from .lifecycle import (
    ERROR_RATE,
    T0,
    Run,
    drive,
    fail,
    hooks_answering,
    rollout_object,
    spec_of,
    traffic,
)

ARGOCD = Path(__file__).resolve().parents[2] / "deploy" / "argocd"
HEALTH = ARGOCD / "health.lua"
DISCOVERY = ARGOCD / "actions" / "discovery.lua"
CONFIGMAP = ARGOCD / "argocd-cm.yaml"
KEY = "lambda.rollouts.dev_LambdaRollout"
ACTIONS = sorted(action.value for action in ManualAction)


# -- running Lua as Argo CD does ------------------------------------------------------------------


def _sandbox() -> Any:
    lua = lua51.LuaRuntime()
    # What Argo CD does not load: string (and the string metatable behind "s:len()"), math, io,
    # debug, coroutine. Its package and cut-down os go too: the scripts need neither.
    lua.execute(
        "debug.setmetatable('', nil)\n"
        "string, math, io, os, debug, coroutine, package, require, module = nil\n"
        "dofile, loadfile, load, loadstring = nil"
    )
    return lua


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(lua, item)
        return table
    return value


def _from_lua(value: Any, like: Any = None) -> Any:
    """Python data from a Lua value; ``like`` is the original, for tables Lua cannot tell apart."""
    if lua51.lua_type(value) != "table":
        return value
    keys = list(value.keys())
    if not keys:
        # Argo CD's cleanReturnedObj: an empty table keeps the original field's shape.
        return {} if isinstance(like, dict) else []
    if set(keys) == set(range(1, len(keys) + 1)):
        items = like if isinstance(like, list) else []
        return [
            _from_lua(value[index], items[index - 1] if index <= len(items) else None)
            for index in range(1, len(keys) + 1)
        ]
    fields = like if isinstance(like, dict) else {}
    return {key: _from_lua(item, fields.get(key)) for key, item in value.items()}


def run_lua(script: Path | str, body: dict[str, Any]) -> Any:
    """Run ``script`` with ``obj`` = ``body``, as Argo CD does, and return its result as Python data."""
    lua = _sandbox()
    lua.globals()["obj"] = _to_lua(lua, copy.deepcopy(body))
    source = script.read_text() if isinstance(script, Path) else script
    return _from_lua(lua.execute(source), like=body)


def health(body: dict[str, Any]) -> tuple[str, str]:
    result = run_lua(HEALTH, body)
    assert set(result) == {"status", "message"}
    return result["status"], result["message"]


def test_the_sandbox_refuses_what_argo_cd_refuses() -> None:
    # Without this, a script using string.format or ("x"):upper() would pass here and fail in Argo CD.
    with pytest.raises(lua51.LuaError):
        run_lua("return string.format('%d', 1)", {})
    with pytest.raises(lua51.LuaError):
        run_lua("return ('x'):upper()", {})
    assert run_lua("return {type(obj.a), obj.a[2], tostring(obj.n)}", {"a": [1, 2], "n": 3}) == [
        "table",
        2,
        "3",
    ]


# -- statuses the operator writes ------------------------------------------------------------------
# Each builder drives the planner to a state and returns the run, whose latest status is that state.

CONFIRM = {"confirmPromotion": {"url": "https://gate.example/ok", "interval": "1m"}}
AFTER_HOOK = {"afterAllowTraffic": {"functionName": "checkout-verify"}}
INDEFINITE = {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}


def _canary() -> Run:
    return drive(Run(spec_of()), until=3600)


def _timed_pause() -> Run:
    return drive(Run(spec_of()), until=60)


def _first_weight() -> Run:
    run = _timed_pause()
    run.status = run.passes[0][1]
    return run


def _restoring() -> Run:
    run = drive(Run(spec_of(version="3"), alias=AliasState("1", {"2": 10.0}, "rev-0")), until=0)
    run.status = run.passes[0][1]
    return run


def _after_hook_running() -> Run:
    run = drive(Run(spec_of(hooks=AFTER_HOOK)), until=3600, hook=hooks_answering(False, "FunctionError: x"))
    run.status = next(
        status
        for _, status in run.passes
        if (status.message or "").endswith("running the afterAllowTraffic hook")
    )
    return run


def _after_hook_failed() -> Run:
    return drive(Run(spec_of(hooks=AFTER_HOOK)), until=3600, hook=hooks_answering(False, "FunctionError: x"))


def _throttled() -> Run:
    run = _timed_pause()
    fail(run, ThrottledError("Rate exceeded"), at=10)
    return run


def _conflict() -> Run:
    run = _timed_pause()
    fail(run, AliasConflictError("alias live was changed by someone else (RevisionId mismatch)"), at=10)
    return run


def _indefinite_pause() -> Run:
    return drive(Run(spec_of(strategy=INDEFINITE)), until=3600)


def _spec_paused() -> Run:
    return drive(_timed_pause().change_spec(paused=True), start=120, until=200)


def _inconclusive() -> Run:
    return drive(Run(spec_of(analysis=ERROR_RATE)), until=60, read=traffic(invocations=5))


def _awaiting_confirmation() -> Run:
    return drive(Run(spec_of(hooks=CONFIRM)), until=300, hook=hooks_answering(False, "HTTP 503"))


def _paused_by_action() -> Run:
    return drive(_timed_pause(), start=90, until=200, action="pause")


def _analysis_failed() -> Run:
    return drive(Run(spec_of(analysis=ERROR_RATE)), until=3600, read=traffic(invocations=400, errors=50))


def _before_hook_failed() -> Run:
    hooks = {"beforeAllowTraffic": {"functionName": "checkout-smoke"}}
    return drive(Run(spec_of(hooks=hooks)), until=3600, hook=hooks_answering(False, "smoke test 3 failed"))


def _deadline() -> Run:
    run = Run(spec_of(hooks=CONFIRM, progressDeadlineSeconds=600))
    return drive(run, until=7200, hook=hooks_answering(False, "HTTP 503"))


def _aborted() -> Run:
    return drive(_timed_pause(), start=90, until=200, action="abort")


def _version_not_found() -> Run:
    error = VersionNotFoundError("version 9 of function checkout-api does not exist")
    return drive(Run(spec_of(version="9")), until=0, preflight_error=error)


def _alarm_not_found() -> Run:
    error = AlarmNotFoundError(
        "CloudWatch alarm checkout-api-5xx not found in eu-west-1: an analysis cannot pass on an alarm "
        "that does not exist"
    )
    return drive(Run(spec_of(analysis={"alarms": ["checkout-api-5xx"]})), until=0, preflight_error=error)


def _access_denied() -> Run:
    run = _timed_pause()
    fail(run, AccessDeniedError("not authorized to perform lambda:UpdateAlias on checkout-api"), at=10)
    return run


def _alias_created() -> Run:
    return drive(Run(spec_of(), alias=None), until=0)


def _adopted() -> Run:
    return drive(Run(spec_of(version="1")), until=0)


def _rolled_back_then_reverted() -> Run:
    run = drive(Run(spec_of(analysis=ERROR_RATE)), until=3600, read=traffic(errors=50))
    return drive(run.change_spec(version="1"), start=4000, until=5000)


def _healthy_then_edited() -> Run:
    # Someone commits version 3; the API server bumps the generation; the operator has not run.
    return _canary().change_spec(version="3")


def _failed_then_edited() -> Run:
    return _analysis_failed().change_spec(version="3")


# name: (the state, Argo CD health, Argo CD message)
HEALTH_CASES: dict[str, tuple[Callable[[], Run], str, str]] = {
    # Progressing
    # The pause after a weight starts in the write's pass: one status says both.
    "first weight written": (
        _first_weight,
        "Progressing",
        "step 2/3: pause 5m (5m left)",
    ),
    "timed pause": (
        _timed_pause,
        "Progressing",
        "step 2/3: pause 5m (5m left)",
    ),
    "restoring stable before a new version": (
        _restoring,
        "Progressing",
        "sending all traffic back to version 1 (was 10% on version 2) before rolling out version 3",
    ),
    "promoted, afterAllowTraffic hook to run": (
        _after_hook_running,
        "Progressing",
        "promoted version 2: all traffic on it (was 50%); running the afterAllowTraffic hook",
    ),
    "throttled, retrying": (_throttled, "Progressing", "Rate exceeded; retrying in 5s"),
    "alias conflict, retrying": (
        _conflict,
        "Progressing",
        "alias live was changed by someone else (RevisionId mismatch); retrying in 5s",
    ),
    # Suspended
    "indefinite pause step": (
        _indefinite_pause,
        "Suspended",
        "step 2/2: paused until promoted, 10% on version 2",
    ),
    "spec.paused": (_spec_paused, "Suspended", "paused by spec.paused at step 2/3 with 10% on version 2"),
    "pause action": (
        _paused_by_action,
        "Suspended",
        "paused by a pause action at step 2/3 with 10% on version 2",
    ),
    "inconclusive analysis hold": (
        _inconclusive,
        "Suspended",
        "step 2/3: held with 10% on version 2: analysis inconclusive (5 invocations of version 2, fewer "
        "than minInvocations 50); measuring again, waiting for data or a person",
    ),
    "waiting for confirmPromotion": (
        _awaiting_confirmation,
        "Suspended",
        "promotion: waiting for confirmPromotion (webhook https://gate.example/ok), 50% on version 2; "
        "last answer: HTTP 503",
    ),
    # Degraded
    "analysis rollback": (
        _analysis_failed,
        "Degraded",
        "AnalysisFailed: analysis failed: error-rate of version 2 was 12.5%, above max 1%; rolled back to "
        "version 1",
    ),
    "beforeAllowTraffic hook failed": (
        _before_hook_failed,
        "Degraded",
        "HookFailed: beforeAllowTraffic hook (function checkout-smoke) failed: smoke test 3 failed; no "
        "traffic was moved",
    ),
    "afterAllowTraffic hook failed": (
        _after_hook_failed,
        "Degraded",
        "HookFailed: afterAllowTraffic hook (function checkout-verify) failed: FunctionError: x; "
        "rolled back to version 1",
    ),
    "progress deadline": (
        _deadline,
        "Degraded",
        "ProgressDeadlineExceeded: no progress for 10m (progressDeadlineSeconds 600) at promotion: "
        "promotion: waiting for confirmPromotion (webhook https://gate.example/ok), 50% on version 2; "
        "last answer: HTTP 503; rolled back to version 1",
    ),
    "abort action": (_aborted, "Degraded", "Aborted: aborted by request; rolled back to version 1"),
    "pre-flight: version not found": (
        _version_not_found,
        "Degraded",
        "VersionNotFound: version 9 of function checkout-api does not exist; retrying in 5s",
    ),
    "pre-flight: alarm not found": (
        _alarm_not_found,
        "Degraded",
        "AlarmNotFound: CloudWatch alarm checkout-api-5xx not found in eu-west-1: an analysis cannot pass "
        "on an alarm that does not exist; retrying in 5s",
    ),
    "access denied": (
        _access_denied,
        "Degraded",
        "AccessDenied: not authorized to perform lambda:UpdateAlias on checkout-api; retrying in 5s",
    ),
    # Healthy
    "promoted": (_canary, "Healthy", "promoted version 2: all traffic on it (was 50%)"),
    "alias created": (_alias_created, "Healthy", "created alias live on version 2: nothing to shift from"),
    "adopted": (_adopted, "Healthy", "version 1 already serves all traffic on alias live"),
    "reverted to stable after a rollback": (
        _rolled_back_then_reverted,
        "Healthy",
        "rolled back to version 1: spec.version is the stable version (version 2 was rolled back "
        "(AnalysisFailed))",
    ),
    # Not observed yet
    "healthy, spec changed, not observed": (
        _healthy_then_edited,
        "Progressing",
        "waiting for the operator to observe generation 2",
    ),
    "rolled back, spec changed, not observed": (
        _failed_then_edited,
        "Progressing",
        "waiting for the operator to observe generation 2",
    ),
}


@pytest.mark.parametrize(("build", "status", "message"), HEALTH_CASES.values(), ids=HEALTH_CASES.keys())
def test_health_of_what_the_operator_writes(build: Callable[[], Run], status: str, message: str) -> None:
    assert health(build().object()) == (status, message)


def test_a_canary_is_progressing_at_every_step_then_healthy() -> None:
    run = _canary()
    assert [health(run.object(status)) for _, status in run.passes] == [
        ("Progressing", "step 2/3: pause 5m (5m left)"),
        ("Progressing", "step 3/3: set weight 50% on version 2"),
        ("Healthy", "promoted version 2: all traffic on it (was 50%)"),
    ]


def test_a_linear_rollout_is_progressing_at_every_step_then_healthy() -> None:
    run = drive(Run(spec_of(strategy={"linear": {"stepWeight": 25, "interval": "1m"}})), until=3600)
    seen = [health(run.object(status)) for _, status in run.passes]
    assert {state for state, _ in seen[:-1]} == {"Progressing"}
    # Each weight's pause starts in the pass that wrote the weight.
    assert [
        (status.canary_weight, message) for (_, status), (_, message) in zip(run.passes, seen, strict=True)
    ][:-1] == [
        (weight, f"step {index}/6: pause 1m (1m left)") for index, weight in ((2, 25.0), (4, 50.0), (6, 75.0))
    ]
    assert seen[-1] == ("Healthy", "promoted version 2: all traffic on it (was 75%)")


ARGO_HEALTH = {
    Phase.HEALTHY: "Healthy",
    Phase.PROGRESSING: "Progressing",
    Phase.PAUSED: "Suspended",
    Phase.DEGRADED: "Degraded",
}


@pytest.mark.parametrize("phase", list(Phase))
def test_every_reason_in_every_phase(phase: Phase) -> None:
    # The script follows the phase whatever the reason; a Degraded message leads with the reason.
    for reason in Reason:
        conditions = build_conditions([], phase=phase, reason=reason, message="m", generation=4, now=T0)
        status = RolloutStatus(observed_generation=4, phase=phase, message="m", conditions=conditions)
        expected = f"{reason.value}: m" if phase == Phase.DEGRADED else "m"
        assert health(rollout_object(spec_of(), status, 4)) == (ARGO_HEALTH[phase], expected), reason


def _body(status: Any = None, *, generation: int | None = 3, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "lambda.rollouts.dev/v1alpha1", "kind": "LambdaRollout"}
    body["metadata"] = {"name": "checkout-api", **metadata}
    if generation is not None:
        body["metadata"]["generation"] = generation
    if status is not None:
        body["status"] = status
    return body


STALLED = {"type": "Stalled", "status": "True", "reason": "AnalysisFailed", "message": "m"}
READY = {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "m"}

EDGE_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "no status": (_body(), "Progressing", "waiting for the operator to observe generation 3"),
    "empty status": (_body({}), "Progressing", "waiting for the operator to observe generation 3"),
    "status is not an object": (
        _body("x"),
        "Progressing",
        "waiting for the operator to observe generation 3",
    ),
    "observedGeneration behind": (
        _body({"observedGeneration": 2, "phase": "Healthy", "message": "m", "conditions": [READY]}),
        "Progressing",
        "waiting for the operator to observe generation 3",
    ),
    "observedGeneration -1, as a CRD default would give": (
        _body({"observedGeneration": -1}),
        "Progressing",
        "waiting for the operator to observe generation 3",
    ),
    "observedGeneration not a number": (
        _body({"observedGeneration": "3", "phase": "Healthy"}),
        "Progressing",
        "waiting for the operator to observe generation 3",
    ),
    "no generation, no observedGeneration": (
        _body({"phase": "Healthy"}, generation=None),
        "Progressing",
        "waiting for the operator to observe this rollout",
    ),
    "no metadata": (
        {"status": {"phase": "Healthy"}},
        "Progressing",
        "waiting for the operator to observe this rollout",
    ),
    "no generation, observed": (
        _body({"observedGeneration": 1, "phase": "Healthy"}, generation=None),
        "Healthy",
        "",
    ),
    "observed, nothing else": (_body({"observedGeneration": 3}), "Progressing", ""),
    "empty conditions": (
        _body({"observedGeneration": 3, "phase": "Healthy", "conditions": []}),
        "Healthy",
        "",
    ),
    "Degraded without conditions": (
        _body({"observedGeneration": 3, "phase": "Degraded", "message": "m", "conditions": []}),
        "Degraded",
        "m",
    ),
    "Degraded without a message": (
        _body({"observedGeneration": 3, "phase": "Degraded", "conditions": [STALLED]}),
        "Degraded",
        "AnalysisFailed",
    ),
    "Degraded, conditions not a list": (
        _body({"observedGeneration": 3, "phase": "Degraded", "message": "m", "conditions": "broken"}),
        "Degraded",
        "m",
    ),
    "Degraded, odd conditions": (
        _body(
            {
                "observedGeneration": 3,
                "phase": "Degraded",
                "message": "m",
                "conditions": ["x", 7, {"status": "True"}, {"type": "Stalled", "reason": 5}, STALLED],
            }
        ),
        "Degraded",
        "m",
    ),
    "message not a string": (
        _body({"observedGeneration": 3, "phase": "Paused", "message": 42}),
        "Suspended",
        "",
    ),
    "unknown phase, Stalled": (
        _body({"observedGeneration": 3, "phase": "Exploded", "message": "m", "conditions": [STALLED]}),
        "Degraded",
        "AnalysisFailed: m",
    ),
    "unknown phase, Ready": (
        _body({"observedGeneration": 3, "phase": "Exploded", "message": "m", "conditions": [READY]}),
        "Healthy",
        "m",
    ),
    "no phase, no conditions": (
        _body({"observedGeneration": 3, "message": "m"}),
        "Progressing",
        "m",
    ),
}


@pytest.mark.parametrize(("body", "status", "message"), EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_health_of_incomplete_or_odd_statuses(body: dict[str, Any], status: str, message: str) -> None:
    assert health(body) == (status, message)


# -- actions ---------------------------------------------------------------------------------------


def test_the_actions_are_the_operators_manual_actions() -> None:
    on_disk = sorted(path.parent.name for path in (ARGOCD / "actions").glob("*/action.lua"))
    assert on_disk == ACTIONS
    assert sorted(discover(_body())) == ACTIONS


def _annotated(body: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    body["metadata"]["annotations"] = annotations
    return body


ACTION_TARGETS: dict[str, Callable[[], dict[str, Any]]] = {
    "progressing, no annotations": lambda: _timed_pause().object(),
    "paused, other annotations": lambda: _annotated(
        _indefinite_pause().object(), {"team": "payments", "argocd.argoproj.io/tracking-id": "app:x/y"}
    ),
    "rolled back, empty annotations": lambda: _annotated(_analysis_failed().object(), {}),
}


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("build", ACTION_TARGETS.values(), ids=ACTION_TARGETS.keys())
def test_an_action_sets_the_annotation_and_nothing_else(
    action: str, build: Callable[[], dict[str, Any]]
) -> None:
    before = build()
    after = run_lua(ARGOCD / "actions" / action / "action.lua", before)
    expected = copy.deepcopy(before)
    expected["metadata"].setdefault("annotations", {})[ACTION_ANNOTATION] = action
    assert after == expected
    # The operator reads the value as this action, with no id.
    assert parse_action_request(after["metadata"]["annotations"][ACTION_ANNOTATION]) == (
        ManualAction(action),
        "",
    )


def discover(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return run_lua(DISCOVERY, body)


def enabled(body: dict[str, Any]) -> set[str]:
    return {name for name, action in discover(body).items() if not action["disabled"]}


IN_FLIGHT = {"promote", "promote-full", "abort"}

# name: (the state, the actions discovery enables in it)
DISCOVERY_CASES: dict[str, tuple[Callable[[], Run], set[str]]] = {
    "progressing": (_timed_pause, IN_FLIGHT | {"pause"}),
    "progressing, retrying a throttled call": (_throttled, IN_FLIGHT | {"pause"}),
    "indefinite pause step": (_indefinite_pause, IN_FLIGHT),
    "inconclusive analysis hold": (_inconclusive, IN_FLIGHT),
    "waiting for confirmPromotion": (_awaiting_confirmation, IN_FLIGHT),
    "pause action": (_paused_by_action, IN_FLIGHT | {"resume"}),
    # The operator refuses to promote past spec.paused: only the spec can lift it.
    "spec.paused": (_spec_paused, {"abort"}),
    "healthy": (_canary, set()),
    "reverted to stable after a rollback": (_rolled_back_then_reverted, set()),
    "analysis rollback": (_analysis_failed, {"retry"}),
    "hook failed": (_before_hook_failed, {"retry"}),
    "progress deadline": (_deadline, {"retry"}),
    "abort action": (_aborted, {"retry"}),
    "pre-flight: version not found": (_version_not_found, set()),
    "access denied": (_access_denied, set()),
}


@pytest.mark.parametrize(("build", "expected"), DISCOVERY_CASES.values(), ids=DISCOVERY_CASES.keys())
def test_discovery_enables_the_actions_that_apply(build: Callable[[], Run], expected: set[str]) -> None:
    actions = discover(build().object())
    assert sorted(actions) == ACTIONS
    assert {name for name, action in actions.items() if not action["disabled"]} == expected
    for action in actions.values():
        assert isinstance(action["disabled"], bool)
        assert action["iconClass"].startswith("fa fa-fw fa-")
        assert action["displayName"]


@pytest.mark.parametrize(
    "body", [_body(), _body("x"), _body({}), {}], ids=["no status", "odd", "empty", "bare"]
)
def test_discovery_of_a_rollout_the_operator_has_not_seen(body: dict[str, Any]) -> None:
    assert enabled(body) == set()


# Where discovery is stricter than the operator: it would accept "pause" on a rollout already
# held by something else (a pause step, a hold, a gate), to keep it held once that ends; the menu
# offers pause only while traffic moves.
STRICTER = {("indefinite pause step", "pause"), ("inconclusive analysis hold", "pause")}
STRICTER |= {("waiting for confirmPromotion", "pause"), ("spec.paused", "pause")}


@pytest.mark.parametrize("name", DISCOVERY_CASES.keys())
def test_the_operator_applies_what_discovery_enables_and_rejects_the_rest(name: str) -> None:
    # Click every action in turn, as Argo CD would: run its action.lua, hand the annotation it
    # wrote to the planner, and read the acknowledgement.
    build, _ = DISCOVERY_CASES[name]
    offered = enabled(build().object())
    for action in ACTIONS:
        run = build()
        annotated = run_lua(ARGOCD / "actions" / action / "action.lua", run.object())
        value = annotated["metadata"]["annotations"][ACTION_ANNOTATION]
        at = run.passes[-1][0] + 30
        drive(run, start=at, until=at, action=value)
        acknowledged = run.status.last_action
        assert acknowledged is not None, (name, action)
        applied = acknowledged.result == ActionResult.APPLIED
        expected = action in offered or (name, action) in STRICTER
        assert applied == expected, (name, action, acknowledged.message)


# -- the ConfigMap ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def configmap() -> dict[str, Any]:
    document = yaml.safe_load(CONFIGMAP.read_text())
    assert isinstance(document, dict)
    return document


def test_the_configmap_carries_exactly_the_lua_files(configmap: dict[str, Any]) -> None:
    # deploy/argocd/render.py writes it; this fails when a .lua file changed and it was not rerun.
    data = configmap["data"]
    assert sorted(data) == [f"resource.customizations.actions.{KEY}", f"resource.customizations.health.{KEY}"]
    assert data[f"resource.customizations.health.{KEY}"] == HEALTH.read_text()
    actions = yaml.safe_load(data[f"resource.customizations.actions.{KEY}"])
    assert sorted(actions) == ["definitions", "discovery.lua"]
    assert actions["discovery.lua"] == DISCOVERY.read_text()
    assert sorted(item["name"] for item in actions["definitions"]) == ACTIONS
    for item in actions["definitions"]:
        assert sorted(item) == ["action.lua", "name"]
        assert item["action.lua"] == (ARGOCD / "actions" / item["name"] / "action.lua").read_text()


def test_the_configmap_is_argocd_cm_and_valid(configmap: dict[str, Any]) -> None:
    assert (configmap["kind"], configmap["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    kubernetes_validate.validate(configmap, kubernetes_validate.latest_version(), strict=True)
