"""What the operator observes of AWS, as plain immutable data.

Weights here are percents of traffic (0-100). The conversion from and to the fractions the Lambda
API speaks happens in ``lambda_rollouts.aws.weights`` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """Which alias a rollout drives, and with which region and role."""

    function_name: str
    alias: str
    region: str
    role_arn: str | None = None


@dataclass(frozen=True)
class AliasState:
    function_version: str
    # Extra versions and the percent of traffic each receives (at most one, by AWS's rules).
    routing: Mapping[str, float] = field(default_factory=dict)
    revision_id: str = ""

    def percent_on(self, version: str) -> float:
        """The percent of invocations that ``version`` serves through this alias."""
        if version in self.routing:
            return self.routing[version]
        if version == self.function_version:
            return 100.0 - sum(self.routing.values())
        return 0.0


@dataclass(frozen=True)
class VersionInfo:
    version: str
    state: str  # Pending | Active | Inactive | Failed
    last_update_status: str  # Successful | InProgress | Failed
    role: str
    dead_letter_target_arn: str | None = None
    code_sha256: str = ""
    # The version's qualified ARN (arn:aws:lambda:<region>:<account>:function:<name>:<version>).
    function_arn: str = ""
    description: str = ""
