"""Replica table, GPU ledger, and the deploy/stop decisions.

The agent asks the table what to do (:meth:`ReplicaTable.deploy`,
:meth:`ReplicaTable.stop`), carries the answer out through the runtime port,
and tells the table how it went (:meth:`ReplicaTable.started`,
:meth:`ReplicaTable.start_failed`, :meth:`ReplicaTable.stopped`).  No I/O
happens here.

GPU rule: GPUs are handed out by whole IOMMU groups
(:mod:`vectorlay.domain.gpugroups`): a deploy takes free groups holding
exactly the GPUs it asked for.  A group one of whose GPUs a live replica
(``pending`` or ``running``) holds is held whole, and never given to another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

# The GPU ledger's slots and their rule are shared with the control plane.
from vectorlay.domain.gpugroups import choose_groups, free_groups, groups_of
from vectorlay.domain.gpugroups import refusal as group_refusal
from vectorlay.domain.hostreport import GpuSlot as GpuSlot
from vectorlay.domain.hostreport import assignable_slots as assignable_slots
from vectorlay.domain.messages import DeployPayload, ReplicaReport, ReplicaStatus
from vectorlay.domain.redact import redacted_items, redacted_repr
from vectorlay.domain.validation import (
    check_env_vars,
    check_gpu_count,
    check_image,
    check_replica_id,
)
from vectorlay.errors import ValidationError

LIVE: Final = frozenset({ReplicaStatus.PENDING, ReplicaStatus.RUNNING})


def container_name(replica_id: str) -> str:
    """The name of a replica's container: one per replica, found again by it."""
    return f"replica-{replica_id}"


class ContainerSpec(msgspec.Struct, frozen=True):
    replica_id: str
    image: str
    gpus: tuple[GpuSlot, ...] = ()
    env: dict[str, str] = {}

    @property
    def name(self) -> str:
        return container_name(self.replica_id)

    def __repr__(self) -> str:
        return redacted_repr(self, _ENV)

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return redacted_items(self, _ENV)


_ENV: Final = frozenset({"env"})


class ContainerState(msgspec.Struct, frozen=True):
    """A managed container as the runtime reports it."""

    replica_id: str
    status: ReplicaStatus
    exit_code: int | None = None
    gpus: tuple[str, ...] = ()
    image: str = ""


def exit_error(state: ContainerState) -> str:
    """Why a just-started container is ``failed``: every ``failed`` result names a cause."""
    if state.exit_code is None:
        return "container stopped right after it started"
    return f"container exited with code {state.exit_code} right after it started"


class Replica(msgspec.Struct, frozen=True):
    replica_id: str
    status: ReplicaStatus
    gpus: tuple[str, ...] = ()
    image: str = ""
    error: str | None = None


# --- decisions -------------------------------------------------------------


class StartContainer(msgspec.Struct, frozen=True):
    """Run ``spec``; ``replace`` means an old container of this replica must go first."""

    spec: ContainerSpec
    replace: bool = False


class StopContainer(msgspec.Struct, frozen=True):
    replica_id: str


class ReportResult(msgspec.Struct, frozen=True):
    """Answer the command at once with this status (and error)."""

    replica_id: str
    status: ReplicaStatus
    error: str | None = None
    gpus: tuple[str, ...] = ()  # what a live replica holds, for its deploy_result


DeployDecision = StartContainer | ReportResult
StopDecision = StopContainer | ReportResult


class ReplicaTable:
    """The replicas of this node and the GPUs they hold.

    ``slots`` are the assignable GPUs of the node (vfio-pci with an IOMMU
    group); it can be replaced after a fresh probe with :meth:`set_slots`.
    """

    def __init__(self, slots: Iterable[GpuSlot] = ()) -> None:
        self._slots: dict[str, GpuSlot] = {s.pci_address: s for s in sorted(slots)}
        self._groups = groups_of(self._slots.values())
        self._replicas: dict[str, Replica] = {}
        # Replica id -> GPUs its container claims but another replica holds.
        self.conflicts: dict[str, tuple[str, ...]] = {}
        # Replica id -> a number that grows whenever a command's outcome
        # changes the replica; lets observe() skip what a stale list would undo.
        self._versions: dict[str, int] = {}
        self._version = 0

    # --- queries ---------------------------------------------------------

    def get(self, replica_id: str) -> Replica | None:
        return self._replicas.get(replica_id)

    def replicas(self) -> list[Replica]:
        return [self._replicas[k] for k in sorted(self._replicas)]

    def reports(self) -> list[ReplicaReport]:
        return [
            ReplicaReport(r.replica_id, r.status, list(r.gpus) if r.status in LIVE else [])
            for r in self.replicas()
        ]

    def held(self) -> dict[str, str]:
        """PCI address -> replica id, for GPUs held by live replicas."""
        out: dict[str, str] = {}
        for r in self._replicas.values():
            if r.status in LIVE:
                for addr in r.gpus:
                    out.setdefault(addr, r.replica_id)
        return out

    def free_slots(self) -> list[GpuSlot]:
        """Assignable GPUs in groups no live replica holds any part of."""
        free = free_groups(self._groups, self.held())
        return [s for s in sorted(self._slots.values()) if s.iommu_group in free]

    def free_groups(self) -> dict[str, tuple[str, ...]]:
        """``{group: its GPUs}`` for the groups a deploy may take."""
        return free_groups(self._groups, self.held())

    def _group_of(self, address: str) -> str | None:
        slot = self._slots.get(address)
        return slot.iommu_group if slot is not None else None

    def versions(self) -> dict[str, int]:
        """Per-replica change counters, to pass back to :meth:`observe`."""
        return dict(self._versions)

    def _touch(self, replica_id: str) -> None:
        self._version += 1
        self._versions[replica_id] = self._version

    def set_slots(self, slots: Iterable[GpuSlot]) -> None:
        self._slots = {s.pci_address: s for s in sorted(slots)}
        self._groups = groups_of(self._slots.values())

    # --- deploy ----------------------------------------------------------

    def deploy(self, payload: DeployPayload, *, refusal: str | None = None) -> DeployDecision:
        """Decide a deploy; on ``StartContainer`` the GPUs are already reserved.

        ``refusal`` is why this node takes no new replicas right now (degraded,
        draining), or ``None`` when it does.
        """
        rid = payload.replica_id
        try:
            check_replica_id(rid, "deploy.payload.replica_id")
        except ValidationError as exc:
            return ReportResult(rid, ReplicaStatus.FAILED, str(exc))
        existing = self._replicas.get(rid)
        if existing is not None and existing.status in LIVE:
            # Idempotent by replica id: a repeat never starts a second container.
            return ReportResult(rid, existing.status, gpus=existing.gpus)
        try:
            check_image(payload.image, "deploy.payload.image")
            count = check_gpu_count(payload.gpu_count, "deploy.payload.gpu_count")
            env = check_env_vars(payload.env_vars, "deploy.payload.env_vars")
        except ValidationError as exc:
            return ReportResult(rid, ReplicaStatus.FAILED, str(exc))
        if refusal is not None:
            return ReportResult(rid, ReplicaStatus.FAILED, refusal)
        free = self.free_groups()
        chosen = choose_groups(free, count)
        if chosen is None:
            return ReportResult(rid, ReplicaStatus.FAILED, group_refusal(count, free))
        gpus = tuple(self._slots[a] for g in chosen for a in free[g])
        self._replicas[rid] = Replica(
            rid, ReplicaStatus.PENDING, tuple(g.pci_address for g in gpus), payload.image
        )
        self._touch(rid)
        spec = ContainerSpec(replica_id=rid, image=payload.image, gpus=gpus, env=env)
        return StartContainer(spec, replace=existing is not None)

    def started(self, state: ContainerState) -> ReportResult:
        """The runtime started the replica's container."""
        current = self._replicas.get(state.replica_id)
        gpus = current.gpus if current is not None else state.gpus
        image = current.image if current is not None else state.image
        if state.status in LIVE:
            gpus = self._claim(state.replica_id, gpus)
        error = exit_error(state) if state.status is ReplicaStatus.FAILED else None
        self._replicas[state.replica_id] = Replica(
            state.replica_id, state.status, gpus, image, error
        )
        self._touch(state.replica_id)
        return ReportResult(
            state.replica_id, state.status, error, gpus if state.status in LIVE else ()
        )

    def _claim(self, replica_id: str, gpus: tuple[str, ...]) -> tuple[str, ...]:
        """The GPUs of ``gpus`` no other live replica holds.

        A container can show up holding GPUs the ledger has already given to
        another replica (a start reported failed whose container came up
        anyway, a stop that raced a start).  The earlier holder keeps them;
        the late claim is recorded in :attr:`conflicts` for the operator,
        never double-assigned.
        """
        held = {addr for addr, owner in self.held().items() if owner != replica_id}
        # A group is held whole: another replica holding any GPU of it holds this one too.
        held_groups = {g for g in map(self._group_of, held) if g is not None}
        lost = tuple(a for a in gpus if a in held or self._group_of(a) in held_groups)
        if lost:
            self.conflicts[replica_id] = lost
        else:
            self.conflicts.pop(replica_id, None)
        return tuple(a for a in gpus if a not in lost)

    def adopted(self, state: ContainerState) -> ReportResult:
        """A deploy found its replica's container already there (an earlier
        agent's call): the container's own GPUs replace this deploy's reservation."""
        self._replicas.pop(state.replica_id, None)
        gpus = self._claim(state.replica_id, state.gpus) if state.status in LIVE else ()
        self._replicas[state.replica_id] = Replica(
            state.replica_id, state.status, gpus, state.image
        )
        self._touch(state.replica_id)
        return ReportResult(state.replica_id, state.status, gpus=gpus)

    def start_failed(self, replica_id: str, error: str) -> ReportResult:
        """The runtime could not start it: the replica is ``failed`` and holds no GPU."""
        current = self._replicas.get(replica_id)
        image = current.image if current is not None else ""
        self._replicas[replica_id] = Replica(replica_id, ReplicaStatus.FAILED, (), image, error)
        self._touch(replica_id)
        return ReportResult(replica_id, ReplicaStatus.FAILED, error)

    # --- stop ------------------------------------------------------------

    def stop(self, replica_id: str) -> StopDecision:
        try:
            check_replica_id(replica_id, "stop.payload.replica_id")
        except ValidationError as exc:
            return ReportResult(replica_id, ReplicaStatus.FAILED, str(exc))
        # Always ask the runtime: it may hold a container the table lost track of.
        return StopContainer(replica_id)

    def stopped(self, replica_id: str) -> ReportResult:
        """The container is gone: forget the replica and free its GPUs."""
        self._replicas.pop(replica_id, None)
        self._touch(replica_id)
        return ReportResult(replica_id, ReplicaStatus.STOPPED)

    # --- runtime observations --------------------------------------------

    def observe(
        self,
        states: Sequence[ContainerState],
        *,
        busy: Iterable[str] = (),
        unchanged_since: Mapping[str, int] | None = None,
    ) -> bool:
        """Bring the table in line with what the runtime lists.

        Unknown containers are adopted with the GPUs their labels name;
        known replicas take the observed status; replicas whose container
        vanished are forgotten unless they never had one (failed starts) or
        an operation on them is in flight (``busy``).  With
        ``unchanged_since`` (from :meth:`versions`, taken before the list was
        requested), replicas a command changed since are left alone: the
        list predates that change.  Returns whether any replica's status
        changed, which warrants an immediate heartbeat.
        """
        busy_ids = set(busy)
        if unchanged_since is not None:
            busy_ids |= {rid for rid, v in self._versions.items() if unchanged_since.get(rid) != v}
        seen = {s.replica_id: s for s in sorted(states, key=lambda s: s.replica_id)}
        changed = False
        for rid, state in seen.items():
            if rid in busy_ids:
                continue
            old = self._replicas.get(rid)
            gpus = old.gpus if old is not None and old.gpus else state.gpus
            image = old.image if old is not None and old.image else state.image
            if state.status in LIVE:
                gpus = self._claim(rid, gpus)
            new = Replica(rid, state.status, gpus, image)
            if old is None or old.status != new.status:
                changed = True
            if old != new:
                self._replicas[rid] = new
        for rid, old in list(self._replicas.items()):
            if rid in seen or rid in busy_ids or old.status is ReplicaStatus.PENDING:
                continue
            if old.status is ReplicaStatus.FAILED and not old.gpus and old.error is not None:
                continue  # never had a container: keep reporting the failure
            del self._replicas[rid]
            changed = True
        return changed

    @classmethod
    def adopt(cls, slots: Iterable[GpuSlot], states: Sequence[ContainerState]) -> ReplicaTable:
        """Rebuild the table after an agent restart from the runtime's list.

        Containers are reported, never restarted; running ones keep their GPUs.
        """
        table = cls(slots)
        table.observe(states)
        return table

    def double_assigned(self) -> dict[str, list[str]]:
        """GPUs claimed by more than one live replica (must always be empty)."""
        claims: dict[str, list[str]] = {}
        for r in self._replicas.values():
            if r.status in LIVE:
                for addr in r.gpus:
                    claims.setdefault(addr, []).append(r.replica_id)
        return {a: sorted(ids) for a, ids in claims.items() if len(ids) > 1}
