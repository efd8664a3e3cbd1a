"""Client CPU of one Lambda call: boto3's client against the operator's own HTTP client.

Run: ``.venv/bin/python benchmarks/boto_call.py [--calls 500]``.

Starts ``MotoSandbox`` (moto over keep-alive HTTP) in a child process, seeds the demo function,
then makes ``--calls`` ``GetAlias`` and ``GetFunctionConfiguration`` calls from this process, one
after the other, with each client:

- boto3: a client built as ``AwsClients`` builds its clients (``default_client_config``), called
  in this thread (the operator calls it in a worker thread, which costs a hand-off more);
- http: ``LambdaHttpClient`` (``httpclient.HttpClient``, SigV4 of its own), the operator's
  transport for Lambda's alias and version calls, awaited on an event loop in this thread.

Prints the CPU time of this thread per call (``time.thread_time``: the emulator's work is in the
other process; the event loop runs in this thread), the wall time per call, the ratio of the two
clients' CPU, and how many TCP connections the calls opened. Then the HTTP layer alone: the same
signed ``GetAlias`` request sent with aiohttp (as the operator did before ``httpclient``) and with
``HttpClient``, and the ratio of their CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import urllib3.util.connection
from botocore import xform_name
from yarl import URL

from lambda_rollouts.aws.clients import AwsClients, default_client_config
from lambda_rollouts.aws.lambda_http import LambdaHttpClient, signed_host
from lambda_rollouts.aws.ratelimit import RateLimiter
from lambda_rollouts.aws.sigv4 import SignedRequest, SigningCredentials, sign
from lambda_rollouts.httpclient import HttpClient
from lambda_rollouts.sandbox.aws import MotoSandbox, sandbox_session, seed_demo_function
from lambda_rollouts.settings import Settings

REGION = "us-east-1"
FUNCTION = "checkout-api"
WARM_UP = 20
PARAMS: dict[str, dict[str, str]] = {
    "GetAlias": {"FunctionName": FUNCTION, "Name": "live"},
    "GetFunctionConfiguration": {"FunctionName": FUNCTION, "Qualifier": "2"},
}


def serve(endpoints: Any, stop: Any) -> None:
    with MotoSandbox() as sandbox:
        seed_demo_function(sandbox.endpoint_url, REGION)
        endpoints.put(sandbox.endpoint_url)
        stop.wait()


def measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """CPU and wall milliseconds per call of ``call``, after a warm-up (model loaded, connection open)."""
    for _ in range(WARM_UP):
        call()
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(calls):
        call()
    return 1000 * (time.thread_time() - cpu) / calls, 1000 * (time.perf_counter() - wall) / calls


def transports(loop: asyncio.AbstractEventLoop, endpoint: str, calls: int) -> None:
    """The HTTP layer alone: one signed ``GetAlias`` request over aiohttp and over ``HttpClient``.

    The same bytes each time (signed once: moto does not check signatures), with the timeouts the
    operator sets, so the rows differ only by the client that sends them and reads the answer.
    """
    url = URL(endpoint)
    path = f"/2015-03-31/functions/{FUNCTION}/aliases/live"
    request = SignedRequest("GET", signed_host(url), path)
    credentials = SigningCredentials("testing", "testing", "testing")
    headers = sign(request, credentials, region=REGION, service="lambda", now=datetime.now(UTC))

    async def open_clients() -> tuple[aiohttp.ClientSession, HttpClient]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=20)
        return aiohttp.ClientSession(timeout=timeout, auto_decompress=False), HttpClient()

    session, client = loop.run_until_complete(open_clients())

    async def over_aiohttp() -> bytes:
        async with session.get(endpoint + path, headers=headers) as response:
            return await response.read()

    async def over_httpclient() -> bytes:
        return (await client.request("GET", endpoint + path, headers)).body

    print(f"\n{'the HTTP layer alone':<26} {'client':<10} {'CPU ms':>7} {'wall ms':>8}")
    rows = {}
    for name, send in (("aiohttp", over_aiohttp), ("HttpClient", over_httpclient)):
        rows[name] = measure(lambda send=send: loop.run_until_complete(send()), calls)
        print(f"{'GetAlias, signed once':<26} {name:<10} {rows[name][0]:>7.2f} {rows[name][1]:>8.2f}")
    print(f"{'':<26} aiohttp / HttpClient CPU: {rows['aiohttp'][0] / rows['HttpClient'][0]:.1f}x")
    loop.run_until_complete(session.close())
    loop.run_until_complete(client.close())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    endpoints: Any = multiprocessing.Queue()
    stop: Any = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(endpoints, stop), daemon=True)
    server.start()
    opened = [0]
    original = urllib3.util.connection.create_connection

    def counting(*positional: Any, **named: Any) -> Any:
        opened[0] += 1
        return original(*positional, **named)

    urllib3.util.connection.create_connection = counting  # type: ignore[assignment]
    loop = asyncio.new_event_loop()
    try:
        endpoint = endpoints.get(timeout=60)
        boto = sandbox_session(REGION).client(
            "lambda", region_name=REGION, endpoint_url=endpoint, config=default_client_config()
        )
        settings = Settings(default_region=REGION, aws_endpoint_url=endpoint)
        clients = AwsClients(settings, lambda: sandbox_session(REGION), rate_limiter=RateLimiter())
        http = LambdaHttpClient(clients)

        def on_loop(operation: str) -> Callable[[], object]:
            def call() -> object:
                coroutine: Awaitable[object] = http.call(operation, REGION, None, **PARAMS[operation])
                return loop.run_until_complete(coroutine)

            return call

        print(f"{'call':<26} {'client':<7} {'CPU ms':>7} {'wall ms':>8}")
        for operation, params in PARAMS.items():
            method = getattr(boto, xform_name(operation))
            boto_cpu, boto_wall = measure(lambda method=method, params=params: method(**params), args.calls)
            http_cpu, http_wall = measure(on_loop(operation), args.calls)
            print(f"{operation:<26} {'boto3':<7} {boto_cpu:>7.2f} {boto_wall:>8.2f}")
            ratio = boto_cpu / http_cpu
            print(f"{'':<26} {'http':<7} {http_cpu:>7.2f} {http_wall:>8.2f}   boto3 / http: {ratio:.1f}x")
        print(f"TCP connections opened by boto3's {2 * (args.calls + WARM_UP)} calls: {opened[0]}")
        loop.run_until_complete(http.close())
        transports(loop, endpoint, args.calls)
    finally:
        loop.close()
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
