"""The sandbox as a user drives it: the real kubectl applies the example and reads the columns."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys

import yaml
from tests.sandbox.sandbox_command import EXPORTED, started

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
    # Kopf takes SIGTERM (what a process manager sends) for itself; the sandbox must stop too.
    with started(tmp_path, stop_signal=signal.SIGTERM) as running:
        assert list(running.exports) == EXPORTED
        assert (tmp_path / ".sandbox" / "kubeconfig").exists()
