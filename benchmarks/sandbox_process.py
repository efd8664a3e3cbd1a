"""The sandbox in a process of its own, for the benchmarks that run the operator as a real process.

``start_sandbox`` runs ``lambda-rollouts sandbox --no-operator --traffic 0`` (the Kubernetes API
emulator and moto, without background traffic) with its output in ``log_path`` (a file: a pipe
nobody drains would block it once full), waits until it prints its exports, and returns the
process with its kubeconfig, Kubernetes API URL and AWS endpoint. ``command`` replaces the
``lambda-rollouts`` executable (a launcher that profiles it, say). A sandbox that does not start
within a minute is killed, and the error carries its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class SandboxProcess:
    process: asyncio.subprocess.Process
    kubeconfig: Path
    kube_url: str
    aws_endpoint_url: str


async def start_sandbox(
    workdir: Path,
    log_path: Path,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> SandboxProcess:
    program = list(command or [str(Path(sys.executable).with_name("lambda-rollouts"))])
    with log_path.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *program,
            "sandbox",
            "--no-operator",
            # No background traffic: the benchmarks' functions get only the calls they measure.
            "--traffic",
            "0",
            "--kube-port",
            "0",
            "--aws-port",
            "0",
            cwd=workdir,
            env=None if env is None else dict(env),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log_path.read_text)
        if "Press Ctrl-C" in text:
            exports = dict(
                line.removeprefix("export ").split("=", 1)
                for line in text.splitlines()
                if line.startswith("export ")
            )
            kubeconfig = Path(exports["KUBECONFIG"])
            return SandboxProcess(process, kubeconfig, kube_url(kubeconfig), exports["AWS_ENDPOINT_URL"])
        if process.returncode is not None:
            break
        await asyncio.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
    output = await asyncio.to_thread(log_path.read_text)
    raise RuntimeError(f"the sandbox did not start:\n{output}")


def kube_url(kubeconfig: Path) -> str:
    """The API server URL of the kubeconfig's first cluster."""
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["server"])
