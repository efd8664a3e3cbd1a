"""``HttpClient``: a small HTTP/1.1 client on asyncio's protocols, for the operator's hot paths.

Why: every step of a rollout makes HTTP requests (Lambda's alias calls, the status write, its
Events). aiohttp spends CPU on request and response objects, URL and header multidicts and
timers rescheduled on every chunk; ``benchmarks/boto_call.py`` sends the same signed request over
both, and this client takes 1.4-1.8 times less CPU. With it (and the Events posted through it),
``benchmarks/scale.py`` at N = 1,000 went from 15.2 to 11.1 ms of operator CPU per step.

Contract:
- ``await client.request(method, url, headers, body, proxy=None)`` sends one request and returns
  the whole answer: ``HttpResponse(status, headers, body)``, header names in lower case (repeated
  headers joined with ", "). ``url`` is absolute and already encoded (``http`` or ``https``).
  The client adds ``Host`` (unless ``headers`` has it, as a signed request does) and
  ``Content-Length`` (for a body, or a POST/PUT/PATCH without one) and nothing else: no
  compression is asked for, no cookies are kept, redirects are answers.
- Answers are read by ``Content-Length``, by chunks (``Transfer-Encoding: chunked``), or to the
  end of the connection; HEAD, 1xx, 204 and 304 answers have no body. Informational (1xx) answers
  are skipped.
- Connections are kept alive per origin (and proxy): at most ``max_connections`` open per origin;
  a request beyond that waits, in order, for one to come back. A connection is reused only after an
  answer read to its end by length or chunks from an HTTP/1.1 server that did not say
  ``Connection: close``; one the server closed while idle is dropped, not used. A request that is
  cancelled or fails midway closes its connection.
- ``https`` is TLS with ``ssl_context`` (default: the system's authorities, host names checked).
  ``proxy`` (``http://[user:password@]host:port``): plain ``http`` requests are sent to it in
  absolute form; ``https`` requests go through a ``CONNECT`` tunnel, TLS inside it.
- Failures are this module's exceptions, for the caller to translate: ``HttpConnectError`` (no
  connection: refused, unknown host, TLS handshake, a proxy that refused the tunnel),
  ``HttpTimeoutError`` (no connection within ``connect_timeout`` seconds, or the answer not whole
  within ``read_timeout`` seconds of the request being sent; None: no limit), ``HttpClosedError``
  (the connection dropped, or the answer could not be read). One case is sent again, once, on a
  new connection: a kept-alive connection that closed before any byte of an answer (the server
  dropped it as idle while the request went out), for idempotent methods, or for any method when
  the caller says ``resend=True`` (``False``: never). Other failures are the caller's call.
- One client belongs to the event loop that first used it; ``close()`` closes its connections.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

_HEAD_END = b"\r\n\r\n"
# Methods whose request may be sent twice with the effect of once (RFC 9110).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_LINE_END = b"\r\n"
_MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """A request that got no whole answer."""


class HttpConnectError(HttpError):
    """No connection could be made."""


class HttpTimeoutError(HttpError):
    """No connection, or no whole answer, in time."""


class HttpClosedError(HttpError):
    """The connection dropped, or the answer was not HTTP."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_literal(host: str) -> str:
    """``host`` as a URL or a Host header writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def authority(scheme: str, host: str, port: int | None) -> str:
    """host[:port] as the Host header and a proxy's request line want it: no port if the default."""
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return host_literal(host)
    return f"{host_literal(host)}:{port}"


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    proxy: str | None

    @property
    def authority(self) -> str:
        return authority(self.scheme, self.host, self.port)


class _Connection(asyncio.Protocol):
    """One socket: bytes in a buffer, and a future to wake the reader when more come."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        # Bytes received over the connection's life: did an answer start coming?
        self.received = 0
        self.ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's are not).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.received += len(data)
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self._wake()

    def fail(self, failure: BaseException) -> None:
        """Make the waiting reader raise ``failure`` (a deadline that passed)."""
        self._failure = failure
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(failure)

    def usable(self) -> bool:
        return not self.ended and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def more(self) -> None:
        """Wait for more bytes (or the end); raises ``HttpClosedError`` once the connection ended."""
        if self._failure is not None:
            raise self._failure
        if self.ended:
            raise HttpClosedError("the connection closed before the whole answer came")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Pool:
    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Set by HttpClient.close(): a connection coming back afterwards is closed, not kept.
        self.closed = False

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class HttpClient:
    """See the module docstring."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 32,
        connect_timeout: float | None = 5.0,
        read_timeout: float | None = 20.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max(1, max_connections)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pools: dict[_Origin, _Pool] = {}

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.closed = True
            for connection in pool.idle:
                connection.close()
            pool.idle.clear()
        self._pools.clear()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        proxy: str | None = None,
        resend: bool | None = None,
    ) -> HttpResponse:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an absolute http(s) URL: {url!r}")
        origin = _Origin(scheme, parts.hostname, parts.port or _DEFAULT_PORTS[scheme], proxy)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if proxy is not None and scheme == "http":
            target = f"http://{origin.authority}{target}"  # absolute form, for the proxy
        head = [f"{method} {target} HTTP/1.1\r\n"]
        if "Host" not in headers and "host" not in headers:
            head.append(f"Host: {origin.authority}\r\n")
        if proxy is not None and scheme == "http":
            head.append(_proxy_authorization(proxy))
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        message = "".join(head).encode("latin-1") + body

        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        connection, reused = await self._acquire(origin, pool, reuse=True)
        received = connection.received
        try:
            return await self._exchange(origin, pool, connection, message, method)
        except HttpClosedError:
            if resend is None:
                resend = method in _IDEMPOTENT
            if not (reused and resend and connection.received == received):
                raise
        # A kept-alive connection the server closed as the request went out, before any byte of
        # an answer: send it once more, on a new connection.
        connection, _ = await self._acquire(origin, pool, reuse=False)
        return await self._exchange(origin, pool, connection, message, method)

    async def _exchange(
        self, origin: _Origin, pool: _Pool, connection: _Connection, message: bytes, method: str
    ) -> HttpResponse:
        """Send ``message`` on ``connection`` and read the answer; the connection goes back after."""
        reusable = False
        loop = asyncio.get_running_loop()
        deadline = (
            None
            if self._read_timeout is None
            else loop.call_later(
                self._read_timeout,
                connection.fail,
                HttpTimeoutError(f"no whole answer from {origin.authority} in {self._read_timeout:g}s"),
            )
        )
        try:
            assert connection.transport is not None
            connection.transport.write(message)
            response, reusable = await _read_response(connection, method)
            return response
        finally:
            if deadline is not None:
                deadline.cancel()
            self._release(pool, connection, reusable)

    async def _acquire(self, origin: _Origin, pool: _Pool, *, reuse: bool) -> tuple[_Connection, bool]:
        """A connection, and whether it was kept alive from before; ``reuse=False``: a new one."""
        woken = False
        while True:
            while pool.idle:
                connection = pool.idle.pop()
                if reuse and connection.usable():
                    return connection, True
                connection.close()
                pool.open -= 1
                if not reuse:
                    break  # room made for a new one
            if pool.open < self._max_connections:
                pool.open += 1
                try:
                    return await self._connect(origin), False
                except BaseException:
                    pool.open -= 1
                    pool.wake_one()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            if woken:
                # Woken, but a newcomer took the connection first: keep the place in line.
                pool.waiters.appendleft(waiter)
            else:
                pool.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.wake_one()  # woken, then cancelled: pass the turn on
                raise
            woken = True

    @staticmethod
    def _release(pool: _Pool, connection: _Connection, reusable: bool) -> None:
        if reusable and connection.usable() and not pool.closed:
            connection.buffer.clear()
            pool.idle.append(connection)
        else:
            connection.close()
            pool.open -= 1
        pool.wake_one()

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.scheme == "https" else None
        host, port = origin.host, origin.port
        if origin.proxy is not None:
            proxy = urlsplit(origin.proxy)
            host, port = proxy.hostname or "", proxy.port or 80
        try:
            async with asyncio.timeout(self._connect_timeout):
                if origin.proxy is None or tls is None:
                    _, connection = await loop.create_connection(
                        _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                    )
                else:
                    connection = await self._tunnel(origin, host, port, tls)
        except TimeoutError as exc:
            raise HttpTimeoutError(f"no connection to {host}:{port} in {self._connect_timeout}s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise HttpConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection

    async def _tunnel(self, origin: _Origin, host: str, port: int, tls: ssl.SSLContext) -> _Connection:
        """A CONNECT tunnel through the proxy to ``origin``, TLS inside it."""
        loop = asyncio.get_running_loop()
        transport, connection = await loop.create_connection(_Connection, host, port)
        try:
            target = f"{host_literal(origin.host)}:{origin.port}"
            proxy_auth = _proxy_authorization(origin.proxy or "")
            transport.write(
                f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{proxy_auth}\r\n".encode("latin-1")
            )
            while _HEAD_END not in connection.buffer:
                await connection.more()
            status, _, _ = _parse_head(connection, connection.buffer.index(_HEAD_END))
            if status != 200:
                raise HttpConnectError(f"the proxy refused a tunnel to {target}: HTTP {status}")
            connection.buffer.clear()
            secured = await loop.start_tls(transport, connection, tls, server_hostname=origin.host)
        except BaseException:
            transport.close()
            raise
        if secured is None:
            raise HttpConnectError(f"no TLS through the proxy to {target}")
        connection.transport = secured
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context


def _proxy_authorization(proxy: str) -> str:
    parts = urlsplit(proxy)
    if parts.username is None:
        return ""
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"


async def _read_response(connection: _Connection, method: str) -> tuple[HttpResponse, bool]:
    """The next whole answer on ``connection``, and whether the connection may be used again."""
    while True:
        end = connection.buffer.find(_HEAD_END)
        while end < 0:
            if len(connection.buffer) > _MAX_HEAD_BYTES:
                raise HttpClosedError("the answer's headers are too long")
            await connection.more()
            end = connection.buffer.find(_HEAD_END)
        status, headers, keep_alive = _parse_head(connection, end)
        del connection.buffer[: end + len(_HEAD_END)]
        if 100 <= status < 200:
            continue  # informational: the real answer follows
        break
    if method == "HEAD" or status in (204, 304):
        return HttpResponse(status, headers, b""), keep_alive
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return HttpResponse(status, headers, await _read_chunks(connection)), keep_alive
    length_header = headers.get("content-length")
    if length_header is not None:
        try:
            length = int(length_header)
        except ValueError as exc:
            raise HttpClosedError(f"a Content-Length that is not a number: {length_header!r}") from exc
        while len(connection.buffer) < length:
            await connection.more()
        body = bytes(connection.buffer[:length])
        del connection.buffer[:length]
        return HttpResponse(status, headers, body), keep_alive
    # Neither length nor chunks: the body is everything until the server closes.
    while not connection.ended:
        try:
            await connection.more()
        except HttpClosedError:
            break
    return HttpResponse(status, headers, bytes(connection.buffer)), False


def _parse_head(connection: _Connection, end: int) -> tuple[int, dict[str, str], bool]:
    lines = bytes(connection.buffer[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        raise HttpClosedError(f"not an HTTP answer: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    return int(code), headers, keep_alive


async def _read_chunks(connection: _Connection) -> bytes:
    body = bytearray()
    while True:
        line_end = connection.buffer.find(_LINE_END)
        while line_end < 0:
            await connection.more()
            line_end = connection.buffer.find(_LINE_END)
        size_text = bytes(connection.buffer[:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise HttpClosedError(f"a chunk size that is not a number: {size_text!r}") from exc
        del connection.buffer[: line_end + len(_LINE_END)]
        if size == 0:
            # Trailers (rare) end with an empty line.
            while True:
                line_end = connection.buffer.find(_LINE_END)
                while line_end < 0:
                    await connection.more()
                    line_end = connection.buffer.find(_LINE_END)
                trailer = connection.buffer[:line_end]
                del connection.buffer[: line_end + len(_LINE_END)]
                if not trailer:
                    return bytes(body)
        while len(connection.buffer) < size + len(_LINE_END):
            await connection.more()
        body += connection.buffer[:size]
        del connection.buffer[: size + len(_LINE_END)]
