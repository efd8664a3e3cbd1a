"""Flux's view of LambdaRollouts: kstatus, the real library, over the statuses the operator writes.

A Flux Kustomization with ``wait: true`` waits until every object it applied is Current in kstatus
terms, fails its health check as soon as one is Failed (Flux 2.1 and later), and times out while
one stays InProgress. Every verdict here is kstatus's own: ``status.Compute`` of
sigs.k8s.io/cli-utils ``pkg/kstatus/status``, run by the Go program of ``tools/go/kstatus``
(``kstatus_go.py``) over the objects that the real planner's statuses make in whole lifecycles
(``lifecycle.py``). Objects are judged in batches, one run of the program per batch.

What kstatus reads of a custom resource (its first test pins it on hand-made objects, so the others
test the operator only): ``metadata.deletionTimestamp`` (Terminating); a ``status.observedGeneration``
that differs from ``metadata.generation`` (InProgress, LatestGenerationNotObserved); the first
``Reconciling=True`` (InProgress) or ``Stalled=True`` (Failed) condition, with its message; then the
first ``Ready`` condition (True: Current; False or Unknown: InProgress); otherwise Current.
"""

from __future__ import annotations

from typing import Any

import pytest

from lambda_rollouts.errors import VersionNotFoundError
from lambda_rollouts.model import API_VERSION, KIND, Phase, Reason, RolloutStatus
from lambda_rollouts.planner import build_conditions

from .kstatus_go import CURRENT, FAILED, IN_PROGRESS, TERMINATING, KstatusError, Verdict, judge, judge_one
from .lifecycle import ERROR_RATE, T0, Run, drive, rollout_object, spec_of, traffic

NOT_OBSERVED = "LatestGenerationNotObserved"
# The first judgement builds tools/go/kstatus when it is not cached yet: about a minute of CPU.
pytestmark = pytest.mark.timeout(600)


def deleted(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server serves it once deleted while the operator's finalizer holds it."""
    metadata = {
        **body["metadata"],
        "deletionTimestamp": "2026-01-01T18:00:00Z",
        "finalizers": ["lambda.rollouts.dev/finalizer"],
    }
    return {**body, "metadata": metadata}


def test_what_kstatus_reads_of_a_custom_resource() -> None:
    def body(status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
        made: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "checkout-api", "namespace": "default", "generation": 2, **metadata},
        }
        if status is not None:
            made["status"] = status
        return made

    def conditions(*pairs: tuple[str, str]) -> dict[str, Any]:
        return {
            "conditions": [
                {"type": kind, "status": value, "reason": f"{kind}Is{value}", "message": f"{kind} {value}"}
                for kind, value in pairs
            ]
        }

    stalled = conditions(("Ready", "True"), ("Stalled", "True"), ("Reconciling", "True"))
    objects = [
        body(deletionTimestamp="2026-01-01T00:00:00Z"),
        body({"observedGeneration": 1, **stalled}),
        body(),
        body(conditions(("Ready", "True"))),
        body(conditions(("Ready", "False"))),
        body(conditions(("Ready", "Unknown"))),
        body(stalled),
        body(conditions(("Reconciling", "True"), ("Stalled", "True"))),
        body(conditions(("Reconciling", "False"), ("Stalled", "False"))),
    ]
    assert judge(objects) == [
        (TERMINATING, "Resource scheduled for deletion", ""),
        (IN_PROGRESS, "LambdaRollout generation is 2, but latest observed generation is 1", NOT_OBSERVED),
        (CURRENT, "Resource is current", ""),
        (CURRENT, "Resource is Ready", ""),
        (IN_PROGRESS, "Ready False", "ReadyIsFalse"),
        (IN_PROGRESS, "Ready Unknown", "ReadyIsUnknown"),
        # The first of Reconciling=True and Stalled=True in list order decides, before Ready.
        (FAILED, "Stalled True", "StalledIsTrue"),
        (IN_PROGRESS, "Reconciling True", "ReconcilingIsTrue"),
        # Both False and no Ready: nothing says otherwise.
        (CURRENT, "Resource is current", ""),
    ]


def test_an_object_kstatus_cannot_read_is_an_error_that_names_it() -> None:
    good = rollout_object(spec_of(), None, 1)
    with pytest.raises(KstatusError, match="object 1 is not a Kubernetes object"):
        judge([good, {"metadata": {"name": "no-kind"}}])
    odd = {**good, "metadata": {**good["metadata"], "generation": "two"}}
    with pytest.raises(KstatusError, match=r"object 0: looking up metadata\.generation"):
        judge([odd])


def _statuses(run: Run, since: int = 0) -> list[tuple[float, str]]:
    """kstatus after each pass from pass number ``since``, with consecutive repeats dropped."""
    passes = run.passes[since:]
    verdicts = judge([run.object(status) for _, status in passes])
    seen: list[tuple[float, str]] = []
    for (at, _), verdict in zip(passes, verdicts, strict=True):
        if not seen or seen[-1][1] != verdict.status:
            seen.append((at, verdict.status))
    return seen


def test_a_whole_lifecycle() -> None:
    # A canary of version 2 that succeeds.
    run = drive(Run(spec_of(analysis=ERROR_RATE)), until=3600)
    progressing = Reason.PROGRESSING
    assert judge([run.object(status) for _, status in run.passes]) == [
        (IN_PROGRESS, "step 1/3: set weight 10% on version 2", progressing),
        (IN_PROGRESS, "step 2/3: pause 5m (5m left)", progressing),
        (IN_PROGRESS, "step 2/3: pause 5m (4m left)", progressing),
        (IN_PROGRESS, "step 2/3: pause 5m (3m left)", progressing),
        (IN_PROGRESS, "step 2/3: pause 5m (2m left)", progressing),
        (IN_PROGRESS, "step 2/3: pause 5m (1m left)", progressing),
        (IN_PROGRESS, "step 3/3: set weight 50% on version 2", progressing),
        (CURRENT, "Resource is Ready", ""),
    ]

    # A commit asks for version 3: until the operator has seen it, kstatus must not keep
    # reporting the Current of version 2.
    run.change_spec(version="3")
    unseen_3 = run.object()
    # Version 3 fails its analysis at 10% and is rolled back: Failed, with the operator's message.
    mark = len(run.passes)
    drive(run, start=4000, until=8000, read=traffic(invocations=400, errors=50))
    assert _statuses(run, mark) == [(4000, IN_PROGRESS), (4060, FAILED)]
    rolled_back = run.object()
    # It stays Failed while nothing changes (the operator holds a rolled-back rollout).
    drive(run, start=8000, until=8000)
    held = run.object()

    # The fix is committed as version 4: InProgress at once, then Current when it is promoted.
    run.change_spec(version="4")
    unseen_4 = run.object()
    mark = len(run.passes)
    drive(run, start=9000, until=12000)
    assert _statuses(run, mark) == [(9000, IN_PROGRESS), (9300, CURRENT)]
    assert run.status.canary_version == "4"

    # Version 5 with spec.paused: held, which kstatus reports as InProgress (Reconciling=True).
    run.change_spec(version="5", paused=True)
    drive(run, start=13000, until=14000)
    paused = run.object()

    # An abort (the manual action) mid-rollout is Failed like a rollback.
    run.change_spec(paused=False)
    drive(run, start=15000, until=15000)
    resumed = run.object()
    drive(run, start=15100, until=15100, action="abort")
    aborted = run.object()

    assert judge([unseen_3, rolled_back, held, unseen_4, paused, resumed, aborted, deleted(aborted)]) == [
        (IN_PROGRESS, "LambdaRollout generation is 2, but latest observed generation is 1", NOT_OBSERVED),
        (
            FAILED,
            "analysis failed: error-rate of version 3 was 12.5%, above max 1%; rolled back to version 2",
            Reason.ANALYSIS_FAILED,
        ),
        (
            FAILED,
            "analysis failed: error-rate of version 3 was 12.5%, above max 1%; rolled back to version 2",
            Reason.ANALYSIS_FAILED,
        ),
        (IN_PROGRESS, "LambdaRollout generation is 3, but latest observed generation is 2", NOT_OBSERVED),
        (IN_PROGRESS, "paused by spec.paused at step 1/3 with 0% on version 5", Reason.PAUSED_BY_SPEC),
        (IN_PROGRESS, "step 2/3: pause 5m (5m left)", progressing),
        (FAILED, "aborted by request; rolled back to version 4", Reason.ABORTED),
        # Deleted while the finalizer holds it: Terminating, whatever the status says.
        (TERMINATING, "Resource scheduled for deletion", ""),
    ]


def test_an_indefinite_pause_is_in_progress_until_promoted() -> None:
    steps = [{"setWeight": 10}, {"pause": {}}]
    run = drive(Run(spec_of(strategy={"canary": {"steps": steps}})), until=3600)
    assert run.status.phase == Phase.PAUSED
    assert _statuses(run) == [(0, IN_PROGRESS)]
    assert judge_one(run.object()) == Verdict(
        IN_PROGRESS, "step 2/2: paused until promoted, 10% on version 2", Reason.PAUSED_BY_STEP
    )


def test_a_pre_flight_failure_is_failed() -> None:
    error = VersionNotFoundError("version 9 of function checkout-api does not exist")
    run = drive(Run(spec_of(version="9")), until=0, preflight_error=error)
    assert judge_one(run.object()) == (
        FAILED,
        "version 9 of function checkout-api does not exist; retrying in 5s",
        Reason.VERSION_NOT_FOUND,
    )


EXPECTED = {
    Phase.HEALTHY: CURRENT,
    Phase.PROGRESSING: IN_PROGRESS,
    Phase.PAUSED: IN_PROGRESS,
    Phase.DEGRADED: FAILED,
}


@pytest.mark.parametrize("phase", list(Phase))
def test_every_reason_in_every_phase(phase: Phase) -> None:
    objects = []
    for reason in Reason:
        conditions = build_conditions([], phase=phase, reason=reason, message="m", generation=4, now=T0)
        status = RolloutStatus(observed_generation=4, phase=phase, message="m", conditions=conditions)
        objects.append(rollout_object(spec_of(), status, 4))
    verdicts = judge(objects)
    assert {reason: verdict.status for reason, verdict in zip(Reason, verdicts, strict=True)} == {
        reason: EXPECTED[phase] for reason in Reason
    }


def test_a_rollout_nobody_has_seen_yet_is_current_unless_status_defaults_observed_generation() -> None:
    # kstatus's documented blind spot: a custom resource without status has nothing that says it is
    # not reconciled yet, so it is Current, and a Kustomization applying a new LambdaRollout can
    # finish waiting before the operator has looked at it. Flux's own CRDs avoid this with a
    # schema default of status.observedGeneration: -1; with it, kstatus waits for the operator.
    created = rollout_object(spec_of(), None, 1)
    defaulted = {**created, "status": {"observedGeneration": -1}}
    assert judge([created, defaulted]) == [
        (CURRENT, "Resource is current", ""),
        (IN_PROGRESS, "LambdaRollout generation is 1, but latest observed generation is -1", NOT_OBSERVED),
    ]


# -- what a Kustomization with wait: true makes of it ------------------------------------------------


def flux_wait(run: Run, *, applied_at: float, timeout: float) -> tuple[str, float]:
    """How a wait on this one rollout ends: ("Ready" | "Failed" | "TimedOut", seconds after apply).

    A model of Flux's wait over the snapshots the operator wrote, each judged by kstatus: Current
    ends it successfully, Failed ends it at once (Flux 2.1+ fails fast), anything else until
    ``timeout`` times it out.
    """
    window = [(at, status) for at, status in run.passes if applied_at <= at <= applied_at + timeout]
    verdicts = judge([run.object(status) for _, status in window])
    for (at, _), verdict in zip(window, verdicts, strict=True):
        if verdict.status == CURRENT:
            return "Ready", at - applied_at
        if verdict.status == FAILED:
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
