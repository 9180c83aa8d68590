"""The ``disk`` dependency: is there room in the image store for the next pull?

A large inference image (10 to 30 GB) cannot be pulled onto a nearly full image
store, so a node under the minimum is not ready; under 50 GB it is still
ready but says so.  Pure rules: the reading (what ``statvfs`` found) is taken
by an adapter and handed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vectorlay.domain.messages import Dependency

DISK: Final = "disk"
# GB in the unit of the ``storage`` figures of the protocol: GiB.
GB: Final = 1 << 30
DEFAULT_MIN_FREE_GB: Final = 20
WARN_BELOW_GB: Final = 50


@dataclass(frozen=True, slots=True)
class DiskReading:
    """Free space of the filesystem that holds ``path`` (the configured image store).

    ``measured`` is the directory actually measured: ``path`` itself, or its
    nearest existing parent while ``path`` does not exist yet.  ``free_bytes``
    is what an unprivileged writer may still use (``df``'s "Avail").
    ``None`` figures: the reading failed, ``problem`` says why.
    """

    path: str
    measured: str
    total_bytes: int | None = None
    free_bytes: int | None = None
    problem: str = ""

    @property
    def used_bytes(self) -> int | None:
        if self.total_bytes is None or self.free_bytes is None:
            return None
        return max(self.total_bytes - self.free_bytes, 0)

    @property
    def used_fraction(self) -> float | None:
        """Share of the filesystem in use (0..1), ``None`` when unknown or empty."""
        used = self.used_bytes
        if used is None or not self.total_bytes:
            return None
        return used / self.total_bytes


@dataclass(frozen=True, slots=True)
class DiskCheck:
    reading: DiskReading
    dependency: Dependency


def disk_dependency(reading: DiskReading, min_free_gb: int) -> Dependency:
    """``ok`` unless under ``min_free_gb`` free (or unreadable); a warning under 50 GB."""
    where = reading.path
    if reading.measured != reading.path:
        where = f"{reading.path} (missing; measured on {reading.measured})"
    if reading.free_bytes is None:
        problem = reading.problem or "unknown"
        return Dependency(DISK, False, None, f"free space on {where} unknown: {problem}")
    free_gb = reading.free_bytes // GB
    detail = f"{free_gb} GB free on {where}"
    if reading.free_bytes < min_free_gb * GB:
        return Dependency(
            DISK, False, None, f"{detail}: under the {min_free_gb} GB minimum to pull an image"
        )
    if reading.free_bytes < WARN_BELOW_GB * GB:
        detail += f" (warning: under {WARN_BELOW_GB} GB, large images may not fit)"
    return Dependency(DISK, True, None, detail)


def with_disk(dependencies: list[Dependency], disk: Dependency) -> list[Dependency]:
    """``dependencies`` with ``disk`` in place of the old disk entry (appended when none)."""
    out = [d for d in dependencies if d.name != DISK]
    out.append(disk)
    return out


__all__ = [
    "DEFAULT_MIN_FREE_GB",
    "DISK",
    "GB",
    "WARN_BELOW_GB",
    "DiskCheck",
    "DiskReading",
    "disk_dependency",
    "with_disk",
]
