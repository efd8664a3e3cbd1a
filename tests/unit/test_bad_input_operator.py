"""Invalid LambdaRollouts through the whole reconcile service: refused without one AWS call.

Every manifest of tests/corpus/bad.yaml goes through ``RolloutService.reconcile`` with the strict
fake Lambda (seeded with the function the manifests name, its versions and its alias), a
recording status writer, and the fakes for metrics and hooks. The operator-level manifests are
what the CRD admits and only the model refuses; the schema-level ones are what an API server
without the CRD's validation would let through. Either way the rollout must end Degraded with
Stalled=True, reason InvalidSpec and a message naming the field, and nothing may reach AWS: no
alias write, no read, no metric, no hook.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from lambda_rollouts.planner import Plan
from lambda_rollouts.reconcile import RolloutRef, RolloutService
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.fake_cloudwatch import FakeCloudWatch
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.hooks import FakeHookInvoker
from lambda_rollouts.testing.kube import RecordingStatusWriter

from ..corpus.manifests import ERROR, FIELD, LEVEL, MODEL_FIELD, load, name_of
from .service_doubles import Events, seed_checkout

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REF = RolloutRef("default", "bad")

BAD = load("bad.yaml")


def _annotations(manifest: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = manifest["metadata"].get("annotations", {})
    return annotations


def _model_path(api_field: str) -> str:
    """The API server's ``a.b[0].c`` as the model's error location ``a.b.0.c``."""
    return re.sub(r"\[(\d+)\]", r".\1", api_field)


@dataclass
class World:
    """The operator's service over fakes for everything it could reach."""

    aws: FakeLambda = field(default_factory=FakeLambda)
    cloudwatch: FakeCloudWatch = field(default_factory=FakeCloudWatch)
    hooks: FakeHookInvoker = field(default_factory=FakeHookInvoker)
    writer: RecordingStatusWriter = field(default_factory=RecordingStatusWriter)
    events: Events = field(default_factory=Events)

    def __post_init__(self) -> None:
        # What every manifest names, so that a spec let through would find it and call AWS.
        seed_checkout(self.aws, versions=42)
        self.cloudwatch.set_alarm("checkout-errors", "OK")
        self.service = RolloutService(
            settings=Settings(default_region="us-east-1"),
            router=self.aws,
            writer=self.writer,
            clock=lambda: T0,
            metrics=self.cloudwatch,
            hooks=self.hooks,
        )

    async def reconcile(self, manifest: dict[str, Any]) -> Plan:
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": "default", "generation": 1}}
        status = self.writer.current.get((REF.namespace, REF.name))
        if status is not None:
            body["status"] = status
        return await self.service.reconcile(REF, body, self.events)

    def untouched(self) -> bool:
        """Nothing reached AWS: no Lambda call of any kind, no CloudWatch call, no hook."""
        return (
            self.aws.writes == []
            and self.aws.calls == Counter()
            and self.cloudwatch.calls == Counter()
            and self.cloudwatch.requests == []
            and self.hooks.calls == []
        )


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def _refused(world: World, plan: Plan) -> bool:
    """The status written says InvalidSpec the kstatus way, and nothing will retry on a timer."""
    if len(world.writer.writes) != 1:
        return False
    status = world.writer.writes[0][2]
    return (
        status.get("phase") == "Degraded"
        and status.get("observedGeneration") == 1
        and _conditions(status)
        == {
            "Ready": ("False", "InvalidSpec"),
            "Reconciling": ("False", "InvalidSpec"),
            "Stalled": ("True", "InvalidSpec"),
        }
        and plan.requeue_after is None
    )


def test_the_corpus_is_large_enough() -> None:
    assert len(BAD) >= 60, f"only {len(BAD)} invalid manifests in the corpus"
    assert sum(_annotations(manifest).get(LEVEL) == "operator" for manifest in BAD) >= 15


@pytest.mark.parametrize("manifest", BAD, ids=name_of)
async def test_bad_manifest_is_refused_as_invalid_spec_without_touching_aws(manifest: dict[str, Any]) -> None:
    world = World()
    plan = await world.reconcile(manifest)

    assert world.untouched(), (world.aws.calls, world.cloudwatch.calls, world.hooks.calls)
    assert _refused(world, plan), world.writer.writes
    status = world.writer.writes[0][2]
    annotations = _annotations(manifest)
    # The message names the field, where the model reports it.
    assert _model_path(annotations.get(MODEL_FIELD, annotations[FIELD])) in status["message"]
    if annotations.get(LEVEL) == "operator" and ERROR in annotations:
        assert annotations[ERROR] in status["message"].split("; ")
    assert [(event.type.value, event.reason.value) for event in world.events.posted] == [
        ("Warning", "InvalidSpec")
    ]


@pytest.mark.parametrize(
    "manifest",
    [manifest for manifest in BAD if _annotations(manifest).get(LEVEL) == "operator"],
    ids=name_of,
)
async def test_a_later_look_at_a_refused_rollout_touches_aws_no_more(manifest: dict[str, Any]) -> None:
    # The per-rollout loop comes back at the drift-check interval; an invalid spec still stops it
    # before any call.
    world = World()
    await world.reconcile(manifest)
    plan = await world.reconcile(manifest)
    assert world.untouched()
    assert plan.status.phase == "Degraded"
    assert plan.requeue_after is None


async def test_a_valid_rollout_in_the_same_world_does_reach_aws() -> None:
    # The control: the checks above would see the calls a spec let through makes.
    manifest = {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "metadata": {"name": "good"},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "42",
            "strategy": {"preset": "Canary10Percent5Minutes"},
            "analysis": {"alarms": ["checkout-errors"]},
        },
    }
    world = World()
    await world.reconcile(manifest)
    assert not world.untouched()
    assert world.aws.calls["GetAlias"] >= 1
    assert [dict(write.routing) for write in world.aws.writes] == [{"42": 10.0}]


async def test_every_bad_input_in_the_corpus_is_rejected() -> None:
    rejected = 0
    for manifest in BAD:
        world = World()
        plan = await world.reconcile(manifest)
        rejected += world.untouched() and _refused(world, plan)
    assert rejected == len(BAD), f"bad inputs rejected out of the corpus: {rejected} of {len(BAD)}"
