"""Table tests of the planner's health analysis, hooks, deadline and automatic rollback.

A small driver plays the reconciler: it answers the planner's questions (pre-flight, readings,
hook outcomes) from a script, applies each alias write, and records what happened when.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambda_rollouts import planner
from lambda_rollouts.analysis import AlarmReading, Readings
from lambda_rollouts.errors import ThrottledError
from lambda_rollouts.model import HookPoint, RolloutSpec, RolloutStatus
from lambda_rollouts.observed import AliasState
from lambda_rollouts.planner import Answers, HookAnswer, RouteTraffic

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

Reader = Callable[[float, planner.Measure], Readings]


def make_spec(**extra: Any) -> RolloutSpec:
    raw: dict[str, Any] = {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "2",
        "strategy": {
            "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}]}
        },
    }
    raw.update(extra)
    return RolloutSpec.parse(raw)


def healthy_traffic(invocations: float = 100, errors: float = 0) -> Reader:
    """Readings as CloudWatch would give them: the requested ids with one-minute sums."""

    def read(_: float, measure: planner.Measure) -> Readings:
        values: dict[str, tuple[float, ...]] = {}
        for query in measure.request.queries:
            if query.id.endswith("_invocations"):
                values[query.id] = (invocations,)
            elif query.id.endswith("_errors"):
                values[query.id] = (errors,) if query.id.startswith("canary") else (0.0,)
            else:
                values[query.id] = ()
        return Readings(values=values)

    return read


@dataclass
class Run:
    """The record of a driven rollout."""

    writes: list[tuple[float, str, dict[str, float]]] = field(default_factory=list)
    phases: list[tuple[float, str, str]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    measurements: list[tuple[float, planner.Measure]] = field(default_factory=list)
    hooks: list[tuple[float, HookPoint]] = field(default_factory=list)
    status: RolloutStatus = field(default_factory=RolloutStatus)
    alias: AliasState = field(default_factory=lambda: AliasState("1", {}, "rev-0"))


def drive(
    spec: RolloutSpec,
    *,
    until: float,
    read: Reader | None = None,
    hook: Callable[[float, HookPoint], HookAnswer] | None = None,
    run: Run | None = None,
    start: float = 0.0,
    write_seconds: float = 0.0,
) -> Run:
    """Reconcile at every requeue time until ``until`` seconds, or until nothing is due.

    ``write_seconds``: how long a pass that writes the alias takes (the write and the status
    write after it): the next pass starts that much later than its requeue time.
    """
    run = run or Run()
    read = read or healthy_traffic()
    now = start
    revision = len(run.writes)
    while now <= until:
        moment = T0 + timedelta(seconds=now)
        answers = Answers()
        for _ in range(6):
            plan = planner.plan(spec, run.status, run.alias, generation=1, now=moment, answers=answers)
            if plan.verify is not None:
                answers = Answers(plan.verify.pair, answers.readings, answers.hook)
            elif plan.measure is not None:
                run.measurements.append((now, plan.measure))
                answers = Answers(answers.verified, read(now, plan.measure), answers.hook)
            elif plan.run_hook is not None:
                point = plan.run_hook.point
                run.hooks.append((now, point))
                outcome = hook(now, point) if hook else HookAnswer(point, True, "ok")
                answers = answers.with_hook(outcome)
            else:
                break
        status = plan.status
        if isinstance(plan.action, RouteTraffic):
            revision += 1
            action = plan.action
            routing = {action.canary: action.canary_percent} if action.canary else {}
            run.alias = AliasState(action.primary, routing, f"rev-{revision}")
            run.writes.append((now, action.primary, routing))
            canary = status.canary_version
            status = status.model_copy(
                update={"canary_weight": run.alias.percent_on(canary) if canary else None}
            )
        run.status = status
        run.events += [(now, event.reason.value) for event in plan.events]
        if status.phase is not None and (
            not run.phases or run.phases[-1][1:] != (status.phase, reason_of(status))
        ):
            run.phases.append((now, status.phase.value, reason_of(status)))
        if plan.requeue_after is None:
            break
        now += plan.requeue_after + (write_seconds if isinstance(plan.action, RouteTraffic) else 0.0)
    return run


def reason_of(status: RolloutStatus) -> str:
    return next((c.reason for c in status.conditions if c.type == "Ready"), "")


ERROR_RATE = {"interval": "1m", "metrics": [{"name": "error-rate", "max": 1}], "minInvocations": 50}


def test_healthy_background_analysis_measures_every_interval_and_promotes() -> None:
    run = drive(make_spec(analysis=ERROR_RATE), until=3600)
    assert run.writes == [(0, "1", {"2": 10.0}), (300, "1", {"2": 50.0}), (300, "2", {})]
    # Every minute while traffic is split, none before the first weight nor after promotion.
    assert [at for at, _ in run.measurements] == [60, 120, 180, 240, 300]
    assert run.phases[-1] == (300, "Healthy", "Succeeded")
    analysis = run.status.analysis
    assert analysis is not None
    assert (analysis.measurements, analysis.successes, analysis.failures) == (5, 5, 0)


@pytest.mark.parametrize("write_seconds", [0.0, 0.05])
def test_a_pause_as_long_as_the_interval_ends_with_a_measurement(write_seconds: float) -> None:
    # The background analysis starts in the pass after the weight's write; its clock must not,
    # or the pause ends just before the first measurement and the rollout promotes unmeasured.
    canary = {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}]}}
    spec = make_spec(strategy=canary, analysis=ERROR_RATE)
    failing = drive(
        spec, until=3600, read=healthy_traffic(invocations=400, errors=50), write_seconds=write_seconds
    )
    assert [at for at, _ in failing.measurements] == [60]
    assert [(primary, routing) for _, primary, routing in failing.writes] == [("1", {"2": 10.0}), ("1", {})]
    assert failing.phases[-1][1:] == ("Degraded", "AnalysisFailed")
    healthy = drive(spec, until=3600, write_seconds=write_seconds)
    assert [at for at, _ in healthy.measurements] == [60]
    assert [(primary, routing) for _, primary, routing in healthy.writes] == [
        ("1", {"2": 10.0}),
        ("1", {"2": 50.0}),
        ("2", {}),
    ]


def test_error_rate_over_the_threshold_rolls_back_in_the_pass_that_measured_it() -> None:
    run = drive(make_spec(analysis=ERROR_RATE), until=3600, read=healthy_traffic(invocations=400, errors=50))
    assert run.writes == [(0, "1", {"2": 10.0}), (60, "1", {})]
    assert run.phases[-1] == (60, "Degraded", "AnalysisFailed")
    status = run.status
    assert status.message == (
        "analysis failed: error-rate of version 2 was 12.5%, above max 1%; rolled back to version 1"
    )
    assert (status.stable_version, status.canary_version, status.canary_weight) == ("1", "2", 0.0)
    assert status.aborted_at == "2026-01-01T12:01:00.000000Z"
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "AnalysisFailed")
    assert (60, "AnalysisFailed") in run.events


def test_a_rolled_back_rollout_never_retries_on_its_own_until_the_version_changes() -> None:
    run = drive(make_spec(analysis=ERROR_RATE), until=3600, read=healthy_traffic(errors=50))
    held = drive(make_spec(analysis=ERROR_RATE), until=7200, read=healthy_traffic(), run=run, start=4000)
    assert held.writes == run.writes[:2]
    assert held.status.phase == "Degraded"
    # A new version starts a new attempt, from the stable version.
    onward = drive(make_spec(analysis=ERROR_RATE, version="3"), until=9000, run=held, start=8000)
    assert onward.writes[2:] == [(8000, "1", {"3": 10.0}), (8300, "1", {"3": 50.0}), (8300, "3", {})]
    assert onward.status.phase == "Healthy"
    assert onward.status.aborted_at is None


def test_a_failed_rollback_write_is_retried_by_the_held_rollout() -> None:
    spec = make_spec(analysis=ERROR_RATE)
    run = drive(spec, until=60, read=healthy_traffic(errors=50))
    # The rollback write never landed: the alias is still split, and the status written ahead of
    # the write still shows the weight it had.
    run.alias = AliasState("1", {"2": 10.0}, "rev-9")
    run.status = run.status.model_copy(update={"canary_weight": 10.0})
    result = planner.plan(spec, run.status, run.alias, generation=1, now=T0 + timedelta(seconds=70))
    assert result.action == RouteTraffic("1", None, 0.0, "rev-9")
    assert result.status.phase == "Degraded"
    assert result.status.message == run.status.message


def test_an_alarm_in_alarm_at_ten_percent_rolls_back() -> None:
    spec = make_spec(analysis={"alarms": ["checkout-errors"], "minInvocations": 10})

    def read(at: float, measure: planner.Measure) -> Readings:
        state = "ALARM" if at >= 120 else "OK"
        base = healthy_traffic()(at, measure)
        return Readings(values=base.values, alarms=(AlarmReading("checkout-errors", state, "5 errors"),))

    run = drive(spec, until=3600, read=read)
    assert run.writes == [(0, "1", {"2": 10.0}), (120, "1", {})]
    assert run.status.message == (
        "analysis failed: alarm checkout-errors is in ALARM: 5 errors; rolled back to version 1"
    )
    assert [measure.request.alarm_names for _, measure in run.measurements] == [("checkout-errors",)] * 2


def test_low_traffic_holds_the_rollout_as_inconclusive_then_resumes_when_data_arrives() -> None:
    def read(at: float, measure: planner.Measure) -> Readings:
        return healthy_traffic(invocations=5 if at < 600 else 100)(at, measure)

    run = drive(make_spec(analysis=ERROR_RATE), until=3600, read=read)
    assert run.phases[1] == (60, "Paused", "AnalysisInconclusive")
    # Held at 10% until the data arrives at 600 s; then the rest of the plan runs.
    assert run.writes == [(0, "1", {"2": 10.0}), (600, "1", {"2": 50.0}), (600, "2", {})]
    assert run.phases[-1] == (600, "Healthy", "Succeeded")
    assert [reason for _, reason in run.events].count("AnalysisInconclusive") == 1


def test_inconclusive_hold_message_says_why() -> None:
    run = drive(make_spec(analysis=ERROR_RATE), until=60, read=healthy_traffic(invocations=5))
    assert run.status.message == (
        "step 2/3: held with 10% on version 2: analysis inconclusive (5 invocations of version 2, "
        "fewer than minInvocations 50); measuring again, waiting for data or a person"
    )
    assert run.status.phase == "Paused"


@pytest.mark.parametrize(
    ("policy", "expected_writes", "final"),
    [
        ("Fail", [(0, "1", {"2": 10.0}), (60, "1", {})], ("Degraded", "AnalysisFailed")),
        (
            "Continue",
            [(0, "1", {"2": 10.0}), (300, "1", {"2": 50.0}), (300, "2", {})],
            ("Healthy", "Succeeded"),
        ),
    ],
    ids=["fail", "continue"],
)
def test_inconclusive_policy(policy: str, expected_writes: list[Any], final: tuple[str, str]) -> None:
    analysis = {**ERROR_RATE, "onInconclusive": policy}
    run = drive(make_spec(analysis=analysis), until=3600, read=healthy_traffic(invocations=0))
    assert run.writes == expected_writes
    assert run.phases[-1][1:] == final


def test_provider_errors_are_not_failures() -> None:
    def read(at: float, measure: planner.Measure) -> Readings:
        if at in (60, 120):
            return Readings(error="Rate exceeded (Throttling)")
        return healthy_traffic()(at, measure)

    run = drive(make_spec(analysis=ERROR_RATE), until=3600, read=read)
    assert run.writes == [(0, "1", {"2": 10.0}), (300, "1", {"2": 50.0}), (300, "2", {})]
    analysis = run.status.analysis
    assert analysis is not None
    assert (analysis.errors, analysis.failures, analysis.successes) == (2, 0, 3)
    assert [reason for _, reason in run.events].count("AnalysisError") == 2


def test_blocking_analysis_step_waits_for_consecutive_successes() -> None:
    steps = [
        {"setWeight": 20},
        {"analysis": {"consecutiveSuccessLimit": 3, "interval": "2m"}},
        {"setWeight": 60},
    ]
    spec = make_spec(analysis=ERROR_RATE, strategy={"canary": {"steps": steps}})
    bad_at = {240}

    def read(at: float, measure: planner.Measure) -> Readings:
        return healthy_traffic(invocations=5 if at in bad_at else 100)(at, measure)

    run = drive(spec, until=3600, read=read)
    # 120: success, 240: inconclusive (holds, resets the streak), 360, 480, 600: three in a row.
    assert [at for at, _ in run.measurements] == [120, 240, 360, 480, 600]
    assert run.writes == [(0, "1", {"2": 20.0}), (600, "1", {"2": 60.0}), (600, "2", {})]
    assert (240, "Paused", "AnalysisInconclusive") in run.phases
    assert (600, "AnalysisPassed") in run.events


def test_blocking_analysis_step_failure_rolls_back() -> None:
    steps = [{"setWeight": 20}, {"analysis": {"failureLimit": 1}}, {"setWeight": 60}]
    spec = make_spec(analysis=ERROR_RATE, strategy={"canary": {"steps": steps}})
    run = drive(spec, until=3600, read=healthy_traffic(errors=10))
    assert run.writes == [(0, "1", {"2": 20.0}), (120, "1", {})]
    assert run.status.message == (
        "step 2/3: analysis failed: error-rate of version 2 was 10%, above max 1%; rolled back to version 1"
    )


def test_failed_before_hook_moves_no_traffic() -> None:
    hooks = {"beforeAllowTraffic": {"functionName": "checkout-smoke"}}
    run = drive(
        make_spec(hooks=hooks),
        until=3600,
        hook=lambda _, point: HookAnswer(point, False, "smoke test 3 failed", 3),
    )
    assert run.writes == []
    assert run.hooks == [(0, HookPoint.BEFORE_ALLOW_TRAFFIC)]
    assert run.status.message == (
        "beforeAllowTraffic hook (function checkout-smoke) failed: smoke test 3 failed; no traffic was moved"
    )
    assert run.phases == [(0, "Degraded", "HookFailed")]
    hook_status = (run.status.hooks or [])[0]
    assert (hook_status.point, hook_status.result, hook_status.attempts) == (
        "beforeAllowTraffic",
        "Failed",
        3,
    )


def test_successful_hooks_run_once_at_their_points() -> None:
    hooks = {
        "beforeAllowTraffic": {"functionName": "smoke"},
        "afterAllowTraffic": {"url": "https://verify.example/hook"},
    }
    run = drive(make_spec(hooks=hooks), until=3600)
    assert run.hooks == [(0, HookPoint.BEFORE_ALLOW_TRAFFIC), (300, HookPoint.AFTER_ALLOW_TRAFFIC)]
    assert run.writes == [(0, "1", {"2": 10.0}), (300, "1", {"2": 50.0}), (300, "2", {})]
    assert run.phases[-1] == (300, "Healthy", "Succeeded")
    assert [hook.result for hook in run.status.hooks or []] == ["Succeeded", "Succeeded"]


def test_failed_after_hook_rolls_back() -> None:
    hooks = {"afterAllowTraffic": {"functionName": "checkout-verify"}}

    def hook(_: float, point: HookPoint) -> HookAnswer:
        return HookAnswer(point, False, "FunctionError: Unhandled")

    run = drive(make_spec(hooks=hooks), until=3600, hook=hook)
    assert run.writes == [(0, "1", {"2": 10.0}), (300, "1", {"2": 50.0}), (300, "2", {}), (300, "1", {})]
    assert run.phases[-1] == (300, "Degraded", "HookFailed")
    assert run.status.message == (
        "afterAllowTraffic hook (function checkout-verify) failed: FunctionError: Unhandled; "
        "rolled back to version 1"
    )


def test_confirm_promotion_waits_for_a_yes() -> None:
    hooks = {"confirmPromotion": {"url": "https://gate.example/ok?token=secret", "interval": "1m"}}

    def hook(at: float, point: HookPoint) -> HookAnswer:
        return HookAnswer(point, at >= 480, "HTTP 200" if at >= 480 else "HTTP 503")

    run = drive(make_spec(hooks=hooks), until=3600, hook=hook)
    assert [at for at, _ in run.hooks] == [300, 360, 420, 480]
    assert run.writes == [(0, "1", {"2": 10.0}), (300, "1", {"2": 50.0}), (480, "2", {})]
    assert (300, "Paused", "AwaitingConfirmation") in run.phases
    assert "secret" not in repr(run.status.to_wire())


def test_progress_deadline_aborts_a_rollout_waiting_for_confirmation() -> None:
    hooks = {"confirmPromotion": {"url": "https://gate.example/ok", "interval": "1m"}}
    spec = make_spec(hooks=hooks, progressDeadlineSeconds=600)
    run = drive(spec, until=7200, hook=lambda _, point: HookAnswer(point, False, "HTTP 503"))
    assert run.writes == [(0, "1", {"2": 10.0}), (300, "1", {"2": 50.0}), (900, "1", {})]
    assert run.phases[-1] == (900, "Degraded", "ProgressDeadlineExceeded")
    assert run.status.message == (
        "no progress for 10m (progressDeadlineSeconds 600) at promotion: promotion: waiting for "
        "confirmPromotion (webhook https://gate.example/ok), 50% on version 2; last answer: HTTP 503; "
        "rolled back to version 1"
    )


def test_timed_pauses_do_not_count_toward_the_deadline() -> None:
    spec = make_spec(progressDeadlineSeconds=60)
    run = drive(spec, until=3600)
    assert run.phases[-1] == (300, "Healthy", "Succeeded")


def test_transient_failures_past_the_deadline_abort_and_the_next_pass_rolls_back() -> None:
    spec = make_spec(progressDeadlineSeconds=120)
    run = drive(spec, until=0)
    status = run.status.model_copy(update={"current_step_index": 2})  # past the pause: a write is due
    later = T0 + timedelta(seconds=200)
    failed = planner.plan_failure(
        status, ThrottledError("Rate exceeded"), spec=spec, generation=1, now=later, backoff=planner.Backoff()
    )
    assert failed.status.phase == "Degraded"
    assert failed.status.aborted_at is not None
    assert failed.status.message == (
        "no progress for 3m20s (progressDeadlineSeconds 120): Rate exceeded; rolling back to version 1"
    )
    after = planner.plan(spec, failed.status, run.alias, generation=1, now=later + timedelta(seconds=5))
    assert after.action == RouteTraffic("1", None, 0.0, run.alias.revision_id)


def test_background_analysis_rests_during_an_analysis_step_and_resumes_after_it() -> None:
    steps = [
        {"setWeight": 10},
        {"pause": {"duration": "3m"}},
        {"analysis": {"interval": "2m", "consecutiveSuccessLimit": 2}},
        {"setWeight": 50},
        {"pause": {"duration": "2m"}},
    ]
    spec = make_spec(analysis=ERROR_RATE, strategy={"canary": {"steps": steps}})
    run = drive(spec, until=3600)
    # Background every minute at 10%; then the step's own interval (2m) twice; then background
    # again at 50% (its first measurement is due at once: it rested past its due time).
    assert [at for at, _ in run.measurements] == [60, 120, 180, 300, 420, 420, 480, 540]
    assert run.writes == [(0, "1", {"2": 10.0}), (420, "1", {"2": 50.0}), (540, "2", {})]
    intervals = {measure.analysis.interval_seconds for _, measure in run.measurements}
    assert intervals == {60.0, 120.0}


def test_setting_the_version_back_to_stable_closes_a_rolled_back_rollout() -> None:
    run = drive(make_spec(analysis=ERROR_RATE), until=3600, read=healthy_traffic(errors=50))
    done = drive(make_spec(analysis=ERROR_RATE, version="1"), until=5000, run=run, start=4000)
    assert done.writes == run.writes[:2]
    assert done.status.phase == "Healthy"
    assert done.status.message == (
        "rolled back to version 1: spec.version is the stable version (version 2 was rolled back "
        "(AnalysisFailed))"
    )
    assert done.status.aborted_at is None
