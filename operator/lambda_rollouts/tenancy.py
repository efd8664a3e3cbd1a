"""Tenancy: which functions and roles the rollouts of each namespace may target.

Contract: ``check_allowed(policies, namespace, spec, default_region)`` raises ``ForbiddenError``
when the operator's tenancy settings do not allow the rollout, before any AWS call is made. With
no tenancy settings (``None``) everything is allowed: the default for one team or a sandbox. With
settings, a namespace uses its own policy, else the one under ``"*"``, else none (refused):

- the function's name must match one of ``functions`` (shell-style patterns);
- a function given by full ARN must live in one of ``accounts``; a plain name or a partial ARN
  without an account is the operator's own account, always allowed;
- the region (``spec.region`` or the operator's default) must match one of ``regions``;
- ``spec.roleArn``, when set, must match one of ``roleArns``.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from lambda_rollouts.errors import ForbiddenError
from lambda_rollouts.model import RolloutSpec
from lambda_rollouts.settings import TenantPolicy

ANY_NAMESPACE = "*"


def _name_and_account(function_name: str) -> tuple[str, str | None]:
    """(plain name, account or None) from a name, a partial ARN or a full ARN."""
    parts = function_name.split(":")
    if "function" not in parts:
        return function_name, None
    at = parts.index("function")
    name = parts[at + 1] if at + 1 < len(parts) else ""
    account = parts[at - 1] if at >= 1 and parts[at - 1].isdigit() else None
    return name, account


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def check_allowed(
    policies: Mapping[str, TenantPolicy] | None, namespace: str, spec: RolloutSpec, default_region: str
) -> None:
    if policies is None:
        return
    policy = policies.get(namespace) or policies.get(ANY_NAMESPACE)
    where = f"namespace {namespace}"
    if policy is None:
        raise ForbiddenError(f"{where} may not target any Lambda function (no tenancy policy for it)")
    name, account = _name_and_account(spec.function_name)
    if not _matches(name, policy.functions):
        raise ForbiddenError(
            f"{where} may not target function {name}: allowed are {', '.join(policy.functions) or 'none'}"
        )
    if account is not None and not _matches(account, policy.accounts):
        raise ForbiddenError(
            f"{where} may not target account {account}: allowed are {', '.join(policy.accounts) or 'none'}"
        )
    region = spec.region or default_region
    if not _matches(region, policy.regions):
        raise ForbiddenError(f"{where} may not target region {region}")
    if spec.role_arn is not None and not _matches(spec.role_arn, policy.role_arns):
        allowed = ", ".join(policy.role_arns) or "none"
        raise ForbiddenError(f"{where} may not assume role {spec.role_arn}: allowed are {allowed}")
