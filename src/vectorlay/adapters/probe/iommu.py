"""IOMMU groups as the host's sysfs lists them, and the ``/dev/vfio`` node of each.

Layout read (``$HOST_SYS`` and ``$HOST_DEV``)::

    kernel/iommu_groups/25/devices/0000:17:00.0 -> ../../../../devices/pci0000:16/.../0000:17:00.0
    kernel/iommu_groups/25/devices/0000:17:00.1 -> ...
    bus/pci/devices/0000:17:00.1/driver          -> .../drivers/snd_hda_intel
    bus/pci/devices/0000:17:00.1/class           0x040300
    /dev/vfio/25                                  (checked with stat, never opened)

Plain ``os`` calls, no subprocess: this runs once per heartbeat interval.
Every read is defensive: a missing file means "unknown" for that one fact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from vectorlay.adapters.probe.pci import normalize_address
from vectorlay.adapters.probe.sysfs import class_of, driver_of
from vectorlay.domain.agent.passthrough import GroupMember, IommuGroup
from vectorlay.domain.validation import IOMMU_GROUP_RE

IOMMU_GROUPS: Final = Path("kernel/iommu_groups")


def groups_dir(sys_root: Path) -> Path:
    return sys_root / IOMMU_GROUPS


def has_iommu_groups(sys_root: Path) -> bool:
    """Any group at all: without one the IOMMU is off (or absent) and nothing passes through."""
    try:
        return any(IOMMU_GROUP_RE.fullmatch(n) for n in os.listdir(groups_dir(sys_root)))
    except OSError:
        return False


def read_group(sys_root: Path, number: str) -> IommuGroup | None:
    """Group ``number`` with every member's driver and class; ``None`` when sysfs lacks it."""
    if not IOMMU_GROUP_RE.fullmatch(number):
        return None
    try:
        entries = sorted(os.listdir(groups_dir(sys_root) / number / "devices"))
    except OSError:
        return None
    members = []
    for entry in entries:
        address = normalize_address(entry)
        if address is None:
            continue
        driver = driver_of(sys_root, address)
        members.append(
            GroupMember(
                address=address,
                driver=driver if isinstance(driver, str) else None,
                class_id=class_of(sys_root, address),
            )
        )
    return IommuGroup(number=number, members=tuple(members))


def read_groups(sys_root: Path, numbers: set[str] | None = None) -> dict[str, IommuGroup]:
    """Every group (or only ``numbers``), keyed by number."""
    try:
        listed = os.listdir(groups_dir(sys_root))
    except OSError:
        return {}
    out = {}
    for number in sorted(listed, key=lambda n: (len(n), n)):
        if numbers is not None and number not in numbers:
            continue
        group = read_group(sys_root, number)
        if group is not None:
            out[number] = group
    return out


def vfio_device_present(dev_root: Path, number: str) -> bool:
    """``$HOST_DEV/vfio/<number>`` exists, whatever its file type (``stat``, never ``open``)."""
    try:
        os.stat(dev_root / "vfio" / number)
    except OSError:
        return False
    return True


__all__ = [
    "IOMMU_GROUPS",
    "class_of",
    "groups_dir",
    "has_iommu_groups",
    "read_group",
    "read_groups",
    "vfio_device_present",
]
