"""The MetricProvider contract, run against both implementations, and what each adds.

``BotoMetricProvider`` runs on moto in-process; ``FakeCloudWatch`` is the in-memory fake. The
contract suite seeds the same Lambda per-version metrics and alarms into each and expects the
same answers, so tests elsewhere may use the fake in place of CloudWatch. moto crashes on
percentile statistics, knows no composite alarms and never throttles: the request shape for those
is checked with botocore's Stubber, errors are injected the same way, and the fake's percentile
arithmetic and strictness are tested on the fake alone.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from lambda_rollouts.analysis import AlarmReading, MetricQuery
from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.cloudwatch import BotoMetricProvider
from lambda_rollouts.aws.metrics import MetricProvider
from lambda_rollouts.errors import (
    AccessDeniedError,
    AwsError,
    InvalidRequestError,
    ThrottledError,
)
from lambda_rollouts.observed import Target
from lambda_rollouts.sandbox.aws import sandbox_session
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.fake_cloudwatch import FakeCloudWatch, MetricDataRequest

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.literals import StateValueType
    from mypy_boto3_cloudwatch.type_defs import MetricDatumTypeDef

REGION = "us-east-1"
FUNCTION = "checkout-api"
RESOURCE = f"{FUNCTION}:live"
TARGET = Target(function_name=FUNCTION, alias="live", region=REGION)
NAMESPACE = "AWS/Lambda"
# Minute-aligned, so the window's periods are the same whether counted from the start (moto) or
# from the epoch (CloudWatch, the fake).
WINDOW_START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(minutes=2)


def version_dimensions(version: str) -> dict[str, str]:
    return {"FunctionName": FUNCTION, "Resource": RESOURCE, "ExecutedVersion": version}


def query(
    query_id: str,
    metric_name: str,
    stat: str,
    dimensions: Mapping[str, str] | None = None,
    *,
    unit: str | None = None,
    period: int = 60,
) -> MetricQuery:
    chosen = version_dimensions("2") if dimensions is None else dimensions
    return MetricQuery(
        id=query_id,
        namespace=NAMESPACE,
        metric_name=metric_name,
        dimensions=tuple(chosen.items()),
        stat=stat,
        period=period,
        unit=unit,
    )


def isolated_settings() -> Settings:
    # By alias: the field reads AWS_REGION, which must not leak in from the shell. Unpaced: the
    # calls made are the provider's alone (pacing, and the account question it needs, are
    # tested in test_ratelimit), and a test without moto sends nothing anywhere.
    return Settings(
        LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION, aws_requests_per_second=0, aws_cloudwatch_requests_per_second=0
    )


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    # One session for the module: it caches the parsed service models, which are slow to load.
    return sandbox_session(REGION)


# -- the contract, on both providers -----------------------------------------------------------


PutMetric = Callable[[str, Mapping[str, str], Sequence[float], datetime, str | None], None]
SetAlarm = Callable[[str, str, str], None]


@dataclass(frozen=True)
class ProviderUnderTest:
    provider: MetricProvider
    put_metric: PutMetric  # metric name, dimensions, values, timestamp, unit
    set_alarm: SetAlarm  # name, state, reason
    calls: Counter[str]


class MotoSeeder:
    """Seeds moto's CloudWatch the way Lambda and an alarm's evaluation would."""

    def __init__(self, session: boto3.session.Session) -> None:
        self.client = session.client("cloudwatch", region_name=REGION)

    def put_metric(
        self,
        metric_name: str,
        dimensions: Mapping[str, str],
        values: Sequence[float],
        timestamp: datetime,
        unit: str | None,
    ) -> None:
        for value in values:  # one datum per value: raw samples, as the fake stores them
            datum: dict[str, Any] = {
                "MetricName": metric_name,
                "Dimensions": [{"Name": name, "Value": item} for name, item in dimensions.items()],
                "Timestamp": timestamp,
                "Value": value,
            }
            if unit is not None:
                datum["Unit"] = unit
            self.client.put_metric_data(Namespace=NAMESPACE, MetricData=[cast("MetricDatumTypeDef", datum)])

    def set_alarm(self, name: str, state: str, reason: str) -> None:
        # moto does not evaluate alarms: create one, then force its state.
        self.client.put_metric_alarm(
            AlarmName=name,
            Namespace=NAMESPACE,
            MetricName="Errors",
            Dimensions=[{"Name": "FunctionName", "Value": FUNCTION}],
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
        self.client.set_alarm_state(
            AlarmName=name, StateValue=cast("StateValueType", state), StateReason=reason
        )


@pytest.fixture(params=["boto-on-moto", "fake"])
def under_test(
    request: pytest.FixtureRequest, boto_session: boto3.session.Session
) -> Iterator[ProviderUnderTest]:
    if request.param == "fake":
        fake = FakeCloudWatch()
        yield ProviderUnderTest(
            provider=fake,
            put_metric=lambda name, dimensions, values, timestamp, unit: fake.put_metric(
                NAMESPACE, name, dimensions, values, timestamp, unit
            ),
            set_alarm=fake.set_alarm,
            calls=fake.calls,
        )
        return
    with mock_aws():
        seeder = MotoSeeder(boto_session)
        clients = AwsClients(isolated_settings(), session_factory=lambda: boto_session)
        yield ProviderUnderTest(
            provider=BotoMetricProvider(clients),
            put_metric=seeder.put_metric,
            set_alarm=seeder.set_alarm,
            calls=clients.calls,
        )


def seed_canary_metrics(under_test: ProviderUnderTest) -> None:
    """Two minutes of a 2-version split, plus samples just outside the window on both sides."""
    minute = timedelta(minutes=1)
    put = under_test.put_metric
    for version, offset in (("2", 0.0), ("1", 1000.0)):
        dims = version_dimensions(version)
        put("Invocations", dims, [1, 1, 1], WINDOW_START + timedelta(seconds=5), "Count")
        put("Invocations", dims, [1, 1], WINDOW_START + minute + timedelta(seconds=30), "Count")
        put("Errors", dims, [0, 1, 0], WINDOW_START + timedelta(seconds=5), "Count")
        put("Errors", dims, [0, 0], WINDOW_START + minute + timedelta(seconds=30), "Count")
        put("Duration", dims, [offset + 100, offset + 200, offset + 300], WINDOW_START, "Milliseconds")
        put(
            "Duration",
            dims,
            [offset + 50, offset + 150],
            WINDOW_START + minute + timedelta(seconds=59),
            "Milliseconds",
        )
        # Outside [start, end): one second before, and at the end itself.
        put("Invocations", dims, [7], WINDOW_START - timedelta(seconds=1), "Count")
        put("Invocations", dims, [9], WINDOW_END, "Count")


async def test_per_version_metrics_are_read_per_period(under_test: ProviderUnderTest) -> None:
    seed_canary_metrics(under_test)
    queries = [
        query("invocations", "Invocations", "Sum"),
        query("errors", "Errors", "Sum"),
        query("durationCount", "Duration", "SampleCount"),
        query("durationSum", "Duration", "Sum"),
        query("stableInvocations", "Invocations", "Sum", version_dimensions("1")),
        query("stableDurationSum", "Duration", "Sum", version_dimensions("1")),
    ]

    values = await under_test.provider.get_metric_data(TARGET, queries, WINDOW_START, WINDOW_END)

    # Newest period first: [12:01, 12:02) then [12:00, 12:01).
    assert dict(values) == {
        "invocations": (2.0, 3.0),
        "errors": (0.0, 1.0),
        "durationCount": (2.0, 3.0),
        "durationSum": (200.0, 600.0),
        "stableInvocations": (2.0, 3.0),
        "stableDurationSum": (2200.0, 3600.0),
    }
    assert under_test.calls["GetMetricData"] == 1, "every query travels in one call"


async def test_only_the_exact_dimension_set_matches(under_test: ProviderUnderTest) -> None:
    seed_canary_metrics(under_test)
    queries = [
        query("functionOnly", "Invocations", "Sum", {"FunctionName": FUNCTION}),
        query("noVersion", "Invocations", "Sum", {"FunctionName": FUNCTION, "Resource": RESOURCE}),
        query(
            "otherAlias", "Invocations", "Sum", {**version_dimensions("2"), "Resource": f"{FUNCTION}:beta"}
        ),
        query("otherVersion", "Invocations", "Sum", version_dimensions("3")),
        query("exact", "Invocations", "Sum"),
    ]
    values = await under_test.provider.get_metric_data(TARGET, queries, WINDOW_START, WINDOW_END)
    assert dict(values) == {
        "functionOnly": (),
        "noVersion": (),
        "otherAlias": (),
        "otherVersion": (),
        "exact": (2.0, 3.0),
    }


async def test_a_query_without_data_answers_an_empty_tuple(under_test: ProviderUnderTest) -> None:
    seed_canary_metrics(under_test)
    queries = [query("throttles", "Throttles", "Sum"), query("invocations", "Invocations", "Sum")]
    values = await under_test.provider.get_metric_data(
        TARGET, queries, WINDOW_START - timedelta(hours=1), WINDOW_START - timedelta(minutes=10)
    )
    assert dict(values) == {"throttles": (), "invocations": ()}


async def test_the_unit_filters_when_set(under_test: ProviderUnderTest) -> None:
    seed_canary_metrics(under_test)
    queries = [
        query("milliseconds", "Duration", "SampleCount", unit="Milliseconds"),
        query("seconds", "Duration", "SampleCount", unit="Seconds"),
    ]
    values = await under_test.provider.get_metric_data(TARGET, queries, WINDOW_START, WINDOW_END)
    assert dict(values) == {"milliseconds": (2.0, 3.0), "seconds": ()}


async def test_no_queries_make_no_call(under_test: ProviderUnderTest) -> None:
    assert await under_test.provider.get_metric_data(TARGET, [], WINDOW_START, WINDOW_END) == {}
    assert under_test.calls["GetMetricData"] == 0


@pytest.fixture
def alarms(under_test: ProviderUnderTest) -> ProviderUnderTest:
    under_test.set_alarm("checkout-api-errors", "ALARM", "Threshold Crossed: 3 errors")
    under_test.set_alarm("checkout-api-latency", "OK", "Threshold not crossed")
    under_test.set_alarm("checkout-api-throttles", "INSUFFICIENT_DATA", "No data")
    under_test.set_alarm("payments-errors", "ALARM", "Threshold Crossed: 1 error")
    return under_test


def by_name(readings: Sequence[AlarmReading]) -> dict[str, AlarmReading]:
    return {reading.name: reading for reading in readings}


async def test_alarms_by_name(alarms: ProviderUnderTest) -> None:
    readings = await alarms.provider.describe_alarms(
        TARGET, names=["checkout-api-errors", "payments-errors", "no-such-alarm"], prefix=None
    )
    assert by_name(readings) == {
        "checkout-api-errors": AlarmReading("checkout-api-errors", "ALARM", "Threshold Crossed: 3 errors"),
        "payments-errors": AlarmReading("payments-errors", "ALARM", "Threshold Crossed: 1 error"),
    }
    assert len(readings) == 2, "a missing alarm is absent, not reported"
    assert alarms.calls["DescribeAlarms"] == 1


async def test_alarms_by_prefix(alarms: ProviderUnderTest) -> None:
    readings = await alarms.provider.describe_alarms(TARGET, names=[], prefix="checkout-api-")
    assert by_name(readings) == {
        "checkout-api-errors": AlarmReading("checkout-api-errors", "ALARM", "Threshold Crossed: 3 errors"),
        "checkout-api-latency": AlarmReading("checkout-api-latency", "OK", "Threshold not crossed"),
        "checkout-api-throttles": AlarmReading("checkout-api-throttles", "INSUFFICIENT_DATA", "No data"),
    }
    assert alarms.calls["DescribeAlarms"] == 1


async def test_alarms_by_name_and_prefix_are_read_once_each(alarms: ProviderUnderTest) -> None:
    readings = await alarms.provider.describe_alarms(
        TARGET, names=["checkout-api-errors", "payments-errors"], prefix="checkout-api-"
    )
    assert sorted(reading.name for reading in readings) == [
        "checkout-api-errors",
        "checkout-api-latency",
        "checkout-api-throttles",
        "payments-errors",
    ]
    assert alarms.calls["DescribeAlarms"] == 2, "one call for the names, one for the prefix"


async def test_a_prefix_matching_nothing_finds_nothing(alarms: ProviderUnderTest) -> None:
    assert await alarms.provider.describe_alarms(TARGET, names=[], prefix="inventory-") == ()


async def test_no_names_and_no_prefix_make_no_call(alarms: ProviderUnderTest) -> None:
    assert await alarms.provider.describe_alarms(TARGET, names=[], prefix=None) == ()
    assert await alarms.provider.describe_alarms(TARGET, names=[], prefix="") == ()
    assert alarms.calls["DescribeAlarms"] == 0


# -- the boto provider: request shape and errors, through botocore's Stubber --------------------


@pytest.fixture
def clients(boto_session: boto3.session.Session) -> AwsClients:
    return AwsClients(isolated_settings(), session_factory=lambda: boto_session)


@pytest.fixture
def stubber(clients: AwsClients) -> Iterator[Stubber]:
    # The provider asks AwsClients for this very client (same service, region, role and config).
    with Stubber(clients.client("cloudwatch", REGION)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def expected_query(query_id: str, metric_name: str, stat: str, unit: str | None = None) -> dict[str, Any]:
    stat_request: dict[str, Any] = {
        "Metric": {
            "Namespace": NAMESPACE,
            "MetricName": metric_name,
            "Dimensions": [
                {"Name": "FunctionName", "Value": FUNCTION},
                {"Name": "Resource", "Value": RESOURCE},
                {"Name": "ExecutedVersion", "Value": "2"},
            ],
        },
        "Period": 60,
        "Stat": stat,
    }
    if unit is not None:
        stat_request["Unit"] = unit
    return {"Id": query_id, "MetricStat": stat_request, "ReturnData": True}


async def test_percentiles_travel_as_the_stat_of_a_metric_stat(clients: AwsClients, stubber: Stubber) -> None:
    expected_params = {
        "MetricDataQueries": [
            expected_query("p99", "Duration", "p99", unit="Milliseconds"),
            expected_query("p999", "Duration", "p99.9"),
            expected_query("invocations", "Invocations", "Sum"),
        ],
        "StartTime": WINDOW_START,
        "EndTime": WINDOW_END,
        "ScanBy": "TimestampDescending",
    }
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {"Id": "p99", "Values": [420.0], "StatusCode": "PartialData"},
                {"Id": "invocations", "Values": [10.0, 12.0], "StatusCode": "PartialData"},
            ],
            "NextToken": "page-2",
        },
        expected_params,
    )
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {"Id": "p99", "Values": [380.0], "StatusCode": "Complete"},
                {"Id": "invocations", "Values": [], "StatusCode": "Complete"},
            ]
        },
        {**expected_params, "NextToken": "page-2"},
    )
    provider = BotoMetricProvider(clients)
    values = await provider.get_metric_data(
        TARGET,
        [
            query("p99", "Duration", "p99", unit="Milliseconds"),
            query("p999", "Duration", "p99.9"),
            query("invocations", "Invocations", "Sum"),
        ],
        WINDOW_START,
        WINDOW_END,
    )
    assert dict(values) == {"p99": (420.0, 380.0), "p999": (), "invocations": (10.0, 12.0)}
    assert clients.calls["GetMetricData"] == 2, "one call per page"


async def test_describe_alarms_asks_for_both_alarm_types_and_reads_composites(
    clients: AwsClients, stubber: Stubber
) -> None:
    both = ["MetricAlarm", "CompositeAlarm"]
    stubber.add_response(
        "describe_alarms",
        {
            "MetricAlarms": [{"AlarmName": "errors", "StateValue": "OK", "StateReason": "fine"}],
            "CompositeAlarms": [{"AlarmName": "health", "StateValue": "ALARM", "StateReason": "child"}],
        },
        {"AlarmNames": ["errors", "health"], "AlarmTypes": both, "MaxRecords": 100},
    )
    stubber.add_response(
        "describe_alarms",
        {
            "MetricAlarms": [{"AlarmName": "checkout-a", "StateValue": "OK"}],
            "CompositeAlarms": [{"AlarmName": "health", "StateValue": "ALARM", "StateReason": "child"}],
            "NextToken": "more",
        },
        {"AlarmNamePrefix": "checkout-", "AlarmTypes": both, "MaxRecords": 100},
    )
    stubber.add_response(
        "describe_alarms",
        {"MetricAlarms": [{"AlarmName": "checkout-b", "StateValue": "INSUFFICIENT_DATA"}]},
        {"AlarmNamePrefix": "checkout-", "AlarmTypes": both, "MaxRecords": 100, "NextToken": "more"},
    )
    readings = await BotoMetricProvider(clients).describe_alarms(
        TARGET, names=["errors", "health"], prefix="checkout-"
    )
    assert readings == (
        AlarmReading("errors", "OK", "fine"),
        AlarmReading("health", "ALARM", "child"),
        AlarmReading("checkout-a", "OK", ""),
        AlarmReading("checkout-b", "INSUFFICIENT_DATA", ""),
    )
    assert clients.calls["DescribeAlarms"] == 3


CLOUDWATCH_ERRORS = [
    ("Throttling", 400, ThrottledError),
    ("ThrottlingException", 400, ThrottledError),
    ("TooManyRequestsException", 429, ThrottledError),
    ("", 429, ThrottledError),
    ("InternalServiceError", 500, AwsError),
    ("InternalServiceFault", 500, AwsError),
    ("", 503, AwsError),
    ("AccessDenied", 403, AccessDeniedError),
    ("AccessDeniedException", 400, AccessDeniedError),
    ("InvalidParameterValue", 400, InvalidRequestError),
    ("InvalidParameterCombination", 400, InvalidRequestError),
    ("ValidationError", 400, InvalidRequestError),
]


@pytest.mark.parametrize(("code", "status", "expected"), CLOUDWATCH_ERRORS)
async def test_get_metric_data_errors_are_translated(
    clients: AwsClients, stubber: Stubber, code: str, status: int, expected: type[AwsError]
) -> None:
    stubber.add_client_error("get_metric_data", service_error_code=code, http_status_code=status)
    with pytest.raises(expected, match="GetMetricData") as caught:
        await BotoMetricProvider(clients).get_metric_data(
            TARGET, [query("invocations", "Invocations", "Sum")], WINDOW_START, WINDOW_END
        )
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, ClientError)
    assert caught.value.transient is (expected in (ThrottledError, AwsError))


@pytest.mark.parametrize(("code", "status", "expected"), CLOUDWATCH_ERRORS)
async def test_describe_alarms_errors_are_translated(
    clients: AwsClients, stubber: Stubber, code: str, status: int, expected: type[AwsError]
) -> None:
    stubber.add_client_error("describe_alarms", service_error_code=code, http_status_code=status)
    with pytest.raises(expected, match="DescribeAlarms") as caught:
        await BotoMetricProvider(clients).describe_alarms(TARGET, names=["errors"], prefix=None)
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, ClientError)


@pytest.mark.parametrize(
    ("status_code", "expected"), [("Forbidden", AccessDeniedError), ("InternalError", AwsError)]
)
async def test_a_failed_query_is_not_mistaken_for_no_data(
    clients: AwsClients, stubber: Stubber, status_code: str, expected: type[AwsError]
) -> None:
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {
                    "Id": "invocations",
                    "Values": [],
                    "StatusCode": status_code,
                    "Messages": [{"Code": status_code, "Value": "not allowed to read AWS/Lambda"}],
                }
            ]
        },
    )
    with pytest.raises(expected, match="not allowed to read") as caught:
        await BotoMetricProvider(clients).get_metric_data(
            TARGET, [query("invocations", "Invocations", "Sum")], WINDOW_START, WINDOW_END
        )
    assert type(caught.value) is expected


def error_answer(code: str, status: int, message: str) -> Callable[..., Any]:
    """A before-call handler answering like AWS with an error, instead of sending the request.

    Typed loosely: botocore uses the response a before-call handler returns, while its stubs say
    handlers return None.
    """

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        }
        return AWSResponse("https://monitoring.invalid", status, HTTPHeaders(), None), parsed

    return answer


async def test_throttling_injected_by_an_event_hook(boto_session: boto3.session.Session) -> None:
    """A before-call hook answering for AWS, as the router's tests inject errors."""
    throttled = error_answer("Throttling", 400, "Rate exceeded")
    clients = AwsClients(isolated_settings(), session_factory=lambda: boto_session)
    clients.client("cloudwatch", REGION).meta.events.register(
        "before-call.cloudwatch.GetMetricData", throttled
    )
    with pytest.raises(ThrottledError, match="Rate exceeded"):
        await BotoMetricProvider(clients).get_metric_data(
            TARGET, [query("invocations", "Invocations", "Sum")], WINDOW_START, WINDOW_END
        )
    assert clients.calls["GetMetricData"] == 1


async def test_an_unreachable_endpoint_is_transient(
    boto_session: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{closed_port}")
    clients = AwsClients(
        isolated_settings(),
        session_factory=lambda: boto_session,
        client_config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(AwsError) as caught:
        await BotoMetricProvider(clients).describe_alarms(TARGET, names=["errors"], prefix=None)
    assert type(caught.value) is AwsError
    assert caught.value.transient


async def test_calls_run_off_the_event_loop(boto_session: boto3.session.Session) -> None:
    threads: list[int] = []
    with mock_aws():
        clients = AwsClients(isolated_settings(), session_factory=lambda: boto_session)
        provider = BotoMetricProvider(clients)

        def record_thread(**_: Any) -> None:
            threads.append(threading.get_ident())

        # On the session before the provider's first call: clients copy its handlers when created.
        boto_session.events.register("before-call.cloudwatch", record_thread)
        try:
            await provider.get_metric_data(
                TARGET, [query("invocations", "Invocations", "Sum")], WINDOW_START, WINDOW_END
            )
            await provider.describe_alarms(TARGET, names=["errors"], prefix="checkout-")
        finally:
            boto_session.events.unregister("before-call.cloudwatch", record_thread)
    assert len(threads) == 3
    assert threading.get_ident() not in threads


async def test_a_target_role_is_assumed_and_refreshed_on_expired_token(
    boto_session: boto3.session.Session,
) -> None:
    role_target = Target(
        function_name=FUNCTION,
        alias="live",
        region=REGION,
        role_arn="arn:aws:iam::123456789012:role/metrics-reader",
    )
    expired = error_answer("ExpiredToken", 403, "The security token included in the request is expired")
    answers = iter([expired])

    def expire_once(**kwargs: Any) -> Any:
        answer = next(answers, None)
        return None if answer is None else answer(**kwargs)

    with mock_aws():
        clients = AwsClients(isolated_settings(), session_factory=lambda: boto_session)
        boto_session.events.register("before-call.cloudwatch.DescribeAlarms", expire_once)
        try:
            readings = await BotoMetricProvider(clients).describe_alarms(
                role_target, names=["errors"], prefix=None
            )
        finally:
            boto_session.events.unregister("before-call.cloudwatch.DescribeAlarms", expire_once)
    assert readings == ()
    assert clients.calls == {"AssumeRole": 2, "DescribeAlarms": 2}


# -- AwsClients: one cache for every AWS adapter ------------------------------------------------


class TestSharedClients:
    def test_clients_are_cached_per_service_region_role_and_config(self, clients: AwsClients) -> None:
        cloudwatch = clients.client("cloudwatch", REGION)
        assert clients.client("cloudwatch", REGION) is cloudwatch
        assert clients.client("cloudwatch", "") is cloudwatch, "an empty region is the default one"
        others = [clients.client("lambda", REGION), clients.client("cloudwatch", "eu-west-1")]
        assert len({id(cloudwatch), *map(id, others)}) == 3

        slow = clients.client("lambda", REGION, config=Config(read_timeout=900))
        assert slow is not clients.client("lambda", REGION)
        assert clients.client("lambda", REGION, config=Config(read_timeout=900)) is slow, "equal values share"
        assert clients.client("lambda", REGION, config=Config(read_timeout=60)) is not slow

    def test_a_per_call_config_overrides_only_what_it_sets(self, clients: AwsClients) -> None:
        # The stubs declare none of Config's options; they are plain instance attributes.
        options = vars(clients.client("lambda", REGION, config=Config(read_timeout=900)).meta.config)
        assert options["read_timeout"] == 900
        assert options["connect_timeout"] == 5, "the project's defaults still apply"
        assert "lambda-rollouts/" in options["user_agent_extra"]

    async def test_the_router_and_the_provider_share_one_cache(
        self, boto_session: boto3.session.Session
    ) -> None:
        with mock_aws():
            clients = AwsClients(isolated_settings(), session_factory=lambda: boto_session)
            router = BotoAliasRouter(isolated_settings(), clients=clients)
            provider = BotoMetricProvider(clients)
            assert router.clients is clients
            assert router.lambda_client(REGION) is clients.client("lambda", REGION)
            await provider.describe_alarms(TARGET, names=["errors"], prefix=None)
            assert router.calls is clients.calls
            assert router.calls["DescribeAlarms"] == 1

    def test_a_shared_cache_refuses_settings_that_would_be_ignored(
        self, clients: AwsClients, boto_session: boto3.session.Session
    ) -> None:
        with pytest.raises(ValueError, match="AwsClients"):
            BotoAliasRouter(isolated_settings(), lambda: boto_session, clients=clients)
        with pytest.raises(ValueError, match="AwsClients"):
            BotoAliasRouter(isolated_settings(), refresh_margin=timedelta(minutes=1), clients=clients)


# -- the fake: CloudWatch's arithmetic and strictness ------------------------------------------


@pytest.fixture
def fake() -> FakeCloudWatch:
    return FakeCloudWatch()


async def read(fake: FakeCloudWatch, *queries: MetricQuery) -> dict[str, tuple[float, ...]]:
    return dict(await fake.get_metric_data(TARGET, queries, WINDOW_START, WINDOW_END))


async def test_fake_statistics_and_nearest_rank_percentiles(fake: FakeCloudWatch) -> None:
    fake.put_metric(NAMESPACE, "Duration", version_dimensions("2"), list(range(100, 0, -1)), WINDOW_START)
    fake.put_metric(
        NAMESPACE,
        "Duration",
        version_dimensions("2"),
        [10.0, 20.0, 30.0],
        WINDOW_START + timedelta(minutes=1),
    )
    values = await read(
        fake,
        query("sum", "Duration", "Sum"),
        query("count", "Duration", "SampleCount"),
        query("average", "Duration", "Average"),
        query("minimum", "Duration", "Minimum"),
        query("maximum", "Duration", "Maximum"),
        query("p50", "Duration", "p50"),
        query("p99", "Duration", "p99"),
        query("p999", "Duration", "p99.9"),
        query("p0", "Duration", "p0"),
        query("p100", "Duration", "p100"),
    )
    assert values == {
        "sum": (60.0, 5050.0),
        "count": (3.0, 100.0),
        "average": (20.0, 50.5),
        "minimum": (10.0, 1.0),
        "maximum": (30.0, 100.0),
        "p50": (20.0, 50.0),
        "p99": (30.0, 99.0),
        "p999": (30.0, 100.0),
        "p0": (10.0, 1.0),
        "p100": (30.0, 100.0),
    }


async def test_fake_periods_start_at_multiples_of_the_period_since_the_epoch(fake: FakeCloudWatch) -> None:
    dims = version_dimensions("2")
    fake.put_metric(NAMESPACE, "Invocations", dims, 1, WINDOW_START + timedelta(seconds=59))
    fake.put_metric(NAMESPACE, "Invocations", dims, 2, WINDOW_START + timedelta(seconds=60))
    fake.put_metric(
        NAMESPACE, "Invocations", dims, 4, WINDOW_START + timedelta(seconds=119, microseconds=999)
    )
    start = WINDOW_START + timedelta(seconds=30)  # not aligned: periods still start on the minute
    values = await fake.get_metric_data(
        TARGET,
        [query("perMinute", "Invocations", "Sum"), query("perFiveMinutes", "Invocations", "Sum", period=300)],
        start,
        start + timedelta(minutes=5),
    )
    assert dict(values) == {"perMinute": (6.0, 1.0), "perFiveMinutes": (7.0,)}


async def test_fake_takes_naive_timestamps_as_utc(fake: FakeCloudWatch) -> None:
    fake.put_metric(NAMESPACE, "Invocations", version_dimensions("2"), 1, WINDOW_START.replace(tzinfo=None))
    values = await fake.get_metric_data(
        TARGET, [query("invocations", "Invocations", "Sum")], WINDOW_START.replace(tzinfo=None), WINDOW_END
    )
    assert dict(values) == {"invocations": (1.0,)}


async def test_fake_query_without_dimensions_does_not_match_dimensioned_metrics(fake: FakeCloudWatch) -> None:
    fake.put_metric(NAMESPACE, "Invocations", version_dimensions("2"), 1, WINDOW_START)
    fake.put_metric(NAMESPACE, "Invocations", {}, 5, WINDOW_START)
    assert await read(fake, query("plain", "Invocations", "Sum", {})) == {"plain": (5.0,)}


async def test_fake_records_each_request(fake: FakeCloudWatch) -> None:
    invocations = query("invocations", "Invocations", "Sum")
    await fake.get_metric_data(TARGET, [invocations], WINDOW_START, WINDOW_END)
    with pytest.raises(InvalidRequestError):
        await fake.get_metric_data(TARGET, [invocations, invocations], WINDOW_START, WINDOW_END)
    assert fake.requests == [
        MetricDataRequest(queries=(invocations,), start=WINDOW_START, end=WINDOW_END),
        MetricDataRequest(queries=(invocations, invocations), start=WINDOW_START, end=WINDOW_END),
    ]
    assert dict(fake.requests[0].queries[0].dimensions) == version_dimensions("2")
    assert fake.calls == {"GetMetricData": 2}


async def test_fake_fail_next_fails_one_call(fake: FakeCloudWatch) -> None:
    fake.set_alarm("errors", "OK")
    fake.fail_next("DescribeAlarms", ThrottledError("DescribeAlarms: Throttling: Rate exceeded"))
    fake.fail_next("GetMetricData", AwsError("GetMetricData: 500"))
    with pytest.raises(ThrottledError):
        await fake.describe_alarms(TARGET, names=["errors"], prefix=None)
    assert await fake.describe_alarms(TARGET, names=["errors"], prefix=None) == (
        AlarmReading("errors", "OK"),
    )
    with pytest.raises(AwsError):
        await read(fake, query("invocations", "Invocations", "Sum"))
    assert await read(fake, query("invocations", "Invocations", "Sum")) == {"invocations": ()}
    assert fake.calls == {"DescribeAlarms": 2, "GetMetricData": 2}
    with pytest.raises(ValueError, match="GetMetricData"):
        fake.fail_next("GetMetricStatistics", AwsError("never"))


async def test_fake_pages_a_prefix_by_hundreds(fake: FakeCloudWatch) -> None:
    for number in range(250):
        fake.set_alarm(f"checkout-{number:03}", "OK")
    readings = await fake.describe_alarms(TARGET, names=[], prefix="checkout-")
    assert len(readings) == 250
    assert fake.calls["DescribeAlarms"] == 3


async def test_fake_deleted_alarms_are_gone(fake: FakeCloudWatch) -> None:
    fake.set_alarm("errors", "ALARM", "3 errors")
    fake.delete_alarm("errors")
    assert await fake.describe_alarms(TARGET, names=["errors"], prefix=None) == ()
    with pytest.raises(ValueError, match="does not exist"):
        fake.delete_alarm("errors")


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        ([query(f"q{number}", "Invocations", "Sum") for number in range(501)], "at most 500"),
        ([query("same", "Invocations", "Sum"), query("same", "Errors", "Sum")], "more than once"),
        ([query("Invocations", "Invocations", "Sum")], "lowercase"),
        ([query("with-dash", "Invocations", "Sum")], "lowercase"),
        ([query("zero", "Invocations", "Sum", period=0)], "period"),
        ([query("negative", "Invocations", "Sum", period=-60)], "period"),
        ([query("odd", "Invocations", "Sum", period=45)], "period"),
        ([query("ninety", "Invocations", "Sum", period=90)], "period"),
        ([query("median", "Invocations", "Median")], "statistic"),
        ([query("trimmed", "Duration", "tm99")], "statistic"),
        ([query("tooPrecise", "Duration", "p99.999")], "statistic"),
        ([query("overHundred", "Duration", "p101")], "statistic"),
        ([query("unit", "Duration", "Sum", unit="Millis")], "unit"),
        (
            [
                MetricQuery(
                    id="twice",
                    namespace=NAMESPACE,
                    metric_name="Invocations",
                    dimensions=(("FunctionName", FUNCTION), ("FunctionName", "other")),
                    stat="Sum",
                    period=60,
                )
            ],
            "named more than once",
        ),
    ],
)
async def test_fake_refuses_what_cloudwatch_refuses(
    fake: FakeCloudWatch, queries: list[MetricQuery], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await fake.get_metric_data(TARGET, queries, WINDOW_START, WINDOW_END)
    assert fake.calls["GetMetricData"] == 1, "a refused call is still a call"


@pytest.mark.parametrize("period", [1, 5, 10, 30, 60, 120, 300, 3600])
async def test_fake_accepts_cloudwatch_periods(fake: FakeCloudWatch, period: int) -> None:
    assert await read(fake, query("invocations", "Invocations", "Sum", period=period)) == {"invocations": ()}


async def test_fake_refuses_an_empty_or_inverted_window(fake: FakeCloudWatch) -> None:
    invocations = [query("invocations", "Invocations", "Sum")]
    with pytest.raises(InvalidRequestError, match="before EndTime"):
        await fake.get_metric_data(TARGET, invocations, WINDOW_START, WINDOW_START)
    with pytest.raises(InvalidRequestError, match="before EndTime"):
        await fake.get_metric_data(TARGET, invocations, WINDOW_END, WINDOW_START)


async def test_fake_refuses_more_than_100_alarm_names(fake: FakeCloudWatch) -> None:
    names = [f"alarm-{number}" for number in range(101)]
    with pytest.raises(InvalidRequestError, match="at most 100"):
        await fake.describe_alarms(TARGET, names=names, prefix=None)
    assert await fake.describe_alarms(TARGET, names=names[:100], prefix=None) == ()


def test_fake_seeding_refuses_what_cloudwatch_would(fake: FakeCloudWatch) -> None:
    dims = version_dimensions("2")
    with pytest.raises(ValueError, match="finite"):
        fake.put_metric(NAMESPACE, "Duration", dims, float("nan"), WINDOW_START)
    with pytest.raises(ValueError, match="unit"):
        fake.put_metric(NAMESPACE, "Duration", dims, 1.0, WINDOW_START, unit="Millis")
    with pytest.raises(ValueError, match="dimensions"):
        fake.put_metric(NAMESPACE, "Duration", {f"d{n}": "x" for n in range(31)}, 1.0, WINDOW_START)
    with pytest.raises(ValueError, match="empty"):
        fake.put_metric(NAMESPACE, "Duration", {"FunctionName": ""}, 1.0, WINDOW_START)
    with pytest.raises(ValueError, match="state"):
        fake.set_alarm("errors", "FIRING")
