"""One whole canary through the real boto3 adapter on moto, to prove the layers fit together."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.sandbox.aws import sandbox_session, seed_demo_function
from lambda_rollouts.sandbox.kube import EmulatorHandle
from lambda_rollouts.settings import Settings

from .conftest import Api, OperatorRunner, eventually, rollout

pytestmark = pytest.mark.looptime


@pytest.fixture
def moto_router() -> Iterator[BotoAliasRouter]:
    with mock_aws(config={"lambda": {"use_docker": False}}):
        seed_demo_function(None, "us-east-1")
        yield BotoAliasRouter(Settings(default_region="us-east-1"), session_factory=sandbox_session)


async def test_canary_on_moto_reaches_healthy_with_the_calls_it_needs(
    api: Api, kube: EmulatorHandle, moto_router: BotoAliasRouter, settings: Settings
) -> None:
    runner = OperatorRunner(kube, moto_router, settings)
    await runner.start()
    try:
        await api.create(rollout(version="2"))

        async def healthy() -> bool:
            body = await api.get("checkout")
            return (body or {}).get("status", {}).get("phase") == "Healthy"

        await eventually(healthy)
    finally:
        await runner.stop()
    client = sandbox_session("us-east-1").client("lambda", region_name="us-east-1")
    alias = client.get_alias(FunctionName="checkout-api", Name="live")
    assert alias["FunctionVersion"] == "2"
    assert not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    # Three weight changes; two versions described once for the pre-flight checks.
    assert moto_router.calls["UpdateAlias"] == 3
    assert moto_router.calls["GetFunctionConfiguration"] == 2
    # GetAlias: one before the first write, a read-back after each write, one as each of the two
    # pauses ends, and one drift check inside the 10-minute pause (the interval is 5 minutes).
    assert moto_router.calls["GetAlias"] == 1 + 3 + 2 + 1
