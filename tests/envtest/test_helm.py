"""The Helm chart on a real API server: ``helm install`` on a fresh cluster creates every object of
the chart, and the operator, run with what the chart installed, rolls a canary out to Healthy.

There is no kubelet here, so the Deployment's pods never run: the test does what a kubelet would
do with the installed Deployment's pod template. It runs the container's command (the image's
entrypoint ``lambda-rollouts`` with the template's ``args``) with the container's environment
(``POD_ID`` from the pod's name, the tenancy and notifications ConfigMaps written where the
template mounts them), as the chart's ServiceAccount (a TokenRequest token) under the chart's RBAC
and peering. Only the AWS endpoint (moto) is the test's. The chart's values set the region,
tenancy, default notifications, watched namespaces and ports, so a wrong rendering of any of them
fails the canary, its notification or the probes.

The cluster is an API server of this module's own: a user's fresh cluster, where the chart
installs the CRDs itself (the tier's shared server already has them, from kubectl, which Helm
would refuse to adopt).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from lambda_rollouts.model import ConditionType, Phase, Reason
from lambda_rollouts.sandbox.aws import MotoSandbox, seed_demo_function
from lambda_rollouts.testing.receivers import Receiver

from ..gobuild import go_program
from .apiserver import ApiServer, assets_dir, clean_environment, free_port
from .harness import (
    OperatorProcess,
    alias_of,
    audit_denials,
    phase_is,
    rollout_manifest,
    unique,
    wait_for,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "lambda-rollouts"
RELEASE = "lambda-rollouts"
NAMESPACE = "lambda-rollouts"
SERVICE_ACCOUNT_USER = f"system:serviceaccount:{NAMESPACE}:lambda-rollouts"
# Not the harness's default region: the canary only finds its function if the chart's region
# reached the operator.
CHART_REGION = "eu-west-1"
SIGNING_KEY = "pl4tform-s1gning-k3y"

# The first build of helm takes a few minutes on two cores (then it is cached).
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="session")
def helm() -> str:
    return str(go_program("helm", timeout=1100))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(assets_dir(), tmp_path_factory.mktemp("helm-envtest")).start()
    try:
        yield server
    finally:
        server.stop()


class Helm:
    """helm as the cluster's admin, with Helm's own directories of the test's."""

    def __init__(self, binary: str, server: ApiServer, home: Path) -> None:
        self.binary = binary
        self.env = {key: value for key, value in clean_environment().items() if not key.startswith("HELM_")}
        self.env["KUBECONFIG"] = str(server.admin_kubeconfig)
        for name in ("CACHE", "CONFIG", "DATA"):
            self.env[f"HELM_{name}_HOME"] = str(home / name.lower())

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=180, env=self.env, check=False
        )
        assert result.returncode == 0, f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result.stdout


def pod_command(
    deployment: dict[str, Any], server: ApiServer, pod_name: str, volumes_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """The operator container's arguments and environment, as a kubelet would give them."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container, "the image's entrypoint is lambda-rollouts"
    namespace = deployment["metadata"]["namespace"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounted: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue  # the emptyDir of /tmp: the process has a /tmp of its own
        config_map = json.loads(
            server.kubectl("get", "configmap", source["name"], "-n", namespace, "-o", "json").stdout
        )
        local = volumes_dir / mount["name"]
        local.mkdir(parents=True)
        items = source.get("items") or [{"key": name, "path": name} for name in config_map["data"]]
        for item in items:
            (local / item["path"]).write_text(config_map["data"][item["key"]])
        mounted[mount["mountPath"]] = local
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for variable in container["env"]:
        if "value" in variable:
            value = variable["value"]
        else:
            value = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        for mount_path, local in mounted.items():
            if value.startswith(f"{mount_path}/"):
                value = f"{local}{value[len(mount_path) :]}"
        env[variable["name"]] = value
    return list(container["args"]), env


def wait_for_http(url: str, timeout: float = 60.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    last = "no answer"
    with requests.Session() as session:
        session.trust_env = False
        while time.monotonic() < deadline:
            try:
                response = session.get(url, timeout=5)
                if response.status_code == 200:
                    return response
                last = f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s: {last}")


def manifest_objects(helm: Helm) -> list[dict[str, Any]]:
    manifest = helm("get", "manifest", RELEASE, "--namespace", NAMESPACE)
    return [document for document in yaml.safe_load_all(manifest) if document]


def read_back(server: ApiServer, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as the API server has them (``kubectl get -f``); absent ones are left out."""
    result = server.kubectl(
        "get",
        "-f",
        "-",
        "-o",
        "json",
        "--ignore-not-found",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    if not result.stdout.strip():
        return []
    body = json.loads(result.stdout)
    items: list[dict[str, Any]] = body["items"] if body.get("kind") == "List" else [body]
    return items


INSTALLED = [
    ("Namespace", NAMESPACE),
    ("CustomResourceDefinition", "lambdarollouts.lambda.rollouts.dev"),
    ("ServiceAccount", "lambda-rollouts"),
    ("ClusterRole", "lambda-rollouts"),
    ("ClusterRoleBinding", "lambda-rollouts"),
    ("ClusterKopfPeering", "lambda-rollouts"),
    ("ConfigMap", "lambda-rollouts-tenancy"),
    ("ConfigMap", "lambda-rollouts-notifications"),
    ("Deployment", "lambda-rollouts"),
    ("Service", "lambda-rollouts-metrics"),
]


def install(run: Helm, cluster: ApiServer, values_path: Path) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    """``helm install``; every object of the release is on the server as the chart rendered it."""
    run(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--values",
        str(values_path),
    )
    status = json.loads(run("status", RELEASE, "--namespace", NAMESPACE, "--output", "json"))
    assert status["info"]["status"] == "deployed", status["info"]
    objects = manifest_objects(run)
    assert sorted((item["kind"], item["metadata"]["name"]) for item in objects) == sorted(INSTALLED)
    stored = {(item["kind"], item["metadata"]["name"]): item for item in read_back(cluster, objects)}
    for item in objects:
        found = stored.get((item["kind"], item["metadata"]["name"]))
        assert found is not None, f"{item['kind']}/{item['metadata']['name']} was not created"
        # (The API server adds kubernetes.io/metadata.name to a namespace.)
        assert found["metadata"]["labels"].items() >= item["metadata"]["labels"].items()
        assert found["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    # The namespace is the chart's (with its Pod Security labels), not only --create-namespace's.
    labels = stored["Namespace", NAMESPACE]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # Kopf's peering CRD comes from the chart's crds/, which Helm installs before the templates.
    cluster.kubectl("get", "crd", "clusterkopfpeerings.kopf.dev")
    # A pod is scheduled after its binding takes effect; the operator run here starts at once.
    cluster.wait_authorized(SERVICE_ACCOUNT_USER)
    return objects, stored


def assert_signed_success_notice(receiver: Receiver, team: str, canary: str) -> None:
    """The chart's default subscription told the platform's webhook of the promotion, signed."""
    wait_until(lambda: len(receiver.delivered) == 1, timeout=60, what="the default notification")
    (received,) = receiver.requests
    body = json.loads(received.body)
    assert (body["reason"], body["rollout"]) == ("Succeeded", {"namespace": team, "name": canary})
    timestamp = received.headers["X-Lambda-Rollouts-Timestamp"]
    signed = hmac.new(SIGNING_KEY.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256)
    assert received.headers["X-Lambda-Rollouts-Signature"] == f"sha256={signed.hexdigest()}"


def run_canary_as_the_chart_runs_the_operator(
    cluster: ApiServer,
    aws: MotoSandbox,
    deployment: dict[str, Any],
    team: str,
    function: str,
    ports: tuple[int, int],
    workdir: Path,
    receiver: Receiver,
) -> None:
    args, env = pod_command(deployment, cluster, unique("lambda-rollouts-pod"), workdir / "volumes")
    assert args[0] == "run"
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    token = cluster.service_account_token(NAMESPACE, account)
    operator = OperatorProcess(
        workdir / "operator.log",
        aws.endpoint_url,
        kubeconfig=cluster.kubeconfig_token("chart-service-account", token),
        args=args[1:],
        env=env,
    )
    try:
        # The probes' endpoint and the metrics Service's port are what the operator serves.
        health_port, metrics_port = ports
        wait_for_http(f"http://127.0.0.1:{health_port}/healthz")
        assert "lambda_rollouts_" in wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics").text

        canary = unique("canary")
        cluster.kubectl("apply", "-f", "-", input=json.dumps(rollout_manifest(canary, team, function)))
        body = wait_for(
            cluster, team, canary, phase_is(Phase.HEALTHY), what="Healthy", operator=operator, timeout=90
        )
        assert body is not None
        assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
        assert alias_of(aws.endpoint_url, function, region=CHART_REGION) == ("2", {})
        assert_signed_success_notice(receiver, team, canary)

        # The tenancy ConfigMap was read: this namespace may not target other functions.
        forbidden = unique("forbidden")
        manifest = rollout_manifest(forbidden, team, unique("other"))
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        body = wait_for(
            cluster, team, forbidden, phase_is(Phase.DEGRADED), what="Degraded", operator=operator, timeout=60
        )
        assert body is not None
        stalled = [c for c in body["status"]["conditions"] if c["type"] == ConditionType.STALLED]
        assert [(c["status"], c["reason"]) for c in stalled] == [("True", Reason.FORBIDDEN)]

        # Every rollout carries the operator's finalizer: they go while it runs.
        cluster.kubectl("delete", "lambdarollout", canary, forbidden, "-n", team, "--timeout=60s")
    finally:
        returncode = operator.stop()
    assert returncode == 0, operator.log()


def upgrade_to_text_logs(
    run: Helm, cluster: ApiServer, values_path: Path, deployment: dict[str, Any]
) -> None:
    """``helm upgrade`` with one value changed changes that, and only that, in the container."""
    run(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--values",
        str(values_path),
        "--set",
        "logFormat=text",
    )
    status = json.loads(run("status", RELEASE, "--namespace", NAMESPACE, "--output", "json"))
    assert (status["version"], status["info"]["status"]) == (2, "deployed")
    upgraded = json.loads(
        cluster.kubectl("get", "deployment", "lambda-rollouts", "-n", NAMESPACE, "-o", "json").stdout
    )
    (before,) = deployment["spec"]["template"]["spec"]["containers"]
    (after,) = upgraded["spec"]["template"]["spec"]["containers"]
    expected = [
        {"name": item["name"], "value": "text"} if item["name"] == "LAMBDA_ROLLOUTS_LOG_FORMAT" else item
        for item in before["env"]
    ]
    assert after["env"] == expected


def chart_values(team: str, ports: tuple[int, int], webhook_url: str) -> dict[str, Any]:
    return {
        "serviceAccount": {"roleArn": ""},  # EKS Pod Identity: moto takes any credentials
        "aws": {"region": CHART_REGION},
        "watchNamespaces": [team],
        "tenancy": {
            "policies": {team: {"functions": ["fn-*"], "regions": [CHART_REGION]}, "*": {"functions": []}}
        },
        "notifications": {
            "defaults": [
                {
                    "events": ["Succeeded"],
                    "webhook": {
                        "url": webhook_url,
                        "secretRef": {"name": "platform-signing", "key": "key", "namespace": NAMESPACE},
                    },
                }
            ],
            "maxAttempts": 3,
        },
        # The platform's receiver is on loopback here, which the address rule refuses unless allowed.
        "extraEnv": [{"name": "LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS", "value": "127.0.0.1/32"}],
        "healthPort": ports[0],
        "metrics": {"port": ports[1]},
    }


def test_helm_install_creates_every_object_and_its_operator_runs_a_canary(
    cluster: ApiServer, aws: MotoSandbox, helm: str, tmp_path: Path
) -> None:
    team = unique("team")
    cluster.kubectl("create", "namespace", team)
    function = seed_demo_function(aws.endpoint_url, CHART_REGION, name=unique("fn"))["function_name"]
    ports = free_port(), free_port()
    with Receiver().in_thread() as receiver:
        values_path = tmp_path / "values.yaml"
        values_path.write_text(yaml.safe_dump(chart_values(team, ports, receiver.url("/deploys"))))
        run = Helm(helm, cluster, tmp_path / "helm-home")

        objects, stored = install(run, cluster, values_path)
        cluster.kubectl(
            "create",
            "secret",
            "generic",
            "platform-signing",
            "-n",
            NAMESPACE,
            f"--from-literal=key={SIGNING_KEY}",
        )
        deployment = stored["Deployment", "lambda-rollouts"]
        run_canary_as_the_chart_runs_the_operator(
            cluster, aws, deployment, team, function, ports, tmp_path, receiver
        )
    assert audit_denials(cluster, SERVICE_ACCOUNT_USER) == []
    upgrade_to_text_logs(run, cluster, values_path, deployment)

    run("uninstall", RELEASE, "--namespace", NAMESPACE)
    left = {(item["kind"], item["metadata"]["name"]): item for item in read_back(cluster, objects)}
    # The CRD stays (helm.sh/resource-policy: keep); without a namespace controller here, the
    # namespace stays Terminating.
    assert sorted(left) == [
        ("CustomResourceDefinition", "lambdarollouts.lambda.rollouts.dev"),
        ("Namespace", NAMESPACE),
    ]
    assert left["Namespace", NAMESPACE]["metadata"].get("deletionTimestamp")
