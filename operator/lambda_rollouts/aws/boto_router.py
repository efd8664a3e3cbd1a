"""The boto3 implementation of ``AliasRouter``.

Contract (on top of ``lambda_rollouts.aws.router``):
- Every blocking boto3 call (client creation and credential resolution included) runs in a
  worker thread through ``asyncio.to_thread``; nothing blocks the event loop.
- Clients are cached per (region, role ARN) and use ``settings.aws_endpoint_url`` when set. A
  target's empty region falls back to ``settings.default_region``.
- A target with ``role_arn`` is served with credentials from STS ``AssumeRole`` (session name
  ``lambda-rollouts``, lifetime ``settings.assume_role_session_seconds``), made with the base
  session's credentials. They are reused until ``refresh_margin`` before they expire, then
  assumed again; a call refused with ``ExpiredToken`` drops them and is retried once.
- ``route`` sends exactly one ``UpdateAlias`` (with the caller's ``RevisionId``) and one
  ``GetAlias`` read-back; the request is shaped by ``weights.alias_write``.
- "Not found" is told apart without trusting message wording alone: when the message does not
  say "Function not found", an unqualified ``GetFunctionConfiguration`` (a permission the
  operator needs anyway for ``get_version``) decides whether the function exists.
- ``calls`` counts API operations by name (``GetAlias``, ``UpdateAlias``, ``AssumeRole``...),
  one per logical call, retries by botocore not included; it is fed by a botocore event hook,
  so it also sees calls that were injected or failed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from lambda_rollouts import __version__
from lambda_rollouts.aws.errors import error_message, is_expired_token, translated
from lambda_rollouts.aws.weights import alias_write, require_published_version, routing_to_percent
from lambda_rollouts.errors import (
    AliasConflictError,
    AwsError,
    FunctionNotFoundError,
    InvalidRequestError,
    VersionNotFoundError,
)
from lambda_rollouts.observed import AliasState, Target, VersionInfo
from lambda_rollouts.settings import Settings

if TYPE_CHECKING:
    from botocore.model import OperationModel
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_lambda.type_defs import (
        AliasConfigurationResponseTypeDef,
        FunctionConfigurationResponseTypeDef,
    )
    from mypy_boto3_sts import STSClient

SESSION_NAME = "lambda-rollouts"
DEFAULT_REFRESH_MARGIN = timedelta(minutes=5)

Clock = Callable[[], datetime]
SessionFactory = Callable[[], boto3.session.Session]
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class AssumedCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime


@dataclass(frozen=True)
class _CachedClient:
    client: LambdaClient
    # The credentials the client was built with; a refresh makes the entry stale.
    credentials: AssumedCredentials | None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def default_client_config() -> Config:
    return Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=20,
        user_agent_extra=f"lambda-rollouts/{__version__}",
    )


class BotoAliasRouter:
    """``AliasRouter`` over boto3; see the module docstring for the contract."""

    def __init__(
        self,
        settings: Settings,
        session_factory: SessionFactory | None = None,
        *,
        clock: Clock = _utc_now,
        refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN,
        client_config: Config | None = None,
    ) -> None:
        self._settings = settings
        self._session_factory: SessionFactory = session_factory or boto3.session.Session
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._client_config = client_config or default_client_config()
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        # Guards the session and the caches; clients themselves are thread-safe, sessions are not.
        self._lock = threading.RLock()
        self._session: boto3.session.Session | None = None
        self._lambda_clients: dict[tuple[str, str | None], _CachedClient] = {}
        self._sts_clients: dict[str, STSClient] = {}
        self._credentials: dict[str, AssumedCredentials] = {}

    # -- the AliasRouter interface -------------------------------------------------------------

    async def get_alias(self, target: Target) -> AliasState | None:
        return await asyncio.to_thread(self._get_alias_blocking, target)

    async def create_alias(self, target: Target, version: str) -> AliasState:
        return await asyncio.to_thread(self._create_alias_blocking, target, version)

    async def route(
        self,
        target: Target,
        *,
        primary: str,
        canary: str | None,
        canary_percent: float,
        revision_id: str,
    ) -> AliasState:
        """Point the alias at ``primary`` with ``canary_percent`` % on ``canary``.

        To promote, pass ``primary=<new version>, canary=None``; to roll back,
        ``primary=<stable version>, canary=None``. Both clear the routing map.
        """
        return await asyncio.to_thread(
            self._route_blocking, target, primary, canary, canary_percent, revision_id
        )

    async def get_version(self, target: Target, version: str) -> VersionInfo:
        return await asyncio.to_thread(self._get_version_blocking, target, version)

    # -- clients and credentials ---------------------------------------------------------------

    def lambda_client(self, region: str, role_arn: str | None = None) -> LambdaClient:
        """The cached Lambda client for (region, role), assuming the role if needed. Blocking."""
        with self._lock:
            credentials = self._assumed_credentials(role_arn, region) if role_arn else None
            cached = self._lambda_clients.get((region, role_arn))
            if cached is None or cached.credentials is not credentials:
                client = self._base_session().client(
                    "lambda",
                    region_name=region,
                    endpoint_url=self._settings.aws_endpoint_url,
                    config=self._client_config,
                    aws_access_key_id=credentials.access_key_id if credentials else None,
                    aws_secret_access_key=credentials.secret_access_key if credentials else None,
                    aws_session_token=credentials.session_token if credentials else None,
                )
                self._count_calls_of(client)
                cached = _CachedClient(client=client, credentials=credentials)
                self._lambda_clients[(region, role_arn)] = cached
            return cached.client

    def forget_credentials(self, role_arn: str) -> None:
        """Drop cached credentials for a role, so the next call assumes it again."""
        with self._lock:
            self._credentials.pop(role_arn, None)

    def _base_session(self) -> boto3.session.Session:
        if self._session is None:
            self._session = self._session_factory()
        return self._session

    def _sts_client(self, region: str) -> STSClient:
        client = self._sts_clients.get(region)
        if client is None:
            client = self._base_session().client(
                "sts",
                region_name=region,
                endpoint_url=self._settings.aws_endpoint_url,
                config=self._client_config,
            )
            self._count_calls_of(client)
            self._sts_clients[region] = client
        return client

    def _assumed_credentials(self, role_arn: str, region: str) -> AssumedCredentials:
        cached = self._credentials.get(role_arn)
        if cached is not None and self._clock() < cached.expiration - self._refresh_margin:
            return cached
        with translated("AssumeRole", not_found=AwsError):
            response = self._sts_client(region).assume_role(
                RoleArn=role_arn,
                RoleSessionName=SESSION_NAME,
                DurationSeconds=self._settings.assume_role_session_seconds,
            )
        issued = response["Credentials"]
        fresh = AssumedCredentials(
            access_key_id=issued["AccessKeyId"],
            secret_access_key=issued["SecretAccessKey"],
            session_token=issued["SessionToken"],
            expiration=issued["Expiration"],
        )
        self._credentials[role_arn] = fresh
        return fresh

    def _count_calls_of(self, client: LambdaClient | STSClient) -> None:
        # provide-client-params fires once per API call, before any handler can short-circuit it.
        client.meta.events.register("provide-client-params", self._count_call)

    def _count_call(self, model: OperationModel, **_: Any) -> None:
        with self._calls_lock:
            self.calls[model.name] += 1

    def _region(self, target: Target) -> str:
        return target.region or self._settings.default_region

    def _call(self, target: Target, request: Callable[[LambdaClient], _Result]) -> _Result:
        """Run one request with the target's client, once more if assumed credentials expired."""
        client = self.lambda_client(self._region(target), target.role_arn)
        try:
            return request(client)
        except ClientError as exc:
            if target.role_arn is None or not is_expired_token(exc):
                raise
            self.forget_credentials(target.role_arn)
        return request(self.lambda_client(self._region(target), target.role_arn))

    # -- the blocking halves -------------------------------------------------------------------

    def _get_alias_blocking(self, target: Target) -> AliasState | None:
        try:
            with translated("GetAlias"):
                response = self._call(
                    target,
                    lambda client: client.get_alias(FunctionName=target.function_name, Name=target.alias),
                )
        except FunctionNotFoundError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and self._only_alias_missing(target, cause):
                return None
            raise
        return _alias_state(response)

    def _create_alias_blocking(self, target: Target, version: str) -> AliasState:
        require_published_version(version, "alias")
        try:
            with translated("CreateAlias"):
                response = self._call(
                    target,
                    lambda client: client.create_alias(
                        FunctionName=target.function_name, Name=target.alias, FunctionVersion=version
                    ),
                )
        except FunctionNotFoundError as error:
            raise self._function_or_version_missing(target, version, error) from error.__cause__
        return _alias_state(response)

    def _route_blocking(
        self, target: Target, primary: str, canary: str | None, canary_percent: float, revision_id: str
    ) -> AliasState:
        if not revision_id:
            raise InvalidRequestError("route needs the RevisionId read with the alias")
        write = alias_write(primary=primary, canary=canary, canary_percent=canary_percent)
        try:
            with translated("UpdateAlias"):
                self._call(
                    target,
                    lambda client: client.update_alias(
                        FunctionName=target.function_name,
                        Name=target.alias,
                        FunctionVersion=write.function_version,
                        RoutingConfig={"AdditionalVersionWeights": dict(write.additional_version_weights)},
                        RevisionId=revision_id,
                    ),
                )
        except FunctionNotFoundError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _names_the_alias(error_message(cause)):
                raise AliasConflictError(f"alias {target.alias} no longer exists: {error}") from cause
            versions = [write.function_version, *write.additional_version_weights]
            raise self._function_or_version_missing(target, "/".join(versions), error) from cause
        read_back = self._get_alias_blocking(target)
        if read_back is None:
            raise AliasConflictError(f"alias {target.alias} disappeared right after it was updated")
        return read_back

    def _get_version_blocking(self, target: Target, version: str) -> VersionInfo:
        require_published_version(version, "requested")
        try:
            with translated("GetFunctionConfiguration"):
                response = self._call(
                    target,
                    lambda client: client.get_function_configuration(
                        FunctionName=target.function_name, Qualifier=version
                    ),
                )
        except FunctionNotFoundError as error:
            raise self._function_or_version_missing(target, version, error) from error.__cause__
        return _version_info(response, version)

    # -- telling "not found" apart -------------------------------------------------------------

    def _function_exists(self, target: Target) -> bool:
        try:
            with translated("GetFunctionConfiguration"):
                self._call(
                    target,
                    lambda client: client.get_function_configuration(FunctionName=target.function_name),
                )
        except FunctionNotFoundError:
            return False
        return True

    def _only_alias_missing(self, target: Target, exc: ClientError) -> bool:
        if error_message(exc).lower().startswith("function not found"):
            return False
        return self._function_exists(target)

    def _function_or_version_missing(self, target: Target, version: str, error: AwsError) -> AwsError:
        if self._function_exists(target):
            return VersionNotFoundError(f"version {version} of {target.function_name} not found: {error}")
        return FunctionNotFoundError(f"function {target.function_name} not found: {error}")


def _names_the_alias(message: str) -> bool:
    """Whether a "not found" message is about the alias ("Alias not found: arn:...").

    Only the words before the ARN count: the ARN holds the function's name, which may contain "alias".
    """
    wording = message.lower().split("arn:", 1)[0]
    return "alias" in wording and not wording.startswith("function not found")


def _alias_state(response: AliasConfigurationResponseTypeDef) -> AliasState:
    weights = response.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
    return AliasState(
        function_version=response["FunctionVersion"],
        routing=routing_to_percent(weights),
        revision_id=response.get("RevisionId", ""),
    )


def _version_info(response: FunctionConfigurationResponseTypeDef, version: str) -> VersionInfo:
    return VersionInfo(
        version=response.get("Version", version),
        # Functions that never went through a state transition may omit both fields.
        state=response.get("State", "Active"),
        last_update_status=response.get("LastUpdateStatus", "Successful"),
        role=response.get("Role", ""),
        dead_letter_target_arn=response.get("DeadLetterConfig", {}).get("TargetArn"),
        code_sha256=response.get("CodeSha256", ""),
    )
