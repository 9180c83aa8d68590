"""The host's ``/sys`` (``$HOST_SYS``): PCI functions, bound drivers, IOMMU groups, modules.

Used when lspci is missing or unusable (every GPU is still found, with
numeric names only: sysfs has no pci.ids), for the IOMMU group of every GPU,
for the driver of every GPU (in the full report and on every heartbeat: one
``readlink`` per GPU, no subprocess), and for built-in kernel modules.

Layout read::

    bus/pci/devices/0000:17:00.0/class        0x030200
    bus/pci/devices/0000:17:00.0/vendor       0x10de
    bus/pci/devices/0000:17:00.0/device       0x2330
    bus/pci/devices/0000:17:00.0/driver    -> ../../../bus/pci/drivers/vfio-pci
    bus/pci/devices/0000:17:00.0/iommu_group -> ../../../kernel/iommu_groups/25
    module/vfio_pci/                          (loaded or built in)

Every read is defensive: a missing file, a dangling link or junk content
means "unknown" for that one fact, never an exception.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from vectorlay.adapters.probe.pci import (
    GPU_CLASSES,
    GPU_VENDORS,
    UNNAMED_DEVICE,
    PciFunction,
    clean_text,
    normalize_address,
)
from vectorlay.domain.validation import IOMMU_GROUP_RE

PCI_DEVICES: Final = Path("bus/pci/devices")
_HEX_ID: Final = re.compile(r"0x([0-9a-fA-F]{4})")
_HEX_CLASS: Final = re.compile(r"0x([0-9a-fA-F]{4})[0-9a-fA-F]{2}")
_MAX_READ: Final = 64


class Absent:
    """The device itself is not in sysfs (as opposed to present with no driver)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent()


def devices_dir(sys_root: Path) -> Path:
    return sys_root / PCI_DEVICES


def read_gpu_functions(sys_root: Path) -> list[PciFunction]:
    """Every GPU function under ``$HOST_SYS/bus/pci/devices``, sorted by address.

    Only GPUs are returned: the class and vendor files are read first and
    the rest only for functions that pass :func:`vectorlay.adapters.probe.pci.is_gpu`.
    """
    try:
        entries = sorted(os.listdir(devices_dir(sys_root)))
    except OSError:
        return []
    functions = []
    for entry in entries:
        function = _gpu_function(sys_root, entry)
        if function is not None:
            functions.append(function)
    return functions


def _gpu_function(sys_root: Path, entry: str) -> PciFunction | None:
    address = normalize_address(entry)
    if address is None:
        return None
    base = devices_dir(sys_root) / entry
    class_id = _read_match(base / "class", _HEX_CLASS)
    if class_id not in GPU_CLASSES:
        return None
    vendor_id = _read_match(base / "vendor", _HEX_ID)
    if vendor_id is None or vendor_id not in GPU_VENDORS:
        return None
    device_id = _read_match(base / "device", _HEX_ID)
    if device_id is None:
        return None
    driver = driver_of(sys_root, address)
    return PciFunction(
        address=address,
        class_id=class_id,
        class_name=GPU_CLASSES[class_id],
        vendor_id=vendor_id,
        vendor_name=GPU_VENDORS[vendor_id][1],
        device_id=device_id,
        device_name=UNNAMED_DEVICE,
        driver=driver if isinstance(driver, str) else None,
        iommu_group=iommu_group_of(sys_root, address),
    )


def driver_of(sys_root: Path, address: str) -> str | Absent | None:
    """The driver bound to ``address``; ``None`` when none is, ``ABSENT`` when sysfs lacks it."""
    # Plain strings and os calls: this runs for every GPU on every heartbeat.
    base = f"{sys_root}/{PCI_DEVICES}/{address}"
    try:
        target = os.readlink(base + "/driver")
    except FileNotFoundError:
        return None if os.path.isdir(base) else ABSENT
    except OSError:
        return ABSENT
    name = target.rstrip("/").rpartition("/")[2]
    if not name:
        return None
    return name if name.isprintable() and len(name) <= 64 else clean_text(name, 64)


def iommu_group_of(sys_root: Path, address: str) -> str | None:
    try:
        target = os.readlink(devices_dir(sys_root) / address / "iommu_group")
    except OSError:
        return None
    group = os.path.basename(target.rstrip("/"))
    return group if IOMMU_GROUP_RE.fullmatch(group) else None


def class_of(sys_root: Path, address: str) -> str | None:
    """The function's class as four hex digits (``0403``), ``None`` when unreadable."""
    return _read_match(devices_dir(sys_root) / address / "class", _HEX_CLASS)


def module_present(sys_root: Path, name: str) -> bool:
    """``$HOST_SYS/module/<name>`` exists: the module is loaded or built into the kernel."""
    return (sys_root / "module" / name).is_dir()


def _read_match(path: Path, pattern: re.Pattern[str]) -> str | None:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_READ)
    except OSError:
        return None
    match = pattern.fullmatch(raw.decode("ascii", "replace").strip())
    return match.group(1).lower() if match else None


__all__ = [
    "ABSENT",
    "PCI_DEVICES",
    "Absent",
    "class_of",
    "devices_dir",
    "driver_of",
    "iommu_group_of",
    "module_present",
    "read_gpu_functions",
]
