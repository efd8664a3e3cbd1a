"""Deciding what to notify and what to send: subscriptions, ids, the pending list, the payloads, the
signature and the URL rules. All pure: no clock, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any

import pytest

from lambda_rollouts.model import (
    EventType,
    NotificationChannel,
    PendingNotification,
    Phase,
    Reason,
    RolloutSpec,
    RolloutStatus,
)
from lambda_rollouts.notifications import (
    SIGNATURE_PREFIX,
    carried,
    due,
    notification_id,
    planned_weight,
    refusal_events,
    signature,
    slack_body,
    subscriptions_of,
    teams_body,
    webhook_body,
)
from lambda_rollouts.planner import CreateAlias, Event, Plan, RouteTraffic
from lambda_rollouts.settings import DefaultNotification, TenantPolicy
from lambda_rollouts.tenancy import AddressRule, url_refusal

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ABORTED_AT = "2026-01-01T12:00:00.000000Z"
WEBHOOK = {
    "events": ["RolledBack", "Succeeded"],
    "webhook": {
        "url": "https://user:pw@ci.example.com/hooks/lambda?token=abc",
        "secretRef": {"name": "sign", "key": "k"},
    },
}
SLACK = {
    "events": ["AnalysisFailed", "PausedByStep"],
    "slack": {"webhookSecretRef": {"name": "chat", "key": "url"}},
}
TEAMS = {"events": ["Succeeded"], "teams": {"webhookSecretRef": {"name": "teams", "key": "url"}}}
DEFAULT = DefaultNotification.model_validate(
    {
        "events": ["RolledBack"],
        "slack": {"webhookSecretRef": {"name": "ops", "key": "url", "namespace": "platform"}},
    }
)


def spec(*notifications: dict[str, Any]) -> RolloutSpec:
    return RolloutSpec.parse(
        {
            "functionName": "checkout-api",
            "alias": "live",
            "version": "2",
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}},
            "notifications": list(notifications),
        }
    )


# ---------------------------------------------------------------------------------------------
# Subscriptions.


def test_subscriptions_are_the_specs_then_the_defaults_with_their_secrets_and_labels() -> None:
    found = subscriptions_of(spec(WEBHOOK, SLACK), "team-a", [DEFAULT])
    assert [(s.label, s.channel, s.url, s.secret, s.default) for s in found] == [
        (
            "notifications[0] (webhook https://ci.example.com/hooks/lambda, Secret sign/k)",
            NotificationChannel.WEBHOOK,
            WEBHOOK["webhook"]["url"],  # type: ignore[index]
            ("team-a", "sign", "k"),
            False,
        ),
        (
            "notifications[1] (slack, Secret chat/url)",
            NotificationChannel.SLACK,
            None,
            ("team-a", "chat", "url"),
            False,
        ),
        (
            "default notification 0 (slack, Secret ops/url in platform)",
            NotificationChannel.SLACK,
            None,
            ("platform", "ops", "url"),
            True,
        ),
    ]
    for subscription in found:
        assert re.fullmatch(rf"{subscription.channel.value}-[0-9a-f]{{12}}", subscription.key)
    # Labels never show a URL's credentials or query string.
    assert not any("pw" in s.label or "token" in s.label for s in found)


def test_a_subscription_keeps_its_key_wherever_it_moves_in_the_list_and_changes_it_when_edited() -> None:
    first = {s.label.split(" ", 1)[1]: s.key for s in subscriptions_of(spec(WEBHOOK, SLACK), "ns")}
    moved = {s.label.split(" ", 1)[1]: s.key for s in subscriptions_of(spec(SLACK, WEBHOOK), "ns")}
    assert first == moved
    edited = subscriptions_of(spec({**SLACK, "events": ["AnalysisFailed"]}), "ns")[0]
    assert edited.key != first["(slack, Secret chat/url)"]
    # A default never shares a key with the same subscription written in a spec.
    same = DefaultNotification.model_validate(
        {
            "events": ["RolledBack"],
            "slack": {"webhookSecretRef": {"name": "ops", "key": "url", "namespace": "ns"}},
        }
    )
    own = {"events": ["RolledBack"], "slack": {"webhookSecretRef": {"name": "ops", "key": "url"}}}
    assert (
        subscriptions_of(spec(own), "ns", [same])[0].key != subscriptions_of(spec(own), "ns", [same])[1].key
    )


def test_without_a_readable_spec_only_the_defaults_are_left() -> None:
    assert [s.label for s in subscriptions_of(None, "ns", [DEFAULT])] == [
        "default notification 0 (slack, Secret ops/url in platform)"
    ]


@pytest.mark.parametrize(
    ("events", "reason", "wanted"),
    [
        (["RolledBack"], Reason.ROLLED_BACK, True),
        # RolledBack stands for the rollbacks the rollout decides itself.
        (["RolledBack"], Reason.ANALYSIS_FAILED, True),
        (["RolledBack"], Reason.HOOK_FAILED, True),
        (["RolledBack"], Reason.PROGRESS_DEADLINE_EXCEEDED, True),
        (["RolledBack"], Reason.ABORTED, True),
        (["RolledBack"], Reason.SUCCEEDED, False),
        (["RolledBack"], Reason.FUNCTION_NOT_FOUND, False),
        (["AnalysisFailed"], Reason.ABORTED, False),
        (["AnalysisFailed"], Reason.ANALYSIS_FAILED, True),
        (["Succeeded", "PausedByStep"], Reason.PAUSED_BY_STEP, True),
    ],
)
def test_which_events_a_subscription_wants(events: list[str], reason: Reason, wanted: bool) -> None:
    (subscription,) = subscriptions_of(spec({**SLACK, "events": events}), "ns")
    assert subscription.wants(reason) is wanted


# ---------------------------------------------------------------------------------------------
# What is due.


def rolled_back(aborted_at: str = ABORTED_AT) -> Plan:
    status = RolloutStatus(
        phase=Phase.DEGRADED,
        stable_version="1",
        canary_version="2",
        canary_weight=10.0,
        aborted_at=aborted_at,
    )
    events = (
        Event(EventType.NORMAL, Reason.ACTION_APPLIED, "abort: aborted by request; rolled back to version 1"),
        Event(EventType.WARNING, Reason.ABORTED, "aborted by request; rolled back to version 1"),
    )
    return Plan(status, action=RouteTraffic("1", None, 0.0, "rev-1"), events=events)


def test_a_rollback_is_due_to_every_subscription_that_wants_it_with_what_the_payload_says() -> None:
    subscriptions = subscriptions_of(spec(WEBHOOK, SLACK, {**TEAMS, "events": ["Aborted"]}), "default")
    pending = due(
        rolled_back(), subscriptions, namespace="default", name="checkout", uid="u-1", spec=spec(), at=T0
    )
    assert [item.model_dump(by_alias=True) for item in pending] == [
        {
            "id": pending[0].id,
            "reason": "Aborted",
            "type": "Warning",
            "message": "aborted by request; rolled back to version 1",
            "at": "2026-01-01T12:00:00.000000Z",
            "functionName": "checkout-api",
            "alias": "live",
            "phase": "Degraded",
            "stableVersion": "1",
            "canaryVersion": "2",
            # The weight once the rollback write lands, not the 10% the status still shows.
            "canaryWeight": 0.0,
            # The webhook through RolledBack, Teams by name; Slack wants neither.
            "subscriptions": [subscriptions[0].key, subscriptions[2].key],
        }
    ]
    assert re.fullmatch(r"[0-9a-f]{32}", pending[0].id)


def test_nothing_is_due_without_subscriptions_or_without_a_wanted_event() -> None:
    assert due(rolled_back(), (), namespace="d", name="c", uid="", spec=spec(), at=T0) == []
    teams = subscriptions_of(spec(TEAMS), "d")
    assert due(rolled_back(), teams, namespace="d", name="c", uid="", spec=spec(), at=T0) == []


def test_a_rollback_planned_again_keeps_its_id_and_another_rollback_gets_another() -> None:
    event = Event(EventType.WARNING, Reason.ABORTED, "aborted by request; rolled back to version 1")
    resent = Event(
        EventType.WARNING, Reason.ABORTED, "sending all traffic back to version 1: aborted by request"
    )
    status = rolled_back().status
    first = notification_id("default", "checkout", "u-1", event, status, "2026-01-01T12:00:00.000000Z")
    # The same rollback, its write sent again by a later pass (or a restarted operator).
    assert (
        notification_id("default", "checkout", "u-1", resent, status, "2026-01-01T12:07:00.000000Z") == first
    )
    later = status.model_copy(update={"aborted_at": "2026-01-01T13:00:00.000000Z"})
    assert notification_id("default", "checkout", "u-1", event, later, "2026-01-01T12:00:00.000000Z") != first
    assert (
        notification_id("default", "checkout", "u-2", event, status, "2026-01-01T12:00:00.000000Z") != first
    )
    assert notification_id("default", "other", "u-1", event, status, "2026-01-01T12:00:00.000000Z") != first


def test_any_other_event_is_named_by_its_pass_and_message() -> None:
    event = Event(EventType.NORMAL, Reason.SUCCEEDED, "promoted version 2: all traffic on it")
    status = RolloutStatus(phase=Phase.HEALTHY)
    at = "2026-01-01T12:00:00.000000Z"
    same = notification_id("d", "c", "u", event, status, at)
    assert notification_id("d", "c", "u", event, status, at) == same
    assert notification_id("d", "c", "u", event, status, "2026-01-01T12:00:01.000000Z") != same
    other = Event(EventType.NORMAL, Reason.SUCCEEDED, "promoted version 3: all traffic on it")
    assert notification_id("d", "c", "u", other, status, at) != same


def test_one_event_twice_in_a_pass_is_one_notification() -> None:
    plan = rolled_back()
    twice = Plan(plan.status, action=plan.action, events=(*plan.events, plan.events[1]))
    subscriptions = subscriptions_of(spec(WEBHOOK), "d")
    assert len(due(twice, subscriptions, namespace="d", name="c", uid="", spec=spec(), at=T0)) == 1


@pytest.mark.parametrize(
    ("action", "status", "weight"),
    [
        (RouteTraffic("1", "2", 25.0, "r"), RolloutStatus(canary_version="2", canary_weight=10.0), 25.0),
        (RouteTraffic("2", None, 0.0, "r"), RolloutStatus(canary_version="2", canary_weight=50.0), 100.0),
        (RouteTraffic("1", None, 0.0, "r"), RolloutStatus(canary_version="2", canary_weight=50.0), 0.0),
        (None, RolloutStatus(canary_version="2", canary_weight=50.0), 50.0),
        (CreateAlias("2"), RolloutStatus(canary_version="2", canary_weight=100.0), 100.0),
        (None, RolloutStatus(), None),
    ],
)
def test_the_weight_a_notification_reports(action: Any, status: RolloutStatus, weight: float | None) -> None:
    assert planned_weight(Plan(status, action=action)) == weight


def pending(ident: str, *subscriptions: str) -> PendingNotification:
    return PendingNotification(id=ident, reason="Aborted", at="t", subscriptions=list(subscriptions))


@pytest.mark.parametrize(
    ("lists", "finished", "left"),
    [
        # Nothing was, nothing is.
        (([], None, []), set(), None),
        # Kept as it was; a new one added after it.
        (
            ([pending("a", "s1")], None, [pending("b", "s1", "s2")]),
            set(),
            [pending("a", "s1"), pending("b", "s1", "s2")],
        ),
        # The same notification in the old status, the new status and the pass: once, subscriptions joined.
        (
            ([pending("a", "s1")], [pending("a", "s1")], [pending("a", "s1", "s2")]),
            set(),
            [pending("a", "s1", "s2")],
        ),
        # Delivered to one subscription: the other is left; delivered to all: gone.
        (([pending("a", "s1", "s2")], None, []), {("a", "s1")}, [pending("a", "s2")]),
        (([pending("a", "s1", "s2")], None, []), {("a", "s1"), ("a", "s2")}, None),
        # A pair finished for another notification does not count for this one.
        (([pending("a", "s1")], None, []), {("b", "s1")}, [pending("a", "s1")]),
    ],
)
def test_what_a_pass_leaves_pending(
    lists: tuple[list[PendingNotification], ...], finished: set[tuple[str, str]], left: Any
) -> None:
    assert carried(*lists, finished=finished) == left


def test_at_most_fifty_are_kept_pending_the_newest() -> None:
    many = [pending(f"n{index}", "s") for index in range(60)]
    kept = carried(many)
    assert kept is not None
    assert [item.id for item in kept] == [f"n{index}" for index in range(10, 60)]


# ---------------------------------------------------------------------------------------------
# Payloads and the signature.

NOTIFICATION = PendingNotification(
    id="0123456789abcdef0123456789abcdef",
    reason="AnalysisFailed",
    type="Warning",
    message="analysis failed: error-rate was 3.5% <above> max 1% & more; rolled back to version 1",
    at="2026-01-01T12:03:00.000000Z",
    function_name="checkout-api",
    alias="live",
    phase="Degraded",
    stable_version="1",
    canary_version="2",
    canary_weight=0.0,
    subscriptions=["webhook-000000000000"],
)


def test_the_webhook_body() -> None:
    assert webhook_body(NOTIFICATION, "default", "checkout") == {
        "id": "0123456789abcdef0123456789abcdef",
        "rollout": {"namespace": "default", "name": "checkout"},
        "functionName": "checkout-api",
        "alias": "live",
        "stableVersion": "1",
        "canaryVersion": "2",
        "canaryWeight": 0.0,
        "phase": "Degraded",
        "reason": "AnalysisFailed",
        "type": "Warning",
        "message": "analysis failed: error-rate was 3.5% <above> max 1% & more; rolled back to version 1",
        "time": "2026-01-01T12:03:00.000000Z",
    }


def test_the_slack_message_escapes_what_mrkdwn_would_read() -> None:
    escaped = "analysis failed: error-rate was 3.5% &lt;above&gt; max 1% &amp; more; rolled back to version 1"
    assert slack_body(NOTIFICATION, "default", "checkout") == {
        "text": f"AnalysisFailed: default/checkout: {escaped}",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": "AnalysisFailed: default/checkout", "emoji": True},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f":warning: {escaped}"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Function*\ncheckout-api:live"},
                    {"type": "mrkdwn", "text": "*Versions*\n1 → 2"},
                    {"type": "mrkdwn", "text": "*Weight*\n0% on the new version"},
                    {"type": "mrkdwn", "text": "*Phase*\nDegraded"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"lambda-rollouts · 2026-01-01T12:03:00.000000Z · id {NOTIFICATION.id}",
                    }
                ],
            },
        ],
    }


def test_a_normal_event_in_slack_has_no_warning_and_a_long_title_is_cut() -> None:
    normal = NOTIFICATION.model_copy(update={"type": "Normal", "reason": "Succeeded", "canary_weight": None})
    body = slack_body(normal, "default", "x" * 200)
    assert body["blocks"][0]["text"]["text"] == f"Succeeded: default/{'x' * 200}"[:150]
    assert body["blocks"][1]["text"]["text"].startswith(":information_source: ")
    assert body["blocks"][2]["fields"][2] == {"type": "mrkdwn", "text": "*Weight*\n-"}


def test_the_teams_message_is_an_adaptive_card() -> None:
    assert teams_body(NOTIFICATION, "default", "checkout") == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "AnalysisFailed: default/checkout",
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": "Attention",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": NOTIFICATION.message, "wrap": True},
                        {
                            "type": "FactSet",
                            "facts": [
                                {"title": "Function", "value": "checkout-api:live"},
                                {"title": "Versions", "value": "1 → 2"},
                                {"title": "Weight", "value": "0% on the new version"},
                                {"title": "Phase", "value": "Degraded"},
                            ],
                        },
                        {
                            "type": "TextBlock",
                            "text": f"lambda-rollouts · 2026-01-01T12:03:00.000000Z · id {NOTIFICATION.id}",
                            "isSubtle": True,
                            "size": "Small",
                            "wrap": True,
                        },
                    ],
                },
            }
        ],
    }


def test_the_signature_is_the_hmac_of_the_timestamp_a_dot_and_the_body() -> None:
    key = b"s3cr3t\n"  # the Secret's value as stored, newline included
    body = json.dumps(webhook_body(NOTIFICATION, "default", "checkout")).encode()
    signed = signature(key, body, 1767268980)
    assert signed.startswith(SIGNATURE_PREFIX)
    expected = hmac.new(key, b"1767268980." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signed, "sha256=" + expected)
    # Another body, timestamp or key: another signature.
    assert signature(key, body + b" ", 1767268980) != signed
    assert signature(key, body, 1767268981) != signed
    assert signature(b"s3cr3t", body, 1767268980) != signed


# ---------------------------------------------------------------------------------------------
# Tenancy and the address rule.

SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"
POLICIES = {
    "team-a": TenantPolicy(functions=["*"], hook_urls=["https://hooks.slack.com/services/*"]),
    "team-b": TenantPolicy(functions=["*"]),
}
RULE = AddressRule(who="notifications")
LOOPBACK_ALLOWED = AddressRule.allowing([ip_network("127.0.0.0/8")])


@pytest.mark.parametrize(
    ("policies", "namespace", "url", "rule", "default", "refusal"),
    [
        (None, "any", SLACK_URL, RULE, False, None),
        (None, "any", "http://127.0.0.1:8080/hook", RULE, False, "127.0.0.1 is loopback (127.0.0.0/8)"),
        (None, "any", "http://127.0.0.1:8080/hook", LOOPBACK_ALLOWED, False, None),
        (None, "any", "http://[::1]/hook", RULE, False, "::1 is loopback (::1)"),
        (None, "any", "http://169.254.169.254/latest/meta-data", RULE, False, "link-local"),
        (None, "any", "http://metadata.google.internal/x", RULE, False, "a cloud metadata service"),
        (None, "any", "ftp://files.example.com/x", RULE, False, "it is not an http:// or https:// URL"),
        (None, "any", "not a url", RULE, False, "it is not an http:// or https:// URL"),
        (POLICIES, "team-a", SLACK_URL, RULE, False, None),
        (
            POLICIES,
            "team-a",
            "https://evil.example.com/services/x",
            RULE,
            False,
            "namespace team-a may not call it: allowed hookUrls are https://hooks.slack.com/services/*",
        ),
        (
            POLICIES,
            "team-a",
            "https://hooks.slack.com/services/..%2fadmin",
            RULE,
            False,
            "'.' or '..' segments",
        ),
        (POLICIES, "team-b", SLACK_URL, RULE, False, "allowed hookUrls are none"),
        (
            POLICIES,
            "team-c",
            SLACK_URL,
            RULE,
            False,
            "namespace team-c has no tenancy policy, so no hookUrls",
        ),
        # The operator's own defaults are not a namespace's to limit; the address rule still holds.
        (POLICIES, "team-c", "https://evil.example.com/x", RULE, True, None),
        (POLICIES, "team-c", "http://127.0.0.1/x", RULE, True, "loopback"),
    ],
)
def test_which_urls_notifications_may_reach(
    policies: dict[str, TenantPolicy] | None,
    namespace: str,
    url: str,
    rule: AddressRule,
    default: bool,
    refusal: str | None,
) -> None:
    found = url_refusal(policies, namespace, url, rule, policy_applies=not default)
    if refusal is None:
        assert found is None
    else:
        assert found is not None
        assert refusal in found
        # The words never quote the URL's path: it may come from a Secret.
        assert "SECRET" not in found
        assert "/services/" not in found.replace("services/*", "")
        assert "hooks may not" not in found


def test_a_refused_webhook_of_the_spec_is_a_warning_event_and_urls_in_secrets_wait_until_sent() -> None:
    written = spec(
        {"events": ["RolledBack"], "webhook": {"url": "http://169.254.169.254/latest?token=abc"}},
        {"events": ["RolledBack"], "webhook": {"url": "https://ci.example.com/hooks"}},
        SLACK,
    )
    events = refusal_events(subscriptions_of(written, "team-a"), POLICIES, "team-a", RULE)
    assert events == (
        Event(
            EventType.WARNING,
            Reason.NOTIFICATION_REFUSED,
            "notification notifications[0] (webhook http://169.254.169.254/latest) is refused and will not "
            "be sent: 169.254.169.254 is link-local (169.254.0.0/16), where cloud metadata and credential "
            "services answer; notifications may not reach it unless the operator's "
            "LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS allows it",
        ),
        Event(
            EventType.WARNING,
            Reason.NOTIFICATION_REFUSED,
            "notification notifications[1] (webhook https://ci.example.com/hooks) is refused and will not be "
            "sent: namespace team-a may not call it: allowed hookUrls are https://hooks.slack.com/services/*",
        ),
    )


def test_times_in_payloads_are_the_pass_time() -> None:
    later = T0 + timedelta(minutes=3)
    subscriptions = subscriptions_of(spec(WEBHOOK), "d")
    (item,) = due(rolled_back(), subscriptions, namespace="d", name="c", uid="", spec=spec(), at=later)
    assert webhook_body(item, "d", "c")["time"] == "2026-01-01T12:03:00.000000Z"
