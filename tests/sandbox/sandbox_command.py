"""``lambda-rollouts sandbox`` as a newcomer starts it, in a process of its own.

- ``started(workdir)`` runs it in ``workdir`` with none of the shell's own ``KUBECONFIG`` or
  ``AWS_*`` variables, reads what it prints up to its ``Press Ctrl-C`` line and yields a
  ``Running``; when the block ends it sends ``stop_signal`` (SIGINT: Ctrl-C) and the process must
  exit within 30 s; it is killed whatever happens.
- ``Running`` holds the printed lines and the exports (name -> value, in the printed order), runs
  commands in ``workdir`` (``kubectl`` with the printed kubeconfig; ``with_lambda_client``: Python
  with boto3's Lambda client made from the printed variables alone).
- ``EXPORTED`` are the names of the variables the sandbox prints, in order.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

BIN = pathlib.Path(sys.executable).parent
# What a newcomer's shell would not have set before exporting the sandbox's variables.
UNSET = ("KUBECONFIG", "AWS_")
EXPORTED = [
    "KUBECONFIG",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
]


@dataclass
class Running:
    workdir: pathlib.Path
    printed: list[str]
    exports: dict[str, str]

    def run(self, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=90, check=False
        )

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**clean_environment(), "KUBECONFIG": self.exports["KUBECONFIG"]}
        return self.run(str(BIN / "kubectl"), *args, env=env)

    def with_lambda_client(self, code: str) -> subprocess.CompletedProcess[str]:
        """``code`` run by Python, after ``client = boto3.client('lambda')`` (``json`` imported),
        with nothing but the printed variables in its environment."""
        script = "import boto3, json\nclient = boto3.client('lambda')\n" + code
        return self.run(sys.executable, "-c", script, env=self.exports)


def clean_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(UNSET)}


@contextlib.contextmanager
def started(workdir: pathlib.Path, stop_signal: signal.Signals = signal.SIGINT) -> Iterator[Running]:
    """``lambda-rollouts sandbox`` running in ``workdir`` until the block ends (then ``stop_signal``)."""
    process = subprocess.Popen(
        [str(BIN / "lambda-rollouts"), "sandbox"],
        cwd=workdir,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = []
        for line in process.stdout:
            printed.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        exports = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in printed
            if line.startswith("export ")
        )
        yield Running(workdir, printed, exports)
        process.send_signal(stop_signal)
        assert process.wait(timeout=30) is not None
    finally:
        process.kill()
        process.wait()
