"""High availability: replicas of the real Kopf operator elect one active operator by Kopf peering.

Each replica is a whole Kopf operator with peering on (the project's registry and startup
settings, with its own priority and identity), in the test's loop, against the emulator, which
serves the ClusterKopfPeering CRD and the ``lambda-rollouts`` object. The replicas drive one strict
fake Lambda, each through its own recording router and status writer, so every AWS call and status
write is attributed to the replica that made it, in loop time. The failover figures are printed
(``-s`` shows them).

``kopf.operator()`` cannot run twice in one loop: when it exits, it cancels every task created
after it started, taken for its own sub-tasks ("there is no way to trace who spawned what"), which
would take the other replica down with it. So each replica runs ``kopf.spawn_tasks()`` and
``kopf.run_tasks()`` itself and tells ``run_tasks`` which tasks are not its own: a task factory on
the test's loop records the replica that created each task.

Kopf measures a peer's liveness on the wall clock (``datetime.now()`` in its peering module) while
it sleeps on the loop's clock; looptime fast-forwards only the loop. Left alone, a standby would
wait the lifetime of a dead peer in *real* seconds, re-checking it in a tight fast-forwarded loop.
So the ``peering_clock`` fixture makes Kopf's peering read the same loop-driven wall clock as the
operator's own ``LoopClock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import logging
import socket
import types
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import kopf
import pytest
from click.testing import CliRunner
from kopf._cogs.structs import references as kopf_references
from kopf._core.engines import peering as kopf_peering

from lambda_rollouts.cli import main
from lambda_rollouts.crd import build_crd
from lambda_rollouts.handlers import PEERING_PROBE_ID, PeeringCheck, Wiring, build_registry, configure_peering
from lambda_rollouts.kube import EventAbout, KopfApiWriter, StatusWriter
from lambda_rollouts.observed import AliasState, Target
from lambda_rollouts.peering import (
    CLUSTER_PEERING_PLURAL,
    DEFAULT_PEERING_NAME,
    PEERING_GROUP,
    PEERING_VERSION,
    RANDOM_PRIORITY_LIMIT,
    cluster_peering,
    cluster_peering_crd,
)
from lambda_rollouts.reconcile import Backends, LoopClock
from lambda_rollouts.sandbox.kube import CRD_RESOURCE, EmulatorHandle, run_kubernetes_emulator
from lambda_rollouts.settings import Settings
from lambda_rollouts.testing.fake_lambda import FakeLambda

from .conftest import Api, eventually, operator_task, rollout

PEERING_URL = f"/apis/{PEERING_GROUP}/{PEERING_VERSION}/{CLUSTER_PEERING_PLURAL}/{DEFAULT_PEERING_NAME}"
LIFETIME = 20
PLAN = [("1", {"2": 10.0}), ("1", {"2": 50.0}), ("2", {})]


# -- attribution -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    replica: str
    at: float  # loop time
    kind: str  # "read" (any AWS read), "write" (an alias write) or "status" (a status write)
    shape: tuple[str, dict[str, float]] | None = None


@dataclass
class Ledger:
    """Who did what, and when: every replica's AWS calls and status writes, in order."""

    calls: list[Call] = field(default_factory=list)

    def record(self, replica: str, kind: str, shape: tuple[str, dict[str, float]] | None = None) -> None:
        self.calls.append(Call(replica, asyncio.get_running_loop().time(), kind, shape))

    def writes(self) -> list[Call]:
        return [call for call in self.calls if call.kind == "write"]

    def shape(self) -> list[tuple[str, dict[str, float]] | None]:
        return [call.shape for call in self.writes()]

    def by(self, replica: str, *, after: float = float("-inf")) -> list[Call]:
        return [call for call in self.calls if call.replica == replica and call.at > after]


class AttributedRouter:
    """The strict fake Lambda, with every call recorded under the replica that made it."""

    def __init__(self, replica: str, fake: FakeLambda, ledger: Ledger) -> None:
        self.replica, self.fake, self.ledger = replica, fake, ledger

    def _wrote(self, state: AliasState) -> AliasState:
        self.ledger.record(self.replica, "write", (state.function_version, dict(state.routing)))
        return state

    async def get_alias(self, target: Target) -> AliasState | None:
        self.ledger.record(self.replica, "read")
        return await self.fake.get_alias(target)

    async def create_alias(self, target: Target, version: str) -> AliasState:
        return self._wrote(await self.fake.create_alias(target, version))

    async def route(
        self, target: Target, *, primary: str, canary: str | None, canary_percent: float, revision_id: str
    ) -> AliasState:
        state = await self.fake.route(
            target, primary=primary, canary=canary, canary_percent=canary_percent, revision_id=revision_id
        )
        return self._wrote(state)

    async def get_version(self, target: Target, version: str) -> Any:
        self.ledger.record(self.replica, "read")
        return await self.fake.get_version(target, version)

    async def list_versions(self, target: Target) -> Any:
        self.ledger.record(self.replica, "read")
        return await self.fake.list_versions(target)


class AttributedWriter:
    """The real status writer, with every status write recorded under its replica."""

    def __init__(self, replica: str, inner: StatusWriter, ledger: Ledger) -> None:
        self.replica, self.inner, self.ledger = replica, inner, ledger

    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        self.ledger.record(self.replica, "status")
        await self.inner.write_status(namespace, name, status, previous)

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool:
        self.ledger.record(self.replica, "status")
        return await self.inner.take_annotation(namespace, name, key, value)

    async def post_event(self, about: EventAbout, type: str, reason: str, message: str) -> None:
        self.ledger.record(self.replica, "event")
        await self.inner.post_event(about, type, reason, message)

    async def close(self) -> None:
        await self.inner.close()


# -- replicas --------------------------------------------------------------------------------------

# The replica whose Kopf is creating a task; None for the test's and the emulator's own tasks.
_replica: contextvars.ContextVar[str | None] = contextvars.ContextVar("replica", default=None)
TaskOwners = weakref.WeakKeyDictionary[asyncio.Task[Any], str]


class NotOwnedBy:
    """The tasks that are not a replica's own, as ``kopf.run_tasks(ignored=...)`` takes them."""

    def __init__(self, owners: TaskOwners, replica: str) -> None:
        self.owners, self.replica = owners, replica

    def __contains__(self, task: object) -> bool:
        return not isinstance(task, asyncio.Task) or self.owners.get(task) != self.replica

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return (task for task in asyncio.all_tasks() if task in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@pytest.fixture
async def task_owners() -> AsyncIterator[TaskOwners]:
    loop = asyncio.get_running_loop()
    owners: TaskOwners = weakref.WeakKeyDictionary()
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        task = (
            previous(loop, coro, **kwargs)
            if previous is not None
            else asyncio.Task(coro, loop=loop, **kwargs)
        )
        owner = _replica.get()
        if owner is not None:
            owners[task] = owner
        return task

    loop.set_task_factory(factory)
    try:
        yield owners
    finally:
        loop.set_task_factory(previous)


class Replica:
    """One replica of the operator: the real Kopf, with peering, under its own identity."""

    def __init__(self, name: str, priority: int, fleet: Fleet) -> None:
        self.name, self.priority, self.fleet = name, priority, fleet
        self.router = AttributedRouter(name, fleet.fake, fleet.ledger)
        self.task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        settings = Settings(
            default_region="us-east-1",
            drift_check_interval_seconds=300,
            retry_initial_delay_seconds=5,
            retry_max_delay_seconds=60,
            # Named, as deploy/ names it: no replica acts without the peering object.
            peering_name=DEFAULT_PEERING_NAME,
            peering_priority=self.priority,
            peering_lifetime_seconds=LIFETIME,
        )
        wiring = Wiring(
            settings=settings,
            backends_factory=lambda _: Backends(router=self.router),
            writer_factory=lambda kopf_settings: AttributedWriter(
                self.name, KopfApiWriter(kopf_settings), self.fleet.ledger
            ),
            clock_factory=lambda: self.fleet.clock,
            connection=kopf.ConnectionInfo(server=self.fleet.kube.url),
        )
        operator_settings = kopf.OperatorSettings()
        # Kopf SIGKILLs a cancelled operator after this long; fast-forwarded time would get there.
        operator_settings.process.ultimate_exiting_timeout = None

        async def operate() -> None:
            _replica.set(self.name)  # every task Kopf creates from here on is this replica's
            tasks = await kopf.spawn_tasks(
                registry=build_registry(wiring),
                settings=operator_settings,
                clusterwide=True,
                # As POD_ID does in a cluster: the key of this replica in the peering object.
                identity=kopf_peering.Identity(self.name),
            )
            await kopf.run_tasks(tasks, ignored=NotOwnedBy(self.fleet.owners, self.name))

        self.task = asyncio.create_task(operate())
        await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop as on SIGTERM: Kopf withdraws this replica from the peering object as it exits."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def crash(self) -> None:
        """Die like a killed pod or a lost node: without a farewell to the peers.

        Cancelling alone would still let Kopf remove this replica's keep-alive from the peering
        object on its way out, which a crashed process never does.
        """
        self.fleet.silenced.add(self.name)
        await self.stop()


@pytest.fixture
async def peering_clock(monkeypatch: pytest.MonkeyPatch) -> LoopClock:
    """The wall clock of Kopf's peering, driven by the loop (see the module's notes)."""
    clock = LoopClock()

    class LoopDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> datetime.datetime:
            moment = clock()
            return moment if tz is None else moment.astimezone(tz)

    shim = types.SimpleNamespace(datetime=LoopDatetime, timedelta=datetime.timedelta, UTC=datetime.UTC)
    monkeypatch.setattr(kopf_peering, "datetime", shim)
    return clock


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


class Fleet:
    """Replicas for one test, crashed when its ``async with`` block ends.

    Used inside the test body, not as a fixture's teardown: looptime fast-forwards the test body
    only, and a stopping Kopf may retry its last requests with backoffs of several seconds.
    """

    def __init__(
        self,
        kube: EmulatorHandle,
        fake: FakeLambda,
        ledger: Ledger,
        clock: LoopClock,
        silenced: set[str],
        owners: TaskOwners,
    ) -> None:
        self.kube, self.fake, self.ledger, self.clock = kube, fake, ledger, clock
        self.silenced, self.owners = silenced, owners
        self.started: list[Replica] = []

    def replica(self, name: str, priority: int) -> Replica:
        replica = Replica(name, priority, self)
        self.started.append(replica)
        return replica

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *_: object) -> None:
        for replica in self.started:
            await replica.crash()


@pytest.fixture
def silenced(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Identities whose keep-alives (and farewell) Kopf's peering no longer sends."""
    silenced: set[str] = set()
    touch = kopf_peering.touch

    async def touch_unless_silenced(*, identity: kopf_peering.Identity, **kwargs: Any) -> None:
        if identity not in silenced:
            await touch(identity=identity, **kwargs)

    monkeypatch.setattr(kopf_peering, "touch", touch_unless_silenced)
    return silenced


@pytest.fixture
def fleet(
    kube: EmulatorHandle,
    fake_aws: FakeLambda,
    ledger: Ledger,
    peering_clock: LoopClock,
    silenced: set[str],
    task_owners: TaskOwners,
) -> Fleet:
    return Fleet(kube, fake_aws, ledger, peering_clock, silenced, task_owners)


async def peers(api: Api) -> dict[str, Any]:
    async with api.session.get(PEERING_URL) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return dict(body.get("status") or {})


async def phase_of(api: Api, name: str = "checkout") -> str | None:
    body = await api.get(name)
    return (body or {}).get("status", {}).get("phase")


def healthy(api: Api) -> Callable[[], Any]:
    async def check() -> bool:
        return await phase_of(api) == "Healthy"

    return check


async def both_listed(api: Api, *names: str) -> None:
    async def listed() -> bool:
        return set(names) <= set(await peers(api))

    await eventually(listed, within=60, step=1)
    await asyncio.sleep(5)  # a few rounds of watch events for every replica to see every other


# -- two replicas, one active ----------------------------------------------------------------------


@pytest.mark.looptime
async def test_of_two_replicas_only_the_higher_priority_one_acts(
    api: Api, fleet: Fleet, ledger: Ledger
) -> None:
    async with fleet:
        active, standby = fleet.replica("replica-a", 200), fleet.replica("replica-b", 100)
        await standby.start()
        await active.start()
        await both_listed(api, "replica-a", "replica-b")
        status = await peers(api)
        assert (status["replica-a"]["priority"], status["replica-b"]["priority"]) == (200, 100)
        assert status["replica-a"]["lifetime"] == status["replica-b"]["lifetime"] == LIFETIME

        await api.create(rollout())
        await eventually(healthy(api))

        assert ledger.shape() == PLAN
        assert {call.replica for call in ledger.calls} == {"replica-a"}, "the standby read or wrote something"
        start = ledger.writes()[0].at
        assert [round(call.at - start) for call in ledger.writes()] == [0, 300, 900]


@pytest.mark.looptime
# Mid-pause, the next step stays on time; just before a step is due, the step waits for the standby.
@pytest.mark.parametrize("crash_into_pause", [60, 295], ids=["mid-pause", "just-before-a-step"])
async def test_a_crashed_active_replica_is_replaced_within_the_peering_lifetime(
    api: Api, fleet: Fleet, ledger: Ledger, peering_clock: LoopClock, crash_into_pause: float
) -> None:
    async with fleet:
        active, standby = fleet.replica("replica-a", 200), fleet.replica("replica-b", 100)
        await active.start()
        await standby.start()
        await both_listed(api, "replica-a", "replica-b")
        await api.create(rollout())
        await eventually(lambda: len(ledger.writes()) == 1, step=0.1)
        start = ledger.writes()[0].at
        loop = asyncio.get_running_loop()
        await asyncio.sleep(start + crash_into_pause - loop.time())  # into the 5-minute pause at 10%

        # When the crashed replica's last keep-alive runs out, by the (loop-driven) wall clock.
        lastseen = datetime.datetime.fromisoformat((await peers(api))["replica-a"]["lastseen"])
        crashed_at = loop.time()
        expires_at = crashed_at + (lastseen + timedelta(seconds=LIFETIME) - peering_clock()).total_seconds()
        await active.crash()
        await eventually(healthy(api))

        # Every step once, in order, by one replica at a time.
        assert ledger.shape() == PLAN
        assert [call.replica for call in ledger.writes()] == ["replica-a", "replica-b", "replica-b"]
        assert ledger.by("replica-a", after=crashed_at) == []
        assert [call for call in ledger.calls if call.replica == "replica-b" and call.at < crashed_at] == []
        # The standby waited for the crashed replica's keep-alive to expire, and no longer.
        took_over_at = ledger.by("replica-b")[0].at
        assert expires_at - 0.5 <= took_over_at <= expires_at + 1.0
        assert took_over_at - crashed_at <= LIFETIME + 1.0
        # The 50% step came when the pause ended, or when the standby took over if that was later;
        # the 10-minute pause after it ran in full.
        _, half, full = (call.at for call in ledger.writes())
        assert half == pytest.approx(max(start + 300, took_over_at), abs=0.5)
        assert full - half == pytest.approx(600, abs=0.5)
        first_write = min(call.at for call in ledger.by("replica-b") if call.kind in {"write", "status"})
        print(
            f"\ncrash {crash_into_pause:g} s into the pause: the standby acted after"
            f" {took_over_at - crashed_at:.1f} s (the crashed replica's keep-alive expired after"
            f" {expires_at - crashed_at:.1f} s; lifetime {LIFETIME} s); its first write came after"
            f" {first_write - crashed_at:.1f} s (loop time)"
        )
        # The standby cleaned the dead replica's record out of the peering object.
        assert set(await peers(api)) == {"replica-b"}


@pytest.mark.looptime
async def test_a_stopping_active_replica_hands_over_at_once(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    async with fleet:
        active, standby = fleet.replica("replica-a", 200), fleet.replica("replica-b", 100)
        await active.start()
        await standby.start()
        await both_listed(api, "replica-a", "replica-b")
        await api.create(rollout())
        await eventually(lambda: len(ledger.writes()) == 1, step=1)
        await asyncio.sleep(60)

        stopped_at = asyncio.get_running_loop().time()
        await active.stop()  # as on SIGTERM in a rolling update: Kopf withdraws from the peering
        await eventually(lambda: ledger.by("replica-b") != [], within=LIFETIME, step=0.1)
        handover = ledger.by("replica-b")[0].at - stopped_at
        print(f"\nhandover after a graceful stop: {handover:.1f} s of loop time")
        assert handover < 1.0

        await eventually(healthy(api))
        assert ledger.shape() == PLAN
        assert [call.replica for call in ledger.writes()] == ["replica-a", "replica-b", "replica-b"]


@pytest.mark.looptime
async def test_a_replica_that_is_outranked_mid_rollout_stops_writing(
    api: Api, fleet: Fleet, ledger: Ledger
) -> None:
    # Kopf stops (not suspends) the daemons of a paused operator: the outranked replica's rollout
    # loop ends, and the new active replica starts its own from the cluster's and Lambda's state.
    async with fleet:
        early, late = fleet.replica("replica-b", 100), fleet.replica("replica-a", 200)
        await early.start()
        await api.create(rollout())
        await eventually(lambda: len(ledger.writes()) == 1, step=1)
        await asyncio.sleep(60)

        joined_at = asyncio.get_running_loop().time()
        await late.start()
        await eventually(healthy(api))

        assert ledger.shape() == PLAN
        assert [call.replica for call in ledger.writes()] == ["replica-b", "replica-a", "replica-a"]
        start = ledger.writes()[0].at
        assert [round(call.at - start) for call in ledger.writes()] == [0, 300, 900]
        # The outranked replica did nothing once the other had joined (a second is plenty to notice).
        assert ledger.by("replica-b", after=joined_at + 1.0) == []


@pytest.mark.looptime
async def test_replicas_of_equal_priority_both_pause(api: Api, fleet: Fleet, ledger: Ledger) -> None:
    # Kopf's rule for equal priorities, which is why replicas draw random ones by default.
    async with fleet:
        first, second = fleet.replica("replica-a", 100), fleet.replica("replica-b", 100)
        await first.start()
        await second.start()
        await both_listed(api, "replica-a", "replica-b")
        await api.create(rollout())
        await asyncio.sleep(600)
        assert ledger.calls == []
        assert await phase_of(api) is None

        # Once one of them is gone, the other is alone with its priority and acts.
        await second.stop()
        await eventually(healthy(api))
        assert ledger.shape() == PLAN
        assert {call.replica for call in ledger.calls} == {"replica-a"}


# -- configuration ---------------------------------------------------------------------------------


def test_a_named_peering_is_cluster_wide_mandatory_and_from_the_settings() -> None:
    kopf_settings = kopf.OperatorSettings()
    # As kopf.operator(namespaces=[...]) leaves it for an operator that watches some namespaces.
    kopf_settings.peering.clusterwide = False
    check = configure_peering(
        kopf_settings, Settings(peering_name="team-a", peering_priority=7, peering_lifetime_seconds=30)
    )
    peering = kopf_settings.peering
    assert (peering.standalone, peering.mandatory, peering.clusterwide) == (False, True, True)
    assert (peering.name, peering.priority, peering.lifetime, peering.stealth) == ("team-a", 7, 30, True)
    assert check == PeeringCheck("team-a", required=True, priority=7)


def test_without_a_name_peering_is_kopfs_optional_one_through_the_default_object() -> None:
    kopf_settings = kopf.OperatorSettings()
    check = configure_peering(kopf_settings, Settings(peering_priority=7))
    peering = kopf_settings.peering
    # Not mandatory: without the object (or its CRD), Kopf runs standalone.
    assert (peering.standalone, peering.mandatory, peering.clusterwide) == (False, False, True)
    assert (peering.name, peering.priority) == (DEFAULT_PEERING_NAME, 7)
    assert check == PeeringCheck(DEFAULT_PEERING_NAME, required=False, priority=7)


def test_without_a_priority_each_process_draws_its_own() -> None:
    drawn = set()
    for _ in range(20):
        kopf_settings = kopf.OperatorSettings()
        configure_peering(kopf_settings, Settings())
        assert 1 <= kopf_settings.peering.priority < RANDOM_PRIORITY_LIMIT
        drawn.add(kopf_settings.peering.priority)
    assert len(drawn) == 20


def test_the_defaults() -> None:
    settings = Settings()
    assert (settings.peering_name, settings.peering_standalone) == (None, False)
    assert (settings.peering_priority, settings.peering_lifetime_seconds) == (None, 20)


@pytest.mark.parametrize(
    ("started_standalone", "settings"),
    [(True, Settings()), (False, Settings(peering_standalone=True))],
    ids=["kopf.operator(standalone=True)", "settings.peering_standalone"],
)
def test_standalone_stays_standalone(started_standalone: bool, settings: Settings) -> None:
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.peering.standalone = started_standalone
    assert configure_peering(kopf_settings, settings) is None
    assert kopf_settings.peering.standalone is True
    assert kopf_settings.peering.mandatory is False


def test_the_peering_resource_is_the_one_kopf_looks_for() -> None:
    selector = kopf_references.CLUSTER_PEERINGS_K
    assert (selector.group, selector.version, selector.any_name) == (
        PEERING_GROUP,
        PEERING_VERSION,
        CLUSTER_PEERING_PLURAL,
    )


def test_run_refuses_standalone_with_peering_options() -> None:
    result = CliRunner().invoke(main, ["run", "--standalone", "--priority", "5"])
    assert result.exit_code == 2
    assert "--standalone runs without peering" in result.output


# -- the emulator ----------------------------------------------------------------------------------


async def test_the_emulator_serves_kopf_peering_by_default(api: Api) -> None:
    async with api.session.get(f"/apis/{PEERING_GROUP}/{PEERING_VERSION}") as response:
        resources = {entry["name"]: entry for entry in (await response.json())["resources"]}
    entry = resources[CLUSTER_PEERING_PLURAL]
    assert (entry["kind"], entry["namespaced"]) == ("ClusterKopfPeering", False)
    assert {"list", "watch", "patch"} <= set(entry["verbs"])
    # Kopf merge-patches its keep-alive into .status of the object itself (no status subresource).
    headers = {"Content-Type": "application/merge-patch+json"}
    keepalive = {"priority": 5, "lifetime": 20, "lastseen": "2026-01-01T00:00:00+00:00"}
    async with api.session.patch(
        PEERING_URL, json={"status": {"me": keepalive}}, headers=headers
    ) as response:
        assert response.status == 200
    assert await peers(api) == {"me": keepalive}
    async with api.session.patch(PEERING_URL, json={"status": {"me": None}}, headers=headers) as response:
        assert response.status == 200
    assert await peers(api) == {}


async def test_the_emulator_can_leave_peering_out() -> None:
    async with run_kubernetes_emulator(peerings=()) as handle:
        emulator = handle.emulator
        assert emulator.get_object(CRD_RESOURCE, None, "clusterkopfpeerings.kopf.dev") is None


# -- without the peering object (real time: Kopf's probe and peering run as in a pod) ---------------


class Solo:
    """One operator as ``lambda-rollouts run`` starts it (no ``--standalone``), with a liveness
    endpoint, against an emulator that serves the peering CRD (or not) but no peering object."""

    def __init__(self, kube: EmulatorHandle, fake: FakeLambda, settings: Settings) -> None:
        self.kube, self.fake, self.settings = kube, fake, settings
        self.liveness = f"http://127.0.0.1:{_free_port()}/healthz"
        self.task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Solo:
        wiring = Wiring(
            settings=self.settings,
            backends_factory=lambda _: Backends(router=self.fake),
            connection=kopf.ConnectionInfo(server=self.kube.url),
        )
        self.task = operator_task(wiring, liveness_endpoint=self.liveness)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def probe(self) -> tuple[int, Any]:
        """The liveness endpoint's answer: (HTTP status, JSON body or None); (0, None) if closed."""
        try:
            async with aiohttp.ClientSession() as session, session.get(self.liveness) as response:
                body = await response.json() if response.status == 200 else None
                return response.status, body
        except aiohttp.ClientConnectionError:
            return 0, None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def handler_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "lambda_rollouts.handlers" and record.levelno == level
    ]


@pytest.mark.parametrize("crd", [False, True], ids=["no-peering-crd", "crd-without-object"])
async def test_without_a_name_or_an_object_the_operator_acts_standalone_and_warns(
    fake_aws: FakeLambda, caplog: pytest.LogCaptureFixture, crd: bool
) -> None:
    async with run_kubernetes_emulator([build_crd()], peerings=()) as kube:
        if crd:
            kube.emulator.add_crd(cluster_peering_crd())
        async with aiohttp.ClientSession(kube.url) as session, Solo(kube, fake_aws, Settings()) as solo:
            api = Api(session)
            await api.create(rollout(strategy={"allAtOnce": {}}))
            await eventually(healthy(api), within=30, step=0.2)
            assert await solo.probe() == (200, {PEERING_PROBE_ID: "standalone"})
    missing = "" if crd else " (its CRD clusterkopfpeerings.kopf.dev is not installed)"
    assert handler_logs(caplog, logging.WARNING) == [
        f"ClusterKopfPeering 'lambda-rollouts' not found{missing}: acting standalone. That is safe for one"
        " replica only; for more, create it (deploy/ does) and start every replica with --peering"
        " lambda-rollouts."
    ]


async def test_a_named_peering_without_its_object_stops_the_operator_and_fails_the_probe(
    fake_aws: FakeLambda, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with run_kubernetes_emulator([build_crd()], peerings=()) as kube:
        kube.emulator.add_crd(cluster_peering_crd())
        settings = Settings(peering_name="team-a", peering_priority=5)
        async with aiohttp.ClientSession(kube.url) as session, Solo(kube, fake_aws, settings) as solo:
            api = Api(session)
            await api.create(rollout(strategy={"allAtOnce": {}}))
            await eventually(lambda: handler_logs(caplog, logging.ERROR), within=30, step=0.2)

            async def probe_fails() -> bool:
                return (await solo.probe())[0] == 500

            await eventually(probe_fails, within=30, step=0.2)
            await asyncio.sleep(2)
            assert fake_aws.writes == [], "a replica without its named peering object acted"
            assert await phase_of(api) is None

            # The object appears: the operator takes its part, the rollout goes on, the probe passes.
            headers = {"Content-Type": "application/json"}
            url = f"/apis/{PEERING_GROUP}/{PEERING_VERSION}/{CLUSTER_PEERING_PLURAL}"
            async with session.post(url, json=cluster_peering("team-a"), headers=headers) as response:
                assert response.status == 201, await response.text()
            await eventually(healthy(api), within=60, step=0.2)
            assert await solo.probe() == (200, {PEERING_PROBE_ID: "ClusterKopfPeering team-a"})
    assert handler_logs(caplog, logging.ERROR) == [
        "ClusterKopfPeering 'team-a' not found: this replica does nothing until it exists (--peering or"
        " LAMBDA_ROLLOUTS_PEERING_NAME names it), and its liveness endpoint fails meanwhile. Create it:"
        " kubectl apply -k deploy/, or apply deploy/crds/clusterkopfpeerings.yaml and a ClusterKopfPeering"
        " named team-a."
    ]
    assert handler_logs(caplog, logging.INFO)[-1] == (
        "Peering in ClusterKopfPeering 'team-a' with priority 5: the replica with the highest priority"
        " acts; the others wait."
    )
    # Every probe failed, yet the log says it once, without a traceback.
    assert not [record for record in caplog.records if record.exc_info and record.levelno >= logging.ERROR]
