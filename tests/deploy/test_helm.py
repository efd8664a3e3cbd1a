"""The Helm chart deploy/helm/lambda-rollouts, rendered and linted by the real Helm (v4, built from
the Go module proxy by ``tools/gobuild.sh helm``; a missing Go fails these tests, it never skips them).

- ``helm lint --strict`` passes, with the default values and with every option on;
- with the default values, ``helm template`` renders the same objects as ``kubectl kustomize
  deploy/``, once Helm's standard labels (and the chart's keep policy on the CRD) are taken away:
  the guard against the chart and the kustomize base drifting apart;
- each value changes exactly what it should, and nothing else (a table of values and the change
  they make to the default objects);
- values.schema.json refuses bad values with helm's exit code and a message that names the value;
- the chart's copies of the CRDs equal the repository's, and its README documents every value
  with its default.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from lambda_rollouts import settings as settings_module
from lambda_rollouts.model import Reason

from ..gobuild import go_program

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "lambda-rollouts"
DEPLOY = ROOT / "deploy"
RELEASE = "lambda-rollouts"
NAMESPACE = "lambda-rollouts"
CHART_VERSION = "0.1.0"
HELM_VERSION = "v4.3.2"
# What a chart adds to every object it renders itself (not to the files of its crds/ directory).
HELM_LABELS = {
    "helm.sh/chart": f"lambda-rollouts-{CHART_VERSION}",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/version": CHART_VERSION,
    "app.kubernetes.io/managed-by": "Helm",
}
KEEP = {"helm.sh/resource-policy": "keep"}
# `helm template` renders what `helm install` installs once it is given this flag: the files of the
# chart's crds/ directory too (`helm install --skip-crds` leaves them out; `helm template` without it).
WITH_CRDS = ("--include-crds",)
LAMBDA_ROLLOUT_CRD = ("CustomResourceDefinition", None, "lambdarollouts.lambda.rollouts.dev")
PEERING_CRD = ("CustomResourceDefinition", None, "clusterkopfpeerings.kopf.dev")

# The first build of helm takes a few minutes on two cores (then it is cached); the rest is quick.
pytestmark = pytest.mark.timeout(1200)

Key = tuple[str, str | None, str]
Objects = dict[Key, dict[str, Any]]


# -- helm and kubectl ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary of tools/go/helm, built (or found in the cache) by tools/gobuild.sh."""
    return str(go_program("helm", timeout=1100))


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


def helm_environment(home: Path) -> dict[str, str]:
    """No kubeconfig, and Helm's own directories of the test's: the machine's set-up is not tested."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HELM_")}
    env.pop("KUBECONFIG", None)
    for name in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{name}_HOME"] = str(home / name.lower())
    return env


def run_helm(helm: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=120, env=helm_environment(home), check=False
    )


def values_file(directory: Path, values: Mapping[str, Any]) -> Path:
    path = (
        directory
        / f"values-{hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]}.yaml"
    )
    path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    return path


def render(
    helm: str,
    home: Path,
    values: Mapping[str, Any] | None = None,
    flags: Sequence[str] = WITH_CRDS,
    release: str = RELEASE,
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE, *flags]
    if values:
        args += ["--values", str(values_file(home, values))]
    result = run_helm(helm, home, *args)
    assert result.returncode == 0, f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def kubectl() -> str:
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found beside the interpreter or on PATH: install the dev extras (.[dev])")
    return found


@pytest.fixture(scope="module")
def kustomized() -> Objects:
    result = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize deploy/ failed:\n{result.stderr}"
    return keyed(document for document in yaml.safe_load_all(result.stdout) if document)


# -- objects, keyed and normalised ------------------------------------------------------------------


def key(item: Mapping[str, Any]) -> Key:
    return item["kind"], item["metadata"].get("namespace"), item["metadata"]["name"]


def keyed(items: Iterator[dict[str, Any]] | Sequence[dict[str, Any]]) -> Objects:
    objects: Objects = {}
    for item in items:
        assert key(item) not in objects, f"rendered twice: {key(item)}"
        objects[key(item)] = item
    return objects


def _without_instance(labels: dict[str, Any], where: str) -> dict[str, Any]:
    # Helm's convention: the release is part of every selector, so that two releases never select
    # each other's pods.
    assert labels.get("app.kubernetes.io/instance") == RELEASE, f"{where} lacks the release label"
    return {name: value for name, value in labels.items() if name != "app.kubernetes.io/instance"}


def normalised(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` without what the chart legitimately adds; fails if it adds anything else there."""
    item = copy.deepcopy(item)
    metadata = item["metadata"]
    labels = metadata.get("labels", {})
    added = {name: labels[name] for name in HELM_LABELS if name in labels}
    # The files of crds/ are applied as they are; everything else carries every one of Helm's labels.
    assert added in ({}, HELM_LABELS), f"{key(item)}: Helm's labels are {added}"
    assert added or key(item) == PEERING_CRD, f"{key(item)} lacks Helm's labels"
    metadata["labels"] = {name: value for name, value in labels.items() if name not in HELM_LABELS}
    if metadata.get("annotations") == KEEP and key(item) == LAMBDA_ROLLOUT_CRD:
        del metadata["annotations"]
    where = f"{item['kind']}/{metadata['name']}"
    spec = item.get("spec", {})
    if item["kind"] == "Deployment":
        spec["selector"]["matchLabels"] = _without_instance(spec["selector"]["matchLabels"], where)
        template = spec["template"]
        template["metadata"]["labels"] = _without_instance(template["metadata"]["labels"], where)
        for constraint in template["spec"].get("topologySpreadConstraints", []):
            selector = constraint["labelSelector"]
            selector["matchLabels"] = _without_instance(selector["matchLabels"], where)
    elif item["kind"] == "Service":
        spec["selector"] = _without_instance(spec["selector"], where)
    elif item["kind"] == "ServiceMonitor":
        spec["selector"]["matchLabels"] = _without_instance(spec["selector"]["matchLabels"], where)
    return item


def normalised_render(
    helm: str, home: Path, values: Mapping[str, Any] | None = None, flags: Sequence[str] = WITH_CRDS
) -> Objects:
    return {name: normalised(item) for name, item in keyed(render(helm, home, values, flags)).items()}


def assert_same_objects(actual: Objects, expected: Objects) -> None:
    assert sorted(actual, key=str) == sorted(expected, key=str)
    for name, item in expected.items():
        if actual[name] != item:
            diff = difflib.unified_diff(
                yaml.safe_dump(item, sort_keys=True).splitlines(),
                yaml.safe_dump(actual[name], sort_keys=True).splitlines(),
                "expected",
                "rendered",
                lineterm="",
            )
            pytest.fail(f"{name} differs:\n" + "\n".join(diff))


# -- the binary, lint and the kustomize base --------------------------------------------------------


def test_helm_is_the_pinned_version(helm: str, helm_home: Path) -> None:
    result = run_helm(helm, helm_home, "version", "--template", "{{ .Version }} {{ .GitTreeState }}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{HELM_VERSION} clean"


EVERYTHING_ON: dict[str, Any] = {
    "image": {"repository": "registry.example.com/lambda-rollouts", "tag": "0.2.0", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "replicas": 3,
    "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/rollouts", "annotations": {"team": "x"}},
    "aws": {"region": "eu-west-1"},
    "tenancy": {
        "policies": {
            "team-a": {
                "functions": ["checkout-*"],
                "regions": ["eu-west-1"],
                "hookUrls": ["https://ci.example.com/hooks/"],
            }
        }
    },
    "notifications": {
        "defaults": [
            {"events": ["RolledBack"], "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}}}
        ],
        "maxAttempts": 3,
        "timeoutSeconds": 5,
        "deadlineSeconds": 120,
    },
    "watchNamespaces": ["team-a", "team-b"],
    "logFormat": "text",
    "metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "healthPort": 8081,
    "extraEnv": [{"name": "LAMBDA_ROLLOUTS_DRIFT_CHECK_INTERVAL_SECONDS", "value": "60"}],
    "podAnnotations": {"example.com/owner": "platform"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "ops", "operator": "Exists"}]}]
            }
        }
    },
}


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_helm_lint_strict_passes(helm: str, helm_home: Path, values: dict[str, Any]) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["--values", str(values_file(helm_home, values))]
    result = run_helm(helm, helm_home, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_the_default_render_is_the_kustomize_base(helm: str, helm_home: Path, kustomized: Objects) -> None:
    assert_same_objects(normalised_render(helm, helm_home), kustomized)


def test_only_the_lambda_rollout_crd_is_kept_on_uninstall(helm: str, helm_home: Path) -> None:
    kept = [key(item) for item in render(helm, helm_home) if item["metadata"].get("annotations") == KEEP]
    assert kept == [LAMBDA_ROLLOUT_CRD]


@pytest.mark.parametrize("version", ["1.31", kubernetes_validate.latest_version()])
def test_every_option_renders_valid_kubernetes_objects(helm: str, helm_home: Path, version: str) -> None:
    # The strict schemas reject unknown fields, which the API server would drop without a word.
    for item in render(helm, helm_home, EVERYTHING_ON):
        if item["kind"] in ("ClusterKopfPeering", "ServiceMonitor"):
            continue  # custom resources: no schema in the validator
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{item['kind']}/{item['metadata']['name']} at {where}: {error.message}")


# -- what each value changes -----------------------------------------------------------------------

DEPLOYMENT = ("Deployment", NAMESPACE, "lambda-rollouts")
SERVICE_ACCOUNT = ("ServiceAccount", NAMESPACE, "lambda-rollouts")
SERVICE = ("Service", NAMESPACE, "lambda-rollouts-metrics")
POLICIES = {
    "team-a": {
        "functions": ["checkout-*"],
        "accounts": ["111122223333"],
        "regions": ["eu-west-1"],
        "hookUrls": ["https://ci.example.com/hooks/"],
    },
    "*": {"functions": []},
}
# Subscriptions of every rollout: one whose Secret names no namespace (the release's, then).
DEFAULT_NOTIFICATIONS = [
    {
        "events": ["RolledBack", "Succeeded"],
        "slack": {"webhookSecretRef": {"name": "platform-slack", "key": "url"}},
    },
    {
        "events": ["Aborted"],
        "webhook": {
            "url": "https://ci.example.com/hooks/lambda",
            "secretRef": {"name": "signing", "key": "key", "namespace": "platform"},
        },
    },
]
# The settings files the chart can mount: (values key, the file's part of the name, its variable).
SETTINGS_FILES = {
    "tenancy": "LAMBDA_ROLLOUTS_TENANCY_FILE",
    "notifications": "LAMBDA_ROLLOUTS_NOTIFICATIONS_FILE",
}
OPERATOR_LABELS = {"app.kubernetes.io/name": "lambda-rollouts", "app.kubernetes.io/component": "operator"}


def pod(objects: Objects) -> dict[str, Any]:
    spec: dict[str, Any] = objects[DEPLOYMENT]["spec"]["template"]["spec"]
    return spec


def container(objects: Objects) -> dict[str, Any]:
    (only,) = pod(objects)["containers"]
    result: dict[str, Any] = only
    return result


def env_of(objects: Objects) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = container(objects)["env"]
    return env


def set_role(objects: Objects, rendered: Objects) -> None:
    objects[SERVICE_ACCOUNT]["metadata"]["annotations"] = {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/rollouts"
    }


def no_role(objects: Objects, rendered: Objects) -> None:
    del objects[SERVICE_ACCOUNT]["metadata"]["annotations"]


def role_and_annotations(objects: Objects, rendered: Objects) -> None:
    objects[SERVICE_ACCOUNT]["metadata"]["annotations"] = {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/rollouts",
        "example.com/team": "payments",
    }


def region(objects: Objects, rendered: Objects) -> None:
    env_of(objects).append({"name": "AWS_REGION", "value": "eu-west-1"})


def _mount_settings(objects: Objects, part: str, config_map: str, key_name: str) -> None:
    env_of(objects).append(
        {"name": SETTINGS_FILES[part], "value": f"/etc/lambda-rollouts/{part}/{part}.yaml"}
    )
    container(objects)["volumeMounts"].append(
        {"name": part, "mountPath": f"/etc/lambda-rollouts/{part}", "readOnly": True}
    )
    pod(objects)["volumes"].append(
        {
            "name": part,
            "configMap": {"name": config_map, "items": [{"key": key_name, "path": f"{part}.yaml"}]},
        }
    )


def _inline_settings(objects: Objects, rendered: Objects, part: str, content: Any) -> None:
    name = f"lambda-rollouts-{part}"
    text = rendered["ConfigMap", NAMESPACE, name]["data"][f"{part}.yaml"]
    assert yaml.safe_load(text) == content
    objects["ConfigMap", NAMESPACE, name] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": OPERATOR_LABELS},
        "data": {f"{part}.yaml": text},
    }
    _mount_settings(objects, part, name, f"{part}.yaml")
    # The pods restart when the file changes: settings are read at start.
    checksum = hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    annotations = objects[DEPLOYMENT]["spec"]["template"]["metadata"].setdefault("annotations", {})
    annotations[f"checksum/{part}"] = checksum


def inline_tenancy(objects: Objects, rendered: Objects) -> None:
    _inline_settings(objects, rendered, "tenancy", POLICIES)


def existing_tenancy(objects: Objects, rendered: Objects) -> None:
    _mount_settings(objects, "tenancy", "team-policies", "policies.json")


def inline_notifications(objects: Objects, rendered: Objects) -> None:
    _inline_settings(objects, rendered, "notifications", DEFAULT_NOTIFICATIONS)


def existing_notifications(objects: Objects, rendered: Objects) -> None:
    _mount_settings(objects, "notifications", "platform-notifications", "subscriptions.json")


def delivery_bounds(objects: Objects, rendered: Objects) -> None:
    env_of(objects).extend(
        [
            {"name": "LAMBDA_ROLLOUTS_NOTIFICATIONS_MAX_ATTEMPTS", "value": "3"},
            {"name": "LAMBDA_ROLLOUTS_NOTIFICATIONS_TIMEOUT_SECONDS", "value": "2.5"},
            {"name": "LAMBDA_ROLLOUTS_NOTIFICATIONS_DEADLINE_SECONDS", "value": "600"},
        ]
    )


def namespaces(objects: Objects, rendered: Objects) -> None:
    container(objects)["args"] += ["--namespace", "team-a", "--namespace", "team-b"]


def resources(objects: Objects, rendered: Objects) -> None:
    # Helm merges the given values into the defaults: null takes the CPU limit away.
    container(objects)["resources"] = {
        "requests": {"cpu": "50m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }


def service_monitor(objects: Objects, rendered: Objects) -> None:
    name = ("ServiceMonitor", NAMESPACE, "lambda-rollouts")
    objects[name] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": "lambda-rollouts",
            "namespace": NAMESPACE,
            "labels": {**OPERATOR_LABELS, "release": "prometheus"},
        },
        "spec": {
            "selector": {"matchLabels": OPERATOR_LABELS},
            "namespaceSelector": {"matchNames": [NAMESPACE]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "1m"}],
        },
    }


def text_logs(objects: Objects, rendered: Objects) -> None:
    (log_format,) = [item for item in env_of(objects) if item["name"] == "LAMBDA_ROLLOUTS_LOG_FORMAT"]
    log_format["value"] = "text"


def no_lambda_rollout_crd(objects: Objects, rendered: Objects) -> None:
    del objects[LAMBDA_ROLLOUT_CRD]


def no_crds(objects: Objects, rendered: Objects) -> None:
    del objects[LAMBDA_ROLLOUT_CRD]
    del objects[PEERING_CRD]


def image(objects: Objects, rendered: Objects) -> None:
    container(objects)["image"] = "registry.example.com/lambda-rollouts:0.2.0"
    container(objects)["imagePullPolicy"] = "Always"
    pod(objects)["imagePullSecrets"] = [{"name": "registry"}]


def replicas(objects: Objects, rendered: Objects) -> None:
    objects[DEPLOYMENT]["spec"]["replicas"] = 3


def no_metrics(objects: Objects, rendered: Objects) -> None:
    del objects[SERVICE]
    env_of(objects).remove({"name": "LAMBDA_ROLLOUTS_METRICS_PORT", "value": "9090"})
    container(objects)["ports"].remove({"name": "metrics", "containerPort": 9090, "protocol": "TCP"})


def no_metrics_service(objects: Objects, rendered: Objects) -> None:
    del objects[SERVICE]


def ports(objects: Objects, rendered: Objects) -> None:
    args = container(objects)["args"]
    args[args.index("--liveness") + 1] = "http://0.0.0.0:8081/healthz"
    (metrics_env,) = [item for item in env_of(objects) if item["name"] == "LAMBDA_ROLLOUTS_METRICS_PORT"]
    metrics_env["value"] = "9100"
    container(objects)["ports"] = [
        {"name": "health", "containerPort": 8081, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9100, "protocol": "TCP"},
    ]
    objects[SERVICE]["spec"]["ports"][0]["port"] = 9100


def no_namespace(objects: Objects, rendered: Objects) -> None:
    del objects[("Namespace", None, NAMESPACE)]


def extra_env(objects: Objects, rendered: Objects) -> None:
    env_of(objects).append({"name": "LAMBDA_ROLLOUTS_DRIFT_CHECK_INTERVAL_SECONDS", "value": "60"})


def scheduling(objects: Objects, rendered: Objects) -> None:
    pod(objects)["nodeSelector"] = {"kubernetes.io/os": "linux", "example.com/pool": "ops"}
    pod(objects)["tolerations"] = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    objects[DEPLOYMENT]["spec"]["template"]["metadata"]["annotations"] = {"example.com/owner": "platform"}


# (id, values, helm's flags, the change to the default objects; it gets the rendered objects
# for what only the render can know, such as the text of a ConfigMap, which it checks first).
VALUE_CASES: list[tuple[str, dict[str, Any], tuple[str, ...], Callable[[Objects, Objects], None]]] = [
    (
        "irsa-role",
        {"serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/rollouts"}},
        WITH_CRDS,
        set_role,
    ),
    ("pod-identity", {"serviceAccount": {"roleArn": ""}}, WITH_CRDS, no_role),
    (
        "service-account-annotations",
        {
            "serviceAccount": {
                "roleArn": "arn:aws:iam::123456789012:role/rollouts",
                "annotations": {"example.com/team": "payments"},
            }
        },
        WITH_CRDS,
        role_and_annotations,
    ),
    ("region", {"aws": {"region": "eu-west-1"}}, WITH_CRDS, region),
    ("tenancy-inline", {"tenancy": {"policies": POLICIES}}, WITH_CRDS, inline_tenancy),
    (
        "tenancy-existing-config-map",
        {"tenancy": {"existingConfigMap": "team-policies", "existingConfigMapKey": "policies.json"}},
        WITH_CRDS,
        existing_tenancy,
    ),
    (
        "notifications-inline",
        {"notifications": {"defaults": DEFAULT_NOTIFICATIONS}},
        WITH_CRDS,
        inline_notifications,
    ),
    (
        "notifications-existing-config-map",
        {
            "notifications": {
                "existingConfigMap": "platform-notifications",
                "existingConfigMapKey": "subscriptions.json",
            }
        },
        WITH_CRDS,
        existing_notifications,
    ),
    (
        "notification-delivery-bounds",
        {"notifications": {"maxAttempts": 3, "timeoutSeconds": 2.5, "deadlineSeconds": 600}},
        WITH_CRDS,
        delivery_bounds,
    ),
    ("watch-namespaces", {"watchNamespaces": ["team-a", "team-b"]}, WITH_CRDS, namespaces),
    (
        "resources",
        {
            "resources": {
                "requests": {"cpu": "50m", "memory": "256Mi"},
                "limits": {"cpu": None, "memory": "1Gi"},
            }
        },
        WITH_CRDS,
        resources,
    ),
    (
        "service-monitor",
        {
            "metrics": {
                "serviceMonitor": {"enabled": True, "interval": "1m", "labels": {"release": "prometheus"}}
            }
        },
        WITH_CRDS,
        service_monitor,
    ),
    ("log-format", {"logFormat": "text"}, WITH_CRDS, text_logs),
    ("no-lambda-rollout-crd", {"crds": {"install": False}}, WITH_CRDS, no_lambda_rollout_crd),
    ("no-crds", {"crds": {"install": False}}, (), no_crds),
    (
        "image",
        {
            "image": {
                "repository": "registry.example.com/lambda-rollouts",
                "tag": "0.2.0",
                "pullPolicy": "Always",
            },
            "imagePullSecrets": [{"name": "registry"}],
        },
        WITH_CRDS,
        image,
    ),
    ("replicas", {"replicas": 3}, WITH_CRDS, replicas),
    ("no-metrics", {"metrics": {"enabled": False}}, WITH_CRDS, no_metrics),
    ("no-metrics-service", {"metrics": {"service": {"enabled": False}}}, WITH_CRDS, no_metrics_service),
    ("ports", {"metrics": {"port": 9100}, "healthPort": 8081}, WITH_CRDS, ports),
    ("namespace-exists", {"namespace": {"create": False}}, WITH_CRDS, no_namespace),
    (
        "extra-env",
        {"extraEnv": [{"name": "LAMBDA_ROLLOUTS_DRIFT_CHECK_INTERVAL_SECONDS", "value": "60"}]},
        WITH_CRDS,
        extra_env,
    ),
    (
        "scheduling",
        {
            "nodeSelector": {"kubernetes.io/os": "linux", "example.com/pool": "ops"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "podAnnotations": {"example.com/owner": "platform"},
        },
        WITH_CRDS,
        scheduling,
    ),
]


@pytest.fixture(scope="module")
def defaults(helm: str, helm_home: Path) -> Objects:
    return normalised_render(helm, helm_home)


@pytest.mark.parametrize(
    ("values", "flags", "change"),
    [pytest.param(values, flags, change, id=name) for name, values, flags, change in VALUE_CASES],
)
def test_a_value_changes_exactly_what_it_should(
    helm: str,
    helm_home: Path,
    defaults: Objects,
    values: dict[str, Any],
    flags: tuple[str, ...],
    change: Callable[[Objects, Objects], None],
) -> None:
    rendered = normalised_render(helm, helm_home, values, flags)
    expected = copy.deepcopy(defaults)
    change(expected, rendered)
    assert_same_objects(rendered, expected)


def test_another_release_name_names_everything_and_its_peering(helm: str, helm_home: Path) -> None:
    objects = keyed(render(helm, helm_home, release="platform"))
    fullname = "platform-lambda-rollouts"
    names = {(kind, name) for kind, _, name in objects if kind != "CustomResourceDefinition"}
    assert names == {
        ("Namespace", NAMESPACE),
        ("ServiceAccount", fullname),
        ("ClusterRole", fullname),
        ("ClusterRoleBinding", fullname),
        ("ClusterKopfPeering", fullname),
        ("Deployment", fullname),
        ("Service", f"{fullname}-metrics"),
    }
    deployment = objects["Deployment", NAMESPACE, fullname]
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    # The release's own peering object is the one the operator elects through, and the only one
    # its ClusterRole may patch.
    assert operator["args"] == ["run", "--peering", fullname, "--liveness", "http://0.0.0.0:8080/healthz"]
    rules = objects["ClusterRole", None, fullname]["rules"]
    assert [rule.get("resourceNames") for rule in rules] == [None, None, None, None, None, [fullname]]
    binding = objects["ClusterRoleBinding", None, fullname]
    assert binding["roleRef"]["name"] == fullname
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": fullname, "namespace": NAMESPACE}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == fullname
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert objects["Service", NAMESPACE, f"{fullname}-metrics"]["spec"]["selector"] == selector
    assert selector["app.kubernetes.io/instance"] == "platform"


def test_the_tenancy_checksum_follows_the_policies(helm: str, helm_home: Path) -> None:
    def checksum(policies: dict[str, Any]) -> str:
        objects = keyed(render(helm, helm_home, {"tenancy": {"policies": policies}}))
        annotations = objects[DEPLOYMENT]["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/tenancy"])

    first = checksum({"team-a": {"functions": ["a-*"]}})
    assert first == checksum({"team-a": {"functions": ["a-*"]}})
    assert first != checksum({"team-a": {"functions": ["b-*"]}})


def test_the_operator_reads_the_settings_files_the_chart_renders(
    helm: str, helm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = keyed(
        render(
            helm,
            helm_home,
            {"tenancy": {"policies": POLICIES}, "notifications": {"defaults": DEFAULT_NOTIFICATIONS}},
        )
    )
    files: dict[str, str] = {}
    for part, variable in SETTINGS_FILES.items():
        path = tmp_path / f"{part}.yaml"
        path.write_text(objects["ConfigMap", NAMESPACE, f"lambda-rollouts-{part}"]["data"][f"{part}.yaml"])
        files[variable] = str(path)
    # In the pod, the ServiceAccount's mount says which namespace the operator runs in.
    own_namespace = tmp_path / "namespace"
    own_namespace.write_text(NAMESPACE)
    monkeypatch.setattr(settings_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", str(own_namespace))
    for variable, path in files.items():
        monkeypatch.setenv(variable, path)

    settings = settings_module.Settings()

    assert settings.tenancy["team-a"].hook_urls == ["https://ci.example.com/hooks/"]
    assert settings.tenancy["*"].functions == []
    # As given, with the release's namespace for the Secret that names none.
    expected = copy.deepcopy(DEFAULT_NOTIFICATIONS)
    expected[0]["slack"]["webhookSecretRef"]["namespace"] = NAMESPACE
    assert [
        item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in settings.notifications
    ] == expected


def _names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_the_values_schema_knows_every_field_of_the_settings_it_renders() -> None:
    definitions = json.loads((CHART / "values.schema.json").read_text())["definitions"]

    def properties(name: str) -> set[str]:
        return set(definitions[name]["properties"])

    assert properties("tenantPolicy") == _names(settings_module.TenantPolicy)
    notification = definitions["defaultNotification"]["properties"]
    assert set(notification) == _names(settings_module.DefaultNotification)
    assert set(notification["webhook"]["properties"]) == _names(settings_module.DefaultWebhookNotification)
    assert properties("chatNotification") == _names(settings_module.DefaultChatNotification)
    assert properties("secretKeyRef") == _names(settings_module.OperatorSecretKeyRef)
    subscribable = [reason.value for reason in Reason if reason is not Reason.NOTIFICATION_FAILED]
    assert notification["events"]["items"]["enum"] == subscribable


# -- bad values ------------------------------------------------------------------------------------

# Each bad value, and the line of helm's answer that names it (the schema's path and rule).
SCHEMA_CASES = [
    pytest.param({"replicas": -1}, "- at '/replicas': minimum: got -1, want 0", id="negative-replicas"),
    pytest.param({"image": {"tag": 5}}, "- at '/image/tag': got number, want string", id="tag-as-a-number"),
    pytest.param(
        {"replica": 3}, "- at '': additional properties 'replica' not allowed", id="unknown-top-level-key"
    ),
    pytest.param(
        {"logFormat": "xml"}, "- at '/logFormat': value must be one of 'text', 'json'", id="bad-log-format"
    ),
    pytest.param(
        {"tenancy": {"policies": {"team-a": {"function": ["a-*"]}}}},
        "- at '/tenancy/policies/team-a': additional properties 'function' not allowed",
        id="unknown-policy-field",
    ),
    pytest.param(
        {"serviceAccount": {"roleArn": "my-role"}},
        "- at '/serviceAccount/roleArn': 'my-role' does not match pattern",
        id="role-not-an-arn",
    ),
    pytest.param(
        {"watchNamespaces": ["Team_A"]},
        "- at '/watchNamespaces/0': 'Team_A' does not match pattern",
        id="bad-namespace-name",
    ),
    pytest.param(
        {"tenancy": {"policies": {"team-a": {"hookUrls": ["169.254.169.254"]}}}},
        "- at '/tenancy/policies/team-a/hookUrls/0': '169.254.169.254' does not match pattern",
        id="hook-url-without-scheme",
    ),
    pytest.param(
        {
            "notifications": {
                "defaults": [
                    {
                        "events": ["NotificationFailed"],
                        "teams": {"webhookSecretRef": {"name": "t", "key": "url"}},
                    }
                ]
            }
        },
        "- at '/notifications/defaults/0/events/0': value must be one of 'Progressing'",
        id="notification-of-a-failed-notification",
    ),
    pytest.param(
        {"notifications": {"defaults": [{"events": ["Succeeded"]}]}},
        "- at '/notifications/defaults/0': missing property 'webhook'",
        id="notification-without-channel",
    ),
    pytest.param(
        {
            "notifications": {
                "defaults": [
                    {
                        "events": ["Succeeded"],
                        "webhook": {"url": "https://ci.example.com/hooks"},
                        "slack": {"webhookSecretRef": {"name": "s", "key": "url"}},
                    }
                ]
            }
        },
        "- at '/notifications/defaults/0': 'oneOf' failed, subschemas 0, 1 matched",
        id="notification-with-two-channels",
    ),
    pytest.param(
        {"notifications": {"defaults": [{"webhook": {"url": "https://ci.example.com/hooks"}}]}},
        "- at '/notifications/defaults/0': missing property 'events'",
        id="notification-without-events",
    ),
    pytest.param(
        {
            "notifications": {
                "defaults": [{"events": ["Succeeded"], "webhook": {"url": "ci.example.com/hooks"}}]
            }
        },
        "- at '/notifications/defaults/0/webhook/url': 'ci.example.com/hooks' does not match pattern",
        id="webhook-url-without-scheme",
    ),
    pytest.param(
        {"notifications": {"maxAttempts": 21}},
        "- at '/notifications/maxAttempts': maximum: got 21, want 20",
        id="too-many-attempts",
    ),
]


@pytest.mark.parametrize(("values", "line"), SCHEMA_CASES)
def test_the_schema_refuses_bad_values(helm: str, helm_home: Path, values: dict[str, Any], line: str) -> None:
    path = values_file(helm_home, values)
    for command in (["template", RELEASE, str(CHART)], ["lint", "--strict", str(CHART)]):
        result = run_helm(helm, helm_home, *command, "--values", str(path))
        assert result.returncode == 1, f"helm {command[0]} accepted {values}:\n{result.stdout}"
        output = result.stdout + result.stderr
        assert "values don't meet the specifications of the schema(s)" in output, output
        assert line in output, output


TEMPLATE_ERRORS = [
    pytest.param(
        {"tenancy": {"policies": {"team-a": {}}, "existingConfigMap": "team-policies"}},
        "set either tenancy.policies or tenancy.existingConfigMap, not both",
        id="both-tenancy-sources",
    ),
    pytest.param(
        {"notifications": {"defaults": DEFAULT_NOTIFICATIONS, "existingConfigMap": "platform-notifications"}},
        "set either notifications.defaults or notifications.existingConfigMap, not both",
        id="both-notification-sources",
    ),
    pytest.param(
        {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled needs metrics.enabled and metrics.service.enabled",
        id="service-monitor-without-service",
    ),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_ERRORS)
def test_contradictory_values_fail_with_a_message(
    helm: str, helm_home: Path, values: dict[str, Any], message: str
) -> None:
    result = run_helm(
        helm, helm_home, "template", RELEASE, str(CHART), "--values", str(values_file(helm_home, values))
    )
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


# -- the chart's files -----------------------------------------------------------------------------


def test_the_chart_crd_is_the_repository_crd() -> None:
    copied = CHART / "files" / "lambdarollouts.yaml"
    assert copied.read_bytes() == (ROOT / "crds" / "lambdarollouts.yaml").read_bytes(), (
        "deploy/helm/lambda-rollouts/files/lambdarollouts.yaml differs from crds/lambdarollouts.yaml; "
        "refresh the copy with\n    cp crds/lambdarollouts.yaml deploy/helm/lambda-rollouts/files/"
    )


def test_the_chart_peering_crd_is_the_kustomize_one() -> None:
    def documents(path: Path) -> list[Any]:
        return [document for document in yaml.safe_load_all(path.read_text()) if document]

    chart_crds = sorted(path.name for path in (CHART / "crds").iterdir())
    assert chart_crds == ["clusterkopfpeerings.yaml"]
    assert documents(CHART / "crds" / "clusterkopfpeerings.yaml") == documents(
        DEPLOY / "crds" / "clusterkopfpeerings.yaml"
    )


def schema_leaves(schema: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """Dotted value names down to the values the README documents as one (``resources`` is one)."""
    leaves: dict[str, Mapping[str, Any]] = {}
    for name, node in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        if dotted == "global":
            continue
        if "properties" in node and dotted != "resources":
            leaves.update(schema_leaves(node, f"{dotted}."))
        else:
            leaves[dotted] = node
    return leaves


def readme_values() -> dict[str, Any]:
    """The values table of the chart's README: ``| `name` | `default` | meaning |``."""
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", (CHART / "README.md").read_text(), re.MULTILINE)
    assert rows, "the chart's README has no values table"
    return {name: yaml.safe_load(default) for name, default in rows}


def test_the_readme_documents_every_value_with_its_default() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = readme_values()
    assert sorted(documented) == sorted(schema_leaves(schema))
    for name, default in documented.items():
        node: Any = values
        for part in name.split("."):
            node = node[part]
        assert default == node, f"README says {name} defaults to {default!r}, values.yaml {node!r}"
