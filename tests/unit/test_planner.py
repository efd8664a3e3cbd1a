"""Table tests of the pure planner: exact statuses, actions and timing for every case it decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambda_rollouts import planner
from lambda_rollouts.errors import (
    AliasConflictError,
    IncompatibleVersionsError,
    SpecError,
    ThrottledError,
    VersionNotActiveError,
    VersionNotFoundError,
)
from lambda_rollouts.model import Preset, RolloutSpec, RolloutStatus
from lambda_rollouts.observed import AliasState, VersionInfo
from lambda_rollouts.planner import CreateAlias, RouteTraffic, VerifyVersions

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CANARY_STEPS = {
    "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {}}]}
}


def make_spec(version: str = "42", strategy: dict[str, Any] | None = None, **extra: Any) -> RolloutSpec:
    raw = {"functionName": "checkout-api", "alias": "live", "version": version}
    raw["strategy"] = strategy if strategy is not None else {"preset": "Canary10Percent5Minutes"}
    raw.update(extra)
    return RolloutSpec.parse(raw)


def alias(primary: str, routing: dict[str, float] | None = None, revision: str = "rev-1") -> AliasState:
    return AliasState(function_version=primary, routing=routing or {}, revision_id=revision)


def compact(status: RolloutStatus) -> dict[str, Any]:
    """The wire status with conditions reduced to type -> (status, reason); everything else exact."""
    wire = status.to_wire()
    wire["conditions"] = {c["type"]: (c["status"], c["reason"]) for c in wire.get("conditions", [])}
    return wire


def plan_verified(spec: RolloutSpec, status: RolloutStatus, observed: AliasState | None, now: datetime = T0):
    """Plan, answering a pre-flight request as the reconciler does when the checks pass."""
    result = planner.plan(spec, status, observed, generation=1, now=now)
    if result.verify is not None:
        result = planner.plan(spec, status, observed, generation=1, now=now, verified=result.verify.pair)
    return result


def apply(observed: AliasState | None, action: planner.Action | None, revision: int) -> AliasState | None:
    """What the alias looks like after an action (a stand-in for AWS, used to chain plans)."""
    if action is None:
        return observed
    if isinstance(action, CreateAlias):
        return alias(action.version, revision=f"rev-{revision}")
    routing = {action.canary: action.canary_percent} if action.canary else {}
    return alias(action.primary, routing, revision=f"rev-{revision}")


HEALTHY_CONDITIONS = {
    "Ready": ("True", "Succeeded"),
    "Reconciling": ("False", "Succeeded"),
    "Stalled": ("False", "Succeeded"),
}


# ---------------------------------------------------------------------------------------------
# Lifecycle cases.


def test_alias_absent_is_created_on_the_desired_version_after_verification() -> None:
    spec = make_spec()
    first = planner.plan(spec, RolloutStatus(), None, generation=1, now=T0)
    assert first.verify == VerifyVersions("42", "42")
    assert first.action is None

    second = planner.plan(spec, RolloutStatus(), None, generation=1, now=T0, verified="42->42")
    assert second.action == CreateAlias("42")
    assert compact(second.status) == {
        "observedGeneration": 1,
        "phase": "Healthy",
        "stableVersion": "42",
        "canaryVersion": "42",
        "canaryWeight": 100.0,
        "currentStepIndex": 2,
        "stepCount": 2,
        "step": "done",
        "message": "created alias live on version 42: nothing to shift from",
        "verifiedPair": "42->42",
        "retryCount": 0,
        "conditions": {
            "Ready": ("True", "AliasCreated"),
            "Reconciling": ("False", "AliasCreated"),
            "Stalled": ("False", "AliasCreated"),
        },
    }
    assert [e.reason for e in second.events] == ["AliasCreated"]


def test_alias_already_on_desired_version_is_adopted_without_a_write() -> None:
    result = plan_verified(make_spec(), RolloutStatus(), alias("42"))
    assert result.action is None
    assert result.verify is None
    assert compact(result.status) == {
        "observedGeneration": 1,
        "phase": "Healthy",
        "stableVersion": "42",
        "canaryVersion": "42",
        "canaryWeight": 100.0,
        "currentStepIndex": 2,
        "stepCount": 2,
        "step": "done",
        "message": "version 42 already serves all traffic on alias live",
        "retryCount": 0,
        "conditions": {
            "Ready": ("True", "Adopted"),
            "Reconciling": ("False", "Adopted"),
            "Stalled": ("False", "Adopted"),
        },
    }
    assert [e.reason for e in result.events] == ["Adopted"]
    # Looking again changes nothing and posts nothing.
    again = plan_verified(make_spec(), result.status, alias("42"))
    assert again.action is None
    assert again.events == ()
    assert again.status == result.status


def test_normal_rollout_starts_from_the_alias_version_as_stable() -> None:
    spec = make_spec("42")
    first = planner.plan(spec, RolloutStatus(), alias("41"), generation=1, now=T0)
    assert first.verify == VerifyVersions("41", "42")

    result = plan_verified(spec, RolloutStatus(), alias("41"))
    assert result.action == RouteTraffic("41", "42", 10.0, "rev-1")
    # The pause after the write starts in the same pass: no pass (and status write) in between.
    assert result.requeue_after == 300.0
    assert compact(result.status) == {
        "observedGeneration": 1,
        "phase": "Progressing",
        "stableVersion": "41",
        "canaryVersion": "42",
        "canaryWeight": 10.0,
        "currentStepIndex": 1,
        "stepCount": 2,
        "step": "2/2",
        "message": "step 2/2: pause 5m (5m left)",
        "stepStartedAt": "2026-01-01T12:00:00.000000Z",
        "verifiedPair": "41->42",
        "retryCount": 0,
        "lastProgressAt": "2026-01-01T12:00:00.000000Z",
        "conditions": {
            "Ready": ("False", "Progressing"),
            "Reconciling": ("True", "Progressing"),
            "Stalled": ("False", "Progressing"),
        },
    }
    assert [e.reason for e in result.events] == ["Progressing", "WeightSet"]


def test_timed_pause_reports_time_left_and_requeues_for_exactly_that_long() -> None:
    spec = make_spec("42")
    started = plan_verified(spec, RolloutStatus(), alias("41"))
    later = T0 + timedelta(minutes=1, seconds=48)
    result = planner.plan(spec, started.status, alias("41", {"42": 10.0}), generation=1, now=later)
    assert result.action is None
    assert result.requeue_after == pytest.approx(192.0)
    assert result.status.message == "step 2/2: pause 5m (3m12s left)"
    assert result.status.phase == "Progressing"
    assert result.events == ()


def test_pause_elapsed_promotes_with_one_write_that_clears_the_routing() -> None:
    spec = make_spec("42")
    started = plan_verified(spec, RolloutStatus(), alias("41"))
    result = planner.plan(
        spec, started.status, alias("41", {"42": 10.0}, "rev-2"), generation=1, now=T0 + timedelta(minutes=5)
    )
    assert result.action == RouteTraffic("42", None, 0.0, "rev-2")
    assert compact(result.status) | {"conditions": None} == {
        "observedGeneration": 1,
        "phase": "Healthy",
        "stableVersion": "42",
        "canaryVersion": "42",
        "canaryWeight": 100.0,
        "currentStepIndex": 2,
        "stepCount": 2,
        "step": "done",
        "message": "promoted version 42: all traffic on it (was 10%)",
        "verifiedPair": "41->42",
        "retryCount": 0,
        "conditions": None,
    }
    assert compact(result.status)["conditions"] == HEALTHY_CONDITIONS
    assert [e.reason for e in result.events] == ["StepCompleted", "Succeeded"]


@pytest.mark.parametrize(
    ("observed_percent", "expected_index", "expected_action"),
    [
        # Exactly at the first step's weight: its pause runs in full, no write.
        (10.0, 1, None),
        # Between steps: never jump up to 50; wait out the pause after setWeight 10 first.
        (30.0, 1, None),
        # At the second step: the indefinite pause that follows it holds.
        (50.0, 3, None),
        # Below the first step: start from the first step.
        (5.0, 1, RouteTraffic("41", "42", 10.0, "rev-1")),
    ],
)
def test_alias_found_split_toward_desired_continues_from_the_matching_step(
    observed_percent: float, expected_index: int, expected_action: RouteTraffic | None
) -> None:
    spec = make_spec("42", CANARY_STEPS)
    result = plan_verified(spec, RolloutStatus(), alias("41", {"42": observed_percent}))
    assert result.action == expected_action
    assert result.status.stable_version == "41"
    assert result.status.canary_version == "42"
    assert result.status.current_step_index == expected_index
    assert result.status.canary_weight == (10.0 if expected_action else observed_percent)


def test_split_found_at_fifty_holds_at_the_indefinite_pause() -> None:
    result = plan_verified(make_spec("42", CANARY_STEPS), RolloutStatus(), alias("41", {"42": 50.0}))
    assert result.status.phase == "Paused"
    assert result.status.message == "step 4/4: paused until promoted, 50% on version 42"
    assert compact(result.status)["conditions"] == {
        "Ready": ("False", "PausedByStep"),
        "Reconciling": ("True", "PausedByStep"),
        "Stalled": ("False", "PausedByStep"),
    }
    assert result.requeue_after is None


def test_alias_split_toward_another_version_goes_back_to_stable_first() -> None:
    result = plan_verified(make_spec("42"), RolloutStatus(), alias("41", {"40": 20.0}))
    assert result.action == RouteTraffic("41", None, 0.0, "rev-1")
    assert compact(result.status) == {
        "observedGeneration": 1,
        "phase": "Progressing",
        "stableVersion": "41",
        "canaryVersion": "42",
        "canaryWeight": 0.0,
        "currentStepIndex": 0,
        "stepCount": 2,
        "step": "1/2",
        "message": (
            "sending all traffic back to version 41 (was 20% on version 40) before rolling out version 42"
        ),
        "stepStartedAt": "2026-01-01T12:00:00.000000Z",
        "retryCount": 0,
        "conditions": {
            "Ready": ("False", "RestoringStable"),
            "Reconciling": ("True", "RestoringStable"),
            "Stalled": ("False", "RestoringStable"),
        },
    }
    # Then the new version rolls out from the first step.
    follow = plan_verified(make_spec("42"), result.status, alias("41", revision="rev-2"))
    assert follow.action == RouteTraffic("41", "42", 10.0, "rev-2")


def test_spec_version_changed_mid_rollout_to_a_third_version() -> None:
    spec43 = make_spec("43")
    midway = plan_verified(spec43, RolloutStatus(), alias("42"))
    assert midway.action == RouteTraffic("42", "43", 10.0, "rev-1")

    spec44 = make_spec("44")
    back = plan_verified(spec44, midway.status, alias("42", {"43": 10.0}, "rev-2"))
    assert back.action == RouteTraffic("42", None, 0.0, "rev-2")
    assert (back.status.stable_version, back.status.canary_version, back.status.phase) == (
        "42",
        "44",
        "Progressing",
    )

    onward = planner.plan(spec44, back.status, alias("42", revision="rev-3"), generation=2, now=T0)
    assert onward.verify == VerifyVersions("42", "44")
    onward = planner.plan(
        spec44, back.status, alias("42", revision="rev-3"), generation=2, now=T0, verified="42->44"
    )
    assert onward.action == RouteTraffic("42", "44", 10.0, "rev-3")


def test_spec_version_reverted_to_stable_rolls_back_at_once() -> None:
    midway = plan_verified(make_spec("43", CANARY_STEPS), RolloutStatus(), alias("42", {"43": 50.0}))
    assert midway.status.phase == "Paused"
    revert = planner.plan(
        make_spec("42", CANARY_STEPS), midway.status, alias("42", {"43": 50.0}, "rev-9"), generation=2, now=T0
    )
    assert revert.verify is None  # the stable version needs no pre-flight
    assert revert.action == RouteTraffic("42", None, 0.0, "rev-9")
    assert revert.requeue_after is None
    assert compact(revert.status) == {
        "observedGeneration": 2,
        "phase": "Healthy",
        "stableVersion": "42",
        "canaryVersion": "42",
        "canaryWeight": 100.0,
        "currentStepIndex": 4,
        "stepCount": 4,
        "step": "done",
        "message": "rolled back to version 42: spec.version is the stable version (was 50% on version 43)",
        "verifiedPair": "42->43",
        "retryCount": 0,
        "conditions": {
            "Ready": ("True", "RolledBack"),
            "Reconciling": ("False", "RolledBack"),
            "Stalled": ("False", "RolledBack"),
        },
    }


def test_revert_while_the_canary_is_at_full_weight_mid_plan() -> None:
    strategy = {"canary": {"steps": [{"setWeight": 100}, {"pause": {}}]}}
    midway = plan_verified(make_spec("43", strategy), RolloutStatus(), alias("42"))
    assert midway.action == RouteTraffic("43", None, 0.0, "rev-1")
    held = plan_verified(make_spec("43", strategy), midway.status, alias("43", revision="rev-2"))
    assert held.status.phase == "Paused"
    assert (held.status.stable_version, held.status.canary_weight) == ("42", 100.0)
    revert = plan_verified(make_spec("42", strategy), held.status, alias("43", revision="rev-2"))
    assert revert.action == RouteTraffic("42", None, 0.0, "rev-2")
    assert revert.status.phase == "Healthy"


def test_spec_paused_holds_and_resume_counts_the_pause_timer_correctly() -> None:
    spec = make_spec("42")
    started = plan_verified(spec, RolloutStatus(), alias("41"))  # step 1 written at T0, pause 5m starts
    observed = alias("41", {"42": 10.0}, "rev-2")

    held = planner.plan(
        make_spec("42", paused=True), started.status, observed, generation=2, now=T0 + timedelta(minutes=2)
    )
    assert held.action is None
    assert held.requeue_after is None
    assert held.status.phase == "Paused"
    assert held.status.paused_at == "2026-01-01T12:02:00.000000Z"
    assert held.status.message == "paused by spec.paused at step 2/2 with 10% on version 42"
    assert [e.reason for e in held.events] == ["PausedBySpec"]

    # Still held ten minutes later: no write, no new Event, the hold start is kept.
    still = planner.plan(
        make_spec("42", paused=True), held.status, observed, generation=2, now=T0 + timedelta(minutes=12)
    )
    assert still.action is None
    assert still.events == ()
    assert still.status.paused_at == "2026-01-01T12:02:00.000000Z"

    # Resumed at 12:12: 2 minutes of the pause had run, 3 remain.
    resumed = planner.plan(spec, still.status, observed, generation=3, now=T0 + timedelta(minutes=12))
    assert resumed.action is None
    assert resumed.requeue_after == pytest.approx(180.0)
    assert resumed.status.phase == "Progressing"
    assert resumed.status.paused_at is None
    assert resumed.status.step_started_at == "2026-01-01T12:10:00.000000Z"
    assert [e.reason for e in resumed.events] == ["Resumed"]

    done = planner.plan(spec, resumed.status, observed, generation=3, now=T0 + timedelta(minutes=15))
    assert done.action == RouteTraffic("42", None, 0.0, "rev-2")


def test_spec_paused_before_the_first_write_makes_no_write() -> None:
    result = plan_verified(make_spec("42", paused=True), RolloutStatus(), alias("41"))
    assert result.action is None
    assert result.status.phase == "Paused"
    assert result.status.canary_weight == 0.0


def test_paused_does_not_block_a_revert() -> None:
    midway = plan_verified(make_spec("43"), RolloutStatus(), alias("42"))
    revert = plan_verified(make_spec("42", paused=True), midway.status, alias("42", {"43": 10.0}, "rev-2"))
    assert revert.action == RouteTraffic("42", None, 0.0, "rev-2")


def test_restart_with_intact_status_neither_repeats_nor_skips_a_step() -> None:
    spec = make_spec("42", CANARY_STEPS)
    first = plan_verified(spec, RolloutStatus(), alias("41"))
    # The operator restarts 4 minutes into the 5-minute pause.
    resumed = planner.plan(
        spec, first.status, alias("41", {"42": 10.0}, "rev-2"), generation=1, now=T0 + timedelta(minutes=4)
    )
    assert resumed.action is None
    assert resumed.requeue_after == pytest.approx(60.0)
    assert resumed.events == ()


# ---------------------------------------------------------------------------------------------
# Whole rollouts for every strategy and preset, chained through a simulated alias.


def simulate(spec: RolloutSpec, start: AliasState, limit: int = 200) -> list[tuple[float, float, str]]:
    """Run plans until Healthy; return (minutes since start, percent on canary, phase) per write."""
    status, observed, now, revision = RolloutStatus(), start, T0, 1
    writes: list[tuple[float, float, str]] = []
    for _ in range(limit):
        result = plan_verified(spec, status, observed, now)
        if result.action is not None:
            revision += 1
            observed = apply(observed, result.action, revision)
            assert observed is not None
            writes.append(
                ((now - T0).total_seconds() / 60, observed.percent_on(spec.version), result.status.phase)
            )
        status = result.status
        if status.phase == "Healthy" and result.action is None:
            return writes
        if result.requeue_after is None and result.action is None:
            return writes
        now += timedelta(seconds=result.requeue_after or 0)
    raise AssertionError("the rollout did not finish")


def linear(step: int, minutes: float) -> list[tuple[float, float, str]]:
    return [(i * minutes, float(w), "Progressing") for i, w in enumerate(range(step, 100, step))] + [
        (len(range(step, 100, step)) * minutes, 100.0, "Healthy")
    ]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({"preset": "Canary10Percent5Minutes"}, [(0, 10.0, "Progressing"), (5, 100.0, "Healthy")]),
        ({"preset": "Canary10Percent10Minutes"}, [(0, 10.0, "Progressing"), (10, 100.0, "Healthy")]),
        ({"preset": "Canary10Percent15Minutes"}, [(0, 10.0, "Progressing"), (15, 100.0, "Healthy")]),
        ({"preset": "Canary10Percent30Minutes"}, [(0, 10.0, "Progressing"), (30, 100.0, "Healthy")]),
        ({"preset": "Linear10PercentEvery1Minute"}, linear(10, 1)),
        ({"preset": "Linear10PercentEvery2Minutes"}, linear(10, 2)),
        ({"preset": "Linear10PercentEvery3Minutes"}, linear(10, 3)),
        ({"preset": "Linear10PercentEvery10Minutes"}, linear(10, 10)),
        ({"preset": "AllAtOnce"}, [(0, 100.0, "Healthy")]),
        ({"allAtOnce": {}}, [(0, 100.0, "Healthy")]),
        ({"linear": {"stepWeight": 25, "interval": "30s"}}, linear(25, 0.5)),
        (
            {"linear": {"stepWeight": 40, "interval": "1h30m"}},
            [(0, 40.0, "Progressing"), (90, 80.0, "Progressing"), (180, 100.0, "Healthy")],
        ),
        (
            {
                "canary": {
                    "steps": [
                        {"setWeight": 5},
                        {"pause": {"duration": "90s"}},
                        {"setWeight": 20},
                        {"setWeight": 60},
                        {"pause": {"duration": "1m"}},
                    ]
                }
            },
            [
                (0, 5.0, "Progressing"),
                (1.5, 20.0, "Progressing"),
                (1.5, 60.0, "Progressing"),
                (2.5, 100.0, "Healthy"),
            ],
        ),
        ({"canary": {"steps": [{"setWeight": 100}]}}, [(0, 100.0, "Progressing")]),
    ],
)
def test_every_strategy_writes_exactly_its_plan(
    strategy: dict[str, Any], expected: list[tuple[float, float, str]]
) -> None:
    writes = simulate(make_spec("42", strategy), alias("41"))
    assert writes == expected


def test_every_preset_is_covered_by_the_strategy_table() -> None:
    covered = {
        "Canary10Percent5Minutes",
        "Canary10Percent10Minutes",
        "Canary10Percent15Minutes",
        "Canary10Percent30Minutes",
        "Linear10PercentEvery1Minute",
        "Linear10PercentEvery2Minutes",
        "Linear10PercentEvery3Minutes",
        "Linear10PercentEvery10Minutes",
        "AllAtOnce",
    }
    assert covered == {preset.value for preset in Preset}


def test_indefinite_pause_holds_without_a_timer() -> None:
    spec = make_spec("42", {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}})
    first = plan_verified(spec, RolloutStatus(), alias("41"))
    held = plan_verified(spec, first.status, alias("41", {"42": 20.0}, "rev-2"), now=T0 + timedelta(days=3))
    assert held.action is None
    assert held.requeue_after is None
    assert held.status.phase == "Paused"
    assert held.status.message == "step 2/2: paused until promoted, 20% on version 42"


# ---------------------------------------------------------------------------------------------
# Pre-flight checks and failures.


def version(number: str, **changes: Any) -> VersionInfo:
    base = {
        "version": number,
        "state": "Active",
        "last_update_status": "Successful",
        "role": "arn:aws:iam::123456789012:role/app",
    }
    return VersionInfo(**(base | changes))


@pytest.mark.parametrize(
    ("stable", "canary", "error", "fragment"),
    [
        (version("1"), version("2"), None, None),
        (
            version("1"),
            version("2", role="arn:aws:iam::123456789012:role/other"),
            IncompatibleVersionsError,
            "different execution roles",
        ),
        (
            version("1", dead_letter_target_arn="arn:aws:sqs:eu-west-1:123456789012:dlq"),
            version("2"),
            IncompatibleVersionsError,
            "dead-letter",
        ),
        (version("1"), version("2", state="Pending"), VersionNotActiveError, "version 2 is not ready"),
        (
            version("1"),
            version("2", last_update_status="Failed"),
            VersionNotActiveError,
            "last update Failed",
        ),
        (version("1", state="Inactive"), version("2"), VersionNotActiveError, "version 1 is not ready"),
    ],
)
def test_check_compatible(
    stable: VersionInfo, canary: VersionInfo, error: type[Exception] | None, fragment: str | None
) -> None:
    if error is None:
        planner.check_compatible(stable, canary)
        return
    with pytest.raises(error, match=fragment):
        planner.check_compatible(stable, canary)


BACKOFF = planner.Backoff(initial_seconds=5, max_seconds=60)


@pytest.mark.parametrize(
    ("error", "phase", "stalled", "reconciling", "requeue"),
    [
        (VersionNotFoundError("version 42 of checkout-api does not exist"), "Degraded", "True", "False", 5.0),
        (IncompatibleVersionsError("roles differ"), "Degraded", "True", "False", 5.0),
        (ThrottledError("slow down"), "Progressing", "False", "True", 5.0),
        (AliasConflictError("alias changed"), "Progressing", "False", "True", 5.0),
        (SpecError("spec.version: bad"), "Degraded", "True", "False", None),
    ],
)
def test_plan_failure(
    error: Exception, phase: str, stalled: str, reconciling: str, requeue: float | None
) -> None:
    result = planner.plan_failure(
        RolloutStatus(), error, spec=make_spec(), generation=4, now=T0, backoff=BACKOFF
    )  # type: ignore[arg-type]
    wire = compact(result.status)
    assert wire["phase"] == phase
    assert wire["observedGeneration"] == 4
    assert wire["retryCount"] == 1
    assert wire["conditions"]["Stalled"] == (stalled, error.reason)  # type: ignore[attr-defined]
    assert wire["conditions"]["Reconciling"] == (reconciling, error.reason)  # type: ignore[attr-defined]
    assert wire["conditions"]["Ready"] == ("False", error.reason)  # type: ignore[attr-defined]
    assert result.requeue_after == requeue
    assert [(e.type, e.reason) for e in result.events] == [("Warning", error.reason)]  # type: ignore[attr-defined]


def test_repeated_failures_back_off_and_post_the_event_once() -> None:
    status = RolloutStatus()
    delays, events = [], 0
    for _ in range(6):
        result = planner.plan_failure(
            status,
            VersionNotFoundError("no such version"),
            spec=make_spec(),
            generation=1,
            now=T0,
            backoff=BACKOFF,
        )
        delays.append(result.requeue_after)
        events += len(result.events)
        status = result.status
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert events == 1
    assert status.message == "no such version; retrying in 1m"


def test_success_after_failures_resets_the_retry_count() -> None:
    failed = planner.plan_failure(
        RolloutStatus(), ThrottledError("slow"), spec=make_spec(), generation=1, now=T0, backoff=BACKOFF
    )
    result = plan_verified(make_spec("42"), failed.status, alias("41"))
    assert result.status.retry_count == 0


def test_condition_transition_time_is_kept_while_the_condition_holds() -> None:
    spec = make_spec("42", CANARY_STEPS)
    first = plan_verified(spec, RolloutStatus(), alias("41"))
    later = plan_verified(
        spec, first.status, alias("41", {"42": 10.0}, "rev-2"), now=T0 + timedelta(minutes=3)
    )
    times = {c.type: c.last_transition_time for c in later.status.conditions}
    assert times == {c.type: c.last_transition_time for c in first.status.conditions}


# ---------------------------------------------------------------------------------------------
# Deletion.


@pytest.mark.parametrize(
    ("phase", "observed", "expected"),
    [
        ("Progressing", alias("41", {"42": 10.0}, "r"), RouteTraffic("41", None, 0.0, "r")),
        ("Paused", alias("42", revision="r"), RouteTraffic("41", None, 0.0, "r")),
        ("Progressing", alias("41", revision="r"), None),
        ("Healthy", alias("42", revision="r"), None),
        ("Progressing", alias("41", {"40": 10.0}, "r"), None),  # not ours: someone else's split
        ("Progressing", None, None),
    ],
)
def test_plan_deletion(phase: str, observed: AliasState | None, expected: RouteTraffic | None) -> None:
    status = RolloutStatus(phase=phase, stable_version="41", canary_version="42")  # type: ignore[arg-type]
    assert planner.plan_deletion(status, observed) == expected


def test_a_transient_error_while_checking_a_healthy_rollout_keeps_it_ready() -> None:
    healthy = plan_verified(make_spec("42"), RolloutStatus(), alias("42")).status
    result = planner.plan_failure(
        healthy, ThrottledError("Rate exceeded"), spec=make_spec("42"), generation=1, now=T0, backoff=BACKOFF
    )
    assert result.status == healthy.model_copy(update={"retry_count": 1})
    assert result.requeue_after == 5.0
    assert result.events == ()
    # A spec change is not a check of a finished rollout: the failure shows.
    changed = planner.plan_failure(
        healthy, ThrottledError("Rate exceeded"), spec=make_spec("43"), generation=2, now=T0, backoff=BACKOFF
    )
    assert changed.status.phase == "Progressing"


PAUSED_CANARY = {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "2m"}}, {"setWeight": 50}]}}


@pytest.mark.parametrize(
    ("case", "strategy", "extra", "requeue_after", "index", "reason"),
    [
        # The pause starts in the write's pass: one pass and one status write fewer per step.
        ("timed pause", PAUSED_CANARY, {}, 120.0, 1, "Progressing"),
        (
            "indefinite pause",
            {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]}},
            {},
            None,
            1,
            "PausedByStep",
        ),
        # Not these: the next pass has a measurement to start, or the next step is a weight.
        (
            "background analysis",
            PAUSED_CANARY,
            {"analysis": {"interval": "1m", "metrics": [{"name": "error-rate", "max": 1}]}},
            0.0,
            1,
            "Progressing",
        ),
        (
            "pause of no time",
            {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "0s"}}]}},
            {},
            0.0,
            1,
            "Progressing",
        ),
        (
            "weight after weight",
            {"canary": {"steps": [{"setWeight": 10}, {"setWeight": 50}]}},
            {},
            0.0,
            1,
            "Progressing",
        ),
    ],
)
def test_a_pause_after_a_weight_starts_in_the_writing_pass(
    case: str,
    strategy: dict[str, Any],
    extra: dict[str, Any],
    requeue_after: float | None,
    index: int,
    reason: str,
) -> None:
    result = plan_verified(make_spec("42", strategy, **extra), RolloutStatus(), alias("41"))
    assert result.action == RouteTraffic("41", "42", 10.0, "rev-1"), case
    assert result.requeue_after == requeue_after, case
    assert (result.status.current_step_index, result.status.canary_weight) == (index, 10.0), case
    ready = next(c for c in result.status.conditions if c.type == "Ready")
    assert ready.reason == reason, case
    assert [event.reason for event in result.events][:2] == ["Progressing", "WeightSet"], case
