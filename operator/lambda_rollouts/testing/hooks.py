"""``FakeHookInvoker``: a ``HookInvoker`` (``lambda_rollouts.hooks``) for tests.

Contract: it records every call and answers what it was told to, success by default.
``calls`` holds every ``(target, hook, payload)`` in order. ``answer(key, *outcomes)`` queues
outcomes for the hooks whose ``function_name`` or ``url`` equals ``key``; each ``invoke`` (which
stands for all of a hook's attempts) takes one, and once the queue is empty the last outcome
taken repeats. A hook nobody queued anything for succeeds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from lambda_rollouts.hooks import HookOutcome
from lambda_rollouts.model import Hook
from lambda_rollouts.observed import Target

# A queued answer: True or False, or a whole outcome (its message and attempts kept as given).
FakeAnswer = bool | HookOutcome


class FakeHookInvoker:
    """``HookInvoker`` for tests; see the module docstring."""

    def __init__(self) -> None:
        self.calls: list[tuple[Target, Hook, Mapping[str, Any]]] = []
        self._queued: dict[str, deque[FakeAnswer]] = {}
        self._last: dict[str, FakeAnswer] = {}

    def answer(self, key: str, *outcomes: FakeAnswer) -> None:
        """Queue ``outcomes`` for the hooks whose function name or URL is ``key``."""
        self._queued.setdefault(key, deque()).extend(outcomes)

    async def invoke(self, target: Target, hook: Hook, payload: Mapping[str, Any]) -> HookOutcome:
        # A copy: the caller may reuse or change its payload after the call.
        self.calls.append((target, hook, dict(payload)))
        key = hook.function_name if hook.function_name is not None else hook.url or ""
        queued = self._queued.get(key)
        if queued:
            self._last[key] = queued.popleft()
        return _fake_outcome(hook, self._last.get(key, True))


def _fake_outcome(hook: Hook, answer: FakeAnswer) -> HookOutcome:
    if isinstance(answer, HookOutcome):
        return answer
    if answer:
        return HookOutcome(succeeded=True, message=f"{hook.describe()} succeeded", attempts=1)
    return HookOutcome(
        succeeded=False,
        message=f"{hook.describe()} failed: the fake hook invoker was told to fail it",
        attempts=1,
    )
