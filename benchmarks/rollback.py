"""Time from a failing measurement to the rollback write, and CloudWatch calls per measurement.

Run: ``.venv/bin/python benchmarks/rollback.py [--runs 10] [--json PATH] [--poll-ms 10]``.

Starts the local sandbox (the Kubernetes API emulator and moto in this process, the real operator
beside them, on the wall clock), publishes two bad releases of the seeded function (versions 3
and 4, each failing a quarter of its invocations) and runs the demo's ``Traffic`` generator
(200 invocations per second through the alias, published to CloudWatch every second). A rollout
``bench`` starts on version 1, which the alias already serves, with ``setWeight 10`` then
``pause {}`` and a background analysis: error-rate at most 1% over at least 10 invocations, every
2 s. Each of ``--runs`` runs patches ``spec.version`` to a bad version, alternating between the
two (a rolled-back rollout holds until ``spec.version`` changes), waits for the rollback, then
patches the version back to 1 and waits for Healthy.

Per run it measures, from ``status.analysis.lastMeasuredAt`` (the operator's clock: the instant of
the failing measurement, which is also the end of its CloudWatch window):

- ``write``: to the moment the operator's rollback ``UpdateAlias`` returned (a botocore
  ``after-call`` hook on the operator's own Lambda client, read on the wall clock);
- ``seen``: to the first read of the alias back on 100% version 1 by this script, which reads it
  every ``--poll-ms`` ms: an upper bound, including the poll interval and the read itself.

It also counts the operator's ``GetMetricData`` calls (its ``AwsClients`` counter) against the
measurements recorded in ``status.analysis.measurements``. Prints a table (p50, p90, max in ms;
p50 is the median, p90 the same rank as ``latency.py`` uses) and, with ``--json PATH``, writes the
figures and every run's raw values there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from latency import URL, manifest

from lambda_rollouts.model import parse_time
from lambda_rollouts.sandbox.aws import publish_demo_release, sandbox_session
from lambda_rollouts.sandbox.demo import BAD_ERROR_RATIO, Traffic, operator_calls, serves_only
from lambda_rollouts.sandbox.runtime import SandboxHandle, open_sandbox

STABLE = "1"
BAD_RELEASES = (3, 4)
ANALYSIS = {"interval": "2s", "metrics": [{"name": "error-rate", "max": 1}], "minInvocations": 10}
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}]
RUN_TIMEOUT_SECONDS = 30.0
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def p90(values: list[float]) -> float:
    """The 90th percentile as ``latency.py`` reports it: the value at rank int(0.9 * (n - 1))."""
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))]


async def status_of(session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(URL) as response:
        body: dict[str, Any] = await response.json()
    status: dict[str, Any] = body.get("status", {})
    return status


async def set_version(session: aiohttp.ClientSession, version: str) -> int:
    """Patch spec.version; return the generation that carries it."""
    async with session.patch(URL, json={"spec": {"version": version}}, headers=MERGE_PATCH) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
    generation: int = body["metadata"]["generation"]
    return generation


async def settled(session: aiohttp.ClientSession, generation: int, phase: str) -> dict[str, Any]:
    """The status once it describes ``generation`` in ``phase``; exits the script on a timeout."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        status = await status_of(session)
        if (status.get("observedGeneration") or 0) >= generation and status.get("phase") == phase:
            return status
        await asyncio.sleep(0.02)
    raise SystemExit(f"the rollout did not reach {phase} within {RUN_TIMEOUT_SECONDS:.0f}s: {status}")


async def one_run(
    session: aiohttp.ClientSession,
    read_alias: Callable[[], dict[str, Any]],
    writes: list[tuple[datetime, str, dict[str, float]]],
    bad: str,
    poll_seconds: float,
) -> dict[str, Any]:
    """Ship ``bad``, wait for the rollback, go back to the stable version; the run's figures."""
    before = len(writes)
    generation = await set_version(session, bad)
    split_seen = False
    seen_at: datetime | None = None
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while seen_at is None and time.monotonic() < deadline:
        alias = await asyncio.to_thread(read_alias)
        if not serves_only(alias, STABLE):
            split_seen = True
        elif split_seen:
            seen_at = datetime.now(UTC)
            break
        await asyncio.sleep(poll_seconds)
    if seen_at is None:
        raise SystemExit(f"version {bad} was not rolled back within {RUN_TIMEOUT_SECONDS:.0f}s")
    status = await settled(session, generation, "Degraded")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    if stalled["reason"] != "AnalysisFailed":
        raise SystemExit(f"version {bad} was stopped for another reason: {stalled}")
    analysis = status["analysis"]
    measured_at = parse_time(analysis["lastMeasuredAt"])
    assert measured_at is not None
    rollbacks = [at for at, primary, routing in writes[before:] if primary == STABLE and not routing]
    if not rollbacks:
        raise SystemExit(f"no rollback write of version {bad} was recorded: {writes[before:]}")
    back = await set_version(session, STABLE)
    await settled(session, back, "Healthy")
    return {
        "version": bad,
        "measurements": analysis["measurements"],
        "lastMeasuredAt": analysis["lastMeasuredAt"],
        "writeMs": (rollbacks[0] - measured_at).total_seconds() * 1000,
        "seenMs": (seen_at - measured_at).total_seconds() * 1000,
        "message": status["message"],
    }


async def main(runs: int, json_path: Path | None, poll_ms: float) -> None:
    async with open_sandbox() as sandbox, aiohttp.ClientSession(sandbox.kube_url) as session:
        seeded = sandbox.seeded
        function, alias_name = seeded["function_name"], seeded["alias"]
        bad_versions = [
            await asyncio.to_thread(
                publish_demo_release, sandbox.aws_endpoint_url, sandbox.region, release, function
            )
            for release in BAD_RELEASES
        ]
        lambda_client = sandbox_session(sandbox.region).client(
            "lambda", region_name=sandbox.region, endpoint_url=sandbox.aws_endpoint_url
        )

        def read_alias() -> dict[str, Any]:
            return dict(lambda_client.get_alias(FunctionName=function, Name=alias_name))

        body = manifest(STABLE, STEPS)
        body["spec"]["analysis"] = ANALYSIS
        async with session.post(URL.rsplit("/", 1)[0], json=body) as response:
            assert response.status == 201, await response.text()
        await settled(session, 1, "Healthy")
        writes = watch_rollback_writes(sandbox)

        error_ratio = dict.fromkeys(bad_versions, BAD_ERROR_RATIO)
        calls_before = operator_calls(sandbox)
        results = []
        async with Traffic(
            sandbox.aws_endpoint_url, sandbox.region, function, alias_name, error_ratio=error_ratio
        ):
            for index in range(runs):
                bad = bad_versions[index % len(bad_versions)]
                results.append(await one_run(session, read_alias, writes, bad, poll_ms / 1000))
        calls = operator_calls(sandbox)
        calls.subtract(calls_before)
        report(results, calls, runs=runs, poll_ms=poll_ms, json_path=json_path)


def watch_rollback_writes(sandbox: SandboxHandle) -> list[tuple[datetime, str, dict[str, float]]]:
    """Every alias write the operator completes from now on: (wall clock, primary, routing)."""
    writes: list[tuple[datetime, str, dict[str, float]]] = []

    def record(parsed: dict[str, Any], **_: Any) -> None:
        routing = parsed.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
        writes.append((datetime.now(UTC), parsed.get("FunctionVersion", ""), dict(routing)))

    # The operator's own cached client: the hook sees exactly the writes it makes.
    router = sandbox.routers[0]
    router.lambda_client(sandbox.region).meta.events.register("after-call.lambda.UpdateAlias", record)
    return writes


def report(
    results: list[dict[str, Any]], calls: Counter[str], *, runs: int, poll_ms: float, json_path: Path | None
) -> None:
    measurements = sum(result["measurements"] for result in results)
    figures: dict[str, Any] = {}
    print(f"\nfailing measurement -> rollback, {runs} runs (ms):")
    print(f"  {'':<44}{'p50':>8}{'p90':>8}{'max':>8}")
    for key, label in (
        ("writeMs", "to the UpdateAlias returning (hook)"),
        ("seenMs", f"to the alias read back on v{STABLE} (poll {poll_ms:g} ms)"),
    ):
        values = [result[key] for result in results]
        figures[key] = {"p50": statistics.median(values), "p90": p90(values), "max": max(values)}
        shown = figures[key]
        print(f"  {label:<44}{shown['p50']:>8.1f}{shown['p90']:>8.1f}{shown['max']:>8.1f}")
    ratio = calls["GetMetricData"] / measurements if measurements else None
    print(
        f"CloudWatch GetMetricData calls per measurement: {calls['GetMetricData']} / {measurements} "
        f"= {'n/a' if ratio is None else f'{ratio:.2f}'} (DescribeAlarms: {calls['DescribeAlarms']})"
    )
    described = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()) if count)
    print(f"AWS calls by the operator over the runs: {sum(calls.values())} ({described})")
    if json_path is not None:
        document = {
            "benchmark": "rollback",
            "when": datetime.now(UTC).isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "settings": {"runs": runs, "pollMs": poll_ms, "analysis": ANALYSIS, "steps": STEPS},
            "failingMeasurementToRollbackMs": figures,
            "getMetricDataCalls": calls["GetMetricData"],
            "measurements": measurements,
            "getMetricDataPerMeasurement": ratio,
            "operatorCalls": {name: count for name, count in sorted(calls.items()) if count},
            "runs": results,
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {json_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON to this path")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="how often the alias is read (ms)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.json, arguments.poll_ms))
