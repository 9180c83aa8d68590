"""The sysfs files GPU health is judged from (rules: :mod:`vectorlay.domain.agent.health`).

Per PCI function, under ``$HOST_SYS/bus/pci/devices/<address>/``::

    config               first two bytes: the vendor id; ff ff = fallen off the bus
    aer_dev_fatal        "name count" lines, then "TOTAL_ERR_FATAL <n>"
    aer_dev_nonfatal     "name count" lines, then "TOTAL_ERR_NONFATAL <n>"
    current_link_width   "16"
    max_link_width       "16"
    reset_method         "flr bus" (empty: every method disabled by root)

Plain ``os`` reads of a few bytes each, no subprocess and never the device
node: this runs once per heartbeat interval for every GPU.  A missing or
unreadable file is ``None`` ("unknown"), never an exception.
"""

from __future__ import annotations

import os
from typing import Final

from vectorlay.adapters.probe.sysfs import PCI_DEVICES
from vectorlay.domain.agent.health import HealthSignals

TOTAL_FATAL: Final = "TOTAL_ERR_FATAL"
TOTAL_NONFATAL: Final = "TOTAL_ERR_NONFATAL"
_MAX_AER: Final = 4096
_MAX_SMALL: Final = 64


def read_signals(sys_root: str, address: str) -> HealthSignals:
    """One reading of every health file of the function at ``address``."""
    base = f"{sys_root}/{PCI_DEVICES}/{address}/"
    config = _read(base + "config", 2)
    if config is None and not os.path.isdir(base):
        return HealthSignals(present=False)
    width = _read(base + "current_link_width", _MAX_SMALL)
    max_width = _read(base + "max_link_width", _MAX_SMALL)
    fatal = _read(base + "aer_dev_fatal", _MAX_AER)
    nonfatal = _read(base + "aer_dev_nonfatal", _MAX_AER)
    reset = _read(base + "reset_method", _MAX_SMALL)
    return HealthSignals(
        present=True,
        vendor_all_ones=config == b"\xff\xff" if config is not None and len(config) == 2 else None,
        aer_fatal=aer_total(fatal, TOTAL_FATAL) if fatal is not None else None,
        aer_nonfatal=aer_total(nonfatal, TOTAL_NONFATAL) if nonfatal is not None else None,
        link_width=parse_width(width) if width is not None else None,
        max_link_width=parse_width(max_width) if max_width is not None else None,
        reset_method=reset.decode("ascii", "replace").strip() if reset is not None else None,
    )


def aer_total(raw: bytes, name: str) -> int | None:
    """The ``TOTAL_ERR_*`` count of an AER counter file, found by its name.

    Lines are ``<name> <count>``; names may hold spaces (the long names of
    the kernel's ABI document), so each line is split at its last space.
    """
    # The TOTAL line is last: search from the end, then check it is a whole line.
    key = name.encode("ascii") + b" "
    at = raw.rfind(key)
    while at != -1:
        if at == 0 or raw[at - 1 : at] == b"\n":
            value = raw[at + len(key) :].split(b"\n", 1)[0].strip()
            return int(value) if value.isdigit() else None
        at = raw.rfind(key, 0, at)
    return None


def parse_width(raw: bytes) -> int | None:
    """``current_link_width``/``max_link_width``: a decimal lane count."""
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _read(path: str, limit: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


__all__ = ["TOTAL_FATAL", "TOTAL_NONFATAL", "aer_total", "parse_width", "read_signals"]
