"""Every unquoted scalar of the corpus means the same to every YAML reader a manifest meets.

The suite reads tests/corpus with PyYAML (YAML 1.1); kubectl, Argo CD and Flux read manifests with
go.yaml.in/yaml/v2 through sigs.k8s.io/yaml (YAML 1.1 as go-yaml resolves it: ``y``, ``N``, ``on``
are booleans, ``1e3`` and ``08`` floats, ``0o17`` an integer); kustomize and most other tools read
YAML 1.2's core schema (``yes``, ``017``, ``1:30`` stay what they look like). A plain scalar that
two of them read differently (``namespace: N``: the string "N" for PyYAML, false for kubectl) means
the suite checks another manifest than users send: quote it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "corpus"

Reading = tuple[str, Any]

# go.yaml.in/yaml/v2 resolve.go: the words it looks up, the float syntax it accepts.
_GO_WORDS: Final[dict[str, Reading]] = {
    **{word: ("bool", True) for word in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE")},
    **{word: ("bool", True) for word in ("on", "On", "ON")},
    **{word: ("bool", False) for word in ("n", "N", "no", "No", "NO", "false", "False", "FALSE")},
    **{word: ("bool", False) for word in ("off", "Off", "OFF")},
    **{word: ("null", None) for word in ("", "~", "null", "Null", "NULL")},
    **{word: ("float", math.inf) for word in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{word: ("float", -math.inf) for word in ("-.inf", "-.Inf", "-.INF")},
    **{word: ("float", "nan") for word in (".nan", ".NaN", ".NAN")},
}
_GO_FLOAT: Final = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_DATE: Final = re.compile(r"[0-9]{4}-")
# Go's strconv.ParseInt(s, 0, 64) after go-yaml removed every underscore.
_GO_INT: Final = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")

# YAML 1.2 core schema (yaml.org/spec/1.2.2, 10.3.2).
_CORE: Final[list[tuple[re.Pattern[str], str]]] = [
    (re.compile(r"null|Null|NULL|~|"), "null"),
    (re.compile(r"true|True|TRUE|false|False|FALSE"), "bool"),
    (re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"), "int"),
    (re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"), "float"),
    (re.compile(r"[-+]?\.(inf|Inf|INF)|\.nan|\.NaN|\.NAN"), "float"),
]


def _go_int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXoObB":
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def go_yaml_v2(text: str) -> Reading:
    """A plain scalar as go.yaml.in/yaml/v2 decodes it into an interface{} (a timestamp stays a string)."""
    if text in _GO_WORDS:
        return _GO_WORDS[text]
    hint = text[:1]
    if hint == ".":
        return ("float", float(text)) if _GO_FLOAT.fullmatch(text) else ("str", text)
    if hint.isdigit() or hint in ("+", "-"):
        if _GO_DATE.match(text):
            return ("str", text)
        plain = text.replace("_", "")
        # ParseInt, then ParseUint: beyond 64 bits the digits are read as a float.
        if _GO_INT.fullmatch(plain) and -(2**63) <= _go_int(plain) < 2**64:
            return ("int", _go_int(plain))
        if _GO_FLOAT.fullmatch(plain):
            return ("float", float(plain))
    return ("str", text)


def yaml_1_2_core(text: str) -> Reading:
    """A plain scalar as YAML 1.2's core schema resolves it."""
    for pattern, kind in _CORE:
        if pattern.fullmatch(text):
            return kind, _core_value(kind, text)
    return ("str", text)


def _core_value(kind: str, text: str) -> Any:
    if kind == "null":
        return None
    if kind == "bool":
        return text.lower() == "true"
    if kind == "int":
        return int(text, 8 if text.startswith("0o") else 16 if text.startswith("0x") else 10)
    if text.lower().endswith("nan"):
        return "nan"
    return float(text.replace(".inf", "inf").replace(".Inf", "inf").replace(".INF", "inf"))


def pyyaml(node: yaml.ScalarNode) -> Reading:
    """A plain scalar as the suite reads it (yaml.safe_load)."""
    value = yaml.SafeLoader(" ").construct_object(node)
    kind = node.tag.rsplit(":", 1)[-1]
    if kind == "float" and math.isnan(value):
        value = "nan"
    return kind, value


def _plain_scalars(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        if node.style is None:
            yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _plain_scalars(item)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _plain_scalars(key)
            yield from _plain_scalars(value)


def ambiguous_scalars(text: str) -> list[str]:
    """Every plain scalar of a YAML stream that PyYAML, go-yaml v2 and YAML 1.2 do not read alike."""
    found = []
    for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
        for node in _plain_scalars(document) if document is not None else ():
            readings = {"PyYAML": pyyaml(node), "go-yaml v2": go_yaml_v2(node.value)}
            readings["YAML 1.2"] = yaml_1_2_core(node.value)
            if len({(kind, repr(value)) for kind, value in readings.values()}) > 1:
                said = ", ".join(f"{reader} {kind} {value!r}" for reader, (kind, value) in readings.items())
                found.append(f"line {node.start_mark.line + 1}: {node.value!r} reads as {said}")
    return found


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda path: path.name)
def test_corpus_has_no_scalar_that_yaml_readers_read_differently(path: Path) -> None:
    assert ambiguous_scalars(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("text", "readings"),
    [
        ("N", {"PyYAML": ("str", "N"), "go-yaml v2": ("bool", False), "YAML 1.2": ("str", "N")}),
        ("y", {"PyYAML": ("str", "y"), "go-yaml v2": ("bool", True), "YAML 1.2": ("str", "y")}),
        ("yes", {"PyYAML": ("bool", True), "go-yaml v2": ("bool", True), "YAML 1.2": ("str", "yes")}),
        ("off", {"PyYAML": ("bool", False), "go-yaml v2": ("bool", False), "YAML 1.2": ("str", "off")}),
        ("0755", {"PyYAML": ("int", 493), "go-yaml v2": ("int", 493), "YAML 1.2": ("int", 755)}),
        ("08", {"PyYAML": ("str", "08"), "go-yaml v2": ("float", 8.0), "YAML 1.2": ("int", 8)}),
        ("0o17", {"PyYAML": ("str", "0o17"), "go-yaml v2": ("int", 15), "YAML 1.2": ("int", 15)}),
        ("1e3", {"PyYAML": ("str", "1e3"), "go-yaml v2": ("float", 1000.0), "YAML 1.2": ("float", 1000.0)}),
        ("1:30", {"PyYAML": ("int", 90), "go-yaml v2": ("str", "1:30"), "YAML 1.2": ("str", "1:30")}),
        ("1_000", {"PyYAML": ("int", 1000), "go-yaml v2": ("int", 1000), "YAML 1.2": ("str", "1_000")}),
        ("2025-01-02", {"PyYAML": ("timestamp", "2025-01-02"), "go-yaml v2": ("str", "2025-01-02")}),
    ],
)
def test_ambiguous_scalars_are_found(text: str, readings: dict[str, Reading]) -> None:
    document = yaml.compose(f"key: {text}", Loader=yaml.SafeLoader)
    assert document is not None
    [node] = [scalar for scalar in _plain_scalars(document) if scalar.value == text]
    reading = pyyaml(node)
    if reading[0] == "timestamp":
        reading = ("timestamp", reading[1].isoformat())
    assert reading == readings["PyYAML"]
    assert go_yaml_v2(text) == readings["go-yaml v2"]
    if "YAML 1.2" in readings:
        assert yaml_1_2_core(text) == readings["YAML 1.2"]
    assert len(ambiguous_scalars(f"key: {text}\n")) == 1


@pytest.mark.parametrize(
    "text",
    ['"N"', "'0755'", "checkout-api", "10", "10.0", "-1", "true", "false", "1.5h", "p99.9", "v1alpha1"],
)
def test_unambiguous_scalars_pass(text: str) -> None:
    assert ambiguous_scalars(f"key: {text}\n") == []
