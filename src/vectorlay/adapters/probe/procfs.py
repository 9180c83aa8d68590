"""The host's ``/proc`` (``$HOST_PROC``): hostname, CPU, memory, loaded modules.

Reading the host's files rather than asking the Python process about itself
lets the agent run in a container with the host's ``/proc`` mounted
elsewhere (as node_exporter does), and lets tests point at a fake host.
When a file is missing the caller falls back to what the process can see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vectorlay.adapters.probe.pci import clean_text

_MAX_FILE: Final = 4 << 20
# Keys that name the CPU, in order of preference: x86 and most others; the
# board on Raspberry Pi OS; POWER and SPARC; 32-bit ARM kernels before 3.8;
# MIPS; RISC-V.
_CPU_MODEL_KEYS: Final = ("model name", "Model", "cpu", "Processor", "cpu model", "uarch")
_S390_VENDOR: Final = "IBM/S390"
_S390_MACHINE: Final = re.compile(r"\bmachine = (\w+)")
_ARM_IMPLEMENTER: Final = "CPU implementer"
_ARM_PART: Final = "CPU part"
_ARM_ID: Final = re.compile(r"0[xX]([0-9a-fA-F]{1,4})")

# 64-bit ARM kernels print no model name, only the implementer and part
# numbers of each core.  Names as lscpu gives them (util-linux
# sys-utils/lscpu-arm.c), for the cores a GPU server or a board may carry:
# implementer -> (vendor, {part -> core}).
ARM_CORES: Final[dict[int, tuple[str, dict[int, str]]]] = {
    0x41: (
        "ARM",
        {
            0xC07: "Cortex-A7",
            0xC08: "Cortex-A8",
            0xC09: "Cortex-A9",
            0xC0F: "Cortex-A15",
            0xD03: "Cortex-A53",
            0xD04: "Cortex-A35",
            0xD05: "Cortex-A55",
            0xD07: "Cortex-A57",
            0xD08: "Cortex-A72",
            0xD09: "Cortex-A73",
            0xD0A: "Cortex-A75",
            0xD0B: "Cortex-A76",
            0xD0C: "Neoverse-N1",
            0xD0D: "Cortex-A77",
            0xD0E: "Cortex-A76AE",
            0xD40: "Neoverse-V1",
            0xD41: "Cortex-A78",
            0xD42: "Cortex-A78AE",
            0xD44: "Cortex-X1",
            0xD46: "Cortex-A510",
            0xD47: "Cortex-A710",
            0xD48: "Cortex-X2",
            0xD49: "Neoverse-N2",
            0xD4A: "Neoverse-E1",
            0xD4B: "Cortex-A78C",
            0xD4D: "Cortex-A715",
            0xD4E: "Cortex-X3",
            0xD4F: "Neoverse-V2",
            0xD80: "Cortex-A520",
            0xD81: "Cortex-A720",
            0xD82: "Cortex-X4",
            0xD83: "Neoverse-V3AE",
            0xD84: "Neoverse-V3",
            0xD85: "Cortex-X925",
            0xD87: "Cortex-A725",
            0xD8E: "Neoverse-N3",
        },
    ),
    0x42: ("Broadcom", {0x100: "Brahma-B53", 0x516: "ThunderX2"}),
    0x43: (
        "Cavium",
        {
            0x0A0: "ThunderX",
            0x0A1: "ThunderX-88XX",
            0x0A2: "ThunderX-81XX",
            0x0A3: "ThunderX-83XX",
            0x0AF: "ThunderX2-99xx",
            0x0B8: "ThunderX3-T110",
        },
    ),
    0x46: ("FUJITSU", {0x001: "A64FX"}),
    0x48: ("HiSilicon", {0xD01: "TaiShan-v110", 0xD02: "TaiShan-v120"}),
    0x4E: ("NVIDIA", {0x000: "Denver", 0x003: "Denver 2", 0x004: "Carmel"}),
    0x50: ("APM", {0x000: "X-Gene"}),
    0x51: ("Qualcomm", {0x001: "Oryon", 0xC00: "Falkor", 0xC01: "Saphira"}),
    0x6D: ("Microsoft", {0xD49: "Azure-Cobalt-100"}),
    0x70: ("Phytium", {0x660: "FTC660", 0x661: "FTC661", 0x662: "FTC662", 0x663: "FTC663"}),
    0xC0: ("Ampere", {0xAC3: "Ampere-1", 0xAC4: "Ampere-1a"}),
}


@dataclass(frozen=True, slots=True)
class CpuInfo:
    model: str | None
    logical_cpus: int


@dataclass(frozen=True, slots=True)
class MemInfo:
    total_bytes: int
    available_bytes: int


def read_text(path: Path, limit: int = _MAX_FILE) -> str | None:
    """A /proc or /sys file as text, ``None`` when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def read_hostname(proc_root: Path) -> str | None:
    text = read_text(proc_root / "sys" / "kernel" / "hostname", 256)
    name = text.strip() if text else ""
    return clean_text(name, 64) if name else None


def parse_cpuinfo(text: str) -> CpuInfo:
    """CPU model and count of logical CPUs (``processor`` entries) from ``/proc/cpuinfo``.

    The model is the first of :data:`_CPU_MODEL_KEYS` present; else, on
    s390x, the machine type; else the ARM cores named from their
    implementer and part numbers; else ``None``.
    """
    found: dict[str, str] = {}
    arm_cores: list[tuple[str, str]] = []
    implementer = ""
    count = 0
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key = key.strip()
        value = value.strip()
        if key == "processor" and value.isdigit():
            count += 1
        elif key == _ARM_IMPLEMENTER:
            implementer = value
        elif key == _ARM_PART and (implementer, value) not in arm_cores:
            arm_cores.append((implementer, value))
        elif key.startswith("processor ") and "machine" not in found:
            # s390x: "processor 0: version = FF,  identification = 32C047,  machine = 2827"
            match = _S390_MACHINE.search(value)
            if match:
                found["machine"] = match.group(1)
        elif value and key not in found:
            found[key] = value
    model = (
        next((found[k] for k in _CPU_MODEL_KEYS if k in found), None)
        or _s390_model(found)
        or _arm_model(arm_cores)
    )
    return CpuInfo(clean_text(" ".join(model.split())) if model else None, count)


def _s390_model(found: dict[str, str]) -> str | None:
    if found.get("vendor_id") != _S390_VENDOR or "machine" not in found:
        return None
    return f"{_S390_VENDOR} machine type {found['machine']}"


def _arm_model(cores: list[tuple[str, str]]) -> str | None:
    """``ARM Neoverse-V2``; ``ARM Cortex-A55 + ARM Cortex-A76`` for mixed cores."""
    names = [name for name in (_arm_core_name(i, p) for i, p in cores) if name is not None]
    return " + ".join(dict.fromkeys(names)) or None


def _arm_core_name(implementer: str, part: str) -> str | None:
    impl_id = _hex_number(implementer)
    part_id = _hex_number(part)
    if impl_id is None or part_id is None:
        return None
    vendor, parts = ARM_CORES.get(impl_id, ("", {}))
    core = parts.get(part_id)
    if core is None:
        return f"ARM implementer 0x{impl_id:02x} part 0x{part_id:03x}"
    # lscpu shows vendor and core apart; "Ampere Ampere-1" would say it twice.
    return core if core.startswith(vendor) else f"{vendor} {core}"


def _hex_number(text: str) -> int | None:
    match = _ARM_ID.fullmatch(text)
    return int(match.group(1), 16) if match else None


def parse_meminfo(text: str) -> MemInfo | None:
    """Total and available memory from ``/proc/meminfo``, ``None`` if it is unreadable.

    Kernels before 3.14 have no ``MemAvailable``; free + buffers + page cache
    stands in for it there, as ``free`` does.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, colon, rest = line.partition(":")
        if not colon:
            continue
        parts = rest.split()
        if parts and parts[0].isdigit():
            scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
            values[key.strip()] = int(parts[0]) * scale
    total = values.get("MemTotal")
    if not total:
        return None
    available = values.get("MemAvailable")
    if available is None:
        available = sum(values.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
    return MemInfo(total, min(max(available, 0), total))


def parse_modules(text: str) -> set[str]:
    """Module names from ``/proc/modules`` (or ``lsmod`` output): the first word of each line."""
    names = set()
    for line in text.splitlines():
        word = line.split(maxsplit=1)[0] if line.strip() else ""
        if word and word.isascii() and word.replace("_", "").replace("-", "").isalnum():
            names.add(word.replace("-", "_"))
    return names


__all__ = [
    "ARM_CORES",
    "CpuInfo",
    "MemInfo",
    "parse_cpuinfo",
    "parse_meminfo",
    "parse_modules",
    "read_hostname",
    "read_text",
]
