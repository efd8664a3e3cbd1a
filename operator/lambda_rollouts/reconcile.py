"""The reconcile service: observe, plan, act, and write the status once.

Contract:
- ``RolloutService.reconcile`` makes one pass over one rollout: read the alias (unless the loop
  knows it, see ``LoopMemory``), ask the pure planner, answer its questions (pre-flight checks of
  both versions and of the named alarms; one measurement through the ``MetricProvider``; a hook
  through the ``HookInvoker``) and ask again, make at most one alias write (its answer is the
  alias as stored), then write the whole status in one request (only when it changed) and post
  the plan's Events. A write refused because the alias changed since the loop last saw it is
  planned again at once from a fresh read. Every project error becomes a status
  (``plan_failure``); nothing escapes except ``ObjectGoneError`` (the rollout was deleted
  meanwhile) and bugs. A provider failure during a measurement is an answer (an ``Error``
  verdict), never a failed reconcile, so it can never look like a failed version.
- ``RolloutService.run`` is the per-rollout loop: reconcile, then sleep until the plan's next due
  time, the drift-check interval, a wake-up (spec changed) or a stop, whichever comes first.
  Nothing calls AWS while nothing is due except the drift check. The alias is read on the first
  pass, on a wake-up and at every drift check; a pass the plan scheduled (the end of a pause, the
  next measurement) uses the alias as the loop last saw it, so a rollout costs the pre-flight
  reads and one write per weight.
- ``RolloutService.finalize`` makes deletion safe: mid-shift, all traffic goes back to the
  stable version first; a finished rollout leaves the alias alone.
- Time comes from a ``Clock``; ``LoopClock`` follows the event loop, so fast-forwarded loops in
  tests move the operator's clock with them. One pass uses one instant for all its questions.
- Logs: one line per thing that happened to a rollout, never one per pass, each naming the
  rollout (``namespace/name``, also as Kopf's ``k8s_ref`` for JSON logs): every Event of a plan
  (steps, pauses, promotions, rollbacks, drift, failures; a Warning Event at WARNING, the rest at
  INFO), every alias write as stored (INFO), every analysis measurement's verdict (INFO), action
  requests and hook outcomes. A failure seen again (its Event was posted the first time) is logged
  again only when it is retried (WARNING).
- Notifications (``lambda_rollouts.notifications``): a pass adds the notifications its Events call
  for to ``status.pendingNotifications`` and drops those the ``Notifier`` has finished, in the
  status written ahead of a rollback write and in the pass's status write; only once that write
  is done does it hand them to the ``Notifier``, which delivers them beside the loop. A finished
  delivery wakes the loop (``Wakeup.nudge``) for a pass that clears it from status; that pass
  reuses the alias the loop knows (no extra AWS call while it is fresh).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from lambda_rollouts import notifications, planner
from lambda_rollouts.analysis import Readings
from lambda_rollouts.aws.metrics import MetricProvider
from lambda_rollouts.aws.router import AliasRouter
from lambda_rollouts.errors import (
    AlarmNotFoundError,
    AliasConflictError,
    AmbiguousVersionError,
    AwsError,
    FunctionNotFoundError,
    KubernetesError,
    LambdaRolloutsError,
    NoVersionMatchesError,
    ObjectGoneError,
    SpecError,
)
from lambda_rollouts.hooks import HookInvoker, hook_payload
from lambda_rollouts.kube import EventAbout, StatusWriter
from lambda_rollouts.model import (
    ACTION_ANNOTATION,
    AnalysisStatus,
    EventType,
    PendingNotification,
    Reason,
    RolloutSpec,
    RolloutStatus,
    function_region,
    parse_action_request,
)
from lambda_rollouts.notifications import Notifier
from lambda_rollouts.observed import AliasState, Target
from lambda_rollouts.settings import Settings
from lambda_rollouts.tenancy import AddressRule, check_allowed, check_hooks_allowed

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# How soon a manual action that met a transient error is tried again.
_ACTION_RETRY = 5.0

# A pass asks at most: verify, a hook, a measurement, another hook (promotion), then decides.
_MAX_QUESTIONS = 6

# Statuses a loop remembers having replaced (LoopMemory.superseded).
_MAX_SUPERSEDED = 16


class LoopClock:
    """Wall time that advances with the running event loop's clock (fast-forwardable in tests)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wall_anchor = datetime.now(UTC)
        self._loop_anchor = self._loop.time()

    def __call__(self) -> datetime:
        return self._wall_anchor + timedelta(seconds=self._loop.time() - self._loop_anchor)


@dataclass(frozen=True)
class Backends:
    """The external systems a rollout drives and consults."""

    router: AliasRouter
    metrics: MetricProvider | None = None
    hooks: HookInvoker | None = None
    # Run when the operator stops: sessions to close.
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()

    async def close(self) -> None:
        for close in self.closers:
            await close()


class ReconcileObserver(Protocol):
    """Told about every pass, for metrics; it must be quick and must not raise."""

    def reconciled(self, ref: RolloutRef, plan: planner.Plan, seconds: float) -> None: ...

    def forgotten(self, ref: RolloutRef) -> None: ...


class _NoObserver:
    def reconciled(self, ref: RolloutRef, plan: planner.Plan, seconds: float) -> None:
        pass

    def forgotten(self, ref: RolloutRef) -> None:
        pass


class EventSink(Protocol):
    def post(self, event: planner.Event) -> None: ...


class Wakeup:
    """What a rollout's loop sleeps on: ``set`` by a spec change or an action, ``stop`` for good.

    ``sleep(seconds)`` returns after ``seconds``, or as soon as the flag is set or the loop is
    stopped (at once if either is so already), with one future and one timer: a loop sleeps
    between every two passes, and ``asyncio.wait`` over two events made two tasks and more
    callbacks each time. One loop sleeps on it at a time.
    """

    def __init__(self) -> None:
        self._set = False
        self._stopped = False
        self._nudged = False
        self._sleeper: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        _resolve(self._sleeper)

    def nudge(self) -> None:
        """Wake the loop for a pass that changes nothing in AWS (a notification was delivered)."""
        self._nudged = True
        _resolve(self._sleeper)

    def take_nudge(self) -> bool:
        nudged, self._nudged = self._nudged, False
        return nudged

    def stop(self) -> None:
        self._stopped = True
        _resolve(self._sleeper)

    def is_set(self) -> bool:
        return self._set

    @property
    def stopped(self) -> bool:
        return self._stopped

    def clear(self) -> None:
        self._set = False

    async def sleep(self, seconds: float) -> None:
        if self._set or self._stopped or self._nudged:
            return
        loop = asyncio.get_running_loop()
        sleeper = self._sleeper = loop.create_future()
        timer = loop.call_later(seconds, _resolve, sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleeper = None


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


@dataclass
class LoopMemory:
    """What one rollout's loop remembers between passes, to save reads and to ignore stale bodies.

    The body a watch delivers can lag behind our own status writes, by more than one when passes
    follow each other faster than Kopf hands the watch's events over: a pass that promotes right
    after the last step, then runs its hook, writes three statuses in a few milliseconds. A status
    equal to one this loop has since replaced (``superseded``: read before a write, or written
    ahead and written over) is that lag, and the last status we wrote is the truth; once the watch
    delivers that one, the history is dropped. Any other status is news (an older operator's
    write, a restore) and is taken as it is.

    ``known_alias`` is the alias as the last pass read it or left it (a write answers with the alias
    as stored), ``alias_seen_at`` when AWS last said so. ``run`` forgets it before a pass the plan
    did not schedule (a spec change, an action, the drift check); ``take_alias`` gives it to a pass
    only while it is younger than the drift-check interval, however often the plan looks (say every
    minute to measure). Reusing it is safe: every write carries its ``RevisionId``, so a change made
    by someone else meanwhile fails the write (``AliasConflictError``) instead of being
    overwritten, and the alias is read again at once.
    """

    superseded: list[dict[str, Any]] = field(default_factory=list)
    status_written: dict[str, Any] | None = None
    known_alias: AliasState | None = None
    alias_seen_at: datetime | None = None
    # A manual action taken from the annotation whose acknowledgement is not written yet.
    pending_request: planner.ActionRequest | None = None
    # The status as stored during this pass (as read, or as written ahead of a rollback).
    pass_status: dict[str, Any] = field(default_factory=dict)
    # The instant this pass planned at, which names its notifications.
    pass_time: datetime | None = None
    # Wakes the loop once a notification of this rollout was delivered (``Wakeup.nudge``).
    wake: Callable[[], None] | None = None

    def take_alias(self, now: datetime, max_age_seconds: float) -> AliasState | None:
        """The known alias if it is fresh enough for this pass, else None; forgotten either way."""
        alias, self.known_alias = self.known_alias, None
        if alias is None or self.alias_seen_at is None:
            return None
        return alias if (now - self.alias_seen_at).total_seconds() < max_age_seconds else None

    def current_status(self, raw_status: dict[str, Any]) -> dict[str, Any]:
        if self.status_written is None:
            return raw_status
        if raw_status == self.status_written:
            self.superseded.clear()  # the watch has caught up
            return raw_status
        if raw_status in self.superseded:
            return self.status_written
        return raw_status

    def wrote(self, replaced: dict[str, Any], status: dict[str, Any]) -> None:
        """``status`` is stored now, over ``replaced`` (and over what was written before it)."""
        for old in (replaced, self.status_written):
            if old is not None and old != status and old not in self.superseded:
                self.superseded.append(old)
        # Bounded: the watch is never that far behind; the oldest are the least likely to come.
        del self.superseded[:-_MAX_SUPERSEDED]
        self.status_written = status


@dataclass(frozen=True)
class RolloutRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _log(level: int, ref: RolloutRef, message: str, *args: Any) -> None:
    """One log line about a rollout: named in the text, and as Kopf names objects for JSON logs."""
    if logger.isEnabledFor(level):
        extra = {"k8s_ref": {"namespace": ref.namespace, "name": ref.name}}
        logger.log(level, "rollout %s: " + message, ref, *args, extra=extra)


def _log_plan(ref: RolloutRef, before: RolloutStatus, plan: planner.Plan) -> None:
    """The verdicts a pass measured, then its Events, one line each."""
    for which, earlier, run in (
        ("analysis", before.analysis, plan.status.analysis),
        ("analysis step", before.step_analysis, plan.status.step_analysis),
    ):
        if run is not None and run.last_verdict is not None and _measured(earlier, run):
            label = f"{which} {run.step_index + 1}" if run.step_index is not None else which
            _log(
                logging.INFO,
                ref,
                "%s measurement %d: %s: %s",
                label,
                run.measurements,
                run.last_verdict.value,
                run.last_message or "",
            )
    for event in plan.events:
        level = logging.WARNING if event.type == EventType.WARNING else logging.INFO
        _log(level, ref, "%s: %s", event.reason.value, event.message)


def _measured(earlier: AnalysisStatus | None, run: AnalysisStatus) -> bool:
    """Whether ``run`` took a measurement since ``earlier`` (the same run, or one that preceded it)."""
    if earlier is None or (earlier.started_at, earlier.step_index) != (run.started_at, run.step_index):
        return run.measurements > 0
    return run.measurements > earlier.measurements


def _describe_alias(alias: AliasState) -> str:
    shares = [f"{alias.percent_on(alias.function_version):g}% on version {alias.function_version}"]
    shares += [f"{percent:g}% on version {version}" for version, percent in alias.routing.items()]
    return ", ".join(shares)


def _log_alias_written(ref: RolloutRef, target: Target, served: AliasState) -> None:
    _log(
        logging.INFO,
        ref,
        "alias %s of %s now serves %s",
        target.alias,
        target.function_name,
        _describe_alias(served),
    )


class RolloutService:
    def __init__(
        self,
        *,
        settings: Settings,
        router: AliasRouter,
        writer: StatusWriter,
        clock: Clock,
        metrics: MetricProvider | None = None,
        hooks: HookInvoker | None = None,
        observer: ReconcileObserver | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._settings = settings
        self._notifier = notifier
        self._observer: ReconcileObserver = observer or _NoObserver()
        self._router = router
        self._metrics = metrics
        self._hooks = hooks
        self._writer = writer
        self._clock = clock
        self._backoff = planner.Backoff(
            settings.retry_initial_delay_seconds, settings.retry_max_delay_seconds
        )

    def target_of(self, spec: RolloutSpec) -> Target:
        return Target(
            function_name=spec.function_name,
            alias=spec.alias,
            region=spec.region_or(self._settings.default_region),
            role_arn=spec.role_arn,
        )

    async def reconcile(
        self,
        ref: RolloutRef,
        body: Mapping[str, Any],
        events: EventSink,
        memory: LoopMemory | None = None,
    ) -> planner.Plan:
        memory = memory or LoopMemory()
        started = time.monotonic()
        generation = body.get("metadata", {}).get("generation")
        uid = str(body.get("metadata", {}).get("uid") or "")
        raw_status = memory.current_status(dict(body.get("status") or {}))
        memory.pass_status = raw_status
        memory.pass_time = None
        status = RolloutStatus.parse(raw_status)
        known_alias = memory.take_alias(self._clock(), self._settings.drift_check_interval_seconds)
        request = await self._take_request(ref, body, memory)
        spec: RolloutSpec | None = None
        try:
            spec = RolloutSpec.parse(body.get("spec"))
            check_allowed(self._settings.tenancy, ref.namespace, spec, self._settings.default_region)
            check_hooks_allowed(
                self._settings.tenancy,
                ref.namespace,
                spec,
                self._settings.default_region,
                AddressRule.allowing(self._settings.hook_allowed_networks),
            )
            plan = await self._plan_and_act(
                ref, spec, status, generation, known_alias, memory, request, uid=uid
            )
        except ObjectGoneError:
            raise
        except AliasConflictError as exc:
            if known_alias is None or memory.pass_status is not raw_status:
                plan = self._failed(ref, exc, status, raw_status, spec, generation, memory, request)
            else:
                # Changed since this loop last saw it: read it and plan again at once (the request,
                # if any, stays in memory for that pass); the drift rules take it from there.
                _log(
                    logging.INFO,
                    ref,
                    "the alias changed since the last look (%s); reading it again",
                    exc.message,
                )
                plan = planner.Plan(status, requeue_after=0.0)
        except LambdaRolloutsError as exc:
            plan = self._failed(ref, exc, status, raw_status, spec, generation, memory, request)
        else:
            # Applied (or rejected) by this plan: never again, even if the status write fails.
            memory.pending_request = None
        plan = self._notify(
            ref, uid, spec, status, plan, memory, refusals=generation != status.observed_generation
        )
        new_status = plan.status.to_wire()
        if new_status != memory.pass_status:
            await self._writer.write_status(ref.namespace, ref.name, new_status, memory.pass_status)
        if new_status != raw_status:
            memory.wrote(raw_status, new_status)
        _log_plan(ref, status, plan)
        for event in plan.events:
            events.post(event)
        self._hand_over(ref, uid, spec, plan, memory.wake)
        self._observer.reconciled(ref, plan, time.monotonic() - started)
        return plan

    def _hand_over(
        self,
        ref: RolloutRef,
        uid: str,
        spec: RolloutSpec | None,
        plan: planner.Plan,
        wake: Callable[[], None] | None = None,
    ) -> None:
        """The status is written: its pending notifications go to the notifier, which never waits."""
        if self._notifier is not None:
            pending = plan.status.pending_notifications or ()
            self._notifier.submit(EventAbout(ref.namespace, ref.name, uid or None), spec, pending, wake)

    def _notify(
        self,
        ref: RolloutRef,
        uid: str,
        spec: RolloutSpec | None,
        previous: RolloutStatus,
        plan: planner.Plan,
        memory: LoopMemory,
        *,
        refusals: bool = False,
    ) -> planner.Plan:
        """The plan with the notifications still pending and those its Events call for in its status;
        with ``refusals`` (a spec not seen before), also an Event for each refused subscription."""
        if self._notifier is None:
            return plan
        subscriptions = self._notifier.subscriptions(ref.namespace, spec)
        refused = self._notifier.refusals(ref.namespace, subscriptions) if refusals else ()
        if refused:
            plan = replace(plan, events=(*plan.events, *refused))
        if memory.pass_time is None:
            memory.pass_time = self._clock()
        due = notifications.due(
            plan,
            subscriptions,
            namespace=ref.namespace,
            name=ref.name,
            uid=uid,
            spec=spec,
            at=memory.pass_time,
        )
        pending: list[PendingNotification] | None = notifications.carried(
            previous.pending_notifications,
            plan.status.pending_notifications,
            due,
            finished=self._notifier.finished(ref.namespace, ref.name),
        )
        if pending == plan.status.pending_notifications:
            return plan
        return replace(plan, status=plan.status.model_copy(update={"pending_notifications": pending}))

    def _failed(
        self,
        ref: RolloutRef,
        exc: LambdaRolloutsError,
        status: RolloutStatus,
        raw_status: dict[str, Any],
        spec: RolloutSpec | None,
        generation: int | None,
        memory: LoopMemory,
        request: planner.ActionRequest | None,
    ) -> planner.Plan:
        # After a rollback written ahead, the failure is planned from that status: the
        # rollout is rolled back, and the next pass sends the rollback write again.
        before = status if memory.pass_status is raw_status else RolloutStatus.parse(memory.pass_status)
        plan = planner.plan_failure(
            before, exc, spec=spec, generation=generation, now=self._clock(), backoff=self._backoff
        )
        if before is not status:
            memory.pending_request = None  # acknowledged in the status written ahead
        elif request is not None and not exc.transient:
            plan = planner.reject_request(plan, request, exc.message, now=self._clock())
            memory.pending_request = None
        elif request is not None:
            # Not applied: the next pass tries again soon (it stays in memory, never re-read).
            plan = replace(plan, requeue_after=min(plan.requeue_after or _ACTION_RETRY, _ACTION_RETRY))
        if not plan.events and exc.transient:
            # The same trouble again: its Event (and log line) came with the first failure.
            retry = f"; trying again in {plan.requeue_after:g}s" if plan.requeue_after is not None else ""
            _log(logging.WARNING, ref, "still failing: %s (%s)%s", exc.message, exc.reason, retry)
        return plan

    async def _take_request(
        self, ref: RolloutRef, body: Mapping[str, Any], memory: LoopMemory
    ) -> planner.ActionRequest | None:
        """The manual action to apply in this pass: one left over from a failed pass, or one taken
        from the annotation now (removed first, so that it is applied once)."""
        if memory.pending_request is not None:
            return memory.pending_request
        value = (body.get("metadata", {}).get("annotations") or {}).get(ACTION_ANNOTATION)
        if not isinstance(value, str):
            return None
        if not await self._writer.take_annotation(ref.namespace, ref.name, ACTION_ANNOTATION, value):
            return None  # changed or already taken: a later pass reads it again
        action, action_id = parse_action_request(value)
        memory.pending_request = planner.ActionRequest(action=action, id=action_id, value=value.strip())
        _log(logging.INFO, ref, "action %r requested", value)
        return memory.pending_request

    async def _plan_and_act(
        self,
        ref: RolloutRef,
        spec: RolloutSpec,
        status: RolloutStatus,
        generation: int | None,
        known_alias: AliasState | None,
        memory: LoopMemory,
        request: planner.ActionRequest | None = None,
        *,
        uid: str = "",
    ) -> planner.Plan:
        target = self.target_of(spec)
        spec, resolved = await self._resolve_version(target, spec, status)
        alias = known_alias
        if alias is None:
            alias = await self._router.get_alias(target)
            memory.alias_seen_at = self._clock()
        # One instant for the whole pass, so that every question the planner asks is about the
        # same moment as its final answer.
        now = memory.pass_time = self._clock()
        answers = planner.Answers()
        for _ in range(_MAX_QUESTIONS):
            plan = planner.plan(
                spec, status, alias, generation=generation, now=now, answers=answers, request=request
            )
            if plan.verify is not None:
                await self._verify(target, plan.verify)
                answers = replace(answers, verified=plan.verify.pair)
            elif plan.measure is not None:
                answers = replace(answers, readings=await self._measure(target, plan.measure))
            elif plan.run_hook is not None:
                answers = answers.with_hook(await self._run_hook(ref, spec, target, plan.run_hook))
            else:
                break
        else:
            raise AssertionError(f"the planner kept asking questions: {plan}")
        if resolved is not None:
            plan = _with_status(
                plan,
                plan.status.model_copy(
                    update={"resolved_version": resolved[0], "resolved_from": resolved[1]}
                ),
            )
        action = plan.action
        if action is None:
            memory.known_alias = alias
            return plan
        if _is_rollback(plan):
            # Written ahead of the write: should the operator die between the two, the status
            # already says "rolled back" (and which notifications are due) and the next pass sends
            # the rollback again, instead of finding the alias on stable and taking it for someone
            # else's change.
            plan = self._notify(ref, uid, spec, status, plan, memory)
            await self._write_ahead(ref, plan, memory)
        served = await self._act(target, action)
        _log_alias_written(ref, target, served)
        memory.known_alias, memory.alias_seen_at = served, self._clock()
        canary = plan.status.canary_version
        weight = served.percent_on(canary) if canary else None
        return _with_status(plan, plan.status.model_copy(update={"canary_weight": weight}))

    async def _write_ahead(self, ref: RolloutRef, plan: planner.Plan, memory: LoopMemory) -> None:
        ahead = plan.status.to_wire()
        await self._writer.write_status(ref.namespace, ref.name, ahead, memory.pass_status)
        memory.wrote(memory.pass_status, ahead)
        memory.pass_status = ahead

    async def _resolve_version(
        self, target: Target, spec: RolloutSpec, status: RolloutStatus
    ) -> tuple[RolloutSpec, tuple[str, str] | None]:
        """The spec with versionFrom resolved, and (version, what it was resolved from).

        A resolution is kept in status and reused while versionFrom stays the same: Lambda never
        changes a published version's code, so the answer cannot change either.
        """
        wanted = spec.version_from
        if wanted is None:
            return spec, None
        key = wanted.describe()
        if status.resolved_from == key and status.resolved_version:
            return spec.resolved(status.resolved_version), (status.resolved_version, key)
        versions = await self._router.list_versions(target)
        matches = [
            info.version
            for info in versions
            if info.code_sha256 == wanted.code_sha256
            and (wanted.description is None or info.description == wanted.description)
        ]
        if not matches:
            raise NoVersionMatchesError(
                f"no published version of {target.function_name} has {key} ({len(versions)} versions "
                "checked): publish it, or check the hash your build reported"
            )
        if len(matches) > 1:
            raise AmbiguousVersionError(
                f"versions {', '.join(matches)} of {target.function_name} all have {key}: add "
                "versionFrom.description to tell them apart, or set spec.version"
            )
        return spec.resolved(matches[0]), (matches[0], key)

    async def _verify(self, target: Target, versions: planner.VerifyVersions) -> None:
        canary = await self._router.get_version(target, versions.canary)
        if versions.stable == versions.canary:
            stable = canary
        else:
            stable = await self._router.get_version(target, versions.stable)
        planner.check_compatible(stable, canary)
        if versions.alarm_names or versions.alarm_prefixes:
            await self._verify_alarms(target, versions)

    async def _verify_alarms(self, target: Target, versions: planner.VerifyVersions) -> None:
        metrics = self._require_metrics()
        found = (
            {
                alarm.name
                for alarm in await metrics.describe_alarms(target, names=versions.alarm_names, prefix=None)
            }
            if versions.alarm_names
            else set()
        )
        missing = [name for name in versions.alarm_names if name not in found]
        if missing:
            raise AlarmNotFoundError(
                f"CloudWatch alarm{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"not found in {target.region}: an analysis cannot pass on an alarm that does not exist"
            )
        for prefix in versions.alarm_prefixes:
            if not await metrics.describe_alarms(target, names=(), prefix=prefix):
                raise AlarmNotFoundError(f"no CloudWatch alarm name starts with {prefix} in {target.region}")

    async def _measure(self, target: Target, measure: planner.Measure) -> Readings:
        """Read one measurement; a provider failure is an answer (an error), not a failed reconcile."""
        metrics = self._require_metrics()
        request = measure.request
        try:
            values = (
                await metrics.get_metric_data(target, request.queries, request.start, request.end)
                if request.queries
                else {}
            )
            alarms = (
                await metrics.describe_alarms(target, names=request.alarm_names, prefix=request.alarm_prefix)
                if request.alarm_names or request.alarm_prefix
                else ()
            )
        except AwsError as exc:
            # Reported with the rollout's name by the measurement's Error verdict.
            logger.debug("measurement for %s failed: %s", target.function_name, exc.message)
            return Readings(error=exc.message)
        return Readings(values=values, alarms=alarms)

    async def _run_hook(
        self, ref: RolloutRef, spec: RolloutSpec, target: Target, need: planner.RunHook
    ) -> planner.HookAnswer:
        if self._hooks is None:
            raise SpecError("hooks are not available in this operator (no hook invoker configured)")
        version = await self._router.get_version(target, need.canary)
        payload = hook_payload(
            namespace=ref.namespace,
            name=ref.name,
            function_name=spec.function_name,
            alias=spec.alias,
            stable_version=need.stable,
            new_version=need.canary,
            new_version_arn=version.function_arn,
            point=need.point,
        )
        hook_function = need.hook.function_name or ""
        hook_target = Target(
            function_name=hook_function,
            alias="",
            region=function_region(hook_function, target.region),
            role_arn=target.role_arn,
        )
        outcome = await self._hooks.invoke(hook_target, need.hook, payload)
        _log(
            logging.INFO if outcome.succeeded else logging.WARNING,
            ref,
            "%s hook (%s) %s after %d attempt(s)",
            need.point.value,
            need.hook.describe(),
            "succeeded" if outcome.succeeded else "failed",
            outcome.attempts,
        )
        return planner.HookAnswer(need.point, outcome.succeeded, outcome.message, outcome.attempts)

    def _require_metrics(self) -> MetricProvider:
        if self._metrics is None:
            raise SpecError("analysis is not available in this operator (no metric provider configured)")
        return self._metrics

    async def _act(self, target: Target, action: planner.Action) -> AliasState:
        if isinstance(action, planner.CreateAlias):
            return await self._router.create_alias(target, action.version)
        return await self._router.route(
            target,
            primary=action.primary,
            canary=action.canary,
            canary_percent=action.canary_percent,
            revision_id=action.revision_id,
        )

    async def run(
        self,
        ref: RolloutRef,
        read_body: Callable[[], Mapping[str, Any]],
        events: EventSink,
        wakeup: Wakeup,
    ) -> None:
        """Drive one rollout until ``wakeup`` is stopped or the rollout disappears."""
        memory = LoopMemory(wake=wakeup.nudge)
        failures = 0
        drift_interval = self._settings.drift_check_interval_seconds
        planned = gone = False
        try:
            while not wakeup.stopped:
                woken = wakeup.is_set()
                nudged = wakeup.take_nudge()
                wakeup.clear()
                if woken or not (planned or nudged):
                    # A spec change, an action, the first pass or the drift check: read the alias.
                    memory.known_alias = None
                delay = drift_interval
                planned = False
                try:
                    plan = await self.reconcile(ref, read_body(), events, memory)
                except ObjectGoneError:
                    gone = True
                    self._observer.forgotten(ref)
                    return
                except KubernetesError as exc:
                    # The status could not be written; the alias is as the next pass will read it.
                    failures += 1
                    _log(logging.WARNING, ref, "%s", exc.message)
                    delay = self._backoff.delay(failures)
                else:
                    failures = 0
                    if plan.requeue_after is not None and plan.requeue_after < drift_interval:
                        delay, planned = plan.requeue_after, True
                    elif nudged and memory.alias_seen_at is not None:
                        # The drift check stays due when the alias read it reused grows too old.
                        delay = drift_interval - (self._clock() - memory.alias_seen_at).total_seconds()
                if delay > 0:
                    await wakeup.sleep(delay)
        finally:
            if self._notifier is not None:
                # Gone or going: its deliveries finish, since no status will keep them. Stopped:
                # another loop takes them over from status.
                gone = gone or bool(read_body().get("metadata", {}).get("deletionTimestamp"))
                (self._notifier.forget if gone else self._notifier.release)(ref.namespace, ref.name)

    async def finalize(self, ref: RolloutRef, body: Mapping[str, Any], events: EventSink) -> None:
        """Before the rollout goes: send all traffic back to stable if it is deleted mid-shift."""
        self._observer.forgotten(ref)
        status = RolloutStatus.parse(body.get("status"))
        try:
            spec = RolloutSpec.parse(body.get("spec"))
            check_allowed(self._settings.tenancy, ref.namespace, spec, self._settings.default_region)
        except SpecError:
            return  # an invalid or forbidden rollout never wrote to any alias
        target = self.target_of(spec)
        try:
            alias = await self._router.get_alias(target)
        except FunctionNotFoundError:
            return
        action = planner.plan_deletion(status, alias)
        if action is None:
            return
        served = await self._act(target, action)
        event = planner.Event(
            EventType.NORMAL,
            Reason.ROLLED_BACK,
            f"rollout deleted mid-shift: all traffic sent back to version {action.primary}",
        )
        _log_alias_written(ref, target, served)
        _log(logging.INFO, ref, "%s: %s", event.reason.value, event.message)
        events.post(event)
        if self._notifier is not None:
            # The rollout is going: no status keeps this one, it is sent at once (and only once).
            uid = str(body.get("metadata", {}).get("uid") or "")
            plan = self._notify(
                ref, uid, spec, RolloutStatus(), planner.Plan(status, action, events=(event,)), LoopMemory()
            )
            self._hand_over(ref, uid, spec, plan)


def _is_rollback(plan: planner.Plan) -> bool:
    action, status = plan.action, plan.status
    return (
        isinstance(action, planner.RouteTraffic)
        and action.canary is None
        and status.aborted_at is not None
        and action.primary == status.stable_version
    )


def _with_status(plan: planner.Plan, status: RolloutStatus) -> planner.Plan:
    return planner.Plan(
        status=status,
        action=plan.action,
        requeue_after=plan.requeue_after,
        events=plan.events,
        verify=plan.verify,
    )
