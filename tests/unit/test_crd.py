"""The CRD admits exactly what the pydantic model parses, and the admission validator words its
errors as kube-apiserver does.

The corpus in tests/corpus holds LambdaRollout manifests: every one in good.yaml must pass both the
CRD schema and ``RolloutSpec.parse``; every one in bad.yaml must fail both, at the field its
``corpus.lambda.rollouts.dev/field`` annotation names, except those marked
``corpus.lambda.rollouts.dev/level: operator``, which the CRD admits and only the model rejects
(bad.yaml's header describes every annotation). tests/envtest/test_corpus.py sends the same corpus
to kube-apiserver and holds the sandbox's errors to the server's.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from lambda_rollouts.crd import (
    ANALYSIS_MESSAGE,
    HOOK_QUALIFIER_MESSAGE,
    HOOK_TARGET_MESSAGE,
    RATIO_MESSAGE,
    STEP_MESSAGE,
    STRATEGY_MESSAGE,
    VERSION_MESSAGE,
    build_crd,
    render_crd_yaml,
)
from lambda_rollouts.errors import SpecError
from lambda_rollouts.model import (
    ALIAS_PATTERN,
    QUERY_PLACEHOLDERS,
    ActionResult,
    AllAtOnceStrategy,
    AnalysisSpec,
    AnalysisStatus,
    BuiltinMetric,
    CanaryStep,
    CanaryStrategy,
    ChatNotification,
    CheckResult,
    Condition,
    ConfirmHook,
    DriftStatus,
    Hook,
    HookPoint,
    HookResult,
    Hooks,
    HookStatus,
    InconclusivePolicy,
    LastAction,
    LinearStrategy,
    MetricCheck,
    MetricDimension,
    MetricIdentity,
    MetricStat,
    Notification,
    PauseStep,
    PendingNotification,
    Phase,
    Preset,
    QueryCheck,
    RolloutSpec,
    RolloutStatus,
    SecretKeyRef,
    Strategy,
    Verdict,
    VersionFrom,
    WebhookNotification,
)
from lambda_rollouts.sandbox.schema import (
    BLOCKED_RULES_DETAIL,
    OMIT,
    ErrorType,
    check_object,
    check_status,
    invalid_status,
    load_crd,
    prune_object,
    unknown_fields,
    validate_object,
    validate_status,
    version_schema,
)

from ..corpus.manifests import ERROR, FIELD, LEVEL, MODEL_FIELD, load, name_of

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "lambdarollouts.yaml"
BLOCKED = f"<nil>: Invalid value: null: {BLOCKED_RULES_DETAIL}"

CRD = build_crd()


GOOD = load("good.yaml")
BAD = load("bad.yaml")


def _rollout(**spec: Any) -> dict[str, Any]:
    base = {
        "functionName": "checkout-api",
        "alias": "live",
        "version": "42",
        "strategy": {"preset": "AllAtOnce"},
    }
    return {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {**base, **spec},
    }


def _model_path(field: str) -> str:
    """The API server's ``a.b[0].c`` as the model's error location ``a.b.0.c``."""
    return re.sub(r"\[(\d+)\]", r".\1", field)


# ---------------------------------------------------------------------------------------------
# The agreement corpus.


def _annotations(manifest: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = manifest["metadata"].get("annotations", {})
    return annotations


def _operator_level(manifest: dict[str, Any]) -> bool:
    return _annotations(manifest).get(LEVEL) == "operator"


def _step_analyses(spec: dict[str, Any]) -> list[dict[str, Any]]:
    steps = spec["strategy"].get("canary", {}).get("steps", [])
    return [step["analysis"] for step in steps if "analysis" in step]


def _analyses(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """spec.analysis and every analysis step's analysis, in that order."""
    return ([spec["analysis"]] if "analysis" in spec else []) + _step_analyses(spec)


def test_corpus_covers_enough_cases() -> None:
    assert len(GOOD) >= 45
    assert len(BAD) >= 100
    names = [name_of(manifest) for manifest in GOOD + BAD]
    assert len(names) == len(set(names))
    for manifest in BAD:
        annotations = _annotations(manifest)
        assert FIELD in annotations
        assert set(annotations) <= {FIELD, LEVEL, MODEL_FIELD, ERROR}
        assert annotations.get(LEVEL, "operator") == "operator"
        # The model may report a problem at an enclosing object, never somewhere else.
        assert annotations[FIELD].startswith(annotations.get(MODEL_FIELD, annotations[FIELD]))
    assert sum(_operator_level(manifest) for manifest in BAD) >= 8


def test_corpus_uses_every_strategy_and_preset() -> None:
    strategies = [manifest["spec"]["strategy"] for manifest in GOOD]
    assert {key for strategy in strategies for key in strategy} == {"preset", "canary", "linear", "allAtOnce"}
    assert {strategy["preset"] for strategy in strategies if "preset" in strategy} == {
        p.value for p in Preset
    }
    pauses = [
        step["pause"]
        for strategy in strategies
        for step in strategy.get("canary", {}).get("steps", [])
        if "pause" in step
    ]
    assert any("duration" in pause for pause in pauses)
    assert any("duration" not in pause for pause in pauses)


def test_corpus_uses_every_analysis_field() -> None:
    specs = [manifest["spec"] for manifest in GOOD]
    analyses = [analysis for spec in specs for analysis in _analyses(spec)]
    assert {key for analysis in analyses for key in analysis} == {
        field.alias for field in AnalysisSpec.model_fields.values()
    }
    metrics = [check for analysis in analyses for check in analysis.get("metrics", [])]
    assert {check["name"] for check in metrics} == {metric.value for metric in BuiltinMetric}
    assert any("maxRatioToStable" in check for check in metrics)
    assert {analysis["onInconclusive"] for analysis in analyses if "onInconclusive" in analysis} == {
        policy.value for policy in InconclusivePolicy
    }
    queries = [query for analysis in analyses for query in analysis.get("queries", [])]
    assert {("min" in query, "max" in query) for query in queries} == {
        (True, False),
        (False, True),
        (True, True),
    }
    assert any("unit" in query["metricStat"] for query in queries)
    assert any("dimensions" not in query["metricStat"]["metric"] for query in queries)
    values = " ".join(
        dimension["value"]
        for query in queries
        for dimension in query["metricStat"]["metric"].get("dimensions", [])
    )
    assert all(placeholder in values for placeholder in QUERY_PLACEHOLDERS)
    assert any(len(analysis.get("alarms", [])) == 100 for analysis in analyses)


def test_corpus_finds_versions_by_code_with_and_without_a_description() -> None:
    specs = [manifest["spec"] for manifest in GOOD]
    assert all(("version" in spec) != ("versionFrom" in spec) for spec in specs)
    found = [spec["versionFrom"] for spec in specs if "versionFrom" in spec]
    assert {"description" in version_from for version_from in found} == {True, False}
    assert {key for version_from in found for key in version_from} == {
        field.alias for field in VersionFrom.model_fields.values()
    }
    assert any(len(version_from.get("description", "")) == 256 for version_from in found)


def test_corpus_has_analysis_steps_that_inherit_and_that_stand_alone() -> None:
    inheriting = standalone = 0
    for manifest in GOOD:
        spec = manifest["spec"]
        for step in _step_analyses(spec):
            has_checks = AnalysisSpec.model_validate(step).has_checks
            if "analysis" in spec and not has_checks:
                inheriting += 1
            if "analysis" not in spec and has_checks:
                standalone += 1
    assert inheriting >= 2
    assert standalone >= 1


def test_corpus_uses_every_hook_point_and_target() -> None:
    hooks = [(point, hook) for manifest in GOOD for point, hook in manifest["spec"].get("hooks", {}).items()]
    assert {point for point, _ in hooks} == {point.value for point in HookPoint}
    for point in HookPoint:
        targets = {
            target
            for name, hook in hooks
            if name == point
            for target in ("functionName", "url")
            if target in hook
        }
        assert targets == {"functionName", "url"}, point
    assert {key for _, hook in hooks for key in hook} == {
        field.alias for field in ConfirmHook.model_fields.values()
    }


def test_corpus_has_a_bad_case_for_every_rule() -> None:
    texts = []
    for manifest in BAD:
        if _operator_level(manifest):
            with pytest.raises(SpecError) as raised:
                RolloutSpec.parse(manifest["spec"])
            texts.append(str(raised.value))
        else:
            texts += validate_object(CRD, manifest)
    rules = [
        VERSION_MESSAGE,
        STRATEGY_MESSAGE,
        STEP_MESSAGE,
        ANALYSIS_MESSAGE,
        HOOK_TARGET_MESSAGE,
        HOOK_QUALIFIER_MESSAGE,
        RATIO_MESSAGE,
        "needs min, max or both",
        ": min is above max",
        "metrics[2]: Duplicate value",
        "queries[1]: Duplicate value",
        # The operator-level rules.
        "interval must be at least 1s",
        "timeout must be more than 0s and at most 15m",
        "gives none to inherit",
    ]
    assert [rule for rule in rules if not any(rule in text for text in texts)] == []


@pytest.mark.parametrize("manifest", GOOD, ids=name_of)
def test_good_manifest_is_admitted_and_parsed(manifest: dict[str, Any]) -> None:
    assert validate_object(CRD, manifest) == []
    assert unknown_fields(CRD, manifest) == []
    # Nothing is pruned; a new object gets the status default that marks it not yet observed.
    assert prune_object(CRD, manifest) == {"status": {"observedGeneration": -1}, **manifest}
    RolloutSpec.parse(manifest["spec"])


@pytest.mark.parametrize("manifest", BAD, ids=name_of)
def test_bad_manifest_is_rejected_where_the_corpus_says(manifest: dict[str, Any]) -> None:
    annotations = _annotations(manifest)
    field = annotations[FIELD]

    errors = check_object(CRD, manifest)
    if _operator_level(manifest):
        assert errors == [], [str(error) for error in errors]
        assert validate_object(CRD, prune_object(CRD, manifest)) == []
    else:
        assert field in {error.field for error in errors}, [str(error) for error in errors]
        if ERROR in annotations:
            assert annotations[ERROR] in [str(error) for error in errors]

    with pytest.raises(SpecError) as raised:
        RolloutSpec.parse(manifest.get("spec"))
    assert _model_path(annotations.get(MODEL_FIELD, field)) in str(raised.value)
    if _operator_level(manifest) and ERROR in annotations:
        assert annotations[ERROR] in str(raised.value).split("; ")


def test_rule_failures_are_worded_as_the_model_words_them() -> None:
    checked = 0
    for manifest in BAD:
        for error in check_object(CRD, manifest):
            # A rule that fails on an object shows no value (kube-apiserver 1.35+).
            match = re.fullmatch(r"Invalid value: (.*)", error.body)
            if error.type != ErrorType.INVALID or error.value is not OMIT or match is None:
                continue
            with pytest.raises(SpecError) as raised:
                RolloutSpec.parse(manifest["spec"])
            assert f"{_model_path(error.field)}: {match[1]}" in str(raised.value), name_of(manifest)
            checked += 1
    assert checked >= 15


def test_one_of_rules_say_what_the_model_says() -> None:
    found = {"codeSha256": "Mx+yMFRqL9kJFHS9BGugOKKhUwbHGCwBT4wCOOjakXc="}
    neither = _rollout()
    del neither["spec"]["version"]
    for manifest in (neither, _rollout(versionFrom=found)):
        with pytest.raises(SpecError, match=re.escape(f"spec: {VERSION_MESSAGE}")):
            RolloutSpec.parse(manifest["spec"])
        assert validate_object(CRD, manifest) == [f"spec: Invalid value: {VERSION_MESSAGE}"]
    neither["spec"]["versionFrom"] = found
    assert validate_object(CRD, neither) == []
    assert RolloutSpec.parse(neither["spec"]).version_from == VersionFrom(code_sha256=found["codeSha256"])
    with pytest.raises(SpecError, match=re.escape(STRATEGY_MESSAGE)):
        RolloutSpec.parse(_rollout(strategy={})["spec"])
    with pytest.raises(SpecError, match=re.escape(STEP_MESSAGE)):
        RolloutSpec.parse(_rollout(strategy={"canary": {"steps": [{}]}})["spec"])
    assert validate_object(CRD, _rollout(strategy={})) == [
        f"spec.strategy: Invalid value: {STRATEGY_MESSAGE}"
    ]


def test_crd_is_stricter_than_the_model_about_json_types() -> None:
    # The model coerces these (pydantic's lax mode); the API server never lets them through.
    cases = {
        "spec.paused": _rollout(paused="true"),
        "spec.progressDeadlineSeconds": _rollout(progressDeadlineSeconds="60"),
        "spec.strategy.canary.steps[0].setWeight": _rollout(
            strategy={"canary": {"steps": [{"setWeight": "10"}]}}
        ),
        "spec.strategy.linear.stepWeight": _rollout(
            strategy={"linear": {"stepWeight": True, "interval": "1m"}}
        ),
    }
    for field, manifest in cases.items():
        errors = check_object(CRD, manifest)
        assert [(e.type, e.field) for e in errors[:1]] == [(ErrorType.TYPE_INVALID, field)]


def _canary_weight(weight: float) -> dict[str, Any]:
    return _rollout(strategy={"canary": {"steps": [{"setWeight": weight}]}})


def _linear_weight(weight: float) -> dict[str, Any]:
    return _rollout(strategy={"linear": {"stepWeight": weight, "interval": "1m"}})


def test_a_float_weight_gets_the_same_answer_from_the_crd_and_the_model() -> None:
    # Many JSON clients send 10.0 for 10: both admit it, as the weight 10; neither admits 10.5.
    for manifest in (_canary_weight(10.0), _linear_weight(10.0)):
        assert validate_object(CRD, manifest) == []
    canary = RolloutSpec.parse(_canary_weight(10.0)["spec"]).strategy.canary
    linear = RolloutSpec.parse(_linear_weight(10.0)["spec"]).strategy.linear
    assert canary is not None
    assert linear is not None
    assert (repr(canary.steps[0].set_weight), repr(linear.step_weight)) == ("10", "10")

    assert validate_object(CRD, _canary_weight(10.5)) == [
        "spec.strategy.canary.steps[0].setWeight: Invalid value: 10.5: "
        "spec.strategy.canary.steps[0].setWeight in body should be a multiple of 1"
    ]
    assert validate_object(CRD, _linear_weight(10.5)) == [
        'spec.strategy.linear.stepWeight: Invalid value: "number": '
        'spec.strategy.linear.stepWeight in body must be of type integer: "number"',
        '<nil>: Invalid value: "": Checked value must be of type integer (default format) in '
        "spec.strategy.linear.stepWeight",
        BLOCKED,
    ]
    fractional = "Input should be a valid integer, got a number with a fractional part"
    for manifest, field in (
        (_canary_weight(10.5), "spec.strategy.canary.steps.0.setWeight"),
        (_linear_weight(10.5), "spec.strategy.linear.stepWeight"),
    ):
        with pytest.raises(SpecError, match=re.escape(f"{field}: {fractional}")):
            RolloutSpec.parse(manifest["spec"])


def _nodes_with_rules(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if node.get("x-kubernetes-validations"):
        yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _nodes_with_rules(sub, f"{path}.{key}")
    if "items" in node:
        yield from _nodes_with_rules(node["items"], f"{path}[]")


def test_rules_read_no_integer_field() -> None:
    # kube-apiserver hands CEL an integer field that holds a JSON float (10.0, which the schema
    # admits) as an error, and every rule that reads the field fails, has() included; a field that
    # rules read is therefore a whole number (a number with multipleOf 1).
    read: dict[str, str] = {}
    for path, node in _nodes_with_rules(version_schema(CRD), ""):
        for rule in node["x-kubernetes-validations"]:
            for expression in (rule["rule"], rule.get("messageExpression", "")):
                for chain in re.findall(r"\bself((?:\.\w+)+)", expression):
                    field, sub = path, node
                    for name in chain.strip(".").split("."):
                        field, sub = f"{field}.{name}", sub["properties"][name]
                        read[field] = sub["type"]
    assert "integer" not in read.values(), read
    assert read[".spec.strategy.canary.steps[].setWeight"] == "number"
    assert _schema_at(*_STEP, "setWeight")["multipleOf"] == 1


def test_unknown_fields_are_pruned_before_the_model_sees_them() -> None:
    manifest = _rollout(colour="blue", strategy={"canary": {"steps": [{"setWeight": 10, "weight": 5}]}})
    assert validate_object(CRD, manifest) == []
    assert sorted(unknown_fields(CRD, manifest)) == ["spec.colour", "spec.strategy.canary.steps[0].weight"]
    with pytest.raises(SpecError):
        RolloutSpec.parse(manifest["spec"])
    RolloutSpec.parse(prune_object(CRD, manifest)["spec"])


def test_nulls_are_dropped_as_the_api_server_drops_them() -> None:
    manifest = _rollout(region=None, strategy={"canary": {"steps": [{"setWeight": 10, "pause": None}]}})
    assert validate_object(CRD, manifest)[0] == (
        'spec.region: Invalid value: "null": spec.region in body must be of type string: "null"'
    )
    stored = prune_object(CRD, manifest)
    assert stored["spec"] == {**_rollout()["spec"], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}
    assert validate_object(CRD, stored) == []
    RolloutSpec.parse(stored["spec"])


# ---------------------------------------------------------------------------------------------
# The schema declares what the model declares, with the same bounds.


def _schema_at(*path: str, root: str = "spec") -> dict[str, Any]:
    node: dict[str, Any] = version_schema(CRD)["properties"][root]
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return node


_STEP = ("strategy", "canary", "steps", "[]")
_QUERY = ("analysis", "queries", "[]")
MODEL_NODES: list[tuple[type[BaseModel], str, tuple[str, ...]]] = [
    (RolloutSpec, "spec", ()),
    (VersionFrom, "spec", ("versionFrom",)),
    (Strategy, "spec", ("strategy",)),
    (CanaryStrategy, "spec", ("strategy", "canary")),
    (CanaryStep, "spec", _STEP),
    (PauseStep, "spec", (*_STEP, "pause")),
    (AnalysisSpec, "spec", (*_STEP, "analysis")),
    (MetricCheck, "spec", (*_STEP, "analysis", "metrics", "[]")),
    (QueryCheck, "spec", (*_STEP, *_QUERY)),
    (LinearStrategy, "spec", ("strategy", "linear")),
    (AllAtOnceStrategy, "spec", ("strategy", "allAtOnce")),
    (AnalysisSpec, "spec", ("analysis",)),
    (MetricCheck, "spec", ("analysis", "metrics", "[]")),
    (QueryCheck, "spec", _QUERY),
    (MetricStat, "spec", (*_QUERY, "metricStat")),
    (MetricIdentity, "spec", (*_QUERY, "metricStat", "metric")),
    (MetricDimension, "spec", (*_QUERY, "metricStat", "metric", "dimensions", "[]")),
    (Hooks, "spec", ("hooks",)),
    (Hook, "spec", ("hooks", "beforeAllowTraffic")),
    (Hook, "spec", ("hooks", "afterAllowTraffic")),
    (ConfirmHook, "spec", ("hooks", "confirmPromotion")),
    (Notification, "spec", ("notifications", "[]")),
    (WebhookNotification, "spec", ("notifications", "[]", "webhook")),
    (SecretKeyRef, "spec", ("notifications", "[]", "webhook", "secretRef")),
    (ChatNotification, "spec", ("notifications", "[]", "slack")),
    (ChatNotification, "spec", ("notifications", "[]", "teams")),
    (SecretKeyRef, "spec", ("notifications", "[]", "teams", "webhookSecretRef")),
    (RolloutStatus, "status", ()),
    (AnalysisStatus, "status", ("analysis",)),
    (AnalysisStatus, "status", ("stepAnalysis",)),
    (CheckResult, "status", ("analysis", "results", "[]")),
    (CheckResult, "status", ("stepAnalysis", "results", "[]")),
    (HookStatus, "status", ("hooks", "[]")),
    (LastAction, "status", ("lastAction",)),
    (DriftStatus, "status", ("drift",)),
    (PendingNotification, "status", ("pendingNotifications", "[]")),
    (Condition, "status", ("conditions", "[]")),
]


@pytest.mark.parametrize(
    ("model", "root", "path"),
    MODEL_NODES,
    ids=[".".join((root, *path)).replace(".[]", "[]") for _, root, path in MODEL_NODES],
)
def test_schema_declares_exactly_the_model_fields(
    model: type[BaseModel], root: str, path: tuple[str, ...]
) -> None:
    schema = _schema_at(*path, root=root)
    fields = model.model_fields.values()
    assert set(schema.get("properties", {})) == {field.alias for field in fields}
    assert set(schema.get("required", [])) == {field.alias for field in fields if field.is_required()}


_CONSTRAINTS = (
    "type",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "enum",
    "multipleOf",
)


def _as_the_model_declares(node: dict[str, Any]) -> dict[str, Any]:
    """A whole number of the CRD (a number with multipleOf 1, which CEL reads as 10 or 10.0 alike) is
    the model's integer (which pydantic's lax mode reads as 10 or 10.0 alike, never 10.5)."""
    if node.get("type") == "number" and node.get("multipleOf") == 1:
        return {**{key: value for key, value in node.items() if key != "multipleOf"}, "type": "integer"}
    return node


def _openapi_v3_bounds(node: dict[str, Any]) -> dict[str, Any]:
    """Pydantic's numeric exclusiveMinimum/Maximum as the CRD's bound plus flag (OpenAPI v3.0)."""
    node = dict(node)
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in node and not isinstance(node[exclusive], bool):
            node[bound], node[exclusive] = node[exclusive], True
    return node


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    options = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        return _resolve(options[0], defs)
    return node


def _compare(crd: dict[str, Any], model: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    model = _openapi_v3_bounds(_resolve(model, defs))
    crd = _as_the_model_declares(crd)
    differences = [
        f"{path}: {key} is {crd.get(key)!r} in the CRD, {model.get(key)!r} in the model"
        for key in _CONSTRAINTS
        if crd.get(key) != model.get(key)
    ]
    for key, sub in crd.get("properties", {}).items():
        differences += _compare(sub, model["properties"][key], defs, f"{path}.{key}")
    if "items" in crd:
        differences += _compare(crd["items"], model["items"], defs, f"{path}[]")
    return differences


@pytest.mark.parametrize(("model", "root"), [(RolloutSpec, "spec"), (RolloutStatus, "status")])
def test_schema_bounds_match_the_model(model: type[BaseModel], root: str) -> None:
    generated = model.model_json_schema(by_alias=True)
    assert _compare(_schema_at(root=root), generated, generated.get("$defs", {}), root) == []


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _analysis_status(step_index: int | None) -> AnalysisStatus:
    return AnalysisStatus(
        step_index=step_index,
        started_at="2025-01-01T10:00:00.000000Z",
        next_measurement_at="2025-01-01T10:02:00.000000Z",
        measurements=3,
        successes=1,
        failures=1,
        inconclusives=1,
        errors=1,
        consecutive_successes=1,
        consecutive_errors=1,
        holding=True,
        last_verdict=Verdict.INCONCLUSIVE,
        last_measured_at="2025-01-01T10:01:00.000000Z",
        last_message="12 invocations of version 42, fewer than minInvocations 50",
        results=[
            CheckResult(name="error-rate", verdict=Verdict.FAILED, value=2.5, message="error-rate was 2.5%"),
            CheckResult(
                name="checkout-errors", verdict=Verdict.SUCCESSFUL, message="alarm checkout-errors is OK"
            ),
        ],
    )


def test_status_written_by_the_operator_is_kept_and_admitted() -> None:
    status = RolloutStatus(
        observed_generation=3,
        phase=Phase.PROGRESSING,
        stable_version="41",
        canary_version="42",
        canary_weight=12.5,
        current_step_index=1,
        step_count=4,
        message="step 2/4: pause 5m (3m12s left)",
        step_started_at="2025-01-01T10:00:00Z",
        paused_at="2025-01-01T10:01:00Z",
        verified_pair="41->42",
        retry_count=2,
        last_progress_at="2025-01-01T10:00:00.000000Z",
        aborted_at="2025-01-01T10:05:00.000000Z",
        analysis=_analysis_status(None),
        step_analysis=_analysis_status(1),
        hooks=[
            HookStatus(
                point=point,
                version="42",
                result=result,
                attempts=2,
                message=f"{point.value}: {result.value}",
                at="2025-01-01T10:00:00.000000Z",
                next_attempt_at="2025-01-01T10:00:30.000000Z",
            )
            for point, result in zip(HookPoint, HookResult, strict=True)
        ],
        conditions=[
            Condition(
                type=t, status="False", reason="Progressing", last_transition_time="2025-01-01T10:00:00Z"
            )
            for t in ("Ready", "Reconciling", "Stalled")
        ],
        paused_by_action=True,
        last_action=LastAction(
            action="pause",
            id="ci-123",
            result=ActionResult.APPLIED,
            message="paused at step 2/4",
            at="2025-01-01T10:01:00.000000Z",
            step_index=1,
            version="42",
        ),
        resolved_version="42",
        resolved_from="codeSha256 Mx+yMFRqL9kJFHS9BGugOKKhUwbHGCwBT4wCOOjakXc=",
        drift=DriftStatus(
            expected="90% on version 41 / 10% on version 42",
            observed="100% on version 40",
            since="2025-01-01T10:02:00.000000Z",
            previous_phase=Phase.PROGRESSING,
        ),
        pending_notifications=[
            PendingNotification(
                id="5f0c2d8e9a1b4c3d5e6f708192a3b4c5",
                reason="AnalysisFailed",
                type="Warning",
                message="analysis failed: error-rate was 2.5%; rolled back to version 41",
                at="2025-01-01T10:05:00.000000Z",
                function_name="checkout-api",
                alias="live",
                phase="Degraded",
                stable_version="41",
                canary_version="42",
                canary_weight=0.0,
                subscriptions=["slack-0123456789ab"],
            )
        ],
    ).to_wire()
    # Every field is set, nested ones included, so pruning any of them would show.
    assert set(status) == _aliases(RolloutStatus)
    assert set(status["stepAnalysis"]) == _aliases(AnalysisStatus)
    assert set(status["stepAnalysis"]["results"][0]) == _aliases(CheckResult)
    assert set(status["hooks"][0]) == _aliases(HookStatus)
    assert set(status["lastAction"]) == _aliases(LastAction)
    assert set(status["drift"]) == _aliases(DriftStatus)
    assert set(status["pendingNotifications"][0]) == _aliases(PendingNotification)
    manifest = {**_rollout(), "status": status}
    assert prune_object(CRD, manifest)["status"] == status
    assert unknown_fields(CRD, manifest) == []
    assert validate_object(CRD, manifest) == []
    assert validate_status(CRD, status) == []


def test_status_hooks_are_a_map_keyed_by_point() -> None:
    hook = {
        "point": "beforeAllowTraffic",
        "version": "42",
        "result": "Succeeded",
        "at": "2025-01-01T10:00:00Z",
    }
    assert validate_status(CRD, {"hooks": [hook, {**hook, "result": "Failed"}]}) == [
        'status.hooks[1]: Duplicate value: {"point":"beforeAllowTraffic"}'
    ]


def test_bad_nested_status_is_rejected_by_both() -> None:
    status = {
        "analysis": {
            "startedAt": "2025-01-01T10:00:00Z",
            "nextMeasurementAt": "2025-01-01T10:01:00Z",
            "lastVerdict": "Maybe",
            "results": [{"name": "error-rate", "verdict": "Passed"}],
        },
        "stepAnalysis": {"startedAt": "2025-01-01T10:00:00Z"},
        "hooks": [
            {"point": "beforeTraffic", "version": "42", "result": "Waiting", "at": "2025-01-01T10:00:00Z"}
        ],
    }
    verdicts = ", ".join(f'"{verdict.value}"' for verdict in Verdict)
    points = ", ".join(f'"{point.value}"' for point in HookPoint)
    assert validate_status(CRD, status) == [
        f'status.analysis.lastVerdict: Unsupported value: "Maybe": supported values: {verdicts}',
        f'status.analysis.results[0].verdict: Unsupported value: "Passed": supported values: {verdicts}',
        "status.stepAnalysis.nextMeasurementAt: Required value",
        f'status.hooks[0].point: Unsupported value: "beforeTraffic": supported values: {points}',
        BLOCKED,
    ]
    with pytest.raises(ValidationError):
        RolloutStatus.model_validate(status)


def test_bad_last_action_is_rejected_by_both() -> None:
    status = {"lastAction": {"action": "promote", "result": "Done"}, "pausedByAction": "yes"}
    results = ", ".join(f'"{result.value}"' for result in ActionResult)
    assert validate_status(CRD, status) == [
        'status.pausedByAction: Invalid value: "string": status.pausedByAction in body must be of type '
        'boolean: "string"',
        f'status.lastAction.result: Unsupported value: "Done": supported values: {results}',
        "status.lastAction.at: Required value",
        BLOCKED,
    ]
    with pytest.raises(ValidationError):
        RolloutStatus.model_validate(status)


def test_bad_status_is_rejected_by_both() -> None:
    status = {
        "phase": "Finished",
        "conditions": [
            {"type": "Ready", "status": "Maybe", "reason": "X", "lastTransitionTime": "2025-01-01T10:00:00Z"}
        ],
    }
    assert validate_status(CRD, status) == [
        'status.phase: Unsupported value: "Finished": supported values: '
        '"Progressing", "Paused", "Healthy", "Degraded"',
        'status.conditions[0].status: Unsupported value: "Maybe": '
        'supported values: "True", "False", "Unknown"',
        BLOCKED,
    ]
    with pytest.raises(ValidationError):
        RolloutStatus.model_validate(status)


def test_status_conditions_are_a_map_keyed_by_type() -> None:
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Succeeded",
        "lastTransitionTime": "2025-01-01T10:00:00Z",
    }
    assert validate_status(CRD, {"conditions": [condition, {**condition, "status": "False"}]}) == [
        'status.conditions[1]: Duplicate value: {"type":"Ready"}'
    ]
    assert validate_status(CRD, {"conditions": [{**condition, "lastTransitionTime": "yesterday"}]})[0] == (
        'status.conditions[0].lastTransitionTime: Invalid value: "yesterday": '
        'status.conditions[0].lastTransitionTime in body must be of type date-time: "yesterday"'
    )


# ---------------------------------------------------------------------------------------------
# The CRD object and its file.


def test_crd_file_is_the_rendered_crd() -> None:
    assert CRD_FILE.read_text(encoding="utf-8") == render_crd_yaml()
    assert load_crd(CRD_FILE) == build_crd()


def test_crd_names_scope_and_subresources() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "lambdarollouts.lambda.rollouts.dev"
    assert spec["group"] == "lambda.rollouts.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "LambdaRollout",
        "listKind": "LambdaRolloutList",
        "plural": "lambdarollouts",
        "singular": "lambdarollout",
        "shortNames": ["lro"],
        "categories": ["rollouts"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in columns] == [
        ("Function", "string", ".spec.functionName", 0),
        ("Alias", "string", ".spec.alias", 0),
        ("Stable", "string", ".status.stableVersion", 0),
        ("Canary", "string", ".status.canaryVersion", 0),
        ("Weight", "number", ".status.canaryWeight", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        # Counted from 1, as the messages count the steps (status.step).
        ("Step", "string", ".status.step", 1),
        ("Message", "string", ".status.message", 1),
    ]


def _rules(node: dict[str, Any], path: str, *, bounded: bool) -> list[tuple[str, bool, dict[str, Any]]]:
    """Every CEL rule in a schema: (where, whether its node occurs a bounded number of times, rule)."""
    found = [(path, bounded, rule) for rule in node.get("x-kubernetes-validations", [])]
    for key, sub in node.get("properties", {}).items():
        found += _rules(sub, f"{path}.{key}", bounded=bounded)
    if "items" in node:
        found += _rules(node["items"], f"{path}[]", bounded=bounded and "maxItems" in node)
    return found


def test_rules_fit_the_api_servers_cost_budget() -> None:
    # kube-apiserver refuses a CRD whose rule cost times the node's possible occurrences exceeds
    # 10 million; below a list without maxItems a node counts as occurring about a million times,
    # so rules there must be a handful of has() tests and comparisons: no macros, no list literals.
    rules = _rules(version_schema(CRD), "", bounded=True)
    unbounded = [(path, rule) for path, bounded, rule in rules if not bounded]
    assert {path for path, _ in unbounded} == {
        ".spec.strategy.canary.steps[]",
        ".spec.strategy.canary.steps[].analysis.metrics[]",
        ".spec.strategy.canary.steps[].analysis.queries[]",
        ".spec.analysis.metrics[]",
    }
    expensive = re.compile(r"\.(all|exists|exists_one|map|filter)\(|\[")
    for path, rule in unbounded:
        for expression in (rule["rule"], rule.get("messageExpression", "")):
            assert expensive.search(expression) is None, (path, expression)
    # A messageExpression can fail at run time; the API server then shows the static message.
    assert all(rule.get("message") for _, _, rule in rules)


def test_build_crd_returns_a_fresh_dict() -> None:
    crd = build_crd()
    crd["spec"]["versions"].clear()
    assert build_crd() == CRD


# ---------------------------------------------------------------------------------------------
# The validator's wording, on the LambdaRollout CRD.


def test_wording_of_common_errors() -> None:
    no_alias = _rollout()
    del no_alias["spec"]["alias"]
    assert validate_object(CRD, no_alias) == ["spec.alias: Required value", BLOCKED]
    assert validate_object(CRD, _rollout(version="$LATEST")) == [
        "spec.version: Invalid value: \"$LATEST\": spec.version in body should match '^[0-9]+$'"
    ]
    assert validate_object(CRD, _rollout(version=42)) == [
        'spec.version: Invalid value: "integer": spec.version in body must be of type string: "integer"',
        BLOCKED,
    ]
    assert validate_object(CRD, _rollout(functionName="f" * 171)) == [
        "spec.functionName: Too long: may not be more than 170 bytes",
        BLOCKED,
    ]
    assert validate_object(CRD, _rollout(functionName="")) == [
        'spec.functionName: Invalid value: "": spec.functionName in body should be at least 1 chars long'
    ]
    assert validate_object(CRD, _rollout(strategy={"preset": "Foo"})) == [
        'spec.strategy.preset: Unsupported value: "Foo": supported values: '
        + ", ".join(f'"{preset.value}"' for preset in Preset),
        BLOCKED,
    ]


def test_nested_paths_and_list_indexes() -> None:
    steps = [{"setWeight": 150}, {}, {"setWeight": 5, "pause": {}}, {"pause": {"duration": "5 minutes"}}]
    assert validate_object(CRD, _rollout(strategy={"canary": {"steps": steps}})) == [
        "spec.strategy.canary.steps[0].setWeight: Invalid value: 150: "
        "spec.strategy.canary.steps[0].setWeight in body should be less than or equal to 100",
        'spec.strategy.canary.steps[3].pause.duration: Invalid value: "5 minutes": '
        "spec.strategy.canary.steps[3].pause.duration in body should match "
        "'^([0-9]+(\\.[0-9]+)?(ms|h|m|s))+$'",
        f"spec.strategy.canary.steps[1]: Invalid value: {STEP_MESSAGE}",
        f"spec.strategy.canary.steps[2]: Invalid value: {STEP_MESSAGE}",
    ]
    assert validate_object(CRD, _rollout(strategy={"canary": {"steps": []}})) == [
        "spec.strategy.canary.steps: Invalid value: 0: "
        "spec.strategy.canary.steps in body should have at least 1 items"
    ]


def test_value_errors_do_not_hold_back_the_rules_but_shape_errors_do() -> None:
    # A pattern error leaves the object's shape intact, so the CEL rules still run.
    assert validate_object(CRD, _rollout(version="abc", strategy={})) == [
        "spec.version: Invalid value: \"abc\": spec.version in body should match '^[0-9]+$'",
        f"spec.strategy: Invalid value: {STRATEGY_MESSAGE}",
    ]
    # A type error does not: the rules are skipped and the API server says so.
    assert validate_object(CRD, _rollout(paused="yes", strategy={})) == [
        'spec.paused: Invalid value: "string": spec.paused in body must be of type boolean: "string"',
        BLOCKED,
    ]


def test_missing_spec_and_wrong_version() -> None:
    manifest = _rollout()
    del manifest["spec"]
    assert validate_object(CRD, manifest) == ["spec: Required value", BLOCKED]
    with pytest.raises(ValueError, match="no version 'v9'"):
        validate_object(CRD, {**_rollout(), "apiVersion": "lambda.rollouts.dev/v9"})
    with pytest.raises(ValueError, match="not in group"):
        validate_object(CRD, {**_rollout(), "apiVersion": "example.com/v1alpha1"})


def test_invalid_status_is_the_api_servers_422() -> None:
    errors = check_object(CRD, _rollout(version="$LATEST", alias="123"))
    status = invalid_status(CRD, "demo", errors)
    assert status["code"] == 422
    assert status["reason"] == "Invalid"
    assert status["message"] == (
        'LambdaRollout.lambda.rollouts.dev "demo" is invalid: ['
        + ", ".join(str(error) for error in errors)
        + "]"
    )
    assert status["details"]["causes"][0] == {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: \"123\": spec.alias in body should match '{ALIAS_PATTERN}'",
        "field": "spec.alias",
    }
    single = invalid_status(CRD, "demo", check_object(CRD, _rollout(version="x")))
    assert single["message"].endswith(
        "is invalid: spec.version: Invalid value: \"x\": spec.version in body should match '^[0-9]+$'"
    )


# ---------------------------------------------------------------------------------------------
# The validator on a CRD that exercises the rest of the schema language.

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "names": {"kind": "Widget", "plural": "widgets"},
        "scope": "Namespaced",
        "versions": [
            {"name": "v1beta1", "served": False, "storage": False},
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-validations": [
                            {
                                "rule": "self.metadata.name.startsWith('w-')",
                                "message": "name must start with w-",
                            }
                        ],
                        "properties": {
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "!has(self.count) || self.count <= 3 || has(self.ratio)",
                                        "messageExpression": "'count ' + string(self.count) + ': no ratio'",
                                    },
                                    {
                                        "rule": "!has(self.maybe) || self.maybe != 'never'",
                                        "reason": "FieldValueForbidden",
                                        "fieldPath": ".maybe",
                                        "message": "never is not allowed",
                                    },
                                    {"rule": "!has(self.tags) || self.tags.size() != 1"},
                                ],
                                "properties": {
                                    "count": {"type": "integer", "maximum": 5},
                                    "ratio": {
                                        "type": "number",
                                        "maximum": 1.5,
                                        "exclusiveMinimum": True,
                                        "minimum": 0,
                                    },
                                    "big": {"type": "number", "maximum": 1000},
                                    "text": {
                                        "type": "string",
                                        "pattern": "^[a-z]*$",
                                        "x-kubernetes-validations": [
                                            {"rule": "self != 'forbidden'", "message": "not that word"}
                                        ],
                                    },
                                    "maybe": {"type": "string", "nullable": True},
                                    "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                                    "when": {"type": "string", "format": "date-time"},
                                    "tags": {
                                        "type": "array",
                                        "maxItems": 3,
                                        "items": {"type": "string"},
                                        "x-kubernetes-list-type": "set",
                                    },
                                    "labels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string", "maxLength": 3},
                                    },
                                    "free": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                        "properties": {
                                            "known": {
                                                "type": "object",
                                                "properties": {"a": {"type": "string"}},
                                            }
                                        },
                                    },
                                    "limits": {"type": "object", "maxProperties": 1},
                                },
                            },
                        },
                    }
                },
            },
        ],
    },
}


def _widget(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w-1"}, "spec": spec}


def test_numbers_print_as_go_prints_them() -> None:
    assert validate_object(WIDGET_CRD, _widget(ratio=2.5, big=1e6)) == [
        "spec.ratio: Invalid value: 2.5: spec.ratio in body should be less than or equal to 1.5",
        "spec.big: Invalid value: 1e+06: spec.big in body should be less than or equal to 1000",
    ]
    assert validate_object(WIDGET_CRD, _widget(ratio=0)) == [
        "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0"
    ]


def test_strings_are_quoted_as_go_quotes_them() -> None:
    assert validate_object(WIDGET_CRD, _widget(text='tab\tquote"é')) == [
        'spec.text: Invalid value: "tab\\tquote\\"é": spec.text in body should match \'^[a-z]*$\''
    ]


def test_null_is_allowed_only_where_nullable() -> None:
    assert validate_object(WIDGET_CRD, _widget(maybe=None)) == []
    assert validate_object(WIDGET_CRD, _widget(text=None))[0] == (
        'spec.text: Invalid value: "null": spec.text in body must be of type string: "null"'
    )


def test_sizes_sets_maps_and_formats() -> None:
    assert validate_object(
        WIDGET_CRD, _widget(tags=["a", "b", "a", "c"], labels={"ok": "abc", "bad": "abcd"})
    ) == [
        "spec.tags: Too many: 4: must have at most 3 items",
        "spec.labels.bad: Too long: may not be more than 3 bytes",
        'spec.tags[2]: Duplicate value: "a"',
        BLOCKED,
    ]
    assert validate_object(WIDGET_CRD, _widget(limits={"a": 1, "b": 2})) == [
        "spec.limits: Too many: 2: must have at most 1 item",
        BLOCKED,
    ]
    assert validate_object(WIDGET_CRD, _widget(when="2025-01-01T10:00:00.5+01:00")) == []
    assert validate_object(WIDGET_CRD, _widget(mode="turbo"))[0] == (
        'spec.mode: Unsupported value: "turbo": supported values: "fast", "slow"'
    )


def test_rule_options_message_expression_reason_field_path_and_root() -> None:
    manifest = _widget(count=4, maybe="never", tags=["x"])
    manifest["metadata"]["name"] = "gadget"
    assert validate_object(WIDGET_CRD, manifest) == [
        "<nil>: Invalid value: name must start with w-",
        "spec: Invalid value: count 4: no ratio",
        "spec.maybe: Forbidden: never is not allowed",
        "spec: Invalid value: failed rule: !has(self.tags) || self.tags.size() != 1",
    ]


def test_cel_reads_a_float_in_an_integer_field_as_an_error() -> None:
    # kube-apiserver decodes JSON's 4.0 as a float64, which the schema admits in an integer field
    # but CEL cannot read as an int: the rule fails to evaluate, unless || absorbs the error.
    rule = "!has(self.count) || self.count <= 3 || has(self.ratio)"
    assert validate_object(WIDGET_CRD, _widget(count=4.0)) == [
        f'spec: Invalid value: "object": invalid data, expected int, got float64 evaluating rule: {rule}'
    ]
    assert validate_object(WIDGET_CRD, _widget(count=4.0, ratio=1.0)) == []
    assert validate_object(WIDGET_CRD, _widget(count=4)) == ["spec: Invalid value: count 4: no ratio"]


def test_a_rule_on_a_scalar_shows_the_value() -> None:
    assert validate_object(WIDGET_CRD, _widget(text="forbidden")) == [
        'spec.text: Invalid value: "forbidden": not that word'
    ]


def test_a_string_reports_its_first_failure_only() -> None:
    # maxLength, then minLength, then pattern: kube-openapi stops at the first.
    assert validate_object(CRD, _rollout(alias="")) == [
        'spec.alias: Invalid value: "": spec.alias in body should be at least 1 chars long'
    ]
    assert validate_object(CRD, _rollout(alias="1" * 129)) == [
        "spec.alias: Too long: may not be more than 128 bytes",
        BLOCKED,
    ]


def test_pruning_keeps_what_the_schema_declares() -> None:
    manifest = _widget(
        count=1,
        mystery=True,
        labels={"any": "x"},
        free={"anything": {"deep": 1}, "known": {"a": "kept", "b": "dropped"}},
        maybe=None,
        text=None,
    )
    manifest["metadata"]["labels"] = {"team": "a"}
    manifest["status"] = {"whatever": 1}
    original = copy.deepcopy(manifest)
    assert unknown_fields(WIDGET_CRD, manifest) == ["spec.mystery", "spec.free.known.b", "status"]
    assert prune_object(WIDGET_CRD, manifest) == {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w-1", "labels": {"team": "a"}},
        "spec": {
            "count": 1,
            "labels": {"any": "x"},
            "free": {"anything": {"deep": 1}, "known": {"a": "kept"}},
            "maybe": None,
            "mode": "fast",
        },
    }
    assert manifest == original


def test_versions_are_chosen_by_api_version() -> None:
    assert version_schema(WIDGET_CRD)["type"] == "object"
    with pytest.raises(ValueError, match="not served"):
        validate_object(WIDGET_CRD, {**_widget(), "apiVersion": "example.com/v1beta1"})


def test_status_is_checked_alone_for_the_status_subresource() -> None:
    errors = check_status(CRD, {"phase": "Healthy", "canaryWeight": "ten"})
    assert [(error.type, error.field) for error in errors] == [
        (ErrorType.TYPE_INVALID, "status.canaryWeight"),
        (ErrorType.INVALID, "<nil>"),
    ]
    assert check_status(WIDGET_CRD, {"anything": 1}) == []


def test_load_crd_finds_the_crd_among_other_documents(tmp_path: Path) -> None:
    path = tmp_path / "bundle.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n" + render_crd_yaml())
    assert load_crd(path) == CRD
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: Namespace\n")
    with pytest.raises(ValueError, match="no CustomResourceDefinition"):
        load_crd(empty)
