"""Tenancy: a rollout outside its namespace's allow-list is refused before any AWS call."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lambda_rollouts.aws.fake import FakeLambda
from lambda_rollouts.errors import ForbiddenError
from lambda_rollouts.kube import RecordingStatusWriter
from lambda_rollouts.model import RolloutSpec
from lambda_rollouts.reconcile import RolloutRef, RolloutService
from lambda_rollouts.settings import Settings, TenantPolicy
from lambda_rollouts.tenancy import check_allowed

POLICIES = {
    "team-a": TenantPolicy(
        functions=["team-a-*"],
        accounts=["111122223333"],
        regions=["eu-*"],
        role_arns=["arn:aws:iam::111122223333:role/team-a-*"],
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

    class Events:
        posted: list[Any] = []

        def post(self, event: Any) -> None:
            self.posted.append(event)

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
