"""``lambda-rollouts`` with the crash suite's alias-write log and fault point (see ``crash.py``).

Run: ``python benchmarks/crash_launcher.py run`` with the same arguments as ``lambda-rollouts``, or
``python benchmarks/crash_launcher.py --fork-server`` to start operators on request, each forked
from one process that has already imported them (see ``serve_forks``). Either way it installs
botocore handlers for ``UpdateAlias`` (``before-parameter-build`` and ``after-call``) on every
boto3 session the operator creates (clients inherit their session's handlers: every AWS call of
the operator is a botocore call), then hands over to ``lambda_rollouts.cli:main``. The package
itself is not changed.

Before every ``UpdateAlias`` is sent, one JSON line goes to the file named by ``CRASH_SUITE_LOG``
(appended and fsynced): ``{"kind": "sent", ...}`` with what the operator asks for. After every
successful one, before anything else happens, another:

    {"kind": "write", "function": ..., "alias": ..., "version": <FunctionVersion>,
     "weights": {<version>: <fraction>}, "time": <epoch seconds>, "pid": ...}

A ``sent`` line with no ``write`` after it is a write in doubt: the process died while the
request was out, and the alias may or may not have changed (the suite reads it to find out).
The first Lambda call of a process logs ``{"kind": "working", "pid": ...}``: startup is over.
Every status write is logged too, just before it is sent (``status-write``).

The fault points: after a successful ``UpdateAlias``, with probability
``CRASH_SUITE_KILL_AFTER_WRITE_P`` (``..._AFTER_FULL_WRITE_P`` when the write left no routing: a
promotion or a rollback), the handler logs a ``kill`` line (point ``after-alias-write``) and sends
SIGKILL to its own process. It runs right after the HTTP answer is parsed, in the worker thread
that made the call: the alias has changed and the rollout's status has not been written. That is
the moment a crash is most likely to make an operator repeat or skip a step. And before a
promotion or rollback is sent, with probability
``CRASH_SUITE_KILL_BEFORE_FULL_WRITE_P`` (point ``before-alias-write``): for a rollback, the
status saying so is already written (the operator writes it ahead), the alias not yet. Every
probability defaults to 0; ``CRASH_SUITE_SEED`` seeds the draws (one seed per launch).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3.session

LOG_ENV = "CRASH_SUITE_LOG"
KILL_P_ENV = "CRASH_SUITE_KILL_AFTER_WRITE_P"
KILL_FULL_P_ENV = "CRASH_SUITE_KILL_AFTER_FULL_WRITE_P"
KILL_BEFORE_FULL_P_ENV = "CRASH_SUITE_KILL_BEFORE_FULL_WRITE_P"
SEED_ENV = "CRASH_SUITE_SEED"
KILL_POINT = "after-alias-write"
KILL_BEFORE_POINT = "before-alias-write"


@dataclass(frozen=True)
class KillOdds:
    """How likely the operator kills itself at each fault point."""

    after_step: float = 0.0
    after_full: float = 0.0
    before_full: float = 0.0

    @classmethod
    def from_environment(cls) -> KillOdds:
        def odds(name: str) -> float:
            return float(os.environ.get(name, "0") or 0)

        return cls(odds(KILL_P_ENV), odds(KILL_FULL_P_ENV), odds(KILL_BEFORE_FULL_P_ENV))


class AliasWriteRecorder:
    """The ``UpdateAlias`` handlers: log the request (``sent``), log the write, maybe die."""

    def __init__(self, log_path: str, odds: KillOdds, seed: str) -> None:
        self._log_path = log_path
        self._odds = odds
        self._random = random.Random(seed)
        # Writes from several worker threads must not interleave their draws and lines.
        self._lock = threading.Lock()
        self._working = False

    def working(self, **_: Any) -> None:
        """``before-parameter-build`` of any Lambda call: the first one says the operator is at work."""
        with self._lock:
            if self._working:
                return
            self._working = True
            append_record(self._log_path, {"kind": "working", "time": time.time(), "pid": os.getpid()})

    def sent(self, params: Mapping[str, Any], **_: Any) -> None:
        """``before-parameter-build``: the request as the operator made it, before it can land."""
        name = str(params.get("FunctionName", ""))
        # A name, a partial ARN (<account>:function:<name>) or a full ARN: the name comes after
        # "function:" in both ARN forms.
        function = name.split("function:", 1)[1].split(":")[0] if "function:" in name else name
        routing = params.get("RoutingConfig") or {}
        record = {
            "kind": "sent",
            "function": function,
            "alias": str(params.get("Name", "")),
            "version": str(params.get("FunctionVersion", "")),
            "weights": {str(k): float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()},
            "time": time.time(),
            "pid": os.getpid(),
        }
        with self._lock:
            append_record(self._log_path, record)
            if not record["weights"]:
                self._maybe_die(self._odds.before_full, KILL_BEFORE_POINT)

    def _maybe_die(self, probability: float, point: str) -> None:
        """With ``probability``, log a kill at ``point`` and SIGKILL this process (lock held)."""
        if self._random.random() < probability:
            append_record(
                self._log_path, {"kind": "kill", "point": point, "time": time.time(), "pid": os.getpid()}
            )
            os.kill(os.getpid(), signal.SIGKILL)

    def __call__(self, http_response: Any, parsed: Mapping[str, Any], **_: Any) -> None:
        """``after-call``: for a successful answer, ``written``."""
        # after-call also fires for error answers, just before botocore raises them.
        if http_response.status_code < 300:
            self.written(parsed)

    def written(self, parsed: Mapping[str, Any]) -> None:
        """The write as the alias now is (``UpdateAlias``'s answer); then, maybe, the kill."""
        alias_arn = str(parsed.get("AliasArn", ""))
        # arn:aws:lambda:<region>:<account>:function:<name>:<alias>
        parts = alias_arn.split(":")
        function = parts[6] if len(parts) > 7 else ""
        routing = parsed.get("RoutingConfig") or {}
        record = {
            "kind": "write",
            "function": function,
            "alias": str(parsed.get("Name", parts[-1] if parts else "")),
            "version": str(parsed.get("FunctionVersion", "")),
            "weights": {str(k): float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()},
            "time": time.time(),
            "pid": os.getpid(),
        }
        with self._lock:
            append_record(self._log_path, record)
            full = not record["weights"]
            self._maybe_die(self._odds.after_full if full else self._odds.after_step, KILL_POINT)


def append_record(path: str, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync it: it must be on disk before a kill can follow.

    One ``write`` on an ``O_APPEND`` descriptor per line, so that the operator and the suite,
    appending to the same file from two processes, never interleave inside a line.
    """
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def install(recorder: AliasWriteRecorder) -> None:
    """Register ``recorder`` on every boto3 session created from now on (and so on its clients)."""
    original_init = boto3.session.Session.__init__

    def init(self: boto3.session.Session, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.events.register("before-parameter-build.lambda", recorder.working)
        self.events.register("before-parameter-build.lambda.UpdateAlias", recorder.sent)
        self.events.register("after-call.lambda.UpdateAlias", recorder)

    # The operator builds its session inside the package (AwsClients); patching the class is the
    # only hook that reaches it without changing the package.
    setattr(boto3.session.Session, "__init__", init)  # noqa: B010 - mypy refuses a method assignment


def record_status_writes(log_path: str) -> None:
    """Log every status write the operator makes (``status-write``), just before it is sent.

    With the alias writes around them, these lines show which status each process wrote for
    which alias state: what a crash between the two leaves behind.
    """
    from lambda_rollouts.kube import KopfApiWriter

    original = KopfApiWriter.write_status

    async def write_status(
        self: KopfApiWriter,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        previous: Mapping[str, Any],
    ) -> None:
        record = {
            "kind": "status-write",
            "rollout": name,
            "phase": status.get("phase"),
            "stable": status.get("stableVersion"),
            "canary": status.get("canaryVersion"),
            "weight": status.get("canaryWeight"),
            "step": status.get("currentStepIndex"),
            "observedGeneration": status.get("observedGeneration"),
            "message": status.get("message"),
            "time": time.time(),
            "pid": os.getpid(),
        }
        append_record(log_path, record)
        await original(self, namespace, name, status, previous)

    setattr(KopfApiWriter, "write_status", write_status)  # noqa: B010 - as in ``install``


def run_operator(args: Sequence[str]) -> int:
    """``lambda-rollouts <args>`` in this process, with the handlers if ``CRASH_SUITE_LOG`` is set."""
    log_path = os.environ.get(LOG_ENV)
    if log_path:
        odds = KillOdds.from_environment()
        install(AliasWriteRecorder(log_path, odds, os.environ.get(SEED_ENV, "")))
        record_status_writes(log_path)
    from lambda_rollouts.cli import main as cli_main

    try:
        cli_main(args=list(args), prog_name="lambda-rollouts")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def serve_forks() -> None:
    """Start operators on request, each a fresh process forked from this one; one at a time.

    Importing the operator (Kopf, boto3, pydantic) takes 1.5-3 s of CPU, longer than most of the
    suite's kill intervals; this process pays it once and every operator starts from a copy of
    it, already imported and not yet started (no thread, event loop or client exists before the
    fork). One JSON line per request on stdin: ``{"args": [...], "env": {...}, "output": path}``;
    it answers ``{"started": pid}`` and, once that process is gone, ``{"exited": pid, "code": n}``
    (``-9`` after a SIGKILL). End of input ends it.
    """
    # Imported for their cost, once, before any fork.
    for module in ("lambda_rollouts.cli", "lambda_rollouts.handlers", "lambda_rollouts.reconcile"):
        importlib.import_module(module)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # The child's output goes to the operator log; stdin and stdout are the protocol's.
                output = os.open(request["output"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.dup2(output, 1)
                os.dup2(output, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.environ.update(request.get("env", {}))
                code = run_operator(request["args"])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"started": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}), flush=True)


def main() -> None:
    if sys.argv[1:] == ["--fork-server"]:
        serve_forks()
        return
    sys.exit(run_operator(sys.argv[1:]))


if __name__ == "__main__":
    main()
