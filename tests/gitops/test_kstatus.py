"""Flux's view of LambdaRollouts: kstatus over the statuses the operator writes in a whole lifecycle.

A Flux Kustomization with ``wait: true`` waits until every object it applied is Current in kstatus
terms, fails its health check as soon as one is Failed (Flux 2.1 and later), and times out while
one stays InProgress. ``kstatus`` below implements the rules that apply to a LambdaRollout, as
written in sigs.k8s.io/cli-utils ``pkg/kstatus/status`` (``Compute`` in status.go, ``checkGenericProperties``
and ``checkGeneration`` in generic.go, ``checkReadyCondition``; documented in pkg/kstatus/README.md,
"Conditions" and "The Ready Condition"); Flux uses them through its fork, fluxcd/cli-utils:

1. ``metadata.deletionTimestamp`` set: Terminating.
2. ``metadata.generation`` and ``status.observedGeneration`` both set and different: InProgress
   (reason LatestGenerationNotObserved). No ``observedGeneration``: this check is skipped.
3. The first condition, in list order, that is ``Reconciling=True`` gives InProgress, or that is
   ``Stalled=True`` gives Failed; the message is the condition's.
4. (Built-in kinds have type-specific rules here; a LambdaRollout has none.)
5. The first ``Ready`` condition: ``True`` gives Current; ``False`` or ``Unknown`` gives InProgress
   with its message.
6. Otherwise Current ("Resource is current"): no status, or no known conditions.
"""

from __future__ import annotations

from typing import Any

import pytest

from lambda_rollouts.errors import VersionNotFoundError
from lambda_rollouts.model import Phase, Reason, RolloutStatus
from lambda_rollouts.planner import build_conditions

from .lifecycle import ERROR_RATE, T0, Run, drive, rollout_object, spec_of, traffic

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


def kstatus(body: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of a custom resource without type-specific rules, as kstatus computes them."""
    metadata = body.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    status = body.get("status") or {}
    generation = metadata.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return IN_PROGRESS, (
            f"{body['kind']} generation is {generation}, but latest observed generation is {observed}"
        )
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return IN_PROGRESS, condition.get("message", "")
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return FAILED, condition.get("message", "")
    for condition in conditions:
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return CURRENT, "Resource is Ready"
        if condition.get("status") in ("False", "Unknown"):
            return IN_PROGRESS, condition.get("message", "")
    return CURRENT, "Resource is current"


def test_the_rules_as_written() -> None:
    # The rules on their own, on hand-made objects, so the lifecycle below tests the operator only.
    def body(status: dict[str, Any] | None, **metadata: Any) -> dict[str, Any]:
        return {"kind": "LambdaRollout", "metadata": {"generation": 2, **metadata}, "status": status}

    def condition(kind: str, value: str) -> dict[str, str]:
        return {"type": kind, "status": value, "message": f"{kind} {value}"}

    assert kstatus(body(None, deletionTimestamp="2026-01-01T00:00:00Z")) == (
        TERMINATING,
        "Resource scheduled for deletion",
    )
    assert kstatus(body({"observedGeneration": 1})) == (
        IN_PROGRESS,
        "LambdaRollout generation is 2, but latest observed generation is 1",
    )
    assert kstatus(body(None)) == (CURRENT, "Resource is current")
    assert kstatus(body({"conditions": [condition("Ready", "True")]})) == (CURRENT, "Resource is Ready")
    assert kstatus(body({"conditions": [condition("Ready", "False")]})) == (IN_PROGRESS, "Ready False")
    assert kstatus(body({"conditions": [condition("Ready", "Unknown")]})) == (IN_PROGRESS, "Ready Unknown")
    both = [condition("Ready", "True"), condition("Stalled", "True"), condition("Reconciling", "True")]
    assert kstatus(body({"conditions": both})) == (FAILED, "Stalled True")


def _statuses(run: Run, since: int = 0) -> list[tuple[float, str]]:
    """kstatus after each pass from pass number ``since``, with consecutive repeats dropped."""
    seen: list[tuple[float, str]] = []
    for at, status in run.passes[since:]:
        state, _ = kstatus(run.object(status))
        if not seen or seen[-1][1] != state:
            seen.append((at, state))
    return seen


def test_a_whole_lifecycle() -> None:
    # A canary of version 2 that succeeds.
    run = drive(Run(spec_of(analysis=ERROR_RATE)), until=3600)
    assert [kstatus(run.object(status)) for _, status in run.passes] == [
        (IN_PROGRESS, "step 1/3: set weight 10% on version 2"),
        (IN_PROGRESS, "step 2/3: pause 5m (5m left)"),
        (IN_PROGRESS, "step 2/3: pause 5m (4m left)"),
        (IN_PROGRESS, "step 2/3: pause 5m (3m left)"),
        (IN_PROGRESS, "step 2/3: pause 5m (2m left)"),
        (IN_PROGRESS, "step 2/3: pause 5m (1m left)"),
        (IN_PROGRESS, "step 3/3: set weight 50% on version 2"),
        (CURRENT, "Resource is Ready"),
    ]

    # A commit asks for version 3: until the operator has seen it, kstatus must not keep
    # reporting the Current of version 2.
    run.change_spec(version="3")
    assert kstatus(run.object()) == (
        IN_PROGRESS,
        "LambdaRollout generation is 2, but latest observed generation is 1",
    )
    # Version 3 fails its analysis at 10% and is rolled back: Failed, with the operator's message.
    mark = len(run.passes)
    drive(run, start=4000, until=8000, read=traffic(invocations=400, errors=50))
    assert _statuses(run, mark) == [(4000, IN_PROGRESS), (4060, FAILED)]
    assert kstatus(run.object()) == (
        FAILED,
        "analysis failed: error-rate of version 3 was 12.5%, above max 1%; rolled back to version 2",
    )
    # It stays Failed while nothing changes (the operator holds a rolled-back rollout).
    drive(run, start=8000, until=8000)
    assert kstatus(run.object())[0] == FAILED

    # The fix is committed as version 4: InProgress at once, then Current when it is promoted.
    run.change_spec(version="4")
    assert kstatus(run.object()) == (
        IN_PROGRESS,
        "LambdaRollout generation is 3, but latest observed generation is 2",
    )
    mark = len(run.passes)
    drive(run, start=9000, until=12000)
    assert _statuses(run, mark) == [(9000, IN_PROGRESS), (9300, CURRENT)]
    assert run.status.canary_version == "4"

    # Version 5 with spec.paused: held, which kstatus reports as InProgress (Reconciling=True).
    run.change_spec(version="5", paused=True)
    drive(run, start=13000, until=14000)
    assert kstatus(run.object()) == (IN_PROGRESS, "paused by spec.paused at step 1/3 with 0% on version 5")

    # An abort (the manual action) mid-rollout is Failed like a rollback.
    run.change_spec(paused=False)
    drive(run, start=15000, until=15000)
    assert kstatus(run.object()) == (IN_PROGRESS, "step 2/3: pause 5m (5m left)")
    drive(run, start=15100, until=15100, action="abort")
    assert kstatus(run.object()) == (FAILED, "aborted by request; rolled back to version 4")


def test_an_indefinite_pause_is_in_progress_until_promoted() -> None:
    steps = [{"setWeight": 10}, {"pause": {}}]
    run = drive(Run(spec_of(strategy={"canary": {"steps": steps}})), until=3600)
    assert run.status.phase == Phase.PAUSED
    assert _statuses(run) == [(0, IN_PROGRESS)]


def test_a_pre_flight_failure_is_failed() -> None:
    error = VersionNotFoundError("version 9 of function checkout-api does not exist")
    run = drive(Run(spec_of(version="9")), until=0, preflight_error=error)
    assert kstatus(run.object()) == (
        FAILED,
        "version 9 of function checkout-api does not exist; retrying in 5s",
    )


EXPECTED = {
    Phase.HEALTHY: CURRENT,
    Phase.PROGRESSING: IN_PROGRESS,
    Phase.PAUSED: IN_PROGRESS,
    Phase.DEGRADED: FAILED,
}


@pytest.mark.parametrize("phase", list(Phase))
def test_every_reason_in_every_phase(phase: Phase) -> None:
    for reason in Reason:
        conditions = build_conditions([], phase=phase, reason=reason, message="m", generation=4, now=T0)
        status = RolloutStatus(observed_generation=4, phase=phase, message="m", conditions=conditions)
        assert kstatus(rollout_object(spec_of(), status, 4))[0] == EXPECTED[phase], reason


def test_a_rollout_nobody_has_seen_yet_is_current_unless_status_defaults_observed_generation() -> None:
    # kstatus's documented blind spot: a custom resource without status has nothing that says it is
    # not reconciled yet, so it is Current, and a Kustomization applying a new LambdaRollout can
    # finish waiting before the operator has looked at it. Flux's own CRDs avoid this with a
    # schema default of status.observedGeneration: -1; with it, kstatus waits for the operator.
    created = rollout_object(spec_of(), None, 1)
    assert kstatus(created) == (CURRENT, "Resource is current")
    defaulted = {**created, "status": {"observedGeneration": -1}}
    assert kstatus(defaulted) == (
        IN_PROGRESS,
        "LambdaRollout generation is 1, but latest observed generation is -1",
    )


# -- what a Kustomization with wait: true makes of it ------------------------------------------------


def flux_wait(run: Run, *, applied_at: float, timeout: float) -> tuple[str, float]:
    """How a wait on this one rollout ends: ("Ready" | "Failed" | "TimedOut", seconds after apply).

    A model of Flux's wait over the snapshots the operator wrote: Current ends it successfully,
    Failed ends it at once (Flux 2.1+ fails fast), anything else until ``timeout`` times it out.
    """
    for at, status in run.passes:
        if at < applied_at:
            continue
        if at - applied_at > timeout:
            break
        state, _ = kstatus(run.object(status))
        if state == CURRENT:
            return "Ready", at - applied_at
        if state == FAILED:
            return "Failed", at - applied_at
    return "TimedOut", timeout


def test_flux_wait_succeeds_after_a_canary_fails_fast_on_a_rollback_and_times_out_on_a_hold() -> None:
    canary = drive(Run(spec_of(analysis=ERROR_RATE)), until=3600)
    assert flux_wait(canary, applied_at=0, timeout=600) == ("Ready", 300)
    assert flux_wait(canary, applied_at=0, timeout=120) == ("TimedOut", 120)

    failing = drive(Run(spec_of(analysis=ERROR_RATE)), until=3600, read=traffic(invocations=400, errors=50))
    assert flux_wait(failing, applied_at=0, timeout=1800) == ("Failed", 60)

    steps = [{"setWeight": 10}, {"pause": {}}]
    held = drive(Run(spec_of(strategy={"canary": {"steps": steps}})), until=3600)
    assert flux_wait(held, applied_at=0, timeout=1800) == ("TimedOut", 1800)
