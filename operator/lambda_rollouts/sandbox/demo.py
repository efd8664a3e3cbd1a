"""``make demo``: a canary that succeeds, then a release that fails and is rolled back, live.

Contract: starts the sandbox (``open_sandbox``) and runs two scenarios on the seeded function's
alias, printing every change of the alias's weights and of the rollout's phase and message:

1. A healthy canary: applies ``DEMO_ROLLOUT`` (the same manifest as ``examples/canary.yaml``; a
   test keeps them equal) and follows it until the rollout is Healthy with all traffic on
   version 2, then prints a summary with the operator's AWS calls.
2. A failing release: publishes version 3 (``release 3``, ``publish_demo_release``, its code
   failing a quarter of its invocations), starts a ``Traffic`` generator (200 invocations per
   second through the alias, split by its weights, published to the sandbox's CloudWatch with
   Lambda's per-version dimensions, as counts: version 3 fails a quarter of them, the others
   none, exactly, so the figures read back are predictable), and ships version 3 the way a
   user does: a merge patch of ``version``, ``strategy`` and ``analysis`` of the same rollout,
   taken from ``DEMO_ANALYSIS_ROLLOUT`` (the same manifest as ``examples/analysis.yaml``; a test
   keeps them equal). The first measurement at 10% fails and the operator rolls back. The demo
   then prints why: the status message, the Stalled condition's reason, the Warning Events, the
   last analysis results (``status.analysis``), the time from the failing measurement
   (``status.analysis.lastMeasuredAt``; the operator's clock is the wall clock here) to the first
   read of the alias back on version 2 (the alias is read every 20 ms in this scenario, so the
   figure is an upper bound that includes the poll interval and the read), and the operator's
   CloudWatch calls against its measurements.

Finally it prints ``kubectl get lambdarollouts -o wide`` when kubectl is installed. Returns the
process exit code: 0 only when scenario 1 ends Healthy on version 2 and scenario 2 ends Degraded
with reason AnalysisFailed and the alias on 100% version 2; 1 otherwise (including when the two
rollouts do not settle within ``timeout_seconds`` together), with a line saying what was wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from lambda_rollouts.model import GROUP, PLURAL, VERSION, Phase, Reason, parse_time
from lambda_rollouts.sandbox.aws import publish_demo_release, sandbox_session
from lambda_rollouts.sandbox.runtime import SandboxHandle, open_sandbox

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import DimensionTypeDef, MetricDatumTypeDef
    from mypy_boto3_lambda import LambdaClient

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

DEMO_ANALYSIS_ROLLOUT: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "LambdaRollout",
    "metadata": {"name": "checkout-api", "namespace": "default"},
    "spec": {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "3",
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "20s"}},
                    {"setWeight": 50},
                    {"pause": {"duration": "10s"}},
                ]
            }
        },
        "analysis": {
            "interval": "5s",
            "metrics": [{"name": "error-rate", "max": 1}],
            "minInvocations": 20,
        },
    },
}

# Version 3 of the seeded function is this release; it fails this share of its invocations.
BAD_RELEASE = 3
BAD_ERROR_RATIO = 0.25
INVOCATIONS_PER_SECOND = 200.0
# Scenario 2 reads the alias this often, so the rollback is seen within this much of its write.
FAST_POLL_SECONDS = 0.02
STATUS_POLL_SECONDS = 0.2
STATUS_AFTER_SHIFT_SECONDS = 0.1
ROLLOUT_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
EVENTS_PATH = "/api/v1/namespaces/default/events"


# ---------------------------------------------------------------------------------------------
# Traffic: the alias's clients, as CloudWatch sees them.


def alias_shares(alias: Mapping[str, Any]) -> dict[str, float]:
    """The fraction of traffic each version gets from a GetAlias answer, primary version first."""
    weights: Mapping[str, float] = alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
    return {alias["FunctionVersion"]: 1.0 - sum(weights.values()), **weights}


class Traffic:
    """Invocations of an alias, split by its weights, published as Lambda's per-version metrics.

    Every ``tick`` seconds it reads the alias (GetAlias) and sends one PutMetricData to the
    sandbox's CloudWatch holding, for each version the alias serves, its share of
    ``per_second * tick`` invocations (``Invocations``: one datapoint with the count, which the
    operator reads as a Sum) and how many of them failed (``Errors``, by ``error_ratio``, 0 for an
    unlisted version), under ``AWS/Lambda`` with the dimensions Lambda uses for a weighted alias:
    ``{FunctionName, Resource=<function>:<alias>, ExecutedVersion=<version>}``. The split is exact
    (rounded), not probabilistic like Lambda's, so the figures read back are predictable.

    An async context manager: entering makes the clients and starts publishing in a task (the
    blocking calls in worker threads); leaving stops it, and raises what stopped it early if
    anything did. ``invocations`` and ``errors`` count what was published, per version.
    """

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        function_name: str,
        alias: str,
        *,
        per_second: float = INVOCATIONS_PER_SECOND,
        error_ratio: Mapping[str, float] | None = None,
        tick: float = 1.0,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.function_name = function_name
        self.alias = alias
        self.per_second = per_second
        self.error_ratio: dict[str, float] = dict(error_ratio or {})
        self.tick = tick
        self.invocations: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._lambda: LambdaClient | None = None
        self._cloudwatch: CloudWatchClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self._make_clients)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if task.done():
            task.result()  # a generator that died early says why
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _make_clients(self) -> None:
        session = sandbox_session(self.region)
        self._lambda = session.client("lambda", region_name=self.region, endpoint_url=self.endpoint_url)
        self._cloudwatch = session.client(
            "cloudwatch", region_name=self.region, endpoint_url=self.endpoint_url
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await asyncio.to_thread(self.publish_once)
            # A fixed rate, whatever the calls took: the invocations per second stay as promised.
            next_at += self.tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def publish_once(self) -> None:
        """One tick: read the alias, publish every served version's invocations and errors. Blocking."""
        if self._lambda is None or self._cloudwatch is None:
            raise RuntimeError("enter the Traffic context before publishing")
        alias = self._lambda.get_alias(FunctionName=self.function_name, Name=self.alias)
        now = datetime.now(UTC)
        data: list[MetricDatumTypeDef] = []
        for version, share in alias_shares(dict(alias)).items():
            invocations = round(self.per_second * self.tick * share)
            if invocations <= 0:
                continue
            errors = round(invocations * self.error_ratio.get(version, 0.0))
            dimensions: list[DimensionTypeDef] = [
                {"Name": "FunctionName", "Value": self.function_name},
                {"Name": "Resource", "Value": f"{self.function_name}:{self.alias}"},
                {"Name": "ExecutedVersion", "Value": version},
            ]
            for metric, value in (("Invocations", invocations), ("Errors", errors)):
                data.append(
                    {
                        "MetricName": metric,
                        "Dimensions": dimensions,
                        "Timestamp": now,
                        "Value": float(value),
                        "Unit": "Count",
                    }
                )
            self.invocations[version] += invocations
            self.errors[version] += errors
        if data:
            self._cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)


# ---------------------------------------------------------------------------------------------
# Following a rollout.


def _describe_alias(alias: Mapping[str, Any]) -> str:
    primary = alias["FunctionVersion"]
    weights = alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
    if not weights:
        return f"100% v{primary}"
    parts = [f"{round(fraction * 100, 2):g}% v{version}" for version, fraction in weights.items()]
    rest = round(100 - sum(fraction * 100 for fraction in weights.values()), 2)
    return " / ".join([f"{rest:g}% v{primary}", *parts])


def serves_only(alias: Mapping[str, Any], version: str) -> bool:
    """Whether a GetAlias answer sends all traffic to ``version``."""
    return alias["FunctionVersion"] == version and not alias.get("RoutingConfig", {}).get(
        "AdditionalVersionWeights"
    )


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The condition of type ``kind`` in a status (empty when it has none)."""
    found: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == kind), {})
    return found


def _kubectl() -> str | None:
    beside_python = Path(sys.executable).with_name("kubectl")
    return str(beside_python) if beside_python.exists() else shutil.which("kubectl")


async def _send(
    session: aiohttp.ClientSession, method: str, url: str, body: Any, content_type: str
) -> dict[str, Any]:
    headers = {"Content-Type": content_type}
    async with session.request(method, url, json=body, headers=headers) as response:
        if response.status >= 400:
            raise RuntimeError(f"{method} {url} failed: {response.status} {await response.text()}")
        result: dict[str, Any] = await response.json()
        return result


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:
        result: dict[str, Any] = await response.json()
        return result


def operator_calls(sandbox: SandboxHandle) -> Counter[str]:
    """Every AWS operation the operator has made so far (Lambda, CloudWatch, STS), by name."""
    calls: Counter[str] = Counter()
    for router in sandbox.routers:
        calls.update(router.calls)
    return calls


def _describe_calls(calls: Counter[str]) -> str:
    described = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()) if count)
    return f"{sum(calls.values())} ({described})"


@dataclass
class _Followed:
    """What following one rollout showed."""

    settled: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    alias: dict[str, Any] = field(default_factory=dict)
    shifts: list[str] = field(default_factory=list)
    # The first read of the alias back on all-stable after it had been split (wall clock).
    back_on_stable_at: datetime | None = None


async def _follow(
    session: aiohttp.ClientSession,
    read_alias: Callable[[], dict[str, Any]],
    *,
    name: str,
    generation: int,
    stable: str,
    since: float,
    deadline: float,
    alias_every: float,
) -> _Followed:
    """Print each change of (alias weights, phase, message) until the rollout settles.

    Settled: the status describes ``generation``, its phase is Healthy or Degraded, and the alias
    has no routing left. The alias is read every ``alias_every`` seconds, the rollout every
    ``STATUS_POLL_SECONDS`` and shortly after each traffic shift; lines are printed after reading
    the rollout.
    """
    followed = _Followed()
    shown: tuple[str, str, str] | None = None
    last_described = ""
    next_status_read = 0.0
    split_seen = False
    while time.monotonic() < deadline:
        alias = await asyncio.to_thread(read_alias)
        seen_at = datetime.now(UTC)
        followed.alias = alias
        described = _describe_alias(alias)
        if described != last_described:
            if followed.shifts:
                # The operator writes the status after reading the alias back: a moment later, the
                # line pairs the new weights with the status written for them.
                next_status_read = time.monotonic() + STATUS_AFTER_SHIFT_SECONDS
            followed.shifts.append(described)
            last_described = described
        if not serves_only(alias, stable):
            split_seen = True
        elif split_seen and followed.back_on_stable_at is None:
            followed.back_on_stable_at = seen_at
        if time.monotonic() >= next_status_read:
            next_status_read = time.monotonic() + STATUS_POLL_SECONDS
            followed.status = (await _get(session, f"{ROLLOUT_PATH}/{name}")).get("status", {})
            status = followed.status
            phase = status.get("phase", "")
            line = (described, phase, status.get("message", ""))
            if line != shown:
                print(
                    f"  +{time.monotonic() - since:5.1f}s  alias: {line[0]:<18} {line[1]:<12} {line[2]}",
                    flush=True,
                )
                shown = line
            current = (status.get("observedGeneration") or 0) >= generation
            routed = alias.get("RoutingConfig", {}).get("AdditionalVersionWeights")
            if current and phase in (Phase.HEALTHY, Phase.DEGRADED) and not routed:
                followed.settled = True
                return followed
        await asyncio.sleep(alias_every)
    return followed


async def _warnings(
    session: aiohttp.ClientSession, name: str, reason: str, wait: float = 5.0
) -> list[dict[str, Any]]:
    """The Warning Events about rollout ``name``, waiting up to ``wait`` s for one with ``reason``
    (Kopf posts Events from a queue of its own, shortly after the status is written)."""
    deadline = time.monotonic() + wait
    while True:
        events = (await _get(session, EVENTS_PATH)).get("items", [])
        warnings = [
            event
            for event in events
            if event.get("type") == "Warning" and event.get("involvedObject", {}).get("name") == name
        ]
        if any(event.get("reason") == reason for event in warnings) or time.monotonic() >= deadline:
            return warnings
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# The demo.


@dataclass
class _Demo:
    """What both scenarios share: the sandbox, a Kubernetes session, the alias reader, the deadline."""

    sandbox: SandboxHandle
    session: aiohttp.ClientSession
    read_alias: Callable[[], dict[str, Any]]
    deadline: float
    timeout_seconds: float

    @property
    def seeded(self) -> dict[str, str]:
        return self.sandbox.seeded


async def run_demo(timeout_seconds: float = 90.0) -> int:
    started = time.monotonic()
    print("Starting the local sandbox: Kubernetes API emulator, AWS emulator (moto), operator…", flush=True)
    async with open_sandbox() as sandbox, aiohttp.ClientSession(sandbox.kube_url) as session:
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
        demo = _Demo(sandbox, session, read_alias, time.monotonic() + timeout_seconds, timeout_seconds)
        calls_after_canary = await _healthy_canary(demo)
        if calls_after_canary is None or not await _failing_release(demo, calls_after_canary):
            return 1
        print(f"  demo wall time: {time.monotonic() - started:.1f}s")
        await _show_table(sandbox)
    return 0


async def _healthy_canary(demo: _Demo) -> Counter[str] | None:
    """Scenario 1; the operator's AWS calls so far when it ended Healthy, else None."""
    stable, good = demo.seeded["stable_version"], demo.seeded["canary_version"]
    print(
        "\n1/2  A healthy canary. Applying examples/canary.yaml: "
        "setWeight 10, pause 5s, setWeight 50, pause 5s, promote\n"
    )
    applied = time.monotonic()
    created = await _send(demo.session, "POST", ROLLOUT_PATH, DEMO_ROLLOUT, "application/json")
    followed = await _follow(
        demo.session,
        demo.read_alias,
        name=DEMO_ROLLOUT["metadata"]["name"],
        generation=created["metadata"].get("generation", 1),
        stable=stable,
        since=applied,
        deadline=demo.deadline,
        alias_every=STATUS_POLL_SECONDS,
    )
    phase = followed.status.get("phase", "unknown")
    if not followed.settled:
        print(f"\nFAILED: the canary did not finish within {demo.timeout_seconds:.0f}s (phase {phase}).")
        return None
    if phase != Phase.HEALTHY or not serves_only(followed.alias, good):
        print(
            f"\nFAILED: the canary ended {phase} with the alias on {_describe_alias(followed.alias)}, "
            f"not Healthy on 100% v{good}: {followed.status.get('message', '')}"
        )
        return None
    calls = operator_calls(demo.sandbox)
    print("\n  traffic shifts seen: " + " -> ".join(followed.shifts))
    print(f"  rollout time: {time.monotonic() - applied:.1f}s")
    print(f"  AWS calls made by the operator: {_describe_calls(calls)}")
    return calls


async def _failing_release(demo: _Demo, calls_before: Counter[str]) -> bool:
    """Scenario 2; True when the operator rolled version 3 back for its error rate."""
    sandbox, seeded = demo.sandbox, demo.seeded
    function, alias_name, good = seeded["function_name"], seeded["alias"], seeded["canary_version"]
    name = DEMO_ANALYSIS_ROLLOUT["metadata"]["name"]
    spec = DEMO_ANALYSIS_ROLLOUT["spec"]
    analysis = spec["analysis"]
    bad = await asyncio.to_thread(
        publish_demo_release,
        sandbox.aws_endpoint_url,
        sandbox.region,
        BAD_RELEASE,
        function,
        fail_rate=BAD_ERROR_RATIO,
    )
    print(
        f"\n2/2  A failing release. Published version {bad} (release {BAD_RELEASE}): it fails "
        f"{BAD_ERROR_RATIO:.0%} of its invocations."
    )
    print(
        f"  Traffic: {INVOCATIONS_PER_SECOND:g} invocations/s through alias {alias_name}, split by its "
        "weights, published to CloudWatch (AWS/Lambda, per-version dimensions) every second."
    )
    print(
        "  Applying examples/analysis.yaml as a merge patch of the rollout's version, strategy and "
        f"analysis: version {spec['version']}, setWeight 10, pause 20s, setWeight 50, pause 10s; "
        f"error-rate at most {analysis['metrics'][0]['max']}% over at least "
        f"{analysis['minInvocations']} invocations, measured every {analysis['interval']}\n"
    )
    # Shipping the next version is a change of the same rollout's spec, as a user's Git commit is.
    patch = {"spec": {key: spec[key] for key in ("version", "strategy", "analysis")}}
    traffic = Traffic(
        sandbox.aws_endpoint_url, sandbox.region, function, alias_name, error_ratio={bad: BAD_ERROR_RATIO}
    )
    async with traffic:
        applied = time.monotonic()
        patched = await _send(
            demo.session, "PATCH", f"{ROLLOUT_PATH}/{name}", patch, "application/merge-patch+json"
        )
        followed = await _follow(
            demo.session,
            demo.read_alias,
            name=name,
            generation=patched["metadata"]["generation"],
            stable=good,
            since=applied,
            deadline=demo.deadline,
            alias_every=FAST_POLL_SECONDS,
        )
    status = followed.status
    phase = status.get("phase", "unknown")
    stalled = condition(status, "Stalled")
    if not followed.settled:
        print(
            f"\nFAILED: the failing release did not settle within {demo.timeout_seconds:.0f}s "
            f"(phase {phase})."
        )
        return False
    if (
        phase != Phase.DEGRADED
        or stalled.get("reason") != Reason.ANALYSIS_FAILED
        or not serves_only(followed.alias, good)
    ):
        print(
            f"\nFAILED: version {bad} should have been rolled back by the analysis (Degraded, "
            f"AnalysisFailed, 100% v{good}); the rollout ended {phase} "
            f"({stalled.get('reason', 'no Stalled reason')}) with the alias on "
            f"{_describe_alias(followed.alias)}: {status.get('message', '')}"
        )
        return False

    print("\n  Rolled back. Why:")
    print(f"    status.message: {status.get('message', '')}")
    print(f"    condition Stalled={stalled.get('status')}, reason {stalled.get('reason')}")
    for event in await _warnings(demo.session, name, Reason.ANALYSIS_FAILED):
        print(f"    Warning Event {event.get('reason')}: {event.get('message')}")
    measured = status.get("analysis", {})
    print(
        f"    status.analysis: {measured.get('measurements', 0)} measurement(s), "
        f"{measured.get('failures', 0)} failed, last verdict {measured.get('lastVerdict')} at "
        f"{measured.get('lastMeasuredAt')}"
    )
    for result in measured.get("results", []):
        value = result.get("value")
        shown = "" if value is None else f" (value {value:g})"
        print(f"      {result.get('name')}: {result.get('verdict')}{shown}: {result.get('message')}")
    print(
        f"    traffic published for version {bad}: {traffic.invocations[bad]} invocations, "
        f"{traffic.errors[bad]} errors"
    )

    print("\n  Figures")
    measured_at = parse_time(measured.get("lastMeasuredAt"))
    if measured_at is not None and followed.back_on_stable_at is not None:
        reaction = (followed.back_on_stable_at - measured_at).total_seconds() * 1000
        print(
            f"    failing measurement -> rollback write: {reaction:.0f} ms (from lastMeasuredAt to the "
            f"first read of the alias back on 100% v{good}; an upper bound, including the "
            f"{FAST_POLL_SECONDS * 1000:.0f} ms poll interval)"
        )
    calls = operator_calls(sandbox)
    calls.subtract(calls_before)
    measurements = int(measured.get("measurements", 0))
    per_measurement = f"{calls['GetMetricData'] / measurements:.2f}" if measurements else "n/a"
    print(
        f"    CloudWatch calls by the operator: GetMetricData {calls['GetMetricData']} for "
        f"{measurements} measurement(s) ({per_measurement} per measurement), "
        f"DescribeAlarms {calls['DescribeAlarms']}"
    )
    print(f"    AWS calls made by the operator in this scenario: {_describe_calls(calls)}")
    return True


async def _show_table(sandbox: SandboxHandle) -> None:
    kubectl = _kubectl()
    if kubectl is None:
        return
    print("\n$ kubectl get lambdarollouts -o wide")
    command = [kubectl, "--kubeconfig", str(sandbox.kubeconfig_path), "get", "lambdarollouts", "-o", "wide"]
    shown = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=False)
    print(shown.stdout.rstrip() or shown.stderr.rstrip())
