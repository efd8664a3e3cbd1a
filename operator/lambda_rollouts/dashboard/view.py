"""What the dashboard's page shows of a rollout, and what the server asks of the plugin.

The server knows HTTP, its watches and its safety rules, and nothing of what a rollout's status
means: the plugin turns each rollout (and its Events) into a ``RolloutView`` with the same readers
and wording as ``kubectl lambdarollout get``, and carries out the actions as its own commands do.
A view is plain JSON for the page; times are RFC 3339 strings in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypedDict

from lambda_rollouts.errors import LambdaRolloutsError


class StepRow(TypedDict):
    # "done", "skip", "->" (the current step), "stop" (where a stalled rollout stopped) or "".
    marker: str
    number: int
    description: str


class EventRow(TypedDict):
    type: str
    reason: str
    age: str
    at: str | None
    message: str


class WeightPoint(TypedDict):
    """The weight after an Event: the history behind the page's chart."""

    at: str
    weight: float
    reason: str
    message: str


class RolloutView(TypedDict):
    namespace: str
    name: str
    function: str
    alias: str
    stable: str
    canary: str
    # status.canaryWeight: percent on the version the spec names; None before the first status.
    weight: float | None
    phase: str
    # "healthy", "stalled" or "in-progress", as ``kubectl lambdarollout status`` reckons it.
    outcome: str
    step: str
    # The operator's message, a timed pause's countdown reckoned as of the view.
    message: str
    # What holds the rollout ("spec.paused", "a pause action"), if anything does.
    held_by: str | None
    steps: list[StepRow]
    # Why the steps cannot be shown, when the spec cannot be read.
    steps_error: str | None
    # The conditions, analysis and hooks, in the lines ``get`` prints.
    details: list[str]
    # status.lastAction as the operator wrote it (action, id, result, message, at), and in words.
    last_action: dict[str, Any] | None
    last_action_line: str
    # The newest Events, oldest first.
    events: list[EventRow]
    history: list[WeightPoint]


class DashboardError(LambdaRolloutsError):
    """The dashboard cannot do what was asked: its message says why, in the user's terms."""

    reason = "Dashboard"


class Source(Protocol):
    """The cluster as the dashboard sees it. The blocking calls run in a worker thread."""

    @property
    def scope(self) -> str:
        """Where the rollouts come from, in words: "namespace default", "all namespaces"."""
        ...

    @property
    def actions(self) -> Sequence[str]:
        """The manual actions the page offers, as the annotation names them."""
        ...

    def watch_rollouts(self) -> list[str]:
        """The command line that streams the rollouts' watch events as JSON objects."""
        ...

    def watch_events(self) -> list[str]:
        """The command line that streams the watch events of the rollouts' Kubernetes Events."""
        ...

    def list_rollouts(self) -> list[Mapping[str, Any]]:
        """Every rollout now (blocking); raises DashboardError."""
        ...

    def failure(self, stderr: str) -> str:
        """What went wrong, in one line, from a failed command's error output."""
        ...

    def present(
        self, body: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime
    ) -> RolloutView:
        """The rollout as the page shows it; ``events`` may include other objects' Events."""
        ...

    def act(self, namespace: str, name: str, action: str) -> str:
        """Ask the operator for ``action`` (blocking); return the request's id; raises DashboardError."""
        ...
