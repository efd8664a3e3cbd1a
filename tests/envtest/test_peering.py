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
from collections.abc import Iterator
from typing import Any

import pytest

from lambda_rollouts.peering import (
    CLUSTER_PEERING_PLURAL,
    DEFAULT_PEERING_NAME,
    PEERING_GROUP,
    PEERING_VERSION,
)

from .apiserver import ApiServer
from .harness import (
    OperatorProcess,
    Scene,
    audit_denials,
    audit_writes,
    phase_is,
    unique,
    wait_until,
    weight_is,
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
        deployed.wait_authorized(user)
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


def start_replica(scene: Scene, user: str, priority: int) -> OperatorProcess:
    return scene.start_operator(
        scene.server.kubeconfig_data(user, scene.server.pki.client(user)),
        # As deploy/'s Deployment runs it: cluster-wide, peering, the pod's name as Kopf's identity.
        args=["--peering", "lambda-rollouts", "--priority", str(priority)],
        env={"POD_ID": user, "LAMBDA_ROLLOUTS_PEERING_LIFETIME_SECONDS": str(LIFETIME_SECONDS)},
    )


def _logged(process: OperatorProcess, text: str) -> bool:
    return text in process.log_path.read_text(errors="replace")


@pytest.mark.timeout(180)
def test_two_replicas_only_the_highest_priority_writes_and_the_other_takes_over_when_it_is_killed(
    # Before ``scene`` (and its operators): the replicas stop before their users lose their
    # bindings (a replica refused its last requests would spend its grace period retrying them).
    replica_users: tuple[str, str],
    scene: Scene,
) -> None:
    deployed, namespace = scene.server, scene.namespace
    active_user, standby_user = replica_users
    standby = start_replica(scene, standby_user, priority=100)
    active = start_replica(scene, active_user, priority=200)
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
    scene.apply(scene.manifest(name, steps=steps))
    scene.wait_for(name, weight_is(10), what="10% in status", operator=active)
    assert scene.writes() == [("1", {"2": 0.1})]
    active.kill()
    killed_at = datetime.datetime.now(datetime.UTC)

    body = scene.reached(name, phase_is("Healthy"), what="Healthy", timeout=90, operator=standby)
    assert scene.writes() == [("1", {"2": 0.1}), ("1", {"2": 0.3}), ("1", {"2": 0.6}), ("2", {})]
    assert scene.alias() == ("2", {})
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

    scene.delete(name)
    assert audit_denials(deployed, active_user) == []
    assert audit_denials(deployed, standby_user) == []
