"""End-to-end health analysis, hooks and automatic rollback: the real Kopf and emulator, the
strict fakes of Lambda, CloudWatch and the hook invokers, fast-forwarded time.

A traffic generator plays the clients of the alias: every 20 s (loop time) it reads the alias's
weights and publishes each version's share of the invocations (and its errors) to the fake
CloudWatch, with Lambda's per-version dimensions and the operator's clock as timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lambda_rollouts.errors import ThrottledError
from lambda_rollouts.hooks import HookOutcome
from lambda_rollouts.testing.fake_cloudwatch import FakeCloudWatch
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.hooks import FakeHookInvoker

from .conftest import Api, OperatorRunner, TimedRouter, eventually, rollout

pytestmark = pytest.mark.looptime

ANALYSIS = {"interval": "1m", "metrics": [{"name": "error-rate", "max": 1}], "minInvocations": 50}
CANARY = {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}]}}


class Traffic:
    """Invocations of the alias, split by its weights, published as Lambda's per-version metrics."""

    def __init__(self, aws: FakeLambda, cloudwatch: FakeCloudWatch, operator: OperatorRunner) -> None:
        self.aws = aws
        self.cloudwatch = cloudwatch
        self.clock = operator.clock
        # Invocations per tick through the alias, and the share of them that fail, per version.
        self.per_tick = 600.0
        self.error_ratio: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    def publish(self) -> None:
        state = self.aws.alias_state("checkout-api", "live")
        assert state is not None
        now = self.clock()
        for version in {state.function_version, *state.routing}:
            share = self.per_tick * state.percent_on(version) / 100
            dimensions = {
                "FunctionName": "checkout-api",
                "Resource": "checkout-api:live",
                "ExecutedVersion": version,
            }
            self.cloudwatch.put_metric("AWS/Lambda", "Invocations", dimensions, share, now)
            errors = share * self.error_ratio.get(version, 0.0)
            self.cloudwatch.put_metric("AWS/Lambda", "Errors", dimensions, errors, now)

    def start(self) -> None:
        """Start publishing; call it from the test body, where the loop's time is fast-forwarded
        (a timer set up by a fixture would be on the real clock)."""
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(20)


@pytest.fixture
async def traffic(
    fake_aws: FakeLambda, cloudwatch: FakeCloudWatch, operator: OperatorRunner
) -> AsyncIterator[Traffic]:
    generator = Traffic(fake_aws, cloudwatch, operator)
    try:
        yield generator
    finally:
        if generator.task is not None:
            generator.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generator.task


async def status_of(api: Api, name: str = "checkout") -> dict[str, Any]:
    body = await api.get(name)
    status: dict[str, Any] = (body or {}).get("status", {})
    return status


def has_phase(api: Api, phase: str, reason: str | None = None) -> Callable[[], Any]:
    async def check() -> bool:
        status = await status_of(api)
        if status.get("phase") != phase:
            return False
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return reason is None or ready.get("reason") == reason

    return check


def stalled_reason(status: dict[str, Any]) -> tuple[str, str]:
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    return stalled["status"], stalled["reason"]


async def test_error_rate_over_the_threshold_rolls_back_within_one_reconcile(
    api: Api, router: TimedRouter, cloudwatch: FakeCloudWatch, traffic: Traffic
) -> None:
    traffic.start()
    traffic.error_ratio = {"2": 0.2}
    await api.create(rollout(strategy=CANARY, analysis=ANALYSIS))
    await eventually(has_phase(api, "Degraded"))
    assert router.shape() == [("1", {"2": 10.0}), ("1", {})]
    # The first measurement is due one interval after the weight was set, and the rollback is the
    # write of that same pass.
    assert round(router.writes[1].at - router.writes[0].at, 1) == 60.0
    status = await status_of(api)
    assert stalled_reason(status) == ("True", "AnalysisFailed")
    assert status["message"] == (
        "analysis failed: error-rate of version 2 was 20%, above max 1%; rolled back to version 1"
    )
    assert status["canaryWeight"] == 0.0
    assert status["analysis"]["failures"] == 1
    warnings = [e for e in await api.events() if e["reason"] == "AnalysisFailed"]
    assert [e["message"] for e in warnings] == [status["message"]]
    # One GetMetricData per interval: exactly one measurement was made.
    assert cloudwatch.calls["GetMetricData"] == 1
    # It stays rolled back: no further write, however long we wait.
    await asyncio.sleep(3600)
    assert len(router.writes) == 2


async def test_alarm_at_ten_percent_rolls_back(
    api: Api, router: TimedRouter, cloudwatch: FakeCloudWatch, traffic: Traffic
) -> None:
    traffic.start()
    cloudwatch.set_alarm("checkout-errors", "OK")
    analysis = {"interval": "1m", "alarms": ["checkout-errors"], "minInvocations": 10}
    await api.create(rollout(strategy=CANARY, analysis=analysis))
    await eventually(lambda: len(router.writes) >= 1)
    await asyncio.sleep(150)  # two good measurements at 10%
    assert len(router.writes) == 1
    cloudwatch.set_alarm("checkout-errors", "ALARM", "Threshold Crossed: 3 datapoints > 5")
    await eventually(has_phase(api, "Degraded", "AnalysisFailed"))
    assert router.shape() == [("1", {"2": 10.0}), ("1", {})]
    status = await status_of(api)
    assert status["message"] == (
        "analysis failed: alarm checkout-errors is in ALARM: Threshold Crossed: 3 datapoints > 5; "
        "rolled back to version 1"
    )


async def test_a_missing_alarm_stops_the_rollout_before_any_traffic_moves(
    api: Api, operator: OperatorRunner, router: TimedRouter, cloudwatch: FakeCloudWatch
) -> None:
    analysis = {"alarms": ["checkout-errors", "no-such-alarm"]}
    cloudwatch.set_alarm("checkout-errors", "OK")
    await api.create(rollout(strategy=CANARY, analysis=analysis))
    await eventually(has_phase(api, "Degraded", "AlarmNotFound"))
    status = await status_of(api)
    assert status["message"].startswith(
        "CloudWatch alarm no-such-alarm not found in us-east-1: an analysis cannot pass on an alarm "
        "that does not exist"
    )
    assert router.writes == []


async def test_low_traffic_pauses_as_inconclusive_then_resumes_when_data_arrives(
    api: Api, router: TimedRouter, traffic: Traffic
) -> None:
    traffic.start()
    traffic.per_tick = 10  # 1 invocation of the canary per tick at 10%: far below minInvocations
    await api.create(rollout(strategy=CANARY, analysis=ANALYSIS))
    await eventually(has_phase(api, "Paused", "AnalysisInconclusive"))
    status = await status_of(api)
    assert "fewer than minInvocations 50" in status["message"]
    await asyncio.sleep(900)  # well past the 5-minute pause: still held at 10%
    assert router.shape() == [("1", {"2": 10.0})]
    traffic.per_tick = 2000
    await eventually(has_phase(api, "Healthy"))
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]
    reasons = [e["reason"] for e in await api.events()]
    assert reasons.count("AnalysisInconclusive") == 1


async def test_failed_before_hook_moves_no_traffic(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda, hooks: FakeHookInvoker
) -> None:
    hooks.answer("checkout-smoke", HookOutcome(False, "smoke test 3 failed: 502 from /cart", 3))
    spec_hooks = {"beforeAllowTraffic": {"functionName": "checkout-smoke", "retries": 2}}
    await api.create(rollout(strategy=CANARY, hooks=spec_hooks))
    await eventually(has_phase(api, "Degraded", "HookFailed"))
    assert router.writes == []
    assert fake_aws.writes == []
    status = await status_of(api)
    assert status["message"] == (
        "beforeAllowTraffic hook (function checkout-smoke) failed: smoke test 3 failed: 502 from /cart; "
        "no traffic was moved"
    )
    [(_, hook, payload)] = hooks.calls
    assert hook.function_name == "checkout-smoke"
    assert payload == {
        "rollout": {"namespace": "default", "name": "checkout"},
        "functionName": "checkout-api",
        "alias": "live",
        "stableVersion": "1",
        "newVersion": "2",
        "newVersionArn": "arn:aws:lambda:us-east-1:123456789012:function:checkout-api:2",
        "phase": "beforeAllowTraffic",
    }


async def test_a_hook_function_given_by_full_arn_is_called_in_its_own_region(
    api: Api, operator: OperatorRunner, router: TimedRouter, hooks: FakeHookInvoker
) -> None:
    # Lambda answers a call for a function of another region with "Functions from 'eu-west-1' are
    # not reachable in this region ('us-east-1')": the ARN's region is the one to call.
    smoke = "arn:aws:lambda:eu-west-1:123456789012:function:checkout-smoke"
    spec_hooks = {
        "beforeAllowTraffic": {"functionName": smoke},
        "afterAllowTraffic": {"functionName": "checkout-verify"},
    }
    await api.create(rollout(strategy=CANARY, hooks=spec_hooks))
    await eventually(has_phase(api, "Healthy"))
    called = [(target.function_name, target.region, hook.function_name) for target, hook, _ in hooks.calls]
    assert called == [(smoke, "eu-west-1", smoke), ("checkout-verify", "us-east-1", "checkout-verify")]
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]


async def test_failed_after_hook_rolls_back(
    api: Api, operator: OperatorRunner, router: TimedRouter, hooks: FakeHookInvoker
) -> None:
    hooks.answer("https://verify.example/after", HookOutcome(False, "HTTP 500 from webhook", 3))
    spec_hooks = {"afterAllowTraffic": {"url": "https://verify.example/after"}}
    await api.create(rollout(strategy=CANARY, hooks=spec_hooks))
    await eventually(has_phase(api, "Degraded", "HookFailed"))
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {}), ("1", {})]
    status = await status_of(api)
    assert status["message"] == (
        "afterAllowTraffic hook (webhook https://verify.example/after) failed: HTTP 500 from webhook; "
        "rolled back to version 1"
    )
    assert status["stableVersion"] == "1"


async def test_provider_throttling_is_no_false_failure(
    api: Api, router: TimedRouter, cloudwatch: FakeCloudWatch, traffic: Traffic
) -> None:
    traffic.start()
    for _ in range(3):
        cloudwatch.fail_next("GetMetricData", ThrottledError("Rate exceeded"))
    await api.create(rollout(strategy=CANARY, analysis=ANALYSIS))
    await eventually(has_phase(api, "Healthy"))
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]
    status = await status_of(api)
    assert (status["analysis"]["errors"], status["analysis"]["failures"]) == (3, 0)
    assert status["analysis"]["successes"] == 2


async def test_progress_deadline_aborts_a_rollout_that_waits_too_long(
    api: Api, operator: OperatorRunner, router: TimedRouter, hooks: FakeHookInvoker
) -> None:
    hooks.answer("https://gate.example/promote", HookOutcome(False, "HTTP 409: change freeze", 1))
    spec_hooks = {"confirmPromotion": {"url": "https://gate.example/promote", "interval": "1m"}}
    await api.create(rollout(strategy=CANARY, hooks=spec_hooks, progressDeadlineSeconds=600))
    await eventually(has_phase(api, "Paused", "AwaitingConfirmation"))
    await eventually(has_phase(api, "Degraded", "ProgressDeadlineExceeded"))
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("1", {})]
    assert round(router.writes[2].at - router.writes[1].at, 1) == 600.0
    status = await status_of(api)
    assert status["message"].startswith("no progress for 10m (progressDeadlineSeconds 600) at promotion")
    assert status["message"].endswith("rolled back to version 1")


async def test_measuring_every_minute_reads_the_alias_once_per_drift_interval(
    api: Api, router: TimedRouter, fake_aws: FakeLambda, cloudwatch: FakeCloudWatch, traffic: Traffic
) -> None:
    traffic.start()
    long_pause = {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "30m"}}, {"setWeight": 50}]}}
    await api.create(rollout(strategy=long_pause, analysis=ANALYSIS))
    await eventually(lambda: len(router.writes) == 1, step=1)
    reads, measurements = fake_aws.calls["GetAlias"], cloudwatch.calls["GetMetricData"]
    await asyncio.sleep(25 * 60)
    # A measurement a minute, but the alias is read only as a drift check (every 5 minutes in the
    # test settings): the passes between use the alias as the operator last saw it.
    assert cloudwatch.calls["GetMetricData"] - measurements in (24, 25)
    assert fake_aws.calls["GetAlias"] - reads in (4, 5)
    assert len(router.writes) == 1
