"""botocore errors -> the project's errors: the one place that knows AWS error codes.

Contract: ``translate`` maps any botocore exception to a ``lambda_rollouts.errors.AwsError``
subclass; callers always ``raise translate(exc, ...) from exc`` (or use ``translated``) so the
botocore error stays attached as ``__cause__``. The error code decides first, the HTTP status
second (STS reports throttling as a 400 ``Throttling``, so the status alone would mislead):

- ``ResourceNotFoundException`` / 404 -> whatever the call says "not found" means (the function
  by default; a version for version reads)
- ``PreconditionFailedException`` (412, stale ``RevisionId``), ``ResourceConflictException``
  (409, an update in progress or the alias exists) -> ``AliasConflictError``
- ``TooManyRequestsException``, ``Throttling`` (CloudWatch, STS), ``ThrottlingException``, 429
  -> ``ThrottledError``
- ``InternalServiceError`` / ``InternalServiceFault`` (CloudWatch), ``ServiceException`` (Lambda)
  and the like -> ``AwsError`` (transient), whatever status they come with
- ``AccessDenied*``, ``UnrecognizedClientException``, ``ExpiredToken*``, invalid signatures,
  403 -> ``AccessDeniedError``
- missing or partial credentials -> ``CredentialsMissingError``
- ``InvalidParameter*`` (Lambda's ``InvalidParameterValueException``, CloudWatch's
  ``InvalidParameterValue`` and ``InvalidParameterCombination``), ``MissingParameter``,
  ``ValidationException`` / ``ValidationError``, other 4xx -> ``InvalidRequestError``
- 5xx, timeouts, refused connections, anything else -> ``AwsError`` (transient)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from lambda_rollouts.errors import (
    AccessDeniedError,
    AliasConflictError,
    AwsError,
    CredentialsMissingError,
    FunctionNotFoundError,
    InvalidRequestError,
    ThrottledError,
)

NotFoundFactory = Callable[[str], AwsError]

NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "NotFound", "NoSuchEntity"})
CONFLICT_CODES = frozenset(
    {
        "PreconditionFailedException",
        "ResourceConflictException",
        # moto answers a duplicate CreateAlias with this code, AWS with ResourceConflictException.
        "ConflictException",
    }
)
THROTTLING_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
# Faults on AWS's side; named so that an unusual status code cannot make them look permanent.
SERVICE_FAULT_CODES = frozenset(
    {
        "InternalServiceError",
        "InternalServiceFault",
        "InternalFailure",
        "InternalError",
        "ServiceException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
ACCESS_DENIED_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "AuthFailure",
        "MissingAuthenticationToken",
    }
)
INVALID_REQUEST_CODES = frozenset(
    {
        "InvalidParameterValueException",
        "InvalidRequestContentException",
        "ValidationException",
        "ValidationError",
        "InvalidParameterException",
        "MalformedPolicyDocument",
        "MissingParameter",
        "InvalidNextToken",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def http_status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def is_not_found(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    return error_code(exc) in NOT_FOUND_CODES or http_status(exc) == 404


def is_expired_token(exc: BaseException) -> bool:
    """Credentials that stopped working: cached assumed-role credentials should be dropped."""
    return isinstance(exc, ClientError) and error_code(exc).startswith(("ExpiredToken", "RequestExpired"))


def translate(exc: Exception, *, operation: str, not_found: NotFoundFactory | None = None) -> AwsError:
    """The project's error for a botocore exception raised by ``operation``."""
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, operation, not_found or FunctionNotFoundError)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return CredentialsMissingError(f"{operation}: no usable AWS credentials: {exc}")
    if isinstance(exc, ParamValidationError | NoRegionError):
        return InvalidRequestError(f"{operation}: {exc}")
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{operation}: AWS unreachable: {exc}")
    return AwsError(f"{operation}: {type(exc).__name__}: {exc}")


@contextmanager
def translated(operation: str, *, not_found: NotFoundFactory | None = None) -> Iterator[None]:
    """Re-raise botocore errors from the block as the project's, chained to the original."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, operation=operation, not_found=not_found) from exc


def _translate_client_error(exc: ClientError, operation: str, not_found: NotFoundFactory) -> AwsError:
    code = error_code(exc)
    status = http_status(exc)
    message = f"{operation}: {code or status}: {error_message(exc)}"
    if code in NOT_FOUND_CODES:
        return not_found(message)
    if code in CONFLICT_CODES:
        return AliasConflictError(message)
    if code in THROTTLING_CODES:
        return ThrottledError(message)
    if code in SERVICE_FAULT_CODES:
        return AwsError(message)
    if (
        code in ACCESS_DENIED_CODES
        or code.startswith("AccessDenied")
        or code.startswith("ExpiredToken")
        or code.startswith("RequestExpired")
    ):
        return AccessDeniedError(message)
    if code in INVALID_REQUEST_CODES or code.startswith("InvalidParameter"):
        return InvalidRequestError(message)
    return _translate_status(status, message, not_found)


def _translate_status(status: int | None, message: str, not_found: NotFoundFactory) -> AwsError:
    if status == 404:
        return not_found(message)
    if status in (409, 412):
        return AliasConflictError(message)
    if status == 429:
        return ThrottledError(message)
    if status in (401, 403):
        return AccessDeniedError(message)
    if status is not None and 400 <= status < 500:
        return InvalidRequestError(message)
    return AwsError(message)
