"""The operator's settings: the one place that reads the environment.

Every variable is prefixed ``LAMBDA_ROLLOUTS_``; the AWS SDK keeps reading its own standard
variables (``AWS_REGION``, ``AWS_ENDPOINT_URL``, credentials) through its own chain, which this
class reads only to pass them on explicitly.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
EventLoop = Literal["auto", "uvloop", "asyncio"]


class TenantPolicy(BaseModel):
    """What the rollouts of one namespace may target. Every list holds shell-style patterns."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    # Matched against the function's name (the part after "function:" in an ARN).
    functions: list[str] = Field(default_factory=list)
    # Accounts a function given by full ARN may live in; the operator's own account is always
    # allowed for plain names, whose account is the operator's.
    accounts: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=lambda: ["*"])
    # Roles a rollout may ask the operator to assume (spec.roleArn).
    role_arns: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAMBDA_ROLLOUTS_", extra="ignore", populate_by_name=True)

    # Region used when a rollout names none. Falls back to the SDK's standard variables.
    default_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("LAMBDA_ROLLOUTS_DEFAULT_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    # Read by the Kubernetes client itself; here only to explain a login that failed.
    kubeconfig: str | None = Field(default=None, validation_alias="KUBECONFIG")
    # Endpoint override for every AWS service (a local emulator, a VPC endpoint).
    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("LAMBDA_ROLLOUTS_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    )
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
    # others stand by, paused, and take over when it is gone (see lambda_rollouts.peering).
    peering_name: str = Field(
        default="lambda-rollouts",
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

    @field_validator("peering_priority", mode="before")
    @classmethod
    def _empty_priority_is_unset(cls, value: Any) -> Any:
        # A deployment template often renders an unset variable as an empty string.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    # Which functions and roles each namespace may target (see lambda_rollouts.tenancy). None: no
    # limits, for a single team or a sandbox. JSON in LAMBDA_ROLLOUTS_TENANCY, or a YAML or JSON
    # file named by LAMBDA_ROLLOUTS_TENANCY_FILE (mounted from a ConfigMap).
    tenancy: dict[str, TenantPolicy] | None = None
    tenancy_file: str | None = None

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
    # AWS calls in flight at once: the worker threads that run boto3's blocking calls, and the
    # HTTP connections each client keeps. Sized for the pace above with slow answers (50 calls/s
    # answered in 500 ms each need 25), not for the number of CPUs.
    aws_max_concurrent_calls: int = Field(default=32, ge=1, le=256)
    # Proxies for the AWS calls the operator sends itself (Lambda's alias and version calls), from
    # the standard variables that boto3 honours for the rest: by the endpoint's scheme, unless the
    # endpoint's host is in NO_PROXY.
    https_proxy: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LAMBDA_ROLLOUTS_HTTPS_PROXY", "HTTPS_PROXY", "https_proxy"),
    )
    http_proxy: str | None = Field(
        default=None, validation_alias=AliasChoices("LAMBDA_ROLLOUTS_HTTP_PROXY", "HTTP_PROXY", "http_proxy")
    )
    no_proxy: str | None = Field(
        default=None, validation_alias=AliasChoices("LAMBDA_ROLLOUTS_NO_PROXY", "NO_PROXY", "no_proxy")
    )
