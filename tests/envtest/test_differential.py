"""The sandbox's Kubernetes API answers as kube-apiserver does: the same requests, sent to both.

Every case in ``CASES`` is a short list of requests. Each runs once against the sandbox's
emulator (``lambda_rollouts.sandbox.kube``, serving the project's CRD from ``build_crd()``) and
once against the real kube-apiserver of this tier (as the admin, in a namespace of this module's
own), and the two answers must be equal after the ``Normaliser``: status codes, ``reason``s,
``details.causes``, messages, ``Warning`` headers, the objects returned and watch events in their
order. What legitimately differs is normalised away, and only that: uids, timestamps and ages,
resourceVersion values (object versions become ordinals per case, so "unchanged by a no-op write"
and "bumped by a write" still compare), managedFields, and the patched object that a strict
patch error quotes (with the server's managedFields in it).

Then the OpenAPI documents (v3 index, documents and caching answers; v2 paths and definitions),
``/version`` and discovery are compared, and the bundled kubectl is run against both: ``explain``
and ``apply`` with its default validation must print the same.

Cases that compare less than the whole answer say what they leave out and why. What the emulator
still does differently is listed in its module docstring under "Known differences".
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from lambda_rollouts.crd import build_crd
from lambda_rollouts.sandbox.kube import start_in_thread

from .apiserver import KUBECTL, ApiServer, clean_environment
from .harness import GROUP_VERSION, unique

JsonDict = dict[str, Any]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "canary.yaml"
# A strict patch error quotes the whole patched object (Go-quoted JSON) before its strict errors.
_PATCHED_OBJECT = re.compile(r'(Invalid value: )"\{.*\}"(: strict decoding error)')
COLLECTION = f"/apis/{GROUP_VERSION}/namespaces/{{ns}}/lambdarollouts"
OBJECT = f"{COLLECTION}/{{name}}"
STATUS = f"{OBJECT}/status"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def rollout(**spec: Any) -> JsonDict:
    """A valid LambdaRollout named ``{name}`` in ``{ns}`` (filled in per case and server)."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LambdaRollout",
        "metadata": {"name": "{name}", "namespace": "{ns}"},
        "spec": {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "2",
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5s"}}]}},
            **spec,
        },
    }


def with_metadata(body: JsonDict, **metadata: Any) -> JsonDict:
    result = copy.deepcopy(body)
    result["metadata"].update(metadata)
    return result


@dataclasses.dataclass(frozen=True)
class Step:
    """One request. ``path`` and ``params`` may name ``{ns}``, ``{name}`` and ``{rv:<key>}``."""

    method: str
    path: str
    body: Any = None  # a dict or list is sent as JSON, a str as it is
    content_type: str = "application/json"
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    accept: str = "application/json"
    watch: bool = False
    keep: str | None = None  # remember the answer's resourceVersion as {rv:<keep>}
    # What is compared: "all" (code, Warning headers, normalised body), "body" (code and body),
    # "status" (code and the Status without its message: Go's own parser wording).
    compare: str = "all"


def create(body: JsonDict | None = None, **params: str) -> Step:
    return Step("POST", COLLECTION, body if body is not None else rollout(), params=params)


def get(path: str = OBJECT, **params: str) -> Step:
    return Step("GET", path, params=params)


def patch(body: Any, content_type: str = MERGE, path: str = OBJECT, **params: str) -> Step:
    return Step("PATCH", path, body, content_type=content_type, params=params)


def put(body: JsonDict, path: str = OBJECT, **params: str) -> Step:
    return Step("PUT", path, body, params=params)


def delete(**params: str) -> Step:
    return Step("DELETE", OBJECT, params=params)


FINALIZED = with_metadata(rollout(), finalizers=["rollouts.dev/test"])
TYPO = rollout(pasued=True)
APPLIED = (
    "apiVersion: lambda.rollouts.dev/v1alpha1\nkind: LambdaRollout\n"
    "metadata: {name: '{name}', namespace: '{ns}'}\n"
    "spec:\n  functionName: checkout-api\n  alias: live\n  version: '%s'\n"
    "  strategy: {allAtOnce: {}}\n"
)


CASES: dict[str, Sequence[Step]] = {
    # -- create, get, list ---------------------------------------------------------------------
    "create": [create(), get()],
    "create-dry-run": [create(dryRun="All"), get()],
    "create-generate-name": [
        create(
            {
                **rollout(),
                "metadata": {"generateName": "{name}-", "namespace": "{ns}"},
            }
        )
    ],
    "create-twice-is-409-already-exists": [create(), create()],
    "create-in-a-missing-namespace": [
        Step(
            "POST",
            f"/apis/{GROUP_VERSION}/namespaces/no-such-namespace/lambdarollouts",
            {**rollout(), "metadata": {"name": "{name}"}},
        )
    ],
    "create-with-a-namespace-other-than-the-url": [create(with_metadata(rollout(), namespace="default"))],
    "create-with-a-wrong-kind": [create({**rollout(), "kind": "Rollout"})],
    # kube-apiserver also warns of an unknown field "spec" here (it decodes the body as the version
    # the body names); the sandbox says only what fails.
    "create-with-a-wrong-api-version": [
        Step("POST", COLLECTION, {**rollout(), "apiVersion": "lambda.rollouts.dev/v9"}, compare="body")
    ],
    "create-with-an-unsupported-dry-run": [create(dryRun="Bogus")],
    "create-ignores-status": [create({**rollout(), "status": {"phase": "Healthy"}})],
    "get-a-missing-object": [get()],
    # Lists select the case's own object: the namespace holds every case's.
    "list": [create(), get(COLLECTION, fieldSelector="metadata.name={name}")],
    "list-with-a-label-selector": [
        create(with_metadata(rollout(), labels={"team": "a"})),
        get(COLLECTION, labelSelector="team=b"),
        get(COLLECTION, labelSelector="team=a"),
    ],
    # -- patches of the main resource ---------------------------------------------------------
    "merge-patch-of-the-spec-bumps-the-generation": [
        create(),
        patch({"spec": {"paused": True}}),
        patch({"spec": {"paused": None}}),
    ],
    "merge-patch-of-metadata-keeps-the-generation": [
        create(),
        patch({"metadata": {"annotations": {"rollouts.dev/promote": "true"}}}),
    ],
    # The first write after a create stores the status defaults that the server only showed so
    # far: a new resourceVersion; a no-op write after that keeps it.
    "no-op-merge-patches": [create(), patch({"spec": {"version": "2"}}), patch({"spec": {"version": "2"}})],
    "merge-patch-of-the-status-through-the-main-resource-is-ignored": [
        create(),
        patch({"status": {"phase": "Healthy"}}),
    ],
    "json-patch": [
        create(),
        patch([{"op": "replace", "path": "/spec/version", "value": "3"}], JSON_PATCH),
        patch([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}], JSON_PATCH),
    ],
    "json-patch-test-failure-is-422": [
        create(),
        patch(
            [
                {"op": "test", "path": "/spec/version", "value": "7"},
                {"op": "replace", "path": "/spec/version", "value": "3"},
            ],
            JSON_PATCH,
        ),
    ],
    "json-patch-of-a-missing-path-is-422": [
        create(),
        patch([{"op": "replace", "path": "/spec/nothing/here", "value": 1}], JSON_PATCH),
    ],
    "strategic-merge-patch-of-a-custom-resource-is-415": [create(), patch({"spec": {}}, STRATEGIC)],
    "force-on-a-merge-patch-is-422": [create(), patch({"spec": {}}, force="true")],
    "apply-creates-then-updates": [
        patch(APPLIED % "2", APPLY, fieldManager="differential"),
        patch(APPLIED % "3", APPLY, fieldManager="differential"),
        get(),
    ],
    "apply-without-a-field-manager-is-422": [patch(APPLIED % "2", APPLY)],
    "merge-patch-of-a-missing-object-is-404": [patch({"spec": {"paused": True}})],
    # -- the status subresource ---------------------------------------------------------------
    "status-merge-patch-changes-only-the-status": [
        create(),
        patch({"spec": {"paused": True}, "status": {"phase": "Progressing"}}, path=STATUS),
        get(STATUS),
    ],
    "status-json-patch": [
        create(),
        patch([{"op": "add", "path": "/status", "value": {"phase": "Healthy"}}], JSON_PATCH, path=STATUS),
    ],
    "status-put-keeps-the-spec": [
        Step("POST", COLLECTION, rollout(), keep="created"),
        put(
            {
                **rollout(version="9"),
                "metadata": {"name": "{name}", "namespace": "{ns}", "resourceVersion": "{rv:created}"},
                "status": {"phase": "Degraded"},
            },
            path=STATUS,
        ),
    ],
    "status-schema-violation": [create(), patch({"status": {"phase": "Sideways"}}, path=STATUS)],
    # -- preconditions -------------------------------------------------------------------------
    "put-with-a-stale-resource-version-is-409": [
        Step("POST", COLLECTION, rollout(), keep="created"),
        patch({"spec": {"paused": True}}),
        put(with_metadata(rollout(), resourceVersion="{rv:created}")),
    ],
    "put-without-a-resource-version-is-422": [create(), put(rollout())],
    "put-with-another-name-is-400": [create(), put(with_metadata(rollout(), name="other"))],
    "merge-patch-with-a-stale-resource-version-is-409": [
        Step("POST", COLLECTION, rollout(), keep="created"),
        patch({"spec": {"paused": True}}),
        patch({"metadata": {"resourceVersion": "{rv:created}"}, "spec": {"paused": False}}),
    ],
    "put-with-the-current-resource-version": [
        Step("POST", COLLECTION, rollout(), keep="created"),
        put(with_metadata(rollout(version="5"), resourceVersion="{rv:created}")),
    ],
    # -- deletion ------------------------------------------------------------------------------
    "delete": [create(), delete(), get()],
    "delete-with-finalizers-waits-for-them": [
        create(FINALIZED),
        delete(),
        get(),
        delete(),
        patch({"metadata": {"finalizers": ["rollouts.dev/test", "rollouts.dev/more"]}}),
        patch({"metadata": {"finalizers": None}}),
        get(),
    ],
    "delete-dry-run": [create(), delete(dryRun="All"), get()],
    # -- watches -------------------------------------------------------------------------------
    "watch-from-a-resource-version": [
        Step("POST", COLLECTION, FINALIZED, keep="created"),
        patch({"spec": {"paused": True}}),
        patch({"status": {"phase": "Progressing"}}, path=STATUS),
        delete(),
        patch({"metadata": {"finalizers": None}}),
        Step(
            "GET", COLLECTION, params={"resourceVersion": "{rv:created}", "timeoutSeconds": "1"}, watch=True
        ),
    ],
    "watch-a-single-object": [
        Step("POST", COLLECTION, rollout(), keep="created"),
        patch({"metadata": {"labels": {"a": "b"}}}),
        Step(
            "GET",
            COLLECTION,
            params={
                "resourceVersion": "{rv:created}",
                "fieldSelector": "metadata.name={name}",
                "timeoutSeconds": "1",
            },
            watch=True,
        ),
    ],
    "watch-from-a-too-old-resource-version-is-410-expired": [
        Step("GET", COLLECTION, params={"resourceVersion": "1", "timeoutSeconds": "1"}, watch=True),
    ],
    # -- bad input -----------------------------------------------------------------------------
    # Malformed JSON: the same code, reason and details; the parser's wording is Go's or Python's.
    "malformed-json-create": [Step("POST", COLLECTION, '{"apiVersion": ', compare="status")],
    "malformed-json-merge-patch": [create(), Step("PATCH", OBJECT, "{not json", MERGE, compare="status")],
    "unknown-field-strict-create-is-400": [create(TYPO, fieldValidation="Strict")],
    "unknown-field-warn-create-warns": [create(TYPO, fieldValidation="Warn")],
    "unknown-field-by-default-warns": [create(TYPO)],
    "unknown-field-ignore-is-silent": [create(TYPO, fieldValidation="Ignore")],
    "unknown-metadata-field-warns": [create({**rollout(), "metadata": {"name": "{name}", "bogus": 1}})],
    "unknown-field-strict-merge-patch": [
        create(),
        patch({"spec": {"pasued": True}}, fieldValidation="Strict"),
    ],
    "unknown-field-warn-merge-patch": [create(), patch({"spec": {"pasued": True}}, fieldValidation="Warn")],
    "unknown-fields-in-a-status-write-warn-for-spec-and-status": [
        create(),
        patch({"spec": {"pasued": True}, "status": {"bogus": 1}}, path=STATUS),
        patch({"spec": {"pasued": True}, "status": {"bogus": 1}}, path=STATUS, fieldValidation="Strict"),
    ],
    "duplicate-field-in-a-merge-patch-warns": [
        create(),
        Step("PATCH", OBJECT, '{"spec": {"alias": "a", "alias": "b"}}', MERGE),
    ],
    "unknown-field-strict-put": [
        Step("POST", COLLECTION, rollout(), keep="created"),
        put(with_metadata(TYPO, resourceVersion="{rv:created}"), fieldValidation="Strict"),
    ],
    # kube-apiserver cannot type an applied object with an undeclared field: 500, whatever the
    # directive says.
    "unknown-field-strict-apply": [
        patch(
            APPLIED % "2" + "  pasued: true\n", APPLY, fieldManager="differential", fieldValidation="Strict"
        )
    ],
    "duplicate-field-strict-create": [
        Step(
            "POST",
            COLLECTION,
            json.dumps(rollout()).replace('"alias": "live"', '"alias": "live", "alias": "dead"'),
            params={"fieldValidation": "Strict"},
        )
    ],
    "duplicate-and-unknown-fields-warn-create": [
        Step(
            "POST",
            COLLECTION,
            json.dumps(rollout(pasued=True)).replace('"alias": "live"', '"alias": "live", "alias": "dead"'),
        )
    ],
    "an-unsupported-field-validation-value": [create(fieldValidation="Loud")],
    "wrong-type-is-422": [create(rollout(version=42))],
    "schema-pattern-violation-is-422": [create(rollout(version="$LATEST"))],
    "missing-required-fields-are-422": [
        create({**rollout(), "spec": {"functionName": "checkout-api", "strategy": {"allAtOnce": {}}}})
    ],
    "cel-rule-violation-is-422": [create(rollout(strategy={"allAtOnce": {}, "preset": "AllAtOnce"}))],
    "cel-rule-violation-on-update": [
        create(),
        patch({"spec": {"strategy": {"allAtOnce": {}}}}),
    ],
    "invalid-name-is-422": [create(with_metadata(rollout(), name="Not_A_Name"))],
    # -- tables for kubectl get ----------------------------------------------------------------
    "table-of-a-list": [
        create(),
        patch({"status": {"phase": "Progressing", "canaryWeight": 10, "step": "1/2"}}, path=STATUS),
        Step("GET", COLLECTION, accept=TABLE, params={"fieldSelector": "metadata.name={name}"}),
    ],
    "table-of-one-object": [create(), Step("GET", OBJECT, accept=TABLE)],
    "table-without-objects": [
        create(),
        Step(
            "GET",
            COLLECTION,
            accept=TABLE,
            params={"includeObject": "None", "fieldSelector": "metadata.name={name}"},
        ),
    ],
    # -- discovery -----------------------------------------------------------------------------
    "discovery-of-the-group-version": [Step("GET", f"/apis/{GROUP_VERSION}")],
    "discovery-of-the-group": [Step("GET", "/apis/lambda.rollouts.dev")],
}


# --------------------------------------------------------------------------------------------
# Running a case against one server.


@dataclasses.dataclass
class Target:
    """One API server: its base URL and a session that reaches it as the admin."""

    name: str
    url: str
    session: requests.Session
    kubeconfig: Path
    # Requests the server answered 500 to because the real one does too (path and query).
    expected_errors: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Outcome:
    code: int
    warnings: list[str]
    body: Any
    path: str  # with the query, as sent


def _fill(value: Any, names: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{(ns|name|rv:[a-z]+)\}", lambda m: names[m[1]], value)
    if isinstance(value, dict):
        return {_fill(k, names): _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _warnings(response: requests.Response) -> list[str]:
    # ``Warning: 299 - "text"`` headers, possibly folded into one comma-separated header.
    raw = response.raw.headers.getlist("Warning") if response.raw is not None else []
    found: list[str] = []
    for header in raw:
        found += [json.loads(text) for text in re.findall(r'299 - ("(?:[^"\\]|\\.)*")', header)]
    return found


def run_case(target: Target, steps: Sequence[Step], names: dict[str, str]) -> list[Outcome]:
    outcomes = []
    for step in steps:
        body = _fill(step.body, names)
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        params = _fill(dict(step.params), names)
        if step.watch:
            params["watch"] = "true"
        response = target.session.request(
            step.method,
            target.url + _fill(step.path, names),
            data=data,
            params=params,
            headers={"Content-Type": step.content_type, "Accept": step.accept},
            timeout=30,
            stream=step.watch,
        )
        if step.watch:
            payload: Any = [json.loads(line) for line in response.iter_lines() if line.strip()]
        else:
            payload = response.json() if response.content else None
        if step.keep is not None:
            names[f"rv:{step.keep}"] = payload["metadata"]["resourceVersion"]
        path = response.request.path_url
        outcomes.append(Outcome(response.status_code, _warnings(response), payload, path))
    return outcomes


# --------------------------------------------------------------------------------------------
# What legitimately differs between two servers.


class Normaliser:
    """Replaces what differs between servers by placeholders, keeping what must be equal."""

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}

    def version(self, value: str) -> str:
        # Objects' versions become ordinals in order of appearance: equal stays equal.
        return self._versions.setdefault(value, f"<rv{len(self._versions) + 1}>")

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        result = {key: self(item) for key, item in value.items()}
        kind = str(result.get("kind", ""))
        metadata = result.get("metadata")
        if isinstance(metadata, dict):
            listed = kind.endswith("List") or kind in {"Table", "Status"} or "name" not in metadata
            self._metadata(metadata, listed=listed)
        if kind == "Table":
            self._table(result)
        if kind == "Status":
            self._status(result)
        return result

    def _metadata(self, metadata: JsonDict, *, listed: bool) -> None:
        metadata.pop("managedFields", None)
        for key in ("uid", "creationTimestamp", "deletionTimestamp"):
            if key in metadata:
                metadata[key] = f"<{key}>"
        if "resourceVersion" in metadata:
            rv = str(metadata["resourceVersion"])
            metadata["resourceVersion"] = "<rv>" if listed else self.version(rv)
        if metadata.get("generateName") and "name" in metadata:
            metadata["name"] = metadata["generateName"] + "<suffix>"

    @staticmethod
    def _table(table: JsonDict) -> None:
        dates = [i for i, c in enumerate(table.get("columnDefinitions") or []) if c.get("type") == "date"]
        for row in table.get("rows") or []:
            for index in dates:
                if index < len(row["cells"]) and row["cells"][index] is not None:
                    row["cells"][index] = "<age>"

    @staticmethod
    def _status(status: JsonDict) -> None:
        message = status.get("message")
        if isinstance(message, str):
            message = re.sub(r"too old resource version: \d+ \(\d+\)", "too old resource version", message)
            status["message"] = _PATCHED_OBJECT.sub(r"\1<the patched object>\2", message)
        details = status.get("details")
        if isinstance(details, dict) and "uid" in details:
            details["uid"] = "<uid>"
        for cause in (details or {}).get("causes") or []:
            if cause.get("field") == "patch":
                # The patched object as the server encodes it: with its managedFields and times.
                cause["message"] = _PATCHED_OBJECT.sub(r"\1<the patched object>\2", cause["message"])


def comparable(outcomes: Sequence[Outcome], steps: Sequence[Step]) -> list[JsonDict]:
    normalise = Normaliser()
    result = []
    for outcome, step in zip(outcomes, steps, strict=True):
        body = normalise(outcome.body)
        if step.compare == "status" and isinstance(body, dict):
            body = {key: value for key, value in body.items() if key != "message"}
        compared: JsonDict = {"code": outcome.code, "body": body}
        if step.compare == "all":
            compared["warnings"] = outcome.warnings
        result.append(compared)
    return result


# --------------------------------------------------------------------------------------------
# The two servers.


@pytest.fixture(scope="module")
def namespace_name() -> str:
    return unique("diff")


@pytest.fixture(scope="module")
def sandbox(namespace_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    kubeconfig = tmp_path_factory.mktemp("sandbox") / "kubeconfig"
    threaded = start_in_thread([build_crd()], kubeconfig_path=kubeconfig)
    with threaded, requests.Session() as session:
        session.trust_env = False
        target = Target("sandbox", threaded.url, session, kubeconfig)
        _create_namespace(target, namespace_name)
        yield target
        failures = [
            r for r in threaded.emulator.served if r.status >= 500 and r.path not in target.expected_errors
        ]
        assert not failures, failures


@pytest.fixture(scope="module")
def real(apiserver: ApiServer, namespace_name: str) -> Iterator[Target]:
    with apiserver.session() as session:
        target = Target("kube-apiserver", apiserver.url, session, apiserver.admin_kubeconfig)
        _create_namespace(target, namespace_name)
        yield target
        _delete_rollouts(target, namespace_name)


def _create_namespace(target: Target, name: str) -> None:
    response = target.session.post(
        f"{target.url}/api/v1/namespaces", json={"metadata": {"name": name}}, timeout=10
    )
    assert response.status_code == 201, response.text


def _delete_rollouts(target: Target, namespace: str) -> None:
    """Nothing is garbage-collected on this tier: the module's rollouts go, finalizers first."""
    base = f"{target.url}/apis/{GROUP_VERSION}/namespaces/{namespace}/lambdarollouts"
    for item in target.session.get(base, timeout=10).json().get("items", []):
        url = f"{base}/{item['metadata']['name']}"
        if item["metadata"].get("finalizers"):
            target.session.patch(
                url,
                data=json.dumps({"metadata": {"finalizers": None}}),
                headers={"Content-Type": MERGE},
                timeout=10,
            )
        target.session.delete(url, timeout=10)


def _case_name(case: str) -> str:
    # Object names are the same on both servers, so that messages quoting them compare.
    return f"d-{case}"[:63].rstrip("-")


@pytest.mark.parametrize("case", list(CASES))
def test_same_answers(case: str, sandbox: Target, real: Target, namespace_name: str) -> None:
    steps = CASES[case]
    names = {"ns": namespace_name, "name": _case_name(case)}
    real_outcomes = run_case(real, steps, dict(names))
    sandbox_outcomes = run_case(sandbox, steps, dict(names))
    sandbox.expected_errors.update(
        mine.path for mine, theirs in zip(sandbox_outcomes, real_outcomes, strict=True) if theirs.code >= 500
    )
    expected, actual = comparable(real_outcomes, steps), comparable(sandbox_outcomes, steps)
    assert actual == expected, _diff(expected, actual)


def _diff(expected: list[JsonDict], actual: list[JsonDict]) -> str:
    """A unified diff of the two answers as indented JSON: what the sandbox says differently."""
    lines = difflib.unified_diff(
        json.dumps(expected, indent=1, sort_keys=True).splitlines(),
        json.dumps(actual, indent=1, sort_keys=True).splitlines(),
        "kube-apiserver",
        "sandbox",
        lineterm="",
        n=6,
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# OpenAPI, /version and discovery.

CRD_GROUP_VERSIONS = ("apis/lambda.rollouts.dev/v1alpha1", "apis/kopf.dev/v1")


def _get(target: Target, path: str, **headers: str) -> requests.Response:
    return target.session.get(target.url + path, headers=headers, timeout=30, allow_redirects=False)


def test_openapi_v3_documents_are_the_servers(sandbox: Target, real: Target) -> None:
    """The index links each group/version by the SHA-512 of its document; the documents match."""
    indexes = {t.name: _get(t, "/openapi/v3").json()["paths"] for t in (real, sandbox)}
    for key in (*CRD_GROUP_VERSIONS, "api/v1"):
        assert key in indexes["sandbox"], sorted(indexes["sandbox"])
        assert key in indexes["kube-apiserver"]
    documents = {}
    for target in (real, sandbox):
        for key in CRD_GROUP_VERSIONS:
            url = indexes[target.name][key]["serverRelativeURL"]
            response = _get(target, url)
            assert response.status_code == 200
            assert url.endswith("hash=" + hashlib.sha512(response.content).hexdigest().upper())
            assert response.headers["Cache-Control"] == "public, immutable"
            assert response.headers["ETag"] == f'"{url.rpartition("=")[2]}"'
            documents[target.name, key] = response.json()
    for key in CRD_GROUP_VERSIONS:
        expected, actual = documents["kube-apiserver", key], documents["sandbox", key]
        assert actual == expected, _diff([expected], [actual])


def test_openapi_v3_caching_answers(sandbox: Target, real: Target) -> None:
    """A stale hash is redirected to the current one; a matching ETag is 304; no hash, no-cache."""
    answers = {}
    for target in (real, sandbox):
        path = "/openapi/v3/" + CRD_GROUP_VERSIONS[0]
        current = _get(target, path)
        etag = current.headers["ETag"]
        stale = _get(target, path + "?hash=0123")
        cached = _get(target, f"{path}?hash={etag.strip(chr(34))}", **{"If-None-Match": etag})
        missing = _get(target, "/openapi/v3/apis/no.such.group/v1")
        answers[target.name] = [
            (current.status_code, current.headers["Cache-Control"]),
            (stale.status_code, stale.headers["Location"] == f"{path}?hash={etag.strip(chr(34))}"),
            (cached.status_code, cached.headers["Cache-Control"]),
            (missing.status_code,),
        ]
    assert answers["sandbox"] == answers["kube-apiserver"]


def _v2_paths(document: JsonDict) -> JsonDict:
    """The CRDs' paths of a swagger document, with shared parameters resolved (as the server
    serves them aggregated, by reference)."""
    shared = document.get("parameters", {})

    def resolve(parameter: JsonDict) -> JsonDict:
        return dict(shared[parameter["$ref"].rpartition("/")[2]]) if "$ref" in parameter else parameter

    paths = {}
    for path, item in document["paths"].items():
        if not path.startswith(tuple("/" + key for key in CRD_GROUP_VERSIONS)):
            continue
        paths[path] = {
            method: [resolve(p) for p in value]
            if method == "parameters"
            else {**value, "parameters": [resolve(p) for p in value.get("parameters", [])]}
            for method, value in item.items()
        }
    return paths


def test_openapi_v2_paths_and_definitions_are_the_servers(sandbox: Target, real: Target) -> None:
    documents = {t.name: _get(t, "/openapi/v2", Accept="application/json").json() for t in (real, sandbox)}
    expected, actual = documents["kube-apiserver"], documents["sandbox"]
    assert _v2_paths(actual) == _v2_paths(expected), _diff([_v2_paths(expected)], [_v2_paths(actual)])
    for name, definition in actual["definitions"].items():
        reference = dict(expected["definitions"][name])
        if name.endswith(".DeleteOptions"):
            # Its x-kubernetes-group-version-kind lists every group the server serves.
            reference.pop("x-kubernetes-group-version-kind")
            definition = {k: v for k, v in definition.items() if k != "x-kubernetes-group-version-kind"}
        if name.startswith("io.k8s.api."):
            continue  # the sandbox's built-in kinds are placeholders (no fields)
        assert definition == reference, _diff([reference], [definition])


def test_openapi_v2_in_protobuf_is_refused_by_the_sandbox(sandbox: Target, real: Target) -> None:
    """A known difference: kubectl asks for v2 in protobuf only; the sandbox serves JSON only."""
    protobuf = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    assert _get(real, "/openapi/v2", Accept=protobuf).status_code == 200
    assert _get(sandbox, "/openapi/v2", Accept=protobuf).status_code == 406


def test_version_has_the_servers_fields_and_the_bundled_kubectls_version(
    sandbox: Target, real: Target
) -> None:
    expected, actual = _get(real, "/version").json(), _get(sandbox, "/version").json()
    assert list(actual) == list(expected)
    client = json.loads(_kubectl(sandbox, "version", "--client", "-o", "json").stdout)["clientVersion"]
    assert (actual["major"], actual["minor"]) == (client["major"], client["minor"])
    assert actual["gitVersion"].startswith(client["gitVersion"])


def test_discovery_lists_the_group_as_the_server_does(sandbox: Target, real: Target) -> None:
    answers = {}
    for target in (real, sandbox):
        groups = _get(target, "/apis").json()
        answers[target.name] = [
            g for g in groups["groups"] if g["name"] in {"lambda.rollouts.dev", "kopf.dev"}
        ]
        assert groups["kind"] == "APIGroupList"
        assert _get(target, "/api").json()["versions"] == ["v1"]
    assert answers["sandbox"] == answers["kube-apiserver"]


# --------------------------------------------------------------------------------------------
# kubectl against both: default (strict, server-side) validation, explain.


def _kubectl(target: Target, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = clean_environment({"KUBECONFIG": str(target.kubeconfig)})
    # kubectl caches discovery and OpenAPI per server under $HOME: one home per server.
    environment["HOME"] = str(target.kubeconfig.parent)
    return subprocess.run(
        [KUBECTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _both(sandbox: Target, real: Target, *args: str, stdin: str | None = None) -> tuple[str, ...]:
    """kubectl's exit code and output from each server, normalised; they must be equal."""
    answers = []
    for target in (real, sandbox):
        done = _kubectl(target, *args, stdin=stdin)
        text = f"exit {done.returncode}\n{done.stdout}{done.stderr}"
        answers.append(_PATCHED_OBJECT.sub(r"\1<the patched object>\2", text.replace('\\"', '"')))
    return tuple(answers)


def test_kubectl_explain_reads_the_same_schema(sandbox: Target, real: Target) -> None:
    for field in ("lambdarollouts.spec", "lro.spec.strategy.canary.steps", "lambdarollouts.metadata.labels"):
        expected, actual = _both(sandbox, real, "explain", field)
        assert actual == expected
        assert expected.startswith("exit 0\n")


def test_kubectl_apply_validates_on_the_server_and_reports_typos(
    sandbox: Target, real: Target, namespace_name: str
) -> None:
    manifest = EXAMPLE.read_text().replace("namespace: default", f"namespace: {namespace_name}")
    name = f"name: {_case_name('kubectl-apply')}"
    manifest = manifest.replace("name: checkout-api\n", name + "\n", 1)
    typo = manifest.replace('version: "2"', 'version: "2"\n  pasued: true')
    steps = [
        (typo, "a typo'd field fails the create"),
        (manifest, "the example applies"),
        (manifest, "unchanged"),
        (typo.replace('"2"', '"3"'), "a typo'd field fails the patch"),
    ]
    answers = []
    for document, what in steps:
        expected, actual = _both(sandbox, real, "apply", "-f", "-", stdin=document)
        assert actual == expected, what
        answers.append(expected)
    created, configured = answers[1].splitlines(), answers[2].splitlines()
    assert created == ["exit 0", f"lambdarollout.lambda.rollouts.dev/{_case_name('kubectl-apply')} created"]
    assert configured[-1].endswith(" unchanged")
    for failed in (answers[0], answers[3]):
        assert failed.startswith("exit 1")
        assert failed.endswith('strict decoding error: unknown field "spec.pasued"\n')
