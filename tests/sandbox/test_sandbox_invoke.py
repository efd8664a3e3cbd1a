"""Lambda's Invoke in the AWS sandbox: the function's own code runs, as Lambda would run it."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from moto.awslambda.responses import LambdaResponse
from moto.awslambda_simple.models import LambdaSimpleBackend

from lambda_rollouts.sandbox.aws import (
    SMOKE_FUNCTION,
    AliasTraffic,
    MotoSandbox,
    publish_demo_release,
    publish_next_release,
    release_zip,
    sandbox_session,
    seed_demo_function,
    seed_hook_functions,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_lambda import LambdaClient

REGION = "eu-west-1"


@pytest.fixture
def sandbox() -> Iterator[MotoSandbox]:
    with MotoSandbox() as running:
        seed_demo_function(running.endpoint_url, REGION)
        yield running


@pytest.fixture
def client(sandbox: MotoSandbox) -> LambdaClient:
    return sandbox_session(REGION).client("lambda", region_name=REGION, endpoint_url=sandbox.endpoint_url)


def invoke(
    client: LambdaClient, name: str, event: Any = None, **kwargs: Any
) -> tuple[str | None, str | None, Any]:
    """(FunctionError, ExecutedVersion, decoded payload) of a synchronous invocation."""
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **kwargs)
    assert response["StatusCode"] == 200
    return (
        response.get("FunctionError"),
        response.get("ExecutedVersion"),
        json.loads(response["Payload"].read()),
    )


def split_live(client: LambdaClient, weights: dict[str, float]) -> None:
    """Alias ``live`` of checkout-api: version 1, plus ``weights``."""
    client.update_alias(
        FunctionName="checkout-api",
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": weights},
    )


def test_the_qualifier_picks_the_code_that_runs(client: LambdaClient) -> None:
    # Versions 1 and 2 are releases 1 and 2; $LATEST holds release 2's code; alias live is on 1.
    assert invoke(client, "checkout-api", Qualifier="1") == (None, "1", {"release": 1})
    assert invoke(client, "checkout-api", Qualifier="2") == (None, "2", {"release": 2})
    assert invoke(client, "checkout-api", Qualifier="live") == (None, "1", {"release": 1})
    assert invoke(client, "checkout-api:live") == (None, "1", {"release": 1})
    assert invoke(client, "checkout-api", Qualifier="$LATEST") == (None, "$LATEST", {"release": 2})
    assert invoke(client, "checkout-api") == (None, "$LATEST", {"release": 2})
    # An event field named "qualifier" is the function's business, not the request's.
    assert invoke(client, "checkout-api", {"qualifier": "2"}, Qualifier="1") == (None, "1", {"release": 1})


def test_a_weighted_alias_sends_each_invocation_to_one_of_its_versions(client: LambdaClient) -> None:
    split_live(client, {"2": 0.5})
    seen: Counter[tuple[str | None, int]] = Counter()
    for _ in range(60):
        _, executed, payload = invoke(client, "checkout-api", Qualifier="live")
        seen[executed, payload["release"]] += 1
    # Each version's own code answered; with 60 draws at 50%, both were drawn (1 - 2**-59).
    assert set(seen) == {("1", 1), ("2", 2)}


def test_a_handler_that_raises_is_an_unhandled_function_error(
    sandbox: MotoSandbox, client: LambdaClient
) -> None:
    version = publish_demo_release(sandbox.endpoint_url, REGION, 3, fail_rate=1.0)
    error, executed, payload = invoke(client, "checkout-api", Qualifier=version)
    assert (error, executed) == ("Unhandled", "3")
    assert payload["errorType"] == "RuntimeError"
    assert payload["errorMessage"] == "release 3 failed invocation 1: it fails 100% of them"
    assert payload["stackTrace"][-1].startswith('  File "/var/task/index.py"')


def test_a_release_fails_exactly_its_share_of_invocations(sandbox: MotoSandbox, client: LambdaClient) -> None:
    version = publish_next_release(sandbox.endpoint_url, REGION, "checkout-api", fail_rate=0.25)
    assert version == "3"
    errors = [invoke(client, "checkout-api", Qualifier=version)[0] for _ in range(8)]
    assert errors == [None, None, None, "Unhandled"] * 2
    assert invoke(client, "checkout-api", Qualifier=version)[2] == {"release": 3}


def test_release_zip_refuses_a_share_outside_0_to_1() -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        release_zip(3, fail_rate=1.5)


def test_publish_next_release_numbers_the_release_as_its_version(
    sandbox: MotoSandbox, client: LambdaClient
) -> None:
    assert publish_next_release(sandbox.endpoint_url, REGION, "checkout-api") == "3"
    assert publish_next_release(sandbox.endpoint_url, REGION, "checkout-api") == "4"
    assert invoke(client, "checkout-api", Qualifier="4") == (None, "4", {"release": 4})
    described = client.get_function_configuration(FunctionName="checkout-api", Qualifier="4")["Description"]
    assert described == "release 4"


def test_the_seeded_smoke_test_fails_for_version_2_and_passes_others(
    sandbox: MotoSandbox, client: LambdaClient
) -> None:
    assert seed_hook_functions(sandbox.endpoint_url, REGION) == {
        "function_name": "checkout-smoke",
        "alias": "live",
        "version": "1",
    }
    event = {"functionName": "checkout-api", "newVersion": "2", "phase": "beforeAllowTraffic"}
    error, executed, payload = invoke(client, SMOKE_FUNCTION, event, Qualifier="live")
    assert (error, executed, payload["errorType"], payload["errorMessage"]) == (
        "Unhandled",
        "1",
        "AssertionError",
        "smoke test of checkout-api version 2 failed: POST /cart answered 502",
    )
    assert invoke(client, SMOKE_FUNCTION, {**event, "newVersion": "3"}, Qualifier="live") == (
        None,
        "1",
        {"status": "ok", "message": "smoke test of checkout-api version 3 passed"},
    )


def test_invoke_answers_as_lambda_for_what_it_cannot_run(client: LambdaClient) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="checkout-api", Qualifier="no-such-alias", Payload=b"{}")
    with pytest.raises(
        client.exceptions.InvalidRequestContentException, match="Could not parse request body"
    ):
        client.invoke(FunctionName="checkout-api", Payload=b"{not json")
    assert client.invoke(FunctionName="checkout-api", InvocationType="DryRun")["StatusCode"] == 204
    assert (
        client.invoke(FunctionName="checkout-api", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    )


def test_a_function_in_another_language_gets_motos_own_answer(client: LambdaClient) -> None:
    role = client.get_function_configuration(FunctionName="checkout-api")["Role"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("index.js", "exports.handler = async () => 'hello';\n")
    client.create_function(
        FunctionName="node-function",
        Runtime="nodejs20.x",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": archive.getvalue()},
    )
    response = client.invoke(FunctionName="node-function", Payload=b'{"echo": true}')
    assert "FunctionError" not in response
    assert response["Payload"].read() == b'{"echo": true}'


def metric_sums(
    cloudwatch: CloudWatchClient,
    dimensions: dict[str, str],
    *,
    expected: dict[str, float],
    wait: float = 10.0,
) -> dict[str, float]:
    """Sum of Invocations and Errors under exactly ``dimensions``, read until they are ``expected``
    (published once a second) or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    now = datetime.now(UTC)
    queries: list[Any] = [
        {
            "Id": metric.lower(),
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/Lambda",
                    "MetricName": metric,
                    "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions.items()],
                },
                "Period": 600,
                "Stat": "Sum",
            },
        }
        for metric in ("Invocations", "Errors")
    ]
    while True:
        results = cloudwatch.get_metric_data(
            MetricDataQueries=queries,
            StartTime=now - timedelta(minutes=5),
            EndTime=now + timedelta(minutes=5),
        )["MetricDataResults"]
        sums = {result["Id"]: sum(result["Values"]) for result in results}
        if sums == expected or time.monotonic() >= deadline:
            return sums
        time.sleep(0.2)  # the metrics are published once a second


def test_invocations_count_in_cloudwatch_as_lambdas_metrics(
    sandbox: MotoSandbox, client: LambdaClient
) -> None:
    version = publish_next_release(sandbox.endpoint_url, REGION, "checkout-api", fail_rate=0.5)
    split_live(client, {version: 0.5})
    outcomes: Counter[tuple[str | None, str | None]] = Counter()
    for _ in range(40):
        error, executed, _ = invoke(client, "checkout-api", Qualifier="live")
        outcomes[executed, error] += 1
    invoke(client, "checkout-api", Qualifier="2")
    cloudwatch = sandbox_session(REGION).client(
        "cloudwatch", region_name=REGION, endpoint_url=sandbox.endpoint_url
    )

    def through_alias(executed: str) -> dict[str, str]:
        return {"FunctionName": "checkout-api", "Resource": "checkout-api:live", "ExecutedVersion": executed}

    new = {"invocations": float(outcomes[version, None] + outcomes[version, "Unhandled"])}
    new["errors"] = float(outcomes[version, "Unhandled"])
    assert metric_sums(cloudwatch, through_alias(version), expected=new) == new
    stable = {"invocations": float(outcomes["1", None]), "errors": 0.0}
    assert metric_sums(cloudwatch, through_alias("1"), expected=stable) == stable
    # Half of version 3's invocations failed, evenly: the 2nd, 4th...
    assert new["errors"] == new["invocations"] // 2
    qualified = {"invocations": 1.0, "errors": 0.0}
    by_version = {"FunctionName": "checkout-api", "Resource": "checkout-api:2"}
    assert metric_sums(cloudwatch, by_version, expected=qualified) == qualified
    everything = {"invocations": 41.0, "errors": new["errors"]}
    assert metric_sums(cloudwatch, {"FunctionName": "checkout-api"}, expected=everything) == everything


def test_alias_traffic_runs_each_versions_code_at_its_weight(
    sandbox: MotoSandbox, client: LambdaClient
) -> None:
    version = publish_next_release(sandbox.endpoint_url, REGION, "checkout-api", fail_rate=1.0)
    split_live(client, {version: 0.5})
    traffic = AliasTraffic(REGION, "checkout-api", "live", per_second=50)
    for _ in range(40):
        traffic.invoke_once()
    assert sum(traffic.invocations.values()) == 40
    assert set(traffic.invocations) == {"1", version}
    # Version 3 fails every invocation, version 1 none.
    assert dict(traffic.errors) == {version: traffic.invocations[version]}


def test_alias_traffic_keeps_going_while_started(sandbox: MotoSandbox) -> None:
    traffic = AliasTraffic(REGION, "checkout-api", "live", per_second=200).start()
    try:
        deadline = time.monotonic() + 10
        while traffic.invocations["1"] < 200 and time.monotonic() < deadline:
            time.sleep(0.05)  # waits for the traffic thread
    finally:
        traffic.stop()
    assert traffic.invocations["1"] >= 200
    assert not traffic.errors


def test_stop_puts_motos_invoke_back() -> None:
    before = (LambdaSimpleBackend.invoke, LambdaResponse.invoke)
    with MotoSandbox():
        assert (LambdaSimpleBackend.invoke, LambdaResponse.invoke) != before
    assert (LambdaSimpleBackend.invoke, LambdaResponse.invoke) == before
