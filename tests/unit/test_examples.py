"""The examples, the README and the docs say only what the code does.

The docs are README.md, every page of ``docs/`` and the Helm chart's README, which the docs site
includes.

- Every manifest in ``examples/`` and every LambdaRollout in a YAML block of the docs is admitted
  by the CRD schema (as kube-apiserver would: pruned, then validated) and parsed by
  ``RolloutSpec.parse``. A block that is only a ``spec:`` fragment is checked the same way,
  completed with the required fields it leaves out. Every example is listed on the strategies page.
- Every ``LAMBDA_ROLLOUTS_*`` variable the docs name is a setting, and the settings page names
  every setting; the tenancy page's policy file is one the operator reads.
- Every ``lambda_rollouts_*`` metric the docs name is in the operator's exposition, and the page on
  metrics names every metric family there.
- The API reference that the docs build generates (``docs/_hooks/generated.py``) has a row for
  every field of the CRD's spec and status, with the defaults the operator applies; every
  ``spec.…`` or ``status.…`` path the docs write exists in the CRD.
- The hook's include of the chart's README leads every relative link to a page of the site.
- Every link of the README leads to a file of the repository, and to a heading of it.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from types import ModuleType
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
DOCS_DIR = ROOT / "docs"
CHART_README = ROOT / "deploy" / "helm" / "lambda-rollouts" / "README.md"
# Every Markdown text the docs are made of, by its path from the repository's root.
DOCS: dict[str, str] = {
    path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
    for path in [ROOT / "README.md", *sorted(DOCS_DIR.rglob("*.md")), CHART_README]
}
ALL_DOCS = "\n".join(DOCS.values())
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD = build_crd()
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

# What a spec fragment in the docs leaves out to stay short.
FRAGMENT_BASE: dict[str, Any] = {
    "functionName": "checkout-api",
    "alias": "live",
    "version": "2",
    "strategy": {"preset": "AllAtOnce"},
}


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generated", DOCS_DIR / "_hooks" / "generated.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOK = _load_hook()


def _yaml_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of every ```yaml block."""
    blocks = []
    for match in re.finditer(r"^ *```yaml\n(.*?)^ *```", text, flags=re.MULTILINE | re.DOTALL):
        body = match.group(1)
        indent = min(
            (len(line) - len(line.lstrip()) for line in body.splitlines() if line.strip()), default=0
        )
        body = "\n".join(line[indent:] for line in body.splitlines()) + "\n"
        blocks.append((text.count("\n", 0, match.start()) + 1, body))
    return blocks


def _docs_rollouts() -> list[tuple[str, dict[str, Any]]]:
    """Every LambdaRollout the docs show, whole or as a ``spec:`` fragment, with an id."""
    found = []
    for source, text in DOCS.items():
        for line, body in _yaml_blocks(text):
            for position, document in enumerate(yaml.safe_load_all(body)):
                if not isinstance(document, dict):
                    continue
                name = f"{source}:{line}" + (f"#{position}" if position else "")
                if document.get("kind") == KIND:
                    found.append((name, document))
                elif set(document) == {"spec"}:
                    found.append((name, _completed(document["spec"])))
    return found


def _completed(spec: dict[str, Any]) -> dict[str, Any]:
    base = {key: value for key, value in FRAGMENT_BASE.items() if key not in spec}
    if "versionFrom" in spec:
        base.pop("version", None)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "fragment", "namespace": "default"},
        "spec": {**base, **spec},
    }


DOCS_ROLLOUTS = _docs_rollouts()


def _admitted_and_parsed(manifest: dict[str, Any]) -> None:
    manifest = copy.deepcopy(manifest)
    manifest.setdefault("metadata", {}).setdefault("namespace", "default")
    assert unknown_fields(CRD, manifest) == [], "fields the API server would drop"
    stored = prune_object(CRD, manifest)
    assert [str(error) for error in check_object(CRD, stored)] == []
    RolloutSpec.parse(stored["spec"])


def test_the_docs_show_rollouts_and_spec_fragments() -> None:
    kinds = [manifest["metadata"]["name"] == "fragment" for _, manifest in DOCS_ROLLOUTS]
    assert any(kinds), "no spec fragment found"
    assert not all(kinds), "no whole LambdaRollout found"
    # The README shows a whole one; an indented block (in a list item) is read too.
    assert any(name.startswith("README.md:") for name, _ in DOCS_ROLLOUTS)
    assert any(name.startswith("docs/install.md:") for name, _ in DOCS_ROLLOUTS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_is_admitted_and_parsed(path: Path) -> None:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert len(documents) == 1
    (manifest,) = documents
    assert (manifest["apiVersion"], manifest["kind"]) == (API_VERSION, KIND)
    assert path.read_text().startswith("# "), "an example starts with the comment that explains it"
    _admitted_and_parsed(manifest)


@pytest.mark.parametrize(("where", "manifest"), DOCS_ROLLOUTS, ids=[name for name, _ in DOCS_ROLLOUTS])
def test_every_rollout_in_the_docs_is_admitted_and_parsed(where: str, manifest: dict[str, Any]) -> None:
    _admitted_and_parsed(manifest)


def test_every_example_is_listed_on_the_strategies_page() -> None:
    page = DOCS["docs/strategies.md"]
    for path in EXAMPLES:
        assert f"`examples/{path.name}`" in page, path.name


def test_the_strategies_have_an_example_each() -> None:
    strategies = [next(iter(yaml.safe_load(path.read_text())["spec"]["strategy"])) for path in EXAMPLES]
    assert {"preset", "canary", "linear", "allAtOnce"} <= set(strategies)
    assert any("versionFrom" in yaml.safe_load(path.read_text())["spec"] for path in EXAMPLES)


# ---------------------------------------------------------------------------------------------
# Settings.

SETTING_NAME = re.compile(r"\b(?:LAMBDA_ROLLOUTS_[A-Z0-9_]*[A-Z0-9]|KUBECONFIG)\b")


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


def test_every_setting_the_docs_name_exists() -> None:
    settings = _setting_names()
    assert len(settings) == len(Settings.model_fields)
    named = {(name, source) for source, text in DOCS.items() for name in SETTING_NAME.findall(text)}
    # The kubeconfig is the one standard variable read by name (to explain a failed login).
    assert sorted(pair for pair in named if pair[0] not in settings) == [], "settings that do not exist"


def test_the_settings_page_names_every_setting() -> None:
    named = set(SETTING_NAME.findall(DOCS["docs/settings.md"]))
    assert _setting_names() - named == set(), "settings the settings page does not name"


def test_the_tenancy_example_is_a_policy_the_operator_reads(tmp_path: Path) -> None:
    (example,) = [
        body for _, body in _yaml_blocks(DOCS["docs/tenancy.md"]) if "LAMBDA_ROLLOUTS_TENANCY_FILE" in body
    ]
    path = tmp_path / "tenancy.yaml"
    path.write_text(example)
    policies = Settings(tenancy_file=str(path)).tenancy
    assert policies is not None
    assert set(policies) == {"team-a", "*"}
    assert all(isinstance(policy, TenantPolicy) for policy in policies.values())
    assert policies["team-a"].role_arns


# ---------------------------------------------------------------------------------------------
# Metrics.

METRIC_NAME = re.compile(r"\blambda_rollouts_[a-z0-9_]*[a-z0-9]")


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


def test_every_metric_the_docs_name_exists() -> None:
    families, names = _metric_names()
    assert len(families) == 11
    named = {(name, source) for source, text in DOCS.items() for name in METRIC_NAME.findall(text)}
    assert sorted(pair for pair in named if pair[0] not in names) == [], (
        "metrics the operator does not expose"
    )


def test_the_metrics_page_names_every_metric() -> None:
    families, _ = _metric_names()
    named = set(METRIC_NAME.findall(DOCS["docs/metrics-and-logs.md"]))
    assert families - named == set(), "metrics the page does not name"


# ---------------------------------------------------------------------------------------------
# The API reference, generated from the CRD, and the field paths the docs write.


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


def _reference_rows() -> dict[str, dict[str, str]]:
    """The generated reference's rows, by the field's dotted path (list items add no segment)."""
    rows: dict[str, dict[str, str]] = {}
    for section in re.split(r"^### ", HOOK.render_api_reference(), flags=re.MULTILINE)[1:]:
        path = section.split("\n", 1)[0].strip("`").replace("[]", "")
        lines = [line for line in section.splitlines() if line.startswith("| ")]
        header = [cell.strip() for cell in lines[0].strip("|").split(" | ")]
        for line in lines[1:]:
            cells = [cell.strip() for cell in line[2:-2].split(" | ")]
            assert len(cells) == len(header), line
            row = dict(zip(header, cells, strict=True))
            rows[f"{path}.{row['Field'].strip('`')}"] = row
    return rows


REFERENCE = _reference_rows()


def test_the_reference_has_a_row_for_every_field_of_the_crd() -> None:
    assert sorted(set(CRD_FIELDS) - set(REFERENCE)) == []
    assert sorted(set(REFERENCE) - set(CRD_FIELDS)) == []


def test_every_row_of_the_reference_describes_its_field() -> None:
    undescribed = sorted(path for path, row in REFERENCE.items() if not row["Description"])
    assert undescribed == []


def test_the_reference_gives_the_defaults_the_operator_applies() -> None:
    defaults = {path: row["Default"].strip("`") for path, row in REFERENCE.items() if row.get("Default")}
    analysis = {
        "interval": "1m",
        "minInvocations": "1",
        "failureLimit": "0",
        "consecutiveSuccessLimit": "1",
        "errorLimit": "4",
        "onInconclusive": "Pause",
    }
    hook = {"timeout": "30s", "retries": "2"}
    assert defaults == {
        "spec.paused": "false",
        "spec.onDrift": "Pause",
        **{f"spec.analysis.{name}": value for name, value in analysis.items()},
        **{f"spec.strategy.canary.steps.analysis.{name}": value for name, value in analysis.items()},
        **{
            f"spec.hooks.{point}.{name}": value
            for point in ("beforeAllowTraffic", "afterAllowTraffic", "confirmPromotion")
            for name, value in hook.items()
        },
        "spec.hooks.confirmPromotion.interval": "30s",
    }


@pytest.mark.parametrize(
    ("path", "row"),
    [
        (
            "spec.functionName",
            {"Type": "string", "Validation": "required; 1 to 170 characters"},
        ),
        (
            "spec.strategy.canary.steps.setWeight",
            {"Type": "number (whole)", "Validation": "0 to 100"},
        ),
        (
            "spec.analysis.metrics.maxRatioToStable",
            {"Type": "number", "Validation": "more than 0"},
        ),
        (
            "spec.notifications",
            {"Type": "list of object", "Validation": "at most 20 items"},
        ),
        (
            "spec.analysis.queries",
            {"Type": "list of object", "Validation": "at most 100 items; each `name` at most once"},
        ),
        (
            "spec.strategy.linear.interval",
            {"Type": "string", "Validation": "required; matches `^([0-9]+(\\.[0-9]+)?(ms|h|m|s))+$`"},
        ),
        (
            "status.conditions.lastTransitionTime",
            {"Type": "string (date-time)", "Validation": "required"},
        ),
    ],
)
def test_reference_rows_give_type_and_validation(path: str, row: dict[str, str]) -> None:
    assert {key: REFERENCE[path][key] for key in row} == row


def test_the_reference_gives_the_cel_rules_with_their_messages() -> None:
    reference = HOOK.render_api_reference()
    assert (
        "- `has(self.version) != has(self.versionFrom)`: set exactly one of version, versionFrom" in reference
    )
    events = REFERENCE["spec.notifications.events"]["Validation"]
    assert events.startswith(
        "required; 1 to 46 items; CEL `!('NotificationFailed' in self)`: NotificationFailed"
    )


def test_every_field_path_the_docs_write_exists() -> None:
    written = {
        (path, source)
        for source, text in DOCS.items()
        for path in re.findall(r"`((?:spec|status)(?:\.[A-Za-z0-9]+|\[\d*\])+)", text)
    }
    unknown = sorted(
        (path, source) for path, source in written if re.sub(r"\[\d*\]", "", path) not in CRD_FIELDS
    )
    assert unknown == []


# ---------------------------------------------------------------------------------------------
# The include of the chart's README, and the README's links.


@pytest.mark.parametrize(
    ("target", "page", "expected"),
    [
        ("../../../README.md#tenancy", "install-helm.md", "tenancy.md"),
        ("../../../README.md#settings", "install-helm.md", "settings.md"),
        ("../../../docs/install.md", "install-helm.md", "install.md"),
        ("../../../docs/install.md#the-deployment", "sub/page.md", "../install.md#the-deployment"),
        (
            "values.yaml",
            "install-helm.md",
            "https://example.com/r/blob/main/deploy/helm/lambda-rollouts/values.yaml",
        ),
    ],
)
def test_included_links_lead_to_the_site_or_the_repository(target: str, page: str, expected: str) -> None:
    assert HOOK._site_link(target, "deploy/helm/lambda-rollouts", page, "https://example.com/r") == expected


@pytest.mark.parametrize("target", ["../../../README.md#no-such-page", "../../../../outside.md"])
def test_an_included_link_that_cannot_be_placed_fails_the_build(target: str) -> None:
    with pytest.raises(HOOK.DocsBuildError):
        HOOK._site_link(target, "deploy/helm/lambda-rollouts", "install-helm.md", "https://example.com/r")


def test_the_chart_readme_is_included_with_site_links_only() -> None:
    included = HOOK.include_markdown(
        "deploy/helm/lambda-rollouts/README.md", page_uri="install-helm.md", repo_url="https://example.com/r"
    )
    assert not included.startswith("# ")
    links = re.findall(r"(?<!!)\]\(([^)\s]+)\)", included)
    assert links
    for link in links:
        page = link.partition("#")[0]
        assert link.startswith(("https://", "#")) or (DOCS_DIR / page).is_file(), link


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


def test_every_link_of_the_readme_leads_to_a_file_and_a_heading() -> None:
    readme = DOCS["README.md"]
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"^[a-z]+:", link)]
    assert len(local) > 10
    broken = []
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        if not target.is_file() or (anchor and anchor not in _anchors(target.read_text(encoding="utf-8"))):
            broken.append(link)
    assert broken == []
