"""The lambda-rollouts command: what a user sees on the way in."""

from __future__ import annotations

import asyncio
import pathlib
import sys

import pytest
import uvloop
from click.testing import CliRunner

from lambda_rollouts.cli import event_loop_factory, main
from lambda_rollouts.settings import EventLoop

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_crd_prints_the_file_shipped_in_crds() -> None:
    result = CliRunner().invoke(main, ["crd"])
    assert result.exit_code == 0
    assert result.output == (ROOT / "crds" / "lambdarollouts.yaml").read_text()


def test_run_without_kubernetes_credentials_exits_with_an_actionable_message(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    result = CliRunner().invoke(main, ["run"], env={"KUBECONFIG": str(missing), "HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert f"cannot read the Kubernetes credentials: KUBECONFIG names {missing}, which does not exist" in (
        result.output
    )


def test_run_with_no_kubeconfig_at_all_says_what_to_set(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(main, ["run"], env={"KUBECONFIG": "", "HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "no Kubernetes credentials: not running in a cluster, and no kubeconfig" in result.output


@pytest.mark.parametrize(
    ("choice", "installed", "expected"),
    [
        ("auto", True, uvloop.new_event_loop),
        ("uvloop", True, uvloop.new_event_loop),
        ("asyncio", True, asyncio.new_event_loop),
        ("auto", False, asyncio.new_event_loop),
        ("asyncio", False, asyncio.new_event_loop),
    ],
)
def test_the_event_loop_is_uvloops_when_installed_unless_told_otherwise(
    choice: EventLoop, installed: bool, expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not installed:
        monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory(choice) is expected


def test_run_told_to_use_a_missing_uvloop_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    result = CliRunner().invoke(
        main, ["run"], env={"LAMBDA_ROLLOUTS_EVENT_LOOP": "UVLOOP", "KUBECONFIG": "", "HOME": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert "LAMBDA_ROLLOUTS_EVENT_LOOP is uvloop, but uvloop is not installed" in result.output


def test_run_with_an_unknown_event_loop_names_the_choices(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(
        main, ["run"], env={"LAMBDA_ROLLOUTS_EVENT_LOOP": "trio", "HOME": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert "invalid settings" in result.output
    assert "'auto', 'uvloop' or 'asyncio'" in result.output
