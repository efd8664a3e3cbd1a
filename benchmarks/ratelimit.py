"""CPU the token bucket spends per token while callers wait in line for it.

Run: ``.venv/bin/python benchmarks/ratelimit.py [--tokens 1600] [--rate 2000]``.

Callers take ``--tokens`` tokens in all from one ``TokenBucket`` refilling at ``--rate`` per second,
as the operator's calls do when a backlog drains through the rate limit: tasks on one event loop
(1, 32 and 1,000 of them: the first attempt of every AWS call waits there, one per rollout at
most) and threads (1, 8, 32: botocore's retries wait in the worker thread of their call). Prints
the wall time (bounded below by tokens / rate) and the process CPU per token: the cost of the
waiting itself, since taking a token does nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from lambda_rollouts.aws.ratelimit import TokenBucket


def run_threads(threads: int, tokens: int, rate: float) -> tuple[float, float]:
    bucket = TokenBucket(rate, 5)
    each = tokens // threads

    def take() -> None:
        for _ in range(each):
            bucket.acquire_blocking()

    workers = [threading.Thread(target=take) for _ in range(threads)]
    wall, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - wall, (time.process_time() - cpu) / (each * threads)


def run_tasks(tasks: int, tokens: int, rate: float) -> tuple[float, float]:
    bucket = TokenBucket(rate, 5)
    each = max(1, tokens // tasks)

    async def take() -> None:
        for _ in range(each):
            await bucket.acquire()

    async def all_of_them() -> None:
        await asyncio.gather(*(take() for _ in range(tasks)))

    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(all_of_them())
    return time.perf_counter() - wall, (time.process_time() - cpu) / (each * tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1600)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args()
    print(f"{args.tokens} tokens at {args.rate:g}/s (at least {args.tokens / args.rate:.2f} s)")
    print(f"{'callers':>14} {'wall s':>8} {'CPU per token':>14}")
    for tasks in (1, 32, 1000):
        wall, per_token = run_tasks(tasks, args.tokens, args.rate)
        print(f"{tasks:>8} tasks {wall:>8.2f} {1e6 * per_token:>11.0f} µs")
    for threads in (1, 8, 32):
        wall, per_token = run_threads(threads, args.tokens, args.rate)
        print(f"{threads:>6} threads {wall:>8.2f} {1e6 * per_token:>11.0f} µs")


if __name__ == "__main__":
    main()
