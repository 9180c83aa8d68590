"""Placement: which node a replica may go to, and which one it goes to.

A node may take a replica when it takes deploys (``online``) and its free
IOMMU groups of assignable GPUs together hold exactly the replica's GPUs
(the rule the agent's ledger uses, :mod:`vectorlay.domain.gpugroups`).  A
group is free when no replica holding GPUs (pending, running, stopping) holds
any of it: by the GPUs the node reported for the replica, or, until it has,
by the groups the agent's rule would give it.  Among the nodes that may, the one with
the most free GPUs wins, then the one with the fewest replicas, then the
lowest node id, so that a choice is always the same for the same fleet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from vectorlay.domain.fleet.inventory import Inventory
from vectorlay.domain.fleet.node import accepts_deploys
from vectorlay.domain.gpugroups import choose_groups, free_groups, groups_of
from vectorlay.domain.hostreport import assignable_slots
from vectorlay.errors import NoCapacity


def free_groups_on(inventory: Inventory, node_id: str) -> dict[str, tuple[str, ...]]:
    """``{group: its assignable GPUs}`` for the node's groups no replica holds."""
    node = inventory.node(node_id)
    if node is None:
        return {}
    holders = sorted(inventory.holding_gpus_on(node_id), key=lambda r: r.replica_id)
    free = free_groups(groups_of(assignable_slots(node.gpus)), (a for r in holders for a in r.gpus))
    for replica in holders:
        if replica.gpus or not replica.gpu_count:
            continue
        # Not reported yet: the groups the agent's own rule gives it.
        for group in choose_groups(free, replica.gpu_count) or ():
            del free[group]
    return free


def gpus_free(inventory: Inventory, node_id: str) -> int:
    """The node's assignable GPUs in groups no replica holds (0 for an unknown node)."""
    return sum(len(a) for a in free_groups_on(inventory, node_id).values())


def room_for(inventory: Inventory, node_id: str, gpu_count: int) -> int | None:
    """The node's free GPUs if it may take a replica of ``gpu_count``, else ``None``.

    The placement rule, connection aside: the node takes deploys and its
    free groups make exactly ``gpu_count`` GPUs.
    """
    node = inventory.node(node_id)
    if node is None or not accepts_deploys(node.state):
        return None
    free = free_groups_on(inventory, node_id)
    if choose_groups(free, gpu_count) is None:
        return None
    return sum(len(a) for a in free.values())


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


NOT_WHOLE_GROUPS: Final = (
    "gpu_count: free GPUs exist but not in whole groups of the right size "
    "(GPUs are assigned by whole IOMMU groups)"
)


def only_split_groups(inventory: Inventory, candidates: Iterable[str], gpu_count: int) -> bool:
    """Some node that takes deploys has ``gpu_count`` GPUs free, but no set of its free
    groups holds exactly that many."""
    for node_id in candidates:
        node = inventory.node(node_id)
        if node is None or not accepts_deploys(node.state):
            continue
        free = free_groups_on(inventory, node_id)
        if sum(len(a) for a in free.values()) >= gpu_count > 0:
            return True
    return False


def no_capacity(gpu_count: int, *, split: bool = False) -> NoCapacity:
    """The refusal of a deploy no online node can take; names the field when GPUs are short.

    ``split``: free GPUs exist, but not in whole groups of the right size.
    """
    if split:
        return NoCapacity(NOT_WHOLE_GROUPS)
    return NoCapacity(
        f"gpu_count: no online node has {gpu_count} free GPU{'' if gpu_count == 1 else 's'}"
        if gpu_count
        else "no online node takes deploys now (every node is offline, degraded, "
        "draining or in maintenance)"
    )
