"""WebhookInvoker against a real aiohttp server on 127.0.0.1 that records what it receives.

These tests run on the real clock (no looptime): a fast-forwarded loop would fire the client's
timeouts while a real request is still in flight. Retry delays are made tiny instead. The invoker
is allowed loopback (the address rule refuses it otherwise), except where the rule is tested.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_network

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lambda_rollouts import __version__
from lambda_rollouts.errors import ForbiddenError
from lambda_rollouts.hooks import EXCERPT_LIMIT, HookOutcome, hook_payload
from lambda_rollouts.model import Hook, HookPoint
from lambda_rollouts.observed import Target
from lambda_rollouts.webhooks import MAX_ANSWER_BYTES, WebhookInvoker

from .service_doubles import MappedResolver

TARGET = Target(function_name="checkout-api", alias="live", region="eu-west-1")
LOOPBACK = [ip_network("127.0.0.0/8")]
PAYLOAD = hook_payload(
    namespace="default",
    name="checkout",
    function_name="checkout-api",
    alias="live",
    stable_version="41",
    new_version="42",
    new_version_arn="arn:aws:lambda:eu-west-1:123456789012:function:checkout-api:42",
    point=HookPoint.BEFORE_ALLOW_TRAFFIC,
)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before answering.
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class HookServer:
    """Answers POSTs with scripted replies (the last one repeats) and records every request."""

    def __init__(self, server: TestServer) -> None:
        self._server = server
        self.replies: deque[Reply] = deque([Reply()])
        self.received: list[Received] = []

    def script(self, *replies: Reply) -> None:
        self.replies = deque(replies)

    @property
    def port(self) -> int:
        port = self._server.port
        assert port is not None
        return port

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(
            Received(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers=dict(request.headers),
                body=await request.read(),
            )
        )
        reply = self.replies.popleft() if len(self.replies) > 1 else self.replies[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)


@pytest.fixture
async def hook_server() -> AsyncIterator[HookServer]:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1")
    recorder = HookServer(server)
    app.router.add_route("*", "/{path:.*}", recorder.handle)
    # No access log: it would write the request's query string into the captured logs. (A test
    # server also cancels a slow handler once the client gives up, so teardown is quick.)
    await server.start_server(access_log=None)
    yield recorder
    await server.close()


@pytest.fixture
async def invoker() -> AsyncIterator[WebhookInvoker]:
    webhook_invoker = WebhookInvoker(retry_delay_seconds=0.01, allowed_networks=LOOPBACK)
    yield webhook_invoker
    await webhook_invoker.close()


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_success_posts_exactly_the_payload_as_json(
    hook_server: HookServer, invoker: WebhookInvoker
) -> None:
    hook_server.script(Reply(200, "OK"))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url()), PAYLOAD)
    assert outcome == HookOutcome(
        succeeded=True, message=f"webhook {hook_server.url()} succeeded", attempts=1
    )
    [request] = hook_server.received
    assert (request.method, request.path) == ("POST", "/hook")
    assert json.loads(request.body) == PAYLOAD
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"lambda-rollouts/{__version__}"


async def test_a_success_message_is_quoted(hook_server: HookServer, invoker: WebhookInvoker) -> None:
    hook_server.script(Reply(200, json.dumps({"status": "succeeded", "message": "12 checks passed"})))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url()), PAYLOAD)
    assert outcome.succeeded
    assert outcome.message == f'webhook {hook_server.url()} succeeded: "12 checks passed"'


async def test_500_then_200_succeeds_on_the_second_attempt(
    hook_server: HookServer, invoker: WebhookInvoker
) -> None:
    hook_server.script(Reply(500, "boom"), Reply(200))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), retries=2), PAYLOAD)
    assert (outcome.succeeded, outcome.attempts) == (True, 2)
    assert len(hook_server.received) == 2
    # Every attempt sends the same payload.
    assert hook_server.received[0].body == hook_server.received[1].body


async def test_always_503_fails_after_every_attempt_naming_the_status(
    hook_server: HookServer, invoker: WebhookInvoker
) -> None:
    hook_server.script(Reply(503, "upstream\n  unavailable"))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), retries=2), PAYLOAD)
    assert outcome == HookOutcome(
        succeeded=False,
        message=f"webhook {hook_server.url()} answered HTTP 503: upstream unavailable",
        attempts=3,
    )
    assert len(hook_server.received) == 3


async def test_an_error_body_is_cut_to_an_excerpt(hook_server: HookServer, invoker: WebhookInvoker) -> None:
    hook_server.script(Reply(500, "x" * 5000))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), retries=0), PAYLOAD)
    prefix = f"webhook {hook_server.url()} answered HTTP 500: "
    assert outcome.message.startswith(prefix)
    assert len(outcome.message) - len(prefix) == EXCERPT_LIMIT


async def test_status_failed_in_a_200_fails_quoting_the_message(
    hook_server: HookServer, invoker: WebhookInvoker
) -> None:
    hook_server.script(Reply(200, json.dumps({"status": "failed", "message": "smoke test 3 failed"})))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), retries=1), PAYLOAD)
    # A definite "no" is not asked again.
    assert outcome == HookOutcome(
        succeeded=False,
        message=f'webhook {hook_server.url()} answered status "failed": "smoke test 3 failed"',
        attempts=1,
        final=True,
    )
    assert len(hook_server.received) == 1


@pytest.mark.parametrize(("status", "attempts"), [(403, 1), (404, 1), (408, 3), (429, 3), (500, 3)])
async def test_refusals_are_final_and_trouble_is_retried(
    hook_server: HookServer, invoker: WebhookInvoker, status: int, attempts: int
) -> None:
    hook_server.script(*[Reply(status, "nope")] * 3)
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), retries=2), PAYLOAD)
    assert (outcome.succeeded, outcome.attempts, outcome.final) == (False, attempts, attempts == 1)
    assert len(hook_server.received) == attempts


async def test_a_slow_answer_times_out(hook_server: HookServer, invoker: WebhookInvoker) -> None:
    hook_server.script(Reply(200, delay=5.0))
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), timeout="200ms", retries=0), PAYLOAD)
    assert not outcome.succeeded
    assert outcome.message == f"webhook {hook_server.url()} timed out: no answer within 200ms"
    assert loop.time() - start < 2.0


async def test_a_refused_connection_fails(invoker: WebhookInvoker) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    outcome = await invoker.invoke(TARGET, Hook(url=url, retries=1), PAYLOAD)
    assert outcome == HookOutcome(
        succeeded=False,
        message=f"webhook {url} could not be called: cannot connect: Connection refused",
        attempts=2,
    )


async def test_a_redirect_is_not_followed(hook_server: HookServer, invoker: WebhookInvoker) -> None:
    hook_server.script(Reply(302, headers={"Location": hook_server.url("/elsewhere?token=other-secret")}))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), retries=0), PAYLOAD)
    assert not outcome.succeeded
    assert (
        outcome.message == f"webhook {hook_server.url()} answered HTTP 302, a redirect, which is not followed"
    )
    assert "other-secret" not in outcome.message
    assert [request.path for request in hook_server.received] == ["/hook"]


async def test_an_answer_too_large_to_read_fails(hook_server: HookServer, invoker: WebhookInvoker) -> None:
    hook_server.script(Reply(200, "x" * (MAX_ANSWER_BYTES + 1)))
    outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(), retries=0), PAYLOAD)
    assert not outcome.succeeded
    assert "more than" in outcome.message


async def test_credentials_and_query_never_reach_messages_or_logs(
    hook_server: HookServer, invoker: WebhookInvoker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = hook_server.url().split(":")[2].split("/")[0]
    secret_url = f"http://user:secret@127.0.0.1:{port}/hook?token=secret"
    refused_url = f"http://user:secret@127.0.0.1:{free_port()}/hook?token=secret"
    hook_server.script(Reply(503, "busy"), Reply(200, json.dumps({"status": "failed"})), Reply(delay=5.0))

    outcomes: list[HookOutcome] = [
        await invoker.invoke(TARGET, Hook(url=secret_url, retries=1), PAYLOAD),
        await invoker.invoke(TARGET, Hook(url=refused_url, retries=0), PAYLOAD),
        await invoker.invoke(TARGET, Hook(url=secret_url, timeout="100ms", retries=0), PAYLOAD),
    ]

    # The server did get the credentials (as basic authentication) and the query string.
    assert hook_server.received[0].headers["Authorization"].startswith("Basic ")
    assert hook_server.received[0].query == "token=secret"
    assert [outcome.succeeded for outcome in outcomes] == [False, False, False]
    assert [outcome.message.split(" ", 2)[2] for outcome in outcomes] == [
        'answered status "failed"',
        "could not be called: cannot connect: Connection refused",
        "timed out: no answer within 100ms",
    ]
    for outcome in outcomes:
        assert "secret" not in outcome.message
    assert caplog.records, "each attempt's outcome is logged"
    for record in caplog.records:
        assert "secret" not in record.getMessage()


async def test_the_session_is_shared_and_reopened_after_close(hook_server: HookServer) -> None:
    webhook_invoker = WebhookInvoker(retry_delay_seconds=0.01, allowed_networks=LOOPBACK)
    hook = Hook(url=hook_server.url())
    await webhook_invoker.invoke(TARGET, hook, PAYLOAD)
    first = webhook_invoker._http.session()
    await webhook_invoker.invoke(TARGET, hook, PAYLOAD)
    assert webhook_invoker._http.session() is first
    await webhook_invoker.close()
    assert first.closed
    assert (await webhook_invoker.invoke(TARGET, hook, PAYLOAD)).succeeded
    await webhook_invoker.close()


# -- the address rule, where aiohttp connects ---------------------------------------------------


async def invoke_refused(invoker: WebhookInvoker, url: str) -> str:
    """The refusal's message, once ``invoker`` refused to call ``url``."""
    try:
        with pytest.raises(ForbiddenError) as raised:
            await invoker.invoke(TARGET, Hook(url=url, retries=2), PAYLOAD)
    finally:
        await invoker.close()
    return raised.value.message


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_an_address_the_rule_refuses_is_never_connected_to(hook_server: HookServer, host: str) -> None:
    # Straight to the invoker, past the spec's check: the socket factory refuses it.
    message = await invoke_refused(WebhookInvoker(retry_delay_seconds=0.01), hook_server.url(host=host))
    assert hook_server.received == []
    assert "is loopback (127.0.0.0/8)" in message


async def test_a_refusal_names_the_hook_and_the_address(hook_server: HookServer) -> None:
    message = await invoke_refused(WebhookInvoker(), hook_server.url("/hook?token=secret"))
    assert message == (
        f"webhook {hook_server.url()} may not be called: 127.0.0.1 is loopback (127.0.0.0/8); hooks "
        "may not reach it unless the operator's LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS allows it"
    )
    assert hook_server.received == []


@pytest.mark.parametrize(
    ("answers", "allowed", "refused_address"),
    [
        (["127.0.0.1"], [], "127.0.0.1"),
        (["169.254.169.254"], LOOPBACK, "169.254.169.254"),
        (["::ffff:169.254.169.254"], LOOPBACK, "::ffff:169.254.169.254"),
        (["fd00:ec2::254"], LOOPBACK, "fd00:ec2::254"),
        # One refused address refuses the name, even next to one the hook may reach.
        (["127.0.0.1", "169.254.169.254"], LOOPBACK, "169.254.169.254"),
        (["169.254.169.254", "127.0.0.1"], LOOPBACK, "169.254.169.254"),
    ],
)
async def test_a_name_is_judged_by_the_addresses_it_resolves_to_when_called(
    hook_server: HookServer, answers: list[str], allowed: list[IPv4Network], refused_address: str
) -> None:
    resolver = MappedResolver({"hooks.test": answers})
    invoker = WebhookInvoker(retry_delay_seconds=0.01, allowed_networks=allowed, resolver=resolver)
    message = await invoke_refused(invoker, hook_server.url(host="hooks.test"))
    assert f"may not be called: hooks.test resolves to {refused_address}, which is " in message
    assert hook_server.received == []
    # Refused once: a refusal is not retried.
    assert resolver.asked == ["hooks.test"]


async def test_a_name_that_resolves_to_an_allowed_address_is_called(hook_server: HookServer) -> None:
    resolver = MappedResolver({"hooks.test": ["127.0.0.1"]})
    invoker = WebhookInvoker(retry_delay_seconds=0.01, allowed_networks=LOOPBACK, resolver=resolver)
    try:
        outcome = await invoker.invoke(TARGET, Hook(url=hook_server.url(host="hooks.test")), PAYLOAD)
    finally:
        await invoker.close()
    assert outcome.succeeded
    assert len(hook_server.received) == 1


async def test_the_same_name_is_refused_once_it_resolves_elsewhere(hook_server: HookServer) -> None:
    # What the name resolved to when the spec was written does not matter: each call checks anew.
    resolver = MappedResolver({"hooks.test": ["127.0.0.1"]})
    allowed = WebhookInvoker(allowed_networks=LOOPBACK, resolver=resolver)
    try:
        assert (await allowed.invoke(TARGET, Hook(url=hook_server.url(host="hooks.test")), PAYLOAD)).succeeded
    finally:
        await allowed.close()
    resolver.answers["hooks.test"] = ["169.254.169.254"]
    message = await invoke_refused(
        WebhookInvoker(allowed_networks=LOOPBACK, resolver=resolver), hook_server.url(host="hooks.test")
    )
    assert "hooks.test resolves to 169.254.169.254" in message
    assert len(hook_server.received) == 1


async def test_localhost_as_the_system_resolves_it_is_refused(hook_server: HookServer) -> None:
    message = await invoke_refused(WebhookInvoker(), hook_server.url(host="localhost"))
    assert "localhost resolves to " in message
    assert "loopback" in message
    assert hook_server.received == []


async def test_a_metadata_name_is_refused_before_it_is_resolved(hook_server: HookServer) -> None:
    resolver = MappedResolver({"metadata.google.internal": ["127.0.0.1"]})
    invoker = WebhookInvoker(allowed_networks=LOOPBACK, resolver=resolver)
    message = await invoke_refused(invoker, hook_server.url(host="metadata.google.internal"))
    assert "metadata.google.internal is the name of a cloud metadata service" in message
    assert resolver.asked == []
    assert hook_server.received == []
