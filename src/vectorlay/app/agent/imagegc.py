"""Image garbage collection, run by the agent: after disk readings that call for it and after stops.

The decisions are the domain's (``domain.agent.imagegc``): when to start,
which images may go and in which order, when to stop.  This module lists,
removes and measures: one collection at a time, each removal logged with
the bytes it freed (measured on the image store's filesystem: layers shared
with other images are not freed), a removal that fails logged and skipped.
Just before each removal the image is checked again against the replicas
and pulls under way, which may have changed while the collection ran.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Final

import anyio

from vectorlay.domain.agent.disk import GB, DiskReading
from vectorlay.domain.agent.imagegc import (
    collection_needed,
    normalize_ref,
    removable,
    target_met,
)
from vectorlay.domain.agent.replicas import LIVE, ReplicaTable
from vectorlay.errors import ContainerRuntimeError
from vectorlay.ports import Clock, DeployRecord, DiskProbe, ImageRuntime

log = logging.getLogger("vectorlay.agent")

# After a collection that freed nothing, disk readings start no new one for
# this long (a stop still does): listing images every heartbeat on a full
# node where nothing may go would only add load.
DEFAULT_IDLE_RETRY: Final = 300.0


class ImageCollector:
    def __init__(
        self,
        images: ImageRuntime,
        disk: DiskProbe,
        *,
        table: ReplicaTable,
        pulling: Callable[[], Collection[str]],
        record: DeployRecord,
        clock: Clock,
        after: Callable[[], Awaitable[object]] | None = None,
        counted: Callable[[int, int], None] | None = None,
        idle_retry: float = DEFAULT_IDLE_RETRY,
    ) -> None:
        self._images = images
        self._disk = disk
        self._table = table
        self._pulling = pulling  # images of deploys queued or under way
        self._record = record
        self._clock = clock
        self._after = after  # re-reads the disk after a collection (readiness follows)
        self._counted = counted  # (images removed, bytes freed) of each collection
        self._idle_retry = idle_retry
        self._lock = anyio.Lock()
        self._wanted = anyio.Event()
        self._idle_since: float | None = None  # when a collection last freed nothing
        self.runs = 0

    # --- triggers -----------------------------------------------------------

    def disk_read(self, reading: DiskReading) -> None:
        """A disk reading: ask for a collection when it calls for one (and not idle)."""
        if not collection_needed(reading):
            self._idle_since = None
            return
        idle = self._idle_since
        if idle is not None and self._clock.monotonic() - idle < self._idle_retry:
            return
        self._wanted.set()

    def replica_stopped(self) -> None:
        """A stop may have left an image unused: look again."""
        self._idle_since = None
        self._wanted.set()

    async def run(self) -> None:
        """Collect whenever asked; runs until cancelled."""
        while True:
            await self._wanted.wait()
            # A request made while this collection runs (a stop) gets another.
            self._wanted = anyio.Event()
            try:
                await self.collect()
            except Exception:
                log.exception("image garbage collection failed")
            if self._after is not None:
                await self._after()

    # --- one collection -------------------------------------------------------

    async def collect(self) -> int:
        """One collection if the disk calls for it; the bytes freed.  One at a time."""
        if self._lock.locked():
            return 0
        async with self._lock:
            reading = (await self._disk.disk()).reading
            if not collection_needed(reading):
                return 0
            assert reading.total_bytes is not None
            assert reading.free_bytes is not None
            self.runs += 1
            try:
                images = await self._images.images()
                in_use = await self._images.images_in_use()
            except ContainerRuntimeError as exc:
                log.warning("image garbage collection: cannot list images: %s", exc)
                self._done(0, 0)
                return 0
            candidates = removable(
                images,
                in_use=in_use,
                protected=self._protected(),
                last_deployed=self._record.last_deployed(),
            )
            log.info(
                "image store %s: %s free of %s: collecting; %d of %d image(s) may go",
                reading.path,
                _gb(reading.free_bytes),
                _gb(reading.total_bytes),
                len(candidates),
                len(images),
            )
            total, free = reading.total_bytes, reading.free_bytes
            freed = 0
            removed: list[str] = []
            for image in candidates:
                if target_met(total, free):
                    break
                if normalize_ref(image.ref) in {normalize_ref(p) for p in self._protected()}:
                    log.info("image %s is wanted again by a replica: kept", image.ref)
                    continue
                try:
                    await self._images.remove_image(image.ref)
                except ContainerRuntimeError as exc:
                    log.warning("image %s not removed: %s; skipped", image.ref, exc)
                    continue
                after = (await self._disk.disk()).reading
                now_free = after.free_bytes if after.free_bytes is not None else free
                gained = max(now_free - free, 0)
                free = max(now_free, free)
                if after.total_bytes:
                    total = after.total_bytes
                freed += gained
                removed.append(image.ref)
                log.info(
                    "removed image %s: %d bytes freed (%s free now)", image.ref, gained, _gb(free)
                )
            if removed:
                self._record.forget(removed)
            if target_met(total, free):
                log.info(
                    "image garbage collection done: %d image(s) removed, %d bytes freed",
                    len(removed),
                    freed,
                )
            else:
                log.warning(
                    "image garbage collection: nothing more may go; %s free of %s "
                    "(%d image(s) removed, %d bytes freed)",
                    _gb(free),
                    _gb(total),
                    len(removed),
                    freed,
                )
            self._done(len(removed), freed)
            return freed

    def _done(self, removed: int, freed: int) -> None:
        self._idle_since = self._clock.monotonic() if freed == 0 else None
        if self._counted is not None:
            self._counted(removed, freed)

    def _protected(self) -> set[str]:
        """Images of pending and running replicas, and of deploys queued or pulling."""
        live = {r.image for r in self._table.replicas() if r.status in LIVE and r.image}
        return live | set(self._pulling())


def _gb(size: int) -> str:
    return f"{size / GB:.1f} GB"


__all__ = ["DEFAULT_IDLE_RETRY", "ImageCollector"]
