"""Health analysis of a new version: which metrics to ask for, and what the answers mean.

Contract:
- Pure: no clock, no I/O. ``build_request`` turns an analysis into one ``MeasureRequest`` (every
  metric query for one GetMetricData call, plus the alarms to describe); the caller fetches the
  ``Readings`` through a ``MetricProvider``; ``assess`` turns them into a ``Measurement``.
- Built-in metrics are read from ``AWS/Lambda`` with the dimensions
  ``{FunctionName, Resource=<function>:<alias>, ExecutedVersion=<version>}`` for the new version
  (and for the stable version when a check compares with it). Rates and averages are computed
  here from raw Sum and SampleCount over one-minute periods, never with metric math.
- Empty data never passes: fewer invocations of the new version than ``minInvocations`` make the
  metric checks inconclusive; an alarm in INSUFFICIENT_DATA is inconclusive; ALARM is a failure;
  a named alarm that does not exist is a failure, never a pass.
- A provider error (throttling, 5xx) makes the measurement an ``Error``, never a failure.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from lambda_rollouts.model import (
    AnalysisSettings,
    AnalysisStatus,
    BuiltinMetric,
    CheckResult,
    InconclusivePolicy,
    MetricCheck,
    QueryCheck,
    Verdict,
    format_time,
)


@dataclass(frozen=True)
class MetricQuery:
    """One entry of GetMetricData's ``MetricDataQueries`` (a MetricStat, returning data)."""

    id: str  # unique within a request; starts with a lowercase letter (CloudWatch's rule)
    namespace: str
    metric_name: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str
    period: int  # seconds
    unit: str | None = None


@dataclass(frozen=True)
class MeasureRequest:
    """Everything one measurement reads: one GetMetricData call, and the alarms to describe."""

    queries: tuple[MetricQuery, ...]
    alarm_names: tuple[str, ...]
    alarm_prefix: str | None
    start: datetime
    end: datetime


@dataclass(frozen=True)
class AlarmReading:
    name: str
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    reason: str = ""


@dataclass(frozen=True)
class Readings:
    """What the provider answered for a ``MeasureRequest``.

    ``values`` maps each query id to its datapoint values over the window (one per period, any
    order; empty when CloudWatch has no data). ``alarms`` holds every alarm found, by name or by
    prefix. ``error`` is set, and nothing else counts, when the provider failed.
    """

    values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    alarms: tuple[AlarmReading, ...] = ()
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Building the request.

LAMBDA_NAMESPACE: Final = "AWS/Lambda"
# Lambda publishes per-version metrics at one-minute granularity.
MINUTE: Final = 60


def plain_function_name(function_name: str) -> str:
    """The name Lambda uses in the FunctionName dimension, from a name, partial ARN or full ARN."""
    # Only an ARN has ":function:" in it; a function may itself be named "function".
    if ":function:" in function_name:
        return function_name.split(":function:", 1)[1].split(":", 1)[0]
    return function_name


@dataclass(frozen=True)
class Subject:
    """What a measurement is about: the function, its alias, and the two versions."""

    function_name: str
    alias: str
    canary: str
    stable: str

    def dimensions(self, version: str) -> tuple[tuple[str, str], ...]:
        name = plain_function_name(self.function_name)
        return (("FunctionName", name), ("Resource", f"{name}:{self.alias}"), ("ExecutedVersion", version))

    def fill(self, text: str) -> str:
        return (
            text.replace("{{function}}", plain_function_name(self.function_name))
            .replace("{{alias}}", self.alias)
            .replace("{{version}}", self.canary)
            .replace("{{stableVersion}}", self.stable)
        )


def window_period(start: datetime, end: datetime) -> int:
    """One period covering the whole window, in whole minutes (CloudWatch's rule for periods)."""
    seconds = max(1.0, (end - start).total_seconds())
    return max(MINUTE, math.ceil(seconds / MINUTE) * MINUTE)


_PERCENTILES: Final = {BuiltinMetric.P90_DURATION: "p90", BuiltinMetric.P99_DURATION: "p99"}


def _lambda_queries(
    subject: Subject, role: str, version: str, metrics: set[BuiltinMetric], period: int
) -> list[MetricQuery]:
    dimensions = subject.dimensions(version)

    def query(suffix: str, metric_name: str, stat: str, query_period: int = MINUTE) -> MetricQuery:
        return MetricQuery(
            id=f"{role}_{suffix}",
            namespace=LAMBDA_NAMESPACE,
            metric_name=metric_name,
            dimensions=dimensions,
            stat=stat,
            period=query_period,
        )

    queries = [query("invocations", "Invocations", "Sum")]
    if BuiltinMetric.ERROR_RATE in metrics:
        queries.append(query("errors", "Errors", "Sum"))
    if BuiltinMetric.THROTTLES in metrics:
        queries.append(query("throttles", "Throttles", "Sum"))
    if BuiltinMetric.AVERAGE_DURATION in metrics:
        queries.append(query("duration_sum", "Duration", "Sum"))
        queries.append(query("duration_count", "Duration", "SampleCount"))
    for metric, stat in _PERCENTILES.items():
        if metric in metrics:
            queries.append(query(f"duration_{stat}", "Duration", stat, period))
    return queries


def build_request(
    analysis: AnalysisSettings, subject: Subject, *, start: datetime, end: datetime
) -> MeasureRequest:
    """Every query of one measurement, for one GetMetricData call over [start, end)."""
    period = window_period(start, end)
    canary_metrics = {check.name for check in analysis.metrics}
    stable_metrics = {check.name for check in analysis.metrics if check.max_ratio_to_stable is not None}
    queries = _lambda_queries(subject, "canary", subject.canary, canary_metrics, period)
    if stable_metrics:
        queries += _lambda_queries(subject, "stable", subject.stable, stable_metrics, period)
    for check in analysis.queries:
        metric = check.metric_stat.metric
        queries.append(
            MetricQuery(
                id=f"query_{check.name}",
                namespace=metric.namespace,
                metric_name=metric.metric_name,
                dimensions=tuple(
                    (dimension.name, subject.fill(dimension.value)) for dimension in metric.dimensions
                ),
                stat=check.metric_stat.stat,
                period=period,
                unit=check.metric_stat.unit,
            )
        )
    return MeasureRequest(
        queries=tuple(queries),
        alarm_names=analysis.alarms,
        alarm_prefix=analysis.alarm_prefix,
        start=start,
        end=end,
    )


# ---------------------------------------------------------------------------------------------
# Judging the readings.


@dataclass(frozen=True)
class Measurement:
    verdict: Verdict
    message: str
    results: tuple[CheckResult, ...] = ()


_UNITS: Final = {
    BuiltinMetric.ERROR_RATE: "%",
    BuiltinMetric.THROTTLES: "",
    BuiltinMetric.AVERAGE_DURATION: "ms",
    BuiltinMetric.P90_DURATION: "ms",
    BuiltinMetric.P99_DURATION: "ms",
}


def _number(value: float) -> str:
    """A measured value as people read it: 12.5, 0.333333, 12345.6, 40 (never 1.2e+04)."""
    if value == int(value):
        return f"{int(value)}"
    text = f"{value:.6g}"
    return f"{value:.1f}" if "e" in text else text


def _builtin_value(metric: BuiltinMetric, role: str, values: Mapping[str, tuple[float, ...]]) -> float | None:
    """The metric's value over the window for one version; None when there is no data for it."""

    def total(suffix: str) -> float:
        return sum(values.get(f"{role}_{suffix}", ()))

    invocations = total("invocations")
    if metric == BuiltinMetric.ERROR_RATE:
        return 100.0 * total("errors") / invocations if invocations else None
    if metric == BuiltinMetric.THROTTLES:
        return total("throttles")
    if metric == BuiltinMetric.AVERAGE_DURATION:
        count = total("duration_count")
        return total("duration_sum") / count if count else None
    # A window straddling period boundaries can come back as several datapoints: take the worst.
    points = values.get(f"{role}_duration_{_PERCENTILES[metric]}", ())
    return max(points) if points else None


def _check_builtin(
    check: MetricCheck,
    values: Mapping[str, tuple[float, ...]],
    subject: Subject,
    stable_invocations: float,
    min_invocations: int,
) -> CheckResult:
    name, unit = check.name.value, _UNITS[check.name]
    value = _builtin_value(check.name, "canary", values)
    if value is None:
        return CheckResult(
            name=name, verdict=Verdict.INCONCLUSIVE, message=f"{name}: no data for version {subject.canary}"
        )
    shown = f"{_number(value)}{unit}"
    if value > check.max:
        return CheckResult(
            name=name,
            verdict=Verdict.FAILED,
            value=value,
            message=f"{name} of version {subject.canary} was {shown}, above max {_number(check.max)}{unit}",
        )
    if check.max_ratio_to_stable is not None:
        stable_value = _builtin_value(check.name, "stable", values)
        if stable_value is None or stable_invocations < min_invocations:
            return CheckResult(
                name=name,
                verdict=Verdict.INCONCLUSIVE,
                value=value,
                message=(
                    f"{name}: not enough data for stable version {subject.stable} to compare with "
                    f"({_number(stable_invocations)} invocations)"
                ),
            )
        bound = stable_value * check.max_ratio_to_stable
        if value > bound:
            return CheckResult(
                name=name,
                verdict=Verdict.FAILED,
                value=value,
                message=(
                    f"{name} of version {subject.canary} was {shown}, above "
                    f"{_number(check.max_ratio_to_stable)}x stable version {subject.stable}'s "
                    f"{_number(stable_value)}{unit} (bound {_number(bound)}{unit})"
                ),
            )
    return CheckResult(name=name, verdict=Verdict.SUCCESSFUL, value=value, message=f"{name} {shown}")


_ADDITIVE_STATISTICS: Final = frozenset({"Sum", "SampleCount"})


def _check_query(check: QueryCheck, values: Mapping[str, tuple[float, ...]]) -> CheckResult:
    points = values.get(f"query_{check.name}", ())
    if not points:
        return CheckResult(name=check.name, verdict=Verdict.INCONCLUSIVE, message=f"{check.name}: no data")
    # Sums add up across periods; for any other statistic every period must lie within bounds.
    candidates = [sum(points)] if check.metric_stat.stat in _ADDITIVE_STATISTICS else list(points)
    for value in candidates:
        if check.max is not None and value > check.max:
            return CheckResult(
                name=check.name,
                verdict=Verdict.FAILED,
                value=value,
                message=f"{check.name} was {_number(value)}, above max {_number(check.max)}",
            )
        if check.min is not None and value < check.min:
            return CheckResult(
                name=check.name,
                verdict=Verdict.FAILED,
                value=value,
                message=f"{check.name} was {_number(value)}, below min {_number(check.min)}",
            )
    value = candidates[-1] if len(candidates) == 1 else max(candidates)
    return CheckResult(
        name=check.name, verdict=Verdict.SUCCESSFUL, value=value, message=f"{check.name} {_number(value)}"
    )


def _check_alarms(analysis: AnalysisSettings, readings: Readings) -> list[CheckResult]:
    found = {alarm.name: alarm for alarm in readings.alarms}
    results = []
    for name in analysis.alarms:
        if name not in found:
            results.append(
                CheckResult(name=name, verdict=Verdict.FAILED, message=f"alarm {name} does not exist")
            )
    if analysis.alarm_prefix and not any(name.startswith(analysis.alarm_prefix) for name in found):
        results.append(
            CheckResult(
                name=analysis.alarm_prefix,
                verdict=Verdict.FAILED,
                message=f"no alarm name starts with {analysis.alarm_prefix}",
            )
        )
    for name in sorted(found):
        state, reason = found[name].state, found[name].reason
        if state == "ALARM":
            because = f": {reason}" if reason else ""
            results.append(
                CheckResult(name=name, verdict=Verdict.FAILED, message=f"alarm {name} is in ALARM{because}")
            )
        elif state == "OK":
            results.append(CheckResult(name=name, verdict=Verdict.SUCCESSFUL, message=f"alarm {name} is OK"))
        else:
            results.append(
                CheckResult(
                    name=name, verdict=Verdict.INCONCLUSIVE, message=f"alarm {name} has insufficient data"
                )
            )
    return results


def assess(analysis: AnalysisSettings, subject: Subject, readings: Readings) -> Measurement:
    """The verdict of one measurement: Failed if any check failed, else Inconclusive if any check
    could not tell, else Successful."""
    if readings.error is not None:
        return Measurement(Verdict.ERROR, f"could not read the analysis data: {readings.error}")
    values = readings.values
    results = _check_alarms(analysis, readings)
    invocations = sum(values.get("canary_invocations", ()))
    stable_invocations = sum(values.get("stable_invocations", ()))
    if invocations < analysis.min_invocations:
        results.append(
            CheckResult(
                name="invocations",
                verdict=Verdict.INCONCLUSIVE,
                value=invocations,
                message=(
                    f"{_number(invocations)} invocations of version {subject.canary}, fewer than "
                    f"minInvocations {analysis.min_invocations}"
                ),
            )
        )
    else:
        for check in analysis.metrics:
            results.append(
                _check_builtin(check, values, subject, stable_invocations, analysis.min_invocations)
            )
        for query in analysis.queries:
            results.append(_check_query(query, values))
    for verdict in (Verdict.FAILED, Verdict.INCONCLUSIVE):
        chosen = [result.message for result in results if result.verdict == verdict]
        if chosen:
            return Measurement(verdict, "; ".join(chosen), tuple(results))
    return Measurement(
        Verdict.SUCCESSFUL,
        f"{len(results)} check{'s' if len(results) != 1 else ''} passed over {_number(invocations)} "
        f"invocations of version {subject.canary}",
        tuple(results),
    )


# ---------------------------------------------------------------------------------------------
# Tallying measurements.


class Outcome(enum.Enum):
    """What the latest measurement means for the rollout."""

    MEASURING = "measuring"  # nothing decided: keep measuring at the interval
    PASSED = "passed"  # a blocking analysis reached its consecutive successes
    HOLD = "hold"  # inconclusive with onInconclusive: Pause; hold and keep measuring
    FAILED = "failed"  # more failed measurements than failureLimit: roll back


@dataclass(frozen=True)
class Tally:
    status: AnalysisStatus
    outcome: Outcome
    # Why, for the status message and Events: the failing checks, or why it is inconclusive.
    message: str


def start_run(step_index: int | None, analysis: AnalysisSettings, *, now: datetime) -> AnalysisStatus:
    return AnalysisStatus(
        step_index=step_index,
        started_at=format_time(now),
        next_measurement_at=format_time(now + timedelta(seconds=analysis.interval_seconds)),
    )


def record(
    run: AnalysisStatus,
    measurement: Measurement,
    analysis: AnalysisSettings,
    *,
    blocking: bool,
    now: datetime,
) -> Tally:
    """Add one measurement to a run and decide what it means (see ``Outcome``)."""
    counts = {
        "measurements": run.measurements + 1,
        "last_verdict": measurement.verdict,
        "last_measured_at": format_time(now),
        "last_message": measurement.message,
        "results": list(measurement.results),
        "next_measurement_at": format_time(now + timedelta(seconds=analysis.interval_seconds)),
    }
    verdict, message = measurement.verdict, measurement.message
    if verdict == Verdict.ERROR:
        errors = run.consecutive_errors + 1
        counts |= {"errors": run.errors + 1, "consecutive_errors": errors}
        if errors <= analysis.error_limit:
            status = run.model_copy(update=counts)
            return Tally(status, Outcome.HOLD if run.holding else Outcome.MEASURING, message)
        # A provider that keeps failing says nothing about the new version: inconclusive, not failed.
        verdict = Verdict.INCONCLUSIVE
        message = (
            f"{errors} measurements in a row could not read the data, more than errorLimit "
            f"{analysis.error_limit}: {message}"
        )
    else:
        counts["consecutive_errors"] = 0
    if verdict == Verdict.INCONCLUSIVE:
        counts["inconclusives"] = run.inconclusives + 1
        policy = analysis.on_inconclusive
        if policy == InconclusivePolicy.PAUSE:
            counts |= {"holding": True, "consecutive_successes": 0}
            return Tally(run.model_copy(update=counts), Outcome.HOLD, message)
        verdict = Verdict.FAILED if policy == InconclusivePolicy.FAIL else Verdict.SUCCESSFUL
    counts["holding"] = False
    if verdict == Verdict.FAILED:
        failures = run.failures + 1
        counts |= {"failures": failures, "consecutive_successes": 0}
        outcome = Outcome.FAILED if failures > analysis.failure_limit else Outcome.MEASURING
        return Tally(run.model_copy(update=counts), outcome, message)
    successes = run.consecutive_successes + 1
    counts |= {"successes": run.successes + 1, "consecutive_successes": successes}
    passed = blocking and successes >= analysis.consecutive_success_limit
    return Tally(run.model_copy(update=counts), Outcome.PASSED if passed else Outcome.MEASURING, message)
