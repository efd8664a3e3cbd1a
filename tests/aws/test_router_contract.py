"""The AliasRouter contract, run against both implementations.

``BotoAliasRouter`` runs on moto in-process and on moto's server, reached over HTTP through
botocore's own endpoint resolution as the operator reaches AWS (moto stores aliases but checks none
of Lambda's routing rules); ``FakeLambda`` is the strict fake. Whatever passes here holds for both, so tests
elsewhere may use the fake in place of AWS.

moto answers ``ListVersionsByFunction`` in one page whatever ``MaxItems`` says, so the page count
is asserted per implementation here; ``test_boto_router`` drives the boto3 router through several
pages with botocore's Stubber.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import boto3
import pytest
from moto import mock_aws

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.aws.router import LIST_VERSIONS_PAGE_SIZE, AliasRouter
from lambda_rollouts.errors import (
    AliasConflictError,
    FunctionNotFoundError,
    InvalidRequestError,
    VersionNotFoundError,
)
from lambda_rollouts.observed import AliasState, Target
from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session, seed_demo_function
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.fake_lambda import DEFAULT_ROLE, FakeLambda

REGION = "eu-west-1"
FUNCTION = "checkout-api"
ALIAS = "live"


@dataclass(frozen=True)
class RouterUnderTest:
    router: AliasRouter
    role_arn: str
    stable: str
    canary: str
    # Calls by Lambda API name, as the implementation counts them.
    calls: Counter[str]
    # Publish a version of FUNCTION with code of its own; return its number.
    publish: Callable[[], str]
    # Create a function that has no published version.
    add_bare_function: Callable[[str], None]
    # Whether the backend answers ListVersionsByFunction in pages of LIST_VERSIONS_PAGE_SIZE.
    pages: bool

    @property
    def target(self) -> Target:
        return Target(function_name=FUNCTION, alias=ALIAS, region=REGION)

    @property
    def missing_function(self) -> Target:
        return Target(function_name="no-such-function", alias=ALIAS, region=REGION)


def isolated_settings() -> Settings:
    # By alias: the field reads AWS_REGION, which must not leak in from the shell.
    return Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION)


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    # One session for the module: it caches the parsed service models, which are slow to load.
    return sandbox_session(REGION)


@pytest.fixture(params=["boto-on-moto", "boto-on-moto-server", "strict-fake"])
async def under_test(
    request: pytest.FixtureRequest, boto_session: boto3.session.Session
) -> AsyncIterator[RouterUnderTest]:
    if request.param == "strict-fake":
        fake = FakeLambda()
        fake.add_function(FUNCTION)
        stable, canary = fake.publish_version(FUNCTION), fake.publish_version(FUNCTION)
        yield RouterUnderTest(
            router=fake,
            role_arn=DEFAULT_ROLE,
            stable=stable,
            canary=canary,
            calls=fake.calls,
            publish=lambda: fake.publish_version(FUNCTION),
            add_bare_function=lambda name: add_fake_function(fake, name),
            pages=True,
        )
        return
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "boto-on-moto-server":
            endpoint: str | None = stack.enter_context(MotoSandbox()).endpoint_url
            # The router is not told the endpoint: its session's configuration names it.
            router = BotoAliasRouter(
                isolated_settings(), session_factory=lambda: sandbox_session(REGION, endpoint_url=endpoint)
            )
            stack.push_async_callback(router.close)
        else:
            stack.enter_context(mock_aws(config={"lambda": {"use_docker": False}}))
            endpoint = None
            router = BotoAliasRouter(isolated_settings(), session_factory=lambda: boto_session)
        seeded = seed_demo_function(endpoint, REGION, name=FUNCTION, alias=None, session=boto_session)
        releases = itertools.count(3)
        lambda_client = boto_session.client("lambda", region_name=REGION, endpoint_url=endpoint)

        def add_bare_function(name: str) -> None:
            lambda_client.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=seeded["role_arn"],
                Handler="index.handler",
                Code={"ZipFile": handler_zip(0)},
            )

        def publish() -> str:
            # Publishing unchanged code returns the existing version: each release gets its own.
            release = next(releases)
            lambda_client.update_function_code(FunctionName=FUNCTION, ZipFile=handler_zip(release))
            return lambda_client.publish_version(FunctionName=FUNCTION, Description=f"release {release}")[
                "Version"
            ]

        yield RouterUnderTest(
            router=router,
            role_arn=seeded["role_arn"],
            stable=seeded["stable_version"],
            canary=seeded["canary_version"],
            calls=router.calls,
            publish=publish,
            add_bare_function=add_bare_function,
            pages=False,
        )


def add_fake_function(fake: FakeLambda, name: str) -> None:
    fake.add_function(name)


def handler_zip(release: int) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("index.py", f"def handler(event, context):\n    return {{'release': {release}}}\n")
    return archive.getvalue()


async def created(env: RouterUnderTest) -> AliasState:
    return await env.router.create_alias(env.target, env.stable)


async def test_absent_alias_reads_as_none(under_test: RouterUnderTest) -> None:
    assert await under_test.router.get_alias(under_test.target) is None


async def test_missing_function(under_test: RouterUnderTest) -> None:
    router, missing = under_test.router, under_test.missing_function
    with pytest.raises(FunctionNotFoundError):
        await router.get_alias(missing)
    with pytest.raises(FunctionNotFoundError):
        await router.create_alias(missing, "1")
    with pytest.raises(FunctionNotFoundError):
        await router.get_version(missing, "1")


async def test_create_alias(under_test: RouterUnderTest) -> None:
    state = await created(under_test)
    assert state.function_version == under_test.stable
    assert dict(state.routing) == {}
    assert state.revision_id
    assert await under_test.router.get_alias(under_test.target) == state


async def test_create_alias_twice_conflicts(under_test: RouterUnderTest) -> None:
    await created(under_test)
    with pytest.raises(AliasConflictError):
        await created(under_test)


async def test_create_alias_on_missing_version(under_test: RouterUnderTest) -> None:
    with pytest.raises(VersionNotFoundError):
        await under_test.router.create_alias(under_test.target, "99")


async def test_route_to_a_split(under_test: RouterUnderTest) -> None:
    env = under_test
    before = await created(env)
    state = await env.router.route(
        env.target, primary=env.stable, canary=env.canary, canary_percent=10, revision_id=before.revision_id
    )
    assert state.function_version == env.stable
    assert dict(state.routing) == {env.canary: 10.0}
    assert state.percent_on(env.canary) == 10.0
    assert state.percent_on(env.stable) == 90.0
    assert await env.router.get_alias(env.target) == state


async def test_fractional_percent_reads_back_rounded(under_test: RouterUnderTest) -> None:
    env = under_test
    before = await created(env)
    state = await env.router.route(
        env.target,
        primary=env.stable,
        canary=env.canary,
        canary_percent=33.333,
        revision_id=before.revision_id,
    )
    assert dict(state.routing) == {env.canary: 33.33}


async def split(env: RouterUnderTest, percent: float = 50) -> AliasState:
    before = await created(env)
    return await env.router.route(
        env.target,
        primary=env.stable,
        canary=env.canary,
        canary_percent=percent,
        revision_id=before.revision_id,
    )


async def test_promotion_clears_the_map(under_test: RouterUnderTest) -> None:
    env = under_test
    during = await split(env)
    state = await env.router.route(
        env.target, primary=env.canary, canary=None, canary_percent=0, revision_id=during.revision_id
    )
    assert state.function_version == env.canary
    assert dict(state.routing) == {}
    assert state.percent_on(env.canary) == 100.0


async def test_full_weight_is_written_as_a_promotion(under_test: RouterUnderTest) -> None:
    env = under_test
    during = await split(env)
    state = await env.router.route(
        env.target, primary=env.stable, canary=env.canary, canary_percent=100, revision_id=during.revision_id
    )
    assert state.function_version == env.canary
    assert dict(state.routing) == {}


async def test_rollback_clears_the_map(under_test: RouterUnderTest) -> None:
    env = under_test
    during = await split(env, 25)
    state = await env.router.route(
        env.target, primary=env.stable, canary=None, canary_percent=0, revision_id=during.revision_id
    )
    assert state.function_version == env.stable
    assert dict(state.routing) == {}
    assert state.percent_on(env.canary) == 0.0


async def test_zero_percent_clears_the_map(under_test: RouterUnderTest) -> None:
    env = under_test
    during = await split(env)
    state = await env.router.route(
        env.target, primary=env.stable, canary=env.canary, canary_percent=0, revision_id=during.revision_id
    )
    assert dict(state.routing) == {}


async def test_canary_equal_to_primary_is_refused_and_nothing_written(under_test: RouterUnderTest) -> None:
    env = under_test
    before = await created(env)
    with pytest.raises(InvalidRequestError):
        await env.router.route(
            env.target,
            primary=env.canary,
            canary=env.canary,
            canary_percent=10,
            revision_id=before.revision_id,
        )
    assert await env.router.get_alias(env.target) == before


@pytest.mark.parametrize(("primary", "canary"), [("$LATEST", "2"), ("1", "$LATEST")])
async def test_latest_is_refused(under_test: RouterUnderTest, primary: str, canary: str) -> None:
    before = await created(under_test)
    with pytest.raises(InvalidRequestError):
        await under_test.router.route(
            under_test.target,
            primary=primary,
            canary=canary,
            canary_percent=10,
            revision_id=before.revision_id,
        )


async def test_route_needs_a_revision(under_test: RouterUnderTest) -> None:
    env = under_test
    await created(env)
    with pytest.raises(InvalidRequestError):
        await env.router.route(
            env.target, primary=env.stable, canary=env.canary, canary_percent=10, revision_id=""
        )


async def test_route_to_a_missing_primary_version(under_test: RouterUnderTest) -> None:
    env = under_test
    before = await created(env)
    with pytest.raises(VersionNotFoundError):
        await env.router.route(
            env.target, primary="99", canary=None, canary_percent=0, revision_id=before.revision_id
        )


async def test_route_on_a_missing_alias_conflicts(under_test: RouterUnderTest) -> None:
    env = under_test
    with pytest.raises(AliasConflictError):
        await env.router.route(
            env.target, primary=env.stable, canary=None, canary_percent=0, revision_id="r-1"
        )


async def test_route_on_a_missing_function(under_test: RouterUnderTest) -> None:
    with pytest.raises(FunctionNotFoundError):
        await under_test.router.route(
            under_test.missing_function, primary="1", canary=None, canary_percent=0, revision_id="r-1"
        )


async def test_get_version(under_test: RouterUnderTest) -> None:
    env = under_test
    stable = await env.router.get_version(env.target, env.stable)
    canary = await env.router.get_version(env.target, env.canary)
    assert canary.version == env.canary
    assert canary.state == "Active"
    assert canary.last_update_status == "Successful"
    assert canary.role == env.role_arn
    assert canary.dead_letter_target_arn is None
    assert canary.code_sha256
    assert canary.code_sha256 != stable.code_sha256


async def test_get_missing_version(under_test: RouterUnderTest) -> None:
    with pytest.raises(VersionNotFoundError):
        await under_test.router.get_version(under_test.target, "99")


@pytest.mark.parametrize("version", ["$LATEST", "live"])
async def test_get_version_refuses_unpublished_qualifiers(under_test: RouterUnderTest, version: str) -> None:
    with pytest.raises(InvalidRequestError):
        await under_test.router.get_version(under_test.target, version)


async def test_list_versions_in_order_with_their_code(under_test: RouterUnderTest) -> None:
    env = under_test
    published = [env.stable, env.canary] + [env.publish() for _ in range(3)]
    listed = await env.router.list_versions(env.target)
    assert [info.version for info in listed] == published == ["1", "2", "3", "4", "5"]
    assert all(info.code_sha256 for info in listed)
    assert len({info.code_sha256 for info in listed}) == 5
    assert {(info.state, info.last_update_status, info.role) for info in listed} == {
        ("Active", "Successful", env.role_arn)
    }
    assert all(info.function_arn.endswith(f":function:{FUNCTION}:{info.version}") for info in listed)
    # Each described as get_version describes it.
    assert listed == [await env.router.get_version(env.target, version) for version in published]
    assert env.calls["ListVersionsByFunction"] == 1


async def test_list_versions_reads_every_page(under_test: RouterUnderTest) -> None:
    env = under_test
    # With $LATEST, one entry more than two full pages.
    count = 2 * LIST_VERSIONS_PAGE_SIZE
    for _ in range(count - 2):
        env.publish()
    listed = await env.router.list_versions(env.target)
    assert [info.version for info in listed] == [str(number) for number in range(1, count + 1)]
    assert len({info.code_sha256 for info in listed}) == count
    assert env.calls["ListVersionsByFunction"] == (3 if env.pages else 1)


async def test_list_versions_of_a_function_without_published_versions(under_test: RouterUnderTest) -> None:
    under_test.add_bare_function("bare")
    bare = Target(function_name="bare", alias=ALIAS, region=REGION)
    assert await under_test.router.list_versions(bare) == []


async def test_list_versions_of_a_missing_function(under_test: RouterUnderTest) -> None:
    with pytest.raises(FunctionNotFoundError):
        await under_test.router.list_versions(under_test.missing_function)
