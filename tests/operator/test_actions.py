"""Manual actions end to end: the annotation, the operator taking it once, the acknowledgement in
status and Events; and versionFrom resolved through the fake Lambda."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lambda_rollouts.model import ACTION_ANNOTATION
from lambda_rollouts.testing.fake_lambda import FakeLambda

from .conftest import Api, OperatorRunner, TimedRouter, eventually, rollout

pytestmark = pytest.mark.looptime

WAITING = {
    "canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}]}
}


async def status_of(api: Api, name: str = "checkout") -> dict[str, Any]:
    body = await api.get(name)
    status: dict[str, Any] = (body or {}).get("status", {})
    return status


async def annotations_of(api: Api, name: str = "checkout") -> dict[str, str]:
    body = await api.get(name)
    annotations: dict[str, str] = (body or {}).get("metadata", {}).get("annotations", {})
    return annotations


def acknowledged(api: Api, action_id: str):
    async def check() -> bool:
        return ((await status_of(api)).get("lastAction") or {}).get("id") == action_id

    return check


async def test_promote_through_the_annotation_is_applied_once_and_acknowledged(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    await api.create(rollout(strategy=WAITING))

    async def waiting() -> bool:
        return (await status_of(api)).get("phase") == "Paused"

    await eventually(waiting)
    await asyncio.sleep(600)
    assert router.shape() == [("1", {"2": 10.0})]
    annotated_at = asyncio.get_running_loop().time()
    await api.annotate("checkout", ACTION_ANNOTATION, "promote:ci-1")
    await eventually(acknowledged(api, "ci-1"), step=1)
    # The annotation wakes the loop: no waiting for the next drift check, minutes away.
    assert router.writes[1].at - annotated_at < 5
    status = await status_of(api)
    assert status["lastAction"]["result"] == "Applied"
    assert status["lastAction"]["message"] == ("promote: step 4/4: pause 1m (1m left)")
    assert ACTION_ANNOTATION not in await annotations_of(api)
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0})]
    await eventually(lambda: len(router.writes) == 3)
    assert router.shape()[-1] == ("2", {})
    events = [(e["reason"], e["message"]) for e in await api.events()]
    assert (
        "ActionApplied",
        "promote: step 4/4: pause 1m (1m left)",
    ) in events
    # Applied once: nothing more happened than one promote.
    assert [reason for reason, _ in events].count("ActionApplied") == 1


async def test_abort_then_retry(api: Api, operator: OperatorRunner, router: TimedRouter) -> None:
    await api.create(rollout(strategy=WAITING))
    await eventually(lambda: len(router.writes) == 1)
    await api.annotate("checkout", ACTION_ANNOTATION, "abort:a1")
    await eventually(acknowledged(api, "a1"), step=1)
    status = await status_of(api)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (status["phase"], stalled["status"], stalled["reason"]) == ("Degraded", "True", "Aborted")
    assert router.shape() == [("1", {"2": 10.0}), ("1", {})]
    await asyncio.sleep(3600)
    assert len(router.writes) == 2
    await api.annotate("checkout", ACTION_ANNOTATION, "retry:r1")
    await eventually(acknowledged(api, "r1"), step=1)
    assert router.shape()[-1] == ("1", {"2": 10.0})
    assert (await status_of(api))["phase"] == "Paused"


async def test_a_rejected_action_changes_nothing_and_says_why(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    await api.create(rollout(strategy={"canary": {"steps": [{"setWeight": 50}]}}))

    async def healthy() -> bool:
        return (await status_of(api)).get("phase") == "Healthy"

    await eventually(healthy)
    writes = len(router.writes)
    await api.annotate("checkout", ACTION_ANNOTATION, "promote:p9")
    await eventually(acknowledged(api, "p9"), step=1)
    status = await status_of(api)
    assert status["lastAction"]["result"] == "Rejected"
    assert status["lastAction"]["message"] == "promote: nothing to promote: version 2 is Healthy"
    assert status["phase"] == "Healthy"
    assert len(router.writes) == writes
    assert ACTION_ANNOTATION not in await annotations_of(api)


async def test_version_from_code_hash_is_resolved_and_recorded(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    info = await fake_aws.get_version(_target(), "3")
    spec = rollout(strategy={"canary": {"steps": [{"setWeight": 50}]}})
    del spec["spec"]["version"]
    spec["spec"]["versionFrom"] = {"codeSha256": info.code_sha256}
    await api.create(spec)

    async def healthy() -> bool:
        return (await status_of(api)).get("phase") == "Healthy"

    await eventually(healthy)
    status = await status_of(api)
    assert (status["resolvedVersion"], status["canaryVersion"]) == ("3", "3")
    assert status["resolvedFrom"] == f"codeSha256 {info.code_sha256}"
    assert router.shape()[-1] == ("3", {})


async def test_version_from_that_matches_nothing_stalls_with_a_clear_reason(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    spec = rollout()
    del spec["spec"]["version"]
    spec["spec"]["versionFrom"] = {"codeSha256": "A" * 43 + "="}
    await api.create(spec)

    async def stalled() -> bool:
        status = await status_of(api)
        return any(c["type"] == "Stalled" and c["status"] == "True" for c in status.get("conditions", []))

    await eventually(stalled)
    status = await status_of(api)
    reason = next(c["reason"] for c in status["conditions"] if c["type"] == "Stalled")
    assert reason == "NoVersionMatches"
    assert status["message"].startswith(
        f"no published version of checkout-api has codeSha256 {'A' * 43}= (3 versions checked)"
    )
    assert router.writes == []


def _target() -> Any:
    from lambda_rollouts.observed import Target

    return Target(function_name="checkout-api", alias="live", region="us-east-1")
