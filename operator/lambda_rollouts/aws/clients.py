"""``AwsClients``: the one way the operator calls AWS: boto3 clients, assumed roles, pacing and
bookkeeping, shared by every AWS adapter.

Contract:
- ``await call(service, region, role_arn, operation, params, config=...)`` makes one API call
  (``operation`` as AWS names it: ``GetAlias``, ``GetMetricData``...) with a cached boto3 client
  and returns botocore's parsed answer, with its streaming members (``Invoke``'s ``Payload``) read
  whole. The blocking part (making the client, the request and botocore's retries, reading the
  answer) runs in a worker thread; nothing blocks the event loop. botocore's exceptions are raised
  as botocore raised them: translating them is the caller's job, since only the caller knows what
  "not found" means for its request. An empty region means ``settings.default_region``.
- Everything about reaching AWS is botocore's, from its standard configuration (environment
  variables, shared config files, the session): the operator's own credentials and their refresh,
  retries (``standard`` and ``adaptive``), proxies, ``AWS_CA_BUNDLE`` / ``ca_bundle``, FIPS and
  dual-stack endpoints, and endpoint resolution. The operator passes no endpoint URL, so
  ``AWS_ENDPOINT_URL_LAMBDA``, ``AWS_ENDPOINT_URL_CLOUDWATCH`` and ``AWS_ENDPOINT_URL_STS`` win over
  ``AWS_ENDPOINT_URL`` as in every AWS SDK.
- Clients are cached per (service, region, role ARN, the values of the effective client config):
  the config is ``default_client_config()`` (or the constructor's ``client_config``) merged with the
  call's ``config``, whose explicitly set options win. ``client(service, region, config=...)``
  returns the cached client of the operator's own credentials (blocking: for botocore's Stubber
  and for inspection).
- A ``role_arn`` is served with credentials from STS ``AssumeRole`` (session name
  ``lambda-rollouts``, lifetime ``settings.assume_role_session_seconds``), asked with the
  operator's own credentials in the call's region. They are reused until ``refresh_margin`` before
  they expire, then assumed again, which also replaces the clients built with the old ones. One
  ``AssumeRole`` per role at a time: concurrent calls await the same answer, and no lock is held
  while it is out. A call refused with ``ExpiredToken`` drops them and is made once more with fresh
  ones; ``forget_credentials`` drops them at once. A role that cannot be assumed raises the
  project's ``AwsError`` family.
- Pacing (``lambda_rollouts.aws.ratelimit``): every HTTP attempt takes a token from the bucket of
  (account, region, service) of ``rate_limiter`` (by default ``RateLimiter.from_settings``). The
  account is the role's, from its ARN, for a ``role_arn``; for the operator's own credentials it is
  the one their provider names (botocore's ``account_id``) or else STS ``GetCallerIdentity``,
  learnt once and only when a paced call needs it. So the operator's own role and a
  ``spec.roleArn`` in the same account share one quota. Should neither answer, the own
  credentials' calls are paced under ``UNKNOWN_ACCOUNT`` (a warning says so) and the question is
  asked again after ``ACCOUNT_RETRY_SECONDS``. ``AssumeRole`` is paced in the operator's own
  account's STS bucket.
  The first attempt of a call takes its token on the event loop before the call goes to a worker
  thread: its wait is asyncio's, holds no thread, and ends when the awaiting task is cancelled.
  Each of botocore's retries takes its token in ``before-send`` (which fires once per attempt;
  the handler is the first of the service's own), in the worker thread that runs the call and that botocore's
  own backoff holds between attempts anyway; cancelling the call ends that wait too (the call then
  fails with ``PacingCancelledError``). A call cancelled before its thread started gives its token
  back. ``attempts`` counts the attempts by operation, retries included, as each gets its token;
  ``sum(attempts) - sum(calls)`` is the number of botocore retries (answers from the Stubber or
  a ``before-call`` hook make no attempt).
- Lanes: the calls of each bucket (and, apart, each service's unpaced calls: a hook's ``Invoke``
  may take minutes) run in a thread pool of their own, of ``settings.aws_max_concurrent_calls``
  threads, made on first use: the calls of one bucket, waiting for their retries' tokens or for
  slow answers, never hold up those of another. A call waits (on the event loop, cancellably) for
  a free thread of its lane before it takes its token, so that a token is never spent waiting for
  a thread and attempts leave at the pace their tokens were granted. ``close()`` shuts the pools
  down.
- A task cancelled while its call is in flight stops waiting for it at once; a request already
  sent runs to its end in its thread and its answer is dropped.
- Retries: ``default_client_config`` uses botocore's retry ``mode`` (``settings.aws_retry_mode``:
  ``standard`` or ``adaptive``) with ``total_max_attempts`` = ``settings.aws_max_attempts``, every
  attempt counted, the first one included (botocore's ``max_attempts`` key would count retries
  only). What botocore 1.44 does in ``standard`` mode (other releases may differ in detail): it
  retries throttling errors (``TooManyRequestsException``, ``Throttling``..., and a 429 whose code
  the operation's model does not list), 500/502/503/504, ``RequestTimeout``, read timeouts and
  connection errors; it waits rand(0, 1) x min(base x 2^(attempt - 1), 20 s), with base 1 s after
  throttling and 50 ms after other errors, sleeping in the calling thread; and a per-client retry
  quota (500 units, 5 per retry after throttling, 14 per other retry, refunded by successes) stops
  retries during an outage. A 409 or 412 is not retried by botocore: the caller decides (see
  ``lambda_rollouts.aws.errors``). ``adaptive`` adds botocore's own rate limiter per client, which
  starts slowing the client down after its first throttled answer; the buckets above still apply.
- ``calls`` counts API operations by name over every client made here, one per logical call,
  retries by botocore not included, answers injected or failed included (a botocore event hook).
- ``on_call``, when given, is told about every API call once it has an outcome, as
  ``(service, operation, error_code)``: the service name as given to ``call`` (``lambda``,
  ``cloudwatch``, ``sts``), the operation name, and None on success. An error is a response with
  an HTTP status of 300 or more (the error code AWS sent, or the status when it sent none) or a
  request that got no response at all (the exception's class name: ``EndpointConnectionError``,
  ``ReadTimeoutError``, ``NoCredentialsError``...). Once per logical call, after botocore's own
  retries, in the thread that made the call; answers given by ``before-call`` hooks or the
  Stubber count like real ones. Requests refused before they were sent (parameter validation)
  are counted in ``calls`` only. The observer must be quick; an exception it raises is logged and
  never reaches the caller.
- Thread-safe. Locks guard the caches for dictionary operations only, and the boto3 session (not
  thread-safe) while it builds a client, with the operator's credentials resolved beforehand.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import boto3
from botocore import xform_name
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.response import StreamingBody

from lambda_rollouts import __version__
from lambda_rollouts.aws.errors import is_expired_token, translated
from lambda_rollouts.aws.ratelimit import (
    BucketKey,
    Cancellation,
    PacingCancelledError,
    RateLimiter,
    account_of_role,
)
from lambda_rollouts.errors import AwsError
from lambda_rollouts.settings import Settings

if TYPE_CHECKING:
    from botocore.model import OperationModel

SESSION_NAME = "lambda-rollouts"
DEFAULT_REFRESH_MARGIN = timedelta(minutes=5)
# Attempts per API call, the first one included: up to three retries.
DEFAULT_MAX_ATTEMPTS = 4
# The bucket key of the operator's own credentials while their account is unknown, and how long
# until it is asked again.
UNKNOWN_ACCOUNT = "own credentials"
ACCOUNT_RETRY_SECONDS = 600

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SessionFactory = Callable[[], boto3.session.Session]
# (service, operation, error code or None): see ``AwsClients`` and the module docstring.
CallObserver = Callable[[str, str, str | None], None]
# A client config reduced to hashable values, so it can be part of a cache key.
_ConfigKey = tuple[tuple[str, Hashable], ...]
# (account, region, service or "<service> unpaced"): the calls that share a thread pool.
_Lane = tuple[str, str, str]


@dataclass(frozen=True)
class AssumedCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime


@dataclass(frozen=True)
class _CachedClient:
    client: BaseClient
    # The credentials the client was built with; a refresh makes the entry stale.
    credentials: AssumedCredentials | None


@dataclass
class _CallState:
    """One call in its worker thread: the bucket of its attempts, and whether its first token is paid."""

    bucket: BucketKey | None
    prepaid: bool
    cancel: Cancellation = field(default_factory=Cancellation)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False


# The call the current worker thread is making, for the pacing handler.
_current = threading.local()


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_client_config(
    *,
    retry_mode: Literal["standard", "adaptive"] = "standard",
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_pool_connections: int = 32,
) -> Config:
    """The project's client config: botocore's ``retry_mode`` with ``max_attempts`` attempts in all,
    and as many kept connections as calls may be in flight (botocore's default is 10: more
    concurrent calls would open and throw away a connection each)."""
    return Config(
        # total_max_attempts counts every attempt; botocore's max_attempts would count retries only.
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=20,
        user_agent_extra=f"lambda-rollouts/{__version__}",
    )


class AwsClients:
    """Cached boto3 clients, assumed roles, pacing and bookkeeping; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        session_factory: SessionFactory | None = None,
        *,
        clock: Clock = utc_now,
        refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN,
        client_config: Config | None = None,
        on_call: CallObserver | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self._on_call = on_call
        self.rate_limiter = rate_limiter or RateLimiter.from_settings(settings)
        self._session_factory: SessionFactory = session_factory or boto3.session.Session
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._client_config = client_config or default_client_config(
            retry_mode=settings.aws_retry_mode,
            max_attempts=settings.aws_max_attempts,
            max_pool_connections=settings.aws_max_concurrent_calls,
        )
        self._default_config_key = _config_key(self._client_config)
        self.calls: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        # Guards the dictionaries below, for their operations only.
        self._cache_lock = threading.Lock()
        # Held while the boto3 session (not thread-safe) builds a client: CPU and model files only.
        self._session_lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._clients: dict[tuple[str, str, str | None, _ConfigKey], _CachedClient] = {}
        self._pools: dict[_Lane, ThreadPoolExecutor] = {}
        self._lane_slots: dict[_Lane, asyncio.Semaphore] = {}
        self._credentials: dict[str, AssumedCredentials] = {}
        # In flight: the AssumeRole of each role, and the GetCallerIdentity of the own account.
        self._assuming: dict[str, asyncio.Task[AssumedCredentials]] = {}
        self._asking_account: asyncio.Task[str] | None = None
        self._ask_account_again_at = 0.0
        # The account of the operator's own credentials, once learnt.
        self.own_account: str | None = None

    # -- calls ---------------------------------------------------------------------------------

    async def call(
        self,
        service_name: str,
        region: str,
        role_arn: str | None,
        operation: str,
        params: Mapping[str, Any] | None = None,
        *,
        config: Config | None = None,
    ) -> dict[str, Any]:
        """One API call with the service's client for (region, role); see the module docstring."""
        region = region or self.settings.default_region
        arguments = dict(params or {})
        if not role_arn:
            return await self._call_as(service_name, region, None, operation, arguments, config)
        try:
            return await self._call_as(service_name, region, role_arn, operation, arguments, config)
        except ClientError as exc:
            if not is_expired_token(exc):
                raise
            # Assumed credentials can stop working before their stated expiry (the role's session
            # was revoked, the clock is off): the cache would keep handing them out.
            self.forget_credentials(role_arn)
        return await self._call_as(service_name, region, role_arn, operation, arguments, config)

    def client(self, service_name: str, region: str, *, config: Config | None = None) -> BaseClient:
        """The cached client of the operator's own credentials, made if needed. Blocking."""
        return self._client(service_name, region or self.settings.default_region, None, None, config)

    def forget_credentials(self, role_arn: str) -> None:
        """Drop cached credentials for a role, so the next call for it assumes the role again."""
        with self._cache_lock:
            self._credentials.pop(role_arn, None)

    async def close(self) -> None:
        """Shut the thread pools down; calls still running finish in their threads."""
        with self._cache_lock:
            pools, self._pools, self._lane_slots = list(self._pools.values()), {}, {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- one call: its bucket, its token, its thread ---------------------------------------------

    async def _call_as(
        self,
        service_name: str,
        region: str,
        role_arn: str | None,
        operation: str,
        params: dict[str, Any],
        config: Config | None,
    ) -> dict[str, Any]:
        credentials = await self._role_credentials(role_arn, region) if role_arn else None
        paced = self.rate_limiter.paces(service_name, operation)
        # The account keys the buckets: the operator's own is asked for only when a bucket needs it.
        own = await self._own_account() if paced and not role_arn else ""
        account = account_of_role(role_arn) if role_arn else own
        bucket = (account, region, service_name)
        lane = bucket if paced else (account, region, f"{service_name} unpaced")
        state = _CallState(bucket=bucket if paced else None, prepaid=paced)

        def work() -> dict[str, Any]:
            client = self._client(service_name, region, role_arn, credentials, config)
            answer: Mapping[str, Any] = getattr(client, xform_name(operation))(**params)
            return _read_streams(answer)

        return await self._run(lane, state, operation, work)

    async def _run(
        self, lane: _Lane, state: _CallState, operation: str, work: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run ``work`` in the lane's pool once a thread of it is free and the call has its token.

        The free thread comes first, so that a token is never spent waiting for a thread: the
        attempts leave at the pace the tokens were granted, not in bursts when threads free up.
        The thread is the lane's again when the work is over, even if nobody awaits it any more;
        a call cancelled before its work started gives its thread and its token back at once.
        """
        loop = asyncio.get_running_loop()
        slots = self._slots(lane)
        await slots.acquire()
        try:
            if state.bucket is not None:
                await self.rate_limiter.acquire(state.bucket, operation)
        except BaseException:
            slots.release()
            raise

        def job() -> dict[str, Any]:
            with state.lock:
                if state.cancel.is_set:
                    raise PacingCancelledError("the call was cancelled before it started")
                state.started = True
            _current.call = state
            try:
                return work()
            finally:
                _current.call = None
                _call_soon(loop, slots.release)

        try:
            return await loop.run_in_executor(self._pool(lane), job)
        except asyncio.CancelledError:
            with state.lock:
                started = state.started
                state.cancel.set()
            if not started:
                slots.release()
                if state.bucket is not None:
                    self.rate_limiter.refund(state.bucket)
            raise

    def _slots(self, lane: _Lane) -> asyncio.Semaphore:
        """The free threads of a lane's pool, counted on the event loop."""
        with self._cache_lock:
            slots = self._lane_slots.get(lane)
            if slots is None:
                slots = self._lane_slots[lane] = asyncio.Semaphore(self.settings.aws_max_concurrent_calls)
            return slots

    def _pool(self, lane: _Lane) -> ThreadPoolExecutor:
        with self._cache_lock:
            pool = self._pools.get(lane)
            if pool is None:
                pool = ThreadPoolExecutor(
                    max_workers=self.settings.aws_max_concurrent_calls,
                    thread_name_prefix=f"aws-{lane[2].replace(' ', '-')}",
                )
                self._pools[lane] = pool
            return pool

    # -- accounts and credentials --------------------------------------------------------------

    async def _own_account(self) -> str:
        """The account of the operator's own credentials, learnt once (see ``_learn_account``)."""
        if self.own_account is not None:
            return self.own_account
        if time.monotonic() < self._ask_account_again_at:
            return UNKNOWN_ACCOUNT
        task = self._asking_account
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._asking_account = asyncio.ensure_future(self._learn_account())
        return await asyncio.shield(task)

    async def _learn_account(self) -> str:
        """The account botocore's credentials name (``account_id``: environment, SSO, web identity,
        assumed roles), else STS ``GetCallerIdentity``'s. When neither answers, the calls are paced
        under ``UNKNOWN_ACCOUNT`` for ``ACCOUNT_RETRY_SECONDS``, then the question is asked again:
        STS being out of reach must not stop calls that do not need it."""
        region = self.settings.default_region
        lane = ("", region, "sts unpaced")
        loop = asyncio.get_running_loop()
        account = await loop.run_in_executor(self._pool(lane), self._account_of_credentials)
        if account is None:
            try:
                with translated("GetCallerIdentity", not_found=AwsError):
                    answer = await self._call_as("sts", region, None, "GetCallerIdentity", {}, None)
            except AwsError as error:
                logger.warning(
                    "The account of the operator's own AWS credentials is unknown (%s): their calls are "
                    "paced apart from the roles of their account for %d s, then it is asked again.",
                    error.message,
                    ACCOUNT_RETRY_SECONDS,
                )
                self._ask_account_again_at = time.monotonic() + ACCOUNT_RETRY_SECONDS
                return UNKNOWN_ACCOUNT
            account = str(answer["Account"])
        self.own_account = account
        return account

    def _account_of_credentials(self) -> str | None:
        """``account_id`` of the operator's own credentials, when their provider tells. Blocking."""
        credentials = self._base_session().get_credentials()
        if credentials is None:
            return None
        account = credentials.get_frozen_credentials().account_id
        return str(account) if account else None

    async def _role_credentials(self, role_arn: str, region: str) -> AssumedCredentials:
        with self._cache_lock:
            cached = self._credentials.get(role_arn)
        if cached is not None and self._clock() < cached.expiration - self._refresh_margin:
            return cached
        task = self._assuming.get(role_arn)
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._assuming[role_arn] = asyncio.ensure_future(self._assume(role_arn, region))
        return await asyncio.shield(task)

    async def _assume(self, role_arn: str, region: str) -> AssumedCredentials:
        request = {
            "RoleArn": role_arn,
            "RoleSessionName": SESSION_NAME,
            "DurationSeconds": self.settings.assume_role_session_seconds,
        }
        # STS is asked with the operator's own credentials, in the target's region.
        with translated("AssumeRole", not_found=AwsError):
            answer = await self._call_as("sts", region, None, "AssumeRole", request, None)
        issued = answer["Credentials"]
        fresh = AssumedCredentials(
            access_key_id=issued["AccessKeyId"],
            secret_access_key=issued["SecretAccessKey"],
            session_token=issued["SessionToken"],
            expiration=issued["Expiration"],
        )
        with self._cache_lock:
            self._credentials[role_arn] = fresh
        return fresh

    # -- clients (in worker threads) -----------------------------------------------------------

    def _client(
        self,
        service_name: str,
        region: str,
        role_arn: str | None,
        credentials: AssumedCredentials | None,
        config: Config | None,
    ) -> BaseClient:
        if config is None:
            # The common case, on every call: the default config's key is computed once.
            effective, config_key = self._client_config, self._default_config_key
        else:
            effective = self._client_config.merge(config)
            config_key = _config_key(effective)
        key = (service_name, region, role_arn, config_key)
        with self._cache_lock:
            cached = self._clients.get(key)
        if cached is not None and cached.credentials is credentials:
            return cached.client
        client = self._new_client(service_name, region, role_arn, credentials, effective)
        with self._cache_lock:
            cached = self._clients.get(key)
            if cached is not None and cached.credentials is credentials:
                return cached.client  # another thread made one meanwhile: use the same
            self._clients[key] = _CachedClient(client=client, credentials=credentials)
        return client

    def _new_client(
        self,
        service_name: str,
        region: str,
        role_arn: str | None,
        credentials: AssumedCredentials | None,
        config: Config,
    ) -> BaseClient:
        session = self._base_session()
        if credentials is None:
            # Resolved (and cached by botocore) before the session lock is taken: the provider
            # chain may have to ask the instance metadata service or a container endpoint.
            session.get_credentials()
        with self._session_lock:
            # boto3-stubs types Session.client per service name only; the name here is a plain str.
            make_client = cast(Callable[..., BaseClient], session.client)
            client = make_client(
                service_name,
                region_name=region,
                # A copy: botocore rewrites the retry options of the config it is given in place,
                # which would change the cache key of every later ask with the same config.
                config=copy.deepcopy(config),
                aws_access_key_id=credentials.access_key_id if credentials else None,
                aws_secret_access_key=credentials.secret_access_key if credentials else None,
                aws_session_token=credentials.session_token if credentials else None,
            )
        account = account_of_role(role_arn) if role_arn else None
        # On the service's own event (before-send.<service-id>), which botocore calls before every
        # generic before-send handler: an attempt has its token before an emulator or an injected
        # fault answers it, as a real request has. (Handlers on an operation's event,
        # before-send.lambda.GetAlias, still come first.)
        service_id = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register_first(
            f"before-send.{service_id}", self._pacer(service_name, region, account)
        )
        # provide-client-params fires once per API call, before any handler can short-circuit it.
        client.meta.events.register("provide-client-params", self._count_call)
        if self._on_call is not None:
            self._observe_outcomes(client, service_name)
        return client

    def _base_session(self) -> boto3.session.Session:
        with self._session_lock:
            if self._session is None:
                self._session = self._session_factory()
            return self._session

    # -- botocore event handlers ---------------------------------------------------------------

    def _count_call(self, model: OperationModel, **_: Any) -> None:
        with self._counts_lock:
            self.calls[model.name] += 1

    def _pacer(self, service_name: str, region: str, role_account: str | None) -> Callable[..., None]:
        """The before-send handler that paces one client's attempts (see the module docstring)."""
        limiter = self.rate_limiter

        def pace(event_name: str, **_: Any) -> None:
            # before-send.<service-id>.<Operation>
            operation = event_name.rpartition(".")[2]
            state: _CallState | None = getattr(_current, "call", None)
            if state is not None and state.prepaid:
                state.prepaid = False  # the first attempt: its token was taken on the event loop
            elif state is not None and state.bucket is not None:
                limiter.acquire_blocking(state.bucket, operation, state.cancel)
            elif state is None:
                # A client used outside ``call`` (a test, a script): paced all the same.
                account = role_account or self.own_account or ""
                limiter.acquire_blocking((account, region, service_name), operation)
            with self._counts_lock:
                self.attempts[operation] += 1

        return pace

    def _tell(self, service_name: str, operation: str, error_code: str | None) -> None:
        """Tell ``on_call`` how a call ended (see the module docstring); never raises."""
        if self._on_call is None:
            return
        try:
            self._on_call(service_name, operation, error_code)
        except Exception:
            # An observer is bookkeeping: its failure must not fail the AWS call it observed.
            logger.exception("the AWS call observer failed on %s %s", service_name, operation)

    def _observe_outcomes(self, client: BaseClient, service_name: str) -> None:
        """Tell ``on_call`` how each call of ``client`` ended (see the module docstring)."""

        def after_call(
            http_response: Any, parsed: Mapping[str, Any], model: OperationModel, context: Any, **_: Any
        ) -> None:
            # after-call fires for error responses too, just before botocore raises for them.
            if http_response.status_code < 300:
                self._tell(service_name, model.name, None)
                return
            override = context.get("error_code_override") if isinstance(context, Mapping) else None
            error = parsed.get("Error") or {}
            code = override or error.get("Code") or http_response.status_code
            self._tell(service_name, model.name, str(code))

        def after_call_error(exception: BaseException, event_name: str, **_: Any) -> None:
            # Fired when no response came back at all; the operation is only in the event's name
            # (after-call-error.<service-id>.<Operation>).
            self._tell(service_name, event_name.rpartition(".")[2], type(exception).__name__)

        client.meta.events.register("after-call", after_call)
        client.meta.events.register("after-call-error", after_call_error)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """``callback`` on ``loop``, from any thread; nothing once the loop is closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def _read_streams(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The answer with its streaming members read whole (in the worker thread: reading blocks)."""
    return {
        name: value.read() if isinstance(value, StreamingBody) else value for name, value in answer.items()
    }


def _config_key(config: Config) -> _ConfigKey:
    """Every option of a client config (defaults included), as hashable values."""
    return tuple((name, _hashable(getattr(config, name, None))) for name in Config.OPTION_DEFAULTS)


def _hashable(value: object) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((str(key), _hashable(item)) for key, item in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, Hashable):
        return value
    # Unhashable option values (none in botocore today) still tell configs apart by their text.
    return repr(value)
