"""A hook its namespace may not call is refused before anything is sent, and says why.

Through the whole reconcile: a real ``WebhookInvoker`` that posts to a real HTTP server on
127.0.0.1, which counts what reaches it; a fake Lambda, and a fake Lambda hook invoker that records
every Invoke. A refused hook leaves the rollout ``Degraded`` with ``Stalled=True``, reason
``Forbidden``, no request sent, no Invoke made and no alias written. What a hook's answer puts in
the status is short and carries no credentials.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Network, ip_network
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.test_utils import TestServer

from lambda_rollouts.hooks import EXCERPT_LIMIT, HookDispatcher
from lambda_rollouts.reconcile import RolloutRef, RolloutService
from lambda_rollouts.settings import Settings, TenantPolicy
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.hooks import FakeHookInvoker
from lambda_rollouts.testing.kube import RecordingStatusWriter
from lambda_rollouts.webhooks import WebhookInvoker

from .service_doubles import Events, MappedResolver, seed_checkout

REGION = "eu-west-1"
LOOPBACK = [ip_network("127.0.0.0/8")]


class Receiver:
    """An HTTP server on 127.0.0.1 that counts the requests reaching it and answers as told."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.status = 200
        self.body = ""
        self.headers: dict[str, str] = {}
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def _handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        return web.Response(status=self.status, text=self.body, headers=self.headers)

    def url(self, path: str = "/hooks/smoke", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.server.start_server(access_log=None)
    yield found
    await found.server.close()


@dataclass
class Operator:
    """One rollout's reconciles, with the real webhook invoker and fakes for Lambda."""

    settings: Settings
    resolver: AbstractResolver | None = None
    aws: FakeLambda = field(default_factory=FakeLambda)
    writer: RecordingStatusWriter = field(default_factory=RecordingStatusWriter)
    invokes: FakeHookInvoker = field(default_factory=FakeHookInvoker)
    events: Events = field(default_factory=Events)

    def __post_init__(self) -> None:
        self.webhooks = WebhookInvoker(
            retry_delay_seconds=0.01,
            allowed_networks=self.settings.hook_allowed_networks,
            resolver=self.resolver,
        )
        seed_checkout(self.aws)
        self.service = RolloutService(
            settings=self.settings,
            router=self.aws,
            writer=self.writer,
            clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
            hooks=HookDispatcher(self.invokes, self.webhooks),
        )

    async def reconcile(self, namespace: str, hooks: dict[str, Any]) -> dict[str, Any]:
        """The status written for a rollout of checkout-api with these hooks."""
        body = {
            "metadata": {"name": "checkout", "namespace": namespace, "generation": 1},
            "spec": {
                "functionName": "checkout-api",
                "alias": "live",
                "version": "2",
                "region": REGION,
                "strategy": {"allAtOnce": {}},
                "hooks": hooks,
            },
        }
        await self.service.reconcile(RolloutRef(namespace, "checkout"), body, self.events)
        return self.writer.writes[-1][2]


@pytest.fixture
async def operator() -> AsyncIterator[Callable[..., Operator]]:
    made: list[Operator] = []

    def make(
        tenancy: dict[str, TenantPolicy] | None = None,
        allowed: list[IPv4Network] | None = None,
        resolver: AbstractResolver | None = None,
    ) -> Operator:
        settings = Settings(default_region=REGION, tenancy=tenancy, hook_allowed_networks=allowed or [])
        made.append(Operator(settings, resolver))
        return made[-1]

    yield make
    for each in made:
        await each.webhooks.close()


def stalled(status: dict[str, Any]) -> tuple[str, str, str]:
    condition = next(c for c in status["conditions"] if c["type"] == "Stalled")
    return status["phase"], condition["status"], condition["reason"]


FORBIDDEN = ("Degraded", "True", "Forbidden")


def team_a(**extra: Any) -> dict[str, TenantPolicy]:
    return {
        "team-a": TenantPolicy(functions=["checkout-*"], accounts=["111122223333"], regions=["eu-*"], **extra)
    }


@pytest.mark.parametrize(
    ("function_name", "refusal"),
    [
        ("checkout-smoke", None),
        ("arn:aws:lambda:eu-west-1:111122223333:function:checkout-smoke", None),
        (
            "arn:aws:lambda:eu-west-1:999999999999:function:checkout-smoke",
            "namespace team-a may not call the beforeAllowTraffic hook function checkout-smoke in account "
            "999999999999: allowed are 111122223333",
        ),
        (
            "billing-export",
            "namespace team-a may not call the beforeAllowTraffic hook function billing-export: allowed are "
            "checkout-*",
        ),
        (
            "arn:aws:lambda:us-east-1:111122223333:function:checkout-smoke",
            "namespace team-a may not call the beforeAllowTraffic hook function checkout-smoke in region "
            "us-east-1: allowed are eu-*",
        ),
    ],
)
async def test_a_hook_function_outside_the_policy_is_never_invoked(
    operator: Callable[..., Operator], function_name: str, refusal: str | None
) -> None:
    running = operator(tenancy=team_a())
    status = await running.reconcile("team-a", {"beforeAllowTraffic": {"functionName": function_name}})
    if refusal is None:
        assert [hook.function_name for _, hook, _ in running.invokes.calls] == [function_name]
        assert status["phase"] == "Healthy"
        return
    assert stalled(status) == FORBIDDEN
    assert status["message"] == refusal
    assert running.invokes.calls == []
    # Refused before any AWS call, as the rollout's own function would be.
    assert running.aws.calls == {}
    assert running.aws.writes == []


@pytest.mark.parametrize(
    ("path", "hook_urls", "refused"),
    [
        ("/hooks/smoke", ["http://127.0.0.1:{port}/hooks/*"], False),
        ("/admin", ["http://127.0.0.1:{port}/hooks/*"], True),
        ("/hooks/../admin", ["http://127.0.0.1:{port}/hooks/*"], True),
        ("/hooks/smoke", ["http://127.0.0.1:1/hooks/*"], True),
        ("/hooks/smoke", ["https://127.0.0.1:{port}/hooks/*"], True),
        ("/hooks/smoke", [], True),
    ],
)
async def test_a_hook_url_outside_hook_urls_is_never_called(
    operator: Callable[..., Operator], receiver: Receiver, path: str, hook_urls: list[str], refused: bool
) -> None:
    patterns = [pattern.format(port=receiver.server.port) for pattern in hook_urls]
    # Loopback is allowed: only hookUrls decide here.
    running = operator(tenancy=team_a(hook_urls=patterns), allowed=LOOPBACK)
    url = receiver.url(path)
    status = await running.reconcile("team-a", {"beforeAllowTraffic": {"url": url}})
    if not refused:
        assert receiver.paths == [path]
        assert status["phase"] == "Healthy"
        return
    assert stalled(status) == FORBIDDEN
    assert status["message"] == (
        f"the beforeAllowTraffic hook (webhook {url}) may not be called: namespace team-a may not call it: "
        f"allowed hookUrls are {', '.join(patterns) or 'none'}"
    )
    assert receiver.paths == []
    assert running.aws.calls == {}


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        (
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "169.254.169.254 is link-local (169.254.0.0/16), where cloud metadata and credential "
            "services answer",
        ),
        ("http://[fd00:ec2::254]/latest/api/token", "fd00:ec2::254 is the EC2 instance metadata service"),
        ("http://[::ffff:169.254.169.254]/latest/", "::ffff:a9fe:a9fe is link-local (169.254.0.0/16)"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is the name of a"),
    ],
)
async def test_metadata_addresses_are_refused_without_tenancy(
    operator: Callable[..., Operator], url: str, refusal: str
) -> None:
    running = operator(allowed=LOOPBACK)
    status = await running.reconcile("default", {"beforeAllowTraffic": {"url": url}})
    assert stalled(status) == FORBIDDEN
    assert status["message"].startswith(
        f"the beforeAllowTraffic hook (webhook {url}) may not be called: {refusal}"
    )
    assert running.aws.calls == {}
    assert running.aws.writes == []


async def test_loopback_is_refused_unless_allowed(
    operator: Callable[..., Operator], receiver: Receiver
) -> None:
    refused = await operator().reconcile("default", {"beforeAllowTraffic": {"url": receiver.url()}})
    assert stalled(refused) == FORBIDDEN
    assert "127.0.0.1 is loopback (127.0.0.0/8)" in refused["message"]
    assert receiver.paths == []

    allowed = await operator(allowed=LOOPBACK).reconcile(
        "default", {"beforeAllowTraffic": {"url": receiver.url()}}
    )
    assert allowed["phase"] == "Healthy"
    assert receiver.paths == ["/hooks/smoke"]


@pytest.mark.parametrize(
    ("answers", "allowed", "refused_address"),
    [
        (["127.0.0.1"], [], "127.0.0.1"),
        (["169.254.169.254"], LOOPBACK, "169.254.169.254"),
        (["127.0.0.1", "169.254.169.254"], LOOPBACK, "169.254.169.254"),
        (["127.0.0.1"], LOOPBACK, None),
    ],
)
async def test_a_name_is_refused_by_the_address_it_resolves_to_when_called(
    operator: Callable[..., Operator],
    receiver: Receiver,
    answers: list[str],
    allowed: list[IPv4Network],
    refused_address: str | None,
) -> None:
    # The spec's check sees only the name; the refusal comes from the resolver, before connecting.
    running = operator(allowed=allowed, resolver=MappedResolver({"hooks.test": answers}))
    url = receiver.url(host="hooks.test")
    status = await running.reconcile("default", {"beforeAllowTraffic": {"url": url}})
    if refused_address is None:
        assert status["phase"] == "Healthy"
        assert receiver.paths == ["/hooks/smoke"]
        return
    assert stalled(status) == FORBIDDEN
    assert status["message"].startswith(
        f"webhook {url} may not be called: hooks.test resolves to {refused_address}, which is "
    )
    assert receiver.paths == []
    # The pre-flight reads happened (the hook comes after them); nothing was written.
    assert running.aws.writes == []


async def test_a_redirect_toward_metadata_is_not_followed(
    operator: Callable[..., Operator], receiver: Receiver
) -> None:
    receiver.status = 307
    receiver.headers = {"Location": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"}
    running = operator(allowed=LOOPBACK)
    status = await running.reconcile("default", {"beforeAllowTraffic": {"url": receiver.url(), "retries": 0}})
    assert status["message"].startswith(
        f"beforeAllowTraffic hook (webhook {receiver.url()}) failed: webhook {receiver.url()} "
        "answered HTTP 307, a redirect, which is not followed"
    )
    assert "169.254" not in json.dumps(status)
    assert receiver.paths == ["/hooks/smoke"]
    assert running.aws.writes == []


async def test_an_answer_reaches_the_status_short_and_without_credentials(
    operator: Callable[..., Operator], receiver: Receiver
) -> None:
    receiver.status = 502
    receiver.body = "\n".join(
        [
            "upstream failed",
            "Authorization: Bearer sekrit-bearer",
            "retry https://admin:sekrit-password@internal.example/x?sig=sekrit-sig",
            "key AKIAIOSFODNN7EXAMPLE",
            "x" * 5000,
        ]
    )
    running = operator(allowed=LOOPBACK)
    status = await running.reconcile("default", {"beforeAllowTraffic": {"url": receiver.url(), "retries": 0}})
    written = json.dumps(status) + json.dumps([event.message for event in running.events.posted])
    for secret in ("sekrit", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in written
    prefix = f"webhook {receiver.url()} answered HTTP 502: "
    [hook] = status["hooks"]
    assert hook["message"].startswith(prefix)
    quoted = hook["message"].removeprefix(prefix)
    assert len(quoted) == EXCERPT_LIMIT
    assert quoted.startswith(
        "upstream failed Authorization: [redacted] retry https://[redacted]@internal.example/x?[redacted] "
        "key [redacted] xxx"
    )
