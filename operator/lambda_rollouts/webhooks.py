"""``WebhookInvoker``: the ``HookInvoker`` for hooks with a ``url``, over aiohttp.

Contract (on top of ``lambda_rollouts.hooks``):
- Each attempt is one POST of the payload as JSON (``Content-Type: application/json``,
  ``User-Agent: lambda-rollouts/<version>``) to ``hook.url``, bounded as a whole (connecting,
  sending, reading the answer) by ``hook.timeout``. Credentials in the URL are sent as HTTP basic
  authentication, as aiohttp does for any URL that carries them.
- Success is a 2xx answer whose body ``judge_answer`` accepts. A 3xx answer is a failure naming
  its status: a redirect is never followed, so a hook cannot be moved elsewhere without its spec
  changing. Any other status is a failure naming the status and quoting at most
  ``EXCERPT_LIMIT`` characters of the body.
- An answer is read up to ``MAX_ANSWER_BYTES``; a longer one is a failure, since a verdict that
  cannot be read whole cannot be trusted.
- Timeouts, refused connections, name resolution and TLS failures are failed attempts with a
  message saying what happened; they are never raised.
- Messages and logs name the hook only through ``hook.describe()``: the raw URL (with its
  credentials and query string) appears in neither. Errors are described by their kind, never by
  their text, because aiohttp puts the full URL into some of them.
- The address rule (``lambda_rollouts.tenancy.AddressRule``, with the operator's allowed
  networks) holds for what aiohttp actually connects to, checked twice before anything is sent:
  the resolver refuses a name that is a metadata name or resolves to any refused address (one
  bad address refuses the whole name, so a name cannot mix a metadata address among good ones),
  and the socket factory refuses each address a connection is about to be made to (IP literals
  included, which aiohttp never hands to a resolver). Both run at connect time, so a name that
  resolves elsewhere when called than when the spec was checked (DNS rebinding) is refused too.
  A refusal raises ``ForbiddenError`` naming the hook and the address: no request went out and
  no attempt is retried. Hooks are called directly, never through a proxy (``trust_env`` is off),
  so the address checked is the hook's own.
- One ``aiohttp.ClientSession`` is created on first use and shared by every hook; ``close()``
  releases it (a later ``invoke`` opens a new one).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from lambda_rollouts import __version__
from lambda_rollouts.errors import ForbiddenError
from lambda_rollouts.hooks import EXCERPT_LIMIT, HookOutcome, excerpt, invoke_with_retries, judge_answer
from lambda_rollouts.model import Hook
from lambda_rollouts.observed import Target
from lambda_rollouts.tenancy import AddressRule, IPNetwork

USER_AGENT: Final = f"lambda-rollouts/{__version__}"
MAX_ANSWER_BYTES: Final = 1024 * 1024
_READ_CHUNK_BYTES: Final = 64 * 1024


class AnswerTooLargeError(Exception):
    """The answer's body is longer than ``MAX_ANSWER_BYTES``."""


class AddressRefusedError(OSError):
    """The address rule refused where a hook would connect. An ``OSError``, so that aiohttp hands
    it back inside its own connector errors, as it does any failure to connect."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CheckedResolver(AbstractResolver):
    """Resolves through ``inner``, then refuses a name the rule refuses or any of whose addresses
    it refuses."""

    def __init__(self, inner: AbstractResolver, rule: AddressRule) -> None:
        self._inner = inner
        self._rule = rule

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        refusal = self._rule.name_refusal(host)
        if refusal is not None:
            raise AddressRefusedError(refusal)
        resolved = await self._inner.resolve(host, port, family)
        for entry in resolved:
            refusal = self._rule.refusal(entry["host"], name=host)
            if refusal is not None:
                raise AddressRefusedError(refusal)
        return resolved

    async def close(self) -> None:
        await self._inner.close()


class GuardedHttp:
    """One aiohttp session, made on first use, whose every connection obeys ``rule``: the resolver
    and the socket factory of the module docstring, no proxy from the environment, no default
    timeout (each request carries its own). ``resolver`` resolves names before the rule checks
    them: aiohttp's default resolver when None; one given here is the caller's to close. Shared by
    the hooks and the notifications, which call out to URLs that namespaces choose."""

    def __init__(self, rule: AddressRule, resolver: AbstractResolver | None = None) -> None:
        self.rule = rule
        self._given_resolver = resolver
        self._own_resolver: AbstractResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            inner = self._given_resolver
            if inner is None:
                if self._own_resolver is None:
                    self._own_resolver = aiohttp.DefaultResolver()
                inner = self._own_resolver
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(inner, self.rule), socket_factory=self._open_socket
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                # Each request carries its own timeout; the session's default (5 minutes) would cut
                # hooks that are allowed up to 15.
                timeout=aiohttp.ClientTimeout(total=None),
                # No proxy from the environment: the address the rule checks is the receiver's own.
                trust_env=False,
            )
        return self._session

    def _open_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """The socket for one connection attempt, once the rule allows the address it goes to."""
        family, kind, proto, _, address = addr_info
        refusal = self.rule.refusal(str(address[0]))
        if refusal is not None:
            raise AddressRefusedError(refusal)
        return socket.socket(family=family, type=kind, proto=proto)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._own_resolver is not None:
            resolver, self._own_resolver = self._own_resolver, None
            await resolver.close()


class WebhookInvoker:
    """``HookInvoker`` for HTTP hooks; see the module docstring for the contract.

    ``allowed_networks`` are the addresses hooks may reach although the address rule refuses them
    (the operator's ``hook_allowed_networks``). ``resolver`` resolves names before the rule checks
    them: aiohttp's default resolver when None; one given here is the caller's to close.
    """

    def __init__(
        self,
        *,
        retry_delay_seconds: float = 1.0,
        allowed_networks: Iterable[IPNetwork] = (),
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._retry_delay_seconds = retry_delay_seconds
        self._http = GuardedHttp(AddressRule.allowing(allowed_networks), resolver)

    async def invoke(self, target: Target, hook: Hook, payload: Mapping[str, Any]) -> HookOutcome:
        if hook.url is None:
            raise ValueError(f"{hook.describe()} has no url: it is not an HTTP hook")
        url = hook.url
        # Serialised once: every attempt sends the same bytes.
        body = json.dumps(payload).encode()

        async def attempt(number: int) -> HookOutcome:
            return await self._post(hook, url, body)

        return await invoke_with_retries(hook, attempt, retry_delay_seconds=self._retry_delay_seconds)

    async def close(self) -> None:
        await self._http.close()

    async def _post(self, hook: Hook, url: str, body: bytes) -> HookOutcome:
        try:
            async with self._http.session().post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=hook.timeout_seconds),
            ) as response:
                status = response.status
                answer = await _read_limited(response)
        except TimeoutError:
            return _failure(f"{hook.describe()} timed out: no answer within {hook.timeout}")
        except AnswerTooLargeError:
            return _failure(f"{hook.describe()} answered with more than {MAX_ANSWER_BYTES} bytes")
        except aiohttp.ClientError as error:
            refused = refusal_in(error)
            if refused is not None:
                raise ForbiddenError(f"{hook.describe()} may not be called: {refused.reason}") from error
            return _failure(f"{hook.describe()} could not be called: {connection_trouble(error)}")
        if 300 <= status < 400:
            # The Location header is left out on purpose: it may carry credentials of its own.
            return _failure(f"{hook.describe()} answered HTTP {status}, a redirect, which is not followed")
        if not 200 <= status < 300:
            text = excerpt(answer.decode("utf-8", errors="replace"), EXCERPT_LIMIT)
            failure = _failure(f"{hook.describe()} answered HTTP {status}" + (f": {text}" if text else ""))
            # A refusal (4xx) is the endpoint's answer; a timeout or throttling (408, 429) is not.
            definite = 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS
            return replace(failure, final=definite)
        return judge_answer(answer).outcome_for(hook)


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise AnswerTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


_RETRYABLE_CLIENT_ERRORS: Final = frozenset({408, 429})


def _failure(message: str) -> HookOutcome:
    return HookOutcome(succeeded=False, message=message, attempts=1)


def refusal_in(error: aiohttp.ClientError) -> AddressRefusedError | None:
    """The address rule's refusal that made aiohttp give up connecting, if that is what it was."""
    if isinstance(error, aiohttp.ClientConnectorError) and isinstance(error.os_error, AddressRefusedError):
        return error.os_error
    return None


def connection_trouble(error: aiohttp.ClientError) -> str:
    """What went wrong, in words that never include the URL (aiohttp's own texts may)."""
    # The most specific kinds first: the certificate and TLS errors are connector errors too.
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate was not accepted"
    if isinstance(error, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(error, aiohttp.ClientConnectorError):
        cause = error.os_error
        if isinstance(cause, socket.gaierror):
            return f"its host name did not resolve ({cause.strerror})"
        if cause.errno is not None and cause.errno > 0:
            return f"cannot connect: {os.strerror(cause.errno)}"
        return "cannot connect"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the answer was cut short"
    if isinstance(error, aiohttp.InvalidURL):
        return "its URL is not valid"
    return type(error).__name__
