"""``LambdaHookInvoker``: the ``HookInvoker`` for hooks with a ``functionName``, over boto3.

Contract (on top of ``lambda_rollouts.hooks``):
- Each attempt is one synchronous ``Invoke`` (``InvocationType=RequestResponse``) of
  ``hook.function_name``, with ``Qualifier=hook.qualifier`` when the hook sets one, and the
  payload as the JSON event: one ``AwsClients.call``, which runs it in a worker thread of its own
  lane (an ``Invoke`` is not paced with the control plane, and a slow hook holds up no other call)
  and reads the answer's payload there.
- The client comes from ``AwsClients`` for the target's region and role, configured by
  ``hook_client_config``: botocore's own retries are off (the invoker counts and spaces the
  attempts itself, as the hook's ``retries`` says), the read timeout is the hook's timeout and
  connecting may take ``CONNECT_TIMEOUT_SECONDS``.
- Success is an answer without ``FunctionError`` whose payload ``judge_answer`` accepts. A
  ``FunctionError`` (``Unhandled`` or ``Handled``) is a failure quoting the function's
  ``errorType`` and ``errorMessage``.
- A Lambda API error (function not found, access denied, throttled, a role that cannot be
  assumed, AWS unreachable) or a timeout is a failed attempt whose message says which, through
  ``lambda_rollouts.aws.errors``; no botocore exception escapes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from lambda_rollouts.aws.clients import AwsClients
from lambda_rollouts.aws.errors import translate
from lambda_rollouts.errors import AwsError
from lambda_rollouts.hooks import HookOutcome, excerpt, invoke_with_retries, judge_answer
from lambda_rollouts.model import Hook
from lambda_rollouts.observed import Target

if TYPE_CHECKING:
    from mypy_boto3_lambda.type_defs import InvocationRequestTypeDef

CONNECT_TIMEOUT_SECONDS: Final = 5


def hook_client_config(hook: Hook) -> Config:
    """The client config for invoking ``hook``: one try per call, read timeout = the hook's."""
    return Config(
        read_timeout=hook.timeout_seconds,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        # One request per call. Not ``max_attempts: 1``: in a client config, botocore reads
        # ``max_attempts`` as the number of retries after the first request.
        retries={"total_max_attempts": 1, "mode": "standard"},
    )


class LambdaHookInvoker:
    """``HookInvoker`` for Lambda hooks; see the module docstring for the contract."""

    def __init__(self, clients: AwsClients, *, retry_delay_seconds: float = 1.0) -> None:
        self._clients = clients
        self._retry_delay_seconds = retry_delay_seconds

    async def invoke(self, target: Target, hook: Hook, payload: Mapping[str, Any]) -> HookOutcome:
        if hook.function_name is None:
            raise ValueError(f"{hook.describe()} has no functionName: it is not a Lambda hook")
        request: InvocationRequestTypeDef = {
            "FunctionName": hook.function_name,
            "InvocationType": "RequestResponse",
            # Serialised once: every attempt sends the same event.
            "Payload": json.dumps(payload).encode(),
        }
        if hook.qualifier is not None:
            request["Qualifier"] = hook.qualifier
        config = hook_client_config(hook)

        async def attempt(number: int) -> HookOutcome:
            return await self._invoke_once(target, hook, request, config)

        return await invoke_with_retries(hook, attempt, retry_delay_seconds=self._retry_delay_seconds)

    async def _invoke_once(
        self, target: Target, hook: Hook, request: InvocationRequestTypeDef, config: Config
    ) -> HookOutcome:
        try:
            # ``call`` also replaces assumed-role credentials that expired early, and tries again.
            response = await self._clients.call(
                "lambda", target.region, target.role_arn, "Invoke", request, config=config
            )
        except ReadTimeoutError:
            return _failure(f"{hook.describe()} timed out: no answer within {hook.timeout}")
        except (ClientError, BotoCoreError) as exc:
            return _api_failure(hook, translate(exc, operation="Invoke"))
        except AwsError as error:
            # Raised, already translated, when the target's role cannot be assumed.
            return _api_failure(hook, error)
        answer: bytes = response.get("Payload", b"")
        function_error = response.get("FunctionError")
        if function_error:
            detail = _error_detail(answer)
            return _failure(
                f"{hook.describe()} raised an error ({function_error})" + (f": {detail}" if detail else "")
            )
        return judge_answer(answer).outcome_for(hook)


def _failure(message: str) -> HookOutcome:
    return HookOutcome(succeeded=False, message=message, attempts=1)


def _api_failure(hook: Hook, error: AwsError) -> HookOutcome:
    return _failure(f"{hook.describe()} could not be invoked ({error.reason}): {error.message}")


def _error_detail(answer: bytes) -> str:
    """``errorType: errorMessage`` from the payload Lambda returns for a function error."""
    try:
        report = json.loads(answer)
    except (ValueError, RecursionError):
        return excerpt(answer.decode("utf-8", errors="replace"))
    if not isinstance(report, dict):
        return excerpt(json.dumps(report))
    parts = [str(report[field]) for field in ("errorType", "errorMessage") if report.get(field)]
    return excerpt(": ".join(parts))
