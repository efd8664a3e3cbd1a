"""Notifications end to end: the real Kopf, the emulator, the strict fake AWS, receivers on
127.0.0.1 in the same fast-forwarded loop.

Time here is loop time: a receiver that takes 250 s to answer takes 250 s of the loop's time, and
the rollout's writes are measured on the same clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lambda_rollouts.model import ACTION_ANNOTATION
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.receivers import Answer, Receiver

from .conftest import Api, OperatorRunner, TimedRouter, eventually, operator_settings, rollout

pytestmark = pytest.mark.looptime

TOKEN = "T0000/B0000/XXXXSECRETTOKENXXXX"


@pytest.fixture
def settings() -> Settings:
    return operator_settings(
        # The receivers are on loopback, next to the operator.
        hook_allowed_networks=["127.0.0.0/8"],
        notifications_max_attempts=20,
        notifications_timeout_seconds=300,
        notifications_deadline_seconds=36000,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as served:
        yield served


async def status_of(api: Api, name: str = "checkout") -> dict[str, Any]:
    body = await api.get(name)
    status: dict[str, Any] = (body or {}).get("status", {})
    return status


def webhook(receiver: Receiver, *events: str) -> list[dict[str, Any]]:
    return [{"events": list(events), "webhook": {"url": receiver.url("/hooks")}}]


async def test_a_slow_receiver_delays_no_step(
    api: Api, operator: OperatorRunner, router: TimedRouter, receiver: Receiver
) -> None:
    receiver.default = Answer(200, delay=250.0)
    await api.create(rollout(notifications=webhook(receiver, "WeightSet", "StepCompleted", "Succeeded")))

    async def healthy() -> bool:
        return (await status_of(api)).get("phase") == "Healthy"

    await eventually(healthy)
    # Exactly the writes and times of the same canary without notifications: five answers of 250 s
    # each (1250 s, more than the whole canary) held up no step.
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]
    start = router.writes[0].at
    assert [round(write.at - start, 1) for write in router.writes] == [0.0, 300.0, 900.0]
    wanted = [
        event
        for event in await api.events()
        if event["reason"] in ("WeightSet", "StepCompleted", "Succeeded")
    ]
    assert len(wanted) == 5

    async def all_delivered() -> bool:
        return len(receiver.delivered) == len(wanted) and "pendingNotifications" not in await status_of(api)

    await eventually(all_delivered)
    sent = [json.loads(received.body) for received in receiver.delivered]
    assert sorted(body["reason"] for body in sent) == sorted(event["reason"] for event in wanted)
    assert len({body["id"] for body in sent}) == len(sent)
    assert sorted(body["message"] for body in sent) == sorted(event["message"] for event in wanted)


async def test_a_rollback_pending_when_the_operator_stops_is_delivered_once_after_the_restart(
    api: Api, operator: OperatorRunner, router: TimedRouter, receiver: Receiver
) -> None:
    receiver.default = Answer(503, text="down for maintenance")
    steps = {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}
    await api.create(rollout(strategy=steps, notifications=webhook(receiver, "RolledBack")))
    await eventually(lambda: len(router.writes) == 1)
    await api.annotate("checkout", ACTION_ANNOTATION, "abort")
    await eventually(lambda: len(receiver.requests) >= 1, step=0.5)
    assert router.shape()[-1] == ("1", {})  # rolled back
    await operator.stop()

    status = await status_of(api)
    [pending] = status["pendingNotifications"]
    assert (pending["reason"], status["phase"]) == ("Aborted", "Degraded")
    failed_attempts = len(receiver.requests)
    receiver.default = Answer(200)

    await operator.start()
    await eventually(lambda: len(receiver.delivered) == 1)
    await asyncio.sleep(1200)  # long past every retry the first operator could have made
    assert len(receiver.delivered) == 1
    assert json.loads(receiver.delivered[0].body)["id"] == pending["id"]
    # The stopped operator made no attempt after it stopped.
    assert len(receiver.requests) == failed_attempts + 1
    assert "pendingNotifications" not in await status_of(api)


async def test_slack_reads_its_url_from_a_secret_and_a_missing_secret_is_a_warning_event(
    api: Api, operator: OperatorRunner, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "chat", "namespace": "default"},
        "data": {"url": base64.b64encode(receiver.url(f"/services/{TOKEN}").encode()).decode()},
    }
    async with api.session.post("/api/v1/namespaces/default/secrets", json=secret) as response:
        assert response.status == 201, await response.text()
    steps = {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}
    notifications = [
        {"events": ["PausedByStep"], "slack": {"webhookSecretRef": {"name": "chat", "key": "url"}}},
        {"events": ["PausedByStep"], "teams": {"webhookSecretRef": {"name": "missing", "key": "url"}}},
    ]
    await api.create(rollout(strategy=steps, notifications=notifications))

    async def failed_event() -> list[dict[str, Any]]:
        return [event for event in await api.events() if event["reason"] == "NotificationFailed"]

    await eventually(lambda: len(receiver.delivered) == 1)
    await eventually(failed_event)
    (event,) = await failed_event()
    assert event["type"] == "Warning"
    assert event["message"].startswith(
        "notification notifications[1] (teams, Secret missing/url) of PausedByStep"
    )
    assert event["message"].endswith("not delivered after 1 attempt(s): Secret default/missing not found")
    (delivered,) = receiver.delivered
    assert delivered.path == f"/services/{TOKEN}"
    assert json.loads(delivered.body)["blocks"][0]["text"]["text"] == "PausedByStep: default/checkout"

    async def cleared() -> bool:
        return "pendingNotifications" not in await status_of(api)

    await eventually(cleared)
    everything = json.dumps([await api.get("checkout"), await api.events()])
    assert "SECRETTOKEN" not in everything
    assert "SECRETTOKEN" not in caplog.text
