"""Table tests of the pure analysis module: exact requests, verdicts, messages and run tallies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambda_rollouts.analysis import (
    AlarmReading,
    Measurement,
    MeasureRequest,
    MetricQuery,
    Outcome,
    Readings,
    Subject,
    build_request,
    plain_function_name,
    record,
    start_run,
    window_period,
)
from lambda_rollouts.analysis import assess as assess_readings
from lambda_rollouts.model import AnalysisSettings, AnalysisSpec, AnalysisStatus, CheckResult, Verdict

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FN = "checkout-api"
FULL_ARN = f"arn:aws:lambda:eu-west-1:123456789012:function:{FN}"
SUBJECT = Subject(function_name=FN, alias="live", canary="2", stable="1")

SUC, FAIL, INC, ERR = Verdict.SUCCESSFUL, Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.ERROR
MEASURING, PASSED, HOLD, FAILED = Outcome.MEASURING, Outcome.PASSED, Outcome.HOLD, Outcome.FAILED


# ---------------------------------------------------------------------------------------------
# Builders.


def settings(**wire: Any) -> AnalysisSettings:
    """Settings from the wire (camelCase) form of an analysis."""
    return AnalysisSettings.of(AnalysisSpec.model_validate(wire))


def metric(name: str, max: float, ratio: float | None = None) -> dict[str, Any]:
    check: dict[str, Any] = {"name": name, "max": max}
    if ratio is not None:
        check["maxRatioToStable"] = ratio
    return check


def query(
    name: str,
    stat: str,
    *,
    min: float | None = None,
    max: float | None = None,
    dimensions: dict[str, str] | None = None,
    unit: str | None = None,
    namespace: str = "Checkout",
    metric_name: str = "Orders",
) -> dict[str, Any]:
    stat_spec: dict[str, Any] = {
        "metric": {
            "namespace": namespace,
            "metricName": metric_name,
            "dimensions": [{"name": key, "value": value} for key, value in (dimensions or {}).items()],
        },
        "stat": stat,
    }
    if unit is not None:
        stat_spec["unit"] = unit
    check: dict[str, Any] = {"name": name, "metricStat": stat_spec}
    if min is not None:
        check["min"] = min
    if max is not None:
        check["max"] = max
    return check


def readings(*alarms: AlarmReading, **values: tuple[float, ...]) -> Readings:
    """Readings keyed by query id, e.g. ``readings(canary_invocations=(40, 60))``."""
    return Readings(values=values, alarms=alarms)


def alarm(name: str, state: str, reason: str = "") -> AlarmReading:
    return AlarmReading(name=name, state=state, reason=reason)


def result(name: str, verdict: Verdict, message: str, value: float | None = None) -> CheckResult:
    return CheckResult(name=name, verdict=verdict, value=value, message=message)


def lambda_query(query_id: str, metric_name: str, stat: str, version: str, period: int = 60) -> MetricQuery:
    """A query of AWS/Lambda for checkout-api behind alias live."""
    return MetricQuery(
        id=query_id,
        namespace="AWS/Lambda",
        metric_name=metric_name,
        dimensions=(("FunctionName", FN), ("Resource", f"{FN}:live"), ("ExecutedVersion", version)),
        stat=stat,
        period=period,
    )


def assess(wire: dict[str, Any], given: Readings) -> Measurement:
    return assess_readings(settings(**wire), SUBJECT, given)


# ---------------------------------------------------------------------------------------------
# build_request.

START, END = T0, T0 + timedelta(minutes=4, seconds=30)  # a window of 270s: percentile period 300


@pytest.mark.parametrize(
    ("seconds", "period"),
    [
        pytest.param(0, 60, id="empty-window-is-one-minute"),
        pytest.param(30, 60, id="under-a-minute"),
        pytest.param(60, 60, id="one-minute"),
        pytest.param(61, 120, id="just-over-a-minute-rounds-up"),
        pytest.param(270, 300, id="four-and-a-half-minutes"),
        pytest.param(300, 300, id="five-minutes"),
    ],
)
def test_window_period_rounds_up_to_whole_minutes(seconds: int, period: int) -> None:
    assert window_period(T0, T0 + timedelta(seconds=seconds)) == period


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(FN, FN, id="plain-name"),
        pytest.param(f"123456789012:function:{FN}", FN, id="partial-arn"),
        pytest.param(FULL_ARN, FN, id="full-arn"),
        pytest.param(f"{FULL_ARN}:live", FN, id="full-arn-with-qualifier"),
        pytest.param("function", "function", id="plain-name-function"),
        pytest.param(
            "arn:aws:lambda:eu-west-1:123456789012:function:function", "function", id="arn-of-function"
        ),
    ],
)
def test_plain_function_name(name: str, expected: str) -> None:
    assert plain_function_name(name) == expected


@pytest.mark.parametrize(
    ("name", "queries"),
    [
        pytest.param(
            "error-rate",
            [lambda_query("canary_errors", "Errors", "Sum", "2")],
            id="error-rate",
        ),
        pytest.param(
            "throttles",
            [lambda_query("canary_throttles", "Throttles", "Sum", "2")],
            id="throttles",
        ),
        pytest.param(
            "average-duration",
            [
                lambda_query("canary_duration_sum", "Duration", "Sum", "2"),
                lambda_query("canary_duration_count", "Duration", "SampleCount", "2"),
            ],
            id="average-duration",
        ),
        pytest.param(
            "p90-duration",
            [lambda_query("canary_duration_p90", "Duration", "p90", "2", period=300)],
            id="p90-duration-over-the-window",
        ),
        pytest.param(
            "p99-duration",
            [lambda_query("canary_duration_p99", "Duration", "p99", "2", period=300)],
            id="p99-duration-over-the-window",
        ),
    ],
)
def test_build_request_builtin_metric(name: str, queries: list[MetricQuery]) -> None:
    request = build_request(settings(metrics=[metric(name, 1)]), SUBJECT, start=START, end=END)
    assert request == MeasureRequest(
        queries=(lambda_query("canary_invocations", "Invocations", "Sum", "2"), *queries),
        alarm_names=(),
        alarm_prefix=None,
        start=START,
        end=END,
    )


def test_build_request_every_builtin_metric_in_order() -> None:
    wire = {"metrics": [metric(name, 1) for name in ("p99-duration", "throttles", "error-rate")]}
    request = build_request(settings(**wire), SUBJECT, start=START, end=END)
    assert [q.id for q in request.queries] == [
        "canary_invocations",
        "canary_errors",
        "canary_throttles",
        "canary_duration_p99",
    ]


@pytest.mark.parametrize(
    "function_name",
    [
        pytest.param(FN, id="plain-name"),
        pytest.param(f"123456789012:function:{FN}", id="partial-arn"),
        pytest.param(FULL_ARN, id="full-arn"),
    ],
)
def test_build_request_dimensions_use_the_plain_function_name(function_name: str) -> None:
    subject = Subject(function_name=function_name, alias="live", canary="7", stable="6")
    request = build_request(settings(metrics=[metric("error-rate", 1)]), subject, start=START, end=END)
    assert request.queries == (
        lambda_query("canary_invocations", "Invocations", "Sum", "7"),
        lambda_query("canary_errors", "Errors", "Sum", "7"),
    )


@pytest.mark.parametrize(
    ("metrics", "stable"),
    [
        pytest.param(
            [metric("error-rate", 5), metric("p99-duration", 900)], [], id="no-ratio-no-stable-queries"
        ),
        pytest.param(
            [metric("error-rate", 5, ratio=2), metric("p99-duration", 900)],
            [
                lambda_query("stable_invocations", "Invocations", "Sum", "1"),
                lambda_query("stable_errors", "Errors", "Sum", "1"),
            ],
            id="ratio-on-error-rate-only",
        ),
        pytest.param(
            [metric("error-rate", 5), metric("average-duration", 200, ratio=1.5)],
            [
                lambda_query("stable_invocations", "Invocations", "Sum", "1"),
                lambda_query("stable_duration_sum", "Duration", "Sum", "1"),
                lambda_query("stable_duration_count", "Duration", "SampleCount", "1"),
            ],
            id="ratio-on-average-duration-only",
        ),
        pytest.param(
            [metric("p99-duration", 900, ratio=1.2)],
            [
                lambda_query("stable_invocations", "Invocations", "Sum", "1"),
                lambda_query("stable_duration_p99", "Duration", "p99", "1", period=300),
            ],
            id="ratio-on-p99",
        ),
    ],
)
def test_build_request_stable_queries_only_for_ratio_checks(
    metrics: list[dict[str, Any]], stable: list[MetricQuery]
) -> None:
    request = build_request(settings(metrics=metrics), SUBJECT, start=START, end=END)
    canary_ids = [q.id for q in request.queries if q.id.startswith("canary_")]
    assert request.queries[len(canary_ids) :] == tuple(stable)


def test_build_request_custom_queries_fill_placeholders() -> None:
    wire = {
        "queries": [
            query(
                "ordersFailed",
                "Sum",
                max=10,
                namespace="Checkout",
                metric_name="OrdersFailed",
                unit="Count",
                dimensions={
                    "Function": "{{function}}",
                    "Route": "{{function}}:{{alias}}",
                    "Versions": "v{{version}}-vs-v{{stableVersion}}",
                    "Region": "eu-west-1",
                },
            ),
            query("latency", "p95", max=300, namespace="Edge", metric_name="Latency"),
        ]
    }
    subject = Subject(function_name=FULL_ARN, alias="live", canary="2", stable="1")
    request = build_request(settings(**wire), subject, start=START, end=END)
    assert request.queries == (
        lambda_query("canary_invocations", "Invocations", "Sum", "2"),
        MetricQuery(
            id="query_ordersFailed",
            namespace="Checkout",
            metric_name="OrdersFailed",
            dimensions=(
                ("Function", FN),
                ("Route", f"{FN}:live"),
                ("Versions", "v2-vs-v1"),
                ("Region", "eu-west-1"),
            ),
            stat="Sum",
            period=300,
            unit="Count",
        ),
        MetricQuery(
            id="query_latency", namespace="Edge", metric_name="Latency", dimensions=(), stat="p95", period=300
        ),
    )


@pytest.mark.parametrize(
    ("wire", "names", "prefix"),
    [
        pytest.param({"alarms": ["a", "b"]}, ("a", "b"), None, id="names"),
        pytest.param({"alarmPrefix": "checkout-"}, (), "checkout-", id="prefix"),
        pytest.param({"alarms": ["a"], "alarmPrefix": "checkout-"}, ("a",), "checkout-", id="both"),
    ],
)
def test_build_request_alarms(wire: dict[str, Any], names: tuple[str, ...], prefix: str | None) -> None:
    assert build_request(settings(**wire), SUBJECT, start=START, end=END) == MeasureRequest(
        queries=(lambda_query("canary_invocations", "Invocations", "Sum", "2"),),
        alarm_names=names,
        alarm_prefix=prefix,
        start=START,
        end=END,
    )


# ---------------------------------------------------------------------------------------------
# assess.

ERROR_RATE_MAX_1 = {"metrics": [metric("error-rate", 1)]}
ALARM_A = {"alarms": ["checkout-errors"]}
RATIO = {"metrics": [metric("error-rate", 5, ratio=2)]}
ALARM_REASON = "Threshold Crossed: 1 datapoint [5.0] was greater than the threshold (1.0)."


def passed(checks: int, invocations: int = 100) -> str:
    noun = "check" if checks == 1 else "checks"
    return f"{checks} {noun} passed over {invocations} invocations of version 2"


ASSESS_CASES = [
    # Thresholds of built-in metrics.
    pytest.param(
        ERROR_RATE_MAX_1,
        readings(canary_invocations=(40, 60), canary_errors=(1,)),
        SUC,
        passed(1),
        [result("error-rate", SUC, "error-rate 1%", 1.0)],
        id="error-rate-exactly-at-max-passes",
    ),
    pytest.param(
        ERROR_RATE_MAX_1,
        readings(canary_invocations=(40, 40), canary_errors=(6, 4)),
        FAIL,
        "error-rate of version 2 was 12.5%, above max 1%",
        [result("error-rate", FAIL, "error-rate of version 2 was 12.5%, above max 1%", 12.5)],
        id="error-rate-above-max-fails",
    ),
    pytest.param(
        ERROR_RATE_MAX_1,
        readings(canary_invocations=(100,)),
        SUC,
        passed(1),
        [result("error-rate", SUC, "error-rate 0%", 0.0)],
        id="error-rate-without-error-datapoints-is-zero",
    ),
    pytest.param(
        {"metrics": [metric("throttles", 0)]},
        readings(canary_invocations=(100,), canary_throttles=(0, 1)),
        FAIL,
        "throttles of version 2 was 1, above max 0",
        [result("throttles", FAIL, "throttles of version 2 was 1, above max 0", 1.0)],
        id="throttles-above-max-fails",
    ),
    pytest.param(
        {"metrics": [metric("throttles", 2)]},
        readings(canary_invocations=(100,), canary_throttles=(1, 1)),
        SUC,
        passed(1),
        [result("throttles", SUC, "throttles 2", 2.0)],
        id="throttles-sum-at-max-passes",
    ),
    pytest.param(
        {"metrics": [metric("average-duration", 130)]},
        # Sum/SampleCount = 3600/30 = 120ms; the mean of per-period averages would be 165ms.
        readings(canary_invocations=(30,), canary_duration_sum=(3000, 600), canary_duration_count=(10, 20)),
        SUC,
        passed(1, 30),
        [result("average-duration", SUC, "average-duration 120ms", 120.0)],
        id="average-duration-is-sum-over-sample-count",
    ),
    pytest.param(
        {"metrics": [metric("average-duration", 100)]},
        readings(canary_invocations=(30,), canary_duration_sum=(3000, 600), canary_duration_count=(10, 20)),
        FAIL,
        "average-duration of version 2 was 120ms, above max 100ms",
        [result("average-duration", FAIL, "average-duration of version 2 was 120ms, above max 100ms", 120.0)],
        id="average-duration-above-max-fails",
    ),
    pytest.param(
        {"metrics": [metric("average-duration", 100)]},
        readings(canary_invocations=(30,)),
        INC,
        "average-duration: no data for version 2",
        [result("average-duration", INC, "average-duration: no data for version 2")],
        id="average-duration-without-samples-is-inconclusive",
    ),
    pytest.param(
        {"metrics": [metric("p99-duration", 900)]},
        readings(canary_invocations=(100,), canary_duration_p99=(420, 910.5)),
        FAIL,
        "p99-duration of version 2 was 910.5ms, above max 900ms",
        [result("p99-duration", FAIL, "p99-duration of version 2 was 910.5ms, above max 900ms", 910.5)],
        id="percentile-takes-the-highest-datapoint",
    ),
    pytest.param(
        {"metrics": [metric("p90-duration", 400)]},
        readings(canary_invocations=(100,), canary_duration_p90=(300, 250)),
        SUC,
        passed(1),
        [result("p90-duration", SUC, "p90-duration 300ms", 300.0)],
        id="percentile-within-max-passes",
    ),
    pytest.param(
        {"metrics": [metric("p90-duration", 400)]},
        readings(canary_invocations=(100,)),
        INC,
        "p90-duration: no data for version 2",
        [result("p90-duration", INC, "p90-duration: no data for version 2")],
        id="percentile-without-data-is-inconclusive",
    ),
    pytest.param(
        {"metrics": [metric("error-rate", 1), metric("p99-duration", 900), metric("p90-duration", 400)]},
        readings(canary_invocations=(50,), canary_errors=(25,), canary_duration_p99=(1000,)),
        FAIL,
        "error-rate of version 2 was 50%, above max 1%; "
        "p99-duration of version 2 was 1000ms, above max 900ms",
        [
            result("error-rate", FAIL, "error-rate of version 2 was 50%, above max 1%", 50.0),
            result("p99-duration", FAIL, "p99-duration of version 2 was 1000ms, above max 900ms", 1000.0),
            result("p90-duration", INC, "p90-duration: no data for version 2"),
        ],
        id="failures-outrank-inconclusive-and-are-joined",
    ),
    # minInvocations and empty data.
    pytest.param(
        {**ERROR_RATE_MAX_1, "minInvocations": 50},
        readings(canary_invocations=(20, 29), canary_errors=(0,)),
        INC,
        "49 invocations of version 2, fewer than minInvocations 50",
        [result("invocations", INC, "49 invocations of version 2, fewer than minInvocations 50", 49.0)],
        id="below-min-invocations-is-inconclusive-even-with-perfect-metrics",
    ),
    pytest.param(
        {**ERROR_RATE_MAX_1, "minInvocations": 50},
        readings(canary_invocations=(20, 30), canary_errors=(0,)),
        SUC,
        passed(1, 50),
        [result("error-rate", SUC, "error-rate 0%", 0.0)],
        id="at-min-invocations-runs-the-checks",
    ),
    pytest.param(
        {**ERROR_RATE_MAX_1, "minInvocations": 50},
        readings(canary_invocations=(20, 30), canary_errors=(1,)),
        FAIL,
        "error-rate of version 2 was 2%, above max 1%",
        [result("error-rate", FAIL, "error-rate of version 2 was 2%, above max 1%", 2.0)],
        id="at-min-invocations-a-check-can-fail",
    ),
    pytest.param(
        {**ERROR_RATE_MAX_1, "queries": [query("ordersFailed", "Sum", max=10)]},
        readings(),
        INC,
        "0 invocations of version 2, fewer than minInvocations 1",
        [result("invocations", INC, "0 invocations of version 2, fewer than minInvocations 1", 0.0)],
        id="no-data-at-all-is-inconclusive",
    ),
    # Alarms.
    pytest.param(
        ALARM_A,
        readings(alarm("checkout-errors", "ALARM", ALARM_REASON), canary_invocations=(100,)),
        FAIL,
        f"alarm checkout-errors is in ALARM: {ALARM_REASON}",
        [result("checkout-errors", FAIL, f"alarm checkout-errors is in ALARM: {ALARM_REASON}")],
        id="alarm-in-alarm-fails-with-reason",
    ),
    pytest.param(
        ALARM_A,
        readings(alarm("checkout-errors", "ALARM"), canary_invocations=(100,)),
        FAIL,
        "alarm checkout-errors is in ALARM",
        [result("checkout-errors", FAIL, "alarm checkout-errors is in ALARM")],
        id="alarm-in-alarm-without-reason",
    ),
    pytest.param(
        ALARM_A,
        readings(alarm("checkout-errors", "INSUFFICIENT_DATA"), canary_invocations=(100,)),
        INC,
        "alarm checkout-errors has insufficient data",
        [result("checkout-errors", INC, "alarm checkout-errors has insufficient data")],
        id="alarm-insufficient-data-is-inconclusive",
    ),
    pytest.param(
        ALARM_A,
        readings(alarm("checkout-errors", "OK"), canary_invocations=(100,)),
        SUC,
        passed(1),
        [result("checkout-errors", SUC, "alarm checkout-errors is OK")],
        id="alarm-ok-passes",
    ),
    pytest.param(
        {"alarms": ["checkout-errors", "checkout-latency"]},
        readings(alarm("checkout-latency", "OK"), canary_invocations=(100,)),
        FAIL,
        "alarm checkout-errors does not exist",
        [
            result("checkout-errors", FAIL, "alarm checkout-errors does not exist"),
            result("checkout-latency", SUC, "alarm checkout-latency is OK"),
        ],
        id="named-alarm-missing-fails",
    ),
    pytest.param(
        {"alarmPrefix": "checkout-"},
        readings(alarm("billing-errors", "OK"), canary_invocations=(100,)),
        FAIL,
        "no alarm name starts with checkout-",
        [
            result("checkout-", FAIL, "no alarm name starts with checkout-"),
            result("billing-errors", SUC, "alarm billing-errors is OK"),
        ],
        id="prefix-matching-no-alarm-fails",
    ),
    pytest.param(
        {"alarmPrefix": "checkout-"},
        readings(
            alarm("checkout-latency", "OK"),
            alarm("checkout-errors", "INSUFFICIENT_DATA"),
            canary_invocations=(100,),
        ),
        INC,
        "alarm checkout-errors has insufficient data",
        [
            result("checkout-errors", INC, "alarm checkout-errors has insufficient data"),
            result("checkout-latency", SUC, "alarm checkout-latency is OK"),
        ],
        id="prefix-alarms-sorted-by-name",
    ),
    pytest.param(
        {**ALARM_A, **ERROR_RATE_MAX_1, "minInvocations": 10},
        readings(alarm("checkout-errors", "ALARM", "down"), canary_invocations=(3,)),
        FAIL,
        "alarm checkout-errors is in ALARM: down",
        [
            result("checkout-errors", FAIL, "alarm checkout-errors is in ALARM: down"),
            result("invocations", INC, "3 invocations of version 2, fewer than minInvocations 10", 3.0),
        ],
        id="alarm-wins-over-too-few-invocations",
    ),
    pytest.param(
        {**ALARM_A, **ERROR_RATE_MAX_1},
        readings(alarm("checkout-errors", "OK"), canary_invocations=(80,), canary_errors=(0,)),
        SUC,
        passed(2, 80),
        [
            result("checkout-errors", SUC, "alarm checkout-errors is OK"),
            result("error-rate", SUC, "error-rate 0%", 0.0),
        ],
        id="alarm-ok-and-metric-ok-pass",
    ),
    # Comparison with the stable version.
    pytest.param(
        RATIO,
        readings(
            canary_invocations=(100,), canary_errors=(3,), stable_invocations=(900,), stable_errors=(10, 8)
        ),
        SUC,
        passed(1),
        [result("error-rate", SUC, "error-rate 3%", 3.0)],
        id="ratio-within-bound-passes",
    ),
    pytest.param(
        RATIO,
        readings(
            canary_invocations=(100,), canary_errors=(4,), stable_invocations=(900,), stable_errors=(18,)
        ),
        SUC,
        passed(1),
        [result("error-rate", SUC, "error-rate 4%", 4.0)],
        id="ratio-exactly-at-bound-passes",
    ),
    pytest.param(
        RATIO,
        readings(
            canary_invocations=(100,), canary_errors=(5,), stable_invocations=(900,), stable_errors=(18,)
        ),
        FAIL,
        "error-rate of version 2 was 5%, above 2x stable version 1's 2% (bound 4%)",
        [
            result(
                "error-rate",
                FAIL,
                "error-rate of version 2 was 5%, above 2x stable version 1's 2% (bound 4%)",
                5.0,
            )
        ],
        id="ratio-above-bound-fails-naming-stable",
    ),
    pytest.param(
        {"metrics": [metric("p99-duration", 1000, ratio=1.5)]},
        readings(
            canary_invocations=(100,),
            canary_duration_p99=(600,),
            stable_invocations=(500,),
            stable_duration_p99=(250, 280),
        ),
        FAIL,
        "p99-duration of version 2 was 600ms, above 1.5x stable version 1's 280ms (bound 420ms)",
        [
            result(
                "p99-duration",
                FAIL,
                "p99-duration of version 2 was 600ms, above 1.5x stable version 1's 280ms (bound 420ms)",
                600.0,
            )
        ],
        id="ratio-on-percentile-uses-highest-stable-datapoint",
    ),
    pytest.param(
        RATIO,
        readings(canary_invocations=(100,), canary_errors=(3,)),
        INC,
        "error-rate: not enough data for stable version 1 to compare with (0 invocations)",
        [
            result(
                "error-rate",
                INC,
                "error-rate: not enough data for stable version 1 to compare with (0 invocations)",
                3.0,
            )
        ],
        id="ratio-without-stable-data-is-inconclusive",
    ),
    pytest.param(
        {**RATIO, "minInvocations": 50},
        readings(canary_invocations=(100,), canary_errors=(3,), stable_invocations=(49,), stable_errors=(0,)),
        INC,
        "error-rate: not enough data for stable version 1 to compare with (49 invocations)",
        [
            result(
                "error-rate",
                INC,
                "error-rate: not enough data for stable version 1 to compare with (49 invocations)",
                3.0,
            )
        ],
        id="ratio-with-too-few-stable-invocations-is-inconclusive",
    ),
    pytest.param(
        RATIO,
        readings(canary_invocations=(100,), canary_errors=(6,)),
        FAIL,
        "error-rate of version 2 was 6%, above max 5%",
        [result("error-rate", FAIL, "error-rate of version 2 was 6%, above max 5%", 6.0)],
        id="ratio-check-above-max-fails-without-stable-data",
    ),
    # Custom queries.
    pytest.param(
        {"queries": [query("ordersFailed", "Sum", max=10)]},
        readings(canary_invocations=(100,), query_ordersFailed=(4, 7)),
        FAIL,
        "ordersFailed was 11, above max 10",
        [result("ordersFailed", FAIL, "ordersFailed was 11, above max 10", 11.0)],
        id="query-sum-adds-datapoints-above-max",
    ),
    pytest.param(
        {"queries": [query("ordersFailed", "Sum", max=10)]},
        readings(canary_invocations=(100,), query_ordersFailed=(4, 6)),
        SUC,
        passed(1),
        [result("ordersFailed", SUC, "ordersFailed 10", 10.0)],
        id="query-sum-at-max-passes",
    ),
    pytest.param(
        {"queries": [query("orders", "SampleCount", min=10)]},
        readings(canary_invocations=(100,), query_orders=(4, 5)),
        FAIL,
        "orders was 9, below min 10",
        [result("orders", FAIL, "orders was 9, below min 10", 9.0)],
        id="query-sample-count-adds-datapoints-below-min",
    ),
    pytest.param(
        {"queries": [query("latencyRatio", "Average", min=0.5, max=2)]},
        readings(canary_invocations=(100,), query_latencyRatio=(1.0, 2.5)),
        FAIL,
        "latencyRatio was 2.5, above max 2",
        [result("latencyRatio", FAIL, "latencyRatio was 2.5, above max 2", 2.5)],
        id="query-average-every-datapoint-under-max",
    ),
    pytest.param(
        {"queries": [query("latencyRatio", "Average", min=0.5, max=2)]},
        readings(canary_invocations=(100,), query_latencyRatio=(1.0, 0.25)),
        FAIL,
        "latencyRatio was 0.25, below min 0.5",
        [result("latencyRatio", FAIL, "latencyRatio was 0.25, below min 0.5", 0.25)],
        id="query-average-every-datapoint-over-min",
    ),
    pytest.param(
        {"queries": [query("latencyRatio", "Maximum", min=0.5, max=2)]},
        readings(canary_invocations=(100,), query_latencyRatio=(0.75, 1.5)),
        SUC,
        passed(1),
        [result("latencyRatio", SUC, "latencyRatio 1.5", 1.5)],
        id="query-every-datapoint-in-range-passes-showing-highest",
    ),
    pytest.param(
        {"queries": [query("ordersFailed", "Sum", max=10)]},
        readings(canary_invocations=(100,)),
        INC,
        "ordersFailed: no data",
        [result("ordersFailed", INC, "ordersFailed: no data")],
        id="query-without-data-is-inconclusive",
    ),
]


@pytest.mark.parametrize(("wire", "given", "verdict", "message", "results"), ASSESS_CASES)
def test_assess(
    wire: dict[str, Any], given: Readings, verdict: Verdict, message: str, results: list[CheckResult]
) -> None:
    assert assess(wire, given) == Measurement(verdict, message, tuple(results))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(ERROR_RATE_MAX_1, id="metrics"),
        pytest.param(ALARM_A, id="alarms"),
        pytest.param({"queries": [query("ordersFailed", "Sum", max=10)]}, id="queries"),
    ],
)
def test_assess_provider_error_is_an_error_never_a_failure(wire: dict[str, Any]) -> None:
    given = Readings(
        values={"canary_invocations": (100,), "canary_errors": (90,)},
        alarms=(alarm("checkout-errors", "ALARM"),),
        error="Throttling: Rate exceeded",
    )
    assert assess(wire, given) == Measurement(
        ERR, "could not read the analysis data: Throttling: Rate exceeded"
    )


# ---------------------------------------------------------------------------------------------
# start_run and record.

INTERVAL = 30  # seconds, for every run below


def run_settings(**wire: Any) -> AnalysisSettings:
    return settings(interval=f"{INTERVAL}s", alarms=["checkout-errors"], **wire)


def measurement(verdict: Verdict) -> Measurement:
    return Measurement(verdict, f"measured {verdict.value}")


def feed(
    analysis: AnalysisSettings, verdicts: list[Verdict], *, blocking: bool
) -> tuple[list[tuple[Outcome, bool]], AnalysisStatus, str]:
    """Record each verdict in turn, one interval apart: (outcome, holding) per step, the final
    status, and the last tally's message."""
    run = start_run(0 if blocking else None, analysis, now=T0)
    steps: list[tuple[Outcome, bool]] = []
    message = ""
    for number, verdict in enumerate(verdicts, start=1):
        tally = record(
            run,
            measurement(verdict),
            analysis,
            blocking=blocking,
            now=T0 + timedelta(seconds=INTERVAL * number),
        )
        run, message = tally.status, tally.message
        steps.append((tally.outcome, run.holding))
    return steps, run, message


COUNTERS = (
    "measurements",
    "successes",
    "failures",
    "inconclusives",
    "errors",
    "consecutiveSuccesses",
    "consecutiveErrors",
    "holding",
)


def counters(**expected: int | bool) -> dict[str, int | bool]:
    """Every counter of a run: zero (or False) unless given."""
    unknown = set(expected) - set(COUNTERS)
    assert not unknown, unknown
    return {name: expected.get(name, False if name == "holding" else 0) for name in COUNTERS}


RECORD_CASES = [
    pytest.param(
        {},
        True,
        [FAIL],
        [(FAILED, False)],
        counters(measurements=1, failures=1),
        id="failure-limit-0-first-failure-fails",
    ),
    pytest.param(
        {"failureLimit": 2, "consecutiveSuccessLimit": 5},
        True,
        [FAIL, SUC, FAIL, FAIL],
        [(MEASURING, False), (MEASURING, False), (MEASURING, False), (FAILED, False)],
        counters(measurements=4, successes=1, failures=3),
        id="failure-limit-2-third-failure-fails",
    ),
    pytest.param(
        {"consecutiveSuccessLimit": 3},
        True,
        [SUC, SUC, INC, SUC, SUC, SUC],
        [
            (MEASURING, False),
            (MEASURING, False),
            (HOLD, True),
            (MEASURING, False),
            (MEASURING, False),
            (PASSED, False),
        ],
        counters(measurements=6, successes=5, inconclusives=1, consecutiveSuccesses=3),
        id="inconclusive-pause-resets-the-success-streak",
    ),
    pytest.param(
        {"failureLimit": 1, "consecutiveSuccessLimit": 2},
        True,
        [SUC, FAIL, SUC, SUC],
        [(MEASURING, False), (MEASURING, False), (MEASURING, False), (PASSED, False)],
        counters(measurements=4, successes=3, failures=1, consecutiveSuccesses=2),
        id="a-failure-resets-the-success-streak",
    ),
    pytest.param(
        {},
        True,
        [SUC],
        [(PASSED, False)],
        counters(measurements=1, successes=1, consecutiveSuccesses=1),
        id="blocking-default-limit-passes-on-first-success",
    ),
    pytest.param(
        {"consecutiveSuccessLimit": 1},
        False,
        [SUC, SUC, SUC],
        [(MEASURING, False), (MEASURING, False), (MEASURING, False)],
        counters(measurements=3, successes=3, consecutiveSuccesses=3),
        id="background-never-passes",
    ),
    pytest.param(
        {"failureLimit": 1},
        False,
        [FAIL, FAIL],
        [(MEASURING, False), (FAILED, False)],
        counters(measurements=2, failures=2),
        id="background-fails-past-failure-limit",
    ),
    pytest.param(
        {"onInconclusive": "Pause"},
        True,
        [INC, INC, SUC],
        [(HOLD, True), (HOLD, True), (PASSED, False)],
        counters(measurements=3, successes=1, inconclusives=2, consecutiveSuccesses=1),
        id="pause-holds-until-a-success",
    ),
    pytest.param(
        {"onInconclusive": "Pause", "failureLimit": 1},
        True,
        [INC, FAIL],
        [(HOLD, True), (MEASURING, False)],
        counters(measurements=2, failures=1, inconclusives=1),
        id="pause-hold-cleared-by-a-failure-within-limit",
    ),
    pytest.param(
        {"onInconclusive": "Fail", "failureLimit": 1},
        True,
        [INC, INC],
        [(MEASURING, False), (FAILED, False)],
        counters(measurements=2, failures=2, inconclusives=2),
        id="fail-counts-inconclusive-as-failure",
    ),
    pytest.param(
        {"onInconclusive": "Continue", "consecutiveSuccessLimit": 2},
        True,
        [INC, INC],
        [(MEASURING, False), (PASSED, False)],
        counters(measurements=2, successes=2, inconclusives=2, consecutiveSuccesses=2),
        id="continue-counts-inconclusive-as-success",
    ),
    pytest.param(
        {"errorLimit": 2},
        True,
        [ERR, ERR],
        [(MEASURING, False), (MEASURING, False)],
        counters(measurements=2, errors=2, consecutiveErrors=2),
        id="errors-within-limit-keep-measuring-and-never-fail",
    ),
    pytest.param(
        {"errorLimit": 2},
        True,
        [ERR, ERR, SUC],
        [(MEASURING, False), (MEASURING, False), (PASSED, False)],
        counters(measurements=3, successes=1, errors=2, consecutiveSuccesses=1),
        id="a-success-resets-consecutive-errors",
    ),
    pytest.param(
        {"errorLimit": 1},
        False,
        [ERR, SUC, ERR],
        [(MEASURING, False), (MEASURING, False), (MEASURING, False)],
        counters(measurements=3, successes=1, errors=2, consecutiveSuccesses=1, consecutiveErrors=1),
        id="errors-count-in-a-row-only",
    ),
    pytest.param(
        {"consecutiveSuccessLimit": 2},
        True,
        [SUC, ERR, SUC],
        [(MEASURING, False), (MEASURING, False), (PASSED, False)],
        counters(measurements=3, successes=2, errors=1, consecutiveSuccesses=2),
        id="an-error-neither-counts-nor-breaks-the-streak",
    ),
    pytest.param(
        {},
        True,
        [ERR, ERR, ERR, ERR, ERR],
        [(MEASURING, False)] * 4 + [(HOLD, True)],
        counters(measurements=5, errors=5, inconclusives=1, consecutiveErrors=5, holding=True),
        id="default-error-limit-4-fifth-error-is-inconclusive-pause",
    ),
    pytest.param(
        {"errorLimit": 1, "onInconclusive": "Pause"},
        True,
        [ERR, ERR, ERR],
        [(MEASURING, False), (HOLD, True), (HOLD, True)],
        counters(measurements=3, errors=3, inconclusives=2, consecutiveErrors=3, holding=True),
        id="errors-past-limit-stay-inconclusive",
    ),
    pytest.param(
        {"errorLimit": 0, "onInconclusive": "Fail"},
        True,
        [ERR],
        [(FAILED, False)],
        counters(measurements=1, failures=1, inconclusives=1, errors=1, consecutiveErrors=1),
        id="error-past-limit-with-fail-policy-fails",
    ),
    pytest.param(
        {"errorLimit": 0, "onInconclusive": "Continue"},
        True,
        [ERR],
        [(PASSED, False)],
        counters(
            measurements=1,
            successes=1,
            inconclusives=1,
            errors=1,
            consecutiveSuccesses=1,
            consecutiveErrors=1,
        ),
        id="error-past-limit-with-continue-policy-counts-as-success",
    ),
    pytest.param(
        {"errorLimit": 4},
        True,
        [INC, ERR, ERR],
        [(HOLD, True), (HOLD, True), (HOLD, True)],
        counters(measurements=3, inconclusives=1, errors=2, consecutiveErrors=2, holding=True),
        id="errors-within-limit-while-holding-keep-holding",
    ),
]


@pytest.mark.parametrize(("wire", "blocking", "verdicts", "steps", "expected"), RECORD_CASES)
def test_record(
    wire: dict[str, Any],
    blocking: bool,
    verdicts: list[Verdict],
    steps: list[tuple[Outcome, bool]],
    expected: dict[str, int | bool],
) -> None:
    got_steps, run, _ = feed(run_settings(**wire), verdicts, blocking=blocking)
    assert got_steps == steps
    wire_status = run.model_dump(by_alias=True, exclude_none=True)
    assert {name: wire_status[name] for name in COUNTERS} == expected
    assert wire_status["lastVerdict"] == verdicts[-1]


@pytest.mark.parametrize(
    ("wire", "verdicts", "message"),
    [
        pytest.param({}, [FAIL], "measured Failed", id="failure-message-is-the-measurement-message"),
        pytest.param({"errorLimit": 1}, [ERR], "measured Error", id="error-within-limit"),
        pytest.param(
            {"errorLimit": 1},
            [ERR, ERR],
            "2 measurements in a row could not read the data, more than errorLimit 1: measured Error",
            id="error-past-limit-says-why",
        ),
        pytest.param(
            {"errorLimit": 0, "onInconclusive": "Fail"},
            [ERR],
            "1 measurements in a row could not read the data, more than errorLimit 0: measured Error",
            id="error-past-limit-with-fail-policy-says-why",
        ),
    ],
)
def test_record_message(wire: dict[str, Any], verdicts: list[Verdict], message: str) -> None:
    _, run, got = feed(run_settings(**wire), verdicts, blocking=True)
    assert got == message
    assert run.last_message == f"measured {verdicts[-1].value}"


@pytest.mark.parametrize(
    ("step_index", "expected"),
    [
        pytest.param(
            3,
            {
                "stepIndex": 3,
                "startedAt": "2026-01-01T12:00:00.000000Z",
                "nextMeasurementAt": "2026-01-01T12:00:30.000000Z",
            },
            id="blocking-step",
        ),
        pytest.param(
            None,
            {"startedAt": "2026-01-01T12:00:00.000000Z", "nextMeasurementAt": "2026-01-01T12:00:30.000000Z"},
            id="background",
        ),
    ],
)
def test_start_run(step_index: int | None, expected: dict[str, Any]) -> None:
    run = start_run(step_index, run_settings(), now=T0)
    assert run.model_dump(by_alias=True, exclude_none=True) == {
        **expected,
        **counters(),
        "results": [],
    }


def test_record_sets_times_message_and_results() -> None:
    analysis = run_settings(failureLimit=1)
    checks = (
        result("checkout-errors", SUC, "alarm checkout-errors is OK"),
        result("error-rate", FAIL, "error-rate of version 2 was 12.5%, above max 1%", 12.5),
    )
    run = start_run(2, analysis, now=T0)
    tally = record(
        run,
        Measurement(FAIL, "error-rate of version 2 was 12.5%, above max 1%", checks),
        analysis,
        blocking=True,
        now=T0 + timedelta(seconds=45),
    )
    assert tally.outcome == MEASURING
    assert tally.message == "error-rate of version 2 was 12.5%, above max 1%"
    assert tally.status.model_dump(by_alias=True, exclude_none=True) == {
        "stepIndex": 2,
        "startedAt": "2026-01-01T12:00:00.000000Z",
        "nextMeasurementAt": "2026-01-01T12:01:15.000000Z",
        **counters(measurements=1, failures=1),
        "lastVerdict": "Failed",
        "lastMeasuredAt": "2026-01-01T12:00:45.000000Z",
        "lastMessage": "error-rate of version 2 was 12.5%, above max 1%",
        "results": [
            {"name": "checkout-errors", "verdict": "Successful", "message": "alarm checkout-errors is OK"},
            {
                "name": "error-rate",
                "verdict": "Failed",
                "value": 12.5,
                "message": "error-rate of version 2 was 12.5%, above max 1%",
            },
        ],
    }


def test_record_error_keeps_the_previous_results_out() -> None:
    """An error replaces the results with none: stale checks are never shown as current."""
    analysis = run_settings(errorLimit=3)
    run = start_run(None, analysis, now=T0)
    first = record(
        run,
        Measurement(SUC, "1 check passed", (result("checkout-errors", SUC, "alarm checkout-errors is OK"),)),
        analysis,
        blocking=False,
        now=T0 + timedelta(seconds=30),
    )
    second = record(
        first.status,
        Measurement(ERR, "could not read the analysis data: boom"),
        analysis,
        blocking=False,
        now=T0 + timedelta(seconds=60),
    )
    assert second.outcome == MEASURING
    dumped = second.status.model_dump(by_alias=True, exclude_none=True)
    assert dumped == {
        "startedAt": "2026-01-01T12:00:00.000000Z",
        "nextMeasurementAt": "2026-01-01T12:01:30.000000Z",
        **counters(measurements=2, successes=1, errors=1, consecutiveSuccesses=1, consecutiveErrors=1),
        "lastVerdict": "Error",
        "lastMeasuredAt": "2026-01-01T12:01:00.000000Z",
        "lastMessage": "could not read the analysis data: boom",
        "results": [],
    }


@pytest.mark.parametrize(
    ("sums", "shown"),
    [
        ((12345.6 * 4, 4.0), "12345.6ms"),
        ((1000.0, 3.0), "333.333ms"),
        ((1600.0, 2.0), "800ms"),
    ],
    ids=["large", "repeating", "whole"],
)
def test_measured_values_read_as_people_write_them(sums: tuple[float, float], shown: str) -> None:
    wire = {"metrics": [metric("average-duration", 100)]}
    given = readings(
        canary_invocations=(100.0,), canary_duration_sum=(sums[0],), canary_duration_count=(sums[1],)
    )
    measured = assess(wire, given)
    assert measured.verdict == Verdict.FAILED
    assert measured.message == f"average-duration of version 2 was {shown}, above max 100ms"
