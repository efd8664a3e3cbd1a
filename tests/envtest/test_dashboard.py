"""``kubectl lambdarollout dashboard`` on the real API server, its page in headless Chromium.

The operator runs as ``lambda-rollouts run`` under deploy/'s ClusterRole (a certificate user); the
dashboard runs as a user does, through kubectl with the admin's kubeconfig, so its reads, watches
and actions are that user's requests, as the audit log records them. The page sees the rollout
move on its own, keeps watching across an API server restart, and its buttons reach the operator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ..dashboard_page import Dashboard, Page, chromium
from .apiserver import TOKENS, ApiServer, env_with_path
from .harness import CERT_USER, Scene, audit_denials, audit_writes, unique

ADMIN = "admin"  # the common name of the admin's client certificate


def dashboard_env(kubeconfig: Path, workdir: Path) -> dict[str, str]:
    return env_with_path({"KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(workdir / "kube-cache")})


@pytest.mark.timeout(300)
def test_the_page_follows_a_rollout_across_an_api_server_restart_and_its_buttons_reach_the_operator(
    scene: Scene, tmp_path: Path
) -> None:
    deployed, namespace = scene.server, scene.namespace
    scene.start_operator()
    name = unique("checkout")
    # On its own from 10% to 50%, then held there until promoted.
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"pause": {"duration": "5s"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    dashboard = Dashboard(tmp_path, dashboard_env(deployed.admin_kubeconfig, tmp_path), "-n", namespace)
    try:
        with chromium(tmp_path / "profile") as driver:
            page = Page(driver, dashboard.url)
            page.until(
                lambda: page.text("#empty") == f"No LambdaRollouts in namespace {namespace}.", what="none"
            )

            scene.apply(scene.manifest(name, steps=steps))
            at_10 = page.card_until(namespace, name, lambda card: card["weight"] == "10", what="weight 10")
            assert at_10["current"] == ["now2. pause 5s"]
            at_50 = page.card_until(
                namespace,
                name,
                lambda card: card["phase"] == "Paused" and card["chartLastWeight"] == "50",
                what="held at 50%",
            )
            assert at_50["weight"] == "50"
            assert at_50["current"] == ["now4. pause until promoted"]
            assert at_50["chartPoints"] > at_10["chartPoints"]
            assert at_50["chartPath"] != at_10["chartPath"]
            assert {"Progressing", "WeightSet", "StepCompleted", "PausedByStep"} <= set(at_50["events"])
            assert scene.alias() == ("1", {"2": 0.5})

            # The API server goes away: the page says so, and the dashboard watches again once it is back.
            stopped_at = datetime.now(UTC)
            deployed.stop_apiserver()
            page.until(lambda: page.text('#watches p[data-stream="rollouts"]'), what="the lost watch")
            deployed.start_apiserver()
            page.until(lambda: not page.text("#watches"), timeout=90, what="the watches back")
            ready_at = datetime.now(UTC)

            for action in ("pause", "resume"):
                page.press(namespace, name, action)
                answer = page.answer(namespace, name)
                assert answer["answer"].startswith(f"Applied: {action}: "), answer
            page.press(namespace, name, "promote")
            assert page.answer(namespace, name)["answer"].startswith("Applied: promote: ")
            done = page.card_until(namespace, name, lambda card: card["phase"] == "Healthy", what="Healthy")
            assert done["weight"] == "100"
            assert done["lastAction"].startswith("Last action: promote (id dashboard-")
            page.card_until(namespace, name, lambda card: "Succeeded" in card["events"], what="Succeeded")
        assert scene.alias() == ("2", {})
    finally:
        assert dashboard.stop() == 0
        scene.kubectl("delete", "lro", name, "--timeout=60s", "--ignore-not-found")

    # The actions were the admin's own requests: one patch of the rollout per button pressed.
    patches = [write for write in audit_writes(deployed, ADMIN, namespace) if write.verb == "patch"]
    assert [(write.resource, write.name, write.code) for write in patches] == [
        ("lambdarollouts", name, 200)
    ] * 3
    # Refused only while the restarted server's authorizer had not read the RBAC objects yet.
    for user in (ADMIN, CERT_USER):
        assert audit_denials(deployed, user, except_between=(stopped_at, ready_at)) == [], user


def test_a_user_the_cluster_refuses_is_told_so(deployed: ApiServer, namespace: str) -> None:
    [token] = [token for token, (user, _, _) in TOKENS.items() if user == "nobody"]
    kubeconfig = deployed.kubeconfig_token(unique("nobody"), token)
    refused = deployed.kubectl(
        "lambdarollout", "dashboard", "-n", namespace, "--port", "0", kubeconfig=kubeconfig, check=False
    )
    assert refused.returncode == 4, refused
    assert refused.stderr.strip() == (
        "Error: kubectl: Error from server (Forbidden): lambdarollouts.lambda.rollouts.dev is forbidden: "
        'User "nobody" cannot list resource "lambdarollouts" in API group "lambda.rollouts.dev" '
        f'in the namespace "{namespace}"'
    )
    assert refused.stdout == ""
