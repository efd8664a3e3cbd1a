"""Notifications through the reconcile service: decided by the pass, kept in status with its status
write (and with the status written ahead of a rollback write), sent beside the loop by a real
Notifier to a real receiver on 127.0.0.1, and cleared by the pass after the delivery. The operator
killed between the rollback's status write and its alias write still sends the notification once
it is back. The clock is set; the receivers answer on the real clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any

import pytest

from lambda_rollouts.model import ACTION_ANNOTATION
from lambda_rollouts.notifications import Notifier
from lambda_rollouts.reconcile import LoopMemory, RolloutRef, RolloutService
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.kube import RecordingStatusWriter
from lambda_rollouts.testing.receivers import Answer, Receiver

from .service_doubles import Events, seed_checkout

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REF = RolloutRef("default", "checkout")
LOOPBACK = [ip_network("127.0.0.0/8")]
TOKEN = "T0000/B0000/XXXXSECRETTOKENXXXX"


class Secrets:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Mapping[str, bytes]] = {}

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        return self.data.get((namespace, name))


class Operator:
    """One operator process: a service, its notifier and its loop's memory, over shared AWS and
    Kubernetes (the fake Lambda and the recording writer), which outlive it."""

    def __init__(
        self, aws: FakeLambda, writer: RecordingStatusWriter, secrets: Secrets, **notifier: Any
    ) -> None:
        self.woken = 0
        self.secrets = secrets
        notifier.setdefault("allowed_networks", LOOPBACK)
        self.notifier = Notifier(
            secrets=secrets, events=writer, clock=lambda: T0, retry_delay_seconds=0.01, **notifier
        )
        self.service = RolloutService(
            settings=Settings(default_region="us-east-1"),
            router=aws,
            writer=writer,
            clock=lambda: T0,
            notifier=self.notifier,
        )
        self.memory = LoopMemory(wake=self.wake)
        self.events = Events()

    def wake(self) -> None:
        self.woken += 1

    async def reconcile(self, body: dict[str, Any]) -> Any:
        return await self.service.reconcile(REF, body, self.events, self.memory)


def manifest(receiver: Receiver, events: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "checkout", "namespace": "default", "generation": 1, "uid": "uid-1"},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "2",
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}},
            "notifications": [{"events": events, "webhook": {"url": receiver.url("/hooks")}}],
            **extra,
        },
    }


def stored(body: dict[str, Any], writer: RecordingStatusWriter, **annotations: str) -> dict[str, Any]:
    """The body as the API server hands it back after the writes so far."""
    status = writer.current.get(("default", "checkout"))
    metadata = {**body["metadata"], "annotations": annotations}
    return {**body, "metadata": metadata, **({"status": status} if status is not None else {})}


async def until(check: Any, what: str) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{what}: not within 5s")


@pytest.fixture
def aws() -> FakeLambda:
    return seed_checkout(FakeLambda())


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as served:
        yield served


@pytest.fixture
def writer() -> RecordingStatusWriter:
    return RecordingStatusWriter()


@pytest.fixture
async def operator(aws: FakeLambda, writer: RecordingStatusWriter) -> AsyncIterator[Operator]:
    made = Operator(aws, writer, Secrets())
    yield made
    await made.notifier.close()


def pending_of(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(item["reason"], item["id"]) for item in status.get("pendingNotifications", [])]


async def test_a_notification_is_in_the_status_write_of_its_pass_and_gone_after_its_delivery(
    operator: Operator, aws: FakeLambda, writer: RecordingStatusWriter, receiver: Receiver
) -> None:
    body = manifest(receiver, ["PausedByStep", "RolledBack"])
    await operator.reconcile(body)  # 10%, then the indefinite pause
    assert operator.events.reasons == ["Progressing", "WeightSet", "PausedByStep"]
    (write,) = writer.writes
    [(reason, ident)] = pending_of(write[2])
    assert reason == "PausedByStep"
    # Handed over once written: delivered beside the loop, which is then woken.
    await until(lambda: operator.woken == 1, "the wake-up after the delivery")
    (delivered,) = receiver.delivered
    assert json.loads(delivered.body)["id"] == ident
    assert json.loads(delivered.body)["reason"] == "PausedByStep"
    reads = aws.calls["GetAlias"]
    # The pass the wake-up asks for clears it, with the alias the loop knows: no AWS call.
    await operator.reconcile(stored(body, writer))
    assert "pendingNotifications" not in writer.writes[-1][2]
    assert aws.calls["GetAlias"] == reads
    assert [w.operation for w in aws.writes] == ["UpdateAlias"]


async def test_a_rollback_writes_its_notification_ahead_of_the_alias_write(
    operator: Operator, aws: FakeLambda, writer: RecordingStatusWriter, receiver: Receiver
) -> None:
    body = manifest(receiver, ["RolledBack"])
    await operator.reconcile(body)
    assert "pendingNotifications" not in writer.writes[-1][2]  # nothing wanted yet
    before = len(writer.writes)
    await operator.reconcile(stored(body, writer, **{ACTION_ANNOTATION: "abort"}))
    ahead, final = writer.writes[before][2], writer.writes[-1][2]
    assert len(writer.writes) == before + 2
    assert (ahead["phase"], ahead["canaryWeight"], "abortedAt" in ahead) == ("Degraded", 10.0, True)
    assert pending_of(ahead) == pending_of(final)
    [(reason, ident)] = pending_of(final)
    assert reason == "Aborted"
    assert [(w.primary, dict(w.routing)) for w in aws.writes] == [("1", {"2": 10.0}), ("1", {})]
    await until(lambda: len(receiver.delivered) == 1, "the rollback's delivery")
    sent = json.loads(receiver.delivered[0].body)
    assert (sent["id"], sent["reason"], sent["canaryWeight"], sent["phase"]) == (
        ident,
        "Aborted",
        0.0,
        "Degraded",
    )
    await until(lambda: operator.woken == 1, "the wake-up")
    await operator.reconcile(stored(body, writer))
    assert "pendingNotifications" not in writer.current[("default", "checkout")]


async def test_killed_between_the_rollback_status_and_its_alias_write_the_next_operator_notifies_once(
    aws: FakeLambda, writer: RecordingStatusWriter, receiver: Receiver
) -> None:
    secrets = Secrets()
    first = Operator(aws, writer, secrets)
    body = manifest(receiver, ["RolledBack"])
    await first.reconcile(body)
    aws.fail_next("UpdateAlias", asyncio.CancelledError())  # the operator is killed right there
    with pytest.raises(asyncio.CancelledError):
        await first.reconcile(stored(body, writer, **{ACTION_ANNOTATION: "abort"}))
    await first.notifier.close()
    ahead = writer.current[("default", "checkout")]
    [(reason, ident)] = pending_of(ahead)
    assert (reason, ahead["phase"]) == ("Aborted", "Degraded")
    alias = aws.alias_state("checkout-api", "live")
    assert alias is not None
    assert (alias.function_version, dict(alias.routing)) == ("1", {"2": 10.0})  # still split
    assert receiver.requests == []  # nothing was handed over before the kill

    second = Operator(aws, writer, secrets)  # the restart
    try:
        await second.reconcile(stored(body, writer))
        # The rollback write is sent again, and the rollback's Event with it: the same notification.
        assert [(w.primary, dict(w.routing)) for w in aws.writes][-1] == ("1", {})
        assert pending_of(writer.current[("default", "checkout")]) == [("Aborted", ident)]
        await until(lambda: second.woken == 1, "the delivery")
        await second.reconcile(stored(body, writer))
        await second.reconcile(stored(body, writer))
        await asyncio.sleep(0.05)
    finally:
        await second.notifier.close()
    assert [json.loads(received.body)["id"] for received in receiver.requests] == [ident]
    assert "pendingNotifications" not in writer.current[("default", "checkout")]


async def test_a_receiver_that_never_answers_holds_no_pass_and_gets_the_notification_once(
    operator: Operator, aws: FakeLambda, writer: RecordingStatusWriter, receiver: Receiver
) -> None:
    receiver.default = Answer(200, delay=60.0)
    body = manifest(receiver, ["PausedByStep"])
    await operator.reconcile(body)  # returns while the receiver has not answered
    await until(lambda: len(receiver.requests) == 1, "the request")
    assert receiver.delivered == []
    # Passes go on meanwhile; the delivery under way is not started again.
    await operator.reconcile(stored(body, writer))
    await operator.reconcile(stored(body, writer))
    await asyncio.sleep(0.05)
    assert len(receiver.requests) == 1
    assert pending_of(writer.current[("default", "checkout")])[0][0] == "PausedByStep"


async def test_a_refused_webhook_is_a_warning_event_for_the_new_spec_and_is_never_contacted(
    aws: FakeLambda, writer: RecordingStatusWriter, receiver: Receiver
) -> None:
    operator = Operator(aws, writer, Secrets(), allowed_networks=[])
    try:
        body = manifest(receiver, ["PausedByStep"])
        await operator.reconcile(body)
        refused = [event for event in operator.events.posted if event.reason.value == "NotificationRefused"]
        assert [event.message for event in refused] == [
            f"notification notifications[0] (webhook {receiver.url('/hooks')}) is refused and will not be "
            "sent: 127.0.0.1 is loopback (127.0.0.0/8); notifications may not reach it unless the "
            "operator's LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS allows it"
        ]
        await until(lambda: operator.woken == 1, "the refused delivery")
        await operator.reconcile(stored(body, writer))  # the same spec: said once
        assert operator.events.reasons.count("NotificationRefused") == 1
        ((_, _, reason, message),) = writer.events
        assert reason == "NotificationFailed"
        assert message.endswith(
            "not delivered after 1 attempt(s): refused, nothing was sent: 127.0.0.1 is loopback "
            "(127.0.0.0/8); notifications may not reach it unless the operator's "
            "LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS allows it"
        )
    finally:
        await operator.notifier.close()
    assert receiver.requests == []


async def test_a_slack_url_from_a_secret_never_reaches_the_status(
    operator: Operator, writer: RecordingStatusWriter, receiver: Receiver
) -> None:
    operator.secrets.data[("default", "chat")] = {"url": receiver.url(f"/services/{TOKEN}").encode()}
    body = manifest(receiver, ["PausedByStep"])
    body["spec"]["notifications"] = [
        {"events": ["PausedByStep"], "slack": {"webhookSecretRef": {"name": "chat", "key": "url"}}}
    ]
    await operator.reconcile(body)
    await until(lambda: len(receiver.delivered) == 1, "the Slack message")
    assert receiver.delivered[0].path == f"/services/{TOKEN}"
    (write,) = writer.writes
    subscription = write[2]["pendingNotifications"][0]["subscriptions"][0]
    assert subscription.startswith("slack-")
    assert "SECRETTOKEN" not in json.dumps(writer.writes)
    assert "SECRETTOKEN" not in json.dumps([event.message for event in operator.events.posted])


async def test_a_rollout_deleted_mid_shift_notifies_its_rollback_at_once(
    operator: Operator, aws: FakeLambda, writer: RecordingStatusWriter, receiver: Receiver
) -> None:
    body = manifest(receiver, ["RolledBack"])
    await operator.reconcile(body)
    await operator.service.finalize(REF, stored(body, writer), operator.events)
    alias = aws.alias_state("checkout-api", "live")
    assert alias is not None
    assert (alias.function_version, dict(alias.routing)) == ("1", {})
    assert operator.events.reasons[-1] == "RolledBack"
    await until(lambda: len(receiver.delivered) == 1, "the deletion's rollback")
    sent = json.loads(receiver.delivered[0].body)
    assert (sent["reason"], sent["canaryWeight"]) == ("RolledBack", 0.0)
    assert sent["message"] == "rollout deleted mid-shift: all traffic sent back to version 1"
