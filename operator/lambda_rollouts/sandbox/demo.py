"""``make demo``: one canary rollout in the local sandbox, shown as it happens.

Contract: starts the sandbox (``open_sandbox``), applies ``DEMO_ROLLOUT`` (the same manifest as
``examples/canary.yaml``; a test keeps them equal), prints every change of the alias's weights and
of the rollout's phase until the rollout is Healthy with all traffic on the new version, then a
summary with the figures. Returns the process exit code: 0 on success, 1 when the rollout does not
finish within ``timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from lambda_rollouts.model import GROUP, PLURAL, VERSION
from lambda_rollouts.sandbox.aws import sandbox_session
from lambda_rollouts.sandbox.runtime import SandboxHandle, open_sandbox

DEMO_ROLLOUT: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "LambdaRollout",
    "metadata": {"name": "checkout-api", "namespace": "default"},
    "spec": {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "2",
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "5s"}},
                    {"setWeight": 50},
                    {"pause": {"duration": "5s"}},
                ]
            }
        },
    },
}


def _describe_alias(alias: dict[str, Any]) -> str:
    primary = alias["FunctionVersion"]
    weights = alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
    if not weights:
        return f"100% v{primary}"
    parts = [f"{round(fraction * 100, 2):g}% v{version}" for version, fraction in weights.items()]
    rest = round(100 - sum(fraction * 100 for fraction in weights.values()), 2)
    return " / ".join([f"{rest:g}% v{primary}", *parts])


def _kubectl() -> str | None:
    beside_python = Path(sys.executable).with_name("kubectl")
    return str(beside_python) if beside_python.exists() else shutil.which("kubectl")


async def _apply(session: aiohttp.ClientSession, sandbox: SandboxHandle) -> None:
    url = f"{sandbox.kube_url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    async with session.post(url, json=DEMO_ROLLOUT) as response:
        if response.status >= 400:
            raise RuntimeError(f"applying the demo rollout failed: {await response.text()}")


async def _read_rollout(session: aiohttp.ClientSession, sandbox: SandboxHandle) -> dict[str, Any]:
    url = f"{sandbox.kube_url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/checkout-api"
    async with session.get(url) as response:
        result: dict[str, Any] = await response.json()
        return result


async def run_demo(timeout_seconds: float = 50.0) -> int:
    started = time.monotonic()
    print("Starting the local sandbox: Kubernetes API emulator, AWS emulator (moto), operator…", flush=True)
    async with open_sandbox() as sandbox, aiohttp.ClientSession() as session:
        seeded = sandbox.seeded
        lambda_client = sandbox_session(sandbox.region).client(
            "lambda", region_name=sandbox.region, endpoint_url=sandbox.aws_endpoint_url
        )

        def read_alias() -> dict[str, Any]:
            return dict(lambda_client.get_alias(FunctionName=seeded["function_name"], Name=seeded["alias"]))

        initial = _describe_alias(await asyncio.to_thread(read_alias))
        print(
            f"Seeded function {seeded['function_name']}: versions {seeded['stable_version']} and "
            f"{seeded['canary_version']}, alias {seeded['alias']} -> {initial}"
        )
        print("Applying examples/canary.yaml: setWeight 10, pause 5s, setWeight 50, pause 5s, promote\n")
        applied = time.monotonic()
        await _apply(session, sandbox)

        shown: tuple[str, str, str] | None = None
        shifts: list[str] = []
        phase = ""
        alias: dict[str, Any] = {}
        while time.monotonic() - applied < timeout_seconds:
            alias = await asyncio.to_thread(read_alias)
            status = (await _read_rollout(session, sandbox)).get("status", {})
            phase = status.get("phase", "")
            line = (_describe_alias(alias), phase, status.get("message", ""))
            if line != shown:
                elapsed = time.monotonic() - applied
                print(
                    f"  +{elapsed:5.1f}s  alias {seeded['alias']}: {line[0]:<20} {line[1]:<12} {line[2]}",
                    flush=True,
                )
                if shown is None or line[0] != shown[0]:
                    shifts.append(line[0])
                shown = line
            done = alias["FunctionVersion"] == seeded["canary_version"]
            if (
                phase == "Healthy"
                and done
                and not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")
            ):
                break
            await asyncio.sleep(0.2)
        else:
            print(f"\nThe rollout did not finish within {timeout_seconds:.0f}s (phase {phase or 'unknown'}).")
            return 1

        print("\nSummary")
        print(f"  traffic shifts seen: {' -> '.join(shifts)}")
        rollout_time, wall_time = time.monotonic() - applied, time.monotonic() - started
        print(f"  rollout time: {rollout_time:.1f}s; demo wall time: {wall_time:.1f}s")
        calls: dict[str, int] = {}
        for router in sandbox.routers:
            for operation, count in router.calls.items():
                calls[operation] = calls.get(operation, 0) + count
        described = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
        print(f"  AWS calls made by the operator: {sum(calls.values())} ({described})")
        kubectl = _kubectl()
        if kubectl is not None:
            print("\n$ kubectl get lambdarollouts -o wide")
            shown_table = await asyncio.to_thread(
                subprocess.run,
                [
                    kubectl,
                    "--kubeconfig",
                    str(sandbox.kubeconfig_path),
                    "get",
                    "lambdarollouts",
                    "-o",
                    "wide",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            print(shown_table.stdout.rstrip() or shown_table.stderr.rstrip())
    return 0
