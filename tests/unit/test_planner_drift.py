"""Table tests of drift: the alias changed outside the operator, mid-rollout or after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambda_rollouts import planner
from lambda_rollouts.model import RolloutSpec, RolloutStatus, parse_action_request
from lambda_rollouts.observed import AliasState
from lambda_rollouts.planner import ActionRequest, Answers, RouteTraffic

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STEPS = [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {"duration": "5m"}}]


def make_spec(**extra: Any) -> RolloutSpec:
    raw: dict[str, Any] = {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "2",
        "strategy": {"canary": {"steps": STEPS}},
    }
    raw.update(extra)
    return RolloutSpec.parse(raw)


class World:
    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec
        self.status = RolloutStatus()
        self.alias = AliasState("1", {}, "rev-0")
        self.writes: list[tuple[float, str, dict[str, float]]] = []
        self.events: list[str] = []

    def step(self, at: float, action: str | None = None) -> planner.Plan:
        answers, request = Answers(), None
        if action:
            kind, action_id = parse_action_request(action)
            request = ActionRequest(kind, action_id, action)
        while True:
            result = planner.plan(
                self.spec,
                self.status,
                self.alias,
                generation=1,
                now=T0 + timedelta(seconds=at),
                answers=answers,
                request=request,
            )
            if result.verify is None:
                break
            answers = Answers(result.verify.pair)
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
        self.events += [event.reason.value for event in result.events]
        return result

    def settle(self, at: float) -> None:
        for _ in range(10):
            if self.step(at).requeue_after != 0:
                return

    def someone_sets(self, primary: str, routing: dict[str, float] | None = None) -> None:
        self.alias = AliasState(primary, routing or {}, "rev-external")


def drifted(world: World) -> tuple[str, str]:
    condition = next(c for c in world.status.conditions if c.type == "Drifted")
    return condition.status, world.status.phase or ""


def test_an_outside_change_mid_rollout_pauses_and_names_the_change() -> None:
    world = World(make_spec())
    world.settle(0)
    world.someone_sets("1", {"2": 40.0})
    world.settle(60)
    assert drifted(world) == ("True", "Paused")
    assert world.status.message == (
        "alias live was changed outside the operator: expected 90% on version 1 / 10% on version 2, "
        "found 60% on version 1 / 40% on version 2; paused (spec.onDrift: Pause): undo the change, "
        "resume to carry on from the alias as it is, or set spec.onDrift: Correct"
    )
    assert world.events.count("Drifted") == 1
    # Nothing is written, however long it stays so; the Event is not repeated.
    world.settle(3600)
    assert world.writes == [(0, "1", {"2": 10.0})]
    assert world.events.count("Drifted") == 1


def test_undoing_the_change_carries_on_where_the_rollout_was() -> None:
    world = World(make_spec())
    world.settle(0)
    world.someone_sets("3")
    world.settle(60)
    assert world.status.phase == "Paused"
    world.someone_sets("1", {"2": 10.0})
    world.settle(120)
    assert world.status.drift is None
    assert "DriftResolved" in world.events
    world.settle(300)
    assert world.writes[1:] == [(300, "1", {"2": 50.0})]


def test_resume_carries_on_from_the_alias_as_someone_left_it() -> None:
    world = World(make_spec())
    world.settle(0)
    world.someone_sets("1", {"2": 30.0})
    world.settle(60)
    assert world.status.phase == "Paused"
    world.step(90, "resume:r")
    last = world.status.last_action
    assert last is not None
    assert (last.result, last.id) == ("Applied", "r")
    # Adopted at 30%: past the 10% step, so the pause after it runs in full from now, then 50%.
    assert world.status.drift is None
    world.settle(389)
    assert len(world.writes) == 1
    world.settle(390)
    assert world.writes[-1] == (390, "1", {"2": 50.0})


def test_other_actions_are_refused_while_drifted_but_abort_rolls_back() -> None:
    world = World(make_spec())
    world.settle(0)
    world.someone_sets("1", {"2": 30.0})
    world.settle(60)
    world.step(70, "promote:p")
    assert world.status.last_action is not None
    assert world.status.last_action.result == "Rejected"
    world.step(80, "abort:a")
    assert world.writes[-1] == (80, "1", {})
    assert world.status.phase == "Degraded"


def test_correct_restores_the_planned_state_with_one_write() -> None:
    world = World(make_spec(onDrift="Correct"))
    world.settle(0)
    world.someone_sets("1", {"2": 40.0})
    world.settle(60)
    assert world.writes == [(0, "1", {"2": 10.0}), (60, "1", {"2": 10.0})]
    assert world.status.phase == "Progressing"
    assert "DriftCorrected" in world.events
    # The rollout goes on with its own timing.
    world.settle(300)
    assert world.writes[-1] == (300, "1", {"2": 50.0})


@pytest.mark.parametrize(("policy", "writes"), [("Pause", 1), ("Correct", 2)])
def test_drift_of_a_finished_rollout_is_handled_by_the_same_policy(policy: str, writes: int) -> None:
    world = World(make_spec(strategy={"allAtOnce": {}}, onDrift=policy))
    world.settle(0)
    assert world.status.phase == "Healthy"
    world.someone_sets("1")
    world.settle(300)  # the next drift check
    assert len(world.writes) == writes
    if policy == "Pause":
        assert drifted(world) == ("True", "Paused")
        assert world.status.drift is not None
        assert (world.status.drift.expected, world.status.drift.observed) == (
            "100% on version 2",
            "100% on version 1",
        )
    else:
        assert world.writes[-1] == (300, "2", {})
        assert world.status.phase == "Healthy"


def test_our_own_write_whose_status_was_lost_is_not_drift() -> None:
    world = World(make_spec())
    world.settle(0)
    before = world.status
    world.settle(300)  # writes 50%
    assert world.writes[-1] == (300, "1", {"2": 50.0})
    world.status = before  # the status write of that pass was lost (a crash)
    world.settle(310)
    assert world.status.drift is None
    assert world.writes[-1] == (300, "1", {"2": 50.0})


def test_a_spec_change_is_not_drift() -> None:
    world = World(make_spec())
    world.settle(0)
    world.spec = make_spec(version="3")
    world.settle(10)
    assert world.status.drift is None
    assert world.writes[1:] == [(10, "1", {}), (10, "1", {"3": 10.0})]
