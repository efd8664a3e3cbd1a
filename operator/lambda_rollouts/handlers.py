"""Kopf glue: register the handlers, unpack Kopf's arguments, call the reconcile service.

Every handler is async: Kopf runs sync handlers in worker threads, which would make the wake-up
event cross threads and keep fast-forwarded test loops waiting in real time.

Contract:
- ``build_registry(wiring)`` returns a Kopf registry with every handler of the operator. The same
  registry serves ``lambda-rollouts run``, the sandbox and the tests; ``Wiring`` says which AWS
  router, status writer and clock to use.
- One daemon per rollout runs ``RolloutService.run``; a watch-event handler wakes it as soon as
  ``metadata.generation`` changes, so spec changes reach the alias without waiting for a tick.
  Kopf runs that handler only for events that carry news for the loop (``news_for_the_loop``),
  not for the operator's own status writes.
- A rollout's Events are posted by the operator (``KubeEventSink``, through the status writer),
  in the background, not by ``kopf.event``.
- One ``Notifier`` (``lambda_rollouts.notifications``) serves every rollout: it reads Secrets
  through ``Wiring.secrets_factory``, posts its Events through the status writer, reports to the
  ``observer`` when that is a ``NotificationObserver``, and is closed (its deliveries cancelled:
  they are still pending in status) when the operator stops.
- The delete handler (behind the finalizer) runs ``RolloutService.finalize``; project errors
  become ``kopf.TemporaryError`` here and nowhere else, so deletion is retried until it is safe.
- Startup turns on Kopf's cluster-wide peering (``configure_peering``) unless the operator was
  started standalone, so that of several replicas only the one with the highest priority acts.
  With a peering named in the settings, no replica acts without that ``ClusterKopfPeering``: its
  absence is logged as an error and fails the liveness endpoint (the ``peering`` probe). Without
  one, as Kopf does: the object ``lambda-rollouts`` if it exists, else standalone, with a warning.
  The object is read through Kopf's own API client module, as ``kube`` writes (Kopf has no public
  call for it): the operator's login, its retries, its session.
- Kopf keeps no "last handled state" of the rollouts (``NoDiffBase``: no annotation, no PATCH per
  spec change), and its log line for every watch event handled by ``wake_on_change`` is dropped
  (``quiet_wake_handler_logs``); both cost CPU per event for nothing the operator uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import kopf
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import errors as kopf_errors

from lambda_rollouts.errors import LambdaRolloutsError
from lambda_rollouts.hooks import HookDispatcher
from lambda_rollouts.kube import EventAbout, KopfApiWriter, KopfSecretReader, SecretReader, StatusWriter
from lambda_rollouts.model import ACTION_ANNOTATION, GROUP, PLURAL, VERSION
from lambda_rollouts.notifications import NotificationObserver, Notifier
from lambda_rollouts.peering import (
    CLUSTER_PEERING_CRD_NAME,
    CLUSTER_PEERING_PLURAL,
    DEFAULT_PEERING_NAME,
    PEERING_GROUP,
    PEERING_VERSION,
    random_priority,
)
from lambda_rollouts.planner import Event
from lambda_rollouts.reconcile import (
    Backends,
    Clock,
    LoopClock,
    ReconcileObserver,
    RolloutRef,
    RolloutService,
    Wakeup,
)
from lambda_rollouts.settings import Settings

if TYPE_CHECKING:
    from lambda_rollouts.aws.clients import CallObserver, SessionFactory

FINALIZER = f"{GROUP}/finalizer"
# How long a stopping operator waits for the Events still being posted.
_EVENTS_GRACE_SECONDS = 5.0
WAKE_HANDLER_ID = "wake-on-change"
# The liveness endpoint's check of the peering object.
PEERING_PROBE_ID = "peering"
# Reading the peering object: retried at startup (the API server may still be coming up), asked
# once by a probe, which the kubelet gives a few seconds.
_PEERING_LOOK_BACKOFFS = (0.5, 1.0, 2.0, 4.0)
_PEERING_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=3.0)

logger = logging.getLogger(__name__)


def default_backends(
    settings: Settings,
    session_factory: SessionFactory | None = None,
    on_aws_call: CallObserver | None = None,
) -> Backends:
    """The real AWS backends, sharing one client and credential cache.

    ``on_aws_call`` is told about every AWS API call and its outcome (see ``AwsClients``).
    """
    from lambda_rollouts.aws.boto_router import BotoAliasRouter
    from lambda_rollouts.aws.clients import AwsClients
    from lambda_rollouts.aws.cloudwatch import BotoMetricProvider
    from lambda_rollouts.aws.hook_invoker import LambdaHookInvoker
    from lambda_rollouts.webhooks import WebhookInvoker

    clients = AwsClients(settings, session_factory, on_call=on_aws_call)
    webhooks = WebhookInvoker(allowed_networks=settings.hook_allowed_networks)
    return Backends(
        router=BotoAliasRouter(settings, clients=clients),
        metrics=BotoMetricProvider(clients),
        hooks=HookDispatcher(LambdaHookInvoker(clients), webhooks),
        closers=(webhooks.close, clients.close),
    )


@dataclass
class Wiring:
    """What the operator talks to. Defaults are the real systems."""

    settings: Settings = field(default_factory=Settings)
    backends_factory: Callable[[Settings], Backends] = default_backends
    # Made once Kopf has started, with Kopf's settings: the writer sends through Kopf's client.
    writer_factory: Callable[[kopf.OperatorSettings], StatusWriter] = KopfApiWriter
    # Reads the Secrets that notifications name, through Kopf's client too.
    secrets_factory: Callable[[kopf.OperatorSettings], SecretReader] = KopfSecretReader
    clock_factory: Callable[[], Clock] = LoopClock
    # None: log in as client-go does (in-cluster service account, then the kubeconfig).
    connection: kopf.ConnectionInfo | None = None
    # Told about every reconcile (metrics); None: nobody.
    observer: ReconcileObserver | None = None
    # Told why when the operator cannot work at all (no credentials), so the caller can stop it.
    on_fatal: Callable[[str], None] = lambda message: None


class KubeEventSink:
    """Posts a rollout's Events through the status writer, each in the background.

    A pass never waits for its Events (an API server slow to take them must not stretch the
    steps); a failed post is logged, as Events are auxiliary. ``pending`` holds the posts under
    way, for the operator to finish them when it stops.
    """

    def __init__(self, writer: StatusWriter, about: EventAbout, pending: set[asyncio.Task[None]]) -> None:
        self._writer = writer
        self._about = about
        self._pending = pending

    def post(self, event: Event) -> None:
        task = asyncio.get_running_loop().create_task(self._post(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, event: Event) -> None:
        try:
            await self._writer.post_event(self._about, event.type.value, event.reason.value, event.message)
        except LambdaRolloutsError as exc:
            logger.warning(
                "rollout %s/%s: Event %s not posted: %s",
                self._about.namespace,
                self._about.name,
                event.reason.value,
                exc.message,
            )


class _OperatorState:
    """What lives for the whole operator run: the service, built once Kopf has logged in."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        # Kopf's settings of this run, given at startup; the writer sends with them.
        self.kopf_settings: kopf.OperatorSettings | None = None
        self._service: RolloutService | None = None
        self._writer: StatusWriter | None = None
        self._backends: Backends | None = None
        self._notifier: Notifier | None = None
        self._events_pending: set[asyncio.Task[None]] = set()
        # The peering object this replica peers through; None when standalone.
        self.peering: PeeringCheck | None = None
        self.peering_look: asyncio.Task[bool | None] | None = None

    def event_sink(self, body: kopf.Body, namespace: str | None, name: str) -> KubeEventSink:
        about = EventAbout(namespace or "", name, body.metadata.uid)
        return KubeEventSink(self._built()[1], about, self._events_pending)

    async def close(self) -> None:
        if self.peering_look is not None:
            self.peering_look.cancel()
        if self._events_pending:
            # Events of the last passes: given a moment, never waited for long.
            await asyncio.wait(list(self._events_pending), timeout=_EVENTS_GRACE_SECONDS)
        if self._notifier is not None:
            await self._notifier.close()
        if self._writer is not None:
            await self._writer.close()
        if self._backends is not None:
            await self._backends.close()

    def service(self) -> RolloutService:
        return self._built()[0]

    def _built(self) -> tuple[RolloutService, StatusWriter]:
        """The service and its status writer, made together on first use (after the login)."""
        if self._service is None or self._writer is None:
            if self.kopf_settings is None:
                raise kopf.PermanentError("the operator has not started: no Kubernetes client yet")
            wiring = self.wiring
            self._writer = wiring.writer_factory(self.kopf_settings)
            backends = self._backends = wiring.backends_factory(wiring.settings)
            clock = wiring.clock_factory()
            observer = wiring.observer if isinstance(wiring.observer, NotificationObserver) else None
            self._notifier = Notifier.from_settings(
                wiring.settings,
                secrets=wiring.secrets_factory(self.kopf_settings),
                events=self._writer,
                clock=clock,
                observer=observer,
            )
            self._service = RolloutService(
                settings=wiring.settings,
                router=backends.router,
                metrics=backends.metrics,
                hooks=backends.hooks,
                writer=self._writer,
                clock=clock,
                observer=wiring.observer,
                notifier=self._notifier,
            )
        return self._service, self._writer


def _snapshot(body: kopf.Body) -> Mapping[str, Any]:
    return copy.deepcopy(dict(body))


def build_registry(wiring: Wiring | None = None) -> kopf.OperatorRegistry:
    wiring = wiring or Wiring()
    state = _OperatorState(wiring)
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        state.kopf_settings = settings
        configure_persistence(settings)
        settings.posting.level = logging.INFO
        # As client-go and kubectl do: HTTPS_PROXY, HTTP_PROXY and NO_PROXY apply to the API server
        # (a kubeconfig's proxy-url still wins). Kopf reads the flag at login, after startup.
        settings.networking.trust_env = True
        size_worker_threads(wiring.settings)
        quiet_wake_handler_logs()
        quiet_probe_logs()
        state.peering = configure_peering(settings, wiring.settings)
        if state.peering is not None:
            # Kopf logs in after the startup handlers: the look waits for the login.
            state.peering_look = asyncio.create_task(
                state.peering.look(settings, backoffs=_PEERING_LOOK_BACKOFFS)
            )

    @kopf.on.probe(registry=registry, id=PEERING_PROBE_ID)
    async def peering(settings: kopf.OperatorSettings, **_: Any) -> str:
        return await probe_peering(state.peering, settings)

    @kopf.on.cleanup(registry=registry)
    async def close_clients(**_: Any) -> None:
        await state.close()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if wiring.connection is not None:
            return wiring.connection
        return await login_as_client_go(wiring, **kwargs)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id=WAKE_HANDLER_ID, when=news_for_the_loop)
    async def wake_on_change(body: kopf.Body, memo: Any, **_: Any) -> None:
        # Only news reaches here (news_for_the_loop): a spec change or a new action wakes the loop;
        # an action gone (taken by the operator) is forgotten, so the same request made again
        # later is a new one.
        generation = body.metadata.get("generation")
        action = body.metadata.annotations.get(ACTION_ANNOTATION)
        wake = memo.get("seen_generation") != generation or action is not None
        memo["seen_generation"], memo["seen_action"] = generation, action
        if wake:
            memo.setdefault("wakeup", Wakeup()).set()

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
    async def drive_rollout(
        body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, namespace: str | None, name: str, **_: Any
    ) -> None:
        wakeup: Wakeup = memo.setdefault("wakeup", Wakeup())
        bridge = asyncio.create_task(_stop_when_stopped(stopped, wakeup))
        try:
            await state.service().run(
                RolloutRef(namespace or "", name),
                lambda: _snapshot(body),
                state.event_sink(body, namespace, name),
                wakeup,
            )
        finally:
            bridge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bridge

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def finalize(body: kopf.Body, namespace: str | None, name: str, retry: int, **_: Any) -> None:
        try:
            await state.service().finalize(
                RolloutRef(namespace or "", name), _snapshot(body), state.event_sink(body, namespace, name)
            )
        except LambdaRolloutsError as exc:
            delay = min(
                wiring.settings.retry_max_delay_seconds,
                wiring.settings.retry_initial_delay_seconds * 2**retry,
            )
            raise kopf.TemporaryError(f"cannot release the alias yet: {exc.message}", delay=delay) from exc

    return registry


_SIZED_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def configure_persistence(settings: kopf.OperatorSettings) -> None:
    """Where Kopf keeps its state of the rollouts, and what it need not look for."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # The operator needs no namespace or CRD scanning: it serves one known resource.
    settings.scanning.disabled = True


def size_worker_threads(settings: Settings) -> None:
    """Give the running loop a default executor of ``aws_max_concurrent_calls`` threads.

    The AWS calls run in thread pools of their own, one per rate-limit bucket and of this size
    (``lambda_rollouts.aws.clients``); the default executor takes the rest of the blocking work
    (``asyncio.to_thread``). asyncio's own default has min(32, CPUs + 4) threads, 6 on two CPUs,
    which a burst of such work would queue behind.
    """
    loop = asyncio.get_running_loop()
    if _SIZED_LOOPS.get(loop) == settings.aws_max_concurrent_calls:
        return  # an operator restarted in the same loop: its threads are still there
    _SIZED_LOOPS[loop] = settings.aws_max_concurrent_calls
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=settings.aws_max_concurrent_calls, thread_name_prefix="aws-call")
    )


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf's "last handled state" of each object, kept nowhere.

    Kopf compares every event's object with the state stored after the last handled change, to
    find creations and updates for ``on.create``, ``on.update`` and ``on.field`` handlers. The
    operator has none of those: it compares ``metadata.generation`` itself (``wake_on_change``).
    Stored in an annotation, that state cost a PATCH (and one more watch event to process) on
    every creation and spec change, and a copy and a JSON parse on every event. With the same
    empty state always, Kopf sees no change ever; deletion (the finalizer and the delete handler)
    and the daemons do not depend on it.
    """

    _EMPTY: kopf.BodyEssence = {}

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return self._EMPTY

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._EMPTY

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


class _WakeHandlerSuccessFilter(logging.Filter):
    """Drops Kopf's "Handler 'wake-on-change' succeeded." line, which it logs for every watch event."""

    message = f"Handler {WAKE_HANDLER_ID!r} succeeded."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != self.message


def quiet_wake_handler_logs() -> None:
    """Keep the wake-up handler's successes out of the logs (installed once per process).

    Kopf logs every watch-event handler's success at INFO: with one line per status write of every
    rollout, the operator's log was mostly that line, and formatting it was a measurable share of
    the operator's CPU. Its failures are still logged.
    """
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(existing, _WakeHandlerSuccessFilter) for existing in objects.filters):
        objects.addFilter(_WakeHandlerSuccessFilter())


class _PeeringProbeFilter(logging.Filter):
    """Drops the lines that every probe of the liveness endpoint would add about the peering check:
    Kopf's "Activity 'peering' succeeded." (INFO) and "... failed permanently" (ERROR), and aiohttp's
    traceback of the 500 that fails the probe. ``PeeringCheck`` logs each change once instead.
    """

    prefix = f"Activity {PEERING_PROBE_ID!r} "

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.prefix):
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not (error is not None and isinstance(error.__cause__, PeeringMissingError))


def quiet_probe_logs() -> None:
    """Keep the peering probe's repeated lines out of the logs (installed once per process)."""
    for name in ("kopf.activities.probe", "aiohttp.server"):
        target = logging.getLogger(name)
        if not any(isinstance(existing, _PeeringProbeFilter) for existing in target.filters):
            target.addFilter(_PeeringProbeFilter())


def configure_peering(kopf_settings: kopf.OperatorSettings, settings: Settings) -> PeeringCheck | None:
    """Make the replicas elect one active operator through a ``ClusterKopfPeering``; return what
    the operator checks of that object (``PeeringCheck``), or None when it runs standalone.

    Nothing changes when Kopf was started standalone (``kopf.operator(standalone=True)``, as the
    sandbox and single-operator tests do) or ``settings.peering_standalone`` is set. Otherwise:

    - ``settings.peering_name`` set (the Deployment of ``deploy/``): mandatory. A replica stays
      paused until it has read that object, and forever while the CRD or the object is missing
      (never two acting replicas for want of a peering object); the check logs that as an error
      and the ``peering`` probe fails the liveness endpoint meanwhile;
    - not set: Kopf's convention. Peering through ``lambda-rollouts`` when that object exists; else
      the operator acts standalone, and the check says so with a warning. A replica starts
      unpaused: two replicas run this way may both act until they have seen each other;
    - cluster-wide even when the operator watches some namespaces only, since only
      ``clusterkopfpeerings`` is installed; operators watching disjoint namespaces need distinct
      peering names, or they pause each other. A CRD added after the start is not noticed, since
      Kopf's CRD scanning is off;
    - the priority is ``settings.peering_priority``, or a random one for this process: two live
      peers of equal priority pause *both* (Kopf's own rule), so replicas must not share one;
    - ``settings.peering_lifetime_seconds`` bounds how long a crashed active replica blocks the
      others; keep-alives are not logged (stealth), pauses and resumes still are.

    When paused, Kopf stops the rollout daemons rather than suspending them: ``stopped`` is set
    and a daemon still running a few loop cycles later is cancelled, so a paused replica writes no
    alias. The active replica starts them afresh from what it reads in the cluster and in Lambda.
    """
    peering = kopf_settings.peering
    if peering.standalone or settings.peering_standalone:
        peering.standalone = True
        return None
    required = settings.peering_name is not None
    peering.standalone = False
    peering.mandatory = required
    peering.clusterwide = True
    peering.name = settings.peering_name or DEFAULT_PEERING_NAME
    peering.priority = (
        settings.peering_priority if settings.peering_priority is not None else random_priority()
    )
    peering.lifetime = settings.peering_lifetime_seconds
    peering.stealth = True
    return PeeringCheck(peering.name, required=required, priority=peering.priority)


class PeeringMissingError(kopf.PermanentError):
    """The named peering object is missing: the probe fails (Kopf answers the probe with a 500)."""


@dataclass
class PeeringCheck:
    """Whether the ``ClusterKopfPeering`` this replica peers through exists, as last read.

    ``look`` reads it and logs what changed, once per change: found (INFO, peering on); missing
    while ``required`` (ERROR: this replica does nothing until it exists); missing otherwise
    (WARNING: acting standalone). A read that fails says nothing about the object and changes
    nothing.
    """

    name: str
    required: bool
    priority: int
    found: bool | None = None
    # Why it is missing: the object, or its CRD.
    missing: str = ""

    async def look(
        self,
        kopf_settings: kopf.OperatorSettings,
        *,
        backoffs: Sequence[float] = (),
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> bool | None:
        """Read the object through Kopf's client (it waits for the login); True if it exists."""
        path = f"/apis/{PEERING_GROUP}/{PEERING_VERSION}/{CLUSTER_PEERING_PLURAL}/{self.name}"
        try:
            response = await kopf_api.request(
                "get", path, settings=kopf_settings, backoffs=backoffs, timeout=client_timeout, logger=logger
            )
            response.release()
        except kopf_errors.APINotFoundError as exc:
            # A missing object is named in the answer's details; a missing CRD is an unknown path.
            details = exc.details
            named = details is not None and details.get("name") == self.name
            self._seen(False, "" if named else f"its CRD {CLUSTER_PEERING_CRD_NAME} is not installed")
        except (kopf_errors.APIError, aiohttp.ClientError, TimeoutError, kopf.LoginError) as exc:
            logger.warning("Cannot read the ClusterKopfPeering %r: %s", self.name, exc)
            return None
        else:
            self._seen(True)
        return self.found

    def problem(self) -> str:
        what = f"ClusterKopfPeering {self.name!r} not found"
        return f"{what} ({self.missing})" if self.missing else what

    def _seen(self, found: bool, missing: str = "") -> None:
        changed = found != self.found or missing != self.missing
        self.found, self.missing = found, missing
        if not changed:
            return
        if found:
            logger.info(
                "Peering in ClusterKopfPeering %r with priority %d: the replica with the highest"
                " priority acts; the others wait.",
                self.name,
                self.priority,
            )
        elif self.required:
            logger.error(
                "%s: this replica does nothing until it exists (--peering or LAMBDA_ROLLOUTS_PEERING_NAME"
                " names it), and its liveness endpoint fails meanwhile. Create it: kubectl apply -k"
                " deploy/, or apply deploy/crds/clusterkopfpeerings.yaml and a ClusterKopfPeering named %s.",
                self.problem(),
                self.name,
            )
        else:
            logger.warning(
                "%s: acting standalone. That is safe for one replica only; for more, create it"
                " (deploy/ does) and start every replica with --peering %s.",
                self.problem(),
                self.name,
            )


async def probe_peering(check: PeeringCheck | None, kopf_settings: kopf.OperatorSettings) -> str:
    """The ``peering`` probe: what this replica peers through; a named object that is missing
    fails it (``PeeringMissingError``). A read that fails keeps the last answer: the API server's
    trouble is no reason to restart the operator.
    """
    if check is None:
        return "standalone"
    if check.required:
        await check.look(kopf_settings, client_timeout=_PEERING_PROBE_TIMEOUT)
        if check.found is False:
            raise PeeringMissingError(check.problem())
    if check.found is None:
        return f"ClusterKopfPeering {check.name}: not read yet"
    return f"ClusterKopfPeering {check.name}" if check.found else "standalone"


async def login_as_client_go(wiring: Wiring, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Kopf's login through kubernetes_asyncio, the maintained client: in the cluster, its service
    account (``KUBERNETES_SERVICE_HOST``, the token file, read again at every login); otherwise the
    kubeconfig (``KUBECONFIG`` or ``~/.kube/config``) in every form it takes: embedded or file
    certificates, tokens, exec credential plugins (``aws eks get-token``), proxies. Kopf logs in
    again after a 401, so a rotated or expired token is replaced by a fresh one.
    """
    try:
        return await kopf.login_via_async_client(**kwargs)
    except kopf.LoginError as exc:
        raise _login_failed(wiring, _why_no_login(wiring.settings, exc)) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _login_failed(wiring, f"cannot read the Kubernetes credentials: {exc}") from exc


def _why_no_login(settings: Settings, exc: kopf.LoginError) -> str:
    """What the user should fix; the client's own words for a kubeconfig that exists."""
    paths = [path for path in (settings.kubeconfig or "").split(os.pathsep) if path]
    missing = [path for path in paths if not os.path.exists(os.path.expanduser(path))]
    if paths and len(missing) == len(paths):
        named = ", ".join(missing)
        return f"cannot read the Kubernetes credentials: KUBECONFIG names {named}, which does not exist"
    if not paths and not os.path.exists(os.path.expanduser("~/.kube/config")):
        return (
            "no Kubernetes credentials: not running in a cluster, and no kubeconfig "
            "(set KUBECONFIG or create ~/.kube/config)"
        )
    cause = exc.__cause__ or exc.__context__
    return f"cannot log in to Kubernetes with the kubeconfig: {cause or exc}"


def _login_failed(wiring: Wiring, message: str) -> kopf.PermanentError:
    """Tell the caller the operator cannot work at all, and give Kopf the error to stop on."""
    wiring.on_fatal(message)
    return kopf.PermanentError(message)


def news_for_the_loop(body: kopf.Body, memo: Any, **_: Any) -> bool:
    """Whether ``wake_on_change`` has anything to do with this watch event.

    Most events are the operator's own status writes: filtered out here, Kopf does not run the
    handler for them at all (its invocation, its progress state and its log line cost about as
    much as the rest of the event's processing).
    """
    metadata = body.metadata
    action = metadata.annotations.get(ACTION_ANNOTATION)
    if memo.get("seen_generation") != metadata.get("generation"):
        return True
    return memo.get("seen_action") != action if action else memo.get("seen_action") is not None


async def _stop_when_stopped(stopped: kopf.DaemonStopped, wakeup: Wakeup) -> None:
    await stopped.wait()
    wakeup.stop()
