"""The AWS sandbox: moto served over real HTTP on loopback, seeded with the demo function."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.observed import Target
from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session, seed_demo_function, start_moto_server
from lambda_rollouts.settings import Settings

REGION = "eu-west-1"


def accepts_connections(endpoint_url: str) -> bool:
    parts = urlsplit(endpoint_url)
    assert parts.hostname is not None
    assert parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def sandbox() -> Iterator[MotoSandbox]:
    with MotoSandbox() as running:
        yield running


def test_serves_on_a_loopback_port_and_stop_frees_it() -> None:
    sandbox = start_moto_server()
    endpoint_url = sandbox.endpoint_url
    parts = urlsplit(endpoint_url)
    assert parts.scheme == "http"
    assert parts.hostname == "127.0.0.1"
    assert parts.port
    assert accepts_connections(endpoint_url)

    sandbox.stop()
    assert not sandbox.running
    assert not accepts_connections(endpoint_url)
    with pytest.raises(RuntimeError, match="not running"):
        _ = sandbox.endpoint_url
    sandbox.stop()  # idempotent


def test_seed_demo_function_over_http(sandbox: MotoSandbox) -> None:
    seeded = seed_demo_function(sandbox.endpoint_url, REGION)
    assert seeded["function_name"] == "checkout-api"
    assert seeded["alias"] == "live"
    assert (seeded["stable_version"], seeded["canary_version"]) == ("1", "2")
    assert seeded["function_arn"].endswith(":function:checkout-api")
    assert seeded["role_arn"].startswith("arn:aws:iam::")

    client = sandbox_session(REGION).client("lambda", endpoint_url=sandbox.endpoint_url)
    alias = client.get_alias(FunctionName="checkout-api", Name="live")
    assert alias["FunctionVersion"] == "1"
    versions = client.list_versions_by_function(FunctionName="checkout-api")["Versions"]
    assert [version["Version"] for version in versions] == ["$LATEST", "1", "2"]
    shas = {version["Version"]: version["CodeSha256"] for version in versions}
    assert shas["1"] != shas["2"]


async def test_boto_router_drives_the_sandbox(sandbox: MotoSandbox) -> None:
    seeded = seed_demo_function(sandbox.endpoint_url, REGION)
    settings = Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION)
    # The router is not told the endpoint: the sandbox's session names it, as the sandbox's operator's.
    router = BotoAliasRouter(
        settings, session_factory=lambda: sandbox_session(REGION, endpoint_url=sandbox.endpoint_url)
    )
    target = Target(function_name=seeded["function_name"], alias=seeded["alias"], region=REGION)

    current = await router.get_alias(target)
    assert current is not None
    assert current.function_version == "1"
    split = await router.route(
        target, primary="1", canary="2", canary_percent=10, revision_id=current.revision_id
    )
    assert dict(split.routing) == {"2": 10.0}
    promoted = await router.route(
        target, primary="2", canary=None, canary_percent=0, revision_id=split.revision_id
    )
    assert (promoted.function_version, dict(promoted.routing)) == ("2", {})
    canary = await router.get_version(target, "2")
    assert canary.role == seeded["role_arn"]
    assert router.lambda_client(REGION).meta.endpoint_url == sandbox.endpoint_url


def test_a_new_sandbox_starts_empty() -> None:
    with MotoSandbox() as first:
        seed_demo_function(first.endpoint_url, REGION)
    with MotoSandbox() as second:
        client = sandbox_session(REGION).client("lambda", endpoint_url=second.endpoint_url)
        assert client.list_functions()["Functions"] == []
        # Seeding again works on a fresh sandbox (the role and function do not exist yet).
        assert seed_demo_function(second.endpoint_url, REGION)["canary_version"] == "2"


def test_stop_restores_moto_lambda_docker_setting() -> None:
    from moto.core.config import default_user_config

    before = dict(default_user_config["lambda"])
    with MotoSandbox():
        assert default_user_config["lambda"]["use_docker"] is False
    assert default_user_config["lambda"] == before


def test_alias_revisions_change_on_every_update_and_a_stale_one_is_refused(sandbox: MotoSandbox) -> None:
    seed_demo_function(sandbox.endpoint_url, REGION)
    client = sandbox_session(REGION).client("lambda", region_name=REGION, endpoint_url=sandbox.endpoint_url)
    first = client.get_alias(FunctionName="checkout-api", Name="live")["RevisionId"]
    updated = client.update_alias(
        FunctionName="checkout-api",
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}},
        RevisionId=first,
    )
    assert updated["RevisionId"] != first
    assert client.get_alias(FunctionName="checkout-api", Name="live")["RevisionId"] == updated["RevisionId"]
    with pytest.raises(client.exceptions.PreconditionFailedException):
        client.update_alias(FunctionName="checkout-api", Name="live", FunctionVersion="2", RevisionId=first)
    after = client.get_alias(FunctionName="checkout-api", Name="live")
    assert (after["FunctionVersion"], after["RoutingConfig"]["AdditionalVersionWeights"]) == ("1", {"2": 0.1})
    # Without a RevisionId, Lambda (and the sandbox) writes whatever the alias holds.
    client.update_alias(FunctionName="checkout-api", Name="live", FunctionVersion="2", RoutingConfig={})
    assert client.get_alias(FunctionName="checkout-api", Name="live")["FunctionVersion"] == "2"


def test_calls_share_one_kept_alive_connection(sandbox: MotoSandbox) -> None:
    import urllib3.util.connection

    seed_demo_function(sandbox.endpoint_url, REGION)
    client = sandbox_session(REGION).client("lambda", region_name=REGION, endpoint_url=sandbox.endpoint_url)
    client.get_alias(FunctionName="checkout-api", Name="live")
    opened: list[object] = []
    original = urllib3.util.connection.create_connection

    def counting(*args: object, **kwargs: object) -> socket.socket:
        opened.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(urllib3.util.connection, "create_connection", counting)
        patch.setattr("urllib3.connection.connection.create_connection", counting)
        for _ in range(5):
            client.get_alias(FunctionName="checkout-api", Name="live")
    assert opened == []
