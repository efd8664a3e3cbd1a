"""The real API server tier: kube-apiserver and etcd (``make envtest``) with TLS, RBAC and a CA of
the tests' own; moto serves AWS from this process; the operator runs as ``lambda-rollouts run``.

One API server serves the whole tier (it starts in about five seconds); each test works in a
namespace of its own and on a function of its own, and deletes its rollouts while its operator
still runs (nothing is garbage-collected here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_rollouts.sandbox.aws import MotoSandbox, seed_demo_function

from .apiserver import RUNNING, ApiServer, assets_dir
from .harness import CERT_USER, REGION, SERVICE_ACCOUNT_USER, AliasWrites, OperatorProcess, Scene, unique

ROOT = Path(__file__).resolve().parents[2]
CRDS = (ROOT / "crds" / "lambdarollouts.yaml", ROOT / "deploy" / "crds" / "clusterkopfpeerings.yaml")


@pytest.fixture(scope="package")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(assets_dir(), tmp_path_factory.mktemp("envtest")).start()
    try:
        for crd in CRDS:
            server.kubectl("apply", "--server-side", "-f", str(crd))
        server.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/lambdarollouts.lambda.rollouts.dev",
            "crd/clusterkopfpeerings.kopf.dev",
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def deployed(apiserver: ApiServer) -> ApiServer:
    """``kubectl apply -k deploy/``, plus the same ClusterRole bound to a certificate user."""
    apiserver.kubectl("apply", "-k", str(ROOT / "deploy"))
    apiserver.kubectl(
        "create",
        "clusterrolebinding",
        "lambda-rollouts-cert-user",
        "--clusterrole=lambda-rollouts",
        f"--user={CERT_USER}",
    )
    for user in (CERT_USER, SERVICE_ACCOUNT_USER):
        apiserver.wait_authorized(user)
    return apiserver


@pytest.fixture(autouse=True)
def audit_log_of_the_test() -> None:
    """Each test reads the audit logs from where they stood when it began."""
    for server in RUNNING:
        server.mark_audit_log()


@pytest.fixture(scope="package")
def aws() -> Iterator[MotoSandbox]:
    with MotoSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def namespace(apiserver: ApiServer) -> str:
    name = unique("t")
    apiserver.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def function(aws: MotoSandbox) -> dict[str, str]:
    """A function of the test's own: versions 1 and 2, alias ``live`` on 1."""
    return seed_demo_function(aws.endpoint_url, REGION, name=unique("fn"))


@pytest.fixture
def alias_writes(aws: MotoSandbox) -> Iterator[AliasWrites]:
    """Every alias write that moto accepts during the test, whoever sent it."""
    with AliasWrites() as writes:
        yield writes


@pytest.fixture
def operators(
    apiserver: ApiServer, aws: MotoSandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Starts operators (``lambda-rollouts run``); every one is stopped after the test."""
    started: list[OperatorProcess] = []

    def start(kubeconfig: Path | None = None, **kwargs: Any) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        process = OperatorProcess(log, aws.endpoint_url, kubeconfig=kubeconfig, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    failed = request.node.stash.get(_FAILED, False)
    if failed:
        for process in started:
            print(f"--- {process.log_path.name}\n{process.log(200)}")


@pytest.fixture
def scene_server(deployed: ApiServer) -> ApiServer:
    """The API server of the fixture ``scene``: the tier's, with deploy/ applied (a module may
    name another)."""
    return deployed


@pytest.fixture
def scene(
    scene_server: ApiServer,
    aws: MotoSandbox,
    alias_writes: AliasWrites,
    namespace: str,
    function: dict[str, str],
    operators: Callable[..., OperatorProcess],
) -> Scene:
    """The test's namespace and function on ``scene_server``, the operators it starts there, and
    every alias write that moto accepts during the test."""
    return Scene(scene_server, aws, namespace, function["function_name"], operators, alias_writes)


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report
