"""``LambdaHttpClient``: Lambda's control-plane API over HTTP, on the event loop, no threads.

Why: a botocore call costs about 3 ms of CPU in the calling thread (its event hooks, its request
and header objects, urllib3, its parser), plus the hand-off to and from a worker thread; an
operator carrying a thousand rollouts spent a third of its CPU there. This client sends the same
REST-JSON requests, signed with ``lambda_rollouts.aws.sigv4``, over ``lambda_rollouts.httpclient``,
at about a third of the cost (``benchmarks/boto_call.py``).

Contract:
- ``call(operation, region, role_arn, **params)`` sends one Lambda API operation (``GetAlias``,
  ``UpdateAlias``...: any REST-JSON operation of botocore's Lambda model whose input members are
  URI labels, query strings or JSON body members) with botocore's parameter names, and returns
  the JSON answer as a dict (plus ``ResponseMetadata``: ``HTTPStatusCode``, ``HTTPHeaders``),
  the shape a boto3 client returns for these operations (timestamps stay strings).
- Errors are raised as botocore raises them, so ``lambda_rollouts.aws.errors`` translates both
  alike: an answer of 300 or more is a ``ClientError`` whose ``Error.Code`` is the
  ``x-amzn-ErrorType`` header's code (else the body's ``__type``/``code``, else the status) and
  ``Error.Message`` the body's ``message``; no answer is botocore's ``EndpointConnectionError``
  (could not connect), ``ConnectionClosedError`` (dropped) or ``ReadTimeoutError``; a success
  whose body is not JSON ``ResponseStreamingError``; missing credentials ``NoCredentialsError``;
  parameters the model does not know ``ParamValidationError``.
- Everything else is ``AwsClients``'s (the shared client cache), so both kinds of client keep one
  set of rules: the endpoint (``settings.aws_endpoint_url``, else the one botocore resolves for
  the region) and the service model come from its botocore client for the region; credentials
  from ``AwsClients.credentials`` (the role's assumed credentials, or the base session's), read
  again at most every ``CREDENTIALS_TTL`` seconds and whenever an answer says they expired
  (``ExpiredToken``: dropped, assumed again, the call retried once, as ``AwsClients.call`` does);
  each HTTP attempt takes a token from its bucket (``AwsClients.pace``: at once when one is free,
  else waiting in a worker thread, in line with every other client's attempts); ``calls`` counts
  the call once, ``attempts`` every attempt; ``on_call`` is told its outcome once, after retries;
  interceptors (``AwsClients.intercept``) see every attempt after its token and may answer it.
- Retries follow botocore's ``standard`` mode (see ``AwsClients``): at most
  ``settings.aws_max_attempts`` attempts; throttling (429, ``THROTTLING_CODES``), 500/502/503/504,
  request timeouts and answers that never came are retried after rand(0, 1) x min(base x
  2^(attempt - 1), 20 s), base 1 s after throttling and 50 ms after anything else, slept on the
  event loop. botocore's retry quota has no counterpart: the shared token bucket already keeps
  retries from stampeding, and the attempts are capped. Conflicts (409, 412) are never retried.
- Connections are kept alive and shared (at most ``settings.aws_max_concurrent_calls`` per
  endpoint), with botocore's timeouts (5 s to connect, 20 s for the answer); the proxy of the
  endpoint's scheme (``settings.https_proxy``/``http_proxy``, the standard variables) applies
  unless ``settings.no_proxy`` names the endpoint's host (``proxy_for``), decided once per region;
  TLS is verified against the system's certificate authorities. The connections belong to the
  event loop that made them; ``close()`` closes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from yarl import URL

from lambda_rollouts import __version__
from lambda_rollouts.aws.errors import THROTTLING_CODES, error_code, is_expired_token
from lambda_rollouts.aws.sigv4 import SignedRequest, SigningCredentials, encode_label, sign
from lambda_rollouts.httpclient import (
    HttpClient,
    HttpClosedError,
    HttpConnectError,
    HttpResponse,
    HttpTimeoutError,
    authority,
)

if TYPE_CHECKING:
    from botocore.model import OperationModel, ServiceModel

    from lambda_rollouts.aws.clients import AwsClients
    from lambda_rollouts.settings import Settings

SERVICE = "lambda"
# Seconds a credential read is trusted: botocore refreshes expiring credentials well before this.
CREDENTIALS_TTL = 60.0
MAX_BACKOFF_SECONDS = 20.0
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
TIMEOUT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
USER_AGENT = f"lambda-rollouts/{__version__}"

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# Python's NO_PROXY matching (typeshed does not list it).
_proxy_bypass: Callable[..., bool] = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009
# botocore's: 5 s to connect, 20 s to read.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 20.0


@dataclass
class HttpAttempt:
    """One HTTP attempt of a call, as interceptors see it (after its token was taken)."""

    service: str
    operation: str
    params: Mapping[str, Any]
    method: str
    url: str
    attempt: int


# May answer an attempt instead of the network (an ``HttpResponse``), or raise botocore's
# ``ConnectionClosedError`` / ``ReadTimeoutError`` for an answer that never came; None: send it.
Interceptor = Callable[[HttpAttempt], HttpResponse | None]


@dataclass(frozen=True)
class _RestOperation:
    method: str
    # "/2015-03-31/functions/{FunctionName}/aliases/{Name}"
    uri: str
    # member name -> ("uri" | "querystring" | "header" | "body", wire name)
    members: Mapping[str, tuple[str, str]]


@dataclass
class _Region:
    endpoint: URL
    # scheme://host[:port], for building request URLs without parsing one per call.
    origin: str
    model: ServiceModel
    # The proxy for the endpoint, decided once, not read from the environment per request.
    proxy: str | None
    operations: dict[str, _RestOperation] = field(default_factory=dict)


@dataclass(frozen=True)
class _Credentials:
    signing: SigningCredentials
    read_at: float


class LambdaHttpClient:
    """Lambda's REST-JSON API over HTTP; see the module docstring."""

    def __init__(
        self,
        clients: AwsClients,
        *,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clients = clients
        self._settings = clients.settings
        self._sleep = sleep
        self._jitter = jitter
        self._monotonic = monotonic
        self._regions: dict[str, _Region] = {}
        self._credentials: dict[str | None, _Credentials] = {}
        self._http: HttpClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None

    async def call(self, operation: str, region: str, role_arn: str | None, **params: Any) -> dict[str, Any]:
        """Send ``operation`` with botocore's parameters; its answer as a dict (module docstring)."""
        region = region or self._settings.default_region
        self._clients.count_call(operation)
        try:
            try:
                parsed = await self._call_with_retries(operation, region, role_arn, params)
            except ClientError as exc:
                if role_arn is None or not is_expired_token(exc):
                    raise
                # Credentials can stop working before their stated expiry: assume the role again.
                self._clients.forget_credentials(role_arn)
                self._credentials.pop(role_arn, None)
                parsed = await self._call_with_retries(operation, region, role_arn, params)
        except ParamValidationError:
            raise  # refused before anything was sent: counted, not an outcome
        except ClientError as exc:
            self._clients.tell(SERVICE, operation, error_code(exc))
            raise
        except BotoCoreError as exc:
            self._clients.tell(SERVICE, operation, type(exc).__name__)
            raise
        self._clients.tell(SERVICE, operation, None)
        return parsed

    # -- one call ------------------------------------------------------------------------------

    async def _call_with_retries(
        self, operation: str, region: str, role_arn: str | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        described = await self._region(region)
        rest = self._operation(described, operation)
        request = _serialize(rest, params, described.endpoint)
        url = described.origin + request.path
        if request.query:
            url += "?" + request.query_string
        max_attempts = max(1, self._settings.aws_max_attempts)
        for attempt in range(1, max_attempts + 1):
            await self._clients.pace(SERVICE, region, role_arn, operation)
            credentials = await self._signing_credentials(role_arn, region)
            try:
                answer = await self._attempt(
                    HttpAttempt(SERVICE, operation, params, rest.method, url, attempt),
                    request,
                    credentials,
                    described,
                    region,
                )
            except (ConnectionClosedError, ReadTimeoutError, EndpointConnectionError):
                if attempt == max_attempts:
                    raise
                await self._sleep(self._backoff(attempt, throttled=False))
                continue
            if answer.status < 300:
                return _parsed(answer)
            error = _client_error(answer, operation)
            code = error_code(error)
            throttled = answer.status == 429 or code in THROTTLING_CODES
            retryable = throttled or answer.status in RETRYABLE_STATUSES or code in TIMEOUT_CODES
            if not retryable or attempt == max_attempts:
                raise error
            await self._sleep(self._backoff(attempt, throttled=throttled))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self,
        attempt: HttpAttempt,
        request: SignedRequest,
        credentials: SigningCredentials,
        described: _Region,
        region: str,
    ) -> HttpResponse:
        for interceptor in self._clients.interceptors:
            answer = interceptor(attempt)
            if answer is not None:
                return answer
        headers = sign(request, credentials, region=region, service=SERVICE, now=datetime.now(UTC))
        headers["User-Agent"] = USER_AGENT
        try:
            response = await self._http_client().request(
                request.method, attempt.url, headers, request.body, proxy=described.proxy
            )
        except HttpConnectError as exc:
            raise EndpointConnectionError(endpoint_url=attempt.url, error=exc) from exc
        except HttpTimeoutError as exc:
            raise ReadTimeoutError(endpoint_url=attempt.url, error=exc) from exc
        except HttpClosedError as exc:
            raise ConnectionClosedError(endpoint_url=attempt.url, error=exc) from exc
        return response

    def _backoff(self, attempt: int, *, throttled: bool) -> float:
        base = 1.0 if throttled else 0.05
        return self._jitter() * min(base * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)

    # -- what the calls need: endpoint, model, credentials, session ----------------------------

    async def _region(self, region: str) -> _Region:
        described = self._regions.get(region)
        if described is None:
            endpoint, model = await asyncio.to_thread(self._clients.describe, SERVICE, region)
            url = URL(endpoint)
            origin = str(url.origin())
            described = self._regions.setdefault(
                region, _Region(url, origin, model, proxy_for(url, self._settings))
            )
        return described

    @staticmethod
    def _operation(described: _Region, operation: str) -> _RestOperation:
        rest = described.operations.get(operation)
        if rest is None:
            rest = described.operations[operation] = _rest_operation(
                described.model.operation_model(operation)
            )
        return rest

    async def _signing_credentials(self, role_arn: str | None, region: str) -> SigningCredentials:
        cached = self._credentials.get(role_arn)
        now = self._monotonic()
        if cached is None or now - cached.read_at >= CREDENTIALS_TTL:
            signing = await asyncio.to_thread(self._clients.credentials, role_arn, region)
            cached = self._credentials[role_arn] = _Credentials(signing, now)
        return cached.signing

    def _http_client(self) -> HttpClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http_loop = loop
            self._http = HttpClient(
                max_connections=self._settings.aws_max_concurrent_calls,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
            )
        return self._http


def proxy_for(endpoint: URL, settings: Settings) -> str | None:
    """The proxy for ``endpoint``: the settings' proxy of its scheme, unless NO_PROXY names its host."""
    proxy = settings.https_proxy if endpoint.scheme == "https" else settings.http_proxy
    if not proxy or not endpoint.host:
        return None
    # urllib's rule, as boto3 applies it: "*", or the host (with or without its port) or a parent
    # domain; host and port are given, so "host:port" entries match too.
    if settings.no_proxy and _proxy_bypass(
        f"{endpoint.host}:{endpoint.port}", proxies={"no": settings.no_proxy}
    ):
        return None
    return proxy


def _rest_operation(model: OperationModel) -> _RestOperation:
    members: dict[str, tuple[str, str]] = {}
    shape = model.input_shape
    for name, member in (shape.members if shape is not None else {}).items():
        location = member.serialization.get("location", "body")
        members[name] = (location, member.serialization.get("name", name))
    return _RestOperation(model.http["method"], model.http["requestUri"], members)


def _serialize(rest: _RestOperation, params: Mapping[str, Any], endpoint: URL) -> SignedRequest:
    unknown = sorted(set(params) - set(rest.members))
    if unknown:
        raise ParamValidationError(report=f"unknown parameters: {', '.join(unknown)}")
    path = rest.uri
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    body: dict[str, Any] = {}
    for name, value in params.items():
        location, wire = rest.members[name]
        if location == "uri":
            path = path.replace("{" + wire + "}", encode_label(str(value)))
        elif location == "querystring":
            query.append((wire, str(value)))
        elif location == "header":
            headers[wire] = str(value)
        else:
            body[wire] = value
    missing = _labels(path)
    if missing:
        raise ParamValidationError(report=f"missing parameters: {', '.join(missing)}")
    content = b""
    if body or rest.method in ("POST", "PUT", "PATCH"):
        content = json.dumps(body, separators=(",", ":")).encode()
        headers["Content-Type"] = "application/json"
    base = endpoint.raw_path.rstrip("/")
    return SignedRequest(rest.method, signed_host(endpoint), base + path, query, headers, content)


def signed_host(endpoint: URL) -> str:
    """The Host header as botocore signs it: IPv6 literals in brackets, a default port left out."""
    return authority(endpoint.scheme, endpoint.host or "", endpoint.explicit_port)


def _labels(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _parsed(answer: HttpResponse) -> dict[str, Any]:
    try:
        loaded = json.loads(answer.body) if answer.body.strip() else {}
    except ValueError as exc:
        # A proxy's page, a truncated body: an answer that could not be read, a transient trouble.
        raise ResponseStreamingError(error=f"not JSON ({answer.status}): {answer.body[:200]!r}") from exc
    # botocore's parser leaves out members sent as null ("RoutingConfig": null); so does this one.
    parsed: dict[str, Any] = _without_nulls(loaded) if isinstance(loaded, dict) else {}
    parsed["ResponseMetadata"] = {
        "HTTPStatusCode": answer.status,
        "HTTPHeaders": {name.lower(): value for name, value in answer.headers.items()},
        "RequestId": answer.headers.get("x-amzn-RequestId", answer.headers.get("x-amzn-requestid", "")),
    }
    return parsed


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _client_error(answer: HttpResponse, operation: str) -> ClientError:
    """An error answer as botocore's REST-JSON parser shapes it."""
    try:
        body = json.loads(answer.body) if answer.body.strip() else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    headers = {name.lower(): value for name, value in answer.headers.items()}
    code = str(headers.get("x-amzn-errortype") or body.get("__type") or body.get("code") or "")
    # "ResourceNotFoundException:http://internal.amazon.com/..." and "aws.lambda#Throttled"
    code = code.split(":", 1)[0].rpartition("#")[2] or str(answer.status)
    message = str(body.get("message", body.get("Message", "")))
    response: dict[str, Any] = {
        key: value for key, value in body.items() if key not in ("message", "Message", "__type", "code")
    }
    response["Error"] = {"Code": code, "Message": message}
    response["ResponseMetadata"] = {"HTTPStatusCode": answer.status, "HTTPHeaders": headers}
    response["message"] = message
    # botocore's typed response dicts; the error carries a plain one.
    return ClientError(response, operation)  # type: ignore[arg-type]
