"""The operator reaches the API server through a proxy, as kubectl and client-go do: the standard
``HTTPS_PROXY`` variable, and a kubeconfig's ``proxy-url``. A CONNECT proxy of the test's own counts
the tunnels it opens; the canary must go from start to Healthy through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .harness import CERT_USER, Scene, run_canary


class ConnectProxy:
    """An HTTP proxy that only tunnels (``CONNECT host:port``), in a thread of its own."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> ConnectProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # The tunnels still open end here, in their running loop: left to the garbage collector,
            # they would close their sockets through a loop that is closed by then.
            tunnels = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tunnels:
                task.cancel()
            await asyncio.gather(*tunnels, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self) -> int:
        self._server = await asyncio.start_server(self._tunnel, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _tunnel(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        request = await client_reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            client_writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            client_writer.close()
            return
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self.tunnels.append(target)
        client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(
            _pipe(client_reader, upstream_writer),
            _pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    running = ConnectProxy().start()
    try:
        yield running
    finally:
        running.stop()


def test_the_https_proxy_variable_carries_every_api_request(scene: Scene, proxy: ConnectProxy) -> None:
    kubeconfig = scene.server.kubeconfig_data("through-proxy", scene.server.pki.client(CERT_USER))
    scene.start_operator(kubeconfig, env={"HTTPS_PROXY": proxy.url})
    run_canary(scene)
    api = f"127.0.0.1:{scene.server.port}"
    assert proxy.tunnels, "no request went through the proxy"
    assert set(proxy.tunnels) == {api}


def test_a_kubeconfig_proxy_url_carries_every_api_request(
    scene: Scene, proxy: ConnectProxy, tmp_path: Path
) -> None:
    written = scene.server.kubeconfig_data("proxy-url", scene.server.pki.client(CERT_USER))
    config = yaml.safe_load(written.read_text())
    config["clusters"][0]["cluster"]["proxy-url"] = proxy.url
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(config))
    scene.start_operator(kubeconfig)
    run_canary(scene)
    assert set(proxy.tunnels) == {f"127.0.0.1:{scene.server.port}"}
