"""Which IOMMU groups can be passed into a VM, and which GPUs the agent may assign.

VFIO hands a whole IOMMU group to the VM that opens ``/dev/vfio/<group>``:
every non-bridge device in it goes in together.  So a group is only usable
when no member is held by a host driver, and a GPU is only assignable when
its group is usable.  This module is the one place that decides both; the
probe (what ``check`` and ``system_info`` report) and ``prepare-gpus`` (what
it binds) ask it, so they can never disagree.

Pure: the caller reads sysfs and ``/dev`` and passes what it found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

VFIO_PCI: Final = "vfio-pci"

# Drivers that leave a group viable besides vfio-pci and its variants:
# pci-stub claims a device so that no host driver does; pcieport drives the
# bridges and root ports that VFIO leaves on the host.
NEUTRAL_DRIVERS: Final = frozenset({"pci-stub", "pcieport"})

# PCI base class 06 is bridges: VFIO does not pass them into the VM.
BRIDGE_CLASS_PREFIX: Final = "06"


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One PCI function of an IOMMU group, as sysfs describes it."""

    address: str
    driver: str | None
    class_id: str | None = None  # four hex digits ("0403"); None when unreadable

    @property
    def is_bridge(self) -> bool:
        return self.class_id is not None and self.class_id.startswith(BRIDGE_CLASS_PREFIX)


@dataclass(frozen=True, slots=True)
class IommuGroup:
    """An IOMMU group (``$HOST_SYS/kernel/iommu_groups/<number>``) and its members."""

    number: str
    members: tuple[GroupMember, ...]

    def member(self, address: str) -> GroupMember | None:
        return next((m for m in self.members if m.address == address), None)


def is_vfio_driver(driver: str | None) -> bool:
    """``vfio-pci`` itself or a variant driver (``nvgrace-gpu-vfio-pci``, ``mlx5_vfio_pci``)."""
    if driver is None:
        return False
    return driver == VFIO_PCI or driver.endswith(("-vfio-pci", "_vfio_pci"))


def spoils_group(member: GroupMember) -> bool:
    """A member whose driver keeps its group out of any VM."""
    driver = member.driver
    return not (driver is None or is_vfio_driver(driver) or driver in NEUTRAL_DRIVERS)


def group_problems(group: IommuGroup, *, besides: str | None = None) -> list[str]:
    """One line per member that makes ``group`` unusable; ``[]`` for a viable group.

    ``besides`` leaves out one member (a GPU whose own driver is already
    reported on its own line).
    """
    return [
        f"IOMMU group {group.number} is not viable: {m.address} is bound to {m.driver}"
        for m in group.members
        if spoils_group(m) and m.address != besides
    ]


def is_viable(group: IommuGroup) -> bool:
    return not any(spoils_group(m) for m in group.members)


def gpu_problems(
    *,
    address: str,
    driver: str | None,
    group: IommuGroup | None,
    vfio_device_present: bool,
    health_problems: Sequence[str] = (),
) -> list[str]:
    """Every reason the GPU at ``address`` is not assignable, plus its health signals.

    The GPU is assignable exactly when none of the reasons holds and its
    health is not ``failed``; ``health_problems`` (warnings included) are
    listed after the assignability reasons so an operator reads the cause
    first.
    """
    problems: list[str] = []
    if driver is None:
        problems.append(f"{address} has no driver bound (passthrough needs {VFIO_PCI})")
    elif not is_vfio_driver(driver):
        problems.append(f"{address} is bound to {driver}, not {VFIO_PCI}")
    if group is None:
        problems.append(f"{address} has no IOMMU group (IOMMU off or unsupported)")
    else:
        problems.extend(group_problems(group, besides=address))
        if not vfio_device_present:
            problems.append(f"/dev/vfio/{group.number} is missing")
    problems.extend(health_problems)
    return problems


def is_assignable(
    *,
    driver: str | None,
    group: IommuGroup | None,
    vfio_device_present: bool,
    health_failed: bool,
) -> bool:
    return (
        is_vfio_driver(driver)
        and group is not None
        and is_viable(group)
        and vfio_device_present
        and not health_failed
    )


def members_to_bind(group: IommuGroup, gpu_addresses: Iterable[str]) -> list[GroupMember]:
    """The members to move to ``vfio-pci`` so that the GPUs of ``group`` become assignable.

    Each GPU must itself be on vfio-pci (or a variant); every other member
    only has to stop spoiling the group.  Bridges are never bound: VFIO
    leaves them on the host.
    """
    gpus = set(gpu_addresses)
    return [
        m
        for m in group.members
        if not m.is_bridge
        and (spoils_group(m) or (m.address in gpus and not is_vfio_driver(m.driver)))
    ]


def gpus_by_group(
    groups: Iterable[IommuGroup], gpu_addresses: Iterable[str]
) -> dict[str, list[str]]:
    """``{group number: [GPU addresses in it]}`` for the groups that hold any of the GPUs."""
    wanted = set(gpu_addresses)
    out: dict[str, list[str]] = {}
    for group in groups:
        held = sorted(m.address for m in group.members if m.address in wanted)
        if held:
            out[group.number] = held
    return out


__all__ = [
    "BRIDGE_CLASS_PREFIX",
    "NEUTRAL_DRIVERS",
    "VFIO_PCI",
    "GroupMember",
    "IommuGroup",
    "gpu_problems",
    "gpus_by_group",
    "group_problems",
    "is_assignable",
    "is_vfio_driver",
    "is_viable",
    "members_to_bind",
    "spoils_group",
]
