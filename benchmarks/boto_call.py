"""Client CPU of one boto3 Lambda call, against the sandbox's AWS emulator in another process.

Run: ``.venv/bin/python benchmarks/boto_call.py [--calls 500]``.

Starts ``MotoSandbox`` (moto over keep-alive HTTP) in a child process, seeds the demo function,
then makes ``--calls`` ``GetAlias`` and ``GetFunctionConfiguration`` calls from this process with a
client built as the operator builds its clients (``default_client_config``). Prints the CPU time of
this process's thread per call (``time.thread_time``: the emulator's work is in the other
process) and the wall time per call, and how many TCP connections the calls opened.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

import urllib3.util.connection

from lambda_rollouts.aws.clients import default_client_config
from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session, seed_demo_function

REGION = "us-east-1"


def serve(endpoints: Any, stop: Any) -> None:
    with MotoSandbox() as sandbox:
        seed_demo_function(sandbox.endpoint_url, REGION)
        endpoints.put(sandbox.endpoint_url)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    endpoints: Any = multiprocessing.Queue()
    stop: Any = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(endpoints, stop), daemon=True)
    server.start()
    try:
        endpoint = endpoints.get(timeout=60)
        client = sandbox_session(REGION).client(
            "lambda", region_name=REGION, endpoint_url=endpoint, config=default_client_config()
        )
        calls = {
            "GetAlias": lambda: client.get_alias(FunctionName="checkout-api", Name="live"),
            "GetFunctionConfiguration": lambda: client.get_function_configuration(
                FunctionName="checkout-api", Qualifier="2"
            ),
        }
        opened = [0]
        original = urllib3.util.connection.create_connection

        def counting(*positional: Any, **named: Any) -> Any:
            opened[0] += 1
            return original(*positional, **named)

        urllib3.util.connection.create_connection = counting  # type: ignore[assignment]
        print(f"{'call':<26} {'CPU ms':>7} {'wall ms':>8}")
        for name, call in calls.items():
            for _ in range(20):
                call()  # warm: the model loaded, the connection open
            cpu, wall = time.thread_time(), time.perf_counter()
            for _ in range(args.calls):
                call()
            cpu_ms = 1000 * (time.thread_time() - cpu) / args.calls
            wall_ms = 1000 * (time.perf_counter() - wall) / args.calls
            print(f"{name:<26} {cpu_ms:>7.2f} {wall_ms:>8.2f}")
        print(f"TCP connections opened by {2 * (args.calls + 20)} calls: {opened[0]}")
    finally:
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
