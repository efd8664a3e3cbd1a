"""Hooks in the sandbox: the operator invokes the seeded checkout-smoke, whose code really runs.

examples/hooks.yaml says it fails in the sandbox; a version that passes the smoke test promotes;
a smoke test failing after the promotion rolls back. The operator runs in-process, in real time.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from tests.sandbox.rollouts import alias, apply, hooks, reason, settled

from lambda_rollouts.model import GROUP, VERSION
from lambda_rollouts.sandbox.aws import publish_next_release
from lambda_rollouts.sandbox.runtime import SandboxHandle, open_sandbox

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
async def sandbox(tmp_path: pathlib.Path) -> AsyncIterator[SandboxHandle]:
    async with open_sandbox(workdir=tmp_path) as running:
        yield running


def rollout(name: str, version: str, hooks: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LambdaRollout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": version,
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}},
            "hooks": hooks,
        },
    }


SMOKE = {"functionName": "checkout-smoke", "qualifier": "live", "retries": 0}
SMOKE_FAILED = (
    "function checkout-smoke:live raised an error (Unhandled): AssertionError: smoke test of checkout-api "
    "version 2 failed: POST /cart answered 502"
)


async def test_the_hooks_example_fails_in_the_sandbox_as_it_says(sandbox: SandboxHandle) -> None:
    example = yaml.safe_load((ROOT / "examples" / "hooks.yaml").read_text())
    await apply(sandbox, example)
    status = await settled(sandbox, example["metadata"]["name"])
    assert (status["phase"], reason(status, "Stalled")) == ("Degraded", "HookFailed")
    assert status["message"] == (
        f"beforeAllowTraffic hook (function checkout-smoke:live) failed: {SMOKE_FAILED}; no traffic was moved"
    )
    # retries: 1 in the example: the smoke test ran twice, and failed twice.
    [(point, result, message)] = hooks(status)
    assert (point, result, message) == ("beforeAllowTraffic", "Failed", SMOKE_FAILED)
    assert status["hooks"][0]["attempts"] == 2
    assert await asyncio.to_thread(alias, sandbox) == ("1", {})


async def test_a_version_that_passes_the_smoke_test_is_promoted(sandbox: SandboxHandle) -> None:
    version = await asyncio.to_thread(
        publish_next_release, sandbox.aws_endpoint_url, sandbox.region, "checkout-api"
    )
    assert version == "3"
    smoke = {"beforeAllowTraffic": SMOKE, "afterAllowTraffic": {"functionName": "checkout-smoke"}}
    await apply(sandbox, rollout("passes", version, smoke))
    status = await settled(sandbox, "passes")
    assert (status["phase"], status["stableVersion"]) == ("Healthy", "3")
    assert hooks(status) == [
        (
            "beforeAllowTraffic",
            "Succeeded",
            'function checkout-smoke:live succeeded: "smoke test of checkout-api version 3 passed"',
        ),
        (
            "afterAllowTraffic",
            "Succeeded",
            'function checkout-smoke succeeded: "smoke test of checkout-api version 3 passed"',
        ),
    ]
    assert await asyncio.to_thread(alias, sandbox) == ("3", {})


async def test_a_smoke_test_failing_after_the_promotion_rolls_back(sandbox: SandboxHandle) -> None:
    smoke = {"afterAllowTraffic": {"functionName": "checkout-smoke", "retries": 0}}
    await apply(sandbox, rollout("rolled-back", "2", smoke))
    status = await settled(sandbox, "rolled-back")
    assert (status["phase"], reason(status, "Stalled")) == ("Degraded", "HookFailed")
    failed = SMOKE_FAILED.replace("checkout-smoke:live", "checkout-smoke")
    assert status["message"] == (
        f"afterAllowTraffic hook (function checkout-smoke) failed: {failed}; rolled back to version 1"
    )
    assert await asyncio.to_thread(alias, sandbox) == ("1", {})
