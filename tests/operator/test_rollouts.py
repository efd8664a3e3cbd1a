"""End-to-end rollouts: the real Kopf, the emulator, the strict fake AWS, fast-forwarded time."""

from __future__ import annotations

import asyncio

import pytest

from lambda_rollouts.sandbox.kube import EmulatorHandle
from lambda_rollouts.testing.fake_lambda import FakeLambda

from .conftest import Api, OperatorRunner, TimedRouter, eventually, rollout

pytestmark = pytest.mark.looptime


async def phase_of(api: Api, name: str = "checkout") -> str | None:
    body = await api.get(name)
    return (body or {}).get("status", {}).get("phase")


async def test_full_canary_writes_exactly_the_plan_on_time(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout())

    async def healthy() -> bool:
        return await phase_of(api) == "Healthy"

    await eventually(healthy)
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]
    start = router.writes[0].at
    offsets = [round(write.at - start, 1) for write in router.writes]
    assert offsets == [0.0, 300.0, 900.0]
    body = await api.get("checkout")
    assert body is not None
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"] == 1
    assert (status["stableVersion"], status["canaryVersion"], status["canaryWeight"]) == ("2", "2", 100.0)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    reasons = [event["reason"] for event in await api.events()]
    assert reasons.count("WeightSet") == 2
    assert "Succeeded" in reasons


async def status_of(api: Api, name: str = "checkout") -> dict:
    body = await api.get(name)
    return (body or {}).get("status", {})


def has_phase(api: Api, phase: str, name: str = "checkout"):
    async def check() -> bool:
        return await phase_of(api, name) == phase

    return check


def has_writes(router: TimedRouter, count: int):
    return lambda: len(router.writes) >= count


async def test_spec_change_mid_rollout_goes_back_to_stable_then_rolls_the_new_version(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    await api.create(rollout())
    await eventually(has_writes(router, 1))
    changed_at = asyncio.get_running_loop().time() + 60
    await asyncio.sleep(60)  # inside the 5-minute pause at 10%
    await api.patch_spec("checkout", {"version": "3"})
    await eventually(has_phase(api, "Healthy"))
    assert router.shape() == [
        ("1", {"2": 10.0}),
        ("1", {}),  # all traffic back on the stable version first
        ("1", {"3": 10.0}),
        ("1", {"3": 50.0}),
        ("3", {}),
    ]
    # The spec change reached the alias at once, not at the end of the pause.
    assert router.writes[1].at - changed_at < 1.0
    status = await status_of(api)
    assert status["observedGeneration"] == 2
    assert (status["stableVersion"], status["canaryVersion"]) == ("3", "3")


async def test_revert_to_the_stable_version_rolls_back_at_once(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    await api.create(rollout())
    await eventually(has_writes(router, 2))  # at 50%, in the 10-minute pause
    reverted_at = asyncio.get_running_loop().time()
    await api.patch_spec("checkout", {"version": "1"})
    await eventually(has_phase(api, "Healthy"), step=0.05)
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("1", {})]
    assert router.writes[-1].at - reverted_at < 1.0
    status = await status_of(api)
    assert status["message"].startswith("rolled back to version 1")
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Ready"] == "RolledBack"


async def test_deletion_mid_shift_restores_stable_then_releases_the_object(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout())
    await eventually(has_writes(router, 1))
    await api.delete("checkout")

    async def gone() -> bool:
        return await api.get("checkout") is None

    await eventually(gone, step=0.1)
    assert router.shape() == [("1", {"2": 10.0}), ("1", {})]
    alias = fake_aws.alias_state("checkout-api", "live")
    assert alias is not None
    assert (alias.function_version, dict(alias.routing)) == ("1", {})


async def test_deletion_of_a_finished_rollout_leaves_the_alias_alone(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout(strategy={"allAtOnce": {}}))
    await eventually(has_phase(api, "Healthy"))
    writes = len(router.writes)
    await api.delete("checkout")

    async def gone() -> bool:
        return await api.get("checkout") is None

    await eventually(gone, step=0.1)
    assert len(router.writes) == writes
    alias = fake_aws.alias_state("checkout-api", "live")
    assert alias is not None
    assert alias.function_version == "2"


async def test_restart_mid_rollout_resumes_without_repeating_or_skipping_a_step(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    await api.create(rollout())
    await eventually(has_writes(router, 1))
    await asyncio.sleep(120)
    await operator.stop()
    await asyncio.sleep(60)  # the operator is away for a minute of the 5-minute pause
    await operator.start()
    await eventually(has_phase(api, "Healthy"))
    assert router.shape() == [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]
    start = router.writes[0].at
    assert [round(write.at - start) for write in router.writes] == [0, 300, 900]


async def test_spec_paused_holds_and_resume_keeps_the_pause_timer(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    await api.create(rollout())
    await eventually(has_writes(router, 1))
    await asyncio.sleep(60)
    await api.patch_spec("checkout", {"paused": True})
    await eventually(has_phase(api, "Paused"), step=0.1)
    await asyncio.sleep(3600)
    assert len(router.writes) == 1
    await api.patch_spec("checkout", {"paused": False})
    resumed_at = asyncio.get_running_loop().time()
    await eventually(has_writes(router, 2), step=1.0)
    # 1 minute of the 5-minute pause had run before the hold: 4 minutes remained.
    assert router.writes[1].at - resumed_at == pytest.approx(240, abs=10)


async def test_a_broken_rollout_does_not_stop_the_others(
    api: Api, operator: OperatorRunner, router: TimedRouter, fake_aws: FakeLambda
) -> None:
    await api.create(rollout(name="broken", version="9"))
    await api.create(rollout(name="checkout", strategy={"allAtOnce": {}}))
    await eventually(has_phase(api, "Healthy"))
    await eventually(has_phase(api, "Degraded", "broken"))
    status = await status_of(api, "broken")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Stalled"] == ("True", "VersionNotFound")
    assert "9" in status["message"]
    assert router.shape() == [("2", {})]
    # Retried with a doubling backoff (5 s up to 60 s here), not in a tight loop: at most 13 tries
    # fit in ten minutes (5+10+20+40+60*9 s), each reading the missing version once.
    reads_before = fake_aws.calls["GetFunctionConfiguration"]
    await asyncio.sleep(600)
    retries = fake_aws.calls["GetFunctionConfiguration"] - reads_before
    assert 8 <= retries <= 13


async def test_nothing_calls_aws_while_nothing_is_due_but_the_drift_check(
    api: Api, operator: OperatorRunner, fake_aws: FakeLambda, router: TimedRouter
) -> None:
    await api.create(rollout(strategy={"allAtOnce": {}}))
    await eventually(has_phase(api, "Healthy"))
    await asyncio.sleep(1)
    calls_before = sum(fake_aws.calls.values())
    await asyncio.sleep(3600)
    calls = sum(fake_aws.calls.values()) - calls_before
    # One GetAlias per 5-minute drift interval, nothing else.
    assert calls == 12
    assert fake_aws.calls["UpdateAlias"] == 1


async def test_every_transition_posts_an_event(
    api: Api, operator: OperatorRunner, router: TimedRouter
) -> None:
    await api.create(rollout())
    await eventually(has_phase(api, "Healthy"))
    posted = sorted(await api.events(), key=lambda event: int(event["metadata"]["resourceVersion"]))
    events = [
        (event["reason"], event["type"])
        for event in posted
        if event["involvedObject"]["name"] == "checkout" and event["reason"] != "Logging"
    ]
    reasons = [reason for reason, _ in events]
    assert reasons == ["Progressing", "WeightSet", "StepCompleted", "WeightSet", "StepCompleted", "Succeeded"]
    # As kubectl describe shows them: from the operator, about this very rollout.
    rollout_uid = ((await api.get("checkout")) or {})["metadata"]["uid"]
    first = next(event for event in posted if event["reason"] == "Progressing")
    assert first["involvedObject"] == {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "name": "checkout",
        "namespace": "default",
        "uid": rollout_uid,
    }
    assert first["source"] == {"component": "lambda-rollouts"}
    assert first["count"] == 1
    assert first["message"] == "rolling out version 2 over version 1"


async def test_kopf_writes_nothing_to_a_rollout_but_its_finalizer(
    api: Api, operator: OperatorRunner, router: TimedRouter, kube: EmulatorHandle
) -> None:
    async def healthy_on(version: str) -> bool:
        status = ((await api.get("checkout")) or {}).get("status", {})
        return status.get("phase") == "Healthy" and status.get("stableVersion") == version

    await api.create(rollout(strategy={"allAtOnce": {}}))
    await eventually(lambda: healthy_on("2"), step=1)
    await api.patch_spec("checkout", {"version": "3"})
    await eventually(lambda: healthy_on("3"), step=1)
    # Kopf's own writes: the finalizer, once. No "last handled state" per creation or spec change
    # (the operator compares generations itself); the status has its own subresource.
    patches = [
        served.path
        for served in kube.emulator.served
        if served.method == "PATCH" and served.path.endswith("/lambdarollouts/checkout")
    ]
    body = await api.get("checkout")
    assert body is not None
    assert len(patches) == 2  # the finalizer, and this test's own spec change
    assert body["metadata"]["finalizers"] == ["lambda.rollouts.dev/finalizer"]
    assert not [key for key in body["metadata"].get("annotations", {}) if "last-handled" in key]
    assert router.shape() == [("2", {}), ("3", {})]
