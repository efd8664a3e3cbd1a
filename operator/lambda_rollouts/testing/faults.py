"""Fault injection into boto3 clients: throttling, AWS-side errors, conflicts, network failures.

For the sandbox, the benchmarks and the tests: AWS's emulator (moto) never throttles and never
fails, so the operator's behaviour under a faulty AWS is shown by injecting the faults into the
operator's own clients, below botocore's retry loop.

Contract:
- ``FaultInjector(rate, seed=..., kinds=..., services=...)`` answers ``rate`` (0 to 1) of the HTTP
  attempts it sees with a fault of one of ``kinds`` instead of sending them. The attempts come in
  blocks of ``BLOCK`` (20), in arrival order; block b has floor(rate x 20 x (b + 1)) -
  floor(rate x 20 x b) faults (5 in each at a rate of 0.25) at places drawn at random, so faults
  are random, can come in a row, and their share never drifts: over the first n attempts, at
  least floor(rate x 20 x floor(n / 20)). The kinds take turns: the k-th fault among those whose
  operation admits the same m kinds is kind (k + offset) mod m of them (offset drawn from the
  seed), so any m faults of reads (or of writes) in a row meet every kind that applies, however
  the attempts of concurrent callers interleave. Everything random comes from
  ``random.Random(seed)`` and each attempt draws the same numbers whatever its operation, so the
  n-th attempt seen gets the n-th decision: the same attempts in the same order get the same
  faults. Attempts made concurrently reach it in an order the threads decide. An attempt drawn
  for a fault that none of ``kinds`` applies to goes through.
- ``register(session)`` puts the injector on every client a boto3 session makes from then on,
  for each of ``services`` (``lambda``, ``cloudwatch``, ``sts`` by default; others are left alone),
  as a ``before-send`` handler of the session (clients copy their session's handlers): the way to
  reach the clients ``AwsClients`` makes, by giving it a session factory whose sessions are
  registered. ``attach(service_name, client)`` does the same for one client already made. Either
  way it is the first generic ``before-send`` handler: after the pacing of ``AwsClients`` (on the
  service's own event, which botocore calls first), so that a faulted attempt has taken its token
  like a real one, and before an emulator's stub (moto's ``mock_aws``). An injected
  HTTP answer keeps the request from being sent; botocore still calls the remaining
  ``before-send`` handlers, and moto's in-process ``mock_aws`` is one of them (it applies the
  request anyway): use moto's server mode when an injected fault must also keep the request from
  the emulator.
- Kinds (``FaultKind``), each in the wire format of the client's protocol, so that botocore parses
  and retries them as it would AWS's:
  ``throttled``: Lambda's 429 ``TooManyRequestsException`` with ``Retry-After: 1``; for
  CloudWatch and STS, their 400 ``Throttling``;
  ``service-error``: a 500 or 503 (even odds), ``ServiceException`` for Lambda,
  ``InternalServiceError`` for CloudWatch, ``InternalFailure`` otherwise;
  ``conflict``: Lambda's 409 ``ResourceConflictException`` ("an update is in progress"), only on
  Lambda's writes (operations other than ``Get*``, ``List*``, ``Describe*``, ``Invoke``), the
  only calls that can meet it;
  ``connection-reset``: botocore's ``ConnectionClosedError`` (the connection dropped before an
  answer; botocore's name for a reset);
  ``read-timeout``: botocore's ``ReadTimeoutError``, at once rather than after the client's read
  timeout, and before the request reached the service (a request lost on its way, not an answer
  lost on its way back).
- ``decide(service, operation)`` is the decision for one attempt, recorded like one: the fault to
  inject (``Fault``: its kind, and its HTTP status for the kinds answered over HTTP) or None.
- Counts, all thread-safe to read after the fact: ``attempts`` by operation (every attempt seen),
  ``injected`` by (operation, kind), ``by_kind()``, ``by_operation()``, ``total_attempts``,
  ``total_injected``; ``timeline`` holds one ``Attempt`` per attempt seen (``clock`` time, service,
  operation, the kind injected or None when it went through), from which ``peak`` computes the
  busiest window. ``enabled = False`` stops injecting (attempts are still counted).
"""

from __future__ import annotations

import enum
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from xml.sax.saxutils import escape

import boto3.session
import botocore.session
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HTTPHeaders
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.model import ServiceModel

DEFAULT_SERVICES = ("lambda", "cloudwatch", "sts")


class FaultKind(enum.StrEnum):
    THROTTLED = "throttled"
    SERVICE_ERROR = "service-error"
    CONFLICT = "conflict"
    CONNECTION_RESET = "connection-reset"
    READ_TIMEOUT = "read-timeout"


ALL_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)
_READ_PREFIXES = ("Get", "List", "Describe", "Invoke")
# Attempts per block: each block holds its share of the faults (see the module docstring).
BLOCK = 20


@dataclass(frozen=True)
class Attempt:
    at: float
    service: str
    operation: str
    # The fault injected into the attempt; None: it went through.
    fault: FaultKind | None


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    # The HTTP status answered; None for the network failures, which get no answer.
    status: int | None


@dataclass(frozen=True)
class _HttpFault:
    status: int
    code: str
    message: str
    headers: Mapping[str, str]
    # Extra members of Lambda's JSON error body.
    fields: Mapping[str, str]


class FaultInjector:
    """Injects AWS faults into a share of HTTP attempts; see the module docstring."""

    def __init__(
        self,
        rate: float,
        *,
        seed: int = 0,
        kinds: Iterable[FaultKind | str] = ALL_KINDS,
        services: Iterable[str] = DEFAULT_SERVICES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"the fault rate is a share of attempts, from 0 to 1, not {rate}")
        self.rate = rate
        self.kinds = tuple(FaultKind(kind) for kind in kinds)
        if not self.kinds:
            raise ValueError("name at least one kind of fault")
        self.services = frozenset(services)
        self.enabled = True
        self._clock = clock
        self._random = random.Random(seed)
        self._kind_offset = self._random.randrange(len(self.kinds))
        self._block: frozenset[int] = frozenset()
        self._seen = 0
        # Faults injected so far, by the kinds that applied to them: each such set takes turns of
        # its own, so reads meet every read kind whatever the writes between them drew.
        self._faults: Counter[tuple[FaultKind, ...]] = Counter()
        self._lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.injected: Counter[tuple[str, FaultKind]] = Counter()
        self.timeline: list[Attempt] = []

    # -- installing ----------------------------------------------------------------------------

    def attach(self, service_name: str, client: BaseClient) -> None:
        """Inject into ``client`` if ``service_name`` is one of the injector's services."""
        if service_name not in self.services:
            return
        model = client.meta.service_model
        handler = self._handler({model.service_id.hyphenize(): (service_name, model)})
        client.meta.events.register_first("before-send", handler)

    def register(self, session: boto3.session.Session) -> None:
        """Inject into every client ``session`` makes from now on (clients copy its handlers).

        The way to reach clients made inside the operator (``AwsClients``): hand it a session
        factory whose sessions were registered here.
        """
        loader = botocore.session.get_session()
        models = {name: loader.get_service_model(name) for name in sorted(self.services)}
        by_id = {model.service_id.hyphenize(): (name, model) for name, model in models.items()}
        handler = self._handler(by_id)
        session.events.register_first("before-send", handler)

    def _handler(self, services: Mapping[str, tuple[str, ServiceModel]]) -> Callable[..., None]:
        """A generic before-send handler for the services named by their service ids."""
        # resolved_protocol: the one botocore speaks when a service lists several (CloudWatch does).
        wire = {
            service_id: (
                name,
                str(getattr(model, "resolved_protocol", None) or model.protocol),
                model.metadata.get("awsQueryCompatible") is not None,
            )
            for service_id, (name, model) in services.items()
        }

        def before_send(request: AWSPreparedRequest, event_name: str, **_: Any) -> AWSResponse | None:
            # before-send.<service-id>.<Operation>
            service_id, operation = event_name.split(".", 2)[1:]
            if service_id not in wire:
                return None
            service_name, protocol, query_compatible = wire[service_id]
            answer = self._http_answer(service_name, operation, request.url)
            return None if answer is None else _response(request.url, answer, protocol, query_compatible)

        # botocore-stubs types event handlers as returning None; before-send ones may answer.
        return cast(Callable[..., None], before_send)

    def _http_answer(self, service: str, operation: str, url: str) -> _HttpFault | None:
        """Decide one attempt: None to send it, the HTTP fault to answer, or raise a network fault."""
        fault = self.decide(service, operation)
        if fault is None:
            return None
        if fault.kind is FaultKind.CONNECTION_RESET:
            raise ConnectionClosedError(endpoint_url=url)
        if fault.kind is FaultKind.READ_TIMEOUT:
            raise ReadTimeoutError(endpoint_url=url)
        return _http_fault(fault, service, operation)

    # -- figures -------------------------------------------------------------------------------

    @property
    def total_attempts(self) -> int:
        with self._lock:
            return sum(self.attempts.values())

    @property
    def total_injected(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    def by_kind(self) -> Counter[FaultKind]:
        with self._lock:
            counts: Counter[FaultKind] = Counter()
            for (_, kind), count in self.injected.items():
                counts[kind] += count
            return counts

    def by_operation(self) -> Counter[str]:
        with self._lock:
            counts: Counter[str] = Counter()
            for (operation, _), count in self.injected.items():
                counts[operation] += count
            return counts

    def peak(
        self, window: float = 1.0, *, services: Iterable[str] | None = None, passed_only: bool = False
    ) -> int:
        """The most attempts (of ``services``; through to the service only, if asked) in any
        ``window`` seconds of the injector's clock."""
        wanted = None if services is None else frozenset(services)
        with self._lock:
            times = sorted(
                attempt.at
                for attempt in self.timeline
                if (wanted is None or attempt.service in wanted)
                and not (passed_only and attempt.fault is not None)
            )
        return max(_window_counts(times, window), default=0)

    # -- deciding ------------------------------------------------------------------------------

    def decide(self, service: str, operation: str) -> Fault | None:
        """The fault to inject into one attempt of ``operation``, or None; counted as an attempt."""
        applicable = [kind for kind in self.kinds if _applies(kind, service, operation)]
        with self._lock:
            place = self._seen % BLOCK
            if place == 0:
                block = self._seen // BLOCK
                faults = _faults_until(self.rate, block + 1) - _faults_until(self.rate, block)
                self._block = frozenset(self._random.sample(range(BLOCK), faults))
            self._seen += 1
            # Always one draw, so one attempt's operation never shifts the decisions of the next.
            status_draw = self._random.random()
            kind = None
            if self.enabled and applicable and place in self._block:
                turns = tuple(applicable)
                kind = applicable[(self._faults[turns] + self._kind_offset) % len(applicable)]
                self._faults[turns] += 1
                self.injected[(operation, kind)] += 1
            self.attempts[operation] += 1
            self.timeline.append(Attempt(self._clock(), service, operation, kind))
        if kind is None:
            return None
        return Fault(kind, _status_of(kind, service, status_draw))


def _faults_until(rate: float, blocks: int) -> int:
    """Faults in the first ``blocks`` blocks: floor(rate x BLOCK x blocks), spared float noise."""
    return math.floor(rate * BLOCK * blocks + 1e-9)


def _applies(kind: FaultKind, service: str, operation: str) -> bool:
    if kind is FaultKind.CONFLICT:
        return service == "lambda" and not operation.startswith(_READ_PREFIXES)
    return True


def _status_of(kind: FaultKind, service: str, status_draw: float) -> int | None:
    if kind is FaultKind.THROTTLED:
        return 429 if service == "lambda" else 400
    if kind is FaultKind.SERVICE_ERROR:
        return 500 if status_draw < 0.5 else 503
    if kind is FaultKind.CONFLICT:
        return 409
    return None


def _http_fault(fault: Fault, service: str, operation: str) -> _HttpFault:
    kind, status = fault.kind, fault.status
    if status is None:
        raise ValueError(f"{kind} is not answered over HTTP")
    if kind is FaultKind.THROTTLED:
        if service == "lambda":
            return _HttpFault(
                status,
                "TooManyRequestsException",
                "Rate exceeded",
                headers={"Retry-After": "1"},
                fields={"Type": "User", "Reason": "CallerRateLimitExceeded"},
            )
        return _HttpFault(status, "Throttling", "Rate exceeded", headers={}, fields={})
    if kind is FaultKind.SERVICE_ERROR:
        code = {"lambda": "ServiceException", "cloudwatch": "InternalServiceError"}.get(
            service, "InternalFailure"
        )
        return _HttpFault(status, code, "injected service error", headers={}, fields={"Type": "Service"})
    if kind is FaultKind.CONFLICT:
        return _HttpFault(
            status,
            "ResourceConflictException",
            f"The operation cannot be performed at this time. An update is in progress ({operation}).",
            headers={},
            fields={"Type": "User"},
        )
    raise ValueError(f"{kind} is not answered over HTTP")


def _response(url: str, fault: _HttpFault, protocol: str, query_compatible: bool) -> AWSResponse:
    """``fault`` as the service would send it in ``protocol``."""
    headers = {"x-amzn-RequestId": "injected-fault", **fault.headers}
    error_type = "Receiver" if fault.status >= 500 else "Sender"
    if query_compatible:
        # Services moved off the query protocol still name their errors by their old codes here.
        headers["x-amzn-query-error"] = f"{fault.code};{error_type}"
    body: bytes
    if protocol == "rest-json":
        headers |= {"x-amzn-ErrorType": fault.code, "Content-Type": "application/json"}
        body = json.dumps({"message": fault.message, **fault.fields}).encode()
    elif protocol == "json":
        headers["Content-Type"] = "application/x-amz-json-1.0"
        body = json.dumps({"__type": fault.code, "message": fault.message}).encode()
    elif protocol == "smithy-rpc-v2-cbor":
        headers |= {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"}
        body = _cbor_text_map({"__type": fault.code, "message": fault.message})
    else:  # query, ec2, rest-xml
        headers["Content-Type"] = "text/xml"
        error = (
            f"<Error><Type>{error_type}</Type><Code>{escape(fault.code)}</Code>"
            f"<Message>{escape(fault.message)}</Message></Error>"
        )
        body = f"<ErrorResponse>{error}<RequestId>injected-fault</RequestId></ErrorResponse>".encode()
    wire_headers = HTTPHeaders()
    for name, value in headers.items():
        wire_headers[name] = value
    return AWSResponse(url, fault.status, wire_headers, _RawBody(body))


class _RawBody:
    """The raw body of an injected response, as botocore reads one."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._content


def _cbor_text_map(items: Mapping[str, str]) -> bytes:
    """A CBOR map of text strings (RFC 8949): all an rpc-v2-cbor error body needs."""
    encoded = bytearray(_cbor_head(5, len(items)))
    for key, value in items.items():
        for text in (key, value):
            data = text.encode()
            encoded += _cbor_head(3, len(data)) + data
    return bytes(encoded)


def _cbor_head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes([major << 5 | length])
    for extra, size in ((24, 1), (25, 2), (26, 4)):
        if length < 1 << (8 * size):
            return bytes([major << 5 | extra]) + length.to_bytes(size, "big")
    raise ValueError("a CBOR item this long is not needed here")


def _window_counts(times: list[float], window: float) -> Iterator[int]:
    """For each sorted time, how many times fall in [it, it + window)."""
    end = 0
    for start, at in enumerate(times):
        while end < len(times) and times[end] < at + window:
            end += 1
        yield end - start
