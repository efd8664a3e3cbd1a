"""BotoAliasRouter against moto, observed and steered through botocore's own event hooks.

moto never changes an alias's RevisionId, never throttles and never refuses credentials, so those
behaviours are injected at the botocore layer (``before-call`` hooks answering in AWS's place);
the router's code runs unmodified.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.credentials import CredentialResolver
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from lambda_rollouts.aws.boto_router import SESSION_NAME, BotoAliasRouter
from lambda_rollouts.aws.router import LIST_VERSIONS_PAGE_SIZE
from lambda_rollouts.errors import (
    AccessDeniedError,
    AliasConflictError,
    AwsError,
    CredentialsMissingError,
    FunctionNotFoundError,
    InvalidRequestError,
    ThrottledError,
    VersionNotFoundError,
)
from lambda_rollouts.observed import Target, VersionInfo
from lambda_rollouts.sandbox.aws import sandbox_session, seed_demo_function
from lambda_rollouts.settings import Settings

REGION = "eu-west-1"
FUNCTION = "checkout-api"
TARGET = Target(function_name=FUNCTION, alias="live", region=REGION)

Register = Callable[..., None]
Answer = Callable[..., tuple[AWSResponse, dict[str, Any]]]


def settings(session_seconds: int = 3600) -> Settings:
    return Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION, assume_role_session_seconds=session_seconds)


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    return sandbox_session(REGION)


@pytest.fixture
def register(boto_session: boto3.session.Session) -> Iterator[Register]:
    """Register a botocore event handler on the session (clients copy them when created)."""
    registered: list[tuple[str, Callable[..., Any]]] = []

    def add(event: str, handler: Callable[..., Any], *, last: bool = False) -> None:
        if last:
            boto_session.events.register_last(event, handler)
        else:
            boto_session.events.register(event, handler)
        registered.append((event, handler))

    yield add
    for event, handler in registered:
        boto_session.events.unregister(event, handler)


@pytest.fixture
def seeded(boto_session: boto3.session.Session) -> Iterator[dict[str, str]]:
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield seed_demo_function(None, REGION, name=FUNCTION, alias=None, session=boto_session)


@pytest.fixture
def router(seeded: dict[str, str], boto_session: boto3.session.Session) -> BotoAliasRouter:
    return BotoAliasRouter(settings(), session_factory=lambda: boto_session)


def error_answer(code: str, status: int, message: str = "injected") -> Answer:
    """A before-call handler answering like AWS with an error, instead of sending the request."""

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        }
        return AWSResponse("https://lambda.invalid", status, HTTPHeaders(), None), parsed

    return answer


class LambdaRevisions:
    """Gives moto's alias a RevisionId that changes with every UpdateAlias, and enforces it (412)."""

    def __init__(self) -> None:
        self.counter = 0
        self.sent: list[dict[str, Any]] = []
        self.served: list[str] = []

    @property
    def current(self) -> str:
        return f"rev-{self.counter}"

    def install(self, register: Register) -> None:
        register("provide-client-params.lambda.UpdateAlias", self.capture)
        register("before-call.lambda.UpdateAlias", self.check)
        register("after-call.lambda.UpdateAlias", self.bump)
        register("after-call.lambda.GetAlias", self.serve)
        register("after-call.lambda.CreateAlias", self.serve)

    def capture(self, params: dict[str, Any], **_: Any) -> None:
        self.sent.append(dict(params))

    def check(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if self.sent[-1].get("RevisionId") == self.current:
            return None
        answer = error_answer("PreconditionFailedException", 412, "The Revision Id provided does not match")
        return answer()

    def bump(self, http_response: AWSResponse, parsed: dict[str, Any], **_: Any) -> None:
        if http_response.status_code < 300:  # moto answers 201 where Lambda answers 200
            self.counter += 1
            self.serve(http_response, parsed)

    def serve(self, http_response: AWSResponse, parsed: dict[str, Any], **_: Any) -> None:
        if http_response.status_code < 300:
            parsed["RevisionId"] = self.current
            self.served.append(self.current)


async def test_every_update_carries_the_revision_read_before_it(
    router: BotoAliasRouter, register: Register
) -> None:
    revisions = LambdaRevisions()
    revisions.install(register)

    created = await router.create_alias(TARGET, "1")
    split = await router.route(
        TARGET, primary="1", canary="2", canary_percent=10, revision_id=created.revision_id
    )
    with pytest.raises(AliasConflictError, match="PreconditionFailed"):
        await router.route(
            TARGET, primary="2", canary=None, canary_percent=0, revision_id=created.revision_id
        )
    reread = await router.get_alias(TARGET)
    assert reread is not None
    assert reread == split
    promoted = await router.route(
        TARGET, primary="2", canary=None, canary_percent=0, revision_id=reread.revision_id
    )

    assert [sent["RevisionId"] for sent in revisions.sent] == ["rev-0", "rev-0", "rev-1"]
    assert (created.revision_id, split.revision_id, promoted.revision_id) == ("rev-0", "rev-1", "rev-2")
    assert revisions.sent[0]["FunctionVersion"] == "1"
    assert revisions.sent[0]["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.1}}
    assert revisions.sent[2]["FunctionVersion"] == "2"
    assert revisions.sent[2]["RoutingConfig"] == {"AdditionalVersionWeights": {}}
    assert dict(promoted.routing) == {}
    # The refused write changed nothing: the split survived until the promotion.
    assert router.calls["UpdateAlias"] == 3


ROUTE_ERRORS = [
    ("PreconditionFailedException", 412, AliasConflictError),
    ("ResourceConflictException", 409, AliasConflictError),
    ("TooManyRequestsException", 429, ThrottledError),
    ("ThrottlingException", 400, ThrottledError),
    ("AccessDeniedException", 403, AccessDeniedError),
    ("UnrecognizedClientException", 403, AccessDeniedError),
    ("ExpiredTokenException", 403, AccessDeniedError),
    ("InvalidParameterValueException", 400, InvalidRequestError),
    ("SomethingNewException", 400, InvalidRequestError),
    ("ServiceException", 500, AwsError),
    ("", 503, AwsError),
]


@pytest.mark.parametrize(("code", "status", "expected"), ROUTE_ERRORS)
async def test_update_alias_errors_are_translated(
    router: BotoAliasRouter, register: Register, code: str, status: int, expected: type[AwsError]
) -> None:
    # Before the router's first call: clients copy the session's handlers when they are created.
    register("before-call.lambda.UpdateAlias", error_answer(code, status))
    created = await router.create_alias(TARGET, "1")
    with pytest.raises(expected) as caught:
        await router.route(
            TARGET, primary="1", canary="2", canary_percent=10, revision_id=created.revision_id
        )
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, ClientError)
    assert caught.value.transient is (expected in (AliasConflictError, ThrottledError, AwsError))
    assert router.calls["GetAlias"] == 0, "no read-back after a refused write"


async def test_update_alias_on_a_vanished_alias_is_a_conflict(
    router: BotoAliasRouter, register: Register
) -> None:
    arn = f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION}:live"
    register(
        "before-call.lambda.UpdateAlias",
        error_answer("ResourceNotFoundException", 404, f"Alias not found: {arn}"),
    )
    created = await router.create_alias(TARGET, "1")
    with pytest.raises(AliasConflictError, match="no longer exists"):
        await router.route(
            TARGET, primary="1", canary="2", canary_percent=10, revision_id=created.revision_id
        )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Function not found: arn:aws:lambda:eu-west-1:123456789012:function:checkout-api",
            FunctionNotFoundError,
        ),
        ("Alias not found: arn:aws:lambda:eu-west-1:123456789012:function:checkout-api:live", None),
        ("Cannot find alias arn: arn:aws:lambda:eu-west-1:123456789012:function:checkout-api:live", None),
    ],
)
async def test_get_alias_not_found_wordings(
    router: BotoAliasRouter, register: Register, message: str, expected: type[AwsError] | None
) -> None:
    register("before-call.lambda.GetAlias", error_answer("ResourceNotFoundException", 404, message))
    if expected is None:
        assert await router.get_alias(TARGET) is None
    else:
        with pytest.raises(expected):
            await router.get_alias(TARGET)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ResourceNotFoundException", 404, VersionNotFoundError),
        ("TooManyRequestsException", 429, ThrottledError),
        ("AccessDeniedException", 403, AccessDeniedError),
    ],
)
async def test_get_version_errors_are_translated(
    router: BotoAliasRouter, register: Register, code: str, status: int, expected: type[AwsError]
) -> None:
    answer = error_answer(code, status)
    register("before-call.lambda.GetFunctionConfiguration", only_qualified_factory(answer))
    with pytest.raises(expected):
        await router.get_version(TARGET, "2")


ARN = f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION}"
ROLE = "arn:aws:iam::123456789012:role/checkout-api-execution"
DLQ = f"arn:aws:sqs:{REGION}:123456789012:checkout-dlq"


def listed(version: str, **extra: Any) -> dict[str, Any]:
    """One entry of a ListVersionsByFunction answer, as Lambda shapes it."""
    return {
        "FunctionName": FUNCTION,
        "FunctionArn": f"{ARN}:{version}",
        "Version": version,
        "Role": ROLE,
        "CodeSha256": f"sha-of-{version}",
        "Description": f"release {version}",
        "State": "Active",
        "LastUpdateStatus": "Successful",
        **extra,
    }


def list_request(marker: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"FunctionName": FUNCTION, "MaxItems": LIST_VERSIONS_PAGE_SIZE}
    if marker is not None:
        request["Marker"] = marker
    return request


async def test_list_versions_follows_next_marker_page_by_page(router: BotoAliasRouter) -> None:
    with Stubber(router.lambda_client(REGION)) as stubber:
        stubber.add_response(
            "list_versions_by_function",
            {"Versions": [listed("$LATEST"), listed("1"), listed("2")], "NextMarker": "page-2"},
            list_request(),
        )
        stubber.add_response(
            "list_versions_by_function",
            {
                "Versions": [
                    listed("3", DeadLetterConfig={"TargetArn": DLQ}),
                    listed("10", State="Pending", LastUpdateStatus="InProgress"),
                ],
                "NextMarker": "page-3",
            },
            list_request("page-2"),
        )
        # An older version listed late still comes back in numeric order.
        stubber.add_response("list_versions_by_function", {"Versions": [listed("9")]}, list_request("page-3"))
        versions = await router.list_versions(TARGET)
        stubber.assert_no_pending_responses()

    assert [info.version for info in versions] == ["1", "2", "3", "9", "10"]
    assert versions[2] == VersionInfo(
        version="3",
        state="Active",
        last_update_status="Successful",
        role=ROLE,
        dead_letter_target_arn=DLQ,
        code_sha256="sha-of-3",
        function_arn=f"{ARN}:3",
        description="release 3",
    )
    assert (versions[4].state, versions[4].last_update_status) == ("Pending", "InProgress")
    assert versions[0].dead_letter_target_arn is None
    # The first paced call of the operator's own credentials asks STS for their account, once.
    assert router.calls == {"GetCallerIdentity": 1, "ListVersionsByFunction": 3}


async def test_list_versions_stops_at_a_repeated_marker(router: BotoAliasRouter) -> None:
    with Stubber(router.lambda_client(REGION)) as stubber:
        stubber.add_response(
            "list_versions_by_function", {"Versions": [listed("1")], "NextMarker": "again"}, list_request()
        )
        stubber.add_response(
            "list_versions_by_function",
            {"Versions": [listed("2")], "NextMarker": "again"},
            list_request("again"),
        )
        with pytest.raises(AwsError, match="NextMarker 'again' came back a second time"):
            await router.list_versions(TARGET)
        stubber.assert_no_pending_responses()
    assert router.calls == {"GetCallerIdentity": 1, "ListVersionsByFunction": 2}


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ResourceNotFoundException", 404, FunctionNotFoundError),
        ("TooManyRequestsException", 429, ThrottledError),
        ("AccessDeniedException", 403, AccessDeniedError),
        ("InvalidParameterValueException", 400, InvalidRequestError),
        ("ServiceException", 500, AwsError),
    ],
)
async def test_list_versions_errors_are_translated(
    router: BotoAliasRouter, register: Register, code: str, status: int, expected: type[AwsError]
) -> None:
    register("before-call.lambda.ListVersionsByFunction", error_answer(code, status))
    with pytest.raises(expected) as caught:
        await router.list_versions(TARGET)
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, ClientError)


async def test_list_versions_fails_on_any_page(router: BotoAliasRouter) -> None:
    with Stubber(router.lambda_client(REGION)) as stubber:
        stubber.add_response(
            "list_versions_by_function", {"Versions": [listed("1")], "NextMarker": "page-2"}, list_request()
        )
        stubber.add_client_error(
            "list_versions_by_function", "TooManyRequestsException", "Rate exceeded", 429
        )
        with pytest.raises(ThrottledError):
            await router.list_versions(TARGET)
        stubber.assert_no_pending_responses()
    assert router.calls == {"GetCallerIdentity": 1, "ListVersionsByFunction": 2}


async def test_an_empty_listing_is_settled_by_the_existence_probe(router: BotoAliasRouter) -> None:
    # moto answers an empty list for a function it does not know; Lambda would answer 404.
    missing = Target(function_name="no-such-function", alias="live", region=REGION)
    with pytest.raises(FunctionNotFoundError):
        await router.list_versions(missing)
    probed = {"GetCallerIdentity": 1, "GetFunctionConfiguration": 1}
    assert router.calls == {"ListVersionsByFunction": 1, **probed}
    # A function that exists always lists $LATEST, so no probe is needed.
    assert [info.version for info in await router.list_versions(TARGET)] == ["1", "2"]
    assert router.calls == {"ListVersionsByFunction": 2, **probed}


def only_qualified_factory(answer: Callable[..., Any]) -> Callable[..., Any]:
    def only_qualified(params: dict[str, Any], **kwargs: Any) -> Any:
        # The existence probe (no qualifier) must reach moto, which knows the function.
        query = params.get("query_string") or {}
        return answer(**kwargs) if "Qualifier" in query else None

    return only_qualified


async def test_missing_credentials(seeded: dict[str, str]) -> None:
    core = botocore.session.Session()
    core.register_component("credential_provider", CredentialResolver(providers=[]))
    router = BotoAliasRouter(settings(), session_factory=lambda: boto3.session.Session(botocore_session=core))
    with pytest.raises(CredentialsMissingError) as caught:
        await router.get_alias(TARGET)
    assert not caught.value.transient


async def test_unreachable_endpoint_is_transient(
    boto_session: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{closed_port}"
    # Every service: the account question (STS) goes there too, and fails the same way.
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    router = BotoAliasRouter(
        settings(),
        session_factory=lambda: boto_session,
        client_config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1),
    )
    assert router.lambda_client(REGION).meta.endpoint_url == endpoint
    with pytest.raises(AwsError) as caught:
        await router.get_alias(TARGET)
    assert type(caught.value) is AwsError
    assert caught.value.transient


async def test_calls_run_off_the_event_loop(router: BotoAliasRouter, register: Register) -> None:
    threads: list[int] = []
    register("before-call.lambda", lambda **_: threads.append(threading.get_ident()))
    register("creating-client-class.lambda", lambda **_: threads.append(threading.get_ident()))

    await router.get_alias(TARGET)
    created = await router.create_alias(TARGET, "1")
    await router.route(TARGET, primary="1", canary="2", canary_percent=5, revision_id=created.revision_id)
    await router.get_version(TARGET, "2")
    await router.list_versions(TARGET)

    assert len(threads) == 7  # client creation + 6 calls (UpdateAlias answers with the alias)
    assert threading.get_ident() not in threads


async def test_calls_are_counted_per_operation(router: BotoAliasRouter) -> None:
    assert await router.get_alias(TARGET) is None
    created = await router.create_alias(TARGET, "1")
    await router.route(TARGET, primary="1", canary="2", canary_percent=5, revision_id=created.revision_id)
    await router.get_version(TARGET, "2")
    assert router.calls == {
        "GetCallerIdentity": 1,  # the account of the operator's own credentials, asked once
        "GetAlias": 1,  # route needs no read-back: UpdateAlias answers with the alias
        "GetFunctionConfiguration": 2,  # the existence probe behind the absent alias, and get_version
        "CreateAlias": 1,
        "UpdateAlias": 1,
    }


def test_clients_are_cached_per_region_and_role(router: BotoAliasRouter) -> None:
    assert router.lambda_client(REGION) is router.lambda_client(REGION)
    assert router.lambda_client(REGION) is not router.lambda_client("us-east-1")
    assert router.lambda_client("us-east-1").meta.region_name == "us-east-1"


async def test_empty_region_falls_back_to_the_default(router: BotoAliasRouter) -> None:
    created = await router.create_alias(Target(function_name=FUNCTION, alias="live", region=""), "1")
    assert created == await router.get_alias(TARGET)


class TestAssumeRole:
    @pytest.fixture
    def now(self) -> list[datetime]:
        return [datetime.now(UTC)]

    @pytest.fixture
    def role_target(self, seeded: dict[str, str]) -> Target:
        return Target(function_name=FUNCTION, alias="live", region=REGION, role_arn=seeded["role_arn"])

    @pytest.fixture
    def assume_requests(self, register: Register) -> list[dict[str, Any]]:
        captured: list[dict[str, Any]] = []
        register("provide-client-params.sts.AssumeRole", lambda params, **_: captured.append(dict(params)))
        return captured

    @pytest.fixture
    def lambda_access_keys(self, register: Register) -> list[str]:
        keys: list[str] = []

        def signed_with(request: Any, **_: Any) -> None:
            authorization = str(request.headers["Authorization"])
            keys.append(authorization.split("Credential=")[1].split("/")[0])

        # Last, so the request is already signed when it is inspected.
        register("request-created.lambda", signed_with, last=True)
        return keys

    @pytest.fixture
    def role_router(self, boto_session: boto3.session.Session, now: list[datetime]) -> BotoAliasRouter:
        return BotoAliasRouter(
            settings(session_seconds=900), session_factory=lambda: boto_session, clock=lambda: now[0]
        )

    async def test_credentials_are_reused_until_shortly_before_expiry(
        self,
        role_router: BotoAliasRouter,
        role_target: Target,
        now: list[datetime],
        assume_requests: list[dict[str, Any]],
        lambda_access_keys: list[str],
    ) -> None:
        await role_router.get_alias(role_target)
        await role_router.create_alias(role_target, "1")
        now[0] += timedelta(minutes=9)  # 15-minute session, refreshed 5 minutes early: still valid
        await role_router.get_version(role_target, "1")
        assert role_router.calls["AssumeRole"] == 1

        now[0] += timedelta(minutes=2)  # 11 minutes in: within the refresh margin
        await role_router.get_version(role_target, "2")
        assert role_router.calls["AssumeRole"] == 2

        assert [request["RoleArn"] for request in assume_requests] == [role_target.role_arn] * 2
        assert {request["RoleSessionName"] for request in assume_requests} == {SESSION_NAME}
        assert {request["DurationSeconds"] for request in assume_requests} == {900}
        first, refreshed = lambda_access_keys[0], lambda_access_keys[-1]
        assert first.startswith("ASIA"), "lambda calls use the assumed role, not the base credentials"
        assert refreshed.startswith("ASIA")
        assert refreshed != first
        assert set(lambda_access_keys[:-1]) == {first}

    async def test_expired_token_refreshes_and_retries_once(
        self, role_router: BotoAliasRouter, role_target: Target, register: Register
    ) -> None:
        expired = error_answer(
            "ExpiredTokenException", 403, "The security token included in the request is expired"
        )
        answers = iter([expired])
        register("before-call.lambda.GetAlias", lambda **kwargs: next(answers, lambda **_: None)(**kwargs))
        assert await role_router.get_alias(role_target) is None
        assert role_router.calls["AssumeRole"] == 2
        assert role_router.calls["GetAlias"] == 2

    async def test_refused_assume_role_is_access_denied(
        self, role_router: BotoAliasRouter, role_target: Target, register: Register
    ) -> None:
        register("before-call.sts.AssumeRole", error_answer("AccessDenied", 403, "not authorized"))
        with pytest.raises(AccessDeniedError, match="AssumeRole"):
            await role_router.get_alias(role_target)
