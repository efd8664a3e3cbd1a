"""Tenancy: which functions, roles and hooks the rollouts of each namespace may target, and which
addresses hooks may reach at all.

Contract:
- ``check_allowed(policies, namespace, spec, default_region)`` raises ``ForbiddenError`` when the
  operator's tenancy settings do not allow the rollout's own function, before any AWS call is
  made. With no tenancy settings (``None``) everything is allowed: the default for one team or a
  sandbox. With settings, a namespace uses its own policy, else the one under ``"*"``, else none
  (refused):

  - the function's name must match one of ``functions`` (shell-style patterns);
  - a function given by full ARN must live in one of ``accounts``; a plain name or a partial ARN
    without an account is the operator's own account, always allowed;
  - the region (``RolloutSpec.region_or``: ``spec.region``, else a full ARN's, else the
    operator's default) must match one of ``regions``;
  - ``spec.roleArn``, when set, must match one of ``roleArns``.

- ``check_hooks_allowed(policies, namespace, spec, default_region, rule)`` does the same for every
  hook in ``spec.hooks``, before any hook is called or any AWS call is made, with a message that
  names the hook point, the hook (as ``Hook.describe`` shows it) and the reason:

  - a hook function follows the rules of the rollout's function: its name must match
    ``functions``, its account (a full or partial ARN naming one) ``accounts``, and its region
    (its ARN's, else the rollout's) ``regions``; it is called in that region. Hooks are invoked
    with the rollout's ``roleArn``, which ``check_allowed`` checks.
  - a hook URL must match one of ``hookUrls`` (see ``settings.HookUrlPattern``: scheme, host,
    port, path prefix). A policy without ``hookUrls`` allows no URL hooks. A URL whose path has
    dot segments (``..``, also percent-encoded) is refused: where it leads is up to the server.
    Without tenancy settings, every URL passes this part.
  - always, with tenancy settings or without: the URL's host as written must pass the address
    rule, i.e. it is neither an IP address ``rule`` refuses nor a cloud metadata name. A name is
    only resolved when the hook is called: ``lambda_rollouts.webhooks`` then checks every address
    the name resolves to, and the address of every connection, with the same rule.

- ``AddressRule(allowed)``: ``refusal(address)`` says why a hook may not reach an IP address, or
  None when it may. Refused, unless a network in ``allowed`` (the operator's
  ``hook_allowed_networks``) holds the address: the ``REFUSED_NETWORKS`` (loopback, link-local,
  "this host", the cloud metadata services), IPv4 and IPv6; an IPv4-mapped IPv6 address
  (``::ffff:a.b.c.d``) is judged, and allowed, as the IPv4 address it maps. Private networks
  (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 but for the metadata addresses) are not
  refused: services in the cluster and the VPC live there, and ``hookUrls`` limits them per
  namespace. ``name_refusal(host)`` refuses the ``METADATA_NAMES`` whatever they resolve to;
  allowances are for addresses, not names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Final

from yarl import URL

from lambda_rollouts.errors import ForbiddenError
from lambda_rollouts.model import Hook, HookPoint, RolloutSpec, function_parts
from lambda_rollouts.settings import HookUrlPattern, TenantPolicy, normal_host

ANY_NAMESPACE = "*"

IPNetwork = IPv4Network | IPv6Network

# What hooks may not reach unless the operator allows it, and why.
REFUSED_NETWORKS: Final[tuple[tuple[IPNetwork, str], ...]] = (
    (ip_network("0.0.0.0/8"), "'this host' (0.0.0.0/8), which reaches the operator's own host"),
    (ip_network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (
        ip_network("169.254.0.0/16"),
        "link-local (169.254.0.0/16), where cloud metadata and credential services answer",
    ),
    (ip_network("100.100.100.200/32"), "Alibaba Cloud's metadata service"),
    (ip_network("::/128"), "the unspecified address (::), which reaches the operator's own host"),
    (ip_network("::1/128"), "loopback (::1)"),
    (ip_network("fe80::/10"), "link-local (fe80::/10)"),
    (ip_network("fd00:ec2::254/128"), "the EC2 instance metadata service"),
    (ip_network("fd00:ec2::23/128"), "the EKS Pod Identity agent"),
)
# Names of cloud metadata services. A bare "metadata" is left to the address check: in a cluster it
# may well be someone's Service.
METADATA_NAMES: Final = frozenset(
    {"metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)


@dataclass(frozen=True)
class AddressRule:
    """Which addresses hooks (or ``who`` else calls out) may reach; see the module docstring."""

    allowed: tuple[IPNetwork, ...] = ()
    # Who is refused, in the messages: "hooks", "notifications".
    who: str = "hooks"

    @classmethod
    def allowing(cls, networks: Iterable[IPNetwork], who: str = "hooks") -> AddressRule:
        return cls(tuple(networks), who)

    def refused_as(self, address: str) -> str | None:
        """What ``address`` (an IP address as text) is, when hooks may not reach it, else None."""
        try:
            parsed: IPv4Address | IPv6Address = ip_address(address)
        except ValueError:
            return "not an IP address"
        judged = parsed.ipv4_mapped if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped else parsed
        if any(judged in network for network in self.allowed):
            return None
        return next((what for network, what in REFUSED_NETWORKS if judged in network), None)

    def refusal(self, address: str, *, name: str | None = None) -> str | None:
        """Why a hook may not connect to ``address`` (resolved from ``name``, if given), or None."""
        what = self.refused_as(address)
        if what is None:
            return None
        subject = f"{name} resolves to {address}, which is" if name else f"{address} is"
        return (
            f"{subject} {what}; {self.who} may not reach it unless the operator's "
            "LAMBDA_ROLLOUTS_HOOK_ALLOWED_NETWORKS allows it"
        )

    def name_refusal(self, host: str) -> str | None:
        """Why a hook may not call a host by this name, or None."""
        if host.lower().rstrip(".") in METADATA_NAMES:
            return f"{host} is the name of a cloud metadata service, which {self.who} may not reach"
        return None

    def host_refusal(self, host: str) -> str | None:
        """``refusal`` for an IP address, ``name_refusal`` for a name."""
        try:
            ip_address(host)
        except ValueError:
            return self.name_refusal(host)
        return self.refusal(host)


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def _allowed(patterns: list[str]) -> str:
    return ", ".join(patterns) or "none"


def _policy(policies: Mapping[str, TenantPolicy], namespace: str) -> TenantPolicy:
    policy = policies.get(namespace) or policies.get(ANY_NAMESPACE)
    if policy is None:
        raise ForbiddenError(
            f"namespace {namespace} may not target any Lambda function (no tenancy policy for it)"
        )
    return policy


def check_allowed(
    policies: Mapping[str, TenantPolicy] | None, namespace: str, spec: RolloutSpec, default_region: str
) -> None:
    if policies is None:
        return
    policy = _policy(policies, namespace)
    where = f"namespace {namespace}"
    name, account, _ = function_parts(spec.function_name)
    if not _matches(name, policy.functions):
        raise ForbiddenError(
            f"{where} may not target function {name}: allowed are {_allowed(policy.functions)}"
        )
    if account is not None and not _matches(account, policy.accounts):
        raise ForbiddenError(
            f"{where} may not target account {account}: allowed are {_allowed(policy.accounts)}"
        )
    region = spec.region_or(default_region)
    if not _matches(region, policy.regions):
        raise ForbiddenError(f"{where} may not target region {region}")
    if spec.role_arn is not None and not _matches(spec.role_arn, policy.role_arns):
        raise ForbiddenError(
            f"{where} may not assume role {spec.role_arn}: allowed are {_allowed(policy.role_arns)}"
        )


def check_hooks_allowed(
    policies: Mapping[str, TenantPolicy] | None,
    namespace: str,
    spec: RolloutSpec,
    default_region: str,
    rule: AddressRule,
) -> None:
    for point in HookPoint:
        hook = spec.hook(point)
        if hook is None:
            continue
        if hook.url is not None:
            _check_url(policies, namespace, point, hook, hook.url, rule)
        elif hook.function_name is not None and policies is not None:
            region = spec.region_or(default_region)
            _check_hook_function(_policy(policies, namespace), namespace, point, hook.function_name, region)


def _check_hook_function(
    policy: TenantPolicy, namespace: str, point: HookPoint, function_name: str, rollout_region: str
) -> None:
    name, account, region = function_parts(function_name)
    refused = f"namespace {namespace} may not call the {point.value} hook function {name}"
    if not _matches(name, policy.functions):
        raise ForbiddenError(f"{refused}: allowed are {_allowed(policy.functions)}")
    if account is not None and not _matches(account, policy.accounts):
        raise ForbiddenError(f"{refused} in account {account}: allowed are {_allowed(policy.accounts)}")
    region = region or rollout_region
    if not _matches(region, policy.regions):
        raise ForbiddenError(f"{refused} in region {region}: allowed are {_allowed(policy.regions)}")


def _check_url(
    policies: Mapping[str, TenantPolicy] | None,
    namespace: str,
    point: HookPoint,
    hook: Hook,
    text: str,
    rule: AddressRule,
) -> None:
    why = url_refusal(policies, namespace, text, rule)
    if why is not None:
        raise ForbiddenError(f"the {point.value} hook ({hook.describe()}) may not be called: {why}")


def url_refusal(
    policies: Mapping[str, TenantPolicy] | None,
    namespace: str,
    text: str,
    rule: AddressRule,
    *,
    policy_applies: bool = True,
) -> str | None:
    """Why a rollout of ``namespace`` may not call out to the URL ``text``, or None: the address
    rule, then (with tenancy, unless ``policy_applies`` is False) the namespace's ``hookUrls``. The
    words never quote the URL, which may come from a Secret."""
    try:
        # Read as aiohttp reads it when it sends the request: one parser, one idea of the host.
        url = URL(text)
    except ValueError:
        return "its URL cannot be read"
    if url.scheme not in ("http", "https") or not url.host:
        return "it is not an http:// or https:// URL"
    refusal = rule.host_refusal(url.host)
    if refusal is not None:
        return refusal
    if policies is None or not policy_applies:
        return None
    policy = policies.get(namespace) or policies.get(ANY_NAMESPACE)
    if policy is None:
        return f"namespace {namespace} has no tenancy policy, so no hookUrls"
    if any(segment in (".", "..") for segment in url.path.split("/")):
        return "its path has '.' or '..' segments"
    parts = (url.scheme, normal_host(url.raw_host or ""), url.port or 0, url.path)
    if not any(HookUrlPattern.parse(pattern).admits(*parts) for pattern in policy.hook_urls):
        return f"namespace {namespace} may not call it: allowed hookUrls are {_allowed(policy.hook_urls)}"
    return None
