"""The lambda-rollouts command: what a user sees on the way in."""

from __future__ import annotations

import asyncio
import pathlib
import sys

import click
import pytest
import uvloop
from click.testing import CliRunner

from lambda_rollouts.cli import event_loop_factory, main
from lambda_rollouts.settings import EXPECTED, EventLoop, Settings, variables_of

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
    # Said once, as the last line, without a traceback (Kopf's own report of it is left out).
    assert result.output.count("no Kubernetes credentials") == 1
    assert result.output.splitlines()[-1].startswith("Error: no Kubernetes credentials")
    assert "Traceback" not in result.output


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
    assert result.output == "Error: LAMBDA_ROLLOUTS_EVENT_LOOP=trio: expected auto, uvloop or asyncio\n"


# A bad value of every setting that is not free text, and what the error says it takes.
BAD_VALUES = [
    ("drift_check_interval_seconds", "soon"),
    ("retry_initial_delay_seconds", "0"),
    ("retry_max_delay_seconds", "-5"),
    ("assume_role_session_seconds", "60"),
    ("namespaces", "team-a,team-b"),
    ("metrics_port", "abc"),
    ("metrics_port", "70000"),
    ("log_format", "xml"),
    ("log_level", "LOUD"),
    ("event_loop", "trio"),
    ("peering_name", "Team_A"),
    ("peering_standalone", "maybe"),
    ("peering_priority", "high"),
    ("peering_lifetime_seconds", "5"),
    ("tenancy", "{team-a: all}"),
    ("aws_requests_per_second", "fast"),
    ("aws_burst", "1.5"),
    ("aws_cloudwatch_requests_per_second", "fast"),
    ("aws_cloudwatch_burst", "lots"),
    ("aws_retry_mode", "legacy"),
    ("aws_max_attempts", "0"),
    ("aws_max_concurrent_calls", "1000"),
    ("hook_allowed_networks", "10.0.0.300"),
    ("liveness_endpoint", "localhost:8080"),
    ("notifications", '[{"events": ["RolledBack"]}]'),
    ("notifications_max_attempts", "0"),
    ("notifications_timeout_seconds", "never"),
    ("notifications_deadline_seconds", "-1"),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v}" for f, v in BAD_VALUES])
def test_a_bad_setting_is_named_by_its_variable_with_the_form_it_takes(
    field: str, value: str, tmp_path: pathlib.Path
) -> None:
    variable = variables_of(field)[0]
    result = CliRunner().invoke(main, ["run"], env={variable: value, "HOME": str(tmp_path)})
    assert result.exit_code == 1
    # One line; a value that is a list or a mapping also says which item is wrong.
    assert result.output.startswith(f"Error: {variable}={value}: expected {EXPECTED[field]}")
    assert result.output.count("\n") == 1
    assert field not in result.output


# Settings that take any text: no value of theirs is invalid by itself.
FREE_TEXT = {
    "default_region", "kubeconfig", "liveness_endpoint", "metrics_host", "tenancy_file",
    "notifications_file",
}  # fmt: skip


def test_every_setting_says_what_it_takes() -> None:
    assert set(EXPECTED) == set(Settings.model_fields)
    assert {field for field, _ in BAD_VALUES} | FREE_TEXT == set(Settings.model_fields)


def test_a_setting_under_a_standard_name_is_named_as_it_was_set(tmp_path: pathlib.Path) -> None:
    # Free text takes any value; a nested error names the variable and where in its value.
    result = CliRunner().invoke(
        main,
        ["run"],
        env={"LAMBDA_ROLLOUTS_TENANCY": '{"team-a": {"function": ["a-*"]}}', "HOME": str(tmp_path)},
    )
    assert result.exit_code == 1
    assert result.output.startswith(
        'Error: LAMBDA_ROLLOUTS_TENANCY={"team-a": {"function": ["a-*"]}}: expected a JSON object'
    )
    assert "[team-a][function]: Extra inputs are not permitted" in result.output


def test_a_bad_option_is_named_as_given(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(main, ["run", "--peering", "Team_A"], env={"HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output == f"Error: --peering Team_A: expected {EXPECTED['peering_name']}\n"


def test_several_bad_settings_are_all_named(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(
        main,
        ["run"],
        env={
            "LAMBDA_ROLLOUTS_METRICS_PORT": "abc",
            "LAMBDA_ROLLOUTS_LOG_LEVEL": "LOUD",
            "HOME": str(tmp_path),
        },
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: LAMBDA_ROLLOUTS_METRICS_PORT=abc: expected a port number 0-65535; "
        "LAMBDA_ROLLOUTS_LOG_LEVEL=LOUD: expected DEBUG, INFO, WARNING, ERROR or CRITICAL\n"
    )


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


@pytest.mark.parametrize("command", _commands(main), ids=lambda path: " ".join(path) or "lambda-rollouts")
def test_h_is_help_on_every_command(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "-h"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert result.output == CliRunner().invoke(main, [*command, "--help"]).output
