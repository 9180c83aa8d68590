"""Control-plane records for store tests: a node and a replica as the fleet keeps them."""

from __future__ import annotations

from datetime import UTC, datetime

from vectorlay.adapters.memory import sample_report
from vectorlay.domain.fleet.node import Hold, Node, Status
from vectorlay.domain.fleet.records import NodeRecord, ReplicaPhase, ReplicaRecord

WALL = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)


def node_record(node_id: str = "node-1") -> NodeRecord:
    report = sample_report(gpus=2)
    return NodeRecord(
        node_id,
        Node(Status.DRAINING, Hold.DRAIN, True),
        "0.1.0",
        report.hardware,
        report.dependencies,
        True,
        WALL,
        WALL,
    )


def replica_record(replica_id: str = "r1", **env: str) -> ReplicaRecord:
    return ReplicaRecord(
        replica_id, "ghcr.io/a/b:1", 1, dict(env), "node-1", ReplicaPhase.RUNNING, None
    )
