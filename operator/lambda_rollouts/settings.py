"""The operator's settings: the one place that reads the environment.

Every variable is prefixed ``LAMBDA_ROLLOUTS_``; the AWS SDK keeps reading its own standard
variables (``AWS_REGION``, ``AWS_ENDPOINT_URL``, credentials) through its own chain, which this
class reads only to pass them on explicitly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAMBDA_ROLLOUTS_", extra="ignore", populate_by_name=True)

    # Region used when a rollout names none. Falls back to the SDK's standard variables.
    default_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("LAMBDA_ROLLOUTS_DEFAULT_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
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

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port_is_unset(cls, value: Any) -> Any:
        # A deployment template often renders an unset variable as an empty string.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_in_any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value
