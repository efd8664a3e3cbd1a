"""Hooks: a Lambda function or an HTTP endpoint asked whether the rollout may go on.

Contract:
- ``HookInvoker.invoke(target, hook, payload)`` calls the hook once per attempt, up to
  ``1 + hook.retries`` attempts, each bounded by ``hook.timeout``; it returns the first success,
  or the last failure. It never raises for a hook's own failure (error answer, timeout,
  connection refused): those are a ``HookOutcome`` with ``succeeded=False`` and a message a person
  can act on, without secrets (URLs are shown without credentials or query string). A hook the
  operator may not call at all raises ``ForbiddenError``, and then nothing was sent.
- Success, for a Lambda hook: the invocation returned no ``FunctionError`` and its answer is not
  a JSON object whose ``status`` is ``failed`` (any case). For an HTTP hook: a 2xx answer whose
  body, when it is a JSON object, has no ``status`` of ``failed``. An answer's ``message`` field,
  when present, is quoted in the outcome.
- The payload (``hook_payload``) names the rollout, the function, the alias, both versions, the
  ARN of the new version and the hook point; it is sent as the Lambda event or the POST body.

What this module provides to the invokers (``lambda_rollouts.aws.hook_invoker`` for Lambda
hooks, ``lambda_rollouts.webhooks`` for HTTP hooks), so both keep the contract the same way:
- ``invoke_with_retries`` runs the attempts: up to ``1 + hook.retries`` of them, stopping at the
  first success or at a definite "no" (``HookOutcome.final``: a ``failed`` answer, an HTTP 4xx
  other than 408 and 429), sleeping ``retry_delay_seconds`` after the first failure and twice as long after
  each further one (never more than ``MAX_RETRY_DELAY_SECONDS``). It returns the first success or
  the last failure with ``attempts`` set to the number of attempts made, and logs every attempt's
  outcome at INFO (outcome messages are free of secrets, so the log is too).
- ``judge_answer`` applies the success rule above to an answer's body: a body that is not a JSON
  object (plain text, empty, not UTF-8) never fails a hook by itself.
- ``excerpt`` is the only way a hook's answer (a quoted ``message``, an error body, a function's
  error) reaches an outcome, and so the status, Events and logs: at most ``EXCERPT_LIMIT``
  characters on one line, with what could carry a credential replaced by ``[redacted]`` first
  (``redact_credentials``): the userinfo and query string of any URL, the value of a header or
  field named like a credential (``Authorization: …``, ``"token": …``, ``password=…``), bearer
  and basic tokens, AWS access key ids and JWTs. Nothing else of an answer (headers, a
  redirect's ``Location``) is ever copied.
- ``HookDispatcher`` sends a hook with ``function_name`` to the Lambda invoker and a hook with
  ``url`` to the HTTP invoker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from lambda_rollouts.model import Hook, HookPoint
from lambda_rollouts.observed import Target

logger = logging.getLogger(__name__)

# A hook that keeps failing is given time to recover, but a rollout never waits long between tries.
MAX_RETRY_DELAY_SECONDS: Final = 30.0
# Long enough to read a hook's explanation, short enough for a status condition or an Event, and
# too short to carry much of whatever a hook's server lets slip.
EXCERPT_LIMIT: Final = 120


@dataclass(frozen=True)
class HookOutcome:
    succeeded: bool
    message: str
    attempts: int
    # A definite "no" from the hook itself (a "failed" answer, an HTTP 4xx): asking again would
    # not change it, so it is not retried.
    final: bool = False


class HookInvoker(Protocol):
    async def invoke(self, target: Target, hook: Hook, payload: Mapping[str, Any]) -> HookOutcome: ...


def hook_payload(
    *,
    namespace: str,
    name: str,
    function_name: str,
    alias: str,
    stable_version: str,
    new_version: str,
    new_version_arn: str,
    point: HookPoint,
) -> dict[str, Any]:
    return {
        "rollout": {"namespace": namespace, "name": name},
        "functionName": function_name,
        "alias": alias,
        "stableVersion": stable_version,
        "newVersion": new_version,
        "newVersionArn": new_version_arn,
        "phase": point.value,
    }


# ---------------------------------------------------------------------------------------------
# Judging an answer.


REDACTED: Final = "[redacted]"

# Names of headers and fields whose value is a credential: whole words in any case, followed by
# ":" or "=" (a closing quote between, as in JSON).
_CREDENTIAL_NAMES: Final = (
    r"(?:proxy-)?authorization|(?:set-)?cookie|x-api-key|api[-_]?key|x-amz-security-token"
    r"|x-auth-token|(?:access|refresh|id|session|auth)?[-_]?token|secret|password|passwd"
    r"|credentials?|aws_secret_access_key|aws_session_token|client[-_]?secret|private[-_]?key"
)
# Applied in order to each line of a text before it is flattened, so that a header's value is
# taken to the end of its line and no further.
_CREDENTIALS: Final = (
    # scheme://user:password@host: the userinfo.
    (re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s/?#@]*@", re.IGNORECASE), rf"\1{REDACTED}@"),
    # A URL's query string, where tokens travel as often as not.
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s?#]*)\?[^\s#]*", re.IGNORECASE), rf"\1?{REDACTED}"),
    (re.compile(rf"(?<![\w-])({_CREDENTIAL_NAMES})(\"?\s*[:=]\s*).*", re.IGNORECASE), rf"\1\2{REDACTED}"),
    (re.compile(r"\b(bearer)\s+[\w.~+/=-]+", re.IGNORECASE), rf"\1 {REDACTED}"),
    # Basic and Negotiate take base64; "basic checks" in a sentence is left alone.
    (
        re.compile(r"\b(basic|negotiate)\s+(?=\S*[0-9+/=])[A-Za-z0-9+/=]{8,}", re.IGNORECASE),
        rf"\1 {REDACTED}",
    ),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), REDACTED),
)


def redact_credentials(text: str) -> str:
    """``text`` with what could carry a credential replaced by ``REDACTED`` (see the contract)."""
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _CREDENTIALS:
            line = pattern.sub(replacement, line)
        lines.append(line)
    return "\n".join(lines)


def excerpt(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """``text`` with credentials redacted (``redact_credentials``), on one line (whitespace runs
    collapsed), cut to at most ``limit`` characters."""
    flat = " ".join(redact_credentials(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class AnswerJudgement:
    """What a hook's answer body says: whether it lets the rollout go on, and why."""

    succeeded: bool
    # The answer's own ``message`` field, on one line and shortened; None when it has none.
    message: str | None

    def outcome_for(self, hook: Hook) -> HookOutcome:
        """The outcome of one attempt that got this answer, with the hook's message quoted."""
        quoted = f': "{self.message}"' if self.message else ""
        if self.succeeded:
            return HookOutcome(succeeded=True, message=f"{hook.describe()} succeeded{quoted}", attempts=1)
        return HookOutcome(
            succeeded=False,
            message=f'{hook.describe()} answered status "failed"{quoted}',
            attempts=1,
            final=True,
        )


def judge_answer(body: bytes) -> AnswerJudgement:
    """Judge an answer body by the success rule: only a JSON object can fail a hook."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        # Not JSON (ValueError also covers bytes that are not UTF-8), or nested too deeply to read:
        # the hook answered without a verdict, and an answer without a verdict is not a failure.
        return AnswerJudgement(succeeded=True, message=None)
    if not isinstance(answer, dict):
        return AnswerJudgement(succeeded=True, message=None)
    status = answer.get("status")
    failed = isinstance(status, str) and status.strip().lower() == "failed"
    message = answer.get("message")
    if message is None or message == "":
        return AnswerJudgement(succeeded=not failed, message=None)
    text = message if isinstance(message, str) else json.dumps(message)
    return AnswerJudgement(succeeded=not failed, message=excerpt(text))


# ---------------------------------------------------------------------------------------------
# Retrying.

# Makes attempt number N (counted from 1) and reports its outcome; ``attempts`` in it is ignored.
Attempt = Callable[[int], Awaitable[HookOutcome]]


def retry_delay(failed_attempts: int, retry_delay_seconds: float) -> float:
    """Seconds to wait after the ``failed_attempts``-th failure before the next attempt."""
    return min(retry_delay_seconds * 2.0 ** (failed_attempts - 1), MAX_RETRY_DELAY_SECONDS)


async def invoke_with_retries(
    hook: Hook, attempt: Attempt, *, retry_delay_seconds: float = 1.0
) -> HookOutcome:
    """Make up to ``1 + hook.retries`` attempts; return the first success or the last failure."""
    allowed = 1 + hook.retries
    number = 1
    while True:
        outcome = await attempt(number)
        logger.info(
            "hook attempt %d of %d %s: %s",
            number,
            allowed,
            "succeeded" if outcome.succeeded else "failed",
            outcome.message,
        )
        if outcome.succeeded or outcome.final or number == allowed:
            return replace(outcome, attempts=number)
        await asyncio.sleep(retry_delay(number, retry_delay_seconds))
        number += 1


# ---------------------------------------------------------------------------------------------
# Choosing the invoker.


class HookDispatcher:
    """``HookInvoker`` that hands each hook to the invoker for its kind of target."""

    def __init__(self, lambda_invoker: HookInvoker, http_invoker: HookInvoker) -> None:
        self.lambda_invoker = lambda_invoker
        self.http_invoker = http_invoker

    async def invoke(self, target: Target, hook: Hook, payload: Mapping[str, Any]) -> HookOutcome:
        if hook.function_name is not None:
            return await self.lambda_invoker.invoke(target, hook, payload)
        if hook.url is not None:
            return await self.http_invoker.invoke(target, hook, payload)
        # The model admits no such hook; reaching this is a bug, not a hook that failed.
        raise ValueError("a hook needs a functionName or a url")
