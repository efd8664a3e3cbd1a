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
``lambda_rollouts.testing.kube.RecordingStatusWriter`` is the fake for tests.

``SecretReader.read_secret`` reads one Secret by name (a GET: the operator may get Secrets, never
list or watch them) and returns its data decoded from base64, or None when it does not exist; any
other failure raises ``KubernetesError``. Callers never log or show what it returns.
``KopfSecretReader`` reads through Kopf's API client, as ``KopfApiWriter`` writes.

``KopfApiWriter`` sends these requests through Kopf's own API client, the one its watches use:
the credentials of the operator's login (every kubeconfig form and the in-cluster account, see
``handlers``), a fresh login after a 401 (a rotated or expired token), proxies, TLS, and its
retries of 429s, 5xx answers and lost connections, here bounded by ``WRITE_BACKOFFS`` so that a
long outage comes back to the rollout's own backoff. Kopf offers no public call for patching an
object from a daemon at a time of our choosing, so this module uses its client module
(``kopf._cogs.clients.api``) directly; the Kopf version is pinned in ``pyproject.toml`` and the
real API server tier (``tests/envtest``) runs every path of it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import kopf
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import errors as kopf_errors

from lambda_rollouts.errors import KubernetesError, ObjectGoneError
from lambda_rollouts.model import GROUP, KIND, PLURAL, VERSION

# Who posts the Events (kubectl's "From" column).
EVENT_SOURCE = "lambda-rollouts"
# As Kopf and client-go cut them: the API refuses longer messages.
MAX_EVENT_MESSAGE = 1024
# Kopf's retries of one request (seconds between attempts): an API server restarting or briefly
# overloaded is waited for; longer trouble fails the request, and the rollout's loop retries later.
WRITE_BACKOFFS: Sequence[float] = (0.5, 1, 2, 4)
logger = logging.getLogger(__name__)
# The Event's reportingInstance: this pod (asked once, not per Event).
_REPORTING_INSTANCE = socket.gethostname()


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


def event_body(
    about: EventAbout, type: str, reason: str, message: str, now: datetime, serial: int = 0
) -> dict[str, Any]:
    """An Event named as client-go names them, ``<object>.<hex nanoseconds>``: ``kubectl get events``
    lists in name order, so a rollout's Events come in the order they were posted. ``serial``
    (0-999) tells apart Events of the same microsecond.
    """
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
        "metadata": {"namespace": about.namespace, "name": f"{about.name}.{_nanoseconds(now) + serial:x}"},
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


def _nanoseconds(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def status_merge_patch(status: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that leaves exactly ``status`` in place of ``previous`` (top-level keys)."""
    patch: dict[str, Any] = {key: None for key in previous if key not in status}
    patch.update(status)
    return {"status": patch}


def _object_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def annotation_removal(key: str, value: str) -> list[dict[str, Any]]:
    """A JSON patch that removes annotation ``key`` only while it still holds ``value``."""
    path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
    return [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}]


class KopfApiWriter:
    """The real writer, over Kopf's API client; it works inside the operator's tasks only."""

    def __init__(self, settings: kopf.OperatorSettings, backoffs: Iterable[float] = WRITE_BACKOFFS) -> None:
        self._settings = settings
        self._backoffs = tuple(backoffs)
        self._serials = itertools.cycle(range(1000))

    async def _send(self, method: str, path: str, content_type: str, body: Any, what: str) -> None:
        """One request; a 404 of the rollout itself is ``ObjectGoneError``."""
        try:
            response = await kopf_api.request(
                method,
                path,
                payload=body,
                headers={"Content-Type": content_type},
                settings=self._settings,
                backoffs=self._backoffs,
                logger=logger,
            )
            response.release()
        except kopf_errors.APINotFoundError as exc:
            if path.startswith(f"/apis/{GROUP}/"):
                raise ObjectGoneError(f"{what} failed: the LambdaRollout no longer exists") from exc
            raise KubernetesError(f"{what} failed with HTTP 404: {exc}") from exc
        except kopf_errors.APIError as exc:
            raise KubernetesError(f"{what} failed with HTTP {exc.status}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubernetesError(f"{what} failed: {exc!r}") from exc

    async def write_status(
        self, namespace: str, name: str, status: Mapping[str, Any], previous: Mapping[str, Any]
    ) -> None:
        # The whole status in one merge patch: applied twice, it leaves the same status.
        await self._send(
            "patch",
            f"{_object_path(namespace, name)}/status",
            "application/merge-patch+json",
            status_merge_patch(status, previous),
            f"writing the status of {namespace}/{name}",
        )

    async def take_annotation(self, namespace: str, name: str, key: str, value: str) -> bool:
        try:
            await self._send(
                "patch",
                _object_path(namespace, name),
                "application/json-patch+json",
                annotation_removal(key, value),
                f"removing annotation {key} of {namespace}/{name}",
            )
        except KubernetesError as exc:
            changed = (kopf_errors.APIConflictError, kopf_errors.APIUnprocessableEntityError)
            if isinstance(exc.__cause__, changed):
                return False  # changed since it was read: the next pass reads it again
            raise
        return True

    async def post_event(self, about: EventAbout, type: str, reason: str, message: str) -> None:
        await self._send(
            "post",
            f"/api/v1/namespaces/{about.namespace}/events",
            "application/json",
            event_body(about, type, reason, message, datetime.now(UTC), next(self._serials)),
            f"posting the {reason} Event of {about.namespace}/{about.name}",
        )

    async def close(self) -> None:
        pass  # the session is Kopf's


class SecretReader(Protocol):
    async def read_secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...


class KopfSecretReader:
    """The real ``SecretReader``, over Kopf's API client; it works inside the operator's tasks only."""

    def __init__(self, settings: kopf.OperatorSettings, backoffs: Iterable[float] = WRITE_BACKOFFS) -> None:
        self._settings = settings
        self._backoffs = tuple(backoffs)

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        what = f"reading Secret {namespace}/{name}"
        try:
            response = await kopf_api.request(
                "get",
                f"/api/v1/namespaces/{namespace}/secrets/{name}",
                settings=self._settings,
                backoffs=self._backoffs,
                logger=logger,
            )
            async with response:
                body = await response.json()
        except kopf_errors.APINotFoundError:
            return None
        except kopf_errors.APIError as exc:
            # The API server's Status message names the Secret and the reason, never its data.
            raise KubernetesError(f"{what} failed with HTTP {exc.status}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KubernetesError(f"{what} failed: {type(exc).__name__}") from exc
        data = body.get("data") if isinstance(body, dict) else None
        decoded: dict[str, bytes] = {}
        for key, value in (data or {}).items():
            with contextlib.suppress(binascii.Error, TypeError, ValueError):
                decoded[key] = base64.b64decode(value, validate=True)
        return decoded
