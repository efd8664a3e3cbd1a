"""The Notifier against real aiohttp receivers on 127.0.0.1 that count what they receive.

These tests run on the real clock (no looptime), as the webhook tests do: a fast-forwarded loop
would fire the client's timeouts while a real request is still in flight. Retry delays are tiny.
The notifier may reach loopback (the address rule refuses it otherwise), except where the rule is
tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any

import pytest

from lambda_rollouts import __version__
from lambda_rollouts.errors import KubernetesError
from lambda_rollouts.kube import EventAbout
from lambda_rollouts.model import PendingNotification, RolloutSpec
from lambda_rollouts.notifications import (
    DELIVERED,
    FAILED,
    REFUSED,
    Notifier,
    slack_body,
    subscriptions_of,
    teams_body,
    webhook_body,
)
from lambda_rollouts.settings import DefaultNotification, TenantPolicy
from lambda_rollouts.telemetry import Telemetry
from lambda_rollouts.testing.kube import RecordingStatusWriter
from lambda_rollouts.testing.receivers import Answer, Receiver

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ABOUT = EventAbout("default", "checkout", "uid-1")
LOOPBACK = [ip_network("127.0.0.0/8")]
SIGNING_KEY = b"k3y-for-signing"
TOKEN = "T0000/B0000/XXXXSECRETTOKENXXXX"


class Secrets:
    """A ``SecretReader`` over a dict, counting its reads."""

    def __init__(self, data: Mapping[tuple[str, str], Mapping[str, bytes]] | None = None) -> None:
        self.data = dict(data or {})
        self.reads = 0
        self.failures = 0

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise KubernetesError(f"reading Secret {namespace}/{name} failed with HTTP 503: unavailable")
        return self.data.get((namespace, name))


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def notified(self, channel: str, result: str) -> None:
        self.seen.append((channel, result))


class World:
    """A notifier, what it reads and where it reports, and one rollout's subscriptions."""

    def __init__(self, receiver: Receiver, **options: Any) -> None:
        self.receiver = receiver
        self.secrets = Secrets()
        self.writer = RecordingStatusWriter()
        self.observer = Observer()
        self.woken = 0
        options.setdefault("allowed_networks", LOOPBACK)
        options.setdefault("retry_delay_seconds", 0.01)
        options.setdefault("timeout_seconds", 5.0)
        self.notifier = Notifier(
            secrets=self.secrets, events=self.writer, clock=lambda: NOW, observer=self.observer, **options
        )

    def wake(self) -> None:
        self.woken += 1

    def spec(self, *notifications: dict[str, Any]) -> RolloutSpec:
        return RolloutSpec.parse(
            {
                "functionName": "checkout-api",
                "alias": "live",
                "version": "2",
                "strategy": {"allAtOnce": {}},
                "notifications": list(notifications),
            }
        )

    def pending(
        self, spec: RolloutSpec, ident: str = "0123456789abcdef0123456789abcdef"
    ) -> PendingNotification:
        keys = [subscription.key for subscription in subscriptions_of(spec, ABOUT.namespace)]
        return PENDING.model_copy(update={"id": ident, "subscriptions": keys})

    def submit(self, spec: RolloutSpec, *pending: PendingNotification) -> None:
        self.notifier.submit(ABOUT, spec, pending or [self.pending(spec)], self.wake)

    async def settled(self, count: int = 1) -> None:
        """Until ``count`` deliveries have ended (each ends with a report to the observer)."""
        for _ in range(2000):
            if len(self.observer.seen) >= count:
                await asyncio.sleep(0)  # the wake-up follows the report
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{count} deliveries did not end; seen {self.observer.seen}")

    @property
    def events(self) -> list[tuple[str, str, str]]:
        return [(type, reason, message) for _, type, reason, message in self.writer.events]


PENDING = PendingNotification(
    id="0123456789abcdef0123456789abcdef",
    reason="Aborted",
    type="Warning",
    message="aborted by request; rolled back to version 1",
    at="2026-01-01T11:59:00.000000Z",
    function_name="checkout-api",
    alias="live",
    phase="Degraded",
    stable_version="1",
    canary_version="2",
    canary_weight=0.0,
)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as served:
        yield served


@pytest.fixture
async def world(receiver: Receiver) -> AsyncIterator[World]:
    made = World(receiver)
    yield made
    await made.notifier.close()


def webhook(receiver: Receiver, signed: bool = True) -> dict[str, Any]:
    target: dict[str, Any] = {"url": receiver.url("/hooks/lambda?token=q-s3cret")}
    if signed:
        target["secretRef"] = {"name": "signing", "key": "key"}
    return {"events": ["RolledBack"], "webhook": target}


def chat(channel: str) -> dict[str, Any]:
    return {"events": ["RolledBack"], channel: {"webhookSecretRef": {"name": "chat", "key": "url"}}}


# ---------------------------------------------------------------------------------------------
# Delivered.


async def test_a_signed_webhook_is_delivered_once_with_its_id_and_a_signature_that_verifies(
    world: World, receiver: Receiver
) -> None:
    world.secrets.data[("default", "signing")] = {"key": SIGNING_KEY}
    spec = world.spec(webhook(receiver))
    world.submit(spec)
    await world.settled()
    (received,) = receiver.requests
    assert receiver.delivered == [received]
    assert received.path == "/hooks/lambda?token=q-s3cret"
    assert json.loads(received.body) == webhook_body(world.pending(spec), "default", "checkout")
    headers = received.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"lambda-rollouts/{__version__}"
    assert headers["X-Lambda-Rollouts-Id"] == PENDING.id
    timestamp = headers["X-Lambda-Rollouts-Timestamp"]
    assert timestamp == str(int(NOW.timestamp()))
    # What a receiver does: the HMAC of "<timestamp>.<body as received>" with the shared key.
    expected = hmac.new(SIGNING_KEY, f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Lambda-Rollouts-Signature"], f"sha256={expected}")
    assert world.observer.seen == [("webhook", DELIVERED)]
    assert world.events == []
    assert world.woken == 1
    key = subscriptions_of(spec, "default")[0].key
    assert set(world.notifier.finished("default", "checkout")) == {(PENDING.id, key)}


async def test_an_unsigned_webhook_has_no_signature_headers(world: World, receiver: Receiver) -> None:
    world.submit(world.spec(webhook(receiver, signed=False)))
    await world.settled()
    (received,) = receiver.delivered
    assert "X-Lambda-Rollouts-Signature" not in received.headers
    assert "X-Lambda-Rollouts-Timestamp" not in received.headers
    assert world.secrets.reads == 0


@pytest.mark.parametrize(("channel", "body"), [("slack", slack_body), ("teams", teams_body)])
async def test_slack_and_teams_get_their_messages_at_the_url_their_secret_holds(
    world: World, receiver: Receiver, channel: str, body: Callable[..., dict[str, Any]]
) -> None:
    # As a Secret made from a file often holds it: with a newline.
    world.secrets.data[("default", "chat")] = {"url": (receiver.url(f"/services/{TOKEN}") + "\n").encode()}
    spec = world.spec(chat(channel))
    world.submit(spec)
    await world.settled()
    (received,) = receiver.delivered
    assert received.path == f"/services/{TOKEN}"
    assert json.loads(received.body) == body(world.pending(spec), "default", "checkout")
    assert "X-Lambda-Rollouts-Signature" not in received.headers
    assert world.observer.seen == [(channel, DELIVERED)]


async def test_every_subscription_gets_it_once_however_often_it_is_handed_over(
    world: World, receiver: Receiver
) -> None:
    world.secrets.data[("default", "chat")] = {"url": receiver.url("/slack").encode()}
    spec = world.spec(webhook(receiver, signed=False), chat("slack"))
    pending = world.pending(spec)
    world.submit(spec, pending)
    world.submit(spec, pending)  # under way: not again
    await world.settled(2)
    world.submit(spec, pending)  # finished: not again
    await asyncio.sleep(0.05)
    assert sorted(received.path for received in receiver.requests) == [
        "/hooks/lambda?token=q-s3cret",
        "/slack",
    ]
    # Another notification is another delivery.
    world.submit(spec, world.pending(spec, ident="f" * 32))
    await world.settled(4)
    assert len(receiver.requests) == 4


# ---------------------------------------------------------------------------------------------
# Retries and their bounds.


async def test_a_failing_receiver_is_tried_again_until_it_answers(world: World, receiver: Receiver) -> None:
    receiver.answer_next(Answer(503), Answer(500, text="busy"), Answer(429))
    world.submit(world.spec(webhook(receiver, signed=False)))
    await world.settled()
    assert len(receiver.requests) == 4
    assert len(receiver.delivered) == 1
    # Every attempt sends the same notification.
    assert len({received.body for received in receiver.requests}) == 1
    assert world.observer.seen == [("webhook", DELIVERED)]
    assert world.events == []


async def test_attempts_are_bounded_and_giving_up_is_a_warning_event(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(receiver, max_attempts=3)
    receiver.default = Answer(502, text="bad gateway")
    world.submit(world.spec(webhook(receiver, signed=False)))
    await world.settled()
    await world.notifier.close()
    assert len(receiver.requests) == 3
    assert receiver.delivered == []
    assert world.observer.seen == [("webhook", FAILED)]
    (event,) = world.events
    assert event == (
        "Warning",
        "NotificationFailed",
        f"notification notifications[0] (webhook {receiver.url('/hooks/lambda')}) of Aborted "
        f"(id {PENDING.id}) not delivered after 3 attempt(s): answered HTTP 502: bad gateway",
    )
    # Given up on is finished too: the pass drops it from status.
    assert world.woken == 1
    assert len(world.notifier.finished("default", "checkout")) == 1
    assert "not delivered after 3 attempt(s)" in caplog.text


async def test_a_slow_receiver_is_bounded_by_the_timeout_and_the_deadline(receiver: Receiver) -> None:
    world = World(receiver, max_attempts=20, timeout_seconds=0.1, deadline_seconds=0.5)
    receiver.default = Answer(200, delay=30.0)
    world.submit(world.spec(webhook(receiver, signed=False)))
    await world.settled()
    await world.notifier.close()
    # Attempts of 0.1 s, 0.01 s apart and doubling: the deadline ends them long before 20.
    assert 1 < len(receiver.requests) < 10
    assert receiver.delivered == []
    (event,) = world.events
    assert "no answer within 0.1s" in event[2]
    assert world.observer.seen == [("webhook", FAILED)]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (Answer(404, text="no_service"), "answered HTTP 404: no_service"),
        (Answer(403, text="invalid_token"), "answered HTTP 403: invalid_token"),
        (
            Answer(302, headers={"Location": "/elsewhere"}),
            "answered HTTP 302, a redirect, which is not followed",
        ),
    ],
)
async def test_a_definite_answer_is_not_asked_again(
    world: World, receiver: Receiver, answer: Answer, words: str
) -> None:
    receiver.answer_next(answer)
    world.submit(world.spec(webhook(receiver, signed=False)))
    await world.settled()
    assert [received.path for received in receiver.requests] == ["/hooks/lambda?token=q-s3cret"]
    (event,) = world.events
    assert event[2].endswith(f"not delivered after 1 attempt(s): {words}")


async def test_retry_after_is_obeyed_even_past_the_deadline(receiver: Receiver) -> None:
    world = World(receiver, deadline_seconds=5.0)
    receiver.answer_next(Answer(429, headers={"Retry-After": "60"}, text="rate_limited"))
    world.submit(world.spec(webhook(receiver, signed=False)))
    await world.settled()
    await world.notifier.close()
    # Asked to wait a minute, with 5 s left: the delivery gives up rather than come back early.
    assert len(receiver.requests) == 1
    (event,) = world.events
    assert event[2].endswith("answered HTTP 429: rate_limited; no time left to try again")


async def test_a_secret_that_cannot_be_read_yet_is_read_again(world: World, receiver: Receiver) -> None:
    world.secrets.data[("default", "chat")] = {"url": receiver.url("/slack").encode()}
    world.secrets.failures = 2
    world.submit(world.spec(chat("slack")))
    await world.settled()
    assert world.secrets.reads == 3
    assert len(receiver.delivered) == 1


# ---------------------------------------------------------------------------------------------
# Secrets: missing, and never shown.


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({}, "Secret default/chat not found"),
        ({("default", "chat"): {"other": b"x"}}, "Secret default/chat has no key url"),
        (
            {("default", "chat"): {"url": b"hunter2-not-a-url"}},
            "the value of key url in Secret chat is not an http(s) URL",
        ),
    ],
)
async def test_a_missing_secret_or_key_or_a_value_that_is_no_url_fails_at_once_and_says_so(
    world: World, receiver: Receiver, data: dict[tuple[str, str], dict[str, bytes]], words: str
) -> None:
    world.secrets.data.update(data)
    world.submit(world.spec(chat("slack")))
    await world.settled()
    assert receiver.requests == []
    assert world.secrets.reads == 1
    assert world.observer.seen == [("slack", FAILED)]
    (event,) = world.events
    assert event[:2] == ("Warning", "NotificationFailed")
    assert event[2] == (
        f"notification notifications[0] (slack, Secret chat/url) of Aborted (id {PENDING.id}) not delivered "
        f"after 1 attempt(s): {words}"
    )
    assert "hunter2" not in event[2]


async def test_a_url_from_a_secret_is_in_no_log_and_no_event(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.default = Answer(500, text=f"upstream said: POST /services/{TOKEN} failed")
    world = World(receiver, max_attempts=2)
    world.secrets.data[("default", "chat")] = {"url": receiver.url(f"/services/{TOKEN}").encode()}
    world.submit(world.spec(chat("teams")))
    await world.settled()
    await world.notifier.close()
    assert len(receiver.requests) == 2
    (event,) = world.events
    assert event[2].endswith(
        "answered HTTP 500: upstream said: POST /[redacted]/T0000/B0000/[redacted] failed"
    )
    assert "SECRETTOKEN" not in caplog.text
    assert "notifications[0] (teams, Secret chat/url)" in caplog.text


# ---------------------------------------------------------------------------------------------
# Tenancy and the address rule: refused before anything is sent.


async def test_loopback_is_refused_unless_allowed_and_nothing_is_sent(receiver: Receiver) -> None:
    world = World(receiver, allowed_networks=[])
    world.submit(world.spec(webhook(receiver, signed=False)))
    await world.settled()
    await world.notifier.close()
    assert receiver.requests == []
    assert world.observer.seen == [("webhook", REFUSED)]
    (event,) = world.events
    assert "refused, nothing was sent: 127.0.0.1 is loopback (127.0.0.0/8)" in event[2]


async def test_a_name_that_resolves_to_a_refused_address_is_refused_when_connecting(
    receiver: Receiver,
) -> None:
    world = World(receiver, allowed_networks=[])
    url = f"http://localhost:{receiver.port}/hook"
    world.submit(world.spec({"events": ["RolledBack"], "webhook": {"url": url}}))
    await world.settled()
    await world.notifier.close()
    assert receiver.requests == []
    assert world.observer.seen == [("webhook", REFUSED)]
    assert "localhost resolves to" in world.events[0][2]


async def test_a_slack_url_outside_the_namespaces_hook_urls_is_refused_without_being_shown(
    receiver: Receiver,
) -> None:
    policies = {"default": TenantPolicy(functions=["*"], hook_urls=["https://hooks.slack.com/services/*"])}
    world = World(receiver, tenancy=policies)
    world.secrets.data[("default", "chat")] = {"url": receiver.url(f"/services/{TOKEN}").encode()}
    world.submit(world.spec(chat("slack")))
    await world.settled()
    await world.notifier.close()
    assert receiver.requests == []
    assert world.observer.seen == [("slack", REFUSED)]
    (event,) = world.events
    assert event[2].endswith(
        "refused, nothing was sent: namespace default may not call it: allowed hookUrls are "
        "https://hooks.slack.com/services/*"
    )
    assert "SECRETTOKEN" not in event[2]


async def test_a_default_subscription_reads_its_secret_where_the_settings_say(receiver: Receiver) -> None:
    default = DefaultNotification.model_validate(
        {
            "events": ["RolledBack"],
            "slack": {"webhookSecretRef": {"name": "ops", "key": "url", "namespace": "platform"}},
        }
    )
    # The namespace's policy allows no URL at all: a default is the operator's, not the namespace's.
    world = World(receiver, defaults=[default], tenancy={"default": TenantPolicy(functions=["*"])})
    world.secrets.data[("platform", "ops")] = {"url": receiver.url("/ops").encode()}
    spec = world.spec()
    keys = [subscription.key for subscription in world.notifier.subscriptions("default", spec)]
    world.submit(spec, PENDING.model_copy(update={"subscriptions": keys}))
    await world.settled()
    await world.notifier.close()
    assert [received.path for received in receiver.delivered] == ["/ops"]


# ---------------------------------------------------------------------------------------------
# Beside the loop: handing over never waits; stopping cancels, going lets finish.


async def test_handing_over_returns_at_once_and_a_stopped_loop_cancels_its_deliveries(
    world: World, receiver: Receiver
) -> None:
    receiver.default = Answer(200, delay=30.0)
    world.submit(world.spec(webhook(receiver, signed=False)))  # returns without waiting
    for _ in range(400):
        if receiver.requests:
            break
        await asyncio.sleep(0.005)
    assert len(receiver.requests) == 1
    world.notifier.release("default", "checkout")
    await asyncio.sleep(0.05)
    assert world.observer.seen == []
    assert world.events == []
    assert list(world.notifier.finished("default", "checkout")) == []
    assert world.woken == 0


async def test_a_rollout_gone_lets_its_deliveries_finish(world: World, receiver: Receiver) -> None:
    receiver.default = Answer(200, delay=0.1)
    world.submit(world.spec(webhook(receiver, signed=False)))
    world.notifier.forget("default", "checkout")
    await world.settled()
    assert len(receiver.delivered) == 1
    assert world.woken == 0  # nothing left to wake


async def test_a_notification_for_a_subscription_no_longer_there_is_dropped(
    world: World, receiver: Receiver
) -> None:
    spec = world.spec(webhook(receiver, signed=False))
    gone = PENDING.model_copy(update={"subscriptions": ["slack-000000000000"]})
    world.submit(spec, gone)
    await asyncio.sleep(0.01)
    assert receiver.requests == []
    assert set(world.notifier.finished("default", "checkout")) == {(PENDING.id, "slack-000000000000")}
    assert world.woken == 1


# ---------------------------------------------------------------------------------------------
# Metrics.


async def test_telemetry_counts_deliveries_by_channel_and_result_and_the_failures_events(
    receiver: Receiver,
) -> None:
    telemetry = Telemetry()
    world = World(receiver, max_attempts=1)
    world.notifier = Notifier(
        secrets=world.secrets,
        events=world.writer,
        clock=lambda: NOW,
        observer=telemetry,
        allowed_networks=LOOPBACK,
        max_attempts=1,
    )
    receiver.answer_next(Answer(200), Answer(500))
    world.secrets.data[("default", "chat")] = {"url": receiver.url("/slack").encode()}
    spec = world.spec(webhook(receiver, signed=False), chat("slack"))
    world.submit(spec)
    for _ in range(400):
        if len(world.writer.events) + len(receiver.delivered) == 2:
            break
        await asyncio.sleep(0.005)
    await world.notifier.close()
    text = telemetry.exposition()
    results = sorted(
        line
        for line in text.splitlines()
        if line.startswith("lambda_rollouts_notifications_total{") and not line.endswith(" 0.0")
    )
    assert len(results) == 2
    assert {line.rsplit(" ", 1)[1] for line in results} == {"1.0"}
    assert {"delivered", "failed"} == {line.split('result="')[1].split('"')[0] for line in results}
    assert 'lambda_rollouts_events_total{reason="NotificationFailed",type="Warning"} 1.0' in text
