"""``Receiver``: a loopback HTTP server that records what it receives and answers as it is told, to
stand in for a webhook, Slack or Teams in tests of notifications.

Contract:
- Every request is recorded in ``requests`` when it arrives (path, headers, body); it is answered
  with the next of ``answers`` (status, delay, headers, body), or ``default`` once they are used up.
  A delay is slept in the server's event loop, so a fast-forwarded loop fast-forwards it too.
- ``delivered`` holds the requests answered with a 2xx whose client was still connected when the
  answer was ready: the ones the sender saw delivered.
- ``async with Receiver(...)`` (or ``start``/``stop``) serves it in the running loop;
  ``in_thread()`` serves it from a thread of its own, for synchronous tests. ``url(path)`` is an
  ``http://127.0.0.1:<port>`` URL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from aiohttp import web


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class Received:
    path: str
    headers: Mapping[str, str]
    body: bytes


class Receiver:
    def __init__(self, answers: Iterable[Answer] = (), default: Answer | None = None) -> None:
        self._answers = list(answers)
        self.default = default or Answer()
        self.requests: list[Received] = []
        self.delivered: list[Received] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    def answer_next(self, *answers: Answer) -> None:
        """Answer the next requests with these, before any given earlier that are left."""
        self._answers[:0] = answers

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(request.path_qs, dict(request.headers), await request.read())
        self.requests.append(received)
        answer = self._answers.pop(0) if self._answers else self.default
        if answer.delay:
            await asyncio.sleep(answer.delay)
        transport = request.transport
        if 200 <= answer.status < 300 and transport is not None and not transport.is_closing():
            self.delivered.append(received)
        return web.Response(status=answer.status, text=answer.text, headers=dict(answer.headers))

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A handler keeps running when its client goes away: ``delivered`` looks at the transport.
        # No access log (it would show the URLs, secrets included, that the tests keep out of logs);
        # a stop does not wait for slow answers.
        self._runner = web.AppRunner(app, handler_cancellation=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    @contextmanager
    def in_thread(self) -> Iterator[Self]:
        """Serve from a daemon thread with an event loop of its own until the block ends."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name="receiver", daemon=True)
        thread.start()
        if not started.wait(timeout=10):
            raise RuntimeError("the receiver did not start")
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
