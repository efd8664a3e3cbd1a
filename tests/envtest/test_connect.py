"""The operator connects to a real API server the ways clusters hand out credentials, and under
``deploy/``'s RBAC only: a canary goes from start to Healthy with its status written at every step
and its Events posted, and the authorizer refused the operator nothing.

(a) a kubeconfig with every certificate embedded (``*-data``: kind, EKS, GKE); (b) a kubeconfig
with file paths; (c) the ServiceAccount of ``deploy/`` with a TokenRequest token; (d) an exec
credential plugin (as ``aws eks get-token``); (e) in the cluster (the service-account files and
``KUBERNETES_SERVICE_*``), with its token rotated and the old one invalidated mid-rollout.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from .apiserver import ApiServer
from .harness import CERT_USER, SERVICE_ACCOUNT_USER, Scene, audit_denials, audit_events, run_canary, unique


def test_a_kubeconfig_with_embedded_certificates(scene: Scene) -> None:
    credential = scene.server.pki.client(CERT_USER)
    scene.start_operator(scene.server.kubeconfig_data("embedded", credential))
    run_canary(scene)
    assert audit_denials(scene.server, CERT_USER) == []


def test_b_kubeconfig_with_file_paths(scene: Scene) -> None:
    credential = scene.server.pki.client(CERT_USER)
    scene.start_operator(scene.server.kubeconfig_paths("paths", credential))
    run_canary(scene)
    assert audit_denials(scene.server, CERT_USER) == []


def test_c_the_service_account_of_deploy_under_rbac_cluster_wide_with_peering(scene: Scene) -> None:
    token = scene.server.service_account_token("lambda-rollouts", "lambda-rollouts")
    # As deploy/ runs it: cluster-wide, peering through the ClusterKopfPeering of deploy/.
    kubeconfig = scene.server.kubeconfig_token("service-account", token)
    scene.start_operator(kubeconfig, args=["--peering", "lambda-rollouts"])
    run_canary(scene)
    assert audit_denials(scene.server, SERVICE_ACCOUNT_USER) == []


def test_d_an_exec_credential_plugin(scene: Scene, tmp_path: Path) -> None:
    token = scene.server.service_account_token("lambda-rollouts", "lambda-rollouts")
    calls = tmp_path / "plugin-calls"
    plugin = tmp_path / "get-token"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": token},
    }
    plugin.write_text(f"#!/bin/sh\necho called >> {calls}\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    scene.start_operator(scene.server.kubeconfig_exec("exec", str(plugin)))
    run_canary(scene)
    assert calls.read_text().count("called") >= 1
    assert audit_denials(scene.server, SERVICE_ACCOUNT_USER) == []


def test_e_in_cluster_with_the_token_rotated_mid_rollout(scene: Scene, tmp_path: Path) -> None:
    """The kubelet's projected token, rotated: the files replaced, the old token made invalid.

    The operator runs in a mount namespace of its own in which the test's directory is mounted at
    ``/var/run/secrets/kubernetes.io/serviceaccount``, as in a pod.
    """
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("this test needs unshare(1) and root (a private mount namespace for the operator)")
    deployed = scene.server
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir()
    first_secret, second_secret = unique("token-a"), unique("token-b")
    for secret in (first_secret, second_secret):
        deployed.kubectl("create", "secret", "generic", secret, "-n", "lambda-rollouts")
    write_token_files(
        secrets,
        deployed,
        deployed.service_account_token("lambda-rollouts", "lambda-rollouts", bound_secret=first_secret),
    )
    mount_point = "/var/run/secrets/kubernetes.io/serviceaccount"
    wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f"mount -t tmpfs tmpfs /run && mkdir -p {mount_point}"
        f' && mount --bind "$0" {mount_point} && exec "$@"',
        str(secrets),
    ]
    operator = scene.start_operator(
        in_cluster=True,
        wrapper=wrapper,
        env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(deployed.port)},
    )

    old_token = (secrets / "token").read_text()

    def rotate_then_promote(name: str) -> None:
        write_token_files(
            secrets,
            deployed,
            deployed.service_account_token("lambda-rollouts", "lambda-rollouts", bound_secret=second_secret),
        )
        # The old token dies with the Secret it is bound to (once the API server's token cache,
        # 10 s, has let it go): from then on its every use is a 401.
        deployed.kubectl("delete", "secret", first_secret, "-n", "lambda-rollouts")
        wait_until_refused(deployed, old_token)
        # The operator learns of the action through its open watch, then writes with a dead token.
        promoted = scene.kubectl("lambdarollout", "promote", name, "--wait=60s", check=False)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr + operator.log()

    run_canary(scene, mid_rollout=rotate_then_promote)
    assert audit_denials(deployed, SERVICE_ACCOUNT_USER) == []
    new_token = (secrets / "token").read_text()
    assert credential_ids(deployed, SERVICE_ACCOUNT_USER) >= {token_id(old_token), token_id(new_token)}


def wait_until_refused(server: ApiServer, token: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    with server.session(token=token) as session:
        while time.monotonic() < deadline:
            if session.get(f"{server.url}/api", timeout=5).status_code == 401:
                return
            time.sleep(0.5)
    raise AssertionError(f"the old token still works after {timeout}s")


def token_id(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


def credential_ids(server: ApiServer, user: str) -> set[str]:
    """The credentials (token ids) that ``user`` was authenticated with, from the audit log."""
    ids = set()
    for event in audit_events(server, user):
        ids.update(event["user"].get("extra", {}).get("authentication.kubernetes.io/credential-id", []))
    return ids


def write_token_files(directory: Path, server: ApiServer, token: str) -> None:
    """As the kubelet does: the new files written aside, then swapped in by one rename."""
    staging = directory / ".staging"
    staging.mkdir(exist_ok=True)
    (staging / "token").write_text(token)
    (staging / "ca.crt").write_bytes(server.pki.ca_pem)
    (staging / "namespace").write_text("lambda-rollouts")
    for name in ("token", "ca.crt", "namespace"):
        os.replace(staging / name, directory / name)
