"""One whole canary through the real boto3 adapter on moto, to prove the layers fit together."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.cloudwatch import BotoMetricProvider
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
    # GetAlias: one before the first write; then only drift checks, since neither pause is shorter
    # than the 5-minute interval: at the end of the 5-minute pause, 5 minutes into the 10-minute
    # one and at its end. UpdateAlias answers with the alias, so no write needs a read-back.
    assert moto_router.calls["GetAlias"] == 1 + 2 + 1


async def test_failing_error_rate_on_moto_rolls_back_through_the_real_cloudwatch_provider(
    api: Api, kube: EmulatorHandle, settings: Settings
) -> None:
    with mock_aws(config={"lambda": {"use_docker": False}}):
        seed_demo_function(None, "us-east-1")
        clients = AwsClients(Settings(default_region="us-east-1"), session_factory=sandbox_session)
        router = BotoAliasRouter(Settings(default_region="us-east-1"), clients=clients)
        runner = OperatorRunner(kube, router, settings, metrics=BotoMetricProvider(clients))
        cloudwatch = sandbox_session("us-east-1").client("cloudwatch", region_name="us-east-1")
        lambda_client = sandbox_session("us-east-1").client("lambda", region_name="us-east-1")

        def publish() -> None:
            """Lambda's per-version metrics for 300 invocations split as the alias says; v2 fails 10%."""
            alias = lambda_client.get_alias(FunctionName="checkout-api", Name="live")
            weights = alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
            shares = {alias["FunctionVersion"]: 1 - sum(weights.values()), **weights}
            data = []
            for version, share in shares.items():
                dimensions = [
                    {"Name": "FunctionName", "Value": "checkout-api"},
                    {"Name": "Resource", "Value": "checkout-api:live"},
                    {"Name": "ExecutedVersion", "Value": version},
                ]
                invocations = 300 * share
                errors = invocations * (0.1 if version == "2" else 0.0)
                for name, value in (("Invocations", invocations), ("Errors", errors)):
                    data.append(
                        {
                            "MetricName": name,
                            "Dimensions": dimensions,
                            "Value": value,
                            "Timestamp": runner.clock(),
                        }
                    )
            cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)

        await runner.start()
        try:
            analysis = {"interval": "1m", "metrics": [{"name": "error-rate", "max": 1}], "minInvocations": 20}
            await api.create(rollout(version="2", analysis=analysis))

            async def rolled_back() -> bool:
                publish()
                body = await api.get("checkout")
                return (body or {}).get("status", {}).get("phase") == "Degraded"

            await eventually(rolled_back, step=20)
        finally:
            await runner.stop()
        body = await api.get("checkout")
        assert body is not None
        assert body["status"]["message"] == (
            "analysis failed: error-rate of version 2 was 10%, above max 1%; rolled back to version 1"
        )
        alias = lambda_client.get_alias(FunctionName="checkout-api", Name="live")
        assert alias["FunctionVersion"] == "1"
        assert not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")
        # One measurement, one GetMetricData; two writes: 10% then the rollback.
        assert router.calls["GetMetricData"] == 1
        assert router.calls["UpdateAlias"] == 2
