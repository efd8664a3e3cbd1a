"""``AwsClients``: the boto3 session, the client cache and assumed-role credentials, shared.

Contract:
- ``client(service_name, region, role_arn, config=...)`` returns a cached boto3 client. Blocking
  (client creation and credential resolution do I/O): callers run it in a worker thread. The cache
  key is (service, region, role ARN, the values of the effective client config), so two callers
  asking for different timeouts get different clients and equal asks share one. An empty region
  means ``settings.default_region``; ``settings.aws_endpoint_url`` is used when set.
- The effective client config is ``default_client_config()`` (or the ``client_config`` given to
  the constructor) merged with the per-call ``config``, whose explicitly set options win; the
  project's user agent and retry policy therefore apply unless a caller overrides them.
- A ``role_arn`` is served with credentials from STS ``AssumeRole`` (session name
  ``lambda-rollouts``, lifetime ``settings.assume_role_session_seconds``), made with the base
  session's credentials. They are reused until ``refresh_margin`` before they expire, then
  assumed again, which also replaces every cached client built with the old ones.
  ``forget_credentials`` drops them at once; ``call`` does so, and retries once, when a request
  is refused with ``ExpiredToken``.
- ``calls`` counts API operations by name (``GetAlias``, ``GetMetricData``, ``AssumeRole``...)
  over every client made here, one per logical call, retries by botocore not included. It is fed
  by a botocore event hook, so it also sees calls that were injected or failed.
- ``on_call``, when given, is told about every API call once it has an outcome, as
  ``(service, operation, error_code)``: the service name as given to ``client`` (``lambda``,
  ``cloudwatch``, ``sts``), the operation name, and None on success. An error is a response with
  an HTTP status of 300 or more (the error code AWS sent, or the status when it sent none) or a
  request that got no response at all (the exception's class name: ``EndpointConnectionError``,
  ``ReadTimeoutError``, ``NoCredentialsError``...). Once per logical call, after botocore's own
  retries, in the thread that made the call; answers injected by ``before-call`` hooks or the
  Stubber count like real ones. Requests refused before they were sent (parameter validation)
  are counted in ``calls`` only. The observer must be quick; an exception it raises is logged and
  never reaches the caller.
- Pacing: every HTTP attempt of every client made here, botocore's retries included, first takes
  a token (Lambda's data-plane ``Invoke`` excepted, see ``lambda_rollouts.aws.ratelimit``) from
  ``rate_limiter`` (by default ``RateLimiter.from_settings(settings)``), in the bucket
  of (account, region, service): the account is the role's (from its ARN) for a ``role_arn`` and
  ``"default"`` for the operator's own credentials, STS's ``AssumeRole`` included. The token is
  taken in botocore's ``before-send``, which fires once per attempt, so retries are paced like
  first tries and a throttled operator never stampedes the API; a per-call hook (``before-call``)
  would pace only first tries. The wait blocks the calling worker thread, never the event loop.
  Answers given before the request is built (the Stubber, ``before-call`` hooks) take no token.
- ``attempts`` counts HTTP attempts by operation name, retries included, as each one gets its
  token; ``sum(attempts) - sum(calls)`` is the number of botocore retries.
- Retries: ``default_client_config`` uses botocore's retry ``mode`` (``settings.aws_retry_mode``:
  ``standard`` or ``adaptive``) with ``total_max_attempts`` = ``settings.aws_max_attempts``, every
  attempt counted, the first one included (botocore's ``max_attempts`` key would count retries
  only). What botocore 1.44 does in ``standard`` mode (other releases may differ in detail): it
  retries throttling errors (``TooManyRequestsException``, ``Throttling``..., and a 429 whose code
  the operation's model does not list), 500/502/503/504, ``RequestTimeout``, read timeouts and
  connection errors; it waits rand(0, 1) x min(base x 2^(attempt - 1), 20 s), with base 1 s after
  throttling and 50 ms after other errors, sleeping (``time.sleep``, real time) in the calling
  thread; and a per-client retry quota (500 units, 5 per retry after throttling, 14 per other
  retry, refunded by successes) stops retries during an outage. Lambda's 429 carries
  ``Retry-After`` (seconds): botocore parses it into the error's ``retryAfterSeconds`` field, but
  its backoff does not read it. The only header that backoff reads is ``x-amz-retry-after``
  (milliseconds), which raises the delay to its value, at most 5 s above the jittered delay. A 409
  or 412 is not retried by botocore: the caller decides (see ``lambda_rollouts.aws.errors``).
  ``adaptive`` adds botocore's own rate limiter per client, which starts slowing the client down
  after its first throttled answer; the shared buckets above still apply first.
- ``install(hook)`` calls ``hook(service_name, client)`` for every client in the cache now and
  for every client made later (a credential refresh makes new ones), after the project's own
  hooks are registered: the way to add botocore event handlers (fault injection, tracing) to all
  of them. Hooks run with the cache's lock held: they must be quick and must not use this object.
- For clients that do not use botocore (``lambda_http.LambdaHttpClient``), the same rules through
  public methods: ``describe`` (endpoint URL and service model of a region's client),
  ``credentials`` (a role's assumed credentials, or the base session's), ``count_call``, ``pace``
  (async: a free token at once, else waiting in line in a worker thread; counts the attempt),
  ``tell`` (the ``on_call`` observer), and ``intercept(interceptor)``: what ``install`` is to
  botocore, an interceptor sees (and may answer) every HTTP attempt of those clients.
- Thread-safe: the session and the caches sit behind one lock (boto3 sessions are not
  thread-safe; clients are).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError

from lambda_rollouts import __version__
from lambda_rollouts.aws.errors import is_expired_token, translated
from lambda_rollouts.aws.ratelimit import RateLimiter, account_of
from lambda_rollouts.aws.sigv4 import SigningCredentials
from lambda_rollouts.errors import AwsError
from lambda_rollouts.settings import Settings

if TYPE_CHECKING:
    from botocore.model import OperationModel, ServiceModel
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sts import STSClient

    from lambda_rollouts.aws.lambda_http import Interceptor

SESSION_NAME = "lambda-rollouts"
DEFAULT_REFRESH_MARGIN = timedelta(minutes=5)
# Attempts per API call, the first one included: up to three retries.
DEFAULT_MAX_ATTEMPTS = 4

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SessionFactory = Callable[[], boto3.session.Session]
# (service, operation, error code or None): see ``AwsClients`` and the module docstring.
CallObserver = Callable[[str, str, str | None], None]
# Told (service name, client) of every client made; see ``AwsClients.install``.
ClientHook = Callable[[str, BaseClient], None]
_Result = TypeVar("_Result")
# A client config reduced to hashable values, so it can be part of a cache key.
_ConfigKey = tuple[tuple[str, Hashable], ...]


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
    """Cached boto3 clients per (service, region, role, config); see the module docstring."""

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
        self._client_hooks: list[ClientHook] = []
        self.interceptors: tuple[Interceptor, ...] = ()
        self._calls_lock = threading.Lock()
        # Reentrant: building a client for a role builds (and caches) the STS client first.
        self._lock = threading.RLock()
        self._session: boto3.session.Session | None = None
        self._clients: dict[tuple[str, str, str | None, _ConfigKey], _CachedClient] = {}
        self._credentials: dict[str, AssumedCredentials] = {}

    # -- clients -------------------------------------------------------------------------------

    @overload
    def client(
        self,
        service_name: Literal["lambda"],
        region: str,
        role_arn: str | None = None,
        *,
        config: Config | None = None,
    ) -> LambdaClient: ...

    @overload
    def client(
        self,
        service_name: Literal["cloudwatch"],
        region: str,
        role_arn: str | None = None,
        *,
        config: Config | None = None,
    ) -> CloudWatchClient: ...

    @overload
    def client(
        self,
        service_name: Literal["sts"],
        region: str,
        role_arn: str | None = None,
        *,
        config: Config | None = None,
    ) -> STSClient: ...

    @overload
    def client(
        self,
        service_name: str,
        region: str,
        role_arn: str | None = None,
        *,
        config: Config | None = None,
    ) -> BaseClient: ...

    def client(
        self,
        service_name: str,
        region: str,
        role_arn: str | None = None,
        *,
        config: Config | None = None,
    ) -> BaseClient:
        """The cached client of a service for (region, role, config), assuming the role if needed.

        Blocking. Raises the project's ``AwsError`` family when the role cannot be assumed.
        """
        region = region or self.settings.default_region
        with self._lock:
            credentials = self._assumed_credentials(role_arn, region) if role_arn else None
            return self._cached_client(service_name, region, role_arn, credentials, config)

    def forget_credentials(self, role_arn: str) -> None:
        """Drop cached credentials for a role, so the next client for it assumes the role again."""
        with self._lock:
            self._credentials.pop(role_arn, None)

    def install(self, hook: ClientHook) -> None:
        """Call ``hook(service_name, client)`` on every cached client now and every client made later."""
        with self._lock:
            self._client_hooks.append(hook)
            for (service_name, *_), cached in self._clients.items():
                hook(service_name, cached.client)

    def intercept(self, interceptor: Interceptor) -> None:
        """Show every HTTP attempt of the clients that do not use botocore (``LambdaHttpClient``)
        to ``interceptor`` (after its token), which may answer it: what ``install`` is to botocore."""
        with self._lock:
            self.interceptors = (*self.interceptors, interceptor)

    # -- for clients that do not use botocore (LambdaHttpClient) -------------------------------

    def describe(self, service_name: str, region: str) -> tuple[str, ServiceModel]:
        """The endpoint URL and the service model of the service's client for ``region``. Blocking."""
        client = self.client(service_name, region)
        return client.meta.endpoint_url, client.meta.service_model

    def credentials(self, role_arn: str | None, region: str) -> SigningCredentials:
        """The credentials to sign a request for ``role_arn`` (None: the operator's own). Blocking.

        The role's assumed credentials (assumed when missing or expiring, as for its clients), or
        the base session's, refreshed by botocore as they near their expiry.
        """
        region = region or self.settings.default_region
        with self._lock:
            if role_arn:
                assumed = self._assumed_credentials(role_arn, region)
                return SigningCredentials(
                    assumed.access_key_id, assumed.secret_access_key, assumed.session_token
                )
            base = self._base_session().get_credentials()
        if base is None:
            raise NoCredentialsError()
        frozen = base.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise NoCredentialsError()
        return SigningCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def count_call(self, operation: str) -> None:
        """Count one API call (see ``calls``)."""
        with self._calls_lock:
            self.calls[operation] += 1

    async def pace(self, service_name: str, region: str, role_arn: str | None, operation: str) -> None:
        """Take the token of one HTTP attempt: at once if one is free, else waiting in a worker thread."""
        account = account_of(role_arn)
        if not self.rate_limiter.try_acquire(account, region, service_name, operation):
            await asyncio.to_thread(self.rate_limiter.acquire, account, region, service_name, operation)
        with self._calls_lock:
            self.attempts[operation] += 1

    def tell(self, service_name: str, operation: str, error_code: str | None) -> None:
        """Tell ``on_call`` how a call ended (see the module docstring); never raises."""
        if self._on_call is None:
            return
        try:
            self._on_call(service_name, operation, error_code)
        except Exception:
            # An observer is bookkeeping: its failure must not fail the AWS call it observed.
            logger.exception("the AWS call observer failed on %s %s", service_name, operation)

    @overload
    def call(
        self,
        service_name: Literal["lambda"],
        region: str,
        role_arn: str | None,
        request: Callable[[LambdaClient], _Result],
        *,
        config: Config | None = None,
    ) -> _Result: ...

    @overload
    def call(
        self,
        service_name: Literal["cloudwatch"],
        region: str,
        role_arn: str | None,
        request: Callable[[CloudWatchClient], _Result],
        *,
        config: Config | None = None,
    ) -> _Result: ...

    @overload
    def call(
        self,
        service_name: str,
        region: str,
        role_arn: str | None,
        request: Callable[[BaseClient], _Result],
        *,
        config: Config | None = None,
    ) -> _Result: ...

    def call(
        self,
        service_name: str,
        region: str,
        role_arn: str | None,
        request: Callable[[Any], _Result],
        *,
        config: Config | None = None,
    ) -> _Result:
        """Run ``request`` with the service's client; once more if the assumed credentials expired.

        Blocking. Assumed-role credentials can stop working before their stated expiry (the role's
        session was revoked, the clock is off); the cache would keep handing them out, so an
        ``ExpiredToken`` refusal drops them and the request is retried once with fresh ones.
        Errors other than that one are raised as botocore raised them: translating them is the
        caller's job, since only the caller knows what "not found" means for its request.
        """
        client = self.client(service_name, region, role_arn, config=config)
        try:
            return request(client)
        except ClientError as exc:
            if role_arn is None or not is_expired_token(exc):
                raise
            self.forget_credentials(role_arn)
        return request(self.client(service_name, region, role_arn, config=config))

    # -- internals (called with the lock held) -------------------------------------------------

    def _cached_client(
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
        cached = self._clients.get(key)
        if cached is None or cached.credentials is not credentials:
            # boto3-stubs types Session.client per service name only; the name here is a plain str.
            make_client = cast(Callable[..., BaseClient], self._base_session().client)
            client = make_client(
                service_name,
                region_name=region,
                endpoint_url=self.settings.aws_endpoint_url,
                # A copy: botocore rewrites the retry options of the config it is given in place,
                # which would change the cache key of every later ask with the same config.
                config=copy.deepcopy(effective),
                aws_access_key_id=credentials.access_key_id if credentials else None,
                aws_secret_access_key=credentials.secret_access_key if credentials else None,
                aws_session_token=credentials.session_token if credentials else None,
            )
            # First among the generic before-send handlers, so that the token is taken before an
            # emulator's stub or an injected fault answers the attempt, as a real request takes one.
            # (Handlers on a narrower name, before-send.lambda.GetAlias, run before every generic
            # one; botocore still calls this one after them unless they raise.)
            client.meta.events.register_first(
                "before-send", self._pacer(service_name, region, account_of(role_arn))
            )
            # provide-client-params fires once per API call, before any handler can short-circuit it.
            client.meta.events.register("provide-client-params", self._count_call)
            if self._on_call is not None:
                self._observe_outcomes(client, service_name)
            for hook in self._client_hooks:
                hook(service_name, client)
            cached = _CachedClient(client=client, credentials=credentials)
            self._clients[key] = cached
        return cached.client

    def _base_session(self) -> boto3.session.Session:
        if self._session is None:
            self._session = self._session_factory()
        return self._session

    def _assumed_credentials(self, role_arn: str, region: str) -> AssumedCredentials:
        cached = self._credentials.get(role_arn)
        if cached is not None and self._clock() < cached.expiration - self._refresh_margin:
            return cached
        # STS is asked with the base session's credentials, in the target's region.
        sts = cast("STSClient", self._cached_client("sts", region, None, None, None))
        with translated("AssumeRole", not_found=AwsError):
            response = sts.assume_role(
                RoleArn=role_arn,
                RoleSessionName=SESSION_NAME,
                DurationSeconds=self.settings.assume_role_session_seconds,
            )
        issued = response["Credentials"]
        fresh = AssumedCredentials(
            access_key_id=issued["AccessKeyId"],
            secret_access_key=issued["SecretAccessKey"],
            session_token=issued["SessionToken"],
            expiration=issued["Expiration"],
        )
        self._credentials[role_arn] = fresh
        return fresh

    def _count_call(self, model: OperationModel, **_: Any) -> None:
        self.count_call(model.name)

    def _pacer(self, service_name: str, region: str, account: str) -> Callable[..., None]:
        """The before-send handler that paces one client's attempts (see the module docstring)."""
        limiter = self.rate_limiter

        def pace(event_name: str, **_: Any) -> None:
            # before-send.<service-id>.<Operation>
            operation = event_name.rpartition(".")[2]
            limiter.acquire(account, region, service_name, operation)
            with self._calls_lock:
                self.attempts[operation] += 1

        return pace

    def _observe_outcomes(self, client: BaseClient, service_name: str) -> None:
        """Tell ``on_call`` how each call of ``client`` ended (see the module docstring)."""

        def tell(operation: str, error_code: str | None) -> None:
            self.tell(service_name, operation, error_code)

        def after_call(
            http_response: Any, parsed: Mapping[str, Any], model: OperationModel, context: Any, **_: Any
        ) -> None:
            # after-call fires for error responses too, just before botocore raises for them.
            if http_response.status_code < 300:
                tell(model.name, None)
                return
            override = context.get("error_code_override") if isinstance(context, Mapping) else None
            error = parsed.get("Error") or {}
            tell(model.name, str(override or error.get("Code") or http_response.status_code))

        def after_call_error(exception: BaseException, event_name: str, **_: Any) -> None:
            # Fired when no response came back at all; the operation is only in the event's name
            # (after-call-error.<service-id>.<Operation>).
            tell(event_name.rpartition(".")[2], type(exception).__name__)

        client.meta.events.register("after-call", after_call)
        client.meta.events.register("after-call-error", after_call_error)


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
