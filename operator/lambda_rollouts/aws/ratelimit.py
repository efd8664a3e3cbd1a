"""Client-side pacing of AWS API requests: token buckets per (account, region, service).

Why: Lambda's control plane (GetAlias, UpdateAlias, ListVersionsByFunction, PublishVersion and most
other calls) allows 15 requests per second per account and region, and that quota is shared by
every caller in the account: deploy pipelines, consoles, other controllers. An operator driving
many rollouts in one account must keep to a share of it, and must never answer throttling with a
burst of retries that makes it worse. So every HTTP attempt, botocore's retries included, takes a
token from the bucket of its (account, region, service) before it is sent (``AwsClients`` says
where each attempt takes it).

Contract:
- ``TokenBucket(rate, burst)`` holds at most ``burst`` tokens, starts full and refills at ``rate``
  tokens per second. Callers wait in one line and are served in arrival order, so none starves:
  ``try_acquire()`` takes a token only if one is free now and nobody is in line, and never blocks
  (any thread); ``await acquire()`` takes one, waiting on the running event loop, and returns how
  long it waited (by the bucket's clock); ``acquire_blocking(cancel)`` is the same for a thread
  that must wait itself (it blocks that thread only). ``refund()`` gives back a token that was
  never used (the call it was for was cancelled before it was sent), never above ``burst``.
- Waiting holds no lock and never spins: the first in line waits for the time its token needs
  (``asyncio.sleep`` on its loop, a timed wait in its thread), each of the others until it is
  woken because its turn came. The lock guards the counters only, for microseconds.
- Cancellation: a task cancelled while it waits in ``acquire`` leaves the line at once and takes
  no token; whoever was behind it moves up and gets the token it would have had.
  ``acquire_blocking(cancel)`` leaves the line and raises ``PacingCancelledError`` as soon as
  ``cancel`` (a ``Cancellation``, set from any thread) is set. A caller that leaves the line by any
  exception gives its place up.
- ``clock`` (monotonic seconds), ``sleep`` (async: the first in line's wait on a loop) and
  ``sleeper`` (the same in a thread) are injectable, so that tests can make the pacing instant
  and deterministic: a sleeper that advances a fake clock.
- ``Limit(rate, burst)``: a rate or a burst of 0 or less means "not paced".
- ``RateLimiter`` keeps one bucket per key ``(account, region, service)``, made on first use with
  the service's ``Limit`` (``limits[service]``, else ``default``); unpaced limits get no bucket.
  ``paces(service, operation)`` says whether an attempt takes a token at all: not for operations
  outside the quotas paced here (``UNPACED_OPERATIONS``: Lambda's ``Invoke``, a data-plane call
  with limits of its own; STS's ``GetCallerIdentity``, asked once per credential source to learn
  the account that keys the buckets). ``acquire``, ``acquire_blocking`` and ``try_acquire`` take
  a token from the key's bucket (at once when not paced) and count it in ``granted`` and
  ``waited`` (seconds) per key.
- ``RateLimiter.from_settings`` applies the operator's settings (see ``Settings``):
  ``lambda``: ``aws_requests_per_second`` / ``aws_burst``, the control-plane quota's share;
  ``sts``: the same numbers in a bucket of its own (STS has quotas of its own, far above what the
  operator needs: it assumes each role about once an hour); ``cloudwatch``:
  ``aws_cloudwatch_requests_per_second`` / ``aws_cloudwatch_burst``, a separate bucket so metric
  reads (GetMetricData: 50 TPS of its own) never wait for alias writes, nor the other way round;
  any other service: the control-plane numbers.
- ``account_of_role(role_arn)``: the account a role belongs to (the ARN's fifth field); a
  malformed ARN is its own key, so that it never shares a real account's bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambda_rollouts.settings import Settings

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Sleeper = Callable[[float], None]
# (account, region, service)
BucketKey = tuple[str, str, str]

# Operations that do not count against the quotas paced here, by service.
UNPACED_OPERATIONS: Mapping[str, frozenset[str]] = {
    # Invoke is Lambda's data plane: bounded by concurrency, not by the control plane's 15/s.
    "lambda": frozenset({"Invoke", "InvokeAsync", "InvokeWithResponseStream"}),
    # Asked once per credential source, to learn the account whose buckets the calls take from.
    "sts": frozenset({"GetCallerIdentity"}),
}
# Float refills can land a hair below a whole token; without this, the first in line could ask
# for a wait too small to move a float clock, forever.
_EPSILON = 1e-9


class PacingCancelledError(Exception):
    """A wait for a token ended because the call it was for was cancelled."""


def account_of_role(role_arn: str) -> str:
    """The account of a role ARN (its fifth field); a malformed ARN is its own key."""
    parts = role_arn.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[4]:
        return parts[4]
    return role_arn


class Cancellation:
    """Set once, from any thread, to end the thread waits that watch it (``acquire_blocking``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._wakers: list[Callable[[], None]] = []

    @property
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            self._set = True
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def watch(self, wake: Callable[[], None]) -> bool:
        """Call ``wake`` when set; False (and no call) if it is set already."""
        with self._lock:
            if self._set:
                return False
            self._wakers.append(wake)
            return True

    def unwatch(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._wakers:
                self._wakers.remove(wake)


class _LoopWaiter:
    """A coroutine in line: woken through its event loop when its turn comes."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._turn: asyncio.Future[None] = self._loop.create_future()

    def notify(self) -> None:
        if threading.get_ident() == self._thread:
            self._ready()
            return
        # A closed loop raises RuntimeError: nobody is left to wake there.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready)

    def _ready(self) -> None:
        if not self._turn.done():
            self._turn.set_result(None)

    async def turn(self) -> None:
        if not self._turn.done():
            await self._turn


class _ThreadWaiter:
    """A thread in line: woken through an event when its turn comes (or its call is cancelled)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._ready = False

    def notify(self) -> None:
        self._ready = True
        self._event.set()

    def wake(self) -> None:
        self._event.set()

    def turn(self, cancel: Cancellation | None) -> None:
        while not self._ready:
            if cancel is not None and cancel.is_set:
                raise PacingCancelledError("the call was cancelled while it waited for its turn")
            self._event.wait()
            self._event.clear()
        # The wake-up of the turn itself must not cut the first timed wait short; a cancellation
        # that came meanwhile is seen by the caller, which checks ``cancel`` next.
        self._event.clear()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if woken (a cancellation)."""
        self._event.wait(seconds)
        self._event.clear()


_Waiter = _LoopWaiter | _ThreadWaiter


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked; see the module docstring."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        sleeper: Sleeper | None = None,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs a positive rate and burst, not {rate}/s and {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._sleeper = sleeper
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()
        # Callers in line, by ticket, in arrival order; the first one is the one whose turn it is.
        self._line: OrderedDict[int, _Waiter] = OrderedDict()
        self._tickets = itertools.count()

    @property
    def available(self) -> float:
        """Tokens in the bucket now (fractional while refilling)."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens

    @property
    def waiting(self) -> int:
        """Callers in line now."""
        with self._lock:
            return len(self._line)

    def try_acquire(self) -> bool:
        """Take one token if one is free now and nobody is in line; never blocks."""
        with self._lock:
            if self._line:
                return False
            self._refill(self._clock())
            if self._tokens < 1 - _EPSILON:
                return False
            self._tokens = max(0.0, self._tokens - 1)
            return True

    def refund(self) -> None:
        """Give back one token that was never used; the first in line may take it."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(float(self.burst), self._tokens + 1)
            first = next(iter(self._line.values()), None)
        if first is not None:
            first.notify()

    async def acquire(self) -> float:
        """Take one token, waiting on the running loop; the seconds waited. Cancellable."""
        started = self._clock()
        if self.try_acquire():
            return 0.0
        waiter = _LoopWaiter()
        ticket = self._join(waiter)
        try:
            while True:
                await waiter.turn()
                delay = self._take_or_delay(ticket)
                if delay is None:
                    return max(0.0, self._clock() - started)
                await self._sleep(delay)
        except BaseException:
            self._leave(ticket)
            raise

    def acquire_blocking(self, cancel: Cancellation | None = None) -> float:
        """Take one token, blocking this thread; the seconds waited. ``PacingCancelledError`` when
        ``cancel`` is set before the token is taken."""
        started = self._clock()
        if self.try_acquire():
            return 0.0
        waiter = _ThreadWaiter()
        if cancel is not None and not cancel.watch(waiter.wake):
            raise PacingCancelledError("the call was cancelled before it waited for a token")
        ticket = self._join(waiter)
        try:
            while True:
                waiter.turn(cancel)
                if cancel is not None and cancel.is_set:
                    raise PacingCancelledError("the call was cancelled while it waited for a token")
                delay = self._take_or_delay(ticket)
                if delay is None:
                    return max(0.0, self._clock() - started)
                if self._sleeper is not None:
                    self._sleeper(delay)
                else:
                    waiter.sleep(delay)
        except BaseException:
            self._leave(ticket)
            raise
        finally:
            if cancel is not None:
                cancel.unwatch(waiter.wake)

    # -- the line (each method takes the lock itself, and never holds it while anyone waits) --

    def _join(self, waiter: _Waiter) -> int:
        with self._lock:
            ticket = next(self._tickets)
            self._line[ticket] = waiter
            first = len(self._line) == 1
        if first:
            waiter.notify()
        return ticket

    def _take_or_delay(self, ticket: int) -> float | None:
        """For the first in line: take a token and leave the line (None), or the seconds to wait."""
        with self._lock:
            self._refill(self._clock())
            if self._tokens < 1 - _EPSILON:
                return (1 - self._tokens) / self.rate
            self._tokens = max(0.0, self._tokens - 1)
            del self._line[ticket]
            following = next(iter(self._line.values()), None)
        if following is not None:
            following.notify()
        return None

    def _leave(self, ticket: int) -> None:
        with self._lock:
            was_first = next(iter(self._line), None) == ticket
            self._line.pop(ticket, None)
            following = next(iter(self._line.values()), None) if was_first else None
        if following is not None:
            following.notify()

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now


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
        sleep: Sleep = asyncio.sleep,
        sleeper: Sleeper | None = None,
    ) -> None:
        self._limits = dict(limits or {})
        self._default = default
        self._clock = clock
        self._sleep = sleep
        self._sleeper = sleeper
        self._lock = threading.Lock()
        self._buckets: dict[BucketKey, TokenBucket] = {}
        self.granted: Counter[BucketKey] = Counter()
        self.waited: defaultdict[BucketKey, float] = defaultdict(float)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        sleeper: Sleeper | None = None,
    ) -> RateLimiter:
        control_plane = Limit(settings.aws_requests_per_second, settings.aws_burst)
        limits = {
            "lambda": control_plane,
            "sts": control_plane,
            "cloudwatch": Limit(settings.aws_cloudwatch_requests_per_second, settings.aws_cloudwatch_burst),
        }
        return cls(limits, default=control_plane, clock=clock, sleep=sleep, sleeper=sleeper)

    def limit_for(self, service: str) -> Limit:
        return self._limits.get(service, self._default)

    def paces(self, service: str, operation: str) -> bool:
        """Whether an attempt of ``operation`` takes a token at all."""
        if operation in UNPACED_OPERATIONS.get(service, frozenset()):
            return False
        return self.limit_for(service).paced

    def bucket(self, account: str, region: str, service: str) -> TokenBucket | None:
        """The bucket of a key, made on first use; None when the service is not paced."""
        limit = self.limit_for(service)
        if not limit.paced:
            return None
        key = (account, region, service)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(
                    limit.rate, limit.burst, clock=self._clock, sleep=self._sleep, sleeper=self._sleeper
                )
                self._buckets[key] = bucket
            return bucket

    async def acquire(self, key: BucketKey, operation: str) -> float:
        """Take a token for one attempt of ``operation`` on the running loop; seconds waited.

        0 at once when the attempt is not paced. Cancellable (see ``TokenBucket.acquire``).
        """
        bucket = self._bucket_for(key, operation)
        if bucket is None:
            return 0.0
        waited = await bucket.acquire()
        self._granted(key, waited)
        return waited

    def acquire_blocking(self, key: BucketKey, operation: str, cancel: Cancellation | None = None) -> float:
        """The same, blocking the calling thread (see ``TokenBucket.acquire_blocking``)."""
        bucket = self._bucket_for(key, operation)
        if bucket is None:
            return 0.0
        waited = bucket.acquire_blocking(cancel)
        self._granted(key, waited)
        return waited

    def try_acquire(self, key: BucketKey, operation: str) -> bool:
        """Take a token for one attempt if one is free now (True), without blocking.

        True at once when the attempt is not paced. False leaves the caller's place to
        ``acquire``, which waits in line behind the callers already waiting.
        """
        bucket = self._bucket_for(key, operation)
        if bucket is None:
            return True
        if not bucket.try_acquire():
            return False
        self._granted(key, 0.0)
        return True

    def refund(self, key: BucketKey) -> None:
        """Give back a token taken for an attempt that was never made (its call was cancelled)."""
        bucket = self.bucket(*key)
        if bucket is None:
            return
        bucket.refund()
        with self._lock:
            self.granted[key] -= 1

    def _bucket_for(self, key: BucketKey, operation: str) -> TokenBucket | None:
        """The bucket an attempt of ``operation`` takes its token from; None when it is not paced."""
        if not self.paces(key[2], operation):
            return None
        return self.bucket(*key)

    def _granted(self, key: BucketKey, waited: float) -> None:
        with self._lock:
            self.granted[key] += 1
            self.waited[key] += waited
