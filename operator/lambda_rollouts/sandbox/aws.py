"""The AWS half of the local sandbox: moto served over HTTP from this process, and a demo function.

Contract:
- ``MotoSandbox`` (also via ``start_moto_server``) serves moto on a loopback port picked by the
  OS; ``endpoint_url`` reaches every emulated service (Lambda, STS, IAM, CloudWatch). Starting it
  wipes moto's in-process state and switches Lambda to moto's Docker-free backend, so functions
  can be created and versions published without a Docker engine; ``stop()`` restores the
  previous Lambda setting and closes the port. moto's state and settings are process-wide:
  run one sandbox per process, and not while ``mock_aws`` is active.
- ``seed_demo_function`` creates an execution role, a Python function from an in-memory zip,
  publishes versions 1 and 2 (with different code, as Lambda only publishes a new version when
  something changed) and an alias on version 1. It returns the names and ARNs it made.
- ``publish_demo_release`` ships release N of that function the way a team does: new code, then
  ``PublishVersion`` (description ``release N``); it returns the new version's number. The demo's
  second scenario publishes release 3 with it, and the rollback benchmark its bad versions.
- Every client made here carries ``SANDBOX_CREDENTIALS`` explicitly; the process environment is
  left alone. ``sandbox_session`` gives a boto3 session with the same dummy credentials.

moto validates few of Lambda's alias rules (weight range, ``$LATEST``...); the project enforces
them itself (``lambda_rollouts.aws.weights``) and tests them on ``FakeLambda``. The one the
operator's safety rests on, ``RevisionId`` (a new one per update; a write with a stale one is
refused with 412), the sandbox adds to moto while it runs (``_AliasRevisions``).
"""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
import zipfile
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

import boto3
from moto.awslambda.exceptions import PreconditionFailedException
from moto.awslambda.models import LambdaAlias
from moto.awslambda.responses import LambdaResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from lambda_rollouts.sandbox.wsgi import KeepAliveWsgiServer

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_lambda import LambdaClient

LOOPBACK = "127.0.0.1"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}
# moto's server mode reads its Lambda backend choice from this config, not from mock_aws(config=).
_DOCKER_FREE_LAMBDA: dict[str, Any] = {"lambda": {"use_docker": False}}
_ASSUME_ROLE_BY_LAMBDA = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


class MotoSandbox:
    """moto on a loopback port of this process; a context manager."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self._host, self._port = host, port
        self._server: KeepAliveWsgiServer | None = None
        self._endpoint_url: str | None = None
        self._previous_lambda_config: Any = None

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("the moto sandbox is not running")
        return self._endpoint_url

    @property
    def running(self) -> bool:
        return self._endpoint_url is not None

    def start(self) -> Self:
        if self.running:
            return self
        # moto's app over a keep-alive server: see lambda_rollouts.sandbox.wsgi for why.
        self._server = KeepAliveWsgiServer(
            DomainDispatcherApplication(create_backend_app), self._host, self._port
        )
        self._server.start()
        host, port = self._server.address
        self._endpoint_url = f"http://{host}:{port}"
        _AliasRevisions.enforce()
        self._moto_api("reset", {})
        self._previous_lambda_config = self._moto_api("config")["lambda"]
        self._moto_api("config", _DOCKER_FREE_LAMBDA)
        return self

    def stop(self) -> None:
        if not self.running:
            return
        try:
            self._moto_api("config", {"lambda": self._previous_lambda_config})
        finally:
            _AliasRevisions.restore()
            if self._server is not None:
                self._server.stop()
                self._server = None
            self._endpoint_url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _moto_api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call moto's own control API (``/moto-api/...``): GET without a body, POST with one."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/{path}",
            data=data,
            method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
        return json.loads(payload) if payload else None


class _AliasRevisions:
    """Lambda's alias ``RevisionId`` rules, which moto leaves out, while a sandbox runs.

    Lambda gives an alias a new ``RevisionId`` on every update and refuses an ``UpdateAlias`` whose
    ``RevisionId`` is not the current one (412 ``PreconditionFailedException``); moto keeps the
    first id forever and ignores the parameter. The operator's writes rely on the rule to never
    overwrite someone else's change, so the sandbox has it too. moto is process-wide: the rule is
    put in on start and taken out on stop.
    """

    _originals: tuple[Any, Any] | None = None

    @classmethod
    def enforce(cls) -> None:
        if cls._originals is not None:
            return
        original_update, original_response = LambdaAlias.update, LambdaResponse.update_alias

        def update(alias: LambdaAlias, *args: Any, **kwargs: Any) -> None:
            original_update(alias, *args, **kwargs)
            alias.revision_id = str(uuid.uuid4())

        def update_alias(response: LambdaResponse) -> Any:
            wanted = json.loads(response.body or "{}").get("RevisionId")
            if wanted:
                function_name = unquote(response.path.rsplit("/")[-3])
                alias_name = unquote(response.path.rsplit("/", 2)[-1])
                current = response.backend.get_alias(alias_name, function_name)
                if current.revision_id != wanted:
                    raise PreconditionFailedException(
                        "The Revision Id provided does not match the latest Revision Id. "
                        "Call the GetAlias API to retrieve the latest Revision Id"
                    )
            return original_response(response)

        cls._originals = (original_update, original_response)
        LambdaAlias.update = update  # type: ignore[method-assign,assignment]
        LambdaResponse.update_alias = update_alias  # type: ignore[method-assign,assignment]

    @classmethod
    def restore(cls) -> None:
        if cls._originals is None:
            return
        LambdaAlias.update, LambdaResponse.update_alias = cls._originals  # type: ignore[method-assign]
        cls._originals = None


def start_moto_server(host: str = LOOPBACK, port: int = 0) -> MotoSandbox:
    """A started ``MotoSandbox``; stop it (or use it as a context manager) when done."""
    return MotoSandbox(host, port).start()


def sandbox_session(region: str | None = None) -> boto3.session.Session:
    """A boto3 session holding the sandbox's dummy credentials (nothing read from the environment)."""
    return boto3.session.Session(
        aws_access_key_id=SANDBOX_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=SANDBOX_CREDENTIALS["aws_secret_access_key"],
        aws_session_token=SANDBOX_CREDENTIALS["aws_session_token"],
        region_name=region,
    )


def seed_demo_function(
    endpoint_url: str | None,
    region: str,
    name: str = "checkout-api",
    alias: str | None = "live",
    *,
    session: boto3.session.Session | None = None,
) -> dict[str, str]:
    """Create a function with versions 1 and 2 and ``alias`` on version 1; return what was made.

    ``endpoint_url=None`` uses the SDK's default endpoint (for moto's in-process ``mock_aws``);
    ``alias=None`` creates no alias; ``session`` defaults to ``sandbox_session(region)`` (passing
    one that is reused saves loading the service models again).
    """
    session = session or sandbox_session(region)
    iam: IAMClient = session.client("iam", region_name=region, endpoint_url=endpoint_url)
    lambda_client: LambdaClient = session.client("lambda", region_name=region, endpoint_url=endpoint_url)

    role_name = f"{name}-execution"
    try:
        role_arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role_arn = iam.create_role(
            RoleName=role_name, AssumeRolePolicyDocument=json.dumps(_ASSUME_ROLE_BY_LAMBDA)
        )["Role"]["Arn"]

    function_arn = lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role_arn,
        Handler="index.handler",
        Code={"ZipFile": release_zip(release=1)},
        Description="lambda-rollouts sandbox demo",
    )["FunctionArn"]
    stable_version = lambda_client.publish_version(FunctionName=name, Description="release 1")["Version"]
    canary_version = _publish_release(lambda_client, name, release=2)
    seeded = {
        "region": region,
        "function_name": name,
        "function_arn": function_arn,
        "role_arn": role_arn,
        "stable_version": stable_version,
        "canary_version": canary_version,
    }
    if endpoint_url is not None:
        seeded["endpoint_url"] = endpoint_url
    if alias is not None:
        created = lambda_client.create_alias(FunctionName=name, Name=alias, FunctionVersion=stable_version)
        seeded["alias"] = alias
        seeded["alias_arn"] = created["AliasArn"]
    return seeded


def publish_demo_release(
    endpoint_url: str | None,
    region: str,
    release: int,
    name: str = "checkout-api",
    *,
    session: boto3.session.Session | None = None,
) -> str:
    """Publish release ``release`` of a function made by ``seed_demo_function``; return its version.

    Same arguments as ``seed_demo_function``. The new version shares the function's execution role
    and dead-letter config, so the operator may split traffic between it and the earlier ones.
    """
    session = session or sandbox_session(region)
    lambda_client: LambdaClient = session.client("lambda", region_name=region, endpoint_url=endpoint_url)
    return _publish_release(lambda_client, name, release=release)


def _publish_release(lambda_client: LambdaClient, name: str, *, release: int) -> str:
    # Publishing unchanged code returns the existing version (in Lambda and in moto): each release
    # gets its own code first.
    lambda_client.update_function_code(FunctionName=name, ZipFile=release_zip(release=release))
    return lambda_client.publish_version(FunctionName=name, Description=f"release {release}")["Version"]


def release_zip(release: int) -> bytes:
    """A deployment package whose handler answers ``{"release": release}``: each release's own code."""
    source = f"def handler(event, context):\n    return {{'release': {release}}}\n"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("index.py", source)
    return archive.getvalue()
