"""Durations, strategy expansion and spec errors."""

from __future__ import annotations

import pytest

from lambda_rollouts.errors import SpecError
from lambda_rollouts.model import (
    Pause,
    RolloutSpec,
    RolloutStatus,
    SetWeight,
    Strategy,
    expand_strategy,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("2h0m10s", 7210)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "-5s", "5d", "1h 30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (45, "45s"), (192, "3m12s"), (300, "5m"), (5400, "1h30m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_expand_custom_steps() -> None:
    strategy = Strategy.model_validate(
        {
            "canary": {
                "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {}}]
            }
        }
    )
    assert expand_strategy(strategy) == [SetWeight(10), Pause(60.0), SetWeight(50), Pause(None)]


def test_expand_linear_and_all_at_once() -> None:
    linear = Strategy.model_validate({"linear": {"stepWeight": 30, "interval": "10s"}})
    assert expand_strategy(linear) == [
        SetWeight(30),
        Pause(10.0),
        SetWeight(60),
        Pause(10.0),
        SetWeight(90),
        Pause(10.0),
    ]
    assert expand_strategy(Strategy.model_validate({"allAtOnce": {}})) == []


def test_spec_error_names_every_bad_field() -> None:
    with pytest.raises(SpecError) as caught:
        RolloutSpec.parse({"functionName": "f", "alias": "live", "version": "$LATEST", "strategy": {}})
    message = caught.value.message
    assert "spec.version: String should match pattern" in message
    assert "spec.strategy: strategy must set exactly one of preset, canary, linear, allAtOnce" in message


def test_unreadable_status_starts_over() -> None:
    assert RolloutStatus.parse({"phase": "Bogus"}) == RolloutStatus()
    assert RolloutStatus.parse(None) == RolloutStatus()
