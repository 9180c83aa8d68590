"""Reading what ``prepare-gpus`` plans from, and writing the binds, under ``$HOST_SYS``.

Layout read and written (the kernel's ``Documentation/ABI/testing/sysfs-bus-pci``)::

    bus/pci/devices/<addr>/boot_vga          1 for the VGA device the firmware set up (the console)
    bus/pci/devices/<addr>/driver_override   written: vfio-pci ("\\n" clears it)
    bus/pci/drivers/<driver>/unbind          written: <addr>
    bus/pci/drivers_probe                    written: <addr> (binds it to its override)
    bus/pci/drivers/vfio-pci/                present once vfio-pci is loaded

Only sysfs attribute files are written, each in one ``write(2)`` and never
created (``O_WRONLY`` without ``O_CREAT``: a path that is not there is an
error, as on a real sysfs).  Nothing under ``/dev/vfio`` is ever opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from vectorlay.adapters.probe.iommu import has_iommu_groups, read_groups
from vectorlay.adapters.probe.sysfs import PCI_DEVICES, driver_of, read_gpu_functions
from vectorlay.domain.agent.gpuprep import GpuFacts
from vectorlay.domain.agent.passthrough import IommuGroup

PCI_DRIVERS: Final = PurePosixPath("bus/pci/drivers")
DRIVERS_PROBE: Final = PurePosixPath("bus/pci/drivers_probe")
_MAX_READ: Final = 64


@dataclass(frozen=True, slots=True)
class PciState:
    """What the plan is made from: the GPUs, their groups, the console devices."""

    gpus: tuple[GpuFacts, ...]
    groups: dict[str, IommuGroup]
    console: frozenset[str]
    iommu_on: bool


def read_pci_state(sys_root: Path) -> PciState:
    """The host's GPUs (as the probe finds them in sysfs) and every member of their groups."""
    gpus = tuple(
        GpuFacts(f.address, f.class_id, f.driver, f.iommu_group)
        for f in read_gpu_functions(sys_root)
    )
    numbers = {g.iommu_group for g in gpus if g.iommu_group is not None}
    groups = read_groups(sys_root, numbers) if numbers else {}
    addresses = {g.address for g in gpus} | {
        m.address for group in groups.values() for m in group.members
    }
    console = frozenset(a for a in addresses if boot_vga(sys_root, a))
    return PciState(gpus, groups, console, has_iommu_groups(sys_root))


def boot_vga(sys_root: Path, address: str) -> bool:
    """``boot_vga`` reads 1: the firmware's console device (only VGA devices have the file)."""
    try:
        with open(sys_root / PCI_DEVICES / address / "boot_vga", "rb") as fh:
            return fh.read(_MAX_READ).strip() == b"1"
    except OSError:
        return False


def override_path(address: str) -> str:
    return f"{PCI_DEVICES}/{address}/driver_override"


def unbind_path(driver: str) -> str:
    return f"{PCI_DRIVERS}/{driver}/unbind"


class SysfsFileWriter:
    """The :class:`~vectorlay.ports.SysfsWriter` of a real host, rooted at ``$HOST_SYS``."""

    def __init__(self, sys_root: Path) -> None:
        self.sys_root = Path(sys_root)

    def write(self, relative: str, value: str) -> None:
        path = self._inside(relative)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            # One write: a sysfs store sees the whole value at once.
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)

    def driver(self, address: str) -> str | None:
        found = driver_of(self.sys_root, address)
        return found if isinstance(found, str) else None

    def driver_loaded(self, name: str) -> bool:
        return (self.sys_root / PCI_DRIVERS / name).is_dir()

    def _inside(self, relative: str) -> Path:
        parts = PurePosixPath(relative).parts
        if not parts or relative.startswith("/") or ".." in parts:
            raise ValueError(f"not a path inside HOST_SYS: {relative!r}")
        return self.sys_root / relative


def cpu_vendor(cpuinfo: str) -> str | None:
    """``vendor_id`` of ``/proc/cpuinfo`` (``GenuineIntel``, ``AuthenticAMD``), else ``None``."""
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() == "vendor_id" and value.strip():
            return value.strip()
    return None


__all__ = [
    "DRIVERS_PROBE",
    "PCI_DRIVERS",
    "PciState",
    "SysfsFileWriter",
    "boot_vga",
    "cpu_vendor",
    "override_path",
    "read_pci_state",
    "unbind_path",
]
