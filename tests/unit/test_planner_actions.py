"""Table tests of manual actions in the pure planner: what each does, when it is refused, and the
acknowledgement it leaves in status and Events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambda_rollouts import planner
from lambda_rollouts.model import ManualAction, RolloutSpec, RolloutStatus, parse_action_request
from lambda_rollouts.observed import AliasState
from lambda_rollouts.planner import ActionRequest, Answers, HookAnswer, RouteTraffic

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "10m"}}]


def make_spec(steps: list[dict[str, Any]] | None = None, **extra: Any) -> RolloutSpec:
    raw: dict[str, Any] = {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "2",
        "strategy": {"canary": {"steps": steps or STEPS}},
    }
    raw.update(extra)
    return RolloutSpec.parse(raw)


def request(value: str) -> ActionRequest:
    action, action_id = parse_action_request(value)
    return ActionRequest(action=action, id=action_id, value=value)


@dataclass
class World:
    """The rollout's status and alias as a reconciler would carry them from pass to pass."""

    spec: RolloutSpec
    status: RolloutStatus = field(default_factory=RolloutStatus)
    alias: AliasState = field(default_factory=lambda: AliasState("1", {}, "rev-0"))
    writes: list[tuple[float, str, dict[str, float]]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)

    def step(self, at: float, action: str | None = None) -> planner.Plan:
        """One pass at ``at`` seconds, answering every question with success."""
        answers = Answers()
        asked = request(action) if action else None
        for _ in range(6):
            result = planner.plan(
                self.spec,
                self.status,
                self.alias,
                generation=1,
                now=T0 + timedelta(seconds=at),
                answers=answers,
                request=asked,
            )
            if result.verify is not None:
                answers = Answers(result.verify.pair, answers.readings, answers.hook)
            elif result.run_hook is not None:
                answers = Answers(
                    answers.verified, answers.readings, HookAnswer(result.run_hook.point, False, "not yet")
                )
            else:
                break
        status = result.status
        if isinstance(result.action, RouteTraffic):
            move = result.action
            routing = {move.canary: move.canary_percent} if move.canary else {}
            self.alias = AliasState(move.primary, routing, f"rev-{len(self.writes) + 1}")
            self.writes.append((at, move.primary, routing))
            canary = status.canary_version
            status = status.model_copy(
                update={"canary_weight": self.alias.percent_on(canary) if canary else None}
            )
        self.status = status
        self.events += [(event.reason.value, event.message) for event in result.events]
        return result

    def settle(self, at: float) -> None:
        """Passes at ``at`` until nothing more is due at that instant."""
        for _ in range(10):
            if self.step(at).requeue_after != 0:
                return

    def ack(self) -> tuple[str, str, str, str]:
        last = self.status.last_action
        assert last is not None
        return last.action, last.id, last.result.value, last.message


def at_indefinite_pause(spec: RolloutSpec | None = None) -> World:
    world = World(spec or make_spec())
    world.settle(0)
    assert (world.status.phase, world.status.current_step_index) == ("Paused", 1)
    return world


def test_promote_moves_past_an_indefinite_pause_once() -> None:
    world = at_indefinite_pause()
    world.step(100, "promote:ci-7")
    assert world.writes == [(0, "1", {"2": 10.0}), (100, "1", {"2": 50.0})]
    assert world.ack() == (
        "promote",
        "ci-7",
        "Applied",
        "promote: step 4/4: pause 10m (10m left)",
    )
    assert (
        "ActionApplied",
        "promote: step 4/4: pause 10m (10m left)",
    ) in world.events
    assert ("PromotedByAction", "step 2/4: pause until promoted: skipped by a promote action") in world.events
    # The next pause is timed and runs in full: one promote moves past one wait only.
    world.settle(100)
    assert world.status.current_step_index == 3
    world.settle(699)
    assert len(world.writes) == 2
    world.settle(700)
    assert world.writes[-1] == (700, "2", {})
    assert world.status.phase == "Healthy"
    # The acknowledgement stays in status after later passes.
    assert world.ack()[1] == "ci-7"


def test_promote_full_skips_every_remaining_step() -> None:
    world = at_indefinite_pause()
    world.step(30, "promote-full")
    assert world.writes == [(0, "1", {"2": 10.0}), (30, "2", {})]
    assert world.status.phase == "Healthy"
    assert world.ack()[2] == "Applied"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("promote", "promote: nothing to promote: version 2 is Healthy"),
        ("abort", "abort: nothing to abort: version 2 is Healthy"),
        ("retry", "retry: nothing to retry: version 2 is Healthy"),
        ("pause", "pause: nothing to pause: version 2 is Healthy"),
        ("resume", "resume: nothing to resume: not paused by an action"),
        (
            "rollback",
            "rollback: unknown action 'rollback': use one of promote, promote-full, abort, retry, "
            "pause, resume",
        ),
    ],
)
def test_actions_that_make_no_sense_change_nothing(action: str, message: str) -> None:
    world = World(make_spec(steps=[{"setWeight": 50}]))
    world.settle(0)
    assert world.status.phase == "Healthy"
    before = world.status.model_dump(exclude={"last_action"})
    writes = list(world.writes)
    world.step(10, action)
    assert world.writes == writes
    assert world.status.model_dump(exclude={"last_action"}) == before
    assert world.ack()[2:] == ("Rejected", message)
    assert world.events[-1] == ("ActionRejected", message)


def test_abort_rolls_back_and_holds_until_retry() -> None:
    world = at_indefinite_pause()
    world.step(60, "abort")
    assert world.writes[-1] == (60, "1", {})
    assert world.status.phase == "Degraded"
    stalled = next(c for c in world.status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "Aborted")
    assert world.status.message == "aborted by request; rolled back to version 1"
    assert world.ack()[2] == "Applied"
    # Held: nothing happens on its own.
    world.settle(5000)
    assert len(world.writes) == 2
    # Retry starts the same version again from the first step.
    world.step(6000, "retry")
    assert world.writes[-1] == (6000, "1", {"2": 10.0})
    # At the indefinite pause after the first weight again.
    assert world.status.phase == "Paused"
    assert world.status.current_step_index == 1
    assert world.status.aborted_at is None
    assert world.ack()[:3] == ("retry", "", "Applied")


def test_pause_holds_and_resume_goes_on_without_counting_the_hold() -> None:
    world = World(make_spec(steps=[{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}]))
    world.settle(0)
    world.step(60, "pause")
    assert world.status.phase == "Paused"
    assert world.status.paused_by_action is True
    assert world.status.message == "paused by a pause action at step 2/3 with 10% on version 2"
    world.settle(1000)
    assert len(world.writes) == 1
    world.step(1000, "pause")
    assert world.ack()[2:] == ("Rejected", "pause: already paused by an action: resume to go on")
    world.step(1060, "resume")
    assert world.status.paused_by_action is None
    assert world.ack()[2] == "Applied"
    # 60 s of the pause ran before the hold; 240 s remain after it.
    world.settle(1299)
    assert len(world.writes) == 1
    world.settle(1300)
    assert world.writes[1:] == [(1300, "1", {"2": 50.0}), (1300, "2", {})]


def test_promote_moves_past_an_analysis_step_and_a_confirmation_gate() -> None:
    steps = [{"setWeight": 10}, {"analysis": {"alarms": ["a"], "interval": "1m"}}]
    hooks = {"confirmPromotion": {"url": "https://gate.example/ok"}}
    world = World(make_spec(steps=steps, hooks=hooks))
    world.settle(0)
    assert world.status.step_analysis is not None
    world.step(10, "promote")
    assert world.status.current_step_index == 2
    # The gate answers "not yet" (the test's hook answer); a second promote confirms it.
    assert world.status.phase == "Paused"
    world.step(20, "promote")
    assert world.writes[-1] == (20, "2", {})
    hook = (world.status.hooks or [])[-1]
    assert (hook.point, hook.result, hook.message) == (
        "confirmPromotion",
        "Succeeded",
        "confirmed by a promote action",
    )


def test_promote_is_refused_while_spec_paused_holds_the_rollout() -> None:
    world = at_indefinite_pause()
    world.spec = make_spec(paused=True)
    world.settle(10)
    world.step(20, "promote")
    assert world.ack()[2:] == (
        "Rejected",
        "promote: spec.paused is true: set it to false in the spec to go on",
    )
    assert len(world.writes) == 1


def test_every_action_has_a_name() -> None:
    assert [action.value for action in ManualAction] == [
        "promote",
        "promote-full",
        "abort",
        "retry",
        "pause",
        "resume",
    ]


def test_retry_of_a_rollout_in_flight_says_where_it_is() -> None:
    world = at_indefinite_pause()
    world.step(10, "retry")
    assert world.ack()[2:] == (
        "Rejected",
        "retry: nothing to retry: version 2 is in flight (Paused at step 2/4), not rolled back; retry "
        "rolls a version out again after an abort or a rollback",
    )
    assert len(world.writes) == 1


@pytest.mark.parametrize("action", ["promote", "promote-full"])
@pytest.mark.parametrize(
    ("on_drift", "message"),
    [
        (
            "Pause",
            "not applied: alias live was changed outside the operator: expected 90% on version 1 / 10% on "
            "version 2, found 100% on version 1; paused (spec.onDrift: Pause): undo the change, resume to "
            "carry on from the alias as it is, or set spec.onDrift: Correct",
        ),
        (
            "Correct",
            "not applied: alias live was changed outside the operator: expected 90% on version 1 / 10% on "
            "version 2, found 100% on version 1; restored it (spec.onDrift: Correct)",
        ),
    ],
)
def test_a_promote_that_finds_the_alias_changed_outside_is_not_applied(
    action: str, on_drift: str, message: str
) -> None:
    world = at_indefinite_pause(make_spec(onDrift=on_drift))
    world.alias = AliasState("1", {}, "rev-outside")  # someone sent all traffic back to version 1
    world.step(100, action)
    assert world.ack()[2:] == ("Rejected", f"{action}: {message}")
    assert ("ActionRejected", f"{action}: {message}") in world.events
    # Nothing was promoted: no write at all, or the write that restores the alias as it was.
    restored = [(100, "1", {"2": 10.0})] if on_drift == "Correct" else []
    assert world.writes[1:] == restored
    assert world.status.phase != "Healthy"


def test_the_acknowledgement_says_where_the_rollout_was() -> None:
    world = at_indefinite_pause()
    world.step(30, "promote-full:ci-9")
    last = world.status.last_action
    assert last is not None
    assert (last.action, last.result.value, last.step_index, last.version) == (
        "promote-full",
        "Applied",
        1,
        "2",
    )
    assert world.status.to_wire()["lastAction"] | {"at": None, "message": None} == {
        "action": "promote-full",
        "id": "ci-9",
        "result": "Applied",
        "message": None,
        "at": None,
        "stepIndex": 1,
        "version": "2",
    }
    # A Healthy rollout has no rollout in flight to say anything about.
    world.step(40, "promote")
    assert world.status.last_action is not None
    assert (world.status.last_action.step_index, world.status.last_action.version) == (None, None)
