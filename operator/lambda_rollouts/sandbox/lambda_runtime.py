"""Python handlers of the sandbox's functions, run in this process as Lambda's Python runtime runs them.

Contract:
- ``FunctionCode`` is one version of a function as the emulator holds it: its qualified ARN, its
  handler (``module.function``, the module a file of the package: ``dir.app`` is ``dir/app.py``),
  its deployment package (a .zip) and its timeout. ``can_run(runtime, package_type, package)``
  says whether a function is one this module runs: a ``python*`` runtime and a .zip package.
- ``PythonRuntime.invoke(code, event)`` runs the handler on the decoded JSON ``event`` with a
  Lambda-like context, and returns an ``Invocation`` with Lambda's answer: the return value as
  JSON is the payload; an exception (raised by the handler, by its module while loading, or by
  the runtime: no such module or handler, a syntax error, a return value that is not JSON) gives
  ``function_error="Unhandled"`` and the payload Lambda's Python runtime writes (``errorMessage``,
  ``errorType``, ``requestId``, ``stackTrace``); a handler still running after the function's
  timeout gives ``Sandbox.Timedout`` (Lambda's ``Task timed out after N seconds``).
- Each version's handler module is loaded from its package once, into a module namespace of its
  own (never in ``sys.modules``, so two versions' ``index`` never meet), and kept warm for the
  next invocations of that version, as a Lambda execution environment is: module-level state
  persists between them. An environment whose invocation timed out, or whose module failed to
  load, is not reused. ``clear()`` drops every environment.
- Every invocation runs in a daemon thread of its own, waited for up to the timeout. A handler
  that runs past it is left to finish in the background (a thread cannot be stopped). The code
  runs with this process's rights: the sandbox runs its users' own code, not untrusted code.
"""

from __future__ import annotations

import io
import json
import linecache
import threading
import time
import traceback
import types
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

UNHANDLED: Final = "Unhandled"
# Where Lambda unpacks a .zip package: the file names in stack traces, as Lambda shows them.
TASK_ROOT: Final = "/var/task"
_DEFAULT_MEMORY_MB: Final = 128

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class FunctionCode:
    """One version of a function: what running it needs."""

    function_name: str
    version: str  # "$LATEST" or a published version's number
    function_arn: str  # qualified with the version
    handler: str
    package: bytes  # the .zip
    code_sha256: str
    timeout_seconds: float
    memory_mb: int = _DEFAULT_MEMORY_MB

    @property
    def environment_key(self) -> tuple[str, str]:
        return self.function_arn, self.code_sha256


@dataclass(frozen=True)
class Invocation:
    """Lambda's answer to one synchronous invocation."""

    payload: bytes
    function_error: str | None
    duration_ms: float

    @property
    def errored(self) -> bool:
        return self.function_error is not None


class LambdaContext:
    """The ``context`` argument of a Python handler: the attributes Lambda's runtime gives it."""

    def __init__(self, code: FunctionCode, request_id: str, deadline: float) -> None:
        self.function_name = code.function_name
        self.function_version = code.version
        self.invoked_function_arn = code.function_arn
        self.memory_limit_in_mb = str(code.memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{code.function_name}"
        self.log_stream_name = f"[{code.version}]{request_id.replace('-', '')}"
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _RuntimeFaultError(Exception):
    """A failure Lambda's runtime reports under its own error type (``Runtime.*``)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def can_run(runtime: str | None, package_type: str | None, package: bytes) -> bool:
    """Whether ``PythonRuntime`` runs a function with this runtime, package type and package."""
    return (
        (runtime or "").startswith("python")
        and (package_type or "Zip") == "Zip"
        and zipfile.is_zipfile(io.BytesIO(package))
    )


class PythonRuntime:
    """Runs handlers from .zip packages; see the module docstring for the contract."""

    def __init__(self) -> None:
        self._environments: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._environments.clear()

    def invoke(self, code: FunctionCode, event: Any) -> Invocation:
        """Run ``code``'s handler on ``event`` (already decoded from JSON); Lambda's answer."""
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        deadline = started + code.timeout_seconds
        answer: list[tuple[bytes, str | None]] = []

        def run() -> None:
            answer.append(self._run(code, event, LambdaContext(code, request_id, deadline), request_id))

        worker = threading.Thread(target=run, name=f"lambda {code.function_name}:{code.version}", daemon=True)
        worker.start()
        worker.join(code.timeout_seconds)
        duration_ms = (time.monotonic() - started) * 1000
        if not answer:
            # Lambda ends an environment whose invocation timed out: the next one starts afresh.
            self._forget(code)
            timed_out = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": (
                    f"RequestId: {request_id} Error: Task timed out after {code.timeout_seconds:.2f} seconds"
                ),
            }
            return Invocation(json.dumps(timed_out).encode(), UNHANDLED, duration_ms)
        payload, function_error = answer[0]
        return Invocation(payload, function_error, duration_ms)

    def _run(
        self, code: FunctionCode, event: Any, context: LambdaContext, request_id: str
    ) -> tuple[bytes, str | None]:
        try:
            handler = self._environment(code)
            result = handler(event, context)
        except _RuntimeFaultError as fault:
            return _error_payload(fault.error_type, str(fault), request_id, []), UNHANDLED
        except BaseException as exc:
            # SystemExit and KeyboardInterrupt too: a handler must not stop the sandbox.
            return _error_payload(type(exc).__name__, str(exc), request_id, _user_frames(exc)), UNHANDLED
        try:
            return json.dumps(result).encode(), None
        except (TypeError, ValueError) as exc:
            message = f"Unable to marshal response: {exc}"
            return _error_payload("Runtime.MarshalError", message, request_id, []), UNHANDLED

    def _environment(self, code: FunctionCode) -> Handler:
        key = code.environment_key
        with self._lock:
            handler = self._environments.get(key)
        if handler is None:
            handler = load_handler(code)
            with self._lock:
                handler = self._environments.setdefault(key, handler)
        return handler

    def _forget(self, code: FunctionCode) -> None:
        with self._lock:
            self._environments.pop(code.environment_key, None)


def load_handler(code: FunctionCode) -> Handler:
    """The handler of ``code``, its module run in a namespace of its own; raises what Lambda reports."""
    module_path, _, function = code.handler.rpartition(".")
    if not module_path or not function:
        raise _RuntimeFaultError(
            "Runtime.MalformedHandlerName",
            f"Bad handler '{code.handler}': not enough values to unpack (expected 2, got 1)",
        )
    filename = module_path.replace(".", "/") + ".py"
    try:
        with zipfile.ZipFile(io.BytesIO(code.package)) as archive:
            source = archive.read(filename)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise _RuntimeFaultError(
            "Runtime.ImportModuleError",
            f"Unable to import module '{module_path}': No module named '{module_path}'",
        ) from exc
    module = types.ModuleType(module_path)
    module.__file__ = f"{TASK_ROOT}/{filename}"
    # Where stack traces read the module's lines: every version has its own /var/task/index.py.
    module.__loader__ = _Source(source.decode("utf-8", errors="replace"))  # type: ignore[assignment]
    try:
        compiled = compile(source, module.__file__, "exec")
    except SyntaxError as exc:
        raise _RuntimeFaultError(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_path}': {exc}"
        ) from exc
    try:
        exec(compiled, module.__dict__)
    except ImportError as exc:
        raise _RuntimeFaultError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_path}': {exc}"
        ) from exc
    handler = getattr(module, function, None)
    if not callable(handler):
        raise _RuntimeFaultError(
            "Runtime.HandlerNotFound", f"Handler '{function}' missing on module '{module_path}'"
        )
    return handler  # type: ignore[no-any-return]


def _error_payload(error_type: str, message: str, request_id: str, stack: list[str]) -> bytes:
    report = {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": stack}
    return json.dumps(report).encode()


class _Source:
    """A module's source, as the loader of a module loaded from a package in memory."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()

    def line(self, number: int) -> str:
        return self.lines[number - 1].strip() if 0 < number <= len(self.lines) else ""


def _user_frames(exc: BaseException) -> list[str]:
    """The traceback's lines from the function's own code on, as Lambda's ``stackTrace`` lists them."""
    frames: list[traceback.FrameSummary] = []
    for frame, number in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        # The first frames are this module's, which called the handler or ran its module.
        if not frames and filename == __file__:
            continue
        loader = frame.f_globals.get("__loader__")
        if isinstance(loader, _Source) and filename == frame.f_globals.get("__file__"):
            line = loader.line(number)
        else:
            line = linecache.getline(filename, number).strip()
        frames.append(traceback.FrameSummary(filename, number, frame.f_code.co_name, line=line))
    return traceback.format_list(frames)
