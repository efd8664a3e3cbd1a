"""``lambda-rollouts demo`` end to end: a canary that succeeds, then a release rolled back by the
analysis, in the real sandbox (emulator, moto server, the operator in-process, real time)."""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from lambda_rollouts.sandbox.demo import DEMO_ANALYSIS_ROLLOUT, alias_shares, run_demo

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_demo_ships_exactly_the_analysis_example() -> None:
    assert yaml.safe_load((ROOT / "examples" / "analysis.yaml").read_text()) == DEMO_ANALYSIS_ROLLOUT


def test_alias_shares_put_the_primary_first() -> None:
    alias = {"FunctionVersion": "2", "RoutingConfig": {"AdditionalVersionWeights": {"3": 0.1}}}
    assert alias_shares(alias) == pytest.approx({"2": 0.9, "3": 0.1})
    assert list(alias_shares(alias)) == ["2", "3"]
    assert alias_shares({"FunctionVersion": "2"}) == {"2": 1.0}


async def test_the_demo_promotes_then_rolls_back_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    code = await run_demo()
    out = capsys.readouterr().out
    assert code == 0, out

    assert "Healthy      promoted version 2: all traffic on it (was 50%)" in out
    rollback = "analysis failed: error-rate of version 3 was 25%, above max 1%; rolled back to version 2"
    assert f"status.message: {rollback}" in out
    assert "condition Stalled=True, reason AnalysisFailed" in out
    assert f"Warning Event AnalysisFailed: {rollback}" in out
    assert "error-rate: Failed (value 25): error-rate of version 3 was 25%, above max 1%" in out
    # The alias went to 10% on version 3 and came back, and nothing went further.
    assert "90% v2 / 10% v3" in out
    assert "50% v2 / 50% v3" not in out

    reaction = re.search(r"failing measurement -> rollback write: (\d+) ms", out)
    assert reaction is not None, out
    # One pass: GetMetricData, UpdateAlias, the read-back; seconds would mean another pass.
    assert 0 <= int(reaction.group(1)) < 2000
    calls = re.search(r"GetMetricData (\d+) for (\d+) measurement", out)
    assert calls is not None, out
    assert calls.group(1) == calls.group(2) != "0"
