"""Placement: which node a replica may go to, and which one it goes to.

A node may take a replica when it takes deploys (``online``) and has the
replica's GPUs free; a node's capacity is its assignable GPUs (the rule the
agent's GPU ledger uses, :func:`~vectorlay.domain.hostreport.assignable_slots`),
less those its live replicas hold.  Among the nodes that may, the one with
the most free GPUs wins, then the one with the fewest replicas, then the
lowest node id, so that a choice is always the same for the same fleet.
"""

from __future__ import annotations

from collections.abc import Iterable

from vectorlay.domain.fleet.inventory import Inventory
from vectorlay.domain.fleet.node import accepts_deploys
from vectorlay.domain.hostreport import assignable_slots
from vectorlay.errors import NoCapacity


def gpus_free(inventory: Inventory, node_id: str) -> int:
    """The node's assignable GPUs that no replica holds (0 for an unknown node)."""
    node = inventory.node(node_id)
    if node is None:
        return 0
    held = sum(r.gpu_count for r in inventory.holding_gpus_on(node_id))
    return max(0, len(assignable_slots(node.gpus)) - held)


def room_for(inventory: Inventory, node_id: str, gpu_count: int) -> int | None:
    """The node's free GPUs if it may take a replica of ``gpu_count``, else ``None``.

    The placement rule, connection aside: the node takes deploys and has the
    GPUs free.
    """
    node = inventory.node(node_id)
    if node is None or not accepts_deploys(node.state):
        return None
    free = gpus_free(inventory, node_id)
    return free if free >= gpu_count else None


def pick_node(inventory: Inventory, candidates: Iterable[str], gpu_count: int) -> str | None:
    """The candidate to place a replica on: most free GPUs, then fewest replicas."""
    best: tuple[int, int, str] | None = None
    for node_id in candidates:
        free = room_for(inventory, node_id, gpu_count)
        if free is None:
            continue
        key = (-free, len(inventory.holding_gpus_on(node_id)), node_id)
        if best is None or key < best:
            best = key
    return best[2] if best is not None else None


def no_capacity(gpu_count: int) -> NoCapacity:
    """The refusal of a deploy no online node can take; names the field when GPUs are short."""
    return NoCapacity(
        f"gpu_count: no online node has {gpu_count} free GPU{'' if gpu_count == 1 else 's'}"
        if gpu_count
        else "no online node takes deploys now (every node is offline, degraded, "
        "draining or in maintenance)"
    )
