"""When an operator may forget a node (``DELETE /v1/nodes/{id}``), and what goes with it.

A node may go when it is ``offline`` or in ``maintenance`` (a connected one
in maintenance has its session closed with ``4401``) and holds no replica
that is ``pending``, ``running`` or ``stopping``: forgetting it then would
lose track of a workload.  Its node token is revoked with it, so its agent
gets ``4401`` if it comes back; ended replica records stay, as history.
"""

from __future__ import annotations

from collections.abc import Iterable

from vectorlay.domain.fleet.node import Status
from vectorlay.domain.fleet.records import HOLDS_GPUS, NodeRecord, ReplicaRecord


def removal_problem(node: NodeRecord, replicas: Iterable[ReplicaRecord]) -> str | None:
    """Why ``node`` may not be removed now (the 409's message), or ``None``."""
    if node.status not in (Status.OFFLINE, Status.MAINTENANCE):
        return (
            f"node {node.node_id} is {node.status.value}: put it in maintenance "
            "(or wait until it is offline) before removing it"
        )
    live = sorted(f"{r.replica_id} ({r.status.value})" for r in replicas if r.status in HOLDS_GPUS)
    if live:
        return (
            f"node {node.node_id} still has {len(live)} replica(s) not ended: "
            f"{', '.join(live)}; stop them first"
        )
    return None


__all__ = ["removal_problem"]
