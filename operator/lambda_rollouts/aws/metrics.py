"""The metric provider: the small interface through which the operator reads CloudWatch.

Contract for every implementation (the boto3 one, the fake):
- ``get_metric_data`` sends all ``queries`` in one ``GetMetricData`` call (following
  ``NextToken`` pages when CloudWatch splits the answer) over [start, end), and returns each
  query id's datapoint values; a query without data maps to an empty tuple. Every id asked for is
  in the answer.
- ``describe_alarms`` returns the state of the alarms named in ``names`` (one call for up to 100
  names) and of every alarm whose name starts with ``prefix`` (a second call, paginated). A named
  alarm that does not exist is simply absent from the answer; the caller decides what it means.
- Errors are the project's own (``lambda_rollouts.errors``): throttling is ``ThrottledError``,
  5xx and connection trouble ``AwsError`` (transient), missing permissions ``AccessDeniedError``.
- The target's region and role decide the account and region read, as for the alias router.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from lambda_rollouts.analysis import AlarmReading, MetricQuery
from lambda_rollouts.observed import Target


class MetricProvider(Protocol):
    async def get_metric_data(
        self, target: Target, queries: Sequence[MetricQuery], start: datetime, end: datetime
    ) -> Mapping[str, tuple[float, ...]]: ...

    async def describe_alarms(
        self, target: Target, *, names: Sequence[str], prefix: str | None
    ) -> tuple[AlarmReading, ...]: ...
