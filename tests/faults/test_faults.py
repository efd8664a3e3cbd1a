"""The fault injector, and the real operator finishing its rollouts while a quarter of its AWS
attempts fail.

The injector's unit tests run on moto in-process (``mock_aws``), whose stub still sees requests
the injector answered: harmless for what they check. The operator's test runs moto as a server,
so that an injected answer keeps its request from moto, as it would from AWS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto import mock_aws
from tests.operator.conftest import Api, OperatorRunner, eventually, rollout

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.cloudwatch import BotoMetricProvider
from lambda_rollouts.aws.errors import translate
from lambda_rollouts.aws.ratelimit import RateLimiter
from lambda_rollouts.errors import AliasConflictError, AwsError, ThrottledError
from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session, seed_demo_function
from lambda_rollouts.sandbox.kube import EmulatorHandle
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.faults import ALL_KINDS, DEFAULT_SERVICES, FaultInjector, FaultKind

from .conftest import RetrySleeps

REGION = "eu-west-1"
# Decisions come from a seeded sequence, one per attempt in the order attempts arrive. Any seed
# faults at least 20% of the first n attempts from n = 80 on; with this one, from n = 40 on (it
# faults at least 24% of them: test_the_seed_of_the_operator_test_faults_a_fifth_of_any_run), so
# the operator's test, which makes fewer than 100 attempts, meets its 20% floor whatever order
# its threads take.
OPERATOR_TEST_SEED = 19

Request = Callable[[Any], Any]


def settings(**fields: Any) -> Settings:
    return Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION, **fields)


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    return sandbox_session(REGION)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def faulty(boto_session: boto3.session.Session) -> Callable[..., AwsClients]:
    """AwsClients whose clients of the three services have ``injector`` attached, unpaced,
    ``attempts`` attempts per call."""

    def make(injector: FaultInjector, attempts: int = 1) -> AwsClients:
        clients = AwsClients(
            settings(),
            session_factory=lambda: boto_session,
            client_config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
            rate_limiter=RateLimiter(),
        )
        for service in DEFAULT_SERVICES:
            injector.attach(service, clients.client(service, REGION))
        return clients

    return make


def outcome(clients: AwsClients, service: str, request: Request) -> str:
    """What the caller saw: "ok", the error code, or the exception's class name."""
    try:
        request(clients.client(service, REGION))
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    except BotoCoreError as error:
        return type(error).__name__
    return "ok"


def list_functions(client: Any) -> Any:
    return client.list_functions()


def get_alias(client: Any) -> Any:
    return client.get_alias(FunctionName="checkout-api", Name="live")


def update_alias(client: Any) -> Any:
    return client.update_alias(FunctionName="checkout-api", Name="live", FunctionVersion="1")


def describe_alarms(client: Any) -> Any:
    return client.describe_alarms()


def get_caller_identity(client: Any) -> Any:
    return client.get_caller_identity()


# -- the injector --------------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_the_same_seed_faults_the_same_attempts_the_same_way(faulty: Callable[..., AwsClients]) -> None:
    def run(seed: int) -> list[str]:
        clients = faulty(FaultInjector(0.3, seed=seed))
        return [outcome(clients, "lambda", list_functions) for _ in range(60)]

    first = run(seed=7)

    assert run(seed=7) == first
    assert run(seed=8) != first
    assert {"ok", "TooManyRequestsException", "ServiceException"} <= set(first)


def test_the_nth_attempt_gets_the_nth_decision_whatever_the_operation() -> None:
    kinds = [kind for kind in ALL_KINDS if kind is not FaultKind.CONFLICT]
    reads, lists = FaultInjector(0.3, seed=3, kinds=kinds), FaultInjector(0.3, seed=3, kinds=kinds)

    def kinds_decided(injector: FaultInjector, service: str, operation: str) -> list[FaultKind | None]:
        decisions = [injector.decide(service, operation) for _ in range(50)]
        return [None if fault is None else fault.kind for fault in decisions]

    assert kinds_decided(reads, "lambda", "GetAlias") == kinds_decided(lists, "cloudwatch", "DescribeAlarms")


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.33, 0.5, 1.0])
def test_rate_of_the_attempts_are_faulted(rate: float) -> None:
    injector = FaultInjector(rate, seed=1)

    for _ in range(2000):
        injector.decide("lambda", "GetAlias")

    assert injector.total_attempts == 2000
    assert injector.total_injected == round(rate * 2000)


@pytest.mark.parametrize(("rate", "seed"), [(0.25, 0), (0.25, 5), (0.1, 2), (0.33, 3)])
def test_every_block_of_twenty_attempts_holds_its_share_of_the_faults(rate: float, seed: int) -> None:
    injector = FaultInjector(rate, seed=seed)

    faulted = [injector.decide("lambda", "GetAlias") is not None for _ in range(1000)]

    for n in range(1, 1001):
        assert sum(faulted[:n]) >= int(rate * 20 * (n // 20) + 1e-9)
    assert any(all(faulted[i : i + 2]) for i in range(999)), "faults can come in a row"


def test_the_seed_of_the_operator_test_faults_a_fifth_of_any_run() -> None:
    injector = FaultInjector(0.25, seed=OPERATOR_TEST_SEED)

    faulted = [injector.decide("lambda", "GetAlias") is not None for _ in range(3000)]

    assert min(sum(faulted[:n]) / n for n in range(40, 3001)) >= 0.24


def test_the_kinds_are_spread_over_the_faults() -> None:
    injector = FaultInjector(0.5, seed=2)

    for _ in range(2000):
        injector.decide("lambda", "UpdateAlias")

    shares = {kind: count / injector.total_injected for kind, count in injector.by_kind().items()}
    assert set(shares) == set(ALL_KINDS)
    assert all(share == pytest.approx(1 / len(ALL_KINDS), abs=0.04) for share in shares.values())


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize(
    ("kind", "service", "request_", "code", "status", "translated"),
    [
        (FaultKind.THROTTLED, "lambda", get_alias, "TooManyRequestsException", 429, ThrottledError),
        (FaultKind.THROTTLED, "cloudwatch", describe_alarms, "Throttling", 400, ThrottledError),
        (FaultKind.THROTTLED, "sts", get_caller_identity, "Throttling", 400, ThrottledError),
        (FaultKind.SERVICE_ERROR, "lambda", get_alias, "ServiceException", None, AwsError),
        (FaultKind.SERVICE_ERROR, "cloudwatch", describe_alarms, "InternalServiceError", None, AwsError),
        (FaultKind.SERVICE_ERROR, "sts", get_caller_identity, "InternalFailure", None, AwsError),
        (FaultKind.CONFLICT, "lambda", update_alias, "ResourceConflictException", 409, AliasConflictError),
        (FaultKind.CONNECTION_RESET, "lambda", get_alias, "ConnectionClosedError", None, AwsError),
        (FaultKind.CONNECTION_RESET, "cloudwatch", describe_alarms, "ConnectionClosedError", None, AwsError),
        (FaultKind.READ_TIMEOUT, "lambda", update_alias, "ReadTimeoutError", None, AwsError),
        (FaultKind.READ_TIMEOUT, "sts", get_caller_identity, "ReadTimeoutError", None, AwsError),
    ],
)
def test_each_kind_reaches_the_caller_as_the_service_would_send_it(
    faulty: Callable[..., AwsClients],
    kind: FaultKind,
    service: str,
    request_: Request,
    code: str,
    status: int | None,
    translated: type[AwsError],
) -> None:
    clients = faulty(FaultInjector(1.0, kinds=[kind]))

    with pytest.raises((ClientError, BotoCoreError)) as raised:
        request_(clients.client(service, REGION))

    error = raised.value
    if isinstance(error, ClientError):
        assert error.response["Error"]["Code"] == code
        sent = error.response["ResponseMetadata"]["HTTPStatusCode"]
        assert sent == status if status is not None else sent in (500, 503)
    else:
        assert type(error).__name__ == code
    assert type(translate(error, operation="x")) is translated


@pytest.mark.usefixtures("aws")
def test_lambdas_throttle_says_when_to_retry(faulty: Callable[..., AwsClients]) -> None:
    clients = faulty(FaultInjector(1.0, kinds=[FaultKind.THROTTLED]))

    with pytest.raises(ClientError) as raised:
        get_alias(clients.client("lambda", REGION))

    assert raised.value.response["retryAfterSeconds"] == "1"  # Lambda's Retry-After header


@pytest.mark.usefixtures("aws")
def test_conflicts_hit_lambdas_writes_only(faulty: Callable[..., AwsClients]) -> None:
    injector = FaultInjector(1.0, kinds=[FaultKind.CONFLICT])
    clients = faulty(injector)

    assert outcome(clients, "lambda", update_alias) == "ResourceConflictException"
    assert outcome(clients, "lambda", get_alias) == "ResourceNotFoundException", "from moto"
    assert outcome(clients, "lambda", list_functions) == "ok"
    assert outcome(clients, "cloudwatch", describe_alarms) == "ok"
    assert injector.injected == {("UpdateAlias", FaultKind.CONFLICT): 1}
    assert injector.total_attempts == 4


@pytest.mark.usefixtures("aws")
def test_only_the_injectors_services_are_faulted(faulty: Callable[..., AwsClients]) -> None:
    clients = faulty(FaultInjector(1.0, kinds=[FaultKind.SERVICE_ERROR], services=["cloudwatch"]))

    assert outcome(clients, "lambda", list_functions) == "ok"
    assert outcome(clients, "sts", get_caller_identity) == "ok"
    assert outcome(clients, "cloudwatch", describe_alarms) == "InternalServiceError"


@pytest.mark.usefixtures("aws")
def test_botocore_retries_the_transient_faults_and_not_the_conflicts(
    faulty: Callable[..., AwsClients], fast_retries: RetrySleeps
) -> None:
    throttled = FaultInjector(1.0, kinds=[FaultKind.THROTTLED])
    outcome(faulty(throttled, attempts=4), "lambda", get_alias)
    conflicted = FaultInjector(1.0, kinds=[FaultKind.CONFLICT])
    outcome(faulty(conflicted, attempts=4), "lambda", update_alias)

    assert throttled.total_attempts == 4
    assert len(fast_retries.asked) == 3, "botocore backed off before each retry"
    assert conflicted.total_attempts == 1


@pytest.mark.usefixtures("aws")
async def test_a_registered_session_faults_every_client_made_from_it() -> None:
    injector = FaultInjector(1.0, kinds=[FaultKind.READ_TIMEOUT], services=["lambda", "cloudwatch"])
    session = sandbox_session(REGION)
    injector.register(session)
    clients = AwsClients(
        settings(),
        session_factory=lambda: session,
        client_config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        rate_limiter=RateLimiter(),
    )

    with pytest.raises(BotoCoreError):
        await clients.call("lambda", REGION, None, "ListFunctions")
    with pytest.raises(BotoCoreError):
        await clients.call("cloudwatch", REGION, None, "DescribeAlarms")
    answer = await clients.call("sts", REGION, None, "GetCallerIdentity")

    assert answer["Account"] == "123456789012", "not one of the injector's services"
    assert injector.by_operation() == {"ListFunctions": 1, "DescribeAlarms": 1}
    assert clients.attempts == {"ListFunctions": 1, "DescribeAlarms": 1, "GetCallerIdentity": 1}


def test_a_disabled_injector_counts_attempts_and_injects_nothing() -> None:
    injector = FaultInjector(1.0)
    injector.enabled = False

    assert [injector.decide("lambda", "GetAlias") for _ in range(5)] == [None] * 5
    assert injector.attempts == {"GetAlias": 5}
    assert injector.total_injected == 0


def test_the_peak_is_the_busiest_window_of_the_timeline() -> None:
    times = iter([0.0, 0.1, 0.5, 0.95, 1.2, 1.3, 1.4, 1.45, 3.0])
    injector = FaultInjector(0.0, clock=lambda: next(times))
    for index in range(9):
        injector.decide("cloudwatch" if index == 8 else "lambda", "GetAlias")

    assert injector.peak(1.0) == 6  # 0.5 to 1.45
    assert injector.peak(0.5) == 4  # 0.95 to 1.4: a window holds its start, not its end
    assert injector.peak(1.0, services=["cloudwatch"]) == 1
    assert FaultInjector(0.0).peak() == 0


def test_a_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        FaultInjector(1.5)


# -- the operator under faults -------------------------------------------------------------------

FUNCTIONS = [f"faulty-{index}" for index in range(5)]
CANARY = {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}]}}
ANALYSIS = {"interval": "1m", "metrics": [{"name": "error-rate", "max": 1}], "minInvocations": 20}
# Rollout name -> (function, spec fields, the phase it must end in).
PLANS: dict[str, tuple[str, dict[str, Any], str]] = {
    "canary": (FUNCTIONS[0], {"strategy": CANARY}, "Healthy"),
    "linear": (FUNCTIONS[1], {"strategy": {"linear": {"stepWeight": 25, "interval": "1m"}}}, "Healthy"),
    "all-at-once": (FUNCTIONS[2], {"strategy": {"allAtOnce": {}}}, "Healthy"),
    "analysed": (FUNCTIONS[3], {"strategy": CANARY, "analysis": ANALYSIS}, "Healthy"),
    "failing": (FUNCTIONS[4], {"strategy": CANARY, "analysis": ANALYSIS}, "Degraded"),
}
# Version 2 of this function fails 10% of its invocations: its analysis must roll it back.
FAILING_FUNCTION = FUNCTIONS[4]


@pytest.mark.looptime
async def test_every_rollout_ends_right_while_a_quarter_of_the_aws_attempts_fail(
    api: Api, kube: EmulatorHandle, moto_server: MotoSandbox, fast_retries: RetrySleeps
) -> None:
    endpoint = moto_server.endpoint_url
    session = sandbox_session(REGION)
    for name in FUNCTIONS:
        await asyncio.to_thread(seed_demo_function, endpoint, REGION, name, session=session)
    aws_settings = Settings(
        LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION,
        # Paced, but fast: the pacing's own arithmetic is tested in tests/aws/test_ratelimit.py.
        aws_requests_per_second=200,
        aws_burst=20,
        aws_cloudwatch_requests_per_second=200,
        aws_cloudwatch_burst=20,
    )
    injector = FaultInjector(0.25, seed=OPERATOR_TEST_SEED)

    def injected_session() -> boto3.session.Session:
        # moto's server, named by the session's configuration as the sandbox names it; every
        # client the operator makes from it carries the injector.
        injected = sandbox_session(REGION, endpoint_url=endpoint)
        injector.register(injected)
        return injected

    # On the loop's clock, which looptime moves: the pacing's waits are the loop's sleeps.
    limiter = RateLimiter.from_settings(aws_settings, clock=asyncio.get_running_loop().time)
    clients = AwsClients(aws_settings, session_factory=injected_session, rate_limiter=limiter)
    runner = OperatorRunner(
        kube,
        BotoAliasRouter(aws_settings, clients=clients),
        Settings(default_region=REGION, retry_initial_delay_seconds=5, retry_max_delay_seconds=60),
        metrics=BotoMetricProvider(clients),
    )
    lambda_client = session.client("lambda", region_name=REGION, endpoint_url=endpoint)
    cloudwatch = session.client("cloudwatch", region_name=REGION, endpoint_url=endpoint)

    def alias_of(function: str) -> dict[str, Any]:
        return dict(lambda_client.get_alias(FunctionName=function, Name="live"))

    def publish_metrics() -> None:
        """A minute of Lambda's per-version metrics for the analysed functions, split as their alias."""
        for function in (PLANS["analysed"][0], FAILING_FUNCTION):
            alias = alias_of(function)
            weights = alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
            shares = {alias["FunctionVersion"]: 1 - sum(weights.values()), **weights}
            data: list[Any] = []
            for version, share in shares.items():
                dimensions = [
                    {"Name": "FunctionName", "Value": function},
                    {"Name": "Resource", "Value": f"{function}:live"},
                    {"Name": "ExecutedVersion", "Value": version},
                ]
                invocations = 300 * share
                failing = function == FAILING_FUNCTION and version == "2"
                errors = invocations * (0.1 if failing else 0.0)
                for metric, value in (("Invocations", invocations), ("Errors", errors)):
                    data.append(
                        {
                            "MetricName": metric,
                            "Dimensions": dimensions,
                            "Value": value,
                            "Timestamp": runner.clock(),
                        }
                    )
            cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)

    await runner.start()
    try:
        for name, (function, spec, _) in PLANS.items():
            await api.create(rollout(name=name, version="2", functionName=function, **spec))

        async def all_settled() -> bool:
            await asyncio.to_thread(publish_metrics)
            for name, (_, _, phase) in PLANS.items():
                body = await api.get(name)
                status = (body or {}).get("status", {})
                if status.get("phase") != phase or status.get("observedGeneration") != 1:
                    return False
            return True

        await eventually(all_settled, within=3600, step=20)
    finally:
        await runner.stop()
        await clients.close()

    for name, (function, _, phase) in PLANS.items():
        alias = await asyncio.to_thread(alias_of, function)
        assert not alias.get("RoutingConfig", {}).get("AdditionalVersionWeights"), f"{name} left split"
        assert alias["FunctionVersion"] == ("2" if phase == "Healthy" else "1"), name
    failing = await api.get("failing")
    assert failing is not None
    assert failing["status"]["message"].startswith("analysis failed: error-rate of version 2 was 10%")

    attempts, injected = injector.total_attempts, injector.total_injected
    assert injected / attempts >= 0.2, f"{injected} of {attempts} attempts faulted"
    assert set(injector.by_kind()) >= set(ALL_KINDS) - {FaultKind.CONFLICT}
    assert sum(clients.attempts.values()) > sum(clients.calls.values()), "failed attempts were retried"
