"""AwsClients' call observer: one report per API call, with its outcome, next to ``calls``.

Successes run on moto in-process; AWS error responses come from botocore's Stubber (its answers
go through botocore's ``after-call`` like real ones); throttling that botocore retries is injected
at ``before-send``, below the retry loop; a connection failure is a real refused connection. The
first paced call of the operator's own credentials asks STS which account they belong to
(``GetCallerIdentity``, once): a call like the others, reported like them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from moto import mock_aws

from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.ratelimit import RateLimiter
from lambda_rollouts.sandbox.aws import sandbox_session
from lambda_rollouts.settings import Settings

REGION = "eu-west-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/rollouts"

Report = tuple[str, str, str | None]


IDENTITY: Report = ("sts", "GetCallerIdentity", None)


def isolated_settings() -> Settings:
    # By alias: the field reads AWS_REGION, which must not leak in from the shell.
    return Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION)


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    return sandbox_session(REGION)


@pytest.fixture
def reports() -> list[Report]:
    return []


@pytest.fixture
def clients(boto_session: boto3.session.Session, reports: list[Report]) -> Iterator[AwsClients]:
    with mock_aws():
        yield AwsClients(
            isolated_settings(),
            session_factory=lambda: boto_session,
            on_call=lambda *report: reports.append(report),
        )


async def test_a_successful_call_is_reported_once_without_an_error(
    clients: AwsClients, reports: list[Report]
) -> None:
    await clients.call("lambda", REGION, None, "ListFunctions")
    await clients.call("cloudwatch", REGION, None, "DescribeAlarms")

    assert reports == [IDENTITY, ("lambda", "ListFunctions", None), ("cloudwatch", "DescribeAlarms", None)]
    assert clients.calls == {"GetCallerIdentity": 1, "ListFunctions": 1, "DescribeAlarms": 1}


async def test_assuming_a_role_is_a_call_of_its_own(clients: AwsClients, reports: list[Report]) -> None:
    await clients.call("lambda", REGION, ROLE_ARN, "ListFunctions")

    # AssumeRole is paced in the operator's own account: which one, STS says first.
    assert reports == [IDENTITY, ("sts", "AssumeRole", None), ("lambda", "ListFunctions", None)]


def test_an_error_response_is_reported_with_the_code_aws_sent(
    clients: AwsClients, reports: list[Report]
) -> None:
    client = clients.client("lambda", REGION)
    with Stubber(client) as stubber:
        stubber.add_client_error("get_alias", "ResourceNotFoundException", "Alias not found", 404)
        stubber.add_client_error("get_alias", "TooManyRequestsException", "Rate exceeded", 429)
        stubber.add_response("get_alias", {"Name": "live", "FunctionVersion": "1"})
        for _ in range(3):
            with contextlib.suppress(ClientError):
                client.get_alias(FunctionName="checkout-api", Name="live")

    assert reports == [
        ("lambda", "GetAlias", "ResourceNotFoundException"),
        ("lambda", "GetAlias", "TooManyRequestsException"),
        ("lambda", "GetAlias", None),
    ]
    assert clients.calls == {"GetAlias": 3}


def test_an_error_response_without_a_code_is_reported_by_its_status(
    clients: AwsClients, reports: list[Report]
) -> None:
    client = clients.client("lambda", REGION)
    with Stubber(client) as stubber:
        stubber.add_client_error("get_alias", "", "", 503)
        with pytest.raises(ClientError):
            client.get_alias(FunctionName="checkout-api", Name="live")

    assert reports == [("lambda", "GetAlias", "503")]


def answering(handler: Callable[..., AWSResponse | None]) -> Callable[..., Any]:
    """A handler that answers in AWS's place (botocore-stubs types event handlers as returning None)."""
    return handler


class _Body:
    """The raw body of an injected HTTP response."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._content


def test_botocore_retries_are_one_call(boto_session: boto3.session.Session, reports: list[Report]) -> None:
    """Throttled once, then answered: botocore retries inside the call; one report, a success."""
    throttled: list[str] = []

    def throttle_once(request: Any, **_: Any) -> AWSResponse | None:
        if throttled:
            return None  # let the retry through to moto
        throttled.append(request.url)
        body = json.dumps({"Type": "User", "message": "Rate exceeded"}).encode()
        headers = HTTPHeaders()
        headers["x-amzn-errortype"] = "TooManyRequestsException"
        return AWSResponse(request.url, 429, headers, _Body(body))

    with mock_aws():
        clients = AwsClients(
            isolated_settings(),
            session_factory=lambda: boto_session,
            client_config=Config(retries={"mode": "standard", "max_attempts": 2}),
            on_call=lambda *report: reports.append(report),
        )
        client = clients.client("lambda", REGION)
        client.meta.events.register("before-send.lambda.ListFunctions", answering(throttle_once))
        client.list_functions()

    assert len(throttled) == 1, "the first attempt was throttled"
    assert reports == [("lambda", "ListFunctions", None)]
    assert clients.calls == {"ListFunctions": 1}


def test_botocore_retries_that_run_out_are_one_failed_call(
    boto_session: boto3.session.Session, reports: list[Report]
) -> None:
    def always_throttle(request: Any, **_: Any) -> AWSResponse:
        body = json.dumps({"Type": "User", "message": "Rate exceeded"}).encode()
        headers = HTTPHeaders()
        headers["x-amzn-errortype"] = "TooManyRequestsException"
        return AWSResponse(request.url, 429, headers, _Body(body))

    with mock_aws():
        clients = AwsClients(
            isolated_settings(),
            session_factory=lambda: boto_session,
            client_config=Config(retries={"mode": "standard", "max_attempts": 1}),
            on_call=lambda *report: reports.append(report),
        )
        client = clients.client("lambda", REGION)
        client.meta.events.register("before-send.lambda.ListFunctions", answering(always_throttle))
        with pytest.raises(ClientError):
            client.list_functions()

    assert reports == [("lambda", "ListFunctions", "TooManyRequestsException")]


async def test_no_response_is_reported_with_the_exception_name(
    boto_session: boto3.session.Session, reports: list[Report], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    clients = AwsClients(
        isolated_settings(),
        session_factory=lambda: boto_session,
        client_config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1),
        on_call=lambda *report: reports.append(report),
        # Unpaced: no account to ask STS for, so the one call made is the one observed.
        rate_limiter=RateLimiter(),
    )
    with pytest.raises(EndpointConnectionError):
        await clients.call("lambda", REGION, None, "GetAlias", {"FunctionName": "f", "Name": "live"})

    assert reports == [("lambda", "GetAlias", "EndpointConnectionError")]
    assert clients.calls == {"GetAlias": 1}


async def test_a_failing_observer_never_fails_the_call(
    boto_session: boto3.session.Session, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(service: str, operation: str, error_code: str | None) -> None:
        raise RuntimeError("observer bug")

    with mock_aws():
        clients = AwsClients(isolated_settings(), session_factory=lambda: boto_session, on_call=broken)
        with caplog.at_level(logging.ERROR, logger="lambda_rollouts.aws.clients"):
            answer = await clients.call("lambda", REGION, None, "ListFunctions")

    assert answer["Functions"] == []
    assert "the AWS call observer failed on lambda ListFunctions" in caplog.text


async def test_without_an_observer_calls_are_still_counted(boto_session: boto3.session.Session) -> None:
    with mock_aws():
        clients = AwsClients(isolated_settings(), session_factory=lambda: boto_session)
        await clients.call("lambda", REGION, None, "ListFunctions")

    assert clients.calls == {"GetCallerIdentity": 1, "ListFunctions": 1}
