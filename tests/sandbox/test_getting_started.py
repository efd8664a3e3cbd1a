"""The getting-started page, run as it is written, against a sandbox started the way it says.

``docs/getting-started.md`` marks four blocks with a comment: ``terminal-1`` starts the sandbox,
``sandbox-output`` shows what it prints, ``terminal-2`` and then ``rollback`` are what the reader
runs in a second terminal. The test runs the first block in a shell of its own, from a directory
laid out as a checkout is (``.venv`` and ``examples``), and waits until the sandbox says it is
ready; the variables it prints must be those the page shows. It runs the second and the third
block, as written, in one more shell (the reader's second terminal), with ``set -e``: a command
that exits non-zero fails the test and is named, except the last one, whose exit code must be the
one its comment on the page gives (``# exit 1: …``). The inherited ``PATH`` leaves out this
virtual environment and no ``KUBECONFIG`` or AWS variable is inherited, so the page's own
``export PATH`` and ``source .sandbox/env`` are what reach the tools and the sandbox. The sandbox
is stopped as the reader stops it: Ctrl-C, a SIGINT to its process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "getting-started.md"
VENV = Path(sys.executable).parent.parent
# What the sandbox prints last once it is ready.
READY = "Press Ctrl-C"
# The reader's own AWS variables would point elsewhere; the page's `source .sandbox/env` sets these.
SANDBOX_AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


def _blocks() -> dict[str, str]:
    """The marked blocks of the page, by marker."""
    text = PAGE.read_text(encoding="utf-8")
    found = re.findall(r"^<!-- getting-started: (\S+) -->\n```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    blocks = dict(found)
    assert len(blocks) == len(found), "a marker is used twice"
    assert set(blocks) == {"terminal-1", "sandbox-output", "terminal-2", "rollback"}
    return blocks


def _environment() -> dict[str, str]:
    """The reader's shell: no cluster or AWS endpoint of its own, and this venv not on PATH."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"KUBECONFIG", "VIRTUAL_ENV"} and not key.startswith(SANDBOX_AWS_VARIABLES)
    }
    bin_dir = str(VENV / "bin")
    environment["PATH"] = os.pathsep.join(
        entry for entry in environment.get("PATH", "").split(os.pathsep) if entry and entry != bin_dir
    )
    return environment


def _checkout(tmp_path: Path) -> Path:
    """A directory that looks like the checkout to the page's commands."""
    (tmp_path / ".venv").symlink_to(VENV, target_is_directory=True)
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    return tmp_path


class Sandbox:
    """The first terminal: the page's block in a shell, its output collected as it comes."""

    def __init__(self, script: str, cwd: Path, environment: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith(READY):
                self.ready.set()
        self.ready.set()  # it ended: nothing more will come

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def exports(self) -> list[str]:
        return [line.strip() for line in self.lines if line.startswith("export ")]

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _exported_names(lines: list[str]) -> list[str]:
    return [line.split()[1].split("=", 1)[0] for line in lines if line.startswith("export ")]


def _second_terminal(blocks: dict[str, str]) -> tuple[str, int]:
    """The script of the reader's second terminal, and the exit code the page gives its last command."""
    *commands, last = blocks["rollback"].strip().splitlines()
    stated = re.search(r"# exit (\d+)", last)
    assert stated, f"the page does not say how its last command exits: {last}"
    script = "\n".join(
        [
            "set -eu",
            "trap 'echo \"failed: $BASH_COMMAND\" >&2' ERR",
            blocks["terminal-2"],
            *commands,
            "set +e",
            "trap - ERR",
            last,
            'echo "last command: exit $?"',
        ]
    )
    return script, int(stated.group(1))


def test_the_page_marks_its_blocks_and_puts_the_venv_on_path() -> None:
    blocks = _blocks()
    assert "lambda-rollouts sandbox" in blocks["terminal-1"]
    assert "source .sandbox/env" in blocks["terminal-2"]
    assert (
        blocks["rollback"]
        .strip()
        .splitlines()[-1]
        .startswith("kubectl lambdarollout status checkout-api --watch")
    )
    for terminal in ("terminal-1", "terminal-2"):
        assert 'export PATH="$PWD/.venv/bin:$PATH"' in blocks[terminal]


def test_the_getting_started_commands_run_as_written(tmp_path: Path) -> None:
    blocks = _blocks()
    checkout = _checkout(tmp_path)
    environment = _environment()
    sandbox = Sandbox(blocks["terminal-1"], checkout, environment)
    try:
        assert sandbox.ready.wait(timeout=60), f"the sandbox did not start in 60 s:\n{sandbox.output}"
        assert sandbox.process.poll() is None, f"the sandbox ended:\n{sandbox.output}"
        # The page shows what the sandbox prints: the same variables to export, in the same order.
        shown = _exported_names(blocks["sandbox-output"].splitlines())
        assert _exported_names(sandbox.exports()) == shown, sandbox.output

        script, last_exit = _second_terminal(blocks)
        ran = subprocess.run(
            ["bash", "-c", script],
            cwd=checkout,
            env=environment,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
        report = f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}\nsandbox:\n{sandbox.output}"
        assert ran.returncode == 0, report
        assert "lambdarollout.lambda.rollouts.dev/checkout-api created" in ran.stdout, report
        assert "checkout-api: Applied: pause:" in ran.stdout, report
        assert "checkout-api: Applied: resume:" in ran.stdout, report
        assert "checkout-api: Healthy, weight 100%: promoted version 2: all traffic on it" in ran.stdout, (
            report
        )
        assert "Published checkout-api version 3" in ran.stdout, report
        assert "checkout-api: Degraded (AnalysisFailed), weight 0%:" in ran.stdout, report
        assert ran.stdout.rstrip().splitlines()[-1] == f"last command: exit {last_exit}", report

        # Ctrl-C stops it; a sandbox that outlives it would make wait() time out.
        sandbox.interrupt()
    finally:
        sandbox.kill()
