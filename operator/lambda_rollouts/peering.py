"""Kopf peering for running several replicas of the operator: the manifests, as plain dicts.

Replicas of the operator elect the one that acts through Kopf's peering: every replica writes a
keep-alive (its priority and a lifetime) into the ``status`` of one ``ClusterKopfPeering`` object
and pauses while a live peer with a higher priority is listed there. The Kopf side (settings,
priorities) is wired in ``lambda_rollouts.handlers``; this module holds only what needs no Kopf.

Contract:
- ``cluster_peering_crd()`` returns the ``clusterkopfpeerings.kopf.dev`` CustomResourceDefinition
  as Kopf documents it (kopf.dev/v1, cluster-scoped, a free-form ``status`` and no status
  subresource, since Kopf merge-patches ``status`` on the object itself), labelled as part of this
  project. Each call returns a new dict.
- ``cluster_peering(name)`` returns the ``ClusterKopfPeering`` object the replicas share; it must
  exist before the operator starts (an absent object keeps every replica paused).
- ``random_priority()`` draws a priority for one process from ``1`` to ``RANDOM_PRIORITY_LIMIT - 1``:
  Kopf pauses *every* peer when two live ones share a priority, so replicas of one Deployment must
  not share a fixed one. An explicit priority of ``RANDOM_PRIORITY_LIMIT`` or more outranks any
  replica (e.g. an operator run by hand to take over while debugging).
"""

from __future__ import annotations

import secrets
from typing import Any, Final

PEERING_GROUP: Final = "kopf.dev"
PEERING_VERSION: Final = "v1"
CLUSTER_PEERING_KIND: Final = "ClusterKopfPeering"
CLUSTER_PEERING_PLURAL: Final = "clusterkopfpeerings"
CLUSTER_PEERING_CRD_NAME: Final = f"{CLUSTER_PEERING_PLURAL}.{PEERING_GROUP}"
DEFAULT_PEERING_NAME: Final = "lambda-rollouts"
# Two replicas draw the same priority with a probability of one in a billion.
RANDOM_PRIORITY_LIMIT: Final = 1_000_000_000

_LABELS: Final = {"app.kubernetes.io/name": "lambda-rollouts", "app.kubernetes.io/component": "peering"}


def cluster_peering_crd() -> dict[str, Any]:
    """The ClusterKopfPeering CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CLUSTER_PEERING_CRD_NAME, "labels": dict(_LABELS)},
        "spec": {
            "scope": "Cluster",
            "group": PEERING_GROUP,
            "names": {
                "kind": CLUSTER_PEERING_KIND,
                "plural": CLUSTER_PEERING_PLURAL,
                "singular": CLUSTER_PEERING_KIND.lower(),
            },
            "versions": [
                {
                    "name": PEERING_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                # One key per live operator: {priority, lifetime, lastseen}.
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


def cluster_peering(name: str = DEFAULT_PEERING_NAME) -> dict[str, Any]:
    """The ClusterKopfPeering object that the replicas named ``name`` share."""
    return {
        "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
        "kind": CLUSTER_PEERING_KIND,
        "metadata": {"name": name, "labels": dict(_LABELS)},
    }


def random_priority() -> int:
    """A priority for this process, unlikely to equal another replica's (see the module notes)."""
    return 1 + secrets.randbelow(RANDOM_PRIORITY_LIMIT - 1)
