"""The LambdaRollout CustomResourceDefinition, built from the API constants in ``model``.

Contract:
- ``build_crd()`` returns the apiextensions.k8s.io/v1 CustomResourceDefinition as a plain dict:
  group ``lambda.rollouts.dev``, version ``v1alpha1`` (served, storage), kind ``LambdaRollout``,
  namespaced, with the status subresource, printer columns and a structural schema.
- The schema declares the fields of ``model.RolloutSpec`` with the same names, types, patterns,
  bounds, enums, maxItems and required fields, except that an integer field a CEL rule reads
  (``setWeight``) is declared a number with ``multipleOf: 1``: kube-apiserver hands a JSON ``10.0``
  in an integer field to CEL as a float and fails every rule that reads it, while a number reads
  as 10 or 10.0 alike and ``multipleOf`` still rejects 10.5, as the model does. Its one-of and
  cross-field rules are CEL
  ``x-kubernetes-validations`` whose messages are the model's own words (a query's, computed with
  ``messageExpression``, names the query as the model does): a spec sets exactly one of version and
  versionFrom, a strategy and a step each set exactly one field, a hook names exactly one of
  functionName and url and a qualifier only with functionName, a query has min or max and
  min <= max, throttles takes no maxRatioToStable, spec.analysis has at least one check, and a
  notification sets exactly one of webhook, slack and teams and never subscribes to
  NotificationFailed.
  Metric and query names are unique per analysis through ``x-kubernetes-list-type: map`` (the API
  server's "Duplicate value" error).
- What the schema admits but the model still rejects, because it needs duration arithmetic or
  merging: an analysis interval under 1s, a hook timeout of 0s or over 15m, and an analysis step
  that has no checks while spec.analysis gives none to inherit. The operator reports those as
  ``InvalidSpec``.
- Every field of ``model.RolloutStatus`` is declared, nested ones included, so that the API server
  never prunes status the operator writes.
- ``render_crd_yaml()`` is the text of ``crds/lambdarollouts.yaml``; a test keeps the two equal.
  Regenerate the file with ``python -m lambda_rollouts.crd > crds/lambdarollouts.yaml``.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from lambda_rollouts.model import (
    ALARM_NAME_MAX,
    ALIAS_PATTERN,
    CODE_SHA256_PATTERN,
    DURATION_PATTERN,
    GROUP,
    KIND,
    MAX_NOTIFICATIONS,
    NOTIFICATION_CHANNEL_MESSAGE,
    NOTIFICATION_EVENTS_MESSAGE,
    PLURAL,
    QUERY_NAME_PATTERN,
    REGION_PATTERN,
    ROLE_ARN_PATTERN,
    SECRET_KEY_PATTERN,
    SECRET_NAME_PATTERN,
    STATISTIC_PATTERN,
    URL_PATTERN,
    VERSION,
    VERSION_PATTERN,
    ActionResult,
    BuiltinMetric,
    DriftPolicy,
    HookPoint,
    HookResult,
    InconclusivePolicy,
    ManualAction,
    Phase,
    Preset,
    Reason,
    Verdict,
)

SINGULAR: Final = "lambdarollout"
SHORT_NAMES: Final = ("lro",)
CATEGORIES: Final = ("rollouts",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"


# ---------------------------------------------------------------------------------------------
# CEL rules. Each message is the model's own wording, so kubectl and the operator's InvalidSpec
# condition say the same thing.
#
# kube-apiserver refuses a CRD whose rules are estimated too expensive: a rule's cost times the
# number of times its node can occur must stay under 10 million, and all rules together under 100
# million. ``strategy.canary.steps`` has no maxItems (the model sets none), so a node below it
# counts as occurring about a million times; the rules there are written with has() and ternaries
# only, at a cost under 10 each. Uniqueness of metric and query names is a list-type map instead of
# a quadratic CEL rule, which no budget would admit below an unbounded list.

VERSION_RULE: Final = "has(self.version) != has(self.versionFrom)"
VERSION_MESSAGE: Final = "set exactly one of version, versionFrom"
STRATEGY_RULE: Final = (
    "[has(self.preset), has(self.canary), has(self.linear), has(self.allAtOnce)].exists_one(x, x)"
)
STRATEGY_MESSAGE: Final = "strategy must set exactly one of preset, canary, linear, allAtOnce"
STEP_RULE: Final = (
    "has(self.setWeight) ? !has(self.pause) && !has(self.analysis) : has(self.pause) != has(self.analysis)"
)
STEP_MESSAGE: Final = "each step must set exactly one of setWeight, pause, analysis"
ANALYSIS_RULE: Final = (
    "!has(self.analysis)"
    " || (has(self.analysis.alarms) && size(self.analysis.alarms) > 0)"
    " || has(self.analysis.alarmPrefix)"
    " || (has(self.analysis.metrics) && size(self.analysis.metrics) > 0)"
    " || (has(self.analysis.queries) && size(self.analysis.queries) > 0)"
)
ANALYSIS_MESSAGE: Final = "analysis needs at least one of alarms, alarmPrefix, metrics, queries"
HOOK_TARGET_RULE: Final = "has(self.functionName) != has(self.url)"
HOOK_TARGET_MESSAGE: Final = "a hook sets exactly one of functionName, url"
HOOK_QUALIFIER_RULE: Final = "!has(self.qualifier) || has(self.functionName)"
HOOK_QUALIFIER_MESSAGE: Final = "qualifier applies to a functionName hook only"
RATIO_RULE: Final = f"self.name != '{BuiltinMetric.THROTTLES.value}' || !has(self.maxRatioToStable)"
RATIO_MESSAGE: Final = (
    "maxRatioToStable does not apply to throttles: a count depends on each version's share of traffic"
)
QUERY_BOUND_RULE: Final = "has(self.min) || has(self.max)"
QUERY_BOUND_MESSAGE: Final = "a query needs min, max or both"
QUERY_BOUND_MESSAGE_EXPRESSION: Final = "'query ' + self.name + ' needs min, max or both'"
QUERY_ORDER_RULE: Final = "!has(self.min) || !has(self.max) || self.min <= self.max"
QUERY_ORDER_MESSAGE: Final = "a query's min is above its max"
QUERY_ORDER_MESSAGE_EXPRESSION: Final = "'query ' + self.name + ': min is above max'"
NOTIFICATION_CHANNEL_RULE: Final = "[has(self.webhook), has(self.slack), has(self.teams)].exists_one(x, x)"
NOTIFICATION_EVENTS_RULE: Final = f"!('{Reason.NOTIFICATION_FAILED.value}' in self)"

_HEADER: Final = (
    "# Generated by lambda_rollouts.crd: edit operator/lambda_rollouts/crd.py, then run\n"
    "#   python -m lambda_rollouts.crd > crds/lambdarollouts.yaml\n"
)


def _string(description: str, **constraints: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **constraints}


def _integer(description: str, **constraints: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **constraints}


def _number(description: str, **constraints: Any) -> dict[str, Any]:
    return {"type": "number", "description": description, **constraints}


def _whole_number(description: str, **constraints: Any) -> dict[str, Any]:
    """An integer as a CEL rule may read it: 10 and 10.0 alike, never 10.5."""
    return _number(description, multipleOf=1, **constraints)


def _boolean(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _duration(description: str) -> dict[str, Any]:
    return _string(
        description + " A Go-style duration such as 30s, 5m, 1h30m or 1.5h.", pattern=DURATION_PATTERN
    )


def _rule(rule: str, message: str, message_expression: str | None = None) -> dict[str, str]:
    entry = {"rule": rule, "message": message}
    if message_expression is not None:
        # kube-apiserver shows the computed message and falls back to ``message`` if it fails.
        entry["messageExpression"] = message_expression
    return entry


def _metric_check_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            "A built-in metric of the new version, read from AWS/Lambda with the dimensions "
            "FunctionName, Resource=<function>:<alias> and ExecutedVersion=<version>."
        ),
        "required": ["name", "max"],
        "properties": {
            "name": _string(
                "error-rate (percent of invocations that errored), throttles (a count over the "
                "window), average-duration, p90-duration or p99-duration (milliseconds).",
                enum=[metric.value for metric in BuiltinMetric],
            ),
            "max": _number("The highest passing value, in the metric's unit.", minimum=0),
            "maxRatioToStable": _number(
                "Also fail when the new version's value is more than this many times the stable "
                "version's, measured the same way over the same window. Not for throttles.",
                minimum=0,
                exclusiveMinimum=True,
            ),
        },
        "x-kubernetes-validations": [_rule(RATIO_RULE, RATIO_MESSAGE)],
    }


def _query_schema() -> dict[str, Any]:
    dimension = {
        "type": "object",
        "description": "One CloudWatch dimension.",
        "required": ["name", "value"],
        "properties": {
            "name": _string("The dimension's name.", minLength=1, maxLength=255),
            "value": _string(
                "The dimension's value. {{function}}, {{alias}}, {{version}} and {{stableVersion}} "
                "are replaced with the function's name, the alias, the new version and the stable "
                "version at each measurement.",
                minLength=1,
                maxLength=1024,
            ),
        },
    }
    metric_stat = {
        "type": "object",
        "description": "The CloudWatch metric and statistic to read, as in GetMetricData's MetricStat.",
        "required": ["metric", "stat"],
        "properties": {
            "metric": {
                "type": "object",
                "description": "The metric, by namespace, name and dimensions.",
                "required": ["namespace", "metricName"],
                "properties": {
                    "namespace": _string("The CloudWatch namespace.", minLength=1, maxLength=255),
                    "metricName": _string("The metric's name.", minLength=1, maxLength=255),
                    "dimensions": {
                        "type": "array",
                        "description": "The metric's dimensions.",
                        "maxItems": 30,
                        "items": dimension,
                    },
                },
            },
            "stat": _string(
                "SampleCount, Average, Sum, Minimum, Maximum, or a percentile such as p99 or p99.9.",
                pattern=STATISTIC_PATTERN,
            ),
            "unit": _string("The unit to ask CloudWatch for, e.g. Milliseconds or Count."),
        },
    }
    return {
        "type": "object",
        "description": "A custom CloudWatch metric whose value over the window must lie within [min, max].",
        "required": ["name", "metricStat"],
        "properties": {
            "name": _string(
                "The check's name: a lowercase letter, then letters, digits and _.",
                minLength=1,
                maxLength=64,
                pattern=QUERY_NAME_PATTERN,
            ),
            "metricStat": metric_stat,
            "min": _number("The lowest passing value."),
            "max": _number("The highest passing value."),
        },
        "x-kubernetes-validations": [
            _rule(QUERY_BOUND_RULE, QUERY_BOUND_MESSAGE, QUERY_BOUND_MESSAGE_EXPRESSION),
            _rule(QUERY_ORDER_RULE, QUERY_ORDER_MESSAGE, QUERY_ORDER_MESSAGE_EXPRESSION),
        ],
    }


def _analysis_schema(description: str) -> dict[str, Any]:
    """An AnalysisSpec; which fields it needs depends on where it sits, so its rules live there."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "interval": _duration("Time between measurements; at least 1s. Defaults to 1m."),
            "alarms": {
                "type": "array",
                "description": (
                    "CloudWatch alarm names. ALARM fails a measurement, INSUFFICIENT_DATA makes it "
                    "inconclusive, and an alarm that does not exist fails it."
                ),
                "maxItems": 100,
                "items": _string("A CloudWatch alarm name.", minLength=1, maxLength=ALARM_NAME_MAX),
            },
            "alarmPrefix": _string(
                "Check every CloudWatch alarm whose name starts with this prefix; finding none fails "
                "a measurement.",
                minLength=1,
                maxLength=ALARM_NAME_MAX,
            ),
            "metrics": {
                "type": "array",
                "description": "Built-in per-version metrics and their bounds; each name at most once.",
                "items": _metric_check_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
            "queries": {
                "type": "array",
                "description": "Custom CloudWatch metrics and their bounds; each name at most once.",
                "maxItems": 100,
                "items": _query_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
            "minInvocations": _integer(
                "Fewer invocations of the new version than this in a window make the metric checks "
                "inconclusive, never successful. Defaults to 1.",
                minimum=1,
            ),
            "failureLimit": _integer(
                "Failed measurements tolerated; one more rolls the new version back. Defaults to 0.",
                minimum=0,
            ),
            "consecutiveSuccessLimit": _integer(
                "Successful measurements in a row that pass a blocking analysis step. Defaults to 1.",
                minimum=1,
            ),
            "errorLimit": _integer(
                "Measurements in a row that may fail to read their data before the analysis counts "
                "as inconclusive. Defaults to 4.",
                minimum=0,
            ),
            "onInconclusive": _string(
                "What an inconclusive measurement does: Pause holds the rollout and keeps measuring "
                "until a conclusive success (the default), Fail counts it as a failure, Continue goes "
                "on as if it had passed.",
                enum=[policy.value for policy in InconclusivePolicy],
            ),
        },
    }


def _hook_schema(description: str, *, confirm: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "functionName": _string(
            "A Lambda function to invoke synchronously: a name, a partial ARN or a full ARN.",
            minLength=1,
            maxLength=170,
        ),
        "qualifier": _string(
            "The version or alias of functionName to invoke; unqualified by default.",
            minLength=1,
            maxLength=128,
        ),
        "url": _string(
            "An http(s) endpoint to POST the JSON payload to.", maxLength=2048, pattern=URL_PATTERN
        ),
        "timeout": _duration("How long one attempt may take; more than 0s, at most 15m. Defaults to 30s."),
        "retries": _integer("Attempts after a failed one. Defaults to 2.", minimum=0, maximum=10),
    }
    if confirm:
        properties["interval"] = _duration(
            "Time between asking again while the answer is not yet. Defaults to 30s."
        )
    return {
        "type": "object",
        "description": description + " Exactly one of functionName and url.",
        "properties": properties,
        "x-kubernetes-validations": [
            _rule(HOOK_TARGET_RULE, HOOK_TARGET_MESSAGE),
            _rule(HOOK_QUALIFIER_RULE, HOOK_QUALIFIER_MESSAGE),
        ],
    }


def _secret_key_ref(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["name", "key"],
        "properties": {
            "name": _string(
                "The Secret's name, in the rollout's namespace.",
                minLength=1,
                maxLength=253,
                pattern=SECRET_NAME_PATTERN,
            ),
            "key": _string(
                "The key within the Secret.", minLength=1, maxLength=253, pattern=SECRET_KEY_PATTERN
            ),
        },
    }


def _notifications_schema() -> dict[str, Any]:
    chat = "The incoming webhook of a {} channel; its URL is a secret, read from a Secret when sent."
    notification = {
        "type": "object",
        "description": "Who is told, and of which Events: exactly one of webhook, slack, teams.",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "description": (
                    "The reasons of the Events to notify. RolledBack also stands for every rollback the "
                    "rollout decides itself (AnalysisFailed, HookFailed, ProgressDeadlineExceeded, Aborted)."
                ),
                "minItems": 1,
                "maxItems": len(Reason),
                "items": _string("An Event reason.", enum=[reason.value for reason in Reason]),
                "x-kubernetes-validations": [_rule(NOTIFICATION_EVENTS_RULE, NOTIFICATION_EVENTS_MESSAGE)],
            },
            "webhook": {
                "type": "object",
                "description": "A JSON POST to url, signed with HMAC-SHA256 when secretRef is set.",
                "required": ["url"],
                "properties": {
                    "url": _string("The http(s) endpoint to POST to.", maxLength=2048, pattern=URL_PATTERN),
                    "secretRef": _secret_key_ref(
                        "The signing key: X-Lambda-Rollouts-Signature carries the HMAC-SHA256 of "
                        "<timestamp>.<body> keyed with this Secret value."
                    ),
                },
            },
            "slack": {
                "type": "object",
                "description": chat.format("Slack"),
                "required": ["webhookSecretRef"],
                "properties": {"webhookSecretRef": _secret_key_ref("Where the Slack webhook URL is.")},
            },
            "teams": {
                "type": "object",
                "description": chat.format("Microsoft Teams (an incoming webhook or a Workflows webhook)"),
                "required": ["webhookSecretRef"],
                "properties": {"webhookSecretRef": _secret_key_ref("Where the Teams webhook URL is.")},
            },
        },
        "x-kubernetes-validations": [_rule(NOTIFICATION_CHANNEL_RULE, NOTIFICATION_CHANNEL_MESSAGE)],
    }
    return {
        "type": "array",
        "description": "Subscriptions told when the rollout posts some Event (rolled back, promoted...).",
        "maxItems": MAX_NOTIFICATIONS,
        "items": notification,
    }


def _spec_schema() -> dict[str, Any]:
    step = {
        "type": "object",
        "description": "One step of the canary: set a weight, pause, or run a blocking analysis.",
        "properties": {
            # A whole number rather than an integer: STEP_RULE reads setWeight, and CEL fails on an
            # integer field that holds a JSON float such as 10.0 (what many JSON clients send).
            "setWeight": _whole_number(
                "Percent of the alias's traffic to send to the new version: a whole number (10 or 10.0).",
                minimum=0,
                maximum=100,
            ),
            "pause": {
                "type": "object",
                "description": "Hold the current weight. Without a duration, wait until promoted.",
                "properties": {"duration": _duration("How long to hold.")},
            },
            "analysis": _analysis_schema(
                "Hold the current weight and measure until consecutiveSuccessLimit measurements pass "
                "(go on) or more than failureLimit fail (roll back). Unset fields are taken from "
                "spec.analysis; with no checks of its own, it needs spec.analysis to have some."
            ),
        },
        "x-kubernetes-validations": [_rule(STEP_RULE, STEP_MESSAGE)],
    }
    strategy = {
        "type": "object",
        "description": "How traffic moves to the new version: exactly one of the fields below.",
        "properties": {
            "preset": _string(
                "A CodeDeploy predefined Lambda deployment configuration, by name.",
                enum=[preset.value for preset in Preset],
            ),
            "canary": {
                "type": "object",
                "description": "Explicit steps, run in order; full promotion follows the last one.",
                "required": ["steps"],
                "properties": {
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "description": (
                            "The steps, each setting exactly one of setWeight, pause or analysis; after "
                            "the last one, all traffic moves to the new version."
                        ),
                        "items": step,
                    }
                },
            },
            "linear": {
                "type": "object",
                "description": "Add stepWeight percent every interval until 100%.",
                "required": ["stepWeight", "interval"],
                "properties": {
                    "stepWeight": _integer("Percent added at each step.", minimum=1, maximum=99),
                    "interval": _duration("Time between steps."),
                },
            },
            "allAtOnce": {
                "type": "object",
                "description": "Move all traffic at once (an empty object).",
            },
        },
        "x-kubernetes-validations": [_rule(STRATEGY_RULE, STRATEGY_MESSAGE)],
    }
    hooks = {
        "type": "object",
        "description": (
            "Lambda functions or HTTP endpoints asked whether the rollout may go on; a failed hook "
            "rolls the new version back."
        ),
        "properties": {
            "beforeAllowTraffic": _hook_schema("Called before any traffic reaches the new version."),
            "afterAllowTraffic": _hook_schema("Called once the new version serves all traffic."),
            "confirmPromotion": _hook_schema(
                "Asked before full promotion, and again every interval while it answers not yet.",
                confirm=True,
            ),
        },
    }
    version_from = {
        "type": "object",
        "description": (
            "Find the desired version among the function's published versions by what a build knows; "
            "exactly one version must match. The operator records the version it found in "
            "status.resolvedVersion."
        ),
        "required": ["codeSha256"],
        "properties": {
            "codeSha256": _string(
                "The base64 SHA-256 of the deployment package, as Lambda reports it in CodeSha256.",
                pattern=CODE_SHA256_PATTERN,
            ),
            "description": _string("Also match the published version's description exactly.", maxLength=256),
        },
    }
    return {
        "type": "object",
        "description": "The desired version of a Lambda alias and how to shift traffic to it.",
        "required": ["functionName", "alias", "strategy"],
        "properties": {
            "functionName": _string(
                "The Lambda function: a name, a partial ARN or a full ARN.", minLength=1, maxLength=170
            ),
            "alias": _string(
                "The alias that clients invoke; created if it does not exist.",
                minLength=1,
                maxLength=128,
                pattern=ALIAS_PATTERN,
            ),
            "version": _string(
                "The desired published version (digits only; never $LATEST). Exactly one of version "
                "and versionFrom.",
                maxLength=10,
                pattern=VERSION_PATTERN,
            ),
            "versionFrom": version_from,
            "region": _string(
                "The AWS region; defaults to a full-ARN functionName's region, else the operator's.",
                pattern=REGION_PATTERN,
            ),
            "roleArn": _string("An IAM role to assume for this rollout.", pattern=ROLE_ARN_PATTERN),
            "strategy": strategy,
            "analysis": _analysis_schema(
                "Checks of the new version, measured every interval while traffic is split; more "
                "than failureLimit failed measurements roll it back. Analysis steps inherit its "
                "fields."
            ),
            "hooks": hooks,
            "progressDeadlineSeconds": _integer(
                "Fail the rollout when it makes no progress for this long.", minimum=1
            ),
            "paused": _boolean("Hold the rollout where it is."),
            "onDrift": _string(
                "What to do when the alias was changed outside the operator: Pause (the default) holds "
                "the rollout with a Drifted condition naming the change; Correct restores the planned "
                "state with one write.",
                enum=[policy.value for policy in DriftPolicy],
            ),
            "notifications": _notifications_schema(),
        },
        "x-kubernetes-validations": [
            _rule(VERSION_RULE, VERSION_MESSAGE),
            _rule(ANALYSIS_RULE, ANALYSIS_MESSAGE),
        ],
    }


def _analysis_status_schema(description: str) -> dict[str, Any]:
    verdicts = [verdict.value for verdict in Verdict]
    result = {
        "type": "object",
        "description": "One check of the latest measurement.",
        "required": ["name", "verdict"],
        "properties": {
            "name": _string("The alarm, metric or query checked."),
            "verdict": _string("The check's outcome.", enum=verdicts),
            "value": _number("The value measured, when there is one."),
            "message": _string("What was measured against what bound."),
        },
    }
    return {
        "type": "object",
        "description": description,
        "required": ["startedAt", "nextMeasurementAt"],
        "properties": {
            "stepIndex": _integer("The analysis step's index; absent for the background analysis."),
            "startedAt": _string("When the analysis started (RFC 3339)."),
            "nextMeasurementAt": _string("When the next measurement is due (RFC 3339)."),
            "measurements": _integer("Measurements taken."),
            "successes": _integer("Successful measurements."),
            "failures": _integer("Failed measurements."),
            "inconclusives": _integer("Inconclusive measurements."),
            "errors": _integer("Measurements that could not read their data."),
            "consecutiveSuccesses": _integer("Successful measurements in a row."),
            "consecutiveErrors": _integer("Measurements in a row that could not read their data."),
            "holding": _boolean("An inconclusive measurement holds the rollout (onInconclusive: Pause)."),
            "lastVerdict": _string("The latest measurement's outcome.", enum=verdicts),
            "lastMeasuredAt": _string("When the latest measurement was taken (RFC 3339)."),
            "lastMessage": _string("The latest measurement's explanation."),
            "results": {
                "type": "array",
                "description": "The checks of the latest measurement.",
                "items": result,
            },
        },
    }


def _status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status", "reason", "lastTransitionTime"],
        "properties": {
            "type": _string("Ready, Reconciling, Stalled, or an operator-specific type."),
            "status": _string("The condition's state.", enum=["True", "False", "Unknown"]),
            "reason": _string("A CamelCase reason."),
            "message": _string("A human-readable explanation."),
            "lastTransitionTime": _string("When status last changed (RFC 3339).", format="date-time"),
            "observedGeneration": _integer("The metadata.generation the condition was set from."),
        },
    }
    hook = {
        "type": "object",
        "description": "The latest outcome of one hook point for the new version.",
        "required": ["point", "version", "result", "at"],
        "properties": {
            "point": _string("The hook point.", enum=[point.value for point in HookPoint]),
            "version": _string("The new version the hook was called for."),
            "result": _string("The hook's outcome.", enum=[result.value for result in HookResult]),
            "attempts": _integer("Attempts made."),
            "message": _string("What the hook answered, or why it failed."),
            "at": _string("When the outcome was recorded (RFC 3339)."),
            "nextAttemptAt": _string("When a waiting confirmPromotion is asked again (RFC 3339)."),
        },
    }
    last_action = {
        "type": "object",
        "description": "The acknowledgement of the last manual action: what was asked, and what came of it.",
        "required": ["action", "result", "at"],
        "properties": {
            "action": _string(
                "The action asked for, as written in the annotation ("
                + ", ".join(action.value for action in ManualAction)
                + ")."
            ),
            "id": _string("The id the request carried after a colon, repeated so that its sender can wait."),
            "result": _string(
                "Whether the action was applied.", enum=[result.value for result in ActionResult]
            ),
            "message": _string("What the action did, or why it was rejected."),
            "at": _string("When the action was handled (RFC 3339)."),
            "stepIndex": _integer("Index of the step the rollout was at when the action was handled."),
            "version": _string("The version rolling out when the action was handled."),
        },
    }
    pending = {
        "type": "object",
        "description": "A notification due and not yet delivered to every subscription.",
        "required": ["id", "reason", "at"],
        "properties": {
            "id": _string("The id receivers deduplicate on (the webhook body's id)."),
            "reason": _string("The reason of the Event notified."),
            "type": _string("The Event's type: Normal or Warning."),
            "message": _string("The Event's message."),
            "at": _string("When the Event was planned (RFC 3339)."),
            "functionName": _string("spec.functionName then."),
            "alias": _string("spec.alias then."),
            "phase": _string("The rollout's phase then."),
            "stableVersion": _string("The stable version then."),
            "canaryVersion": _string("The new version then."),
            "canaryWeight": _number("Percent of traffic on the new version once the pass's write landed."),
            "subscriptions": {
                "type": "array",
                "description": "The subscriptions still to deliver to, each as its channel and a digest.",
                "items": _string("A subscription's key."),
            },
        },
    }
    return {
        "type": "object",
        "description": "Where the rollout stands; written whole by the operator.",
        # Until the operator has looked, a new rollout reads as not yet observed (kstatus and
        # Flux's wait: true would otherwise take a status-less object as Current).
        "default": {"observedGeneration": -1},
        "properties": {
            "observedGeneration": _integer("The metadata.generation last handled."),
            "phase": _string("The rollout's phase.", enum=[phase.value for phase in Phase]),
            "stableVersion": _string("The version the alias served before this rollout."),
            "canaryVersion": _string("The version being rolled out."),
            "canaryWeight": _number(
                "Percent of traffic on the new version, as Lambda last reported the alias."
            ),
            "currentStepIndex": _integer("Index of the current step, from 0 (status.step counts from 1)."),
            "stepCount": _integer("Number of steps before full promotion."),
            "step": _string(
                "The current step as status.message counts them, from 1: 2/4; promotion once past the "
                "last step; done once Healthy."
            ),
            "retryCount": _integer("Consecutive failed reconciles."),
            "message": _string("A human-readable summary."),
            "stepStartedAt": _string("When the current step started (RFC 3339)."),
            "pausedAt": _string(
                "When spec.paused or a pause action took hold; the time held counts neither toward a "
                "timed pause nor toward the progress deadline (RFC 3339)."
            ),
            "verifiedPair": _string("Versions that passed the pre-flight checks, as stable->canary."),
            "lastProgressAt": _string(
                "When the rollout last moved forward; progressDeadlineSeconds counts from it (RFC 3339)."
            ),
            "abortedAt": _string(
                "When this attempt was rolled back by an analysis, a hook, the progress deadline or an "
                "abort action; "
                "it stays rolled back until spec.version changes (RFC 3339)."
            ),
            "analysis": _analysis_status_schema("The background analysis (spec.analysis)."),
            "stepAnalysis": _analysis_status_schema("The current analysis step's analysis."),
            "hooks": {
                "type": "array",
                "description": "The latest outcome of each hook point for the new version.",
                "items": hook,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["point"],
            },
            "pausedByAction": _boolean("A pause action holds the rollout until a resume action."),
            "drift": {
                "type": "object",
                "description": (
                    "Set while the rollout is paused because its alias was changed outside the operator."
                ),
                "required": ["expected", "observed", "since", "previousPhase"],
                "properties": {
                    "expected": _string("The alias as the operator left it."),
                    "observed": _string("The alias as it was found."),
                    "since": _string("When the change was found (RFC 3339)."),
                    "previousPhase": _string(
                        "The phase to return to when the change is undone.",
                        enum=[phase.value for phase in Phase],
                    ),
                },
            },
            "lastAction": last_action,
            "resolvedVersion": _string("The published version that spec.versionFrom resolved to."),
            "resolvedFrom": _string(
                "The spec.versionFrom that resolvedVersion was found for; it is resolved again when "
                "spec.versionFrom changes."
            ),
            "pendingNotifications": {
                "type": "array",
                "description": (
                    "Notifications decided and not yet delivered; each goes once every subscription has "
                    "it, or was given up on."
                ),
                "items": pending,
            },
            "conditions": {
                "type": "array",
                "description": "kstatus-compatible conditions: Ready, Reconciling, Stalled.",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def _printer_columns() -> list[dict[str, Any]]:
    def column(name: str, json_path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "type": kind, "jsonPath": json_path}
        if priority:
            entry["priority"] = priority
        return entry

    return [
        column("Function", ".spec.functionName"),
        column("Alias", ".spec.alias"),
        column("Stable", ".status.stableVersion"),
        column("Canary", ".status.canaryVersion"),
        column("Weight", ".status.canaryWeight", "number"),
        column("Phase", ".status.phase"),
        column("Age", ".metadata.creationTimestamp", "date"),
        column("Step", ".status.step", priority=1),
        column("Message", ".status.message", priority=1),
    ]


def build_crd() -> dict[str, Any]:
    """The LambdaRollout CustomResourceDefinition (apiextensions.k8s.io/v1), as a fresh dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "lambda-rollouts", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Progressive delivery of a new version to an AWS Lambda alias.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as YAML, exactly as stored in ``crds/lambdarollouts.yaml``."""
    body = yaml.safe_dump(build_crd(), sort_keys=False, default_flow_style=False, width=1000)
    return _HEADER + "---\n" + body


if __name__ == "__main__":
    print(render_crd_yaml(), end="")
