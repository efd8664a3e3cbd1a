"""HttpClient against scripted servers on loopback: framing, keep-alive, failures, proxies, TLS.

Each server reads whole requests and answers with the bytes a test scripts, and records the
request heads and how many connections it accepted, so reuse and framing are observed on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lambda_rollouts.httpclient import (
    HttpClient,
    HttpClosedError,
    HttpConnectError,
    HttpTimeoutError,
)

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'

# (request head, request body) -> the bytes to answer with; None: close without answering.
Script = Callable[[str, bytes], bytes | None]


@dataclass
class Server:
    url: str
    port: int
    heads: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def requests(self, count: int) -> None:
        """Wait until ``count`` requests have arrived, and a moment more for their answers."""
        while len(self.heads) < count:
            self.arrived.clear()
            await self.arrived.wait()
        await asyncio.sleep(0.05)

    async def close_after(self, count: int, last_bytes: bytes = b"") -> None:
        """Once ``count`` requests have come: send ``last_bytes`` on the last one's connection, close it."""
        await self.requests(count)
        self.writers[-1].write(last_bytes)
        self.writers[-1].close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return head, await reader.readexactly(length) if length else b""


async def _serve(
    script: Script, tls: ssl.SSLContext | None = None
) -> tuple[Server, contextlib.AbstractAsyncContextManager[None]]:
    state = Server(url="", port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        try:
            while True:
                head, body = await _read_request(reader)
                state.heads.append(head)
                state.bodies.append(body)
                state.arrived.set()
                answer = script(head, body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test ended
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{state.port}"

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        try:
            yield
        finally:
            for writer in state.writers:
                writer.close()
            server.close()

    return state, running()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient(read_timeout=5.0, connect_timeout=2.0)
    yield http
    await http.close()


async def test_an_answer_by_length_and_the_connection_kept(client: HttpClient) -> None:
    server, handle = await _serve(lambda head, body: OK)
    async with handle:
        first = await client.request("PATCH", server.url + "/a?b=c%2F", {"X-Test": "1"}, b'{"x": 1}')
        second = await client.request("GET", server.url + "/again", {})
    assert (first.status, first.headers["content-type"], first.body) == (
        200,
        "application/json",
        b'{"ok": true}',
    )
    assert second.body == b'{"ok": true}'
    assert server.connections == 1
    assert server.heads[0].startswith("PATCH /a?b=c%2F HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in server.heads[0]
    assert "X-Test: 1\r\n" in server.heads[0]
    assert "Content-Length: 8\r\n" in server.heads[0]
    assert server.bodies[0] == b'{"x": 1}'
    assert "Content-Length" not in server.heads[1]


async def test_an_ipv6_host_is_named_in_brackets(client: HttpClient) -> None:
    # Through a proxy on 127.0.0.1, so that no IPv6 network is needed to see the request line.
    proxy, handle = await _serve(lambda head, body: OK)
    async with handle:
        answer = await client.request("GET", "http://[fd00::1]:6443/v6", {}, proxy=proxy.url)
    assert answer.status == 200
    assert proxy.heads[0].startswith("GET http://[fd00::1]:6443/v6 HTTP/1.1\r\n")
    assert "Host: [fd00::1]:6443\r\n" in proxy.heads[0]


async def test_a_given_host_header_is_not_repeated(client: HttpClient) -> None:
    server, handle = await _serve(lambda head, body: OK)
    async with handle:
        await client.request("GET", server.url + "/", {"Host": "signed.example:1"})
    assert server.heads[0].count("Host:") == 1
    assert "Host: signed.example:1\r\n" in server.heads[0]


async def test_a_chunked_answer_with_extensions_and_trailers(client: HttpClient) -> None:
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server, handle = await _serve(lambda head, body: chunked)
    async with handle:
        answers = [await client.request("GET", server.url + "/", {}) for _ in range(2)]
    assert [(answer.status, answer.body) for answer in answers] == [(201, b"hello world")] * 2
    assert answers[0].headers["x-a"] == "1, 2"
    assert server.connections == 1


async def test_an_answer_until_close_is_read_whole_and_its_connection_not_reused(client: HttpClient) -> None:
    server, handle = await _serve(lambda head, body: b"HTTP/1.1 200 OK\r\n\r\nto the ")
    async with handle:
        task = asyncio.ensure_future(client.request("GET", server.url + "/", {}))
        await server.close_after(1, b"end")
        first = await task
        second = asyncio.ensure_future(client.request("GET", server.url + "/", {}))
        await server.close_after(2)
        assert (await second).body == b"to the "
    assert first.body == b"to the end"
    assert server.connections == 2


async def test_connection_close_answers_open_a_new_connection(client: HttpClient) -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    server, handle = await _serve(lambda head, body: answer)
    async with handle:
        for _ in range(3):
            assert (await client.request("GET", server.url + "/", {})).body == b"ok"
    assert server.connections == 3


async def test_answers_without_a_body_and_informational_answers(client: HttpClient) -> None:
    def script(head: str, body: bytes) -> bytes:
        if head.startswith("HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
        if "/continue" in head:
            return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    server, handle = await _serve(script)
    async with handle:
        head = await client.request("HEAD", server.url + "/", {})
        empty = await client.request("DELETE", server.url + "/", {})
        continued = await client.request("POST", server.url + "/continue", {}, b"x")
    assert (head.status, head.body, empty.status, empty.body) == (200, b"", 204, b"")
    assert (continued.status, continued.body) == (200, b"yes")
    assert server.connections == 1


async def test_an_idle_connection_the_server_closed_is_not_used(client: HttpClient) -> None:
    server, handle = await _serve(lambda head, body: OK)
    async with handle:
        await client.request("GET", server.url + "/", {})
        server.writers[0].close()
        await asyncio.sleep(0.05)
        assert (await client.request("GET", server.url + "/", {})).status == 200
    assert server.connections == 2


def drops_the_kept_connection() -> Script:
    """Answers the first request of each connection; closes a kept one at its next, unanswered."""
    seen: set[str] = set()

    def script(head: str, body: bytes) -> bytes | None:
        path = head.split(" ")[1]
        if path.startswith("/again") and path not in seen:
            seen.add(path)
            return None
        return OK

    return script


async def test_a_kept_connection_closed_before_any_answer_is_retried_once_for_idempotent_requests(
    client: HttpClient,
) -> None:
    server, handle = await _serve(drops_the_kept_connection())
    async with handle:
        await client.request("GET", server.url + "/first", {})
        answer = await client.request("GET", server.url + "/again-get", {})
        await client.request("GET", server.url + "/first", {})
        said = await client.request("PATCH", server.url + "/again-patch", {}, b"{}", resend=True)
        await client.request("GET", server.url + "/first", {})
        with pytest.raises(HttpClosedError):
            await client.request("POST", server.url + "/again-post", {}, b"{}")
    assert (answer.status, said.status) == (200, 200)
    paths = [head.split(" ")[1] for head in server.heads]
    assert paths == [
        "/first",
        "/again-get",
        "/again-get",
        "/first",
        "/again-patch",
        "/again-patch",
        "/first",
        "/again-post",
    ]
    assert server.connections == 3  # one to start, one per resend (the POST is not sent again)


async def test_a_connection_dropped_midway(client: HttpClient) -> None:
    server, handle = await _serve(lambda head, body: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    async with handle:
        task = asyncio.ensure_future(client.request("GET", server.url + "/", {}))
        await server.close_after(1)
        with pytest.raises(HttpClosedError):
            await task


async def test_something_that_is_not_http(client: HttpClient) -> None:
    server, handle = await _serve(lambda head, body: b"SSH-2.0-OpenSSH\r\n\r\n")
    async with handle:
        with pytest.raises(HttpClosedError, match="not an HTTP answer"):
            await client.request("GET", server.url + "/", {})


async def test_nobody_listening(client: HttpClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(HttpConnectError, match=f"127.0.0.1:{port}"):
        await client.request("GET", f"http://127.0.0.1:{port}/", {})


async def test_an_answer_that_does_not_come_in_time() -> None:
    server, handle = await _serve(lambda head, body: b"")  # reads, never answers
    http = HttpClient(read_timeout=0.2)
    async with handle:
        with pytest.raises(HttpTimeoutError, match=r"in 0\.2s"):
            await http.request("GET", server.url + "/", {})
        # The timed-out connection was closed: the next request opens another.
        with pytest.raises(HttpTimeoutError):
            await http.request("GET", server.url + "/", {})
    await http.close()
    assert server.connections == 2


async def test_requests_beyond_the_limit_wait_for_a_connection() -> None:
    server, handle = await _serve(lambda head, body: OK)
    http = HttpClient(max_connections=1)
    async with handle:
        results = await asyncio.gather(*(http.request("GET", f"{server.url}/{n}", {}) for n in range(5)))
        answers = [result.body for result in results]
    await http.close()
    assert answers == [b'{"ok": true}'] * 5
    assert server.connections == 1
    assert [head.split(" ")[1] for head in server.heads] == ["/0", "/1", "/2", "/3", "/4"]


async def test_a_request_woken_for_a_connection_a_newcomer_took_keeps_its_place() -> None:
    server, handle = await _serve(lambda head, body: OK)
    http = HttpClient(max_connections=1)

    async def first_then_newcomer() -> None:
        await http.request("GET", server.url + "/first", {})
        # In the same step as the release that woke /second: the connection is idle, and taken.
        await http.request("GET", server.url + "/newcomer", {})

    async def queued(path: str) -> None:
        await http.request("GET", server.url + path, {})

    async with handle:
        first = asyncio.ensure_future(first_then_newcomer())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(queued("/second"))
        await asyncio.sleep(0)
        third = asyncio.ensure_future(queued("/third"))
        await asyncio.gather(first, second, third)
    await http.close()
    assert [head.split(" ")[1] for head in server.heads] == ["/first", "/newcomer", "/second", "/third"]


async def test_a_cancelled_request_closes_its_connection_and_frees_its_place() -> None:
    server, handle = await _serve(lambda head, body: OK if "/fast" in head else b"")
    http = HttpClient(max_connections=1)
    async with handle:
        slow = asyncio.ensure_future(http.request("GET", server.url + "/slow", {}))
        await server.requests(1)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert (await http.request("GET", server.url + "/fast", {})).status == 200
    await http.close()
    assert server.connections == 2


async def test_plain_requests_go_to_the_proxy_in_absolute_form(client: HttpClient) -> None:
    proxy, handle = await _serve(lambda head, body: OK)
    async with handle:
        answer = await client.request(
            "GET",
            "http://lambda.example:4566/2015-03-31/functions/f",
            {},
            proxy=f"http://user:p%40ss@127.0.0.1:{proxy.port}",
        )
    assert answer.status == 200
    assert proxy.heads[0].startswith("GET http://lambda.example:4566/2015-03-31/functions/f HTTP/1.1\r\n")
    assert "Host: lambda.example:4566\r\n" in proxy.heads[0]
    assert "Proxy-Authorization: Basic dXNlcjpwQHNz\r\n" in proxy.heads[0]  # user:p@ss


def _certificate(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


async def test_tls_is_verified(tmp_path: Path) -> None:
    server_tls, client_tls = _certificate(tmp_path)
    server, handle = await _serve(lambda head, body: OK, tls=server_tls)
    trusting, untrusting = HttpClient(ssl_context=client_tls), HttpClient()
    async with handle:
        assert (await trusting.request("GET", server.url + "/", {})).status == 200
        with pytest.raises(HttpConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.request("GET", server.url + "/", {})
    await trusting.close()
    await untrusting.close()


async def test_https_goes_through_a_connect_tunnel(tmp_path: Path) -> None:
    server_tls, client_tls = _certificate(tmp_path)
    server, handle = await _serve(lambda head, body: OK, tls=server_tls)
    tunnels: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        tunnels.append(head.split("\r\n")[0])
        if not head.startswith(f"CONNECT 127.0.0.1:{server.port} "):
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
            sink.close()

        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    http = HttpClient(ssl_context=client_tls)
    async with handle:
        answers = [await http.request("GET", server.url + "/secret", {}, proxy=proxy_url) for _ in range(2)]
        with pytest.raises(HttpConnectError, match="403"):
            await http.request("GET", "https://127.0.0.2:1/", {}, proxy=proxy_url)
        await http.close()
        proxy_server.close()
    assert [answer.body for answer in answers] == [b'{"ok": true}'] * 2
    assert tunnels[:1] == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"]
    assert server.heads[0].startswith("GET /secret HTTP/1.1\r\n")
    assert server.connections == 1  # the tunnel is kept alive like any connection


async def test_a_closed_client_keeps_no_connection() -> None:
    server, handle = await _serve(lambda head, body: OK)
    http = HttpClient()
    async with handle:
        await http.request("GET", server.url + "/", {})
        await http.close()
        await asyncio.sleep(0.05)
        await http.request("GET", server.url + "/", {})
    await http.close()
    assert server.connections == 2


def test_only_absolute_http_urls() -> None:
    with pytest.raises(ValueError, match="absolute"):
        asyncio.run(HttpClient().request("GET", "/relative", {}))


def test_the_client_on_uvloop(tmp_path: Path) -> None:
    # uvloop's transports are not subclasses of asyncio.Transport; the operator runs on uvloop.
    async def scenarios() -> None:
        http = HttpClient(read_timeout=5.0, connect_timeout=2.0)
        try:
            await test_an_answer_by_length_and_the_connection_kept(http)
            await test_a_kept_connection_closed_before_any_answer_is_retried_once_for_idempotent_requests(
                http
            )
        finally:
            await http.close()
        await test_https_goes_through_a_connect_tunnel(tmp_path)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenarios())
        assert isinstance(runner.get_loop(), uvloop.Loop)
