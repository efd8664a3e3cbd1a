"""A threaded HTTP/1.1 server for a WSGI application that keeps client connections open.

The sandbox serves moto with it rather than with werkzeug's development server, which closes the
connection after every response. AWS keeps connections alive, so a client of the real service
pays for a TCP (and TLS) handshake once per connection, not once per call; with werkzeug, every
emulated call paid for a new connection on both sides and the sandbox measured that, not the
operator.

Contract:
- ``KeepAliveWsgiServer(app, host, port)``: ``start()`` listens (port 0: picked by the OS) and
  serves in a daemon thread, one thread per connection; ``address`` is ``(host, port)``;
  ``stop()`` stops accepting, closes every open connection and waits for the serving thread.
- Requests: bodies by ``Content-Length`` or chunked transfer encoding; anything else has no body.
  Responses are buffered and always carry ``Content-Length``, so the connection stays usable;
  hop-by-hop headers from the application are dropped. A client's ``Connection: close`` (or
  HTTP/1.0 without keep-alive) closes after the response, as HTTP says.
- An application error becomes a 500 with the exception's type in the body; the connection
  survives. Nothing is logged per request.
- Idle connections are closed after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_to_bytes

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once when a benchmark starts; the default backlog of 5 refuses some.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: WsgiApp, idle_timeout: float) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_connections = list(self.connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Idle connections end: a read that waits longer raises, and the connection closes.
        self.connection.settimeout(self.server.idle_timeout)
        # Small request/response pairs: waiting to coalesce them only adds latency.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; every method goes to the application.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            # PEP 3333: the decoded path's bytes, as latin-1.
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.path,
            "REQUEST_URI": self.path,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "CONTENT_LENGTH": str(len(body)) if body else "",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _serve(self) -> None:
        body = self._read_body()
        status = "500 Internal Server Error"
        response_headers: list[tuple[str, str]] = []

        def start_response(new_status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status, response_headers
            status, response_headers = new_status, headers
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        try:
            result = self.server.app(self._environ(body), start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception as exc:  # the client gets a 500, the server carries on
            status, response_headers = "500 Internal Server Error", [("Content-Type", "text/plain")]
            chunks = [f"{type(exc).__name__}\n".encode()]
        payload = b"".join(chunks)
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in response_headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)


class KeepAliveWsgiServer:
    """``app`` served over HTTP/1.1 with keep-alive, from a daemon thread; see the module docstring."""

    def __init__(self, app: WsgiApp, host: str, port: int = 0, *, idle_timeout: float = 60.0) -> None:
        self._server = _Server((host, port), app, idle_timeout)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgi-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
