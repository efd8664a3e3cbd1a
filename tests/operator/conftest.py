"""The real Kopf operator against the Kubernetes API emulator, with AWS faked strictly.

Everything runs in the test's event loop, which looptime fast-forwards: the operator's clock is
the loop's, so a canary with minutes of pauses finishes in well under a second of real time. The
emulator serves in the same loop (its own timestamps stay on the wall clock).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
import pytest

from lambda_rollouts.aws.metrics import MetricProvider
from lambda_rollouts.aws.router import AliasRouter
from lambda_rollouts.crd import build_crd
from lambda_rollouts.handlers import Wiring, build_registry
from lambda_rollouts.hooks import HookInvoker
from lambda_rollouts.observed import AliasState, Target
from lambda_rollouts.reconcile import Backends, LoopClock
from lambda_rollouts.sandbox.kube import EmulatorHandle, run_kubernetes_emulator
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.fake_cloudwatch import FakeCloudWatch
from lambda_rollouts.testing.fake_lambda import FakeLambda
from lambda_rollouts.testing.hooks import FakeHookInvoker

BASE = "/apis/lambda.rollouts.dev/v1alpha1/namespaces/default/lambdarollouts"


@dataclass(frozen=True)
class TimedWrite:
    at: float  # loop time
    primary: str
    routing: dict[str, float]


class TimedRouter:
    """Wraps the strict fake to record when (in loop time) each alias write landed."""

    def __init__(self, fake: FakeLambda) -> None:
        self.fake = fake
        self.writes: list[TimedWrite] = []

    def _record(self, state: AliasState) -> AliasState:
        self.writes.append(
            TimedWrite(asyncio.get_running_loop().time(), state.function_version, dict(state.routing))
        )
        return state

    async def get_alias(self, target: Target) -> AliasState | None:
        return await self.fake.get_alias(target)

    async def create_alias(self, target: Target, version: str) -> AliasState:
        return self._record(await self.fake.create_alias(target, version))

    async def route(
        self, target: Target, *, primary: str, canary: str | None, canary_percent: float, revision_id: str
    ) -> AliasState:
        state = await self.fake.route(
            target, primary=primary, canary=canary, canary_percent=canary_percent, revision_id=revision_id
        )
        return self._record(state)

    async def get_version(self, target: Target, version: str) -> Any:
        return await self.fake.get_version(target, version)

    async def list_versions(self, target: Target) -> Any:
        return await self.fake.list_versions(target)

    def shape(self) -> list[tuple[str, dict[str, float]]]:
        return [(write.primary, write.routing) for write in self.writes]


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(BASE, json=body) as response:
            payload: dict[str, Any] = await response.json()
            assert response.status == 201, payload
            return payload

    async def get(self, name: str) -> dict[str, Any] | None:
        async with self.session.get(f"{BASE}/{name}") as response:
            if response.status == 404:
                return None
            payload: dict[str, Any] = await response.json()
            return payload

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session.patch(f"{BASE}/{name}", json={"spec": spec}, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def annotate(self, name: str, key: str, value: str | None) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        body = {"metadata": {"annotations": {key: value}}}
        async with self.session.patch(f"{BASE}/{name}", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def delete(self, name: str) -> None:
        async with self.session.delete(f"{BASE}/{name}") as response:
            assert response.status in (200, 202), await response.text()

    async def events(self) -> list[dict[str, Any]]:
        async with self.session.get("/api/v1/namespaces/default/events") as response:
            payload: dict[str, Any] = await response.json()
            items: list[dict[str, Any]] = payload.get("items", [])
            return items


def rollout(name: str = "checkout", version: str = "2", **spec: Any) -> dict[str, Any]:
    body_spec = {
        "functionName": "checkout-api",
        "alias": "live",
        "version": version,
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "5m"}},
                    {"setWeight": 50},
                    {"pause": {"duration": "10m"}},
                ]
            }
        },
    }
    body_spec.update(spec)
    return {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body_spec,
    }


async def eventually(condition: Callable[[], Any], *, within: float = 3600.0, step: float = 5.0) -> None:
    """Poll a condition (sync or async) in loop time; fail after ``within`` loop seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


@pytest.fixture
def fake_aws() -> FakeLambda:
    fake = FakeLambda()
    fake.add_function("checkout-api")
    for _ in range(3):
        fake.publish_version("checkout-api")  # versions 1, 2, 3
    fake.put_alias("checkout-api", "live", "1")
    return fake


@pytest.fixture
def router(fake_aws: FakeLambda) -> TimedRouter:
    return TimedRouter(fake_aws)


@pytest.fixture
async def kube() -> AsyncIterator[EmulatorHandle]:
    async with run_kubernetes_emulator([build_crd()]) as handle:
        yield handle


@pytest.fixture
async def api(kube: EmulatorHandle) -> AsyncIterator[Api]:
    # No client timeouts: looptime would fire them while a real request is in flight. No kept-alive
    # connections either: after a fast-forwarded operator restart, a GET on a pooled connection was
    # never answered (cause not found; the server's keep-alive expiry is the suspect).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        kube.url, timeout=aiohttp.ClientTimeout(total=None), connector=connector
    ) as session:
        yield Api(session)


def operator_task(wiring: Wiring, **options: Any) -> asyncio.Task[Any]:
    """The real Kopf operator over ``wiring``, cluster-wide, as a task of the running loop;
    ``options`` are ``kopf.operator``'s (``standalone``, ``liveness_endpoint``...)."""
    settings = kopf.OperatorSettings()
    # Kopf SIGKILLs a cancelled operator after this long; fast-forwarded time would get there.
    settings.process.ultimate_exiting_timeout = None
    return asyncio.create_task(
        kopf.operator(registry=build_registry(wiring), settings=settings, clusterwide=True, **options)
    )


class OperatorRunner:
    """Starts and stops the real Kopf operator in the test's loop, as often as a test needs."""

    def __init__(
        self,
        kube: EmulatorHandle,
        router: AliasRouter,
        settings: Settings,
        metrics: MetricProvider | None = None,
        hooks: HookInvoker | None = None,
    ) -> None:
        self.kube = kube
        self.router = router
        self.settings = settings
        self.metrics = metrics
        self.hooks = hooks
        self.task: asyncio.Task[Any] | None = None
        # One wall clock for every operator started here, as across a real restart; a new
        # LoopClock per start would re-anchor to the real wall time, which fast-forwarding leaves
        # behind.
        self.clock = LoopClock()

    async def start(self) -> None:
        wiring = Wiring(
            settings=self.settings,
            backends_factory=lambda _: Backends(router=self.router, metrics=self.metrics, hooks=self.hooks),
            clock_factory=lambda: self.clock,
            connection=kopf.ConnectionInfo(server=self.kube.url),
        )
        self.task = operator_task(wiring, standalone=True)
        await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.task is not None:
            # Cancelling is an abrupt stop, like a crash or a killed pod (a graceful one waits 5 s).
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


def operator_settings(**overrides: Any) -> Settings:
    """The tier's settings (slow drift checks, quick retries), with ``overrides``."""
    base: dict[str, Any] = {
        "default_region": "us-east-1",
        "drift_check_interval_seconds": 300,
        "retry_initial_delay_seconds": 5,
        "retry_max_delay_seconds": 60,
    }
    return Settings(**(base | overrides))


@pytest.fixture
def settings() -> Settings:
    return operator_settings()


@pytest.fixture
def cloudwatch() -> FakeCloudWatch:
    return FakeCloudWatch()


@pytest.fixture
def hooks() -> FakeHookInvoker:
    return FakeHookInvoker()


@pytest.fixture
async def operator(
    kube: EmulatorHandle,
    router: TimedRouter,
    settings: Settings,
    cloudwatch: FakeCloudWatch,
    hooks: FakeHookInvoker,
) -> AsyncIterator[OperatorRunner]:
    runner = OperatorRunner(kube, router, settings, cloudwatch, hooks)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
