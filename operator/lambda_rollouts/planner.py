"""The pure planner: from what is wanted and what is observed, decide what to do next.

Contract:
- ``plan`` is a pure function of (spec, previous status, observed alias, generation, now). It
  never reads a clock, AWS or Kubernetes. It returns a ``Plan``: the whole new status, at most one
  alias write, the Events to post, and when to look again. The status it returns assumes the write
  succeeds; when the write fails the caller plans a failure instead (``plan_failure``).
- Before the first write toward a new canary, the planner asks the caller to verify the two
  versions (``Plan.verify``); the caller runs the pre-flight checks (``check_compatible`` on the
  two ``VersionInfo``) and calls ``plan`` again with ``verified`` set.
- The stable version is the one that serves all traffic when the rollout goes back. It comes from
  the status while the alias agrees with it, and from the alias otherwise (restarts, adoption,
  aliases left split by CodeDeploy or by hand).
- Weights are percents; the conversion to Lambda's fractions lives in the AWS adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from lambda_rollouts.errors import (
    IncompatibleVersionsError,
    LambdaRolloutsError,
    SpecError,
    VersionNotActiveError,
)
from lambda_rollouts.model import (
    Condition,
    ConditionType,
    EventType,
    Pause,
    Phase,
    Reason,
    RolloutSpec,
    RolloutStatus,
    SetWeight,
    Step,
    describe_step,
    expand_strategy,
    format_duration,
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
    stable: str
    canary: str

    @property
    def pair(self) -> str:
        return verified_pair_key(self.stable, self.canary)


@dataclass(frozen=True)
class Plan:
    status: RolloutStatus
    action: Action | None = None
    # Seconds until the rollout must be looked at again; None: nothing is due (drift checks only).
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()
    # When set, nothing else in the plan counts: verify these versions, then plan again.
    verify: VerifyVersions | None = None


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
# Time helpers: timestamps live in status as RFC 3339 UTC strings.


def format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


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
    events: list[Event] = field(default_factory=list)

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


def plan(
    spec: RolloutSpec,
    status: RolloutStatus,
    alias: AliasState | None,
    *,
    generation: int | None,
    now: datetime,
    verified: str | None = None,
) -> Plan:
    """Decide the next move of one rollout. See the module docstring for the contract."""
    steps = expand_strategy(spec.strategy)
    desired = spec.version
    verified = verified or status.verified_pair

    if alias is None:
        return _plan_first_deployment(spec, status, steps, generation=generation, now=now, verified=verified)

    context = _Context(spec, status, alias, generation, now, steps, verified)
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


def _plan_first_deployment(
    spec: RolloutSpec,
    status: RolloutStatus,
    steps: list[Step],
    *,
    generation: int | None,
    now: datetime,
    verified: str | None,
) -> Plan:
    desired = spec.version
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


def _healthy(context: _Context, version: str, reason: Reason, message: str) -> RolloutStatus:
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
        message = (
            f"rolled back to version {stable}: spec.version is the stable version "
            f"(version {previous.canary_version} had no traffic)"
        )
        context.event(Reason.ROLLED_BACK, message)
        return Plan(_healthy(context, stable, Reason.ROLLED_BACK, message), events=tuple(context.events))
    message = f"version {stable} already serves all traffic on alias {context.spec.alias}"
    context.event(Reason.ADOPTED, message)
    return Plan(_healthy(context, stable, Reason.ADOPTED, message), events=tuple(context.events))


def _condition_reason(status: RolloutStatus) -> str | None:
    for condition in status.conditions:
        if condition.type == ConditionType.READY:
            return condition.reason if condition.reason in Reason._value2member_map_ else None
    return None


def _plan_restore_stable(context: _Context, stable: str, canary: str) -> Plan:
    desired = context.spec.version
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
        return Plan(previous, verify=VerifyVersions(stable, canary))

    consistent = (
        previous.canary_version == canary
        and previous.stable_version == stable
        and previous.current_step_index is not None
        and _weights_equal(previous.canary_weight, weight)
        and previous.phase in (Phase.PROGRESSING, Phase.PAUSED)
    )
    if consistent:
        assert previous.current_step_index is not None
        index = min(previous.current_step_index, len(steps))
        started = parse_time(previous.step_started_at) or now
        paused_at = parse_time(previous.paused_at)
    elif previous.canary_version == canary and previous.phase == Phase.DEGRADED and weight == 0:
        # A failed attempt at this same version (e.g. the pre-flight checks) starts over.
        index, started, paused_at = 0, now, None
    else:
        index = resume_index(steps, weight) if weight > 0 else 0
        started, paused_at = now, None
        if weight > 0:
            context.event(
                Reason.PROGRESSING,
                f"found {weight:g}% of traffic on version {canary}; continuing at "
                f"{_step_label(index, steps) if index < len(steps) else 'promotion'}",
            )
        else:
            context.event(Reason.PROGRESSING, f"rolling out version {canary} over version {stable}")

    if context.spec.paused:
        held_since = paused_at or now
        where = _step_label(index, steps) if index < len(steps) else "promotion"
        message = f"paused by spec.paused at {where} with {weight:g}% on version {canary}"
        if paused_at is None:
            context.event(Reason.PAUSED_BY_SPEC, message)
        new_status = _finish(
            previous,
            generation=context.generation,
            now=now,
            phase=Phase.PAUSED,
            reason=Reason.PAUSED_BY_SPEC,
            message=message,
            stable=stable,
            canary=canary,
            weight=weight,
            index=index,
            step_count=len(steps),
            step_started_at=started,
            paused_at=held_since,
            verified_pair=pair,
        )
        return Plan(new_status, events=tuple(context.events))
    if paused_at is not None:
        # The time held by spec.paused does not count toward a timed pause.
        started = started + (now - paused_at)
        context.event(Reason.RESUMED, f"resumed at {_step_label(index, steps)}")

    def progressing(
        message: str, reason: Reason, *, weight_now: float, position: int, phase: Phase = Phase.PROGRESSING
    ) -> RolloutStatus:
        return _finish(
            previous,
            generation=context.generation,
            now=now,
            phase=phase,
            reason=reason,
            message=message,
            stable=stable,
            canary=canary,
            weight=weight_now,
            index=position,
            step_count=len(steps),
            step_started_at=started,
            verified_pair=pair,
        )

    while index < len(steps):
        step = steps[index]
        label = _step_label(index, steps)
        if isinstance(step, SetWeight):
            if _weights_equal(step.weight, weight):
                index, started = index + 1, now
                continue
            message = f"{label}: set weight {step.weight}% on version {canary}"
            context.event(Reason.WEIGHT_SET, message)
            action = _route_to(stable, canary, step.weight, context.alias.revision_id)
            started = now
            new_status = progressing(
                message, Reason.PROGRESSING, weight_now=float(step.weight), position=index + 1
            )
            return Plan(new_status, action=action, requeue_after=0.0, events=tuple(context.events))
        assert isinstance(step, Pause)
        if step.seconds is None:
            message = f"{label}: paused until promoted, {weight:g}% on version {canary}"
            if not (previous.phase == Phase.PAUSED and previous.current_step_index == index):
                context.event(Reason.PAUSED_BY_STEP, message)
            new_status = progressing(
                message, Reason.PAUSED_BY_STEP, weight_now=weight, position=index, phase=Phase.PAUSED
            )
            return Plan(new_status, events=tuple(context.events))
        remaining = step.seconds - (now - started).total_seconds()
        if remaining > 0:
            message = f"{label}: {describe_step(step)} ({format_duration(remaining)} left)"
            new_status = progressing(message, Reason.PROGRESSING, weight_now=weight, position=index)
            return Plan(new_status, requeue_after=remaining, events=tuple(context.events))
        context.event(Reason.STEP_COMPLETED, f"{label}: {describe_step(step)} done")
        # The next step starts now: a pause that ended while the operator was away does not
        # shorten the one after it.
        index, started = index + 1, now

    if context.alias.function_version == canary and not context.alias.routing:
        message = f"version {canary} serves all traffic"
        if previous.phase != Phase.HEALTHY or previous.canary_version != canary:
            context.event(Reason.SUCCEEDED, f"promoted version {canary}: all traffic on it")
        return Plan(
            _healthy(replace(context, verified=pair), canary, Reason.SUCCEEDED, message),
            events=tuple(context.events),
        )
    message = f"promoted version {canary}: all traffic on it (was {weight:g}%)"
    context.event(Reason.SUCCEEDED, message)
    return Plan(
        _healthy(replace(context, verified=pair), canary, Reason.SUCCEEDED, message),
        action=RouteTraffic(canary, None, 0.0, context.alias.revision_id),
        events=tuple(context.events),
    )


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
    if error.transient and status.phase == Phase.HEALTHY and unchanged:
        return Plan(status.model_copy(update={"retry_count": attempt}), requeue_after=delay)
    if error.transient:
        phase = status.phase if status.phase in (Phase.PROGRESSING, Phase.PAUSED) else Phase.PROGRESSING
    else:
        phase = Phase.DEGRADED
    canary = spec.version if spec is not None else status.canary_version
    steps = expand_strategy(spec.strategy) if spec is not None else []
    new_status = RolloutStatus(
        observed_generation=generation,
        phase=phase,
        stable_version=status.stable_version,
        canary_version=canary,
        canary_weight=status.canary_weight,
        current_step_index=status.current_step_index,
        step_count=len(steps) if spec is not None else status.step_count,
        message=message,
        step_started_at=status.step_started_at,
        paused_at=status.paused_at,
        verified_pair=status.verified_pair,
        retry_count=attempt,
        conditions=build_conditions(
            status.conditions,
            phase=phase,
            reason=error.reason,
            message=message,
            generation=generation,
            now=now,
        ),
    )
    same_as_before = status.message is not None and status.message.split("; retrying")[0] == error.message
    events = () if same_as_before else (Event(EventType.WARNING, Reason(error.reason), error.message),)
    return Plan(new_status, requeue_after=delay, events=events)


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
