"""Carrying out a ``prepare-gpus`` plan: the bind sequence, device by device, group by group.

Per device (the GPU and its siblings, one group at a time, in address order)::

    write vfio-pci   -> bus/pci/devices/<addr>/driver_override
    write <addr>     -> bus/pci/drivers/<current driver>/unbind     (when it has one)
    write <addr>     -> bus/pci/drivers_probe
    read  bus/pci/devices/<addr>/driver                             must now be vfio-pci

The last read is the point: a bind can "succeed" (every write accepted)
while the device stays on its old driver or on none, so only the driver
link counts.  A device that did not end on vfio-pci has its override cleared
and is probed again, so it goes back to a host driver rather than stay
driverless; it is reported with the driver it has now, and the rest of its
group is not touched.  Devices already on vfio-pci are left alone, so a
second run writes nothing.  Every write is logged (address, file, value).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from vectorlay.adapters.commands import first_line, run_command
from vectorlay.adapters.probe.binding import DRIVERS_PROBE, override_path, unbind_path
from vectorlay.domain.agent.gpuprep import Action, Plan, Step
from vectorlay.domain.agent.passthrough import VFIO_PCI, is_vfio_driver
from vectorlay.ports import SysfsWriter

log = logging.getLogger("vectorlay.prepare_gpus")

MODPROBE_TIMEOUT: Final = 60.0
ModuleLoader = Callable[[str], Awaitable[str | None]]
"""Loads a kernel module; ``None`` on success, else one line saying why not."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one device of the plan ended as."""

    address: str
    group: str | None
    ok: bool
    driver: str | None  # bound now
    detail: str


class NotPermitted(Exception):
    """sysfs refused a write for lack of privilege: nothing more can be done."""


def apply_plan(plan: Plan, sysfs: SysfsWriter, *, where: str = "$HOST_SYS") -> list[Outcome]:
    """Bind every ``bind`` step of ``plan``, group by group; one outcome per step."""
    outcomes: list[Outcome] = []
    pending = [s for g in plan.groups if not g.skipped for s in g.steps if s.action is Action.BIND]
    failed_groups: set[str | None] = set()
    stopped: str | None = None
    for step in pending:
        if stopped is not None or step.group in failed_groups:
            reason = stopped or "not attempted: another device of its group did not bind"
            outcomes.append(Outcome(step.address, step.group, False, step.driver, reason))
            continue
        try:
            outcome = bind_device(step, sysfs, where=where)
        except NotPermitted as exc:
            stopped = "not attempted: " + str(exc)
            outcome = Outcome(step.address, step.group, False, sysfs.driver(step.address), str(exc))
        if not outcome.ok:
            failed_groups.add(step.group)
        outcomes.append(outcome)
    return outcomes


def bind_device(step: Step, sysfs: SysfsWriter, *, where: str = "$HOST_SYS") -> Outcome:
    address = step.address
    current = sysfs.driver(address)
    if is_vfio_driver(current):
        return Outcome(address, step.group, True, current, f"already on {current}")
    error = None
    try:
        _write(sysfs, address, override_path(address), VFIO_PCI, where)
        if current is not None:
            _write(sysfs, address, unbind_path(current), address, where)
        if sysfs.driver(address) is None:
            _write(sysfs, address, str(DRIVERS_PROBE), address, where)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise NotPermitted(f"{where} refused a write ({exc.strerror}): run as root") from None
        error = f"write failed: {exc.strerror or exc}"
    now = sysfs.driver(address)
    if error is None and is_vfio_driver(now):
        log.info("%s: bound to %s (was %s)", address, now, current or "no driver")
        return Outcome(address, step.group, True, now, f"bound to {now}")
    now = _restore(sysfs, address, where)
    detail = f"did not bind to {VFIO_PCI}: now on {now or 'no driver'}"
    if error is not None:
        detail = f"{error}; {detail}"
    log.error("%s: %s", address, detail)
    return Outcome(address, step.group, False, now, detail)


def _restore(sysfs: SysfsWriter, address: str, where: str) -> str | None:
    """Clear the override and probe again, so the device is not left without a driver."""
    try:
        _write(sysfs, address, override_path(address), "\n", where)
        if sysfs.driver(address) is None:
            _write(sysfs, address, str(DRIVERS_PROBE), address, where)
    except OSError as exc:
        log.warning("%s: could not clear driver_override: %s", address, exc.strerror or exc)
    return sysfs.driver(address)


def _write(sysfs: SysfsWriter, address: str, relative: str, value: str, where: str) -> None:
    log.info("%s: write %r to %s/%s", address, value, where, relative)
    sysfs.write(relative, value)


async def ensure_loaded(
    sysfs: SysfsWriter, load: ModuleLoader, driver: str = VFIO_PCI
) -> str | None:
    """Load ``driver`` when its directory is missing; ``None`` once it is there, else why not."""
    if sysfs.driver_loaded(driver):
        return None
    log.info("%s is not loaded: running modprobe %s", driver, driver)
    problem = await load(driver)
    if sysfs.driver_loaded(driver):
        return None
    why = problem or f"bus/pci/drivers/{driver} is still missing"
    return f"{driver} is not loaded and modprobe {driver} did not load it: {why}"


async def modprobe(module: str) -> str | None:
    """``modprobe <module>`` from ``PATH``: the real :data:`ModuleLoader`."""
    result = await run_command(["modprobe", module], timeout=MODPROBE_TIMEOUT)
    if result.ok:
        return None
    if result.error is not None:
        return f"modprobe: {result.error}"
    if result.timed_out:
        return f"modprobe timed out after {MODPROBE_TIMEOUT:g} s"
    return first_line(result.stderr) or f"modprobe exited with status {result.returncode}"


def failed(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


__all__ = [
    "ModuleLoader",
    "NotPermitted",
    "Outcome",
    "apply_plan",
    "bind_device",
    "ensure_loaded",
    "failed",
    "modprobe",
]
