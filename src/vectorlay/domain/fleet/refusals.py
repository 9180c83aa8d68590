"""Why no node can take a replica: the 409 that says which reason holds.

docs/controlplane.md names the reasons, and an operator acts differently on
each: wait or add nodes (``no_node_online``), resume a node
(``nodes_held``), wait for replicas to end (``no_free_gpus``), ask for a
count the free IOMMU groups make up (``gpu_groups``), or ask for fewer GPUs
(``too_many_gpus``: no node has that many at all, which waiting never
fixes).  The first that holds, in that order of permanence, is given.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from vectorlay.domain.fleet.inventory import Inventory
from vectorlay.domain.fleet.node import Status
from vectorlay.domain.fleet.placement import NOT_WHOLE_GROUPS, gpus_free, only_split_groups
from vectorlay.domain.hostreport import assignable_slots
from vectorlay.errors import NoCapacity

NO_NODE_ONLINE: Final = "no_node_online"
NODES_HELD: Final = "nodes_held"
NODES_DEGRADED: Final = "nodes_degraded"
TOO_MANY_GPUS: Final = "too_many_gpus"
NO_FREE_GPUS: Final = "no_free_gpus"
# Free GPUs exist but not in whole IOMMU groups of the right size (GPUs are
# assigned by whole groups, docs/protocol.md, "GPU passthrough").
GPU_GROUPS: Final = "gpu_groups"


def _gpus(count: int) -> str:
    return f"{count} GPU{'' if count == 1 else 's'}"


def refusal(inventory: Inventory, connected: Collection[str], gpu_count: int) -> NoCapacity:
    """Why no connected node may take a replica of ``gpu_count`` GPUs (none may: asked)."""
    nodes = inventory.nodes()
    sizes = {n.node_id: len(assignable_slots(n.gpus)) for n in nodes}
    largest = max(sizes.values(), default=0)
    if nodes and gpu_count > largest:
        return NoCapacity(
            f"gpu_count: {_gpus(gpu_count)} requested, but no node has that many at all "
            f"(the largest has {_gpus(largest)} assignable)",
            reason=TOO_MANY_GPUS,
        )
    up = [n for n in nodes if n.node_id in connected]
    if not up:
        known = f" ({len(nodes)} known, all offline)" if nodes else " (no node has registered)"
        return NoCapacity(f"no node online{known}", reason=NO_NODE_ONLINE)
    online = [n for n in up if n.status is Status.ONLINE]
    if not online:
        held = [n for n in up if n.status in (Status.DRAINING, Status.MAINTENANCE)]
        if held:
            return NoCapacity(
                "nodes held by drain/maintenance: "
                + ", ".join(
                    f"{n.node_id} ({n.status.value}, {gpus_free(inventory, n.node_id)} free GPUs)"
                    for n in held
                )
                + "; resume one to deploy there",
                reason=NODES_HELD,
            )
        return NoCapacity(
            "no node online: "
            + ", ".join(f"{n.node_id} is {n.status.value} (failing dependencies)" for n in up),
            reason=NODES_DEGRADED,
        )
    if only_split_groups(inventory, [n.node_id for n in online], gpu_count):
        return NoCapacity(NOT_WHOLE_GROUPS, reason=GPU_GROUPS)
    most = max(gpus_free(inventory, n.node_id) for n in online)
    return NoCapacity(
        f"gpu_count: no online node has {_gpus(gpu_count)} free (the most free on one node: "
        f"{most}); replicas must end first",
        reason=NO_FREE_GPUS,
    )


__all__ = [
    "GPU_GROUPS",
    "NODES_DEGRADED",
    "NODES_HELD",
    "NO_FREE_GPUS",
    "NO_NODE_ONLINE",
    "TOO_MANY_GPUS",
    "refusal",
]
