"""Kopf's peering convention as a newcomer meets it, on the real API server under deploy/'s RBAC
(the ServiceAccount's token), with deploy/'s ``ClusterKopfPeering`` taken away for this module:

- ``lambda-rollouts run`` without peering options on a cluster with the CRDs only acts standalone,
  says so with a warning, and moves a rollout;
- the Deployment's own arguments name the peering: without the object the operator does nothing,
  logs an error (no traceback) and its liveness endpoint, which both probes ask, fails; once the
  object is applied, the probe passes and the rollout goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from lambda_rollouts.peering import DEFAULT_PEERING_NAME

from .apiserver import ApiServer, free_port
from .harness import SERVICE_ACCOUNT_USER, OperatorProcess, Scene, audit_denials, phase_is, unique

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def without_peering_object(deployed: ApiServer) -> Iterator[ApiServer]:
    """deploy/ applied, then its ClusterKopfPeering deleted; deploy/ is applied again afterwards."""
    deployed.kubectl("delete", "clusterkopfpeering", DEFAULT_PEERING_NAME, "--ignore-not-found")
    yield deployed
    deployed.kubectl("apply", "-k", str(ROOT / "deploy"))


@pytest.fixture
def scene_server(without_peering_object: ApiServer) -> ApiServer:
    return without_peering_object


@pytest.fixture
def service_account(without_peering_object: ApiServer) -> Path:
    token = without_peering_object.service_account_token("lambda-rollouts", "lambda-rollouts")
    return without_peering_object.kubeconfig_token(unique("service-account"), token)


def probe(url: str) -> tuple[int, Any]:
    """(HTTP status, JSON body or None) of the liveness endpoint; (0, None) while it is not up."""
    with requests.Session() as session:
        session.trust_env = False
        try:
            response = session.get(url, timeout=5)
        except requests.RequestException:
            return 0, None
    return response.status_code, response.json() if response.status_code == 200 else None


def wait_for_probe(url: str, status: int, operator: OperatorProcess, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        last = probe(url)
        if last[0] == status:
            return last[1]
        time.sleep(0.5)
    raise AssertionError(f"the probe answered {last} for {timeout}s, not {status}\n{operator.log()}")


def deployment_args(liveness: str) -> list[str]:
    """The arguments of deploy/'s container after ``run``, listening on ``liveness`` instead."""
    deployment = yaml.safe_load((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run"
    given = list(args[1:])
    given[given.index("--liveness") + 1] = liveness
    return given


def test_without_peering_options_or_object_the_operator_acts_standalone(
    service_account: Path, scene: Scene
) -> None:
    operator = scene.start_operator(service_account, args=["-n", scene.namespace])
    name = unique("canary")
    scene.apply(scene.manifest(name))
    scene.wait_for(name, phase_is("Healthy"), what="Healthy", timeout=90)
    assert scene.alias() == ("2", {})
    warnings = [
        line for line in operator.log(400).splitlines() if "WARNING" in line and "acting standalone" in line
    ]
    assert len(warnings) == 1, operator.log()
    assert f"ClusterKopfPeering {DEFAULT_PEERING_NAME!r} not found: acting standalone" in warnings[0]
    scene.delete(name)
    assert audit_denials(scene.server, SERVICE_ACCOUNT_USER) == []


def test_the_deployments_named_peering_without_its_object_fails_the_probe_and_acts_not(
    service_account: Path, scene: Scene
) -> None:
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    args = deployment_args(liveness)
    assert args[args.index("--peering") + 1] == DEFAULT_PEERING_NAME
    operator = scene.start_operator(service_account, args=[*args, "-n", scene.namespace])
    name = unique("canary")
    scene.apply(scene.manifest(name))

    wait_for_probe(liveness, 500, operator)
    # Still nothing done some seconds later: no status, the alias as it was.
    time.sleep(5)
    assert probe(liveness)[0] == 500
    assert ((scene.read(name) or {}).get("status") or {}).get("phase") is None
    assert scene.alias() == ("1", {})
    log = operator.log(400)
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1, log
    assert f"ClusterKopfPeering {DEFAULT_PEERING_NAME!r} not found: this replica does nothing" in errors[0]
    assert "Traceback" not in log

    # The object applied (as `kubectl apply -k deploy/` does): the probe passes, the rollout goes on.
    scene.server.kubectl("apply", "-k", str(ROOT / "deploy"))
    body = wait_for_probe(liveness, 200, operator)
    assert body == {"peering": f"ClusterKopfPeering {DEFAULT_PEERING_NAME}"}
    scene.wait_for(name, phase_is("Healthy"), what="Healthy", timeout=90)
    assert scene.alias() == ("2", {})
    scene.delete(name)
    scene.server.kubectl("delete", "clusterkopfpeering", DEFAULT_PEERING_NAME)
    assert audit_denials(scene.server, SERVICE_ACCOUNT_USER) == []
    assert "Traceback" not in operator.log(1000)
