"""CPU the token bucket spends per token while threads wait in line for it.

Run: ``.venv/bin/python benchmarks/ratelimit.py [--tokens 1600] [--rate 2000]``.

Threads (1, 8, 32: ``LAMBDA_ROLLOUTS_AWS_MAX_CONCURRENT_CALLS`` is 32 by default) take
``--tokens`` tokens in all from one ``TokenBucket`` refilling at ``--rate`` per second, as the
operator's worker threads do when a backlog of AWS calls drains through the rate limit. Prints the
wall time (bounded below by tokens / rate) and the process CPU per token: the cost of the waiting
itself, since taking a token does nothing else.
"""

from __future__ import annotations

import argparse
import threading
import time

from lambda_rollouts.aws.ratelimit import TokenBucket


def run(threads: int, tokens: int, rate: float) -> tuple[float, float]:
    bucket = TokenBucket(rate, 5)
    each = tokens // threads

    def take() -> None:
        for _ in range(each):
            bucket.acquire()

    workers = [threading.Thread(target=take) for _ in range(threads)]
    wall, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - wall, (time.process_time() - cpu) / (each * threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1600)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args()
    print(f"{args.tokens} tokens at {args.rate:g}/s (at least {args.tokens / args.rate:.2f} s)")
    print(f"{'threads':>8} {'wall s':>8} {'CPU per token':>14}")
    for threads in (1, 8, 32):
        wall, per_token = run(threads, args.tokens, args.rate)
        print(f"{threads:>8} {wall:>8.2f} {1e6 * per_token:>11.0f} µs")


if __name__ == "__main__":
    main()
