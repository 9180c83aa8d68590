"""The fleet's records, indexed by node, with a note of what changed.

Holds no rule of its own: the fleet decides, the inventory remembers.  A
record set with ``persist=True`` (the default) is written with the next batch
of changes; loading a snapshot, or refreshing a stamp that rides along with
the next real change, passes ``persist=False``.
"""

from __future__ import annotations

from vectorlay.domain.fleet.records import (
    HOLDS_GPUS,
    MOVABLE,
    NodeRecord,
    ReplicaPhase,
    ReplicaRecord,
)


class Inventory:
    def __init__(self) -> None:
        self._nodes: dict[str, NodeRecord] = {}
        self._replicas: dict[str, ReplicaRecord] = {}
        self._by_node: dict[str, set[str]] = {}
        # Unplaced pending replicas: moved off a node with no room elsewhere.
        self._waiting: set[str] = set()
        self._dirty_nodes: set[str] = set()
        self._dirty_replicas: set[str] = set()
        self._removed_nodes: set[str] = set()

    # --- nodes -------------------------------------------------------------------

    def node(self, node_id: str) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def node_ids(self) -> list[str]:
        return sorted(self._nodes)

    def nodes(self) -> list[NodeRecord]:
        return [self._nodes[k] for k in sorted(self._nodes)]

    def set_node(self, record: NodeRecord, *, persist: bool = True) -> None:
        self._nodes[record.node_id] = record
        if persist:
            self._dirty_nodes.add(record.node_id)

    def remove_node(self, node_id: str) -> None:
        """Forget a node; its (ended) replica records stay, naming it, as history."""
        self._nodes.pop(node_id, None)
        self._by_node.pop(node_id, None)
        self._dirty_nodes.discard(node_id)
        self._removed_nodes.add(node_id)

    # --- replicas ----------------------------------------------------------------

    def replica(self, replica_id: str) -> ReplicaRecord | None:
        return self._replicas.get(replica_id)

    def replicas(self) -> list[ReplicaRecord]:
        return [self._replicas[k] for k in sorted(self._replicas)]

    def replicas_on(self, node_id: str) -> list[ReplicaRecord]:
        return [self._replicas[r] for r in sorted(self._by_node.get(node_id, ()))]

    def holding_gpus_on(self, node_id: str) -> list[ReplicaRecord]:
        """The node's replicas that hold its GPUs (``pending``, ``running``, ``stopping``).

        In no particular order: placement asks this for every candidate node.
        """
        replicas = (self._replicas[r] for r in self._by_node.get(node_id, ()))
        return [r for r in replicas if r.status in HOLDS_GPUS]

    def movable_on(self, node_id: str) -> list[str]:
        """Ids of the node's replicas that move when it is out of contact."""
        return sorted(
            r for r in self._by_node.get(node_id, ()) if self._replicas[r].status in MOVABLE
        )

    def waiting(self) -> list[str]:
        """Ids of replicas waiting for a node with room, in id order."""
        return sorted(self._waiting)

    def is_waiting(self, replica_id: str) -> bool:
        return replica_id in self._waiting

    def set_replica(self, replica: ReplicaRecord, *, persist: bool = True) -> None:
        old = self._replicas.get(replica.replica_id)
        if old is not None and old.node_id is not None and old.node_id != replica.node_id:
            self._by_node.get(old.node_id, set()).discard(replica.replica_id)
        self._replicas[replica.replica_id] = replica
        if replica.node_id is not None:
            self._by_node.setdefault(replica.node_id, set()).add(replica.replica_id)
        if replica.node_id is None and replica.status is ReplicaPhase.PENDING:
            self._waiting.add(replica.replica_id)
        else:
            self._waiting.discard(replica.replica_id)
        if persist:
            self._dirty_replicas.add(replica.replica_id)

    # --- changes -----------------------------------------------------------------

    def take_changes(self) -> tuple[list[NodeRecord], list[ReplicaRecord], list[str]]:
        """The records changed since the last call, current values, in id order,
        and the ids of nodes removed."""
        nodes = [self._nodes[n] for n in sorted(self._dirty_nodes)]
        replicas = [self._replicas[r] for r in sorted(self._dirty_replicas)]
        removed = sorted(self._removed_nodes)
        self._dirty_nodes.clear()
        self._dirty_replicas.clear()
        self._removed_nodes.clear()
        return nodes, replicas, removed
