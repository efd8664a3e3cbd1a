"""Property-based tests of the planner's invariants.

Hypothesis generates valid specs (explicit canary steps in any order, linear, every preset,
allAtOnce; with or without background analysis, analysis steps, hooks, a progress deadline and
spec.paused) and a sequence of reconcile passes: time moving on by random amounts, measurements
that pass, fail, are inconclusive or cannot be read, hook outcomes, manual actions, spec.paused
toggled, spec.version changed, and transient AWS failures, for which the caller plans
``plan_failure`` and the write does not happen. A driver plays the reconciler over the pure
planner, applies every write to the alias as Lambda would, and records each pass; every test
checks one family of invariants over every recorded pass.

The violations these properties once found are kept at the end as regression tests, each with its
smallest example.

An attempt is one try at rolling out one version: it starts with the first pass, when
spec.version changes, and when a retry is applied. Its stable version is the one that served all
traffic when it started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_rollouts import planner
from lambda_rollouts.analysis import AlarmReading, Readings
from lambda_rollouts.aws.weights import alias_write, fraction_to_percent, percent_to_fraction
from lambda_rollouts.errors import AliasConflictError, AwsError, ThrottledError
from lambda_rollouts.model import (
    ActionResult,
    Analyze,
    ConditionType,
    HookPoint,
    InconclusivePolicy,
    ManualAction,
    Pause,
    Phase,
    Preset,
    Reason,
    RolloutSpec,
    RolloutStatus,
    SetWeight,
    Step,
)
from lambda_rollouts.observed import AliasState
from lambda_rollouts.planner import ActionRequest, Answers, HookAnswer, RouteTraffic

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FIRST_STABLE = "1"
BACKOFF = planner.Backoff(initial_seconds=5.0, max_seconds=300.0)
# As in RolloutService: a pass asks at most verify, a hook, a measurement and another hook.
MAX_QUESTIONS = 6

# Derandomized so that CI explores the same examples on every run; no example database, so a
# developer's local failures cannot change what CI sees.
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------
# Specs.

ALARMS = ["checkout-errors"]
ERROR_RATE = [{"name": "error-rate", "max": 5}]


@st.composite
def analysis_settings(draw: st.DrawFn, *, with_checks: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if with_checks:
        checks = draw(st.sampled_from(["alarms", "metrics", "both"]))
        if checks in ("alarms", "both"):
            raw["alarms"] = ALARMS
        if checks in ("metrics", "both"):
            raw["metrics"] = ERROR_RATE
            raw["minInvocations"] = draw(st.integers(1, 50))
    optional = {
        "interval": st.sampled_from(["1s", "30s", "1m", "2m"]),
        "failureLimit": st.integers(0, 1),
        "consecutiveSuccessLimit": st.integers(1, 3),
        "errorLimit": st.integers(0, 2),
        "onInconclusive": st.sampled_from([policy.value for policy in InconclusivePolicy]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            raw[name] = draw(values)
    return raw


def canary_step(background: bool) -> st.SearchStrategy[dict[str, Any]]:
    # An analysis step needs checks of its own unless spec.analysis has some to inherit.
    analysis = st.booleans().flatmap(lambda own: analysis_settings(with_checks=own or not background))
    return st.one_of(
        st.integers(0, 100).map(lambda weight: {"setWeight": weight}),
        st.integers(1, 900).map(lambda seconds: {"pause": {"duration": f"{seconds}s"}}),
        st.just({"pause": {}}),
        analysis.map(lambda settings_: {"analysis": settings_}),
    )


def strategies(background: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.lists(canary_step(background), min_size=1, max_size=7).map(
            lambda steps: {"canary": {"steps": steps}}
        ),
        st.builds(
            lambda weight, seconds: {"linear": {"stepWeight": weight, "interval": f"{seconds}s"}},
            st.sampled_from([10, 20, 25, 34, 50, 99]),
            st.integers(0, 600),
        ),
        st.sampled_from([preset.value for preset in Preset]).map(lambda preset: {"preset": preset}),
        st.just({"allAtOnce": {}}),
    )


@st.composite
def hooks(draw: st.DrawFn) -> dict[str, Any] | None:
    raw: dict[str, Any] = {}
    if draw(st.booleans()):
        raw["beforeAllowTraffic"] = {"functionName": "checkout-smoke"}
    if draw(st.booleans()):
        raw["afterAllowTraffic"] = {"url": "https://verify.example.com/checkout"}
    if draw(st.booleans()):
        raw["confirmPromotion"] = {"functionName": "checkout-approval", "interval": "30s"}
    return raw or None


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    background = draw(st.booleans())
    raw: dict[str, Any] = {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "2",
        "strategy": draw(strategies(background)),
        # Mostly running: a rollout paused from the start does little until a toggle.
        "paused": draw(st.sampled_from([False, False, False, True])),
    }
    if background:
        raw["analysis"] = draw(analysis_settings(with_checks=True))
    found = draw(hooks())
    if found is not None:
        raw["hooks"] = found
    if draw(st.booleans()):
        raw["progressDeadlineSeconds"] = draw(st.integers(60, 3600))
    return raw


# ---------------------------------------------------------------------------------------------
# Passes.

Verdict = Literal["pass", "fail", "inconclusive", "error"]
Failure = Literal["read", "write"]


@dataclass(frozen=True)
class PassSpec:
    """What happens in (and just before) one reconcile pass."""

    # Seconds since the last pass; None: when the last plan asked to be looked at again.
    wait: int | None
    action: ManualAction | None
    toggle_paused: bool
    new_version: str | None
    # A transient AWS error: before anything was read, or on the alias write itself.
    failure: Failure | None
    verdict: Verdict
    hook_succeeds: bool


def rarely(values: list[Any], nothing: int) -> st.SearchStrategy[Any]:
    """Mostly None (nothing happens): ``nothing`` chances of None for each one of a value."""
    return st.sampled_from([None] * nothing + values)


passes = st.builds(
    PassSpec,
    # Mostly when the last plan asked; otherwise early or late, as watch events and restarts come.
    wait=st.one_of(st.none(), st.none(), st.integers(0, 900)),
    action=rarely(list(ManualAction), 10),
    toggle_paused=st.sampled_from([False] * 8 + [True]),
    new_version=rarely(["2", "3"], 16),
    failure=rarely(["read", "write"], 8),
    verdict=st.sampled_from(["pass"] * 5 + ["fail", "inconclusive", "error"]),
    hook_succeeds=st.sampled_from([True] * 5 + [False]),
)


@dataclass(frozen=True)
class Scenario:
    spec: dict[str, Any]
    passes: tuple[PassSpec, ...]


scenarios = st.builds(Scenario, spec=specs(), passes=st.lists(passes, min_size=8, max_size=40).map(tuple))


# ---------------------------------------------------------------------------------------------
# The driver.


@dataclass
class Attempt:
    """One try at one version, and what the rollout was told during it."""

    number: int
    version: str
    stable: str
    started: float
    promotes: int = 0
    promote_full: bool = False
    hook_successes: frozenset[HookPoint] = frozenset()
    # Measurements answered so that they may count as a success (an upper bound).
    good_measurements: int = 0


@dataclass(frozen=True)
class Record:
    """One reconcile pass: what went in, what came out."""

    number: int
    at: float
    spec: RolloutSpec
    generation: int
    before: RolloutStatus
    alias_before: AliasState
    request: ActionRequest | None
    plan: planner.Plan
    # The write the plan asked for, and whether it happened.
    planned: RouteTraffic | None
    written: bool
    alias_after: AliasState
    applied: ManualAction | None
    version_changed: bool
    # The planner was still asking questions when the reconciler's budget ran out.
    stuck: bool
    # The attempt as it stood after this pass (a copy).
    attempt: Attempt
    # Plans that came out differently from the same inputs (when planned twice).
    nondeterministic: tuple[str, ...]

    @property
    def write(self) -> RouteTraffic | None:
        return self.planned if self.written else None

    @property
    def steps(self) -> list[Step]:
        return self.spec.steps()


def readings_for(measure: planner.Measure, verdict: Verdict) -> Readings:
    """What CloudWatch would answer for the request, so that the analysis comes out ``verdict``."""
    if verdict == "error":
        return Readings(error="Rate exceeded (Throttling)")
    invocations = 0.0 if verdict == "inconclusive" else 100.0
    errors = 50.0 if verdict == "fail" else 0.0
    values: dict[str, tuple[float, ...]] = {}
    for query in measure.request.queries:
        if query.id.endswith("_invocations"):
            values[query.id] = (invocations,)
        elif query.id == "canary_errors":
            values[query.id] = (errors,)
        else:
            values[query.id] = (0.0,)
    state = {"pass": "OK", "fail": "ALARM", "inconclusive": "INSUFFICIENT_DATA"}[verdict]
    alarms = tuple(AlarmReading(name, state) for name in measure.request.alarm_names)
    return Readings(values=values, alarms=alarms)


def lambda_applies(write: RouteTraffic, revision: int) -> AliasState:
    """The alias after one UpdateAlias, read back: fractions as Lambda stores them, in percent."""
    payload = alias_write(primary=write.primary, canary=write.canary, canary_percent=write.canary_percent)
    routing = {
        version: fraction_to_percent(weight) for version, weight in payload.additional_version_weights.items()
    }
    return AliasState(payload.function_version, routing, f"rev-{revision}")


class Driver:
    """Plays ``RolloutService.reconcile`` over the pure planner, one ``PassSpec`` at a time.

    ``avoid_known_violations`` (off by default) steers around two triggers of violations that
    have since been fixed: a transient failure in the pass that sees a spec change, and a retry
    while a rollback write is still pending.
    """

    def __init__(self, raw_spec: dict[str, Any], *, avoid_known_violations: bool, twice: bool) -> None:
        self.avoid = avoid_known_violations
        self.twice = twice
        self.spec = RolloutSpec.parse(raw_spec)
        self.generation = 1
        self.status = RolloutStatus()
        self.alias = AliasState(FIRST_STABLE, {}, "rev-0")
        self.serving = FIRST_STABLE  # the version that last served all traffic, Healthy
        self.attempt = Attempt(number=1, version=self.spec.desired_version, stable=self.serving, started=0.0)
        # A manual action taken but not yet applied (the reconciler keeps it after a transient error).
        self.pending: ActionRequest | None = None
        self.requeue: float | None = 0.0
        self.now = 0.0
        self.writes = 0  # numbers the RevisionIds

    def new_attempt(self) -> None:
        self.attempt = Attempt(self.attempt.number + 1, self.spec.desired_version, self.serving, self.now)

    def rollback_write_pending(self) -> bool:
        """Rolled back in status, while the alias still routes to the new version."""
        stable = self.status.stable_version or ""
        return rolled_back(self.status, self.spec.desired_version) and not all_on(self.alias, stable)

    def run(self, number: int, step: PassSpec) -> Record:
        if number:
            waited = self.requeue if self.requeue is not None else 600.0
            self.now += step.wait if step.wait is not None else waited
        version_changed = step.new_version is not None and step.new_version != self.spec.version
        if step.toggle_paused or version_changed:
            update: dict[str, Any] = {"paused": not self.spec.paused} if step.toggle_paused else {}
            if version_changed:
                update["version"] = step.new_version
            self.spec = self.spec.model_copy(update=update)
            self.generation += 1  # the API server bumps it on every spec change
        if version_changed:
            self.new_attempt()
        failure = step.failure
        if self.avoid and (step.toggle_paused or version_changed):
            failure = None
        if self.pending is None and step.action is not None:
            value = f"{step.action.value}:pass-{number}"
            self.pending = ActionRequest(step.action, f"pass-{number}", value)
        retry = self.pending is not None and self.pending.action == ManualAction.RETRY
        if self.avoid and retry and self.rollback_write_pending():
            self.pending = None
        request = self.pending
        before, alias_before = self.status, self.alias
        pass_ = _Pass(self, step, request)

        if failure == "read":
            result = pass_.fail(ThrottledError("Rate exceeded"))
        else:
            result = pass_.ask_until_settled()
            assert not isinstance(result.action, planner.CreateAlias), "the alias exists from the start"
            pass_.planned = result.action if isinstance(result.action, RouteTraffic) else None
            if pass_.planned is not None and failure == "write":
                result = pass_.fail(AliasConflictError("PreconditionFailedException"))
            elif pass_.planned is not None:
                self.writes += 1
                self.alias = lambda_applies(pass_.planned, self.writes)
                pass_.written = True
                # The reconciler records the weight read back from the alias.
                canary = result.status.canary_version
                weight = self.alias.percent_on(canary) if canary else None
                result = replace(result, status=result.status.model_copy(update={"canary_weight": weight}))

        applied: ManualAction | None = None
        if request is not None and not pass_.failed:
            # Applied or rejected in this pass: the reconciler forgets it either way.
            self.pending = None
            ack = result.status.last_action
            if ack is not None and ack.id == request.id and ack.result == ActionResult.APPLIED:
                applied = request.action
        if applied == ManualAction.RETRY:
            self.new_attempt()
        # What this pass was told belongs to the attempt it ended in: a retry applies first.
        attempt = self.attempt
        attempt.hook_successes |= pass_.hook_successes
        attempt.good_measurements += pass_.good_measurements
        if applied == ManualAction.PROMOTE:
            attempt.promotes += 1
        attempt.promote_full = attempt.promote_full or applied == ManualAction.PROMOTE_FULL

        self.status, self.requeue = result.status, result.requeue_after
        if self.status.phase == Phase.HEALTHY and self.status.canary_version:
            self.serving = self.status.canary_version
        return Record(
            number=number,
            at=self.now,
            spec=self.spec,
            generation=self.generation,
            before=before,
            alias_before=alias_before,
            request=request,
            plan=result,
            planned=pass_.planned,
            written=pass_.written,
            alias_after=self.alias,
            applied=applied,
            version_changed=version_changed,
            stuck=pass_.stuck,
            attempt=replace(attempt),
            nondeterministic=tuple(pass_.oddities),
        )


@dataclass
class _Pass:
    """The questions, answers and outcome of one pass."""

    driver: Driver
    step: PassSpec
    request: ActionRequest | None
    planned: RouteTraffic | None = None
    written: bool = False
    failed: bool = False
    stuck: bool = False
    hook_successes: frozenset[HookPoint] = frozenset()
    good_measurements: int = 0
    oddities: list[str] = field(default_factory=list)

    def _twice(self, compute: Callable[[], planner.Plan]) -> planner.Plan:
        """Plan, and when determinism is under test, plan again: the same inputs, the same plan."""
        first = compute()
        if self.driver.twice:
            second = compute()
            if first != second:
                self.oddities.append(f"{first} != {second}")
        return first

    def fail(self, error: AwsError) -> planner.Plan:
        """A transient AWS error in this pass: the caller plans the failure; nothing is written."""
        driver = self.driver
        self.failed = True
        return self._twice(
            partial(
                planner.plan_failure,
                driver.status,
                error,
                spec=driver.spec,
                generation=driver.generation,
                now=T0 + timedelta(seconds=driver.now),
                backoff=BACKOFF,
            )
        )

    def ask_until_settled(self) -> planner.Plan:
        """Answer the planner's questions, at one instant, until it settles on a plan."""
        driver, step = self.driver, self.step
        answers = Answers()
        for _ in range(MAX_QUESTIONS):
            result = self._twice(
                partial(
                    planner.plan,
                    driver.spec,
                    driver.status,
                    driver.alias,
                    generation=driver.generation,
                    now=T0 + timedelta(seconds=driver.now),
                    answers=answers,
                    request=self.request,
                )
            )
            if result.verify is not None:
                answers = replace(answers, verified=result.verify.pair)
            elif result.measure is not None:
                counts_as_success = result.measure.analysis.on_inconclusive == InconclusivePolicy.CONTINUE
                if step.verdict == "pass" or counts_as_success:
                    self.good_measurements += 1
                answers = replace(answers, readings=readings_for(result.measure, step.verdict))
            elif result.run_hook is not None:
                point = result.run_hook.point
                if step.hook_succeeds:
                    self.hook_successes |= {point}
                message = "ok" if step.hook_succeeds else "not ok"
                answers = answers.with_hook(HookAnswer(point, step.hook_succeeds, message))
            else:
                return result
        # RolloutService gives up on such a pass with an AssertionError: nothing is written and the
        # action request stays pending.
        self.stuck = self.failed = True
        return planner.Plan(driver.status)


def drive(scenario: Scenario, *, avoid_known_violations: bool = False, twice: bool = False) -> list[Record]:
    """Run every pass of ``scenario`` and record each; ``twice``: plan twice every time."""
    driver = Driver(scenario.spec, avoid_known_violations=avoid_known_violations, twice=twice)
    return [driver.run(number, step) for number, step in enumerate(scenario.passes)]


# ---------------------------------------------------------------------------------------------
# Reading a trace.


def rolled_back(status: RolloutStatus, desired: str) -> bool:
    """The attempt at ``desired`` was rolled back (or aborted) and holds."""
    return (
        status.phase == Phase.DEGRADED
        and status.aborted_at is not None
        and status.canary_version == desired
        and bool(status.stable_version)
        and status.stable_version != desired
    )


def reason_of(status: RolloutStatus) -> str:
    return next((c.reason for c in status.conditions if c.type == ConditionType.READY), "")


def all_on(alias: AliasState, version: str) -> bool:
    return alias.function_version == version and not alias.routing


def held_by_action(record: Record) -> bool:
    """Whether a "pause" action holds the rollout through this pass."""
    held = bool(record.before.paused_by_action) and record.applied not in (
        ManualAction.RESUME,
        ManualAction.PROMOTE,
        ManualAction.PROMOTE_FULL,
        ManualAction.ABORT,
    )
    return held or record.applied == ManualAction.PAUSE


MoveKind = Literal["rollback", "restore", "to-stable", "step", "promotion"]


@dataclass(frozen=True)
class Move:
    """What one alias write did, read against its attempt's stable and new versions."""

    kind: MoveKind
    # The step the write carries out (len(steps) for the promotion); -1 when it carries out none.
    position: int = -1
    # Percent of traffic on the new version after the write.
    percent: float = 0.0


def classify(record: Record, write: RouteTraffic) -> Move:
    """The move a write makes; fails when it fits none of the shapes a rollout may write."""
    attempt, status, steps = record.attempt, record.plan.status, record.steps
    stable, desired = attempt.stable, attempt.version
    if desired == stable:
        # spec.version is the version already serving: all traffic goes (back) to it.
        assert (write.primary, write.canary) == (stable, None), (attempt, write)
        return Move("to-stable")
    assert write.primary in (stable, desired), (attempt, write)
    assert write.canary in (None, desired), (attempt, write)
    if write.canary is not None:
        assert write.primary == stable, (attempt, write)
    if (write.primary, write.canary) == (stable, None):
        if status.phase == Phase.DEGRADED:
            return Move("rollback")
        if reason_of(status) == Reason.RESTORING_STABLE:
            return Move("restore")
    percent = (
        write.canary_percent if write.canary is not None else (100.0 if write.primary == desired else 0.0)
    )
    index = status.current_step_index
    assert index is not None, status
    # A last step of setWeight 100 writes what a promotion writes; promote-full jumps past it.
    last_step_is_full = steps[-1:] == [SetWeight(100)] and record.applied != ManualAction.PROMOTE_FULL
    if percent == 100.0 and index == len(steps) and not last_step_is_full:
        return Move("promotion", len(steps), 100.0)
    position = index - 1
    assert 0 <= position < len(steps), (index, steps, write)
    assert steps[position] == SetWeight(round(percent)), (position, steps, write)
    return Move("step", position, percent)


def non_decreasing(steps: list[Step]) -> bool:
    weights = [step.weight for step in steps if isinstance(step, SetWeight)]
    return weights == sorted(weights)


def describe(records: list[Record]) -> str:
    """One line a pass, for failure messages."""
    lines = []
    for record in records:
        status, write = record.plan.status, record.planned
        failed = " FAILED" if status.retry_count > record.before.retry_count else ""
        lines.append(
            f"#{record.number} t={record.at:g} gen={record.generation} v={record.spec.version} "
            f"paused={record.spec.paused}{failed}{' STUCK' if record.stuck else ''} "
            f"req={record.request.value if record.request else None} applied={record.applied} "
            f"-> {status.phase} idx={status.current_step_index} w={status.canary_weight} "
            f"write={(write.primary, write.canary, write.canary_percent) if write else None}"
            f"{'' if record.written or write is None else ' (not written)'} msg={status.message!r}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The invariants, each over a whole trace.


def check_weights_move_forward(records: list[Record]) -> None:
    """Bounds, Lambda's routing rules, and the order of the weights written within one attempt.

    Steps may ask for lower weights later (setWeight in any order), so "forward" means through
    the steps in order; where the steps' weights never decrease, neither do the weights written.
    """
    last: dict[int, Move] = {}  # attempt -> its last step or promotion
    for record in records:
        planned = record.planned
        if planned is not None:
            assert 0.0 <= planned.canary_percent <= 100.0, planned
            if planned.canary is None:
                assert planned.canary_percent == 0.0, planned
            else:
                assert 0.0 < planned.canary_percent < 100.0, planned
                assert planned.canary != planned.primary, planned
        alias = record.alias_after
        assert len(alias.routing) <= 1, alias
        assert all(0.0 <= weight <= 100.0 for weight in alias.routing.values()), alias
        weight = record.plan.status.canary_weight
        assert weight is None or 0.0 <= weight <= 100.0, record.plan.status
        if record.write is None:
            continue
        attempt, steps = record.attempt, record.steps
        move = classify(record, record.write)
        if move.kind == "restore":
            assert attempt.number not in last, "stable is restored before the new version gets traffic"
        if move.kind not in ("step", "promotion"):
            continue
        previous = last.get(attempt.number)
        if previous is None:
            # Every attempt starts from the stable version: its first move is the first weight the
            # steps ask for, unless a promote-full skipped them all.
            first = next(
                (at for at, item in enumerate(steps) if isinstance(item, SetWeight) and item.weight > 0),
                len(steps),
            )
            assert move.position == first or (attempt.promote_full and move.kind == "promotion"), (
                f"attempt {attempt.number} began at step {move.position}, not {first}: {steps}"
            )
        else:
            assert move.position > previous.position, f"step {move.position} after {previous.position}"
            if non_decreasing(steps):
                assert move.percent >= previous.percent, f"{move.percent}% after {previous.percent}%"
        last[attempt.number] = move


def check_promotion_only_after_the_last_step(records: list[Record]) -> None:
    """Traffic moves only after beforeAllowTraffic passed; promotion (and Healthy) only once every
    step is done: its pauses waited out or promoted past, its analyses passed, the
    confirmPromotion gate said yes; Healthy only after afterAllowTraffic passed."""
    for record in records:
        attempt, status, steps = record.attempt, record.plan.status, record.steps
        desired = record.spec.desired_version
        ready = next((c for c in status.conditions if c.type == ConditionType.READY), None)
        if ready is not None and ready.status == "True" and not record.stuck:
            # kstatus' Ready=True only when the alias serves all traffic from spec.version.
            assert all_on(record.alias_after, desired), (record.alias_after, status)
        if attempt.stable == desired:
            continue
        hooks = record.spec.hooks
        move = classify(record, record.write) if record.write is not None else None
        before_hook = hooks.before_allow_traffic if hooks is not None else None
        if move is not None and move.kind in ("step", "promotion") and move.percent > 0 and before_hook:
            assert HookPoint.BEFORE_ALLOW_TRAFFIC in attempt.hook_successes, "traffic before the hook"
        healthy = status.phase == Phase.HEALTHY and status.canary_version == desired and not record.stuck
        if not (healthy or (move is not None and move.kind == "promotion")):
            continue
        if healthy and hooks is not None and hooks.after_allow_traffic is not None:
            assert HookPoint.AFTER_ALLOW_TRAFFIC in attempt.hook_successes, "Healthy before afterAllowTraffic"
        if attempt.promote_full:
            continue
        indefinite = sum(1 for step in steps if isinstance(step, Pause) and step.seconds is None)
        assert attempt.promotes >= indefinite, f"{indefinite} indefinite pauses, {attempt.promotes} promotes"
        if attempt.promotes:
            continue  # a promote may have skipped any one wait
        timed = sum(step.seconds or 0.0 for step in steps if isinstance(step, Pause))
        waited = record.at - attempt.started
        assert waited >= timed, f"promoted after {waited}s, before the pauses' {timed}s"
        needed = sum(step.analysis.consecutive_success_limit for step in steps if isinstance(step, Analyze))
        good = attempt.good_measurements
        assert good >= needed, f"promoted after {good} good measurements, {needed} needed"
        if hooks is not None and hooks.confirm_promotion is not None:
            assert HookPoint.CONFIRM_PROMOTION in attempt.hook_successes, "promoted without confirmation"


def check_paused_rollouts_do_not_write(records: list[Record]) -> None:
    """While spec.paused or a pause action holds a rollout, it writes nothing but all traffic back
    to stable: for an abort, for a rollback still to send, or for a new spec.version (the new
    version never starts from a split alias)."""
    for record in records:
        if not (record.spec.paused or held_by_action(record)) or record.write is None:
            continue
        write = record.write
        # Only all traffic back to the stable version, never a step toward the new one.
        assert (write.primary, write.canary) == (record.attempt.stable, None), f"paused, yet wrote {write}"
        desired = record.spec.desired_version
        assert (
            record.applied == ManualAction.ABORT
            or record.version_changed
            or rolled_back(record.before, desired)
        ), f"paused, yet wrote {write} without an abort"


def check_rolled_back_rollouts_hold(records: list[Record]) -> None:
    rolled: set[int] = set()  # attempts that wrote their rollback
    for record in records:
        desired = record.spec.desired_version
        move = classify(record, record.write) if record.write is not None else None
        if move is not None and move.kind in ("step", "promotion"):
            assert record.attempt.number not in rolled, f"attempt {record.attempt.number} moved on"
        if move is not None and move.kind == "rollback":
            rolled.add(record.attempt.number)
        if not rolled_back(record.before, desired) or record.version_changed:
            continue
        if record.applied == ManualAction.RETRY:
            continue
        status = record.plan.status
        assert rolled_back(status, desired), f"left the rolled-back state on its own: {status.message}"
        write = record.write
        if write is None:
            continue
        stable = record.before.stable_version or ""
        # Only the rollback write that did not land yet may be sent again.
        assert (write.primary, write.canary) == (stable, None), write
        assert not all_on(record.alias_before, stable), f"wrote {write} while already on stable"


KSTATUS = {
    Phase.HEALTHY: {"Ready": "True", "Reconciling": "False", "Stalled": "False"},
    Phase.PROGRESSING: {"Ready": "False", "Reconciling": "True", "Stalled": "False"},
    Phase.PAUSED: {"Ready": "False", "Reconciling": "True", "Stalled": "False"},
    Phase.DEGRADED: {"Ready": "False", "Reconciling": "False", "Stalled": "True"},
}


def check_statuses_are_kstatus_compatible(records: list[Record]) -> None:
    for record in records:
        if record.stuck:
            continue  # no status came out of that pass
        status = record.plan.status
        assert status.phase is not None, status
        expected = KSTATUS[status.phase]
        kstatus = [(c.type, c.status) for c in status.conditions if c.type in expected]
        # Each of the three exactly once, with the statuses of the phase (in any order).
        assert sorted(kstatus) == sorted(expected.items()), (status.phase, status.conditions)
        # The project may add condition types of its own (DESIGN.md section 2), none other.
        own = {kind.value for kind in ConditionType} - set(expected)
        assert {c.type for c in status.conditions} - set(expected) <= own, status.conditions
        assert status.observed_generation == record.generation, (record.generation, status)
        for condition in status.conditions:
            assert condition.observed_generation == record.generation, (record.generation, condition)


def check_no_drift_without_outside_changes(records: list[Record]) -> None:
    # Only the operator writes the alias here: any drift it reports is its own write misread.
    for record in records:
        assert record.plan.status.drift is None, f"pass {record.number}: {record.plan.status.message}"


def check_deterministic(records: list[Record]) -> None:
    for record in records:
        assert record.nondeterministic == (), record.nondeterministic


def check_every_pass_settles(records: list[Record]) -> None:
    for record in records:
        assert not record.stuck, f"pass {record.number}: still asking after {MAX_QUESTIONS} questions"


def run_and_check(scenario: Scenario, check: Callable[[list[Record]], None], **options: bool) -> None:
    records = drive(scenario, **options)
    try:
        check(records)
    except AssertionError as error:
        raise AssertionError(f"{error}\nspec: {scenario.spec}\n{describe(records)}") from error


# ---------------------------------------------------------------------------------------------
# The properties.


@PROPERTY
@given(scenarios)
def test_weights_stay_in_bounds_and_only_move_forward_within_an_attempt(scenario: Scenario) -> None:
    run_and_check(scenario, check_weights_move_forward)


@PROPERTY
@given(scenarios)
def test_promotion_only_after_the_last_step(scenario: Scenario) -> None:
    run_and_check(scenario, check_promotion_only_after_the_last_step)


@PROPERTY
@given(scenarios)
def test_a_paused_rollout_never_writes_except_an_aborts_rollback(scenario: Scenario) -> None:
    run_and_check(scenario, check_paused_rollouts_do_not_write)


@PROPERTY
@given(scenarios)
def test_a_rolled_back_rollout_never_writes_again_on_its_own(scenario: Scenario) -> None:
    run_and_check(scenario, check_rolled_back_rollouts_hold)


@PROPERTY
@given(scenarios)
def test_every_status_has_the_kstatus_conditions_of_its_phase(scenario: Scenario) -> None:
    run_and_check(scenario, check_statuses_are_kstatus_compatible)


@PROPERTY
@given(scenarios)
def test_only_outside_changes_are_reported_as_drift(scenario: Scenario) -> None:
    run_and_check(scenario, check_no_drift_without_outside_changes)


@PROPERTY
@given(scenarios)
def test_the_planner_is_deterministic(scenario: Scenario) -> None:
    run_and_check(scenario, check_deterministic, twice=True)


@PROPERTY
@given(scenarios)
def test_every_pass_settles_within_the_reconcilers_question_budget(scenario: Scenario) -> None:
    run_and_check(scenario, check_every_pass_settles)


def test_weights_round_trip_through_lambdas_fractions() -> None:
    # The driver applies writes as Lambda stores them; whole percents must survive the trip.
    assert all(fraction_to_percent(percent_to_fraction(percent)) == percent for percent in range(101))


# ---------------------------------------------------------------------------------------------
# Violations these properties found (since fixed), each as its smallest example.

CHECKOUT = {"functionName": "checkout-api", "alias": "live", "version": "2"}
QUIET = PassSpec(
    wait=None,
    action=None,
    toggle_paused=False,
    new_version=None,
    failure=None,
    verdict="pass",
    hook_succeeds=True,
)


def quiet(**changes: Any) -> PassSpec:
    """A pass at the time the last plan asked for, where only ``changes`` happen."""
    return replace(QUIET, **changes)


def test_a_new_version_after_a_failed_pass_starts_from_the_first_step() -> None:
    scenario = Scenario(
        spec={**CHECKOUT, "strategy": {"preset": "Canary10Percent5Minutes"}},
        passes=(
            quiet(),  # 10% on version 2
            quiet(action=ManualAction.ABORT),  # back to version 1, Degraded
            quiet(new_version="3", failure="read"),  # spec.version 3; GetAlias throttled
            quiet(wait=300),  # 100% on version 3 at once, when version 2's pause would have ended
        ),
    )
    run_and_check(scenario, check_weights_move_forward, avoid_known_violations=False)


def test_a_failed_pass_during_a_version_change_is_not_drift() -> None:
    scenario = Scenario(
        spec={
            **CHECKOUT,
            "strategy": {"allAtOnce": {}},
            "hooks": {"afterAllowTraffic": {"functionName": "verify"}},
        },
        passes=(
            quiet(),  # promoted to version 2; the afterAllowTraffic hook runs next
            quiet(new_version="3", failure="read"),
            quiet(),  # Paused: "alias live was changed outside the operator"
        ),
    )
    run_and_check(scenario, check_no_drift_without_outside_changes, avoid_known_violations=False)


def test_a_rolled_back_rollout_observes_the_generation_even_when_a_pass_fails() -> None:
    scenario = Scenario(
        spec={
            **CHECKOUT,
            "strategy": {"allAtOnce": {}},
            "hooks": {"beforeAllowTraffic": {"functionName": "checkout-smoke"}},
        },
        passes=(
            quiet(hook_succeeds=False),  # rolled back before any traffic moved, generation 1
            quiet(toggle_paused=True, failure="read"),  # generation 2; observedGeneration stays 1
        ),
    )
    run_and_check(scenario, check_statuses_are_kstatus_compatible, avoid_known_violations=False)


def test_a_retry_after_a_rollback_that_did_not_land_starts_from_zero() -> None:
    scenario = Scenario(
        spec={
            **CHECKOUT,
            "strategy": {
                "canary": {"steps": [{"setWeight": 10}, {"analysis": {"alarms": ["checkout-errors"]}}]}
            },
            "progressDeadlineSeconds": 60,
        },
        passes=(
            quiet(),  # 10% on version 2
            quiet(wait=60, failure="write"),  # no progress for 60s; the rollback write fails
            quiet(action=ManualAction.RETRY),  # "found 10% of traffic on version 2; continuing"
            quiet(),  # promoted from 10%, never having gone back to 0
        ),
    )
    run_and_check(scenario, check_weights_move_forward, avoid_known_violations=False)


TWO_HOOKS_DUE = {
    # beforeAllowTraffic, then at once the confirmPromotion gate (no steps to write first).
    "before-then-confirm": Scenario(
        spec={
            **CHECKOUT,
            "strategy": {"allAtOnce": {}},
            "hooks": {
                "beforeAllowTraffic": {"functionName": "checkout-smoke"},
                "confirmPromotion": {"functionName": "checkout-approval"},
            },
        },
        passes=(quiet(),),
    ),
    # The last step already put 100% on version 2: the gate, then afterAllowTraffic.
    "confirm-then-after": Scenario(
        spec={
            **CHECKOUT,
            "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
            "hooks": {
                "confirmPromotion": {"functionName": "checkout-approval"},
                "afterAllowTraffic": {"functionName": "checkout-verify"},
            },
        },
        passes=(quiet(), quiet()),
    ),
}


@pytest.mark.parametrize("scenario", TWO_HOOKS_DUE.values(), ids=TWO_HOOKS_DUE.keys())
def test_a_pass_with_two_hooks_due_settles(scenario: Scenario) -> None:
    run_and_check(scenario, check_every_pass_settles)
