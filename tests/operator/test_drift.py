"""Drift end to end: someone changes the alias behind the operator's back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lambda_rollouts.aws.fake import FakeLambda

from .conftest import Api, OperatorRunner, TimedRouter, eventually, rollout

pytestmark = pytest.mark.looptime


async def status_of(api: Api) -> dict[str, Any]:
    body = await api.get("checkout")
    status: dict[str, Any] = (body or {}).get("status", {})
    return status


def drifted(api: Api):
    async def check() -> bool:
        status = await status_of(api)
        return any(c["type"] == "Drifted" and c["status"] == "True" for c in status.get("conditions", []))

    return check


async def test_a_change_mid_rollout_pauses_with_a_drifted_condition(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout())
    await eventually(lambda: len(router.writes) == 1)
    await asyncio.sleep(60)
    fake_aws.set_alias_externally("checkout-api", "live", "3")
    # Found at the end of the 5-minute pause at the latest (the next time the alias is read).
    await eventually(drifted(api))
    status = await status_of(api)
    assert status["phase"] == "Paused"
    assert status["drift"]["observed"] == "100% on version 3"
    assert status["drift"]["expected"] == "90% on version 1 / 10% on version 2"
    await asyncio.sleep(3600)
    assert len(router.writes) == 1
    assert "Drifted" in [event["reason"] for event in await api.events()]


async def test_correct_restores_and_the_rollout_finishes(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout(onDrift="Correct"))
    await eventually(lambda: len(router.writes) == 1)
    fake_aws.set_alias_externally("checkout-api", "live", "1", {"2": 70.0})

    async def healthy() -> bool:
        return (await status_of(api)).get("phase") == "Healthy"

    await eventually(healthy)
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]


async def test_drift_of_a_healthy_rollout_is_found_within_the_drift_interval(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout(strategy={"allAtOnce": {}}))

    async def healthy() -> bool:
        return (await status_of(api)).get("phase") == "Healthy"

    await eventually(healthy)
    changed_at = asyncio.get_running_loop().time()
    fake_aws.set_alias_externally("checkout-api", "live", "1")
    await eventually(drifted(api), step=1)
    found_after = asyncio.get_running_loop().time() - changed_at
    assert found_after <= 300 + 1  # the drift-check interval of the test settings
    assert len(router.writes) == 1
