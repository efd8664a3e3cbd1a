"""The operator as a user runs it (``lambda-rollouts run``, a process of its own) against the real
API server, with moto serving AWS, and the helpers the scenarios share.

Contract:
- ``OperatorProcess`` starts ``lambda-rollouts run`` with a kubeconfig (or in-cluster variables),
  moto as its only AWS (``AWS_ENDPOINT_URL``, dummy credentials) and short intervals; its output
  goes to a log file that ``log()`` returns and failures quote. ``stop()`` sends SIGTERM, as the
  kubelet does, and waits.
- ``rollout_manifest`` builds a LambdaRollout; ``wait_for`` polls the API server until a predicate
  holds on the object (real time: the steps of these rollouts are seconds long).
- ``audit_denials`` reads the API server's audit log: every request of a user that RBAC refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .apiserver import VENV_BIN, ApiServer, clean_environment

GROUP_VERSION = "lambda.rollouts.dev/v1alpha1"
REGION = "us-east-1"
# Operator settings for real-time tests: quick retries and drift checks.
FAST_SETTINGS = {
    "LAMBDA_ROLLOUTS_RETRY_INITIAL_DELAY_SECONDS": "1",
    "LAMBDA_ROLLOUTS_RETRY_MAX_DELAY_SECONDS": "5",
    "LAMBDA_ROLLOUTS_DRIFT_CHECK_INTERVAL_SECONDS": "30",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class OperatorProcess:
    """``lambda-rollouts run`` in a process of its own."""

    def __init__(
        self,
        log_path: Path,
        aws_endpoint: str,
        *,
        kubeconfig: Path | None = None,
        args: Sequence[str] = ("--standalone",),
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.log_path = log_path
        environment = clean_environment(
            {
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_REGION": REGION,
                "PYTHONUNBUFFERED": "1",
                **FAST_SETTINGS,
            }
        )
        # Nothing of the machine's AWS set-up leaks in (profiles, config files).
        for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            environment.pop(key, None)
        environment["HOME"] = str(log_path.parent)
        if kubeconfig is not None:
            environment["KUBECONFIG"] = str(kubeconfig)
        environment.update(env or {})
        command = [*wrapper, str(VENV_BIN / "lambda-rollouts"), "run", *args]
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=environment)

    def log(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


def rollout_manifest(
    name: str,
    namespace: str,
    function: str,
    version: str = "2",
    *,
    steps: Sequence[Mapping[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "functionName": function,
        "alias": "live",
        "version": version,
        "strategy": {
            "canary": {
                "steps": list(
                    steps
                    or [
                        {"setWeight": 10},
                        {"pause": {"duration": "3s"}},
                        {"setWeight": 50},
                        {"pause": {"duration": "3s"}},
                    ]
                )
            }
        },
    }
    body_spec.update(spec)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "LambdaRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body_spec,
    }


def rollout_url(server: ApiServer, namespace: str, name: str = "") -> str:
    base = f"{server.url}/apis/{GROUP_VERSION}/namespaces/{namespace}/lambdarollouts"
    return f"{base}/{name}" if name else base


def get_rollout(server: ApiServer, namespace: str, name: str) -> dict[str, Any] | None:
    with server.session() as session:
        response = session.get(rollout_url(server, namespace, name), timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def wait_for(
    server: ApiServer,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any] | None], bool],
    *,
    timeout: float = 60.0,
    what: str = "the condition",
    operator: OperatorProcess | None = None,
) -> dict[str, Any] | None:
    """Poll the rollout until ``predicate(body)`` (``None`` when it is gone); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        try:
            body = get_rollout(server, namespace, name)
        except Exception:  # the API server may be restarting under the test: ask again
            body = None
            time.sleep(0.5)
            continue
        if predicate(body):
            return body
        time.sleep(0.3)
    status = json.dumps((body or {}).get("status"), indent=1)[:3000]
    log = f"\noperator log:\n{operator.log()}" if operator is not None else ""
    raise AssertionError(f"{namespace}/{name}: {what} not met within {timeout}s; status: {status}{log}")


def phase_is(phase: str) -> Callable[[dict[str, Any] | None], bool]:
    def check(body: dict[str, Any] | None) -> bool:
        return body is not None and (body.get("status") or {}).get("phase") == phase

    return check


def audit_denials(server: ApiServer, user: str) -> list[str]:
    """Requests of ``user`` that the authorizer refused, from the API server's audit log."""
    path = server.audit_log
    denied = []
    if not path.exists():
        raise AssertionError("the API server wrote no audit log")
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if (event.get("user") or {}).get("username") != user:
            continue
        if (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid":
            denied.append(f"{event.get('verb')} {event.get('requestURI')}")
    return denied


def env_with_path(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = clean_environment(extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
