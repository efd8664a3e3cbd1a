"""The examples and the README say only what the code does.

- Every manifest in ``examples/`` and every LambdaRollout in a YAML block of README.md is admitted
  by the CRD schema (as kube-apiserver would: pruned, then validated) and parsed by
  ``RolloutSpec.parse``. A README block that is only a ``spec:`` fragment is checked the same
  way, completed with the required fields it leaves out.
- Every ``LAMBDA_ROLLOUTS_*`` variable the README names is a setting, and every setting is named;
  the README's tenancy file is one the operator reads.
- Every ``lambda_rollouts_*`` metric the README names is in the operator's exposition, and every
  metric family there is named.
- The README's reference names every field of the CRD's spec and status, and every ``spec.…`` or
  ``status.…`` path the README writes exists in the CRD.
- Every link within the README leads to one of its headings.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from lambda_rollouts.crd import build_crd
from lambda_rollouts.model import API_VERSION, KIND, RolloutSpec
from lambda_rollouts.sandbox.schema import check_object, prune_object, unknown_fields
from lambda_rollouts.settings import Settings, TenantPolicy
from lambda_rollouts.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD = build_crd()
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

# What a spec fragment in the README leaves out to stay short.
FRAGMENT_BASE: dict[str, Any] = {
    "functionName": "checkout-api",
    "alias": "live",
    "version": "2",
    "strategy": {"preset": "AllAtOnce"},
}


def _yaml_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of every ```yaml block."""
    blocks = []
    for match in re.finditer(r"^```yaml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


def _readme_rollouts() -> list[tuple[str, dict[str, Any]]]:
    """Every LambdaRollout the README shows, whole or as a ``spec:`` fragment, with an id."""
    found = []
    for line, body in _yaml_blocks(README):
        for position, document in enumerate(yaml.safe_load_all(body)):
            if not isinstance(document, dict):
                continue
            name = f"README.md:{line}" + (f"#{position}" if position else "")
            if document.get("kind") == KIND:
                found.append((name, document))
            elif set(document) == {"spec"}:
                spec = {key: value for key, value in FRAGMENT_BASE.items() if key not in document["spec"]}
                if "versionFrom" in document["spec"]:
                    spec.pop("version", None)
                found.append(
                    (
                        name,
                        {
                            "apiVersion": API_VERSION,
                            "kind": KIND,
                            "metadata": {"name": "fragment", "namespace": "default"},
                            "spec": {**spec, **document["spec"]},
                        },
                    )
                )
    return found


README_ROLLOUTS = _readme_rollouts()


def _admitted_and_parsed(manifest: dict[str, Any]) -> None:
    manifest = copy.deepcopy(manifest)
    manifest.setdefault("metadata", {}).setdefault("namespace", "default")
    assert unknown_fields(CRD, manifest) == [], "fields the API server would drop"
    stored = prune_object(CRD, manifest)
    assert [str(error) for error in check_object(CRD, stored)] == []
    RolloutSpec.parse(stored["spec"])


def test_the_readme_shows_rollouts_and_spec_fragments() -> None:
    kinds = [manifest["metadata"]["name"] == "fragment" for _, manifest in README_ROLLOUTS]
    assert any(kinds), "no spec fragment found"
    assert not all(kinds), "no whole LambdaRollout found"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_is_admitted_and_parsed(path: Path) -> None:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert len(documents) == 1
    (manifest,) = documents
    assert (manifest["apiVersion"], manifest["kind"]) == (API_VERSION, KIND)
    assert path.read_text().startswith("# "), "an example starts with the comment that explains it"
    _admitted_and_parsed(manifest)


@pytest.mark.parametrize(("where", "manifest"), README_ROLLOUTS, ids=[name for name, _ in README_ROLLOUTS])
def test_every_rollout_in_the_readme_is_admitted_and_parsed(where: str, manifest: dict[str, Any]) -> None:
    _admitted_and_parsed(manifest)


def test_every_example_is_listed_in_the_readme() -> None:
    for path in EXAMPLES:
        assert f"`examples/{path.name}`" in README, path.name


def test_the_strategies_have_an_example_each() -> None:
    strategies = [next(iter(yaml.safe_load(path.read_text())["spec"]["strategy"])) for path in EXAMPLES]
    assert {"preset", "canary", "linear", "allAtOnce"} <= set(strategies)
    assert any("versionFrom" in yaml.safe_load(path.read_text())["spec"] for path in EXAMPLES)


# ---------------------------------------------------------------------------------------------
# Settings.


def _setting_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            choices = [choice for choice in alias.choices if isinstance(choice, str)]
            names |= {choice for choice in choices if choice.startswith(prefix)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(prefix + field_name.upper())
    return names


def test_every_setting_named_in_the_readme_exists_and_every_setting_is_named() -> None:
    settings = _setting_names()
    assert len(settings) == len(Settings.model_fields)
    # The kubeconfig is the one standard variable read by name (to explain a failed login).
    named = set(re.findall(r"\b(?:LAMBDA_ROLLOUTS_[A-Z0-9_]*[A-Z0-9]|KUBECONFIG)\b", README))
    assert named - settings == set(), "the README names settings that do not exist"
    assert settings - named == set(), "settings the README does not name"


def test_the_tenancy_example_is_a_policy_the_operator_reads(tmp_path: Path) -> None:
    (example,) = [body for _, body in _yaml_blocks(README) if "LAMBDA_ROLLOUTS_TENANCY_FILE" in body]
    path = tmp_path / "tenancy.yaml"
    path.write_text(example)
    policies = Settings(tenancy_file=str(path)).tenancy
    assert policies is not None
    assert set(policies) == {"team-a", "*"}
    assert all(isinstance(policy, TenantPolicy) for policy in policies.values())
    assert policies["team-a"].role_arns


# ---------------------------------------------------------------------------------------------
# Metrics.


def _metric_names() -> tuple[set[str], set[str]]:
    """(the metric families, every name a scrape can show) of a fresh operator's exposition."""
    telemetry = Telemetry()
    try:
        text = telemetry.exposition()
    finally:
        telemetry.close()
    families: set[str] = set()
    names: set[str] = set()
    for kind_line in re.finditer(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        name, kind = kind_line.groups()
        names.add(name)
        if name.endswith("_created"):
            continue
        families.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return families, names


def test_every_metric_named_in_the_readme_exists_and_every_metric_is_named() -> None:
    families, names = _metric_names()
    assert len(families) == 10
    named = set(re.findall(r"\blambda_rollouts_[a-z0-9_]*[a-z0-9]", README))
    assert named - names == set(), "the README names metrics the operator does not expose"
    assert families - named == set(), "metrics the README does not name"


# ---------------------------------------------------------------------------------------------
# The reference and the CRD.


def _fields(schema: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """Every property under ``schema``, by dotted path (list items add no segment)."""
    found: dict[str, dict[str, Any]] = {}
    if schema.get("type") == "array":
        return _fields(schema.get("items", {}), path)
    for name, child in (schema.get("properties") or {}).items():
        child_path = f"{path}.{name}"
        found[child_path] = child
        found |= _fields(child, child_path)
    return found


CRD_FIELDS = _fields(SCHEMA["properties"]["spec"], "spec") | _fields(SCHEMA["properties"]["status"], "status")


def _reference() -> str:
    start = README.index("\n## Reference\n")
    return README[start : README.index("\n## ", start + 1)]


def test_the_reference_names_every_field_of_the_crd() -> None:
    reference = _reference()
    cells = set(re.findall(r"`([A-Za-z0-9.]+)`", reference))
    missing = []
    for path in CRD_FIELDS:
        segments = path.split(".")
        # A field is named by its own name, or with the parents its table leaves out.
        candidates = {".".join(segments[start:]) for start in range(1, len(segments))}
        # An object is also named through a field of its own (`metricStat.stat`).
        if not any(cell == name or cell.startswith(name + ".") for cell in cells for name in candidates):
            missing.append(path)
    assert missing == []


def test_every_field_path_the_readme_writes_exists() -> None:
    written = set(re.findall(r"`((?:spec|status)(?:\.[A-Za-z0-9]+|\[\d*\])+)", README))
    unknown = []
    for path in written:
        plain = re.sub(r"\[\d*\]", "", path)
        if plain not in CRD_FIELDS:
            unknown.append(path)
    assert sorted(unknown) == []


# ---------------------------------------------------------------------------------------------
# Links.


def _anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text``: lowercase, punctuation dropped, spaces
    as hyphens, and ``-1``, ``-2`` … for repeats."""
    anchors: set[str] = set()
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6} (.+)$", outside_code, flags=re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, repeat = anchor, 0
        while candidate in anchors:
            repeat += 1
            candidate = f"{anchor}-{repeat}"
        anchors.add(candidate)
    return anchors


def test_every_link_within_the_readme_leads_to_a_heading() -> None:
    anchors = _anchors(README)
    links = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert links
    assert sorted(links - anchors) == []
