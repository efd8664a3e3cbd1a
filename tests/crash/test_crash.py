"""Crash safety: the log checker of ``benchmarks/crash.py``, and a small run of the suite itself.

The small run starts the sandbox and the real operator as processes, SIGKILLs the operator eight
times (at random moments and, through the launcher's fault point, between an alias write and the
status write) and checks from the log of alias writes that no step was skipped or repeated and
that every rollout ended where it should.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def crash() -> Iterator[ModuleType]:
    # The suite lives beside the other benchmarks, as scripts that import their neighbours.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("crash")
    finally:
        sys.path.remove(str(BENCHMARKS))


# ---------------------------------------------------------------------------------------------
# The checker, on hand-written logs.

PLAN = [10, 40, 70]


def release(
    attempt: int = 0, *, stable: str = "1", canary: str = "2", outcome: str = "promote"
) -> dict[str, Any]:
    return {
        "kind": "release",
        "rollout": "r",
        "function": "f",
        "alias": "live",
        "attempt": attempt,
        "stable": stable,
        "canary": canary,
        "plan": PLAN,
        "outcome": outcome,
    }


def initial(version: str = "1") -> dict[str, Any]:
    return {"kind": "initial", "function": "f", "alias": "live", "version": version, "weights": {}}


def write(percent: float, *, pid: int = 100, stable: str = "1", canary: str = "2") -> dict[str, Any]:
    """The log line of an UpdateAlias putting ``percent`` on ``canary`` (100: promotion, 0: rollback)."""
    weights: dict[str, float]
    if percent >= 100:
        version, weights = canary, {}
    elif percent <= 0:
        version, weights = stable, {}
    else:
        version, weights = stable, {canary: percent / 100}
    return {
        "kind": "write",
        "function": "f",
        "alias": "live",
        "version": version,
        "weights": weights,
        "pid": pid,
    }


def final(
    attempt: int = 0, *, phase: str = "Healthy", version: str = "2", weights: dict[str, float] | None = None
) -> dict[str, Any]:
    reason = "AnalysisFailed" if phase == "Degraded" else None
    return {
        "kind": "final",
        "rollout": "r",
        "attempt": attempt,
        "phase": phase,
        "reason": reason,
        "version": version,
        "weights": weights or {},
    }


def kinds(crash: ModuleType, records: list[dict[str, Any]]) -> list[str]:
    return [violation.kind for violation in crash.check_log(records).violations]


def test_a_clean_rollout_and_a_clean_rollback_pass(crash: ModuleType) -> None:
    records = [
        initial(),
        release(0),
        write(10),
        write(40),
        write(70),
        write(100),
        final(0),
        release(1, stable="2", canary="3", outcome="rollback"),
        write(10, stable="2", canary="3"),
        write(0, stable="2", canary="3"),
        final(1, phase="Degraded", version="2"),
    ]
    report = crash.check_log(records)
    assert report.violations == []
    assert (report.attempts, report.promoted, report.rolled_back, report.writes) == (2, 1, 1, 6)
    assert report.max_rewrites == 0


def test_one_rewrite_of_a_weight_after_a_restart_is_allowed(crash: ModuleType) -> None:
    records = [initial(), release(), write(10, pid=1), write(10, pid=2), write(40, pid=2), write(70, pid=2)]
    records += [write(100, pid=2), final()]
    report = crash.check_log(records)
    assert report.violations == []
    assert report.max_rewrites == 1


def test_a_skipped_step_is_reported(crash: ModuleType) -> None:
    records = [initial(), release(), write(10), write(70), write(100), final()]
    violations = crash.check_log(records).violations
    assert [v.kind for v in violations] == ["skipped-step"]
    assert "skipping ['40']" in violations[0].detail


def test_a_promotion_before_the_last_step_is_a_skipped_step(crash: ModuleType) -> None:
    records = [initial(), release(), write(10), write(40), write(100), final()]
    assert kinds(crash, records) == ["skipped-step"]


def test_a_decreasing_weight_is_reported(crash: ModuleType) -> None:
    records = [
        initial(),
        release(),
        write(10),
        write(40),
        write(10),
        write(40),
        write(70),
        write(100),
        final(),
    ]
    assert "decreasing" in kinds(crash, records)


def test_a_weight_outside_the_plan_is_reported(crash: ModuleType) -> None:
    records = [initial(), release(), write(10), write(25), final()]
    assert "not-in-plan" in kinds(crash, records)
    foreign = {**write(10), "version": "1", "weights": {"7": 0.1}}
    assert "not-in-plan" in kinds(crash, [initial(), release(), foreign])


def test_an_alias_left_split_is_reported(crash: ModuleType) -> None:
    records = [initial(), release(), write(10), write(40), final(version="1", weights={"2": 0.4})]
    found = kinds(crash, records)
    assert found.count("split-alias") == 1
    assert "wrong-final-state" in found


def test_a_weight_written_more_than_twice_is_reported(crash: ModuleType) -> None:
    records = [initial(), release(), write(10, pid=1), write(10, pid=2), write(10, pid=3)]
    records += [write(40, pid=3), write(70, pid=3), write(100, pid=3), final()]
    report = crash.check_log(records)
    assert [v.kind for v in report.violations] == ["repeated-write"]
    assert report.max_rewrites == 2


def test_a_rewrite_by_the_same_process_is_reported(crash: ModuleType) -> None:
    records = [
        initial(),
        release(),
        write(10, pid=1),
        write(10, pid=1),
        write(40),
        write(70),
        write(100),
        final(),
    ]
    assert kinds(crash, records) == ["repeated-write"]


def test_traffic_sent_again_after_a_rollback_is_reported(crash: ModuleType) -> None:
    records = [initial(), release(outcome="rollback"), write(10), write(0), write(10), write(0)]
    records += [final(phase="Degraded", version="1")]
    assert kinds(crash, records) == ["after-rollback"]


def test_a_rollout_without_a_final_state_is_stuck(crash: ModuleType) -> None:
    records = [initial(), release(), write(10)]
    assert kinds(crash, records) == ["stuck", "split-alias"]
    stuck = {**final(), "kind": "stuck", "phase": "Progressing", "seconds": 90}
    assert "stuck" in kinds(crash, [initial(), release(), write(10), write(40), write(70), write(100), stuck])


def test_the_wrong_outcome_is_reported(crash: ModuleType) -> None:
    promoted = [initial(), release(outcome="rollback"), write(10), write(40), write(70), write(100), final()]
    assert kinds(crash, promoted) == ["wrong-final-state"]


def test_writes_with_no_release_or_after_the_final_state_are_reported(crash: ModuleType) -> None:
    assert kinds(crash, [initial(), write(10)]) == ["unexpected-write"]
    records = [initial(), release(), write(10), write(40), write(70), write(100), final(), write(100)]
    assert "unexpected-write" in kinds(crash, records)


def test_a_release_over_a_split_alias_is_reported(crash: ModuleType) -> None:
    records = [{**initial(), "weights": {"2": 0.1}}, release(), write(10), write(40), write(70), write(100)]
    assert kinds(crash, [*records, final()]) == ["split-alias"]


def sent(percent: float, *, pid: int) -> dict[str, Any]:
    return {**write(percent, pid=pid), "kind": "sent"}


def observed(percent: float, *, pid: int) -> dict[str, Any]:
    return {**write(percent, pid=pid), "kind": "observed"}


def test_a_write_that_landed_while_its_process_died_is_checked_like_the_others(crash: ModuleType) -> None:
    # The process died with its request for 40% out; the alias read after the kill shows it landed.
    records = [initial(), release(), sent(10, pid=1), write(10, pid=1), sent(40, pid=1), observed(40, pid=1)]
    records += [write(70, pid=2), write(100, pid=2), final()]
    report = crash.check_log(records)
    assert report.violations == []
    assert report.unanswered_writes == 1

    # The same request, not landed: the next process going to 40% then 100% skips 70%.
    records = [initial(), release(), write(10, pid=1), sent(40, pid=1), observed(10, pid=1)]
    records += [write(40, pid=2), write(100, pid=2), final()]
    assert kinds(crash, records) == ["skipped-step"]


def test_a_write_that_landed_after_the_alias_was_read_counts_when_what_follows_shows_it(
    crash: ModuleType,
) -> None:
    # The read after the kill still shows 10%; the request for 40% lands a moment later, and the
    # next process, having read 40%, goes on to 70%.
    records = [initial(), release(), write(10, pid=1), sent(40, pid=1), observed(10, pid=1)]
    records += [write(70, pid=2), write(100, pid=2), final()]
    report = crash.check_log(records)
    assert report.violations == []
    assert report.unanswered_writes == 1

    # The same, seen through the status the next process writes for what it read.
    status = {"kind": "status-write", "rollout": "r", "stable": "1", "canary": "2", "weight": 40.0}
    records = [initial(), release(), write(10, pid=1), sent(40, pid=1), observed(10, pid=1), status]
    records += [write(70, pid=2), write(100, pid=2), final()]
    assert crash.check_log(records).violations == []


def test_an_alias_change_the_log_cannot_explain_is_reported(crash: ModuleType) -> None:
    records = [initial(), release(), write(10, pid=1), observed(40, pid=1)]
    assert "unlogged-write" in kinds(crash, records)


def test_a_status_that_does_not_describe_the_alias_is_reported(crash: ModuleType) -> None:
    status = {
        "kind": "status-write",
        "rollout": "r",
        "phase": "Progressing",
        "stable": "1",
        "canary": "2",
        "weight": 40.0,
        "pid": 100,
    }
    assert "status-mismatch" in kinds(crash, [initial(), release(), write(10), status])
    assert "status-mismatch" not in kinds(
        crash, [initial(), release(), write(10), {**status, "weight": 10.0}]
    )


def test_kills_and_launches_are_counted(crash: ModuleType) -> None:
    records = [
        initial(),
        release(outcome="rollback"),
        {"kind": "launch", "pid": 1},
        {"kind": "kill", "point": "random", "pid": 1},
        {"kind": "launch", "pid": 2},
        write(10, pid=2),
        {"kind": "kill", "point": crash.KILL_POINT, "pid": 2},
        {"kind": "launch", "pid": 3},
        sent(0, pid=3),
        {"kind": "kill", "point": crash.KILL_BEFORE_POINT, "pid": 3},
        observed(10, pid=3),
        {"kind": "launch", "pid": 4},
        write(0, pid=4),
        {"kind": "kill", "point": crash.KILL_POINT, "pid": 4},
    ]
    report = crash.check_log(records)
    assert (report.kills, report.kills_at_write, report.launches) == (4, 2, 4)
    assert report.kills_at_write_after == {"step": 1, "rollback": 1}
    assert report.kills_before_write == {"rollback": 1}


# ---------------------------------------------------------------------------------------------
# The suite, small.


@pytest.mark.timeout(90)
async def test_the_operator_survives_kills_without_skipping_or_repeating_a_step(
    crash: ModuleType, tmp_path: Path
) -> None:
    config = crash.SuiteConfig(
        workdir=tmp_path,
        rollouts=6,
        kills=8,
        seed=7,
        # High enough that the write->status point is hit in practically every run.
        write_kill_p=0.3,
        kill_after=(1.5, 4.0),
        final_deadline=40.0,
    )
    result = await crash.run_suite(config)
    report = result.report
    problems = [f"{v.kind} {v.rollout}#{v.attempt}: {v.detail}" for v in report.violations]
    assert problems == [], "\n".join(problems)
    assert result.unexpected_exits == []
    assert report.kills >= 8
    assert report.kills_at_write >= 1
    assert report.rollouts == 6
    assert report.attempts >= 6
    assert report.promoted + report.rolled_back == report.attempts
