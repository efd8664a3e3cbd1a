"""Kopf glue details: the wake-up handler's log line, the worker threads of AWS calls, Events."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from lambda_rollouts.errors import KubernetesError
from lambda_rollouts.handlers import (
    KubeEventSink,
    build_registry,
    news_for_the_loop,
    quiet_wake_handler_logs,
)
from lambda_rollouts.kube import EventAbout, event_body
from lambda_rollouts.model import EventType, Reason
from lambda_rollouts.planner import Event
from lambda_rollouts.testing.kube import RecordingStatusWriter


def test_the_wake_handler_success_line_is_dropped_and_everything_else_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_wake_handler_logs()
    quiet_wake_handler_logs()  # once per process, however often the operator starts
    objects = logging.getLogger("kopf.objects")
    assert len(objects.filters) == 1
    # Kopf logs "<handler> succeeded." for every handler run; this is how it names ours.
    [wake] = build_registry()._watching.get_all_handlers()
    with caplog.at_level(logging.INFO, logger="kopf.objects"):
        objects.info(f"{wake} succeeded.")
        objects.info("Handler 'finalize' succeeded.")
        objects.error(f"{wake} failed with an exception and will try again in 60 seconds: boom")
    assert [record.getMessage() for record in caplog.records] == [
        "Handler 'finalize' succeeded.",
        "Handler 'wake-on-change' failed with an exception and will try again in 60 seconds: boom",
    ]


async def test_aws_calls_get_as_many_worker_threads_as_the_settings_say() -> None:
    import asyncio
    import threading

    from lambda_rollouts.handlers import size_worker_threads
    from lambda_rollouts.settings import Settings

    size_worker_threads(Settings(aws_max_concurrent_calls=12))
    # Twelve blocking calls that each wait for all the others: they finish only if all twelve run
    # at once (asyncio's own default on two CPUs runs six).
    barrier = threading.Barrier(12, timeout=10)
    await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(12)))


class FlakyWriter(RecordingStatusWriter):
    """Takes Events except those whose reason is in ``refused``."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    async def post_event(self, about: EventAbout, type: str, reason: str, message: str) -> None:
        if reason in self.refused:
            raise KubernetesError("posting an Event failed with HTTP 500: etcd is sad")
        await super().post_event(about, type, reason, message)


async def test_events_are_posted_in_the_background_and_a_failed_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = FlakyWriter(refused={Reason.WEIGHT_SET.value})
    pending: set[asyncio.Task[None]] = set()
    about = EventAbout("team-a", "checkout", "uid-1")
    sink = KubeEventSink(writer, about, pending)
    with caplog.at_level(logging.WARNING, logger="lambda_rollouts.handlers"):
        sink.post(Event(EventType.NORMAL, Reason.PROGRESSING, "rolling out version 2 over version 1"))
        sink.post(Event(EventType.NORMAL, Reason.WEIGHT_SET, "step 1/2: set weight 10% on version 2"))
        sink.post(Event(EventType.WARNING, Reason.DRIFTED, "alias live was changed"))
        # Nothing is sent until the caller gives the loop a turn: a pass never waits for Events.
        assert writer.events == []
        assert len(pending) == 3
        await asyncio.gather(*pending)
    assert [(event[0], event[1], event[2]) for event in writer.events] == [
        (about, "Normal", "Progressing"),
        (about, "Warning", "Drifted"),
    ]
    assert pending == set()
    assert [record.getMessage() for record in caplog.records] == [
        "rollout team-a/checkout: Event WeightSet not posted: "
        "posting an Event failed with HTTP 500: etcd is sad"
    ]


def test_an_event_is_what_kubectl_shows_and_its_message_is_cut_to_what_the_api_takes() -> None:
    now = datetime(2026, 11, 26, 20, 15, 7, 123456, tzinfo=UTC)
    body = event_body(EventAbout("team-a", "checkout", "uid-1"), "Warning", "Drifted", "x" * 2000, now)
    # client-go's names: the object's, then the time in hexadecimal nanoseconds.
    assert body["metadata"] == {"namespace": "team-a", "name": f"checkout.{1795724107123456000:x}"}
    later = event_body(EventAbout("team-a", "checkout"), "Normal", "Succeeded", "ok", now, serial=1)
    assert later["metadata"]["name"] == f"checkout.{1795724107123456001:x}"
    assert body["involvedObject"] == {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "name": "checkout",
        "namespace": "team-a",
        "uid": "uid-1",
    }
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "Drifted", 1)
    assert body["source"] == {"component": "lambda-rollouts"}
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-11-26T20:15:07Z"
    assert len(body["message"]) == 1024
    assert body["message"].endswith("x...")
    assert (
        "uid"
        not in event_body(EventAbout("team-a", "checkout"), "Normal", "Succeeded", "ok", now)[
            "involvedObject"
        ]
    )


@pytest.mark.parametrize(
    ("memo", "generation", "action", "news"),
    [
        ({}, 1, None, True),  # the first event of a rollout
        ({"seen_generation": 1, "seen_action": None}, 1, None, False),  # a status write
        ({"seen_generation": 1, "seen_action": None}, 2, None, True),  # a spec change
        ({"seen_generation": 1, "seen_action": None}, 1, "abort", True),  # an action
        ({"seen_generation": 1, "seen_action": "abort"}, 1, "abort", False),  # the same, seen
        ({"seen_generation": 1, "seen_action": "abort"}, 1, None, True),  # taken: forget it
    ],
)
def test_only_spec_changes_and_actions_reach_the_wake_handler(
    memo: dict[str, Any], generation: int, action: str | None, news: bool
) -> None:
    annotations = {"lambda.rollouts.dev/action": action} if action else {}
    body = kopf.Body({"metadata": {"name": "checkout", "generation": generation, "annotations": annotations}})
    assert news_for_the_loop(body=body, memo=memo) is news
