"""Notifications on a real API server: a rollback told to a signed webhook, Slack and a default Teams
subscription, whose URLs and signing key are real Secrets read under deploy/'s ClusterRole (``get``
on ``secrets``, nothing more), by ``lambda-rollouts run``, to receivers on 127.0.0.1.

The LambdaRollout goes in as YAML through kubectl, as users write it. The Secrets' values appear in
no log line, Event or status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from lambda_rollouts.testing.receivers import Receiver

from .apiserver import ApiServer
from .harness import CERT_USER, Scene, audit_denials, audit_events, unique, wait_until, weight_is

SIGNING_KEY = "s1gning-k3y-0f-the-team"
TOKEN = "T0000/B0000/XXXXSECRETTOKENXXXX"
TEAMS_TOKEN = "workflows/XXXXTEAMSSECRETXXXX"

MANIFEST = """\
apiVersion: lambda.rollouts.dev/v1alpha1
kind: LambdaRollout
metadata:
  name: {name}
  namespace: {namespace}
spec:
  functionName: {function}
  alias: live
  version: "2"
  strategy:
    canary:
      steps:
        - setWeight: 20
        - pause: {{}}
  notifications:
    - events: [RolledBack, Succeeded]
      webhook:
        url: {webhook}
        secretRef: {{name: hook-signing, key: key}}
    - events: [RolledBack]
      slack: {{webhookSecretRef: {{name: chat, key: url}}}}
"""


def secret_gets(server: ApiServer, user: str, namespace: str) -> list[tuple[str, str]]:
    """(verb, name) of every request ``user`` made for the Secrets of ``namespace``."""
    requests = []
    for event in audit_events(server, user):
        reference = event.get("objectRef") or {}
        if (reference.get("resource"), reference.get("namespace")) == ("secrets", namespace):
            requests.append((event["verb"], reference.get("name", "")))
    return requests


def test_a_rollback_is_notified_to_a_signed_webhook_slack_and_a_default_teams_subscription(
    scene: Scene,
) -> None:
    fn, namespace = scene.function, scene.namespace
    with Receiver().in_thread() as receiver:
        secrets = {
            "hook-signing": f"--from-literal=key={SIGNING_KEY}",
            "chat": f"--from-literal=url={receiver.url('/services/' + TOKEN)}",
            "platform-teams": f"--from-literal=url={receiver.url('/' + TEAMS_TOKEN)}",
        }
        for name, literal in secrets.items():
            scene.kubectl("create", "secret", "generic", name, literal)
        default = [
            {
                "events": ["Aborted"],
                "teams": {
                    "webhookSecretRef": {"name": "platform-teams", "key": "url", "namespace": namespace}
                },
            }
        ]
        operator = scene.start_operator(
            env={
                "LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
                "LAMBDA_ROLLOUTS_NOTIFICATIONS": json.dumps(default),
            },
        )
        name = unique("checkout")
        manifest = MANIFEST.format(
            name=name, namespace=namespace, function=fn, webhook=receiver.url("/hooks")
        )
        scene.apply(manifest)
        scene.wait_for(name, weight_is(20), what="20% in status")
        assert receiver.requests == []  # nothing subscribed yet

        scene.kubectl("annotate", "lambdarollout", name, "lambda.rollouts.dev/action=abort")
        wait_until(lambda: len(receiver.delivered) == 3, timeout=60, what="three deliveries")
        scene.reached(
            name,
            lambda body: body is not None and "pendingNotifications" not in (body.get("status") or {}),
            what="the notifications cleared from status",
        )
        time.sleep(3)  # time for anything sent twice to arrive
        by_path = {received.path: received for received in receiver.requests}
        assert len(receiver.requests) == 3, [received.path for received in receiver.requests]

    assert scene.alias() == ("1", {})
    assert scene.writes() == [("1", {"2": 0.2}), ("1", {})]
    hook, slack, teams = by_path["/hooks"], by_path[f"/services/{TOKEN}"], by_path[f"/{TEAMS_TOKEN}"]
    ids = {received.headers["X-Lambda-Rollouts-Id"] for received in (hook, slack, teams)}
    assert len(ids) == 1  # one Event, one notification, three subscriptions
    sent = json.loads(hook.body)
    assert (sent["id"], sent["reason"], sent["type"], sent["phase"]) == (
        *ids,
        "Aborted",
        "Warning",
        "Degraded",
    )
    assert sent["rollout"] == {"namespace": namespace, "name": name}
    assert (sent["functionName"], sent["stableVersion"], sent["canaryVersion"], sent["canaryWeight"]) == (
        fn,
        "1",
        "2",
        0.0,
    )
    assert sent["message"] == "aborted by request; rolled back to version 1"
    # What the receiver checks: the HMAC of "<timestamp>.<body as received>" with the shared key.
    timestamp = hook.headers["X-Lambda-Rollouts-Timestamp"]
    expected = hmac.new(
        SIGNING_KEY.encode(), f"{timestamp}.".encode() + hook.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Lambda-Rollouts-Signature"], f"sha256={expected}")
    assert abs(time.time() - int(timestamp)) < 120
    assert json.loads(slack.body)["text"].startswith(f"Aborted: {namespace}/{name}: aborted by request")
    assert json.loads(teams.body)["attachments"][0]["content"]["type"] == "AdaptiveCard"

    # Under deploy/'s ClusterRole: nothing refused; Secrets read one by one, never listed or watched.
    assert audit_denials(scene.server, CERT_USER) == []
    gets = secret_gets(scene.server, CERT_USER, namespace)
    assert {verb for verb, _ in gets} == {"get"}
    assert {secret for _, secret in gets} == {"hook-signing", "chat", "platform-teams"}

    # No secret in the status, the Events or the operator's log.
    events = scene.kubectl("get", "events", "-o", "json").stdout
    shown = json.dumps(scene.read(name)) + events + operator.log(100000)
    for secret in (SIGNING_KEY, "SECRETTOKEN", "TEAMSSECRET"):
        assert secret not in shown
    scene.delete(name)
