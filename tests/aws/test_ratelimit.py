"""The token buckets that pace AWS requests, alone and inside AwsClients.

Time is mostly a fake clock that only the buckets' sleeps move: every wait is exact and instant.
Where a wait must really block (a thread, a line of callers), nothing is timed: the tests wait for
events, with generous limits that only stop a broken run from hanging.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from lambda_rollouts.aws.clients import UNKNOWN_ACCOUNT, AwsClients, default_client_config
from lambda_rollouts.aws.ratelimit import (
    Cancellation,
    Limit,
    PacingCancelledError,
    RateLimiter,
    TokenBucket,
    account_of_role,
)
from lambda_rollouts.sandbox.aws import sandbox_session
from lambda_rollouts.settings import Settings

REGION = "eu-west-1"
# moto's account: the operator's own credentials belong to it, as GetCallerIdentity says.
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/rollouts"
OTHER_ROLE_ARN = "arn:aws:iam::210987654321:role/rollouts"
# Generous bounds on waits that must end, so that a broken run fails instead of hanging.
PATIENCE = 30.0


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

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)


class GatedSleep:
    """An async sleep on ``clock`` that holds the first in line until ``release`` is set."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waiting.set()
        await self.release.wait()
        self.clock.sleep(seconds)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, looking every millisecond, at most ``PATIENCE`` seconds."""
    for _ in range(int(PATIENCE / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never came true")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings(**fields: Any) -> Settings:
    """Settings with the class defaults for the AWS fields, whatever the environment says."""
    aws_fields = {
        name: field.default for name, field in Settings.model_fields.items() if name.startswith("aws_")
    }
    # By alias: the field reads AWS_REGION, which must not leak in from the shell.
    return Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION, **(aws_fields | fields))


def bucket_on(clock: FakeClock, rate: float, burst: int) -> TokenBucket:
    return TokenBucket(rate, burst, clock=clock, sleep=clock.async_sleep, sleeper=clock.sleep)


# -- the bucket ----------------------------------------------------------------------------------


async def test_a_full_bucket_grants_its_burst_at_once_then_one_token_per_interval(clock: FakeClock) -> None:
    bucket = bucket_on(clock, rate=5, burst=2)

    granted_at = []
    for _ in range(5):
        await bucket.acquire()
        granted_at.append(clock())

    assert granted_at == pytest.approx([0.0, 0.0, 0.2, 0.4, 0.6])


async def test_acquire_returns_how_long_it_waited(clock: FakeClock) -> None:
    bucket = bucket_on(clock, rate=4, burst=1)

    assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(0.25)


async def test_an_idle_bucket_banks_no_more_than_its_burst(clock: FakeClock) -> None:
    bucket = bucket_on(clock, rate=10, burst=3)
    for _ in range(3):
        await bucket.acquire()
    clock.sleep(60)  # idle for a minute: 600 tokens' worth of time

    assert bucket.available == pytest.approx(3)
    started = clock()
    for _ in range(4):
        await bucket.acquire()
    assert clock() - started == pytest.approx(0.1), "three banked tokens, then one wait"


def test_a_bucket_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=1, burst=0)


async def test_waiting_tasks_are_served_one_token_per_interval_in_arrival_order(clock: FakeClock) -> None:
    bucket = bucket_on(clock, rate=10, burst=2)
    served: list[tuple[int, float]] = []

    async def take(index: int) -> None:
        await bucket.acquire()
        served.append((index, clock()))

    await asyncio.gather(*(take(index) for index in range(8)))

    assert [index for index, _ in served] == list(range(8))
    assert [at for _, at in served] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # Only the first in line sleeps, once per token: nobody spins and nobody sleeps in parallel.
    assert clock.sleeps == pytest.approx([0.1] * 6)


async def test_try_acquire_takes_a_free_token_and_never_waits(clock: FakeClock) -> None:
    bucket = bucket_on(clock, rate=4, burst=2)

    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    assert clock.sleeps == []
    clock.sleep(0.25)
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


async def test_try_acquire_does_not_jump_the_line(clock: FakeClock) -> None:
    gate = GatedSleep(clock)
    bucket = TokenBucket(rate=1, burst=2, clock=clock, sleep=gate)
    await bucket.acquire()
    await bucket.acquire()
    waiting = asyncio.create_task(bucket.acquire())
    await asyncio.wait_for(gate.waiting.wait(), PATIENCE)
    clock.sleep(5)  # tokens are due, but the caller in line comes first

    assert not bucket.try_acquire()
    gate.release.set()
    await asyncio.wait_for(waiting, PATIENCE)
    assert bucket.try_acquire(), "the line is empty again, and tokens are left"


async def test_a_cancelled_wait_leaves_the_line_and_its_token_goes_to_the_next_in_line(
    clock: FakeClock,
) -> None:
    gate = GatedSleep(clock)
    bucket = TokenBucket(rate=1, burst=1, clock=clock, sleep=gate)
    await bucket.acquire()
    cancelled = asyncio.create_task(bucket.acquire())
    await asyncio.wait_for(gate.waiting.wait(), PATIENCE)

    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert bucket.waiting == 0
    gate.release.set()
    waited = await asyncio.wait_for(bucket.acquire(), PATIENCE)

    assert clock() == pytest.approx(1.0), "the next caller got the first token due, not the second"
    assert waited == pytest.approx(1.0)


async def test_a_refund_gives_an_unused_token_back_up_to_the_burst(clock: FakeClock) -> None:
    bucket = bucket_on(clock, rate=1, burst=2)
    await bucket.acquire()
    bucket.refund()
    bucket.refund()

    assert bucket.available == pytest.approx(2)
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]


def test_a_thread_waits_in_the_same_line_on_its_own_sleeper(clock: FakeClock) -> None:
    bucket = bucket_on(clock, rate=4, burst=1)

    assert bucket.acquire_blocking() == 0.0
    assert bucket.acquire_blocking() == pytest.approx(0.25)
    assert clock.sleeps == pytest.approx([0.25])


async def test_threads_and_tasks_share_one_line_in_arrival_order(clock: FakeClock) -> None:
    release = threading.Event()

    def held_sleeper(seconds: float) -> None:
        """The thread first in line waits here until the task has joined the line behind it."""
        assert release.wait(PATIENCE)
        clock.sleep(seconds)

    bucket = TokenBucket(rate=2, burst=1, clock=clock, sleep=clock.async_sleep, sleeper=held_sleeper)
    bucket.acquire_blocking()
    thread_waited: list[float] = []
    worker = threading.Thread(target=lambda: thread_waited.append(bucket.acquire_blocking()))
    worker.start()
    await until(lambda: bucket.waiting == 1)
    task = asyncio.create_task(bucket.acquire())
    await until(lambda: bucket.waiting == 2)

    release.set()
    task_waited = await asyncio.wait_for(task, PATIENCE)
    await asyncio.to_thread(worker.join, PATIENCE)

    # Both came at 0 (the fake clock stood still): the task had the second token, a second later, so
    # the thread had the first. (The thread's own figure may include the task's sleep: the thread
    # reads the shared fake clock after handing the turn on.)
    assert task_waited == pytest.approx(1.0)
    assert thread_waited[0] >= 0.5


def test_a_cancellation_ends_a_threads_wait_and_gives_its_place_up() -> None:
    bucket = TokenBucket(rate=0.001, burst=1)  # the next token is 1,000 s away
    bucket.acquire_blocking()
    cancel = Cancellation()
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            bucket.acquire_blocking(cancel)
        except PacingCancelledError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=wait)
    worker.start()
    for _ in range(int(PATIENCE / 0.001)):
        if bucket.waiting:
            break
        threading.Event().wait(0.001)
    cancel.set()
    worker.join(PATIENCE)

    assert not worker.is_alive()
    assert len(outcome) == 1
    assert bucket.waiting == 0
    with pytest.raises(PacingCancelledError):
        bucket.acquire_blocking(cancel)  # set already: it does not even join the line


async def test_a_waiter_that_leaves_by_an_exception_gives_its_place_up(clock: FakeClock) -> None:
    calls = 0

    async def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    bucket = TokenBucket(rate=1, burst=1, clock=clock, sleep=sleep)
    await bucket.acquire()
    with pytest.raises(KeyboardInterrupt):
        await bucket.acquire()

    await bucket.acquire()  # would wait forever behind the caller that left
    assert clock() == pytest.approx(1.0)


# -- buckets per key -----------------------------------------------------------------------------


async def test_each_account_region_and_service_has_a_bucket_of_its_own(clock: FakeClock) -> None:
    limiter = RateLimiter(
        {"lambda": Limit(1, 1), "cloudwatch": Limit(1, 1)},
        clock=clock,
        sleep=clock.async_sleep,
        sleeper=clock.sleep,
    )

    for key in [
        (ACCOUNT, "eu-west-1", "lambda"),
        ("210987654321", "eu-west-1", "lambda"),
        (ACCOUNT, "us-east-1", "lambda"),
        (ACCOUNT, "eu-west-1", "cloudwatch"),
    ]:
        assert await limiter.acquire(key, "Any") == 0.0
    assert clock() == 0.0

    assert await limiter.acquire((ACCOUNT, "eu-west-1", "lambda"), "GetAlias") == pytest.approx(1.0)
    assert limiter.granted[(ACCOUNT, "eu-west-1", "lambda")] == 2
    assert limiter.waited[(ACCOUNT, "eu-west-1", "lambda")] == pytest.approx(1.0)


def test_the_limiter_counts_what_try_acquire_grants(clock: FakeClock) -> None:
    limiter = RateLimiter({"lambda": Limit(rate=1, burst=1)}, clock=clock)
    key = (ACCOUNT, REGION, "lambda")

    assert limiter.try_acquire(key, "GetAlias")
    assert not limiter.try_acquire(key, "GetAlias")
    assert limiter.try_acquire(key, "Invoke"), "not paced"
    assert limiter.try_acquire((ACCOUNT, REGION, "sts"), "AssumeRole"), "no limit: not paced"
    assert limiter.granted[key] == 1
    assert limiter.waited[key] == 0.0


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
    assert limiter.bucket(ACCOUNT, REGION, "lambda") is not limiter.bucket(ACCOUNT, REGION, "sts")


def test_the_defaults_stay_well_under_lambdas_shared_quota() -> None:
    defaults = settings()

    assert defaults.aws_requests_per_second == 10.0 < 15
    assert defaults.aws_burst == 10
    assert defaults.aws_cloudwatch_requests_per_second == 20.0 < 50


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (10, 0)])
async def test_a_rate_or_burst_of_zero_or_less_turns_pacing_off(rate: float, burst: int) -> None:
    limiter = RateLimiter.from_settings(settings(aws_requests_per_second=rate, aws_burst=burst))

    for _ in range(100):
        assert await limiter.acquire((ACCOUNT, REGION, "lambda"), "GetAlias") == 0.0
    assert limiter.bucket(ACCOUNT, REGION, "lambda") is None
    assert not limiter.paces("lambda", "GetAlias")
    assert not limiter.granted


async def test_invoke_and_the_account_question_are_not_paced(clock: FakeClock) -> None:
    limiter = RateLimiter({"lambda": Limit(1, 1), "sts": Limit(1, 1)}, clock=clock, sleep=clock.async_sleep)

    for _ in range(5):
        await limiter.acquire((ACCOUNT, REGION, "lambda"), "Invoke")
        await limiter.acquire((ACCOUNT, REGION, "sts"), "GetCallerIdentity")

    assert clock() == 0.0
    assert not limiter.granted
    assert limiter.paces("sts", "AssumeRole")


@pytest.mark.parametrize(
    ("role_arn", "account"),
    [
        ("arn:aws:iam::123456789012:role/rollouts", "123456789012"),
        ("arn:aws-us-gov:iam::210987654321:role/path/to/role", "210987654321"),
        ("not-an-arn", "not-an-arn"),
    ],
)
def test_the_account_of_a_role(role_arn: str, account: str) -> None:
    assert account_of_role(role_arn) == account


# -- inside AwsClients ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def boto_session() -> boto3.session.Session:
    return sandbox_session(REGION)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def paced(boto_session: boto3.session.Session, clock: FakeClock) -> Callable[..., AwsClients]:
    """AwsClients paced as the settings say, on the fake clock."""

    def make(client_config: Config | None = None, **fields: Any) -> AwsClients:
        chosen = settings(**fields)
        return AwsClients(
            chosen,
            session_factory=lambda: boto_session,
            client_config=client_config,
            rate_limiter=RateLimiter.from_settings(
                chosen, clock=clock, sleep=clock.async_sleep, sleeper=clock.sleep
            ),
        )

    return make


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
async def test_aws_clients_pace_every_request(paced: Callable[..., AwsClients], clock: FakeClock) -> None:
    clients = paced(aws_requests_per_second=5, aws_burst=1)

    for _ in range(10):
        await clients.call("lambda", REGION, None, "ListFunctions")

    assert clock() == pytest.approx(1.8), "one token at once, then one every 0.2 s"
    assert clients.rate_limiter.granted == {(ACCOUNT, REGION, "lambda"): 10}
    assert clients.attempts == {"GetCallerIdentity": 1, "ListFunctions": 10}


@pytest.mark.usefixtures("aws")
async def test_the_operators_own_role_and_a_role_of_its_account_share_one_quota(
    paced: Callable[..., AwsClients],
) -> None:
    clients = paced()

    await clients.call("lambda", REGION, ROLE_ARN, "ListFunctions")
    await clients.call("lambda", REGION, None, "ListFunctions")
    await clients.call("lambda", REGION, OTHER_ROLE_ARN, "ListFunctions")

    assert clients.own_account == ACCOUNT
    assert clients.rate_limiter.granted == {
        # AssumeRole, twice, with the operator's own credentials: in its own account's STS bucket.
        (ACCOUNT, REGION, "sts"): 2,
        (ACCOUNT, REGION, "lambda"): 2,
        ("210987654321", REGION, "lambda"): 1,
    }
    assert clients.calls["GetCallerIdentity"] == 1, "the account is asked once"


@pytest.mark.usefixtures("aws")
async def test_an_account_named_by_the_credentials_needs_no_question_to_sts() -> None:
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_account_id="210987654321",
        region_name=REGION,
    )
    clients = AwsClients(settings(), session_factory=lambda: session)

    await clients.call("lambda", REGION, None, "ListFunctions")

    assert clients.own_account == "210987654321"
    assert clients.calls == {"ListFunctions": 1}
    assert clients.rate_limiter.granted == {("210987654321", REGION, "lambda"): 1}


@pytest.mark.usefixtures("aws")
async def test_when_sts_cannot_say_the_account_the_calls_go_on_paced_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = sandbox_session(REGION)
    refused = {
        "Error": {"Code": "AccessDenied", "Message": "no"},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    session.events.register(
        "before-call.sts.GetCallerIdentity",
        lambda **_: (AWSResponse("https://sts.invalid", 403, HTTPHeaders(), None), refused),
    )
    clients = AwsClients(settings(), session_factory=lambda: session)

    with caplog.at_level("WARNING", logger="lambda_rollouts.aws.clients"):
        for _ in range(3):
            await clients.call("lambda", REGION, None, "ListFunctions")

    assert clients.own_account is None
    assert clients.calls == {"GetCallerIdentity": 1, "ListFunctions": 3}, "asked once, not per call"
    assert clients.rate_limiter.granted == {(UNKNOWN_ACCOUNT, REGION, "lambda"): 3}
    assert "The account of the operator's own AWS credentials is unknown" in caplog.text


@pytest.mark.usefixtures("aws")
async def test_a_metric_read_never_waits_for_lambdas_empty_bucket() -> None:
    """Lambda's bucket is empty with calls in line for it; a CloudWatch read still goes at once."""
    clients = AwsClients(
        settings(),
        session_factory=sandbox_session,
        rate_limiter=RateLimiter({"lambda": Limit(rate=0.001, burst=1), "cloudwatch": Limit(20, 20)}),
    )
    await clients.call("lambda", REGION, None, "ListFunctions")  # the one token
    in_line = [asyncio.create_task(clients.call("lambda", REGION, None, "ListFunctions")) for _ in range(8)]
    try:
        bucket = clients.rate_limiter.bucket(ACCOUNT, REGION, "lambda")
        assert bucket is not None
        await until(lambda: bucket.waiting == 8)

        answer = await asyncio.wait_for(clients.call("cloudwatch", REGION, None, "DescribeAlarms"), PATIENCE)

        assert answer["MetricAlarms"] == []
        assert not any(task.done() for task in in_line)
        assert clients.rate_limiter.waited[(ACCOUNT, REGION, "cloudwatch")] == 0.0
    finally:
        for task in in_line:
            task.cancel()
        await asyncio.gather(*in_line, return_exceptions=True)
        await clients.close()


@pytest.mark.usefixtures("aws")
async def test_a_call_takes_its_token_only_once_a_thread_of_its_lane_is_free(
    boto_session: boto3.session.Session,
) -> None:
    clients = AwsClients(
        settings(aws_max_concurrent_calls=1),
        session_factory=lambda: boto_session,
        rate_limiter=RateLimiter({"lambda": Limit(rate=0.001, burst=2)}),
    )
    sending, release = threading.Event(), threading.Event()

    def hold_the_first(**_: Any) -> None:
        if not release.is_set():
            sending.set()
            assert release.wait(PATIENCE)

    clients.client("lambda", REGION).meta.events.register("before-send.lambda.ListFunctions", hold_the_first)
    first = asyncio.create_task(clients.call("lambda", REGION, None, "ListFunctions"))
    assert await asyncio.to_thread(sending.wait, PATIENCE), "the first call holds the lane's one thread"
    second = asyncio.create_task(clients.call("lambda", REGION, None, "ListFunctions"))
    await asyncio.sleep(0.05)
    bucket = clients.rate_limiter.bucket(ACCOUNT, REGION, "lambda")
    assert bucket is not None

    assert bucket.available == pytest.approx(1.0, abs=0.01), "the second call has not taken its token"
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), PATIENCE)
    assert clients.rate_limiter.granted == {(ACCOUNT, REGION, "lambda"): 2}
    await clients.close()


@pytest.mark.usefixtures("aws")
async def test_a_cancelled_call_waiting_for_its_token_sends_nothing_and_takes_no_token(
    boto_session: boto3.session.Session, clock: FakeClock
) -> None:
    gate = GatedSleep(clock)
    clients = AwsClients(
        settings(),
        session_factory=lambda: boto_session,
        rate_limiter=RateLimiter({"lambda": Limit(rate=1, burst=1)}, clock=clock, sleep=gate),
    )
    await clients.call("lambda", REGION, None, "ListFunctions")
    cancelled = asyncio.create_task(clients.call("lambda", REGION, None, "ListFunctions"))
    await asyncio.wait_for(gate.waiting.wait(), PATIENCE)

    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gate.release.set()
    await asyncio.wait_for(clients.call("lambda", REGION, None, "ListFunctions"), PATIENCE)

    assert clock() == pytest.approx(1.0), "the next call had the token due first"
    assert clients.calls["ListFunctions"] == 2, "the cancelled call was never made"
    assert clients.rate_limiter.granted == {(ACCOUNT, REGION, "lambda"): 2}


@pytest.mark.usefixtures("aws")
async def test_botocores_retries_take_tokens_too(paced: Callable[..., AwsClients], clock: FakeClock) -> None:
    clients = paced(aws_requests_per_second=5, aws_burst=1)
    seen: list[str] = []
    clients.client("lambda", REGION).meta.events.register(
        "before-send.lambda.ListFunctions", failing_attempts(2, seen)
    )

    await clients.call("lambda", REGION, None, "ListFunctions")

    assert len(seen) == 3, "two 500s, then the answer"
    assert clients.rate_limiter.granted == {(ACCOUNT, REGION, "lambda"): 3}
    assert clients.attempts == {"GetCallerIdentity": 1, "ListFunctions": 3}
    assert clients.calls == {"GetCallerIdentity": 1, "ListFunctions": 1}
    assert clock() == pytest.approx(0.4), "the retries waited for their tokens"


@pytest.mark.usefixtures("aws")
async def test_cancelling_a_call_ends_its_retrys_wait_in_the_worker_thread(
    boto_session: boto3.session.Session,
) -> None:
    ended: list[tuple[str, str | None]] = []
    done = threading.Event()

    def observe(service: str, operation: str, error: str | None) -> None:
        if service == "lambda":
            ended.append((operation, error))
            done.set()

    clients = AwsClients(
        settings(),
        session_factory=lambda: boto_session,
        on_call=observe,
        rate_limiter=RateLimiter({"lambda": Limit(rate=0.001, burst=1)}),  # a retry waits 1,000 s
    )
    seen: list[str] = []
    # First of the generic handlers: after the pacing (on the service's event), before moto's stub.
    clients.client("lambda", REGION).meta.events.register_first("before-send", failing_attempts(1, seen))
    call = asyncio.create_task(clients.call("lambda", REGION, None, "ListFunctions"))
    bucket = clients.rate_limiter.bucket(ACCOUNT, REGION, "lambda")
    assert bucket is not None
    await until(lambda: bucket.waiting == 1)  # the retry is in line, in its thread

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert await asyncio.to_thread(done.wait, PATIENCE), "the thread's wait ended"
    assert ended == [("ListFunctions", "PacingCancelledError")]
    assert bucket.waiting == 0
    assert len(seen) == 1, "no second attempt was sent"
    await clients.close()


@pytest.mark.usefixtures("aws")
async def test_the_default_config_makes_aws_max_attempts_attempts_in_all(
    paced: Callable[..., AwsClients],
) -> None:
    clients = paced(aws_max_attempts=3)
    seen: list[str] = []
    clients.client("lambda", REGION).meta.events.register(
        "before-send.lambda.ListFunctions", failing_attempts(99, seen)
    )

    with pytest.raises(ClientError, match="ServiceException"):
        await clients.call("lambda", REGION, None, "ListFunctions")

    assert len(seen) == 3
    assert clients.attempts["ListFunctions"] == 3


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
