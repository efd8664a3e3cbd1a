"""LambdaHookInvoker over botocore's Stubber, on the very clients AwsClients hands out.

The invoker asks ``AwsClients`` for a client configured by ``hook_client_config``; the cache is
keyed by the config's values, so asking for the same config here returns the same client, and a
Stubber activated on it answers the invoker's calls.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from lambda_rollouts import __version__
from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.hook_invoker import LambdaHookInvoker, hook_client_config
from lambda_rollouts.hooks import HookOutcome, hook_payload
from lambda_rollouts.model import Hook, HookPoint
from lambda_rollouts.observed import Target
from lambda_rollouts.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

REGION = "eu-west-1"
TARGET = Target(function_name="checkout-api", alias="live", region=REGION)
ROLE_ARN = "arn:aws:iam::123456789012:role/rollouts"
SMOKE_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:checkout-smoke"
PAYLOAD = hook_payload(
    namespace="default",
    name="checkout",
    function_name="checkout-api",
    alias="live",
    stable_version="41",
    new_version="42",
    new_version_arn=f"arn:aws:lambda:{REGION}:123456789012:function:checkout-api:42",
    point=HookPoint.BEFORE_ALLOW_TRAFFIC,
)
HOOK = Hook(function_name="checkout-smoke", qualifier="live", timeout="45s", retries=2)


@pytest.fixture
def clients() -> AwsClients:
    settings = Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION)
    return AwsClients(
        settings,
        lambda: boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        ),
    )


@pytest.fixture
def invoker(clients: AwsClients) -> LambdaHookInvoker:
    # No waiting between attempts: the delays are the retry helper's, tested on their own.
    return LambdaHookInvoker(clients, retry_delay_seconds=0.0)


def lambda_client(clients: AwsClients, hook: Hook = HOOK) -> LambdaClient:
    return clients.client("lambda", REGION, config=hook_client_config(hook))


@pytest.fixture
def stubber(clients: AwsClients) -> Iterator[Stubber]:
    with Stubber(lambda_client(clients)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def answer(body: bytes, function_error: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "StatusCode": 200,
        "ExecutedVersion": "7",
        "Payload": StreamingBody(io.BytesIO(body), len(body)),
    }
    if function_error is not None:
        response["FunctionError"] = function_error
    return response


def not_found(stubber: Stubber) -> None:
    stubber.add_client_error(
        "invoke",
        service_error_code="ResourceNotFoundException",
        service_message=f"Function not found: {SMOKE_ARN}:live",
        http_status_code=404,
    )


EXPECTED_REQUEST = {
    "FunctionName": "checkout-smoke",
    "Qualifier": "live",
    "InvocationType": "RequestResponse",
    "Payload": ANY,
}


async def test_invokes_synchronously_with_the_payload_as_the_event(
    clients: AwsClients, invoker: LambdaHookInvoker, stubber: Stubber
) -> None:
    sent: list[dict[str, Any]] = []
    lambda_client(clients).meta.events.register(
        "before-parameter-build.lambda.Invoke", lambda params, **_: sent.append(dict(params))
    )
    stubber.add_response("invoke", answer(b'{"status": "ok"}'), EXPECTED_REQUEST)

    outcome = await invoker.invoke(TARGET, HOOK, PAYLOAD)

    assert outcome == HookOutcome(
        succeeded=True, message="function checkout-smoke:live succeeded", attempts=1
    )
    [request] = sent
    assert json.loads(request["Payload"]) == PAYLOAD
    assert clients.calls["Invoke"] == 1


async def test_no_qualifier_is_sent_when_the_hook_has_none(
    clients: AwsClients, invoker: LambdaHookInvoker
) -> None:
    hook = Hook(function_name="checkout-smoke", timeout="45s")
    with Stubber(lambda_client(clients, hook)) as stub:
        stub.add_response(
            "invoke",
            answer(b"null"),
            {"FunctionName": "checkout-smoke", "InvocationType": "RequestResponse", "Payload": ANY},
        )
        assert (await invoker.invoke(TARGET, hook, PAYLOAD)).succeeded
        stub.assert_no_pending_responses()


def test_the_client_does_not_retry_and_waits_as_long_as_the_hook(clients: AwsClients) -> None:
    config = lambda_client(clients).meta.config
    options = ("read_timeout", "connect_timeout", "retries", "user_agent_extra")
    assert {name: getattr(config, name) for name in options} == {
        "read_timeout": 45.0,
        "connect_timeout": 5,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        # The rest of the project's client config still applies.
        "user_agent_extra": f"lambda-rollouts/{__version__}",
    }


async def test_a_function_error_fails_quoting_the_error(invoker: LambdaHookInvoker, stubber: Stubber) -> None:
    report = {"errorType": "AssertionError", "errorMessage": "checkout returned 500", "stackTrace": []}
    for _ in range(3):
        stubber.add_response("invoke", answer(json.dumps(report).encode(), "Unhandled"), EXPECTED_REQUEST)

    outcome = await invoker.invoke(TARGET, HOOK, PAYLOAD)

    assert outcome == HookOutcome(
        succeeded=False,
        message=(
            "function checkout-smoke:live raised an error (Unhandled): AssertionError: checkout returned 500"
        ),
        attempts=3,
    )


async def test_a_failed_status_in_the_answer_fails_without_retrying(
    clients: AwsClients, invoker: LambdaHookInvoker, stubber: Stubber
) -> None:
    body = json.dumps({"status": "FAILED", "message": "smoke test 3 failed"}).encode()
    stubber.add_response("invoke", answer(body), EXPECTED_REQUEST)

    outcome = await invoker.invoke(TARGET, HOOK, PAYLOAD)

    # The hook ran and said no: asking again would not change its mind.
    assert outcome == HookOutcome(
        succeeded=False,
        message='function checkout-smoke:live answered status "failed": "smoke test 3 failed"',
        attempts=1,
        final=True,
    )
    assert clients.calls["Invoke"] == 1


async def test_a_missing_function_fails_with_a_readable_message(
    clients: AwsClients, invoker: LambdaHookInvoker, stubber: Stubber
) -> None:
    for _ in range(3):
        not_found(stubber)

    outcome = await invoker.invoke(TARGET, HOOK, PAYLOAD)

    assert not outcome.succeeded
    assert outcome.attempts == 3
    assert outcome.message == (
        "function checkout-smoke:live could not be invoked (FunctionNotFound): "
        f"Invoke: ResourceNotFoundException: Function not found: {SMOKE_ARN}:live"
    )
    assert clients.calls["Invoke"] == 3


async def test_attempts_are_counted_up_to_the_first_success(
    clients: AwsClients, invoker: LambdaHookInvoker, stubber: Stubber
) -> None:
    stubber.add_client_error(
        "invoke",
        service_error_code="TooManyRequestsException",
        service_message="Rate exceeded",
        http_status_code=429,
    )
    stubber.add_response("invoke", answer(b'{"errorMessage": "boom"}', "Unhandled"), EXPECTED_REQUEST)
    stubber.add_response(
        "invoke", answer(b'{"status": "succeeded", "message": "all green"}'), EXPECTED_REQUEST
    )

    outcome = await invoker.invoke(TARGET, HOOK, PAYLOAD)

    assert outcome == HookOutcome(
        succeeded=True, message='function checkout-smoke:live succeeded: "all green"', attempts=3
    )
    assert clients.calls["Invoke"] == 3


async def test_no_retries_means_one_invoke(clients: AwsClients, invoker: LambdaHookInvoker) -> None:
    hook = Hook(function_name="checkout-smoke", qualifier="live", timeout="45s", retries=0)
    with Stubber(lambda_client(clients, hook)) as stub:
        not_found(stub)
        outcome = await invoker.invoke(TARGET, hook, PAYLOAD)
        stub.assert_no_pending_responses()
    assert (outcome.succeeded, outcome.attempts) == (False, 1)
    assert clients.calls["Invoke"] == 1


async def test_a_timeout_fails_saying_so_and_botocore_does_not_retry_it(
    clients: AwsClients, invoker: LambdaHookInvoker
) -> None:
    sends: list[str] = []

    def time_out(**_: Any) -> None:
        # Raised where the HTTP request would go out, so botocore's retry handling sees it.
        sends.append("Invoke")
        raise ReadTimeoutError(endpoint_url=f"https://lambda.{REGION}.amazonaws.com")

    hook = Hook(function_name="checkout-smoke", timeout="45s", retries=1)
    lambda_client(clients, hook).meta.events.register("before-send.lambda.Invoke", time_out)

    outcome = await invoker.invoke(TARGET, hook, PAYLOAD)

    assert outcome == HookOutcome(
        succeeded=False, message="function checkout-smoke timed out: no answer within 45s", attempts=2
    )
    # One request per attempt: botocore's standard mode would otherwise retry a read timeout.
    assert sends == ["Invoke", "Invoke"]


async def test_a_role_that_cannot_be_assumed_fails_the_attempt(
    clients: AwsClients, invoker: LambdaHookInvoker
) -> None:
    hook = Hook(function_name="checkout-smoke", retries=0)
    with Stubber(clients.client("sts", REGION)) as sts:
        # AssumeRole is paced in the operator's own account, which STS names first.
        sts.add_response(
            "get_caller_identity",
            {"Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/operator", "UserId": "AIDA"},
        )
        sts.add_client_error(
            "assume_role",
            service_error_code="AccessDenied",
            service_message="not allowed",
            http_status_code=403,
        )
        outcome = await invoker.invoke(
            Target(function_name="checkout-api", alias="live", region=REGION, role_arn=ROLE_ARN),
            hook,
            PAYLOAD,
        )
    assert not outcome.succeeded
    assert outcome.message == (
        "function checkout-smoke could not be invoked (AccessDenied): AssumeRole: AccessDenied: not allowed"
    )
