"""PCI functions and the rule that says which of them are GPUs.

Shared by the two GPU sources, :mod:`vectorlay.adapters.probe.lspci` and
:mod:`vectorlay.adapters.probe.sysfs`, so that both apply exactly the same rule and
print exactly the same ``gpu_info`` line.

A GPU is a function of class display (``0300`` VGA, ``0302`` 3D, ``0380``
other display) or processing accelerator (``1200``) from NVIDIA (``10de``) or
AMD (``1002``).  Everything else is left out by that rule alone: audio
functions (``0403``), NVSwitch and other bridges (``06xx``), BMC graphics
(ASPEED ``1a03``, Matrox ``102b``), emulated VGA (QEMU ``1234:1111``) and
storage whose name happens to contain "3D".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from vectorlay.domain.messages import Gpu

GPU_CLASSES: Final = {
    "0300": "VGA compatible controller",
    "0302": "3D controller",
    "0380": "Display controller",
    "1200": "Processing accelerators",
}

# vendor id -> (short name on the wire, name as pci.ids spells it)
GPU_VENDORS: Final = {
    "10de": ("nvidia", "NVIDIA Corporation"),
    "1002": ("amd", "Advanced Micro Devices, Inc. [AMD/ATI]"),
}

# lspci's word for a device pci.ids does not name ("NVIDIA Corporation Device [10de:2330]").
UNNAMED_DEVICE: Final = "Device"
# Its words for a class and a vendor it cannot name (no pci.ids at all):
# "Class:\tClass [0302]", "Vendor:\tVendor [10de]" (pciutils lib/names.c).
UNNAMED_CLASS: Final = "Class"
UNNAMED_VENDOR: Final = "Vendor"

NO_DRIVER_MARK: Final = " (no driver bound)"

_ADDRESS: Final = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{2}):"
    r"(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])$"
)
_MAX_NAME: Final = 200


@dataclass(frozen=True, slots=True)
class PciFunction:
    """One PCI function as lspci or sysfs describes it (ids are 4 lower-case hex digits)."""

    address: str
    class_id: str
    class_name: str
    vendor_id: str
    vendor_name: str
    device_id: str
    device_name: str
    driver: str | None = None
    iommu_group: str | None = None


def normalize_address(text: str) -> str | None:
    """``0000:17:00.0`` from any spelling of a PCI address, ``None`` if it is not one.

    lspci prints ``0000:17:00.0`` (or ``17:00.0`` without ``-D``); nvidia-smi
    prints ``00000000:17:00.0`` in upper case.  Domains above ``ffff`` (Intel
    VMD puts devices in ``10000``) keep all their digits.
    """
    match = _ADDRESS.match(text.strip())
    if match is None:
        return None
    domain = int(match.group("domain") or "0", 16)
    return (
        f"{domain:04x}:{match.group('bus').lower()}:{match.group('slot').lower()}."
        f"{match.group('function')}"
    )


def class_name_or_known(class_id: str, name: str) -> str:
    """``name``; the GPU class's own name when lspci could not name it."""
    if name and name != UNNAMED_CLASS:
        return name
    return GPU_CLASSES.get(class_id, name or UNNAMED_CLASS)


def vendor_name_or_known(vendor_id: str, name: str) -> str:
    """``name``; the GPU vendor's pci.ids name when lspci could not name it."""
    if name and name != UNNAMED_VENDOR:
        return name
    known = GPU_VENDORS.get(vendor_id)
    return known[1] if known else name or UNNAMED_VENDOR


def is_gpu(function: PciFunction) -> bool:
    return function.class_id in GPU_CLASSES and function.vendor_id in GPU_VENDORS


def model_name(function: PciFunction) -> str:
    """The device's name; ``Device 2330`` when pci.ids does not know it, as plain lspci says."""
    if function.device_name == UNNAMED_DEVICE or not function.device_name:
        return f"{UNNAMED_DEVICE} {function.device_id}"
    return function.device_name


def gpu_line(function: PciFunction) -> str:
    """One ``gpu_info`` line, as ``lspci -Dnn`` names the function.

    ``0000:17:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330]``;
    a GPU with no driver bound gets `` (no driver bound)`` appended, in
    the way lspci appends ``(rev a1)``.
    """
    device = function.device_name or UNNAMED_DEVICE
    line = (
        f"{function.address} {function.class_name} [{function.class_id}]: "
        f"{function.vendor_name} {device} [{function.vendor_id}:{function.device_id}]"
    )
    return line if function.driver else line + NO_DRIVER_MARK


def to_gpu(function: PciFunction) -> Gpu:
    vendor = GPU_VENDORS.get(function.vendor_id, (function.vendor_id, ""))[0]
    return Gpu(
        pci_address=function.address,
        vendor=vendor,
        vendor_id=function.vendor_id,
        device_id=function.device_id,
        model=model_name(function),
        driver=function.driver,
        iommu_group=function.iommu_group,
    )


def clean_text(text: str, limit: int = _MAX_NAME) -> str:
    """Outside text made safe for a report and a terminal: no control characters, bounded."""
    if text.isprintable() and len(text) <= limit:
        return text
    cleaned = "".join(
        "?" if unicodedata.category(ch).startswith("C") else ch for ch in text[: limit + 1]
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


__all__ = [
    "GPU_CLASSES",
    "GPU_VENDORS",
    "NO_DRIVER_MARK",
    "UNNAMED_CLASS",
    "UNNAMED_DEVICE",
    "UNNAMED_VENDOR",
    "PciFunction",
    "class_name_or_known",
    "clean_text",
    "gpu_line",
    "is_gpu",
    "model_name",
    "normalize_address",
    "to_gpu",
    "vendor_name_or_known",
]
