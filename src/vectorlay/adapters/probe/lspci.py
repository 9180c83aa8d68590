"""GPUs from ``lspci -Dvmmnnk``.

``-vmm`` prints one record per PCI function, records separated by blank
lines, each line ``Key:<TAB>value``; ``-nn`` adds the numeric id in brackets
after every name; ``-k`` adds ``Driver:`` (the one in use) and ``Module:``
lines; ``-D`` prints the domain.  A real record::

    Slot:	0000:17:00.0
    Class:	3D controller [0302]
    Vendor:	NVIDIA Corporation [10de]
    Device:	GH100 [H100 SXM5 80GB] [2330]
    SVendor:	NVIDIA Corporation [10de]
    SDevice:	Device [16c1]
    Rev:	a1
    Driver:	vfio-pci
    Module:	nvidiafb
    Module:	nouveau
    IOMMUGroup:	25

Names themselves may end in brackets (``[AMD/ATI]``, ``[3DNAND, Sentinel
Rock Controller]``); only a last bracket of four hex digits is an id.  A
record without a usable slot, class, vendor or device id is skipped, never
guessed at.  Without pci.ids lspci names nothing (``Class [0302]``,
``Vendor [10de]``, ``Device [20f1]``); a GPU then gets the class and vendor
names that the sysfs path gives it.  lspci's ``Unable to load libkmod
resources`` warning goes to stderr with exit status 0 and is harmless.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

from vectorlay.adapters.commands import CommandResult, first_line, run_command
from vectorlay.adapters.probe.pci import (
    PciFunction,
    class_name_or_known,
    clean_text,
    normalize_address,
    vendor_name_or_known,
)
from vectorlay.domain.validation import IOMMU_GROUP_RE
from vectorlay.errors import ProbeError

log = logging.getLogger(__name__)

LSPCI_ARGS: Final = ("-Dvmmnnk",)
# A large server prints well under 1 MB; more than this is not lspci output.
OUTPUT_LIMIT: Final = 8 << 20

_HEX4: Final = re.compile(r"[0-9a-fA-F]{4}")
_MAX_KEY: Final = 16


class LspciFailed(ProbeError):
    """lspci ran but its answer cannot be used; the text is one line for the operator."""


@dataclass(frozen=True, slots=True)
class _Named:
    name: str
    id: str


def parse_vmm(text: str) -> list[PciFunction]:
    """Every usable record of ``lspci -Dvmmnnk`` output, in output order."""
    functions: list[PciFunction] = []
    record: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if not line.strip():
            _finish(record, functions)
            record = {}
            continue
        key, colon, value = line.partition(":")
        if not colon or len(key) > _MAX_KEY or not (key.isascii() and key.isalpha()):
            continue  # not a record line: a warning, junk, a cut-off line
        if key == "Slot" and "Slot" in record:
            # A record that lost its blank-line separator: close it here.
            _finish(record, functions)
            record = {}
        # Repeated keys (Module:) keep their first value; the parser needs none of them.
        record.setdefault(key, value.strip())
    _finish(record, functions)
    return functions


def _finish(record: dict[str, str], out: list[PciFunction]) -> None:
    if not record:
        return
    function = _function(record)
    if function is None:
        log.debug("lspci: skipped an incomplete record (slot %r)", record.get("Slot", "?")[:40])
        return
    out.append(function)


def _function(record: dict[str, str]) -> PciFunction | None:
    address = normalize_address(record.get("Slot", ""))
    klass = _named(record.get("Class", ""))
    vendor = _named(record.get("Vendor", ""))
    device = _named(record.get("Device", ""))
    if address is None or klass is None or vendor is None or device is None:
        return None
    driver = record.get("Driver", "").strip() or None
    group = record.get("IOMMUGroup", "").strip()
    return PciFunction(
        address=address,
        class_id=klass.id,
        class_name=class_name_or_known(klass.id, klass.name),
        vendor_id=vendor.id,
        vendor_name=vendor_name_or_known(vendor.id, vendor.name),
        device_id=device.id,
        device_name=device.name,
        driver=clean_text(driver, 64) if driver else None,
        iommu_group=group if IOMMU_GROUP_RE.fullmatch(group) else None,
    )


def _named(value: str) -> _Named | None:
    # "<name> [<4 hex digits>]"; sliced rather than matched so that a hostile
    # multi-megabyte line costs linear time.
    if len(value) < 6 or value[-6] != "[" or value[-1] != "]":
        return None
    ident = value[-5:-1]
    if not _HEX4.fullmatch(ident):
        return None
    return _Named(clean_text(value[:-6].strip()), ident.lower())


def functions_from_result(result: CommandResult) -> list[PciFunction]:
    """The PCI functions in a finished lspci run; raises :class:`LspciFailed`."""
    if result.error is not None:
        raise LspciFailed(f"lspci could not run: {result.error}")
    if result.timed_out:
        raise LspciFailed("lspci did not answer in time")
    if result.truncated:
        raise LspciFailed(f"lspci printed more than {OUTPUT_LIMIT} bytes")
    if result.returncode != 0:
        reason = clean_text(first_line(result.stderr), 120) or "no message"
        raise LspciFailed(f"lspci exited with status {result.returncode}: {reason}")
    functions = parse_vmm(result.stdout.decode("utf-8", "replace"))
    if not functions:
        # A host always has PCI functions (bridges at least); an empty or
        # unreadable answer is not "no GPUs".
        raise LspciFailed("lspci printed no usable -vmmnnk record")
    return functions


async def list_functions(lspci: str, *, timeout: float) -> list[PciFunction]:
    """Run ``lspci -Dvmmnnk``; raises :class:`LspciFailed` with a one-line reason."""
    result = await run_command([lspci, *LSPCI_ARGS], timeout=timeout, limit=OUTPUT_LIMIT)
    return functions_from_result(result)


__all__ = [
    "LSPCI_ARGS",
    "LspciFailed",
    "functions_from_result",
    "list_functions",
    "parse_vmm",
]
