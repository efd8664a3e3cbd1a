"""Flux's judgement of Kubernetes objects from the real library: kstatus's ``status.Compute``
(sigs.k8s.io/cli-utils ``pkg/kstatus/status``), through the Go program of ``tools/go/kstatus``.

Contract:
- ``kstatus_binary()`` builds the program with ``tools/gobuild.sh kstatus`` (which caches the binary
  across runs) once per test session and returns its path. A missing Go or a failed build raises
  ``KstatusError`` (and is tried again by the next test that asks), which fails every test that
  asked: it is never a skip.
- ``judge(objects)`` returns kstatus's ``Verdict`` of each object, in order, from one run of the
  program for the whole batch; ``judge_one`` is the same for a single object. An object kstatus
  refuses raises ``KstatusError`` with the program's message.
- ``Verdict`` is (status, message, reason): kstatus's status (Current, InProgress, Failed,
  Terminating), its message, and the reason of the Reconciling or Stalled condition it derived
  ("" when none), e.g. LatestGenerationNotObserved.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

from ..gobuild import GoBuildError, go_program

CURRENT: Final = "Current"
IN_PROGRESS: Final = "InProgress"
FAILED: Final = "Failed"
TERMINATING: Final = "Terminating"

# A cold build compiles apimachinery (about a minute of CPU); later calls find the cached binary.
BUILD_TIMEOUT_SECONDS = 480.0
RUN_TIMEOUT_SECONDS = 60.0


class KstatusError(RuntimeError):
    """The kstatus program could not be built, or refused its input."""


class Verdict(NamedTuple):
    status: str
    message: str
    reason: str = ""


@functools.cache
def kstatus_binary() -> Path:
    try:
        return go_program("kstatus", BUILD_TIMEOUT_SECONDS)
    except GoBuildError as exc:
        raise KstatusError(str(exc)) from exc


def judge(objects: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    """kstatus's verdict of every object, in order, from one run of the program."""
    if not objects:
        return []
    binary = kstatus_binary()
    try:
        completed = subprocess.run(
            [str(binary)],
            input=json.dumps(list(objects)),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KstatusError(f"{binary} did not run: {exc}") from exc
    if completed.returncode != 0:
        raise KstatusError(f"{binary} exited {completed.returncode}: {completed.stderr.strip()}")
    verdicts = [
        Verdict(item["status"], item["message"], item["reason"]) for item in json.loads(completed.stdout)
    ]
    if len(verdicts) != len(objects):
        raise KstatusError(f"{binary} judged {len(verdicts)} of {len(objects)} objects")
    return verdicts


def judge_one(body: Mapping[str, Any]) -> Verdict:
    (verdict,) = judge([body])
    return verdict
