"""``FakeLambda``: a strict in-memory ``AliasRouter`` for tests.

Contract: it answers like ``BotoAliasRouter`` against real Lambda, including the rules local
emulators skip (DESIGN.md section 3), and raises the same project errors:

- every alias write gets a new ``RevisionId``; ``route`` with any other one raises
  ``AliasConflictError`` (Lambda's 412 ``PreconditionFailedException``) and writes nothing;
- routing weights lie within 0.0-1.0; at most one extra version; ``$LATEST`` is neither the
  primary nor an extra version; the primary is never in the map ("already included in routing
  configuration"); the primary and the extra version share role and dead-letter config. All of
  these are ``InvalidRequestError`` (Lambda's 400);
- versions must be published and exist (``VersionNotFoundError``), the function must exist
  (``FunctionNotFoundError``), ``route`` on a vanished alias is ``AliasConflictError``;
- ``list_versions`` pages like ``ListVersionsByFunction``: ``$LATEST`` first, then the published
  versions in order, ``LIST_VERSIONS_PAGE_SIZE`` entries a page, one counted call per page, and
  ``$LATEST`` dropped from the result.

The same rules guard the seeding helpers (``put_alias``, ``set_alias_externally``), so a test
cannot start from a state Lambda would never hold. One account and one region: ``Target.region``
and ``Target.role_arn`` are accepted and ignored; functions are named plainly or by ARN.

For assertions: ``writes`` records every successful alias write the router made (``CreateAlias``
and ``UpdateAlias``; seeding and external changes are not recorded), with routing in percent;
``calls`` counts operations by Lambda API name, failed and injected ones included, the way
``BotoAliasRouter.calls`` does (``route`` counts one ``UpdateAlias``).
``fail_next(operation, error)`` makes the next call of that operation raise ``error`` instead
(for ``ListVersionsByFunction``, the next page's call).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from lambda_rollouts.aws.router import LIST_VERSIONS_PAGE_SIZE
from lambda_rollouts.aws.weights import (
    LATEST,
    alias_write,
    fraction_to_percent,
    percent_to_fraction,
    require_published_version,
)
from lambda_rollouts.errors import (
    AliasConflictError,
    FunctionNotFoundError,
    InvalidRequestError,
    VersionNotFoundError,
)
from lambda_rollouts.observed import AliasState, Target, VersionInfo

FAKE_ACCOUNT = "123456789012"
DEFAULT_ROLE = f"arn:aws:iam::{FAKE_ACCOUNT}:role/lambda-execution"


@dataclass
class FakeVersion:
    version: str
    role: str
    dead_letter_target_arn: str | None
    state: str = "Active"
    last_update_status: str = "Successful"
    code_sha256: str = ""
    description: str = ""


@dataclass
class FakeAlias:
    function_version: str
    # Fractions, as Lambda stores them.
    weights: dict[str, float]
    revision_id: str


@dataclass
class FakeFunction:
    name: str
    role: str
    dead_letter_target_arn: str | None
    versions: dict[str, FakeVersion] = field(default_factory=dict)
    aliases: dict[str, FakeAlias] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedWrite:
    """One successful alias write made through the router interface."""

    operation: str  # CreateAlias | UpdateAlias
    function_name: str
    alias: str
    primary: str
    routing: Mapping[str, float]  # percent, like AliasState.routing
    revision_id: str


class FakeLambda:
    """Strict in-memory ``AliasRouter``; see the module docstring."""

    def __init__(self) -> None:
        self.functions: dict[str, FakeFunction] = {}
        self.writes: list[RecordedWrite] = []
        self.calls: Counter[str] = Counter()
        self._failures: defaultdict[str, deque[Exception]] = defaultdict(deque)

    # -- seeding and inspection ----------------------------------------------------------------

    def add_function(
        self, name: str, *, role: str = DEFAULT_ROLE, dead_letter_target_arn: str | None = None
    ) -> FakeFunction:
        if name in self.functions:
            raise ValueError(f"function {name} already exists")
        function = FakeFunction(name=name, role=role, dead_letter_target_arn=dead_letter_target_arn)
        self.functions[name] = function
        return function

    def publish_version(
        self,
        name: str,
        *,
        role: str | None = None,
        dead_letter_target_arn: str | None = None,
        state: str = "Active",
        last_update_status: str = "Successful",
        code_sha256: str | None = None,
        description: str = "",
    ) -> str:
        """Publish the next version number; role and dead-letter target default to the function's.

        The code's hash defaults to one derived from the function's name and the version number, so
        every version has code of its own.
        """
        function = self._function(name)
        version = str(len(function.versions) + 1)
        function.versions[version] = FakeVersion(
            version=version,
            role=role or function.role,
            dead_letter_target_arn=dead_letter_target_arn or function.dead_letter_target_arn,
            state=state,
            last_update_status=last_update_status,
            code_sha256=code_sha256 or _code_sha256(f"{function.name}:{version}"),
            description=description,
        )
        return version

    def set_version_state(
        self, name: str, version: str, *, state: str, last_update_status: str = "Successful"
    ) -> None:
        found = self._version(self._function(name), version)
        found.state = state
        found.last_update_status = last_update_status

    def put_alias(
        self, name: str, alias: str, primary: str, routing: Mapping[str, float] | None = None
    ) -> AliasState:
        """Create or overwrite an alias directly (routing in percent), without recording a write."""
        return self._store_alias(self._function(name), alias, primary, routing)

    def set_alias_externally(
        self, name: str, alias: str, primary: str, routing: Mapping[str, float] | None = None
    ) -> AliasState:
        """Someone else changes an existing alias: new RevisionId, not recorded in ``writes``."""
        function = self._function(name)
        if alias not in function.aliases:
            raise ValueError(f"alias {alias} of {name} does not exist")
        return self._store_alias(function, alias, primary, routing)

    def alias_state(self, name: str, alias: str) -> AliasState | None:
        found = self._function(name).aliases.get(alias)
        return None if found is None else _alias_state(found)

    def fail_next(self, operation: str, error: Exception) -> None:
        """Make the next ``operation`` call (``GetAlias``, ``UpdateAlias``...) raise ``error``."""
        self._failures[operation].append(error)

    # -- the AliasRouter interface -------------------------------------------------------------

    async def get_alias(self, target: Target) -> AliasState | None:
        self._begin("GetAlias")
        return self.alias_state(self._function(target.function_name).name, target.alias)

    async def create_alias(self, target: Target, version: str) -> AliasState:
        self._begin("CreateAlias")
        function = self._function(target.function_name)
        require_published_version(version, "alias")
        self._version(function, version)
        if target.alias in function.aliases:
            raise AliasConflictError(f"CreateAlias: alias {target.alias} of {function.name} already exists")
        state = self._store_alias(function, target.alias, version, None)
        self._record("CreateAlias", function, target.alias, state)
        return state

    async def route(
        self,
        target: Target,
        *,
        primary: str,
        canary: str | None,
        canary_percent: float,
        revision_id: str,
    ) -> AliasState:
        """Write the alias like one ``UpdateAlias``, and answer with it as stored, as Lambda does."""
        self._begin("UpdateAlias")
        function = self._function(target.function_name)
        current = function.aliases.get(target.alias)
        if current is None:
            raise AliasConflictError(f"UpdateAlias: alias {target.alias} of {function.name} no longer exists")
        if not revision_id:
            raise InvalidRequestError("route needs the RevisionId read with the alias")
        if revision_id != current.revision_id:
            raise AliasConflictError(
                f"UpdateAlias: PreconditionFailedException: the RevisionId {revision_id} does not match "
                f"the alias's current {current.revision_id}"
            )
        write = alias_write(primary=primary, canary=canary, canary_percent=canary_percent)
        state = self._store_fractions(
            function, target.alias, write.function_version, dict(write.additional_version_weights)
        )
        self._record("UpdateAlias", function, target.alias, state)
        return _alias_state(function.aliases[target.alias])

    async def get_version(self, target: Target, version: str) -> VersionInfo:
        self._begin("GetFunctionConfiguration")
        require_published_version(version, "requested")
        function = self._function(target.function_name)
        return _version_info(target, function, self._version(function, version))

    async def list_versions(self, target: Target) -> list[VersionInfo]:
        """Every published version, oldest first, read a page per counted call."""
        listed: list[VersionInfo] = []
        start = 0
        while True:
            # Each page is its own call: the function is looked up (and may be gone) every time.
            self._begin("ListVersionsByFunction")
            function = self._function(target.function_name)
            entries = [LATEST, *sorted(function.versions, key=int)]
            page = entries[start : start + LIST_VERSIONS_PAGE_SIZE]
            listed += [_version_info(target, function, function.versions[n]) for n in page if n != LATEST]
            start += LIST_VERSIONS_PAGE_SIZE
            if start >= len(entries):
                return listed

    # -- Lambda's rules ------------------------------------------------------------------------

    def _begin(self, operation: str) -> None:
        self.calls[operation] += 1
        pending = self._failures.get(operation)
        if pending:
            raise pending.popleft()

    def _function(self, name_or_arn: str) -> FakeFunction:
        name = _function_name(name_or_arn)
        function = self.functions.get(name)
        if function is None:
            raise FunctionNotFoundError(f"Function not found: {name_or_arn}")
        return function

    def _version(self, function: FakeFunction, version: str) -> FakeVersion:
        found = function.versions.get(version)
        if found is None:
            raise VersionNotFoundError(f"Function not found: {function.name}:{version}")
        return found

    def _store_alias(
        self, function: FakeFunction, alias: str, primary: str, routing: Mapping[str, float] | None
    ) -> AliasState:
        try:
            weights = {version: percent_to_fraction(percent) for version, percent in (routing or {}).items()}
        except ValueError as exc:
            raise InvalidRequestError(f"routing weight out of range: {exc}") from exc
        return self._store_fractions(function, alias, primary, weights)

    def _store_fractions(
        self, function: FakeFunction, alias: str, primary: str, weights: dict[str, float]
    ) -> AliasState:
        self._check_routing(function, primary, weights)
        stored = FakeAlias(function_version=primary, weights=weights, revision_id=str(uuid.uuid4()))
        function.aliases[alias] = stored
        return _alias_state(stored)

    def _check_routing(self, function: FakeFunction, primary: str, weights: Mapping[str, float]) -> None:
        if primary == LATEST or LATEST in weights:
            raise InvalidRequestError(
                f"{LATEST} is not supported for an alias with routing (must be published)"
            )
        if len(weights) > 1:
            raise InvalidRequestError(
                f"an alias routes to at most one additional version, got {sorted(weights)}"
            )
        if primary in weights:
            raise InvalidRequestError(
                f"version {primary} is already included in routing configuration as the primary version"
            )
        for version, weight in weights.items():
            if not 0.0 <= weight <= 1.0:
                raise InvalidRequestError(f"weight {weight} for version {version} is outside 0.0-1.0")
        primary_version = self._version(function, primary)
        for version in weights:
            extra = self._version(function, version)
            if extra.role != primary_version.role:
                raise InvalidRequestError(f"versions {primary} and {version} have different execution roles")
            if extra.dead_letter_target_arn != primary_version.dead_letter_target_arn:
                raise InvalidRequestError(
                    f"versions {primary} and {version} have different dead-letter configurations"
                )

    def _record(self, operation: str, function: FakeFunction, alias: str, state: AliasState) -> None:
        self.writes.append(
            RecordedWrite(
                operation=operation,
                function_name=function.name,
                alias=alias,
                primary=state.function_version,
                routing=dict(state.routing),
                revision_id=state.revision_id,
            )
        )


def _version_info(target: Target, function: FakeFunction, found: FakeVersion) -> VersionInfo:
    return VersionInfo(
        version=found.version,
        state=found.state,
        last_update_status=found.last_update_status,
        role=found.role,
        dead_letter_target_arn=found.dead_letter_target_arn,
        code_sha256=found.code_sha256,
        function_arn=f"arn:aws:lambda:{target.region}:{FAKE_ACCOUNT}:function:{function.name}:{found.version}",
        description=found.description,
    )


def _alias_state(alias: FakeAlias) -> AliasState:
    return AliasState(
        function_version=alias.function_version,
        routing={version: fraction_to_percent(weight) for version, weight in alias.weights.items()},
        revision_id=alias.revision_id,
    )


def _function_name(name_or_arn: str) -> str:
    """``fn``, ``123456789012:function:fn`` and ``arn:aws:lambda:...:function:fn`` all name ``fn``."""
    if ":function:" in name_or_arn:
        return name_or_arn.split(":function:", 1)[1].split(":", 1)[0]
    return name_or_arn


def _code_sha256(seed: str) -> str:
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()
