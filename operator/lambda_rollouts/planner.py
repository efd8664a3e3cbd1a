"""The pure planner: from what is wanted and what is observed, decide what to do next.

Contract:
- ``plan`` is a pure function of (spec, previous status, observed alias, generation, now, answers).
  It never reads a clock, AWS or Kubernetes. It returns a ``Plan``: the whole new status, at most one
  alias write, the Events to post, and when to look again. The status it returns assumes the write
  succeeds; when the write fails the caller plans a failure instead (``plan_failure``).
- When it needs to know something, the plan asks one question instead (``verify``, ``measure`` or
  ``run_hook``); the caller finds out and calls ``plan`` again with the answer in ``Answers``, at
  the same ``now``. Before the first write toward a new canary it asks for the pre-flight checks of
  both versions and of every alarm the analyses name; before any traffic moves, for the
  beforeAllowTraffic hook; when a measurement is due, for the readings (one request carrying every
  query); before promotion, for the confirmPromotion gate; after it, for the afterAllowTraffic hook.
- Analysis: the background analysis (``spec.analysis``) measures every interval while traffic is
  split, except during an analysis step, which measures the step's checks (its unset fields come
  from ``spec.analysis``) and blocks until enough successes in a row. Verdicts are in
  ``analysis``; an inconclusive measurement holds the rollout (phase Paused) or counts as a failure
  or a pass, as ``onInconclusive`` says.
- Rollback: a failed analysis, a failed hook, or no progress for ``progressDeadlineSeconds`` (time
  in timed pauses, indefinite pauses and ``spec.paused`` excepted) sends all traffic to the stable
  version in the write of that same pass. The rollout is then Degraded with Stalled=True and the
  reason, and holds (re-sending the rollback write if it did not land) until ``spec.version``
  changes; it never tries the same version again on its own.
- The stable version is the one that serves all traffic when the rollout goes back. It comes from
  the status while the alias agrees with it, and from the alias otherwise (restarts, adoption,
  aliases left split by CodeDeploy or by hand).
- Weights are percents; the conversion to Lambda's fractions lives in the AWS adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from lambda_rollouts.analysis import (
    MeasureRequest,
    Outcome,
    Readings,
    Subject,
    Tally,
    assess,
    build_request,
    record,
    start_run,
)
from lambda_rollouts.errors import (
    IncompatibleVersionsError,
    LambdaRolloutsError,
    SpecError,
    VersionNotActiveError,
)
from lambda_rollouts.model import (
    ActionResult,
    AnalysisSettings,
    AnalysisStatus,
    Analyze,
    Condition,
    ConditionType,
    ConfirmHook,
    DriftPolicy,
    DriftStatus,
    EventType,
    Hook,
    HookPoint,
    HookResult,
    HookStatus,
    LastAction,
    ManualAction,
    Pause,
    Phase,
    Reason,
    RolloutSpec,
    RolloutStatus,
    SetWeight,
    Step,
    Verdict,
    describe_step,
    format_duration,
    format_time,
    parse_duration,
    parse_time,
    step_label,
)
from lambda_rollouts.observed import AliasState, VersionInfo

# Percent differences below this are rounding noise between our percents and Lambda's fractions.
_WEIGHT_TOLERANCE = 0.01


# ---------------------------------------------------------------------------------------------
# What the planner returns.


@dataclass(frozen=True)
class CreateAlias:
    version: str


@dataclass(frozen=True)
class RouteTraffic:
    """One UpdateAlias: ``canary_percent`` of traffic to ``canary``, the rest to ``primary``.

    ``canary`` None means no routing map: all traffic on ``primary`` (promotion or rollback).
    """

    primary: str
    canary: str | None
    canary_percent: float
    revision_id: str


Action = CreateAlias | RouteTraffic


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: Reason
    message: str


@dataclass(frozen=True)
class VerifyVersions:
    """Pre-flight: both versions can share the alias, and every alarm the analysis names exists."""

    stable: str
    canary: str
    alarm_names: tuple[str, ...] = ()
    alarm_prefixes: tuple[str, ...] = ()

    @property
    def pair(self) -> str:
        return verified_pair_key(self.stable, self.canary)


@dataclass(frozen=True)
class Measure:
    """Read the metrics and alarms of ``request``, then plan again with the ``Readings``."""

    request: MeasureRequest
    analysis: AnalysisSettings


@dataclass(frozen=True)
class RunHook:
    """Invoke ``hook`` at ``point`` for the rollout of ``canary`` over ``stable``, then plan again."""

    point: HookPoint
    hook: Hook
    stable: str
    canary: str


@dataclass(frozen=True)
class HookAnswer:
    point: HookPoint
    succeeded: bool
    message: str
    attempts: int = 1


@dataclass(frozen=True)
class Answers:
    """What the caller found out for the planner's questions during this pass."""

    verified: str | None = None
    readings: Readings | None = None
    # The latest hook answer; ``hooks`` keeps every answer of the pass (one pass can need two).
    hook: HookAnswer | None = None
    hooks: tuple[HookAnswer, ...] = ()

    def with_hook(self, answer: HookAnswer) -> Answers:
        kept = tuple(earlier for earlier in self.hooks if earlier.point != answer.point)
        return replace(self, hook=answer, hooks=(*kept, answer))


@dataclass(frozen=True)
class Plan:
    status: RolloutStatus
    action: Action | None = None
    # Seconds until the rollout must be looked at again; None: nothing is due (drift checks only).
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()
    # When one of these is set, nothing else in the plan counts: find out, then plan again.
    verify: VerifyVersions | None = None
    measure: Measure | None = None
    run_hook: RunHook | None = None


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float = 5.0
    max_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1-based): doubling, capped."""
        return float(min(self.max_seconds, self.initial_seconds * 2 ** max(0, attempt - 1)))


def verified_pair_key(stable: str, canary: str) -> str:
    return f"{stable}->{canary}"


# ---------------------------------------------------------------------------------------------
# Pre-flight checks (pure: the caller fetches the two versions).


def check_compatible(stable: VersionInfo, canary: VersionInfo) -> None:
    """Raise when Lambda would refuse to route between the two versions, or the canary is not ready."""
    for info in (canary, stable):
        if info.state != "Active" or info.last_update_status not in ("Successful", ""):
            raise VersionNotActiveError(
                f"version {info.version} is not ready to serve (state {info.state}, "
                f"last update {info.last_update_status or 'unknown'})"
            )
    if stable.version == canary.version:
        return
    if stable.role != canary.role:
        raise IncompatibleVersionsError(
            f"versions {stable.version} and {canary.version} use different execution roles "
            f"({stable.role} and {canary.role}); an alias can only split traffic between versions "
            "that share one"
        )
    if (stable.dead_letter_target_arn or None) != (canary.dead_letter_target_arn or None):
        raise IncompatibleVersionsError(
            f"versions {stable.version} and {canary.version} have different dead-letter configs "
            f"({stable.dead_letter_target_arn or 'none'} and {canary.dead_letter_target_arn or 'none'}); "
            "an alias can only split traffic between versions that share one"
        )


# ---------------------------------------------------------------------------------------------
# Conditions.


_CONDITION_SHAPES: dict[Phase, tuple[bool, bool, bool]] = {
    # Ready, Reconciling, Stalled
    Phase.HEALTHY: (True, False, False),
    Phase.PROGRESSING: (False, True, False),
    Phase.PAUSED: (False, True, False),
    Phase.DEGRADED: (False, False, True),
}


def build_conditions(
    previous: Sequence[Condition],
    *,
    phase: Phase,
    reason: Reason | str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """kstatus conditions for a phase; a condition keeps its transition time while its status holds."""
    ready, reconciling, stalled = _CONDITION_SHAPES[phase]
    earlier = {condition.type: condition for condition in previous}
    conditions = []
    for kind, value in (
        (ConditionType.READY, ready),
        (ConditionType.RECONCILING, reconciling),
        (ConditionType.STALLED, stalled),
    ):
        status_text: Literal["True", "False"] = "True" if value else "False"
        before = earlier.get(kind.value)
        transition = (
            before.last_transition_time
            if before is not None and before.status == status_text
            else format_time(now)
        )
        conditions.append(
            Condition(
                type=kind.value,
                status=status_text,
                reason=str(reason),
                message=message,
                last_transition_time=transition,
                observed_generation=generation,
            )
        )
    return conditions


def _finish(
    previous: RolloutStatus,
    *,
    generation: int | None,
    now: datetime,
    phase: Phase,
    reason: Reason | str,
    message: str,
    stable: str | None,
    canary: str | None,
    weight: float | None,
    index: int | None,
    step_count: int,
    step_started_at: datetime | None,
    paused_at: datetime | None = None,
    verified_pair: str | None = None,
    retry_count: int = 0,
    last_progress_at: datetime | None = None,
    aborted_at: datetime | None = None,
    analysis: AnalysisStatus | None = None,
    step_analysis: AnalysisStatus | None = None,
    hooks: Sequence[HookStatus] = (),
) -> RolloutStatus:
    return RolloutStatus(
        observed_generation=generation,
        phase=phase,
        stable_version=stable,
        canary_version=canary,
        canary_weight=weight,
        current_step_index=index,
        step_count=step_count,
        message=message,
        step_started_at=format_time(step_started_at) if step_started_at else None,
        paused_at=format_time(paused_at) if paused_at else None,
        verified_pair=verified_pair,
        retry_count=retry_count,
        last_progress_at=format_time(last_progress_at) if last_progress_at else None,
        aborted_at=format_time(aborted_at) if aborted_at else None,
        analysis=analysis,
        step_analysis=step_analysis,
        hooks=list(hooks) or None,
        conditions=build_conditions(
            previous.conditions, phase=phase, reason=reason, message=message, generation=generation, now=now
        ),
    )


# ---------------------------------------------------------------------------------------------
# The planner.


@dataclass(frozen=True)
class _Context:
    spec: RolloutSpec
    previous: RolloutStatus
    alias: AliasState
    generation: int | None
    now: datetime
    steps: list[Step]
    verified: str | None
    answers: Answers = field(default_factory=Answers)
    events: list[Event] = field(default_factory=list)
    # Held by a "pause" action (like spec.paused, but not in the spec).
    held_by_action: bool = False
    # What a manual action asks of this pass: promote, promote-full or abort.
    directive: ManualAction | None = None

    def event(self, reason: Reason, message: str, kind: EventType = EventType.NORMAL) -> None:
        self.events.append(Event(kind, reason, message))


def _in_flight(status: RolloutStatus) -> bool:
    return status.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.DEGRADED)


def _derive_pair(status: RolloutStatus, alias: AliasState) -> tuple[str, str | None]:
    """(stable, canary) as the status knows them while the alias agrees, else as the alias shows."""
    stable, canary = status.stable_version, status.canary_version
    if _in_flight(status) and stable and canary and stable != canary:
        served = {alias.function_version, *alias.routing}
        if served <= {stable, canary}:
            return stable, canary
    extra = next(iter(alias.routing), None)
    return alias.function_version, extra


def resume_index(steps: Sequence[Step], weight: float) -> int:
    """Where to continue when the alias already carries ``weight`` percent: never a step up.

    The rollout continues after the last setWeight at or below the observed weight, so the pause
    that follows that step runs in full; below the first setWeight it starts from the beginning.
    """
    index = 0
    for position, step in enumerate(steps):
        if isinstance(step, SetWeight) and step.weight <= weight + _WEIGHT_TOLERANCE:
            index = position + 1
        elif isinstance(step, SetWeight):
            break
    return index


def _weights_equal(left: float | None, right: float | None) -> bool:
    if left is None or right is None:
        return left is right
    return abs(left - right) < _WEIGHT_TOLERANCE


def _step_label(index: int, steps: Sequence[Step]) -> str:
    return f"step {index + 1}/{len(steps)}"


@dataclass(frozen=True)
class ActionRequest:
    """A manual action taken from the rollout's action annotation."""

    action: ManualAction | None  # None: the annotation named no known action
    id: str
    value: str  # the annotation's value, as written


def plan(
    spec: RolloutSpec,
    status: RolloutStatus,
    alias: AliasState | None,
    *,
    generation: int | None,
    now: datetime,
    verified: str | None = None,
    answers: Answers | None = None,
    request: ActionRequest | None = None,
) -> Plan:
    """Decide the next move of one rollout. See the module docstring for the contract."""
    answers = answers or Answers(verified=verified)
    held = bool(status.paused_by_action)
    if request is None:
        result = _plan(spec, status, alias, generation, now, answers, held=held, directive=None)
        return _carry_action_state(result, status.last_action, held)
    decision = _decide(request, spec, status, alias)
    working = decision.status or status
    held = decision.held if decision.held is not None else held
    result = _plan(spec, working, alias, generation, now, answers, held=held, directive=decision.directive)
    if result.verify or result.measure or result.run_hook:
        return result
    outcome = result.status.message or ""
    name = request.value.partition(":")[0]
    message = f"{name}: {decision.message or outcome}"
    applied = decision.applied
    drift = _drift_found(result) if applied and decision.directive in _PROMOTIONS else None
    if drift is not None:
        # The alias was found changed outside the operator: the pass paused (or restored it)
        # instead of promoting, so the promote was not carried out.
        applied = False
        message = f"{name}: not applied: {drift}"
    ack = LastAction(
        action=name,
        id=request.id,
        result=ActionResult.APPLIED if applied else ActionResult.REJECTED,
        message=message,
        at=format_time(now),
        step_index=status.current_step_index if _in_flight(status) else None,
        version=status.canary_version if _in_flight(status) else None,
    )
    event = Event(
        EventType.NORMAL if applied else EventType.WARNING,
        Reason.ACTION_APPLIED if applied else Reason.ACTION_REJECTED,
        message,
    )
    result = replace(result, events=(event, *result.events))
    return _carry_action_state(result, ack, held)


_PROMOTIONS = (ManualAction.PROMOTE, ManualAction.PROMOTE_FULL)


def _drift_found(result: Plan) -> str | None:
    """What this pass said of the alias it found changed outside the operator (it paused, or
    restored the alias); None when it found no such change."""
    for event in result.events:
        if event.reason in (Reason.DRIFTED, Reason.DRIFT_CORRECTED):
            return event.message
    if result.status.drift is not None:
        return result.status.message or "the alias was changed outside the operator"
    return None


def reject_request(result: Plan, request: ActionRequest, why: str, *, now: datetime) -> Plan:
    """Acknowledge ``request`` as rejected in a failure plan: it could not be applied."""
    name = request.value.partition(":")[0]
    message = f"{name}: could not be applied: {why}"
    ack = LastAction(
        action=name, id=request.id, result=ActionResult.REJECTED, message=message, at=format_time(now)
    )
    status = result.status.model_copy(update={"last_action": ack})
    event = Event(EventType.WARNING, Reason.ACTION_REJECTED, message)
    return replace(result, status=status, events=(event, *result.events))


def _carry_action_state(result: Plan, last_action: LastAction | None, held: bool) -> Plan:
    in_flight = result.status.phase in (Phase.PROGRESSING, Phase.PAUSED)
    status = result.status.model_copy(
        update={"last_action": last_action, "paused_by_action": True if held and in_flight else None}
    )
    return replace(result, status=status)


@dataclass(frozen=True)
class _Decision:
    applied: bool
    # For a rejection: why. For an applied action: None (the new status message says what it did).
    message: str | None = None
    directive: ManualAction | None = None
    status: RolloutStatus | None = None  # the status to plan from, when the action changes it
    held: bool | None = None  # the new "paused by action" state, when the action changes it


_ACTIONS_TEXT = ", ".join(action.value for action in ManualAction)


def _decide(
    request: ActionRequest, spec: RolloutSpec, status: RolloutStatus, alias: AliasState | None
) -> _Decision:
    """Whether a manual action makes sense now, and what it changes."""
    action, desired = request.action, spec.version
    if action is None:
        return _Decision(False, f"unknown action {request.value!r}: use one of {_ACTIONS_TEXT}")
    in_flight = (
        alias is not None
        and status.phase in (Phase.PROGRESSING, Phase.PAUSED)
        and status.canary_version == desired
        and bool(status.stable_version)
        and status.stable_version != desired
    )
    rolled_back = desired is not None and _rolled_back(status, desired)
    where = _where(status, desired)
    if action == ManualAction.RETRY:
        if not rolled_back and in_flight:
            step = step_label(status.phase, status.current_step_index, status.step_count) or ""
            at = f" at step {step}" if "/" in step else f" at {step}" if step else ""
            return _Decision(
                False,
                f"nothing to retry: version {desired} is in flight ({status.phase}{at}), not rolled back; "
                "retry rolls a version out again after an abort or a rollback",
            )
        if not rolled_back:
            return _Decision(False, f"nothing to retry: {where}")
        if (status.canary_weight or 0.0) > 0 or (alias is not None and alias.routing):
            return _Decision(False, "the rollback has not reached the alias yet: retry once it has")
        return _Decision(True, status=status.model_copy(update={"aborted_at": None}), held=False)
    if status.drift is not None and action == ManualAction.RESUME:
        # Carry on from the alias as someone left it: plan from it as if adopting it.
        fresh = RolloutStatus(observed_generation=status.observed_generation, last_action=status.last_action)
        return _Decision(True, status=fresh, held=False)
    if status.drift is not None and action != ManualAction.ABORT:
        return _Decision(
            False,
            "paused because the alias was changed outside the operator: undo the change, or resume to "
            "carry on from the alias as it is",
        )
    if status.drift is not None:
        # Abort sends all traffic back to the stable version, whatever the alias shows now.
        status = _without_drift(status, _parse_or_epoch(status.drift.since))
    if action == ManualAction.RESUME:
        if not status.paused_by_action:
            extra = "; spec.paused is true: change it in the spec" if spec.paused else ""
            return _Decision(False, f"nothing to resume: not paused by an action{extra}")
        return _Decision(True, held=False)
    if not in_flight:
        return _Decision(False, f"nothing to {action.value}: {where}")
    if action == ManualAction.PAUSE:
        if status.paused_by_action:
            return _Decision(False, "already paused by an action: resume to go on")
        return _Decision(True, held=True)
    if action == ManualAction.ABORT:
        return _Decision(True, directive=ManualAction.ABORT, held=False, status=status)
    if spec.paused:
        return _Decision(False, "spec.paused is true: set it to false in the spec to go on")
    # promote and promote-full also end a hold by a "pause" action: a person said go on.
    return _Decision(True, directive=action, held=False)


def _parse_or_epoch(text: str) -> datetime:
    return parse_time(text) or datetime(1970, 1, 1, tzinfo=UTC)


def _where(status: RolloutStatus, desired: str | None) -> str:
    if status.phase == Phase.HEALTHY:
        return f"version {status.canary_version} is Healthy"
    if status.phase == Phase.DEGRADED and status.aborted_at is not None:
        return f"version {status.canary_version} was rolled back; change spec.version or retry"
    if status.phase == Phase.DEGRADED:
        return f"the rollout is stalled: {status.message}"
    if status.canary_version != desired:
        return f"version {desired} has not started yet"
    return "no rollout in flight"


def _plan(
    spec: RolloutSpec,
    status: RolloutStatus,
    alias: AliasState | None,
    generation: int | None,
    now: datetime,
    answers: Answers,
    *,
    held: bool,
    directive: ManualAction | None,
) -> Plan:
    steps = spec.steps()
    desired = spec.desired_version
    verified = answers.verified or status.verified_pair

    if alias is None:
        return _plan_first_deployment(spec, status, steps, generation=generation, now=now, verified=verified)

    context = _Context(
        spec,
        status,
        alias,
        generation,
        now,
        steps,
        verified,
        answers,
        held_by_action=held,
        directive=directive,
    )
    if directive != ManualAction.ABORT:
        drift = _detect_drift(spec, status, alias, steps)
        if drift is not None:
            return _plan_drift(context, drift)
        if status.drift is not None:
            # Someone undid the change: carry on from where the rollout was.
            context.event(
                Reason.DRIFT_RESOLVED,
                f"alias {spec.alias} is back to {status.drift.expected}: carrying on",
            )
            status = _without_drift(status, now)
            context = replace(context, previous=status)
    if _rolled_back(status, desired):
        return _plan_hold_rolled_back(context)
    stable, canary = _derive_pair(status, alias)
    canary_weight = alias.percent_on(canary) if canary else 0.0

    if desired == stable:
        return _plan_on_stable(context, stable, canary)
    if desired == canary:
        return _plan_progress(context, stable, desired, canary_weight)
    # A third version: traffic on any other canary goes back to stable before the new one starts.
    if canary is not None and (canary_weight > 0 or alias.function_version != stable):
        return _plan_restore_stable(context, stable, canary)
    return _plan_progress(context, alias.function_version, desired, 0.0)


# ---------------------------------------------------------------------------------------------
# Drift: the alias changed outside the operator.

_State = tuple[str, dict[str, float]]


@dataclass(frozen=True)
class _Drift:
    expected: _State
    expected_text: str
    observed_text: str


def _describe_state(primary: str, routing: Mapping[str, float]) -> str:
    if not routing:
        return f"100% on version {primary}"
    parts = [f"{100 - sum(routing.values()):g}% on version {primary}"]
    parts += [f"{percent:g}% on version {version}" for version, percent in routing.items()]
    return " / ".join(parts)


def _route_state(stable: str, canary: str, weight: float) -> _State:
    if weight >= 100:
        return canary, {}
    if weight <= 0:
        return stable, {}
    return stable, {canary: weight}


def _expected_state(status: RolloutStatus) -> _State | None:
    """The alias as the operator last left it, by the status; None when the status says nothing."""
    phase = status.drift.previous_phase if status.drift is not None else status.phase
    stable, canary, weight = status.stable_version, status.canary_version, status.canary_weight
    if phase == Phase.HEALTHY and canary:
        return canary, {}
    if phase == Phase.DEGRADED and status.aborted_at is not None and stable:
        return stable, {}
    if phase in (Phase.PROGRESSING, Phase.PAUSED) and stable and canary and stable != canary:
        if weight is None:
            return None
        return _route_state(stable, canary, weight)
    return None


def _next_planned_state(status: RolloutStatus, steps: Sequence[Step]) -> _State | None:
    """The alias after the next write the plan makes from the status (a restart after that write
    landed and before its status did finds the alias there)."""
    stable, canary, index = status.stable_version, status.canary_version, status.current_step_index
    if not stable or not canary or index is None:
        return None
    weight = status.canary_weight or 0.0
    for step in steps[index:]:
        if isinstance(step, SetWeight) and not _weights_equal(step.weight, weight):
            return _route_state(stable, canary, float(step.weight))
    return canary, {}


def _serves(alias: AliasState, state: _State) -> bool:
    primary, routing = state
    if alias.function_version != primary or set(alias.routing) != set(routing):
        return False
    return all(_weights_equal(alias.routing[version], percent) for version, percent in routing.items())


def _detect_drift(
    spec: RolloutSpec, status: RolloutStatus, alias: AliasState, steps: Sequence[Step]
) -> _Drift | None:
    if spec.desired_version != status.canary_version:
        return None  # a spec change: the planner moves the alias on purpose
    if _rolled_back(status, spec.desired_version) and (status.canary_weight or 0.0) > 0:
        return None  # our own rollback write is still pending
    expected = _expected_state(status)
    if expected is None or _serves(alias, expected):
        return None
    if status.drift is None and status.phase in (Phase.PROGRESSING, Phase.PAUSED):
        following = _next_planned_state(status, steps)
        if following is not None and _serves(alias, following):
            return None  # our own write, whose status write was lost
    return _Drift(
        expected, _describe_state(*expected), _describe_state(alias.function_version, alias.routing)
    )


def _without_drift(status: RolloutStatus, now: datetime) -> RolloutStatus:
    assert status.drift is not None
    return status.model_copy(
        update={
            "phase": status.drift.previous_phase,
            "drift": None,
            "message": None,
            "conditions": [],
            "last_progress_at": format_time(now),
        }
    )


def _plan_drift(context: _Context, drift: _Drift) -> Plan:
    previous, alias, spec = context.previous, context.alias, context.spec
    what = (
        f"alias {spec.alias} was changed outside the operator: expected {drift.expected_text}, "
        f"found {drift.observed_text}"
    )
    if spec.on_drift == DriftPolicy.CORRECT:
        primary, routing = drift.expected
        canary, percent = next(iter(routing.items()), (None, 0.0))
        message = f"{what}; restored it (spec.onDrift: Correct)"
        context.event(Reason.DRIFT_CORRECTED, message, EventType.WARNING)
        restored = _without_drift(previous, context.now) if previous.drift is not None else previous
        status = restored.model_copy(update={"observed_generation": context.generation})
        action = RouteTraffic(primary, canary, percent, alias.revision_id)
        return Plan(status, action=action, requeue_after=0.0, events=tuple(context.events))
    message = (
        f"{what}; paused (spec.onDrift: Pause): undo the change, resume to carry on from the alias as "
        "it is, or set spec.onDrift: Correct"
    )
    known = previous.drift
    if known is None or known.observed != drift.observed_text:
        context.event(Reason.DRIFTED, message, EventType.WARNING)
    since = (
        known.since
        if known is not None and known.observed == drift.observed_text
        else format_time(context.now)
    )
    record = DriftStatus(
        expected=drift.expected_text,
        observed=drift.observed_text,
        since=since,
        previous_phase=known.previous_phase if known is not None else (previous.phase or Phase.PROGRESSING),
    )
    conditions = build_conditions(
        previous.conditions,
        phase=Phase.PAUSED,
        reason=Reason.DRIFTED,
        message=message,
        generation=context.generation,
        now=context.now,
    )
    earlier = next((c for c in previous.conditions if c.type == ConditionType.DRIFTED), None)
    conditions.append(
        Condition(
            type=ConditionType.DRIFTED.value,
            status="True",
            reason=Reason.DRIFTED.value,
            message=message,
            last_transition_time=earlier.last_transition_time if earlier else format_time(context.now),
            observed_generation=context.generation,
        )
    )
    status = previous.model_copy(
        update={
            "observed_generation": context.generation,
            "phase": Phase.PAUSED,
            "message": message,
            "drift": record,
            "conditions": conditions,
        }
    )
    return Plan(status, events=tuple(context.events))


def _rolled_back(status: RolloutStatus, desired: str) -> bool:
    """This attempt at ``desired`` was rolled back: it holds until spec.version changes."""
    return (
        status.phase == Phase.DEGRADED
        and status.aborted_at is not None
        and status.canary_version == desired
        and bool(status.stable_version)
        and status.stable_version != desired
    )


def _plan_hold_rolled_back(context: _Context) -> Plan:
    """Keep a rolled-back rollout on its stable version; never re-attempt on its own."""
    previous, alias = context.previous, context.alias
    stable, canary = previous.stable_version or "", previous.canary_version or ""
    served = {alias.function_version, *alias.routing}
    reason = _condition_reason(previous, ConditionType.STALLED) or Reason.ANALYSIS_FAILED
    message = previous.message or f"rolled back to version {stable}"
    action = None
    pending = (previous.canary_weight or 0.0) > 0
    if pending and served != {stable} and served <= {stable, canary}:
        # The rollback write did not land yet (it failed, or a deadline passed during an outage).
        action = RouteTraffic(stable, None, 0.0, alias.revision_id)
        context.event(
            Reason(reason), f"sending all traffic back to version {stable}: {message}", EventType.WARNING
        )
    status = previous.model_copy(
        update={
            "observed_generation": context.generation,
            "canary_weight": alias.percent_on(canary) if action is None else previous.canary_weight,
            "retry_count": 0,
            "conditions": build_conditions(
                previous.conditions,
                phase=Phase.DEGRADED,
                reason=reason,
                message=message,
                generation=context.generation,
                now=context.now,
            ),
        }
    )
    return Plan(status, action=action, requeue_after=0.0 if action else None, events=tuple(context.events))


def _verify_request(spec: RolloutSpec, stable: str, canary: str) -> VerifyVersions:
    analyses = [
        spec.background_analysis(),
        *(step.analysis for step in spec.steps() if isinstance(step, Analyze)),
    ]
    names: list[str] = []
    prefixes: list[str] = []
    for analysis in analyses:
        if analysis is None:
            continue
        names += [name for name in analysis.alarms if name not in names]
        if analysis.alarm_prefix and analysis.alarm_prefix not in prefixes:
            prefixes.append(analysis.alarm_prefix)
    return VerifyVersions(stable, canary, tuple(names), tuple(prefixes))


def _plan_first_deployment(
    spec: RolloutSpec,
    status: RolloutStatus,
    steps: list[Step],
    *,
    generation: int | None,
    now: datetime,
    verified: str | None,
) -> Plan:
    desired = spec.desired_version
    common = {"generation": generation, "now": now, "step_count": len(steps), "step_started_at": None}
    if spec.paused:
        message = f"alias {spec.alias} does not exist yet; paused by spec.paused before creating it"
        new_status = _finish(
            status,
            phase=Phase.PAUSED,
            reason=Reason.PAUSED_BY_SPEC,
            message=message,
            stable=None,
            canary=desired,
            weight=None,
            index=None,
            **common,  # type: ignore[arg-type]
        )
        return Plan(new_status)
    pair = verified_pair_key(desired, desired)
    if verified != pair:
        return Plan(status, verify=VerifyVersions(desired, desired))
    message = f"created alias {spec.alias} on version {desired}: nothing to shift from"
    new_status = _finish(
        status,
        phase=Phase.HEALTHY,
        reason=Reason.ALIAS_CREATED,
        message=message,
        stable=desired,
        canary=desired,
        weight=100.0,
        index=len(steps),
        verified_pair=pair,
        **common,  # type: ignore[arg-type]
    )
    return Plan(
        new_status,
        action=CreateAlias(desired),
        events=(Event(EventType.NORMAL, Reason.ALIAS_CREATED, message),),
    )


def _healthy(
    context: _Context, version: str, reason: Reason, message: str, work: _Work | None = None
) -> RolloutStatus:
    """All traffic on ``version``. A finished rollout keeps its last analysis and hook results."""
    return _finish(
        context.previous,
        generation=context.generation,
        now=context.now,
        phase=Phase.HEALTHY,
        reason=reason,
        message=message,
        stable=version,
        canary=version,
        weight=100.0,
        index=len(context.steps),
        step_count=len(context.steps),
        step_started_at=None,
        verified_pair=context.verified,
        analysis=work.background if work else None,
        step_analysis=work.step_run if work else None,
        hooks=[work.hooks[point] for point in HookPoint if point in work.hooks] if work else (),
    )


def _plan_on_stable(context: _Context, stable: str, canary: str | None) -> Plan:
    """spec.version is the stable version: all traffic belongs on it, at once."""
    alias = context.alias
    if alias.routing or alias.function_version != stable:
        moved = f"{alias.percent_on(canary):g}% on version {canary}" if canary else "a split alias"
        message = f"rolled back to version {stable}: spec.version is the stable version (was {moved})"
        context.event(Reason.ROLLED_BACK, message)
        action = RouteTraffic(stable, None, 0.0, alias.revision_id)
        return Plan(
            _healthy(context, stable, Reason.ROLLED_BACK, message),
            action=action,
            events=tuple(context.events),
        )
    previous = context.previous
    if previous.phase == Phase.HEALTHY and previous.canary_version == stable:
        message = previous.message or f"version {stable} serves all traffic"
        reason = _condition_reason(previous) or Reason.SUCCEEDED
        return Plan(_healthy(context, stable, Reason(reason), message))
    if _in_flight(previous) and previous.stable_version == stable and previous.canary_version:
        if previous.aborted_at is not None:
            stalled = _condition_reason(previous, ConditionType.STALLED)
            why = f"version {previous.canary_version} was rolled back ({stalled})"
        else:
            why = f"version {previous.canary_version} had no traffic"
        message = f"rolled back to version {stable}: spec.version is the stable version ({why})"
        context.event(Reason.ROLLED_BACK, message)
        return Plan(_healthy(context, stable, Reason.ROLLED_BACK, message), events=tuple(context.events))
    message = f"version {stable} already serves all traffic on alias {context.spec.alias}"
    context.event(Reason.ADOPTED, message)
    return Plan(_healthy(context, stable, Reason.ADOPTED, message), events=tuple(context.events))


def _condition_reason(status: RolloutStatus, kind: ConditionType = ConditionType.READY) -> str | None:
    for condition in status.conditions:
        if condition.type == kind:
            return condition.reason if condition.reason in Reason._value2member_map_ else None
    return None


def _plan_restore_stable(context: _Context, stable: str, canary: str) -> Plan:
    desired = context.spec.desired_version
    message = (
        f"sending all traffic back to version {stable} (was {context.alias.percent_on(canary):g}% on "
        f"version {canary}) before rolling out version {desired}"
    )
    context.event(Reason.RESTORING_STABLE, message)
    new_status = _finish(
        context.previous,
        generation=context.generation,
        now=context.now,
        phase=Phase.PROGRESSING,
        reason=Reason.RESTORING_STABLE,
        message=message,
        stable=stable,
        canary=desired,
        weight=0.0,
        index=0,
        step_count=len(context.steps),
        step_started_at=context.now,
        verified_pair=None,
    )
    return Plan(
        new_status,
        action=RouteTraffic(stable, None, 0.0, context.alias.revision_id),
        requeue_after=0.0,
        events=tuple(context.events),
    )


def _plan_progress(context: _Context, stable: str, canary: str, weight: float) -> Plan:
    """Move the rollout of ``canary`` over ``stable`` forward by at most one alias write."""
    previous, steps, now = context.previous, context.steps, context.now
    pair = verified_pair_key(stable, canary)
    if context.verified != pair:
        return Plan(previous, verify=_verify_request(context.spec, stable, canary))

    consistent = (
        previous.canary_version == canary
        and previous.stable_version == stable
        and previous.current_step_index is not None
        and _weights_equal(previous.canary_weight, weight)
        and previous.phase in (Phase.PROGRESSING, Phase.PAUSED)
    )
    work = _Work(context=context, stable=stable, canary=canary, weight=weight, pair=pair)
    if consistent:
        assert previous.current_step_index is not None
        work.index = min(previous.current_step_index, len(steps))
        work.started = parse_time(previous.step_started_at) or now
        work.paused_at = parse_time(previous.paused_at)
        work.last_progress = parse_time(previous.last_progress_at) or work.started
        work.background = previous.analysis
        work.step_run = previous.step_analysis
        work.hooks = {hook.point: hook for hook in previous.hooks or [] if hook.version == canary}
    elif previous.canary_version == canary and previous.phase == Phase.DEGRADED and weight == 0:
        # A failed attempt at this same version (e.g. the pre-flight checks) starts over.
        pass
    else:
        work.index = resume_index(steps, weight) if weight > 0 else 0
        if weight > 0:
            context.event(
                Reason.PROGRESSING,
                f"found {weight:g}% of traffic on version {canary}; continuing at "
                f"{_step_label(work.index, steps) if work.index < len(steps) else 'promotion'}",
            )
        else:
            context.event(Reason.PROGRESSING, f"rolling out version {canary} over version {stable}")

    if context.directive == ManualAction.ABORT:
        return work.abort(Reason.ABORTED, "aborted by request")
    if context.spec.paused or context.held_by_action:
        held_since = work.paused_at or now
        where = _step_label(work.index, steps) if work.index < len(steps) else "promotion"
        by_spec = context.spec.paused
        holder = "spec.paused" if by_spec else "a pause action"
        reason = Reason.PAUSED_BY_SPEC if by_spec else Reason.PAUSED_BY_ACTION
        message = f"paused by {holder} at {where} with {weight:g}% on version {canary}"
        if work.paused_at is None:
            context.event(reason, message)
        work.paused_at = held_since
        return work.plan(work.status(message, reason, phase=Phase.PAUSED))
    if work.paused_at is not None:
        # The time held by spec.paused counts neither toward a timed pause nor toward the deadline.
        work.started = work.started + (now - work.paused_at)
        work.last_progress = now
        work.paused_at = None
        context.event(Reason.RESUMED, f"resumed at {_step_label(work.index, steps)}")
    return work.advance()


@dataclass
class _Work:
    """One pass of ``_plan_progress``: the state it carries forward and the decisions it makes."""

    context: _Context
    stable: str
    canary: str
    weight: float
    pair: str
    index: int = 0
    started: datetime = field(init=False)
    paused_at: datetime | None = None
    last_progress: datetime = field(init=False)
    background: AnalysisStatus | None = None
    step_run: AnalysisStatus | None = None
    hooks: dict[HookPoint, HookStatus] = field(default_factory=dict)
    # Set once this pass has used the measurement it was given.
    measurement_used: bool = False
    # Whether the background analysis measures in this pass (traffic split, no analysis step).
    background_active: bool = False
    # A "promote" action that has not yet moved the rollout past a wait.
    promote_pending: bool = False

    def __post_init__(self) -> None:
        self.started = self.context.now
        self.last_progress = self.context.now
        self.promote_pending = self.context.directive == ManualAction.PROMOTE

    def _promoted_past(self, what: str) -> bool:
        """Use a pending "promote" to move past ``what``; False when there is none."""
        if not self.promote_pending:
            return False
        self.promote_pending = False
        self.context.event(Reason.PROMOTED_BY_ACTION, f"{what}: skipped by a promote action")
        return True

    # -- building the result -------------------------------------------------------------------

    @property
    def steps(self) -> list[Step]:
        return self.context.steps

    @property
    def now(self) -> datetime:
        return self.context.now

    def label(self) -> str:
        return _step_label(self.index, self.steps) if self.index < len(self.steps) else "promotion"

    def status(
        self,
        message: str,
        reason: Reason,
        *,
        phase: Phase = Phase.PROGRESSING,
        weight: float | None = None,
        aborted: bool = False,
    ) -> RolloutStatus:
        context = self.context
        return _finish(
            context.previous,
            generation=context.generation,
            now=self.now,
            phase=phase,
            reason=reason,
            message=message,
            stable=self.stable,
            canary=self.canary,
            weight=self.weight if weight is None else weight,
            index=self.index,
            step_count=len(self.steps),
            step_started_at=self.started,
            paused_at=self.paused_at,
            verified_pair=self.pair,
            last_progress_at=self.last_progress,
            aborted_at=self.now if aborted else None,
            analysis=self.background,
            step_analysis=self.step_run,
            hooks=[self.hooks[point] for point in HookPoint if point in self.hooks],
        )

    def plan(
        self, status: RolloutStatus, *, action: Action | None = None, requeue_after: float | None = None
    ) -> Plan:
        return Plan(status, action=action, requeue_after=requeue_after, events=tuple(self.context.events))

    def progressed(self) -> None:
        self.last_progress = self.now

    # -- the pass ------------------------------------------------------------------------------

    def advance(self) -> Plan:
        spec, context = self.context.spec, self.context
        before = spec.hook(HookPoint.BEFORE_ALLOW_TRAFFIC)
        if (
            before is not None
            and self.weight == 0
            and not self._hook_succeeded(HookPoint.BEFORE_ALLOW_TRAFFIC)
        ):
            outcome = self._hook_answer(HookPoint.BEFORE_ALLOW_TRAFFIC)
            if outcome is None:
                return self._ask_hook(HookPoint.BEFORE_ALLOW_TRAFFIC, before)
            self._record_hook(HookPoint.BEFORE_ALLOW_TRAFFIC, before, outcome)
            if not outcome.succeeded:
                return self.abort(
                    Reason.HOOK_FAILED,
                    f"beforeAllowTraffic hook ({before.describe()}) failed: {outcome.message}",
                )

        if context.directive == ManualAction.PROMOTE_FULL:
            skipped = len(self.steps) - self.index
            context.event(
                Reason.PROMOTED_BY_ACTION,
                f"{self.label()}: promote-full skips {skipped} remaining step(s) and every analysis",
            )
            self.index = len(self.steps)
            self.progressed()
            return self._promote()

        holding: str | None = None
        background = spec.background_analysis()
        current = self.steps[self.index] if self.index < len(self.steps) else None
        self.background_active = (
            background is not None and 0 < self.weight < 100 and not isinstance(current, Analyze)
        )
        if background is not None and self.background_active:
            # Its clock starts when the split did (the weight's write, this step's start), not at
            # the pass after it: a pause as long as the interval ends with a measurement, instead
            # of a few milliseconds before one, which let a rollout promote unmeasured.
            run = self.background or start_run(None, background, now=min(self.started, self.now))
            self.background = run
            if self._due(run):
                readings = self._readings()
                if readings is None:
                    return self._ask_measurement(background, run)
                tally = record(
                    run,
                    assess(background, self._subject(), readings),
                    background,
                    blocking=False,
                    now=self.now,
                )
                self.background = tally.status
                self._note_measurement(tally, background=True)
                if tally.outcome == Outcome.FAILED:
                    return self.abort(Reason.ANALYSIS_FAILED, f"analysis failed: {tally.message}")
            if self.background.holding and self._promoted_past("an inconclusive analysis hold"):
                self.background = self.background.model_copy(update={"holding": False})
                self.progressed()
            if self.background.holding:
                holding = self.background.last_message or "inconclusive"

        while self.index < len(self.steps):
            if holding is not None:
                return self._hold_inconclusive(holding, self.background)
            step = self.steps[self.index]
            label = self.label()
            if isinstance(step, SetWeight):
                if _weights_equal(step.weight, self.weight):
                    self._next_step()
                    continue
                message = f"{label}: set weight {step.weight}% on version {self.canary}"
                context.event(Reason.WEIGHT_SET, message)
                action = _route_to(self.stable, self.canary, step.weight, context.alias.revision_id)
                self.started = self.now
                self.index += 1
                self.progressed()
                following = self.steps[self.index] if self.index < len(self.steps) else None
                if self._pause_starts_with_write(following):
                    assert isinstance(following, Pause)
                    self.weight = float(step.weight)
                    waiting = self._pause(following)
                    assert waiting is not None
                    return replace(waiting, action=action)
                status = self.status(message, Reason.PROGRESSING, weight=float(step.weight))
                return self.plan(status, action=action, requeue_after=0.0)
            if isinstance(step, Pause):
                waiting = self._pause(step)
                if waiting is not None:
                    return waiting
                self._next_step()
                continue
            plan = self._blocking_analysis(step)
            if plan is not None:
                return plan
        if holding is not None:
            return self._hold_inconclusive(holding, self.background)

        hooks = self.context.spec.hooks
        confirm = hooks.confirm_promotion if hooks is not None else None
        if confirm is not None and not self._hook_succeeded(HookPoint.CONFIRM_PROMOTION):
            plan = self._confirmation(confirm)
            if plan is not None:
                return plan
        return self._promote()

    # -- steps ---------------------------------------------------------------------------------

    def _pause(self, step: Pause) -> Plan | None:
        """The plan while the pause at ``self.index`` lasts; None when it is over (or promoted past)."""
        context, label = self.context, self.label()
        if step.seconds is not None and step.seconds - (self.now - self.started).total_seconds() <= 0:
            context.event(Reason.STEP_COMPLETED, f"{label}: {describe_step(step)} done")
            return None
        if self._promoted_past(f"{label}: {describe_step(step)}"):
            return None
        if step.seconds is None:
            message = f"{label}: paused until promoted, {self.weight:g}% on version {self.canary}"
            previous = context.previous
            if not (previous.phase == Phase.PAUSED and previous.current_step_index == self.index):
                context.event(Reason.PAUSED_BY_STEP, message)
            return self._waiting(message, Reason.PAUSED_BY_STEP, phase=Phase.PAUSED, counts=False)
        remaining = step.seconds - (self.now - self.started).total_seconds()
        message = f"{label}: {describe_step(step)} ({format_duration(remaining)} left)"
        return self._waiting(message, Reason.PROGRESSING, due_in=remaining, counts=False)

    def _pause_starts_with_write(self, following: Step | None) -> bool:
        """Whether the pause after a weight write starts in the write's own pass.

        It saves a pass and a status write per step: the status goes from the weight before
        straight to the pause with the new weight (the write itself is told by its WeightSet
        event). Not when the pass after the write has something else to do first: the background
        analysis starts measuring there, and a pending promote would skip the pause into a second
        write. A pause of no time is simply the next step, as before.
        """
        return (
            isinstance(following, Pause)
            and (following.seconds is None or following.seconds > 0)
            and self.context.spec.background_analysis() is None
            and not self.promote_pending
        )

    def _next_step(self) -> None:
        # The next step starts now: a pause that ended while the operator was away does not
        # shorten the one after it.
        self.index += 1
        self.started = self.now
        self.progressed()

    def _waiting(
        self,
        message: str,
        reason: Reason,
        *,
        phase: Phase = Phase.PROGRESSING,
        due_in: float | None = None,
        counts: bool = True,
    ) -> Plan:
        """Nothing to write this pass. ``counts``: the wait counts toward progressDeadlineSeconds."""
        due = [due_in] if due_in is not None else []
        if self.background is not None and self.background_active:
            due.append(self._seconds_until(self.background.next_measurement_at))
        deadline = self.context.spec.progress_deadline_seconds
        if counts and deadline is not None:
            stuck = (self.now - self.last_progress).total_seconds()
            if stuck >= deadline:
                return self.abort(
                    Reason.PROGRESS_DEADLINE_EXCEEDED,
                    f"no progress for {format_duration(stuck)} (progressDeadlineSeconds {deadline}) at "
                    f"{self.label()}: {message}",
                )
            due.append(deadline - stuck)
        requeue = max(0.0, min(due)) if due else None
        return self.plan(self.status(message, reason, phase=phase), requeue_after=requeue)

    def _blocking_analysis(self, step: Analyze) -> Plan | None:
        """Run the analysis step at ``self.index``; None when it passed and the loop goes on."""
        analysis, label = step.analysis, self.label()
        if self._promoted_past(f"{label}: analysis"):
            self._next_step()
            return None
        run = self.step_run
        if run is None or run.step_index != self.index:
            run = start_run(self.index, analysis, now=self.now)
            self.context.event(
                Reason.PROGRESSING,
                f"{label}: analysis started, measuring every {format_duration(analysis.interval_seconds)}",
            )
        self.step_run = run
        if self._due(run):
            readings = self._readings()
            if readings is None:
                return self._ask_measurement(analysis, run)
            tally = record(
                run, assess(analysis, self._subject(), readings), analysis, blocking=True, now=self.now
            )
            self.step_run = run = tally.status
            self._note_measurement(tally, background=False)
            if tally.outcome == Outcome.FAILED:
                return self.abort(Reason.ANALYSIS_FAILED, f"{label}: analysis failed: {tally.message}")
            if tally.outcome == Outcome.PASSED:
                self.context.event(
                    Reason.ANALYSIS_PASSED,
                    f"{label}: analysis passed ({run.consecutive_successes} successful measurements in a "
                    f"row): {tally.message}",
                )
                self._next_step()
                return None
        if run.holding:
            return self._hold_inconclusive(run.last_message or "inconclusive", run)
        wait = self._seconds_until(run.next_measurement_at)
        message = (
            f"{label}: analysis, {run.consecutive_successes}/{analysis.consecutive_success_limit} successful "
            f"measurements in a row, next in {format_duration(wait)}"
        )
        return self._waiting(message, Reason.PROGRESSING, due_in=wait)

    def _hold_inconclusive(self, why: str, run: AnalysisStatus | None) -> Plan:
        message = (
            f"{self.label()}: held with {self.weight:g}% on version {self.canary}: analysis inconclusive "
            f"({why}); measuring again, waiting for data or a person"
        )
        due_in = self._seconds_until(run.next_measurement_at) if run is not None else None
        return self._waiting(message, Reason.ANALYSIS_INCONCLUSIVE, phase=Phase.PAUSED, due_in=due_in)

    # -- analysis ------------------------------------------------------------------------------

    def _due(self, run: AnalysisStatus) -> bool:
        due_at = parse_time(run.next_measurement_at)
        return due_at is None or self.now >= due_at

    def _seconds_until(self, moment: str | None) -> float:
        at = parse_time(moment)
        return max(0.0, (at - self.now).total_seconds()) if at is not None else 0.0

    def _subject(self) -> Subject:
        spec = self.context.spec
        return Subject(
            function_name=spec.function_name, alias=spec.alias, canary=self.canary, stable=self.stable
        )

    def _readings(self) -> Readings | None:
        """The readings this pass was given, once: a second measurement in one pass waits its turn."""
        if self.measurement_used:
            return None
        readings = self.context.answers.readings
        if readings is not None:
            self.measurement_used = True
        return readings

    def _ask_measurement(self, analysis: AnalysisSettings, run: AnalysisStatus) -> Plan:
        if self.measurement_used:
            # This pass already measured; the other analysis measures on the next pass.
            return self.plan(self.status("measuring", Reason.PROGRESSING), requeue_after=0.0)
        started = parse_time(run.started_at) or self.now
        start = max(started, self.now - timedelta(seconds=analysis.interval_seconds))
        request = build_request(analysis, self._subject(), start=start, end=self.now)
        return Plan(self.context.previous, measure=Measure(request=request, analysis=analysis))

    def _note_measurement(self, tally: Tally, *, background: bool) -> None:
        run = tally.status
        which = "analysis" if background else f"{self.label()}: analysis"
        if tally.outcome == Outcome.HOLD and not (run.measurements > 1 and self._was_holding(background)):
            self.context.event(
                Reason.ANALYSIS_INCONCLUSIVE, f"{which} inconclusive: {tally.message}", EventType.WARNING
            )
        if run.last_verdict == Verdict.ERROR and tally.outcome != Outcome.HOLD:
            self.context.event(Reason.ANALYSIS_ERROR, f"{which}: {tally.message}", EventType.WARNING)
        if run.last_verdict == Verdict.SUCCESSFUL:
            self.progressed()

    def _was_holding(self, background: bool) -> bool:
        previous = self.context.previous
        before = previous.analysis if background else previous.step_analysis
        return before is not None and before.holding

    # -- hooks ---------------------------------------------------------------------------------

    def _hook_succeeded(self, point: HookPoint) -> bool:
        found = self.hooks.get(point)
        return found is not None and found.result == HookResult.SUCCEEDED

    def _hook_answer(self, point: HookPoint) -> HookAnswer | None:
        answers = self.context.answers
        for answer in (answers.hook, *answers.hooks):
            if answer is not None and answer.point == point:
                return answer
        return None

    def _ask_hook(self, point: HookPoint, hook: Hook) -> Plan:
        return Plan(
            self.context.previous,
            run_hook=RunHook(point=point, hook=hook, stable=self.stable, canary=self.canary),
        )

    def _record_hook(
        self, point: HookPoint, hook: Hook, outcome: HookAnswer, *, next_attempt: datetime | None = None
    ) -> None:
        result = (
            HookResult.SUCCEEDED
            if outcome.succeeded
            else (HookResult.WAITING if next_attempt else HookResult.FAILED)
        )
        self.hooks[point] = HookStatus(
            point=point,
            version=self.canary,
            result=result,
            attempts=outcome.attempts,
            message=outcome.message,
            at=format_time(self.now),
            next_attempt_at=format_time(next_attempt) if next_attempt else None,
        )
        if outcome.succeeded:
            self.progressed()
            self.context.event(
                Reason.HOOK_SUCCEEDED, f"{point.value} hook ({hook.describe()}) succeeded: {outcome.message}"
            )

    def _confirmation(self, confirm: ConfirmHook) -> Plan | None:
        """The confirmPromotion gate; None once it said yes."""
        point = HookPoint.CONFIRM_PROMOTION
        if self._promoted_past("confirmPromotion"):
            self._record_hook(point, confirm, HookAnswer(point, True, "confirmed by a promote action", 0))
            return None
        waiting = self.hooks.get(point)
        outcome = self._hook_answer(point)
        if outcome is None:
            if waiting is None or self._seconds_until(waiting.next_attempt_at) <= 0:
                return self._ask_hook(point, confirm)
        else:
            interval = parse_duration(confirm.interval)
            self._record_hook(
                point,
                confirm,
                outcome,
                next_attempt=None if outcome.succeeded else self.now + timedelta(seconds=interval),
            )
            if outcome.succeeded:
                return None
            if waiting is None or waiting.result != HookResult.WAITING:
                self.context.event(
                    Reason.AWAITING_CONFIRMATION,
                    f"waiting for confirmPromotion ({confirm.describe()}): {outcome.message}",
                )
            waiting = self.hooks[point]
        message = (
            f"promotion: waiting for confirmPromotion ({confirm.describe()}), "
            f"{self.weight:g}% on version {self.canary}; last answer: {waiting.message if waiting else ''}"
        )
        wait = self._seconds_until(waiting.next_attempt_at if waiting else None)
        return self._waiting(message, Reason.AWAITING_CONFIRMATION, phase=Phase.PAUSED, due_in=wait)

    # -- the end -------------------------------------------------------------------------------

    def _promote(self) -> Plan:
        context, canary = self.context, self.canary
        after = context.spec.hook(HookPoint.AFTER_ALLOW_TRAFFIC)
        fully_on_canary = context.alias.function_version == canary and not context.alias.routing
        if not fully_on_canary:
            message = f"promoted version {canary}: all traffic on it (was {self.weight:g}%)"
            context.event(Reason.SUCCEEDED if after is None else Reason.WEIGHT_SET, message)
            action = RouteTraffic(canary, None, 0.0, context.alias.revision_id)
            self.progressed()
            if after is None:
                return self.plan(
                    _healthy(replace(context, verified=self.pair), canary, Reason.SUCCEEDED, message, self),
                    action=action,
                )
            status = self.status(
                f"{message}; running the afterAllowTraffic hook", Reason.PROGRESSING, weight=100.0
            )
            return self.plan(status, action=action, requeue_after=0.0)
        if after is not None and not self._hook_succeeded(HookPoint.AFTER_ALLOW_TRAFFIC):
            outcome = self._hook_answer(HookPoint.AFTER_ALLOW_TRAFFIC)
            if outcome is None:
                return self._ask_hook(HookPoint.AFTER_ALLOW_TRAFFIC, after)
            self._record_hook(HookPoint.AFTER_ALLOW_TRAFFIC, after, outcome)
            if not outcome.succeeded:
                return self.abort(
                    Reason.HOOK_FAILED,
                    f"afterAllowTraffic hook ({after.describe()}) failed: {outcome.message}",
                )
        message = f"version {canary} serves all traffic"
        previous = context.previous
        if previous.phase != Phase.HEALTHY or previous.canary_version != canary:
            context.event(Reason.SUCCEEDED, f"promoted version {canary}: all traffic on it")
        return self.plan(
            _healthy(replace(context, verified=self.pair), canary, Reason.SUCCEEDED, message, self)
        )

    def abort(self, reason: Reason, cause: str) -> Plan:
        """Roll back: one write sends all traffic to the stable version; the rollout then holds."""
        alias = self.context.alias
        moved = alias.function_version != self.stable or bool(alias.routing)
        action = RouteTraffic(self.stable, None, 0.0, alias.revision_id) if moved else None
        outcome = f"rolled back to version {self.stable}" if moved else "no traffic was moved"
        message = f"{cause}; {outcome}"
        self.context.event(reason, message, EventType.WARNING)
        # The weight stays as observed until the rollback is read back: a rollback whose write did
        # not land is sent again (see _plan_hold_rolled_back).
        status = self.status(message, reason, phase=Phase.DEGRADED, aborted=True)
        return self.plan(status, action=action, requeue_after=0.0 if action else None)


def _route_to(stable: str, canary: str, percent: float, revision_id: str) -> RouteTraffic:
    if percent >= 100:
        return RouteTraffic(canary, None, 0.0, revision_id)
    if percent <= 0:
        return RouteTraffic(stable, None, 0.0, revision_id)
    return RouteTraffic(stable, canary, float(percent), revision_id)


# ---------------------------------------------------------------------------------------------
# Failures and deletion.


def plan_failure(
    status: RolloutStatus,
    error: LambdaRolloutsError,
    *,
    spec: RolloutSpec | None,
    generation: int | None,
    now: datetime,
    backoff: Backoff,
) -> Plan:
    """The status after a failed reconcile: nothing was written to the alias by the failed step.

    Transient errors keep the phase and say the operator is retrying; errors only a human can fix
    make the rollout Degraded with Stalled=True. Both are retried with a doubling backoff, except
    a spec error, which only a spec change can fix. A transient error while checking a finished
    rollout whose spec has not changed leaves it Healthy: nothing suggests the alias moved.
    """
    attempt = status.retry_count + 1
    delay = None if isinstance(error, SpecError) else backoff.delay(attempt)
    retry_note = f"; retrying in {format_duration(delay)}" if delay is not None else ""
    message = f"{error.message}{retry_note}"
    unchanged = (
        spec is not None
        and spec.version == status.canary_version
        and generation == status.observed_generation
    )
    held = spec is not None and _rolled_back(status, spec.version or "")
    if error.transient and (held or (status.phase == Phase.HEALTHY and unchanged)):
        seen = [
            condition.model_copy(update={"observed_generation": generation})
            for condition in status.conditions
        ]
        kept = status.model_copy(
            update={"retry_count": attempt, "observed_generation": generation, "conditions": seen}
        )
        return Plan(kept, requeue_after=delay)
    if (
        isinstance(error, SpecError)
        and generation == status.observed_generation
        and status.message == message
    ):
        return Plan(status)  # the same refusal of the same spec: nothing new to write
    reason: str = error.reason
    aborted_at = status.aborted_at if held else None
    if error.transient:
        phase = status.phase if status.phase in (Phase.PROGRESSING, Phase.PAUSED) else Phase.PROGRESSING
        stuck = _deadline_passed(status, spec, now)
        if stuck is not None:
            # The next pass sends all traffic back to stable (see _plan_hold_rolled_back).
            phase, reason, aborted_at = Phase.DEGRADED, Reason.PROGRESS_DEADLINE_EXCEEDED, format_time(now)
            message = (
                f"no progress for {format_duration(stuck)} (progressDeadlineSeconds "
                f"{spec.progress_deadline_seconds if spec else ''}): {error.message}; "
                f"rolling back to version {status.stable_version}"
            )
    else:
        phase = Phase.DEGRADED
    # The status keeps describing the attempt it was about: a spec.version that changed in this
    # pass has not started yet, and must start from its first step, not from this one's.
    same_attempt = spec is not None and spec.version == status.canary_version
    step_count = len(spec.steps()) if spec is not None and same_attempt else status.step_count
    new_status = status.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "step_count": step_count,
            "message": message,
            "retry_count": attempt,
            "aborted_at": aborted_at,
            "conditions": build_conditions(
                status.conditions, phase=phase, reason=reason, message=message, generation=generation, now=now
            ),
        }
    )
    same_as_before = status.message is not None and status.message.split("; retrying")[0] == error.message
    if reason == Reason.PROGRESS_DEADLINE_EXCEEDED:
        events: tuple[Event, ...] = (Event(EventType.WARNING, Reason.PROGRESS_DEADLINE_EXCEEDED, message),)
    elif same_as_before:
        events = ()
    else:
        events = (Event(EventType.WARNING, Reason(error.reason), error.message),)
    return Plan(new_status, requeue_after=delay, events=events)


def _deadline_passed(status: RolloutStatus, spec: RolloutSpec | None, now: datetime) -> float | None:
    """Seconds without progress when a rollout in flight has passed its deadline, else None."""
    if spec is None or spec.progress_deadline_seconds is None or status.phase != Phase.PROGRESSING:
        return None
    if status.canary_version != spec.version or spec.paused:
        return None
    steps, index = spec.steps(), status.current_step_index
    if index is not None and index < len(steps) and isinstance(steps[index], Pause):
        return None  # a planned wait
    since = parse_time(status.last_progress_at)
    if since is None:
        return None
    stuck = (now - since).total_seconds()
    return stuck if stuck >= spec.progress_deadline_seconds else None


def plan_deletion(status: RolloutStatus, alias: AliasState | None) -> RouteTraffic | None:
    """The alias write a deletion needs: back to stable when deleted mid-shift, else nothing."""
    if alias is None or not _in_flight(status):
        return None
    stable, canary = status.stable_version, status.canary_version
    if not stable or not canary or stable == canary:
        return None
    served = {alias.function_version, *alias.routing}
    if not served <= {stable, canary} or served == {stable}:
        return None
    return RouteTraffic(stable, None, 0.0, alias.revision_id)
