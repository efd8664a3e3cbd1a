"""The alias router: the small interface through which the operator reads and shifts an alias.

Contract for every implementation (the boto3 one, the strict fake):
- ``get_alias`` returns None when the alias does not exist; raises ``FunctionNotFoundError``
  when the function does not.
- ``route`` writes the alias in one ``UpdateAlias`` call that carries ``revision_id`` (the one
  read before it), and returns what the alias now serves as UpdateAlias answers it (no extra
  read). ``canary_percent`` of 0 or a ``canary`` of None clears the routing map; the new primary
  is never left in the map.
  A changed alias raises ``AliasConflictError`` and nothing is written.
- ``get_version`` describes one published version (``VersionNotFoundError`` when absent).
- ``list_versions`` describes every published version of the function (never ``$LATEST``), in
  ascending numeric order, each as ``get_version`` would describe it; an empty list when none is
  published. It follows ``ListVersionsByFunction``'s ``NextMarker`` to the last page, one call per
  page of at most ``LIST_VERSIONS_PAGE_SIZE`` entries (``$LATEST`` takes a place in a page as it
  does in Lambda's answer). ``FunctionNotFoundError`` when the function does not exist.
- Errors are the project's own (``lambda_rollouts.errors``), never botocore's.
"""

from __future__ import annotations

from typing import Final, Protocol

from lambda_rollouts.observed import AliasState, Target, VersionInfo

# MaxItems of one ListVersionsByFunction call; Lambda answers at most 50 versions per call anyway.
LIST_VERSIONS_PAGE_SIZE: Final = 50


class AliasRouter(Protocol):
    async def get_alias(self, target: Target) -> AliasState | None: ...

    async def create_alias(self, target: Target, version: str) -> AliasState: ...

    async def route(
        self,
        target: Target,
        *,
        primary: str,
        canary: str | None,
        canary_percent: float,
        revision_id: str,
    ) -> AliasState: ...

    async def get_version(self, target: Target, version: str) -> VersionInfo: ...

    async def list_versions(self, target: Target) -> list[VersionInfo]: ...
