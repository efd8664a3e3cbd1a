"""The local sandbox: a Kubernetes API emulator, an AWS emulator, a demo function and the operator.

Contract:
- ``open_sandbox()`` starts moto as a server on a loopback port, seeds the demo function
  (versions 1 and 2, alias ``live`` on 1) and the hook function ``checkout-smoke`` (see
  ``seed_hook_functions``), serves the Kubernetes API emulator with the project's CRD in the
  running event loop, writes a kubeconfig, and (unless told not to) runs the real operator
  in-process against both, entering only once the operator is ready. With ``traffic_per_second``
  the demo alias has clients (``AliasTraffic``), so each version's code shows in CloudWatch.
  Everything stops when the context exits.
- ``serve_forever()`` keeps a sandbox up until interrupted, prints the variables to export so
  that kubectl, the aws CLI and ``lambda-rollouts run`` in another terminal reach it
  (``sandbox_exports``), and writes them to ``.sandbox/env`` (for ``source``) and the sandbox's
  address to ``.sandbox/sandbox.json``, both removed when it stops.
- ``publish_to_sandbox(workdir, function, fail_rate)`` finds the running sandbox by the state
  file in ``workdir`` (its ``.sandbox`` directory), publishes the function's next release there
  (``publish_next_release``) and returns the new version. It raises ``SandboxNotFoundError`` when
  there is no such file, its process is gone or the sandbox does not answer, and ``SandboxError``
  for anything else refused (no such function: the message names those there are).
- Nothing here reads the environment or touches the user's AWS credentials: the AWS emulator gets
  dummy credentials explicitly, and the exports printed are for the user's other terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import shlex
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import kopf

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.aws.errors import translated
from lambda_rollouts.crd import build_crd
from lambda_rollouts.errors import AwsError, FunctionNotFoundError, LambdaRolloutsError
from lambda_rollouts.handlers import Wiring, build_registry, default_backends
from lambda_rollouts.reconcile import Backends
from lambda_rollouts.sandbox.aws import (
    SANDBOX_CREDENTIALS,
    SMOKE_FAILS,
    AliasTraffic,
    MotoSandbox,
    publish_next_release,
    sandbox_session,
    seed_demo_function,
    seed_hook_functions,
)
from lambda_rollouts.sandbox.kube import KubernetesApiEmulator, run_kubernetes_emulator
from lambda_rollouts.settings import Settings

SANDBOX_REGION = "us-east-1"
# Where ``serve_forever`` keeps its files, under the directory it starts in.
SANDBOX_DIR = ".sandbox"
STATE_FILE = "sandbox.json"
ENV_FILE = "env"
DEFAULT_TRAFFIC_PER_SECOND = 100.0


class SandboxError(LambdaRolloutsError):
    """A request to a running sandbox that cannot be done; the message says why."""


class SandboxNotFoundError(SandboxError):
    """No running sandbox where one was looked for, or it does not answer; the message says which."""


@dataclass
class SandboxHandle:
    kube_url: str
    kubeconfig_path: pathlib.Path
    aws_endpoint_url: str
    region: str
    seeded: dict[str, str]
    emulator: KubernetesApiEmulator
    hook_functions: dict[str, str] = field(default_factory=dict)
    traffic: AliasTraffic | None = field(default=None, repr=False)
    # The operator's AWS routers (one, once it has work): their call counts are the figures.
    routers: list[BotoAliasRouter] = field(default_factory=list)
    operator_task: asyncio.Task[Any] | None = field(default=None, repr=False)


def operator_wiring(
    kube_url: str, aws_endpoint_url: str, region: str, routers: list[BotoAliasRouter]
) -> Wiring:
    """Wiring for an in-process operator that talks to the two emulators."""
    settings = Settings(default_region=region)

    def backends_factory(settings: Settings) -> Backends:
        # The operator passes no endpoint: its session's configuration names moto's.
        backends = default_backends(settings, lambda: sandbox_session(region, endpoint_url=aws_endpoint_url))
        assert isinstance(backends.router, BotoAliasRouter)
        routers.append(backends.router)
        return backends

    return Wiring(
        settings=settings, backends_factory=backends_factory, connection=kopf.ConnectionInfo(server=kube_url)
    )


@contextlib.asynccontextmanager
async def open_sandbox(
    *,
    workdir: pathlib.Path | None = None,
    kube_port: int = 0,
    aws_port: int = 0,
    region: str = SANDBOX_REGION,
    run_operator: bool = True,
    traffic_per_second: float = 0.0,
) -> AsyncIterator[SandboxHandle]:
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = pathlib.Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="lambda-rollouts-"))
            )
        moto = await asyncio.to_thread(MotoSandbox(port=aws_port).start)
        cleanup.callback(moto.stop)
        session = await asyncio.to_thread(sandbox_session, region)
        seeded = await asyncio.to_thread(seed_demo_function, moto.endpoint_url, region, session=session)
        hook_functions = await asyncio.to_thread(
            seed_hook_functions, moto.endpoint_url, region, session=session
        )
        traffic = None
        if traffic_per_second > 0:
            traffic = AliasTraffic(region, seeded["function_name"], seeded["alias"], traffic_per_second)
            cleanup.callback(traffic.start().stop)
        async with run_kubernetes_emulator(
            [build_crd()], port=kube_port or None, kubeconfig_path=workdir / "kubeconfig"
        ) as kube:
            assert kube.kubeconfig_path is not None
            handle = SandboxHandle(
                kube_url=kube.url,
                kubeconfig_path=kube.kubeconfig_path,
                aws_endpoint_url=moto.endpoint_url,
                region=region,
                seeded=seeded,
                emulator=kube.emulator,
                hook_functions=hook_functions,
                traffic=traffic,
            )
            if run_operator:
                wiring = operator_wiring(kube.url, moto.endpoint_url, region, handle.routers)
                ready = asyncio.Event()
                handle.operator_task = asyncio.create_task(
                    kopf.operator(
                        registry=build_registry(wiring), clusterwide=True, standalone=True, ready_flag=ready
                    )
                )
                # Hand the sandbox over only once the operator watches (and owns its signals).
                waiter = asyncio.ensure_future(ready.wait())
                await asyncio.wait([waiter, handle.operator_task], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            try:
                yield handle
            finally:
                if handle.operator_task is not None:
                    handle.operator_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await handle.operator_task


async def serve_forever(
    *,
    kube_port: int = 0,
    aws_port: int = 0,
    run_operator: bool = True,
    traffic_per_second: float = DEFAULT_TRAFFIC_PER_SECOND,
) -> None:
    workdir = pathlib.Path.cwd() / SANDBOX_DIR
    workdir.mkdir(exist_ok=True)
    for noisy in ("kopf", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    async with open_sandbox(
        workdir=workdir,
        kube_port=kube_port,
        aws_port=aws_port,
        run_operator=run_operator,
        traffic_per_second=traffic_per_second,
    ) as sandbox:
        exports = sandbox_exports(sandbox)
        with _announced(workdir, sandbox, exports):
            _print_welcome(sandbox, exports, workdir, run_operator)
            if sandbox.operator_task is not None:
                # Kopf takes over SIGINT/SIGTERM and ends the operator task on them: stop with it.
                with contextlib.suppress(asyncio.CancelledError):
                    await sandbox.operator_task
            else:
                await asyncio.Event().wait()


def sandbox_exports(sandbox: SandboxHandle) -> dict[str, str]:
    """The variables that point kubectl, the aws CLI, the SDKs and ``lambda-rollouts run`` at ``sandbox``.

    Both region variables: the aws CLI reads ``AWS_REGION`` first, boto3 only ``AWS_DEFAULT_REGION``.
    """
    return {
        "KUBECONFIG": str(sandbox.kubeconfig_path),
        "AWS_REGION": sandbox.region,
        "AWS_DEFAULT_REGION": sandbox.region,
        "AWS_ACCESS_KEY_ID": SANDBOX_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": SANDBOX_CREDENTIALS["aws_secret_access_key"],
        "AWS_ENDPOINT_URL": sandbox.aws_endpoint_url,
    }


def _export_lines(exports: dict[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


@contextlib.contextmanager
def _announced(workdir: pathlib.Path, sandbox: SandboxHandle, exports: dict[str, str]) -> Iterator[None]:
    """``workdir``'s env and state files for as long as the sandbox runs."""
    state = {
        "pid": os.getpid(),
        "region": sandbox.region,
        "aws_endpoint_url": sandbox.aws_endpoint_url,
        "kubeconfig": str(sandbox.kubeconfig_path),
    }
    env_path, state_path = workdir / ENV_FILE, workdir / STATE_FILE
    env_path.write_text("\n".join(_export_lines(exports)) + "\n", encoding="utf-8")
    state_path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    try:
        yield
    finally:
        env_path.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)


def _print_welcome(
    sandbox: SandboxHandle, exports: dict[str, str], workdir: pathlib.Path, run_operator: bool
) -> None:
    seeded, hooks = sandbox.seeded, sandbox.hook_functions
    function, alias = seeded["function_name"], seeded["alias"]
    env_file = os.path.relpath(workdir / ENV_FILE)
    print(f"lambda-rollouts sandbox is running. In another terminal (or: source {env_file}):\n")
    print("\n".join(_export_lines(exports)))
    print(
        f"\nSeeded in {sandbox.region}: function {function} with versions {seeded['stable_version']} and "
        f"{seeded['canary_version']}, alias {alias} on version {seeded['stable_version']}; the hook "
        f"function {hooks['function_name']} (alias {hooks['alias']}), a smoke test that fails for "
        f"version {', '.join(SMOKE_FAILS)} of {function} (examples/hooks.yaml)."
    )
    if sandbox.traffic is not None:
        print(
            f"Traffic: {sandbox.traffic.per_second:g} invocations/s of {function}:{alias}, each run by the "
            "version it reaches and counted in CloudWatch (AWS/Lambda), as Lambda does."
        )
    print("Then: kubectl apply -f examples/canary.yaml && kubectl get lro -w")
    print(f"A new version: lambda-rollouts sandbox publish {function} [--fail-rate 0.25]")
    print(f"AWS: aws lambda get-alias --function-name {function} --name {alias}")
    if not run_operator:
        print("The operator is not running here: start it with `lambda-rollouts run`.")
    print("\nPress Ctrl-C to stop.", flush=True)


@dataclass(frozen=True)
class PublishedRelease:
    function_name: str
    version: str
    fail_rate: float

    def patch_command(self, rollout: str | None = None) -> str:
        """The kubectl command that rolls the version out with rollout ``rollout`` (default: the
        function's name, as the examples name their rollouts)."""
        patch = json.dumps({"spec": {"version": self.version}}, separators=(",", ":"))
        return f"kubectl patch lro {rollout or self.function_name} --type=merge -p {shlex.quote(patch)}"


def publish_to_sandbox(workdir: pathlib.Path, function: str, fail_rate: float = 0.0) -> PublishedRelease:
    """Publish ``function``'s next release in the sandbox whose state file is in ``workdir``."""
    endpoint_url, region = _running_sandbox(workdir)
    try:
        with translated(f"publish {function}"):
            version = publish_next_release(endpoint_url, region, function, fail_rate=fail_rate)
    except FunctionNotFoundError as exc:
        present = ", ".join(_function_names(endpoint_url, region)) or "none"
        raise SandboxError(f"no function {function} in the sandbox (it has: {present})") from exc
    except AwsError as exc:
        if not exc.transient:
            raise SandboxError(exc.message) from exc
        raise SandboxNotFoundError(
            f"the sandbox at {endpoint_url} did not answer: is `lambda-rollouts sandbox` still running? "
            f"({exc.message})"
        ) from exc
    return PublishedRelease(function, version, fail_rate)


def _running_sandbox(workdir: pathlib.Path) -> tuple[str, str]:
    """(AWS endpoint, region) of the sandbox that wrote ``workdir``'s state file."""
    state_path = workdir / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        endpoint_url, region, pid = str(state["aws_endpoint_url"]), str(state["region"]), int(state["pid"])
    except FileNotFoundError as exc:
        raise SandboxNotFoundError(
            f"no running sandbox found: {state_path} does not exist. Start `lambda-rollouts sandbox` "
            f"in {workdir.resolve().parent} first, or point --dir at the {SANDBOX_DIR} directory of one."
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SandboxNotFoundError(f"cannot read the sandbox's address from {state_path}: {exc}") from exc
    try:
        os.kill(pid, 0)
    except ProcessLookupError as exc:
        raise SandboxNotFoundError(
            f"the sandbox that wrote {state_path} (process {pid}) is no longer running: start it again"
        ) from exc
    except PermissionError:
        pass  # it runs, as another user
    return endpoint_url, region


def _function_names(endpoint_url: str, region: str) -> list[str]:
    client = sandbox_session(region).client("lambda", region_name=region, endpoint_url=endpoint_url)
    try:
        with translated("ListFunctions"):
            functions = client.list_functions().get("Functions", [])
    except AwsError:
        return []
    return sorted(function["FunctionName"] for function in functions)
