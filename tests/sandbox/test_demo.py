"""``lambda-rollouts demo`` end to end: a canary that succeeds, then a release rolled back by the
analysis, in the real sandbox (emulator, moto server, the operator in-process, real time)."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re
import shutil
import subprocess
import tomllib

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


def _make_dry_run(workdir: pathlib.Path, target: str) -> str:
    # As a user's shell would run it, not as a sub-make of `make test` (which would add its
    # flags and "Entering directory" lines).
    env = {k: v for k, v in os.environ.items() if k not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}}
    completed = subprocess.run(
        ["make", "-n", target], cwd=workdir, env=env, capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout


def test_make_demo_installs_the_sandbox_extras_only_and_make_test_the_dev_ones(
    tmp_path: pathlib.Path,
) -> None:
    # A fresh clone as far as make can tell: the Makefile, pyproject.toml and no .venv.
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    demo = _make_dry_run(tmp_path, "demo")
    assert "-m venv .venv" in demo
    assert "pip install --quiet -e '.[sandbox]'" in demo
    assert ".[dev]" not in demo
    assert demo.rstrip().endswith(".venv/bin/lambda-rollouts demo")

    # After `make demo`: the virtual environment holds the sandbox extras.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    (tmp_path / ".venv" / ".installed-sandbox").touch()
    assert "pip install" not in _make_dry_run(tmp_path, "demo")
    test = _make_dry_run(tmp_path, "test")
    assert "pip install --quiet -e '.[dev]'" in test
    assert "-m venv" not in test

    # After `make test`: both are installed, and neither target installs anything again.
    (tmp_path / ".venv" / ".installed").touch()
    assert "pip install" not in _make_dry_run(tmp_path, "demo")
    assert "pip install" not in _make_dry_run(tmp_path, "lint")


def test_the_sandbox_extras_name_only_extras_that_exist() -> None:
    # pip warns about an unknown extra and installs nothing for it (moto has no "lambda" extra).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [moto] = [
        item for item in project["project"]["optional-dependencies"]["sandbox"] if item.startswith("moto")
    ]
    wanted = set(re.search(r"\[(.*)\]", moto).group(1).split(","))  # type: ignore[union-attr]
    provided = set(importlib.metadata.metadata("moto").get_all("Provides-Extra") or [])
    assert wanted <= provided, sorted(wanted - provided)
