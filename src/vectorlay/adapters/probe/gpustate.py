"""The GPUs' passthrough state read from the host: drivers, IOMMU groups, ``/dev/vfio``, health.

:class:`GpuStateReader` re-reads, for GPUs already found, everything that
decides ``assignable``/``health``/``problems`` (the rules:
:mod:`vectorlay.domain.agent.gpustate`): each GPU's driver and group link,
its group's members and their drivers, ``$HOST_DEV/vfio/<N>`` (``stat``
only) and the health files.  Plain ``os`` calls, no subprocess, never an
``open`` of a device node: it runs once per heartbeat interval.  The reader
keeps the AER counters of its first reading, so counts are "since the agent
(or the ``check``) started".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from msgspec.structs import replace

from vectorlay.adapters.probe.health import read_signals
from vectorlay.adapters.probe.iommu import class_of, groups_dir
from vectorlay.adapters.probe.pci import normalize_address
from vectorlay.adapters.probe.sysfs import devices_dir, driver_of
from vectorlay.domain.agent.gpustate import assess
from vectorlay.domain.agent.health import GpuHealth, HealthTracker
from vectorlay.domain.agent.passthrough import GroupMember, IommuGroup
from vectorlay.domain.messages import Gpu
from vectorlay.domain.validation import IOMMU_GROUP_RE


class GpuStateReader:
    def __init__(self, sys_root: Path, dev_root: Path) -> None:
        self.sys_root = sys_root
        self.dev_root = dev_root
        self._tracker = HealthTracker()
        self._groups_dir = str(groups_dir(sys_root))
        self._devices_dir = str(devices_dir(sys_root))
        # Never change for a listed entry: read once.
        self._classes: dict[str, str | None] = {}
        self._addresses: dict[str, str | None] = {}
        self._vfio_dir = f"{dev_root}/vfio"

    def read(self, gpus: Sequence[Gpu]) -> list[Gpu]:
        """``gpus`` with driver and group read again and the three keys set."""
        drivers: dict[str, str | None] = {}  # read once per pass, shared with the groups
        current = [self._refreshed(g, drivers) for g in gpus]
        numbers = sorted({g.iommu_group for g in current if g.iommu_group})
        groups: dict[str, IommuGroup] = {}
        for number in numbers:
            group = self._group(number, drivers)
            if group is not None:
                groups[number] = group
        vfio = {n: _exists(f"{self._vfio_dir}/{n}") for n in numbers}
        sys_root = str(self.sys_root)
        health: dict[str, GpuHealth] = {}
        for gpu in current:
            signals = read_signals(sys_root, gpu.pci_address)
            health[gpu.pci_address] = self._tracker.assess(gpu.pci_address, signals)
        return assess(current, groups=groups, vfio_present=vfio, health=health)

    def _group(self, number: str, drivers: dict[str, str | None]) -> IommuGroup | None:
        """:func:`~vectorlay.adapters.probe.iommu.read_group`, on plain strings, with
        each member's class read once (it never changes): this runs every interval."""
        if not IOMMU_GROUP_RE.fullmatch(number):
            return None
        try:
            entries = sorted(os.listdir(f"{self._groups_dir}/{number}/devices"))
        except OSError:
            return None
        members = []
        for entry in entries:
            if entry not in self._addresses:
                self._addresses[entry] = normalize_address(entry)
            address = self._addresses[entry]
            if address is None:
                continue
            if address not in self._classes:
                self._classes[address] = class_of(self.sys_root, address)
            if address not in drivers:
                driver = driver_of(self.sys_root, address)
                drivers[address] = driver if isinstance(driver, str) else None
            members.append(GroupMember(address, drivers[address], self._classes[address]))
        return IommuGroup(number, tuple(members))

    def _refreshed(self, gpu: Gpu, drivers: dict[str, str | None]) -> Gpu:
        driver = driver_of(self.sys_root, gpu.pci_address)
        if not (driver is None or isinstance(driver, str)):
            return gpu  # gone from sysfs: keep what was known; health says so
        drivers[gpu.pci_address] = driver
        group = _group_link(self._devices_dir, gpu.pci_address) or gpu.iommu_group
        if driver == gpu.driver and group == gpu.iommu_group:
            return gpu
        return replace(gpu, driver=driver, iommu_group=group)


def _exists(path: str) -> bool:
    """:func:`~vectorlay.adapters.probe.iommu.vfio_device_present` on a plain string:
    ``stat``, whatever the file type, never ``open``."""
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _group_link(devices: str, address: str) -> str | None:
    try:
        target = os.readlink(f"{devices}/{address}/iommu_group")
    except OSError:
        return None
    group = target.rstrip("/").rpartition("/")[2]
    return group if IOMMU_GROUP_RE.fullmatch(group) else None


__all__ = ["GpuStateReader"]
