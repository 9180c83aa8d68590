"""How both programs read a node's host report: readiness and assignable GPUs.

The agent decides with these rules what it reports and which GPUs it hands
out; the control plane uses the same rules to count a node's capacity, so the
two can never disagree about what a node can take.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from vectorlay.domain.messages import Dependency, Gpu

ASSIGNABLE_DRIVER: Final = "vfio-pci"


class GpuSlot(msgspec.Struct, frozen=True, order=True):
    """An assignable GPU: bound to vfio-pci, with an IOMMU group."""

    pci_address: str
    iommu_group: str


def is_assignable_gpu(gpu: Gpu) -> bool:
    """The report's ``assignable`` (PROTOCOL.md 2.1); for a report without the key
    (an older agent), bound to vfio-pci with an IOMMU group."""
    if not gpu.iommu_group:
        return False
    if gpu.assignable is not None:
        return gpu.assignable
    return gpu.driver == ASSIGNABLE_DRIVER


def assignable_slots(gpus: Iterable[Gpu]) -> list[GpuSlot]:
    """GPUs Kata can pass through, with the IOMMU group each is passed as."""
    return sorted(
        GpuSlot(g.pci_address, g.iommu_group)
        for g in gpus
        if g.iommu_group and is_assignable_gpu(g)
    )


def is_ready(dependencies: Iterable[Dependency]) -> bool:
    """A node is ready when every dependency it checked is ok (none checked: ready)."""
    return all(d.ok for d in dependencies)
