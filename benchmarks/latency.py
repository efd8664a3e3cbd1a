"""Latency from a spec change to the first alias write, and AWS calls per canary, in the sandbox.

Run: ``.venv/bin/python benchmarks/latency.py [--samples 20]``. Starts the local sandbox (the
Kubernetes API emulator and moto in this process, the real operator beside them), then flips
``spec.version`` between the stable and the new version ``--samples`` times: each flip is either a
rollout start (first write: 10% on the new version) or a revert (first write: all traffic back).
Latency is measured from the moment the PATCH returns to the moment the operator issues its
UpdateAlias (a botocore ``before-call`` hook on the operator's own client). Prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import aiohttp

from lambda_rollouts.model import GROUP, PLURAL, VERSION
from lambda_rollouts.sandbox.runtime import open_sandbox

URL = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/bench"


def manifest(version: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LambdaRollout",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": version,
            "strategy": {"canary": {"steps": steps}},
        },
    }


async def main(samples: int) -> None:
    async with open_sandbox() as sandbox, aiohttp.ClientSession(sandbox.kube_url) as session:
        writes: list[float] = []

        async with session.post(
            URL.rsplit("/", 1)[0], json=manifest("1", [{"setWeight": 10}, {"pause": {}}])
        ) as r:
            assert r.status == 201, await r.text()
        while not sandbox.routers:  # noqa: ASYNC110 - the router appears when the operator starts work
            await asyncio.sleep(0.01)
        router = sandbox.routers[0]
        router.lambda_client(sandbox.region).meta.events.register(
            "before-call.lambda.UpdateAlias", lambda **_: writes.append(time.monotonic())
        )
        await asyncio.sleep(1.0)

        latencies: list[float] = []
        version = "1"
        for _ in range(samples):
            version = "2" if version == "1" else "1"
            before = len(writes)
            patch = {"spec": {"version": version}}
            headers = {"Content-Type": "application/merge-patch+json"}
            async with session.patch(URL, json=patch, headers=headers) as response:
                assert response.status == 200, await response.text()
            changed = time.monotonic()
            deadline = changed + 10
            while len(writes) == before and time.monotonic() < deadline:  # noqa: ASYNC110 - a sync hook
                await asyncio.sleep(0.001)
            if len(writes) == before:
                raise SystemExit(f"no alias write within 10 s after changing the version to {version}")
            latencies.append(writes[before] - changed)
            await asyncio.sleep(0.5)  # let the status settle before the next flip

        milliseconds = sorted(latency * 1000 for latency in latencies)
        print(f"spec change -> first UpdateAlias, {samples} samples (ms):")
        median, p90 = statistics.median(milliseconds), milliseconds[int(0.9 * (samples - 1))]
        print(f"  median {median:.1f}  p90 {p90:.1f}  min {milliseconds[0]:.1f}  max {milliseconds[-1]:.1f}")

        # AWS calls for one canary of k weight steps plus promotion, from a fresh alias state.
        for steps in (1, 3, 9):
            await _count_canary_calls(session, sandbox, router, steps)


async def _count_canary_calls(session: aiohttp.ClientSession, sandbox: Any, router: Any, steps: int) -> None:
    async with session.delete(URL) as response:
        assert response.status == 200
    while True:
        async with session.get(URL) as response:
            if response.status == 404:
                break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(
        router.lambda_client(sandbox.region).update_alias,
        FunctionName="checkout-api",
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    router.calls.clear()
    weights = [round(100 * (i + 1) / (steps + 1)) for i in range(steps)]
    plan = [{"setWeight": weight} for weight in weights]
    async with session.post(URL.rsplit("/", 1)[0], json=manifest("2", plan)) as response:
        assert response.status == 201, await response.text()
    while True:
        async with session.get(URL) as response:
            body = await response.json()
        if body.get("status", {}).get("phase") == "Healthy":
            break
        await asyncio.sleep(0.05)
    total = sum(router.calls.values())
    minimum = steps + 1 + 3  # one UpdateAlias per weight change, GetAlias + two versions for pre-flight
    by_api = ", ".join(f"{name} {count}" for name, count in sorted(router.calls.items()))
    print(
        f"canary of {steps} weight steps + promotion: {total} AWS calls ({by_api}); "
        f"minimum {minimum}, ratio {total / minimum:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    asyncio.run(main(parser.parse_args().samples))
