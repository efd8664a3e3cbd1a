"""Percent <-> fraction conversion, and the shape of the UpdateAlias payload built from a route."""

from __future__ import annotations

import math

import pytest

from lambda_rollouts.aws.weights import (
    AliasWrite,
    alias_write,
    fraction_to_percent,
    is_published_version,
    percent_to_fraction,
    routing_to_percent,
)
from lambda_rollouts.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("percent", "fraction"),
    [
        (0, 0.0),
        (1, 0.01),
        (10, 0.1),
        (12.5, 0.125),
        (33.333, 0.3333),
        (0.01, 0.0001),
        (99.99, 0.9999),
        (100, 1.0),
    ],
)
def test_percent_to_fraction(percent: float, fraction: float) -> None:
    assert percent_to_fraction(percent) == fraction


@pytest.mark.parametrize(
    ("fraction", "percent"),
    [(0.0, 0.0), (0.1, 10.0), (0.05, 5.0), (0.3333, 33.33), (0.123456, 12.35), (1.0, 100.0), (0, 0.0)],
)
def test_fraction_to_percent(fraction: float, percent: float) -> None:
    assert fraction_to_percent(fraction) == percent


def test_float_noise_from_the_api_is_rounded_away() -> None:
    assert fraction_to_percent(0.1 + 0.2) == 30.0
    assert percent_to_fraction(fraction_to_percent(0.07)) == 0.07


@pytest.mark.parametrize("percent", [-0.01, 100.01, 150, math.nan, math.inf, -math.inf])
def test_percent_out_of_range(percent: float) -> None:
    with pytest.raises(ValueError, match="percent"):
        percent_to_fraction(percent)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan])
def test_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        fraction_to_percent(fraction)


def test_booleans_are_not_weights() -> None:
    with pytest.raises(ValueError, match="number"):
        percent_to_fraction(True)


def test_routing_map_in_percent() -> None:
    assert routing_to_percent({"7": 0.25}) == {"7": 25.0}
    assert routing_to_percent({}) == {}


@pytest.mark.parametrize(
    ("version", "published"), [("1", True), ("42", True), ("$LATEST", False), ("live", False), ("", False)]
)
def test_published_versions(version: str, published: bool) -> None:
    assert is_published_version(version) is published


class TestAliasWrite:
    def test_split(self) -> None:
        assert alias_write(primary="1", canary="2", canary_percent=10) == AliasWrite("1", {"2": 0.1})

    def test_no_canary_clears_the_map(self) -> None:
        assert alias_write(primary="2", canary=None, canary_percent=0) == AliasWrite("2", {})

    def test_zero_percent_clears_the_map(self) -> None:
        assert alias_write(primary="1", canary="2", canary_percent=0) == AliasWrite("1", {})

    def test_full_weight_is_a_promotion(self) -> None:
        assert alias_write(primary="1", canary="2", canary_percent=100) == AliasWrite("2", {})

    def test_canary_equal_to_primary_is_refused(self) -> None:
        with pytest.raises(InvalidRequestError, match="already included"):
            alias_write(primary="2", canary="2", canary_percent=10)

    @pytest.mark.parametrize(("primary", "canary"), [("$LATEST", "2"), ("1", "$LATEST"), ("live", None)])
    def test_unpublished_versions_are_refused(self, primary: str, canary: str | None) -> None:
        with pytest.raises(InvalidRequestError, match="published"):
            alias_write(primary=primary, canary=canary, canary_percent=10)

    @pytest.mark.parametrize("percent", [-1, 101])
    def test_weight_out_of_range_is_refused(self, percent: float) -> None:
        with pytest.raises(InvalidRequestError, match="out of range") as caught:
            alias_write(primary="1", canary="2", canary_percent=percent)
        assert isinstance(caught.value.__cause__, ValueError)
