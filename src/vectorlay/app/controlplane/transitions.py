"""Every replica state change the control plane makes, logged once with its reason.

The fleet decides and records; this watches what it wrote (each batch of
changes) and says what moved: ``replica r1: running -> failed (not reported
by node)``.  It also remembers when each replica last changed, for the
status page (since this process started: a restart shows ``-`` until the
next change).  Error texts are already redacted of env values by the fleet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from vectorlay.domain.fleet.records import ReplicaPhase, ReplicaRecord

log = logging.getLogger("vectorlay.controlplane")


class Transitions:
    def __init__(self) -> None:
        self._last: dict[str, tuple[ReplicaPhase, str | None, str | None]] = {}
        self.changed_at: dict[str, datetime] = {}

    def seed(self, replicas: Iterable[ReplicaRecord]) -> None:
        """What a loaded store holds: the starting point, not a change."""
        for r in replicas:
            self._last[r.replica_id] = (r.status, r.node_id, r.error)

    def observe(self, replicas: Iterable[ReplicaRecord], now: datetime) -> None:
        for r in replicas:
            old = self._last.get(r.replica_id)
            new = (r.status, r.node_id, r.error)
            if old == new:
                continue
            self._last[r.replica_id] = new
            self.changed_at[r.replica_id] = now
            if old is not None and old[0] is r.status and old[1] == r.node_id:
                if r.error is None:
                    continue
                what = f"replica {r.replica_id}: still {r.status.value}"
            else:
                before = old[0].value if old is not None else "new"
                what = f"replica {r.replica_id}: {before} -> {r.status.value}"
            level = logging.WARNING if r.status is ReplicaPhase.FAILED else logging.INFO
            log.log(
                level,
                "%s (%s)",
                what,
                _reason(r, old),
                extra={
                    "replica_id": r.replica_id,
                    "node_id": r.node_id,
                    "status": r.status.value,
                    **({"exit_code": r.exit_code} if r.exit_code is not None else {}),
                },
            )


def _reason(r: ReplicaRecord, old: tuple[ReplicaPhase, str | None, str | None] | None) -> str:
    if r.error:
        return r.error
    if r.exit_code is not None:
        return f"exit code {r.exit_code}"
    if old is not None and old[1] != r.node_id:
        return f"placed on {r.node_id}" if r.node_id else f"taken off {old[1]}, waiting for room"
    reasons = {
        ReplicaPhase.PENDING: f"deploy sent to {r.node_id}" if r.node_id else "waiting for room",
        ReplicaPhase.RUNNING: f"running on {r.node_id}",
        ReplicaPhase.EXITED: "container exited",
        ReplicaPhase.FAILED: "failed",
        ReplicaPhase.STOPPING: "stop requested",
        ReplicaPhase.STOPPED: "stop confirmed",
    }
    return reasons[r.status]


__all__ = ["Transitions"]
