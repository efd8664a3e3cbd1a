"""LambdaRollout objects as the operator leaves them, for checking what GitOps tools read from them.

Argo CD's health check and kstatus's rules are run over statuses the real planner produced, not
over hand-written guesses. ``drive`` plays the reconciler the way ``tests/unit/test_planner_analysis.py``
does: it answers the planner's questions (pre-flight checks, readings, hook outcomes) from a script,
applies each alias write to an in-memory alias, and keeps the status after every pass. A pre-flight
check that fails becomes ``plan_failure``, as in the reconciler.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lambda_rollouts import planner
from lambda_rollouts.analysis import Readings
from lambda_rollouts.errors import LambdaRolloutsError
from lambda_rollouts.model import (
    API_VERSION,
    KIND,
    HookPoint,
    RolloutSpec,
    RolloutStatus,
    parse_action_request,
)
from lambda_rollouts.observed import AliasState
from lambda_rollouts.planner import Answers, CreateAlias, HookAnswer, RouteTraffic

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

Reader = Callable[[float, planner.Measure], Readings]
Hook = Callable[[float, HookPoint], HookAnswer]

ERROR_RATE: dict[str, Any] = {
    "interval": "1m",
    "metrics": [{"name": "error-rate", "max": 1}],
    "minInvocations": 50,
}


def spec_of(**extra: Any) -> dict[str, Any]:
    """A canary of 10% for 5 minutes, then 50%, then promotion; ``extra`` adds or replaces fields."""
    raw: dict[str, Any] = {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "2",
        "strategy": {
            "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}]}
        },
    }
    raw.update(extra)
    return raw


def traffic(invocations: float = 100, errors: float = 0) -> Reader:
    """Readings as CloudWatch gives them: every requested id with a one-minute sum."""

    def read(_: float, measure: planner.Measure) -> Readings:
        values: dict[str, tuple[float, ...]] = {}
        for query in measure.request.queries:
            if query.id.endswith("_invocations"):
                values[query.id] = (invocations,)
            elif query.id.endswith("_errors"):
                values[query.id] = (errors,) if query.id.startswith("canary") else (0.0,)
            else:
                values[query.id] = ()
        return Readings(values=values)

    return read


def hooks_answering(succeeded: bool, message: str) -> Hook:
    return lambda _, point: HookAnswer(point, succeeded, message)


@dataclass
class Run:
    """A driven rollout: its spec, its generation, the alias, and the status after every pass."""

    spec: dict[str, Any]
    generation: int = 1
    alias: AliasState | None = field(default_factory=lambda: AliasState("1", {}, "rev-0"))
    status: RolloutStatus = field(default_factory=RolloutStatus)
    # (seconds since T0, status after that pass)
    passes: list[tuple[float, RolloutStatus]] = field(default_factory=list)
    writes: int = 0

    def object(self, status: RolloutStatus | None = None) -> dict[str, Any]:
        """The LambdaRollout as the API server serves it, with ``status`` (the latest by default)."""
        return rollout_object(self.spec, self.status if status is None else status, self.generation)

    def change_spec(self, **extra: Any) -> Run:
        """The same rollout after someone edited its spec: the API server bumps the generation."""
        self.spec = {**self.spec, **extra}
        self.generation += 1
        return self


def rollout_object(spec: dict[str, Any], status: RolloutStatus | None, generation: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": "checkout-api",
            "namespace": "default",
            "generation": generation,
            "uid": "7f4f1d7e-4b8e-4c39-9a53-0d1e2f3a4b5c",
            "resourceVersion": "4242",
            "creationTimestamp": "2026-01-01T11:59:00Z",
        },
        "spec": copy.deepcopy(spec),
    }
    if status is not None:
        body["status"] = status.to_wire()
    return body


def drive(
    run: Run,
    *,
    until: float,
    start: float = 0.0,
    read: Reader | None = None,
    hook: Hook | None = None,
    preflight_error: LambdaRolloutsError | None = None,
    action: str | None = None,
) -> Run:
    """Reconcile at every requeue time from ``start`` until ``until`` seconds, or until nothing is due.

    ``action`` is a manual action annotation's value, taken by the first pass (the reconciler
    removes the annotation and hands the request to the planner once).
    """
    spec = RolloutSpec.parse(run.spec)
    read = read or traffic()
    request = None
    if action is not None:
        name, action_id = parse_action_request(action)
        request = planner.ActionRequest(action=name, id=action_id, value=action)
    now = start
    while now <= until:
        moment = T0 + timedelta(seconds=now)
        answers = Answers()
        for _ in range(6):
            plan = planner.plan(
                spec,
                run.status,
                run.alias,
                generation=run.generation,
                now=moment,
                answers=answers,
                request=request,
            )
            if plan.verify is not None and preflight_error is not None:
                plan = planner.plan_failure(
                    run.status,
                    preflight_error,
                    spec=spec,
                    generation=run.generation,
                    now=moment,
                    backoff=planner.Backoff(),
                )
                break
            if plan.verify is not None:
                answers = Answers(plan.verify.pair, answers.readings, answers.hook)
            elif plan.measure is not None:
                answers = Answers(answers.verified, read(now, plan.measure), answers.hook)
            elif plan.run_hook is not None:
                point = plan.run_hook.point
                outcome = hook(now, point) if hook else HookAnswer(point, True, "ok")
                answers = answers.with_hook(outcome)
            else:
                break
        request = None
        run.status = _apply(run, plan)
        run.passes.append((now, run.status))
        if plan.requeue_after is None:
            break
        now += plan.requeue_after
    return run


def _apply(run: Run, plan: planner.Plan) -> RolloutStatus:
    """Make the plan's alias write, and read the weight back into the status as the reconciler does."""
    status = plan.status
    action = plan.action
    if action is None:
        return status
    run.writes += 1
    revision = f"rev-{run.writes}"
    if isinstance(action, CreateAlias):
        run.alias = AliasState(action.version, {}, revision)
        return status
    assert isinstance(action, RouteTraffic)
    routing = {action.canary: action.canary_percent} if action.canary else {}
    run.alias = AliasState(action.primary, routing, revision)
    canary = status.canary_version
    return status.model_copy(update={"canary_weight": run.alias.percent_on(canary) if canary else None})


def fail(
    run: Run, error: LambdaRolloutsError, *, at: float, backoff: planner.Backoff | None = None
) -> RolloutStatus:
    """The status after a reconcile at ``at`` seconds that failed with ``error``."""
    plan = planner.plan_failure(
        run.status,
        error,
        spec=RolloutSpec.parse(run.spec),
        generation=run.generation,
        now=T0 + timedelta(seconds=at),
        backoff=backoff or planner.Backoff(),
    )
    run.status = plan.status
    run.passes.append((at, run.status))
    return run.status
