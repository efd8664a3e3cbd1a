"""``FakeCloudWatch``: an in-memory ``MetricProvider`` for tests.

Contract: it answers like ``BotoMetricProvider`` against CloudWatch, from raw samples seeded with
``put_metric`` and alarms seeded with ``set_alarm``, and raises the same project errors.

Metrics:
- A metric is identified, as in CloudWatch, by namespace, name and its full dimension set: a
  query matches samples whose dimensions are exactly the query's, no more and no fewer.
- Datapoints are per period: a sample belongs to the period starting at its timestamp floored to
  a multiple of the period since the epoch; only samples with ``start <= timestamp < end`` count,
  and a period without samples has no datapoint. Values are returned newest period first, as the
  boto provider asks CloudWatch for them (``ScanBy=TimestampDescending``).
- Statistics are computed from the raw samples: ``Sum``, ``SampleCount``, ``Average``,
  ``Minimum``, ``Maximum``, and percentiles ``pNN`` / ``pNN.NN`` (0-100) by nearest rank: the
  smallest sample with at least NN % of the samples at or below it. CloudWatch estimates
  percentiles from a sketch, so on real data its answer can differ slightly. Other extended
  statistics (trimmed means and the like) are not modelled and raise ``InvalidRequestError``.
- A query that sets a unit sees only samples stored with that unit; a sample put without a unit
  has the unit ``None``, as in CloudWatch.
- Timestamps without a time zone are taken as UTC, as botocore sends them.

Strict where CloudWatch is (each an ``InvalidRequestError``, after the call was counted): more
than 500 queries, duplicate query ids, an id that does not start with a lowercase letter or holds
anything but letters, digits and underscores, a period that is not 1, 5, 10, 30 or a positive
multiple of 60, an unknown statistic or unit, more than 30 dimensions or one named twice,
``start`` not before ``end``, more than 100 alarm names. The seeding helpers refuse what ``PutMetricData`` and
``SetAlarmState`` would (``ValueError``).

Alarms: ``describe_alarms`` answers the named alarms that exist (one ``DescribeAlarms`` call) and
those whose name starts with ``prefix`` (a second call, one per 100 alarms, as CloudWatch pages
them), each once, sorted by name within each call. An empty prefix counts as none.

For assertions: ``calls`` counts operations by CloudWatch API name (``GetMetricData``,
``DescribeAlarms``), failed and injected ones included, the way ``AwsClients.calls`` does;
``requests`` records every ``GetMetricData`` call (queries, start, end), refused ones included.
No queries, or no names and no prefix, means no call, as for the boto provider.
``fail_next(operation, error)`` makes the next call of that operation raise ``error`` instead.
One account and one region: ``Target`` is accepted and ignored.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

from lambda_rollouts.analysis import AlarmReading, MetricQuery
from lambda_rollouts.errors import InvalidRequestError
from lambda_rollouts.observed import Target

GET_METRIC_DATA = "GetMetricData"
DESCRIBE_ALARMS = "DescribeAlarms"
OPERATIONS = frozenset({GET_METRIC_DATA, DESCRIBE_ALARMS})

ALARM_STATES = frozenset({"OK", "ALARM", "INSUFFICIENT_DATA"})
MAX_QUERIES = 500
MAX_ALARM_NAMES = 100
ALARMS_PER_PAGE = 100
MAX_DIMENSIONS = 30
MAX_NAME_LENGTH = 255
# High-resolution periods; any other period must be a whole number of minutes.
SUB_MINUTE_PERIODS = frozenset({1, 5, 10, 30})
BASIC_STATISTICS = frozenset({"SampleCount", "Average", "Sum", "Minimum", "Maximum"})
STANDARD_UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)
NO_UNIT = "None"

_PERCENTILE = re.compile(r"p(?P<rank>[0-9]{1,2}(?:\.[0-9]{1,2})?|100(?:\.0{1,2})?)")
_QUERY_ID = re.compile(r"[a-z][a-zA-Z0-9_]*")

# namespace, metric name, dimension set
MetricIdentity = tuple[str, str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Sample:
    timestamp: datetime
    value: float
    unit: str


@dataclass(frozen=True)
class MetricDataRequest:
    """One ``GetMetricData`` call, as the provider received it."""

    queries: tuple[MetricQuery, ...]
    start: datetime
    end: datetime


class FakeCloudWatch:
    """In-memory ``MetricProvider``; see the module docstring."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: list[MetricDataRequest] = []
        self.alarms: dict[str, AlarmReading] = {}
        self._samples: defaultdict[MetricIdentity, list[Sample]] = defaultdict(list)
        self._failures: defaultdict[str, deque[Exception]] = defaultdict(deque)

    # -- seeding -------------------------------------------------------------------------------

    def put_metric(
        self,
        namespace: str,
        metric_name: str,
        dimensions: Mapping[str, str],
        values: Sequence[float] | float,
        timestamp: datetime,
        unit: str | None = None,
    ) -> None:
        """Store raw samples (one per value) of a metric at ``timestamp``, like ``PutMetricData``."""
        if not namespace or not metric_name:
            raise ValueError("a metric needs a namespace and a name")
        if len(dimensions) > MAX_DIMENSIONS:
            raise ValueError(f"a metric has at most {MAX_DIMENSIONS} dimensions, got {len(dimensions)}")
        if any(not name or not value for name, value in dimensions.items()):
            raise ValueError(f"dimension names and values must not be empty: {dict(dimensions)}")
        stored_unit = NO_UNIT if unit is None else unit
        if stored_unit not in STANDARD_UNITS:
            raise ValueError(f"unknown unit {unit!r}")
        samples = [float(values)] if isinstance(values, int | float) else [float(value) for value in values]
        if any(not math.isfinite(value) for value in samples):
            raise ValueError(f"metric values must be finite numbers, got {samples}")
        identity = (namespace, metric_name, frozenset(dimensions.items()))
        moment = _aware(timestamp)
        self._samples[identity].extend(Sample(moment, value, stored_unit) for value in samples)

    def set_alarm(self, name: str, state: str, reason: str = "") -> None:
        """Create the alarm or change its state, like ``PutMetricAlarm`` then ``SetAlarmState``."""
        if not name or len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"an alarm name has 1 to {MAX_NAME_LENGTH} characters, got {name!r}")
        if state not in ALARM_STATES:
            raise ValueError(f"alarm state must be one of {sorted(ALARM_STATES)}, got {state!r}")
        self.alarms[name] = AlarmReading(name=name, state=state, reason=reason)

    def delete_alarm(self, name: str) -> None:
        if self.alarms.pop(name, None) is None:
            raise ValueError(f"alarm {name} does not exist")

    def fail_next(self, operation: str, error: Exception) -> None:
        """Make the next ``operation`` call (``GetMetricData``, ``DescribeAlarms``) raise ``error``."""
        if operation not in OPERATIONS:
            raise ValueError(f"FakeCloudWatch answers {sorted(OPERATIONS)}, not {operation!r}")
        self._failures[operation].append(error)

    # -- the MetricProvider interface ----------------------------------------------------------

    async def get_metric_data(
        self, target: Target, queries: Sequence[MetricQuery], start: datetime, end: datetime
    ) -> Mapping[str, tuple[float, ...]]:
        if not queries:
            return {}
        self.requests.append(MetricDataRequest(queries=tuple(queries), start=start, end=end))
        self._begin(GET_METRIC_DATA)
        window_start, window_end = _aware(start), _aware(end)
        _check_metric_data_request(queries, window_start, window_end)
        return {query.id: self._datapoints(query, window_start, window_end) for query in queries}

    async def describe_alarms(
        self, target: Target, *, names: Sequence[str], prefix: str | None
    ) -> tuple[AlarmReading, ...]:
        found: dict[str, AlarmReading] = {}
        if names:
            self._begin(DESCRIBE_ALARMS)
            if len(names) > MAX_ALARM_NAMES:
                raise InvalidRequestError(
                    f"{DESCRIBE_ALARMS}: ValidationError: at most {MAX_ALARM_NAMES} alarm names, "
                    f"got {len(names)}"
                )
            _add_new(found, [self.alarms[name] for name in sorted(set(names)) if name in self.alarms])
        if prefix:
            matching = [self.alarms[name] for name in sorted(self.alarms) if name.startswith(prefix)]
            # CloudWatch answers a prefix page by page; each page is one call.
            for page_start in range(0, max(len(matching), 1), ALARMS_PER_PAGE):
                self._begin(DESCRIBE_ALARMS)
                _add_new(found, matching[page_start : page_start + ALARMS_PER_PAGE])
        return tuple(found.values())

    # -- CloudWatch's arithmetic ---------------------------------------------------------------

    def _begin(self, operation: str) -> None:
        self.calls[operation] += 1
        pending = self._failures.get(operation)
        if pending:
            raise pending.popleft()

    def _datapoints(self, query: MetricQuery, start: datetime, end: datetime) -> tuple[float, ...]:
        identity = (query.namespace, query.metric_name, frozenset(query.dimensions))
        periods: defaultdict[int, list[float]] = defaultdict(list)
        for sample in self._samples.get(identity, ()):
            if not start <= sample.timestamp < end:
                continue
            if query.unit is not None and sample.unit != query.unit:
                continue
            seconds = math.floor(sample.timestamp.timestamp())
            periods[seconds - seconds % query.period].append(sample.value)
        return tuple(_statistic(query.stat, periods[period]) for period in sorted(periods, reverse=True))


def _add_new(found: dict[str, AlarmReading], alarms: Iterable[AlarmReading]) -> None:
    for alarm in alarms:
        found.setdefault(alarm.name, alarm)


def _check_metric_data_request(queries: Sequence[MetricQuery], start: datetime, end: datetime) -> None:
    def refuse(message: str) -> InvalidRequestError:
        return InvalidRequestError(f"{GET_METRIC_DATA}: ValidationError: {message}")

    if len(queries) > MAX_QUERIES:
        raise refuse(f"at most {MAX_QUERIES} queries per request, got {len(queries)}")
    if not start < end:
        raise refuse(f"StartTime ({start.isoformat()}) must be before EndTime ({end.isoformat()})")
    seen: set[str] = set()
    for query in queries:
        if query.id in seen:
            raise refuse(f"the query id {query.id} is used more than once")
        seen.add(query.id)
        if not _QUERY_ID.fullmatch(query.id) or len(query.id) > MAX_NAME_LENGTH:
            raise refuse(
                f"the query id {query.id!r} must start with a lowercase letter and hold only letters, "
                "digits and underscores"
            )
        if not (query.period in SUB_MINUTE_PERIODS or (query.period > 0 and query.period % 60 == 0)):
            raise refuse(
                f"query {query.id}: the period must be 1, 5, 10, 30 or a multiple of 60, got {query.period}"
            )
        if query.stat not in BASIC_STATISTICS and not _PERCENTILE.fullmatch(query.stat):
            raise refuse(f"query {query.id}: unsupported statistic {query.stat!r}")
        if query.unit is not None and query.unit not in STANDARD_UNITS:
            raise refuse(f"query {query.id}: unknown unit {query.unit!r}")
        if len(query.dimensions) > MAX_DIMENSIONS:
            raise refuse(
                f"query {query.id}: at most {MAX_DIMENSIONS} dimensions, got {len(query.dimensions)}"
            )
        if len({name for name, _ in query.dimensions}) != len(query.dimensions):
            raise refuse(f"query {query.id}: a dimension is named more than once")
        if not query.namespace or not query.metric_name:
            raise refuse(f"query {query.id}: a metric needs a namespace and a name")


def _statistic(stat: str, values: Sequence[float]) -> float:
    if stat == "Sum":
        return math.fsum(values)
    if stat == "SampleCount":
        return float(len(values))
    if stat == "Average":
        return math.fsum(values) / len(values)
    if stat == "Minimum":
        return min(values)
    if stat == "Maximum":
        return max(values)
    percentile = _PERCENTILE.fullmatch(stat)
    if percentile is None:
        raise InvalidRequestError(f"{GET_METRIC_DATA}: unsupported statistic {stat!r}")
    ordered = sorted(values)
    # Exact arithmetic: 0.1 * 30 in floats is 3.0000000000000004, which would round up a rank.
    rank = math.ceil(Fraction(percentile["rank"]) * len(ordered) / 100)
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
