"""The AWS implementation of ``AliasRouter``, over botocore through ``AwsClients``.

Contract (on top of ``lambda_rollouts.aws.router``):
- Every call is one ``AwsClients.call``: a boto3 client's call in a worker thread, paced, counted
  and observed there (its contract applies): clients are cached per (region, role ARN), a
  target's empty region falls back to ``settings.default_region``, a target's ``role_arn`` is
  served with assumed-role credentials refreshed before they expire, and a call refused with
  ``ExpiredToken`` drops them and is made once more. Pass ``clients`` to share one cache (and one
  ``calls`` counter) with the other AWS adapters; the session, clock, refresh margin and client
  config are then the shared object's, and giving them here too is an error.
- ``route`` sends exactly one ``UpdateAlias`` (with the caller's ``RevisionId``): UpdateAlias
  answers with the alias as stored, which is what ``route`` returns; the request is shaped by
  ``weights.alias_write``.
- ``list_versions`` sends one ``ListVersionsByFunction`` per page (``MaxItems`` of
  ``LIST_VERSIONS_PAGE_SIZE``, ``Marker`` from the previous page's ``NextMarker``). A listing
  without even ``$LATEST`` in it (an emulator's answer for a missing function; Lambda answers
  404) is settled by the ``GetFunctionConfiguration`` probe below. A ``NextMarker`` seen before
  is an ``AwsError`` rather than an endless loop.
- "Not found" is told apart without trusting message wording alone: when the message does not
  say "Function not found", an unqualified ``GetFunctionConfiguration`` (a permission the
  operator needs anyway for ``get_version``) decides whether the function exists.
- ``calls`` counts API operations by name (``GetAlias``, ``UpdateAlias``, ``AssumeRole``...),
  one per logical call, retries not included, injected and failed calls included. With shared
  ``clients`` it counts the calls of every adapter sharing them.
- ``close()`` shuts down the clients' thread pools when the router made its own ``AwsClients``
  (shared ones are closed by whoever made them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.exceptions import ClientError

from lambda_rollouts.aws.clients import (
    DEFAULT_REFRESH_MARGIN,
    SESSION_NAME,
    AssumedCredentials,
    AwsClients,
    Clock,
    SessionFactory,
    default_client_config,
    utc_now,
)
from lambda_rollouts.aws.errors import error_message, translated
from lambda_rollouts.aws.router import LIST_VERSIONS_PAGE_SIZE
from lambda_rollouts.aws.weights import (
    LATEST,
    alias_write,
    require_published_version,
    routing_to_percent,
)
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
    from mypy_boto3_lambda import LambdaClient

# The client cache's names are importable from here too, for code that only knows the router.
__all__ = [
    "DEFAULT_REFRESH_MARGIN",
    "SESSION_NAME",
    "AssumedCredentials",
    "BotoAliasRouter",
    "Clock",
    "SessionFactory",
    "default_client_config",
]


class BotoAliasRouter:
    """``AliasRouter`` over boto3; see the module docstring for the contract."""

    def __init__(
        self,
        settings: Settings,
        session_factory: SessionFactory | None = None,
        *,
        clock: Clock = utc_now,
        refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN,
        client_config: Config | None = None,
        clients: AwsClients | None = None,
    ) -> None:
        self._owns_clients = clients is None
        if clients is None:
            clients = AwsClients(
                settings,
                session_factory,
                clock=clock,
                refresh_margin=refresh_margin,
                client_config=client_config,
            )
        elif (
            session_factory is not None
            or client_config is not None
            or clock is not utc_now
            or refresh_margin != DEFAULT_REFRESH_MARGIN
        ):
            # Silently ignoring them would leave the caller believing they took effect.
            raise ValueError("pass the session, clock, refresh margin and client config to AwsClients")
        self._settings = settings
        self._clients = clients

    @property
    def calls(self) -> Counter[str]:
        """API operations by name, counted by the (possibly shared) ``AwsClients``."""
        return self._clients.calls

    @property
    def clients(self) -> AwsClients:
        return self._clients

    # -- the AliasRouter interface -------------------------------------------------------------

    async def get_alias(self, target: Target) -> AliasState | None:
        try:
            with translated("GetAlias"):
                response = await self._send(
                    target, "GetAlias", FunctionName=target.function_name, Name=target.alias
                )
        except FunctionNotFoundError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and await self._only_alias_missing(target, cause):
                return None
            raise
        return _alias_state(response)

    async def create_alias(self, target: Target, version: str) -> AliasState:
        require_published_version(version, "alias")
        try:
            with translated("CreateAlias"):
                response = await self._send(
                    target,
                    "CreateAlias",
                    FunctionName=target.function_name,
                    Name=target.alias,
                    FunctionVersion=version,
                )
        except FunctionNotFoundError as error:
            raise await self._function_or_version_missing(target, version, error) from error.__cause__
        return _alias_state(response)

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
        if not revision_id:
            raise InvalidRequestError("route needs the RevisionId read with the alias")
        write = alias_write(primary=primary, canary=canary, canary_percent=canary_percent)
        try:
            with translated("UpdateAlias"):
                response = await self._send(
                    target,
                    "UpdateAlias",
                    FunctionName=target.function_name,
                    Name=target.alias,
                    FunctionVersion=write.function_version,
                    RoutingConfig={"AdditionalVersionWeights": dict(write.additional_version_weights)},
                    RevisionId=revision_id,
                )
        except FunctionNotFoundError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _names_the_alias(error_message(cause)):
                raise AliasConflictError(f"alias {target.alias} no longer exists: {error}") from cause
            versions = [write.function_version, *write.additional_version_weights]
            raise await self._function_or_version_missing(target, "/".join(versions), error) from cause
        # UpdateAlias answers with the alias as it now is: no read-back call is needed.
        return _alias_state(response)

    async def get_version(self, target: Target, version: str) -> VersionInfo:
        require_published_version(version, "requested")
        try:
            with translated("GetFunctionConfiguration"):
                response = await self._send(
                    target, "GetFunctionConfiguration", FunctionName=target.function_name, Qualifier=version
                )
        except FunctionNotFoundError as error:
            raise await self._function_or_version_missing(target, version, error) from error.__cause__
        return _version_info(response, version)

    async def list_versions(self, target: Target) -> list[VersionInfo]:
        """Every published version, oldest first, read page by page (see the module docstring)."""
        listed: list[Mapping[str, Any]] = []
        markers: set[str] = set()
        marker: str | None = None
        while True:
            page = await self._list_versions_page(target, marker)
            listed += page.get("Versions", [])
            marker = page.get("NextMarker")
            if not marker:
                break
            if marker in markers:
                raise AwsError(f"ListVersionsByFunction: NextMarker {marker!r} came back a second time")
            markers.add(marker)
        if not listed and not await self._function_exists(target):
            raise FunctionNotFoundError(f"function {target.function_name} not found")
        published = [
            _version_info(entry, entry["Version"])
            for entry in listed
            if entry.get("Version", LATEST) != LATEST
        ]
        return sorted(published, key=lambda info: int(info.version))

    async def close(self) -> None:
        """Shut down the thread pools of the router's own ``AwsClients`` (not of shared ones)."""
        if self._owns_clients:
            await self._clients.close()

    # -- clients and credentials ---------------------------------------------------------------

    def lambda_client(self, region: str) -> LambdaClient:
        """The cached Lambda client of the operator's own credentials for ``region``. Blocking."""
        return cast("LambdaClient", self._clients.client("lambda", region))

    def forget_credentials(self, role_arn: str) -> None:
        """Drop cached credentials for a role, so the next call assumes it again."""
        self._clients.forget_credentials(role_arn)

    def _region(self, target: Target) -> str:
        return target.region or self._settings.default_region

    async def _send(self, target: Target, operation: str, **params: Any) -> Mapping[str, Any]:
        """One Lambda API call with the target's region and credentials."""
        return await self._clients.call("lambda", self._region(target), target.role_arn, operation, params)

    async def _list_versions_page(self, target: Target, marker: str | None) -> Mapping[str, Any]:
        with translated("ListVersionsByFunction"):
            if marker is None:
                return await self._send(
                    target,
                    "ListVersionsByFunction",
                    FunctionName=target.function_name,
                    MaxItems=LIST_VERSIONS_PAGE_SIZE,
                )
            return await self._send(
                target,
                "ListVersionsByFunction",
                FunctionName=target.function_name,
                MaxItems=LIST_VERSIONS_PAGE_SIZE,
                Marker=marker,
            )

    # -- telling "not found" apart -------------------------------------------------------------

    async def _function_exists(self, target: Target) -> bool:
        try:
            with translated("GetFunctionConfiguration"):
                await self._send(target, "GetFunctionConfiguration", FunctionName=target.function_name)
        except FunctionNotFoundError:
            return False
        return True

    async def _only_alias_missing(self, target: Target, exc: ClientError) -> bool:
        if error_message(exc).lower().startswith("function not found"):
            return False
        return await self._function_exists(target)

    async def _function_or_version_missing(self, target: Target, version: str, error: AwsError) -> AwsError:
        if await self._function_exists(target):
            return VersionNotFoundError(f"version {version} of {target.function_name} not found: {error}")
        return FunctionNotFoundError(f"function {target.function_name} not found: {error}")


def _names_the_alias(message: str) -> bool:
    """Whether a "not found" message is about the alias ("Alias not found: arn:...").

    Only the words before the ARN count: the ARN holds the function's name, which may contain "alias".
    """
    wording = message.lower().split("arn:", 1)[0]
    return "alias" in wording and not wording.startswith("function not found")


def _alias_state(response: Mapping[str, Any]) -> AliasState:
    weights = response.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
    return AliasState(
        function_version=response["FunctionVersion"],
        routing=routing_to_percent(weights),
        revision_id=response.get("RevisionId", ""),
    )


def _version_info(response: Mapping[str, Any], version: str) -> VersionInfo:
    return VersionInfo(
        version=response.get("Version", version),
        # Functions that never went through a state transition may omit both fields.
        state=response.get("State", "Active"),
        last_update_status=response.get("LastUpdateStatus", "Successful"),
        role=response.get("Role", ""),
        dead_letter_target_arn=response.get("DeadLetterConfig", {}).get("TargetArn"),
        code_sha256=response.get("CodeSha256", ""),
        function_arn=response.get("FunctionArn", ""),
        description=response.get("Description", ""),
    )
