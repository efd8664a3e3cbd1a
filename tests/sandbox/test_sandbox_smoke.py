"""The sandbox as a user drives it: the real kubectl applies the example and reads the columns."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import subprocess
import sys

import yaml

from lambda_rollouts.sandbox.demo import DEMO_ROLLOUT
from lambda_rollouts.sandbox.runtime import open_sandbox

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBECTL = pathlib.Path(sys.executable).with_name("kubectl")


def test_the_demo_applies_exactly_the_canary_example() -> None:
    assert yaml.safe_load((ROOT / "examples" / "canary.yaml").read_text()) == DEMO_ROLLOUT


async def kubectl(kubeconfig: pathlib.Path, *args: str) -> tuple[int, str, str]:
    # The emulator serves from this event loop, so kubectl must not block it.
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_kubectl_applies_the_example_and_watches_it_become_healthy(tmp_path: pathlib.Path) -> None:
    async with open_sandbox(workdir=tmp_path) as sandbox:
        config = sandbox.kubeconfig_path
        code, out, err = await kubectl(config, "apply", "-f", str(ROOT / "examples/canary.yaml"))
        assert code == 0, err
        assert "lambdarollout.lambda.rollouts.dev/checkout-api created" in out

        code, out, err = await kubectl(
            config, "wait", "lro/checkout-api", "--for=jsonpath={.status.phase}=Healthy", "--timeout=60s"
        )
        assert code == 0, err

        code, out, err = await kubectl(config, "get", "lambdarollouts")
        assert code == 0, err
        header, row = out.splitlines()
        assert header.split() == ["NAME", "FUNCTION", "ALIAS", "STABLE", "CANARY", "WEIGHT", "PHASE", "AGE"]
        assert row.split()[:7] == ["checkout-api", "checkout-api", "live", "2", "2", "100", "Healthy"]

        code, out, err = await kubectl(config, "get", "lro", "-o", "wide")
        assert code == 0, err
        assert out.splitlines()[0].split()[-2:] == ["STEP", "MESSAGE"]

        bad = (
            (ROOT / "examples/canary.yaml")
            .read_text()
            .replace('"2"', '"$LATEST"')
            .replace("name: checkout-api\n  namespace", "name: broken\n  namespace")
        )
        bad_file = tmp_path / "bad.yaml"
        bad_file.write_text(bad)
        code, out, err = await kubectl(config, "apply", "-f", str(bad_file))
        assert code != 0
        assert 'spec.version: Invalid value: "$LATEST"' in err


def test_the_sandbox_command_prints_the_exports_and_stops_on_sigterm(tmp_path: pathlib.Path) -> None:
    command = pathlib.Path(sys.executable).with_name("lambda-rollouts")
    process = subprocess.Popen(
        [str(command), "sandbox"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        exports = [line.split()[1].split("=")[0] for line in lines if line.startswith("export ")]
        assert exports == [
            "KUBECONFIG",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
        ]
        assert (tmp_path / ".sandbox" / "kubeconfig").exists()
        # Kopf takes SIGTERM (what a process manager sends) for itself; the sandbox must stop too.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) is not None
    finally:
        process.kill()
        process.wait()
