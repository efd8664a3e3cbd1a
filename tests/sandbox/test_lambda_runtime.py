"""The sandbox's Python runtime: a function's handler run from its .zip as Lambda runs it."""

from __future__ import annotations

import io
import json
import textwrap
import uuid
import zipfile
from typing import Any

import pytest

from lambda_rollouts.sandbox.lambda_runtime import FunctionCode, Invocation, PythonRuntime, can_run

ARN = "arn:aws:lambda:us-east-1:123456789012:function:checkout-api"


def package(files: dict[str, str]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, source in files.items():
            bundle.writestr(name, textwrap.dedent(source))
    return archive.getvalue()


def code(
    source: str, *, version: str = "1", handler: str = "index.handler", timeout: float = 3.0, sha: str = ""
) -> FunctionCode:
    return FunctionCode(
        function_name="checkout-api",
        version=version,
        function_arn=f"{ARN}:{version}",
        handler=handler,
        package=package({handler.rpartition(".")[0].replace(".", "/") + ".py": source}),
        code_sha256=sha or f"sha-of-{version}",
        timeout_seconds=timeout,
    )


def answer(invocation: Invocation) -> Any:
    return json.loads(invocation.payload)


def error(invocation: Invocation) -> dict[str, Any]:
    """The error payload without its request id (a new uuid each time)."""
    assert invocation.function_error == "Unhandled"
    report: dict[str, Any] = answer(invocation)
    assert report.pop("requestId")
    return report


@pytest.fixture
def runtime() -> PythonRuntime:
    return PythonRuntime()


def test_the_return_value_is_the_payload_and_the_event_and_context_are_lambdas(
    runtime: PythonRuntime,
) -> None:
    source = """\
        def handler(event, context):
            return {
                "event": event,
                "function": context.function_name,
                "version": context.function_version,
                "arn": context.invoked_function_arn,
                "memory": context.memory_limit_in_mb,
                "time left": 0 < context.get_remaining_time_in_millis() <= 3000,
            }
    """
    invocation = runtime.invoke(code(source, version="7"), {"path": "/cart"})
    assert invocation.function_error is None
    assert answer(invocation) == {
        "event": {"path": "/cart"},
        "function": "checkout-api",
        "version": "7",
        "arn": f"{ARN}:7",
        "memory": "128",
        "time left": True,
    }
    assert runtime.invoke(code("def handler(event, context):\n    pass\n"), {}).payload == b"null"


def test_a_handler_that_raises_gives_an_unhandled_function_error_with_lambdas_payload(
    runtime: PythonRuntime,
) -> None:
    source = """\
        def handler(event, context):
            check(event)

        def check(event):
            raise AssertionError(f"POST /cart answered {event['status']}")
    """
    invocation = runtime.invoke(code(source), {"status": 502})
    assert error(invocation) == {
        "errorMessage": "POST /cart answered 502",
        "errorType": "AssertionError",
        "stackTrace": [
            '  File "/var/task/index.py", line 2, in handler\n    check(event)\n',
            '  File "/var/task/index.py", line 5, in check\n'
            "    raise AssertionError(f\"POST /cart answered {event['status']}\")\n",
        ],
    }


@pytest.mark.parametrize(
    ("handler", "files", "expected"),
    [
        (
            "index.handler",
            {"other.py": "def handler(event, context): pass\n"},
            {
                "errorType": "Runtime.ImportModuleError",
                "errorMessage": "Unable to import module 'index': No module named 'index'",
            },
        ),
        (
            "index.main",
            {"index.py": "def handler(event, context): pass\n"},
            {
                "errorType": "Runtime.HandlerNotFound",
                "errorMessage": "Handler 'main' missing on module 'index'",
            },
        ),
        (
            "index",
            {"index.py": ""},
            {
                "errorType": "Runtime.MalformedHandlerName",
                "errorMessage": "Bad handler 'index': not enough values to unpack (expected 2, got 1)",
            },
        ),
        (
            "index.handler",
            {"index.py": "import not_installed_here\n"},
            {
                "errorType": "Runtime.ImportModuleError",
                "errorMessage": "Unable to import module 'index': No module named 'not_installed_here'",
            },
        ),
        (
            "index.handler",
            {"index.py": "def handler(event, context):\n    return {1, 2}\n"},
            {
                "errorType": "Runtime.MarshalError",
                "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
            },
        ),
        (
            "index.handler",
            {"index.py": "def handler(event, context):\n    raise SystemExit(3)\n"},
            {"errorType": "SystemExit", "errorMessage": "3"},
        ),
        (
            "src/app.handler",
            {"src/app.py": "def handler(event, context):\n    raise KeyError('cart')\n"},
            {"errorType": "KeyError", "errorMessage": "'cart'"},
        ),
    ],
)
def test_the_runtimes_own_failures_are_reported_as_lambda_reports_them(
    runtime: PythonRuntime, handler: str, files: dict[str, str], expected: dict[str, str]
) -> None:
    function = FunctionCode(
        function_name="checkout-api",
        version="1",
        function_arn=f"{ARN}:1",
        handler=handler,
        package=package(files),
        code_sha256="sha",
        timeout_seconds=3.0,
    )
    report = error(runtime.invoke(function, {}))
    report.pop("stackTrace")
    assert report == expected


def test_a_syntax_error_is_a_user_code_syntax_error(runtime: PythonRuntime) -> None:
    report = error(runtime.invoke(code("def handler(event, context)\n    pass\n"), {}))
    assert report["errorType"] == "Runtime.UserCodeSyntaxError"
    assert report["errorMessage"].startswith("Syntax error in module 'index': ")


def test_each_version_runs_in_its_own_warm_namespace(runtime: PythonRuntime) -> None:
    # Two versions, same module name, module-level state: neither sees the other's.
    counting = """\
        import itertools
        RELEASE = {release}
        calls = itertools.count(1)

        def handler(event, context):
            return [RELEASE, next(calls)]
    """
    first, second = (
        code(counting.format(release=1), version="1"),
        code(counting.format(release=2), version="2"),
    )
    results = [answer(runtime.invoke(version, {})) for version in (first, first, second, first, second)]
    assert results == [[1, 1], [1, 2], [2, 1], [1, 3], [2, 2]]
    # New code under the same ARN ($LATEST updated) is a new environment.
    updated = code(counting.format(release=3), version="1", sha="another-sha")
    assert answer(runtime.invoke(updated, {})) == [3, 1]
    runtime.clear()
    assert answer(runtime.invoke(first, {})) == [1, 1]


def test_a_handler_past_its_timeout_times_out_and_its_environment_starts_afresh(
    runtime: PythonRuntime,
) -> None:
    source = """\
        import itertools
        import threading
        calls = itertools.count(1)

        def handler(event, context):
            if event.get("hang"):
                threading.Event().wait(5)
            return next(calls)
    """
    function = code(source, timeout=1.0)
    assert answer(runtime.invoke(function, {})) == 1
    timed_out = runtime.invoke(function, {"hang": True})
    assert timed_out.function_error == "Unhandled"
    report = answer(timed_out)
    request_id = str(uuid.UUID(report["errorMessage"].split()[1]))
    assert report == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    # Lambda ends an environment whose invocation timed out: the module is loaded again.
    assert answer(runtime.invoke(function, {})) == 1


def test_a_module_that_fails_to_load_is_loaded_again_next_time(runtime: PythonRuntime) -> None:
    source = """\
        import os
        if not os.environ.get("LAMBDA_ROLLOUTS_TEST_NEVER_SET"):
            raise RuntimeError("no configuration")

        def handler(event, context):
            return "ok"
    """
    function = code(source)
    for _ in range(2):
        report = error(runtime.invoke(function, {}))
        assert (report["errorType"], report["errorMessage"]) == ("RuntimeError", "no configuration")
        assert report["stackTrace"] == [
            '  File "/var/task/index.py", line 3, in <module>\n    raise RuntimeError("no configuration")\n'
        ]


@pytest.mark.parametrize(
    ("runtime_name", "package_type", "contents", "expected"),
    [
        ("python3.12", "Zip", package({"index.py": ""}), True),
        ("python3.9", None, package({"index.py": ""}), True),
        ("nodejs20.x", "Zip", package({"index.js": ""}), False),
        ("python3.12", "Image", b"", False),
        ("python3.12", "Zip", b"not a zip", False),
        (None, "Zip", package({"index.py": ""}), False),
    ],
)
def test_can_run_python_zip_packages_only(
    runtime_name: str | None, package_type: str | None, contents: bytes, expected: bool
) -> None:
    assert can_run(runtime_name, package_type, contents) is expected
