"""Secrets stay out of status and logs: a webhook URL's credentials and query string, and AWS
credentials, never appear in what the operator writes or logs."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from ipaddress import ip_network

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lambda_rollouts.hooks import HookDispatcher
from lambda_rollouts.reconcile import RolloutRef, RolloutService
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.hooks import FakeHookInvoker
from lambda_rollouts.testing.kube import RecordingStatusWriter
from lambda_rollouts.webhooks import WebhookInvoker

from .service_doubles import Events, seed_checkout

SECRET = "s3cr3t-t0ken"


@pytest.fixture
async def refusing_server() -> AsyncIterator[TestServer]:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal error")

    app = web.Application()
    app.router.add_post("/{tail:.*}", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_a_failing_webhook_with_credentials_leaks_them_nowhere(
    refusing_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    aws = seed_checkout(FakeLambda())
    writer = RecordingStatusWriter()
    # The receiver is on loopback, which hooks may reach only when allowed explicitly.
    webhooks = WebhookInvoker(retry_delay_seconds=0.01, allowed_networks=[ip_network("127.0.0.0/8")])
    service = RolloutService(
        settings=Settings(default_region="us-east-1", hook_allowed_networks=["127.0.0.0/8"]),
        router=aws,
        writer=writer,
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        hooks=HookDispatcher(FakeHookInvoker(), webhooks),
    )
    url = f"http://deployer:{SECRET}@127.0.0.1:{refusing_server.port}/smoke?token={SECRET}"
    body = {
        "metadata": {"name": "checkout", "namespace": "default", "generation": 1},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "2",
            "strategy": {"allAtOnce": {}},
            "hooks": {"beforeAllowTraffic": {"url": url, "retries": 1}},
        },
    }
    events = Events()
    caplog.set_level(logging.DEBUG)
    try:
        await service.reconcile(RolloutRef("default", "checkout"), body, events)
    finally:
        await webhooks.close()
    status = writer.writes[-1][2]
    assert status["phase"] == "Degraded"
    assert "answered HTTP 500" in status["message"]
    written = json.dumps(status) + json.dumps([event.message for event in events.posted])
    assert SECRET not in written
    # The test's own web server logs the query string it received; the operator's logs must not.
    operator_logs = [record.getMessage() for record in caplog.records if record.name != "aiohttp.access"]
    assert operator_logs
    assert not [line for line in operator_logs if SECRET in line]
    assert aws.writes == []
