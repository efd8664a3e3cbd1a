"""Scale: N rollouts driven by one operator process, against the sandbox in its own process.

Run: ``.venv/bin/python benchmarks/scale.py [--n 100] [--out DIR] [--json PATH]``; ``--n 1000`` for
the full run (about 10 minutes on 2 cores). ``--help`` lists the knobs (AWS rate limit, drift-check
interval, creation rate...). Figures are only meaningful on a quiet machine: check ``uptime``.

What it does:

- Starts the sandbox as its own process (``lambda-rollouts sandbox --no-operator``: the Kubernetes
  API emulator and moto, free ports) and reads the ``export`` lines it prints.
- Seeds ``--n`` functions ``bench-0000``... in moto (versions 1 and 2, alias ``live`` on 1; one
  execution role, one pair of zips, parallel threads).
- Starts the operator (``lambda-rollouts run --standalone --metrics-port P``) through this script's
  ``operator`` launcher mode, with ``LAMBDA_ROLLOUTS_AWS_REQUESTS_PER_SECOND`` / ``_AWS_BURST``
  (the configured rate limit) and ``LAMBDA_ROLLOUTS_DRIFT_CHECK_INTERVAL_SECONDS`` set. The
  launcher registers botocore handlers on every boto3 session the process makes (the operator's
  package is not changed) and appends one JSON line per Lambda call to ``calls.jsonl``: operation,
  function, the wall-clock times of ``before-parameter-build`` (``t0``: the call starts), of the
  last ``before-send`` (``ts``: after the rate limiter's token) and of ``after-call`` (``t1``), when
  its thread-pool job was submitted (``tq``), and for ``UpdateAlias`` the version and weights
  written. It also appends the event loop's lag and the operator's Kubernetes API requests to
  ``operator-stats.jsonl`` every second (``OperatorStats``).
- Phase 1, rollouts: creates one ``LambdaRollout`` per function, in batches of ``--batch`` at
  ``--create-rate`` rollouts per second (default: ``--load`` x the rate limit / the mix's mean
  minimum calls, so that an operator making only the minimum calls would use that share of the
  limit), round-robin over ``MIX``: canaries and a linear shift with timed pauses of 3-5 s, and
  the ``AllAtOnce`` preset. Each create is a spec change; the phase ends when every rollout is
  Healthy on version 2.
- Phase 2, idle: waits ``--settle`` seconds, then counts the operator's AWS calls over
  ``--idle-window`` seconds (default: one drift-check interval), when nothing is due.
- Phase 3, throughput: patches every rollout at once to version 1 with ``allAtOnce`` (no pauses)
  and measures completed rollouts per second while the backlog drains through the rate limiter.

Figures (targets from the issue; the suite does not time anything, this script shows them):

- spec change to first alias write: from the create's response to the operator's first
  ``UpdateAlias`` returning (``t1``), p50/p99 (nearest rank);
- timed-step error: for each write that follows a timed pause, its time since the rollout's first
  write minus the planned offset (the sum of the pauses before it: setWeight 20, pause 5s,
  setWeight 60, pause 5s plans writes at 0, 5 and 10 s), p50/p99 of the signed error; the error
  of each step against the write before it (``per step``) is shown as well;
- AWS calls per rollout by API (from the launcher's log: every call naming the rollout's function
  from its create to 5 s after its promotion), against the minimum: one ``UpdateAlias`` per weight
  change and the promotion, plus one ``GetAlias`` and two ``GetFunctionConfiguration`` for the
  pre-flight; target: at most the minimum + 2 for every strategy;
- idle calls: per rollout per hour, and drift checks (``GetAlias``) per rollout per interval, the
  most (the interval over the shortest gap between two checks of one rollout; the verdict's
  figure) and the mean over the window (a check on the window's edge can lift it a hair above 1);
  target: ``GetAlias`` only, at most one per rollout per interval;
- throughput: completed rollouts per second over phase 3 (first patch to last completion), times
  the calls per rollout measured in that phase, against the configured rate (target >= 0.9); and
  in steady state (from the 10th to the 90th percentile completion), all calls per second against
  the rate (utilization) and completed rollouts per second against the rate / the minimum calls;
- operator CPU seconds (``/proc/<pid>/stat``) per step (per ``UpdateAlias``) in phases 1 and 3,
  and its peak RSS (``VmHWM``); a budget of 20 ms per step, and a target of <= 250 MB. Phase 1
  also carries the drift checks of the rollouts created early; a line below the verdict shows the
  figure less those checks, each priced at the idle phase's CPU per check (not the verdict: an
  estimate). The sandbox process's CPU is shown too (its main thread serves the Kubernetes API
  emulator; moto answers in worker threads): near 100% of one core, it is the emulator that limits
  the figures.

Prints a table; writes ``scale.json`` (or ``--json PATH``), ``scale-weights.png`` (weight over time
of a sample of rollouts, planned schedule dashed) and ``scale-latency.png`` (histograms of the
spec-change latency and of the step error) to ``--out`` (default: a new temporary directory,
printed), with the sandbox's and the operator's logs and ``calls.jsonl``.

``--profile`` runs the operator under cProfile, every thread on its own CPU clock
(``ThreadProfiles``), and writes ``operator.prof`` (pstats) and ``operator.txt`` (the share of
the CPU of each part: boto3 calls, Kopf's event processing, the rollout loop...);
``--profile-sandbox`` does the same for the sandbox process (``sandbox.prof``, ``sandbox.txt``).
A profiled process runs about 2.5 times slower: its figures are not the product's. ``--sample``
runs py-spy on the operator instead, from outside, sampling the thread that holds the GIL 250
times a second (it barely slows the operator down): ``operator-samples.collapsed`` (py-spy's raw
stacks, for flame-graph tools) and ``operator-samples.txt`` (the CPU's shares by part:
``SAMPLE_BUCKETS``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox_process import start_sandbox

if TYPE_CHECKING:
    import aiohttp

HERE = Path(__file__).resolve()
REGION = "us-east-1"
ALIAS = "live"
NAMESPACE = "default"
PREFIX = "bench-"
STABLE, NEW = "1", "2"
CALL_LOG_ENV = "SCALE_BENCH_CALL_LOG"
PROFILE_ENV = "SCALE_BENCH_PROFILE"
STATS_ENV = "SCALE_BENCH_STATS"
PRELOAD_ENV = "SCALE_BENCH_PRELOAD"
SANDBOX_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
# Calls naming a function this long after its promotion still belong to the rollout (the read-back).
AFTER_PROMOTION_SECONDS = 5.0

TARGETS = {
    "latencyP99Ms": 1000.0,
    "stepErrorP99Ms": 1000.0,
    "excessCallsPerRollout": 2,
    "driftChecksPerRolloutPerInterval": 1.0,
    "throughputRatio": 0.9,
    "peakRssMb": 250.0,
    # A budget, not a goal: the AWS quota (15 control-plane requests/s per account and region), not
    # CPU, bounds how fast rollouts go, and botocore's cost per call is a few percent of a core there.
    "cpuMsPerStep": 20.0,
}


# ---------------------------------------------------------------------------------------------
# The launcher: ``scale.py operator run ...`` and ``scale.py sandbox-process sandbox ...``. Kept free
# of imports the operator does not make itself, so that its memory is the operator's.


# The worker thread's current job: when it was handed to the thread pool (see ``OperatorStats``).
_job = threading.local()


def written_alias(answer: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``UpdateAlias`` answer says the alias now is: ``v`` (version) and ``w`` (weights)."""
    routing = answer.get("RoutingConfig") or {}
    weights = routing.get("AdditionalVersionWeights") or {}
    return {"v": str(answer.get("FunctionVersion", "")), "w": {str(k): float(v) for k, v in weights.items()}}


class CallLog:
    """botocore handlers that log every Lambda call of the process, one JSON line each."""

    def __init__(self, path: str) -> None:
        # Line-buffered: one write per call, no fsync (this is no crash test).
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the process's life
        self._lock = threading.Lock()

    def before_parameter_build(
        self, params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        # The API parameters (before-call only sees the serialized request).
        context["scale_t0"] = time.time()
        context["scale_fn"] = str(params.get("FunctionName", ""))
        context["scale_op"] = model.name
        # The first call of a thread-pool job carries the job's submission time (its queueing).
        context["scale_tq"] = getattr(_job, "submitted", None)
        _job.submitted = None

    def before_send(self, request: Any, **_: Any) -> None:
        context = getattr(request, "context", None)
        if isinstance(context, dict):
            context["scale_ts"] = time.time()

    def after_call(
        self, http_response: Any, parsed: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        now = time.time()
        record: dict[str, Any] = {
            "op": model.name,
            "fn": context.get("scale_fn", ""),
            "t0": context.get("scale_t0", now),
            "ts": context.get("scale_ts", now),
            "t1": now,
            "code": getattr(http_response, "status_code", 0),
        }
        if context.get("scale_tq") is not None:
            record["tq"] = context["scale_tq"]
        if model.name == "UpdateAlias":
            record |= written_alias(parsed)
        self._write(record)

    def after_call_error(self, exception: BaseException, context: dict[str, Any], **_: Any) -> None:
        """A call that got no answer at all (after-call does not fire for those)."""
        now = time.time()
        self._write(
            {
                "op": context.get("scale_op", "?"),
                "fn": context.get("scale_fn", ""),
                "t0": context.get("scale_t0", now),
                "ts": context.get("scale_ts", now),
                "t1": now,
                "code": 0,
                "err": type(exception).__name__,
            }
        )

    def _write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)

    def install(self) -> None:
        import boto3.session

        original_init = boto3.session.Session.__init__
        log = self

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            self.events.register("before-parameter-build.lambda", log.before_parameter_build)
            self.events.register("before-send.lambda", log.before_send)
            self.events.register("after-call.lambda", log.after_call)
            self.events.register("after-call-error.lambda", log.after_call_error)

        # The operator builds its session inside the package (AwsClients); patching the class is the
        # only hook that reaches it without changing the package. Clients inherit their session's
        # handlers, and the pacing's before-send handler is registered first on each client's
        # before-send.lambda, so ``ts`` is taken after the token.
        setattr(boto3.session.Session, "__init__", init)  # noqa: B010 - mypy refuses a method assignment


class OperatorStats:
    """In the operator process: event-loop lag, thread-pool queueing, Kubernetes API requests.

    Appends one JSON line per second to ``path``: the wall clock, the largest and the mean lateness
    of a 50 ms timer on the event loop over that second (how long ready callbacks waited), and the
    operator's Kubernetes API requests so far by kind (cumulative). Installs these patches, none in
    the package: ``cli.event_loop_factory`` (to reach the loop the operator runs on),
    ``ThreadPoolExecutor.submit`` (to stamp each job's submission, read by ``CallLog``: the AWS
    calls' pools and the loop's default one) and ``aiohttp.ClientSession._request`` (every
    Kubernetes request: Kopf's, and the operator's status writes and Events through Kopf's client).
    """

    TICK = 0.05

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._kube: Counter[str] = Counter()
        self._lags: list[float] = []
        self._loop_type = ""

    def install(self) -> None:
        stats = self
        original_submit = ThreadPoolExecutor.submit

        def submit(pool: ThreadPoolExecutor, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            submitted = time.time()

            def job() -> Any:
                _job.submitted = submitted
                try:
                    return func(*args, **kwargs)
                finally:
                    _job.submitted = None

            return original_submit(pool, job)

        setattr(ThreadPoolExecutor, "submit", submit)  # noqa: B010 - read at call time by asyncio

        import aiohttp

        original_request = aiohttp.ClientSession._request

        async def request(session: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            stats.count(method, str(url), kwargs.get("params"))
            return await original_request(session, method, url, *args, **kwargs)

        setattr(aiohttp.ClientSession, "_request", request)  # noqa: B010

        from lambda_rollouts import cli

        original_factory = cli.event_loop_factory

        def event_loop_factory(choice: Any) -> Callable[[], asyncio.AbstractEventLoop]:
            make = original_factory(choice)

            def new_event_loop() -> asyncio.AbstractEventLoop:
                loop = make()
                loop.call_soon(stats._tick, loop, None)
                return loop

            return new_event_loop

        setattr(cli, "event_loop_factory", event_loop_factory)  # noqa: B010
        threading.Thread(target=self._writer, name="scale-stats", daemon=True).start()

    def count(self, method: str, url: str, params: Any) -> None:
        query = url.partition("?")[2] + str(params or "")
        path = url.partition("?")[0]
        if "watch" in query:
            kind = "watch"
        elif path.endswith("/status"):
            kind = f"{method} status"
        elif "/events" in path:
            kind = f"{method} events"
        else:
            kind = f"{method} other"
        with self._lock:
            self._kube[kind] += 1

    def _tick(self, loop: asyncio.AbstractEventLoop, expected: float | None) -> None:
        now = loop.time()
        if expected is None:
            self._loop_type = f"{type(loop).__module__}.{type(loop).__name__}"
        else:
            with self._lock:
                self._lags.append(max(0.0, now - expected))
        loop.call_later(self.TICK, self._tick, loop, now + self.TICK)

    def _writer(self) -> None:
        with open(self._path, "a", buffering=1, encoding="utf-8") as out:
            while True:
                time.sleep(1.0)
                with self._lock:
                    lags, self._lags = self._lags, []
                    kube = dict(self._kube)
                record = {
                    "t": time.time(),
                    "lagMax": max(lags, default=0.0),
                    "lagMean": statistics.fmean(lags) if lags else 0.0,
                    "kube": kube,
                    "loop": self._loop_type,
                }
                out.write(json.dumps(record, separators=(",", ":")) + "\n")


# What the profile summary looks for (inclusive CPU), outermost first: (label, file, function).
PROFILE_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("boto3 API calls (worker threads)", "botocore/client.py", "_make_api_call"),
    ("  request signing", "botocore/signers.py", "sign"),
    ("  HTTP send and receive", "botocore/endpoint.py", "_send"),
    ("  AwsClients cache key (_config_key)", "aws/clients.py", "_config_key"),
    ("Kopf: processing watch events", "kopf/_core/reactor/processing.py", "process_resource_event"),
    ("  Kopf: detecting causes and diffs", "kopf/_core/reactor/processing.py", "_detect_causes"),
    ("  Kopf: handler wake_on_change", "lambda_rollouts/handlers.py", "wake_on_change"),
    ("Kopf: watch stream (reading, JSON)", "kopf/_cogs/clients/watching.py", "continuous_watch"),
    ("Kopf: posting Events", "kopf/_core/engines/posting.py", "poster"),
    ("the rollout loop (RolloutService.reconcile)", "lambda_rollouts/reconcile.py", "reconcile"),
    ("  handlers._snapshot (deepcopy of the body)", "lambda_rollouts/handlers.py", "_snapshot"),
    ("  planner.plan", "lambda_rollouts/planner.py", "plan"),
    ("  status write (HttpStatusWriter)", "lambda_rollouts/kube.py", "write_status"),
    ("  telemetry.reconciled", "lambda_rollouts/telemetry.py", "reconciled"),
    ("aiohttp requests (all)", "aiohttp/client.py", "_request"),
    ("logging (all)", "logging/__init__.py", "handle"),
    ("moto: answering AWS calls", "moto/core/responses.py", "dispatch"),
    ("kube emulator: answering requests", "lambda_rollouts/sandbox/kube.py", "__call__"),
    ("  kube emulator: admission (schema, CEL)", "lambda_rollouts/sandbox/kube.py", "_admit"),
    ("  kube emulator: watch streams", "lambda_rollouts/sandbox/kube.py", "_watch"),
    ("this benchmark's call log", "benchmarks/scale.py", "after_call"),
)


class ThreadProfiles:
    """cProfile in every thread of the process, each on its own CPU clock (``time.thread_time``).

    Deterministic: every Python call is timed, so the shares are exact but the process runs about
    2.5 times slower (call-heavy code, such as botocore's, is slowed down the most). A thread's
    profile is merged when it ends; the rest at exit, when ``<path>`` (pstats) and ``<path>.txt``
    (``summarize_profile``) are written. Wall-clock sampling from inside the process (no py-spy
    here) is no substitute: a sampling thread needs the GIL, so it finds the others where they
    let it go (``select``, socket calls), not where they spent their CPU.
    """

    def __init__(self, path: str) -> None:
        import cProfile
        import pstats

        self._path = path
        self._cprofile, self._pstats = cProfile, pstats
        self._lock = threading.Lock()
        self._live: dict[int, Any] = {}
        self._finished: Any = None

    def _new(self) -> Any:
        # A float timer (timeunit 0): each thread's own CPU clock, so waits cost nothing.
        return self._cprofile.Profile(time.thread_time)

    def _merge(self, profile: Any) -> None:
        profile.disable()
        with self._lock:
            if self._finished is None:
                self._finished = self._pstats.Stats(profile)
            else:
                self._finished.add(profile)

    def install(self) -> None:
        import atexit

        profiles = self
        original_run = threading.Thread.run

        def run(thread: threading.Thread) -> None:
            profile = profiles._new()
            with profiles._lock:
                profiles._live[id(thread)] = profile
            profile.enable()
            try:
                original_run(thread)
            finally:
                with profiles._lock:
                    profiles._live.pop(id(thread), None)
                profiles._merge(profile)

        setattr(threading.Thread, "run", run)  # noqa: B010 - the same for every thread class
        main = self._new()
        with self._lock:
            self._live[0] = main
        main.enable()
        atexit.register(self.dump)

    def dump(self) -> None:
        with self._lock:
            live = list(self._live.values())
            self._live.clear()
        for profile in live:
            self._merge(profile)
        if self._finished is None:
            return
        self._finished.dump_stats(self._path)
        Path(self._path).with_suffix(".txt").write_text(summarize_profile(self._path))


def summarize_profile(path: str) -> str:
    """The share of the CPU spent in each of ``PROFILE_MARKERS`` (inclusive), then the top functions."""
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(path, stream=text)
    entries: Any = stats.stats  # type: ignore[attr-defined]
    # time.sleep is left out: in some threads it shows up to the process's CPU over the sleep.
    total = sum(entry[2] for (_, _, name), entry in entries.items() if "time.sleep" not in name)
    text.write(f"{total:.1f} s of CPU (profiled: about 2.5 times the unprofiled figure)\n")
    text.write("\nshare of the CPU with the function on the stack (cumulative time):\n")
    for label, file_part, function in PROFILE_MARKERS:
        inclusive = sum(
            entry[3]
            for (filename, _, name), entry in entries.items()
            if file_part in filename and name == function
        )
        if inclusive:
            text.write(f"  {label:<62}{100 * inclusive / total:6.1f}%\n")
    text.write("\n")
    stats.sort_stats("tottime").print_stats(30)
    return text.getvalue()


def launch(argv: Sequence[str]) -> None:
    """Run ``lambda-rollouts <argv>`` with the call log and, when asked, the profiler installed."""
    if os.environ.get(PROFILE_ENV):
        ThreadProfiles(os.environ[PROFILE_ENV]).install()
    if os.environ.get(CALL_LOG_ENV):
        CallLog(os.environ[CALL_LOG_ENV]).install()
    if os.environ.get(STATS_ENV):
        OperatorStats(os.environ[STATS_ENV]).install()
    if os.environ.get(PRELOAD_ENV):
        # An experiment: a file run before the operator starts (e.g. to try a proposed fix).
        import runpy

        runpy.run_path(os.environ[PRELOAD_ENV], run_name="scale_preload")
    from lambda_rollouts.cli import main as cli_main

    cli_main(args=list(argv), prog_name="lambda-rollouts")


# ---------------------------------------------------------------------------------------------
# The mix of strategies and what each one plans.


@dataclass(frozen=True)
class PlannedWrite:
    weight: float  # percent on the new version; 100 is the promotion
    offset: float  # seconds after the rollout's first write
    after_pause: bool  # a timed pause comes right before it


@dataclass(frozen=True)
class MixEntry:
    name: str
    strategy: dict[str, Any]

    def planned(self) -> list[PlannedWrite]:
        from lambda_rollouts.model import Pause, RolloutSpec, SetWeight

        spec = RolloutSpec.parse(
            {"functionName": "f", "alias": ALIAS, "version": NEW, "strategy": self.strategy}
        )
        writes: list[PlannedWrite] = []
        offset, paused, weight = 0.0, False, 0.0
        for step in spec.steps():
            if isinstance(step, SetWeight) and step.weight != weight:
                writes.append(PlannedWrite(float(step.weight), offset, paused))
                weight, paused = float(step.weight), False
            elif isinstance(step, Pause):
                assert step.seconds is not None, "the benchmark's pauses are timed"
                offset += step.seconds
                paused = True
        writes.append(PlannedWrite(100.0, offset, paused))
        return writes

    def minimum_calls(self) -> dict[str, int]:
        """One UpdateAlias per weight change and the promotion, and the reads pre-flight needs."""
        return {"UpdateAlias": len(self.planned()), "GetAlias": 1, "GetFunctionConfiguration": 2}


MIX: tuple[MixEntry, ...] = (
    MixEntry(
        "canary 10/50, 5s pauses",
        {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "5s"}},
                    {"setWeight": 50},
                    {"pause": {"duration": "5s"}},
                ]
            }
        },
    ),
    MixEntry("linear 34% every 3s", {"linear": {"stepWeight": 34, "interval": "3s"}}),
    MixEntry(
        "canary 20/60, 4s pause",
        {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "4s"}}, {"setWeight": 60}]}},
    ),
    MixEntry("preset AllAtOnce", {"preset": "AllAtOnce"}),
)
THROUGHPUT_STRATEGY: dict[str, Any] = {"allAtOnce": {}, "canary": None, "linear": None, "preset": None}
THROUGHPUT_MINIMUM = {"UpdateAlias": 1, "GetAlias": 1, "GetFunctionConfiguration": 2}


def mean_minimum_calls() -> float:
    return statistics.fmean(sum(entry.minimum_calls().values()) for entry in MIX)


# ---------------------------------------------------------------------------------------------
# Small helpers: percentiles, processes, Prometheus text.


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    at: float
    cpu: float  # user + system seconds
    system: float  # of which in the kernel (system calls: sockets, futexes)
    rss_mb: float
    hwm_mb: float
    threads: int


def proc_sample(pid: int) -> ProcSample | None:
    """CPU seconds, RSS, peak RSS and threads of a live process, from /proc (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # After the command: state is field 3 of stat, utime 14 and stime 15 (1-based), so 11 and 12 here.
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    system = int(fields[12]) / _TICKS
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

    def kilobytes(key: str) -> float:
        return float(values.get(key, "0 kB").split()[0])

    return ProcSample(
        time.time(), cpu, system, kilobytes("VmRSS") / 1024, kilobytes("VmHWM") / 1024, int(values["Threads"])
    )


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each live thread of a process, by ``name:tid`` (the main thread is ``main``)."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        key = "main" if task.name == str(pid) else f"{name}:{task.name}"
        found[key] = (int(fields[11]) + int(fields[12])) / _TICKS
    return found


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = tuple(sorted(_LABEL.findall(match.group(3) or "")))
        with contextlib.suppress(ValueError):
            samples[(match.group(1), labels)] = float(match.group(4))
    return samples


@dataclass(frozen=True)
class Snapshot:
    """What the operator had done at one moment: AWS calls by operation, passes, CPU, memory."""

    at: float
    aws_calls: Counter[str]
    passes: float
    pass_seconds: float
    operator: ProcSample
    sandbox: ProcSample
    sandbox_main_cpu: float

    def calls_since(self, earlier: Snapshot) -> Counter[str]:
        calls = Counter(self.aws_calls)
        calls.subtract(earlier.aws_calls)
        return Counter({name: count for name, count in calls.items() if count})


# ---------------------------------------------------------------------------------------------
# The launcher's log, read as it grows.


@dataclass
class Call:
    op: str
    fn: str
    t0: float
    ts: float
    t1: float
    code: int
    version: str | None = None
    weights: dict[str, float] | None = None
    tq: float | None = None  # handed to the operator's thread pool (first call of a job only)
    err: str | None = None  # no answer at all: the exception's class

    @property
    def queued(self) -> float:
        return self.t0 - self.tq if self.tq is not None else 0.0

    def percent_on(self, new: str) -> float | None:
        """The percent on ``new`` that an UpdateAlias wrote (100: promoted to it, 0: all off it)."""
        if self.version is None:
            return None
        if self.version == new:
            return 100.0
        return round(100 * (self.weights or {}).get(new, 0.0), 2)


class CallTail:
    """Follows ``calls.jsonl``: every call, and the writes by function."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""
        self.calls: list[Call] = []
        self.by_function: dict[str, list[Call]] = defaultdict(list)

    def poll(self) -> int:
        """Read what was appended; the number of new calls."""
        if not self.path.exists():
            return 0
        with self.path.open(encoding="utf-8") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
            self._offset = handle.tell()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            raw = json.loads(line)
            call = Call(
                raw["op"],
                raw["fn"],
                raw["t0"],
                raw["ts"],
                raw["t1"],
                raw["code"],
                raw.get("v"),
                raw.get("w"),
                raw.get("tq"),
                raw.get("err"),
            )
            self.calls.append(call)
            self.by_function[call.fn].append(call)
        return len(lines)

    def writes(self, function: str, since: float, until: float = math.inf) -> list[Call]:
        return [
            c
            for c in self.by_function.get(function, [])
            if c.op == "UpdateAlias" and c.code < 300 and since <= c.t1 <= until
        ]


# ---------------------------------------------------------------------------------------------
# The processes.


@dataclass
class Processes:
    out: Path
    sandbox: asyncio.subprocess.Process | None = None
    operator: asyncio.subprocess.Process | None = None
    sampler: asyncio.subprocess.Process | None = None
    kubeconfig: Path | None = None
    kube_url: str = ""
    aws_endpoint_url: str = ""
    metrics_url: str = ""
    liveness_url: str = ""
    peak: dict[str, float] = field(default_factory=dict)

    async def start_sandbox(self, *, profile: bool) -> None:
        """``lambda-rollouts sandbox --no-operator`` in ``out/sandbox``; reads its exports."""
        workdir = self.out / "sandbox"
        workdir.mkdir(parents=True, exist_ok=True)
        output_path = self.out / "sandbox.log"
        env = {key: value for key, value in os.environ.items() if key != PROFILE_ENV}
        command: list[str] = [str(Path(sys.executable).with_name("lambda-rollouts"))]
        if profile:
            env[PROFILE_ENV] = str(self.out / "sandbox.prof")
            command = [sys.executable, str(HERE), "launch"]
        started = await start_sandbox(workdir, output_path, command=command, env=env)
        self.sandbox, self.kubeconfig = started.process, started.kubeconfig
        self.kube_url, self.aws_endpoint_url = started.kube_url, started.aws_endpoint_url

    async def start_operator(self, settings: Settings) -> None:
        assert self.kubeconfig is not None
        metrics_port, liveness_port = free_port(), free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.liveness_url = f"http://127.0.0.1:{liveness_port}/healthz"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "LAMBDA_ROLLOUTS_", "KUBECONFIG", "SCALE_BENCH_"))
        }
        env.update(SANDBOX_CREDENTIALS)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "AWS_ENDPOINT_URL": self.aws_endpoint_url,
                "AWS_REGION": REGION,
                "LAMBDA_ROLLOUTS_AWS_REQUESTS_PER_SECOND": str(settings.aws_rps),
                "LAMBDA_ROLLOUTS_AWS_BURST": str(settings.aws_burst),
                "LAMBDA_ROLLOUTS_DRIFT_CHECK_INTERVAL_SECONDS": str(settings.drift_interval),
                "LAMBDA_ROLLOUTS_EVENT_LOOP": settings.event_loop,
                "PYTHONUNBUFFERED": "1",
                CALL_LOG_ENV: str(self.out / "calls.jsonl"),
                STATS_ENV: str(self.out / "operator-stats.jsonl"),
            }
        )
        if settings.profile:
            env[PROFILE_ENV] = str(self.out / "operator.prof")
        if settings.preload is not None:
            env[PRELOAD_ENV] = str(settings.preload.resolve())
        with (self.out / "operator.log").open("wb") as output:
            self.operator = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE),
                "launch",
                "run",
                "--standalone",
                "--metrics-port",
                str(metrics_port),
                "--liveness",
                self.liveness_url,
                "--log-format",
                "json",
                env=env,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        import aiohttp

        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.operator.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.liveness_url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the operator did not start:\n{(self.out / 'operator.log').read_text()[-3000:]}")

    def sample(self) -> tuple[ProcSample, ProcSample]:
        assert self.operator is not None
        assert self.sandbox is not None
        operator, sandbox = proc_sample(self.operator.pid), proc_sample(self.sandbox.pid)
        assert operator is not None, "the operator died"
        assert sandbox is not None, "the sandbox died"
        return operator, sandbox

    async def start_sampler(self) -> None:
        """py-spy on the operator process, sampling only the thread holding the GIL: its CPU in Python."""
        assert self.operator is not None
        py_spy = Path(sys.executable).with_name("py-spy")
        self.sampler = await asyncio.create_subprocess_exec(
            str(py_spy),
            "record",
            "--pid",
            str(self.operator.pid),
            "--gil",
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(self.out / "operator-samples.collapsed"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def stop(self) -> None:
        for process in (self.operator, self.sandbox):
            if process is None or process.returncode is not None:
                continue
            # SIGINT: Kopf and the sandbox stop gracefully (and a profiler writes its file).
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self.sampler is not None:
            # It writes its file once the operator is gone.
            try:
                await asyncio.wait_for(self.sampler.wait(), 30)
            except TimeoutError:
                self.sampler.kill()
            samples = self.out / "operator-samples.collapsed"
            if samples.exists():
                summary = summarize_samples(samples)
                if "uvloop" in operator_event_loop(self.out / "operator-stats.jsonl"):
                    summary += UVLOOP_SAMPLES_CAVEAT
                samples.with_suffix(".txt").write_text(summary)


# Where the operator's CPU goes, by the innermost frame of a sample that matches: (bucket, text in
# the frame). The first bucket found walking from the innermost frame outward wins; the generic
# ones (the event loop, aiohttp, the thread pool) only when no other bucket matches.
SAMPLE_BUCKETS: tuple[tuple[str, str], ...] = (
    ("start-up: importing", "_find_and_load"),
    ("this benchmark's call log and stats", "CallLog."),
    ("this benchmark's call log and stats", "OperatorStats._"),
    ("logging", "Logger._log"),
    ("boto3: signing", "RequestSigner.sign"),
    ("boto3: event hooks", "HierarchicalEmitter.emit"),
    ("boto3: HTTP send and receive", "URLLib3Session.send"),
    ("boto3: building the request", "_convert_to_request_dict"),
    ("boto3: parsing the answer", "_do_get_response"),
    ("boto3: the rest of a call", "_make_api_call"),
    ("AWS adapter (clients, pacing)", "lambda_rollouts/aws/"),
    ("worker-thread hand-off", "concurrent/futures/thread.py"),
    ("Events (posted by the operator)", "HttpStatusWriter.post_event"),
    ("status writes", "HttpStatusWriter"),
    ("planner", "lambda_rollouts/planner.py"),
    ("the rollout loop (reconcile)", "lambda_rollouts/reconcile.py"),
    ("Kopf: posting Events", "_poster_worker"),
    ("Kopf: processing watch events", "process_resource_event"),
    ("Kopf: watch stream", "watching.py"),
    ("Kopf: queueing", "queueing.py"),
    ("aiohttp (Kopf's Kubernetes requests)", "aiohttp/"),
    ("asyncio event loop", "asyncio/"),
    ("threads: start-up, idle pool", "threading.py"),
)


GENERIC_BUCKETS = frozenset(
    {
        "asyncio event loop",
        "aiohttp (Kopf's Kubernetes requests)",
        "worker-thread hand-off",
    }
)


UVLOOP_SAMPLES_CAVEAT = (
    "(uvloop holds the GIL in its system calls: a send that waits for the\n"
    " CPU is sampled as if it were CPU work, under the frame that sends; --event-loop asyncio for\n"
    " shares of CPU work alone)\n"
)


def operator_event_loop(stats_path: Path) -> str:
    """The type of the operator's event loop, as ``OperatorStats`` recorded it ("" if unknown)."""
    lines = stats_path.read_text().splitlines() if stats_path.exists() else []
    return str(json.loads(lines[-1]).get("loop", "")) if lines else ""


def summarize_samples(path: Path) -> str:
    """Shares of the operator's sampled CPU by ``SAMPLE_BUCKETS`` (py-spy's raw collapsed stacks)."""
    buckets: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        bucket = None
        for generic in (False, True):
            for frame in reversed(frames):
                bucket = next(
                    (
                        name
                        for name, text in SAMPLE_BUCKETS
                        if (name in GENERIC_BUCKETS) == generic and text in frame
                    ),
                    None,
                )
                if bucket is not None:
                    break
            if bucket is not None:
                break
        buckets[bucket or "other: no Python frame (native code), or a stack too short to place"] += count
    lines = [f"{total} samples at 250/s of the thread holding the GIL: {total / 250:.1f} s of CPU in Python"]
    lines += (
        [f"  {100 * count / total:5.1f}%  {name}" for name, count in buckets.most_common()] if total else []
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Seeding the functions.


def seed_functions(endpoint_url: str, names: Sequence[str], threads: int = 8) -> None:
    """Each function with versions 1 and 2 (different code) and the alias on 1; one shared role."""
    from lambda_rollouts.sandbox.aws import release_zip, sandbox_session

    iam = sandbox_session(REGION).client("iam", endpoint_url=endpoint_url)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName="bench-execution", AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    first, second = release_zip(1), release_zip(2)
    local = threading.local()

    def seed(name: str) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = sandbox_session(REGION).client("lambda", endpoint_url=endpoint_url)
        created = client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="index.handler",
            Code={"ZipFile": first},
            Publish=True,
        )
        updated = client.update_function_code(FunctionName=name, ZipFile=second, Publish=True)
        if (created["Version"], updated["Version"]) != (STABLE, NEW):
            raise RuntimeError(f"{name}: published {created['Version']} and {updated['Version']}")
        client.create_alias(FunctionName=name, Name=ALIAS, FunctionVersion=STABLE)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(seed, names))


# ---------------------------------------------------------------------------------------------
# The Kubernetes side.


def rollouts_path() -> str:
    from lambda_rollouts.model import GROUP, PLURAL, VERSION

    return f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"


def manifest(name: str, strategy: Mapping[str, Any]) -> dict[str, Any]:
    from lambda_rollouts.model import GROUP, VERSION

    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LambdaRollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"functionName": name, "alias": ALIAS, "version": NEW, "strategy": dict(strategy)},
    }


async def list_rollouts(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with session.get(rollouts_path()) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
    items: list[dict[str, Any]] = body.get("items", [])
    return items


def settled_on(item: Mapping[str, Any], version: str) -> bool:
    status = item.get("status") or {}
    return (
        status.get("phase") == "Healthy"
        and str(item["spec"]["version"]) == version
        and status.get("observedGeneration") == item["metadata"].get("generation")
        and str(status.get("stableVersion")) == version
    )


# ---------------------------------------------------------------------------------------------
# The run.


@dataclass(frozen=True)
class Settings:
    n: int
    aws_rps: float
    aws_burst: int
    drift_interval: float
    idle_window: float
    create_rate: float
    batch: int
    settle: float
    out: Path
    json_path: Path
    profile: bool
    profile_sandbox: bool
    sample: bool
    preload: Path | None
    event_loop: str
    seed_threads: int
    timeout: float


@dataclass
class Rollout:
    name: str
    mix: MixEntry
    created: float = math.nan  # the create's response, wall clock


class Run:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes = Processes(settings.out)
        self.tail = CallTail(settings.out / "calls.jsonl")
        self.rollouts = [Rollout(f"{PREFIX}{i:04d}", MIX[i % len(MIX)]) for i in range(settings.n)]
        self.samples: list[tuple[ProcSample, ProcSample]] = []
        self.snapshots: dict[str, Snapshot] = {}
        self.phase_times: dict[str, float] = {}
        self.notes: list[str] = []
        self.throughput_patched: dict[str, float] = {}

    # -- plumbing ------------------------------------------------------------------------------

    async def snapshot(self, label: str, session: aiohttp.ClientSession) -> Snapshot:
        async with session.get(self.processes.metrics_url) as response:
            text = await response.text()
        metrics = parse_metrics(text)
        calls: Counter[str] = Counter()
        passes = pass_seconds = 0.0
        for (name, labels), value in metrics.items():
            label_map = dict(labels)
            if name == "lambda_rollouts_aws_calls_total":
                calls[label_map["operation"]] += int(value)
            elif name == "lambda_rollouts_reconcile_duration_seconds_count":
                passes = value
            elif name == "lambda_rollouts_reconcile_duration_seconds_sum":
                pass_seconds = value
        operator, sandbox = self.processes.sample()
        assert self.processes.sandbox is not None
        main_cpu = thread_cpu(self.processes.sandbox.pid).get("main", 0.0)
        snap = Snapshot(time.time(), calls, passes, pass_seconds, operator, sandbox, main_cpu)
        self.snapshots[label] = snap
        return snap

    async def sampler(self) -> None:
        while True:
            with contextlib.suppress(AssertionError):
                self.samples.append(self.processes.sample())
            await asyncio.sleep(1.0)

    def progress(self, what: str) -> None:
        print(f"[{datetime.now().strftime('%H:%M:%S')}] {what}", flush=True)

    # -- phases --------------------------------------------------------------------------------

    async def main(self) -> dict[str, Any]:
        try:
            return await self._main()
        finally:
            await self.processes.stop()

    async def _main(self) -> dict[str, Any]:
        import aiohttp

        settings = self.settings
        self.progress(f"out: {settings.out}")
        await self.processes.start_sandbox(profile=settings.profile_sandbox)
        self.progress(f"sandbox up (kube {self.processes.kube_url}, aws {self.processes.aws_endpoint_url})")
        started = time.monotonic()
        await asyncio.to_thread(
            seed_functions,
            self.processes.aws_endpoint_url,
            [r.name for r in self.rollouts],
            settings.seed_threads,
        )
        self.progress(f"seeded {settings.n} functions in {time.monotonic() - started:.1f}s")
        await self.processes.start_operator(settings)
        if settings.sample:
            await self.processes.start_sampler()
        self.progress(f"operator up (pid {self.processes.operator.pid if self.processes.operator else '?'})")
        sampler = asyncio.create_task(self.sampler())
        try:
            connector = aiohttp.TCPConnector(limit=32)
            async with (
                aiohttp.ClientSession(self.processes.kube_url, connector=connector) as kube,
                aiohttp.ClientSession() as plain,
            ):
                await asyncio.sleep(1.0)
                await self.snapshot("start", plain)
                await self.phase_rollouts(kube)
                await self.snapshot("rollouts", plain)
                await self.phase_idle(plain)
                await self.phase_throughput(kube)
                await self.snapshot("throughput", plain)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            last = proc_sample(self.processes.operator.pid) if self.processes.operator else None
            sandbox_threads = (
                thread_cpu(self.processes.sandbox.pid)
                if self.processes.sandbox and self.processes.sandbox.returncode is None
                else {}
            )
            await self.processes.stop()
        self.tail.poll()
        return self.figures(last, sandbox_threads)

    async def phase_rollouts(self, kube: aiohttp.ClientSession) -> None:
        settings = self.settings
        interval = settings.batch / settings.create_rate
        self.progress(
            f"phase 1: creating {settings.n} rollouts, {settings.batch} every {interval:.2f}s "
            f"({settings.create_rate:.2f}/s)"
        )
        path = rollouts_path()

        async def create(rollout: Rollout) -> None:
            async with kube.post(path, json=manifest(rollout.name, rollout.mix.strategy)) as response:
                if response.status != 201:
                    raise RuntimeError(f"create {rollout.name}: {response.status} {await response.text()}")
            rollout.created = time.time()

        self.phase_times["rolloutsStart"] = time.time()
        loop = asyncio.get_running_loop()
        began = loop.time()
        for index in range(0, settings.n, settings.batch):
            due = began + (index // settings.batch) * interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            await asyncio.gather(*(create(r) for r in self.rollouts[index : index + settings.batch]))
            if (index // settings.batch) % max(1, int(30 / interval)) == 0:
                self.tail.poll()
                done = sum(1 for r in self.rollouts if self._promoted(r, NEW, r.created))
                self.progress(f"  created {index + settings.batch}/{settings.n}, promoted {done}")
        self.phase_times["rolloutsCreated"] = time.time()
        longest = max(w.offset for entry in MIX for w in entry.planned())
        await self.wait_settled(kube, NEW, settings.timeout + longest, "phase 1")
        self.phase_times["rolloutsDone"] = time.time()

    def _promoted(self, rollout: Rollout, version: str, since: float) -> bool:
        if math.isnan(since):
            return False
        return any(c.version == version and not c.weights for c in self.tail.writes(rollout.name, since))

    async def wait_settled(
        self, kube: aiohttp.ClientSession, version: str, seconds: float, what: str
    ) -> None:
        """Until every rollout is Healthy on ``version`` (promotion writes first, then one list)."""
        deadline = time.monotonic() + seconds
        since = {
            r.name: (r.created if version == NEW else self.throughput_patched.get(r.name, math.nan))
            for r in self.rollouts
        }
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            self.tail.poll()
            done = sum(1 for r in self.rollouts if self._promoted(r, version, since[r.name]))
            if done == len(self.rollouts):
                items = await list_rollouts(kube)
                healthy = sum(1 for item in items if settled_on(item, version))
                if healthy == len(self.rollouts):
                    return
            if time.monotonic() - last_report > 15:
                self.progress(f"  {what}: promoted {done}/{len(self.rollouts)}")
                last_report = time.monotonic()
            await asyncio.sleep(0.5)
        items = await list_rollouts(kube)
        phases = Counter((item.get("status") or {}).get("phase") for item in items)
        note = f"{what}: not every rollout settled on version {version} within {seconds:.0f}s: {dict(phases)}"
        self.notes.append(note)
        self.progress(note)

    async def phase_idle(self, plain: aiohttp.ClientSession) -> None:
        settings = self.settings
        self.progress(f"phase 2: settling {settings.settle:.0f}s, then idle for {settings.idle_window:.0f}s")
        await asyncio.sleep(settings.settle)
        self.tail.poll()
        await self.snapshot("idleStart", plain)
        self.phase_times["idleStart"] = time.time()
        await asyncio.sleep(settings.idle_window)
        await self.snapshot("idleEnd", plain)
        self.phase_times["idleEnd"] = time.time()

    async def phase_throughput(self, kube: aiohttp.ClientSession) -> None:
        n = self.settings.n
        self.progress(f"phase 3: all {n} rollouts to version {STABLE} with allAtOnce at once")
        path = rollouts_path()
        patch = {"spec": {"version": STABLE, "strategy": THROUGHPUT_STRATEGY}}
        semaphore = asyncio.Semaphore(16)

        async def send(rollout: Rollout) -> None:
            async with semaphore:
                sent = time.time()
                async with kube.patch(f"{path}/{rollout.name}", json=patch, headers=MERGE_PATCH) as response:
                    if response.status != 200:
                        raise RuntimeError(f"patch {rollout.name}: {response.status} {await response.text()}")
                self.throughput_patched[rollout.name] = sent

        self.phase_times["throughputStart"] = time.time()
        await asyncio.gather(*(send(r) for r in self.rollouts))
        self.phase_times["throughputPatched"] = time.time()
        per_rollout = sum(THROUGHPUT_MINIMUM.values()) + 1
        timeout = 120 + 2 * n * per_rollout / self.settings.aws_rps
        await self.wait_settled(kube, STABLE, timeout, "phase 3")
        self.phase_times["throughputDone"] = time.time()

    # -- figures -------------------------------------------------------------------------------

    def figures(self, last: ProcSample | None, sandbox_threads: Mapping[str, float]) -> dict[str, Any]:
        settings = self.settings
        snaps = self.snapshots
        tail = self.tail
        per_rollout: list[dict[str, Any]] = []
        latencies: list[float] = []
        latencies_sent: list[float] = []
        step_errors: list[float] = []
        step_errors_per_step: list[float] = []
        calls_by_mix: dict[str, list[Counter[str]]] = defaultdict(list)
        token_waits: list[float] = []
        # Where the time to the first write went: Kopf's reaction (create -> first AWS call), the
        # client side of the calls before it (parameter build, signing, the rate limiter's token),
        # the emulator answering them (before-send -> after-call), and the rest (the operator's
        # own work between calls: the event loop, worker threads, the planner).
        breakdown: dict[str, list[float]] = defaultdict(list)
        for rollout in self.rollouts:
            created = rollout.created
            writes = tail.writes(rollout.name, created, self.phase_times.get("throughputStart", math.inf))
            planned = rollout.mix.planned()
            record: dict[str, Any] = {"name": rollout.name, "mix": rollout.mix.name, "created": created}
            if writes:
                first = writes[0]
                latencies.append(first.t1 - created)
                latencies_sent.append(first.t0 - created)
                record["firstWriteMs"] = 1000 * (first.t1 - created)
                before = [c for c in tail.by_function.get(rollout.name, []) if created <= c.t0 <= first.t1]
                react = (before[0].tq or before[0].t0) - created
                queue = sum(c.queued for c in before)
                client = sum(c.ts - c.t0 for c in before)
                emulator = sum(c.t1 - c.ts for c in before)
                breakdown["react"].append(react)
                breakdown["queue"].append(queue - before[0].queued)
                breakdown["client"].append(client)
                breakdown["emulator"].append(emulator)
                breakdown["rest"].append(
                    first.t1 - created - react - (queue - before[0].queued) - client - emulator
                )
                actual = [(w.t1, w.percent_on(NEW)) for w in writes]
                record["writes"] = [[round(t - created, 4), p] for t, p in actual]
                if [p for _, p in actual] == [w.weight for w in planned]:
                    for index in range(1, len(planned)):
                        if not planned[index].after_pause:
                            continue
                        error = (actual[index][0] - actual[0][0]) - planned[index].offset
                        gap = planned[index].offset - planned[index - 1].offset
                        step_errors.append(error)
                        step_errors_per_step.append((actual[index][0] - actual[index - 1][0]) - gap)
                else:
                    record["unexpectedWrites"] = True
                promoted = next((w for w in writes if w.percent_on(NEW) == 100.0), None)
                if promoted is not None:
                    calls = Counter(
                        c.op
                        for c in tail.by_function.get(rollout.name, [])
                        if created <= c.t0 <= promoted.t1 + AFTER_PROMOTION_SECONDS
                    )
                    calls_by_mix[rollout.mix.name].append(calls)
                    record["calls"] = dict(calls)
            per_rollout.append(record)
        phase1_end = self.phase_times.get("rolloutsDone", math.inf)
        emulator_times = []
        for call in tail.calls:
            if call.op == "UpdateAlias":
                token_waits.append(call.ts - call.t0)
            if self.phase_times["rolloutsStart"] <= call.t0 <= phase1_end:
                emulator_times.append(call.t1 - call.ts)

        mix_rows = []
        worst_excess = -math.inf
        for entry in MIX:
            counted = calls_by_mix.get(entry.name, [])
            minimum = entry.minimum_calls()
            total = Counter[str]()
            for calls in counted:
                total.update(calls)
            mean = {op: total[op] / len(counted) for op in sorted(total)} if counted else {}
            mean_total = sum(mean.values())
            excess_each = [sum(c.values()) - sum(minimum.values()) for c in counted]
            max_excess = max(excess_each, default=math.nan)
            worst_excess = max(worst_excess, max_excess) if counted else worst_excess
            mix_rows.append(
                {
                    "strategy": entry.name,
                    "rollouts": len(counted),
                    "planned": [[w.weight, w.offset] for w in entry.planned()],
                    "meanCalls": mean,
                    "meanTotal": mean_total,
                    "minimum": minimum,
                    "minimumTotal": sum(minimum.values()),
                    "ratio": mean_total / sum(minimum.values()) if counted else math.nan,
                    "maxExcess": max_excess,
                }
            )

        # Phase 1 totals from the operator's own counter (drift checks of finished rollouts included).
        phase1_calls = snaps["rollouts"].calls_since(snaps["start"])
        phase1_cpu = snaps["rollouts"].operator.cpu - snaps["start"].operator.cpu
        phase1_writes = phase1_calls.get("UpdateAlias", 0)
        phase1_seconds = snaps["rollouts"].at - snaps["start"].at
        phase1_sandbox_cpu = snaps["rollouts"].sandbox.cpu - snaps["start"].sandbox.cpu
        phase1_sandbox_main = snaps["rollouts"].sandbox_main_cpu - snaps["start"].sandbox_main_cpu
        rollout_calls_total = sum(sum(c.values()) for rows in calls_by_mix.values() for c in rows)

        # Phase 2: idle.
        idle_calls = snaps["idleEnd"].calls_since(snaps["idleStart"])
        idle_seconds = snaps["idleEnd"].at - snaps["idleStart"].at
        intervals = idle_seconds / settings.drift_interval
        drift_per_interval = idle_calls.get("GetAlias", 0) / settings.n / intervals
        idle_per_hour = sum(idle_calls.values()) / settings.n * 3600 / idle_seconds
        idle_other = {op: n for op, n in idle_calls.items() if op != "GetAlias"}
        idle_cpu = snaps["idleEnd"].operator.cpu - snaps["idleStart"].operator.cpu
        idle_checks = idle_calls.get("GetAlias", 0)
        idle_cpu_per_check = idle_cpu / idle_checks if idle_checks else 0.0
        phase1_drift_checks = max(0, phase1_calls.get("GetAlias", 0) - settings.n)
        gaps = []
        for calls in tail.by_function.values():
            reads = [
                c.t0
                for c in calls
                if c.op == "GetAlias"
                and self.phase_times["idleStart"] - settings.drift_interval <= c.t0
                and c.t0 <= self.phase_times["idleEnd"]
            ]
            gaps += [b - a for a, b in itertools.pairwise(reads)]

        # Phase 3: throughput.
        completions: list[float] = []
        calls3: Counter[str] = Counter()
        windows: dict[str, tuple[float, float]] = {}
        patched = self.throughput_patched
        for rollout in self.rollouts:
            since = patched.get(rollout.name)
            if since is None:
                continue
            done = next(
                (w for w in tail.writes(rollout.name, since) if w.version == STABLE and not w.weights), None
            )
            if done is None:
                continue
            completions.append(done.t1)
            windows[rollout.name] = (since, done.t1 + AFTER_PROMOTION_SECONDS)
            calls3.update(
                c.op
                for c in tail.by_function.get(rollout.name, [])
                if since <= c.t0 <= done.t1 + AFTER_PROMOTION_SECONDS
            )
        completions.sort()
        throughput: dict[str, Any] = {"completed": len(completions)}
        if len(completions) >= 10:
            # The whole phase (first patch to last completion) for the ratio: the calls of a rollout
            # are spread over it (every pre-flight first, the writes later), so only whole-phase
            # rates of completions and of calls agree. The middle 80% of the completions (steady
            # state, no ramp) for the rest.
            start = self.phase_times["throughputStart"]
            per_second = len(completions) / (completions[-1] - start)
            lo, hi = completions[len(completions) // 10], completions[(9 * len(completions)) // 10]
            count = (9 * len(completions)) // 10 - len(completions) // 10
            steady = count / (hi - lo) if hi > lo else math.nan
            window_calls = [c for c in tail.calls if lo <= c.ts <= hi]
            calls_per_rollout = sum(calls3.values()) / len(completions)
            waits = [c.ts - c.t0 for c in window_calls]
            throughput.update(
                {
                    "windowSeconds": hi - lo,
                    "completedPerSecond": per_second,
                    "steadyCompletedPerSecond": steady,
                    "callsPerRollout": calls_per_rollout,
                    "callsByApi": {op: n / len(completions) for op, n in sorted(calls3.items())},
                    "ratio": per_second * calls_per_rollout / settings.aws_rps,
                    "utilization": len(window_calls) / (hi - lo) / settings.aws_rps if hi > lo else math.nan,
                    "goodput": steady * sum(THROUGHPUT_MINIMUM.values()) / settings.aws_rps,
                    "poolQueueP50Ms": 1000 * percentile([c.queued for c in window_calls if c.tq], 50),
                    "poolQueueP99Ms": 1000 * percentile([c.queued for c in window_calls if c.tq], 99),
                    "emulatorP50Ms": 1000 * percentile([c.t1 - c.ts for c in window_calls], 50),
                    "tokenWaitP50Ms": 1000 * percentile(waits, 50),
                    "tokenWaitP99Ms": 1000 * percentile(waits, 99),
                    # Calls in the window outside every rollout's own work: drift checks of the others.
                    "otherCallsInWindow": sum(
                        1
                        for c in window_calls
                        if not (windows.get(c.fn, (0.0, 0.0))[0] <= c.t0 <= windows.get(c.fn, (0.0, 0.0))[1])
                    ),
                    "allSeconds": completions[-1] - self.phase_times["throughputStart"],
                }
            )
        phase3_cpu = snaps["throughput"].operator.cpu - snaps["idleEnd"].operator.cpu
        phase3_calls = snaps["throughput"].calls_since(snaps["idleEnd"])
        phase3_writes = phase3_calls.get("UpdateAlias", 0)
        phase3_seconds = snaps["throughput"].at - snaps["idleEnd"].at
        phase3_sandbox_cpu = snaps["throughput"].sandbox.cpu - snaps["idleEnd"].sandbox.cpu
        phase3_sandbox_main = snaps["throughput"].sandbox_main_cpu - snaps["idleEnd"].sandbox_main_cpu

        peak_rss = max([s[0].hwm_mb for s in self.samples] + ([last.hwm_mb] if last else []))
        figures: dict[str, Any] = {
            "latencyMs": {
                "p50": 1000 * percentile(latencies, 50),
                "p99": 1000 * percentile(latencies, 99),
                "max": 1000 * max(latencies, default=math.nan),
                "samples": len(latencies),
                "toIssuedP50": 1000 * percentile(latencies_sent, 50),
                "toIssuedP99": 1000 * percentile(latencies_sent, 99),
                "breakdownMeanMs": {key: 1000 * statistics.fmean(v) for key, v in breakdown.items() if v},
                "breakdownP99Ms": {key: 1000 * percentile(v, 99) for key, v in breakdown.items()},
            },
            "awsCallInEmulatorMs": {
                "p50": 1000 * percentile(emulator_times, 50),
                "p99": 1000 * percentile(emulator_times, 99),
                "calls": len(emulator_times),
            },
            "stepErrorMs": {
                "p50": 1000 * percentile(step_errors, 50),
                "p99": 1000 * percentile(step_errors, 99),
                "max": 1000 * max(step_errors, default=math.nan),
                "min": 1000 * min(step_errors, default=math.nan),
                "absP99": 1000 * percentile([abs(e) for e in step_errors], 99),
                "perStepP50": 1000 * percentile(step_errors_per_step, 50),
                "perStepP99": 1000 * percentile(step_errors_per_step, 99),
                "samples": len(step_errors),
            },
            "callsPerRollout": {
                "byStrategy": mix_rows,
                "worstExcess": worst_excess,
                "phase1OperatorCalls": dict(sorted(phase1_calls.items())),
                "phase1RolloutCalls": rollout_calls_total,
            },
            "idle": {
                "seconds": idle_seconds,
                "driftInterval": settings.drift_interval,
                "calls": dict(sorted(idle_calls.items())),
                "callsPerRolloutPerHour": idle_per_hour,
                "expectedPerRolloutPerHour": 3600 / settings.drift_interval,
                "driftChecksPerRolloutPerInterval": drift_per_interval,
                "otherCalls": idle_other,
                "driftGapMinSeconds": min(gaps, default=math.nan),
                "mostDriftChecksPerInterval": (
                    settings.drift_interval / min(gaps) if gaps else drift_per_interval
                ),
                "driftGapP50Seconds": percentile(gaps, 50),
                "operatorCpuPercent": 100 * idle_cpu / idle_seconds,
            },
            "throughput": throughput,
            "operator": {
                "phase1CpuSeconds": phase1_cpu,
                "phase1SystemShare": (snaps["rollouts"].operator.system - snaps["start"].operator.system)
                / phase1_cpu
                if phase1_cpu
                else math.nan,
                "phase1Writes": phase1_writes,
                "phase1Passes": snaps["rollouts"].passes - snaps["start"].passes,
                "phase1PassSeconds": snaps["rollouts"].pass_seconds - snaps["start"].pass_seconds,
                "cpuMsPerStep": 1000 * phase1_cpu / phase1_writes if phase1_writes else math.nan,
                # Not the verdict: phase 1 also carries the drift checks of rollouts created early
                # (GetAlias beyond one pre-flight read per rollout), priced at the idle phase's CPU
                # per check (which includes the idle process's own upkeep, so it is generous).
                "phase1DriftChecks": phase1_drift_checks,
                "idleCpuMsPerDriftCheck": 1000 * idle_cpu_per_check,
                "cpuMsPerStepLessDriftChecks": (
                    1000 * (phase1_cpu - phase1_drift_checks * idle_cpu_per_check) / phase1_writes
                    if phase1_writes
                    else math.nan
                ),
                "phase1CpuPercent": 100 * phase1_cpu / phase1_seconds,
                "phase3CpuSeconds": phase3_cpu,
                "phase3Writes": phase3_writes,
                "phase3CpuMsPerStep": 1000 * phase3_cpu / phase3_writes if phase3_writes else math.nan,
                "phase3CpuPercent": 100 * phase3_cpu / phase3_seconds,
                "peakRssMb": peak_rss,
                "rssAfterRolloutsMb": snaps["rollouts"].operator.rss_mb,
                "threads": max(s[0].threads for s in self.samples) if self.samples else None,
                "updateAliasTokenWaitP99Ms": 1000 * percentile(token_waits, 99),
            },
            "sandbox": {
                "phase1CpuPercent": 100 * phase1_sandbox_cpu / phase1_seconds,
                "phase1MainThreadCpuPercent": 100 * phase1_sandbox_main / phase1_seconds,
                "phase3CpuPercent": 100 * phase3_sandbox_cpu / phase3_seconds,
                "phase3MainThreadCpuPercent": 100 * phase3_sandbox_main / phase3_seconds,
                "peakRssMb": max((s[1].hwm_mb for s in self.samples), default=math.nan),
                "liveThreadsCpuSeconds": dict(sorted(sandbox_threads.items(), key=lambda kv: -kv[1])[:5]),
            },
            "phaseSeconds": {
                "rollouts": phase1_seconds,
                "creating": self.phase_times["rolloutsCreated"] - self.phase_times["rolloutsStart"],
                "idle": idle_seconds,
                "throughput": phase3_seconds,
            },
        }
        phase_times = self.phase_times
        figures["operatorLoop"] = {
            "rollouts": self.operator_stats(phase_times["rolloutsStart"], phase_times["rolloutsDone"]),
            "idle": self.operator_stats(phase_times["idleStart"], phase_times["idleEnd"]),
            "throughput": self.operator_stats(phase_times["throughputStart"], phase_times["throughputDone"]),
        }
        failed = Counter(
            f"{c.op} {c.err or c.code}" for c in tail.calls if c.err is not None or c.code >= 400
        )
        figures["failedAwsCalls"] = dict(failed)
        figures["preflightRepeated"] = sum(
            1 for record in per_rollout if (record.get("calls") or {}).get("GetFunctionConfiguration", 0) > 2
        )
        figures["targets"] = judge(figures)
        return {"figures": figures, "perRollout": per_rollout, "samples": self.samples_table()}

    def operator_stats(self, start: float, end: float) -> dict[str, Any]:
        """Event-loop lag and Kubernetes API requests of the operator between two wall-clock times."""
        path = self.settings.out / "operator-stats.jsonl"
        lines = (
            [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if path.exists()
            else []
        )
        inside = [line for line in lines if start <= line["t"] <= end]
        before = [line for line in lines if line["t"] < start]
        first = before[-1]["kube"] if before else {}
        last = inside[-1]["kube"] if inside else first
        requests = {kind: last.get(kind, 0) - first.get(kind, 0) for kind in sorted(last)}
        return {
            "loopLagMaxMs": 1000 * max((line["lagMax"] for line in inside), default=math.nan),
            "loopLagP99OfSecondMaxMs": 1000 * percentile([line["lagMax"] for line in inside], 99),
            "loopLagMeanMs": 1000 * statistics.fmean(line["lagMean"] for line in inside)
            if inside
            else math.nan,
            "kubeRequests": {kind: n for kind, n in requests.items() if n},
            "eventLoop": inside[-1].get("loop", "") if inside else "",
        }

    def samples_table(self) -> list[list[float]]:
        return [
            [round(o.at, 2), round(o.cpu, 2), round(o.rss_mb, 1), round(s.cpu, 2), round(s.rss_mb, 1)]
            for o, s in self.samples
        ]


def judge(figures: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target: the value it is judged on, the limit, and whether it is met."""
    idle = figures["idle"]
    throughput = figures["throughput"]
    operator = figures["operator"]
    checks = {
        "latencyP99Ms": (figures["latencyMs"]["p99"], "<"),
        "stepErrorP99Ms": (figures["stepErrorMs"]["absP99"], "<"),
        "excessCallsPerRollout": (figures["callsPerRollout"]["worstExcess"], "<="),
        # Judged on the closest two checks of one rollout (the interval over the shortest gap): a
        # count over the window also counts a check that falls on its edge.
        "driftChecksPerRolloutPerInterval": (
            idle["mostDriftChecksPerInterval"] if not idle["otherCalls"] else math.inf,
            "<=",
        ),
        "throughputRatio": (throughput.get("ratio", math.nan), ">="),
        "peakRssMb": (operator["peakRssMb"], "<="),
        "cpuMsPerStep": (operator["cpuMsPerStep"], "<="),
    }
    judged = {}
    for key, (value, sense) in checks.items():
        limit = TARGETS[key]
        met = {"<": value < limit, "<=": value <= limit + 1e-9, ">=": value >= limit}[sense]
        judged[key] = {
            "value": value,
            "target": f"{sense} {limit:g}",
            "met": bool(met) and not math.isnan(value),
        }
    return judged


# ---------------------------------------------------------------------------------------------
# The report.


def report(settings: Settings, result: Mapping[str, Any], notes: Sequence[str]) -> str:
    f = result["figures"]
    t = f["targets"]
    lines: list[str] = []
    mark = {True: "met", False: "MISSED"}

    def row(label: str, value: str, key: str | None = None) -> None:
        judged = t.get(key) if key else None
        verdict = f"{judged['target']:>10}  {mark[judged['met']]}" if judged else ""
        lines.append(f"  {label:<56}{value:>30}  {verdict}")

    lat, step, idle, thr, op, sb = (
        f["latencyMs"],
        f["stepErrorMs"],
        f["idle"],
        f["throughput"],
        f["operator"],
        f["sandbox"],
    )
    lines.append(
        f"\nscale: {settings.n} rollouts, one operator process; AWS rate limit {settings.aws_rps:g}/s "
        f"(burst {settings.aws_burst}); drift check every {settings.drift_interval:g}s; created "
        f"{settings.create_rate:.2f}/s in batches of {settings.batch}"
    )
    lines.append(f"  {'figure':<56}{'value':>30}  {'target':>10}  verdict")
    row(
        "spec change -> first UpdateAlias returned, p50 / p99",
        f"{lat['p50']:.0f} / {lat['p99']:.0f} ms",
        "latencyP99Ms",
    )
    row(
        "  (to the UpdateAlias being issued, p50 / p99)",
        f"{lat['toIssuedP50']:.0f} / {lat['toIssuedP99']:.0f} ms",
    )
    mean = lat["breakdownMeanMs"]
    if mean:
        row(
            "  mean: react / pool queue / client+token / emulator / rest",
            f"{mean['react']:.0f} / {mean['queue']:.0f} / {mean['client']:.0f} / {mean['emulator']:.0f} / "
            f"{mean['rest']:.0f} ms",
        )
    emulated = f["awsCallInEmulatorMs"]
    row(
        "  one AWS call in the emulator (phase 1), p50 / p99",
        f"{emulated['p50']:.0f} / {emulated['p99']:.0f} ms",
    )
    row(
        "timed-step error vs plan, signed p50 / p99, |error| p99",
        f"{step['p50']:.0f} / {step['p99']:.0f}, {step['absP99']:.0f} ms",
        "stepErrorP99Ms",
    )
    row(
        "  (per step, against the write before it, p50 / p99)",
        f"{step['perStepP50']:.0f} / {step['perStepP99']:.0f} ms",
    )
    row(
        "AWS calls per rollout over the minimum (worst strategy)",
        f"+{f['callsPerRollout']['worstExcess']:g}",
        "excessCallsPerRollout",
    )
    row(
        "idle: drift checks per rollout per interval, most (mean)",
        f"{idle['mostDriftChecksPerInterval']:.3f} ({idle['driftChecksPerRolloutPerInterval']:.3f})",
        "driftChecksPerRolloutPerInterval",
    )
    other = ", ".join(f"{k} {v}" for k, v in idle["otherCalls"].items()) or "none"
    row(
        "  idle AWS calls per rollout per hour (other APIs)",
        f"{idle['callsPerRolloutPerHour']:.1f} ({other})",
    )
    if "ratio" in thr:
        row(
            "throughput (whole phase): completed/s x calls each / rate",
            f"{thr['completedPerSecond']:.2f}/s x {thr['callsPerRollout']:.2f} = {thr['ratio']:.2f}",
            "throughputRatio",
        )
        row("  steady state (middle 80%): all AWS calls / rate", f"{thr['utilization']:.2f}")
        row(
            "  steady state: completed/s vs rate / minimum calls",
            f"{thr['steadyCompletedPerSecond']:.2f}/s: {thr['goodput']:.2f}",
        )
        row(
            "  drift checks of finished rollouts / rate",
            f"{thr['otherCallsInWindow'] / thr['windowSeconds'] / settings.aws_rps:.2f}",
        )
        row(
            "  per call p50/p99: pool queue, client+token; emulator p50",
            f"{thr['poolQueueP50Ms']:.0f}/{thr['poolQueueP99Ms']:.0f}, {thr['tokenWaitP50Ms']:.0f}/"
            f"{thr['tokenWaitP99Ms']:.0f}; {thr['emulatorP50Ms']:.0f} ms",
        )
    row("operator CPU per step (phase 1)", f"{op['cpuMsPerStep']:.1f} ms", "cpuMsPerStep")
    row("  (of which in the kernel: system calls)", f"{100 * op['phase1SystemShare']:.0f} %")
    row(
        f"  (less its {op['phase1DriftChecks']} drift checks at {op['idleCpuMsPerDriftCheck']:.1f} ms each)",
        f"{op['cpuMsPerStepLessDriftChecks']:.1f} ms",
    )
    row("  (phase 3: allAtOnce, per step)", f"{op['phase3CpuMsPerStep']:.1f} ms")
    row("operator peak RSS", f"{op['peakRssMb']:.0f} MB", "peakRssMb")
    row(
        "operator CPU, phase 1 / idle / phase 3 (% of a core)",
        f"{op['phase1CpuPercent']:.0f} / {idle['operatorCpuPercent']:.1f} / {op['phase3CpuPercent']:.0f} %",
    )
    row(
        "sandbox CPU phase 1 / phase 3 (main thread: kube API)",
        f"{sb['phase1CpuPercent']:.0f} ({sb['phase1MainThreadCpuPercent']:.0f}) / "
        f"{sb['phase3CpuPercent']:.0f} ({sb['phase3MainThreadCpuPercent']:.0f}) %",
    )
    loop = f["operatorLoop"]
    row(
        "operator event-loop lag, worst second: phase 1 / idle / phase 3",
        f"{loop['rollouts']['loopLagMaxMs']:.0f} / {loop['idle']['loopLagMaxMs']:.0f} / "
        f"{loop['throughput']['loopLagMaxMs']:.0f} ms",
    )
    kube = loop["rollouts"]["kubeRequests"]
    row(
        "operator Kubernetes requests per rollout, phase 1",
        ", ".join(f"{kind} {n / settings.n:.1f}" for kind, n in kube.items() if kind != "watch") or "none",
    )
    if f["preflightRepeated"]:
        row("rollouts whose pre-flight ran more than once (phase 1)", f"{f['preflightRepeated']}")
    if f["failedAwsCalls"]:
        row("failed AWS calls", ", ".join(f"{k}: {v}" for k, v in f["failedAwsCalls"].items()))
    lines.append("\nAWS calls per rollout by API (phase 1, from the launcher's log):")
    lines.append(f"  {'strategy':<28}{'n':>5}  {'calls (mean)':<62}{'min':>5}{'ratio':>7}{'worst':>7}")
    for mix in f["callsPerRollout"]["byStrategy"]:
        described = ", ".join(f"{op} {count:.2f}" for op, count in mix["meanCalls"].items())
        lines.append(
            f"  {mix['strategy']:<28}{mix['rollouts']:>5}  {described:<62}{mix['minimumTotal']:>5}"
            f"{mix['ratio']:>7.2f}{'+' + format(mix['maxExcess'], 'g'):>7}"
        )
    if "callsByApi" in thr:
        described = ", ".join(f"{op} {count:.2f}" for op, count in thr["callsByApi"].items())
        minimum = sum(THROUGHPUT_MINIMUM.values())
        lines.append(
            f"  {'phase 3: allAtOnce':<28}{thr['completed']:>5}  {described:<62}{minimum:>5}"
            f"{thr['callsPerRollout'] / minimum:>7.2f}"
        )
    phases = f["phaseSeconds"]
    lines.append(
        f"\nphases: rollouts {phases['rollouts']:.0f}s (creating {phases['creating']:.0f}s), idle "
        f"{phases['idle']:.0f}s, throughput {phases['throughput']:.0f}s; operator passes in phase 1: "
        f"{op['phase1Passes']:.0f} ({op['phase1PassSeconds'] / max(op['phase1Passes'], 1) * 1000:.1f} ms "
        f"wall each); operator event loop: {f['operatorLoop']['rollouts']['eventLoop'] or '?'}"
    )
    for note in notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def plot(out: Path, result: Mapping[str, Any], sample: int = 3) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_rollout = result["perRollout"]
    figures = result["figures"]
    paths = []
    fig, ax = plt.subplots(figsize=(10, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    by_mix: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in per_rollout:
        if record.get("writes") and len(by_mix[record["mix"]]) < sample:
            by_mix[record["mix"]].append(record)
    for index, entry in enumerate(MIX):
        color = colors[index % len(colors)]
        for number, record in enumerate(by_mix.get(entry.name, [])):
            times = [0.0] + [t for t, _ in record["writes"]]
            weights = [0.0] + [p for _, p in record["writes"]]
            end = times[-1] + 2
            ax.step(
                [*times, end],
                [*weights, weights[-1]],
                where="post",
                color=color,
                alpha=0.8,
                label=entry.name if number == 0 else None,
            )
            ax.plot(times[1:], weights[1:], "o", color=color, markersize=3)
            first = times[1]
            planned = entry.planned()
            ax.step(
                [first + w.offset for w in planned] + [first + planned[-1].offset + 2],
                [w.weight for w in planned] + [100.0],
                where="post",
                color=color,
                alpha=0.35,
                linestyle="--",
            )
    ax.set_xlabel("seconds since the rollout was created")
    ax.set_ylabel("% of traffic on the new version")
    ax.set_title(f"Weight over time, {sample} rollouts per strategy (dashed: planned from the first write)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    path = out / "scale-weights.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    latencies = [r["firstWriteMs"] for r in per_rollout if "firstWriteMs" in r]
    left.hist(latencies, bins=40, color=colors[0])
    left.axvline(figures["latencyMs"]["p99"], color="k", linestyle="--", label="p99")
    left.set_xlabel("spec change -> first UpdateAlias returned (ms)")
    left.set_ylabel("rollouts")
    left.legend()
    errors = []
    for record in per_rollout:
        entry = next(m for m in MIX if m.name == record["mix"])
        planned = entry.planned()
        writes = record.get("writes") or []
        if [p for _, p in writes] != [w.weight for w in planned]:
            continue
        for index in range(1, len(planned)):
            if planned[index].after_pause:
                errors.append(1000 * ((writes[index][0] - writes[0][0]) - planned[index].offset))
    right.hist(errors, bins=40, color=colors[1])
    right.axvline(figures["stepErrorMs"]["p99"], color="k", linestyle="--", label="p99")
    right.set_xlabel("timed step: actual - planned (ms)")
    right.set_ylabel("steps")
    right.legend()
    fig.suptitle(f"{len(per_rollout)} rollouts")
    fig.tight_layout()
    path = out / "scale-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def parse_settings(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="rollouts (and functions); 1000 for the full run")
    parser.add_argument(
        "--aws-rps",
        type=float,
        default=50.0,
        help="the operator's AWS rate limit, requests/s (LAMBDA_ROLLOUTS_AWS_REQUESTS_PER_SECOND; "
        "the operator's default is 10: raised here so that N=1000 fits in minutes)",
    )
    parser.add_argument(
        "--aws-burst", type=int, default=10, help="the limiter's burst (LAMBDA_ROLLOUTS_AWS_BURST)"
    )
    parser.add_argument(
        "--drift-interval",
        type=float,
        default=None,
        help="drift-check interval in seconds (default: 30, or longer so that drift checks of all "
        "rollouts take at most a fifth of the rate limit)",
    )
    parser.add_argument(
        "--idle-window", type=float, default=None, help="idle phase length (default: one drift interval)"
    )
    parser.add_argument(
        "--load",
        type=float,
        default=0.35,
        help="share of the rate limit the creations would use if each rollout made only the minimum calls",
    )
    parser.add_argument(
        "--create-rate", type=float, default=None, help="rollouts created per second (overrides --load)"
    )
    parser.add_argument("--batch", type=int, default=5, help="rollouts created together")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds between phase 1 and the idle window"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may overrun its plan")
    parser.add_argument("--seed-threads", type=int, default=8)
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: a new temporary directory)"
    )
    parser.add_argument("--json", type=Path, default=None, help="the JSON figures (default: OUT/scale.json)")
    parser.add_argument("--profile", action="store_true", help="profile the operator (slows it down)")
    parser.add_argument(
        "--sample",
        action="store_true",
        help="sample the operator's CPU with py-spy from outside (barely slows it down)",
    )
    parser.add_argument(
        "--profile-sandbox", action="store_true", help="profile the sandbox process (slows it down)"
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the operator's LAMBDA_ROLLOUTS_EVENT_LOOP (auto: uvloop when installed, as by default)",
    )
    parser.add_argument(
        "--operator-preload",
        type=Path,
        default=None,
        metavar="FILE",
        help="a Python file the operator process runs before it starts: an experiment, reported as such",
    )
    args = parser.parse_args(argv)
    drift = args.drift_interval
    if drift is None:
        drift = max(30.0, args.n / (0.2 * args.aws_rps))
    out = args.out or Path(tempfile.mkdtemp(prefix="lambda-rollouts-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    create_rate = args.create_rate or args.load * args.aws_rps / mean_minimum_calls()
    return Settings(
        n=args.n,
        aws_rps=args.aws_rps,
        aws_burst=args.aws_burst,
        drift_interval=drift,
        idle_window=args.idle_window or drift,
        create_rate=create_rate,
        batch=args.batch,
        settle=args.settle,
        out=out,
        json_path=args.json or out / "scale.json",
        profile=args.profile,
        profile_sandbox=args.profile_sandbox,
        sample=args.sample,
        preload=args.operator_preload,
        event_loop=args.event_loop,
        seed_threads=args.seed_threads,
        timeout=args.timeout,
    )


def main(argv: Sequence[str]) -> None:
    settings = parse_settings(argv)
    (settings.out / "calls.jsonl").unlink(missing_ok=True)
    load = os.getloadavg()
    run = Run(settings)
    result = asyncio.run(run.main())
    text = report(settings, result, run.notes)
    print(text)
    document = {
        "benchmark": "scale",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "loadAverageAtStart": load,
            "loadAverageAtEnd": os.getloadavg(),
        },
        "settings": {
            "n": settings.n,
            "awsRequestsPerSecond": settings.aws_rps,
            "awsBurst": settings.aws_burst,
            "driftIntervalSeconds": settings.drift_interval,
            "idleWindowSeconds": settings.idle_window,
            "createRate": settings.create_rate,
            "batch": settings.batch,
            "profiled": settings.profile or settings.profile_sandbox,
            "operatorPreload": str(settings.preload) if settings.preload else None,
            "operatorEventLoop": settings.event_loop,
            "mix": [{"name": m.name, "strategy": m.strategy} for m in MIX],
        },
        "targets": TARGETS,
        "notes": run.notes,
        "table": text,
        **result,
    }
    settings.json_path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    for path in plot(settings.out, result):
        print(f"wrote {path}")
    print(f"wrote {settings.json_path}")
    print(f"load average: {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (1 min)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["launch"]:
        launch(sys.argv[2:])
    else:
        main(sys.argv[1:])
