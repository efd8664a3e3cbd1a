"""The corpus (tests/corpus) through the real API server, as users send it, and the sandbox's
validator answering exactly as the server does.

Every manifest of good.yaml and bad.yaml goes to kube-apiserver twice, as a server-side dry run
in a namespace of this module's own: as YAML through the real kubectl (one ``kubectl create
--dry-run=server`` per file, whose per-object errors are read back from its output: Go's YAML
reads the file, as kubectl, Argo CD and Flux do), and as JSON from an HTTP client, which keeps
floats floats (``10.0`` stays ``10.0``; kubectl sends ``10``). Both ask for strict field
validation, so an unknown field would be an error too.

- A good manifest is admitted both ways.
- A bad one that the CRD refuses is refused both ways with exactly the errors that
  ``lambda_rollouts.sandbox.schema`` gives for it (what ``make demo`` and the fast tiers use), in
  any order: the API server validates an object's properties in Go's random map order. Among them
  are the corpus's exact error, where it gives one, and always an error at the field it names.
- A bad one marked ``level: operator`` is admitted: only the model refuses it.

A CRD of this module's own (``gauges``) holds what the corpus no longer has since its weights
became whole numbers: an integer field that a rule reads, sent as a JSON float.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from lambda_rollouts.crd import build_crd
from lambda_rollouts.sandbox.schema import prune_object, validate_object

from ..corpus.manifests import CORPUS, ERROR, FIELD, LEVEL, load, name_of
from .apiserver import ApiServer
from .harness import rollout_url, unique

ROOT = Path(__file__).resolve().parents[2]
DRY_RUN = {"dryRun": "All", "fieldValidation": "Strict"}
CRD = build_crd()
# kubectl's words for a refused object (k8s.io/kubectl/pkg/cmd/util, checkErr): one line per object
# with the server's aggregated message when several objects were refused, else the causes alone.
REFUSED_AMONG_OTHERS = re.compile(
    r'Error from server \(Invalid\): error when creating "[^"]+": '
    r'LambdaRollout\.lambda\.rollouts\.dev "(?P<name>[^"]+)" is invalid: (?P<errors>.*)'
)
REFUSED_ALONE = re.compile(r'The LambdaRollout "(?P<name>[^"]+)" is invalid: ?(?P<error>.*)')
CAUSE = re.compile(r"\* (?P<error>.*)")
CREATED = re.compile(r"lambdarollout\.lambda\.rollouts\.dev/(?P<name>\S+)")


GOOD = load("good.yaml")
BAD = load("bad.yaml")


@dataclass(frozen=True)
class Answer:
    """The API server's answer to one create: admitted, or refused with these errors."""

    admitted: bool
    errors: tuple[str, ...] = ()
    text: str = ""

    @property
    def fields(self) -> set[str]:
        return {error.split(": ", 1)[0] for error in self.errors}


def _json_answer(response: requests.Response) -> Answer:
    if response.status_code == 201:
        return Answer(admitted=True)
    body = response.json()
    if response.status_code != 422 or body.get("reason") != "Invalid":
        raise AssertionError(f"unexpected answer {response.status_code}: {response.text[:2000]}")
    causes = body.get("details", {}).get("causes", [])
    errors = tuple(f"{cause['field']}: {cause['message']}" for cause in causes)
    return Answer(admitted=False, errors=errors, text=body["message"])


def _post_json(server: ApiServer, url: str, manifests: Sequence[dict[str, Any]]) -> dict[str, Answer]:
    """Each manifest as JSON, exactly as PyYAML read it (``10.0`` stays a float)."""
    answers = {}
    with server.session() as session:
        for manifest in manifests:
            response = session.post(
                url,
                params=DRY_RUN,
                data=json.dumps(manifest, allow_nan=False),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            answers[name_of(manifest)] = _json_answer(response)
    return answers


@pytest.fixture(scope="module")
def corpus_namespace(apiserver: ApiServer) -> Iterator[str]:
    name = unique("corpus")
    apiserver.kubectl("create", "namespace", name)
    yield name
    # Dry runs store nothing; the namespace is all there is to delete.
    apiserver.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def json_answers(apiserver: ApiServer, corpus_namespace: str) -> dict[str, Answer]:
    return _post_json(apiserver, rollout_url(apiserver, corpus_namespace), GOOD + BAD)


@pytest.fixture(scope="module")
def kubectl_answers(apiserver: ApiServer, corpus_namespace: str) -> dict[str, Answer]:
    """Each corpus file through one ``kubectl create --dry-run=server``: its answer per object."""
    answers: dict[str, Answer] = {}
    for path in (CORPUS / "good.yaml", CORPUS / "bad.yaml"):
        result = apiserver.kubectl(
            "create", "--dry-run=server", "--validate=strict", "-n", corpus_namespace,
            "-f", str(path), "-o", "name", check=False,
        )  # fmt: skip
        for line in result.stdout.splitlines():
            created = CREATED.fullmatch(line.strip())
            assert created is not None, f"kubectl printed {line!r}"
            answers[created["name"]] = Answer(admitted=True)
        answers.update(_kubectl_refusals(result.stderr))
    return answers


def _kubectl_refusals(stderr: str) -> dict[str, Answer]:
    refusals: dict[str, Answer] = {}
    alone = ""
    for line in filter(None, stderr.splitlines()):
        among_others = REFUSED_AMONG_OTHERS.fullmatch(line)
        refused = REFUSED_ALONE.fullmatch(line)
        cause = CAUSE.fullmatch(line)
        if among_others is not None:
            refusals[among_others["name"]] = Answer(admitted=False, text=among_others["errors"])
        elif refused is not None:
            alone = refused["name"]
            errors = (refused["error"],) if refused["error"] else ()
            refusals[alone] = Answer(admitted=False, errors=errors)
        elif cause is not None and alone:
            refusals[alone] = Answer(admitted=False, errors=(*refusals[alone].errors, cause["error"]))
        else:
            raise AssertionError(f"kubectl printed {line!r}")
    return refusals


def _aggregate_of(text: str, errors: Sequence[str]) -> bool:
    """Whether ``text`` is Go's aggregate of ``errors`` (deduplicated) in some order: ``e`` alone,
    else ``[e1, e2, ...]``."""
    unique_errors = list(dict.fromkeys(errors))
    if len(unique_errors) == 1:
        return text == unique_errors[0]
    if not (text.startswith("[") and text.endswith("]")):
        return False
    return _consumes(text[1:-1], unique_errors)


def _consumes(text: str, errors: list[str]) -> bool:
    if not errors:
        return text == ""
    for index, error in enumerate(errors):
        rest = errors[:index] + errors[index + 1 :]
        if text == error and not rest:
            return True
        if text.startswith(error + ", ") and _consumes(text[len(error) + 2 :], rest):
            return True
    return False


def _expected(manifest: dict[str, Any]) -> list[str]:
    """The sandbox's errors for a create of ``manifest``: pruned and defaulted, then validated."""
    return validate_object(CRD, prune_object(CRD, manifest))


@pytest.mark.parametrize("manifest", GOOD, ids=name_of)
def test_good_manifest_is_admitted(
    manifest: dict[str, Any], json_answers: dict[str, Answer], kubectl_answers: dict[str, Answer]
) -> None:
    name = name_of(manifest)
    assert json_answers[name] == Answer(admitted=True), json_answers[name]
    assert kubectl_answers[name] == Answer(admitted=True), kubectl_answers[name]


@pytest.mark.parametrize("manifest", BAD, ids=name_of)
def test_bad_manifest_is_refused_as_the_sandbox_refuses_it(
    manifest: dict[str, Any], json_answers: dict[str, Answer], kubectl_answers: dict[str, Answer]
) -> None:
    name = name_of(manifest)
    annotations: dict[str, str] = manifest["metadata"]["annotations"]
    expected = _expected(manifest)
    if annotations.get(LEVEL) == "operator":
        assert expected == []
        assert json_answers[name] == Answer(admitted=True), json_answers[name]
        assert kubectl_answers[name] == Answer(admitted=True), kubectl_answers[name]
        return
    answer = json_answers[name]
    assert not answer.admitted
    assert sorted(answer.errors) == sorted(expected)
    assert annotations[FIELD] in answer.fields
    if ERROR in annotations:
        assert annotations[ERROR] in answer.errors
    by_kubectl = kubectl_answers[name]
    assert not by_kubectl.admitted
    if by_kubectl.errors:
        assert sorted(by_kubectl.errors) == sorted(dict.fromkeys(expected)), by_kubectl.errors
    else:
        assert _aggregate_of(by_kubectl.text, expected), (by_kubectl.text, expected)


def test_every_corpus_manifest_was_answered(
    json_answers: dict[str, Answer], kubectl_answers: dict[str, Answer]
) -> None:
    names = {name_of(manifest) for manifest in GOOD + BAD}
    assert set(json_answers) == names
    assert set(kubectl_answers) == names


def test_kubectl_refusals_are_read_in_both_of_kubectls_forms() -> None:
    # Several objects refused: one line each; one refused: its causes, on lines of their own.
    among_others = (
        'Error from server (Invalid): error when creating "bad.yaml": LambdaRollout.lambda.rollouts.dev '
        '"a" is invalid: [spec.alias: Required value, <nil>: Invalid value: null: x]\n'
    )
    assert _kubectl_refusals(among_others * 2) == {
        "a": Answer(admitted=False, text="[spec.alias: Required value, <nil>: Invalid value: null: x]")
    }
    alone = (
        'The LambdaRollout "b" is invalid: \n* spec.alias: Required value\n* <nil>: Invalid value: null: x\n'
    )
    assert _kubectl_refusals(alone) == {
        "b": Answer(admitted=False, errors=("spec.alias: Required value", "<nil>: Invalid value: null: x"))
    }
    single = (
        'The LambdaRollout "c" is invalid: spec: Invalid value: set exactly one of version, versionFrom\n'
    )
    assert _kubectl_refusals(single) == {
        "c": Answer(admitted=False, errors=("spec: Invalid value: set exactly one of version, versionFrom",))
    }
    with pytest.raises(AssertionError, match="kubectl printed"):
        _kubectl_refusals("error: the server could not find the requested resource\n")
    assert _aggregate_of("[a, b, c]", ["c", "a", "b", "a"])
    assert not _aggregate_of("[a, b]", ["a", "b", "c"])
    assert not _aggregate_of("[a, b, c]", ["a", "b"])
    assert _aggregate_of("a, b", ["a, b"])


def test_the_json_client_sends_floats_as_floats() -> None:
    # Else the float cases would prove nothing: kubectl turns 10.0 into 10 on its way.
    [manifest] = [m for m in GOOD if name_of(m) == "canary-weight-written-as-float"]
    assert '"setWeight": 10.0' in json.dumps(manifest)


# ---------------------------------------------------------------------------------------------
# What the corpus does not hold: a rule that reads an integer field, sent a JSON float.

GAUGE_GROUP = "envtest.lambda.rollouts.dev"
GAUGE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gauges.{GAUGE_GROUP}"},
    "spec": {
        "group": GAUGE_GROUP,
        "names": {"kind": "Gauge", "listKind": "GaugeList", "plural": "gauges", "singular": "gauge"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-validations": [
                                    {"rule": "!has(self.count) || self.count <= 3 || has(self.ratio)"},
                                    {"rule": "!has(self.limit) || self.limit > 0", "message": "limit is 0"},
                                ],
                                "properties": {
                                    "count": {"type": "integer", "maximum": 5},
                                    "limit": {"type": "integer"},
                                    "ratio": {"type": "number"},
                                    "label": {
                                        "type": "string",
                                        "minLength": 2,
                                        "pattern": "^[a-z]+$",
                                        "x-kubernetes-validations": [
                                            {"rule": "self != 'none'", "message": "not that word"}
                                        ],
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}
GAUGES: dict[str, dict[str, Any]] = {
    "float-read-by-a-failing-rule": {"count": 4.0},
    "float-read-by-a-rule-that-another-operand-passes": {"count": 4.0, "ratio": 1.0},
    "integer-read-by-a-failing-rule": {"count": 4},
    "float-in-two-rules": {"count": 5.0, "limit": 0.0},
    "fraction-in-an-integer-field": {"count": 2.5},
    "rule-on-a-scalar": {"label": "none"},
    "string-with-two-failures": {"label": "A"},
}


@pytest.fixture(scope="module")
def gauge_answers(apiserver: ApiServer, corpus_namespace: str) -> Iterator[dict[str, Answer]]:
    path = Path(apiserver.workdir) / "gauges-crd.json"
    path.write_text(json.dumps(GAUGE_CRD))
    apiserver.kubectl("apply", "-f", str(path))
    try:
        apiserver.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/gauges.{GAUGE_GROUP}")
        url = f"{apiserver.url}/apis/{GAUGE_GROUP}/v1/namespaces/{corpus_namespace}/gauges"
        manifests = [
            {"apiVersion": f"{GAUGE_GROUP}/v1", "kind": "Gauge", "metadata": {"name": name}, "spec": spec}
            for name, spec in GAUGES.items()
        ]
        yield _post_json(apiserver, url, manifests)
    finally:
        apiserver.kubectl("delete", "-f", str(path), "--wait=false")


@pytest.mark.parametrize("name", list(GAUGES))
def test_the_sandbox_answers_a_gauge_as_the_server_does(name: str, gauge_answers: dict[str, Answer]) -> None:
    manifest = {"apiVersion": f"{GAUGE_GROUP}/v1", "kind": "Gauge", "metadata": {"name": name}}
    expected = validate_object(GAUGE_CRD, {**manifest, "spec": GAUGES[name]})
    assert sorted(gauge_answers[name].errors) == sorted(expected)
    assert gauge_answers[name].admitted == (expected == [])


def test_a_float_in_an_integer_field_fails_the_rules_that_read_it(gauge_answers: dict[str, Answer]) -> None:
    # The server's own words, so that the sandbox's cannot drift unnoticed with them.
    rule = "!has(self.count) || self.count <= 3 || has(self.ratio)"
    assert gauge_answers["float-read-by-a-failing-rule"].errors == (
        f'spec: Invalid value: "object": invalid data, expected int, got float64 evaluating rule: {rule}',
    )
    assert gauge_answers["float-read-by-a-rule-that-another-operand-passes"].admitted
