"""The sandbox's traffic: each version's own code decides how its share fares, and the operator's
analysis judges what CloudWatch shows of it. A release published to fail a share of its
invocations is rolled back; a healthy one is promoted. In-process operator, real time."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from tests.sandbox.rollouts import ROLLOUTS, alias, apply, reason, settled

from lambda_rollouts.sandbox.aws import publish_next_release
from lambda_rollouts.sandbox.demo import DEMO_ANALYSIS_ROLLOUT
from lambda_rollouts.sandbox.runtime import SandboxHandle, open_sandbox

# The demo's failing release (examples/analysis.yaml), on a shorter canary with a faster analysis.
ANALYSED: dict[str, Any] = {
    **DEMO_ANALYSIS_ROLLOUT,
    "spec": {
        **DEMO_ANALYSIS_ROLLOUT["spec"],
        "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "6s"}}]}},
        "analysis": {**DEMO_ANALYSIS_ROLLOUT["spec"]["analysis"], "interval": "2s"},
    },
}


@pytest.fixture
async def sandbox(tmp_path: pathlib.Path) -> AsyncIterator[SandboxHandle]:
    async with open_sandbox(workdir=tmp_path, traffic_per_second=100) as running:
        yield running


async def publish(sandbox: SandboxHandle, fail_rate: float) -> str:
    return await asyncio.to_thread(
        publish_next_release, sandbox.aws_endpoint_url, sandbox.region, "checkout-api", fail_rate=fail_rate
    )


async def test_a_failing_release_is_rolled_back_and_a_healthy_one_promoted(sandbox: SandboxHandle) -> None:
    assert sandbox.traffic is not None
    assert await publish(sandbox, fail_rate=0.25) == "3"
    await apply(sandbox, ANALYSED)
    status = await settled(sandbox, "checkout-api")
    assert (status["phase"], reason(status, "Stalled")) == ("Degraded", "AnalysisFailed")
    assert status["message"].startswith("analysis failed: error-rate of version 3 was ")
    assert status["message"].endswith("%, above max 1%; rolled back to version 1")
    assert await asyncio.to_thread(alias, sandbox) == ("1", {})
    # The traffic's clients saw version 3 fail, and version 1 never.
    assert sandbox.traffic.errors["3"] > 0
    assert "1" not in sandbox.traffic.errors

    assert await publish(sandbox, fail_rate=0.0) == "4"
    async with (
        aiohttp.ClientSession(sandbox.kube_url) as session,
        session.patch(
            f"{ROLLOUTS}/checkout-api",
            json={"spec": {"version": "4"}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    status = await settled(sandbox, "checkout-api")
    assert (status["phase"], status["stableVersion"]) == ("Healthy", "4"), status
    assert status["analysis"]["failures"] == 0
    assert status["analysis"]["successes"] > 0
    assert await asyncio.to_thread(alias, sandbox) == ("4", {})
    assert sandbox.traffic.invocations["4"] > 0
    assert "4" not in sandbox.traffic.errors
