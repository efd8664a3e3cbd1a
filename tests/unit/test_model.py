"""Durations, strategy expansion, spec errors and the region of a function."""

from __future__ import annotations

from typing import Any

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
    function_parts,
    function_region,
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


@pytest.mark.parametrize(
    ("function_name", "region", "expected"),
    [
        ("checkout-api", None, "us-east-1"),
        ("checkout-api", "eu-west-1", "eu-west-1"),
        ("123456789012:function:checkout-api", None, "us-east-1"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:checkout-api", None, "eu-west-1"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:checkout-api:live", None, "eu-west-1"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:checkout-api", "eu-west-1", "eu-west-1"),
    ],
)
def test_the_region_of_a_rollout(function_name: str, region: str | None, expected: str) -> None:
    raw: dict[str, Any] = {
        "functionName": function_name,
        "alias": "live",
        "version": "2",
        "strategy": {"allAtOnce": {}},
    }
    if region is not None:
        raw["region"] = region
    assert RolloutSpec.parse(raw).region_or("us-east-1") == expected


@pytest.mark.parametrize(
    ("function_name", "parts"),
    [
        ("checkout-api", ("checkout-api", None, None)),
        ("checkout-api:live", ("checkout-api:live", None, None)),
        ("123456789012:function:checkout-api", ("checkout-api", "123456789012", None)),
        (
            "arn:aws:lambda:eu-west-1:123456789012:function:checkout-api:7",
            ("checkout-api", "123456789012", "eu-west-1"),
        ),
    ],
)
def test_function_parts(function_name: str, parts: tuple[str, str | None, str | None]) -> None:
    assert function_parts(function_name) == parts
    assert function_region(function_name, "us-east-1") == (parts[2] or "us-east-1")
