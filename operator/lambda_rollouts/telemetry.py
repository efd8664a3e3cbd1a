"""Operator telemetry: Prometheus metrics from every reconcile and AWS call, and JSON logs.

Contract:
- ``Telemetry`` owns its own ``CollectorRegistry`` (never prometheus_client's global one), so
  several operators or tests in one process never share or collide on a metric. It implements
  ``ReconcileObserver`` (``reconciled`` after every pass, ``forgotten`` when a rollout goes) and
  takes ``aws_call`` as the AWS call observer of ``AwsClients`` and ``notified`` as the
  ``NotificationObserver`` of the ``Notifier``. None of them raises: a failure
  is logged and the operator goes on.
- Metrics (all prefixed ``lambda_rollouts_``):

  ``rollouts{phase}``                      gauge: rollouts per phase, from the last pass of each
                                           rollout; every phase is present, 0 when none.
  ``canary_weight_percent{namespace,rollout}``  gauge: ``status.canaryWeight`` of the last pass;
                                           absent while unknown, removed when the rollout goes.
  ``events_total{reason,type}``            counter: Kubernetes Events the passes posted.
  ``step_transitions_total``               counter: steps taken (WeightSet, StepCompleted and
                                           AnalysisPassed Events).
  ``analysis_verdicts_total{verdict}``     counter: measurements by verdict (Successful, Failed,
                                           Inconclusive, Error) of the background analysis and
                                           of analysis steps.
  ``rollbacks_total{reason}``              counter: rollbacks decided (AnalysisFailed, HookFailed,
                                           ProgressDeadlineExceeded, Aborted).
  ``aws_calls_total{service,operation}``   counter: AWS API calls, failed ones included.
  ``aws_call_errors_total{service,operation,error_code}``  counter: the failed ones.
  ``notifications_total{channel,result}``  counter: notification deliveries by channel (webhook,
                                           slack, teams) and result (delivered, failed, refused).
  ``reconcile_duration_seconds``           histogram: the duration of one reconcile pass.
  ``build_info{version}``                  gauge, always 1.

  Only phase, reason, verdict, AWS operation and notification channel label the counters: a label
  per rollout would grow without bound as rollouts come and go. The one per-rollout series (the
  weight) is removed by ``forgotten``.
- Counting rules. A measurement is counted when a run's ``measurements`` grew since the last
  pass of the same run (same ``startedAt`` and step), with that run's ``lastVerdict``. A rollback
  is counted when a pass posts a Warning Event with a rollback reason for a rollback not counted
  yet (``status.abortedAt`` tells them apart), so the repeated Events of a rollback write being
  retried count once. The first pass seen of a rollout already measured or rolled back before
  this process watched it takes its counts as the starting point for measurements (they were
  made by an earlier process); a rollback write still being retried then counts once. A delivery
  that failed or was refused also counts its ``NotificationFailed`` Warning Event in
  ``events_total``.
- ``start_http_server(host, port)`` serves ``/metrics`` from a daemon thread (never the event
  loop) and returns the port it bound, so port 0 picks a free one; ``close`` stops it.
  ``exposition()`` is the text a scrape gets.
- ``configure_logging(log_format, level)`` gives the root logger one stream handler, in text or
  as one JSON object per line (``JsonLogFormatter``), replacing the one it installed before.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TextIO
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_metrics_server
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from lambda_rollouts import __version__
from lambda_rollouts.model import ROLLBACK_REASONS, AnalysisStatus, EventType, Phase, Reason, RolloutStatus
from lambda_rollouts.notifications import DELIVERED
from lambda_rollouts.planner import Event, Plan
from lambda_rollouts.settings import LogFormat

logger = logging.getLogger(__name__)

PREFIX: Final = "lambda_rollouts_"

STEP_REASONS: Final = frozenset({Reason.WEIGHT_SET, Reason.STEP_COMPLETED, Reason.ANALYSIS_PASSED})

# From a fast pass that only reads the status (about 1 ms) to one that waits on slow AWS calls
# and a hook (tens of seconds).
DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

TEXT_LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RolloutKey(Protocol):
    """What identifies a rollout (``reconcile.RolloutRef`` is one)."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...


@dataclass
class _Run:
    """One analysis run as last seen: which run it is, and how many measurements it had."""

    identity: tuple[str, int | None]
    measurements: int


@dataclass
class _Seen:
    """What the metrics remember of one rollout between its passes."""

    phase: Phase | None = None
    # The abortedAt of the last rollback counted, to tell a retried rollback write from a new one.
    rollback: str | None = None
    runs: dict[str, _Run] = field(default_factory=dict)


class Telemetry:
    """Prometheus metrics of one operator; see the module docstring for what each one means."""

    def __init__(self, *, version: str = __version__) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._rollouts = Gauge(PREFIX + "rollouts", "Rollouts per phase.", ["phase"], registry=registry)
        self._canary_weight = Gauge(
            PREFIX + "canary_weight_percent",
            "Percent of the alias's traffic on the new version, as last read back.",
            ["namespace", "rollout"],
            registry=registry,
        )
        self._events = Counter(
            PREFIX + "events", "Kubernetes Events posted for rollouts.", ["reason", "type"], registry=registry
        )
        self._steps = Counter(
            PREFIX + "step_transitions",
            "Rollout steps taken (weights set, steps completed, analyses passed).",
            registry=registry,
        )
        self._verdicts = Counter(
            PREFIX + "analysis_verdicts", "Analysis measurements by verdict.", ["verdict"], registry=registry
        )
        self._rollbacks = Counter(
            PREFIX + "rollbacks",
            "Automatic and requested rollbacks, by reason.",
            ["reason"],
            registry=registry,
        )
        self._aws_calls = Counter(
            PREFIX + "aws_calls",
            "AWS API calls, failed ones included.",
            ["service", "operation"],
            registry=registry,
        )
        self._aws_errors = Counter(
            PREFIX + "aws_call_errors",
            "AWS API calls that failed, by error code.",
            ["service", "operation", "error_code"],
            registry=registry,
        )
        self._notifications = Counter(
            PREFIX + "notifications",
            "Notification deliveries, by channel and result (delivered, failed, refused).",
            ["channel", "result"],
            registry=registry,
        )
        self._duration = Histogram(
            PREFIX + "reconcile_duration_seconds",
            "Duration of one reconcile pass.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        build_info = Gauge(PREFIX + "build_info", "The operator's version.", ["version"], registry=registry)
        build_info.labels(version=version).set(1)
        for phase in Phase:
            self._rollouts.labels(phase=phase.value).set(0)
        self._seen: dict[tuple[str, str], _Seen] = {}
        # Rollouts per phase, kept as phases change: counting them all on every change cost
        # O(rollouts) per change, a measurable share of the CPU with a thousand rollouts.
        self._phase_counts: collections.Counter[Phase] = collections.Counter()
        # reconciled/forgotten run on the event loop, aws_call in worker threads; the lock keeps
        # the per-rollout memory consistent should observers ever be called from several threads.
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._server_thread: threading.Thread | None = None

    # -- ReconcileObserver ---------------------------------------------------------------------

    def reconciled(self, ref: RolloutKey, plan: Plan, seconds: float) -> None:
        """Record one pass over ``ref`` that ended with ``plan``, after ``seconds``."""
        try:
            with self._lock:
                self._record(ref, plan, seconds)
        except Exception:
            logger.exception("metrics: cannot record the reconcile of %s/%s", ref.namespace, ref.name)

    def forgotten(self, ref: RolloutKey) -> None:
        """``ref`` is gone: drop its series and stop counting it in its phase."""
        try:
            with self._lock:
                key = (ref.namespace, ref.name)
                seen = self._seen.pop(key, None)
                if seen is None:
                    return
                self._remove_weight(key)
                self._move_phase(seen.phase, None)
        except Exception:
            logger.exception("metrics: cannot forget %s/%s", ref.namespace, ref.name)

    # -- AwsClients' call observer -------------------------------------------------------------

    def aws_call(self, service: str, operation: str, error_code: str | None) -> None:
        """Count one AWS API call; ``error_code`` None means it succeeded."""
        try:
            self._aws_calls.labels(service=service, operation=operation).inc()
            if error_code is not None:
                self._aws_errors.labels(service=service, operation=operation, error_code=error_code).inc()
        except Exception:
            logger.exception("metrics: cannot count the AWS call %s %s", service, operation)

    # -- the Notifier's observer ------------------------------------------------------------------

    def notified(self, channel: str, result: str) -> None:
        """Count one delivery that ended with ``result``; a failure also posted its Warning Event."""
        try:
            self._notifications.labels(channel=channel, result=result).inc()
            if result != DELIVERED:
                self._events.labels(
                    reason=Reason.NOTIFICATION_FAILED.value, type=EventType.WARNING.value
                ).inc()
        except Exception:
            logger.exception("metrics: cannot count the notification over %s", channel)

    # -- exposition ----------------------------------------------------------------------------

    def exposition(self) -> str:
        """The metrics in Prometheus's text format, as a scrape of ``/metrics`` returns them."""
        return generate_latest(self.registry).decode()

    def start_http_server(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; return the bound port.

        Raises ``OSError`` when the address cannot be bound. Calling it again replaces the server.
        """
        self.close()
        server, thread = _start_metrics_server(port, addr=host, registry=self.registry)
        self._server, self._server_thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving ``/metrics``; the metrics themselves stay readable."""
        server, thread = self._server, self._server_thread
        self._server = self._server_thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- internals (lock held) -----------------------------------------------------------------

    def _record(self, ref: RolloutKey, plan: Plan, seconds: float) -> None:
        key = (ref.namespace, ref.name)
        first_sight = key not in self._seen
        seen = self._seen.setdefault(key, _Seen())
        status = plan.status
        self._duration.observe(max(0.0, seconds))

        if status.phase != seen.phase:
            self._move_phase(seen.phase, status.phase)
            seen.phase = status.phase

        if status.canary_weight is None:
            self._remove_weight(key)
        else:
            self._canary_weight.labels(namespace=key[0], rollout=key[1]).set(status.canary_weight)

        for event in plan.events:
            self._events.labels(reason=event.reason.value, type=event.type.value).inc()
            if event.reason in STEP_REASONS:
                self._steps.inc()

        self._count_rollback(seen, status, plan.events)
        for scope, run in (("background", status.analysis), ("step", status.step_analysis)):
            self._count_verdict(seen, scope, run, first_sight=first_sight)

    def _count_rollback(self, seen: _Seen, status: RolloutStatus, events: Iterable[Event]) -> None:
        reason = next(
            (e.reason for e in events if e.type == EventType.WARNING and e.reason in ROLLBACK_REASONS), None
        )
        if reason is None:
            return
        which = status.aborted_at or ""
        if which and which == seen.rollback:
            return  # the same rollback, its write being retried
        seen.rollback = which
        self._rollbacks.labels(reason=reason.value).inc()

    def _count_verdict(
        self, seen: _Seen, scope: str, run: AnalysisStatus | None, *, first_sight: bool
    ) -> None:
        if run is None:
            # Keep what was seen: a pass without the run (a failed reconcile keeps the old status
            # anyway) must not make its next sighting look like a new run.
            return
        identity = (run.started_at, run.step_index)
        before = seen.runs.get(scope)
        if before is not None and before.identity == identity:
            baseline = before.measurements
        else:
            # A run first seen now: new in this pass, unless this process never saw the rollout
            # before, in which case its measurements were counted (if at all) by an earlier one.
            baseline = run.measurements if first_sight else 0
        seen.runs[scope] = _Run(identity, run.measurements)
        # The planner takes at most one measurement per pass, so growth is one verdict.
        if run.measurements > baseline and run.last_verdict is not None:
            self._verdicts.labels(verdict=run.last_verdict.value).inc()

    def _move_phase(self, old: Phase | None, new: Phase | None) -> None:
        """One rollout left phase ``old`` for ``new`` (None: none, before its first pass or gone)."""
        for phase, change in ((old, -1), (new, 1)):
            if phase is not None:
                self._phase_counts[phase] += change
                self._rollouts.labels(phase=phase.value).set(self._phase_counts[phase])

    def _remove_weight(self, key: tuple[str, str]) -> None:
        # No weight may be known for it; prometheus_client before 0.22 raises KeyError then.
        with contextlib.suppress(KeyError):
            self._canary_weight.remove(*key)


# ---------------------------------------------------------------------------------------------
# Logs.

# Kopf's per-object log records carry these extras; the reference becomes namespace and name, the
# rest is Kopf's own bookkeeping (and its settings object is no log field).
_KOPF_REF: Final = "k8s_ref"
_KOPF_INTERNAL: Final = ("k8s_skip", "settings")


class JsonLogFormatter(JsonFormatter):
    """One JSON object per record: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``,
    then the record's extra fields; Kopf's object reference becomes ``namespace`` and ``name``.
    An exception's traceback is in ``exc_info``.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, *_KOPF_INTERNAL],
            timestamp="time",
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        ordered: dict[str, Any] = {
            "time": log_data.pop("time", None),
            "level": log_data.pop("level", None),
            "logger": log_data.pop("logger", None),
            "message": log_data.pop("message", None),
        }
        ref = log_data.pop(_KOPF_REF, None)
        if isinstance(ref, dict):
            for part in ("namespace", "name"):
                if ref.get(part):
                    ordered[part] = ref[part]
        ordered.update(log_data)
        return ordered


class _OperatorLogHandler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs, told apart from anyone else's."""


def configure_logging(
    log_format: LogFormat, level: int | str, stream: TextIO | None = None
) -> logging.Handler:
    """Log everything at ``level`` and above to ``stream`` (stderr), as text or JSON lines.

    The handler this function installed before is replaced, so the output is never written twice;
    other handlers are left alone. Returns the handler, to remove it when done.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _OperatorLogHandler)]:
        root.removeHandler(handler)
    handler = _OperatorLogHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
