"""Client-side pacing of AWS API requests: token buckets per (account, region, service).

Why: Lambda's control plane (GetAlias, UpdateAlias, ListVersionsByFunction, PublishVersion and most
other calls) allows 15 requests per second per account and region, and that quota is shared by
every caller in the account: deploy pipelines, consoles, other controllers. An operator driving
many rollouts in one account must keep to a share of it, and must never answer throttling with a
burst of retries that makes it worse. So every HTTP attempt, botocore's retries included, takes a
token from the bucket of its (account, region, service) before it is sent (``AwsClients`` hooks
botocore's ``before-send``, which fires once per attempt).

Contract:
- ``TokenBucket(rate, burst)`` holds at most ``burst`` tokens, starts full and refills at ``rate``
  tokens per second. ``acquire()`` takes one token, blocking the calling thread until one is free,
  and returns how long it waited (by the bucket's clock); ``try_acquire()`` takes one only if one
  is free now and nobody is in line, and never blocks (for callers on an event loop, which wait
  in a worker thread with ``acquire`` when it says no). Callers are served in arrival order, so
  none starves. Waiting never spins: the first caller in line waits for the time its token needs
  (a timed wait on the bucket's condition variable), each of the others on a condition of its own,
  woken only when its turn comes (with 32 threads in line, waking them all for every token cost
  more CPU than the calls). A caller that leaves the line by an exception gives its place up.
  Thread-safe. ``clock`` (monotonic seconds) and ``sleeper`` are injectable: given a sleeper, the
  first caller in line waits by calling ``sleeper(seconds)`` with the lock released instead of the
  timed wait, so a sleeper that advances a fake clock makes the pacing instant and deterministic.
- ``Limit(rate, burst)``: a rate or a burst of 0 or less means "not paced".
- ``RateLimiter`` keeps one bucket per key ``(account, region, service)``, made on first use with
  the service's ``Limit`` (``limits[service]``, else ``default``); unpaced limits get no bucket.
  ``acquire(account, region, service, operation)`` (and ``try_acquire``, never blocking) takes a
  token from that bucket, except for
  operations outside the quotas it paces (``UNPACED_OPERATIONS``: Lambda's ``Invoke``, a data-plane
  call with limits of its own), and counts it in ``granted`` and ``waited`` (seconds) per key.
- ``RateLimiter.from_settings`` applies the operator's settings (see ``Settings``):
  ``lambda``: ``aws_requests_per_second`` / ``aws_burst``, the control-plane quota's share;
  ``sts``: the same numbers in a bucket of its own (STS has quotas of its own, far above what the
  operator needs: it assumes each role about once an hour); ``cloudwatch``:
  ``aws_cloudwatch_requests_per_second`` / ``aws_cloudwatch_burst``, a separate bucket so metric
  reads (GetMetricData: 50 TPS of its own) never delay alias writes, nor the other way round; any
  other service: the control-plane numbers.
- ``account_of(role_arn)``: the account a role belongs to (the ARN's fifth field), or ``"default"``
  without a role: requests made with the operator's own credentials.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambda_rollouts.settings import Settings

Clock = Callable[[], float]
Sleeper = Callable[[float], None]
# (account, region, service)
BucketKey = tuple[str, str, str]

DEFAULT_ACCOUNT = "default"
# Operations that do not count against the quotas paced here, by service.
UNPACED_OPERATIONS: Mapping[str, frozenset[str]] = {
    # Invoke is Lambda's data plane: bounded by concurrency, not by the control plane's 15/s.
    "lambda": frozenset({"Invoke", "InvokeAsync", "InvokeWithResponseStream"}),
}
# Float refills can land a hair below a whole token; without this, the head of the line could ask
# its sleeper for a wait too small to move a float clock, forever.
_EPSILON = 1e-9


def account_of(role_arn: str | None) -> str:
    """The account a role's requests are made in; ``"default"`` for the operator's own credentials.

    A malformed ARN is its own key, so that it never shares the operator's own bucket.
    """
    if not role_arn:
        return DEFAULT_ACCOUNT
    parts = role_arn.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[4]:
        return parts[4]
    return role_arn


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked; see the module docstring."""

    def __init__(
        self, rate: float, burst: int, *, clock: Clock = time.monotonic, sleeper: Sleeper | None = None
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs a positive rate and burst, not {rate}/s and {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleeper = sleeper
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        # Callers behind the first in line, by ticket; each woken alone when its turn comes.
        self._waiting: dict[int, threading.Condition] = {}
        self._tokens = float(burst)
        self._updated = clock()
        # Arrival order: each caller takes a ticket; the one whose ticket is served is first in line.
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    @property
    def available(self) -> float:
        """Tokens in the bucket now (fractional while refilling)."""
        with self._condition:
            self._refill(self._clock())
            return self._tokens

    def acquire(self) -> float:
        """Take one token, blocking until one is free; the seconds waited (by the bucket's clock)."""
        with self._condition:
            started = self._clock()
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                while True:
                    if ticket != self._serving:
                        self._waiting.setdefault(ticket, threading.Condition(self._lock)).wait()
                        continue
                    now = self._clock()
                    self._refill(now)
                    if self._tokens >= 1 - _EPSILON:
                        self._tokens = max(0.0, self._tokens - 1)
                        self._next_in_line()
                        return max(0.0, now - started)
                    self._wait((1 - self._tokens) / self.rate)
            except BaseException:
                # Nobody else may wait behind a caller that is gone.
                self._waiting.pop(ticket, None)
                if ticket == self._serving:
                    self._next_in_line()
                else:
                    self._abandoned.add(ticket)
                raise

    def try_acquire(self) -> bool:
        """Take one token if one is free now and nobody is in line; never blocks."""
        with self._condition:
            if self._next_ticket != self._serving:
                return False
            self._refill(self._clock())
            if self._tokens < 1 - _EPSILON:
                return False
            self._tokens = max(0.0, self._tokens - 1)
            return True

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now

    def _next_in_line(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        waiter = self._waiting.pop(self._serving, None)
        if waiter is not None:
            waiter.notify()

    def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` for the next token, with the lock released (called with it held)."""
        if self._sleeper is None:
            self._condition.wait(seconds)
            return
        self._condition.release()
        try:
            self._sleeper(seconds)
        finally:
            self._condition.acquire()


@dataclass(frozen=True)
class Limit:
    """A bucket's refill rate (tokens per second) and size; 0 or less in either: not paced."""

    rate: float
    burst: int

    @property
    def paced(self) -> bool:
        return self.rate > 0 and self.burst > 0


UNPACED = Limit(rate=0.0, burst=0)


class RateLimiter:
    """Token buckets per (account, region, service); see the module docstring."""

    def __init__(
        self,
        limits: Mapping[str, Limit] | None = None,
        default: Limit = UNPACED,
        *,
        clock: Clock = time.monotonic,
        sleeper: Sleeper | None = None,
    ) -> None:
        self._limits = dict(limits or {})
        self._default = default
        self._clock = clock
        self._sleeper = sleeper
        self._lock = threading.Lock()
        self._buckets: dict[BucketKey, TokenBucket] = {}
        self.granted: Counter[BucketKey] = Counter()
        self.waited: defaultdict[BucketKey, float] = defaultdict(float)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Clock = time.monotonic, sleeper: Sleeper | None = None
    ) -> RateLimiter:
        control_plane = Limit(settings.aws_requests_per_second, settings.aws_burst)
        limits = {
            "lambda": control_plane,
            "sts": control_plane,
            "cloudwatch": Limit(settings.aws_cloudwatch_requests_per_second, settings.aws_cloudwatch_burst),
        }
        return cls(limits, default=control_plane, clock=clock, sleeper=sleeper)

    def limit_for(self, service: str) -> Limit:
        return self._limits.get(service, self._default)

    def bucket(self, account: str, region: str, service: str) -> TokenBucket | None:
        """The bucket of a key, made on first use; None when the service is not paced."""
        limit = self.limit_for(service)
        if not limit.paced:
            return None
        key = (account, region, service)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(limit.rate, limit.burst, clock=self._clock, sleeper=self._sleeper)
                self._buckets[key] = bucket
            return bucket

    def acquire(self, account: str, region: str, service: str, operation: str) -> float:
        """Take a token for one attempt of ``operation``, blocking until one is free; seconds waited.

        Returns 0 at once when the service or the operation is not paced.
        """
        bucket = self._bucket_for(account, region, service, operation)
        if bucket is None:
            return 0.0
        waited = bucket.acquire()
        self._granted((account, region, service), waited)
        return waited

    def try_acquire(self, account: str, region: str, service: str, operation: str) -> bool:
        """Take a token for one attempt if one is free now (True), without blocking; see ``acquire``.

        True at once when the service or the operation is not paced. False leaves the caller's
        place to ``acquire``, which waits in line behind the callers already waiting.
        """
        bucket = self._bucket_for(account, region, service, operation)
        if bucket is None:
            return True
        if not bucket.try_acquire():
            return False
        self._granted((account, region, service), 0.0)
        return True

    def _bucket_for(self, account: str, region: str, service: str, operation: str) -> TokenBucket | None:
        """The bucket an attempt of ``operation`` takes its token from; None when it is not paced."""
        if operation in UNPACED_OPERATIONS.get(service, frozenset()):
            return None
        return self.bucket(account, region, service)

    def _granted(self, key: BucketKey, waited: float) -> None:
        with self._lock:
            self.granted[key] += 1
            self.waited[key] += waited
