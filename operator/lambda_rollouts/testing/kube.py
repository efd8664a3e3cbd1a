"""``RecordingStatusWriter``: a ``StatusWriter`` (``lambda_rollouts.kube``) for tests.

Contract: it keeps every written status, in order, per rollout (``writes``, and ``current`` for
the last one of each), every annotation taken (``taken``: it always takes them) and every Event
posted (``events``). Nothing is sent anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lambda_rollouts.kube import EventAbout


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
