"""FakeLambda enforces the Lambda rules that moto lets through (DESIGN.md section 3)."""

from __future__ import annotations

import pytest

from lambda_rollouts.aws.router import LIST_VERSIONS_PAGE_SIZE
from lambda_rollouts.errors import (
    AliasConflictError,
    FunctionNotFoundError,
    InvalidRequestError,
    ThrottledError,
    VersionNotFoundError,
)
from lambda_rollouts.observed import AliasState, Target
from lambda_rollouts.testing.fake_lambda import FakeLambda, RecordedWrite

FUNCTION = "checkout-api"
TARGET = Target(function_name=FUNCTION, alias="live", region="eu-west-1")


@pytest.fixture
def fake() -> FakeLambda:
    lambda_ = FakeLambda()
    lambda_.add_function(FUNCTION)
    for _ in range(3):
        lambda_.publish_version(FUNCTION)
    return lambda_


@pytest.fixture
def live(fake: FakeLambda) -> AliasState:
    return fake.put_alias(FUNCTION, "live", "1")


async def test_every_write_changes_the_revision(fake: FakeLambda, live: AliasState) -> None:
    split = await fake.route(TARGET, primary="1", canary="2", canary_percent=10, revision_id=live.revision_id)
    more = await fake.route(TARGET, primary="1", canary="2", canary_percent=20, revision_id=split.revision_id)
    assert len({live.revision_id, split.revision_id, more.revision_id}) == 3


async def test_stale_revision_is_a_conflict_and_writes_nothing(fake: FakeLambda, live: AliasState) -> None:
    await fake.route(TARGET, primary="1", canary="2", canary_percent=10, revision_id=live.revision_id)
    current = fake.alias_state(FUNCTION, "live")
    with pytest.raises(AliasConflictError, match="PreconditionFailed"):
        await fake.route(TARGET, primary="1", canary="2", canary_percent=50, revision_id=live.revision_id)
    assert fake.alias_state(FUNCTION, "live") == current
    assert len(fake.writes) == 1


async def test_external_change_bumps_the_revision(fake: FakeLambda, live: AliasState) -> None:
    changed = fake.set_alias_externally(FUNCTION, "live", "3")
    assert changed.revision_id != live.revision_id
    assert await fake.get_alias(TARGET) == changed
    with pytest.raises(AliasConflictError):
        await fake.route(TARGET, primary="1", canary="2", canary_percent=10, revision_id=live.revision_id)
    assert fake.writes == []


@pytest.mark.parametrize("percent", [-5, 100.5, 150])
async def test_weight_out_of_range(fake: FakeLambda, live: AliasState, percent: float) -> None:
    with pytest.raises(InvalidRequestError, match="out of range"):
        await fake.route(
            TARGET, primary="1", canary="2", canary_percent=percent, revision_id=live.revision_id
        )
    with pytest.raises(InvalidRequestError, match="out of range"):
        fake.put_alias(FUNCTION, "other", "1", {"2": percent})


@pytest.mark.parametrize(
    ("primary", "routing"), [("$LATEST", {}), ("$LATEST", {"2": 10}), ("1", {"$LATEST": 10})]
)
def test_latest_is_refused_as_primary_or_extra(
    fake: FakeLambda, primary: str, routing: dict[str, float]
) -> None:
    with pytest.raises(InvalidRequestError, match="LATEST"):
        fake.put_alias(FUNCTION, "live", primary, routing)


async def test_latest_is_refused_through_route(fake: FakeLambda, live: AliasState) -> None:
    with pytest.raises(InvalidRequestError):
        await fake.route(
            TARGET, primary="$LATEST", canary=None, canary_percent=0, revision_id=live.revision_id
        )
    with pytest.raises(InvalidRequestError):
        await fake.route(
            TARGET, primary="1", canary="$LATEST", canary_percent=5, revision_id=live.revision_id
        )


def test_at_most_one_extra_version(fake: FakeLambda) -> None:
    with pytest.raises(InvalidRequestError, match="at most one"):
        fake.put_alias(FUNCTION, "live", "1", {"2": 10, "3": 10})


async def test_primary_may_not_be_in_the_map(fake: FakeLambda, live: AliasState) -> None:
    with pytest.raises(InvalidRequestError, match="already included in routing configuration"):
        fake.put_alias(FUNCTION, "other", "2", {"2": 10})
    with pytest.raises(InvalidRequestError, match="already included in routing configuration"):
        await fake.route(TARGET, primary="2", canary="2", canary_percent=10, revision_id=live.revision_id)


async def test_versions_must_exist(fake: FakeLambda, live: AliasState) -> None:
    with pytest.raises(VersionNotFoundError):
        await fake.route(TARGET, primary="1", canary="9", canary_percent=10, revision_id=live.revision_id)
    with pytest.raises(VersionNotFoundError):
        await fake.route(TARGET, primary="9", canary=None, canary_percent=0, revision_id=live.revision_id)
    with pytest.raises(VersionNotFoundError):
        fake.put_alias(FUNCTION, "other", "1", {"9": 10})
    assert fake.alias_state(FUNCTION, "live") == live


@pytest.mark.parametrize("version", ["$LATEST", "live", "1.0"])
async def test_only_published_versions_get_an_alias(fake: FakeLambda, version: str) -> None:
    with pytest.raises(InvalidRequestError):
        await fake.create_alias(TARGET, version)


def test_the_function_must_exist(fake: FakeLambda) -> None:
    with pytest.raises(FunctionNotFoundError):
        fake.put_alias("no-such-function", "live", "1")


def test_versions_share_role_and_dead_letter_config() -> None:
    fake = FakeLambda()
    fake.add_function(FUNCTION, role="arn:aws:iam::123456789012:role/a")
    fake.publish_version(FUNCTION)
    fake.publish_version(FUNCTION, role="arn:aws:iam::123456789012:role/b")
    fake.publish_version(FUNCTION, dead_letter_target_arn="arn:aws:sqs:eu-west-1:123456789012:dlq")
    with pytest.raises(InvalidRequestError, match="execution roles"):
        fake.put_alias(FUNCTION, "live", "1", {"2": 10})
    with pytest.raises(InvalidRequestError, match="dead-letter"):
        fake.put_alias(FUNCTION, "live", "1", {"3": 10})


async def test_function_named_by_arn(fake: FakeLambda, live: AliasState) -> None:
    by_arn = Target(
        function_name=f"arn:aws:lambda:eu-west-1:123456789012:function:{FUNCTION}",
        alias="live",
        region="eu-west-1",
    )
    assert await fake.get_alias(by_arn) == live


async def test_writes_and_calls_are_recorded(fake: FakeLambda) -> None:
    created = await fake.create_alias(TARGET, "1")
    split = await fake.route(
        TARGET, primary="1", canary="2", canary_percent=10, revision_id=created.revision_id
    )
    await fake.route(TARGET, primary="2", canary=None, canary_percent=0, revision_id=split.revision_id)
    await fake.get_version(TARGET, "2")
    assert [(w.operation, w.primary, dict(w.routing)) for w in fake.writes] == [
        ("CreateAlias", "1", {}),
        ("UpdateAlias", "1", {"2": 10.0}),
        ("UpdateAlias", "2", {}),
    ]
    assert fake.writes[1] == RecordedWrite(
        operation="UpdateAlias",
        function_name=FUNCTION,
        alias="live",
        primary="1",
        routing={"2": 10.0},
        revision_id=split.revision_id,
    )
    # route answers with the alias as UpdateAlias does: no GetAlias of its own.
    assert fake.calls == {"CreateAlias": 1, "UpdateAlias": 2, "GetFunctionConfiguration": 1}


async def test_injected_failure_hits_the_next_call_only(fake: FakeLambda, live: AliasState) -> None:
    fake.fail_next("UpdateAlias", ThrottledError("Rate exceeded"))
    with pytest.raises(ThrottledError):
        await fake.route(TARGET, primary="1", canary="2", canary_percent=10, revision_id=live.revision_id)
    assert fake.writes == []
    assert fake.alias_state(FUNCTION, "live") == live
    state = await fake.route(TARGET, primary="1", canary="2", canary_percent=10, revision_id=live.revision_id)
    assert dict(state.routing) == {"2": 10.0}
    assert fake.calls["UpdateAlias"] == 2


async def test_version_state_is_reported(fake: FakeLambda) -> None:
    pending = fake.publish_version(FUNCTION, state="Pending", last_update_status="InProgress")
    info = await fake.get_version(TARGET, pending)
    assert (info.state, info.last_update_status) == ("Pending", "InProgress")
    fake.set_version_state(FUNCTION, pending, state="Active")
    assert (await fake.get_version(TARGET, pending)).state == "Active"


@pytest.mark.parametrize(
    ("published", "pages"),
    [
        (0, 1),
        (LIST_VERSIONS_PAGE_SIZE - 1, 1),  # with $LATEST, one full page
        (LIST_VERSIONS_PAGE_SIZE, 2),
        (2 * LIST_VERSIONS_PAGE_SIZE - 1, 2),
        (2 * LIST_VERSIONS_PAGE_SIZE, 3),
    ],
)
async def test_list_versions_counts_a_call_per_page_like_lambda(published: int, pages: int) -> None:
    fake = FakeLambda()
    fake.add_function(FUNCTION)
    for _ in range(published):
        fake.publish_version(FUNCTION)
    listed = await fake.list_versions(TARGET)
    assert [info.version for info in listed] == [str(number) for number in range(1, published + 1)]
    assert fake.calls == {"ListVersionsByFunction": pages}


async def test_list_versions_reports_what_was_seeded(fake: FakeLambda) -> None:
    code = "Mx+yMFRqL9kJFHS9BGugOKKhUwbHGCwBT4wCOOjakXc="
    dlq = "arn:aws:sqs:eu-west-1:123456789012:checkout-dlq"
    built = fake.publish_version(
        FUNCTION,
        code_sha256=code,
        description="build 1842",
        dead_letter_target_arn=dlq,
        state="Pending",
        last_update_status="InProgress",
    )
    listed = await fake.list_versions(TARGET)
    assert [info.version for info in listed] == ["1", "2", "3", built]
    assert listed[-1] == await fake.get_version(TARGET, built)
    assert (listed[-1].code_sha256, listed[-1].description, listed[-1].dead_letter_target_arn) == (
        code,
        "build 1842",
        dlq,
    )
    assert (listed[-1].state, listed[-1].last_update_status) == ("Pending", "InProgress")
    assert listed[0].description == ""
    assert len({info.code_sha256 for info in listed}) == 4


async def test_list_versions_of_a_function_named_by_arn(fake: FakeLambda) -> None:
    by_arn = Target(
        function_name=f"arn:aws:lambda:eu-west-1:123456789012:function:{FUNCTION}",
        alias="live",
        region="eu-west-1",
    )
    assert [info.version for info in await fake.list_versions(by_arn)] == ["1", "2", "3"]


async def test_list_versions_of_a_missing_function_is_counted(fake: FakeLambda) -> None:
    missing = Target(function_name="no-such-function", alias="live", region="eu-west-1")
    with pytest.raises(FunctionNotFoundError):
        await fake.list_versions(missing)
    assert fake.calls == {"ListVersionsByFunction": 1}


async def test_list_versions_injected_failure(fake: FakeLambda) -> None:
    fake.fail_next("ListVersionsByFunction", ThrottledError("Rate exceeded"))
    with pytest.raises(ThrottledError):
        await fake.list_versions(TARGET)
    assert [info.version for info in await fake.list_versions(TARGET)] == ["1", "2", "3"]
    assert fake.calls == {"ListVersionsByFunction": 2}
