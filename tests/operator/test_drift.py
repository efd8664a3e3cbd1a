"""Drift end to end: someone changes the alias behind the operator's back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lambda_rollouts.testing.fake_lambda import FakeLambda

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


SHORT_PAUSES = {
    "canary": {
        "steps": [
            {"setWeight": 10},
            {"pause": {"duration": "1m"}},
            {"setWeight": 50},
            {"pause": {"duration": "1m"}},
        ]
    }
}


async def test_a_rollout_reads_the_alias_once_then_only_at_drift_checks(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout(strategy=SHORT_PAUSES))

    async def healthy() -> bool:
        return (await status_of(api)).get("phase") == "Healthy"

    await eventually(healthy, step=1)
    # The pre-flight read, then three writes, each answered with the alias as stored.
    assert (fake_aws.calls["GetAlias"], fake_aws.calls["UpdateAlias"]) == (1, 3)
    assert [write.at - router.writes[0].at for write in router.writes] == [0.0, 60.0, 120.0]
    # Idle: one read per drift-check interval (300 s in the test settings), nothing else.
    reads_when_healthy = fake_aws.calls["GetAlias"]
    await asyncio.sleep(900)
    assert fake_aws.calls["GetAlias"] - reads_when_healthy in (2, 3)
    assert fake_aws.calls["UpdateAlias"] == 3


async def test_a_change_during_a_short_pause_is_found_by_the_refused_write(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout(strategy=SHORT_PAUSES))
    await eventually(lambda: len(router.writes) == 1, step=1)
    first_write = router.writes[0].at
    fake_aws.set_alias_externally("checkout-api", "live", "1", {"2": 30.0})
    await eventually(drifted(api), step=1)
    # At the end of the pause: the write carried the alias's old RevisionId and was refused, the
    # alias was read again at once and the change handled as drift; nothing was overwritten.
    assert asyncio.get_running_loop().time() - first_write <= 61
    status = await status_of(api)
    assert status["phase"] == "Paused"
    assert status["drift"]["observed"] == "70% on version 1 / 30% on version 2"
    assert len(router.writes) == 1
    # Two UpdateAlias calls: the first weight, and the refused one (a loop that read the alias at
    # the end of the pause would have found the change without trying to write).
    assert fake_aws.calls["UpdateAlias"] == 2
    assert fake_aws.alias_state("checkout-api", "live").routing == {"2": 30.0}  # type: ignore[union-attr]
    reasons = {condition["type"]: condition["reason"] for condition in status["conditions"]}
    assert "AliasConflict" not in reasons.values()
