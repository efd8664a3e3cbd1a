"""The operator reaches AWS as every AWS SDK does: endpoints, and trust, from botocore's configuration.

The operator's own backends (``handlers.default_backends``, as ``lambda-rollouts run`` makes them)
run against moto's server with nothing but the standard environment variables to find it:
- ``AWS_ENDPOINT_URL_LAMBDA``, ``_CLOUDWATCH`` and ``_STS`` win over ``AWS_ENDPOINT_URL``, which
  points at a closed port here: a call that went there would fail;
- moto behind a TLS server of this test's own, whose certificate a private CA signed: with that CA
  in ``AWS_CA_BUNDLE`` the operator works, without it it fails on the certificate.

Each test sets every variable it relies on and clears the ones that would bring the machine's own
set-up in (profiles, config files, other CA bundles).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lambda_rollouts.aws.boto_router import BotoAliasRouter
from lambda_rollouts.errors import AwsError
from lambda_rollouts.handlers import default_backends
from lambda_rollouts.observed import Target
from lambda_rollouts.reconcile import Backends
from lambda_rollouts.sandbox.aws import MotoSandbox, seed_demo_function
from lambda_rollouts.settings import Settings

REGION = "eu-west-1"
LOOPBACK = "127.0.0.1"
# Variables that would let the machine's own AWS set-up or trust store decide instead of the test.
MACHINE_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_LAMBDA",
    "AWS_ENDPOINT_URL_CLOUDWATCH",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Dummy credentials, no config files, none of the machine's endpoints or CA bundles."""
    for name in MACHINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def moto_server() -> Iterator[MotoSandbox]:
    with MotoSandbox() as server:
        yield server


@pytest.fixture
def seeded(moto_server: MotoSandbox) -> dict[str, str]:
    # Seeded through an explicit endpoint: the environment the operator reads plays no part.
    return seed_demo_function(moto_server.endpoint_url, REGION)


def closed_port_url(scheme: str = "http") -> str:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return f"{scheme}://{LOOPBACK}:{probe.getsockname()[1]}"


@contextlib.asynccontextmanager
async def operator_backends() -> AsyncIterator[Backends]:
    """The AWS backends ``lambda-rollouts run`` makes, from the settings and the environment."""
    backends = default_backends(Settings(LAMBDA_ROLLOUTS_DEFAULT_REGION=REGION))
    try:
        yield backends
    finally:
        await backends.close()


async def drive(backends: Backends, seeded: dict[str, str]) -> None:
    """What a rollout does with AWS: read and shift the alias (with the operator's credentials and
    with an assumed role), read alarms."""
    target = Target(function_name=seeded["function_name"], alias=seeded["alias"], region=REGION)
    alias = await backends.router.get_alias(target)
    assert alias is not None
    split = await backends.router.route(
        target, primary="1", canary="2", canary_percent=10, revision_id=alias.revision_id
    )
    assert dict(split.routing) == {"2": 10.0}
    role_target = Target(
        function_name=seeded["function_name"],
        alias=seeded["alias"],
        region=REGION,
        role_arn=seeded["role_arn"],
    )
    assert await backends.router.get_alias(role_target) == split
    assert backends.metrics is not None
    assert await backends.metrics.describe_alarms(target, names=["checkout-errors"], prefix=None) == ()


async def test_service_endpoint_variables_win_over_the_global_one(
    environment: pytest.MonkeyPatch, moto_server: MotoSandbox, seeded: dict[str, str]
) -> None:
    environment.setenv("AWS_ENDPOINT_URL", closed_port_url())
    for service in ("LAMBDA", "CLOUDWATCH", "STS"):
        environment.setenv(f"AWS_ENDPOINT_URL_{service}", moto_server.endpoint_url)

    async with operator_backends() as backends:
        await drive(backends, seeded)
        assert isinstance(backends.router, BotoAliasRouter)
        calls = backends.router.calls

    # Every service was reached: the operator's account (STS), a role (STS), Lambda, CloudWatch.
    assert {"GetCallerIdentity", "AssumeRole", "GetAlias", "UpdateAlias", "DescribeAlarms"} <= set(calls)


# -- AWS behind TLS, with a private CA -----------------------------------------------------------


@dataclass
class PrivateCa:
    """A CA of this test's own, and a serving certificate it signed for 127.0.0.1."""

    directory: Path
    ca_path: Path = field(init=False)
    cert_path: Path = field(init=False)
    key_path: Path = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lambda-rollouts test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_path = self.directory / "ca.pem"
        self.cert_path = self.directory / "server.pem"
        self.key_path = self.directory / "server-key.pem"
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


class TlsFront:
    """A TLS server on loopback that hands each connection's bytes to a plain-HTTP upstream."""

    def __init__(self, upstream_port: int, ca: PrivateCa) -> None:
        self._upstream_port = upstream_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(ca.cert_path, ca.key_path)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://{LOOPBACK}:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0, ssl=self._context)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(LOOPBACK, self._upstream_port)
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer),
                self._pipe(upstream_reader, writer),
                return_exceptions=True,
            )
        finally:
            self._writers -= {writer, upstream_writer}

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                target.write(data)
                await target.drain()
        finally:
            target.close()


@pytest.fixture
async def tls_front(moto_server: MotoSandbox, tmp_path: Path) -> AsyncIterator[tuple[TlsFront, PrivateCa]]:
    ca = PrivateCa(tmp_path)
    port = int(moto_server.endpoint_url.rsplit(":", 1)[1])
    front = TlsFront(port, ca)
    await front.start()
    try:
        yield front, ca
    finally:
        await front.stop()


async def test_aws_behind_tls_is_trusted_through_aws_ca_bundle(
    environment: pytest.MonkeyPatch, tls_front: tuple[TlsFront, PrivateCa], seeded: dict[str, str]
) -> None:
    front, ca = tls_front
    environment.setenv("AWS_ENDPOINT_URL", front.url)
    environment.setenv("AWS_CA_BUNDLE", str(ca.ca_path))

    async with operator_backends() as backends:
        await drive(backends, seeded)

    assert front.connections > 0, "the calls went through the TLS server"


async def test_without_the_private_ca_the_certificate_is_refused(
    environment: pytest.MonkeyPatch, tls_front: tuple[TlsFront, PrivateCa], seeded: dict[str, str]
) -> None:
    front, _ = tls_front
    environment.setenv("AWS_ENDPOINT_URL", front.url)

    async with operator_backends() as backends:
        target = Target(function_name=seeded["function_name"], alias=seeded["alias"], region=REGION)
        with pytest.raises(AwsError, match="SSL") as caught:
            await backends.router.get_alias(target)

    assert caught.value.transient
    assert "certificate verify failed" in str(caught.value)
