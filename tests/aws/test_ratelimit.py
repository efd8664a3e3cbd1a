"""The token buckets that pace AWS requests, alone and inside AwsClients.

Time is a fake clock that only the buckets' sleeper moves: every wait is exact and instant.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from lambda_rollouts.aws.clients import AwsClients, default_client_config
from lambda_rollouts.aws.ratelimit import Limit, RateLimiter, TokenBucket, account_of
from lambda_rollouts.sandbox.aws import sandbox_session
from lambda_rollouts.settings import Settings

REGION = "eu-west-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/rollouts"


class FakeClock:
    """Seconds that pass only when someone sleeps; thread-safe."""

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds


class GatedSleeper:
    """Holds the head of the line (``waiting`` is set) until ``release`` is set, then sleeps on ``clock``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waiting = threading.Event()
        self.release = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.waiting.set()
        assert self.release.wait(5)
        self.clock.sleep(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings(**fields: Any) -> Settings:
    """Settings with the class defaults for the AWS fields, whatever the environment says."""
    aws_fields = {
        name: field.default for name, field in Settings.model_fields.items() if name.startswith("aws_")
    }
    # By alias: the fields read AWS_ENDPOINT_URL and AWS_REGION, which must not leak in from the shell.
    aws_fields |= {"LAMBDA_ROLLOUTS_AWS_ENDPOINT_URL": None}
    aws_fields.pop("aws_endpoint_url")
    return Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION, **(aws_fields | fields))


# -- the bucket ----------------------------------------------------------------------------------


def test_a_full_bucket_grants_its_burst_at_once_then_one_token_per_interval(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=5, burst=2, clock=clock, sleeper=clock.sleep)

    granted_at = []
    for _ in range(5):
        bucket.acquire()
        granted_at.append(clock())

    assert granted_at == pytest.approx([0.0, 0.0, 0.2, 0.4, 0.6])


def test_acquire_returns_how_long_it_waited(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4, burst=1, clock=clock, sleeper=clock.sleep)

    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.25)


def test_an_idle_bucket_banks_no_more_than_its_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=3, clock=clock, sleeper=clock.sleep)
    for _ in range(3):
        bucket.acquire()
    clock.sleep(60)  # idle for a minute: 600 tokens' worth of time

    assert bucket.available == pytest.approx(3)
    started = clock()
    for _ in range(4):
        bucket.acquire()
    assert clock() - started == pytest.approx(0.1), "three banked tokens, then one wait"


def test_a_bucket_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=1, burst=0)


def test_a_waiting_thread_blocks_until_its_token_is_due(clock: FakeClock) -> None:
    gate = GatedSleeper(clock)
    bucket = TokenBucket(rate=2, burst=1, clock=clock, sleeper=gate.sleep)
    bucket.acquire()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (bucket.acquire(), done.set()))
    worker.start()

    assert gate.waiting.wait(5)
    assert not done.wait(0.05), "no token is due before the sleeper returns"
    gate.release.set()
    worker.join(5)
    assert done.is_set()
    assert clock() == pytest.approx(0.5)


def test_threads_are_served_one_token_per_interval_in_arrival_order(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=2, clock=clock, sleeper=clock.sleep)
    granted_at: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def take() -> None:
        start.wait()
        bucket.acquire()
        with lock:
            granted_at.append(clock())

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    assert sorted(granted_at) == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # Only the first in line sleeps, once per token: nobody spins and nobody sleeps in parallel.
    assert clock.sleeps == pytest.approx([0.1] * 6)


def test_callers_are_served_in_the_order_they_came(clock: FakeClock) -> None:
    gate = GatedSleeper(clock)
    bucket = TokenBucket(rate=1, burst=1, clock=clock, sleeper=gate.sleep)
    bucket.acquire()
    served: list[str] = []
    threads = []
    for name in "ABCD":
        thread = threading.Thread(target=lambda name=name: (bucket.acquire(), served.append(name)))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # so that each one is in line before the next comes
    gate.release.set()
    for thread in threads:
        thread.join(5)

    assert served == ["A", "B", "C", "D"]


def test_try_acquire_takes_a_free_token_and_never_waits(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4, burst=2, clock=clock, sleeper=clock.sleep)

    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    assert clock.sleeps == []
    clock.sleep(0.25)
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_try_acquire_does_not_jump_the_line(clock: FakeClock) -> None:
    gate = GatedSleeper(clock)
    bucket = TokenBucket(rate=1, burst=2, clock=clock, sleeper=gate.sleep)
    bucket.acquire()
    bucket.acquire()
    waiting = threading.Thread(target=bucket.acquire)
    waiting.start()
    time.sleep(0.05)  # in line, waiting for the next token
    clock.sleep(5)  # tokens are due, but the caller in line comes first
    assert not bucket.try_acquire()
    gate.release.set()
    waiting.join(5)
    assert bucket.try_acquire(), "the line is empty again, and tokens are left"


def test_the_limiter_counts_what_try_acquire_grants(clock: FakeClock) -> None:
    limiter = RateLimiter({"lambda": Limit(rate=1, burst=1)}, clock=clock, sleeper=clock.sleep)
    key = ("default", REGION, "lambda")

    assert limiter.try_acquire("default", REGION, "lambda", "GetAlias")
    assert not limiter.try_acquire("default", REGION, "lambda", "GetAlias")
    assert limiter.try_acquire("default", REGION, "lambda", "Invoke"), "not paced"
    assert limiter.try_acquire("default", REGION, "sts", "AssumeRole"), "no limit: not paced"
    assert limiter.granted[key] == 1
    assert limiter.waited[key] == 0.0


def test_a_caller_that_leaves_the_line_by_an_exception_gives_its_place_up(clock: FakeClock) -> None:
    calls = 0

    def sleeper(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    bucket = TokenBucket(rate=1, burst=1, clock=clock, sleeper=sleeper)
    bucket.acquire()
    with pytest.raises(KeyboardInterrupt):
        bucket.acquire()

    bucket.acquire()  # would wait forever behind the caller that left
    assert clock() == pytest.approx(1.0)


def test_without_a_sleeper_the_bucket_waits_on_its_condition_in_real_time() -> None:
    bucket = TokenBucket(rate=50, burst=1)

    started = time.monotonic()
    for _ in range(4):
        bucket.acquire()

    assert time.monotonic() - started >= 0.055  # three waits of 20 ms, with timer slack


# -- buckets per key -----------------------------------------------------------------------------


def test_each_account_region_and_service_has_a_bucket_of_its_own(clock: FakeClock) -> None:
    limiter = RateLimiter(
        {"lambda": Limit(1, 1), "cloudwatch": Limit(1, 1)}, clock=clock, sleeper=clock.sleep
    )

    for account, region, service in [
        ("default", "eu-west-1", "lambda"),
        ("123456789012", "eu-west-1", "lambda"),
        ("default", "us-east-1", "lambda"),
        ("default", "eu-west-1", "cloudwatch"),
    ]:
        assert limiter.acquire(account, region, service, "Any") == 0.0
    assert clock() == 0.0

    assert limiter.acquire("default", "eu-west-1", "lambda", "GetAlias") == pytest.approx(1.0)
    assert limiter.granted[("default", "eu-west-1", "lambda")] == 2
    assert limiter.waited[("default", "eu-west-1", "lambda")] == pytest.approx(1.0)


def test_the_settings_give_lambda_and_sts_the_control_plane_rate_and_cloudwatch_its_own() -> None:
    limiter = RateLimiter.from_settings(
        settings(
            aws_requests_per_second=7,
            aws_burst=3,
            aws_cloudwatch_requests_per_second=20,
            aws_cloudwatch_burst=15,
        )
    )

    assert limiter.limit_for("lambda") == Limit(7, 3)
    assert limiter.limit_for("sts") == Limit(7, 3)
    assert limiter.limit_for("cloudwatch") == Limit(20, 15)
    assert limiter.bucket("default", REGION, "lambda") is not limiter.bucket("default", REGION, "sts")


def test_the_defaults_stay_well_under_lambdas_shared_quota() -> None:
    defaults = settings()

    assert defaults.aws_requests_per_second == 10.0 < 15
    assert defaults.aws_burst == 10
    assert defaults.aws_cloudwatch_requests_per_second == 20.0 < 50


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (10, 0)])
def test_a_rate_or_burst_of_zero_or_less_turns_pacing_off(rate: float, burst: int, clock: FakeClock) -> None:
    limiter = RateLimiter.from_settings(
        settings(aws_requests_per_second=rate, aws_burst=burst), clock=clock, sleeper=clock.sleep
    )

    for _ in range(100):
        assert limiter.acquire("default", REGION, "lambda", "GetAlias") == 0.0
    assert limiter.bucket("default", REGION, "lambda") is None
    assert not limiter.granted


def test_invoke_is_not_paced_with_the_control_plane(clock: FakeClock) -> None:
    limiter = RateLimiter({"lambda": Limit(1, 1)}, clock=clock, sleeper=clock.sleep)

    for _ in range(5):
        limiter.acquire("default", REGION, "lambda", "Invoke")

    assert clock() == 0.0
    assert not limiter.granted


@pytest.mark.parametrize(
    ("role_arn", "account"),
    [
        (None, "default"),
        ("", "default"),
        ("arn:aws:iam::123456789012:role/rollouts", "123456789012"),
        ("arn:aws-us-gov:iam::210987654321:role/path/to/role", "210987654321"),
        ("not-an-arn", "not-an-arn"),
    ],
)
def test_the_account_of_a_role(role_arn: str | None, account: str) -> None:
    assert account_of(role_arn) == account


# -- inside AwsClients ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    return sandbox_session(REGION)


@pytest.fixture
def paced(boto_session: boto3.session.Session, clock: FakeClock) -> Callable[..., AwsClients]:
    def make(client_config: Config | None = None, **fields: Any) -> AwsClients:
        chosen = settings(**fields)
        return AwsClients(
            chosen,
            session_factory=lambda: boto_session,
            client_config=client_config,
            rate_limiter=RateLimiter.from_settings(chosen, clock=clock, sleeper=clock.sleep),
        )

    return make


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.mark.usefixtures("aws")
def test_aws_clients_pace_every_request(paced: Callable[..., AwsClients], clock: FakeClock) -> None:
    clients = paced(aws_requests_per_second=5, aws_burst=1)

    for _ in range(10):
        clients.call("lambda", REGION, None, lambda client: client.list_functions())

    assert clock() == pytest.approx(1.8), "one token at once, then one every 0.2 s"
    assert clients.rate_limiter.granted == {("default", REGION, "lambda"): 10}


@pytest.mark.usefixtures("aws")
def test_a_roles_requests_are_paced_in_the_roles_account_and_assume_role_in_the_operators(
    paced: Callable[..., AwsClients],
) -> None:
    clients = paced()

    clients.call("lambda", REGION, ROLE_ARN, lambda client: client.list_functions())
    clients.call("lambda", REGION, None, lambda client: client.list_functions())

    assert clients.rate_limiter.granted == {
        ("default", REGION, "sts"): 1,
        ("123456789012", REGION, "lambda"): 1,
        ("default", REGION, "lambda"): 1,
    }


@pytest.mark.usefixtures("aws")
def test_metric_reads_never_wait_for_alias_writes(paced: Callable[..., AwsClients], clock: FakeClock) -> None:
    clients = paced(aws_requests_per_second=0.5, aws_burst=1)
    clients.call("lambda", REGION, None, lambda client: client.list_functions())

    for _ in range(5):
        clients.call("cloudwatch", REGION, None, lambda client: client.describe_alarms())

    assert clock() == 0.0, "the control-plane bucket is empty, CloudWatch's is not"


def failing_attempts(count: int, seen: list[str]) -> Callable[..., AWSResponse | None]:
    """A before-send handler that answers the first ``count`` attempts with a 500."""

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        seen.append(request.url)
        if len(seen) > count:
            return None
        headers = HTTPHeaders()
        headers["x-amzn-errortype"] = "ServiceException"
        body = json.dumps({"Type": "Service", "message": "injected"}).encode()
        return AWSResponse(request.url, 500, headers, _Body(body))

    return answer


class _Body:
    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._content


@pytest.mark.usefixtures("aws")
def test_botocores_retries_take_tokens_too(paced: Callable[..., AwsClients], clock: FakeClock) -> None:
    clients = paced(aws_requests_per_second=5, aws_burst=1)
    client = clients.client("lambda", REGION)
    seen: list[str] = []
    client.meta.events.register("before-send.lambda.ListFunctions", failing_attempts(2, seen))

    client.list_functions()

    assert len(seen) == 3, "two 500s, then the answer"
    assert clients.rate_limiter.granted == {("default", REGION, "lambda"): 3}
    assert clients.attempts == {"ListFunctions": 3}
    assert clients.calls == {"ListFunctions": 1}
    assert clock() == pytest.approx(0.4), "the retries waited for their tokens"


@pytest.mark.usefixtures("aws")
def test_the_default_config_makes_aws_max_attempts_attempts_in_all(paced: Callable[..., AwsClients]) -> None:
    clients = paced(aws_max_attempts=3)
    client = clients.client("lambda", REGION)
    seen: list[str] = []
    client.meta.events.register("before-send.lambda.ListFunctions", failing_attempts(99, seen))

    with pytest.raises(ClientError, match="ServiceException"):
        client.list_functions()

    assert len(seen) == 3
    assert clients.attempts == {"ListFunctions": 3}


@pytest.mark.usefixtures("aws")
def test_the_retry_mode_comes_from_the_settings(paced: Callable[..., AwsClients]) -> None:
    standard = paced().client("lambda", REGION).meta.config.retries
    adaptive = paced(aws_retry_mode="adaptive").client("lambda", REGION).meta.config.retries

    assert standard == {"mode": "standard", "total_max_attempts": 4}
    assert adaptive == {"mode": "adaptive", "total_max_attempts": 4}


def test_default_client_config_counts_every_attempt() -> None:
    assert default_client_config().retries == {"mode": "standard", "total_max_attempts": 4}
    assert default_client_config(retry_mode="adaptive", max_attempts=2).retries == {
        "mode": "adaptive",
        "total_max_attempts": 2,
    }
