"""Writing a rollout's status, taking its action requests and posting its Events, through the
Kubernetes API.

Contract: ``StatusWriter.write_status`` replaces the whole ``status`` of one LambdaRollout through
the status subresource in one request (a JSON merge patch in which the keys the new status no
longer has are set to null). ``StatusWriter.take_annotation`` removes one annotation only if it
still has the value that was read (a JSON patch with a ``test`` operation), and says whether it
did: the caller that removed it owns the request it carried, exactly once.
``StatusWriter.post_event`` creates one core/v1 Event about a rollout (``EventAbout``: the
rollout's name, namespace and uid), as kubectl shows them: ``lambda-rollouts`` as its source,
first and last seen now, count 1, the message cut to 1,024 characters. A rollout that no longer
exists raises ``ObjectGoneError``; any other failure raises ``KubernetesError`` (transient).
``RecordingStatusWriter`` is the fake for tests.

Kopf does not offer a public way to patch an object from a long-running daemon whenever we
choose, so the operator keeps its own small client (``lambda_rollouts.httpclient``: these
requests are most of a step's cost), authenticated with the same connection details Kopf logged
in with (``ApiConnection``). Events go through it too: a rollout posts one or two per step, and
when Kopf posted them (its queue, its API wrapper, aiohttp) they took about a fifth of the
operator's CPU in an experiment on an earlier release (README, Figures).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lambda_rollouts.errors import KubernetesError, ObjectGoneError
from lambda_rollouts.httpclient import HttpClient, HttpError, HttpResponse
from lambda_rollouts.model import GROUP, KIND, PLURAL, VERSION

# Who posts the Events (kubectl's "From" column).
EVENT_SOURCE = "lambda-rollouts"
# As Kopf and client-go cut them: the API refuses longer messages.
MAX_EVENT_MESSAGE = 1024
# Connections to the API server kept by the writer.
_MAX_CONNECTIONS = 100
# The Event's reportingInstance: this pod (asked once, not per Event).
_REPORTING_INSTANCE = socket.gethostname()


@dataclass(frozen=True)
class ApiConnection:
    server: str
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    token: str | None = None
    scheme: str | None = None
    username: str | None = None
    password: str | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None


@dataclass(frozen=True)
class EventAbout:
    """The rollout an Event is about."""

    namespace: str
    name: str
    uid: str | None = None


class StatusWriter(Protocol):
    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None: ...

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool: ...

    async def post_event(self, about: EventAbout, type: str, reason: str, message: str) -> None: ...

    async def close(self) -> None: ...


def event_body(about: EventAbout, type: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": about.name,
        "namespace": about.namespace,
    }
    if about.uid:
        involved["uid"] = about.uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": about.namespace, "generateName": f"{about.name}."},
        "involvedObject": involved,
        "type": type,
        "reason": reason,
        "message": message,
        "source": {"component": EVENT_SOURCE},
        "reportingComponent": EVENT_SOURCE,
        "reportingInstance": _REPORTING_INSTANCE,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def status_merge_patch(status: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that leaves exactly ``status`` in place of ``previous`` (top-level keys)."""
    patch: dict[str, Any] = {key: None for key in previous if key not in status}
    patch.update(status)
    return {"status": patch}


def _status_url(server: str, namespace: str, name: str) -> str:
    return f"{_object_url(server, namespace, name)}/status"


def _object_url(server: str, namespace: str, name: str) -> str:
    return f"{server.rstrip('/')}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def _events_url(server: str, namespace: str) -> str:
    return f"{server.rstrip('/')}/api/v1/namespaces/{namespace}/events"


def annotation_removal(key: str, value: str) -> list[dict[str, Any]]:
    """A JSON patch that removes annotation ``key`` only while it still holds ``value``."""
    path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
    return [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}]


class HttpStatusWriter:
    """The real writer over ``HttpClient``. One client per event loop, created lazily."""

    def __init__(self, connection: ApiConnection, *, timeout_seconds: float | None = 30.0) -> None:
        self._connection = connection
        self._timeout = timeout_seconds
        self._client: HttpClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._headers_cache: dict[str, str] | None = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        connection = self._connection
        if not connection.server.startswith("https"):
            return None
        if connection.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            cadata = connection.ca_data.decode() if connection.ca_data else None
            context = ssl.create_default_context(cafile=connection.ca_path, cadata=cadata)
        if connection.certificate_path or connection.certificate_data:
            certificate = connection.certificate_path or _temporary_file(connection.certificate_data)
            key = connection.private_key_path or _temporary_file(connection.private_key_data)
            context.load_cert_chain(certificate, key)
        return context

    def _headers(self, content_type: str) -> dict[str, str]:
        if self._headers_cache is None:
            connection = self._connection
            headers = {"Accept": "application/json", "User-Agent": EVENT_SOURCE}
            if connection.token:
                headers["Authorization"] = f"{connection.scheme or 'Bearer'} {connection.token}"
            elif connection.username and connection.password:
                basic = base64.b64encode(f"{connection.username}:{connection.password}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
            self._headers_cache = headers
        return {**self._headers_cache, "Content-Type": content_type}

    def _http(self) -> HttpClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # As many connections as aiohttp's default allowed before: status writes and Events
            # of a thousand rollouts shifted at once share them.
            self._client = HttpClient(
                ssl_context=self._ssl_context(), max_connections=_MAX_CONNECTIONS, read_timeout=self._timeout
            )
            self._client_loop = loop
        return self._client

    async def _send(
        self, method: str, url: str, content_type: str, body: Any, what: str, *, resend: bool = False
    ) -> HttpResponse:
        payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            return await self._http().request(
                method, url, self._headers(content_type), payload, resend=resend
            )
        except HttpError as exc:
            raise KubernetesError(f"{what} failed: {exc}") from exc

    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        what = f"writing the status of {namespace}/{name}"
        url = _status_url(self._connection.server, namespace, name)
        # The whole status in one merge patch: applied twice, it leaves the same status.
        patch = status_merge_patch(status, previous)
        response = await self._send("PATCH", url, "application/merge-patch+json", patch, what, resend=True)
        if response.status == 404:
            raise ObjectGoneError(f"LambdaRollout {namespace}/{name} no longer exists")
        if response.status >= 400:
            raise KubernetesError(f"{what} failed with HTTP {response.status}: {_detail(response)}")

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool:
        what = f"removing annotation {key} of {namespace}/{name}"
        url = _object_url(self._connection.server, namespace, name)
        response = await self._send(
            "PATCH", url, "application/json-patch+json", annotation_removal(key, value), what
        )
        if response.status == 404:
            raise ObjectGoneError(f"LambdaRollout {namespace}/{name} no longer exists")
        if response.status in (409, 422):
            return False  # changed since it was read: the next pass reads it again
        if response.status >= 400:
            raise KubernetesError(f"{what} failed with HTTP {response.status}: {_detail(response)}")
        return True

    async def post_event(self, about: EventAbout, type: str, reason: str, message: str) -> None:
        what = f"posting the {reason} Event of {about.namespace}/{about.name}"
        url = _events_url(self._connection.server, about.namespace)
        body = event_body(about, type, reason, message, datetime.now(UTC))
        response = await self._send("POST", url, "application/json", body, what)
        if response.status >= 400:
            raise KubernetesError(f"{what} failed with HTTP {response.status}: {_detail(response)}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _detail(response: HttpResponse) -> str:
    return response.body[:500].decode("utf-8", "replace")


def _temporary_file(data: bytes | None) -> str:
    if data is None:
        raise KubernetesError("a client certificate was given without its key, or the reverse")
    with tempfile.NamedTemporaryFile(delete=False, suffix=".pem") as handle:
        handle.write(data)
        return handle.name


class RecordingStatusWriter:
    """The fake writer: keeps every written status, in order, per rollout."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.current: dict[tuple[str, str], dict[str, Any]] = {}
        # (namespace, name, key, value) of every annotation taken.
        self.taken: list[tuple[str, str, str, str]] = []
        # (about, type, reason, message) of every Event posted.
        self.events: list[tuple[EventAbout, str, str, str]] = []

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool:
        self.taken.append((namespace, name, key, value))
        return True

    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        self.writes.append((namespace, name, dict(status)))
        self.current[(namespace, name)] = dict(status)

    async def post_event(self, about: EventAbout, type: str, reason: str, message: str) -> None:
        self.events.append((about, type, reason, message))

    async def close(self) -> None:
        pass
