"""The dashboard's web server: one page, a stream of the rollouts' views, and the actions.

Contract:
- ``run(source, address=, port=, say=, warn=)`` serves until SIGINT or SIGTERM, then stops its
  watches (kubectl processes) and its streams and returns. It says the page's URL once it listens;
  an address that is not loopback is served only with a warning, since whoever reaches the page
  can press its buttons. A port in use is a DashboardError that says so.
- Two kubectl watches feed a ``Board``: the rollouts (``--watch --output-watch-events``) and their
  Kubernetes Events. When a watch ends (the API server closes watches after a while) or fails, it is
  started again, after a growing delay if it failed; before each start of the rollouts' watch a
  list drops the rollouts deleted meanwhile. The page hears of each watch's state.
- The page (``GET /``) reads ``GET /api/stream``, server-sent events: ``rollouts`` (every view, on
  connecting), ``rollout`` (one view, on every change, and as ages and countdowns move, checked each
  second), ``removed`` and ``watch``. A view is the plugin's ``RolloutView`` plus ``observed``: the
  weights this server saw and when, beside the history the Events tell.
- ``POST /api/rollouts/{namespace}/{name}/actions`` with ``{"action": "promote"}`` asks the operator
  through the plugin (``Source.act``) and answers 202 with the request's id; the operator's answer
  comes later in the view's ``last_action``.

Safety: a page that can move production traffic must not be drivable by other web pages.
- Every request's ``Host`` must name this server: an IP literal, ``localhost``, or the name it was
  asked to bind (with a wildcard address also this machine's name), with its port. A DNS-rebinding
  page reaches the server under its own domain name and is refused.
- Every action carries the per-run token (``secrets.token_urlsafe``) in the
  ``X-Lambda-Rollouts-Token`` header, as JSON (``Content-Type: application/json``), and, when the
  browser names an ``Origin``, this server's own. The token is written into the page, never into a
  URL; another site can neither read the page nor send that header without a CORS preflight, which
  is never granted.
- The page may not be framed (``frame-ancestors 'none'``), runs only its own script (a per-response
  nonce in its Content-Security-Policy), and nothing is cached or sent as a referrer.
The page is as open as the port: any local user of the machine can load it, as with ``kubectl proxy``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import hmac
import html
import importlib.resources
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import yarl
from aiohttp import web
from aiohttp.typedefs import Handler

from lambda_rollouts.dashboard.view import DashboardError, RolloutView, Source

logger = logging.getLogger(__name__)

TOKEN_HEADER: Final = "X-Lambda-Rollouts-Token"
# How often views are rendered again for their ages and countdowns, while a page is open.
TICK_SECONDS: Final = 1.0
# A comment on an idle stream, so that neither side takes it for dead.
KEEPALIVE_SECONDS: Final = 15.0
RETRY_INITIAL_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 30.0
# A watch that ran this long before it ended was working: the next failure starts the delays over.
STEADY_SECONDS: Final = 30.0
# Messages a page may fall behind before its stream is closed; it reconnects and starts afresh.
SUBSCRIBER_BACKLOG: Final = 1000
EVENTS_PER_ROLLOUT: Final = 200
OBSERVED_PER_ROLLOUT: Final = 500
# The most one watch event may take (a rollout with its status can be large): more is not JSON.
STREAM_LIMIT: Final = 16 * 1024 * 1024
SHUTDOWN_SECONDS: Final = 5.0
# How long a kubectl whose output ended has to exit before it is ended.
REAP_SECONDS: Final = 5.0

Key = tuple[str, str]  # (namespace, name)


# ---------------------------------------------------------------------------------------------
# The rollouts, their Events and who listens.


@dataclasses.dataclass(eq=False)
class Subscriber:
    """One open stream: its messages, ready to send; None ends it."""

    queue: asyncio.Queue[str | None] = dataclasses.field(default_factory=asyncio.Queue)


def _message(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _key_of(body: Mapping[str, Any]) -> Key | None:
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    namespace, name = metadata.get("namespace"), metadata.get("name")
    return (namespace or "", name) if isinstance(name, str) else None


def _event_key(event: Mapping[str, Any]) -> tuple[Key, str] | None:
    """(the rollout's key, the Event's own name) of a Kubernetes Event."""
    involved, metadata = event.get("involvedObject"), event.get("metadata")
    if not isinstance(involved, Mapping) or not isinstance(metadata, Mapping):
        return None
    name, own = involved.get("name"), metadata.get("name")
    if not isinstance(name, str) or not isinstance(own, str):
        return None
    namespace = involved.get("namespace") or metadata.get("namespace") or ""
    return (namespace, name), own


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Board:
    """What the page shows: the rollouts and Events the watches reported, as views."""

    def __init__(self, source: Source, clock: Callable[[], datetime] = _now) -> None:
        self.source = source
        self.clock = clock
        self.rollouts: dict[Key, Mapping[str, Any]] = {}
        self.events: dict[Key, dict[str, Mapping[str, Any]]] = {}
        # Weights as the status said them while this server watched: (when, weight).
        self.observed: dict[Key, list[dict[str, Any]]] = {}
        self.views: dict[Key, dict[str, Any]] = {}
        self.watches: dict[str, dict[str, str]] = {}
        self.subscribers: set[Subscriber] = set()
        self.closed = False

    # -- what the watches report ---------------------------------------------------------------

    def rollout_changed(self, kind: str, body: Mapping[str, Any]) -> None:
        key = _key_of(body)
        if key is None:
            return
        if kind == "DELETED":
            self.forget(key)
            return
        self.rollouts[key] = body
        self.refresh(key)

    def event_changed(self, kind: str, event: Mapping[str, Any]) -> None:
        found = _event_key(event)
        if found is None:
            return
        key, own = found
        events = self.events.setdefault(key, {})
        if kind == "DELETED":
            events.pop(own, None)
            if not events:
                del self.events[key]
        else:
            events.pop(own, None)  # a changed Event moves to the end: the newest stay
            events[own] = event
            while len(events) > EVENTS_PER_ROLLOUT:
                del events[next(iter(events))]
        if key in self.rollouts:
            self.refresh(key)

    def sweep(self, bodies: Sequence[Mapping[str, Any]]) -> None:
        """Take a fresh list of every rollout: those missing from it were deleted meanwhile."""
        present = {key: body for body in bodies if (key := _key_of(body)) is not None}
        for key in [key for key in self.rollouts if key not in present]:
            self.forget(key)
        for key, body in present.items():
            self.rollouts[key] = body
            self.refresh(key)

    def forget(self, key: Key) -> None:
        self.rollouts.pop(key, None)
        self.observed.pop(key, None)
        if self.views.pop(key, None) is not None:
            self.broadcast("removed", {"namespace": key[0], "name": key[1]})

    def watch_state(self, stream: str, state: str, message: str = "") -> None:
        report = {"stream": stream, "state": state, "message": message}
        if self.watches.get(stream) != report:
            self.watches[stream] = report
            self.broadcast("watch", report)

    # -- views ---------------------------------------------------------------------------------

    def refresh(self, key: Key) -> None:
        """Render the rollout's view again; send it if it changed."""
        body = self.rollouts.get(key)
        if body is None:
            return
        now = self.clock()
        view: RolloutView = self.source.present(body, list(self.events.get(key, {}).values()), now)
        observed = self.observed.setdefault(key, [])
        weight = view["weight"]
        if weight is not None and (not observed or observed[-1]["weight"] != weight):
            observed.append({"at": _stamp(now), "weight": weight})
            del observed[:-OBSERVED_PER_ROLLOUT]
        shown = {**view, "observed": list(observed)}
        if self.views.get(key) != shown:
            self.views[key] = shown
            self.broadcast("rollout", shown)

    def refresh_all(self) -> None:
        for key in list(self.rollouts):
            self.refresh(key)

    # -- listeners -----------------------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        if self.closed:  # a page that reconnects while the server stops
            subscriber.queue.put_nowait(None)
            return subscriber
        ordered = [self.views[key] for key in sorted(self.views)]
        subscriber.queue.put_nowait(_message("rollouts", ordered))
        for report in self.watches.values():
            subscriber.queue.put_nowait(_message("watch", report))
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def broadcast(self, kind: str, data: Any) -> None:
        message = _message(kind, data)
        for subscriber in list(self.subscribers):
            if subscriber.queue.qsize() >= SUBSCRIBER_BACKLOG:
                # A page that does not keep up starts afresh rather than hold every message.
                self.unsubscribe(subscriber)
                subscriber.queue.put_nowait(None)
            else:
                subscriber.queue.put_nowait(message)

    def close(self) -> None:
        self.closed = True
        for subscriber in list(self.subscribers):
            self.unsubscribe(subscriber)
            subscriber.queue.put_nowait(None)


# ---------------------------------------------------------------------------------------------
# The watches: kubectl processes, started again when they end.


async def watch_objects(stream: asyncio.StreamReader) -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
    """(type, object) of each watch event kubectl writes: JSON objects, one after the other."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    while chunk := await stream.read(1 << 16):
        buffer += text.decode(chunk)
        while buffer := buffer.lstrip():
            try:
                value, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError:
                if len(buffer) > STREAM_LIMIT:
                    raise DashboardError("kubectl wrote something other than JSON") from None
                break  # the rest of this event is still on its way
            buffer = buffer[end:]
            if isinstance(value, Mapping) and isinstance(value.get("object"), Mapping):
                yield str(value.get("type")), value["object"]


@dataclasses.dataclass
class Watch:
    """One kubectl watch of the board, kept running."""

    board: Board
    stream: str  # "rollouts" or "events": how the page names it
    command: Callable[[], list[str]]
    apply: Callable[[str, Mapping[str, Any]], None]
    # Run before every start (the rollouts' sweep); raises DashboardError.
    prepare: Callable[[], Awaitable[None]] | None = None

    async def run_forever(self) -> None:
        delay = RETRY_INITIAL_SECONDS
        while True:
            started = time.monotonic()
            try:
                problem = await self._run_once()
            except DashboardError as error:
                problem = error.message
            except Exception as error:  # a dashboard that stops watching must say so, and go on
                logger.exception("%s watch failed", self.stream)
                problem = f"internal error: {error!r}"
            if time.monotonic() - started >= STEADY_SECONDS:
                delay = RETRY_INITIAL_SECONDS
            if problem is None and time.monotonic() - started >= RETRY_INITIAL_SECONDS:
                continue  # the API server ended the watch, as it does now and then: at once again
            self.board.watch_state(self.stream, "retrying", problem or "the watch ended")
            logger.warning("%s watch: %s; again in %gs", self.stream, problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _run_once(self) -> str | None:
        """Run the watch until it ends: None when it ended well, else what went wrong."""
        try:
            if self.prepare is not None:
                await self.prepare()
            process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=STREAM_LIMIT,
            )
        except DashboardError as error:
            return error.message
        except OSError as error:
            return f"cannot run kubectl: {error.strerror or error}"
        assert process.stdout is not None
        assert process.stderr is not None
        errors = asyncio.create_task(process.stderr.read())
        self.board.watch_state(self.stream, "live")
        try:
            async for kind, body in watch_objects(process.stdout):
                self.apply(kind, body)
        except BaseException:  # cancelled, or kubectl wrote nonsense: it ends now
            await _reap(process, patience=0.0)
            errors.cancel()
            raise
        # Its output ended: kubectl is on its way out.
        code = await _reap(process, patience=REAP_SECONDS)
        stderr = (await errors).decode(errors="replace")
        return self.board.source.failure(stderr) if code else None


async def _reap(process: asyncio.subprocess.Process, *, patience: float) -> int:
    """Wait for a kubectl to exit, ending it if it has not within ``patience`` seconds."""
    try:
        # Shielded: the wait goes on when it takes too long, or when the watch is cancelled.
        return await asyncio.wait_for(asyncio.shield(process.wait()), patience)
    except TimeoutError:
        # Signalled only when still running: Popen.send_signal first polls the child, and a poll
        # that reaps it leaves asyncio's child watcher to report a made-up exit code (255).
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        return await asyncio.shield(process.wait())


async def tick(board: Board) -> None:
    """Render the views again each second while a page listens: ages and countdowns move."""
    while True:
        await asyncio.sleep(TICK_SECONDS)
        if board.subscribers:
            board.refresh_all()


# ---------------------------------------------------------------------------------------------
# Safety.


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def host_names(address: str) -> frozenset[str]:
    """The names a browser may use for this server, besides IP literals (which no DNS can rebind)."""
    names = {"localhost"}
    try:
        wildcard = ipaddress.ip_address(address).is_unspecified
    except ValueError:
        names.add(address.lower())  # a name given to --address
        wildcard = False
    if wildcard:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def host_allowed(header: str | None, names: frozenset[str], port: int) -> bool:
    """Whether a Host header names this server: an IP literal or one of ``names``, with its port."""
    # Nothing but a host and a port: no user part or path for a URL parser to read the host from.
    if not header or any(character in header for character in "@/?#\\ \t"):
        return False
    try:
        url = yarl.URL(f"http://{header}/")
    except ValueError:
        return False
    if url.host is None or (url.explicit_port or 80) != port:
        return False
    return _is_ip(url.host) or url.host in names


@dataclasses.dataclass
class Guard:
    """The safety rules of one run: its token and the names and port it answers to."""

    token: str
    names: frozenset[str]
    # The port asked for, then the one listened on (the system's choice for 0).
    port: int

    def refusal(self, request: web.Request) -> str | None:
        """Why an action request is refused, or None."""
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "missing or wrong token: use the buttons of the page"
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{request.headers.get('Host', '')}":
            return f"requests from {origin} are not accepted"
        if request.content_type != "application/json":
            return "send the action as JSON"
        return None


@web.middleware
async def _check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard: Guard = request.app[GUARD]
    if not host_allowed(request.headers.get("Host"), guard.names, guard.port):
        return web.json_response(
            {"error": f"this server does not answer to Host {request.headers.get('Host')!r}"}, status=403
        )
    return await handler(request)


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    )


# ---------------------------------------------------------------------------------------------
# The application.

BOARD: Final = web.AppKey("board", Board)
GUARD: Final = web.AppKey("guard", Guard)
PAGE: Final = web.AppKey("page", str)


def page_template() -> str:
    return importlib.resources.files("lambda_rollouts.dashboard").joinpath("page.html").read_text("utf-8")


def build_app(board: Board, guard: Guard) -> web.Application:
    app = web.Application(middlewares=[_check_host])
    app[BOARD], app[GUARD], app[PAGE] = board, guard, page_template()
    app.router.add_get("/", _page)
    app.router.add_get("/api/stream", _stream)
    app.router.add_post("/api/rollouts/{namespace}/{name}/actions", _act)
    app.on_response_prepare.append(_secure_headers)
    app.on_shutdown.append(_close_streams)
    return app


async def _page(request: web.Request) -> web.Response:
    board, guard = request.app[BOARD], request.app[GUARD]
    nonce = secrets.token_urlsafe(16)
    config = {"token": guard.token, "scope": board.source.scope, "actions": list(board.source.actions)}
    # JSON inside <script>: "<" escaped, so that no value can end the element.
    text = (
        request.app[PAGE]
        .replace("__NONCE__", nonce)
        .replace("__TITLE__", html.escape(f"LambdaRollouts: {board.source.scope}"))
        .replace("__CONFIG__", json.dumps(config).replace("<", "\\u003c"))
    )
    response = web.Response(text=text, content_type="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return response


async def _stream(request: web.Request) -> web.StreamResponse:
    board = request.app[BOARD]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    board.refresh_all()  # ages and countdowns as of now, though no page was open
    subscriber = board.subscribe()
    try:
        while True:
            try:
                message = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                message = ": keep-alive\n\n"
            if message is None:
                break
            await response.write(message.encode())
    except ConnectionResetError:
        pass  # the page went away
    finally:
        board.unsubscribe(subscriber)
    return response


async def _act(request: web.Request) -> web.Response:
    board, guard = request.app[BOARD], request.app[GUARD]
    refusal = guard.refusal(request)
    if refusal is not None:
        return web.json_response({"error": refusal}, status=403)
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "the body is not JSON"}, status=400)
    action = body.get("action") if isinstance(body, dict) else None
    if not isinstance(action, str) or action not in board.source.actions:
        return web.json_response({"error": f"unknown action {action!r}"}, status=400)
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    if (namespace, name) not in board.rollouts:
        return web.json_response({"error": f"no rollout {namespace}/{name} here"}, status=404)
    try:
        action_id = await asyncio.to_thread(board.source.act, namespace, name, action)
    except DashboardError as error:
        return web.json_response({"error": error.message}, status=502)
    logger.info("asked %s of %s/%s (id %s)", action, namespace, name, action_id)
    return web.json_response({"action": action, "id": action_id}, status=202)


async def _close_streams(app: web.Application) -> None:
    app[BOARD].close()


# ---------------------------------------------------------------------------------------------
# Running it.


def run(
    source: Source, *, address: str, port: int, say: Callable[[str], None], warn: Callable[[str], None]
) -> None:
    """Serve until SIGINT or SIGTERM; raises DashboardError when it cannot listen."""
    asyncio.run(serve(source, address=address, port=port, say=say, warn=warn))


async def serve(
    source: Source, *, address: str, port: int, say: Callable[[str], None], warn: Callable[[str], None]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    board = Board(source)
    runner = await _listen(board, address, port)
    try:
        bound = _bound_port(runner, port)
        if not is_loopback(address):
            warn(
                f"serving on {address}, not on loopback: whoever reaches this address can load the "
                "page and move the rollouts' traffic with your Kubernetes credentials"
            )
        url = f"http://{_host_port(_visited(address), bound)}/"
        say(f"Dashboard of the LambdaRollouts in {source.scope}: {url}")
        say("Press Ctrl-C to stop.")
        await _until(stop, board)
    finally:
        board.close()
        await runner.cleanup()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
    say("Stopped.")


async def _listen(board: Board, address: str, port: int) -> web.AppRunner:
    guard = Guard(secrets.token_urlsafe(32), host_names(address), port)
    runner = web.AppRunner(build_app(board, guard), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        why = os.strerror(error.errno) if error.errno else str(error)
        advice = "; choose another --port" if port else ""
        raise DashboardError(f"cannot serve on {_host_port(address, port)}: {why}{advice}") from error
    guard.port = _bound_port(runner, port)
    return runner


def _visited(address: str) -> str:
    """The address to open in a browser: a wildcard's loopback (0.0.0.0: 127.0.0.1, "::": ::1)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if not ip.is_unspecified:
        return address
    return "127.0.0.1" if ip.version == 4 else "::1"


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


async def _until(stop: asyncio.Event, board: Board) -> None:
    """Keep the watches and the ticker running until ``stop`` is set."""

    async def sweep() -> None:
        board.sweep(await asyncio.to_thread(board.source.list_rollouts))

    watches = [
        Watch(board, "rollouts", board.source.watch_rollouts, board.rollout_changed, prepare=sweep),
        Watch(board, "events", board.source.watch_events, board.event_changed),
    ]
    tasks = [asyncio.create_task(watch.run_forever()) for watch in watches]
    tasks.append(asyncio.create_task(tick(board)))
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
