"""Tenancy: a rollout, or a hook, outside its namespace's allow-list is refused before any AWS
call; hook URLs match ``hookUrls`` by scheme, host, port and path prefix."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from lambda_rollouts.errors import ForbiddenError
from lambda_rollouts.model import RolloutSpec
from lambda_rollouts.reconcile import RolloutRef, RolloutService
from lambda_rollouts.settings import HookUrlPattern, Settings, TenantPolicy
from lambda_rollouts.tenancy import AddressRule, check_allowed, check_hooks_allowed
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.kube import RecordingStatusWriter

from .service_doubles import Events

POLICIES = {
    "team-a": TenantPolicy(
        functions=["team-a-*"],
        accounts=["111122223333"],
        regions=["eu-*"],
        role_arns=["arn:aws:iam::111122223333:role/team-a-*"],
        hook_urls=["https://ci.example.com/hooks/*", "https://*.team-a.example.com:8443"],
    ),
    "*": TenantPolicy(functions=["shared-*"]),
}


def spec(function_name: str, **extra: Any) -> RolloutSpec:
    raw = {"functionName": function_name, "alias": "live", "version": "2", "strategy": {"allAtOnce": {}}}
    return RolloutSpec.parse(raw | extra)


@pytest.mark.parametrize(
    ("namespace", "rollout", "refusal"),
    [
        ("team-a", spec("team-a-checkout", region="eu-west-1"), None),
        ("team-a", spec("arn:aws:lambda:eu-west-1:111122223333:function:team-a-x"), None),
        ("team-a", spec("team-b-checkout", region="eu-west-1"), "may not target function team-b-checkout"),
        (
            "team-a",
            spec("arn:aws:lambda:eu-west-1:999999999999:function:team-a-x"),
            "may not target account 999999999999",
        ),
        ("team-a", spec("team-a-checkout", region="us-east-1"), "may not target region us-east-1"),
        # A full ARN names its region, which the rollout's calls go to when spec.region is unset.
        (
            "team-a",
            spec("arn:aws:lambda:us-east-1:111122223333:function:team-a-x"),
            "may not target region us-east-1",
        ),
        (
            "team-a",
            spec("team-a-x", region="eu-west-1", roleArn="arn:aws:iam::111122223333:role/admin"),
            "may not assume role arn:aws:iam::111122223333:role/admin",
        ),
        (
            "team-a",
            spec("team-a-x", region="eu-west-1", roleArn="arn:aws:iam::111122223333:role/team-a-deployer"),
            None,
        ),
        ("other", spec("shared-auth"), None),
        ("other", spec("team-a-checkout"), "namespace other may not target function team-a-checkout"),
    ],
)
def test_policies(namespace: str, rollout: RolloutSpec, refusal: str | None) -> None:
    if refusal is None:
        check_allowed(POLICIES, namespace, rollout, "eu-west-1")
        return
    with pytest.raises(ForbiddenError) as raised:
        check_allowed(POLICIES, namespace, rollout, "eu-west-1")
    assert refusal in raised.value.message


def test_no_settings_allow_everything_and_no_policy_refuses_everything() -> None:
    check_allowed(None, "anywhere", spec("anything"), "us-east-1")
    with pytest.raises(ForbiddenError, match="no tenancy policy"):
        check_allowed({"team-a": POLICIES["team-a"]}, "team-b", spec("team-a-x"), "eu-west-1")


def test_settings_read_the_policies_from_json_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMBDA_ROLLOUTS_TENANCY", json.dumps({"team-a": {"functions": ["team-a-*"]}}))
    assert Settings().tenancy == {"team-a": TenantPolicy(functions=["team-a-*"])}
    monkeypatch.delenv("LAMBDA_ROLLOUTS_TENANCY")
    file = tmp_path / "tenancy.yaml"
    file.write_text("team-b:\n  functions: [team-b-*]\n  roleArns: ['arn:aws:iam::1:role/x']\n")
    monkeypatch.setenv("LAMBDA_ROLLOUTS_TENANCY_FILE", str(file))
    assert Settings().tenancy == {
        "team-b": TenantPolicy(functions=["team-b-*"], role_arns=["arn:aws:iam::1:role/x"])
    }


async def test_a_forbidden_rollout_makes_no_aws_call_and_says_why() -> None:
    aws = FakeLambda()
    aws.add_function("team-b-checkout")
    writer = RecordingStatusWriter()
    service = RolloutService(
        settings=Settings(default_region="eu-west-1", tenancy=POLICIES),
        router=aws,
        writer=writer,
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )

    body = {
        "metadata": {"generation": 1},
        "spec": {
            "functionName": "team-b-checkout",
            "alias": "live",
            "version": "2",
            "strategy": {"allAtOnce": {}},
        },
    }
    plan = await service.reconcile(RolloutRef("team-a", "checkout"), body, Events())
    assert aws.calls == {}
    assert aws.writes == []
    status = writer.writes[-1][2]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (status["phase"], stalled["status"], stalled["reason"]) == ("Degraded", "True", "Forbidden")
    assert status["message"].startswith("namespace team-a may not target function team-b-checkout")
    assert plan.requeue_after is None
    await service.finalize(RolloutRef("team-a", "checkout"), body, Events())
    assert aws.calls == {}


# ---------------------------------------------------------------------------------------------
# Hooks.

NO_ALLOWANCE = AddressRule()


def with_hook(hook: dict[str, Any], point: str = "beforeAllowTraffic", **extra: Any) -> RolloutSpec:
    return spec("team-a-checkout", region="eu-west-1", hooks={point: hook}, **extra)


@pytest.mark.parametrize(
    ("namespace", "rollout", "refusal"),
    [
        # Hook functions: the rules of the rollout's own function.
        ("team-a", with_hook({"functionName": "team-a-smoke"}), None),
        ("team-a", with_hook({"functionName": "team-a-smoke", "qualifier": "live"}), None),
        (
            "team-a",
            with_hook({"functionName": "arn:aws:lambda:eu-west-1:111122223333:function:team-a-smoke"}),
            None,
        ),
        (
            "team-a",
            with_hook({"functionName": "billing-smoke"}),
            "namespace team-a may not call the beforeAllowTraffic hook function billing-smoke: "
            "allowed are team-a-*",
        ),
        (
            "team-a",
            with_hook({"functionName": "arn:aws:lambda:eu-west-1:999999999999:function:team-a-smoke"}),
            "namespace team-a may not call the beforeAllowTraffic hook function team-a-smoke in "
            "account 999999999999: allowed are 111122223333",
        ),
        (
            "team-a",
            with_hook({"functionName": "999999999999:function:team-a-smoke"}, "afterAllowTraffic"),
            "namespace team-a may not call the afterAllowTraffic hook function team-a-smoke in "
            "account 999999999999: allowed are 111122223333",
        ),
        (
            # A hook's region is its ARN's (else the rollout's, which check_allowed checks).
            "team-a",
            with_hook({"functionName": "arn:aws:lambda:us-east-1:111122223333:function:team-a-smoke"}),
            "namespace team-a may not call the beforeAllowTraffic hook function team-a-smoke in "
            "region us-east-1: allowed are eu-*",
        ),
        (
            "other",
            spec("shared-auth", hooks={"confirmPromotion": {"functionName": "team-a-smoke"}}),
            "namespace other may not call the confirmPromotion hook function team-a-smoke: "
            "allowed are shared-*",
        ),
        # Hook URLs: hookUrls.
        ("team-a", with_hook({"url": "https://ci.example.com/hooks/smoke"}), None),
        ("team-a", with_hook({"url": "https://ci.example.com/hooks"}), None),
        ("team-a", with_hook({"url": "https://user:pw@CI.example.com./hooks/x?token=1#f"}), None),
        ("team-a", with_hook({"url": "https://a.b.team-a.example.com:8443/anything"}), None),
        (
            "team-a",
            with_hook({"url": "https://ci.example.com/admin"}),
            "the beforeAllowTraffic hook (webhook https://ci.example.com/admin) may not be called: "
            "namespace team-a may not call it: allowed hookUrls are https://ci.example.com/hooks/*, "
            "https://*.team-a.example.com:8443",
        ),
        (
            "team-a",
            with_hook({"url": "https://ci.example.com/hooksmith"}),
            "allowed hookUrls are",
        ),
        ("team-a", with_hook({"url": "http://ci.example.com/hooks/smoke"}), "allowed hookUrls are"),
        ("team-a", with_hook({"url": "https://ci.example.com:8443/hooks/smoke"}), "allowed hookUrls are"),
        ("team-a", with_hook({"url": "https://ci.example.com.evil.example/hooks/x"}), "allowed hookUrls are"),
        ("team-a", with_hook({"url": "https://team-a.example.com:8443/x"}), "allowed hookUrls are"),
        (
            "team-a",
            with_hook({"url": "https://evil.example/#@ci.example.com/hooks/"}),
            "allowed hookUrls are",
        ),
        # Dot segments are resolved before matching, or refused when encoded.
        ("team-a", with_hook({"url": "https://ci.example.com/hooks/../admin"}), "allowed hookUrls are"),
        (
            "team-a",
            with_hook({"url": "https://ci.example.com/hooks/..%2fadmin"}),
            "the beforeAllowTraffic hook (webhook https://ci.example.com/hooks/..%2fadmin) may not be "
            "called: its path has '.' or '..' segments",
        ),
        # A policy without hookUrls allows no URL hook.
        (
            "other",
            spec("shared-auth", hooks={"afterAllowTraffic": {"url": "https://ci.example.com/hooks/x"}}),
            "the afterAllowTraffic hook (webhook https://ci.example.com/hooks/x) may not be called: "
            "namespace other may not call it: allowed hookUrls are none",
        ),
        # The address rule, whatever hookUrls say.
        (
            "team-a",
            with_hook({"url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"}),
            "the beforeAllowTraffic hook (webhook http://169.254.169.254/latest/meta-data/iam/"
            "security-credentials/) may not be called: 169.254.169.254 is link-local",
        ),
    ],
)
def test_hook_policies(namespace: str, rollout: RolloutSpec, refusal: str | None) -> None:
    def check() -> None:
        check_allowed(POLICIES, namespace, rollout, "eu-west-1")
        check_hooks_allowed(POLICIES, namespace, rollout, "eu-west-1", NO_ALLOWANCE)

    if refusal is None:
        check()
        return
    with pytest.raises(ForbiddenError) as raised:
        check()
    assert refusal in raised.value.message
    assert "token=1" not in raised.value.message
    assert ":pw@" not in raised.value.message


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        # Without tenancy settings any URL may be called, but no refused address or metadata name.
        ("https://anything.example.org:9/x?y", None),
        ("http://10.0.0.7:8080/hooks", None),
        ("http://[2001:db8::1]/hooks", None),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local (169.254.0.0/16)"),
        ("http://169.254.170.2/v2/credentials/x", "169.254.170.2 is link-local (169.254.0.0/16)"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is the EC2 instance metadata service"),
        ("http://[::ffff:169.254.169.254]/latest", "::ffff:a9fe:a9fe is link-local (169.254.0.0/16)"),
        ("http://[fe80::1]/", "fe80::1 is link-local (fe80::/10)"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is loopback (127.0.0.0/8)"),
        ("http://[::1]:8080/hook", "::1 is loopback (::1)"),
        ("http://0.0.0.0:8080/hook", "0.0.0.0 is 'this host'"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is the name of"),
        ("http://Instance-Data./latest/", "instance-data. is the name of a cloud metadata service"),
    ],
)
def test_without_tenancy_hook_urls_are_open_but_the_address_rule_holds(url: str, refusal: str | None) -> None:
    rollout = spec("anything", hooks={"beforeAllowTraffic": {"url": url}})
    if refusal is None:
        check_hooks_allowed(None, "anywhere", rollout, "us-east-1", NO_ALLOWANCE)
        return
    with pytest.raises(ForbiddenError) as raised:
        check_hooks_allowed(None, "anywhere", rollout, "us-east-1", NO_ALLOWANCE)
    assert raised.value.message.startswith("the beforeAllowTraffic hook (webhook ")
    assert f"may not be called: {refusal}" in raised.value.message


def test_an_allowance_opens_an_address_to_hooks() -> None:
    rollout = spec("anything", hooks={"beforeAllowTraffic": {"url": "http://127.0.0.1:8080/hook"}})
    check_hooks_allowed(
        None, "anywhere", rollout, "us-east-1", AddressRule.allowing([ip_network("127.0.0.0/8")])
    )


def test_without_tenancy_hook_functions_are_open() -> None:
    rollout = spec(
        "anything", hooks={"beforeAllowTraffic": {"functionName": "arn:aws:lambda:us-west-2:9:function:x"}}
    )
    check_hooks_allowed(None, "anywhere", rollout, "us-east-1", NO_ALLOWANCE)


@pytest.mark.parametrize(
    ("pattern", "url", "admitted"),
    [
        ("*", "http://anything.example:1/x", True),
        ("https://ci.example.com", "https://ci.example.com/any/path", True),
        ("https://ci.example.com", "https://ci.example.com:443/", True),
        ("https://ci.example.com", "https://ci.example.com:444/", False),
        ("https://ci.example.com", "http://ci.example.com/", False),
        ("http://ci.example.com", "http://ci.example.com:80/", True),
        ("https://ci.example.com:8443/", "https://ci.example.com:8443/x", True),
        ("https://ci.example.com:8443/", "https://ci.example.com/x", False),
        ("https://CI.Example.com./hooks/", "https://ci.example.com/hooks", True),
        ("https://ci.example.com/hooks", "https://ci.example.com/hooks/a/b", True),
        ("https://ci.example.com/hooks/*", "https://ci.example.com/hooksmith", False),
        ("https://ci.example.com/hooks/*", "https://ci.example.com/", False),
        ("https://ci.example.com/hooks/*", "https://ci.example.com/Hooks/x", False),
        ("https://*.example.com", "https://a.example.com/", True),
        ("https://*.example.com", "https://a.b.example.com/", True),
        ("https://*.example.com", "https://example.com/", False),
        ("https://*.example.com", "https://badexample.com/", False),
        ("https://ci.example.com", "https://ci.example.com.evil.example/", False),
        ("http://10.0.0.7:8080/hooks", "http://10.0.0.7:8080/hooks/x", True),
        ("http://[2001:db8::1]/", "http://[2001:DB8:0::1]/x", True),
        ("https://xn--bcher-kva.example/", "https://bücher.example/x", True),
    ],
)
def test_hook_url_patterns(pattern: str, url: str, admitted: bool) -> None:
    rollout = spec("team-a-x", region="eu-west-1", hooks={"beforeAllowTraffic": {"url": url}})
    policies = {"team-a": TenantPolicy(functions=["team-a-*"], hook_urls=[pattern])}
    if admitted:
        check_hooks_allowed(policies, "team-a", rollout, "eu-west-1", NO_ALLOWANCE)
        return
    with pytest.raises(ForbiddenError, match="allowed hookUrls are"):
        check_hooks_allowed(policies, "team-a", rollout, "eu-west-1", NO_ALLOWANCE)


@pytest.mark.parametrize(
    "pattern",
    [
        "ci.example.com",
        "ftp://ci.example.com/",
        "https://ci.*.com/",
        "https://*.10.0.0.1/",
        "https://ci.example.com/hooks*",
        "https://ci.example.com/*/x",
        "https://ci.example.com:0/",
        "https://ci.example.com:99999/",
        "https://ci.example.com/?x=1",
        "https://user@ci.example.com/",
    ],
)
def test_a_malformed_hook_url_pattern_is_a_settings_error(pattern: str) -> None:
    with pytest.raises(ValueError, match="hookUrls entry"):
        HookUrlPattern.parse(pattern)
    with pytest.raises(ValueError, match="hookUrls entry"):
        TenantPolicy.model_validate({"functions": ["*"], "hookUrls": [pattern]})
