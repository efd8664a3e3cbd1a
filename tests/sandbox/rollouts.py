"""Driving rollouts in an in-process sandbox (``open_sandbox``): apply, wait, read the alias."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from lambda_rollouts.model import GROUP, PLURAL, VERSION
from lambda_rollouts.sandbox.aws import sandbox_session
from lambda_rollouts.sandbox.runtime import SandboxHandle

ROLLOUTS = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"


async def apply(sandbox: SandboxHandle, rollout: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession(sandbox.kube_url) as session,
        session.post(ROLLOUTS, json=rollout) as response,
    ):
        assert response.status == 201, await response.text()


async def settled(sandbox: SandboxHandle, name: str, within: float = 60.0) -> dict[str, Any]:
    """The rollout's status once it is Healthy or Degraded (its version handled)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(sandbox.kube_url) as session:
        while True:
            async with session.get(f"{ROLLOUTS}/{name}") as response:
                rollout = await response.json()
            status: dict[str, Any] = rollout.get("status", {})
            current = status.get("observedGeneration") == rollout["metadata"].get("generation")
            if current and status.get("phase") in ("Healthy", "Degraded"):
                return status
            assert time.monotonic() < deadline, f"{name} did not settle: {status}"
            await asyncio.sleep(0.1)  # polls the emulator for the rollout's status


def alias(sandbox: SandboxHandle) -> tuple[str, dict[str, float]]:
    client = sandbox_session(sandbox.region).client(
        "lambda", region_name=sandbox.region, endpoint_url=sandbox.aws_endpoint_url
    )
    served = client.get_alias(FunctionName="checkout-api", Name="live")
    return served["FunctionVersion"], dict(
        (served.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    )


def reason(status: dict[str, Any], kind: str) -> str:
    return next(str(c.get("reason")) for c in status.get("conditions", []) if c.get("type") == kind)


def hooks(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(hook["point"], hook["result"], hook["message"]) for hook in status.get("hooks", [])]
