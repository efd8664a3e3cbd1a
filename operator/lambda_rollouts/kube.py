"""Writing a rollout's status (and taking its action requests) through the Kubernetes API.

Contract: ``StatusWriter.write_status`` replaces the whole ``status`` of one LambdaRollout through
the status subresource in one request (a JSON merge patch in which the keys the new status no
longer has are set to null). ``StatusWriter.take_annotation`` removes one annotation only if it
still has the value that was read (a JSON patch with a ``test`` operation), and says whether it
did: the caller that removed it owns the request it carried, exactly once. A rollout that no
longer exists raises ``ObjectGoneError``; any other failure raises ``KubernetesError``
(transient). ``RecordingStatusWriter`` is the fake for tests.

Kopf does not offer a public way to patch an object from a long-running daemon whenever we
choose, so the operator keeps its own small client, authenticated with the same connection
details Kopf logged in with (``ApiConnection``).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from lambda_rollouts.errors import KubernetesError, ObjectGoneError
from lambda_rollouts.model import GROUP, PLURAL, VERSION


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


class StatusWriter(Protocol):
    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None: ...

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool: ...

    async def close(self) -> None: ...


def status_merge_patch(status: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that leaves exactly ``status`` in place of ``previous`` (top-level keys)."""
    patch: dict[str, Any] = {key: None for key in previous if key not in status}
    patch.update(status)
    return {"status": patch}


def _status_url(server: str, namespace: str, name: str) -> str:
    return f"{_object_url(server, namespace, name)}/status"


def _object_url(server: str, namespace: str, name: str) -> str:
    return f"{server.rstrip('/')}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def annotation_removal(key: str, value: str) -> list[dict[str, Any]]:
    """A JSON patch that removes annotation ``key`` only while it still holds ``value``."""
    path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
    return [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}]


class HttpStatusWriter:
    """The real writer over aiohttp. One session per event loop, created lazily."""

    def __init__(self, connection: ApiConnection, *, timeout_seconds: float | None = 30.0) -> None:
        self._connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _ssl_context(self) -> ssl.SSLContext | bool:
        connection = self._connection
        if not connection.server.startswith("https"):
            return False
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

    def _headers(self) -> dict[str, str]:
        connection = self._connection
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        if connection.token:
            headers["Authorization"] = f"{connection.scheme or 'Bearer'} {connection.token}"
        elif connection.username and connection.password:
            basic = base64.b64encode(f"{connection.username}:{connection.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            connector = aiohttp.TCPConnector(ssl=self._ssl_context())
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
            self._session_loop = loop
        return self._session

    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        url = _status_url(self._connection.server, namespace, name)
        body = status_merge_patch(status, previous)
        try:
            async with self._get_session().patch(url, json=body, headers=self._headers()) as response:
                if response.status == 404:
                    raise ObjectGoneError(f"LambdaRollout {namespace}/{name} no longer exists")
                if response.status >= 400:
                    detail = await response.text()
                    raise KubernetesError(
                        f"writing the status of {namespace}/{name} failed with HTTP {response.status}: "
                        f"{detail[:500]}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubernetesError(f"writing the status of {namespace}/{name} failed: {exc!r}") from exc

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool:
        url = _object_url(self._connection.server, namespace, name)
        headers = {**self._headers(), "Content-Type": "application/json-patch+json"}
        try:
            async with self._get_session().patch(
                url, json=annotation_removal(key, value), headers=headers
            ) as response:
                if response.status == 404:
                    raise ObjectGoneError(f"LambdaRollout {namespace}/{name} no longer exists")
                if response.status in (409, 422):
                    return False  # changed since it was read: the next pass reads it again
                if response.status >= 400:
                    detail = await response.text()
                    raise KubernetesError(
                        f"removing annotation {key} of {namespace}/{name} failed with HTTP "
                        f"{response.status}: {detail[:500]}"
                    )
                return True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubernetesError(f"removing annotation {key} of {namespace}/{name} failed: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


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

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool:
        self.taken.append((namespace, name, key, value))
        return True

    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        self.writes.append((namespace, name, dict(status)))
        self.current[(namespace, name)] = dict(status)

    async def close(self) -> None:
        pass
