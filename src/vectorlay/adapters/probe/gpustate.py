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

from collections.abc import Sequence
from pathlib import Path

from msgspec.structs import replace

from vectorlay.adapters.probe.health import read_signals
from vectorlay.adapters.probe.iommu import read_group, vfio_device_present
from vectorlay.adapters.probe.sysfs import driver_of, iommu_group_of
from vectorlay.domain.agent.gpustate import assess
from vectorlay.domain.agent.health import GpuHealth, HealthTracker
from vectorlay.domain.agent.passthrough import IommuGroup
from vectorlay.domain.messages import Gpu


class GpuStateReader:
    def __init__(self, sys_root: Path, dev_root: Path) -> None:
        self.sys_root = sys_root
        self.dev_root = dev_root
        self._tracker = HealthTracker()

    def read(self, gpus: Sequence[Gpu]) -> list[Gpu]:
        """``gpus`` with driver and group read again and the three keys set."""
        current = [self._refreshed(g) for g in gpus]
        numbers = sorted({g.iommu_group for g in current if g.iommu_group})
        groups: dict[str, IommuGroup] = {}
        for number in numbers:
            group = read_group(self.sys_root, number)
            if group is not None:
                groups[number] = group
        vfio = {n: vfio_device_present(self.dev_root, n) for n in numbers}
        sys_root = str(self.sys_root)
        health: dict[str, GpuHealth] = {}
        for gpu in current:
            signals = read_signals(sys_root, gpu.pci_address)
            health[gpu.pci_address] = self._tracker.assess(gpu.pci_address, signals)
        return assess(current, groups=groups, vfio_present=vfio, health=health)

    def _refreshed(self, gpu: Gpu) -> Gpu:
        driver = driver_of(self.sys_root, gpu.pci_address)
        if not (driver is None or isinstance(driver, str)):
            return gpu  # gone from sysfs: keep what was known; health says so
        group = iommu_group_of(self.sys_root, gpu.pci_address) or gpu.iommu_group
        if driver == gpu.driver and group == gpu.iommu_group:
            return gpu
        return replace(gpu, driver=driver, iommu_group=group)


__all__ = ["GpuStateReader"]
