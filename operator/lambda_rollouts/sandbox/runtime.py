"""The local sandbox: a Kubernetes API emulator, an AWS emulator, a demo function and the operator.

Contract:
- ``open_sandbox()`` starts moto as a server on a loopback port, seeds the demo function
  (versions 1 and 2, alias ``live`` on 1), serves the Kubernetes API emulator with the project's
  CRD in the running event loop, writes a kubeconfig, and (unless told not to) runs the real
  operator in-process against both, entering only once the operator is ready. Everything stops
  when the context exits.
- ``serve_forever()`` keeps a sandbox up until interrupted and prints the variables to export so
  that kubectl and ``lambda-rollouts run`` in another terminal reach it.
- Nothing here reads the environment or touches the user's AWS credentials: the AWS emulator gets
  dummy credentials explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import kopf

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.crd import build_crd
from lambda_rollouts.handlers import Wiring, build_registry, default_backends
from lambda_rollouts.reconcile import Backends
from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session, seed_demo_function
from lambda_rollouts.sandbox.kube import KubernetesApiEmulator, run_kubernetes_emulator
from lambda_rollouts.settings import Settings

SANDBOX_REGION = "us-east-1"


@dataclass
class SandboxHandle:
    kube_url: str
    kubeconfig_path: pathlib.Path
    aws_endpoint_url: str
    region: str
    seeded: dict[str, str]
    emulator: KubernetesApiEmulator
    # The operator's AWS routers (one, once it has work): their call counts are the figures.
    routers: list[BotoAliasRouter] = field(default_factory=list)
    operator_task: asyncio.Task[Any] | None = field(default=None, repr=False)


def operator_wiring(
    kube_url: str, aws_endpoint_url: str, region: str, routers: list[BotoAliasRouter]
) -> Wiring:
    """Wiring for an in-process operator that talks to the two emulators."""
    settings = Settings(default_region=region, aws_endpoint_url=aws_endpoint_url)

    def backends_factory(settings: Settings) -> Backends:
        backends = default_backends(settings, lambda: sandbox_session(region))
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
) -> AsyncIterator[SandboxHandle]:
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = pathlib.Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="lambda-rollouts-"))
            )
        moto = await asyncio.to_thread(MotoSandbox(port=aws_port).start)
        cleanup.callback(moto.stop)
        seeded = await asyncio.to_thread(seed_demo_function, moto.endpoint_url, region)
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


async def serve_forever(*, kube_port: int = 0, aws_port: int = 0, run_operator: bool = True) -> None:
    workdir = pathlib.Path.cwd() / ".sandbox"
    workdir.mkdir(exist_ok=True)
    for noisy in ("kopf", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    async with open_sandbox(
        workdir=workdir, kube_port=kube_port, aws_port=aws_port, run_operator=run_operator
    ) as sandbox:
        seeded = sandbox.seeded
        print("lambda-rollouts sandbox is running. In another terminal:\n")
        print(f"export KUBECONFIG={sandbox.kubeconfig_path}")
        print(f"export AWS_ENDPOINT_URL={sandbox.aws_endpoint_url}")
        print(
            f"\nSeeded: function {seeded['function_name']} with versions {seeded['stable_version']} and "
            f"{seeded['canary_version']}, alias {seeded['alias']} on version {seeded['stable_version']} "
            f"(region {sandbox.region}; the AWS emulator takes any credentials, e.g. "
            "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)."
        )
        print("Then: kubectl apply --validate=false -f examples/canary.yaml && kubectl get lro -w")
        if not run_operator:
            print("The operator is not running here: start it with `lambda-rollouts run`.")
        print("\nPress Ctrl-C to stop.", flush=True)
        if sandbox.operator_task is not None:
            # Kopf takes over SIGINT/SIGTERM and ends the operator task on them: stop with it.
            with contextlib.suppress(asyncio.CancelledError):
                await sandbox.operator_task
        else:
            await asyncio.Event().wait()
