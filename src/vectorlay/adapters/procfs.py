"""The host's ``/proc`` (``$HOST_PROC``): hostname, CPU, memory, loaded modules.

Reading the host's files rather than asking the Python process about itself
lets the agent run in a container with the host's ``/proc`` mounted
elsewhere (as node_exporter does), and lets tests point at a fake host.
When a file is missing the caller falls back to what the process can see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vectorlay.adapters.pci import clean_text

_MAX_FILE: Final = 4 << 20
# Keys naming the CPU, in order of preference: x86 and most others, older
# ARM kernels, MIPS.
_CPU_MODEL_KEYS: Final = ("model name", "Processor", "cpu model")


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
    """CPU model and count of logical CPUs (``processor`` entries) from ``/proc/cpuinfo``."""
    found: dict[str, str] = {}
    count = 0
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key = key.strip()
        if key == "processor" and value.strip().isdigit():
            count += 1
        elif key in _CPU_MODEL_KEYS and key not in found and value.strip():
            found[key] = value.strip()
    model = next((found[k] for k in _CPU_MODEL_KEYS if k in found), None)
    return CpuInfo(clean_text(" ".join(model.split())) if model else None, count)


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
    "CpuInfo",
    "MemInfo",
    "parse_cpuinfo",
    "parse_meminfo",
    "parse_modules",
    "read_hostname",
    "read_text",
]
