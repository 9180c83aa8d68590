"""The image store's free space, read every heartbeat interval.

A node that fills up turns degraded (and refuses deploys) and one that is
cleaned turns ready again, each announced with a fresh ``system_info`` on
the open session.  Each reading also goes to whoever else wants it (the
status board, image garbage collection).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from vectorlay.app.agent.sync import HostState
from vectorlay.domain.agent.disk import DiskReading
from vectorlay.ports import Clock, DiskProbe

log = logging.getLogger("vectorlay.agent")


class DiskWatch:
    def __init__(
        self,
        probe: DiskProbe,
        *,
        host: HostState,
        clock: Clock,
        interval: float,
        ready_changed: Callable[[], Awaitable[None]],
    ) -> None:
        self._probe = probe
        self._host = host
        self._clock = clock
        self._interval = interval
        self._ready_changed = ready_changed
        self.readers: list[Callable[[DiskReading], None]] = []
        self.latest: DiskReading | None = None

    async def read(self) -> DiskReading:
        """Read the disk once; readiness follows it."""
        check = await self._probe.disk()
        self.latest = check.reading
        for reader in self.readers:
            reader(check.reading)
        if self._host.set_disk(check.dependency):
            await self._ready_changed()
        return check.reading

    async def read_safely(self) -> None:
        try:
            await self.read()
        except Exception:
            # A reading must never end the agent: the next one may work.
            log.exception("reading the image store's free space failed")

    async def follow(self) -> None:
        """Read every interval, starting one interval from now; runs until cancelled."""
        while True:
            await self._clock.sleep(self._interval)
            await self.read_safely()


__all__ = ["DiskWatch"]
