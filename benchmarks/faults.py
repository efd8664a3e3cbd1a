"""Rollouts through the real operator while a share of its AWS attempts fail, in the sandbox.

Run: ``.venv/bin/python benchmarks/faults.py [--rollouts 30] [--rate 0.25] [--seed 1] [--json PATH]``.

Starts the local sandbox without its operator (the Kubernetes API emulator and moto as a server,
in this process), seeds ``--rollouts`` functions ``faults-00``... (versions 1 and 2, alias ``live``
on 1), and runs the real operator in-process with its own wiring: the AWS backends of
``default_backends``, whose boto3 session names moto's endpoint in its configuration (as the
sandbox's does) and carries a ``FaultInjector`` (botocore ``before-send`` handlers that every
client of the session inherits: ``--rate`` of the HTTP attempts
to Lambda, CloudWatch and STS answered with a throttle, a 500/503, a 409 on writes, a connection
reset or a read timeout, chosen by ``--seed``) and pace requests as configured
(``--requests-per-second``, ``--burst``; CloudWatch at the settings' defaults). Failed reconciles
are retried after 1 s, doubling up to 10 s.

All rollouts are created at once, to version 2. Rollout i is a canary (10%, pause, 50%, pause), a
linear shift (34% steps) or all at once, by i mod 3; pauses and intervals are 1 to 3 s. Canaries
and linear shifts whose i mod 4 is 0 or 1 carry a background analysis (error-rate at most 1% over
at least 10 invocations, every second), fed by the demo's ``Traffic`` (200 invocations per second,
split by the alias's weights, published to CloudWatch every second); among them, those whose
i mod 8 is 0 or 1 ship a version 2 failing a quarter of its invocations, and must be rolled back.

Checks, within ``--deadline`` seconds of the creates: every rollout ends where it must (Healthy
with the alias at 100% on version 2, or Degraded by ``AnalysisFailed`` with the alias at 100% on
version 1: no alias is left split), at least 20% of the attempts were faulted, and no second (no
ten seconds) saw more of the operator's attempts to a service than its bucket allows: rate + burst
in any 1 s, rate + burst / 10 per second over any 10 s. The attempts are timed by the injector,
just after their token, in whichever order the threads run: one attempt over is tolerated.

Prints a table (rollouts, attempts, faults by kind and their share of the attempts, the AWS clients'
retries, the calls that failed even so, final states, times, and the busiest windows: attempts
that reached moto, from the injector's timestamps, and all attempts, which took tokens), and with
``--json PATH`` writes the figures. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import kopf

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.handlers import Wiring, build_registry, default_backends
from lambda_rollouts.model import GROUP, PLURAL, VERSION
from lambda_rollouts.reconcile import Backends
from lambda_rollouts.sandbox.aws import sandbox_session, seed_demo_function
from lambda_rollouts.sandbox.demo import Traffic
from lambda_rollouts.sandbox.runtime import SandboxHandle, open_sandbox
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.faults import ALL_KINDS, FaultInjector

ROLLOUTS_URL = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
STABLE, NEW = "1", "2"
FAILING_ERROR_RATIO = 0.25
MIN_FAULTED_SHARE = 0.2
# Attempts a window may hold over its bucket's bound: the injector times an attempt just after
# its token is granted, and a thread can be held up between the two.
TIMING_SLACK = 1
ANALYSIS = {"interval": "1s", "metrics": [{"name": "error-rate", "max": 1}], "minInvocations": 10}
_DEFAULTS = Settings.model_fields


@dataclass
class Plan:
    name: str
    function: str
    strategy: str
    pause_seconds: int
    analysed: bool
    failing: bool
    created_at: float = 0.0
    settled_at: float | None = None
    final: dict[str, Any] = field(default_factory=dict)

    @property
    def expected_phase(self) -> str:
        return "Degraded" if self.failing else "Healthy"

    def manifest(self) -> dict[str, Any]:
        pause = f"{self.pause_seconds}s"
        strategy: dict[str, Any] = {
            "canary": {
                "canary": {
                    "steps": [
                        {"setWeight": 10},
                        {"pause": {"duration": pause}},
                        {"setWeight": 50},
                        {"pause": {"duration": pause}},
                    ]
                }
            },
            "linear": {"linear": {"stepWeight": 34, "interval": pause}},
            "allAtOnce": {"allAtOnce": {}},
        }[self.strategy]
        spec: dict[str, Any] = {
            "functionName": self.function,
            "alias": "live",
            "version": NEW,
            "strategy": strategy,
        }
        if self.analysed:
            spec["analysis"] = ANALYSIS
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LambdaRollout",
            "metadata": {"name": self.name, "namespace": "default"},
            "spec": spec,
        }


def plans(count: int) -> list[Plan]:
    made = []
    for index in range(count):
        strategy = ("canary", "linear", "allAtOnce")[index % 3]
        analysed = strategy != "allAtOnce" and index % 4 < 2
        made.append(
            Plan(
                name=f"faults-{index:02d}",
                function=f"faults-{index:02d}",
                strategy=strategy,
                pause_seconds=1 + index % 3,
                analysed=analysed,
                failing=analysed and index % 8 < 2,
            )
        )
    return made


@dataclass
class Operator:
    """The operator's AWS side, as the benchmark needs to see it."""

    injector: FaultInjector
    routers: list[BotoAliasRouter] = field(default_factory=list)
    # Calls that failed even after the AWS clients' retries, by (service, operation, error).
    failed_calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def observe(self, service: str, operation: str, error: str | None) -> None:
        if error is not None:
            self.failed_calls[(service, operation, error)] += 1


def operator_settings(sandbox: SandboxHandle, arguments: argparse.Namespace) -> Settings:
    return Settings(
        LAMBDA_ROLLOUTS_DEFAULT_REGION=sandbox.region,
        retry_initial_delay_seconds=1,
        retry_max_delay_seconds=10,
        aws_requests_per_second=arguments.requests_per_second,
        aws_burst=arguments.burst,
        aws_cloudwatch_requests_per_second=_DEFAULTS["aws_cloudwatch_requests_per_second"].default,
        aws_cloudwatch_burst=_DEFAULTS["aws_cloudwatch_burst"].default,
        aws_retry_mode="standard",
        aws_max_attempts=_DEFAULTS["aws_max_attempts"].default,
    )


@contextlib.asynccontextmanager
async def running_operator(sandbox: SandboxHandle, settings: Settings, operator: Operator) -> Any:
    """The real operator in this loop, its AWS clients faulted by ``operator.injector``."""

    def faulty_session() -> boto3.session.Session:
        # The one session of the operator's AwsClients, which serve the router, the metric
        # provider and the hooks alike: its clients all inherit the injector's handlers.
        session = sandbox_session(sandbox.region, endpoint_url=sandbox.aws_endpoint_url)
        operator.injector.register(session)
        return session

    def backends_factory(settings: Settings) -> Backends:
        backends = default_backends(settings, faulty_session, on_aws_call=operator.observe)
        assert isinstance(backends.router, BotoAliasRouter)
        operator.routers.append(backends.router)
        return backends

    wiring = Wiring(
        settings=settings,
        backends_factory=backends_factory,
        connection=kopf.ConnectionInfo(server=sandbox.kube_url),
    )
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(registry=build_registry(wiring), clusterwide=True, standalone=True, ready_flag=ready)
    )
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def main(arguments: argparse.Namespace) -> int:
    injector = FaultInjector(arguments.rate, seed=arguments.seed)
    operator = Operator(injector)
    rollouts = plans(arguments.rollouts)
    async with open_sandbox(run_operator=False) as sandbox:
        endpoint, region = sandbox.aws_endpoint_url, sandbox.region
        session = sandbox_session(region)
        print(f"seeding {len(rollouts)} functions in moto...", flush=True)
        for plan in rollouts:
            await asyncio.to_thread(seed_demo_function, endpoint, region, plan.function, session=session)
        settings = operator_settings(sandbox, arguments)
        traffic = [
            Traffic(
                endpoint,
                region,
                plan.function,
                "live",
                error_ratio={NEW: FAILING_ERROR_RATIO} if plan.failing else {},
            )
            for plan in rollouts
            if plan.analysed
        ]
        async with (
            running_operator(sandbox, settings, operator),
            contextlib.AsyncExitStack() as generators,
            aiohttp.ClientSession(sandbox.kube_url) as kube,
        ):
            for generator in traffic:
                await generators.enter_async_context(generator)
            print(f"creating {len(rollouts)} rollouts, {arguments.rate:.0%} of AWS attempts faulted...")
            started = time.monotonic()
            for plan in rollouts:
                plan.created_at = time.monotonic()
                async with kube.post(ROLLOUTS_URL, json=plan.manifest()) as response:
                    assert response.status == 201, await response.text()
            await settle(kube, rollouts, deadline=started + arguments.deadline)
            elapsed = time.monotonic() - started
            injector.enabled = False
        lambda_client = session.client("lambda", region_name=region, endpoint_url=endpoint)
        for plan in rollouts:
            alias = await asyncio.to_thread(lambda_client.get_alias, FunctionName=plan.function, Name="live")
            plan.final["alias"] = {
                "functionVersion": alias["FunctionVersion"],
                "weights": dict(alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})),
            }
    return report(rollouts, operator, settings, arguments, elapsed)


async def settle(kube: aiohttp.ClientSession, rollouts: list[Plan], *, deadline: float) -> None:
    """Poll until every rollout is in its expected phase for generation 1, or the deadline."""
    pending = {plan.name: plan for plan in rollouts}
    while pending and time.monotonic() < deadline:
        for name, plan in list(pending.items()):
            async with kube.get(f"{ROLLOUTS_URL}/{name}") as response:
                body: dict[str, Any] = await response.json()
            status = body.get("status", {})
            plan.final["status"] = status
            if status.get("observedGeneration") == 1 and status.get("phase") == plan.expected_phase:
                plan.settled_at = time.monotonic()
                del pending[name]
        await asyncio.sleep(0.2)


def verdict(plan: Plan) -> str | None:
    """What is wrong with a rollout's end, or None."""
    status = plan.final.get("status", {})
    alias = plan.final.get("alias", {})
    if plan.settled_at is None:
        return f"not {plan.expected_phase} in time: {status.get('phase')}, {status.get('message')!r}"
    if alias.get("weights"):
        return f"alias left split: {alias}"
    expected_version = STABLE if plan.failing else NEW
    if alias.get("functionVersion") != expected_version:
        return f"alias on version {alias.get('functionVersion')}, not {expected_version}"
    if plan.failing:
        stalled = next((c for c in status.get("conditions", []) if c.get("type") == "Stalled"), {})
        if stalled.get("reason") != "AnalysisFailed":
            return f"degraded for another reason: {stalled}"
    return None


def report(
    rollouts: list[Plan],
    operator: Operator,
    settings: Settings,
    arguments: argparse.Namespace,
    elapsed: float,
) -> int:
    injector = operator.injector
    clients = operator.routers[0].clients if operator.routers else None
    attempts, injected = injector.total_attempts, injector.total_injected
    calls = sum(clients.calls.values()) if clients else 0
    retries = sum(clients.attempts.values()) - calls if clients else 0
    problems = {plan.name: problem for plan in rollouts if (problem := verdict(plan)) is not None}
    share = injected / attempts if attempts else 0.0

    by_strategy = Counter(plan.strategy for plan in rollouts)
    print(
        f"\n{len(rollouts)} rollouts ({', '.join(f'{n} {s}' for s, n in sorted(by_strategy.items()))}; "
        f"{sum(p.analysed for p in rollouts)} with analysis, {sum(p.failing for p in rollouts)} of them "
        f"failing), faults at {arguments.rate:.0%} (seed {arguments.seed})"
    )
    finals = Counter(plan.final.get("status", {}).get("phase", "none") for plan in rollouts)
    expected = Counter(plan.expected_phase for plan in rollouts)
    print(f"  final states: {dict(finals)} (expected {dict(expected)}); wrong: {len(problems)}")
    for name, problem in problems.items():
        print(f"    {name}: {problem}")
    settle_times = sorted(p.settled_at - p.created_at for p in rollouts if p.settled_at is not None)
    if settle_times:
        p50, p90 = statistics.median(settle_times), settle_times[int(0.9 * (len(settle_times) - 1))]
        print(
            f"  time: all settled in {elapsed:.1f} s; per rollout from its create: p50 {p50:.1f} s, "
            f"p90 {p90:.1f} s, max {settle_times[-1]:.1f} s"
        )
    print(f"  HTTP attempts by the operator: {attempts} ({calls} API calls, {retries} retries)")
    print(f"  faults injected: {injected} = {share:.1%} of attempts (floor {MIN_FAULTED_SHARE:.0%})")
    kinds = injector.by_kind()
    for kind in ALL_KINDS:
        print(f"    {kind:<18}{kinds[kind]:>6}  {kinds[kind] / attempts if attempts else 0:>6.1%}")
    failed = sum(operator.failed_calls.values())
    print(f"  calls that failed after their retries (the operator backed off and retried): {failed}")
    for (service, operation, error), count in operator.failed_calls.most_common(8):
        print(f"    {service} {operation} {error}: {count}")

    limits = {
        "lambda": (settings.aws_requests_per_second, settings.aws_burst),
        "cloudwatch": (settings.aws_cloudwatch_requests_per_second, settings.aws_cloudwatch_burst),
    }
    rates: dict[str, Any] = {}
    over_limit = []
    print("  busiest windows per service (attempts; the limit is what the token bucket allows):")
    columns = (("reached moto in 1 s", 20), ("all in 1 s", 12), ("limit", 7), ("per s over 10 s", 17))
    print(f"    {'':<12}" + "".join(f"{title:>{width}}" for title, width in columns) + f"{'limit':>7}")
    for service, (rate, burst) in limits.items():
        figures = {
            "reachedMotoPeak1s": injector.peak(1.0, services=[service], passed_only=True),
            "attemptsPeak1s": injector.peak(1.0, services=[service]),
            "attemptsPerSecondPeak10s": injector.peak(10.0, services=[service]) / 10,
            "limit1s": rate + burst,
            "limitPerSecond10s": rate + burst / 10,
            "rate": rate,
            "burst": burst,
        }
        rates[service] = figures
        print(
            f"    {service:<12}{figures['reachedMotoPeak1s']:>20}{figures['attemptsPeak1s']:>12}"
            f"{figures['limit1s']:>7g}{figures['attemptsPerSecondPeak10s']:>17.1f}"
            f"{figures['limitPerSecond10s']:>7g}"
        )
        if (
            figures["attemptsPeak1s"] > figures["limit1s"] + TIMING_SLACK
            or figures["attemptsPerSecondPeak10s"] * 10 > figures["limitPerSecond10s"] * 10 + TIMING_SLACK
        ):
            over_limit.append(service)

    failures = []
    if problems:
        failures.append(f"{len(problems)} rollouts ended wrong")
    if share < MIN_FAULTED_SHARE:
        failures.append(f"only {share:.1%} of attempts faulted")
    if over_limit:
        failures.append(f"more attempts than the limit allows: {', '.join(over_limit)}")
    print("\nOK" if not failures else f"\nFAILED: {'; '.join(failures)}")

    if arguments.json is not None:
        document = {
            "benchmark": "faults",
            "when": datetime.now(UTC).isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "settings": {
                "rollouts": len(rollouts),
                "rate": arguments.rate,
                "seed": arguments.seed,
                "deadlineSeconds": arguments.deadline,
                "limits": {service: {"rate": r, "burst": b} for service, (r, b) in limits.items()},
                "retryMode": settings.aws_retry_mode,
                "maxAttempts": settings.aws_max_attempts,
            },
            "elapsedSeconds": elapsed,
            "attempts": attempts,
            "calls": calls,
            "botocoreRetries": retries,
            "injected": injected,
            "injectedShare": share,
            "injectedByKind": {str(kind): kinds[kind] for kind in ALL_KINDS},
            "injectedByOperation": dict(injector.by_operation()),
            "failedCalls": {" ".join(key): count for key, count in operator.failed_calls.items()},
            "finalStates": dict(finals),
            "wrong": problems,
            "busiestWindows": rates,
            "ok": not failures,
            "rollouts": [
                {
                    "name": plan.name,
                    "strategy": plan.strategy,
                    "pauseSeconds": plan.pause_seconds,
                    "analysed": plan.analysed,
                    "failing": plan.failing,
                    "phase": plan.final.get("status", {}).get("phase"),
                    "alias": plan.final.get("alias"),
                    "settleSeconds": None if plan.settled_at is None else plan.settled_at - plan.created_at,
                }
                for plan in rollouts
            ],
        }
        arguments.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {arguments.json}")
    return 0 if not failures else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=30)
    parser.add_argument("--rate", type=float, default=0.25, help="share of HTTP attempts faulted")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault decisions")
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=_DEFAULTS["aws_requests_per_second"].default,
        help="the operator's Lambda (and STS) rate",
    )
    parser.add_argument("--burst", type=int, default=_DEFAULTS["aws_burst"].default)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for every rollout to settle")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON to this path")
    parser.add_argument("--verbose", action="store_true", help="show the operator's and Kopf's logs")
    parsed = parser.parse_args()
    if not parsed.verbose:
        # Every injected fault the operator backs off from is logged; the table says it better.
        for noisy in ("kopf", "aiohttp.access", "lambda_rollouts"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
    sys.exit(asyncio.run(main(parsed)))
