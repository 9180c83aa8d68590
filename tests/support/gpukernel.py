"""A fake host's sysfs on disk whose "kernel" answers driver binds the way Linux does.

:func:`build` lays out, under one folder, what ``prepare-gpus`` and
``check`` read (``sys/`` for ``HOST_SYS``, ``proc/`` for ``HOST_PROC``,
``dev/`` for ``HOST_DEV``)::

    sys/devices/pci0000:00/<addr>/{class,vendor,device,driver_override[,boot_vga]}
    sys/devices/pci0000:00/<addr>/driver      -> ../../../bus/pci/drivers/<driver>
    sys/devices/pci0000:00/<addr>/iommu_group -> ../../../kernel/iommu_groups/<N>
    sys/bus/pci/devices/<addr>                -> ../../../devices/pci0000:00/<addr>
    sys/bus/pci/drivers/<driver>/{bind,unbind,new_id,remove_id}
    sys/bus/pci/drivers_probe
    sys/kernel/iommu_groups/<N>/devices/<addr> -> ../../../../devices/pci0000:00/<addr>
    dev/vfio/<N>                               once a member of group N is on vfio-pci

:class:`FakeKernel` is a :class:`~vectorlay.ports.SysfsWriter`: each write
goes through the real :class:`~vectorlay.adapters.probe.binding.SysfsFileWriter`
(so paths and the no-create rule are the real adapter's), then the "kernel"
acts on the tree as ``drivers/pci/pci-driver.c`` and ``drivers/base/bus.c``
do: ``driver_override`` reads back ``(null)`` when cleared; ``unbind``
detaches the device from that driver (``ENODEV`` if it does not hold it);
``drivers_probe`` offers a driverless device to its override, else to its
host driver, if that driver is loaded.  ``refuse`` makes a bind silently
not take (the device ends on the driver given, ``None`` for none), and
:meth:`FakeKernel.modprobe` loads a driver (or fails, when told).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vectorlay.adapters.probe.binding import SysfsFileWriter

FIXTURES: Final = Path(__file__).resolve().parent.parent / "fixtures"
INTEL_CPUINFO: Final = FIXTURES / "cpuinfo" / "x86_intel_xeon_kvm_guest_cpuinfo_first_cpu.txt"
AMD_CPUINFO: Final = FIXTURES / "cpuinfo" / "x86_amd_ryzen7_7735hs_cpuinfo_first_cpu_EXCERPT.txt"
NULL_OVERRIDE: Final = "(null)\n"
DRIVER_FILES: Final = ("bind", "unbind", "new_id", "remove_id")
MODPROBE_NOT_FOUND: Final = (
    "modprobe: FATAL: Module vfio-pci not found in directory /lib/modules/6.8.0-49-generic"
)


@dataclass(frozen=True)
class Device:
    """A PCI function (``class_code`` with its prog-if: ``030000``)."""

    address: str
    class_code: str
    driver: str | None = None
    group: str | None = None
    vendor: str = "10de"
    device: str = "2204"
    boot_vga: bool | None = None  # None: no boot_vga file (only VGA devices have one)


def gpu(
    address: str, driver: str | None = None, group: str | None = None, *, boot_vga: bool = False
) -> Device:
    return Device(address, "030000", driver, group, boot_vga=boot_vga)


def audio(address: str, driver: str | None = "snd_hda_intel", group: str | None = None) -> Device:
    return Device(address, "040300", driver, group, device="1aef")


def root_port(address: str, group: str | None = None) -> Device:
    return Device(address, "060400", "pcieport", group, vendor="8086", device="1901")


class FakeKernel:
    def __init__(
        self,
        root: Path,
        devices: Iterable[Device],
        *,
        loaded: Iterable[str] = ("vfio-pci",),
        refuse: Mapping[str, str | None] | None = None,
        cpuinfo: Path = INTEL_CPUINFO,
    ) -> None:
        self.root = root
        self.devices = {d.address: d for d in devices}
        self.refuse = dict(refuse or {})
        self.modprobe_fails = False
        self.writes: list[tuple[str, str]] = []
        self.modprobes: list[str] = []
        self._files = SysfsFileWriter(self.sys)
        self._build(set(loaded), cpuinfo)

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    def env(self) -> dict[str, str]:
        return {"HOST_SYS": str(self.sys), "HOST_PROC": str(self.proc), "HOST_DEV": str(self.dev)}

    # --- the SysfsWriter port -------------------------------------------------------

    def write(self, relative: str, value: str) -> None:
        self._files.write(relative, value)
        self.writes.append((relative, value))
        parts = relative.split("/")
        text = value.strip()
        if parts[:3] == ["bus", "pci", "devices"] and parts[4:] == ["driver_override"]:
            (self._device_dir(parts[3]) / "driver_override").write_text(
                f"{text}\n" if text else NULL_OVERRIDE
            )
        elif parts[:3] == ["bus", "pci", "drivers"] and parts[4:] == ["unbind"]:
            if self.driver(text) != parts[3]:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), relative)
            (self._device_dir(text) / "driver").unlink()
        elif relative == "bus/pci/drivers_probe":
            if text not in self.devices:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), relative)
            self._probe(text)

    def driver(self, address: str) -> str | None:
        return self._files.driver(address)

    def driver_loaded(self, name: str) -> bool:
        return self._files.driver_loaded(name)

    # --- the rest of the kernel -----------------------------------------------------

    async def modprobe(self, module: str) -> str | None:
        """A :data:`~vectorlay.app.agent.gpubind.ModuleLoader`: loads ``module``'s driver."""
        self.modprobes.append(module)
        if self.modprobe_fails:
            return MODPROBE_NOT_FOUND
        self._add_driver(module)
        return None

    def override(self, address: str) -> str:
        return (self._device_dir(address) / "driver_override").read_text()

    def drivers(self) -> dict[str, str | None]:
        return {a: self.driver(a) for a in self.devices}

    def _probe(self, address: str) -> None:
        if self.driver(address) is not None:
            return
        if address in self.refuse:
            taken = self.refuse[address]
            if taken is not None:
                self._link_driver(address, taken)
            return
        override = self.override(address).strip()
        candidate = self.devices[address].driver if override == "(null)" else override
        if candidate is not None and self.driver_loaded(candidate):
            self._link_driver(address, candidate)

    def _link_driver(self, address: str, driver: str) -> None:
        self._add_driver(driver)
        (self._device_dir(address) / "driver").symlink_to(f"../../../bus/pci/drivers/{driver}")
        group = self.devices[address].group
        if driver == "vfio-pci" and group is not None:
            # vfio-pci registers the group: its character device appears.
            (self.dev / "vfio").mkdir(parents=True, exist_ok=True)
            (self.dev / "vfio" / group).touch()

    def _add_driver(self, driver: str) -> None:
        folder = self.sys / "bus" / "pci" / "drivers" / driver
        folder.mkdir(parents=True, exist_ok=True)
        for name in DRIVER_FILES:
            (folder / name).touch()

    def _device_dir(self, address: str) -> Path:
        return self.sys / "devices" / "pci0000:00" / address

    def _build(self, loaded: set[str], cpuinfo: Path) -> None:
        pci = self.sys / "bus" / "pci"
        (pci / "devices").mkdir(parents=True)
        (pci / "drivers_probe").touch()
        (self.sys / "kernel" / "iommu_groups").mkdir(parents=True)
        self.dev.mkdir()
        self.proc.mkdir()
        (self.proc / "cpuinfo").write_bytes(cpuinfo.read_bytes())
        for name in loaded | {d.driver for d in self.devices.values() if d.driver}:
            self._add_driver(name)
        for d in self.devices.values():
            real = self._device_dir(d.address)
            real.mkdir(parents=True)
            (real / "class").write_text(f"0x{d.class_code}\n")
            (real / "vendor").write_text(f"0x{d.vendor}\n")
            (real / "device").write_text(f"0x{d.device}\n")
            (real / "driver_override").write_text(NULL_OVERRIDE)
            if d.boot_vga is not None:
                (real / "boot_vga").write_text("1\n" if d.boot_vga else "0\n")
            if d.driver is not None:
                real.joinpath("driver").symlink_to(f"../../../bus/pci/drivers/{d.driver}")
                if d.driver == "vfio-pci" and d.group is not None:
                    (self.dev / "vfio").mkdir(exist_ok=True)
                    (self.dev / "vfio" / d.group).touch()
            if d.group is not None:
                members = self.sys / "kernel" / "iommu_groups" / d.group / "devices"
                members.mkdir(parents=True, exist_ok=True)
                (members / d.address).symlink_to(f"../../../../devices/pci0000:00/{d.address}")
                real.joinpath("iommu_group").symlink_to(f"../../../kernel/iommu_groups/{d.group}")
            (pci / "devices" / d.address).symlink_to(f"../../../devices/pci0000:00/{d.address}")


__all__ = [
    "AMD_CPUINFO",
    "INTEL_CPUINFO",
    "MODPROBE_NOT_FOUND",
    "Device",
    "FakeKernel",
    "audio",
    "gpu",
    "root_port",
]
