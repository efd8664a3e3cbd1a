"""Parts of the docs that the build generates from the code, so that they cannot drift from it.

Registered in ``mkdocs.yml`` (``hooks:``); MkDocs calls ``on_page_markdown`` for every page.

Contract:
- ``<!-- generated: api-reference -->`` in a page becomes the LambdaRollout API reference
  (``render_api_reference``), rendered from the CRD the operator installs
  (``lambda_rollouts.crd.build_crd()``): a section per object of its OpenAPI schema, spec first,
  then status, each with a table of the object's fields: type, default, description and
  validation (required, bounds, lengths, patterns, enums, list rules and CEL rules by their
  messages). A default is the schema's, else the spec model's (``lambda_rollouts.model``); an
  analysis field's is the value the operator fills in (``AnalysisSettings.of``). Status fields
  have none: the operator writes the status whole.
- ``<!-- include: PATH -->`` becomes the Markdown file at ``PATH`` (from the repository's root)
  without its first heading, its relative links rewritten for the site (``include_markdown``):
  into ``docs/`` they lead to that page; ``README.md#x`` leads to the page ``docs/x.md``; any
  other file of the repository to its address under ``repo_url``.
- A marker this module does not know, a file it cannot find, or a link it cannot place fails the
  build with the page's name, rather than publishing a page with a hole in it.
"""

from __future__ import annotations

import html
import posixpath
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lambda_rollouts.crd import build_crd
from lambda_rollouts.model import AnalysisSettings, AnalysisSpec, RolloutSpec, format_duration

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- (generated|include): (\S+) -->$", re.MULTILINE)
# Where the repository's own files are read on the web (the README's and the chart's links).
BLOB = "blob/main"
# What the operator makes of an analysis that sets nothing but its checks.
ANALYSIS_DEFAULTS = AnalysisSettings.of(AnalysisSpec())


class DocsBuildError(Exception):
    """A page asks for something the build cannot generate."""


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    """Replace each marker of the page with what it names."""
    source = page.file.src_uri

    def expand(match: re.Match[str]) -> str:
        kind, what = match.groups()
        if kind == "generated":
            if what != "api-reference":
                raise DocsBuildError(f"{source}: nothing is generated under the name {what!r}")
            return render_api_reference()
        return include_markdown(what, page_uri=source, repo_url=config.get("repo_url") or "")

    return MARKER.sub(expand, markdown)


# ---------------------------------------------------------------------------------------------
# Including a Markdown file of the repository.

LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")


def include_markdown(path: str, *, page_uri: str, repo_url: str) -> str:
    """The file at ``path`` without its first heading, with its links made to work on the site."""
    file = ROOT / path
    if not file.is_file():
        raise DocsBuildError(f"{page_uri}: cannot include {path}: no such file")
    text = re.sub(r"\A# [^\n]*\n+", "", file.read_text(encoding="utf-8"))
    folder = posixpath.dirname(path)

    def relink(match: re.Match[str]) -> str:
        label, target = match.groups()
        if re.match(r"^[a-z]+:|^#", target):
            return match.group(0)  # a web address, or a heading of the same file
        return f"[{label}]({_site_link(target, folder, page_uri, repo_url)})"

    return LINK.sub(relink, text)


def _site_link(target: str, folder: str, page_uri: str, repo_url: str) -> str:
    file_part, _, anchor = target.partition("#")
    in_repo = posixpath.normpath(posixpath.join(folder, file_part))
    if in_repo.startswith("../"):
        raise DocsBuildError(f"{page_uri}: a link leaves the repository: {target}")
    page_dir = posixpath.dirname(page_uri)
    fragment = f"#{anchor}" if anchor else ""
    if in_repo.startswith("docs/"):
        return posixpath.relpath(in_repo.removeprefix("docs/"), page_dir or ".") + fragment
    if in_repo == "README.md" and anchor:
        if (ROOT / "docs" / f"{anchor}.md").is_file():
            return posixpath.relpath(f"{anchor}.md", page_dir or ".")
        raise DocsBuildError(f"{page_uri}: no docs page stands for README.md#{anchor} (docs/{anchor}.md)")
    if not repo_url:
        raise DocsBuildError(f"{page_uri}: {target} is in the repository, and mkdocs.yml has no repo_url")
    return f"{repo_url.rstrip('/')}/{BLOB}/{in_repo}{fragment}"


# ---------------------------------------------------------------------------------------------
# The API reference.


def render_api_reference() -> str:
    """The reference of the LambdaRollout API, as Markdown, from the CRD's schema."""
    version = build_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    sections: list[str] = []
    # The status is the operator's to write: its fields have no default a user could rely on.
    for top, model in (("spec", RolloutSpec), ("status", None)):
        for path, node, owner in _objects(schema["properties"][top], top, model):
            sections.append(_section(path, node, owner))
    return "\n".join(sections)


def _objects(
    node: dict[str, Any], path: str, model: type[BaseModel] | None
) -> typing.Iterator[tuple[str, dict[str, Any], type[BaseModel] | None]]:
    """Every object of the schema that has fields, with its path and its model, depth first."""
    if node.get("type") == "array":
        yield from _objects(node.get("items", {}), f"{path}[]", model)
        return
    if not node.get("properties"):
        return
    yield path, node, model
    for name, child in node["properties"].items():
        yield from _objects(child, f"{path}.{name}", _child_model(model, name))


def _section(path: str, node: dict[str, Any], model: type[BaseModel] | None) -> str:
    lines = [f"### `{path}`", ""]
    if node.get("description"):
        lines += [_text(node["description"]), ""]
    if "default" in node:
        lines += [f"Default when absent: `{_inline(node['default'])}`.", ""]
    rules = node.get("x-kubernetes-validations", [])
    if rules:
        lines += [
            "The API server checks these CEL rules; one that fails refuses the object with its message:",
            "",
        ]
        lines += [f"- `{rule['rule']}`: {_rule(rule)}" for rule in rules] + [""]
    required = set(node.get("required", []))
    rows = [
        [
            f"`{name}`",
            _type(child),
            _default(child, model, name),
            _text(child.get("description", "")),
            "; ".join(_validation(child, required=name in required)),
        ]
        for name, child in node["properties"].items()
    ]
    header = ["Field", "Type", "Default", "Description", "Validation"]
    if not any(row[2] for row in rows):
        header, rows = header[:2] + header[3:], [row[:2] + row[3:] for row in rows]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "number" and node.get("multipleOf") == 1:
        return "number (whole)"
    if node.get("format") == "date-time":
        return "string (date-time)"
    return str(kind)


def _validation(node: dict[str, Any], *, required: bool) -> list[str]:
    found = ["required"] if required else []
    found += _bounds(node, "minLength", "maxLength", "character")
    found += _bounds(node, "minItems", "maxItems", "item")
    if node.get("exclusiveMinimum"):
        found.append(f"more than {node['minimum']:g}")
    else:
        found += _bounds(node, "minimum", "maximum", "")
    if "enum" in node:
        found.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    if "pattern" in node:
        found.append(f"matches `{node['pattern']}`")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(f"`{key}`" for key in node.get("x-kubernetes-list-map-keys", []))
        found.append(f"each {keys} at most once")
    found += [f"CEL `{rule['rule']}`: {_rule(rule)}" for rule in node.get("x-kubernetes-validations", [])]
    return found


def _rule(rule: dict[str, Any]) -> str:
    """A CEL rule's message on failure (a computed message is shown as its expression)."""
    return _text(rule.get("message") or rule.get("messageExpression") or "")


def _bounds(node: dict[str, Any], low_key: str, high_key: str, unit: str) -> list[str]:
    """``1 to 170 characters``, ``at least 1 item``, ``at most 100``: the bounds that are set."""
    low, high = node.get(low_key), node.get(high_key)

    def counted(number: float) -> str:
        return f"{number:g}" + (f" {unit}" + ("" if number == 1 else "s") if unit else "")

    if low is not None and high is not None:
        return [f"{low:g} to {counted(high)}"]
    if low is not None:
        return [f"at least {counted(low)}"]
    if high is not None:
        return [f"at most {counted(high)}"]
    return []


def _default(node: dict[str, Any], model: type[BaseModel] | None, name: str) -> str:
    """The value the field takes when absent: the schema's, else the one the operator uses."""
    if "default" in node:
        return f"`{_inline(node['default'])}`"
    attribute, field = _model_field(model, name)
    if model is AnalysisSpec:
        # Analysis fields stay unset in the spec (a step inherits them); the operator fills in
        # these values when neither the step nor spec.analysis sets them.
        if attribute == "interval":
            value: Any = format_duration(ANALYSIS_DEFAULTS.interval_seconds)
        else:
            value = getattr(ANALYSIS_DEFAULTS, attribute, None)
    else:
        value = None if field is None else field.default
    if value in (PydanticUndefined, None, ()):
        return ""
    return f"`{_inline(getattr(value, 'value', value))}`"


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_inline(item)}" for key, item in value.items()) + "}"
    return str(value)


def _text(text: str) -> str:
    """A description as Markdown text: no HTML, no emphasis, no table cell breaks."""
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", text)


# ---------------------------------------------------------------------------------------------
# The model behind each object, for its defaults.


def _model_field(model: type[BaseModel] | None, name: str) -> tuple[str, FieldInfo | None]:
    """The attribute and the field of ``model`` that the schema calls ``name``."""
    for attribute, field in (model.model_fields if model is not None else {}).items():
        if field.alias == name:
            return attribute, field
    return "", None


def _child_model(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    _, field = _model_field(model, name)
    return None if field is None else _model_in(field.annotation)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[Hook] | None``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, typing.Annotated):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None
