"""Traffic weights: percent (the project's unit) <-> fraction (Lambda's unit), and alias writes.

Contract:
- The operator speaks percent (0-100) everywhere; Lambda's ``AdditionalVersionWeights`` speaks a
  fraction (0.0-1.0). ``percent_to_fraction`` and ``fraction_to_percent`` are the only conversion
  between the two in the project. Fractions are rounded to 4 decimals (a resolution of 0.01 %),
  percents to 2 decimals, so a round trip is stable: 33.333 % -> 0.3333 -> 33.33 %.
  Out-of-range, NaN or infinite values raise ``ValueError``.
- ``alias_write`` turns an ``AliasRouter.route`` request into the ``FunctionVersion`` and
  ``AdditionalVersionWeights`` of one ``UpdateAlias`` call, enforcing the rules Lambda applies
  (and that local emulators skip): published versions only, at most one extra version, the
  primary never in the map. A canary at 0 % (or no canary) clears the map; a canary at 100 % is
  written as a promotion (the canary becomes the primary, the map is empty), since Lambda refuses
  a map that holds the primary. Callers promoting should say so plainly:
  ``primary=new, canary=None``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from lambda_rollouts.errors import InvalidRequestError

LATEST = "$LATEST"
FRACTION_DECIMALS = 4
PERCENT_DECIMALS = 2

_PUBLISHED_VERSION = re.compile(r"[0-9]+")


def percent_to_fraction(percent: float) -> float:
    """0-100 percent of traffic as the 0.0-1.0 fraction Lambda expects, rounded to 4 decimals."""
    _check_range(percent, 100.0, "percent")
    return round(percent / 100.0, FRACTION_DECIMALS)


def fraction_to_percent(fraction: float) -> float:
    """A 0.0-1.0 weight read from Lambda as percent of traffic, rounded to 2 decimals."""
    _check_range(fraction, 1.0, "fraction")
    return round(fraction * 100.0, PERCENT_DECIMALS)


def routing_to_percent(weights: Mapping[str, float]) -> dict[str, float]:
    """An ``AdditionalVersionWeights`` map as read from Lambda, in percent."""
    return {version: fraction_to_percent(weight) for version, weight in weights.items()}


def is_published_version(version: str) -> bool:
    """True for a published version number; ``$LATEST``, aliases and ARNs are not."""
    return _PUBLISHED_VERSION.fullmatch(version) is not None


def require_published_version(version: str, role: str) -> None:
    if version == LATEST:
        raise InvalidRequestError(f"the {role} version must be a published version, not {LATEST}")
    if not is_published_version(version):
        raise InvalidRequestError(f"the {role} version must be a published version number, got {version!r}")


@dataclass(frozen=True)
class AliasWrite:
    """What one ``UpdateAlias`` call sends: the primary version and the fraction map."""

    function_version: str
    additional_version_weights: Mapping[str, float] = field(default_factory=dict)


def alias_write(*, primary: str, canary: str | None, canary_percent: float) -> AliasWrite:
    """The ``UpdateAlias`` payload for a route request; ``InvalidRequestError`` if Lambda would refuse it."""
    require_published_version(primary, "primary")
    if canary is None:
        return AliasWrite(function_version=primary)
    require_published_version(canary, "canary")
    if canary == primary:
        raise InvalidRequestError(
            f"version {canary} cannot be both primary and canary (already included in routing configuration)"
        )
    try:
        fraction = percent_to_fraction(canary_percent)
    except ValueError as exc:
        raise InvalidRequestError(f"canary weight out of range: {exc}") from exc
    if fraction == 0.0:
        return AliasWrite(function_version=primary)
    if fraction == 1.0:
        return AliasWrite(function_version=canary)
    return AliasWrite(function_version=primary, additional_version_weights={canary: fraction})


def _check_range(value: float, upper: float, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{unit} must be a number, got {value!r}")
    if math.isnan(value) or not 0.0 <= value <= upper:
        raise ValueError(f"{unit} must be within 0-{upper:g}, got {value!r}")
