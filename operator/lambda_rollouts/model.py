"""The LambdaRollout API: spec and status models, and the typed constants they use.

Contract:
- ``RolloutSpec`` parses ``spec`` exactly as the CRD in ``crds/`` admits it (camelCase on the
  wire, snake_case in Python). Anything the CRD schema admits but that cannot work is rejected
  here with a ``SpecError`` naming the field.
- ``RolloutStatus`` is the whole ``status`` object; it is rebuilt and written once per reconcile.
- Phases, condition types and reasons are defined once, here.
- ``expand_strategy`` turns every strategy (steps, linear, all-at-once, CodeDeploy presets) into
  one normalised list of ``SetWeight`` / ``Pause`` steps; the planner only ever sees that list.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from lambda_rollouts.errors import SpecError

GROUP: Final = "lambda.rollouts.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "lambdarollouts"
KIND: Final = "LambdaRollout"
API_VERSION: Final = f"{GROUP}/{VERSION}"


class Phase(enum.StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"


class ConditionType(enum.StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Reason(enum.StrEnum):
    """Reasons used in conditions and Kubernetes Events (CamelCase, as Kubernetes expects)."""

    # Progress.
    PROGRESSING = "Progressing"
    STEP_COMPLETED = "StepCompleted"
    WEIGHT_SET = "WeightSet"
    PAUSED_BY_SPEC = "PausedBySpec"
    PAUSED_BY_STEP = "PausedByStep"
    RESUMED = "Resumed"
    RESTORING_STABLE = "RestoringStable"
    # Outcomes.
    SUCCEEDED = "Succeeded"
    ALIAS_CREATED = "AliasCreated"
    ADOPTED = "Adopted"
    ROLLED_BACK = "RolledBack"
    # Failures (Stalled=True).
    INVALID_SPEC = "InvalidSpec"
    FUNCTION_NOT_FOUND = "FunctionNotFound"
    VERSION_NOT_FOUND = "VersionNotFound"
    VERSION_NOT_ACTIVE = "VersionNotActive"
    INCOMPATIBLE_VERSIONS = "IncompatibleVersions"
    CREDENTIALS_MISSING = "CredentialsMissing"
    ACCESS_DENIED = "AccessDenied"
    # Transient trouble (Stalled stays False, the reconcile is retried).
    ALIAS_CONFLICT = "AliasConflict"
    THROTTLED = "Throttled"
    AWS_UNAVAILABLE = "AwsUnavailable"
    KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
    # A request AWS refused as malformed: a rule the operator failed to enforce.
    INVALID_REQUEST = "InvalidRequest"
    # Deletion.
    DELETING = "Deleting"


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


# ---------------------------------------------------------------------------------------------
# Durations in the Kubernetes/Go form: "30s", "5m", "1h30m", "1.5h", "250ms".

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|h|m|s))+$"
_UNIT_SECONDS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Return the number of seconds in a Go-style duration; raise ValueError when malformed."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a form like 30s, 5m or 1h30m")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """Render seconds the way people write them in specs: 5m, 1h30m, 45s, 3m12s."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]


# ---------------------------------------------------------------------------------------------
# Spec.


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PauseStep(_Model):
    duration: Duration | None = None


class CanaryStep(_Model):
    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: PauseStep | None = None

    @model_validator(mode="after")
    def _exactly_one_field(self) -> CanaryStep:
        if len(self.model_fields_set & {"set_weight", "pause"}) != 1:
            raise ValueError("each step must set exactly one of setWeight, pause")
        return self


class CanaryStrategy(_Model):
    steps: list[CanaryStep] = Field(min_length=1)


class LinearStrategy(_Model):
    step_weight: int = Field(ge=1, le=99)
    interval: Duration


class AllAtOnceStrategy(_Model):
    pass


class Preset(enum.StrEnum):
    """Every CodeDeploy predefined Lambda deployment configuration, under its CodeDeploy name."""

    CANARY_10_PERCENT_5_MINUTES = "Canary10Percent5Minutes"
    CANARY_10_PERCENT_10_MINUTES = "Canary10Percent10Minutes"
    CANARY_10_PERCENT_15_MINUTES = "Canary10Percent15Minutes"
    CANARY_10_PERCENT_30_MINUTES = "Canary10Percent30Minutes"
    LINEAR_10_PERCENT_EVERY_1_MINUTE = "Linear10PercentEvery1Minute"
    LINEAR_10_PERCENT_EVERY_2_MINUTES = "Linear10PercentEvery2Minutes"
    LINEAR_10_PERCENT_EVERY_3_MINUTES = "Linear10PercentEvery3Minutes"
    LINEAR_10_PERCENT_EVERY_10_MINUTES = "Linear10PercentEvery10Minutes"
    ALL_AT_ONCE = "AllAtOnce"


_PRESET_SHAPES: Final[dict[Preset, tuple[str, int, int]]] = {
    # kind, weight percent, minutes
    Preset.CANARY_10_PERCENT_5_MINUTES: ("canary", 10, 5),
    Preset.CANARY_10_PERCENT_10_MINUTES: ("canary", 10, 10),
    Preset.CANARY_10_PERCENT_15_MINUTES: ("canary", 10, 15),
    Preset.CANARY_10_PERCENT_30_MINUTES: ("canary", 10, 30),
    Preset.LINEAR_10_PERCENT_EVERY_1_MINUTE: ("linear", 10, 1),
    Preset.LINEAR_10_PERCENT_EVERY_2_MINUTES: ("linear", 10, 2),
    Preset.LINEAR_10_PERCENT_EVERY_3_MINUTES: ("linear", 10, 3),
    Preset.LINEAR_10_PERCENT_EVERY_10_MINUTES: ("linear", 10, 10),
    Preset.ALL_AT_ONCE: ("allAtOnce", 0, 0),
}


class Strategy(_Model):
    preset: Preset | None = None
    canary: CanaryStrategy | None = None
    linear: LinearStrategy | None = None
    all_at_once: AllAtOnceStrategy | None = None

    @model_validator(mode="after")
    def _exactly_one_strategy(self) -> Strategy:
        chosen = self.model_fields_set & {"preset", "canary", "linear", "all_at_once"}
        if len(chosen) != 1:
            raise ValueError("strategy must set exactly one of preset, canary, linear, allAtOnce")
        return self


VERSION_PATTERN: Final = r"^[0-9]+$"
# An alias name is letters, digits, - and _, and never all digits (that would read as a version).
ALIAS_PATTERN: Final = r"^[a-zA-Z0-9_-]*[a-zA-Z_-][a-zA-Z0-9_-]*$"
ROLE_ARN_PATTERN: Final = r"^arn:aws[a-zA-Z-]*:iam::[0-9]{12}:role/.+$"
REGION_PATTERN: Final = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"


class RolloutSpec(_Model):
    function_name: str = Field(min_length=1, max_length=170)
    alias: str = Field(min_length=1, max_length=128, pattern=ALIAS_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN, max_length=10)
    region: str | None = Field(default=None, pattern=REGION_PATTERN)
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    strategy: Strategy
    progress_deadline_seconds: int | None = Field(default=None, ge=1)
    paused: bool = False

    @classmethod
    def parse(cls, raw: Any) -> RolloutSpec:
        """Validate a raw ``spec`` dict; raise ``SpecError`` with every problem, field by field."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                location = ".".join(str(part) for part in error["loc"])
                prefix = f"spec.{location}: " if location else "spec: "
                problems.append(prefix + error["msg"].removeprefix("Value error, "))
            raise SpecError("; ".join(problems)) from exc


# ---------------------------------------------------------------------------------------------
# Normalised steps.


@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class Pause:
    seconds: float | None  # None: wait indefinitely


Step = SetWeight | Pause


def _shift_steps(kind: str, weight: int, seconds: float) -> list[Step]:
    if kind == "allAtOnce":
        return []
    if kind == "canary":
        return [SetWeight(weight), Pause(seconds)]
    steps: list[Step] = []
    for current in range(weight, 100, weight):
        steps += [SetWeight(current), Pause(seconds)]
    return steps


def expand_strategy(strategy: Strategy) -> list[Step]:
    """The steps before full promotion. Promotion (100% on the new version) follows the last one."""
    if strategy.preset is not None:
        kind, weight, minutes = _PRESET_SHAPES[strategy.preset]
        return _shift_steps(kind, weight, minutes * 60.0)
    if strategy.linear is not None:
        return _shift_steps("linear", strategy.linear.step_weight, parse_duration(strategy.linear.interval))
    if strategy.canary is not None:
        steps: list[Step] = []
        for step in strategy.canary.steps:
            if step.set_weight is not None:
                steps.append(SetWeight(step.set_weight))
            elif step.pause is not None:
                duration = step.pause.duration
                steps.append(Pause(parse_duration(duration) if duration is not None else None))
        return steps
    return []


def describe_step(step: Step) -> str:
    if isinstance(step, SetWeight):
        return f"setWeight {step.weight}"
    if step.seconds is None:
        return "pause until promoted"
    return f"pause {format_duration(step.seconds)}"


# ---------------------------------------------------------------------------------------------
# Status.


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class RolloutStatus(_Model):
    """The whole status subresource. Timestamps are RFC 3339 UTC strings."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    observed_generation: int | None = None
    phase: Phase | None = None
    stable_version: str | None = None
    canary_version: str | None = None
    canary_weight: float | None = None
    current_step_index: int | None = None
    step_count: int | None = None
    message: str | None = None
    # When the current step started; a timed pause ends ``duration`` after it (minus time held).
    step_started_at: str | None = None
    # Set while ``spec.paused`` holds the rollout; the hold time is added back on resume.
    paused_at: str | None = None
    # Versions that passed the pre-flight checks, as "stable->canary".
    verified_pair: str | None = None
    # Consecutive failed reconciles, for the retry backoff.
    retry_count: int = 0
    conditions: list[Condition] = Field(default_factory=list)

    @classmethod
    def parse(cls, raw: Any) -> RolloutStatus:
        """Read a stored status leniently: a status we cannot read is a status we start over from."""
        try:
            return cls.model_validate(raw or {})
        except ValidationError:
            return cls()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
