"""LambdaHttpClient on moto's server: botocore's answers and errors, its retries, pacing and bookkeeping.

The answers and errors are compared with botocore's own for the same requests to the same server,
so the router's translation (written for botocore) holds for both transports. Faults moto never
makes (throttling, server errors, dropped connections, expired tokens) are given by interceptors,
which see every attempt after its token, as ``FaultInjector`` does.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ParamValidationError,
)
from yarl import URL

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.faults import FaultInjector, FaultKind
from lambda_rollouts.aws.lambda_http import HttpAttempt, LambdaHttpClient
from lambda_rollouts.aws.ratelimit import Limit, RateLimiter
from lambda_rollouts.errors import AliasConflictError, AwsError, ThrottledError
from lambda_rollouts.httpclient import HttpResponse
from lambda_rollouts.observed import Target
from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session, seed_demo_function
from lambda_rollouts.settings import Settings

REGION = "eu-west-1"
FUNCTION = "checkout-api"
TARGET = Target(function_name=FUNCTION, alias="live", region=REGION)


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    return sandbox_session(REGION)


@pytest.fixture
def server(boto_session: boto3.session.Session) -> Iterator[tuple[str, dict[str, str]]]:
    with MotoSandbox() as sandbox:
        seeded = seed_demo_function(sandbox.endpoint_url, REGION, FUNCTION, session=boto_session)
        yield sandbox.endpoint_url, seeded


@pytest.fixture
def endpoint(server: tuple[str, dict[str, str]]) -> str:
    return server[0]


@pytest.fixture
def boto_lambda(boto_session: boto3.session.Session, endpoint: str) -> Any:
    return boto_session.client("lambda", region_name=REGION, endpoint_url=endpoint)


class Recorder:
    """Collects what AwsClients is told: outcomes of calls, and the sleeps of the HTTP client."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, str | None]] = []
        self.sleeps: list[float] = []

    def on_call(self, service: str, operation: str, error: str | None) -> None:
        self.outcomes.append((service, operation, error))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_clients(
    endpoint: str,
    boto_session: boto3.session.Session,
    recorder: Recorder,
    *,
    rate_limiter: RateLimiter | None = None,
    max_attempts: int = 4,
) -> AwsClients:
    settings = Settings(
        LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION,
        LAMBDA_ROLLOUTS_AWS_ENDPOINT_URL=endpoint,
        aws_max_attempts=max_attempts,
    )
    return AwsClients(
        settings,
        session_factory=lambda: boto_session,
        on_call=recorder.on_call,
        rate_limiter=rate_limiter or RateLimiter(),
    )


@pytest.fixture
def clients(endpoint: str, boto_session: boto3.session.Session, recorder: Recorder) -> AwsClients:
    return make_clients(endpoint, boto_session, recorder)


@pytest.fixture
async def http(clients: AwsClients, recorder: Recorder) -> AsyncIterator[LambdaHttpClient]:
    client = LambdaHttpClient(clients, sleep=recorder.sleep, jitter=lambda: 1.0)
    yield client
    await client.close()


def without_metadata(answer: Any) -> dict[str, Any]:
    return {key: value for key, value in dict(answer).items() if key != "ResponseMetadata"}


class Scripted:
    """An interceptor answering the first attempts of one operation from a script, then letting through."""

    def __init__(self, operation: str, *answers: HttpResponse | Exception) -> None:
        self.operation = operation
        self.answers = list(answers)
        self.attempts: list[HttpAttempt] = []

    def __call__(self, attempt: HttpAttempt) -> HttpResponse | None:
        if attempt.operation != self.operation:
            return None
        self.attempts.append(attempt)
        if not self.answers:
            return None
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def lambda_error(status: int, code: str, message: str = "scripted") -> HttpResponse:
    return HttpResponse(
        status,
        {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", "Content-Type": "application/json"},
        json.dumps({"Type": "User", "message": message}).encode(),
    )


# -- answers and errors, as botocore gives them ------------------------------------------------


async def test_answers_are_botocore_answers(http: LambdaHttpClient, boto_lambda: Any) -> None:
    reads: list[tuple[str, dict[str, Any]]] = [
        ("GetAlias", {"FunctionName": FUNCTION, "Name": "live"}),
        ("GetFunctionConfiguration", {"FunctionName": FUNCTION, "Qualifier": "2"}),
        ("GetFunctionConfiguration", {"FunctionName": FUNCTION}),
        ("ListVersionsByFunction", {"FunctionName": FUNCTION, "MaxItems": 50}),
    ]
    for operation, params in reads:
        ours = await http.call(operation, REGION, None, **params)
        theirs = getattr(boto_lambda, xform_name(operation))(**params)
        assert without_metadata(ours) == without_metadata(theirs), operation
        assert ours["ResponseMetadata"]["HTTPStatusCode"] == theirs["ResponseMetadata"]["HTTPStatusCode"]

    revision = boto_lambda.get_alias(FunctionName=FUNCTION, Name="live")["RevisionId"]
    written = await http.call(
        "UpdateAlias",
        REGION,
        None,
        FunctionName=FUNCTION,
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}},
        RevisionId=revision,
    )
    stored = boto_lambda.get_alias(FunctionName=FUNCTION, Name="live")
    assert without_metadata(written) == without_metadata(stored)
    assert written["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.25}}
    assert written["RevisionId"] != revision


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("GetAlias", {"FunctionName": FUNCTION, "Name": "no-such-alias"}),
        ("GetAlias", {"FunctionName": "no-such-function", "Name": "live"}),
        ("GetFunctionConfiguration", {"FunctionName": FUNCTION, "Qualifier": "99"}),
        (
            "UpdateAlias",
            {"FunctionName": FUNCTION, "Name": "live", "FunctionVersion": "2", "RevisionId": "stale"},
        ),
        ("CreateAlias", {"FunctionName": FUNCTION, "Name": "live", "FunctionVersion": "1"}),
    ],
    ids=["missing-alias", "missing-function", "missing-version", "stale-revision", "alias-exists"],
)
async def test_errors_are_botocore_errors(
    http: LambdaHttpClient, boto_lambda: Any, operation: str, params: dict[str, Any]
) -> None:
    with pytest.raises(ClientError) as theirs:
        getattr(boto_lambda, xform_name(operation))(**params)
    with pytest.raises(ClientError) as ours:
        await http.call(operation, REGION, None, **params)
    assert ours.value.response["Error"] == theirs.value.response["Error"]
    assert ours.value.operation_name == theirs.value.operation_name == operation
    status = ours.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status == theirs.value.response["ResponseMetadata"]["HTTPStatusCode"]


async def test_a_function_named_by_its_arn(
    http: LambdaHttpClient, server: tuple[str, dict[str, str]], boto_lambda: Any
) -> None:
    arn = boto_lambda.get_function_configuration(FunctionName=FUNCTION)["FunctionArn"]
    answer = await http.call("GetAlias", REGION, None, FunctionName=arn, Name="live")
    assert answer["FunctionVersion"] == server[1]["stable_version"]


async def test_unknown_parameters_are_refused_before_sending(
    http: LambdaHttpClient, clients: AwsClients, recorder: Recorder
) -> None:
    with pytest.raises(ParamValidationError, match="Nmae"):
        await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Nmae="live")
    assert clients.calls["GetAlias"] == 1
    assert clients.attempts["GetAlias"] == 0
    assert recorder.outcomes == []


# -- retries -----------------------------------------------------------------------------------


async def test_throttling_is_retried_with_botocore_backoff(
    http: LambdaHttpClient, clients: AwsClients, recorder: Recorder
) -> None:
    throttled = lambda_error(429, "TooManyRequestsException", "Rate exceeded")
    script = Scripted("GetAlias", throttled, throttled)
    clients.intercept(script)
    answer = await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Name="live")
    assert answer["Name"] == "live"
    # jitter 1.0: the whole of min(1 s x 2^(attempt - 1), 20 s).
    assert recorder.sleeps == [1.0, 2.0]
    assert [attempt.attempt for attempt in script.attempts] == [1, 2, 3]
    assert clients.calls["GetAlias"] == 1
    assert clients.attempts["GetAlias"] == 3
    assert recorder.outcomes == [("lambda", "GetAlias", None)]


async def test_server_errors_are_retried_until_the_attempts_run_out(
    endpoint: str, boto_session: boto3.session.Session, recorder: Recorder
) -> None:
    clients = make_clients(endpoint, boto_session, recorder, max_attempts=3)
    script = Scripted("GetAlias", *[lambda_error(503, "ServiceException")] * 3)
    clients.intercept(script)
    http = LambdaHttpClient(clients, sleep=recorder.sleep, jitter=lambda: 1.0)
    router = BotoAliasRouter(clients.settings, clients=clients, transport="http", http_client=http)
    with pytest.raises(AwsError) as caught:
        await router.get_alias(TARGET)
    assert type(caught.value) is AwsError
    assert caught.value.transient
    assert recorder.sleeps == [0.05, 0.1]
    assert clients.attempts["GetAlias"] == 3
    assert recorder.outcomes == [("lambda", "GetAlias", "ServiceException")]
    await http.close()


async def test_conflicts_are_not_retried(
    http: LambdaHttpClient, clients: AwsClients, recorder: Recorder
) -> None:
    clients.intercept(Scripted("UpdateAlias", lambda_error(409, "ResourceConflictException")))
    with pytest.raises(ClientError) as caught:
        await http.call("UpdateAlias", REGION, None, FunctionName=FUNCTION, Name="live", FunctionVersion="2")
    assert caught.value.response["Error"]["Code"] == "ResourceConflictException"
    assert clients.attempts["UpdateAlias"] == 1
    assert recorder.sleeps == []
    assert recorder.outcomes == [("lambda", "UpdateAlias", "ResourceConflictException")]


async def test_dropped_connections_are_retried_then_raised(
    http: LambdaHttpClient, clients: AwsClients, recorder: Recorder
) -> None:
    clients.intercept(Scripted("GetAlias", *[ConnectionClosedError(endpoint_url="x")] * 4))
    with pytest.raises(ConnectionClosedError):
        await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Name="live")
    assert clients.attempts["GetAlias"] == 4
    assert recorder.sleeps == [0.05, 0.1, 0.2]
    assert recorder.outcomes == [("lambda", "GetAlias", "ConnectionClosedError")]


async def test_an_unreachable_endpoint(boto_session: boto3.session.Session, recorder: Recorder) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    clients = make_clients(f"http://127.0.0.1:{closed_port}", boto_session, recorder, max_attempts=2)
    http = LambdaHttpClient(clients, sleep=recorder.sleep)
    with pytest.raises(EndpointConnectionError):
        await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Name="live")
    assert clients.attempts["GetAlias"] == 2
    assert recorder.outcomes == [("lambda", "GetAlias", "EndpointConnectionError")]
    await http.close()


# -- pacing, credentials, fault injection ------------------------------------------------------


async def test_every_attempt_takes_a_token(
    endpoint: str, boto_session: boto3.session.Session, recorder: Recorder
) -> None:
    limiter = RateLimiter({"lambda": Limit(rate=1000, burst=100)})
    clients = make_clients(endpoint, boto_session, recorder, rate_limiter=limiter)
    clients.intercept(Scripted("GetAlias", lambda_error(429, "TooManyRequestsException")))
    http = LambdaHttpClient(clients, sleep=recorder.sleep)
    await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Name="live")
    await http.call("GetFunctionConfiguration", REGION, None, FunctionName=FUNCTION, Qualifier="1")
    assert limiter.granted[("default", REGION, "lambda")] == 3
    await http.close()


async def test_an_empty_bucket_is_waited_for_in_line(
    endpoint: str, boto_session: boto3.session.Session, recorder: Recorder
) -> None:
    now = [0.0]

    def advance(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter({"lambda": Limit(rate=2, burst=1)}, clock=lambda: now[0], sleeper=advance)
    clients = make_clients(endpoint, boto_session, recorder, rate_limiter=limiter)
    http = LambdaHttpClient(clients)
    for _ in range(3):
        await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Name="live")
    key = ("default", REGION, "lambda")
    assert limiter.granted[key] == 3
    # The first token was in the bucket; the next two waited half a second each.
    assert limiter.waited[key] == pytest.approx(1.0)
    assert now[0] == pytest.approx(1.0)
    await http.close()


async def test_expired_role_credentials_are_assumed_again_and_the_call_retried_once(
    http: LambdaHttpClient, clients: AwsClients, server: tuple[str, dict[str, str]], recorder: Recorder
) -> None:
    role_arn = server[1]["role_arn"]
    script = Scripted("GetAlias", lambda_error(403, "ExpiredTokenException", "The security token expired"))
    clients.intercept(script)
    answer = await http.call("GetAlias", REGION, role_arn, FunctionName=FUNCTION, Name="live")
    assert answer["Name"] == "live"
    assert clients.calls["AssumeRole"] == 2
    assert len(script.attempts) == 2
    assert recorder.outcomes[-1] == ("lambda", "GetAlias", None)


async def test_role_credentials_are_assumed_once_and_reused(
    http: LambdaHttpClient, clients: AwsClients, server: tuple[str, dict[str, str]]
) -> None:
    role_arn = server[1]["role_arn"]
    for _ in range(3):
        await http.call("GetAlias", REGION, role_arn, FunctionName=FUNCTION, Name="live")
    await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Name="live")
    assert clients.calls["AssumeRole"] == 1
    assert clients.credentials(None, REGION).access_key == "testing"
    assert clients.credentials(role_arn, REGION).access_key.startswith("ASIA"), "moto's assumed-role keys"


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        (FaultKind.THROTTLED, ThrottledError),
        (FaultKind.CONFLICT, AliasConflictError),
        (FaultKind.SERVICE_ERROR, AwsError),
        (FaultKind.CONNECTION_RESET, AwsError),
        (FaultKind.READ_TIMEOUT, AwsError),
    ],
)
async def test_injected_faults_translate_as_over_botocore(
    clients: AwsClients, recorder: Recorder, kind: FaultKind, error: type[AwsError]
) -> None:
    injector = FaultInjector(1.0, kinds=[kind])
    injector.install(clients)
    router = BotoAliasRouter(
        clients.settings,
        clients=clients,
        transport="http",
        http_client=LambdaHttpClient(clients, sleep=recorder.sleep),
    )
    with pytest.raises(AwsError) as caught:
        await router.route(TARGET, primary="1", canary="2", canary_percent=10, revision_id="any")
    assert type(caught.value) is error
    assert injector.attempts["UpdateAlias"] == clients.attempts["UpdateAlias"]
    assert injector.injected[("UpdateAlias", kind)] == injector.attempts["UpdateAlias"]
    await router.close()


async def test_a_success_that_is_not_json_is_a_transient_error(
    clients: AwsClients, recorder: Recorder
) -> None:
    page = HttpResponse(200, {"Content-Type": "text/html"}, b"<html>proxy says hello</html>")
    clients.intercept(Scripted("GetAlias", page))
    router = BotoAliasRouter(
        clients.settings, clients=clients, transport="http", http_client=LambdaHttpClient(clients)
    )
    with pytest.raises(AwsError, match="not JSON") as caught:
        await router.get_alias(TARGET)
    assert type(caught.value) is AwsError
    assert caught.value.transient
    assert recorder.outcomes == [("lambda", "GetAlias", "ResponseStreamingError")]
    await router.close()


# -- proxies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "proxies", "expected"),
    [
        ("https://lambda.eu-west-1.amazonaws.com", {"https_proxy": "http://proxy:3128"}, "http://proxy:3128"),
        ("https://lambda.eu-west-1.amazonaws.com", {"http_proxy": "http://proxy:3128"}, None),
        ("http://127.0.0.1:4566", {"http_proxy": "http://proxy:3128"}, "http://proxy:3128"),
        (
            "https://lambda.eu-west-1.amazonaws.com",
            {"https_proxy": "http://proxy:3128", "no_proxy": "localhost, .amazonaws.com"},
            None,
        ),
        (
            "https://lambda.eu-west-1.amazonaws.com",
            {"https_proxy": "http://proxy:3128", "no_proxy": "lambda.eu-west-1.amazonaws.com:443"},
            None,
        ),
        ("https://lambda.eu-west-1.amazonaws.com", {"https_proxy": "http://p:1", "no_proxy": "*"}, None),
        (
            "https://lambda.eu-west-1.amazonaws.com",
            {"https_proxy": "http://p:1", "no_proxy": "notamazonaws.com,s3.amazonaws.com"},
            "http://p:1",
        ),
    ],
)
def test_the_proxy_of_an_endpoint(endpoint: str, proxies: dict[str, str], expected: str | None) -> None:

    from lambda_rollouts.aws.lambda_http import proxy_for

    settings = Settings(https_proxy=None, http_proxy=None, no_proxy=None).model_copy(update=proxies)
    assert proxy_for(URL(endpoint), settings) == expected


async def test_requests_go_through_the_proxy(
    clients: AwsClients, endpoint: str, boto_session: boto3.session.Session, recorder: Recorder
) -> None:
    """A proxy that answers every request itself, recording the request lines it was sent."""
    seen: list[str] = []
    alias = {"Name": "live", "FunctionVersion": "7", "RevisionId": "r"}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            seen.append(head.split(b"\r\n", 1)[0].decode())
            body = json.dumps(alias).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            if reader.at_eof():
                break

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    settings = clients.settings.model_copy(update={"http_proxy": f"http://127.0.0.1:{port}"})
    proxied = AwsClients(settings, session_factory=lambda: boto_session, rate_limiter=RateLimiter())
    http = LambdaHttpClient(proxied)
    try:
        answer = await http.call("GetAlias", REGION, None, FunctionName=FUNCTION, Name="live")
    finally:
        await http.close()
        proxy.close()
    assert answer["FunctionVersion"] == "7"
    assert seen == [f"GET {endpoint}/2015-03-31/functions/{FUNCTION}/aliases/live HTTP/1.1"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://lambda.eu-west-1.amazonaws.com",
        "https://Lambda.EU-West-1.amazonaws.com:443/",
        "http://127.0.0.1:4566",
        "http://localhost:80",
        "https://vpce-1.lambda.eu-west-1.vpce.amazonaws.com:8443/base",
        "http://[::1]:4566",
        "https://[2001:db8::1]",
    ],
)
def test_the_signed_host_is_botocores(endpoint: str) -> None:
    from botocore.auth import _host_from_url

    from lambda_rollouts.aws.lambda_http import signed_host

    assert signed_host(URL(endpoint)) == _host_from_url(endpoint)
