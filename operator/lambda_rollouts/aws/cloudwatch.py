"""The boto3 implementation of ``MetricProvider``: CloudWatch's GetMetricData and DescribeAlarms.

Contract (on top of ``lambda_rollouts.aws.metrics``):
- Every call is one ``AwsClients.call`` (paced in CloudWatch's own buckets, run in a worker
  thread; nothing blocks the event loop): the target's region (empty: the default region) and
  role (assumed through STS) pick the account and region read, and ``AwsClients.calls`` counts
  the calls made here.
- ``get_metric_data`` sends every query in one ``GetMetricData`` request: each a ``MetricStat``
  (namespace, metric name, the query's exact dimensions, period, statistic, and unit when set)
  with ``ReturnData``. Percentiles go in ``Stat`` like any statistic (``"p99"``); that is how
  GetMetricData takes extended statistics. Datapoints are asked newest first
  (``ScanBy=TimestampDescending``); ``NextToken`` pages are followed and their values appended
  per id. No queries: no call, and an empty answer.
- A query CloudWatch answers with ``StatusCode`` ``Forbidden`` raises ``AccessDeniedError``, with
  ``InternalError`` a transient ``AwsError``: a partial answer must not pass for "no data".
- ``describe_alarms`` sends one ``DescribeAlarms`` with ``AlarmNames`` when names are given and
  one, paginated, with ``AlarmNamePrefix`` when a prefix is given; both ask for metric and
  composite alarms. Each alarm is read once, in the order found. An empty prefix counts as none:
  CloudWatch refuses an empty ``AlarmNamePrefix``, and every alarm of the account is never meant.
- botocore errors are translated by ``lambda_rollouts.aws.errors``; a 404 (CloudWatch has no
  "not found" for these reads, so it means the endpoint is wrong) is a transient ``AwsError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, cast

from lambda_rollouts.analysis import AlarmReading, MetricQuery
from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.errors import translated
from lambda_rollouts.errors import AccessDeniedError, AwsError
from lambda_rollouts.observed import Target

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.literals import AlarmTypeType, StandardUnitType
    from mypy_boto3_cloudwatch.type_defs import (
        DescribeAlarmsInputTypeDef,
        DescribeAlarmsOutputTypeDef,
        GetMetricDataInputTypeDef,
        GetMetricDataOutputTypeDef,
        MessageDataTypeDef,
        MetricDataQueryTypeDef,
        MetricStatTypeDef,
    )

ALARM_TYPES: tuple[AlarmTypeType, ...] = ("MetricAlarm", "CompositeAlarm")
# DescribeAlarms' page size limit; asking for the maximum keeps the number of calls down.
ALARMS_PER_PAGE = 100


class BotoMetricProvider:
    """``MetricProvider`` over boto3; see the module docstring for the contract."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def get_metric_data(
        self, target: Target, queries: Sequence[MetricQuery], start: datetime, end: datetime
    ) -> Mapping[str, tuple[float, ...]]:
        if not queries:
            return {}
        values: dict[str, list[float]] = {query.id: [] for query in queries}
        request: GetMetricDataInputTypeDef = {
            "MetricDataQueries": [_metric_data_query(query) for query in queries],
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampDescending",
        }
        while True:
            page = await self._get_metric_data_page(target, request)
            for result in page.get("MetricDataResults", []):
                query_id = result.get("Id", "")
                _check_status(query_id, result.get("StatusCode", "Complete"), result.get("Messages", []))
                values.setdefault(query_id, []).extend(result.get("Values", []))
            next_token = page.get("NextToken")
            if not next_token:
                return {query_id: tuple(found) for query_id, found in values.items()}
            request = {**request, "NextToken": next_token}

    async def describe_alarms(
        self, target: Target, *, names: Sequence[str], prefix: str | None
    ) -> tuple[AlarmReading, ...]:
        found: dict[str, AlarmReading] = {}
        if names:
            await self._collect_alarms(
                target,
                found,
                {"AlarmNames": list(names), "AlarmTypes": list(ALARM_TYPES), "MaxRecords": ALARMS_PER_PAGE},
            )
        if prefix:
            await self._collect_alarms(
                target,
                found,
                {"AlarmNamePrefix": prefix, "AlarmTypes": list(ALARM_TYPES), "MaxRecords": ALARMS_PER_PAGE},
            )
        return tuple(found.values())

    async def _collect_alarms(
        self, target: Target, found: dict[str, AlarmReading], request: DescribeAlarmsInputTypeDef
    ) -> None:
        """Read every page of one DescribeAlarms request into ``found``, first sighting kept."""
        while True:
            page = await self._describe_alarms_page(target, request)
            for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                name = alarm.get("AlarmName", "")
                if name and name not in found:
                    found[name] = AlarmReading(
                        name=name, state=alarm.get("StateValue", ""), reason=alarm.get("StateReason", "")
                    )
            next_token = page.get("NextToken")
            if not next_token:
                return
            request = {**request, "NextToken": next_token}

    async def _get_metric_data_page(
        self, target: Target, request: GetMetricDataInputTypeDef
    ) -> GetMetricDataOutputTypeDef:
        with translated("GetMetricData", not_found=AwsError):
            answer = await self._clients.call(
                "cloudwatch", target.region, target.role_arn, "GetMetricData", request
            )
        return cast("GetMetricDataOutputTypeDef", answer)

    async def _describe_alarms_page(
        self, target: Target, request: DescribeAlarmsInputTypeDef
    ) -> DescribeAlarmsOutputTypeDef:
        with translated("DescribeAlarms", not_found=AwsError):
            answer = await self._clients.call(
                "cloudwatch", target.region, target.role_arn, "DescribeAlarms", request
            )
        return cast("DescribeAlarmsOutputTypeDef", answer)


def _metric_data_query(query: MetricQuery) -> MetricDataQueryTypeDef:
    stat: MetricStatTypeDef = {
        "Metric": {
            "Namespace": query.namespace,
            "MetricName": query.metric_name,
            "Dimensions": [{"Name": name, "Value": value} for name, value in query.dimensions],
        },
        "Period": query.period,
        "Stat": query.stat,
    }
    if query.unit is not None:
        # CloudWatch checks the unit's name; the stubs' closed list of names is not repeated here.
        stat["Unit"] = cast("StandardUnitType", query.unit)
    return {"Id": query.id, "MetricStat": stat, "ReturnData": True}


def _check_status(query_id: str, status: str, messages: Sequence[MessageDataTypeDef]) -> None:
    if status in ("Complete", "PartialData"):
        return
    detail = "; ".join(message.get("Value", "") for message in messages) or "no detail"
    text = f"GetMetricData: query {query_id}: {status}: {detail}"
    if status == "Forbidden":
        raise AccessDeniedError(text)
    raise AwsError(text)
