"""``lambda-rollouts sandbox`` as a newcomer uses it from two terminals: the exports it prints reach
its AWS emulator, ``sandbox publish`` finds it and ships a new version, and the ``kubectl patch`` it
prints rolls that version out."""

from __future__ import annotations

import json
import pathlib
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from tests.sandbox.sandbox_command import BIN, EXPORTED, Running, started

from lambda_rollouts import cli
from lambda_rollouts.sandbox.runtime import DEFAULT_TRAFFIC_PER_SECOND

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox(tmp_path: pathlib.Path) -> Iterator[Running]:
    with started(tmp_path) as running:
        yield running


def test_the_printed_exports_are_all_the_aws_sdk_needs(sandbox: Running) -> None:
    assert list(sandbox.exports) == EXPORTED
    assert sandbox.exports["AWS_REGION"] == "us-east-1"
    # `aws lambda get-alias --function-name checkout-api --name live`, with boto3 and nothing but
    # the printed variables in its environment.
    answer = sandbox.with_lambda_client(
        "alias = client.get_alias(FunctionName='checkout-api', Name='live')\n"
        "print(json.dumps([alias['Name'], alias['FunctionVersion'], client.meta.endpoint_url]))\n"
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == ["live", "1", sandbox.exports["AWS_ENDPOINT_URL"]]
    # The same lines, for `source .sandbox/env`.
    env_file = (sandbox.workdir / ".sandbox" / "env").read_text().splitlines()
    assert env_file == [line for line in sandbox.printed if line.startswith("export ")]


def test_publish_ships_a_new_version_that_the_printed_patch_rolls_out(sandbox: Running) -> None:
    applied = sandbox.kubectl("apply", "-f", str(ROOT / "examples" / "all-at-once.yaml"))
    assert applied.returncode == 0, applied.stderr
    waited = sandbox.kubectl(
        "wait", "lro/checkout-api", "--for=jsonpath={.status.phase}=Healthy", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr

    published = sandbox.run(str(BIN / "lambda-rollouts"), "sandbox", "publish", "checkout-api")
    assert published.returncode == 0, published.stderr
    said, patch = published.stdout.splitlines()
    assert said == "Published checkout-api version 3. Roll it out with:"
    assert patch == """  kubectl patch lro checkout-api --type=merge -p '{"spec":{"version":"3"}}'"""

    command = shlex.split(patch)
    assert command[0] == "kubectl"
    patched = sandbox.kubectl(*command[1:])
    assert patched.returncode == 0, patched.stderr
    waited = sandbox.kubectl(
        "wait", "lro/checkout-api", "--for=jsonpath={.status.stableVersion}=3", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
    phase = sandbox.kubectl("get", "lro/checkout-api", "-o", "jsonpath={.status.phase}")
    assert phase.stdout == "Healthy"

    failing = sandbox.run(
        str(BIN / "lambda-rollouts"), "sandbox", "publish", "checkout-api", "--fail-rate", "0.5"
    )
    assert failing.returncode == 0, failing.stderr
    assert failing.stdout.splitlines()[0] == (
        "Published checkout-api version 4, failing 50% of its invocations. Roll it out with:"
    )
    # Version 4's code fails every other invocation.
    answer = sandbox.with_lambda_client(
        "print(' '.join(client.invoke(FunctionName='checkout-api', Qualifier='4').get('FunctionError', '-')"
        " for _ in range(4)))\n"
    )
    assert answer.stdout.split() == ["-", "Unhandled", "-", "Unhandled"], answer.stderr


def test_the_sandbox_removes_its_address_when_it_stops(tmp_path: pathlib.Path) -> None:
    with started(tmp_path) as running:
        assert (tmp_path / ".sandbox" / "sandbox.json").exists()
        assert (
            json.loads((tmp_path / ".sandbox" / "sandbox.json").read_text())["aws_endpoint_url"]
            == (running.exports["AWS_ENDPOINT_URL"])
        )
    assert not (tmp_path / ".sandbox" / "sandbox.json").exists()
    assert not (tmp_path / ".sandbox" / "env").exists()
    result = CliRunner().invoke(
        cli.main, ["sandbox", "publish", "checkout-api", "--dir", str(tmp_path / ".sandbox")]
    )
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: no running sandbox found: {tmp_path / '.sandbox' / 'sandbox.json'} does not exist."
    )


def test_the_traffic_default_shown_in_help_is_the_sandboxs() -> None:
    [option] = [param for param in cli.sandbox.params if param.name == "traffic"]
    assert option.default == DEFAULT_TRAFFIC_PER_SECOND


def test_publish_names_a_sandbox_that_is_gone(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "sandbox.json"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(gone.stdout)
    state.write_text(
        json.dumps(
            {"pid": pid, "region": "us-east-1", "aws_endpoint_url": "http://127.0.0.1:9", "kubeconfig": "k"}
        )
    )
    result = CliRunner().invoke(cli.main, ["sandbox", "publish", "checkout-api", "--dir", str(tmp_path)])
    assert (result.exit_code, result.output) == (
        1,
        f"Error: the sandbox that wrote {state} (process {pid}) is no longer running: start it again\n",
    )
    state.write_text("{not json")
    result = CliRunner().invoke(cli.main, ["sandbox", "publish", "checkout-api", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot read the sandbox's address from {state}: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--traffic", "5", "publish", "x"],
            "Error: --traffic is for starting a sandbox, not for `sandbox publish`.",
        ),
        (
            ["--no-operator", "-v", "publish", "x"],
            "Error: --no-operator, --verbose are for starting a sandbox, not for `sandbox publish`.",
        ),
        (
            ["publish", "x", "--fail-rate", "1.5"],
            "Error: Invalid value for '--fail-rate': 1.5 is not in the range 0<=x<=1.",
        ),
        (["--traffic", "-1"], "Error: Invalid value for '--traffic': -1.0 is not in the range x>=0."),
    ],
)
def test_sandbox_options_are_checked(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli.main, ["sandbox", *args])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == message


def test_publish_names_the_functions_there_are_for_one_that_is_not(sandbox: Running) -> None:
    result = CliRunner().invoke(
        cli.main, ["sandbox", "publish", "checkout-ap", "--dir", str(sandbox.workdir / ".sandbox")]
    )
    assert (result.exit_code, result.output) == (
        1,
        "Error: no function checkout-ap in the sandbox (it has: checkout-api, checkout-smoke)\n",
    )
