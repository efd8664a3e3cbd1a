"""OpenAPI documents for custom resources, built from their CRDs as kube-apiserver builds them.

Contract:
- ``group_versions(crds)`` builds one OpenAPI v3 document per served group/version of the given
  CRDs, keyed ``apis/<group>/<version>``: what ``GET /openapi/v3/apis/<group>/<version>`` serves
  (apiextensions-apiserver's ``BuildOpenAPIV3``). Each kind's schema is its CRD version's
  ``openAPIV3Schema`` with ``apiVersion``, ``kind`` and ``metadata`` (a reference to ``ObjectMeta``)
  set, ``x-kubernetes-int-or-string`` unfolded into ``anyOf`` and the
  ``x-kubernetes-group-version-kind`` (and ``x-kubernetes-selectable-fields``) extensions; its
  list kind, the paths of every operation (list, create, deletecollection, get, replace, delete,
  patch, and those of the status subresource) with kube-apiserver's operation ids, tags,
  descriptions, query parameters (``fieldValidation`` among them: kubectl checks for it before it
  leaves field validation to the server), request bodies and responses; and the apimachinery
  schemas they refer to.
- ``index(documents)`` is ``GET /openapi/v3``: each document's ``serverRelativeURL`` carries the
  upper-case hex SHA-512 of its JSON (``document_bytes``), as the server's does.
- ``swagger(crds, version)`` is ``GET /openapi/v2`` for the CRDs: the same paths and schemas in
  OpenAPI v2 form (``#/definitions/`` references, inline parameters, defaults pruned, and v2's
  simplifications of ``nullable``, ``x-kubernetes-preserve-unknown-fields`` and the junctors).

``builtin_crd()`` stands in for a built-in kind (the sandbox has no schemas for those): its document
has the kind's paths and operations, so that kubectl finds ``fieldValidation`` for it too, and a
schema that declares no fields.

The query parameters and the apimachinery schemas (``ObjectMeta``, ``Status``, ``DeleteOptions``...)
are kube-apiserver 1.36's own words, kept in ``openapi_meta.json`` beside this module. Not built:
the ``scale`` subresource's paths (the sandbox serves no scale subresource), OpenAPI for built-in
kinds, and v2's protobuf encoding (the emulator answers v2 in JSON only).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.resources
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

JsonDict = dict[str, Any]

V3_PREFIX: Final = "#/components/schemas/"
V2_PREFIX: Final = "#/definitions/"
META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1."
_TYPE_META: Final[JsonDict] = {
    "apiVersion": {
        "description": (
            "APIVersion defines the versioned schema of this representation of an object. Servers should"
            " convert recognized schemas to the latest internal value, and may reject unrecognized values."
            " More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
        ),
        "type": "string",
    },
    "kind": {
        "description": (
            "Kind is a string value representing the REST resource this object represents. Servers may"
            " infer this from the endpoint the client submits requests to. Cannot be updated. In"
            " CamelCase. More info:"
            " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
        ),
        "type": "string",
    },
}
_EMBEDDED_TYPE_META: Final = {
    "apiVersion": (
        "apiVersion defines the versioned schema of this representation of an object. More info:"
        " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
    ),
    "kind": (
        "kind is a string value representing the type of this object. In CamelCase. More info:"
        " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
    ),
}
_OBJECT_METADATA: Final = (
    "Standard object's metadata. More info:"
    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_LIST_METADATA: Final = (
    "Standard list metadata. More info:"
    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_NAMESPACE_PARAMETER: Final = "object name and auth scope, such as for teams and projects"
# The query parameters of each action, from the options type the API server decodes for it.
_ACTION_PARAMETERS: Final[dict[str, tuple[str, ...]]] = {
    "list": (
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "shardSelector",
        "timeoutSeconds",
        "watch",
    ),
    "post": ("dryRun", "fieldManager", "fieldValidation"),
    "get": ("resourceVersion",),
    "put": ("dryRun", "fieldManager", "fieldValidation"),
    "delete": (
        "dryRun",
        "gracePeriodSeconds",
        "ignoreStoreReadErrorWithClusterBreakingPotential",
        "orphanDependents",
        "propagationPolicy",
    ),
    "patch": ("dryRun", "fieldManager (apply)", "fieldValidation", "force"),
}
_ACTION_PARAMETERS["deletecollection"] = _ACTION_PARAMETERS["list"]
_OPERATION_VERBS: Final = (
    "get",
    "log",
    "read",
    "replace",
    "patch",
    "delete",
    "deletecollection",
    "watch",
    "connect",
    "proxy",
    "list",
    "create",
)
_PATCH_TYPES: Final = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)
_MEDIA_TYPES: Final = ("application/json", "application/yaml")


@functools.cache
def _meta() -> JsonDict:
    text = importlib.resources.files(__package__).joinpath("openapi_meta.json").read_text("utf-8")
    loaded: JsonDict = json.loads(text)
    return loaded


def model_name(group: str, version: str, kind: str) -> str:
    """The schema name of a kind: the group reversed, then version and kind (``dev.rollouts...``).

    Built-in kinds (the core group and ``*.k8s.io``, ``apps``...) are named as Kubernetes' own
    packages are, ``io.k8s.api.<group>.<version>.<kind>``.
    """
    if not group or "." not in group or group.endswith(".k8s.io"):
        return f"io.k8s.api.{group.split('.')[0] or 'core'}.{version}.{kind}"
    return ".".join([*reversed(group.split(".")), version, kind])


def builtin_crd(
    group: str, version: str, kind: str, plural: str, *, namespaced: bool, status: bool
) -> JsonDict:
    """A schemaless CRD standing for a built-in kind: its document has the paths, no fields."""
    return {
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "listKind": f"{kind}List"},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [{"name": version, "served": True, "subresources": {"status": {}} if status else {}}],
        }
    }


def _api_root(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def _valid_operation_id(text: str, capitalize_first: bool) -> str:
    # kube-apiserver's ToValidOperationID: letters and '_' kept, anything else starts a new word.
    result = ""
    capitalize = capitalize_first
    for index, char in enumerate(text):
        if char.isalpha() or char == "_" or (index != 0 and char.isdigit()):
            result += char.upper() if capitalize else char
            capitalize = False
        else:
            capitalize = True
    return result


def _operation_id_and_tags(operation: str, path: str) -> tuple[str, list[str]]:
    """kube-apiserver's GetOperationIDAndTags: the group and version go in after the verb."""
    prefix = next(
        operation[:length]
        for length in range(1, len(operation) + 1)
        if operation[:length] in _OPERATION_VERBS
    )
    rest = operation[len(prefix) :]
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        parts = ["apis", "core", *parts[1:]]
    group = parts[1].removesuffix(".k8s.io")
    prefix += _valid_operation_id(group, True) + _valid_operation_id(parts[2], True)
    tag = f"{_valid_operation_id(group, False)}_{_valid_operation_id(parts[2], False)}"
    return prefix + _valid_operation_id(rest, True), [tag]


def _article(noun: str) -> str:
    if noun.endswith("s") and not noun.endswith("ss"):
        return " "  # plurals take no article
    return " an " if noun[:1].lower() in "aeiou" else " a "


def _description(kind: str, verb: str, subresource: str) -> str:
    sub = f" {subresource} of" if subresource else ""
    if verb == "patch":
        return f"partially update{sub} the specified {kind}"
    if verb == "deletecollection":
        return f"delete collection of{sub + ' a' if sub else ''} {kind}"
    article = {"list": " objects of kind ", "read": " the specified ", "replace": " the specified "}.get(
        verb, _article(kind) if verb in {"create", "delete"} else ""
    )
    return f"{verb}{sub}{article}{kind}"


def _query_parameter(key: str) -> JsonDict:
    return copy.deepcopy(_meta()["parameters"][key])


def _path_parameter(name: str, description: str) -> JsonDict:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _content(reference: str, media_types: Iterable[str]) -> JsonDict:
    return {media_type: {"schema": {"$ref": V3_PREFIX + reference}} for media_type in media_types}


class _Route:
    """One operation of one CRD version, as apiextensions' builder declares it."""

    def __init__(
        self, crd: Mapping[str, Any], version: str, path: str, method: str, action: str, verb: str
    ) -> None:
        spec = crd["spec"]
        names = spec["names"]
        self.group, self.version, self.kind = spec["group"], version, names["kind"]
        self.list_kind = names.get("listKind") or f"{self.kind}List"
        self.namespaced = spec.get("scope", "Namespaced") == "Namespaced"
        self.path, self.method, self.action, self.verb = path, method, action, verb
        self.subresource = path.split("{name}/")[1] if "{name}/" in path else ""

    def _sample(self) -> str:
        if self.action in {"delete", "deletecollection"}:
            return META + "Status"
        kind = self.list_kind if self.action == "list" else self.kind
        return model_name(self.group, self.version, kind)

    def parameters(self) -> list[JsonDict]:
        found = [_query_parameter("pretty")]
        if "{namespace}" in self.path:
            found.append(_path_parameter("namespace", _NAMESPACE_PARAMETER))
        if "{name}" in self.path:
            found.append(_path_parameter("name", f"name of the {self.kind}"))
        return found + [_query_parameter(key) for key in _ACTION_PARAMETERS[self.action]]

    def operation(self, common: set[tuple[str, str]]) -> JsonDict:
        namespaced = "Namespaced" if self.namespaced else ""
        title = self.subresource[:1].upper() + self.subresource[1:]
        name = f"{self.verb}{namespaced}{self.kind}{title}"
        if self.verb == "list" and self.namespaced and "{namespace}" not in self.path:
            name = f"list{self.kind}ForAllNamespaces"
        operation_id, tags = _operation_id_and_tags(name, self.path)
        operation: JsonDict = {
            "tags": tags,
            "description": _description(self.kind, self.verb, self.subresource),
            "operationId": operation_id,
        }
        own = [p for p in self.parameters() if (p["name"], p["in"]) not in common]
        if own:
            operation["parameters"] = sorted(own, key=lambda p: (p["name"], p["in"]))
        body = self._request_body()
        if body is not None:
            operation["requestBody"] = body
        operation["responses"] = self._responses()
        operation["x-kubernetes-action"] = self.action
        operation["x-kubernetes-group-version-kind"] = {
            "group": self.group,
            "version": self.version,
            "kind": self.kind,
        }
        return operation

    def _request_body(self) -> JsonDict | None:
        if self.action == "delete":
            return {"content": _content(META + "DeleteOptions", _MEDIA_TYPES)}
        if self.action == "patch":
            return {"content": _content(META + "Patch", _PATCH_TYPES), "required": True}
        if self.action in {"post", "put"}:
            reference = model_name(self.group, self.version, self.kind)
            return {"content": _content(reference, _MEDIA_TYPES), "required": True}
        return None

    def _responses(self) -> JsonDict:
        sample = self._sample()
        codes = {"post": ["200", "201", "202"], "put": ["200", "201"], "delete": ["200", "202"]}
        messages = {"200": "OK", "201": "Created", "202": "Accepted"}
        responses: JsonDict = {
            code: {"description": messages[code], "content": _content(sample, _MEDIA_TYPES)}
            for code in codes.get(self.action, ["200"])
        }
        responses["401"] = {"description": "Unauthorized"}
        return responses


def _routes(crd: Mapping[str, Any], version: Mapping[str, Any]) -> list[_Route]:
    spec = crd["spec"]
    group, name, plural = spec["group"], version["name"], spec["names"]["plural"]
    root = f"{_api_root(group, name)}/{plural}"
    routes: list[_Route] = []
    if spec.get("scope", "Namespaced") == "Namespaced":
        routes.append(_Route(crd, name, root, "get", "list", "list"))
        root = f"{_api_root(group, name)}/namespaces/{{namespace}}/{plural}"
    for path, method, action, verb in [
        (root, "get", "list", "list"),
        (root, "post", "post", "create"),
        (root, "delete", "deletecollection", "deletecollection"),
        (f"{root}/{{name}}", "get", "get", "read"),
        (f"{root}/{{name}}", "put", "put", "replace"),
        (f"{root}/{{name}}", "delete", "delete", "delete"),
        (f"{root}/{{name}}", "patch", "patch", "patch"),
    ]:
        routes.append(_Route(crd, name, path, method, action, verb))
    if "status" in (version.get("subresources") or spec.get("subresources") or {}):
        status = f"{root}/{{name}}/status"
        for method, action, verb in [
            ("get", "get", "read"),
            ("put", "put", "replace"),
            ("patch", "patch", "patch"),
        ]:
            routes.append(_Route(crd, name, status, method, action, verb))
    return routes


def _paths(routes: list[_Route]) -> JsonDict:
    by_path: dict[str, list[_Route]] = {}
    for route in routes:
        by_path.setdefault(route.path, []).append(route)
    paths: JsonDict = {}
    for path, path_routes in by_path.items():
        # Parameters that every operation of a path takes are the path's (kube-openapi's rule).
        keys = [{(p["name"], p["in"]): p for p in route.parameters()} for route in path_routes]
        common = set.intersection(*(set(k) for k in keys))
        item: JsonDict = {route.method: route.operation(common) for route in path_routes}
        item["parameters"] = sorted((keys[0][key] for key in common), key=lambda p: (p["name"], p["in"]))
        paths[path] = item
    return paths


# --------------------------------------------------------------------------------------------
# Schemas.


def _unfold(schema: Any) -> Any:
    """Structural schemas' Unfold: int-or-string fields get the anyOf they imply."""
    if isinstance(schema, list):
        return [_unfold(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _unfold(value) for key, value in schema.items()}
    if result.get("x-kubernetes-int-or-string") is True:
        either = [{"type": "integer"}, {"type": "string"}]
        if "anyOf" not in result:
            result["anyOf"] = either
        elif result["anyOf"] != either:
            result["allOf"] = [{"anyOf": either}, *result.get("allOf", [])]
    return result


def _embedded(schema: Any) -> None:
    """Embedded resources get apiVersion, kind and metadata, as the server publishes them."""
    if not isinstance(schema, dict):
        return
    for child in (schema.get("properties") or {}).values():
        _embedded(child)
    for key in ("items", "additionalProperties"):
        _embedded(schema.get(key))
    if schema.get("x-kubernetes-embedded-resource") is True:
        properties = schema.setdefault("properties", {})
        for field, description in _EMBEDDED_TYPE_META.items():
            properties[field] = {"description": description, "type": "string"}
        properties["metadata"] = _reference(META + "ObjectMeta", _OBJECT_METADATA)
        required = schema.setdefault("required", [])
        required += [field for field in ("kind", "apiVersion") if field not in required]


def _reference(name: str, description: str) -> JsonDict:
    return {"description": description, "allOf": [{"$ref": V3_PREFIX + name}]}


def _gvk(group: str, version: str, kind: str) -> list[JsonDict]:
    return [{"group": group, "kind": kind, "version": version}]


def _kind_schema(crd: Mapping[str, Any], version: Mapping[str, Any]) -> JsonDict:
    spec = crd["spec"]
    source = (version.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")
    if not source:
        schema: JsonDict = {"type": "object"}
    else:
        schema = _unfold(copy.deepcopy(source))
        for dropped in ("example", "externalDocs"):
            schema.pop(dropped, None)
        properties = schema.setdefault("properties", {})
        properties["metadata"] = _reference(META + "ObjectMeta", _OBJECT_METADATA)
        properties.update(copy.deepcopy(_TYPE_META))
        _embedded(schema)
    schema["x-kubernetes-group-version-kind"] = _gvk(spec["group"], version["name"], spec["names"]["kind"])
    selectable = version.get("selectableFields") or spec.get("selectableFields")
    if selectable:
        schema["x-kubernetes-selectable-fields"] = [
            {"fieldPath": str(field["jsonPath"]).removeprefix(".")} for field in selectable
        ]
    return schema


def _list_schema(crd: Mapping[str, Any], version: Mapping[str, Any]) -> JsonDict:
    spec = crd["spec"]
    group, name, kind = spec["group"], version["name"], spec["names"]["kind"]
    list_kind = spec["names"].get("listKind") or f"{kind}List"
    plural = spec["names"]["plural"]
    schema: JsonDict = {
        "description": f"{list_kind} is a list of {kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            **copy.deepcopy(_TYPE_META),
            "items": {
                "description": (
                    f"List of {plural}. More info:"
                    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
                ),
                "type": "array",
                "items": {"$ref": V3_PREFIX + model_name(group, name, kind)},
            },
            "metadata": _reference(META + "ListMeta", _LIST_METADATA),
        },
        "x-kubernetes-group-version-kind": _gvk(group, name, list_kind),
    }
    selectable = version.get("selectableFields") or spec.get("selectableFields")
    if selectable:
        schema["x-kubernetes-selectable-fields"] = [
            {"fieldPath": str(field["jsonPath"]).removeprefix(".")} for field in selectable
        ]
    return schema


def _served_versions(crds: Iterable[Mapping[str, Any]]) -> Iterable[tuple[Mapping[str, Any], JsonDict]]:
    for crd in crds:
        for version in crd.get("spec", {}).get("versions") or []:
            if version.get("served", True):
                yield crd, version


def group_versions(crds: Iterable[Mapping[str, Any]]) -> dict[str, JsonDict]:
    """The OpenAPI v3 document of every served group/version, keyed ``apis/<group>/<version>``."""
    documents: dict[str, JsonDict] = {}
    for crd, version in _served_versions(crds):
        spec = crd["spec"]
        key = _api_root(spec["group"], version["name"]).removeprefix("/")
        document = documents.setdefault(
            key,
            {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
                "paths": {},
                "components": {"schemas": copy.deepcopy(_meta()["schemas"])},
            },
        )
        document["paths"].update(_paths(_routes(crd, version)))
        kind = spec["names"]["kind"]
        list_kind = spec["names"].get("listKind") or f"{kind}List"
        schemas = document["components"]["schemas"]
        schemas[model_name(spec["group"], version["name"], kind)] = _kind_schema(crd, version)
        schemas[model_name(spec["group"], version["name"], list_kind)] = _list_schema(crd, version)
    for document in documents.values():
        document["paths"] = dict(sorted(document["paths"].items()))
        document["components"]["schemas"] = dict(sorted(document["components"]["schemas"].items()))
    return documents


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """The JSON a document is served as (compact, as the API server writes it)."""
    return json.dumps(document, separators=(",", ":")).encode()


def document_hash(document: Mapping[str, Any]) -> str:
    return hashlib.sha512(document_bytes(document)).hexdigest().upper()


def index(documents: Mapping[str, Mapping[str, Any]]) -> JsonDict:
    """``GET /openapi/v3``: where each group/version's document is, with its hash."""
    return {
        "paths": {
            key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={document_hash(document)}"}
            for key, document in sorted(documents.items())
        }
    }


# --------------------------------------------------------------------------------------------
# OpenAPI v2.


def _v2_schema(schema: Any) -> Any:
    """A v3 schema in v2 form: ``allOf``-wrapped references unwrapped, defaults pruned."""
    if isinstance(schema, list):
        return [_v2_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: JsonDict = {}
    for key, value in schema.items():
        if key == "default":
            continue
        if key == "allOf" and len(value) == 1 and set(value[0]) == {"$ref"}:
            result["$ref"] = value[0]["$ref"].replace(V3_PREFIX, V2_PREFIX)
        elif key == "$ref":
            result[key] = value.replace(V3_PREFIX, V2_PREFIX)
        elif key in {"properties", "x-kubernetes-group-version-kind"} and isinstance(value, dict):
            result[key] = {name: _v2_schema(child) for name, child in value.items()}
        else:
            result[key] = _v2_schema(value)
    return result


def _v2_structural(schema: Any) -> Any:
    """apiextensions' ToStructuralOpenAPIV2: what kubectl's v2 model cannot take is dropped."""
    if not isinstance(schema, dict):
        return schema
    result = {key: value for key, value in schema.items() if key not in {"allOf", "oneOf", "anyOf", "not"}}
    if result.pop("nullable", False):
        for key in ("type", "items", "properties"):
            result.pop(key, None)
    if result.get("x-kubernetes-preserve-unknown-fields") is True:
        result.pop("items", None)
        result.pop("properties", None)
        if result.get("type") == "object":
            del result["type"]
    if result.get("type") == "array" and "items" not in result:
        del result["type"]
    nullable = {name for name, child in (result.get("properties") or {}).items() if child.get("nullable")}
    if "properties" in result:
        result["properties"] = {name: _v2_structural(child) for name, child in result["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(result.get(key), dict):
            result[key] = _v2_structural(result[key])
    if nullable and "required" in result:
        result["required"] = [name for name in result["required"] if name not in nullable]
        if not result["required"]:
            del result["required"]
    return result


def _v2_kind_schema(crd: Mapping[str, Any], version: Mapping[str, Any]) -> JsonDict:
    source = (version.get("schema") or crd["spec"].get("validation") or {}).get("openAPIV3Schema") or {}
    if source.get("x-kubernetes-preserve-unknown-fields") or crd["spec"].get("preserveUnknownFields"):
        spec = crd["spec"]
        return {
            "type": "object",
            "x-kubernetes-group-version-kind": _gvk(spec["group"], version["name"], spec["names"]["kind"]),
        }
    schema = _kind_schema(crd, version)
    schema["properties"] = {
        name: child if name in {"metadata", "apiVersion", "kind"} else _v2_structural(child)
        for name, child in schema.get("properties", {}).items()
    }
    return dict(_v2_schema(schema))


def _v2_parameter(parameter: Mapping[str, Any]) -> JsonDict:
    result: JsonDict = dict(parameter["schema"])
    for key in ("description", "name", "in", "required"):
        if key in parameter:
            result[key] = parameter[key]
    return result


def _v2_operation(operation: Mapping[str, Any], method: str) -> JsonDict:
    body = operation.get("requestBody")
    consumes = list(body["content"]) if method == "patch" and body else list(_MEDIA_TYPES)
    result: JsonDict = {
        "description": operation["description"],
        "consumes": consumes,
        "produces": list(_MEDIA_TYPES),
        "schemes": ["https"],
        "tags": operation["tags"],
        "operationId": operation["operationId"],
    }
    parameters = [_v2_parameter(p) for p in operation.get("parameters", [])]
    if body is not None:
        reference = next(iter(body["content"].values()))["schema"]["$ref"].replace(V3_PREFIX, V2_PREFIX)
        parameter: JsonDict = {"name": "body", "in": "body", "schema": {"$ref": reference}}
        if body.get("required"):
            parameter["required"] = True
        parameters.insert(0, parameter)
    if parameters:
        result["parameters"] = parameters
    result["responses"] = {
        code: {
            "description": response["description"],
            **(
                {"schema": _v2_schema(next(iter(response["content"].values()))["schema"])}
                if response.get("content")
                else {}
            ),
        }
        for code, response in operation["responses"].items()
    }
    result["x-kubernetes-action"] = operation["x-kubernetes-action"]
    result["x-kubernetes-group-version-kind"] = operation["x-kubernetes-group-version-kind"]
    return result


def swagger(crds: Iterable[Mapping[str, Any]], version: str) -> JsonDict:
    """``GET /openapi/v2`` for the CRDs (``version`` is the server's, e.g. ``1.37``)."""
    crds = list(crds)
    paths: JsonDict = {}
    definitions: JsonDict = {name: _v2_schema(schema) for name, schema in _meta()["schemas"].items()}
    for document in group_versions(crds).values():
        for path, item in document["paths"].items():
            paths[path] = {
                method: [_v2_parameter(p) for p in value]
                if method == "parameters"
                else _v2_operation(value, method)
                for method, value in item.items()
            }
    for crd, served in _served_versions(crds):
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        list_kind = spec["names"].get("listKind") or f"{kind}List"
        definitions[model_name(spec["group"], served["name"], kind)] = _v2_kind_schema(crd, served)
        definitions[model_name(spec["group"], served["name"], list_kind)] = _v2_schema(
            _list_schema(crd, served)
        )
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
    }


__all__ = [
    "builtin_crd",
    "document_bytes",
    "document_hash",
    "group_versions",
    "index",
    "model_name",
    "swagger",
]
