"""The agent's picture of its host and its containers, kept current.

:class:`HostState` holds the latest host report (the GPUs it finds are what
the replica table hands out), re-reads the GPUs' passthrough state and
health every heartbeat interval, and overlays the quarantine of groups whose
starts keep failing; :class:`RuntimeSync` brings the replica table
in line with what the container runtime lists, following its change events
with a slow periodic re-list as a safety net.  Runtime I/O lives here, never
on the heartbeat path: a hung nerdctl delays the table, not the heartbeats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from contextlib import aclosing

import anyio
from msgspec.structs import replace

from vectorlay.domain.agent.disk import with_disk
from vectorlay.domain.agent.gpustate import changed as gpus_changed
from vectorlay.domain.agent.gpustate import with_foreign, with_quarantine
from vectorlay.domain.agent.ownership import foreign_summary
from vectorlay.domain.agent.quarantine import Quarantine
from vectorlay.domain.agent.replicas import Replica, ReplicaTable, assignable_slots
from vectorlay.domain.hostreport import is_ready
from vectorlay.domain.messages import Dependency, Gpu, HostReport
from vectorlay.errors import ContainerRuntimeError
from vectorlay.ports import Clock, HardwareProbe, Runtime

log = logging.getLogger("vectorlay.agent")

# Lists in a row within one refresh, at most, while commands keep changing replicas.
RELIST_LIMIT = 3


class HostState:
    """The latest host report, and when it was taken.

    Its GPUs carry quarantine on top of what the probe found; ``gpus_due``
    is set when something (a start that failed or succeeded) may have
    changed their state, so that the GPU watch looks at once.
    """

    def __init__(
        self, probe: HardwareProbe, table: ReplicaTable, clock: Clock, report: HostReport
    ) -> None:
        self._probe = probe
        self._table = table
        self._clock = clock
        self.quarantine = Quarantine()
        self.gpus_due = anyio.Event()
        self._probed_gpus: list[Gpu] = list(report.hardware.gpus)
        self.report = report
        self._taken_at = clock.monotonic()
        # Called whenever the report changes (status file, metrics).
        self.listeners: list[Callable[[], None]] = []
        self._take(report)

    @classmethod
    async def probed(cls, probe: HardwareProbe, table: ReplicaTable, clock: Clock) -> HostState:
        """The host as a first probe finds it."""
        return cls(probe, table, clock, await probe.report())

    async def probe(self) -> HostReport:
        """Probe again; the new report replaces the last."""
        report = await self._probe.report()
        self._probed_gpus = list(report.hardware.gpus)
        self._taken_at = self._clock.monotonic()
        self._take(report)
        return self.report

    async def refresh_gpus(self) -> bool:
        """Read the GPUs' state and health again (cheap); whether any GPU's
        ``assignable`` or ``health`` changed."""
        self.gpus_due = anyio.Event()
        self._probed_gpus = await self._probe.gpus()
        before = self.report.hardware.gpus
        self._apply_gpus()
        if self.report.hardware.gpus != before:
            for listener in self.listeners:
                listener()
        return gpus_changed(before, self.report.hardware.gpus)

    def _apply_gpus(self) -> None:
        """The probed GPUs with quarantine and foreign containers on top, into the
        report and the ledger."""
        gpus = with_quarantine(self._probed_gpus, self.quarantine, self._clock.monotonic())
        gpus = with_foreign(gpus, self._table.foreign_gpus())
        if gpus != self.report.hardware.gpus:
            hardware = replace(self.report.hardware, gpus=gpus)
            self.report = replace(self.report, hardware=hardware)
        self._table.set_slots(assignable_slots(gpus))

    def start_failed(self, groups: Collection[str], error: str) -> None:
        """A start on ``groups`` failed for a reason other than the image."""
        if groups:
            self.quarantine.start_failed(groups, error, self._clock.monotonic())
            self.gpus_due.set()

    def started(self, groups: Collection[str]) -> None:
        if groups:
            self.quarantine.started(groups)
            self.gpus_due.set()

    def recheck_gpus(self) -> None:
        """Something outside the probe (a foreign container came or went) may
        have changed the GPUs' state: the GPU watch looks at once."""
        self.gpus_due.set()

    def set_disk(self, disk: Dependency) -> bool:
        """A fresh ``disk`` dependency in the report; True when readiness changed."""
        old = self.report
        dependencies = with_disk(old.dependencies, disk)
        if dependencies == old.dependencies:
            return False
        ready = is_ready(dependencies)
        self.report = replace(old, dependencies=dependencies, ready=ready)
        for listener in self.listeners:
            listener()
        if ready != old.ready:
            log.log(
                logging.INFO if ready else logging.WARNING,
                "host is now %s: %s",
                "ready" if ready else "degraded",
                disk.detail,
            )
            return True
        return False

    def older_than(self, seconds: float) -> bool:
        return self._clock.monotonic() - self._taken_at > seconds

    def _take(self, report: HostReport) -> None:
        self.report = report
        self._apply_gpus()
        for listener in self.listeners:
            listener()
        if not report.ready:
            missing = [f"{d.name} ({d.detail})" for d in report.dependencies if not d.ok]
            log.warning("host is degraded: %s", "; ".join(missing))


class ForeignLog:
    """Says once which containers of another node identity share this host.

    Their GPUs stay out of the ledger while they exist (docs/runtime.md).
    """

    def __init__(self, table: ReplicaTable, changed: Callable[[], None] | None = None) -> None:
        self._table = table
        # Called when the set changes: the GPUs they hold change assignability.
        self._changed = changed
        self._logged: set[str] = set()

    def check(self) -> None:
        foreign = self._table.foreign
        new = {rid: f for rid, f in foreign.items() if rid not in self._logged}
        if new:
            log.warning(
                "leaving alone %d container(s) of another node identity on this host "
                "(never adopted or stopped here; their GPUs are not assignable): %s",
                len(new),
                foreign_summary(new),
            )
        gone = self._logged - foreign.keys()
        if gone:
            log.info(
                "container(s) of another node identity gone; their GPUs are free again: %s",
                ", ".join(f"replica-{rid}" for rid in sorted(gone)),
            )
        if (new or gone) and self._changed is not None:
            self._changed()
        self._logged = set(foreign)


class ConflictLog:
    """Says once when a container claims GPUs another replica holds, and
    (``foreign``) which containers of another node identity share the host."""

    def __init__(self, table: ReplicaTable, foreign: ForeignLog | None = None) -> None:
        self._table = table
        self._foreign = foreign
        self._logged: dict[str, tuple[str, ...]] = {}

    def check(self) -> None:
        if self._foreign is not None:
            self._foreign.check()
        conflicts = dict(self._table.conflicts)
        if conflicts and conflicts != self._logged:
            log.error(
                "containers claim GPUs held by other replicas (the earlier holder keeps them): %s",
                "; ".join(f"{rid}: {'+'.join(gpus)}" for rid, gpus in sorted(conflicts.items())),
            )
        self._logged = conflicts


class RuntimeSync:
    """The replica table kept in line with the container runtime's list.

    ``busy`` names the replicas a command is queued or running for: what
    such a command decides is newer than a list taken meanwhile.
    ``changed`` is called when a re-list changed the table.
    """

    def __init__(
        self,
        *,
        runtime: Runtime,
        table: ReplicaTable,
        clock: Clock,
        conflicts: ConflictLog,
        busy: Callable[[], Collection[str]],
        changed: Callable[[], None],
        resync_interval: float,
        retry_delay: float,
    ) -> None:
        self._runtime = runtime
        self._table = table
        self._clock = clock
        self._conflicts = conflicts
        self._busy = busy
        self._changed = changed
        self._resync_interval = resync_interval
        self._retry_delay = retry_delay
        self._refreshing = anyio.Lock()
        self.listed = False  # at least one runtime list succeeded

    async def refresh(self, *, adopting: bool = False) -> None:
        """Bring the replica table in line with the runtime's list.

        One refresh at a time; replicas that a command touched while the list
        was being taken keep what the command decided (the list is older).
        """
        changed = False
        async with self._refreshing:
            for _ in range(RELIST_LIMIT):
                versions = self._table.versions()
                busy = set(self._busy())
                try:
                    states = await self._runtime.list()
                except ContainerRuntimeError as exc:
                    log.warning("cannot list containers: %s", exc)
                    return
                self.listed = True
                before = {r.replica_id: r for r in self._table.replicas()}
                changed |= self._table.observe(
                    states, busy=busy | set(self._busy()), unchanged_since=versions
                )
                if not adopting:
                    _log_ended(before, self._table.replicas())
                # A command changed a replica while the list was taken, so the
                # list said nothing of it: list again, or a change to its
                # container in that window (its events already spent) would
                # wait for the slow resync.
                if self._table.versions() == versions or not self._changed_since(versions):
                    break
        if changed and not adopting:
            self._changed()
        self._conflicts.check()

    def _changed_since(self, versions: dict[str, int]) -> bool:
        """Whether a replica not busy now was changed by a command since ``versions``."""
        busy = set(self._busy())
        now = self._table.versions()
        return any(versions.get(rid) != v for rid, v in now.items() if rid not in busy)

    async def watch(self) -> None:
        """Follow container changes, plus a slow periodic re-list; runs until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow_changes)
            while True:
                await self._clock.sleep(self._resync_interval)
                await self.refresh()

    async def _follow_changes(self) -> None:
        while True:
            try:
                # aclosing: the runtime's watcher (a nerdctl events process)
                # ends with this loop, not whenever the generator is collected.
                async with aclosing(self._runtime.changes()) as changes:
                    async for _ in changes:
                        await self.refresh()
            except ContainerRuntimeError as exc:
                log.warning("watching containers failed: %s; retrying", exc)
            await self._clock.sleep(self._retry_delay)


def _log_ended(before: dict[str, Replica], after: list[Replica]) -> None:
    """Log every replica a runtime list found ended or gone, with why (never a secret)."""
    for replica in after:
        old = before.get(replica.replica_id)
        if old is None or (old.status, old.error) == (replica.status, replica.error):
            continue
        if replica.error:
            log.warning(
                "replica %s is %s: %s", replica.replica_id, replica.status.value, replica.error
            )
        else:
            code = "" if replica.exit_code is None else f" (exit code {replica.exit_code})"
            log.info("replica %s is %s%s", replica.replica_id, replica.status.value, code)
