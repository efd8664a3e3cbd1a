"""Crash safety: the real operator, SIGKILLed at random moments and right after its alias writes.

Run: ``.venv/bin/python benchmarks/crash.py [--rollouts 8] [--kills 60] [--seed 1] [--json PATH]``
(about 2-4 minutes on 2 cores with the defaults).

What it does:

- Starts the sandbox as its own process (``lambda-rollouts sandbox --no-operator``, free ports) and
  reads the ``export KUBECONFIG=...`` and ``export AWS_ENDPOINT_URL=...`` lines it prints.
- Creates ``--rollouts`` functions in the AWS emulator (``seed_demo_function``: versions 1 and 2,
  alias ``live`` on 1) and one ``LambdaRollout`` per function. Every rollout goes through a series
  of releases (attempts): each publishes a new version and changes the rollout's ``version``,
  ``strategy`` and ``analysis`` in one merge patch, as a Git commit would. The kind of release
  rotates over ``KINDS``: a canary with timed pauses of 1-3 s, a linear shift every 1 s, a canary
  with a background analysis that passes, and the same with a bad version whose error rate fails
  the analysis, so that the operator rolls it back.
- Publishes per-version Lambda metrics for every alias (``MetricsPump``: 200 invocations per
  second, split by the alias's weights, as the demo's ``Traffic`` does; bad versions fail a
  quarter of theirs).
- Runs the real operator (``lambda-rollouts run``, through ``crash_launcher.py``, which forks each
  operator from a process that has imported it already) with the sandbox's variables and dummy
  credentials, and SIGKILLs it at a random moment (seeded: mostly 0-2 s after its first AWS call,
  sometimes during its startup), then starts it again, until ``--kills`` kills have happened.
  The launcher also kills the operator itself right after a successful ``UpdateAlias``, between
  the alias write and the status write (probability ``--write-kill-p`` after a step,
  ``--full-write-kill-p`` after a promotion or a rollback), and sometimes just before a
  promotion or rollback is sent (``--before-full-write-kill-p``). All of these count as kills.
  New releases start only while kills remain; then one last operator runs undisturbed until
  every release has reached its final state, within ``--final-deadline`` seconds.
- Checks the log (``check_log``), per release: every weight written is in its plan (a setWeight
  of its strategy, 100% on the new version = promotion, 100% on stable = rollback); weights only
  go up, except for the rollback; no step is skipped; a weight is written again at most once, and
  only by a restarted process; nothing goes back to the new version after its rollback; every
  status the operator writes describes the alias as it is then; every release ends in the right
  final state (Healthy on 100% of the new version, or Degraded with reason AnalysisFailed on
  100% of the stable one) with no alias left split, and none is stuck. Prints a table;
  ``--json PATH`` writes the figures; exits 1 on any violation, after printing the log of each
  release concerned.

The log (``crash-log.jsonl`` in ``--workdir``) has one JSON object per line, appended and fsynced
by the operator and by this script, in the order things happened. From the operator (see
``crash_launcher.py``): ``working`` (its first AWS call), ``sent`` and ``write`` (each
``UpdateAlias``, before it is sent and once it succeeded), ``status-write`` and ``kill`` (at the
write point). From this script: ``initial`` (each alias after seeding), ``release``, ``launch``,
``kill`` (at a random moment), ``observed`` (every alias, read once a killed operator is gone:
it settles the writes that were out when it died), ``status`` (each change seen by polling),
``final`` or ``stuck``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from crash_launcher import (
    KILL_BEFORE_FULL_P_ENV,
    KILL_BEFORE_POINT,
    KILL_FULL_P_ENV,
    KILL_P_ENV,
    KILL_POINT,
    LOG_ENV,
    SEED_ENV,
    append_record,
)
from sandbox_process import start_sandbox

from lambda_rollouts.model import GROUP, PLURAL, VERSION
from lambda_rollouts.sandbox.aws import SANDBOX_CREDENTIALS, release_zip, sandbox_session, seed_demo_function
from lambda_rollouts.sandbox.demo import BAD_ERROR_RATIO, INVOCATIONS_PER_SECOND, alias_shares

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import MetricDatumTypeDef
    from mypy_boto3_lambda import LambdaClient

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "crash_launcher.py"
REGION = "us-east-1"
ALIAS = "live"
NAMESPACE = "default"
ROLLOUTS_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}

KINDS = ("canary", "linear", "analysis-pass", "analysis-fail")
ANALYSIS: dict[str, Any] = {
    "interval": "2s",
    "metrics": [{"name": "error-rate", "max": 1}],
    "minInvocations": 10,
}
PROMOTE, ROLLBACK = "promote", "rollback"
VIOLATION_KINDS = (
    "not-in-plan",
    "decreasing",
    "skipped-step",
    "repeated-write",
    "after-rollback",
    "split-alias",
    "wrong-final-state",
    "stuck",
    "unexpected-write",
    "unlogged-write",
    "status-mismatch",
)
POLL_SECONDS = 0.25
# Percents are compared at Lambda's resolution (4 decimals of a fraction).
PERCENT_DECIMALS = 2


# ---------------------------------------------------------------------------------------------
# The checker: pure, over the records of the log.


@dataclass(frozen=True)
class Violation:
    kind: str
    rollout: str
    attempt: int
    detail: str


@dataclass
class CheckReport:
    violations: list[Violation] = field(default_factory=list)
    rollouts: int = 0
    attempts: int = 0
    promoted: int = 0
    rolled_back: int = 0
    writes: int = 0
    kills: int = 0
    kills_at_write: int = 0
    launches: int = 0
    # Writes that landed while their process died waiting for the answer (seen by reading the
    # alias after the kill): the operator could not know whether they had happened.
    unanswered_writes: int = 0
    # The most times one weight of one attempt was written again after its first write.
    max_rewrites: int = 0
    # Kills at the write->status point by the write just made: step, promotion or rollback.
    kills_at_write_after: Counter[str] = field(default_factory=Counter)
    # Kills just before a promotion or rollback was sent, by which.
    kills_before_write: Counter[str] = field(default_factory=Counter)

    def by_kind(self) -> dict[str, int]:
        counts = Counter(violation.kind for violation in self.violations)
        return {kind: counts[kind] for kind in VIOLATION_KINDS}


def percent_of(write: Mapping[str, Any], stable: str, canary: str) -> float | None:
    """The percent on ``canary`` that an alias state means for an attempt; None if foreign to it.

    100% on the canary (no routing) is the promotion, 100% on stable (no routing) is 0 (the start,
    or the rollback), stable with the canary in the routing map is a step.
    """
    version, weights = str(write.get("version")), dict(write.get("weights") or {})
    if not weights:
        if version == canary:
            return 100.0
        if version == stable:
            return 0.0
        return None
    if version == stable and set(weights) == {canary}:
        return round(float(weights[canary]) * 100, PERCENT_DECIMALS)
    return None


@dataclass
class _Attempt:
    """One release of one rollout, as the log tells it."""

    rollout: str
    function: str
    number: int
    stable: str
    canary: str
    plan: tuple[float, ...]
    outcome: str
    weight: float = 0.0
    rolled_back: bool = False
    writes: int = 0
    last_pid: int | None = None
    rewrites: Counter[float] = field(default_factory=Counter)
    final: Mapping[str, Any] | None = None

    @property
    def walk(self) -> tuple[float, ...]:
        """The weights in the order the plan writes them, promotion last."""
        return (*self.plan, 100.0)

    def violation(self, kind: str, detail: str) -> Violation:
        return Violation(kind, self.rollout, self.number, detail)

    def observe(self, write: Mapping[str, Any]) -> list[Violation]:
        """Follow one alias write; the violations it shows."""
        found: list[Violation] = []
        pid = write.get("pid")
        if self.final is not None:
            found.append(self.violation("unexpected-write", f"alias written after the final state: {write}"))
        percent = percent_of(write, self.stable, self.canary)
        self.writes += 1
        if percent is None:
            found.append(
                self.violation(
                    "not-in-plan",
                    f"wrote version {write.get('version')} weights {write.get('weights')}, which is "
                    f"neither stable {self.stable} nor new {self.canary} as planned",
                )
            )
            self.last_pid = pid
            return found
        if percent == self.weight:
            self.rewrites[percent] += 1
            if self.rewrites[percent] > 1:
                found.append(
                    self.violation(
                        "repeated-write",
                        f"{percent:g}% written again {self.rewrites[percent]} times (one re-write after a "
                        "restart is allowed)",
                    )
                )
            elif pid is not None and pid == self.last_pid:
                found.append(
                    self.violation(
                        "repeated-write", f"{percent:g}% written twice by the same process (pid {pid})"
                    )
                )
        elif percent == 0:
            # A rollback (again, if traffic went back to the new version after the first one: that
            # move was the violation, not this return to stable).
            self.rolled_back = True
        elif self.rolled_back:
            found.append(
                self.violation(
                    "after-rollback", f"{percent:g}% on version {self.canary} after it was rolled back"
                )
            )
        elif percent < self.weight:
            found.append(
                self.violation("decreasing", f"weight went down from {self.weight:g}% to {percent:g}%")
            )
        else:
            walk = self.walk
            position = walk.index(self.weight) if self.weight in walk else -1
            expected = walk[position + 1] if position + 1 < len(walk) else None
            if percent not in walk:
                found.append(
                    self.violation(
                        "not-in-plan", f"{percent:g}% is not in the plan {list(walk)} (100 = promotion)"
                    )
                )
            elif percent != expected:
                skipped = walk[position + 1 : walk.index(percent)]
                found.append(
                    self.violation(
                        "skipped-step",
                        f"went from {self.weight:g}% to {percent:g}%, skipping {[f'{w:g}' for w in skipped]}",
                    )
                )
        self.weight = percent
        self.last_pid = pid
        return found

    def judge(self) -> list[Violation]:
        """The final-state violations of this attempt, one per kind at most."""
        found: dict[str, Violation] = {}
        final = self.final
        if final is None or final.get("kind") == "stuck":
            waited = f" after {final.get('seconds', 0):.0f}s" if final is not None else ""
            status = f"; last status: {final.get('phase')} {final.get('message', '')}" if final else ""
            found["stuck"] = self.violation("stuck", f"no final state{waited}{status}")
        else:
            phase, version = final.get("phase"), str(final.get("version"))
            weights = dict(final.get("weights") or {})
            if weights:
                found["split-alias"] = self.violation(
                    "split-alias", f"final alias on version {version} with routing {weights}"
                )
            if self.outcome == PROMOTE:
                right = phase == "Healthy" and version == self.canary and not weights
                wanted = f"Healthy on 100% of version {self.canary}"
            else:
                right = (
                    phase == "Degraded"
                    and final.get("reason") == "AnalysisFailed"
                    and version == self.stable
                    and not weights
                )
                wanted = f"Degraded (AnalysisFailed) on 100% of version {self.stable}"
            if not right:
                found["wrong-final-state"] = self.violation(
                    "wrong-final-state",
                    f"ended {phase} ({final.get('reason')}) with the alias on version {version} "
                    f"{weights or ''}; wanted {wanted}",
                )
        if self.writes and 0 < self.weight < 100:
            found.setdefault(
                "split-alias", self.violation("split-alias", f"the last write left {self.weight:g}% split")
            )
        expected_last = 100.0 if self.outcome == PROMOTE else 0.0
        if self.writes and self.weight in (0.0, 100.0) and self.weight != expected_last:
            found.setdefault(
                "wrong-final-state",
                self.violation(
                    "wrong-final-state",
                    f"the last write put 100% on version {self.canary if self.weight else self.stable}, "
                    f"expected a {self.outcome}",
                ),
            )
        return list(found.values())


def alias_state(record: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """(FunctionVersion, AdditionalVersionWeights) of a record, weights at Lambda's resolution."""
    weights = {str(k): round(float(v), 4) for k, v in (record.get("weights") or {}).items()}
    return str(record.get("version")), weights


def check_log(records: Iterable[Mapping[str, Any]]) -> CheckReport:
    """Check the log of a run (records in the order written); see the module docstring.

    A ``sent`` record with no ``write`` after it, from a process that was killed, is resolved by
    the ``observed`` records the suite writes after each kill: the alias as the dead process left
    it. When it shows the request's state, the write landed and is checked like any other. When it
    does not, the request may still land a moment later (sent, but not yet served when the alias
    was read): it counts as landed if what follows (the next write, status or observation of that
    alias) shows it did. Any other change the log cannot explain is an ``unlogged-write``.
    """
    report = CheckReport()
    alias_now: dict[str, tuple[str, dict[str, float]]] = {}
    current: dict[str, _Attempt] = {}
    attempts: dict[tuple[str, int], _Attempt] = {}
    rollouts: set[str] = set()
    pending: dict[str, Mapping[str, Any]] = {}
    function_of: dict[str, str] = {}
    # What each process wrote and sent last (step, promotion, rollback), for the kills that follow.
    last_write_of: dict[Any, str] = {}
    last_sent_of: dict[Any, str] = {}
    # Requests of dead processes not landed when the alias was read after their death, by function.
    late: dict[str, Mapping[str, Any]] = {}

    def land(function: str, sent: Mapping[str, Any]) -> None:
        report.unanswered_writes += 1
        apply_write(function, {**sent, "kind": "write"})

    def land_late_if_it_explains(function: str, record: Mapping[str, Any]) -> None:
        """Before ``record`` (a write) is checked: did a late request land just before it?"""
        sent = late.pop(function, None)
        attempt = current.get(function)
        if sent is None or attempt is None or not copy.deepcopy(attempt).observe(record):
            return
        trial = copy.deepcopy(attempt)
        if not trial.observe({**sent, "kind": "write"}) and not trial.observe(record):
            land(function, sent)

    def apply_write(function: str, record: Mapping[str, Any]) -> None:
        report.writes += 1
        alias_now[function] = alias_state(record)
        found = current.get(function)
        if found is None:
            report.violations.append(
                Violation("unexpected-write", function, -1, f"alias written with no release: {record}")
            )
        else:
            report.violations.extend(found.observe(record))
            last_write_of[record.get("pid")] = write_kind(found, record)

    def check_status_write(record: Mapping[str, Any]) -> None:
        # The operator reads the alias back after writing it and reports what it read: a status
        # must describe the alias as it is when the status is written.
        function = function_of.get(str(record.get("rollout")), "")
        state = alias_now.get(function)
        stable, canary, weight = record.get("stable"), record.get("canary"), record.get("weight")
        if state is None or not stable or not canary or weight is None:
            return
        percent = percent_of({"version": state[0], "weights": state[1]}, str(stable), str(canary))
        if percent is not None and abs(percent - float(weight)) < 0.01:
            return
        sent = late.get(function)
        if sent is not None and percent_of(sent, str(stable), str(canary)) == float(weight):
            # The operator read the alias with a late request of a dead process landed.
            land(function, late.pop(function))
            return
        attempt = current.get(function)
        report.violations.append(
            Violation(
                "status-mismatch",
                attempt.rollout if attempt else function,
                attempt.number if attempt else -1,
                f"pid {record.get('pid')} wrote {record.get('phase')} with {weight}% on version {canary} "
                f"({record.get('message')}) while the alias was {state}",
            )
        )

    def write_kind(attempt: _Attempt, record: Mapping[str, Any]) -> str:
        percent = percent_of(record, attempt.stable, attempt.canary)
        return {None: "other", 0.0: "rollback", 100.0: "promotion"}.get(percent, "step")

    for record in records:
        kind = record.get("kind")
        function = str(record.get("function", ""))
        if kind == "initial":
            alias_now[function] = alias_state(record)
        elif kind == "release":
            released = _Attempt(
                rollout=str(record["rollout"]),
                function=function,
                number=int(record["attempt"]),
                stable=str(record["stable"]),
                canary=str(record["canary"]),
                plan=tuple(round(float(w), PERCENT_DECIMALS) for w in record["plan"]),
                outcome=str(record["outcome"]),
            )
            before = alias_now.get(function)
            if before != (released.stable, {}):
                report.violations.append(
                    released.violation(
                        "split-alias",
                        f"released over version {released.stable} while the alias was {before}",
                    )
                )
            current[function] = attempts[(released.rollout, released.number)] = released
            function_of[released.rollout] = function
            rollouts.add(released.rollout)
        elif kind == "status-write":
            check_status_write(record)
        elif kind == "sent":
            pending[function] = record
            if function in current:
                last_sent_of[record.get("pid")] = write_kind(current[function], record)
        elif kind == "write":
            pending.pop(function, None)
            land_late_if_it_explains(function, record)
            apply_write(function, record)
        elif kind == "observed":
            sent = pending.pop(function, None)
            state = alias_state(record)
            if state == alias_now.get(function):
                if sent is not None and alias_state(sent) != state:
                    late[function] = sent
            else:
                if sent is not None and alias_state(sent) == state:
                    land(function, sent)
                elif function in late and alias_state(late[function]) == state:
                    land(function, late.pop(function))
                else:
                    found = current.get(function)
                    report.violations.append(
                        Violation(
                            "unlogged-write",
                            found.rollout if found else function,
                            found.number if found else -1,
                            f"alias found at {state}, logged at {alias_now.get(function)}",
                        )
                    )
                    alias_now[function] = state
        elif kind in ("final", "stuck"):
            key = (str(record.get("rollout")), int(record.get("attempt", -1)))
            if key in attempts:
                attempts[key].final = record
        elif kind == "kill":
            report.kills += 1
            if record.get("point") == KILL_POINT:
                report.kills_at_write += 1
                report.kills_at_write_after[last_write_of.get(record.get("pid"), "other")] += 1
            elif record.get("point") == KILL_BEFORE_POINT:
                report.kills_before_write[last_sent_of.get(record.get("pid"), "other")] += 1
        elif kind == "launch":
            report.launches += 1
    for attempt in attempts.values():
        found_final = attempt.judge()
        report.violations.extend(found_final)
        if not found_final:
            if attempt.outcome == PROMOTE:
                report.promoted += 1
            else:
                report.rolled_back += 1
        report.max_rewrites = max(report.max_rewrites, max(attempt.rewrites.values(), default=0))
    report.rollouts = len(rollouts)
    report.attempts = len(attempts)
    return report


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def excerpt(records: Sequence[Mapping[str, Any]], rollout: str, attempt: int) -> list[str]:
    """The log lines of one attempt: its release to its final record, with kills and launches."""
    lines: list[str] = []
    function: str | None = None
    for record in records:
        kind = record.get("kind")
        if kind == "release" and record.get("rollout") == rollout:
            if record.get("attempt") == attempt:
                function = str(record.get("function"))
            elif function is not None:
                break
        if function is None:
            continue
        if (
            kind in ("kill", "launch")
            or record.get("function") == function
            or (record.get("rollout") == rollout and record.get("attempt") in (attempt, None))
        ):
            lines.append(json.dumps(record, sort_keys=True))
    return lines


# ---------------------------------------------------------------------------------------------
# The plan of each kind of release.


@dataclass(frozen=True)
class Release:
    kind: str
    spec: dict[str, Any]  # a merge patch of spec: null removes a field
    plan: tuple[int, ...]
    outcome: str


def release_for(kind: str, version: str, rng: random.Random) -> Release:
    """The spec of one release of ``kind`` shipping ``version``, its setWeight plan and outcome."""
    strategy: dict[str, Any]
    analysis: dict[str, Any] | None = None
    if kind == "canary":
        plan: tuple[int, ...] = (10, 40, 70)
        steps: list[dict[str, Any]] = []
        for weight in plan:
            steps += [{"setWeight": weight}, {"pause": {"duration": f"{rng.randint(1, 3)}s"}}]
        strategy = {"canary": {"steps": steps}, "linear": None}
    elif kind == "linear":
        step_weight = rng.choice((25, 34))
        plan = tuple(range(step_weight, 100, step_weight))
        strategy = {"linear": {"stepWeight": step_weight, "interval": "1s"}, "canary": None}
    else:
        plan = (20, 60)
        steps = [
            {"setWeight": 20},
            {"pause": {"duration": "3s"}},
            {"setWeight": 60},
            {"pause": {"duration": "2s"}},
        ]
        strategy = {"canary": {"steps": steps}, "linear": None}
        analysis = ANALYSIS
    outcome = ROLLBACK if kind == "analysis-fail" else PROMOTE
    spec = {"version": version, "strategy": strategy, "analysis": analysis}
    return Release(kind, spec, plan, outcome)


def without_nulls(value: Any) -> Any:
    """A merge patch's content as a plain object (for a create, where null means nothing)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    return value


# ---------------------------------------------------------------------------------------------
# The AWS side: functions, releases, metrics.


class Aws:
    """The suite's own AWS clients (made once: creating boto3 clients costs CPU on a 2-core box).

    Every call runs in one worker thread, so the shared session is never used concurrently.
    """

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.session = sandbox_session(REGION)
        self.lambda_client: LambdaClient = self.session.client(
            "lambda", region_name=REGION, endpoint_url=endpoint_url
        )
        self.cloudwatch: CloudWatchClient = self.session.client(
            "cloudwatch", region_name=REGION, endpoint_url=endpoint_url
        )

    def seed(self, function: str) -> dict[str, str]:
        return seed_demo_function(self.endpoint_url, REGION, function, ALIAS, session=self.session)

    def publish(self, function: str, release: int) -> str:
        """Ship release ``release``: new code, then PublishVersion (unchanged code publishes nothing)."""
        self.lambda_client.update_function_code(FunctionName=function, ZipFile=release_zip(release))
        published = self.lambda_client.publish_version(
            FunctionName=function, Description=f"release {release}"
        )
        return published["Version"]

    def alias(self, function: str) -> tuple[str, dict[str, float]]:
        found = self.lambda_client.get_alias(FunctionName=function, Name=ALIAS)
        weights = (found.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return found["FunctionVersion"], dict(weights)


class MetricsPump:
    """Every ``tick``, each alias's invocations split by its weights, as Lambda's per-version metrics.

    The same figures as the demo's ``Traffic`` (``Invocations`` and ``Errors`` under ``AWS/Lambda``
    with ``{FunctionName, Resource=<function>:<alias>, ExecutedVersion}``), for every function at
    once in one PutMetricData per tick; a version in ``bad`` fails ``BAD_ERROR_RATIO`` of its calls.
    """

    def __init__(
        self,
        aws: Aws,
        functions: Sequence[str],
        *,
        per_second: float = INVOCATIONS_PER_SECOND,
        tick: float = 1.0,
    ) -> None:
        self.aws = aws
        self.functions = list(functions)
        self.per_second = per_second
        self.tick = tick
        self.bad: set[tuple[str, str]] = set()

    def publish_once(self) -> None:
        data: list[MetricDatumTypeDef] = []
        now = datetime.now(UTC)
        for function in self.functions:
            alias = dict(self.aws.lambda_client.get_alias(FunctionName=function, Name=ALIAS))
            for version, share in alias_shares(alias).items():
                invocations = round(self.per_second * self.tick * share)
                if invocations <= 0:
                    continue
                ratio = BAD_ERROR_RATIO if (function, version) in self.bad else 0.0
                dimensions = [
                    {"Name": "FunctionName", "Value": function},
                    {"Name": "Resource", "Value": f"{function}:{ALIAS}"},
                    {"Name": "ExecutedVersion", "Value": version},
                ]
                for metric, value in (("Invocations", invocations), ("Errors", round(invocations * ratio))):
                    datum: MetricDatumTypeDef = {
                        "MetricName": metric,
                        "Dimensions": dimensions,  # type: ignore[typeddict-item]
                        "Timestamp": now,
                        "Value": float(value),
                        "Unit": "Count",
                    }
                    data.append(datum)
        if data:
            self.aws.cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)

    async def run(self, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await loop.run_in_executor(executor, self.publish_once)
            next_at += self.tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))


# ---------------------------------------------------------------------------------------------
# Processes: the sandbox and the operator.


@dataclass(frozen=True)
class SuiteConfig:
    workdir: Path
    rollouts: int = 8
    kills: int = 60
    seed: int = 1
    # Probability that the operator kills itself right after a successful UpdateAlias that set
    # a step's weight, or that promoted or rolled back (fewer, and the writes that end a rollout:
    # more often), and just before sending a promotion or a rollback.
    write_kill_p: float = 0.2
    full_write_kill_p: float = 0.5
    before_full_write_kill_p: float = 0.15
    # A random kill comes this many seconds (uniform) after the operator's first AWS call, the
    # end of its startup; so it lands in the operator's work whatever the machine's load makes
    # the startup last.
    kill_after: tuple[float, float] = (0.0, 2.0)
    # This share of the launches is killed while it starts instead (imports, login, peering,
    # listing), this many seconds after the fork.
    startup_kill_share: float = 0.15
    startup_kill_after: tuple[float, float] = (0.1, 1.0)
    # Once the last kill is done, every release must reach its final state within this many
    # seconds (while the kills go on, a release progresses only as fast as the kills allow).
    final_deadline: float = 60.0


class LogTail:
    """The records appended to the log since the previous read (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1
        self._offset += complete
        return [json.loads(line) for line in data[:complete].splitlines() if line.strip()]


class Supervisor:
    """Runs the operator, kills it (timer or its own fault point) and restarts it, ``kills`` times.

    Then keeps one last operator running, without the fault point, until ``stopping`` is set.
    Operators are forked by ``crash_launcher.py --fork-server``, so a restart costs no imports.
    """

    def __init__(self, config: SuiteConfig, *, kubeconfig: Path, endpoint_url: str, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.operator_log = config.workdir / "operator.log"
        self.kills = 0
        self.self_kills = 0
        self.launches = 0
        self.unexpected_exits: list[int] = []
        # When the last kill was done (monotonic), once it is.
        self.spent_at: float | None = None
        self.budget_spent = asyncio.Event()
        self.stopping = asyncio.Event()
        # Told the pid of each operator that died, once it is gone (see ``Driver.observe_aliases``).
        self.observe: Callable[[int], Awaitable[None]] | None = None
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tail = LogTail(log_path)
        self._working: set[int] = set()
        self._killed_themselves: set[int] = set()
        # Only what the operator needs: the emulators, dummy credentials, short retry delays
        # (a rollout that met an error after a restart should not idle through the run).
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "LAMBDA_ROLLOUTS_", "CRASH_SUITE_", "KUBECONFIG"))
        }
        self.env.update(
            {
                "KUBECONFIG": str(kubeconfig),
                "AWS_ENDPOINT_URL": endpoint_url,
                "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": SANDBOX_CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": SANDBOX_CREDENTIALS["aws_secret_access_key"],
                "AWS_SESSION_TOKEN": SANDBOX_CREDENTIALS["aws_session_token"],
                "LAMBDA_ROLLOUTS_RETRY_INITIAL_DELAY_SECONDS": "1",
                "LAMBDA_ROLLOUTS_RETRY_MAX_DELAY_SECONDS": "5",
                "PYTHONUNBUFFERED": "1",
                LOG_ENV: str(log_path),
            }
        )

    async def _start_server(self) -> asyncio.subprocess.Process:
        with self.operator_log.open("ab") as output:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                str(LAUNCHER),
                "--fork-server",
                env=self.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=output,
            )

    async def _read_messages(self, server: asyncio.subprocess.Process) -> None:
        assert server.stdout is not None
        async for line in server.stdout:
            await self._messages.put(json.loads(line))
        await self._messages.put({"server-exited": server.returncode})

    async def _message(self, seconds: float | None) -> dict[str, Any] | None:
        """The fork server's next message; None after ``seconds`` or on a stop."""
        message = asyncio.ensure_future(self._messages.get())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([message, stopping], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not message.done():
                message.cancel()
        if not message.done() or message.cancelled():
            return None
        found = message.result()
        if "server-exited" in found:
            raise RuntimeError(f"the operator fork server ended: {found}; see {self.operator_log}")
        return found

    def _scan(self) -> None:
        for record in self._tail.read():
            if record.get("kind") == "working":
                self._working.add(int(record["pid"]))
            elif record.get("kind") == "kill" and record.get("point") in (KILL_POINT, KILL_BEFORE_POINT):
                self._killed_themselves.add(int(record["pid"]))

    async def _spawn(self, server: asyncio.subprocess.Process, *, faults: bool) -> int:
        config = self.config
        env = {
            KILL_P_ENV: str(config.write_kill_p if faults else 0.0),
            KILL_FULL_P_ENV: str(config.full_write_kill_p if faults else 0.0),
            KILL_BEFORE_FULL_P_ENV: str(config.before_full_write_kill_p if faults else 0.0),
            SEED_ENV: f"{self.config.seed}:{self.launches}",
            # A SIGKILLed replica's peering entry outlives it (until its keep-alive expires, at
            # least 15 s): a restart with a lower priority would wait for it. Each launch outranks
            # every earlier one, so it acts at once, as a restarted single replica should.
            "LAMBDA_ROLLOUTS_PEERING_PRIORITY": str(self.launches + 1),
        }
        request = {"args": ["run"], "env": env, "output": str(self.operator_log)}
        assert server.stdin is not None
        server.stdin.write((json.dumps(request) + "\n").encode())
        await server.stdin.drain()
        started = await self._message(30)
        if started is None or "started" not in started:
            raise RuntimeError(f"the fork server did not start an operator: {started}")
        pid = int(started["started"])
        self.launches += 1
        append_record(str(self.log_path), {"kind": "launch", "pid": pid, "time": time.time()})
        return pid

    async def _kill_at_random(self, pid: int, rng: random.Random) -> tuple[dict[str, Any] | None, bool]:
        """Kill ``pid`` at a random moment unless it dies first: (its exit message, killed here)."""
        loop = asyncio.get_running_loop()
        forked_at = loop.time()
        # Every draw is made up front, so the sequence depends on the seed only.
        at_startup = rng.random() < self.config.startup_kill_share
        startup_delay = rng.uniform(*self.config.startup_kill_after)
        delay = rng.uniform(*self.config.kill_after)
        kill_at: float | None = forked_at + startup_delay if at_startup else None
        while True:
            self._scan()
            if kill_at is None and pid in self._working:
                kill_at = loop.time() + delay
            if kill_at is None and loop.time() - forked_at > 30:
                kill_at = loop.time()  # it never started to work: a kill is due anyway
            wait = 0.05 if kill_at is None else min(0.05, max(0.0, kill_at - loop.time()))
            exited = await self._message(wait)
            if exited is not None or self.stopping.is_set():
                return exited, False
            if kill_at is not None and loop.time() >= kill_at:
                os.kill(pid, signal.SIGKILL)
                return await self._message(30), True

    async def run(self) -> None:
        rng = random.Random(f"{self.config.seed}:kills")
        server = await self._start_server()
        reader = asyncio.create_task(self._read_messages(server))
        pid: int | None = None
        try:
            while not self.stopping.is_set():
                killing = self.kills < self.config.kills
                pid = await self._spawn(server, faults=killing)
                if killing:
                    exited, killed_here = await self._kill_at_random(pid, rng)
                else:
                    exited, killed_here = await self._message(None), False
                if exited is None:
                    break  # stopping
                pid = None
                died = int(exited["exited"])
                if self.observe is not None:
                    # A request the dead process had sent may still be landing: give it a moment.
                    await asyncio.sleep(0.2)
                    await self.observe(died)
                self._scan()
                if died in self._killed_themselves:
                    self.self_kills += 1
                elif not killed_here:
                    # Anything but our fault point ending the operator is a finding of its own.
                    self.unexpected_exits.append(int(exited.get("code", 0)))
                    continue
                else:
                    append_record(
                        str(self.log_path),
                        {"kind": "kill", "point": "random", "pid": died, "time": time.time()},
                    )
                self.kills += 1
                if self.kills >= self.config.kills and self.spent_at is None:
                    self.spent_at = time.monotonic()
                    self.budget_spent.set()
        finally:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if server.stdin is not None:
                server.stdin.close()
            try:
                await asyncio.wait_for(server.wait(), timeout=10)
            except TimeoutError:
                server.kill()
                await server.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


# ---------------------------------------------------------------------------------------------
# The rollouts.


@dataclass
class _Rollout:
    index: int
    name: str
    stable: str
    next_release: int = 3
    attempt: int = -1
    canary: str = ""
    release: Release | None = None
    generation: int = 0
    released_at: float = 0.0
    active: bool = False
    # Stuck: no more releases for it.
    stuck: bool = False
    last_seen: tuple[Any, ...] | None = None


class Driver:
    """Releases versions, watches the rollouts reach their final states, records both in the log."""

    def __init__(
        self,
        config: SuiteConfig,
        *,
        session: aiohttp.ClientSession,
        aws: Aws,
        executor: ThreadPoolExecutor,
        pump: MetricsPump,
        supervisor: Supervisor,
        log_path: Path,
        seeded: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.config = config
        self.session = session
        self.aws = aws
        self.executor = executor
        self.pump = pump
        self.supervisor = supervisor
        self.log_path = log_path
        self.rng = random.Random(f"{config.seed}:releases")
        self.rollouts = [
            _Rollout(index=index, name=name, stable=seeded[name]["stable_version"])
            for index, name in enumerate(seeded)
        ]
        self.seeded = seeded
        self._tail = LogTail(log_path)
        # Functions with an UpdateAlias sent and not yet answered, by the operator that sent it.
        self._in_flight: dict[str, int] = {}

    def log(self, record: dict[str, Any]) -> None:
        append_record(str(self.log_path), {**record, "time": time.time()})

    async def _aws(self, call: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)

    def _scan(self) -> None:
        for record in self._tail.read():
            kind, function = record.get("kind"), str(record.get("function"))
            if kind == "sent":
                self._in_flight[function] = int(record["pid"])
            elif kind in ("write", "observed"):
                # Answered, or its process is dead and the alias was read after it.
                self._in_flight.pop(function, None)

    async def observe_aliases(self, pid: int) -> None:
        """Log every alias as operator ``pid`` left it when it died: settles its writes in doubt."""
        for rollout in self.rollouts:
            version, weights = await self._aws(self.aws.alias, rollout.name)
            self.log(
                {
                    "kind": "observed",
                    "function": rollout.name,
                    "version": version,
                    "weights": weights,
                    "pid": pid,
                }
            )

    async def release(self, rollout: _Rollout) -> None:
        rollout.attempt += 1
        kind = KINDS[(rollout.index + rollout.attempt) % len(KINDS)]
        if rollout.attempt == 0:
            canary = self.seeded[rollout.name]["canary_version"]
        else:
            canary = await self._aws(self.aws.publish, rollout.name, rollout.next_release)
            rollout.next_release += 1
        release = release_for(kind, canary, self.rng)
        if release.outcome == ROLLBACK:
            self.pump.bad.add((rollout.name, canary))
        rollout.canary, rollout.release, rollout.active = canary, release, True
        rollout.released_at = time.monotonic()
        # Logged before the change reaches the API: every write toward this version follows it.
        self.log(
            {
                "kind": "release",
                "rollout": rollout.name,
                "function": rollout.name,
                "alias": ALIAS,
                "attempt": rollout.attempt,
                "strategy": kind,
                "stable": rollout.stable,
                "canary": canary,
                "plan": list(release.plan),
                "outcome": release.outcome,
            }
        )
        if rollout.attempt == 0:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "LambdaRollout",
                "metadata": {"name": rollout.name, "namespace": NAMESPACE},
                "spec": {"functionName": rollout.name, "alias": ALIAS, **without_nulls(release.spec)},
            }
            async with self.session.post(ROLLOUTS_PATH, json=body) as response:
                answer = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"creating {rollout.name} failed: {response.status} {answer}")
        else:
            url = f"{ROLLOUTS_PATH}/{rollout.name}"
            async with self.session.patch(url, json={"spec": release.spec}, headers=MERGE_PATCH) as response:
                answer = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"patching {rollout.name} failed: {response.status} {answer}")
        rollout.generation = int(answer["metadata"]["generation"])

    def _note_status(self, rollout: _Rollout, status: Mapping[str, Any]) -> None:
        keys = (
            "observedGeneration",
            "phase",
            "stableVersion",
            "canaryVersion",
            "canaryWeight",
            "currentStepIndex",
        )
        seen = tuple(status.get(key) for key in keys)
        if seen == rollout.last_seen:
            return
        rollout.last_seen = seen
        self.log(
            {
                "kind": "status",
                "rollout": rollout.name,
                "attempt": rollout.attempt,
                "observedGeneration": status.get("observedGeneration"),
                "phase": status.get("phase"),
                "stable": status.get("stableVersion"),
                "canary": status.get("canaryVersion"),
                "weight": status.get("canaryWeight"),
                "step": status.get("currentStepIndex"),
                "message": status.get("message"),
            }
        )

    def _terminal(self, rollout: _Rollout, status: Mapping[str, Any]) -> bool:
        if (status.get("observedGeneration") or 0) < rollout.generation:
            return False
        if status.get("canaryVersion") != rollout.canary:
            return False
        phase = status.get("phase")
        return phase == "Healthy" or (phase == "Degraded" and bool(status.get("abortedAt")))

    def _overdue(self) -> bool:
        spent_at = self.supervisor.spent_at
        return spent_at is not None and time.monotonic() > spent_at + self.config.final_deadline

    async def _settle(self, rollout: _Rollout, status: Mapping[str, Any]) -> None:
        """Record the final state (or that there is none in time) of an active attempt."""
        overdue = self._overdue()
        terminal = self._terminal(rollout, status)
        if not terminal and not overdue:
            return
        version, weights = await self._aws(self.aws.alias, rollout.name)
        # Read after the alias: a write sent before that read may have landed unlogged yet.
        self._scan()
        if (weights or rollout.name in self._in_flight) and not overdue:
            return  # the status is final but the alias not yet: look again
        conditions: list[dict[str, Any]] = status.get("conditions") or []
        stalled: dict[str, Any] = next((c for c in conditions if c.get("type") == "Stalled"), {})
        self.log(
            {
                "kind": "final" if terminal else "stuck",
                "rollout": rollout.name,
                "attempt": rollout.attempt,
                "phase": status.get("phase"),
                "reason": stalled.get("reason") if stalled.get("status") == "True" else None,
                "message": status.get("message"),
                "version": version,
                "weights": weights,
                "seconds": round(time.monotonic() - rollout.released_at, 3),
            }
        )
        rollout.active = False
        if terminal and not weights:
            rollout.stable = version
        else:
            rollout.stuck = True

    async def run(self) -> None:
        for rollout in self.rollouts:
            await self.release(rollout)
        while True:
            async with self.session.get(ROLLOUTS_PATH) as response:
                listed = await response.json()
            statuses = {
                item["metadata"]["name"]: item.get("status") or {} for item in listed.get("items", [])
            }
            for rollout in self.rollouts:
                if not rollout.active:
                    continue
                status = statuses.get(rollout.name, {})
                self._note_status(rollout, status)
                await self._settle(rollout, status)
                if not rollout.active and not rollout.stuck and not self.supervisor.budget_spent.is_set():
                    await self.release(rollout)
            if self.supervisor.budget_spent.is_set() and not any(r.active for r in self.rollouts):
                return
            await asyncio.sleep(POLL_SECONDS)


# ---------------------------------------------------------------------------------------------
# The suite.


@dataclass
class SuiteResult:
    report: CheckReport
    seconds: float
    log_path: Path
    unexpected_exits: list[int]
    records: list[dict[str, Any]]


async def run_suite(config: SuiteConfig) -> SuiteResult:
    started = time.monotonic()
    config.workdir.mkdir(parents=True, exist_ok=True)
    log_path = config.workdir / "crash-log.jsonl"
    log_path.unlink(missing_ok=True)
    started_sandbox = await start_sandbox(config.workdir, config.workdir / "sandbox.log")
    sandbox, endpoint_url = started_sandbox.process, started_sandbox.aws_endpoint_url
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crash-aws")
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    try:
        aws = await loop.run_in_executor(executor, Aws, endpoint_url)
        names = [f"crash-{index:02d}" for index in range(config.rollouts)]
        seeded: dict[str, dict[str, str]] = {}
        for name in names:
            seeded[name] = await loop.run_in_executor(executor, aws.seed, name)
            version, weights = await loop.run_in_executor(executor, aws.alias, name)
            append_record(
                str(log_path),
                {
                    "kind": "initial",
                    "function": name,
                    "alias": ALIAS,
                    "version": version,
                    "weights": weights,
                    "time": time.time(),
                },
            )
        pump = MetricsPump(aws, names)
        supervisor = Supervisor(
            config, kubeconfig=started_sandbox.kubeconfig, endpoint_url=endpoint_url, log_path=log_path
        )
        async with aiohttp.ClientSession(started_sandbox.kube_url) as session:
            driver = Driver(
                config,
                session=session,
                aws=aws,
                executor=executor,
                pump=pump,
                supervisor=supervisor,
                log_path=log_path,
                seeded=seeded,
            )
            supervisor.observe = driver.observe_aliases
            tasks = [asyncio.create_task(pump.run(executor)), asyncio.create_task(supervisor.run())]
            await driver.run()
            supervisor.stopping.set()
            await tasks[1]
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        executor.shutdown(wait=True, cancel_futures=True)
        sandbox.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(sandbox.wait(), timeout=10)
        except TimeoutError:
            sandbox.kill()
            await sandbox.wait()
    records = read_log(log_path)
    return SuiteResult(
        report=check_log(records),
        seconds=time.monotonic() - started,
        log_path=log_path,
        unexpected_exits=supervisor.unexpected_exits,
        records=records,
    )


def figures(result: SuiteResult, config: SuiteConfig) -> dict[str, Any]:
    report = result.report
    return {
        "benchmark": "crash",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "settings": {
            "rollouts": config.rollouts,
            "kills": config.kills,
            "seed": config.seed,
            "writeKillP": config.write_kill_p,
            "fullWriteKillP": config.full_write_kill_p,
            "beforeFullWriteKillP": config.before_full_write_kill_p,
            "killAfterSeconds": list(config.kill_after),
            "startupKillShare": config.startup_kill_share,
            "finalDeadlineSeconds": config.final_deadline,
        },
        "kills": report.kills,
        "killsAtWriteToStatus": report.kills_at_write,
        "killsAtWriteToStatusAfter": {
            what: report.kills_at_write_after[what] for what in ("step", "promotion", "rollback")
        },
        "killsBeforeFullWrite": {what: report.kills_before_write[what] for what in ("promotion", "rollback")},
        "killsAtRandomMoments": report.kills
        - report.kills_at_write
        - sum(report.kills_before_write.values()),
        "restarts": max(0, report.launches - 1),
        "unexpectedExits": result.unexpected_exits,
        "rollouts": report.rollouts,
        "attempts": report.attempts,
        "promoted": report.promoted,
        "rolledBack": report.rolled_back,
        "aliasWrites": report.writes,
        "unansweredWrites": report.unanswered_writes,
        "maxRewritesOfOneWeight": report.max_rewrites,
        "violations": report.by_kind(),
        "violationsTotal": len(report.violations),
        "seconds": round(result.seconds, 1),
        "log": str(result.log_path),
    }


def print_report(result: SuiteResult, config: SuiteConfig, *, show: int = 5) -> None:
    report, data = result.report, figures(result, config)
    rows = [
        ("kills total", data["kills"]),
        ("kills at the write->status point", data["killsAtWriteToStatus"]),
        *((f"  after a {what} write", count) for what, count in data["killsAtWriteToStatusAfter"].items()),
        *(
            (f"kills just before a {what} write", count)
            for what, count in data["killsBeforeFullWrite"].items()
        ),
        ("kills at random moments", data["killsAtRandomMoments"]),
        ("operator restarts", data["restarts"]),
        ("unexpected operator exits", len(result.unexpected_exits)),
        ("rollouts", data["rollouts"]),
        (
            "attempts (promoted / rolled back)",
            f"{data['attempts']} ({data['promoted']} / {data['rolledBack']})",
        ),
        ("alias writes", data["aliasWrites"]),
        ("  landed while the operator died", data["unansweredWrites"]),
        ("max re-writes of one weight", data["maxRewritesOfOneWeight"]),
        ("violations", data["violationsTotal"]),
        *((f"  {kind}", count) for kind, count in data["violations"].items()),
        ("time", f"{data['seconds']:.1f} s"),
    ]
    print(f"\ncrash suite, seed {config.seed}, {os.cpu_count()} CPUs, log {result.log_path}")
    for label, value in rows:
        print(f"  {label:<36}{value!s:>12}")
    shown: set[tuple[str, int]] = set()
    for violation in report.violations:
        key = (violation.rollout, violation.attempt)
        if key in shown or len(shown) >= show:
            continue
        shown.add(key)
        where = f"{violation.rollout} attempt {violation.attempt}"
        print(f"\nVIOLATION {violation.kind}: {where}: {violation.detail}")
        for line in excerpt(result.records, violation.rollout, violation.attempt):
            print(f"    {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=8, help="functions and LambdaRollouts (default 8)")
    parser.add_argument(
        "--kills", type=int, default=60, help="SIGKILLs of the operator in total (default 60)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--write-kill-p",
        type=float,
        default=0.2,
        help="probability that the operator dies right after a step's alias write (default 0.2)",
    )
    parser.add_argument(
        "--full-write-kill-p",
        type=float,
        default=0.5,
        help="the same after a promotion or rollback write (default 0.5)",
    )
    parser.add_argument(
        "--before-full-write-kill-p",
        type=float,
        default=0.15,
        help="probability that it dies just before sending a promotion or rollback (default 0.15)",
    )
    parser.add_argument(
        "--final-deadline",
        type=float,
        default=60.0,
        help="seconds after the last kill for every release to reach its final state (default 60)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the log goes (default: a new temp dir)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON to this path")
    arguments = parser.parse_args()
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="lambda-rollouts-crash-"))
    config = SuiteConfig(
        workdir=workdir,
        rollouts=arguments.rollouts,
        kills=arguments.kills,
        seed=arguments.seed,
        write_kill_p=arguments.write_kill_p,
        full_write_kill_p=arguments.full_write_kill_p,
        before_full_write_kill_p=arguments.before_full_write_kill_p,
        final_deadline=arguments.final_deadline,
    )
    result = asyncio.run(run_suite(config))
    print_report(result, config)
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(figures(result, config), indent=2) + "\n")
        print(f"wrote {arguments.json}")
    return 1 if result.report.violations or result.unexpected_exits else 0


if __name__ == "__main__":
    sys.exit(main())
