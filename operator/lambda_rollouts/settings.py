"""The operator's settings: the one place that reads the environment.

Every variable is prefixed ``LAMBDA_ROLLOUTS_``; the AWS SDK keeps reading its own standard
variables (endpoints, credentials, proxies, CA bundle, retries) through its own chain: this class
reads only ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, as the default region of rollouts that name
none.

An invalid value is reported by ``describe_invalid_settings``: the variable as it was set and the
form the setting takes (``EXPECTED``, one entry per setting), never pydantic's field names.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lambda_rollouts.model import ChatNotification, Notification, SecretKeyRef, WebhookNotification

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
EventLoop = Literal["auto", "uvloop", "asyncio"]


class TenantPolicy(BaseModel):
    """What the rollouts of one namespace may target. Every list but ``hook_urls`` holds
    shell-style patterns."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    # Matched against the function's name (the part after "function:" in an ARN).
    functions: list[str] = Field(default_factory=list)
    # Accounts a function given by full ARN may live in; the operator's own account is always
    # allowed for plain names, whose account is the operator's.
    accounts: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=lambda: ["*"])
    # Roles a rollout may ask the operator to assume (spec.roleArn).
    role_arns: list[str] = Field(default_factory=list)
    # URLs that hooks with a url may call, as HookUrlPattern entries (not shell-style); none: no
    # URL hooks at all in this namespace. Hook functions follow functions, accounts and regions.
    hook_urls: list[str] = Field(default_factory=list)

    @field_validator("hook_urls")
    @classmethod
    def _hook_urls_are_patterns(cls, value: list[str]) -> list[str]:
        for text in value:
            HookUrlPattern.parse(text)
        return value


_HOOK_URL_PATTERN: Final = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[^?#\s]*)?",
    re.IGNORECASE,
)
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def normal_host(host: str) -> str:
    """A host as hook URL patterns compare it: an IP address in its canonical text, a name in
    lower case without a trailing dot."""
    bare = host.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare.lower().rstrip(".")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HookUrlPattern:
    """One ``hookUrls`` entry: ``*`` (any http or https URL), or ``scheme://host[:port][/path]``.

    A hook URL matches when all four parts do; its credentials, query string and fragment play no
    part:
    - scheme: ``http`` or ``https``, exactly (an ``https`` entry never admits ``http``);
    - host: a name (any case, a trailing dot ignored; a non-ASCII name in its ``xn--`` form), an
      IPv4 address or an IPv6 address in brackets. ``*.example.com`` admits every name under
      ``example.com`` but not ``example.com`` itself; no other wildcard exists;
    - port: the URL's port, written or the scheme's default, must equal the entry's, and an entry
      without a port stands for its scheme's default (443 or 80) only;
    - path: a prefix of whole segments: ``/hooks``, ``/hooks/`` and ``/hooks/*`` admit ``/hooks``
      and everything under ``/hooks/``, not ``/hooksmith``; no path, or ``/*``, admits any path.
      A ``*`` anywhere else is an error.
    """

    text: str
    # None for "*": any URL.
    scheme: str | None = None
    host: str = ""
    subdomains: bool = False
    port: int = 0
    # "" admits every path.
    path_prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> HookUrlPattern:
        if text.strip() == "*":
            return cls(text=text)
        match = _HOOK_URL_PATTERN.fullmatch(text.strip())
        path = (match.group("path") or "") if match else ""
        if match is None or "*" in path.removesuffix("/*"):
            raise ValueError(
                f"hookUrls entry {text!r} is not scheme://host[:port][/path] with at most a leading "
                "'*.' in the host and a trailing '/*' in the path, or '*'"
            )
        scheme = match.group("scheme").lower()
        port = int(match.group("port") or DEFAULT_PORTS[scheme])
        if not 0 < port < 65536:
            raise ValueError(f"hookUrls entry {text!r} has port {port}, outside 1-65535")
        host = match.group("host")
        subdomains = host.startswith("*.")
        if subdomains and _is_address(host[2:].rstrip(".")):
            raise ValueError(f"hookUrls entry {text!r}: '*.' goes before a name, not an address")
        return cls(
            text=text,
            scheme=scheme,
            host=normal_host(host.removeprefix("*.")),
            subdomains=subdomains,
            port=port,
            path_prefix=path.removesuffix("*").rstrip("/"),
        )

    def admits(self, scheme: str, host: str, port: int, path: str) -> bool:
        """Whether a URL with these parts (host as ``normal_host`` gives it) matches this entry."""
        if self.scheme is None:
            return True
        if (scheme, port) != (self.scheme, self.port):
            return False
        if self.subdomains:
            if not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        prefix = self.path_prefix
        return not prefix or path == prefix or path.startswith(prefix + "/")


# Where a pod finds its own namespace (the ServiceAccount's mount); default notifications that name
# a Secret without a namespace read it from the operator's own namespace.
SERVICE_ACCOUNT_NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_NAMESPACE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class OperatorSecretKeyRef(SecretKeyRef):
    """A key of a Secret that a default notification names: in ``namespace``, else in the
    operator's own namespace (never in a rollout's)."""

    namespace: str | None = Field(default=None, min_length=1, max_length=63, pattern=_NAMESPACE_PATTERN)


class DefaultWebhookNotification(WebhookNotification):
    secret_ref: OperatorSecretKeyRef | None = None


class DefaultChatNotification(ChatNotification):
    webhook_secret_ref: OperatorSecretKeyRef


class DefaultNotification(Notification):
    """A subscription of every rollout, set by the operator's settings (``notifications``)."""

    webhook: DefaultWebhookNotification | None = None
    slack: DefaultChatNotification | None = None
    teams: DefaultChatNotification | None = None

    def secret_refs(self) -> list[OperatorSecretKeyRef]:
        refs = [self.webhook.secret_ref if self.webhook else None]
        refs += [chat.webhook_secret_ref for chat in (self.slack, self.teams) if chat is not None]
        return [ref for ref in refs if ref is not None]

    def in_namespace(self, namespace: str) -> DefaultNotification:
        """This subscription with ``namespace`` for every Secret that names none."""

        def placed(ref: OperatorSecretKeyRef | None) -> OperatorSecretKeyRef | None:
            return ref.model_copy(update={"namespace": namespace}) if ref and not ref.namespace else ref

        update: dict[str, Any] = {}
        if self.webhook is not None:
            update["webhook"] = self.webhook.model_copy(
                update={"secret_ref": placed(self.webhook.secret_ref)}
            )
        for channel in ("slack", "teams"):
            chat: DefaultChatNotification | None = getattr(self, channel)
            if chat is not None:
                update[channel] = chat.model_copy(
                    update={"webhook_secret_ref": placed(chat.webhook_secret_ref)}
                )
        return self.model_copy(update=update)


def _own_namespace() -> str | None:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE_FILE, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAMBDA_ROLLOUTS_", extra="ignore", populate_by_name=True)

    # Region used when a rollout names none. Falls back to the SDK's standard variables.
    default_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("LAMBDA_ROLLOUTS_DEFAULT_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    # Read by the Kubernetes client itself; here only to explain a login that failed.
    kubeconfig: str | None = Field(default=None, validation_alias="KUBECONFIG")
    # How often a rollout with nothing due re-reads its alias to notice outside changes.
    drift_check_interval_seconds: float = Field(default=300.0, gt=0)
    # Backoff for failed reconciles: first delay, doubled per consecutive failure, capped.
    retry_initial_delay_seconds: float = Field(default=5.0, gt=0)
    retry_max_delay_seconds: float = Field(default=300.0, gt=0)
    # Lifetime asked for assumed-role sessions; credentials are refreshed before they expire.
    assume_role_session_seconds: int = Field(default=3600, ge=900, le=43200)
    # Namespaces to watch; empty means the whole cluster.
    namespaces: list[str] = Field(default_factory=list)
    # Liveness endpoint, e.g. http://0.0.0.0:8080/healthz; empty disables it.
    liveness_endpoint: str | None = None
    # Serve Prometheus metrics at /metrics on this port; None disables them (0: any free port).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    # "json" writes one JSON object per log line, for log collectors; "text" is for people.
    log_format: LogFormat = "text"
    log_level: LogLevel = "INFO"
    # The event loop of `lambda-rollouts run`: "auto" takes uvloop when it is installed (it is a
    # dependency on Linux and macOS), else asyncio's own; "uvloop" insists on it.
    event_loop: EventLoop = "auto"

    @field_validator("liveness_endpoint")
    @classmethod
    def _liveness_is_http(cls, value: str | None) -> str | None:
        # Kopf serves plain HTTP only, and would fail only once started, with a traceback.
        if not value or not value.strip():
            return None
        if not re.fullmatch(r"http://[^/:\s]+(:\d{1,5})?(/\S*)?", value.strip()):
            raise ValueError("not an http:// URL")
        return value.strip()

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port_is_unset(cls, value: Any) -> Any:
        # A deployment template often renders an unset variable as an empty string.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("log_format", "event_loop", mode="before")
    @classmethod
    def _format_in_any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    # Kopf peering: replicas sharing this ClusterKopfPeering object elect the one that acts; the
    # others stand by, paused, and take over when it is gone (see lambda_rollouts.peering). Named
    # (a Deployment of several replicas): a replica never acts without that object. None: Kopf's
    # convention, the object "lambda-rollouts" if it exists, else standalone with a warning.
    peering_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    # True: no peering at all, for exactly one replica (or a local run without the peering CRD).
    peering_standalone: bool = False
    # The highest live priority acts. None: a random one per process, since Kopf pauses every
    # replica when two live ones share a priority. Stored by the API server as int64.
    peering_priority: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    # How long a replica's keep-alive counts; Kopf renews it 5-10 s before it runs out. A crashed
    # active replica is replaced once its last keep-alive expires, i.e. within this many seconds.
    peering_lifetime_seconds: int = Field(default=20, ge=15, le=600)

    @field_validator("peering_priority", "peering_name", mode="before")
    @classmethod
    def _empty_peering_value_is_unset(cls, value: Any) -> Any:
        # A deployment template often renders an unset variable as an empty string.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    # Which functions and roles each namespace may target (see lambda_rollouts.tenancy). None: no
    # limits, for a single team or a sandbox. JSON in LAMBDA_ROLLOUTS_TENANCY, or a YAML or JSON
    # file named by LAMBDA_ROLLOUTS_TENANCY_FILE (mounted from a ConfigMap).
    tenancy: dict[str, TenantPolicy] | None = None
    tenancy_file: str | None = None
    # Networks that hooks may reach although the address rule refuses them (loopback, link-local,
    # cloud metadata: see lambda_rollouts.tenancy.AddressRule), e.g. 127.0.0.0/8 for a hook served
    # next to the operator. CIDRs or single addresses, comma-separated or as a JSON list.
    hook_allowed_networks: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)

    @field_validator("hook_allowed_networks", mode="before")
    @classmethod
    def _networks_from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.strip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]

    @model_validator(mode="after")
    def _tenancy_from_file(self) -> Settings:
        if self.tenancy_file is None:
            return self
        if self.tenancy is not None:
            raise ValueError("set LAMBDA_ROLLOUTS_TENANCY or LAMBDA_ROLLOUTS_TENANCY_FILE, not both")
        try:
            with open(self.tenancy_file, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the tenancy file {self.tenancy_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"the tenancy file {self.tenancy_file} must map namespaces to policies")
        self.tenancy = {
            str(namespace): TenantPolicy.model_validate(policy) for namespace, policy in loaded.items()
        }
        return self

    # Subscriptions of every rollout, on top of each rollout's spec.notifications (see
    # lambda_rollouts.notifications): a JSON list in LAMBDA_ROLLOUTS_NOTIFICATIONS, or a YAML or JSON
    # file named by LAMBDA_ROLLOUTS_NOTIFICATIONS_FILE (mounted from a ConfigMap). The Secrets they
    # name live in the namespace each names, else in the operator's own.
    notifications: list[DefaultNotification] = Field(default_factory=list)
    notifications_file: str | None = None
    # The bounds of one notification's delivery: attempts, each bounded by the timeout, all of them
    # within the deadline (counted from when the notification was handed over for delivery).
    notifications_max_attempts: int = Field(default=5, ge=1, le=20)
    notifications_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    notifications_deadline_seconds: float = Field(default=300.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _notifications_from_file(self) -> Settings:
        if self.notifications_file is None:
            return self._notifications_placed()
        if self.notifications:
            raise ValueError(
                "set LAMBDA_ROLLOUTS_NOTIFICATIONS or LAMBDA_ROLLOUTS_NOTIFICATIONS_FILE, not both"
            )
        try:
            with open(self.notifications_file, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle) or []
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the notifications file {self.notifications_file}: {exc}") from exc
        if not isinstance(loaded, list):
            raise ValueError(
                f"the notifications file {self.notifications_file} must hold a list of subscriptions"
            )
        self.notifications = [DefaultNotification.model_validate(item) for item in loaded]
        return self._notifications_placed()

    def _notifications_placed(self) -> Settings:
        """Every default notification's Secrets with their namespace: the operator's own by default."""
        if not any(not ref.namespace for item in self.notifications for ref in item.secret_refs()):
            return self
        namespace = _own_namespace()
        if namespace is None:
            raise ValueError(
                "default notifications name a Secret without a namespace, and the operator runs outside "
                "a cluster (no namespace of its own): give each secretRef a namespace"
            )
        self.notifications = [item.in_namespace(namespace) for item in self.notifications]
        return self

    # Client-side pacing of AWS requests (lambda_rollouts.aws.ratelimit): every HTTP attempt,
    # botocore's retries included, first takes a token from a bucket per account, region and
    # service. Lambda's control plane allows 15 requests/s per account and region, shared by all
    # callers in the account (deploy pipelines, consoles, other controllers): 10/s leaves them a
    # third. STS gets the same numbers in a bucket of its own. 0 or less in either: no pacing.
    aws_requests_per_second: float = 10.0
    aws_burst: int = 10
    # CloudWatch's own bucket, so that metric reads never hold up alias writes: GetMetricData has
    # its own quota of 50 requests/s per account and region; 20/s leaves most of it to dashboards.
    aws_cloudwatch_requests_per_second: float = 20.0
    aws_cloudwatch_burst: int = 20
    # botocore's retry mode and the attempts per API call, the first one included (see
    # lambda_rollouts.aws.clients). "adaptive" adds botocore's own per-client rate limiter, which
    # slows a client down once it has been throttled.
    aws_retry_mode: Literal["standard", "adaptive"] = "standard"
    aws_max_attempts: int = Field(default=4, ge=1, le=20)
    # AWS calls in flight at once per rate-limit bucket: the worker threads that run boto3's
    # blocking calls (a pool per bucket), and the HTTP connections each client keeps. Sized for
    # the pace above with slow answers (50 calls/s answered in 500 ms each need 25), not for the
    # number of CPUs.
    aws_max_concurrent_calls: int = Field(default=32, ge=1, le=256)


# What each setting takes, in the words an invalid value's message uses ("expected ...").
EXPECTED: Final[Mapping[str, str]] = {
    "default_region": "an AWS region name, such as eu-west-1",
    "kubeconfig": "the path of a kubeconfig file (several separated by ':')",
    "drift_check_interval_seconds": "a number of seconds above 0",
    "retry_initial_delay_seconds": "a number of seconds above 0",
    "retry_max_delay_seconds": "a number of seconds above 0",
    "assume_role_session_seconds": "a whole number of seconds from 900 to 43200",
    "namespaces": 'a JSON list of namespace names, such as ["team-a","team-b"]',
    "liveness_endpoint": "an http:// URL such as http://0.0.0.0:8080/healthz",
    "metrics_port": "a port number 0-65535",
    "metrics_host": "an address to bind, such as 0.0.0.0",
    "log_format": "text or json",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL",
    "event_loop": "auto, uvloop or asyncio",
    "peering_name": "a lower-case DNS name of up to 253 characters, such as lambda-rollouts",
    "peering_standalone": "true or false",
    "peering_priority": "a whole number (64 bits, signed)",
    "peering_lifetime_seconds": "a whole number of seconds from 15 to 600",
    "tenancy": 'a JSON object of namespace patterns to policies, such as {"team-a": {"functions": ["a-*"]}}',
    "tenancy_file": "the path of a YAML or JSON file of namespace patterns to policies",
    "hook_allowed_networks": "comma-separated networks or addresses, such as 127.0.0.0/8,::1",
    "aws_requests_per_second": "a number (0 or less: no pacing)",
    "aws_burst": "a whole number",
    "aws_cloudwatch_requests_per_second": "a number (0 or less: no pacing)",
    "aws_cloudwatch_burst": "a whole number",
    "aws_retry_mode": "standard or adaptive",
    "aws_max_attempts": "a whole number from 1 to 20",
    "aws_max_concurrent_calls": "a whole number from 1 to 256",
    "notifications": (
        'a JSON list of subscriptions, such as [{"events": ["RolledBack"], "slack": {"webhookSecretRef": '
        '{"name": "slack", "key": "url", "namespace": "platform"}}}]'
    ),
    "notifications_file": "the path of a YAML or JSON file with a list of subscriptions",
    "notifications_max_attempts": "a whole number from 1 to 20",
    "notifications_timeout_seconds": "a number of seconds above 0, at most 300",
    "notifications_deadline_seconds": "a number of seconds above 0, at most 86400",
}

# A value longer than this is cut in error messages.
_SHOWN_VALUE_LIMIT: Final = 80


def variables_of(field_name: str) -> list[str]:
    """The environment variables of a setting, the preferred one first."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    prefix = Settings.model_config.get("env_prefix", "")
    return [f"{prefix}{field_name}".upper()]


def describe_invalid_settings(error: ValueError, options: Mapping[str, str] | None = None) -> str:
    """What is wrong with the settings, in one sentence per setting: the variable as it was set
    (or the option, for the fields named in ``options``) and what it takes, e.g.
    ``LAMBDA_ROLLOUTS_METRICS_PORT=abc: expected a port number 0-65535``.

    ``error`` is what ``Settings(...)`` raised: pydantic's ``ValidationError``, or pydantic-settings'
    ``SettingsError`` for a JSON value that does not parse.
    """
    options = options or {}
    if isinstance(error, ValidationError):
        problems: dict[str, str] = {}
        for item in error.errors():
            loc = item.get("loc") or ()
            field = _field_of(str(loc[0])) if loc else None
            if field is None:
                # A rule about several settings (the tenancy file): its own words say it.
                text = str(item.get("msg", "")).removeprefix("Value error, ")
                problems.setdefault(text, text)
                continue
            where = "".join(f"[{part}]" for part in loc[1:])
            detail = f" ({where}: {item.get('msg')})" if where else ""
            value = item.get("input") if not where else _raw_value(field)
            problems.setdefault(field, _sentence(field, value, options, detail))
        return "; ".join(problems.values())
    found = re.search(r'field "(\w+)"', str(error))
    if found is not None and found.group(1) in Settings.model_fields:
        field = found.group(1)
        return _sentence(field, _raw_value(field), options, " (not valid JSON)")
    return str(error)


def _field_of(key: str) -> str | None:
    if key in Settings.model_fields:
        return key
    for name in Settings.model_fields:
        if key.upper() in (variable.upper() for variable in variables_of(name)):
            return name
    return None


def _raw_value(field: str) -> str | None:
    """The value the environment gives a setting, as written."""
    by_name = {key.upper(): value for key, value in os.environ.items()}
    for variable in variables_of(field):
        if variable.upper() in by_name:
            return by_name[variable.upper()]
    return None


def _sentence(field: str, value: Any, options: Mapping[str, str], detail: str = "") -> str:
    shown = "" if value is None else str(value)
    if len(shown) > _SHOWN_VALUE_LIMIT:
        shown = shown[: _SHOWN_VALUE_LIMIT - 3] + "..."
    option = options.get(field)
    given = f"{option} {shown}" if option is not None else f"{_variable_set(field)}={shown}"
    return f"{given}: expected {EXPECTED.get(field, 'a valid value')}{detail}"


def _variable_set(field: str) -> str:
    """The variable of ``field`` that is set in the environment (the preferred one if none is)."""
    names = {key.upper() for key in os.environ}
    variables = variables_of(field)
    return next((variable for variable in variables if variable.upper() in names), variables[0])
