"""The lambda-rollouts command: what a user sees on the way in."""

from __future__ import annotations

import pathlib

from click.testing import CliRunner

from lambda_rollouts.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_crd_prints_the_file_shipped_in_crds() -> None:
    result = CliRunner().invoke(main, ["crd"])
    assert result.exit_code == 0
    assert result.output == (ROOT / "crds" / "lambdarollouts.yaml").read_text()


def test_run_without_kubernetes_credentials_exits_with_an_actionable_message(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    result = CliRunner().invoke(main, ["run"], env={"KUBECONFIG": str(missing), "HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert (
        f"cannot read the Kubernetes credentials: [Errno 2] No such file or directory: '{missing}'"
        in result.output
    )


def test_run_with_no_kubeconfig_at_all_says_what_to_set(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(main, ["run"], env={"KUBECONFIG": "", "HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "no Kubernetes credentials: not running in a cluster, and no kubeconfig" in result.output
