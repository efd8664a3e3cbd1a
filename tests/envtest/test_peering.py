"""Two replicas of the operator, as deploy/ runs them, on a real API server: Kopf peering through
deploy/'s ClusterKopfPeering ``lambda-rollouts``, cluster-wide, each replica with its own priority
and its own certificate user bound to deploy/'s ClusterRole, so the API server's audit log tells
their requests apart.

Only the replica with the highest priority writes; killed (SIGKILL) mid-rollout, it leaves its
keep-alive behind until the peering lifetime passes, then the other takes over and finishes the
rollout from where it stood: every planned weight written once, in order, counted on moto's side.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambda_rollouts.peering import (
    CLUSTER_PEERING_PLURAL,
    DEFAULT_PEERING_NAME,
    PEERING_GROUP,
    PEERING_VERSION,
)
from lambda_rollouts.sandbox.aws import MotoSandbox

from .apiserver import ApiServer
from .harness import (
    AliasWrites,
    OperatorProcess,
    alias_of,
    audit_denials,
    audit_writes,
    get_rollout,
    phase_is,
    rollout_manifest,
    unique,
    wait_for,
    wait_until,
)

# The shortest lifetime the operator accepts: how long a killed replica blocks the other.
LIFETIME_SECONDS = 15


@pytest.fixture
def replica_users(deployed: ApiServer) -> Iterator[tuple[str, str]]:
    """Two certificate users, each bound to deploy/'s ClusterRole as the ServiceAccount is."""
    users = (unique("replica-a"), unique("replica-b"))
    for user in users:
        deployed.kubectl(
            "create", "clusterrolebinding", user, "--clusterrole=lambda-rollouts", f"--user={user}"
        )
    yield users
    for user in users:
        deployed.kubectl("delete", "clusterrolebinding", user)


def peers(server: ApiServer) -> dict[str, Any]:
    """The keep-alives in the ClusterKopfPeering of deploy/, by replica."""
    url = (
        f"{server.url}/apis/{PEERING_GROUP}/{PEERING_VERSION}/{CLUSTER_PEERING_PLURAL}/{DEFAULT_PEERING_NAME}"
    )
    with server.session() as session:
        response = session.get(url, timeout=10)
    response.raise_for_status()
    status: dict[str, Any] = response.json().get("status") or {}
    return status


def start_replica(
    server: ApiServer, operators: Callable[..., OperatorProcess], user: str, priority: int
) -> OperatorProcess:
    kubeconfig = server.kubeconfig_data(user, server.pki.client(user))
    return operators(
        kubeconfig,
        # As deploy/'s Deployment runs it: cluster-wide, peering, the pod's name as Kopf's identity.
        args=["--peering", "lambda-rollouts", "--priority", str(priority)],
        env={"POD_ID": user, "LAMBDA_ROLLOUTS_PEERING_LIFETIME_SECONDS": str(LIFETIME_SECONDS)},
    )


def _logged(process: OperatorProcess, text: str) -> bool:
    return text in process.log_path.read_text(errors="replace")


@pytest.mark.timeout(180)
def test_two_replicas_only_the_highest_priority_writes_and_the_other_takes_over_when_it_is_killed(
    deployed: ApiServer,
    aws: MotoSandbox,
    alias_writes: AliasWrites,
    namespace: str,
    function: dict[str, str],
    # Before ``operators``: the replicas stop before their users lose their bindings (a replica
    # refused its last requests would spend its grace period retrying them).
    replica_users: tuple[str, str],
    operators: Callable[..., OperatorProcess],
) -> None:
    fn = function["function_name"]
    active_user, standby_user = replica_users
    standby = start_replica(deployed, operators, standby_user, priority=100)
    active = start_replica(deployed, operators, active_user, priority=200)
    wait_until(
        lambda: {active_user, standby_user} <= set(peers(deployed)), timeout=60, what="both replicas peering"
    )
    # A mandatory peer starts paused. If its first look at the peering object already shows the
    # active replica, it stays paused without a word; if it saw itself alone first, it resumed
    # (logged) and pauses once it sees the other (logged too). Either way, paused from here on.
    wait_until(
        lambda: (
            not _logged(standby, "Resuming operations") or _logged(standby, "Pausing operations in favour of")
        ),
        timeout=60,
        what="the standby paused",
    )

    name = unique("checkout")
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"pause": {"duration": "4s"}},
        {"setWeight": 30},
        {"pause": {"duration": "2s"}},
        {"setWeight": 60},
        {"pause": {"duration": "2s"}},
    ]
    deployed.kubectl("apply", "-f", "-", input=json.dumps(rollout_manifest(name, namespace, fn, steps=steps)))
    wait_for(
        deployed,
        namespace,
        name,
        lambda body: (body or {}).get("status", {}).get("canaryWeight") == 10,
        what="10% in status",
        operator=active,
    )
    assert alias_writes.of(fn) == [("1", {"2": 0.1})]
    active.kill()
    killed_at = datetime.datetime.now(datetime.UTC)

    body = wait_for(
        deployed, namespace, name, phase_is("Healthy"), what="Healthy", operator=standby, timeout=90
    )
    assert body is not None
    assert alias_writes.of(fn) == [("1", {"2": 0.1}), ("1", {"2": 0.3}), ("1", {"2": 0.6}), ("2", {})]
    assert alias_of(aws.endpoint_url, fn) == ("2", {})
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert _logged(standby, "Resuming operations after the pause")

    # Who wrote what, by the API server's account: the standby nothing while the active one lived.
    by_active = audit_writes(deployed, active_user, namespace)
    by_standby = audit_writes(deployed, standby_user, namespace)
    assert {(write.verb, write.resource) for write in by_active} >= {
        ("patch", "lambdarollouts"),  # the finalizer
        ("patch", "lambdarollouts/status"),
        ("create", "events"),
    }, by_active
    # Kopf pauses a replica's watch a moment after it decides to pause (up to a second): an object
    # created in that moment may get the finalizer from the standby too (the same one, which the
    # active adds as well). Nothing else: no status write, no Event, no alias write (moto's record).
    early = [write for write in by_standby if write.at < killed_at]
    assert [(write.verb, write.resource) for write in early if write.resource != "lambdarollouts"] == []
    assert len(early) <= 1, early
    assert ("patch", "lambdarollouts/status") in {(write.verb, write.resource) for write in by_standby}
    first = min(write.at for write in by_standby)
    print(f"the standby's first write came {(first - killed_at).total_seconds():.1f}s after the kill")
    assert all(write.code < 400 for write in by_active + by_standby), by_active + by_standby

    deployed.kubectl("delete", "lro", name, "-n", namespace, "--timeout=60s")
    assert get_rollout(deployed, namespace, name) is None
    assert audit_denials(deployed, active_user) == []
    assert audit_denials(deployed, standby_user) == []
