"""The reconcile service over the strict fake AWS and a recording status writer, with a set clock."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambda_rollouts.errors import AccessDeniedError, ThrottledError
from lambda_rollouts.kube import status_merge_patch
from lambda_rollouts.reconcile import LoopMemory, RolloutRef, RolloutService, Wakeup
from lambda_rollouts.settings import Settings
from lambda_rollouts.telemetry import configure_logging
from lambda_rollouts.testing.fake_cloudwatch import FakeCloudWatch
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.kube import RecordingStatusWriter

from .service_doubles import Events, seed_checkout

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REF = RolloutRef("default", "checkout")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def aws() -> FakeLambda:
    return seed_checkout(FakeLambda())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def writer() -> RecordingStatusWriter:
    return RecordingStatusWriter()


@pytest.fixture
def service(aws: FakeLambda, writer: RecordingStatusWriter, clock: Clock) -> RolloutService:
    settings = Settings(default_region="us-east-1", retry_initial_delay_seconds=5, retry_max_delay_seconds=60)
    return RolloutService(settings=settings, router=aws, writer=writer, clock=clock)


def rollout(version: str = "2", strategy: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "checkout", "namespace": "default", "generation": 1},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": version,
            "strategy": strategy or {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}]}},
            **spec,
        },
    }


def stored(body: dict[str, Any], writer: RecordingStatusWriter) -> Callable[[], dict[str, Any]]:
    """The body as the API server would hand it back after the writes so far."""

    def read() -> dict[str, Any]:
        status = writer.current.get(("default", "checkout"))
        return body | ({"status": status} if status is not None else {})

    return read


async def test_one_canary_step_writes_once_and_writes_status_once(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter
) -> None:
    events = Events()
    plan = await service.reconcile(REF, rollout(), events)
    # The pause after the weight starts in the same pass: one status write says both.
    assert plan.requeue_after == pytest.approx(60.0)
    assert [(w.operation, w.primary, dict(w.routing)) for w in aws.writes] == [
        ("UpdateAlias", "1", {"2": 10.0})
    ]
    assert len(writer.writes) == 1
    status = writer.writes[0][2]
    assert (status["phase"], status["canaryWeight"], status["currentStepIndex"]) == ("Progressing", 10.0, 1)
    assert status["message"] == "step 2/2: pause 1m (1m left)"
    assert events.reasons == ["Progressing", "WeightSet"]
    # Pre-flight read both versions once; the alias was read once, before the write (the write's
    # answer is the alias after it).
    assert aws.calls["GetFunctionConfiguration"] == 2
    assert aws.calls["GetAlias"] == 1


async def test_full_canary_and_a_quiet_look_that_writes_nothing(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter, clock: Clock
) -> None:
    read = stored(rollout(), writer)
    events = Events()
    plan = await service.reconcile(REF, read(), events)  # the weight, and the pause starts
    assert plan.requeue_after == pytest.approx(60.0)
    clock.now += timedelta(seconds=30)
    writes_before = len(writer.writes)
    plan = await service.reconcile(REF, read(), events)
    assert plan.requeue_after == pytest.approx(30.0)
    assert len(writer.writes) == writes_before + 1  # the message's time left changed
    clock.now += timedelta(seconds=30)
    plan = await service.reconcile(REF, read(), events)
    assert [dict(w.routing) for w in aws.writes] == [{"2": 10.0}, {}]
    assert aws.alias_state("checkout-api", "live").function_version == "2"  # type: ignore[union-attr]
    assert read()["status"]["phase"] == "Healthy"
    assert read()["status"]["canaryWeight"] == 100.0
    count = len(writer.writes)
    await service.reconcile(REF, read(), events)
    assert len(writer.writes) == count  # nothing changed, nothing written
    assert events.reasons[-2:] == ["StepCompleted", "Succeeded"]


async def test_incompatible_versions_make_no_alias_write(
    aws: FakeLambda, service: RolloutService, writer: RecordingStatusWriter
) -> None:
    aws.publish_version("checkout-api", role="arn:aws:iam::123456789012:role/other")  # 3
    events = Events()
    plan = await service.reconcile(REF, rollout("3"), events)
    assert aws.writes == []
    status = writer.writes[-1][2]
    assert status["phase"] == "Degraded"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "IncompatibleVersions")
    assert "different execution roles" in status["message"]
    assert plan.requeue_after == 5.0
    assert [(e.type.value, e.reason.value) for e in events.posted] == [("Warning", "IncompatibleVersions")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (rollout("9"), "VersionNotFound"),
        (rollout(functionName="nope"), "FunctionNotFound"),
    ],
)
async def test_missing_things_are_stalled_with_a_specific_reason(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter, body: dict[str, Any], reason: str
) -> None:
    await service.reconcile(REF, body, Events())
    assert aws.writes == []
    status = writer.writes[-1][2]
    assert status["phase"] == "Degraded"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Stalled"] == reason


async def test_invalid_spec_is_degraded_and_not_retried_on_a_timer(
    service: RolloutService, writer: RecordingStatusWriter
) -> None:
    body = rollout()
    body["spec"]["strategy"] = {"preset": "AllAtOnce", "allAtOnce": {}}
    plan = await service.reconcile(REF, body, Events())
    assert plan.requeue_after is None
    status = writer.writes[-1][2]
    assert status["phase"] == "Degraded"
    assert "exactly one of preset, canary, linear, allAtOnce" in status["message"]


@pytest.mark.parametrize(
    ("error", "phase"),
    [(ThrottledError("Rate exceeded"), "Progressing"), (AccessDeniedError("not authorized"), "Degraded")],
)
async def test_aws_errors_become_status_and_backoff(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter, error: Exception, phase: str
) -> None:
    aws.fail_next("GetAlias", error)
    read = stored(rollout(), writer)
    first = await service.reconcile(REF, read(), Events())
    assert aws.writes == []
    assert writer.writes[-1][2]["phase"] == phase
    aws.fail_next("GetAlias", error)
    second = await service.reconcile(REF, read(), Events())
    assert (first.requeue_after, second.requeue_after) == (5.0, 10.0)
    recovered = await service.reconcile(REF, read(), Events())
    assert recovered.status.retry_count == 0
    assert [dict(w.routing) for w in aws.writes] == [{"2": 10.0}]


async def test_an_alias_changed_between_read_and_write_is_a_conflict_not_a_write(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter
) -> None:
    original_get = aws.get_alias

    async def get_then_someone_writes(target: Any) -> Any:
        state = await original_get(target)
        aws.set_alias_externally("checkout-api", "live", "1")  # new RevisionId behind our back
        return state

    aws.get_alias = get_then_someone_writes  # type: ignore[method-assign]
    await service.reconcile(REF, rollout(), Events())
    assert aws.writes == []
    status = writer.writes[-1][2]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Reconciling"] == "AliasConflict"


async def test_finalize_mid_shift_restores_stable_and_leaves_finished_rollouts_alone(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter
) -> None:
    read = stored(rollout(), writer)
    await service.reconcile(REF, read(), Events())
    events = Events()
    await service.finalize(REF, read(), events)
    assert dict(aws.writes[-1].routing) == {}
    assert aws.writes[-1].primary == "1"
    assert events.reasons == ["RolledBack"]

    count = len(aws.writes)
    healthy = rollout("1") | {"status": {"phase": "Healthy", "stableVersion": "1", "canaryVersion": "1"}}
    await service.finalize(REF, healthy, Events())
    assert len(aws.writes) == count


def test_status_merge_patch_removes_keys_the_new_status_lacks() -> None:
    assert status_merge_patch({"phase": "Healthy"}, {"phase": "Paused", "pausedAt": "x"}) == {
        "status": {"pausedAt": None, "phase": "Healthy"}
    }


async def test_a_rollback_whose_write_fails_stays_rolled_back_and_is_sent_again(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter, clock: Clock
) -> None:
    read = stored(rollout(), writer)
    await service.reconcile(REF, read(), Events())
    assert [dict(w.routing) for w in aws.writes] == [{"2": 10.0}]
    body = read()
    body["metadata"] = body["metadata"] | {"annotations": {"lambda.rollouts.dev/action": "abort:a1"}}
    aws.fail_next("UpdateAlias", ThrottledError("Rate exceeded"))
    memory = LoopMemory()
    await service.reconcile(REF, body, Events(), memory)
    status = writer.writes[-1][2]
    # Written ahead of the failed write, and kept: the rollout is rolled back, the alias not yet.
    assert status["phase"] == "Degraded"
    assert status["canaryWeight"] == 10.0
    assert [dict(w.routing) for w in aws.writes] == [{"2": 10.0}]
    clock.now += timedelta(seconds=5)
    await service.reconcile(REF, read(), Events(), memory)
    assert aws.writes[-1].primary == "1"
    assert dict(aws.writes[-1].routing) == {}
    final = writer.writes[-1][2]
    assert final["canaryWeight"] == 0.0
    # Acknowledged once, as applied: the abort is not asked again of the rolled-back rollout.
    assert (final["lastAction"]["id"], final["lastAction"]["result"]) == ("a1", "Applied")


async def test_a_watch_several_writes_behind_is_taken_for_lag(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter
) -> None:
    # Steps with no pause between them: the passes follow each other faster than the watch, which
    # still delivers the body as it was before the first write, then the one after the first.
    strategy = {"canary": {"steps": [{"setWeight": 10}, {"setWeight": 50}]}}
    body = rollout(strategy=strategy)
    memory = LoopMemory()
    first = await service.reconcile(REF, body, Events(), memory)
    after_first = writer.writes[-1][2]
    second = await service.reconcile(REF, body, Events(), memory)
    third = await service.reconcile(REF, body, Events(), memory)
    late = await service.reconcile(REF, body | {"status": after_first}, Events(), memory)
    assert (first.requeue_after, second.requeue_after) == (0.0, 0.0)
    assert [dict(write.routing) for write in aws.writes] == [{"2": 10.0}, {"2": 50.0}, {}]
    assert aws.writes[-1].primary == "2"
    assert (third.status.phase, late.status.phase) == ("Healthy", "Healthy")
    assert [status["phase"] for _, _, status in writer.writes] == ["Progressing", "Progressing", "Healthy"]
    # Once the watch delivers the last write, it is the truth again, and stays so.
    caught_up = await service.reconcile(REF, body | {"status": writer.writes[-1][2]}, Events(), memory)
    assert caught_up.status.phase == "Healthy"
    assert memory.superseded == []
    assert len(aws.writes) == 3


@pytest.mark.looptime
async def test_a_loop_sleeps_until_its_time_until_woken_or_until_stopped() -> None:
    loop = asyncio.get_running_loop()
    wakeup = Wakeup()
    start = loop.time()
    await wakeup.sleep(30)
    assert loop.time() - start == pytest.approx(30)

    later = loop.call_later(5, wakeup.set)
    start = loop.time()
    await wakeup.sleep(30)
    assert loop.time() - start == pytest.approx(5)
    assert wakeup.is_set()
    later.cancel()

    start = loop.time()
    await wakeup.sleep(30)  # still set: no sleep at all
    assert loop.time() == start
    wakeup.clear()
    await wakeup.sleep(1)
    assert loop.time() - start == pytest.approx(1)
    assert not wakeup.is_set()

    # Stopped for good: a sleep under way ends at once, and no later one starts.
    later = loop.call_later(2, wakeup.stop)
    start = loop.time()
    await wakeup.sleep(30)
    assert loop.time() - start == pytest.approx(2)
    assert wakeup.stopped
    assert not wakeup.is_set()
    await wakeup.sleep(30)
    assert loop.time() - start == pytest.approx(2)


# -- logs ------------------------------------------------------------------------------------------


REF_TEXT = "rollout default/checkout:"


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(level, message) of the reconcile service's records at INFO and above, and forget them."""
    records = [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.name == "lambda_rollouts.reconcile" and record.levelno >= logging.INFO
    ]
    caplog.clear()
    return records


async def test_a_canary_logs_each_step_write_and_the_promotion_once(
    service: RolloutService, writer: RecordingStatusWriter, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    read = stored(rollout(), writer)
    await service.reconcile(REF, read(), Events())
    # JSON logs name the rollout in fields of their own, as Kopf's records do.
    assert [getattr(record, "k8s_ref", None) for record in caplog.records] == [
        {"namespace": "default", "name": "checkout"}
    ] * 3
    assert logged(caplog) == [
        ("INFO", f"{REF_TEXT} alias live of checkout-api now serves 90% on version 1, 10% on version 2"),
        ("INFO", "rollout default/checkout: Progressing: rolling out version 2 over version 1"),
        ("INFO", "rollout default/checkout: WeightSet: step 1/2: set weight 10% on version 2"),
    ]
    # A pass that only counts down the pause: its status changes, nothing worth a line happens.
    clock.now += timedelta(seconds=30)
    await service.reconcile(REF, read(), Events())
    assert logged(caplog) == []
    clock.now += timedelta(seconds=30)
    await service.reconcile(REF, read(), Events())
    await service.reconcile(REF, read(), Events())
    assert logged(caplog) == [
        ("INFO", "rollout default/checkout: alias live of checkout-api now serves 100% on version 2"),
        ("INFO", "rollout default/checkout: StepCompleted: step 2/2: pause 1m done"),
        ("INFO", "rollout default/checkout: Succeeded: promoted version 2: all traffic on it (was 10%)"),
    ]


async def test_failures_are_warnings_and_a_retried_one_says_so_once_per_retry(
    service: RolloutService, aws: FakeLambda, writer: RecordingStatusWriter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    read = stored(rollout(), writer)
    aws.fail_next("GetAlias", ThrottledError("Rate exceeded"))
    await service.reconcile(REF, read(), Events())
    aws.fail_next("GetAlias", ThrottledError("Rate exceeded"))
    await service.reconcile(REF, read(), Events())
    assert logged(caplog) == [
        ("WARNING", "rollout default/checkout: Throttled: Rate exceeded"),
        (
            "WARNING",
            "rollout default/checkout: still failing: Rate exceeded (Throttled); trying again in 10s",
        ),
    ]
    # A refusal that retrying cannot change is said once.
    aws.fail_next("GetAlias", AccessDeniedError("not authorized"))
    await service.reconcile(REF, read(), Events())
    aws.fail_next("GetAlias", AccessDeniedError("not authorized"))
    await service.reconcile(REF, read(), Events())
    assert logged(caplog) == [("WARNING", "rollout default/checkout: AccessDenied: not authorized")]


async def test_json_logs_name_the_rollout_in_fields_of_their_own(service: RolloutService) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("json", "INFO", stream)
    try:
        await service.reconcile(REF, rollout(), Events())
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    ours = [record for record in records if record["logger"] == "lambda_rollouts.reconcile"]
    assert [record["message"] for record in ours][-1] == (
        "rollout default/checkout: WeightSet: step 1/2: set weight 10% on version 2"
    )
    assert {(record["namespace"], record["name"]) for record in ours} == {("default", "checkout")}


async def test_every_measurement_logs_its_verdict_once(
    aws: FakeLambda, writer: RecordingStatusWriter, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cloudwatch = FakeCloudWatch()
    cloudwatch.set_alarm("checkout-errors", "OK")
    settings = Settings(default_region="us-east-1")
    service = RolloutService(settings=settings, router=aws, writer=writer, clock=clock, metrics=cloudwatch)
    body = rollout(
        strategy={"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "10m"}}]}},
        analysis={"interval": "1m", "alarms": ["checkout-errors"]},
    )
    read = stored(body, writer)
    caplog.set_level(logging.INFO)
    await service.reconcile(REF, read(), Events())
    logged(caplog)
    # Traffic on the new version, in every minute the measurements look at: the alarm decides.
    dimensions = {"FunctionName": "checkout-api", "Resource": "checkout-api:live", "ExecutedVersion": "2"}
    for second in range(0, 180, 20):
        cloudwatch.put_metric("AWS/Lambda", "Invocations", dimensions, 60.0, T0 + timedelta(seconds=second))
    clock.now += timedelta(seconds=60)
    await service.reconcile(REF, read(), Events())
    # A pass between measurements says nothing.
    clock.now += timedelta(seconds=30)
    await service.reconcile(REF, read(), Events())
    last_message = read()["status"]["analysis"]["lastMessage"]
    assert logged(caplog) == [("INFO", f"{REF_TEXT} analysis measurement 1: Successful: {last_message}")]
    cloudwatch.set_alarm("checkout-errors", "ALARM", "Threshold Crossed")
    clock.now += timedelta(seconds=30)
    await service.reconcile(REF, read(), Events())
    lines = logged(caplog)
    assert lines[0] == ("INFO", f"{REF_TEXT} alias live of checkout-api now serves 100% on version 1")
    assert lines[1][0] == "INFO"
    assert lines[1][1].startswith(f"{REF_TEXT} analysis measurement 2: Failed: ")
    assert lines[2][0] == "WARNING"
    assert lines[2][1].startswith(
        f"{REF_TEXT} AnalysisFailed: analysis failed: alarm checkout-errors is in ALARM"
    )
    assert len(lines) == 3, lines
