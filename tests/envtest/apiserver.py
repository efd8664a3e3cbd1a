"""A real kube-apiserver and etcd for the tests, as controller-runtime's envtest runs them.

Contract:
- ``assets_dir()`` is ``$KUBEBUILDER_ASSETS`` (``make envtest`` prints it; ``make test`` sets it);
  a missing variable or binary is an error that says how to get them, never a skip.
- ``Pki(directory)`` makes a CA of the tests' own, a serving certificate for 127.0.0.1 and
  ``localhost``, an admin client certificate (``O=system:masters``) and the service-account
  signing key, all as PEM files in ``directory``.
- ``ApiServer(assets, workdir).start()`` runs etcd and kube-apiserver on free loopback ports with
  TLS, RBAC and a static-token file (``TOKENS``), waits until ``/readyz`` answers, and returns
  itself; ``stop()`` ends both; ``stop_apiserver()``/``start_apiserver()`` stop and start only
  kube-apiserver (etcd keeps the data), on the same port. ``RUNNING`` lists the servers started
  and not stopped; ``mark_audit_log()`` makes ``audit_lines()`` begin at the log's current end;
  ``wait_authorized()`` waits until RBAC grants a user what a new binding gave it.
- ``kubeconfig_*`` write the kubeconfig forms users have (certificates embedded as ``*-data``,
  file paths, a bearer token, an exec credential plugin); ``kubectl()`` runs the real kubectl
  (``env_with_path``: its environment, the venv first on PATH, where kubectl finds the plugin);
  ``session()`` is a ``requests`` session that trusts only the tests' CA (``trust_env=False``: the
  machine's CA and proxy variables are not the code under test).

Without a controller-manager nothing is garbage-collected and namespaces never finish
terminating: tests use unique names and delete what they made.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ..processes import stop_process

# Tokens the API server accepts (--token-auth-file): token -> (user, uid, groups).
TOKENS: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    "admin-token-0123456789": ("token-admin", "1001", ("system:masters",)),
    "nobody-token-0123456789": ("nobody", "1002", ()),
}
# The variables through which a machine may point TLS clients at other CAs or proxies: a test of
# our own TLS set-up clears them, or it would test the machine.
MACHINE_TLS_VARIABLES = (
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "AWS_CA_BUNDLE",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""
VENV_BIN = Path(sys.executable).parent
KUBECTL = str(VENV_BIN / "kubectl")
# The API servers started and not yet stopped (the tier's and any a module starts of its own).
RUNNING: list[ApiServer] = []
ROLLOUTS = "lambdarollouts.lambda.rollouts.dev"


def assets_dir() -> Path:
    value = os.environ.get("KUBEBUILDER_ASSETS")
    if not value:
        raise RuntimeError(
            "KUBEBUILDER_ASSETS is not set: run `make envtest` (it builds or finds kube-apiserver and "
            "etcd and prints the variable), or run the suite with `make test`"
        )
    assets = Path(value)
    for binary in ("kube-apiserver", "etcd"):
        if not os.access(assets / binary, os.X_OK):
            raise RuntimeError(f"KUBEBUILDER_ASSETS={assets} has no executable {binary}: run `make envtest`")
    return assets


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the machine's TLS and proxy variables, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in MACHINE_TLS_VARIABLES}
    env.pop("KUBECONFIG", None)
    env.update(extra or {})
    return env


def env_with_path(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``clean_environment`` with the venv first on PATH: kubectl finds the plugin there."""
    env = clean_environment(extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Credential:
    """A client certificate and its key, as PEM files."""

    cert: Path
    key: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


class Pki:
    """The tests' own CA and the certificates made from it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = _key()
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lambda-rollouts-test-ca")])
        self._ca_name = name
        self._ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = directory / "ca.crt"
        self.ca.write_bytes(_pem_cert(self._ca))
        self.serving = self._issue(
            "serving",
            "kube-apiserver",
            (),
            server=True,
            names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        )
        self.admin = self._issue("admin", "admin", ("system:masters",))
        sa_key = _key()
        self.service_account_key = directory / "sa.key"
        self.service_account_key.write_bytes(_pem_key(sa_key))
        self.service_account_pub = directory / "sa.pub"
        self.service_account_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()

    def client(self, user: str, groups: Sequence[str] = ()) -> Credential:
        """A client certificate for ``user`` in ``groups`` (the API server's x509 authenticator)."""
        return self._issue(f"client-{user}", user, groups)

    def _issue(
        self,
        stem: str,
        common_name: str,
        groups: Sequence[str],
        *,
        server: bool = False,
        names: Sequence[str] = (),
    ) -> Credential:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usage = (
            x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            alternative: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
            alternative.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
            builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        credential = Credential(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        credential.cert.write_bytes(_pem_cert(cert))
        credential.key.write_bytes(_pem_key(key))
        credential.key.chmod(0o600)
        return credential


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ApiServer:
    """etcd and kube-apiserver as child processes of the tests."""

    def __init__(self, assets: Path, workdir: Path) -> None:
        self.assets = assets
        self.workdir = workdir
        self.pki = Pki(workdir / "pki")
        self.port = free_port()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self.admin_kubeconfig = self.kubeconfig_paths("admin", self.pki.admin)
        self.audit_log = workdir / "audit.log"
        # Where the current test's part of the audit log begins (``mark_audit_log``).
        self.audit_offset = 0
        self.starts = 0

    # -- processes --------------------------------------------------------------------------------

    def start(self) -> ApiServer:
        self._start_etcd()
        self.start_apiserver()
        RUNNING.append(self)
        return self

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        log = (self.workdir / "etcd.log").open("ab")
        self._etcd = subprocess.Popen(
            [
                str(self.assets / "etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                # The tests' data is thrown away: no fsync per write (what envtest does too).
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_environment(),
        )

    def apiserver_args(self) -> list[str]:
        pki = self.pki
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            "".join(
                f'{token},{user},{uid},"{",".join(groups)}"\n'
                for token, (user, uid, groups) in TOKENS.items()
            )
        )
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return [
            str(self.assets / "kube-apiserver"),
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--token-auth-file={tokens}",
            f"--cert-dir={self.workdir / 'cert-dir'}",
            # Every request with its user and the authorizer's decision: how the tests prove that
            # RBAC refused the operator nothing.
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ]

    def start_apiserver(self, *, wait: bool = True) -> None:
        log = (self.workdir / "kube-apiserver.log").open("ab")
        self._apiserver = subprocess.Popen(
            self.apiserver_args(), stdout=log, stderr=subprocess.STDOUT, env=clean_environment()
        )
        self.starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        with self.session() as session:
            while time.monotonic() < deadline:
                for process, name in ((self._etcd, "etcd"), (self._apiserver, "kube-apiserver")):
                    if process is not None and process.poll() is not None:
                        raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
                try:
                    response = session.get(f"{self.url}/readyz", timeout=5)
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[-300:]}"
                except requests.RequestException as exc:
                    last = str(exc)
                time.sleep(0.25)
        raise RuntimeError(
            f"kube-apiserver not ready after {timeout}s: {last}\n{self.log_tail('kube-apiserver')}"
        )

    def stop_apiserver(self) -> None:
        _terminate(self._apiserver)
        self._apiserver = None

    def stop(self) -> None:
        self.stop_apiserver()
        _terminate(self._etcd)
        self._etcd = None
        if self in RUNNING:
            RUNNING.remove(self)

    def mark_audit_log(self) -> None:
        """From now on, the audit log is read from its current end: what a test asserts of it is
        what happened during that test (an earlier test's restart, say, refused requests of its own)."""
        self.audit_offset = self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def audit_lines(self) -> list[str]:
        """The audit log's lines since ``mark_audit_log``."""
        with self.audit_log.open("rb") as log:
            log.seek(self.audit_offset)
            return log.read().decode().splitlines()

    def wait_authorized(
        self, user: str, verb: str = "watch", resource: str = ROLLOUTS, timeout: float = 30.0
    ) -> None:
        """Wait until the authorizer lets ``user`` ``verb`` ``resource`` in every namespace (by
        default what the operator does first): a new binding takes effect when the RBAC informers
        have seen it, not when it is created."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.kubectl("auth", "can-i", verb, resource, "-A", f"--as={user}", check=False)
            if answer.stdout.strip() == "yes":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{user} may not {verb} {resource}: {answer.stdout}{answer.stderr}")
            time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- clients ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(
        self, credential: Credential | None = None, token: str | None = None
    ) -> Iterator[requests.Session]:
        """A ``requests`` session as the admin (or ``credential``/``token``), trusting only our CA."""
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.pki.ca)
        if token is not None:
            session.headers["Authorization"] = f"Bearer {token}"
        else:
            chosen = credential or self.pki.admin
            session.cert = (str(chosen.cert), str(chosen.key))
        try:
            yield session
        finally:
            session.close()

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        environment = env_with_path({"KUBECONFIG": str(kubeconfig or self.admin_kubeconfig)})
        environment.update(env or {})
        completed = subprocess.run(
            [KUBECTL, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            check=False,
        )
        if check and completed.returncode != 0:
            output = completed.stderr + completed.stdout
            raise AssertionError(f"kubectl {' '.join(args)} exited {completed.returncode}:\n{output}")
        return completed

    # -- kubeconfigs ------------------------------------------------------------------------------

    def _write_kubeconfig(self, name: str, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {"server": self.url, **cluster}}],
            "users": [{"name": name, "user": user}],
            "contexts": [
                {"name": name, "context": {"cluster": "envtest", "user": name, "namespace": "default"}}
            ],
            "current-context": name,
        }
        path = self.workdir / "kubeconfigs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def kubeconfig_data(self, name: str, credential: Credential) -> Path:
        """Every certificate embedded, base64-encoded: what kind, EKS and GKE hand out."""
        return self._write_kubeconfig(
            name,
            {"certificate-authority-data": _b64(self.pki.ca_pem)},
            {
                "client-certificate-data": _b64(credential.cert_pem),
                "client-key-data": _b64(credential.key_pem),
            },
        )

    def kubeconfig_paths(self, name: str, credential: Credential) -> Path:
        return self._write_kubeconfig(
            name,
            {"certificate-authority": str(self.pki.ca)},
            {"client-certificate": str(credential.cert), "client-key": str(credential.key)},
        )

    def kubeconfig_token(self, name: str, token: str) -> Path:
        return self._write_kubeconfig(
            name, {"certificate-authority-data": _b64(self.pki.ca_pem)}, {"token": token}
        )

    def kubeconfig_exec(
        self, name: str, command: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> Path:
        """An exec credential plugin, as ``aws eks get-token`` is configured."""
        exec_config: dict[str, Any] = {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": command,
            "args": list(args),
            "interactiveMode": "Never",
        }
        if env:
            exec_config["env"] = [{"name": key, "value": value} for key, value in env.items()]
        return self._write_kubeconfig(
            name, {"certificate-authority-data": _b64(self.pki.ca_pem)}, {"exec": exec_config}
        )

    def service_account_token(
        self, namespace: str, account: str, *, bound_secret: str | None = None, seconds: int = 3600
    ) -> str:
        """A TokenRequest token for a ServiceAccount, optionally bound to a Secret's lifetime."""
        args = ["create", "token", account, "-n", namespace, f"--duration={seconds}s"]
        if bound_secret is not None:
            args += ["--bound-object-kind=Secret", f"--bound-object-name={bound_secret}"]
        return self.kubectl(*args).stdout.strip()


def _terminate(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if process is not None:
        stop_process(process, timeout)
