"""The floor under the operator's CPU per step: a Kopf operator that makes the requests and nothing else.

``scale.py`` measures the operator's CPU per step (per ``UpdateAlias``). This script answers what
part of that figure no change to the rollout logic can remove: the CPU of Kopf's per-object
machinery and of the requests a step must make. It runs a *floor operator* in place of the real
one and measures it the same way (operator CPU from ``/proc/<pid>/stat`` while the rollouts of
``scale.MIX`` are created at ``scale.py``'s rate and run to the end, divided by their writes).

The floor operator runs on the same Kopf with the operator's Kopf settings (its finalizer, progress
in annotations, no diff base, no scanning, standalone), on the same event loop (uvloop when
installed), with the same handlers: a daemon per ``LambdaRollout``, a watch-event handler filtered
to spec changes, and a delete handler behind the finalizer. Its daemon reads the strategy's writes
and, by ``--level``:

- ``kopf``: sleeps until each write is due and merge-patches a status of the operator's shape (one
  status write per step, as the operator makes); no AWS calls, no Events;
- ``aws``: also the Lambda calls of the minimum (``GetFunctionConfiguration`` of both versions and
  ``GetAlias`` before the first write, ``UpdateAlias`` per write) through the operator's own
  ``LambdaHttpClient`` (SigV4, keep-alive, the shared rate limiter);
- ``full`` (default): also an Event per write plus one at the start, through the operator's
  ``HttpStatusWriter``, as the operator posts them (it posts a few more: ~4.7 per rollout).
- ``bare``: the requests of ``full`` without Kopf: one watch stream of the rollouts, each event
  parsed and its generation compared (the wake-up filter's work), a task per new rollout and the
  finalizer added with a patch, as Kopf adds it. Kopf's per-object machinery costs the
  difference between ``full`` and ``bare``.

There is no planner, no model of the status, no analysis, no drift check, no telemetry: whatever
the operator spends above this floor is its own logic; the floor itself is what Kopf and the
requests cost. Compare with ``scale.py`` of the same ``--n`` on the same day (the machine's
figures move by up to ~15% from day to day): ``--compare scale.json`` prints the ratio.

Usage: ``python benchmarks/kopf_floor.py [--n 1000] [--level full|aws|kopf|bare] [--compare scale.json]``.
Prints a table and writes ``floor.json`` to ``--out`` (default: a new temporary directory), with the
sandbox's and the floor operator's logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sandbox_process import start_sandbox
from scale import (
    ALIAS,
    MERGE_PATCH,
    MIX,
    NEW,
    PREFIX,
    REGION,
    SANDBOX_CREDENTIALS,
    STABLE,
    MixEntry,
    free_port,
    list_rollouts,
    manifest,
    mean_minimum_calls,
    proc_sample,
    rollouts_path,
    settled_on,
)
from yarl import URL

HERE = Path(__file__).resolve()
LEVEL_ENV = "KOPF_FLOOR_LEVEL"
LEVELS = ("full", "aws", "kopf", "bare")


# ---------------------------------------------------------------------------------------------
# The floor operator (``kopf_floor.py operator``), in its own process.


def planned_weights(strategy: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(seconds after the first write, percent) of each write the strategy plans, as scale.py plans."""
    return [(write.offset, write.weight) for write in MixEntry("", dict(strategy)).planned()]


def floor_status(generation: int, index: int, count: int, weight: float, now: str) -> dict[str, Any]:
    """A status of the operator's shape and size (the fields, the three kstatus conditions)."""
    done = weight >= 100
    phase = "Healthy" if done else "Progressing"

    def condition(kind: str, value: bool, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if value else "False",
            "reason": reason,
            "message": f"step {index + 1}/{count}: weight {weight:g}%",
            "lastTransitionTime": now,
            "observedGeneration": generation,
        }

    return {
        "observedGeneration": generation,
        "phase": phase,
        "stableVersion": NEW if done else STABLE,
        "canaryVersion": None if done else NEW,
        "canaryWeight": 0 if done else int(weight),
        "currentStepIndex": index,
        "message": f"step {index + 1}/{count}: weight {weight:g}%",
        "conditions": [
            condition("Ready", done, "Succeeded" if done else "Progressing"),
            condition("Reconciling", not done, "Progressing" if not done else "Succeeded"),
            condition("Stalled", False, "Progressing"),
        ],
    }


class FloorRollouts:
    """What the floor operator does for one rollout, whichever machinery calls it."""

    def __init__(self, level: str) -> None:
        from lambda_rollouts.aws.clients import AwsClients
        from lambda_rollouts.aws.lambda_http import LambdaHttpClient
        from lambda_rollouts.settings import Settings

        self.level = level
        self.settings = Settings()
        self.lambda_client = LambdaHttpClient(AwsClients(self.settings))
        self.plans: dict[str, list[tuple[float, float]]] = {}

    async def drive(
        self, writer: Any, body: Mapping[str, Any], sleep: Callable[[float], Awaitable[bool]]
    ) -> None:
        """The pre-flight, then each write when due; ``sleep`` answers True when told to stop."""
        from lambda_rollouts.kube import EventAbout

        spec, metadata = body["spec"], body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        key = json.dumps(spec["strategy"], sort_keys=True)
        writes = self.plans.get(key) or self.plans.setdefault(key, planned_weights(spec["strategy"]))
        function, generation = spec["functionName"], int(metadata["generation"])
        about = EventAbout(namespace, name, metadata.get("uid"))
        calls_aws, posts_events = self.level in ("full", "aws", "bare"), self.level in ("full", "bare")
        revision = None
        if posts_events:
            await writer.post_event(about, "Normal", "RolloutStarted", f"shifting {function} to {NEW}")
        if calls_aws:
            for version in (STABLE, NEW):
                await self.lambda_client.call(
                    "GetFunctionConfiguration", REGION, None, FunctionName=function, Qualifier=version
                )
            alias = await self.lambda_client.call("GetAlias", REGION, None, FunctionName=function, Name=ALIAS)
            revision = alias.get("RevisionId")
        loop = asyncio.get_running_loop()
        first = loop.time()
        previous: dict[str, Any] = {}
        for index, (offset, weight) in enumerate(writes):
            delay = first + offset - loop.time()
            if delay > 0 and await sleep(delay):
                return
            if calls_aws:
                routing = {} if weight >= 100 else {NEW: weight / 100}
                answer = await self.lambda_client.call(
                    "UpdateAlias",
                    REGION,
                    None,
                    FunctionName=function,
                    Name=ALIAS,
                    FunctionVersion=NEW if weight >= 100 else STABLE,
                    RoutingConfig={"AdditionalVersionWeights": routing},
                    RevisionId=revision,
                )
                revision = answer.get("RevisionId")
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = floor_status(generation, index, len(writes), weight, now)
            await writer.write_status(namespace, name, status, previous)
            previous = status
            if posts_events:
                await writer.post_event(about, "Normal", "WeightSet", f"{weight:g}% on version {NEW}")


def run_floor_operator() -> None:
    from lambda_rollouts.cli import event_loop_factory

    level = os.environ.get(LEVEL_ENV, "full")
    rollouts = FloorRollouts(level)
    logging.basicConfig(level=logging.WARNING)
    run = run_bare if level == "bare" else run_on_kopf
    with asyncio.Runner(loop_factory=event_loop_factory(rollouts.settings.event_loop)) as runner:
        try:
            runner.run(run(rollouts))
        finally:
            runner.run(rollouts.lambda_client.close())


async def run_on_kopf(rollouts: FloorRollouts) -> None:
    """The rollouts on Kopf, with the operator's Kopf settings and kinds of handlers."""
    import kopf

    from lambda_rollouts.handlers import configure_persistence
    from lambda_rollouts.kube import ApiConnection, HttpStatusWriter
    from lambda_rollouts.model import GROUP, PLURAL, VERSION

    writers: list[HttpStatusWriter] = []
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_persistence(settings)
        settings.posting.enabled = False

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = kopf.login_with_kubeconfig(**kwargs)
        assert info is not None, "KUBECONFIG names the sandbox"
        writers.append(HttpStatusWriter(ApiConnection(server=info.server, token=info.token, insecure=True)))
        return info

    def spec_changed(body: kopf.Body, memo: Any, **_: Any) -> bool:
        return bool(memo.get("generation") != body.metadata.get("generation"))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, when=spec_changed)
    async def remember(body: kopf.Body, memo: Any, **_: Any) -> None:
        memo["generation"] = body.metadata.get("generation")

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
    async def drive(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        async def stopped_after(seconds: float) -> bool:
            return bool(await stopped.wait(seconds))

        await rollouts.drive(writers[-1], body, stopped_after)
        await stopped.wait()

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def finalize(**_: Any) -> None:
        return None

    try:
        await kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=True,
            liveness_endpoint=os.environ["KOPF_FLOOR_LIVENESS"],
        )
    finally:
        for writer in writers:
            await writer.close()


async def run_bare(rollouts: FloorRollouts) -> None:
    """The rollouts without Kopf: one watch stream, a task per new rollout, the finalizer added.

    What Kopf's per-object machinery would be replaced by at the least: each watch event is parsed
    and its generation compared (the wake-up filter's work); nothing else is done with it.
    """
    import yaml
    from aiohttp import web

    from lambda_rollouts.handlers import FINALIZER
    from lambda_rollouts.kube import ApiConnection, HttpStatusWriter
    from lambda_rollouts.model import GROUP, PLURAL, VERSION

    config = yaml.safe_load(await asyncio.to_thread(Path(os.environ["KUBECONFIG"]).read_text))
    server = config["clusters"][0]["cluster"]["server"].rstrip("/")
    token = config["users"][0]["user"].get("token")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    writer = HttpStatusWriter(ApiConnection(server=server, token=token))
    liveness = URL(os.environ["KOPF_FLOOR_LIVENESS"])
    app = web.Application()

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get(liveness.path, alive)
    site_runner = web.AppRunner(app)
    await site_runner.setup()
    await web.TCPSite(site_runner, liveness.host, liveness.port).start()
    generations: dict[str, int] = {}
    tasks: set[asyncio.Task[None]] = set()
    stop = asyncio.Event()

    async def stopped_after(seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()

    async def add_finalizer(namespace: str, name: str, finalizers: list[str]) -> None:
        url = f"{server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        patch = {"metadata": {"finalizers": [*finalizers, FINALIZER]}}
        async with session.patch(url, json=patch, headers={**headers, **MERGE_PATCH}) as response:
            response.raise_for_status()

    async def start(body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        if FINALIZER not in metadata.get("finalizers", []):
            await add_finalizer(metadata["namespace"], metadata["name"], metadata.get("finalizers", []))
        await rollouts.drive(writer, body, stopped_after)

    url = f"{server}/apis/{GROUP}/{VERSION}/{PLURAL}"
    resource_version = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        try:
            while True:
                params = {"watch": "true", "allowWatchBookmarks": "true"}
                if resource_version:
                    params["resourceVersion"] = resource_version
                async with session.get(url, params=params, headers=headers) as response:
                    response.raise_for_status()
                    async for line in response.content:
                        event = json.loads(line)
                        body = event["object"]
                        metadata = body["metadata"]
                        resource_version = metadata.get("resourceVersion", resource_version)
                        if event["type"] not in ("ADDED", "MODIFIED"):
                            continue
                        uid, generation = metadata["uid"], metadata.get("generation")
                        if generations.get(uid) != generation:
                            first = uid not in generations
                            generations[uid] = generation
                            if first:
                                task = asyncio.create_task(start(body))
                                tasks.add(task)
                                task.add_done_callback(tasks.discard)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await writer.close()
            await site_runner.cleanup()


# ---------------------------------------------------------------------------------------------
# The driver.


async def start_floor_operator(
    out: Path, kubeconfig: Path, aws_endpoint_url: str, level: str, aws_rps: float, aws_burst: int
) -> tuple[asyncio.subprocess.Process, str]:
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "LAMBDA_ROLLOUTS_", "KUBECONFIG", "SCALE_BENCH_", "KOPF_FLOOR_"))
    }
    env.update(SANDBOX_CREDENTIALS)
    env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "AWS_ENDPOINT_URL": aws_endpoint_url,
            "AWS_REGION": REGION,
            "LAMBDA_ROLLOUTS_AWS_REQUESTS_PER_SECOND": str(aws_rps),
            "LAMBDA_ROLLOUTS_AWS_BURST": str(aws_burst),
            "PYTHONUNBUFFERED": "1",
            LEVEL_ENV: level,
            "KOPF_FLOOR_LIVENESS": liveness,
        }
    )
    with (out / "floor-operator.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE), "operator", env=env, stdout=output, stderr=asyncio.subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline and process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(liveness) as response:
                    if response.status == 200:
                        return process, liveness
            await asyncio.sleep(0.2)
    raise RuntimeError(
        f"the floor operator did not start:\n{(out / 'floor-operator.log').read_text()[-3000:]}"
    )


async def stop(process: asyncio.subprocess.Process | None) -> None:
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()


async def measure(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from scale import seed_functions

    names = [f"{PREFIX}{index:04d}" for index in range(args.n)]
    strategies = [MIX[index % len(MIX)].strategy for index in range(args.n)]
    writes = sum(len(planned_weights(strategy)) for strategy in strategies)
    workdir = out / "sandbox"
    workdir.mkdir(parents=True, exist_ok=True)
    sandbox = await start_sandbox(workdir, out / "sandbox.log")
    operator: asyncio.subprocess.Process | None = None
    try:
        await asyncio.to_thread(seed_functions, sandbox.aws_endpoint_url, names)
        operator, _ = await start_floor_operator(
            out, sandbox.kubeconfig, sandbox.aws_endpoint_url, args.level, args.aws_rps, args.aws_burst
        )
        await asyncio.sleep(1.0)
        interval = args.batch / args.create_rate
        async with aiohttp.ClientSession(sandbox.kube_url) as kube:
            before = proc_sample(operator.pid)
            loop = asyncio.get_running_loop()
            began = loop.time()
            for index in range(0, args.n, args.batch):
                await asyncio.sleep(max(0.0, began + (index // args.batch) * interval - loop.time()))
                batch = range(index, min(index + args.batch, args.n))

                async def create(position: int) -> None:
                    body = manifest(names[position], strategies[position])
                    async with kube.post(rollouts_path(), json=body) as response:
                        if response.status != 201:
                            raise RuntimeError(f"create: {response.status} {await response.text()}")

                await asyncio.gather(*(create(position) for position in batch))
            deadline = time.monotonic() + 300
            settled = 0
            while time.monotonic() < deadline:
                items = await list_rollouts(kube)
                settled = sum(1 for item in items if settled_on(item, NEW))
                if settled == args.n:
                    break
                await asyncio.sleep(1.0)
            after = proc_sample(operator.pid)
            seconds = loop.time() - began
        if before is None or after is None:
            raise RuntimeError(f"the floor operator stopped; see {out / 'floor-operator.log'}")
        if settled != args.n:
            raise RuntimeError(f"only {settled} of {args.n} rollouts settled; see {out}")
        cpu = after.cpu - before.cpu
        return {
            "level": args.level,
            "n": args.n,
            "writes": writes,
            "seconds": seconds,
            "cpuSeconds": cpu,
            "cpuMsPerStep": 1000 * cpu / writes,
            "systemShare": (after.system - before.system) / cpu if cpu else 0.0,
            "peakRssMb": after.hwm_mb,
        }
    finally:
        await stop(operator)
        await stop(sandbox.process)


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="rollouts (and functions)")
    parser.add_argument(
        "--level", choices=LEVELS, default="full", help="what the floor operator does per step"
    )
    parser.add_argument("--aws-rps", type=float, default=50.0, help="as scale.py's --aws-rps")
    parser.add_argument("--aws-burst", type=int, default=10, help="as scale.py's --aws-burst")
    parser.add_argument("--load", type=float, default=0.35, help="as scale.py's --load")
    parser.add_argument("--batch", type=int, default=5, help="rollouts created together")
    parser.add_argument("--compare", type=Path, default=None, help="a scale.py JSON to compare with")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    args.create_rate = args.load * args.aws_rps / mean_minimum_calls()
    out = args.out or Path(tempfile.mkdtemp(prefix="lambda-rollouts-floor-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"out: {out}", flush=True)
    figures = asyncio.run(measure(args, out))
    lines = [
        f"floor ({args.level}), N = {args.n}: {figures['writes']} writes in {figures['seconds']:.0f} s",
        f"  CPU per step        {figures['cpuMsPerStep']:.2f} ms ({figures['systemShare']:.0%} kernel)",
        f"  peak RSS            {figures['peakRssMb']:.0f} MB",
    ]
    if args.compare is not None:
        operator = json.loads(args.compare.read_text())["figures"]["operator"]
        ratio = operator["cpuMsPerStep"] / figures["cpuMsPerStep"]
        figures["compared"] = {
            "scaleJson": str(args.compare),
            "operatorCpuMsPerStep": operator["cpuMsPerStep"],
        }
        lines.append(
            f"  the operator        {operator['cpuMsPerStep']:.2f} ms per step: {ratio:.2f}x the floor"
        )
    print("\n".join(lines))
    (out / "floor.json").write_text(
        json.dumps(
            {"benchmark": "kopf_floor", "when": datetime.now(UTC).isoformat(), "figures": figures}, indent=2
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["operator"]:
        run_floor_operator()
    else:
        main(sys.argv[1:])
