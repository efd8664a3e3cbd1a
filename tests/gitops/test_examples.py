"""The GitOps examples in deploy/examples/ parse, and say what their comments promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lambda_rollouts.model import parse_duration

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def _documents(path: Path) -> list[dict[str, Any]]:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert all(isinstance(document, dict) for document in documents)
    return documents


def _one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [document for document in documents if document["kind"] == kind]
    assert len(matching) == 1, kind
    return matching[0]


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda path: path.name)
def test_every_example_parses_and_explains_itself(path: Path) -> None:
    documents = _documents(path)
    assert documents
    for document in documents:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(document)
        assert document["metadata"]["name"]
    assert path.read_text().startswith("# "), "an example starts with the comment that explains it"


def test_flux_waits_on_the_rollouts_with_a_timeout() -> None:
    documents = _documents(EXAMPLES / "flux" / "lambda-releases.yaml")
    source = _one(documents, "GitRepository")
    kustomization = _one(documents, "Kustomization")
    assert source["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert kustomization["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    spec = kustomization["spec"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert kustomization["metadata"]["namespace"] == source["metadata"]["namespace"]
    assert spec["wait"] is True
    assert "healthChecks" not in spec  # wait: true covers every applied object
    # Longer than a Canary10Percent30Minutes, the slowest preset.
    assert parse_duration(spec["timeout"]) > 30 * 60
    for field in ("interval", "retryInterval"):
        parse_duration(spec[field])


def test_argocd_application_syncs_a_path_automatically() -> None:
    application = _one(_documents(EXAMPLES / "argocd" / "lambda-releases.yaml"), "Application")
    assert application["apiVersion"] == "argoproj.io/v1alpha1"
    spec = application["spec"]
    assert {"repoURL", "targetRevision", "path"} <= set(spec["source"])
    assert spec["destination"]["namespace"]
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
