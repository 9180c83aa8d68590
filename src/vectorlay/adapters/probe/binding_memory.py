"""In-memory twin of :class:`~vectorlay.adapters.probe.binding.SysfsFileWriter`.

:class:`MemorySysfs` answers the three writes of a bind the way Linux's PCI
core does (``drivers/pci/pci-driver.c``, ``drivers/base/bus.c``):

- ``driver_override``: the value (trailing newline dropped) is the only
  driver the device may bind to from now on; ``"\\n"`` clears it.
- ``drivers/<d>/unbind`` with an address: detaches the device if ``<d>``
  holds it, else ``ENODEV``.
- ``drivers_probe`` with an address: a device without a driver is offered
  to its override (if that driver is loaded), else to its own host driver;
  a device that already has a driver is left as it is.

``refuse`` makes a bind silently not take, as a driver's probe that fails
(or a host driver that grabs the device back) does: the device ends on the
driver given there (``None``: none).  Every write is recorded.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class MemorySysfs:
    drivers: dict[str, str | None]
    loaded: set[str] = field(default_factory=set)
    refuse: dict[str, str | None] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    writes: list[tuple[str, str]] = field(default_factory=list)
    host_drivers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # What drivers_probe gives back to a device whose override is cleared.
        for address, driver in self.drivers.items():
            if driver is not None:
                self.host_drivers.setdefault(address, driver)
                self.loaded.add(driver)

    @classmethod
    def of(
        cls,
        drivers: Mapping[str, str | None],
        *,
        loaded: Iterable[str] = (),
        refuse: Mapping[str, str | None] | None = None,
    ) -> MemorySysfs:
        return cls(dict(drivers), set(loaded), dict(refuse or {}))

    # --- the port ----------------------------------------------------------------

    def write(self, relative: str, value: str) -> None:
        self.writes.append((relative, value))
        parts = relative.split("/")
        text = value.strip()
        if parts[:3] == ["bus", "pci", "devices"] and len(parts) == 5:
            self._device(parts[3])
            if parts[4] != "driver_override":
                raise _error(errno.EACCES, relative)
            if text:
                self.overrides[parts[3]] = text
            else:
                self.overrides.pop(parts[3], None)
        elif parts[:3] == ["bus", "pci", "drivers"] and len(parts) == 5 and parts[4] == "unbind":
            if parts[3] not in self.loaded:
                raise _error(errno.ENOENT, relative)
            self._device(text)
            if self.drivers[text] != parts[3]:
                raise _error(errno.ENODEV, relative)
            self.drivers[text] = None
        elif relative == "bus/pci/drivers_probe":
            self._device(text)
            self._probe(text)
        else:
            raise _error(errno.ENOENT, relative)

    def driver(self, address: str) -> str | None:
        return self.drivers.get(address)

    def driver_loaded(self, name: str) -> bool:
        return name in self.loaded

    # --- the kernel's side ---------------------------------------------------------

    def load(self, name: str) -> None:
        """What ``modprobe <name>`` does."""
        self.loaded.add(name)

    def _probe(self, address: str) -> None:
        if self.drivers[address] is not None:
            return
        if address in self.refuse:
            self.drivers[address] = self.refuse[address]
            return
        override = self.overrides.get(address)
        candidate = override if override is not None else self.host_drivers.get(address)
        if candidate is not None and candidate in self.loaded:
            self.drivers[address] = candidate

    def _device(self, address: str) -> None:
        if address not in self.drivers:
            raise _error(errno.ENODEV, address)


def _error(code: int, what: str) -> OSError:
    return OSError(code, os.strerror(code), what)


__all__ = ["MemorySysfs"]
