"""The ``lambda-rollouts`` command.

- ``run``: the operator, against the current kubeconfig or the in-cluster service account, and
  the default AWS credential chain (``AWS_REGION``, ``AWS_ENDPOINT_URL`` honoured). All namespaces
  unless ``--namespace`` is given. ``--metrics-port`` (or ``LAMBDA_ROLLOUTS_METRICS_PORT``) serves
  Prometheus metrics at ``/metrics``; ``--log-format json`` writes one JSON object per log line.
  Replicas elect one active operator through the ``ClusterKopfPeering`` named by ``--peering``,
  highest ``--priority`` first (default: random per process), and none acts while that object is
  missing. Without ``--peering``, as Kopf does: peering through ``lambda-rollouts`` if it exists,
  else standalone with a warning; ``--standalone`` runs without peering, for a single replica. Its
  event loop is uvloop's when uvloop is installed, unless ``LAMBDA_ROLLOUTS_EVENT_LOOP`` says
  otherwise (``event_loop_factory``). An invalid setting or option, or a failure to start, ends it
  with one line naming what to fix, and exit code 1.
- ``sandbox``: a local Kubernetes API emulator and AWS emulator with a seeded demo function, a
  hook function, traffic on the demo alias (``--traffic``) and the operator, kept running; prints
  the variables to export for kubectl and the aws CLI. ``sandbox publish FUNCTION`` publishes the
  function's next version in the sandbox running from the current directory (``--fail-rate``: a
  release that fails that share of its invocations) and prints the ``kubectl patch`` that rolls
  it out; a sandbox it cannot find or reach ends it with one line saying so, and exit code 1.
- ``demo``: the sandbox, a healthy canary and a failing release rolled back automatically, shown
  step by step, with a summary; exit 0 when both end as they should.
- ``crd``: print the CustomResourceDefinition.

``-h`` is ``--help`` on every command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from lambda_rollouts import __version__

if TYPE_CHECKING:
    from lambda_rollouts.settings import EventLoop


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lambda-rollouts")
def main() -> None:
    """Progressive delivery for AWS Lambda aliases, driven from Kubernetes."""


def event_loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """What ``run`` makes its event loop with: uvloop's for "auto" when installed, or as told.

    uvloop runs the loop's own machinery (polling, timers, sockets) in C: in ``benchmarks/scale.py``
    the operator spent about a tenth less CPU per step at N = 100, 5-10% less at N = 1,000.
    """
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise click.ClickException(
                "LAMBDA_ROLLOUTS_EVENT_LOOP is uvloop, but uvloop is not installed (pip install uvloop)"
            ) from exc
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


# The options of `run` that override a setting, by setting: an invalid value is named as given.
_RUN_OPTIONS = {
    "namespaces": "--namespace",
    "liveness_endpoint": "--liveness",
    "metrics_port": "--metrics-port",
    "log_format": "--log-format",
    "peering_name": "--peering",
    "peering_priority": "--priority",
}


@main.command()
@click.option(
    "--namespace", "-n", "namespaces", multiple=True, help="Watch only these namespaces (repeatable)."
)
@click.option(
    "--liveness", "liveness", default=None, help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics at /metrics on this port (LAMBDA_ROLLOUTS_METRICS_PORT).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="text, or one JSON object per line (LAMBDA_ROLLOUTS_LOG_FORMAT).",
)
@click.option(
    "--peering",
    "peering_name",
    default=None,
    metavar="NAME",
    help=(
        "Elect one active replica through this ClusterKopfPeering; no replica acts while it is missing"
        " (default: lambda-rollouts if it exists, else standalone)."
    ),
)
@click.option(
    "--priority",
    "peering_priority",
    type=int,
    default=None,
    help="Peering priority; the highest live one acts (default: random per process).",
)
@click.option("--standalone", is_flag=True, help="Run without peering: only for a single replica.")
@click.option("--verbose", "-v", is_flag=True, help="Log at debug level.")
def run(
    namespaces: tuple[str, ...],
    liveness: str | None,
    metrics_port: int | None,
    log_format: str | None,
    peering_name: str | None,
    peering_priority: int | None,
    standalone: bool,
    verbose: bool,
) -> None:
    """Run the operator against the current cluster and AWS account."""
    import kopf
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from lambda_rollouts.handlers import Wiring, build_registry, default_backends
    from lambda_rollouts.reconcile import Backends
    from lambda_rollouts.settings import Settings, describe_invalid_settings
    from lambda_rollouts.telemetry import Telemetry, configure_logging

    overrides: dict[str, Any] = {}
    if namespaces:
        overrides["namespaces"] = list(namespaces)
    if liveness:
        overrides["liveness_endpoint"] = liveness
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    if log_format is not None:
        overrides["log_format"] = log_format
    if standalone and (peering_name is not None or peering_priority is not None):
        raise click.UsageError("--standalone runs without peering: --peering and --priority do not apply.")
    if peering_name is not None:
        overrides["peering_name"] = peering_name
    if peering_priority is not None:
        overrides["peering_priority"] = peering_priority
    if standalone:
        overrides["peering_standalone"] = True
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        given = {field: option for field, option in _RUN_OPTIONS.items() if field in overrides}
        raise click.ClickException(describe_invalid_settings(exc, given)) from exc
    loop_factory = event_loop_factory(settings.event_loop)
    # kopf.operator() leaves logging to its caller: this handler is the only output, text or JSON.
    root_level = logging.getLogger().level
    log_handler = configure_logging(settings.log_format, "DEBUG" if verbose else settings.log_level)
    telemetry: Telemetry | None = None
    fatal: list[str] = []
    if not verbose and settings.log_format == "text":
        # JSON logs keep every record whole, traceback included: collectors read them, not people.
        log_handler.addFilter(_SaidAtExit(fatal))

    def backends(with_settings: Settings) -> Backends:
        on_aws_call = telemetry.aws_call if telemetry is not None else None
        return default_backends(with_settings, on_aws_call=on_aws_call)

    async def operate() -> None:
        stop = asyncio.Event()

        def give_up(message: str) -> None:
            fatal.append(message)
            stop.set()

        wiring = Wiring(settings=settings, backends_factory=backends, observer=telemetry, on_fatal=give_up)
        await kopf.operator(
            registry=build_registry(wiring),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            # The rest of the peering setup is applied at startup (handlers.configure_peering).
            standalone=settings.peering_standalone,
            liveness_endpoint=settings.liveness_endpoint,
            stop_flag=stop,
        )

    try:
        if settings.metrics_port is not None:
            telemetry = Telemetry()
            try:
                telemetry.start_http_server(settings.metrics_host, settings.metrics_port)
            except OSError as exc:
                raise click.ClickException(
                    f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
                ) from exc
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(operate())
    except KeyboardInterrupt:
        return
    except click.ClickException:
        raise
    except Exception as exc:
        # Kopf's own wording ("One or more handlers failed") is worse than the reason we were given.
        fatal.append(f"the operator stopped: {exc}")
    finally:
        if telemetry is not None:
            telemetry.close()
        # Leave the process's logging as it was found (tests run several commands in one process).
        logging.getLogger().removeHandler(log_handler)
        logging.getLogger().setLevel(root_level)
    if fatal:
        raise click.ClickException(fatal[0])


class _SaidAtExit(logging.Filter):
    """For text logs, drops what ``run`` says in its one-line error as it exits: Kopf's traceback of
    the task whose failure stops the operator, and Kopf's own line about a failure already reported
    as fatal (``--verbose`` keeps them)."""

    def __init__(self, fatal: list[str]) -> None:
        super().__init__()
        self._fatal = fatal

    def filter(self, record: logging.LogRecord) -> bool:
        stopping = record.name == "kopf._core.reactor.running" and " has failed: " in str(record.msg)
        if stopping and record.exc_info:
            return False
        if record.levelno >= logging.ERROR and self._fatal:
            message = record.getMessage()
            return not any(message.endswith(reason) for reason in self._fatal)
        return True


# The sandbox's own default, repeated for --help (the sandbox's modules load only when it starts).
_DEFAULT_TRAFFIC = 100.0


@main.group(
    invoke_without_command=True, short_help="Keep a local sandbox running: emulators, operator, functions."
)
@click.option(
    "--kube-port", default=0, type=int, help="Port of the Kubernetes API emulator (0: any free port)."
)
@click.option("--aws-port", default=0, type=int, help="Port of the AWS emulator (0: any free port).")
@click.option(
    "--no-operator", is_flag=True, help="Do not run the operator; run `lambda-rollouts run` yourself."
)
@click.option(
    "--traffic",
    "traffic",
    type=click.FloatRange(min=0),
    default=_DEFAULT_TRAFFIC,
    show_default=True,
    metavar="PER_SECOND",
    help="Invocations per second of checkout-api:live, counted in CloudWatch for analyses (0: none).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log at debug level.")
@click.pass_context
def sandbox(
    ctx: click.Context, kube_port: int, aws_port: int, no_operator: bool, traffic: float, verbose: bool
) -> None:
    """Keep a local sandbox running until Ctrl-C: Kubernetes and AWS emulators, the operator, a demo
    function checkout-api (versions 1 and 2, alias live on 1) with traffic, and the hook function
    checkout-smoke. It prints the variables that point kubectl and the aws CLI at it, and writes them
    to .sandbox/env.

    From another terminal in the same directory, `lambda-rollouts sandbox publish checkout-api`
    publishes a new version to roll out.
    """
    if ctx.invoked_subcommand is not None:
        given = [
            name
            for name in ("kube_port", "aws_port", "no_operator", "traffic", "verbose")
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            verb = "is" if len(given) == 1 else "are"
            raise click.UsageError(
                f"{options} {verb} for starting a sandbox, not for `sandbox {ctx.invoked_subcommand}`."
            )
        return
    from lambda_rollouts.sandbox.runtime import serve_forever

    _configure_logging(verbose)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve_forever(
                kube_port=kube_port,
                aws_port=aws_port,
                run_operator=not no_operator,
                traffic_per_second=traffic,
            )
        )


@sandbox.command(short_help="Publish a new version of FUNCTION in the running sandbox.")
@click.argument("function")
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="SHARE",
    help="Share of its invocations the new release fails (0 to 1), evenly spread: 0.25 fails every fourth.",
)
@click.option(
    "--dir",
    "sandbox_dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=".sandbox",
    show_default=True,
    help="The .sandbox directory of the running sandbox (it is made where `lambda-rollouts sandbox` starts).",
)
def publish(function: str, fail_rate: float, sandbox_dir: pathlib.Path) -> None:
    """Publish a new version of FUNCTION in the running sandbox, and print how to roll it out.

    The new release's code answers {"release": N}, N being the new version; with --fail-rate it
    raises for that share of its invocations, for an analysis to catch.
    """
    from lambda_rollouts.sandbox.runtime import SandboxError, publish_to_sandbox

    try:
        published = publish_to_sandbox(sandbox_dir, function, fail_rate)
    except SandboxError as exc:
        raise click.ClickException(exc.message) from exc
    fails = f", failing {fail_rate:.0%} of its invocations" if fail_rate else ""
    click.echo(f"Published {function} version {published.version}{fails}. Roll it out with:")
    click.echo(f"  {published.patch_command()}")


@main.command(short_help="A canary promoted, then a failing release rolled back, in the sandbox.")
@click.option("--verbose", "-v", is_flag=True, help="Log the operator at debug level.")
def demo(verbose: bool) -> None:
    """Show two rollouts in the local sandbox, then exit: a healthy canary promoted, and a failing
    release rolled back by its analysis. Exit code 0 when both end as they should."""
    from lambda_rollouts.sandbox.demo import run_demo

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    sys.exit(asyncio.run(run_demo()))


@main.command()
def crd() -> None:
    """Print the LambdaRollout CustomResourceDefinition as YAML."""
    from lambda_rollouts.crd import render_crd_yaml

    click.echo(render_crd_yaml(), nl=False)
