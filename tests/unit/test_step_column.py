"""One way of counting steps, from 1 as the messages do: ``status.step``, the ``Step`` printer
column and the plugin's STEP column."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_rollouts.crd import build_crd
from lambda_rollouts.model import RolloutStatus, step_label
from lambda_rollouts.plugin import _step_column


@pytest.mark.parametrize(
    ("phase", "index", "count", "label"),
    [
        ("Progressing", 0, 4, "1/4"),
        ("Paused", 1, 4, "2/4"),
        ("Progressing", 3, 4, "4/4"),
        # Past the last step, waiting for the promotion (a gate, a hold).
        ("Paused", 4, 4, "promotion"),
        # Whatever the index says once all traffic is on the new version (4, 2, 0 steps...).
        ("Healthy", 4, 4, "done"),
        ("Healthy", 2, 2, "done"),
        ("Healthy", 0, 0, "done"),
        ("Healthy", None, None, "done"),
        # Where a rolled-back rollout stopped.
        ("Degraded", 1, 4, "2/4"),
        # Before the operator has counted the steps.
        ("Paused", None, None, None),
        (None, None, None, None),
    ],
)
def test_the_step_counts_from_one(
    phase: str | None, index: int | None, count: int | None, label: str | None
) -> None:
    assert step_label(phase, index, count) == label
    raw: dict[str, Any] = {"phase": phase, "currentStepIndex": index, "stepCount": count}
    status = RolloutStatus.parse({key: value for key, value in raw.items() if value is not None})
    assert status.to_wire().get("step") == label
    # The plugin reads it, or reckons it the same way from what an older operator wrote.
    assert _step_column(status.to_wire()) == (label or "-")
    without = {key: value for key, value in status.to_wire().items() if key != "step"}
    assert _step_column(without) == (label or "-")


def test_a_stored_step_is_read_back_as_the_status_says_it() -> None:
    wire = RolloutStatus.parse({"phase": "Paused", "currentStepIndex": 1, "stepCount": 4}).to_wire()
    assert (
        RolloutStatus.parse(wire).to_wire()
        == wire
        == {
            "phase": "Paused",
            "currentStepIndex": 1,
            "stepCount": 4,
            "retryCount": 0,
            "conditions": [],
            "step": "2/4",
        }
    )


def test_the_printer_column_shows_the_step_as_the_messages_count_it() -> None:
    version = build_crd()["spec"]["versions"][0]
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert columns["Step"] == {"name": "Step", "type": "string", "jsonPath": ".status.step", "priority": 1}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["step"]["type"] == "string"
    last_action = status["lastAction"]["properties"]
    assert (last_action["stepIndex"]["type"], last_action["version"]["type"]) == ("integer", "string")
