"""The operator-wide default notifications: LAMBDA_ROLLOUTS_NOTIFICATIONS (JSON) or
LAMBDA_ROLLOUTS_NOTIFICATIONS_FILE (YAML or JSON, e.g. a ConfigMap), whose Secrets live where each
names, else in the operator's own namespace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lambda_rollouts import settings as settings_module
from lambda_rollouts.model import Reason
from lambda_rollouts.settings import Settings, describe_invalid_settings

SLACK = {"events": ["RolledBack"], "slack": {"webhookSecretRef": {"name": "ops", "key": "url"}}}
PLACED_WEBHOOK = {
    "events": ["Succeeded"],
    "webhook": {
        "url": "https://audit.example.com/x",
        "secretRef": {"name": "sign", "key": "k", "namespace": "audit"},
    },
}


@pytest.fixture
def own_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "namespace"
    monkeypatch.setattr(settings_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", str(path))
    return path


def refs(settings: Settings) -> list[tuple[str | None, str, str]]:
    return [
        (ref.namespace, ref.name, ref.key) for item in settings.notifications for ref in item.secret_refs()
    ]


def test_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch, own_namespace: Path) -> None:
    own_namespace.write_text("lambda-rollouts\n")
    monkeypatch.setenv("LAMBDA_ROLLOUTS_NOTIFICATIONS", json.dumps([SLACK, PLACED_WEBHOOK]))
    settings = Settings()
    assert [item.events for item in settings.notifications] == [[Reason.ROLLED_BACK], [Reason.SUCCEEDED]]
    # Without a namespace, the operator's own; with one, that one.
    assert refs(settings) == [("lambda-rollouts", "ops", "url"), ("audit", "sign", "k")]


def test_from_a_yaml_file(tmp_path: Path, own_namespace: Path) -> None:
    own_namespace.write_text("platform")
    path = tmp_path / "notifications.yaml"
    path.write_text(
        "- events: [RolledBack]\n"
        "  teams: {webhookSecretRef: {name: teams, key: url}}\n"
        "- events: [Aborted, Succeeded]\n"
        "  webhook: {url: 'https://ci.example.com/hooks'}\n"
    )
    settings = Settings(notifications_file=str(path))
    assert [item.channel.value for item in settings.notifications] == ["teams", "webhook"]
    assert refs(settings) == [("platform", "teams", "url")]


def test_no_default_notifications_need_no_namespace(own_namespace: Path) -> None:
    assert Settings().notifications == []
    assert refs(Settings(notifications=[PLACED_WEBHOOK])) == [("audit", "sign", "k")]


def test_a_secret_without_a_namespace_outside_a_cluster_is_an_error_that_says_what_to_do(
    own_namespace: Path,
) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(notifications=[SLACK])
    assert describe_invalid_settings(raised.value) == (
        "default notifications name a Secret without a namespace, and the operator runs outside a cluster "
        "(no namespace of its own): give each secretRef a namespace"
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("events: [RolledBack]\n", "must hold a list of subscriptions"),
        ("- {events: [RolledBack]}\n", "a notification sets exactly one of webhook, slack, teams"),
        ("- [unclosed\n", "cannot read the notifications file"),
    ],
)
def test_a_bad_file_is_an_error(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "notifications.yaml"
    path.write_text(content)
    with pytest.raises(ValidationError) as raised:
        Settings(notifications_file=str(path))
    assert words in describe_invalid_settings(raised.value)


def test_a_missing_file_and_both_forms_at_once_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(notifications_file=str(tmp_path / "missing.yaml"))
    assert "cannot read the notifications file" in describe_invalid_settings(raised.value)
    path = tmp_path / "notifications.yaml"
    path.write_text("[]\n")
    with pytest.raises(ValidationError) as raised:
        Settings(notifications=[PLACED_WEBHOOK], notifications_file=str(path))
    assert describe_invalid_settings(raised.value) == (
        "set LAMBDA_ROLLOUTS_NOTIFICATIONS or LAMBDA_ROLLOUTS_NOTIFICATIONS_FILE, not both"
    )
