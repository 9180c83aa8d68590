"""GPU health as the host sees it (PROTOCOL.md 2.1), judged from sysfs readings.

nvidia-smi cannot see a GPU bound to ``vfio-pci``, so the agent judges a
passthrough GPU from what the kernel shows about the PCI function, without
ever opening it:

- ``failed``: gone from sysfs; config space reads all ones (vendor ``0xffff``:
  fallen off the bus); ``TOTAL_ERR_FATAL`` of ``aer_dev_fatal`` grew since
  the agent started.
- ``warning``: ``current_link_width`` below ``max_link_width``;
  ``TOTAL_ERR_NONFATAL`` of ``aer_dev_nonfatal`` grew; ``reset_method``
  present but empty.
- ``ok`` otherwise.  A missing file is unknown, never a problem.

Counters count since the agent started: :class:`HealthTracker` keeps the first
reading of each as its baseline, so an old count is history, not a fault.
Recovery is automatic: a GPU whose signals are clean again is ``ok`` again.
Pure: the adapter reads the files and passes what it found.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Health(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HealthSignals:
    """One reading of a GPU's sysfs files; ``None`` is "file missing or unreadable"."""

    present: bool = True
    vendor_all_ones: bool | None = None  # the first two bytes of ``config`` are ff ff
    aer_fatal: int | None = None  # TOTAL_ERR_FATAL
    aer_nonfatal: int | None = None  # TOTAL_ERR_NONFATAL
    link_width: int | None = None
    max_link_width: int | None = None
    reset_method: str | None = None  # the file's text, stripped


@dataclass(frozen=True, slots=True)
class GpuHealth:
    health: Health
    problems: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.health is Health.FAILED


OK = GpuHealth(Health.OK)


def judge(
    address: str,
    signals: HealthSignals,
    *,
    fatal_since: int = 0,
    nonfatal_since: int = 0,
) -> GpuHealth:
    """The health of the GPU at ``address``; ``*_since``: AER errors counted since the start."""
    if not signals.present:
        return GpuHealth(Health.FAILED, (f"{address} is gone from sysfs (removed from the bus)",))
    failed: list[str] = []
    warnings: list[str] = []
    if signals.vendor_all_ones:
        failed.append(f"{address} config space reads all ones (fallen off the bus)")
    if fatal_since > 0:
        failed.append(f"{address} reported {fatal_since} fatal PCIe error(s) (AER) since start")
    if (
        not signals.vendor_all_ones
        and signals.link_width is not None
        and signals.max_link_width is not None
        and 0 <= signals.link_width < signals.max_link_width
    ):
        warnings.append(
            f"{address} PCIe link trained at x{signals.link_width} of x{signals.max_link_width}"
            " (riser or slot)"
        )
    if nonfatal_since > 0:
        warnings.append(
            f"{address} reported {nonfatal_since} non-fatal PCIe error(s) (AER) since start"
        )
    if signals.reset_method is not None and not signals.reset_method:
        warnings.append(f"{address} has every reset method disabled (reset_method is empty)")
    if failed:
        return GpuHealth(Health.FAILED, tuple(failed + warnings))
    if warnings:
        return GpuHealth(Health.WARNING, tuple(warnings))
    return OK


class HealthTracker:
    """Judges readings against the counters each GPU had when first read."""

    def __init__(self) -> None:
        self._fatal: dict[str, int] = {}
        self._nonfatal: dict[str, int] = {}

    def assess(self, address: str, signals: HealthSignals) -> GpuHealth:
        fatal = _since(self._fatal, address, signals.aer_fatal)
        nonfatal = _since(self._nonfatal, address, signals.aer_nonfatal)
        return judge(address, signals, fatal_since=fatal, nonfatal_since=nonfatal)


def _since(baselines: dict[str, int], address: str, count: int | None) -> int:
    """How much ``count`` grew past the first reading; a counter that went back
    (the device was removed and added again) starts a new baseline."""
    if count is None:
        return 0
    base = baselines.get(address)
    if base is None or count < base:
        baselines[address] = count
        return 0
    return count - base


__all__ = ["OK", "GpuHealth", "Health", "HealthSignals", "HealthTracker", "judge"]
