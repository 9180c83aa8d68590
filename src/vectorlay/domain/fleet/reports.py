"""What a node's replica list says about the replicas the fleet placed there.

A heartbeat's list is complete: a replica the node should run but does not
list is gone from it.  A replica waiting for room that the node still runs
may stay there rather than be restarted elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from vectorlay.domain.fleet import placement
from vectorlay.domain.fleet.commands import CommandLedger
from vectorlay.domain.fleet.inventory import Inventory
from vectorlay.domain.fleet.records import (
    LIVE_REPORT,
    NOT_REPORTED,
    CommandKind,
    ReplicaPhase,
    ReplicaRecord,
)
from vectorlay.domain.messages import ReplicaReport, ReplicaStatus


def unreported(
    records: Inventory, ledger: CommandLedger, node_id: str, reports: Sequence[ReplicaReport]
) -> list[ReplicaRecord]:
    """The node's replicas its complete list leaves out, as ``failed`` records.

    A replica whose deploy is still unanswered is left alone: not started
    yet, or its answer is on the way.
    """
    listed = {r.replica_id for r in reports}
    failed = []
    for replica_id in records.movable_on(node_id):
        if replica_id in listed or ledger.awaits(node_id, replica_id, CommandKind.DEPLOY):
            continue
        replica = records.replica(replica_id)
        assert replica is not None  # movable_on lists known replicas only
        failed.append(
            msgspec.structs.replace(replica, status=ReplicaPhase.FAILED, error=NOT_REPORTED)
        )
    return failed


def may_reattach(
    records: Inventory,
    ledger: CommandLedger,
    node_id: str,
    replica: ReplicaRecord,
    status: ReplicaStatus,
) -> bool:
    """Whether a replica waiting for room that ``node_id`` still runs may stay there.

    Stopping it there to deploy it again (there or elsewhere) would restart
    the workload for nothing.  The node must be able to take it as a deploy
    (status, free GPUs); otherwise it is a duplicate.
    """
    if not records.is_waiting(replica.replica_id) or status not in LIVE_REPORT:
        return False
    if (node_id, replica.replica_id) in ledger:
        # A stop sent while the replica lived elsewhere may already be on
        # its way to the agent: this copy is going, so it is not one to keep.
        return False
    return placement.room_for(records, node_id, replica.gpu_count) is not None


__all__ = ["may_reattach", "unreported"]
