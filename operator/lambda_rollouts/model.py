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
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
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
    # The operator's own: the alias was changed outside the operator (True while paused for it).
    DRIFTED = "Drifted"


class DriftPolicy(enum.StrEnum):
    """What the operator does when the alias was changed outside it."""

    PAUSE = "Pause"  # hold, say what changed, write nothing until a person decides
    CORRECT = "Correct"  # restore the planned state with one write


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
    FORBIDDEN = "Forbidden"
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
    # Drift.
    DRIFTED = "Drifted"
    DRIFT_CORRECTED = "DriftCorrected"
    DRIFT_RESOLVED = "DriftResolved"
    # Manual actions.
    ABORTED = "Aborted"
    ACTION_APPLIED = "ActionApplied"
    ACTION_REJECTED = "ActionRejected"
    PAUSED_BY_ACTION = "PausedByAction"
    PROMOTED_BY_ACTION = "PromotedByAction"
    # versionFrom.
    NO_VERSION_MATCHES = "NoVersionMatches"
    AMBIGUOUS_VERSION = "AmbiguousVersion"
    # Analysis and hooks.
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    ANALYSIS_ERROR = "AnalysisError"
    HOOK_SUCCEEDED = "HookSucceeded"
    AWAITING_CONFIRMATION = "AwaitingConfirmation"
    # Automatic rollback (Stalled=True; the rollout stays rolled back until spec.version changes).
    ANALYSIS_FAILED = "AnalysisFailed"
    HOOK_FAILED = "HookFailed"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    ALARM_NOT_FOUND = "AlarmNotFound"
    # Notifications (Events only): a delivery that failed or was refused, and a subscription of the
    # spec that tenancy or the address rule refuses.
    NOTIFICATION_FAILED = "NotificationFailed"
    NOTIFICATION_REFUSED = "NotificationRefused"


# The rollbacks the rollout decides itself (Warning Events, Stalled=True). A notification subscribed
# to RolledBack hears of them too: each says that traffic went back to the stable version.
ROLLBACK_REASONS: Final = frozenset(
    {Reason.ANALYSIS_FAILED, Reason.HOOK_FAILED, Reason.PROGRESS_DEADLINE_EXCEEDED, Reason.ABORTED}
)


class Verdict(enum.StrEnum):
    """The outcome of one measurement, or of one check within it."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class InconclusivePolicy(enum.StrEnum):
    """What an inconclusive measurement does to the rollout."""

    PAUSE = "Pause"  # hold where it is, keep measuring; a conclusive success resumes it
    FAIL = "Fail"  # count it as a failed measurement
    CONTINUE = "Continue"  # go on as if it had passed (the status still records it)


class BuiltinMetric(enum.StrEnum):
    """Per-version metrics read from AWS/Lambda for the new version only."""

    ERROR_RATE = "error-rate"  # percent of invocations that errored
    THROTTLES = "throttles"  # throttled invocations in the window (a count)
    AVERAGE_DURATION = "average-duration"  # milliseconds
    P90_DURATION = "p90-duration"  # milliseconds
    P99_DURATION = "p99-duration"  # milliseconds


class HookPoint(enum.StrEnum):
    BEFORE_ALLOW_TRAFFIC = "beforeAllowTraffic"
    AFTER_ALLOW_TRAFFIC = "afterAllowTraffic"
    CONFIRM_PROMOTION = "confirmPromotion"


class HookResult(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    WAITING = "Waiting"


class ManualAction(enum.StrEnum):
    """What a person (or CI, or Argo CD) can ask of a rollout without editing its spec.

    Asked through the annotation ``ACTION_ANNOTATION``, whose value is the action, optionally
    followed by ``:`` and an id that the acknowledgement in ``status.lastAction`` repeats.
    """

    PROMOTE = "promote"  # move past the current wait: a pause, an analysis step, a hold, a gate
    PROMOTE_FULL = "promote-full"  # skip every remaining step and analysis: promote now
    ABORT = "abort"  # all traffic back to the stable version; holds like a rollback
    RETRY = "retry"  # start the same version again after a rollback or an abort
    PAUSE = "pause"  # hold where it is (like spec.paused, without editing the spec)
    RESUME = "resume"  # undo pause


class ActionResult(enum.StrEnum):
    APPLIED = "Applied"
    REJECTED = "Rejected"


ACTION_ANNOTATION: Final = f"{GROUP}/action"
ACTION_ID_PATTERN: Final = r"^[A-Za-z0-9._-]{1,64}$"


def parse_action_request(value: str) -> tuple[ManualAction | None, str]:
    """(action, id) from an annotation value like ``promote`` or ``promote:ci-123``.

    The action is None when the value names none; the id is "" when the value has none.
    """
    name, _, action_id = value.strip().partition(":")
    try:
        return ManualAction(name.strip()), action_id.strip()
    except ValueError:
        return None, action_id.strip()


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


# Timestamps live in status as RFC 3339 UTC strings.


def format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Spec.


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PauseStep(_Model):
    duration: Duration | None = None


QUERY_NAME_PATTERN: Final = r"^[a-z][a-zA-Z0-9_]*$"
STATISTIC_PATTERN: Final = r"^(SampleCount|Average|Sum|Minimum|Maximum|p[0-9]{1,2}(\.[0-9]{1,2})?)$"
# Placeholders a custom query's dimension values may use; filled in per measurement.
QUERY_PLACEHOLDERS: Final = ("{{function}}", "{{alias}}", "{{version}}", "{{stableVersion}}")


class MetricCheck(_Model):
    """A built-in per-version metric and its bounds."""

    name: BuiltinMetric
    max: float = Field(ge=0)
    # The new version may be at most this many times the stable version's value, measured the
    # same way over the same window.
    max_ratio_to_stable: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ratio_needs_a_rate(self) -> MetricCheck:
        if self.name == BuiltinMetric.THROTTLES and self.max_ratio_to_stable is not None:
            raise ValueError(
                "maxRatioToStable does not apply to throttles: a count depends on each version's share "
                "of traffic"
            )
        return self


class MetricDimension(_Model):
    name: str = Field(min_length=1, max_length=255)
    value: str = Field(min_length=1, max_length=1024)


class MetricIdentity(_Model):
    namespace: str = Field(min_length=1, max_length=255)
    metric_name: str = Field(min_length=1, max_length=255)
    dimensions: list[MetricDimension] = Field(default_factory=list, max_length=30)


class MetricStat(_Model):
    metric: MetricIdentity
    stat: str = Field(pattern=STATISTIC_PATTERN)
    unit: str | None = None


class QueryCheck(_Model):
    """A custom CloudWatch metric; its value over the window must lie within [min, max]."""

    name: str = Field(min_length=1, max_length=64, pattern=QUERY_NAME_PATTERN)
    metric_stat: MetricStat
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> QueryCheck:
        if self.min is None and self.max is None:
            raise ValueError(f"query {self.name} needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"query {self.name}: min is above max")
        return self


ALARM_NAME_MAX: Final = 255


class AnalysisSpec(_Model):
    """Health checks of the new version. Every field is optional in an analysis step, where an
    unset field takes its value from ``spec.analysis``."""

    interval: Duration | None = None
    alarms: list[Annotated[str, Field(min_length=1, max_length=ALARM_NAME_MAX)]] | None = Field(
        default=None, max_length=100
    )
    alarm_prefix: str | None = Field(default=None, min_length=1, max_length=ALARM_NAME_MAX)
    metrics: list[MetricCheck] | None = None
    queries: list[QueryCheck] | None = Field(default=None, max_length=100)
    min_invocations: int | None = Field(default=None, ge=1)
    failure_limit: int | None = Field(default=None, ge=0)
    consecutive_success_limit: int | None = Field(default=None, ge=1)
    error_limit: int | None = Field(default=None, ge=0)
    on_inconclusive: InconclusivePolicy | None = None

    @model_validator(mode="after")
    def _names_are_unique(self) -> AnalysisSpec:
        metric_names = [check.name.value for check in self.metrics or []]
        query_names = [check.name for check in self.queries or []]
        for kind, names in (("metrics", metric_names), ("queries", query_names)):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"{kind} names must be unique: {', '.join(repeated)} repeated")
        if self.interval is not None and parse_duration(self.interval) < 1:
            raise ValueError("interval must be at least 1s")
        return self

    def merged_over(self, base: AnalysisSpec | None) -> AnalysisSpec:
        """This analysis with every unset field taken from ``base``."""
        if base is None:
            return self
        own = {name: getattr(self, name) for name in self.model_fields_set}
        return base.model_copy(update=own)

    @property
    def has_checks(self) -> bool:
        return bool(self.alarms or self.alarm_prefix or self.metrics or self.queries)


@dataclass(frozen=True)
class AnalysisSettings:
    """An ``AnalysisSpec`` with every default filled in; what the planner and the analysis use."""

    interval_seconds: float
    alarms: tuple[str, ...]
    alarm_prefix: str | None
    metrics: tuple[MetricCheck, ...]
    queries: tuple[QueryCheck, ...]
    min_invocations: int
    failure_limit: int
    consecutive_success_limit: int
    error_limit: int
    on_inconclusive: InconclusivePolicy

    @classmethod
    def of(cls, analysis: AnalysisSpec) -> AnalysisSettings:
        return cls(
            interval_seconds=parse_duration(analysis.interval or "1m"),
            alarms=tuple(analysis.alarms or ()),
            alarm_prefix=analysis.alarm_prefix,
            metrics=tuple(analysis.metrics or ()),
            queries=tuple(analysis.queries or ()),
            min_invocations=analysis.min_invocations or 1,
            failure_limit=analysis.failure_limit or 0,
            consecutive_success_limit=analysis.consecutive_success_limit or 1,
            error_limit=4 if analysis.error_limit is None else analysis.error_limit,
            on_inconclusive=analysis.on_inconclusive or InconclusivePolicy.PAUSE,
        )


HOOK_TIMEOUT_MAX_SECONDS: Final = 900.0
URL_PATTERN: Final = r"^https?://[^\s]+$"


class Hook(_Model):
    """A Lambda function invoked synchronously, or an HTTP endpoint called with a JSON POST."""

    function_name: str | None = Field(default=None, min_length=1, max_length=170)
    # The version or alias of the hook function to invoke; its unqualified ARN by default.
    qualifier: str | None = Field(default=None, min_length=1, max_length=128)
    url: str | None = Field(default=None, max_length=2048, pattern=URL_PATTERN)
    timeout: Duration = "30s"
    retries: int = Field(default=2, ge=0, le=10)

    @model_validator(mode="after")
    def _one_target(self) -> Hook:
        if (self.function_name is None) == (self.url is None):
            raise ValueError("a hook sets exactly one of functionName, url")
        if self.qualifier is not None and self.function_name is None:
            raise ValueError("qualifier applies to a functionName hook only")
        if not 0 < parse_duration(self.timeout) <= HOOK_TIMEOUT_MAX_SECONDS:
            raise ValueError("timeout must be more than 0s and at most 15m")
        return self

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)

    def describe(self) -> str:
        """Where the hook goes, without anything secret (no query string, no credentials)."""
        if self.function_name is not None:
            return f"function {self.function_name}" + (f":{self.qualifier}" if self.qualifier else "")
        return f"webhook {redact_url(self.url or '')}"


class ConfirmHook(Hook):
    # How long to wait between asking again while the answer is "not yet".
    interval: Duration = "30s"


def redact_url(url: str) -> str:
    """scheme://host/path of a URL: credentials and query strings never reach logs or status."""
    match = re.match(r"^(https?://)(?:[^@/]*@)?([^/?#]*)([^?#]*)", url)
    return "".join(match.groups()) if match else "<url>"


class Hooks(_Model):
    before_allow_traffic: Hook | None = None
    after_allow_traffic: Hook | None = None
    confirm_promotion: ConfirmHook | None = None


# Notifications: who is told what happened to a rollout (lambda_rollouts.notifications sends them).
SECRET_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"
MAX_NOTIFICATIONS: Final = 20
NOTIFICATION_CHANNEL_MESSAGE: Final = "a notification sets exactly one of webhook, slack, teams"
NOTIFICATION_EVENTS_MESSAGE: Final = (
    "NotificationFailed cannot be subscribed to: a failed notification is reported by a Warning Event "
    "and the lambda_rollouts_notifications_total metric"
)


class NotificationChannel(enum.StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    TEAMS = "teams"


class SecretKeyRef(_Model):
    """One key of a Secret in the rollout's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN)
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)


class WebhookNotification(_Model):
    """A JSON POST to ``url``, signed with HMAC-SHA256 when ``secret_ref`` names the key."""

    url: str = Field(max_length=2048, pattern=URL_PATTERN)
    secret_ref: SecretKeyRef | None = None


class ChatNotification(_Model):
    """A Slack or Teams incoming webhook, whose URL (a secret itself) is read from a Secret."""

    webhook_secret_ref: SecretKeyRef


class Notification(_Model):
    """Who is told when the rollout posts an Event with one of ``events`` as its reason."""

    events: list[Reason] = Field(min_length=1, max_length=len(Reason))
    webhook: WebhookNotification | None = None
    slack: ChatNotification | None = None
    teams: ChatNotification | None = None

    @field_validator("events")
    @classmethod
    def _events_can_be_notified(cls, value: list[Reason]) -> list[Reason]:
        if Reason.NOTIFICATION_FAILED in value:
            raise ValueError(NOTIFICATION_EVENTS_MESSAGE)
        return value

    @model_validator(mode="after")
    def _one_channel(self) -> Notification:
        if [self.webhook, self.slack, self.teams].count(None) != 2:
            raise ValueError(NOTIFICATION_CHANNEL_MESSAGE)
        return self

    @property
    def channel(self) -> NotificationChannel:
        if self.webhook is not None:
            return NotificationChannel.WEBHOOK
        return NotificationChannel.SLACK if self.slack is not None else NotificationChannel.TEAMS


class CanaryStep(_Model):
    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: PauseStep | None = None
    analysis: AnalysisSpec | None = None

    @model_validator(mode="after")
    def _exactly_one_field(self) -> CanaryStep:
        if len(self.model_fields_set & {"set_weight", "pause", "analysis"}) != 1:
            raise ValueError("each step must set exactly one of setWeight, pause, analysis")
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


def function_parts(function_name: str) -> tuple[str, str | None, str | None]:
    """(plain name, account or None, region or None) from a name, a partial ARN or a full ARN."""
    parts = function_name.split(":")
    if "function" not in parts:
        return function_name, None, None
    at = parts.index("function")
    name = parts[at + 1] if at + 1 < len(parts) else ""
    account = parts[at - 1] if at >= 1 and parts[at - 1].isdigit() else None
    region = parts[3] if parts[0] == "arn" and at == 5 and parts[3] else None
    return name, account, region


def function_region(function_name: str, otherwise: str) -> str:
    """The region a function is called in: its full ARN's (Lambda answers a call for a function of
    another region with "Functions from '<region>' are not reachable in this region"), else
    ``otherwise``."""
    return function_parts(function_name)[2] or otherwise


CODE_SHA256_PATTERN: Final = r"^[A-Za-z0-9+/]{43}=$"


class VersionFrom(_Model):
    """Find the published version by what a build knows: the code's hash (and a description)."""

    code_sha256: str = Field(pattern=CODE_SHA256_PATTERN)
    description: str | None = Field(default=None, max_length=256)

    def describe(self) -> str:
        described = f" and description {self.description!r}" if self.description is not None else ""
        return f"codeSha256 {self.code_sha256}{described}"


class RolloutSpec(_Model):
    function_name: str = Field(min_length=1, max_length=170)
    alias: str = Field(min_length=1, max_length=128, pattern=ALIAS_PATTERN)
    # Exactly one of version and versionFrom; the operator resolves versionFrom to a version.
    version: str | None = Field(default=None, pattern=VERSION_PATTERN, max_length=10)
    version_from: VersionFrom | None = None
    region: str | None = Field(default=None, pattern=REGION_PATTERN)
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    strategy: Strategy
    analysis: AnalysisSpec | None = None
    hooks: Hooks | None = None
    progress_deadline_seconds: int | None = Field(default=None, ge=1)
    paused: bool = False
    on_drift: DriftPolicy = DriftPolicy.PAUSE
    notifications: list[Notification] = Field(default_factory=list, max_length=MAX_NOTIFICATIONS)

    @model_validator(mode="after")
    def _one_version(self) -> RolloutSpec:
        if (self.version is None) == (self.version_from is None):
            raise ValueError("set exactly one of version, versionFrom")
        return self

    @property
    def desired_version(self) -> str:
        """The version to roll out; a versionFrom spec must be resolved first (``resolved``)."""
        if self.version is None:
            raise SpecError("spec.versionFrom has not been resolved to a version yet")
        return self.version

    @model_validator(mode="after")
    def _region_is_the_arns(self) -> RolloutSpec:
        # Lambda answers calls for a function of another region with "Functions from '<region>'
        # are not reachable in this region": refused before any call, with both regions named.
        arn_region = function_parts(self.function_name)[2]
        if self.region is not None and arn_region is not None and arn_region != self.region:
            raise ValueError(
                f"region {self.region} contradicts functionName, a function ARN of region {arn_region}"
            )
        return self

    def region_or(self, default_region: str) -> str:
        """The region of the rollout's function: ``spec.region``, else its full ARN's (the two
        agree when both are given), else the operator's default."""
        return self.region or function_region(self.function_name, default_region)

    def resolved(self, version: str) -> RolloutSpec:
        """This spec with versionFrom resolved to ``version``."""
        return self.model_copy(update={"version": version})

    @model_validator(mode="after")
    def _analysis_is_complete(self) -> RolloutSpec:
        if self.analysis is not None and not self.analysis.has_checks:
            raise ValueError("analysis needs at least one of alarms, alarmPrefix, metrics, queries")
        canary = self.strategy.canary
        for position, step in enumerate(canary.steps if canary else []):
            if step.analysis is not None and not step.analysis.merged_over(self.analysis).has_checks:
                raise ValueError(
                    f"strategy.canary.steps[{position}].analysis has no checks and spec.analysis "
                    "gives none to inherit"
                )
        return self

    def steps(self) -> list[Step]:
        """The normalised steps of this rollout (see ``expand_strategy``)."""
        return expand_strategy(self.strategy, self.analysis)

    def background_analysis(self) -> AnalysisSettings | None:
        return AnalysisSettings.of(self.analysis) if self.analysis is not None else None

    def hook(self, point: HookPoint) -> Hook | None:
        if self.hooks is None:
            return None
        return {
            HookPoint.BEFORE_ALLOW_TRAFFIC: self.hooks.before_allow_traffic,
            HookPoint.AFTER_ALLOW_TRAFFIC: self.hooks.after_allow_traffic,
            HookPoint.CONFIRM_PROMOTION: self.hooks.confirm_promotion,
        }[point]

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


@dataclass(frozen=True)
class Analyze:
    """A blocking analysis: the rollout waits for its verdict before the next step."""

    analysis: AnalysisSettings


Step = SetWeight | Pause | Analyze


def _shift_steps(kind: str, weight: int, seconds: float) -> list[Step]:
    if kind == "allAtOnce":
        return []
    if kind == "canary":
        return [SetWeight(weight), Pause(seconds)]
    steps: list[Step] = []
    for current in range(weight, 100, weight):
        steps += [SetWeight(current), Pause(seconds)]
    return steps


def expand_strategy(strategy: Strategy, background: AnalysisSpec | None = None) -> list[Step]:
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
            elif step.analysis is not None:
                steps.append(Analyze(AnalysisSettings.of(step.analysis.merged_over(background))))
        return steps
    return []


def describe_step(step: Step) -> str:
    if isinstance(step, SetWeight):
        return f"setWeight {step.weight}"
    if isinstance(step, Analyze):
        return "analysis"
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


class CheckResult(_Model):
    """One check of one measurement: what was measured against what bound."""

    name: str
    verdict: Verdict
    value: float | None = None
    message: str = ""


class AnalysisStatus(_Model):
    """The running tally of one analysis: the background one, or a blocking step's."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    # None for the background analysis; the step's index for a blocking analysis step.
    step_index: int | None = None
    started_at: str
    next_measurement_at: str
    measurements: int = 0
    successes: int = 0
    failures: int = 0
    inconclusives: int = 0
    errors: int = 0
    consecutive_successes: int = 0
    consecutive_errors: int = 0
    # Set while an inconclusive measurement holds the rollout (onInconclusive: Pause).
    holding: bool = False
    last_verdict: Verdict | None = None
    last_measured_at: str | None = None
    last_message: str | None = None
    results: list[CheckResult] = Field(default_factory=list)


class DriftStatus(_Model):
    """The alias as the operator left it and as someone else changed it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    expected: str
    observed: str
    since: str
    # The phase to return to when the change is undone.
    previous_phase: Phase


class LastAction(_Model):
    """The acknowledgement of the last manual action: what was asked, and what came of it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    action: str
    id: str = ""
    result: ActionResult
    message: str = ""
    at: str
    # Where the rollout was when the action was handled: its step (status.currentStepIndex) and
    # the version rolling out, so that a later rollout does not inherit what the action did.
    step_index: int | None = None
    version: str | None = None


class HookStatus(_Model):
    """The latest outcome of one hook point for the current new version."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    point: HookPoint
    version: str
    result: HookResult
    attempts: int = 0
    message: str = ""
    at: str
    # When a waiting gate (confirmPromotion) is asked again.
    next_attempt_at: str | None = None


class PendingNotification(_Model):
    """A notification due but not delivered yet: what it says, and the subscriptions still to tell.

    Kept in status from the pass that decided it until every subscription has it (or was given up
    on), so that a restarted operator still sends it, under the same ``id``.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    id: str
    reason: str
    type: str = EventType.NORMAL.value
    message: str = ""
    at: str
    function_name: str = ""
    alias: str = ""
    phase: str | None = None
    stable_version: str | None = None
    canary_version: str | None = None
    canary_weight: float | None = None
    # The keys of the subscriptions still to deliver to (``lambda_rollouts.notifications``).
    subscriptions: list[str] = Field(default_factory=list)


def step_label(phase: str | None, index: int | None, count: int | None) -> str | None:
    """Where a rollout is, counted from 1 as its messages count ("step 2/4"): ``2/4``; ``promotion``
    once past the last step; ``done`` once Healthy; None before the operator has counted the steps.
    """
    if phase == Phase.HEALTHY:
        return "done"
    if index is None or count is None:
        return None
    return "promotion" if index >= count else f"{index + 1}/{count}"


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
    # The last time the rollout moved forward; progressDeadlineSeconds counts from it.
    last_progress_at: str | None = None
    # Set when this attempt was rolled back (analysis, hook, deadline); it holds until
    # spec.version changes.
    aborted_at: str | None = None
    analysis: AnalysisStatus | None = None
    step_analysis: AnalysisStatus | None = None
    hooks: list[HookStatus] | None = None
    # Set while a "pause" action holds the rollout (until "resume").
    paused_by_action: bool | None = None
    # Set while the rollout is paused because the alias was changed outside the operator.
    drift: DriftStatus | None = None
    last_action: LastAction | None = None
    # The published version that spec.versionFrom resolved to, and what it was resolved from.
    resolved_version: str | None = None
    resolved_from: str | None = None
    # Notifications decided but not yet delivered (lambda_rollouts.notifications).
    pending_notifications: list[PendingNotification] | None = None
    conditions: list[Condition] = Field(default_factory=list)
    # The current step as the messages count them (step_label), for people and the printer column.
    # Derived: to_wire writes it from phase, currentStepIndex and stepCount, whatever it holds here.
    step: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> RolloutStatus:
        """Read a stored status leniently: a status we cannot read is a status we start over from."""
        try:
            return cls.model_validate(raw or {})
        except ValidationError:
            return cls()

    def to_wire(self) -> dict[str, Any]:
        wire = self.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"step"})
        step = step_label(self.phase, self.current_step_index, self.step_count)
        if step is not None:
            wire["step"] = step
        return wire
