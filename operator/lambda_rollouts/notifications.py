"""Notifications: telling people and systems what happened to a rollout, beside the rollout loop.

Contract, deciding (pure: no clock, no I/O):
- A subscription (``spec.notifications[]``, or a default from the operator's settings) names the
  Event reasons it wants (``events``) and one channel: a signed JSON ``webhook``, or a ``slack`` or
  ``teams`` incoming webhook whose URL is read from a Secret. ``RolledBack`` also stands for every
  rollback the rollout decides itself (``model.ROLLBACK_REASONS``). ``subscriptions_of`` lists a
  rollout's subscriptions, each under a ``key`` (its channel and a digest of its settings), so that
  a notification kept in status finds its subscription again after a restart or a spec edit.
- ``due(plan, subscriptions, ...)`` turns the Events of one pass into ``PendingNotification``s: one
  per Event that some subscription wants, with the keys of those subscriptions, under an ``id``
  that is the same however often the Event is planned again: a rollback is named by its
  ``status.abortedAt`` (a rollback write sent again after a failure or a restart posts its Event
  again), any other Event by the pass's instant and its message.
- ``carried`` is the status's list after a pass: what was pending, plus what is due, less what
  this operator has delivered or given up on (``Notifier.finished``); None when nothing is left.
  The reconcile service writes it with the pass's one status write (and with the status written
  ahead of a rollback write), so a notification is in the cluster before it is sent: an operator
  killed at any point after that sends it once it is back.
- ``webhook_body``, ``slack_body`` and ``teams_body`` are the payloads; ``signature`` the HMAC.
- ``lambda_rollouts.tenancy.url_refusal`` applies tenancy (``hookUrls`` of the namespace's policy,
  for subscriptions of the spec) and the address rule (always) to a URL, as to hook URLs;
  ``refusal_events`` gives a ``NotificationRefused`` Warning Event for each webhook URL of a spec
  that is refused.

Contract, sending (``Notifier``):
- ``submit`` hands over a rollout's pending notifications after its status write and returns at
  once: each (notification, subscription) is delivered by a task of its own, never more than one
  at a time, and never again once delivered or given up on while the operator runs (``finished``);
  at most ``MAX_CONCURRENT_DELIVERIES`` are in flight, over every rollout. The rollout loop never
  waits for a delivery, so a slow receiver cannot delay a step.
- One delivery makes up to ``max_attempts`` attempts, each bounded by ``timeout_seconds``, all of
  them within ``deadline_seconds`` of the hand-over, ``retry_delay_seconds`` apart and doubling
  (an HTTP 429's ``Retry-After`` when longer). A 2xx answer delivers it. Timeouts, connection
  failures, 5xx, 408, 429 and a Secret that could not be read are tried again; any other 4xx, a
  3xx (never followed), a missing Secret or key, a value that is not an http(s) URL and a refused
  URL are not. A refused URL is never contacted: tenancy and the address rule are checked before
  the request, and ``webhooks.CheckedResolver`` and the socket factory check every address a
  connection goes to, as for URL hooks (no proxy from the environment).
- Once delivered or given up on: the observer is told (channel and result: ``delivered``,
  ``failed``, ``refused``); a failure is logged at WARNING and posted as a ``NotificationFailed``
  Warning Event about the rollout; the rollout's loop is woken (``wake``) so that its next pass
  drops the notification from status.
- Secrets are read through the ``SecretReader`` (``kube.KopfSecretReader``) when a notification is
  sent: from the rollout's namespace for its own subscriptions, from the namespace a default names.
  A Slack or Teams URL is a secret: logs, Events and status name the subscription
  (``notifications[0] (slack, Secret chat/url)``), a webhook by ``redact_url`` (no credentials,
  no query string), never a URL read from a Secret; errors are described by their kind, and an
  error answer is quoted (``hooks.excerpt``) with that URL and every longer part of its path
  taken out, in case the receiver or a proxy echoes the request.
- The webhook body is ``webhook_body``; its headers carry ``X-Lambda-Rollouts-Id`` and, with a
  ``secretRef``, ``X-Lambda-Rollouts-Timestamp`` (Unix seconds, of this attempt) and
  ``X-Lambda-Rollouts-Signature: sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` keyed
  with the Secret's value as stored.
- ``release`` cancels a rollout's deliveries (its loop stopped: another operator takes over from
  status); ``forget`` lets them finish (the rollout is gone); ``close`` cancels every delivery.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Protocol, runtime_checkable

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from lambda_rollouts.errors import KubernetesError
from lambda_rollouts.hooks import REDACTED, excerpt, retry_delay
from lambda_rollouts.kube import EventAbout, SecretReader
from lambda_rollouts.model import (
    ROLLBACK_REASONS,
    EventType,
    Notification,
    NotificationChannel,
    PendingNotification,
    Reason,
    RolloutSpec,
    RolloutStatus,
    SecretKeyRef,
    format_time,
    redact_url,
)
from lambda_rollouts.planner import Event, Plan, RouteTraffic
from lambda_rollouts.settings import DefaultNotification, Settings, TenantPolicy
from lambda_rollouts.tenancy import AddressRule, IPNetwork, url_refusal
from lambda_rollouts.webhooks import GuardedHttp, connection_trouble, refusal_in

logger = logging.getLogger(__name__)

ID_HEADER: Final = "X-Lambda-Rollouts-Id"
TIMESTAMP_HEADER: Final = "X-Lambda-Rollouts-Timestamp"
SIGNATURE_HEADER: Final = "X-Lambda-Rollouts-Signature"
SIGNATURE_PREFIX: Final = "sha256="

# Results a delivery ends with (the metric's ``result`` label).
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
REFUSED: Final = "refused"

# Pending notifications a status keeps at most; the oldest go first (deliveries are bounded, so
# only a storm of Events with every receiver down gets here).
MAX_PENDING: Final = 50
# Deliveries in flight at once, over every rollout.
MAX_CONCURRENT_DELIVERIES: Final = 16
# (notification, subscription) pairs remembered as finished per rollout.
_FINISHED_MEMORY: Final = 256
# Of an error answer, what is read to quote (at most ``hooks.EXCERPT_LIMIT`` characters are).
_ANSWER_EXCERPT_BYTES: Final = 4096
_RETRYABLE_CLIENT_ERRORS: Final = frozenset({408, 429})


# ---------------------------------------------------------------------------------------------
# Subscriptions.


@dataclass(frozen=True)
class Subscription:
    """One subscription of one rollout, resolved: where it sends and which Secret it reads."""

    key: str
    label: str
    channel: NotificationChannel
    events: frozenset[Reason]
    # The webhook's URL (from the spec or the settings); None for Slack and Teams.
    url: str | None
    # (namespace, name, key) of the signing key (webhook) or of the URL (Slack, Teams).
    secret: tuple[str, str, str] | None
    # A default of the operator's settings: tenancy's hookUrls do not apply to it.
    default: bool = False

    def wants(self, reason: Reason) -> bool:
        if reason in self.events:
            return True
        return Reason.ROLLED_BACK in self.events and reason in ROLLBACK_REASONS


def _subscription(notification: Notification, *, label: str, namespace: str, default: bool) -> Subscription:
    settings = notification.model_dump(by_alias=True, mode="json", exclude_none=True)
    digest = hashlib.sha256(
        json.dumps({"default": default, "subscription": settings}, sort_keys=True).encode()
    ).hexdigest()
    channel = notification.channel
    ref: SecretKeyRef | None
    url: str | None = None
    if notification.webhook is not None:
        url, ref = notification.webhook.url, notification.webhook.secret_ref
        shown = f"webhook {redact_url(url)}"
    else:
        chat = notification.slack or notification.teams
        ref = chat.webhook_secret_ref if chat else None
        shown = channel.value
    # A default's Secret lives where the settings say (always set there); the spec's in its rollout's.
    where = getattr(ref, "namespace", None) or namespace
    secret = (where, ref.name, ref.key) if ref is not None else None
    if secret is not None:
        shown += f", Secret {secret[1]}/{secret[2]}" + (f" in {where}" if default else "")
    return Subscription(
        key=f"{channel.value}-{digest[:12]}",
        label=f"{label} ({shown})",
        channel=channel,
        events=frozenset(notification.events),
        url=url,
        secret=secret,
        default=default,
    )


def subscriptions_of(
    spec: RolloutSpec | None, namespace: str, defaults: Sequence[DefaultNotification] = ()
) -> tuple[Subscription, ...]:
    """The rollout's own subscriptions (none when its spec could not be read), then the defaults."""
    own = [
        _subscription(item, label=f"notifications[{index}]", namespace=namespace, default=False)
        for index, item in enumerate(spec.notifications if spec is not None else ())
    ]
    shared = [
        _subscription(item, label=f"default notification {index}", namespace=namespace, default=True)
        for index, item in enumerate(defaults)
    ]
    return (*own, *shared)


# ---------------------------------------------------------------------------------------------
# Deciding what is due.


def notification_id(namespace: str, name: str, uid: str, event: Event, status: RolloutStatus, at: str) -> str:
    """The id a receiver deduplicates on: the same for the same Event planned again (see the contract)."""
    if event.reason in ROLLBACK_REASONS and status.aborted_at:
        moment = status.aborted_at
    else:
        moment = f"{at}|{event.message}"
    text = f"{namespace}/{name}/{uid}|{event.reason.value}|{moment}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def planned_weight(plan: Plan) -> float | None:
    """Percent of traffic on the new version once the pass's alias write (if any) has landed."""
    status, action = plan.status, plan.action
    canary = status.canary_version
    if isinstance(action, RouteTraffic) and canary:
        if action.canary == canary:
            return action.canary_percent
        return 100.0 if action.primary == canary else 0.0
    return status.canary_weight


def due(
    plan: Plan,
    subscriptions: Sequence[Subscription],
    *,
    namespace: str,
    name: str,
    uid: str,
    spec: RolloutSpec | None,
    at: datetime,
) -> list[PendingNotification]:
    """The notifications the Events of ``plan`` call for, in the Events' order."""
    if not subscriptions:
        return []
    stamp = format_time(at)
    status = plan.status
    found: dict[str, PendingNotification] = {}
    for event in plan.events:
        keys = [subscription.key for subscription in subscriptions if subscription.wants(event.reason)]
        if not keys:
            continue
        ident = notification_id(namespace, name, uid, event, status, stamp)
        if ident in found:
            continue
        found[ident] = PendingNotification(
            id=ident,
            reason=event.reason.value,
            type=event.type.value,
            message=event.message,
            at=stamp,
            function_name=spec.function_name if spec is not None else "",
            alias=spec.alias if spec is not None else "",
            phase=status.phase.value if status.phase is not None else None,
            stable_version=status.stable_version,
            canary_version=status.canary_version,
            canary_weight=planned_weight(plan),
            subscriptions=keys,
        )
    return list(found.values())


def carried(
    *lists: Sequence[PendingNotification] | None, finished: Collection[tuple[str, str]] = ()
) -> list[PendingNotification] | None:
    """The union of ``lists`` by id (the first copy of each kept, subscriptions joined), less the
    (id, subscription) pairs in ``finished``; at most ``MAX_PENDING``, the newest; None if empty."""
    merged: dict[str, PendingNotification] = {}
    for pending in lists:
        for item in pending or ():
            kept = merged.get(item.id)
            keys = [*(kept.subscriptions if kept else []), *item.subscriptions]
            merged[item.id] = (kept or item).model_copy(update={"subscriptions": list(dict.fromkeys(keys))})
    left = []
    for item in merged.values():
        keys = [key for key in item.subscriptions if (item.id, key) not in finished]
        if keys:
            left.append(item.model_copy(update={"subscriptions": keys}))
    return left[-MAX_PENDING:] or None


# ---------------------------------------------------------------------------------------------
# Payloads.


def webhook_body(notification: PendingNotification, namespace: str, name: str) -> dict[str, Any]:
    return {
        "id": notification.id,
        "rollout": {"namespace": namespace, "name": name},
        "functionName": notification.function_name,
        "alias": notification.alias,
        "stableVersion": notification.stable_version,
        "canaryVersion": notification.canary_version,
        "canaryWeight": notification.canary_weight,
        "phase": notification.phase,
        "reason": notification.reason,
        "type": notification.type,
        "message": notification.message,
        "time": notification.at,
    }


def _title(notification: PendingNotification, namespace: str, name: str) -> str:
    return f"{notification.reason}: {namespace}/{name}"


def _facts(notification: PendingNotification) -> list[tuple[str, str]]:
    weight = notification.canary_weight
    return [
        ("Function", f"{notification.function_name}:{notification.alias}"),
        ("Versions", f"{notification.stable_version or '-'} → {notification.canary_version or '-'}"),
        ("Weight", f"{weight:g}% on the new version" if weight is not None else "-"),
        ("Phase", notification.phase or "-"),
    ]


def _slack_escape(text: str) -> str:
    """Text as Slack's mrkdwn shows it literally (&, < and > are its control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(notification: PendingNotification, namespace: str, name: str) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` for notifications and old clients, ``blocks`` to read."""
    title = _title(notification, namespace, name)
    icon = ":warning:" if notification.type == EventType.WARNING else ":information_source:"
    return {
        "text": _slack_escape(f"{title}: {notification.message}"),
        "blocks": [
            # A header takes plain text of at most 150 characters.
            {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{icon} {_slack_escape(notification.message)}"},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)}"}
                    for label, value in _facts(notification)
                ],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"lambda-rollouts · {notification.at} · id {notification.id}"}
                ],
            },
        ],
    }


def teams_body(notification: PendingNotification, namespace: str, name: str) -> dict[str, Any]:
    """A message with an Adaptive Card, as Teams incoming webhooks and Workflows take it."""
    warning = notification.type == EventType.WARNING
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": _title(notification, namespace, name),
                "weight": "Bolder",
                "size": "Medium",
                "color": "Attention" if warning else "Default",
                "wrap": True,
            },
            {"type": "TextBlock", "text": notification.message, "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": value} for label, value in _facts(notification)],
            },
            {
                "type": "TextBlock",
                "text": f"lambda-rollouts · {notification.at} · id {notification.id}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


_BODIES: Final[Mapping[NotificationChannel, Callable[[PendingNotification, str, str], dict[str, Any]]]] = {
    NotificationChannel.WEBHOOK: webhook_body,
    NotificationChannel.SLACK: slack_body,
    NotificationChannel.TEAMS: teams_body,
}


def signature(key: bytes, body: bytes, timestamp: int) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``<timestamp>.<body>`` keyed with ``key``."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


# ---------------------------------------------------------------------------------------------
# Tenancy and the address rule.


def refusal_events(
    subscriptions: Iterable[Subscription],
    policies: Mapping[str, TenantPolicy] | None,
    namespace: str,
    rule: AddressRule,
) -> tuple[Event, ...]:
    """A ``NotificationRefused`` Warning Event for each webhook URL written in a subscription that
    tenancy or the address rule refuses (URLs in Secrets are checked when sent)."""
    events = []
    for subscription in subscriptions:
        if subscription.url is None:
            continue
        why = url_refusal(
            policies, namespace, subscription.url, rule, policy_applies=not subscription.default
        )
        if why is not None:
            message = f"notification {subscription.label} is refused and will not be sent: {why}"
            events.append(Event(EventType.WARNING, Reason.NOTIFICATION_REFUSED, message))
    return tuple(events)


# ---------------------------------------------------------------------------------------------
# Sending.


@runtime_checkable
class NotificationObserver(Protocol):
    """Told the result of every delivery (metrics); it must be quick and must not raise."""

    def notified(self, channel: str, result: str) -> None: ...


class EventPoster(Protocol):
    async def post_event(self, about: EventAbout, type: str, reason: str, message: str) -> None: ...


Clock = Callable[[], datetime]


@dataclass(frozen=True)
class _Outcome:
    """How one attempt, or a whole delivery, ended."""

    result: str
    message: str
    # Not worth another attempt: a definite answer, or a refusal.
    final: bool = False
    retry_after: float | None = None
    attempts: int = 1

    @property
    def delivered(self) -> bool:
        return self.result == DELIVERED


@dataclass(frozen=True)
class _Request:
    url: str
    body: bytes
    headers: dict[str, str]
    # The URL, when it was read from a Secret: never to be quoted.
    secret_url: str | None = None


@dataclass(frozen=True)
class _Job:
    about: EventAbout
    notification: PendingNotification
    subscription: Subscription
    # Loop time by which every attempt is over.
    deadline: float

    @property
    def rollout(self) -> tuple[str, str]:
        return (self.about.namespace, self.about.name)

    @property
    def key(self) -> tuple[str, str]:
        return (self.notification.id, self.subscription.key)


class Notifier:
    """Delivers notifications beside the rollout loops; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        secrets: SecretReader,
        events: EventPoster,
        clock: Clock,
        defaults: Sequence[DefaultNotification] = (),
        tenancy: Mapping[str, TenantPolicy] | None = None,
        allowed_networks: Iterable[IPNetwork] = (),
        observer: NotificationObserver | None = None,
        max_attempts: int = 5,
        timeout_seconds: float = 10.0,
        deadline_seconds: float = 300.0,
        retry_delay_seconds: float = 1.0,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._secrets = secrets
        self._events = events
        self._clock = clock
        self._defaults = tuple(defaults)
        self._tenancy = tenancy
        self.rule = AddressRule.allowing(allowed_networks, who="notifications")
        self._observer = observer
        self._max_attempts = max_attempts
        self._timeout = timeout_seconds
        self._deadline = deadline_seconds
        self._retry_delay = retry_delay_seconds
        self._http = GuardedHttp(self.rule, resolver)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)
        self._tasks: dict[tuple[str, str], dict[tuple[str, str], asyncio.Task[None]]] = {}
        self._finished: dict[tuple[str, str], collections.OrderedDict[tuple[str, str], None]] = {}
        self._wakes: dict[tuple[str, str], Callable[[], None]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        secrets: SecretReader,
        events: EventPoster,
        clock: Clock,
        observer: NotificationObserver | None = None,
    ) -> Notifier:
        return cls(
            secrets=secrets,
            events=events,
            clock=clock,
            defaults=settings.notifications,
            tenancy=settings.tenancy,
            allowed_networks=settings.hook_allowed_networks,
            observer=observer,
            max_attempts=settings.notifications_max_attempts,
            timeout_seconds=settings.notifications_timeout_seconds,
            deadline_seconds=settings.notifications_deadline_seconds,
        )

    # -- what the reconcile service asks ---------------------------------------------------------

    def subscriptions(self, namespace: str, spec: RolloutSpec | None) -> tuple[Subscription, ...]:
        return subscriptions_of(spec, namespace, self._defaults)

    def refusals(self, namespace: str, subscriptions: Iterable[Subscription]) -> tuple[Event, ...]:
        return refusal_events(subscriptions, self._tenancy, namespace, self.rule)

    def finished(self, namespace: str, name: str) -> Collection[tuple[str, str]]:
        """The (id, subscription) pairs of this rollout delivered or given up on by this operator."""
        return self._finished.get((namespace, name), {}).keys()

    def submit(
        self,
        about: EventAbout,
        spec: RolloutSpec | None,
        pending: Sequence[PendingNotification],
        wake: Callable[[], None] | None = None,
    ) -> None:
        """Start delivering what is pending and not already under way or finished; never waits."""
        rollout = (about.namespace, about.name)
        if wake is not None:
            self._wakes[rollout] = wake
        if not pending:
            return
        by_key = {
            subscription.key: subscription for subscription in self.subscriptions(about.namespace, spec)
        }
        tasks = self._tasks.setdefault(rollout, {})
        finished = self.finished(*rollout)
        loop = asyncio.get_running_loop()
        for notification in pending:
            for key in notification.subscriptions:
                pair = (notification.id, key)
                if pair in tasks or pair in finished:
                    continue
                subscription = by_key.get(key)
                if subscription is None:
                    self._dropped(about, notification, key)
                    continue
                job = _Job(about, notification, subscription, loop.time() + self._deadline)
                task = loop.create_task(self._deliver(job))
                tasks[pair] = task
                task.add_done_callback(functools.partial(self._discard, job))

    def release(self, namespace: str, name: str) -> None:
        """The rollout's loop stopped: cancel its deliveries (its status still has them)."""
        self._wakes.pop((namespace, name), None)
        for task in self._tasks.pop((namespace, name), {}).values():
            task.cancel()

    def forget(self, namespace: str, name: str) -> None:
        """The rollout is gone: its deliveries under way finish, nothing is remembered of it."""
        self._wakes.pop((namespace, name), None)
        self._finished.pop((namespace, name), None)

    async def close(self) -> None:
        tasks = [task for by_pair in self._tasks.values() for task in by_pair.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.close()

    # -- one delivery ------------------------------------------------------------------------------

    async def _deliver(self, job: _Job) -> None:
        async with self._slots:
            outcome = await self._attempts(job)
        self._report(job, outcome)
        if not outcome.delivered:
            await self._post_failure(job, outcome)
        finished = self._finished.setdefault(job.rollout, collections.OrderedDict())
        finished[job.key] = None
        while len(finished) > _FINISHED_MEMORY:
            finished.popitem(last=False)
        wake = self._wakes.get(job.rollout)
        if wake is not None:
            wake()

    def _discard(self, job: _Job, _: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(job.rollout)
        if tasks is not None:
            tasks.pop(job.key, None)
            if not tasks:
                del self._tasks[job.rollout]

    async def _attempts(self, job: _Job) -> _Outcome:
        loop = asyncio.get_running_loop()
        number = 1
        while True:
            left = job.deadline - loop.time()
            if left <= 0:
                return _Outcome(FAILED, f"no attempt could start within {self._deadline:g}s", attempts=0)
            outcome = replace(await self._attempt(job, min(self._timeout, left)), attempts=number)
            if outcome.delivered or outcome.final or number >= self._max_attempts:
                return outcome
            delay = max(retry_delay(number, self._retry_delay), outcome.retry_after or 0.0)
            if loop.time() + delay >= job.deadline:
                return replace(outcome, message=f"{outcome.message}; no time left to try again")
            await asyncio.sleep(delay)
            number += 1

    async def _attempt(self, job: _Job, seconds: float) -> _Outcome:
        prepared = await self._prepare(job)
        if isinstance(prepared, _Outcome):
            return prepared
        return await self._post(prepared, seconds)

    async def _prepare(self, job: _Job) -> _Request | _Outcome:
        """The request of one attempt (the Secret read afresh), or why there is none."""
        subscription, about = job.subscription, job.about
        secret: bytes | None = None
        if subscription.secret is not None:
            read = await self._read_secret(*subscription.secret)
            if isinstance(read, _Outcome):
                return read
            secret = read
        url = subscription.url
        if url is None:
            url = (secret or b"").decode("utf-8", errors="replace").strip()
            secret = None
            _, name, key = subscription.secret or ("", "", "")
            if not url.lower().startswith(("http://", "https://")):
                return _Outcome(
                    FAILED, f"the value of key {key} in Secret {name} is not an http(s) URL", final=True
                )
        why = url_refusal(
            self._tenancy, about.namespace, url, self.rule, policy_applies=not subscription.default
        )
        if why is not None:
            return _Outcome(REFUSED, f"refused, nothing was sent: {why}", final=True)
        payload = _BODIES[subscription.channel](job.notification, about.namespace, about.name)
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", ID_HEADER: job.notification.id}
        if secret is not None:
            timestamp = int(self._clock().timestamp())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = signature(secret, body, timestamp)
        return _Request(url, body, headers, secret_url=url if subscription.url is None else None)

    async def _read_secret(self, namespace: str, name: str, key: str) -> bytes | _Outcome:
        try:
            data = await self._secrets.read_secret(namespace, name)
        except KubernetesError as exc:
            return _Outcome(FAILED, f"cannot read Secret {namespace}/{name}: {exc.message}")
        if data is None:
            return _Outcome(FAILED, f"Secret {namespace}/{name} not found", final=True)
        if key not in data:
            return _Outcome(FAILED, f"Secret {namespace}/{name} has no key {key}", final=True)
        return data[key]

    async def _post(self, request: _Request, seconds: float) -> _Outcome:
        """One POST; an answer is quoted without anything of a URL read from a Secret."""
        try:
            async with self._http.session().post(
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                status = response.status
                answer = b"" if 200 <= status < 300 else await response.content.read(_ANSWER_EXCERPT_BYTES)
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            return _Outcome(FAILED, f"no answer within {seconds:g}s")
        except aiohttp.ClientError as error:
            refused = refusal_in(error)
            if refused is not None:
                return _Outcome(REFUSED, f"refused, nothing was sent: {refused.reason}", final=True)
            return _Outcome(FAILED, connection_trouble(error))
        if 200 <= status < 300:
            return _Outcome(DELIVERED, f"answered HTTP {status}")
        if 300 <= status < 400:
            return _Outcome(FAILED, f"answered HTTP {status}, a redirect, which is not followed", final=True)
        text = excerpt(_without(answer.decode("utf-8", errors="replace"), request.secret_url))
        message = f"answered HTTP {status}" + (f": {text}" if text else "")
        definite = 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS
        return _Outcome(FAILED, message, final=definite, retry_after=retry_after)

    # -- telling -------------------------------------------------------------------------------------

    def _report(self, job: _Job, outcome: _Outcome) -> None:
        notification, subscription = job.notification, job.subscription
        level = logging.INFO if outcome.delivered else logging.WARNING
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "rollout %s/%s: notification %s of %s (id %s) %s after %d attempt(s): %s",
                job.about.namespace,
                job.about.name,
                subscription.label,
                notification.reason,
                notification.id,
                "delivered" if outcome.delivered else "not delivered",
                outcome.attempts,
                outcome.message,
                extra={"k8s_ref": {"namespace": job.about.namespace, "name": job.about.name}},
            )
        if self._observer is not None:
            try:
                self._observer.notified(subscription.channel.value, outcome.result)
            except Exception:
                logger.exception("the notification observer failed")

    async def _post_failure(self, job: _Job, outcome: _Outcome) -> None:
        message = (
            f"notification {job.subscription.label} of {job.notification.reason} "
            f"(id {job.notification.id}) not delivered after {outcome.attempts} attempt(s): {outcome.message}"
        )
        try:
            await self._events.post_event(
                job.about, EventType.WARNING.value, Reason.NOTIFICATION_FAILED.value, message
            )
        except KubernetesError as exc:
            logger.warning(
                "rollout %s/%s: Event %s not posted: %s",
                job.about.namespace,
                job.about.name,
                Reason.NOTIFICATION_FAILED.value,
                exc.message,
            )

    def _dropped(self, about: EventAbout, notification: PendingNotification, key: str) -> None:
        """A pending notification for a subscription the rollout no longer has: not sent."""
        logger.info(
            "rollout %s/%s: notification %s of %s dropped: no subscription %s any more",
            about.namespace,
            about.name,
            notification.id,
            notification.reason,
            key,
        )
        finished = self._finished.setdefault((about.namespace, about.name), collections.OrderedDict())
        finished[(notification.id, key)] = None
        wake = self._wakes.get((about.namespace, about.name))
        if wake is not None:
            asyncio.get_running_loop().call_soon(wake)


# Parts of a secret URL's path at least this long are taken out of any answer quoted.
_SECRET_PART_MIN: Final = 6


def _without(text: str, secret_url: str | None) -> str:
    """``text`` with the secret URL, and every longer part of its path, replaced by ``[redacted]``:
    a proxy or a server may echo the request line in an error."""
    if not secret_url:
        return text
    parts = [secret_url, *sorted(URL(secret_url).raw_path.split("/"), key=len, reverse=True)]
    for part in parts:
        if len(part) >= _SECRET_PART_MIN:
            text = text.replace(part, REDACTED)
    return text


def _retry_after(value: str | None) -> float | None:
    """An HTTP Retry-After in seconds (its date form is not used by chat services)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
