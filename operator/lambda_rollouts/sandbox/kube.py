"""The Kubernetes half of the local sandbox: kmock's emulator made to answer like kube-apiserver.

Contract:
- ``KubernetesApiEmulator`` is a ``kmock.KubernetesEmulator`` that serves the Kubernetes REST API
  the way the real Kopf operator and the real kubectl need it. It keeps objects in memory
  (``emulator.objects`` keeps kmock's per-object history) and answers:

  * discovery (``/api``, ``/apis``, ``/apis/{group}/{version}``) for kmock's bundled built-in
    resources plus every CRD given to it or created through the API, with kinds, short names,
    scope, verbs (in kube-apiserver's order for custom resources), ``storageVersionHash`` and
    subresources (``kubectl api-resources``, ``kubectl get lro``);
  * ``/version``: Kubernetes ``SERVER_VERSION``, that of the bundled kubectl, so that kubectl
    sees no version skew;
  * OpenAPI built from the CRDs as kube-apiserver builds it (``lambda_rollouts.sandbox.openapi``):
    ``/openapi/v3`` (its documents linked by hash, with the server's caching answers: 301 to the
    current hash, ``ETag``/304, ``Cache-Control``), ``/openapi/v3/apis/{group}/{version}`` and
    ``/openapi/v2`` in JSON, so that kubectl's default validation (strict, on the server),
    ``kubectl apply`` and ``kubectl explain`` work as on a cluster;
  * create/get/list/watch/replace/patch/delete with real object metadata: ``uid``, a global
    ``resourceVersion`` bumped on every write, ``generation`` (1 on create, +1 when something
    outside ``metadata`` and, with a status subresource, ``status`` changes, and when a deletion
    marks the object), ``creationTimestamp``, ``generateName``, and deletion through
    ``deletionTimestamp`` while finalizers remain; a deletion answers a ``Success`` Status, and
    the DELETED event carries the object as last stored;
  * merge patches (RFC 7386), JSON patches (RFC 6902; a failed operation, ``test`` among them, is
    422), strategic merge patches for built-in kinds (as merge patches; 415 for custom resources,
    as on a cluster) and server-side apply (as a merge patch or a create);
  * the write options as the server checks them (``fieldValidation``, ``dryRun``,
    ``fieldManager`` required by apply, ``force`` only with it: 422 on ``<Kind>Options``), and
    ``fieldValidation`` as the server applies it: unknown fields (pruned) and duplicate fields
    are ``Warning`` headers by default (``Warn``), nothing with ``Ignore``, and with ``Strict``
    the server's errors: 400 for a create or replace, 422 quoting the patched object for a patch;
  * the status subresource: status writes change only ``.status``, main-resource writes never
    change ``.status``;
  * admission for custom resources: pruning of unknown fields, defaults, and validation against
    the CRD's schema and CEL rules (``lambda_rollouts.sandbox.schema``), rejected with 422
    ``Invalid`` and kube-apiserver's message and ``details.causes``;
  * ``Status`` errors with kube-apiserver's codes, reasons, wording and details (404, 409, 410,
    415, 422, 400);
  * lists with ``kind: <Kind>List``, ``apiVersion`` and a real ``resourceVersion``; label and
    field selectors; ``limit``/``continue``;
  * watches from a ``resourceVersion`` (replayed from an event log; 410 ``Expired`` when older
    than the log or than the resource's serving, as the server's watch cache), initial events,
    bookmarks, ``sendInitialEvents`` and ``timeoutSeconds``;
  * ``meta.k8s.io`` Tables for ``kubectl get`` from the CRD's ``additionalPrinterColumns``;
  * Kopf peering, as ``kubectl apply -k deploy/`` installs it: the ``clusterkopfpeerings.kopf.dev``
    CRD and one ``ClusterKopfPeering`` per name in ``peerings`` (default: ``lambda-rollouts``, the
    operator's default), so that ``lambda-rollouts run`` elects an active replica here too;
    ``peerings=()`` serves no peering at all.

  ``tests/envtest/test_differential.py`` sends the same requests here and to a real
  kube-apiserver and compares the answers. Timestamps come from the wall clock
  (``datetime.now(UTC)``), never from an event loop, so a fast-forwarded loop in the client does
  not move the server's time.
- ``run_kubernetes_emulator()`` serves an emulator on a loopback TCP port in the running event
  loop and optionally writes a kubeconfig (plain HTTP, no authentication) for kubectl and Kopf.
- ``start_in_thread()`` does the same in a daemon thread with its own real-time event loop, for
  clients that run in another (e.g. fast-forwarded) loop or are synchronous; ``stop()`` ends it.
- ``write_kubeconfig()`` writes such a kubeconfig for any URL.

Objects put straight into ``emulator.objects`` (kmock's way of seeding) get the missing uid,
resourceVersion, creationTimestamp and generation when first read through the API.

Known differences from kube-apiserver, each left because neither Kopf, kubectl nor the sandbox's
users depend on it, or because closing it would take a cluster's machinery:

- no authentication, authorization, admission webhooks or garbage collection by owner
  references (the sandbox is one local user's);
- no ``managedFields``, so server-side apply is a merge patch without field ownership: a field
  dropped from an applied manifest stays, and there are no apply conflicts (409); kubectl's
  default, client-side ``apply`` (merge patches) works as on a cluster;
- JSON only: protobuf bodies, which kubectl sends for built-in kinds in ``create``/``replace`` (not
  in ``apply``), are refused with 415; ``/openapi/v2`` is served in JSON, and kubectl, which asks
  for it in protobuf only, gets 406 and does without it (``kubectl apply`` falls back to a merge
  patch, as it does for custom resources anyway; ``kubectl explain --output plaintext-openapiv2``
  fails);
- built-in kinds are stored as given, without their own validation or defaults, and their OpenAPI
  documents are placeholders (their paths, no fields: ``kubectl explain configmap`` shows none);
  the core and ``*.k8s.io`` groups' documents hold only the kinds kmock bundles;
- strategic merge patches of built-in kinds are merged as JSON merge patches (lists replaced,
  ``$``-directives dropped);
- one stored version per resource (no conversion between CRD versions);
- discovery is served in the legacy form only (kubectl asks for the aggregated form first and
  falls back, one request per group version more); an unknown URL is a 404 ``Status``, where
  kube-apiserver answers plain text ``404 page not found``;
- a body without ``apiVersion`` or ``kind`` takes the URL's, where kube-apiserver refuses it with
  400; a body of another version is refused as there, without the server's extra warning about
  its ``spec``;
- the watch event log holds the last ``event_log_size`` events, where the server's watch cache
  keeps minutes: an older watch is still replayed here;
- selectors filter watch events by the object's current state (no synthetic DELETED when an
  object stops matching); deleting a namespace deletes its objects at once instead of going
  through ``Terminating``;
- duplicate keys in an applied YAML document and the operations of a JSON patch are not checked
  for strict decoding; a Go parser's wording of malformed JSON is Python's here (same code and
  reason).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import pathlib
import random
import re
import threading
import traceback
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import aiohttp.test_utils
import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml
from multidict import CIMultiDictProxy, MultiMapping

from lambda_rollouts.peering import (
    CLUSTER_PEERING_PLURAL,
    DEFAULT_PEERING_NAME,
    PEERING_GROUP,
    PEERING_VERSION,
    cluster_peering,
    cluster_peering_crd,
)
from lambda_rollouts.sandbox import openapi
from lambda_rollouts.sandbox import schema as crd_schema

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
CrdSource = str | os.PathLike[str] | Mapping[str, Any]
_T = TypeVar("_T")

CRD_RESOURCE: Final = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACE_RESOURCE: Final = kmock.resource("", "v1", "namespaces")
CLUSTER_PEERING_RESOURCE: Final = kmock.resource(PEERING_GROUP, PEERING_VERSION, CLUSTER_PEERING_PLURAL)
DEFAULT_PEERINGS: Final = (DEFAULT_PEERING_NAME,)
DEFAULT_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
# The Kubernetes version served at /version: that of the bundled kubectl (`kubectl version
# --client` says v1.37.1), so that kubectl sees no version skew.
SERVER_VERSION: Final = (1, 37, 1)

# In the order kube-apiserver lists a custom resource's verbs in discovery.
_CR_VERBS: Final = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")
_STATUS_VERBS: Final = ("get", "patch", "update")
_FIELD_VALIDATIONS: Final = ("Ignore", "Strict", "Warn")
_OBJECT_META_FIELDS: Final = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_PATCH: Final = "error decoding patch: "
_CR_PATCH_TYPES: Final = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)
_NAME_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"  # kube-apiserver's generateName alphabet
_DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME_HINTS: Final = {
    "RFC 1123 subdomain": "(e.g. 'example.com', regex used for validation is"
    " '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    "RFC 1123 label": "(e.g. 'my-name',  or '123-abc', regex used for validation is"
    " '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
}
# Built-in kinds whose objects carry metadata.generation (configmaps, events, namespaces... do not).
_GENERATION_BUILTINS: Final = frozenset(
    {
        "customresourcedefinitions",
        "cronjobs",
        "daemonsets",
        "deployments",
        "horizontalpodautoscalers",
        "ingresses",
        "jobs",
        "networkpolicies",
        "poddisruptionbudgets",
        "pods",
        "replicasets",
        "replicationcontrollers",
        "statefulsets",
    }
)
_VERSION_ORDER: Final = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")

_NAME_COLUMN: Final[JsonDict] = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": (
        "Name must be unique within a namespace. Is required when creating resources, although"
        " some resources may allow a client to request the generation of an appropriate name"
        " automatically. Name is primarily intended for creation idempotence and configuration"
        " definition. Cannot be updated. More info:"
        " https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
    ),
    "priority": 0,
}
_AGE_COLUMN: Final[JsonDict] = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": (
        "CreationTimestamp is a timestamp representing the server time when this object was created."
    ),
    "priority": 0,
}
# Built-in resources whose kubectl columns matter in the sandbox; others get Name + Created At.
_BUILTIN_COLUMNS: Final[dict[str, list[JsonDict]]] = {
    "namespaces": [
        {"name": "Status", "type": "string", "jsonPath": ".status.phase", "priority": 0},
        _AGE_COLUMN,
    ],
    "events": [
        {"name": "Last Seen", "type": "date", "jsonPath": ".lastTimestamp", "priority": 0},
        {"name": "Type", "type": "string", "jsonPath": ".type", "priority": 0},
        {"name": "Reason", "type": "string", "jsonPath": ".reason", "priority": 0},
        {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name", "priority": 0},
        {"name": "Message", "type": "string", "jsonPath": ".message", "priority": 0},
    ],
}
_CREATED_AT_COLUMN: Final[JsonDict] = {
    "name": "Created At",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "raw_date": True,
    "priority": 0,
}


# --------------------------------------------------------------------------------------------
# Errors: kube-apiserver's Status objects.
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A client-visible API failure, rendered as a ``Status`` object with its HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: JsonDict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def as_status(self) -> JsonDict:
        status: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if not self.reason:
            del status["reason"]  # as Go's omitempty: an unknown reason is left out
        if self.details is not None:
            status["details"] = self.details
        return status


_CAUSE_REASONS: Final = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Unsupported value": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "Too long": "FieldValueTooLong",
    "Too many": "FieldValueTooMany",
    "Duplicate value": "FieldValueDuplicate",
    "Not found": "FieldValueNotFound",
}


def _cause(error: str) -> JsonDict:
    """Split kube-apiserver's ``field: Kind of error: detail`` wording into a Status cause."""
    field, sep, rest = error.partition(": ")
    if not sep or " " in field.strip("[]"):
        return {"reason": "FieldValueInvalid", "message": error, "field": ""}
    reason = next((r for p, r in _CAUSE_REASONS.items() if rest.startswith(p)), "FieldValueInvalid")
    return {"reason": reason, "message": rest, "field": field}


# --------------------------------------------------------------------------------------------
# Small helpers: time, names, patches, selectors, JSONPath.
# --------------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(value: str) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def human_duration(seconds: float) -> str:
    """Render an age the way kube-apiserver does in Tables (``duration.HumanDuration``)."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if rest == 0 else f"{hours // 24 // 365}y{rest}d"
    return f"{hours // 24 // 365}y"


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch; returns a new value and never mutates the inputs."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JsonDict = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(patch: Any) -> Any:
    # Strategic-merge directives ($patch, $setElementOrder/..., $retainKeys) have no meaning in
    # a plain merge; dropping them keeps kubectl's annotate/label/patch payloads applicable.
    if isinstance(patch, dict):
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [_strip_directives(v) for v in patch]
    return patch


def _random_suffix() -> str:
    return "".join(random.choice(_NAME_CHARS) for _ in range(5))


def _split_outside_parens(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_SET_REQUIREMENT: Final = re.compile(r"(?P<key>[^\s!=]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)")


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Match labels against a label selector in kubectl's text syntax."""
    for requirement in _split_outside_parens(selector):
        if match := _SET_REQUIREMENT.fullmatch(requirement):
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            present = match["key"] in labels and labels[match["key"]] in values
            if present != (match["op"] == "in"):
                return False
        elif "!=" in requirement:
            key, value = (s.strip() for s in requirement.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in requirement:
            key, value = (s.strip() for s in requirement.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def field_selector_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """Match an object against a field selector (``a.b=v``, ``a.b==v``, ``a.b!=v``)."""
    for requirement in _split_outside_parens(selector):
        negate = "!=" in requirement
        path, _, value = requirement.replace("!=", "=").replace("==", "=").partition("=")
        found: Any = obj
        for part in path.strip().split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        actual = "" if found is None else str(found).lower() if isinstance(found, bool) else str(found)
        if (actual == value.strip()) == negate:
            return False
    return True


_JSONPATH_TOKEN: Final = re.compile(
    r"""\.(?P<field>[^.\[\]]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[['"](?P<quoted>[^'"]+)['"]\]"""
    r"""|\[\?\(@\.(?P<fkey>[^=!<>\s]+)\s*(?P<fop>==|!=)\s*['"]?(?P<fvalue>[^'")]*)['"]?\)\]"""
)


def jsonpath_value(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPaths of printer columns: ``.a.b``, ``[0]``, ``[?(@.k=="v")]``."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    path = path.removeprefix("$")
    values: list[Any] = [obj]
    position = 0
    while position < len(path):
        token = _JSONPATH_TOKEN.match(path, position)
        if token is None:
            return None
        position = token.end()
        found: list[Any] = []
        for value in values:
            if token["field"] is not None or token["quoted"] is not None:
                key = str(token["field"] if token["field"] is not None else token["quoted"])
                if isinstance(value, Mapping) and key in value:
                    found.append(value[key])
            elif token["index"] is not None:
                if isinstance(value, list) and -len(value) <= int(token["index"]) < len(value):
                    found.append(value[int(token["index"])])
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, Mapping) and token["fkey"] in item:
                        equal = str(item[token["fkey"]]) == token["fvalue"]
                        if equal == (token["fop"] == "=="):
                            found.append(item)
        values = found
    return values[0] if values else None


def _version_rank(version: str) -> tuple[int, int, int]:
    # Kubernetes' version priority: GA > beta > alpha, then by numbers, highest first.
    match = _VERSION_ORDER.fullmatch(version)
    if match is None:
        return (-1, 0, 0)
    stability = {"alpha": 0, "beta": 1, None: 2}[match[2]]
    return (stability, int(match[1]), int(match[3] or 0))


# --------------------------------------------------------------------------------------------
# Request paths and resource descriptions.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ApiPath:
    """A parsed Kubernetes URL path: discovery when ``plural`` is None."""

    group: str
    version: str | None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """Parse ``/api/...`` and ``/apis/...`` paths, including the ``namespaces`` resource itself."""
    parts = [part for part in path.split("/") if part]
    version: str | None
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        group = parts[1]
        version = parts[2] if len(parts) >= 3 else None
        rest = parts[3:]
    else:
        return None
    if version is None or not rest:
        return ApiPath(group=group, version=version)
    namespace: str | None = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in {"status", "finalize"})
    ):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) >= 2 else None
    subresource = "/".join(rest[2:]) or None
    return ApiPath(group, version, plural, namespace, name, subresource)


@dataclasses.dataclass(frozen=True)
class ResourceSpec:
    """Everything the emulator knows about one served resource (group/version/plural)."""

    resource: kmock.resource
    kind: str
    singular: str
    namespaced: bool
    subresources: frozenset[str]
    crd: Mapping[str, Any] | None = None
    columns: tuple[JsonDict, ...] = ()

    @property
    def api_version(self) -> str:
        group, version = self.resource.group, self.resource.version
        return f"{group}/{version}" if group else str(version)

    @property
    def qualified(self) -> str:
        # kube-apiserver's "plural.group" wording in messages, e.g. lambdarollouts.lambda.rollouts.dev.
        group = self.resource.group
        return f"{self.resource.plural}.{group}" if group else str(self.resource.plural)

    @property
    def qualified_kind(self) -> str:
        group = self.resource.group
        return f"{self.kind}.{group}" if group else self.kind

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def has_generation(self) -> bool:
        return self.crd is not None or self.resource.plural in _GENERATION_BUILTINS

    def details(self, name: str | None) -> JsonDict:
        details: JsonDict = {"kind": self.resource.plural}
        if name:
            details["name"] = name
        if self.resource.group:
            details["group"] = self.resource.group
        return details


def crd_resources(crd: Mapping[str, Any]) -> list[ResourceSpec]:
    """Describe every served version of a CRD (apiextensions.k8s.io/v1 or v1beta1 layout)."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    group = spec["group"]
    plural = names["plural"]
    kind = names["kind"]
    versions = spec.get("versions") or [{"name": spec.get("version"), "served": True}]
    result: list[ResourceSpec] = []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources", spec.get("subresources")) or {}
        columns = version.get("additionalPrinterColumns", spec.get("additionalPrinterColumns"))
        result.append(
            ResourceSpec(
                resource=kmock.resource(group, version["name"], plural),
                kind=kind,
                singular=names.get("singular") or kind.lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=frozenset(subresources),
                crd=crd,
                columns=tuple(columns) if columns else (_AGE_COLUMN,),
            )
        )
    return result


# --------------------------------------------------------------------------------------------
# Watching: the event log and live subscribers.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    rv: int
    resource: kmock.resource
    type: str
    object: JsonDict


@dataclasses.dataclass(eq=False)
class _Watcher:
    resource: kmock.resource
    namespace: str | None
    name: str | None
    label_selector: str
    field_selector: str
    queue: asyncio.Queue[WatchEvent | None]

    def wants(self, event: WatchEvent) -> bool:
        meta = event.object.get("metadata", {})
        return (
            event.resource == self.resource
            and (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and label_selector_matches(self.label_selector, meta.get("labels") or {})
            and field_selector_matches(self.field_selector, event.object)
        )


@dataclasses.dataclass(frozen=True)
class _Decoding:
    """How a write's body was decoded: the fieldValidation directive and what it found."""

    validation: str = "Ignore"  # Strict, Warn or Ignore
    duplicates: tuple[str, ...] = ()  # fields the JSON body repeats
    body: JsonDict = dataclasses.field(default_factory=dict, compare=False)
    patched: JsonDict | None = None  # the patched object, which a strict patch error quotes


@dataclasses.dataclass(frozen=True)
class ServedResponse:
    """One answered request, kept for assertions (e.g. that no 500 was ever served)."""

    method: str
    path: str
    status: int


class _ServeNativelyError(Exception):
    """Raised by the emulator's own lowest-priority reaction: the request is the emulator's."""


# --------------------------------------------------------------------------------------------
# The emulator.
# --------------------------------------------------------------------------------------------


# Requests kept in kmock's history (for reactions that count requests, e.g. fail the next N).
_REQUEST_HISTORY = 500


@attrs.define(kw_only=True)
class KubernetesApiEmulator(kmock.KubernetesEmulator):
    """
    kmock's Kubernetes emulator with kube-apiserver's semantics where Kopf and kubectl need them.

    User-defined kmock reactions (``emulator['get /...'] << ...``) still take precedence over
    the emulator's own answers, e.g. to inject failures; intercepted writes are not applied.
    """

    crds: Sequence[Mapping[str, Any]] = ()
    namespaces: Sequence[str] = DEFAULT_NAMESPACES
    peerings: Sequence[str] = DEFAULT_PEERINGS
    event_log_size: int = 10_000
    bookmark_interval: float = 60.0
    clock: Callable[[], datetime.datetime] = _now

    # The latest responses, for tests to check (bounded: a long session must not grow forever).
    served: collections.deque[ServedResponse] = attrs.field(
        factory=lambda: collections.deque(maxlen=100_000), init=False
    )
    _specs: dict[kmock.resource, ResourceSpec] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _log: collections.deque[WatchEvent] = attrs.field(factory=collections.deque, init=False)
    _compacted_rv: int = attrs.field(default=0, init=False)
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _pending_warnings: list[str] = attrs.field(factory=list, init=False)
    _served: int = attrs.field(default=0, init=False)
    _own_reactions: int = attrs.field(default=0, init=False)
    _openapi_cache: tuple[tuple[str, ...], dict[str, JsonDict]] | None = attrs.field(default=None, init=False)
    _started_rv: int = attrs.field(default=0, init=False)
    # Objects whose status is only the schema's defaults: kube-apiserver stores them without it
    # (the status subresource drops it on create) and defaults it on every read, so their first
    # write stores it and gets a new resourceVersion even when it changes nothing else.
    _defaulted_status: set[tuple[kmock.resource, str | None, str]] = attrs.field(factory=set, init=False)
    _served_since: dict[kmock.resource, int] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Above kmock's stock fallbacks, below any user reaction: every resource request
        # (as opposed to discovery) is answered by this class, not by kmock's stock emulation.
        (self.fallback**1)[self._is_native_request] << _ServeNativelyError
        self._own_reactions = len(self._payloads)
        with warnings.catch_warnings():
            # kmock reads its bundled resource list with a deprecated importlib.resources call.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        for namespace in self.namespaces:
            self.create_object(NAMESPACE_RESOURCE, {"metadata": {"name": namespace}})
        for crd in self.crds:
            self.add_crd(crd)
        if self.peerings:
            self.add_crd(cluster_peering_crd())
        for peering in self.peerings:
            if self.get_object(CLUSTER_PEERING_RESOURCE, None, peering) is None:
                self.create_object(CLUSTER_PEERING_RESOURCE, cluster_peering(peering))
        self._started_rv = self._rv

    # ---- public helpers ------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        """The current (latest) global resourceVersion."""
        return str(self._rv)

    def add_crd(self, crd: Mapping[str, Any]) -> JsonDict:
        """Register a CRD's resources for discovery and admission and store it as an object."""
        name = crd.get("metadata", {}).get("name")
        if (CRD_RESOURCE, None, name) in self.objects and not self.objects[CRD_RESOURCE, None, name].deleted:
            self._register_crd(crd)
            return dict(self.objects[CRD_RESOURCE, None, name].raw)
        return self.create_object(CRD_RESOURCE, dict(crd))

    def create_object(self, resource: kmock.resource | str, body: Mapping[str, Any]) -> JsonDict:
        """Create an object as a POST would (admission included); for seeding tests and demos."""
        spec = self._spec(kmock.resource(resource))
        namespace = body.get("metadata", {}).get("namespace") if spec.namespaced else None
        if spec.namespaced and not namespace:
            namespace = "default"
        return self._create(spec, namespace, copy.deepcopy(dict(body)), dry_run=False, decoding=_Decoding())

    def get_object(self, resource: kmock.resource | str, namespace: str | None, name: str) -> JsonDict | None:
        """The current state of an object, or None if absent."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def spec_for(self, resource: kmock.resource | str) -> ResourceSpec:
        """The emulator's description of a served resource (raises 404 ApiError if unknown)."""
        return self._spec(kmock.resource(resource))

    async def close_streams(self) -> None:
        """End all watch streams now (they otherwise block the server's shutdown)."""
        self._closing = True
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        await asyncio.sleep(0)

    # ---- request entry point ------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Replaces kmock's entry point: its path parser crashes on /api/v1/namespaces, and client
        # errors must become Status objects rather than 500s with tracebacks.
        body = await raw_request.read()
        response: aiohttp.web.StreamResponse
        try:
            request = self._parse_request(raw_request, body)
            self._served += 1
            self._requests.append(request)
            # kmock finds a request's reactions by filtering its whole request history, so a long
            # session got slower with every request: only the latest ones are kept.
            if len(self._requests) > _REQUEST_HISTORY:
                del self._requests[: len(self._requests) - _REQUEST_HISTORY]
            response = await self._handle(request)
        except ApiError as e:
            response = self._status_response(e)
        except kmock.KubernetesError as e:
            # kmock's own errors (e.g. an unknown URL) carry advice for kmock users, not kubectl's.
            message = "the server could not find the requested resource" if e.status == 404 else e.message
            response = self._status_response(
                ApiError(
                    e.status,
                    _reason_for(e.status),
                    message or "the server could not process the request",
                )
            )
        except Exception as e:
            logger.exception("Internal error while serving %s %s", raw_request.method, raw_request.path_qs)
            if self._errors:
                self._errors[-1].append(e)
            error = ApiError(
                500,
                "InternalError",
                f"an error on the server ({e!r}) has prevented the request from succeeding",
            )
            error.details = {"causes": [{"message": traceback.format_exc()}]}
            response = self._status_response(error)
            # kmock wraps failures of user-defined streams that already sent their headers.
            stream = e.args[0] if e.args and isinstance(e.args[0], aiohttp.web.StreamResponse) else None
            if stream is not None and stream.prepared:
                line = json.dumps({"type": "ERROR", "object": error.as_status()}).encode() + b"\n"
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await stream.write(line)
                    await stream.write_eof()
                response = stream
        self.served.append(ServedResponse(raw_request.method, raw_request.path_qs, response.status))
        return response

    def _parse_request(self, raw_request: aiohttp.web.BaseRequest, body: bytes) -> kmock.Request:
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        path = parse_api_path(raw_request.path)
        resource = (
            None
            if path is None
            else kmock.resource(group=path.group, version=path.version, plural=path.plural)
        )
        method = raw_request.method.upper()
        action: kmock.action | None = None
        if path is not None and path.plural is not None:
            if method == "GET":
                watching = raw_request.query.get("watch") in {"true", "1"}
                action = (
                    kmock.action.WATCH if watching else kmock.action.FETCH if path.name else kmock.action.LIST
                )
            elif method == "POST" and path.name is None:
                action = kmock.action.CREATE
            elif method in {"PUT", "PATCH"} and path.name is not None:
                action = kmock.action.UPDATE
            elif method == "DELETE":
                action = kmock.action.DELETE
        return kmock.Request(
            id=self._served,
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode("utf-8", errors="replace"),
            data=data,
            action=action,
            resource=resource,
            namespace=None if path is None else path.namespace,
            name=None if path is None else path.name,
            subresource=None if path is None else path.subresource,
        )

    @staticmethod
    def _is_native_request(request: kmock.Request) -> bool:
        # Resources and OpenAPI documents are this class's; the rest of discovery is kmock's.
        if request.resource is not None and request.resource.plural is not None:
            return True
        return request.url.path == "/openapi/v2" or request.url.path.startswith("/openapi/v3")

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self._is_native_request(request) and len(self._payloads) == self._own_reactions:
            # No user reaction to defer to, so the answer is ours; asking kmock would filter its
            # request history once per reaction, which made every request cost milliseconds.
            return await self._serve_native(request)
        try:
            # Skip KubernetesEmulator._handle: its stock object bookkeeping is replaced here.
            return await kmock.RawHandler._handle(self, request)
        except _ServeNativelyError:
            return await self._serve_native(request)

    async def _serve_native(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.resource.plural is None:
            raw = request._raw_request
            assert raw is not None  # set by _parse_request()
            return self._serve_openapi(raw)
        return await self._serve(request)

    def _status_response(self, error: ApiError) -> aiohttp.web.Response:
        return aiohttp.web.json_response(error.as_status(), status=error.code)

    # ---- discovery ----------------------------------------------------------------------------

    def _all_specs(self) -> list[ResourceSpec]:
        return [self._spec(resource) for resource in self.resources]

    async def _serve_root(self, request: kmock.Request) -> kmock.Payload:
        paths = {"/api", "/api/v1", "/apis", "/openapi/v2", "/openapi/v3", "/version"}
        for spec in self._all_specs():
            if spec.resource.group:
                paths |= {f"/apis/{spec.resource.group}", f"/apis/{spec.api_version}"}
        return {"paths": sorted(paths)}

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        major, minor, patch = SERVER_VERSION
        return {
            "major": str(major),
            "minor": str(minor),
            "emulationMajor": str(major),
            "emulationMinor": str(minor),
            "minCompatibilityMajor": str(major),
            "minCompatibilityMinor": str(minor - 1),
            "gitVersion": f"v{major}.{minor}.{patch}-lambda-rollouts-sandbox",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "go1.26.8",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        return {
            "kind": "APIVersions",
            "apiVersion": "v1",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        }

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = collections.defaultdict(set)
        for resource in self.resources:
            if resource.group and resource.version:
                groups[resource.group].add(resource.version)
        return {group: sorted(vs, key=_version_rank, reverse=True) for group, vs in sorted(groups.items())}

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> JsonDict:
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        groups = [self._api_group(group, versions) for group, versions in self._group_versions().items()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        group = request.resource.group if request.resource is not None else None
        versions = self._group_versions().get(group or "")
        if not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(group or "", versions)}

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        group = request.resource.group if request.resource is not None else None
        version = request.resource.version if request.resource is not None else None
        specs = [s for s in self._all_specs() if s.resource.group == group and s.resource.version == version]
        if not specs and (group, version) != ("", "v1"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        entries: list[JsonDict] = []
        for spec in sorted(specs, key=lambda s: str(s.resource.plural)):
            info = self.resources[spec.resource]
            entries.append(
                {
                    "name": spec.resource.plural,
                    "singularName": spec.singular,
                    "namespaced": spec.namespaced,
                    "kind": spec.kind,
                    "verbs": list(_CR_VERBS) if spec.crd is not None else sorted(info.verbs or _CR_VERBS),
                    **({"shortNames": sorted(info.shortnames)} if info.shortnames else {}),
                    **({"categories": sorted(info.categories)} if info.categories else {}),
                    **({"storageVersionHash": _storage_version_hash(spec)} if spec.crd is not None else {}),
                }
            )
            for subresource in sorted(spec.subresources):
                entries.append(
                    {
                        "name": f"{spec.resource.plural}/{subresource}",
                        "singularName": "",
                        "namespaced": spec.namespaced,
                        "kind": "Scale" if subresource == "scale" else spec.kind,
                        "verbs": list(_STATUS_VERBS),
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else str(version),
            "resources": entries,
        }

    # ---- OpenAPI ------------------------------------------------------------------------------

    def _openapi_documents(self) -> dict[str, JsonDict]:
        crds = self._current(self._spec(CRD_RESOURCE), None)
        key = tuple(crd["metadata"]["resourceVersion"] for crd in crds)
        if self._openapi_cache is None or self._openapi_cache[0] != key:
            builtins = [
                openapi.builtin_crd(
                    spec.resource.group or "",
                    str(spec.resource.version),
                    spec.kind,
                    str(spec.resource.plural),
                    namespaced=spec.namespaced,
                    status="status" in spec.subresources,
                )
                for spec in self._all_specs()
                if spec.crd is None
            ]
            self._openapi_cache = (key, openapi.group_versions([*builtins, *crds]))
        return self._openapi_cache[1]

    def _serve_openapi(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        """``/openapi/v2``, ``/openapi/v3`` and its documents, with kube-apiserver's caching headers."""
        if raw.method.upper() != "GET":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method", {})
        if raw.path == "/openapi/v2":
            if not _accepts_json(raw.headers):
                # kubectl asks for v2 in protobuf only; kube-apiserver answers 406 to what it
                # cannot serve, and the emulator serves JSON only.
                return aiohttp.web.Response(status=406, headers={"Cache-Control": "no-cache, private"})
            crds = self._current(self._spec(CRD_RESOURCE), None)
            major, minor, _ = SERVER_VERSION
            body = openapi.document_bytes(openapi.swagger(crds, f"{major}.{minor}"))
            return aiohttp.web.Response(
                body=body, content_type="application/json", headers={"Cache-Control": "no-cache, private"}
            )
        documents = self._openapi_documents()
        if raw.path.rstrip("/") == "/openapi/v3":
            return aiohttp.web.Response(
                body=json.dumps(openapi.index(documents), separators=(",", ":")).encode(),
                headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache, private"},
            )
        document = documents.get(raw.path.removeprefix("/openapi/v3/"))
        if document is None:
            return aiohttp.web.Response(status=404, headers={"Cache-Control": "no-cache, private"})
        digest = openapi.document_hash(document)
        headers = {"ETag": f'"{digest}"', "Vary": "Accept", "Cache-Control": "no-cache, private"}
        wanted = raw.query.get("hash")
        if wanted is not None and wanted != digest:
            # A stale link: the server redirects to the document's current hash.
            headers["Location"] = f"{raw.path}?hash={digest}"
            return aiohttp.web.Response(status=301, headers=headers, content_type="application/json")
        if wanted is not None:
            expires = self.clock() + datetime.timedelta(days=365)
            headers["Cache-Control"] = "public, immutable"
            headers["Expires"] = expires.strftime("%a, %d %b %Y %H:%M:%S UTC")
        if raw.headers.get("If-None-Match") == headers["ETag"]:
            return aiohttp.web.Response(status=304, headers=headers)
        return aiohttp.web.Response(
            body=openapi.document_bytes(document), content_type="application/json", headers=headers
        )

    # ---- resources ----------------------------------------------------------------------------

    def _oldest_rv(self, spec: ResourceSpec) -> int:
        # Like the API server's watch cache, which starts when the resource starts being served:
        # a watch from before that, or from before the event log's start, is 410 Expired.
        return max(self._compacted_rv, self._served_since.get(spec.resource, self._started_rv))

    def _register_crd(self, crd: Mapping[str, Any]) -> None:
        for spec in crd_resources(crd):
            self._served_since.setdefault(spec.resource, self._rv)
            names = crd.get("spec", {}).get("names", {})
            self.resources[spec.resource] = kmock.ResourceInfo(
                kind=spec.kind,
                singular=spec.singular,
                namespaced=spec.namespaced,
                verbs=set(_CR_VERBS),
                shortnames=set(names.get("shortNames") or ()),
                categories=set(names.get("categories") or ()),
                subresources=set(spec.subresources),
            )
            self._specs[spec.resource] = spec

    def _unregister_crd(self, crd: Mapping[str, Any]) -> None:
        for spec in crd_resources(crd):
            self._served_since.pop(spec.resource, None)
            self._specs.pop(spec.resource, None)
            if spec.resource in self.resources:
                del self.resources[spec.resource]

    def _spec(self, resource: kmock.resource) -> ResourceSpec:
        if resource in self._specs:
            return self._specs[resource]
        if resource not in self.resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        info = self.resources[resource]
        plural = str(resource.plural)
        spec = ResourceSpec(
            resource=resource,
            kind=info.kind or plural.capitalize(),
            singular=info.singular or plural,
            namespaced=bool(info.namespaced),
            subresources=frozenset(info.subresources),
            columns=tuple(_BUILTIN_COLUMNS.get(plural, [_CREATED_AT_COLUMN])),
        )
        self._specs[resource] = spec
        return spec

    # ---- dispatching --------------------------------------------------------------------------

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None  # set by _parse_request()
        assert request.resource is not None  # matched by _is_native_request()
        spec = self._spec(request.resource)
        self._pending_warnings = []
        method = raw.method.upper()
        params = raw.query
        namespace, name, subresource = request.namespace, request.name, request.subresource

        if spec.resource == NAMESPACE_RESOURCE and name is None and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not spec.namespaced and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if subresource is not None and subresource not in spec.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if subresource is not None and subresource != "status":
            raise ApiError(
                405, "MethodNotAllowed", f"the server does not allow this method on {subresource}", {}
            )
        if spec.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})

        dry_run = "All" in params.getall("dryRun", [])
        table = _table_version(raw.headers)
        if "protobuf" in raw.headers.get("Content-Type", "") and request.body:
            # kubectl writes built-in kinds as protobuf in `create`/`replace`; `apply -f` sends JSON.
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the emulator accepts JSON bodies only, not application/vnd.kubernetes.protobuf;"
                " use `kubectl apply -f` for built-in kinds",
                {},
            )

        if method == "GET" and params.get("watch") in {"true", "1"}:
            return await self._watch(raw, spec, namespace, name, params, table)
        if method == "GET" and name is None:
            return self._json(self._list(spec, namespace, params, table))
        if method == "GET":
            obj = self._existing(spec, namespace, name)
            return self._json(self._table(spec, [obj], raw.query, table) if table else obj)
        if method == "POST" and name is None:
            if spec.namespaced and namespace is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            decoding = self._decoding(spec, request.body, _write_options(params, "CreateOptions"))
            created = self._create(spec, namespace, decoding.body, dry_run=dry_run, decoding=decoding)
            return self._json(created, status=201, warnings=self._pending_warnings)
        if method == "PUT" and name is not None:
            decoding = self._decoding(spec, request.body, _write_options(params, "UpdateOptions"))
            result = self._replace(
                spec, namespace, name, decoding.body, subresource, dry_run=dry_run, decoding=decoding
            )
            return self._json(result, warnings=self._pending_warnings)
        if method == "PATCH" and name is not None:
            content_type = raw.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
            if spec.crd is not None and content_type not in _CR_PATCH_TYPES:
                # Custom resources take no strategic merge patch: they have no patch strategies.
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    + ", ".join(_CR_PATCH_TYPES),
                )
            apply = content_type == "application/apply-patch+yaml"
            validation = _write_options(params, "PatchOptions", apply=apply, patch=True)
            result, created_now = self._patch(
                spec,
                namespace,
                name,
                request.body,
                content_type,
                subresource,
                dry_run=dry_run,
                decoding=_Decoding(validation),
            )
            return self._json(result, status=201 if created_now else 200, warnings=self._pending_warnings)
        if method == "DELETE" and name is not None and subresource is None:
            options = _json_body(request.body) if request.body.strip() else {}
            deleted, gone = self._delete(spec, namespace, name, options, dry_run=dry_run)
            if gone and spec.resource != NAMESPACE_RESOURCE:
                return self._json(self._deleted_status(spec, deleted))
            return self._json(deleted)
        if method == "DELETE" and name is None:
            return self._json(self._delete_collection(spec, namespace, params, dry_run=dry_run))
        raise ApiError(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested resource ({method})",
            {},
        )

    def _json(
        self, payload: JsonDict, *, status: int = 200, warnings: Sequence[str] = ()
    ) -> aiohttp.web.Response:
        response = aiohttp.web.json_response(payload, status=status)
        for warning in warnings:
            response.headers.add("Warning", f"299 - {json.dumps(warning)}")
        self._pending_warnings = []
        return response

    # ---- reading ------------------------------------------------------------------------------

    def _existing(self, spec: ResourceSpec, namespace: str | None, name: str | None) -> JsonDict:
        key = (spec.resource, namespace if spec.namespaced else None, name or "")
        if not name or key not in self.objects or self.objects[key].deleted:
            raise ApiError(404, "NotFound", f'{spec.qualified} "{name}" not found', spec.details(name))
        return self._stored(spec, key, self.objects[key])

    def _current(self, spec: ResourceSpec, namespace: str | None, name: str | None = None) -> list[JsonDict]:
        found: list[tuple[tuple[str, str], JsonDict]] = []
        for key, obj in self.objects.items():
            resource, obj_namespace, obj_name = key
            if resource != spec.resource or obj.deleted:
                continue
            if namespace is not None and obj_namespace != namespace:
                continue
            if name is not None and obj_name != name:
                continue
            found.append(((obj_namespace or "", obj_name), self._stored(spec, key, obj)))
        return [obj for _, obj in sorted(found, key=lambda pair: pair[0])]

    def _stored(
        self, spec: ResourceSpec, key: tuple[kmock.resource, str | None, str], obj: kmock.Object
    ) -> JsonDict:
        raw = obj.raw
        meta = raw.get("metadata")
        if isinstance(meta, dict) and meta.get("resourceVersion") and meta.get("uid"):
            return raw
        # Seeded with kmock's `emulator.objects[...] = {...}`: add what a create would have set.
        adopted = copy.deepcopy(raw)
        meta = adopted["metadata"] = dict(meta) if isinstance(meta, dict) else {}
        adopted.setdefault("apiVersion", spec.api_version)
        adopted.setdefault("kind", spec.kind)
        meta.setdefault("name", key[2])
        if key[1] is not None:
            meta.setdefault("namespace", key[1])
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _timestamp(self.clock()))
        meta.setdefault("resourceVersion", self.resource_version)
        if spec.has_generation:
            meta.setdefault("generation", 1)
        obj.history[-1] = adopted
        return adopted

    def _selected(self, objs: Iterable[JsonDict], params: Mapping[str, str]) -> list[JsonDict]:
        labels = params.get("labelSelector", "")
        fields = params.get("fieldSelector", "")
        return [
            obj
            for obj in objs
            if label_selector_matches(labels, obj.get("metadata", {}).get("labels") or {})
            and field_selector_matches(fields, obj)
        ]

    def _list(
        self, spec: ResourceSpec, namespace: str | None, params: MultiMapping[str], table: str | None
    ) -> JsonDict:
        objs = self._selected(self._current(spec, namespace), params)
        continue_token = ""
        remaining: int | None = None
        try:
            after = (
                json.loads(base64.urlsafe_b64decode(params["continue"])) if params.get("continue") else None
            )
            limit = int(params.get("limit") or 0)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid list options: {e}") from e
        if after is not None:
            if not (isinstance(after, list) and all(isinstance(part, str) for part in after)):
                raise ApiError(400, "BadRequest", "continue key is not valid")
            objs = [o for o in objs if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > after]
        if limit > 0 and len(objs) > limit:
            last = objs[limit - 1]["metadata"]
            key = [last.get("namespace", ""), last["name"]]
            continue_token = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
            remaining = len(objs) - limit
            objs = objs[:limit]
        metadata: JsonDict = {"resourceVersion": self.resource_version}
        if spec.crd is not None:
            metadata["continue"] = ""  # a custom resource's list always says it
        if continue_token:
            metadata["continue"] = continue_token
            metadata["remainingItemCount"] = remaining
        if table:
            result = self._table(spec, objs, params, table)
            result["metadata"] = {key: value for key, value in metadata.items() if value != ""}
            return result
        return {
            "kind": f"{spec.kind}List",
            "apiVersion": spec.api_version,
            "metadata": metadata,
            "items": objs,
        }

    # ---- tables -------------------------------------------------------------------------------

    def _table(
        self, spec: ResourceSpec, objs: Sequence[JsonDict], params: Mapping[str, str], version: str
    ) -> JsonDict:
        include = params.get("includeObject", "Metadata")
        now = self.clock()
        columns = [_NAME_COLUMN, *spec.columns]
        rows: list[JsonDict] = []
        for obj in objs:
            cells = [obj.get("metadata", {}).get("name")]
            cells += [
                _cell(column, jsonpath_value(obj, column.get("jsonPath", "")), now) for column in spec.columns
            ]
            row: JsonDict = {"cells": cells}
            if include == "Object":
                row["object"] = obj
            elif include == "None":
                row["object"] = None
            else:
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": f"meta.k8s.io/{version}",
                    "metadata": obj.get("metadata", {}),
                }
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": f"meta.k8s.io/{version}",
            "metadata": {"resourceVersion": self.resource_version},
            "columnDefinitions": [
                {
                    "name": column["name"],
                    "type": column.get("type", "string"),
                    "format": column.get("format", ""),
                    "description": _column_description(spec, column),
                    "priority": column.get("priority", 0),
                }
                for column in columns
            ],
            "rows": rows,
        }

    # ---- writing ------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, spec: ResourceSpec, event_type: str, obj: JsonDict) -> None:
        event = WatchEvent(int(obj["metadata"]["resourceVersion"]), spec.resource, event_type, obj)
        if len(self._log) >= self.event_log_size:
            self._compacted_rv = self._log.popleft().rv
        self._log.append(event)
        for watcher in self._watchers:
            if watcher.wants(event):
                watcher.queue.put_nowait(event)

    def _decoding(self, spec: ResourceSpec, body: bytes, validation: str) -> _Decoding:
        what = (
            f"the object provided is unrecognized (must be of type {spec.kind}): couldn't get version/kind;"
            " json parse error: "
        )
        data, duplicates = _decode_json(body, what, quote_body=True)
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", f"{what}the body must be a JSON object")
        return _Decoding(validation, duplicates, body=data)

    def _strict_decoding(self, spec: ResourceSpec, obj: JsonDict, decoding: _Decoding) -> None:
        """Unknown and duplicate fields: warnings, a failed write (Strict) or nothing (Ignore)."""
        if decoding.validation == "Ignore":
            return
        unknown = [f"metadata.{key}" for key in obj.get("metadata") or {} if key not in _OBJECT_META_FIELDS]
        if spec.crd is not None:
            # The server lists the pruned paths sorted, after those of metadata.
            unknown += sorted(crd_schema.unknown_fields(dict(spec.crd), obj))
        errors = [f'duplicate field "{field}"' for field in decoding.duplicates]
        errors += [f'unknown field "{field}"' for field in unknown]
        if not errors:
            return
        if decoding.validation == "Warn":
            self._pending_warnings.extend(errors)
            return
        text = f"strict decoding error: {', '.join(errors)}"
        if decoding.patched is not None:
            # A strict JSON or merge patch fails as the server's does: quoting the patched object.
            value = f"Invalid value: {json.dumps(_go_json(decoding.patched))}: {text}"
            cause = {"reason": "FieldValueInvalid", "message": value, "field": "patch"}
            raise ApiError(422, "Invalid", f' "" is invalid: patch: {value}', {"causes": [cause]})
        raise ApiError(
            400,
            "BadRequest",
            f'{spec.kind} in version "{spec.resource.version}" cannot be handled as a {spec.kind}: {text}',
        )

    def _admit(self, spec: ResourceSpec, obj: JsonDict, *, status_only: bool) -> JsonDict:
        """Prune, default and validate a custom resource like the apiserver's CRD handler does."""
        obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k in _OBJECT_META_FIELDS}
        if spec.crd is None:
            return obj
        crd = dict(spec.crd)
        pruned = crd_schema.prune_object(crd, obj)
        if status_only:
            errors = crd_schema.check_status(crd, pruned.get("status", {}), version=spec.resource.version)
        else:
            errors = crd_schema.check_object(crd, pruned, version=spec.resource.version)
        if errors:
            name = str(pruned.get("metadata", {}).get("name", ""))
            status = crd_schema.invalid_status(crd, name, errors)
            raise ApiError(422, "Invalid", status["message"], status["details"])
        return pruned

    @staticmethod
    def _invalid(spec: ResourceSpec, name: str | None, errors: Sequence[str]) -> ApiError:
        listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
        details: JsonDict = {"name": name, "kind": spec.kind, "causes": [_cause(e) for e in errors]}
        if spec.resource.group:
            details["group"] = spec.resource.group
        return ApiError(422, "Invalid", f'{spec.qualified_kind} "{name}" is invalid: {listed}', details)

    def _check_type(self, spec: ResourceSpec, body: JsonDict) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        api_version = body.setdefault("apiVersion", spec.api_version)
        kind = body.setdefault("kind", spec.kind)
        if spec.crd is not None and api_version == spec.api_version and kind != spec.kind:
            # A custom resource's kind is checked as a field of the object.
            name = (body.get("metadata") or {}).get("name")
            error = f"kind: Invalid value: {json.dumps(kind)}: must be {spec.kind}"
            group = spec.resource.group
            raise ApiError(
                422,
                "Invalid",
                f'{kind}.{group} "{name}" is invalid: {error}',
                {"name": name, "group": group, "kind": kind, "causes": [_cause(error)]},
            )
        if api_version != spec.api_version or kind != spec.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the expected API version"
                f" ({spec.api_version})"
                if api_version != spec.api_version
                else f"the kind in the data ({kind}) does not match the expected kind ({spec.kind})",
            )
        if not isinstance(body.setdefault("metadata", {}), dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")

    def _create(
        self, spec: ResourceSpec, namespace: str | None, body: JsonDict, *, dry_run: bool, decoding: _Decoding
    ) -> JsonDict:
        self._check_type(spec, body)
        if spec.resource == CRD_RESOURCE:
            self._check_crd(spec, body)
        meta: JsonDict = body["metadata"]
        if spec.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            if self.get_object(NAMESPACE_RESOURCE, None, str(namespace)) is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{_random_suffix()}"
        name = meta.get("name")
        if not name:
            raise self._invalid(spec, "", ["metadata.name: Required value: name or generateName is required"])
        if not isinstance(name, str):
            raise ApiError(400, "BadRequest", "metadata.name must be a string")
        self._check_name(spec, name)
        key = (spec.resource, namespace if spec.namespaced else None, name)
        if key in self.objects and not self.objects[key].deleted:
            raise ApiError(
                409, "AlreadyExists", f'{spec.qualified} "{name}" already exists', spec.details(name)
            )

        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            meta.pop(field, None)
        if spec.has_status:
            body.pop("status", None)  # kube-apiserver ignores status on create with the subresource
        self._strict_decoding(spec, body, decoding)
        body = self._admit(spec, body, status_only=False)
        meta = body["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _timestamp(self.clock())
        if spec.has_generation:
            meta["generation"] = 1
        if spec.resource == NAMESPACE_RESOURCE:
            body.setdefault("status", {})["phase"] = "Active"
        if spec.resource == CRD_RESOURCE:
            body = self._crd_established(body)
        if dry_run:
            return body  # kube-apiserver's dry-run create has no resourceVersion yet
        meta["resourceVersion"] = self._next_rv()
        if key in self.objects:
            self.objects[key].create(body)
        else:
            self.objects[key] = body
        if spec.has_status and "status" in body:
            self._defaulted_status.add(key)
        if spec.resource == CRD_RESOURCE:
            self._register_crd(body)
        self._emit(spec, "ADDED", body)
        return body

    def _check_name(self, spec: ResourceSpec, name: str) -> None:
        pattern, limit = (_DNS_LABEL, 63) if spec.resource == NAMESPACE_RESOURCE else (_DNS_SUBDOMAIN, 253)
        if spec.resource.plural == "events" and spec.crd is None:
            return  # event names carry dots and digits freely; not worth the strictness
        if len(name) > limit or not pattern.fullmatch(name):
            what = "RFC 1123 label" if pattern is _DNS_LABEL else "RFC 1123 subdomain"
            raise self._invalid(
                spec,
                name,
                [
                    f'metadata.name: Invalid value: "{name}": a lowercase {what} must consist of lower'
                    " case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric"
                    f" character {_NAME_HINTS[what]}"
                ],
            )

    def _check_crd(self, spec: ResourceSpec, crd: JsonDict) -> None:
        # Only what serving the CRD's resources needs; the apiserver checks much more.
        crd_spec = crd.get("spec")
        name = crd.get("metadata", {}).get("name")
        errors: list[str] = []
        if not isinstance(crd_spec, dict):
            errors.append("spec: Required value")
        else:
            names = crd_spec.get("names")
            names = names if isinstance(names, dict) else {}
            for field, value in [
                ("spec.group", crd_spec.get("group")),
                ("spec.names.plural", names.get("plural")),
                ("spec.names.kind", names.get("kind")),
            ]:
                if not isinstance(value, str) or not value:
                    errors.append(f"{field}: Required value")
            versions = crd_spec.get("versions")
            if not isinstance(versions, list) or not all(
                isinstance(v, dict) and v.get("name") for v in versions
            ):
                errors.append("spec.versions: Required value: each version must have a name")
            if not errors and name != f"{names['plural']}.{crd_spec['group']}":
                errors.append(
                    f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+spec.group'
                )
        if errors:
            raise self._invalid(spec, name, errors)

    @staticmethod
    def _crd_established(crd: JsonDict) -> JsonDict:
        names = crd.get("spec", {}).get("names", {})
        versions = crd.get("spec", {}).get("versions") or []
        crd["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in versions if v.get("storage", True)][:1],
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": _timestamp(_now()),
                }
                for t, r, m in [
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                ]
            ],
        }
        return crd

    def _replace(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        body: JsonDict,
        subresource: str | None,
        *,
        dry_run: bool,
        decoding: _Decoding,
    ) -> JsonDict:
        self._check_type(spec, body)
        old = self._existing(spec, namespace, name)
        meta = body["metadata"]
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})",
            )
        rv = meta.get("resourceVersion")
        if not rv and spec.crd is not None and subresource is None:
            error = "metadata.resourceVersion: Invalid value: 0: must be specified for an update"
            raise ApiError(
                422,
                "Invalid",
                f'{spec.qualified} "{name}" is invalid: {error}',
                {**spec.details(name), "causes": [_cause(error)]},
            )
        self._check_precondition(spec, old, rv)
        return self._update(spec, old, body, subresource, dry_run=dry_run, decoding=decoding)

    def _check_precondition(self, spec: ResourceSpec, old: JsonDict, rv: Any) -> None:
        if rv and str(rv) != old["metadata"]["resourceVersion"]:
            name = old["metadata"]["name"]
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {spec.qualified} "{name}": the object has been modified;'
                " please apply your changes to the latest version and try again",
                spec.details(name),
            )

    def _patch(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        body: bytes,
        content_type: str,
        subresource: str | None,
        *,
        dry_run: bool,
        decoding: _Decoding,
    ) -> tuple[JsonDict, bool]:
        if content_type == "application/apply-patch+yaml":
            return self._apply(spec, namespace, name, body, subresource, dry_run=dry_run, decoding=decoding)
        patch_doc, duplicates = _decode_json(body, _PATCH)
        old = self._existing(spec, namespace, name)
        if content_type == "application/json-patch+json":
            if not isinstance(patch_doc, list):
                raise ApiError(
                    400,
                    "BadRequest",
                    f"{_PATCH}json: cannot unmarshal {_go_type(patch_doc)} into Go value of type"
                    " []handlers.jsonPatchOp",
                )
            try:
                patched = jsonpatch.JsonPatch(patch_doc).apply(copy.deepcopy(old))
            except (
                jsonpatch.JsonPatchException,
                jsonpointer.JsonPointerException,
                TypeError,
                KeyError,
                IndexError,
                ValueError,
            ) as e:
                # kube-apiserver names no cause for a failed operation (a `test` among them).
                raise ApiError(
                    422, "Invalid", "the server rejected our request due to an error in our request", {}
                ) from e
        else:
            if not isinstance(patch_doc, dict):
                raise ApiError(
                    400,
                    "BadRequest",
                    f"{_PATCH}json: cannot unmarshal {_go_type(patch_doc)} into Go value of type"
                    " map[string]interface {}",
                )
            patched = merge_patch(old, _strip_directives(patch_doc))
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata", {}), dict):
            raise ApiError(422, "Invalid", "the patched object is not a valid Kubernetes object", {})
        patched.setdefault("metadata", {})
        self._check_precondition(spec, old, patched["metadata"].get("resourceVersion"))
        self._check_type(spec, patched)
        decoding = dataclasses.replace(decoding, duplicates=duplicates, patched=patched)
        return self._update(spec, old, patched, subresource, dry_run=dry_run, decoding=decoding), False

    def _apply(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        body: bytes,
        subresource: str | None,
        *,
        dry_run: bool,
        decoding: _Decoding,
    ) -> tuple[JsonDict, bool]:
        """Server-side apply, as a merge patch of the applied configuration (or a create)."""
        try:
            applied = yaml.safe_load(body) or {}
        except yaml.YAMLError as e:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {e}") from e
        if not isinstance(applied, dict):
            raise ApiError(
                400, "BadRequest", "error decoding YAML: the applied configuration is not an object"
            )
        if spec.crd is not None:
            unknown = crd_schema.unknown_fields(dict(spec.crd), applied)
            if unknown:
                # kube-apiserver cannot type an applied configuration with undeclared fields: it
                # answers 500 whatever fieldValidation says.
                meta = applied.get("metadata")
                applied_namespace = meta.get("namespace", "") if isinstance(meta, dict) else ""
                where = f"{applied_namespace}/{name}; {spec.api_version}, Kind={spec.kind}"
                listed = "\n".join(f".{field}: field not declared in schema" for field in unknown)
                raise ApiError(500, "", f"failed to create typed patch object ({where}): {listed}")
        key = (spec.resource, namespace if spec.namespaced else None, name)
        if key not in self.objects or self.objects[key].deleted:
            applied.setdefault("metadata", {}).setdefault("name", name)
            return self._create(spec, namespace, applied, dry_run=dry_run, decoding=decoding), True
        old = self._existing(spec, namespace, name)
        patched = merge_patch(old, applied)
        self._check_precondition(spec, old, patched["metadata"].get("resourceVersion"))
        self._check_type(spec, patched)
        return self._update(spec, old, patched, subresource, dry_run=dry_run, decoding=decoding), False

    def _update(
        self,
        spec: ResourceSpec,
        old: JsonDict,
        new: JsonDict,
        subresource: str | None,
        *,
        dry_run: bool,
        decoding: _Decoding,
    ) -> JsonDict:
        # Unknown fields are found in what the client sent, before the status strategy drops any.
        self._strict_decoding(spec, new, decoding)
        old_meta: JsonDict = old["metadata"]
        if subresource == "status":
            # Like the CRD status strategy: the old object with only the new status.
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            meta = result["metadata"]
            for field in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if field in old_meta:
                    meta[field] = copy.deepcopy(old_meta[field])
                else:
                    meta.pop(field, None)
            if spec.has_status:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = [
                    f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])
                ]
                if added:
                    quoted = ", ".join(json.dumps(f) for f in added)
                    error = (
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is"
                        f" being deleted, found new finalizers []string{{{quoted}}}"
                    )
                    invalid = self._invalid(spec, old_meta["name"], [error])
                    # The API server checks metadata twice on this path, so the cause comes twice
                    # (the message, an aggregate, names it once).
                    assert invalid.details is not None
                    invalid.details["causes"] *= 2
                    raise invalid
        result["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if spec.resource == CRD_RESOURCE:
            self._check_crd(spec, result)
        result = self._admit(spec, result, status_only=subresource == "status")
        meta = result["metadata"]
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)

        if spec.has_generation and "generation" in old_meta:
            ignored = {"metadata", "status"} if spec.has_status else {"metadata"}
            changed = {k: v for k, v in result.items() if k not in ignored} != {
                k: v for k, v in old.items() if k not in ignored
            }
            meta["generation"] = old_meta["generation"] + (1 if changed else 0)

        key = (spec.resource, meta.get("namespace") if spec.namespaced else None, meta["name"])
        if result == old and key not in self._defaulted_status:
            return old  # kube-apiserver skips no-op writes: no new resourceVersion, no event
        if dry_run:
            return result
        self._defaulted_status.discard(key)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone: the stored object is deleted as it was (the DELETED event
            # carries it), and the answer is the update with the stored resourceVersion.
            meta["resourceVersion"] = old_meta["resourceVersion"]
            self._remove(spec, key, old)
            return result
        meta["resourceVersion"] = self._next_rv()
        self.objects[key].history.append(result)
        if spec.resource == CRD_RESOURCE:
            self._register_crd(result)
        self._emit(spec, "MODIFIED", result)
        return result

    def _delete(
        self, spec: ResourceSpec, namespace: str | None, name: str, options: JsonDict, *, dry_run: bool
    ) -> tuple[JsonDict, bool]:
        """Delete an object, or mark it deleted while finalizers remain; and whether it is gone."""
        old = self._existing(spec, namespace, name)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != old["metadata"].get("uid"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {spec.qualified} "{name}": Precondition failed:'
                " UID in precondition:"
                f" {preconditions['uid']}, UID in object meta: {old['metadata'].get('uid')}",
                spec.details(name),
            )
        self._check_precondition(spec, old, preconditions.get("resourceVersion"))
        key = (spec.resource, namespace if spec.namespaced else None, name)
        result = copy.deepcopy(old)
        meta = result["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old, False
            meta["deletionTimestamp"] = _timestamp(self.clock())
            meta["deletionGracePeriodSeconds"] = 0
            if "generation" in meta:
                meta["generation"] += 1  # as the API server's BeforeDelete does
            if dry_run:
                return result, False
            meta["resourceVersion"] = self._next_rv()
            self.objects[key].history.append(result)
            self._emit(spec, "MODIFIED", result)
            return result, False
        if not dry_run:
            self._remove(spec, key, old)
        return result, True

    def _remove(
        self, spec: ResourceSpec, key: tuple[kmock.resource, str | None, str], last: JsonDict
    ) -> None:
        # Like etcd: the deletion is a revision of its own, and the DELETED event carries the last
        # stored state at that revision.
        last = copy.deepcopy(last)
        last["metadata"]["resourceVersion"] = self._next_rv()
        self._defaulted_status.discard(key)
        self.objects[key].history.append(last)
        self.objects[key].delete()
        self._emit(spec, "DELETED", last)
        self._after_delete(spec, last)

    @staticmethod
    def _deleted_status(spec: ResourceSpec, obj: JsonDict) -> JsonDict:
        details = spec.details(obj["metadata"]["name"])
        details["uid"] = obj["metadata"].get("uid")
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _after_delete(self, spec: ResourceSpec, obj: JsonDict) -> None:
        if spec.resource == CRD_RESOURCE:
            self._unregister_crd(obj)
        if spec.resource == NAMESPACE_RESOURCE:
            namespace = obj["metadata"]["name"]
            for (resource, obj_namespace, name), stored in list(self.objects.items()):
                if obj_namespace == namespace and not stored.deleted and resource in self._specs:
                    self._delete(self._specs[resource], namespace, name, {}, dry_run=False)

    def _delete_collection(
        self, spec: ResourceSpec, namespace: str | None, params: MultiMapping[str], *, dry_run: bool
    ) -> JsonDict:
        objs = self._selected(self._current(spec, namespace), params)
        items = [
            self._delete(spec, o["metadata"].get("namespace"), o["metadata"]["name"], {}, dry_run=dry_run)[0]
            for o in objs
        ]
        return {
            "kind": f"{spec.kind}List",
            "apiVersion": spec.api_version,
            "metadata": {"resourceVersion": self.resource_version},
            "items": items,
        }

    # ---- watching -----------------------------------------------------------------------------

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        spec: ResourceSpec,
        namespace: str | None,
        name: str | None,
        params: MultiMapping[str],
        table: str | None,
    ) -> aiohttp.web.StreamResponse:
        since = params.get("resourceVersion", "")
        if since and not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resource version: {since!r}")
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid timeoutSeconds: {e}") from e
        initial = params.get("sendInitialEvents") == "true" or since in {"", "0"}
        bookmarks = params.get("allowWatchBookmarks") == "true"
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")

        # Snapshot and subscribe with no await in between, so no event falls into the gap.
        watcher = _Watcher(spec.resource, namespace, name, labels, fields, asyncio.Queue())
        pending: list[JsonDict] = []
        expired = False
        if initial:
            selected = self._selected(
                self._current(spec, namespace, name), {"labelSelector": labels, "fieldSelector": fields}
            )
            pending = [{"type": "ADDED", "object": obj} for obj in selected]
            if params.get("sendInitialEvents") == "true" and bookmarks:
                pending.append(self._bookmark(spec, initial_events_end=True))
        elif int(since) < self._oldest_rv(spec):
            expired = True
        else:
            pending = [
                {"type": e.type, "object": e.object}
                for e in self._log
                if e.rv > int(since) and watcher.wants(e)
            ]
        if not self._closing and not expired:
            self._watchers.add(watcher)

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        columns_sent = False

        async def send(event: JsonDict) -> None:
            nonlocal columns_sent
            if table is not None and event["type"] not in {"BOOKMARK", "ERROR"}:
                # Like the apiserver: column definitions in the first Table of the stream only.
                rendered = self._table(spec, [event["object"]], params, table)
                if columns_sent:
                    rendered["columnDefinitions"] = []
                columns_sent = True
                event = {"type": event["type"], "object": rendered}
            await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await response.prepare(raw)
            if expired:
                status = ApiError(
                    410, "Expired", f"too old resource version: {since} ({self._oldest_rv(spec)})"
                ).as_status()
                await send({"type": "ERROR", "object": status})
                await response.write_eof()
                return response
            for event in pending:
                await send(event)
            next_bookmark = loop.time() + self.bookmark_interval
            while not self._closing:
                wait = next_bookmark - loop.time()
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                try:
                    async with asyncio.timeout(max(wait, 0)):
                        item = await watcher.queue.get()
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        break
                    if bookmarks:
                        await send(self._bookmark(spec))
                    next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if item is None:
                    break
                await send({"type": item.type, "object": item.object})
            if bookmarks and not self._closing:
                await send(self._bookmark(spec))
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client went away; nothing to tell it
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client disconnects; __call__ never sees it.
            self.served.append(ServedResponse(raw.method, raw.path_qs, response.status))
            raise
        finally:
            self._watchers.discard(watcher)
        return response

    def _bookmark(self, spec: ResourceSpec, *, initial_events_end: bool = False) -> JsonDict:
        metadata: JsonDict = {"resourceVersion": self.resource_version}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": spec.kind, "apiVersion": spec.api_version, "metadata": metadata},
        }


def _reason_for(code: int) -> str:
    return {
        400: "BadRequest",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        415: "UnsupportedMediaType",
        422: "Invalid",
    }.get(code, "InternalError")


def _json_body(body: bytes, *, allow_list: bool = False) -> Any:
    try:
        data = json.loads(body or b"null")
    except ValueError as e:
        raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {e}") from e
    if isinstance(data, dict) or (allow_list and isinstance(data, list)):
        return data
    raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")


class _Members(dict[str, Any]):
    """A decoded JSON object that remembers the keys it saw more than once."""

    repeated: list[str]


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    members = _Members()
    members.repeated = []
    for key, value in pairs:
        if key in members and key not in members.repeated:
            members.repeated.append(key)
        members[key] = value
    return members


def _plain(value: Any, path: str, duplicates: list[str]) -> Any:
    # Back to plain dicts, collecting the repeated keys' paths as the strict decoder names them.
    if isinstance(value, list):
        return [_plain(item, f"{path}[{index}]", duplicates) for index, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    duplicates += [f"{path}.{key}" if path else key for key in getattr(value, "repeated", ())]
    return {key: _plain(item, f"{path}.{key}" if path else key, duplicates) for key, item in value.items()}


def _decode_json(body: bytes, what: str, *, quote_body: bool = False) -> tuple[Any, tuple[str, ...]]:
    """A request body as JSON and the fields it repeats (``spec.alias``); else 400 ``<what><error>``."""
    try:
        raw = json.loads(body or b"null", object_pairs_hook=_members)
    except ValueError as e:
        quoted = f" ({body[:64].decode('utf-8', 'replace')})" if quote_body else ""
        raise ApiError(400, "BadRequest", f"{what}{e}{quoted}") from e
    duplicates: list[str] = []
    return _plain(raw, "", duplicates), tuple(duplicates)


def _go_type(value: Any) -> str:
    """What Go's encoding/json calls a JSON value in its unmarshal errors."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else "string" if isinstance(value, str) else "null"


def _go_json(value: Any) -> str:
    # Go's encoding/json: compact, keys sorted, <, > and & escaped.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _write_options(params: MultiMapping[str], kind: str, *, apply: bool = False, patch: bool = False) -> str:
    """Check a write's query options as the server does (422 on ``<kind>Options``); the directive."""
    errors: list[JsonDict] = []
    if apply and not params.get("fieldManager"):
        errors.append(
            {
                "field": "fieldManager",
                "reason": "FieldValueRequired",
                "message": "Required value: is required for apply patch",
            }
        )
    if patch and not apply and "force" in params:
        errors.append(
            {
                "field": "force",
                "reason": "FieldValueForbidden",
                "message": "Forbidden: may not be specified for non-apply patch",
            }
        )
    dry_run = params.getall("dryRun", [])
    if any(value != "All" for value in dry_run):
        errors.append(
            {
                "field": "dryRun",
                "reason": "FieldValueNotSupported",
                "message": f'Unsupported value: {json.dumps(dry_run)}: supported values: "All"',
            }
        )
    directive = params.get("fieldValidation", "")
    if directive not in {"", *_FIELD_VALIDATIONS}:
        errors.append(
            {
                "field": "fieldValidation",
                "reason": "FieldValueNotSupported",
                "message": f"Unsupported value: {json.dumps(directive)}: supported values: "
                + ", ".join(json.dumps(value) for value in ("", *_FIELD_VALIDATIONS)),
            }
        )
    if errors:
        listed = (
            "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            if len(errors) == 1
            else ("[" + ", ".join(f"{e['field']}: {e['message']}" for e in errors) + "]")
        )
        raise ApiError(
            422,
            "Invalid",
            f'{kind}.meta.k8s.io "" is invalid: {listed}',
            {"group": "meta.k8s.io", "kind": kind, "causes": errors},
        )
    return directive or "Warn"  # the server's default since 1.23


def _storage_version_hash(spec: ResourceSpec) -> str:
    """Discovery's storageVersionHash: the first 8 bytes of SHA-256("group/version/kind"), base64."""
    group, version = spec.resource.group, spec.resource.version
    digest = hashlib.sha256(f"{group}/{version}/{spec.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _accepts_json(headers: CIMultiDictProxy[str]) -> bool:
    accepted = [
        media_range.split(";")[0].strip().lower()
        for accept in headers.getall("Accept", ["*/*"])
        for media_range in accept.split(",")
    ]
    return any(kind in {"application/json", "application/*", "*/*"} for kind in accepted)


def _table_version(headers: CIMultiDictProxy[str]) -> str | None:
    """The meta.k8s.io version of a Table the client asks for first, or None for plain JSON."""
    for accept in headers.getall("Accept", []):
        for media_range in accept.split(","):
            kind, *raw_params = (part.strip() for part in media_range.split(";"))
            params = dict(p.split("=", 1) for p in raw_params if "=" in p)
            if (
                params.get("as") == "Table"
                and params.get("g") == "meta.k8s.io"
                and params.get("v") in {"v1", "v1beta1"}
            ):
                return str(params["v"])
            if kind in {"application/json", "*/*", "application/*"} and "as" not in params:
                return None
    return None


def _column_description(spec: ResourceSpec, column: Mapping[str, Any]) -> str:
    if column.get("description") or spec.crd is None or column is _NAME_COLUMN:
        return str(column.get("description", ""))
    return f"Custom resource definition column (in JSONPath format): {column.get('jsonPath', '')}"


def _cell(column: Mapping[str, Any], value: Any, now: datetime.datetime) -> Any:
    # As the apiextensions table convertor: typed cells, dates as ages, absent values as null.
    if value is None:
        return None
    kind = column.get("type", "string")
    if kind == "date":
        moment = _parse_timestamp(str(value))
        if moment is None:
            return "<invalid>"
        return (
            _timestamp(moment) if column.get("raw_date") else human_duration((now - moment).total_seconds())
        )
    if kind == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --------------------------------------------------------------------------------------------
# Serving: in the running loop, or in a thread with its own loop.
# --------------------------------------------------------------------------------------------


def load_crds(sources: Iterable[CrdSource]) -> list[JsonDict]:
    """Load CRDs from YAML files (via the schema module) or take them as given dicts."""
    return [
        copy.deepcopy(dict(source))
        if isinstance(source, Mapping)
        else crd_schema.load_crd(pathlib.Path(source))
        for source in sources
    ]


def write_kubeconfig(path: str | os.PathLike[str], url: str, *, namespace: str = "default") -> pathlib.Path:
    """Write a kubeconfig for a plain-HTTP server without authentication."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": url}}],
        "users": [{"name": "sandbox", "user": {}}],
        "contexts": [
            {"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox", "namespace": namespace}}
        ],
        "current-context": "sandbox",
        "preferences": {},
    }
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


@dataclasses.dataclass(frozen=True)
class EmulatorHandle:
    """A served emulator: its base URL (``http://127.0.0.1:PORT``) and the kubeconfig, if any."""

    url: str
    kubeconfig_path: pathlib.Path | None
    emulator: KubernetesApiEmulator


@attrs.mutable
class _LoopbackServer(kmock.Server):
    # kmock.Server also patches aiohttp's DNS resolution process-wide while it runs; the
    # emulator is reached by its IP only, and the patch would clash across threads.

    async def __aenter__(self) -> Self:
        self._managed_server = aiohttp.test_utils.RawTestServer(
            self.handler, host=self._host, port=self._port
        )
        await self._managed_server.__aenter__()
        self._managed_client = aiohttp.ClientSession(self._managed_server.make_url("/"))
        await self._managed_client.__aenter__()
        self.handler.servers.append(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.handler.servers.remove(self)
        assert self._managed_client is not None
        assert self._managed_server is not None
        await self._managed_client.__aexit__(exc_type, exc, tb)
        await self._managed_server.__aexit__(exc_type, exc, tb)
        self._managed_client = None
        self._managed_server = None


@contextlib.asynccontextmanager
async def run_kubernetes_emulator(
    crds: Iterable[CrdSource] = (),
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    kubeconfig_path: str | os.PathLike[str] | None = None,
    namespaces: Sequence[str] = DEFAULT_NAMESPACES,
    peerings: Sequence[str] = DEFAULT_PEERINGS,
) -> AsyncIterator[EmulatorHandle]:
    """Serve a new emulator on a loopback port in the running event loop until exited."""
    emulator = KubernetesApiEmulator(crds=load_crds(crds), namespaces=namespaces, peerings=peerings)
    async with emulator:
        server = _LoopbackServer(emulator, host=host, port=port)
        async with server:
            url = f"http://{host}:{server.port}"
            path = write_kubeconfig(kubeconfig_path, url) if kubeconfig_path is not None else None
            try:
                yield EmulatorHandle(url=url, kubeconfig_path=path, emulator=emulator)
            finally:
                await emulator.close_streams()


class ThreadedEmulator:
    """
    An emulator served from a daemon thread with its own real-time event loop.

    The emulator's state belongs to that loop: change it from other threads only through
    ``call()``/``run()`` (e.g. ``threaded.call(lambda: threaded.emulator.create_object(...))``),
    which also wakes its watchers; reading ``emulator.objects`` or ``emulator.served`` is fine.
    """

    def __init__(
        self,
        crds: Iterable[CrdSource] = (),
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        kubeconfig_path: str | os.PathLike[str] | None = None,
        namespaces: Sequence[str] = DEFAULT_NAMESPACES,
        peerings: Sequence[str] = DEFAULT_PEERINGS,
    ) -> None:
        self._crds = load_crds(crds)
        self._options: JsonDict = {
            "host": host,
            "port": port,
            "kubeconfig_path": kubeconfig_path,
            "namespaces": namespaces,
            "peerings": peerings,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._handle: EmulatorHandle | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kubernetes-emulator", daemon=True)

    @property
    def handle(self) -> EmulatorHandle:
        if self._handle is None:
            raise RuntimeError("The emulator is not running.")
        return self._handle

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def kubeconfig_path(self) -> pathlib.Path | None:
        return self.handle.kubeconfig_path

    @property
    def emulator(self) -> KubernetesApiEmulator:
        return self.handle.emulator

    def start(self, timeout: float = 10.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("The Kubernetes emulator did not start in time.")
        if self._failure is not None:
            raise RuntimeError("The Kubernetes emulator failed to start.") from self._failure
        return self

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = 10.0) -> _T:
        """Run a coroutine in the emulator's loop (e.g. to seed objects) and return its result."""
        if self._loop is None:
            raise RuntimeError("The emulator is not running.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[[], _T], timeout: float | None = 10.0) -> _T:
        """Call a function in the emulator's loop, e.g. ``emulator.create_object(...)``."""

        async def wrapper() -> _T:
            return fn()

        return self.run(wrapper(), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may be closing already
                loop.call_soon_threadsafe(stopped.set)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        # A plain new loop: whatever patches the caller's loop (e.g. looptime) stays out of here.
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:
            self._failure = e
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        async with run_kubernetes_emulator(self._crds, **self._options) as handle:
            self._handle = handle
            self._ready.set()
            await self._stopped.wait()


def start_in_thread(
    crds: Iterable[CrdSource] = (),
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    kubeconfig_path: str | os.PathLike[str] | None = None,
    namespaces: Sequence[str] = DEFAULT_NAMESPACES,
    peerings: Sequence[str] = DEFAULT_PEERINGS,
) -> ThreadedEmulator:
    """Start an emulator in a background thread; call ``.stop()`` (or use ``with``) to end it."""
    return ThreadedEmulator(
        crds,
        host=host,
        port=port,
        kubeconfig_path=kubeconfig_path,
        namespaces=namespaces,
        peerings=peerings,
    ).start()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the emulator until interrupted: ``python -m lambda_rollouts.sandbox.kube --crd ...``."""
    parser = argparse.ArgumentParser(description="A local Kubernetes API server for the sandbox.")
    parser.add_argument("--crd", action="append", default=[], help="a CRD YAML file (repeatable)")
    parser.add_argument("--port", type=int, default=None, help="the TCP port (default: any free one)")
    parser.add_argument("--kubeconfig", default=None, help="where to write a kubeconfig for kubectl")
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with run_kubernetes_emulator(
            args.crd, port=args.port, kubeconfig_path=args.kubeconfig
        ) as handle:
            print(f"Serving the Kubernetes API at {handle.url}", flush=True)
            if handle.kubeconfig_path is not None:
                print(f"export KUBECONFIG={handle.kubeconfig_path}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()


__all__ = [
    "ApiError",
    "ApiPath",
    "EmulatorHandle",
    "KubernetesApiEmulator",
    "ResourceSpec",
    "ServedResponse",
    "ThreadedEmulator",
    "WatchEvent",
    "crd_resources",
    "field_selector_matches",
    "human_duration",
    "jsonpath_value",
    "label_selector_matches",
    "load_crds",
    "merge_patch",
    "parse_api_path",
    "run_kubernetes_emulator",
    "start_in_thread",
    "write_kubeconfig",
]
