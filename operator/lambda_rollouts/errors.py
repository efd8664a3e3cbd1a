"""The project's own error tree.

Contract: boto3/botocore errors are translated into these in ``lambda_rollouts.aws`` only;
these are translated into Kopf errors in ``lambda_rollouts.handlers`` only. Every error carries
a ``reason`` (a ``Reason`` value, written into status conditions and Events) and says whether
retrying the same thing later can succeed (``transient``).
"""

from __future__ import annotations


class LambdaRolloutsError(Exception):
    reason: str = "Error"
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecError(LambdaRolloutsError):
    """The spec passed the CRD schema but cannot work as written."""

    reason = "InvalidSpec"


class ForbiddenError(SpecError):
    """The operator's tenancy settings do not let this namespace target this function or role."""

    reason = "Forbidden"


class AwsError(LambdaRolloutsError):
    """Something AWS answered (or failed to answer)."""

    reason = "AwsUnavailable"
    transient = True


class FunctionNotFoundError(AwsError):
    reason = "FunctionNotFound"
    transient = False


class VersionNotFoundError(AwsError):
    reason = "VersionNotFound"
    transient = False


class VersionNotActiveError(AwsError):
    reason = "VersionNotActive"
    transient = False


class IncompatibleVersionsError(AwsError):
    reason = "IncompatibleVersions"
    transient = False


class CredentialsMissingError(AwsError):
    reason = "CredentialsMissing"
    transient = False


class AccessDeniedError(AwsError):
    reason = "AccessDenied"
    transient = False


class AlarmNotFoundError(AwsError):
    """An analysis names a CloudWatch alarm that does not exist: it could never fail, so never pass."""

    reason = "AlarmNotFound"
    transient = False


class NoVersionMatchesError(AwsError):
    """spec.versionFrom matches no published version (yet)."""

    reason = "NoVersionMatches"
    transient = False


class AmbiguousVersionError(AwsError):
    """spec.versionFrom matches more than one published version."""

    reason = "AmbiguousVersion"
    transient = False


class AliasConflictError(AwsError):
    """The alias changed since it was read (RevisionId mismatch) or an update is in progress."""

    reason = "AliasConflict"


class ThrottledError(AwsError):
    reason = "Throttled"


class InvalidRequestError(AwsError):
    """AWS rejected a request as malformed: a bug or a rule the project failed to enforce."""

    reason = "InvalidRequest"
    transient = False


class KubernetesError(LambdaRolloutsError):
    """The Kubernetes API refused or failed a request the operator made."""

    reason = "KubernetesUnavailable"
    transient = True


class ObjectGoneError(KubernetesError):
    """The object was deleted while the operator was working on it."""

    reason = "ObjectGone"
    transient = False
