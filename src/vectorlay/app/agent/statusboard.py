"""What the running agent is doing, kept current for operators.

:class:`StatusBoard` gathers the agent's state (session, node, readiness,
GPUs, replicas, outbox, counters) into one snapshot and writes it to
``<state-dir>/status.json`` for ``vectorlay-agent status``, and, when
configured, to a Prometheus textfile for node_exporter.  It writes on every
change it is told of (:meth:`touch`) and at least once per heartbeat
interval, so a file older than a few intervals means a dead or hung agent.

Nothing secret goes in: no token, no env value (replicas are listed by id,
status, image and GPUs), and the control plane URL without userinfo.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import anyio

from vectorlay import __version__
from vectorlay.app.agent.commands import Outbox
from vectorlay.app.agent.heartbeats import Heartbeats
from vectorlay.app.agent.sync import HostState
from vectorlay.app.agent.waits import sleep_or_until
from vectorlay.domain.agent.disk import DiskReading
from vectorlay.domain.agent.replicas import ReplicaTable
from vectorlay.domain.messages import rfc3339
from vectorlay.errors import ConnectionClosed
from vectorlay.ports import Clock

log = logging.getLogger("vectorlay.agent")

STATUS_FILE_NAME: Final = "status.json"
STATUS_FORMAT: Final = 1
_REASON_MAX: Final = 200


@dataclass
class Counters:
    """Counts for the life of the process (Prometheus ``_total`` counters)."""

    sessions: int = 0  # sessions that connected; reconnects are the ones after the first
    deploys: Counter[str] = field(default_factory=Counter)  # by outcome (replica status)
    image_gc_runs: int = 0
    image_gc_bytes_freed: int = 0
    images_removed: int = 0


class StatusBoard:
    """The agent's state as ``status.json`` and metrics text; rewritten on change."""

    def __init__(
        self,
        *,
        clock: Clock,
        interval: float,
        table: ReplicaTable,
        outbox: Outbox,
        control_plane_url: str | None,
        node_id: str | None,
        status_path: Path | None,
        metrics_path: Path | None = None,
        write: Callable[[Path, str], None] | None = None,
    ) -> None:
        self._clock = clock
        self.interval = interval
        self._table = table
        self._outbox = outbox
        self.control_plane_url = _without_userinfo(control_plane_url)
        self.node_id = node_id
        self._status_path = status_path
        self._metrics_path = metrics_path
        self._write_file = write or _default_write
        self.counters = Counters()
        self.started_at = clock.now()
        self.host: HostState | None = None
        self.heartbeats: Heartbeats | None = None
        self.disk: DiskReading | None = None
        self.connected_since: datetime | None = None
        self.disconnected_since: datetime | None = self.started_at
        self.last_close_code: int | None = None
        self.last_close_reason: str | None = None
        self.next_retry_at: datetime | None = None
        self.last_error: str | None = None  # why the latest attempt to connect failed
        self._due = anyio.Event()
        self._failed_paths: set[Path] = set()

    # --- what the agent tells it ------------------------------------------------

    def set_url(self, url: str | None) -> None:
        self.control_plane_url = _without_userinfo(url)

    def touch(self) -> None:
        """Something changed: write the files now rather than at the end of the interval."""
        self._due.set()

    def session_opened(self, node_id: str) -> None:
        self.node_id = node_id
        self.connected_since = self._clock.now()
        self.disconnected_since = None
        self.next_retry_at = None
        self.counters.sessions += 1
        self.touch()

    def session_ended(self, exc: BaseException | None) -> None:
        """A session, or an attempt at one, ended (``exc``: why)."""
        reason = (str(exc) or type(exc).__name__)[:_REASON_MAX] if exc is not None else None
        if self.connected_since is not None:
            # A session that was open: its close code and reason stay shown
            # until the next session ends; failed attempts do not hide them.
            self.disconnected_since = self._clock.now()
            self.last_close_code = exc.code if isinstance(exc, ConnectionClosed) else None
            if isinstance(exc, ConnectionClosed):
                reason = exc.reason[:_REASON_MAX]
            self.last_close_reason = reason
            self.last_error = None
        else:
            self.last_error = reason
        self.connected_since = None
        self.touch()

    def retrying(self, delay: float) -> None:
        self.next_retry_at = datetime.fromtimestamp(
            self._clock.now().timestamp() + delay, tz=self.started_at.tzinfo
        )
        self.touch()

    def deployed(self, outcome: str, _image: str = "") -> None:
        self.counters.deploys[outcome] += 1
        self.touch()

    def images_collected(self, removed: int, freed: int) -> None:
        self.counters.image_gc_runs += 1
        self.counters.images_removed += removed
        self.counters.image_gc_bytes_freed += freed
        self.touch()

    def disk_read(self, reading: DiskReading) -> None:
        self.disk = reading

    # --- the snapshot -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything ``status`` shows, as plain JSON values."""
        now = self._clock.now()
        report = self.host.report if self.host is not None else None
        held = self._table.held()
        gpus: list[dict[str, Any]] = []
        if report is not None:
            for gpu in report.hardware.gpus:
                entry: dict[str, Any] = {
                    "pci_address": gpu.pci_address,
                    "iommu_group": gpu.iommu_group,
                    "model": gpu.model,
                    "driver": gpu.driver,
                    "replica_id": held.get(gpu.pci_address),
                }
                # Health keys, where the probe reports them.
                for key in ("assignable", "health", "problems"):
                    if hasattr(gpu, key):
                        entry[key] = getattr(gpu, key)
                gpus.append(entry)
        beats = self.heartbeats
        last_beat = beats.last_sent_at if beats is not None else None
        return {
            "format": STATUS_FORMAT,
            "pid": os.getpid(),
            "version": __version__,
            "started_at": rfc3339(self.started_at),
            "updated_at": rfc3339(now),
            "uptime_s": round((now - self.started_at).total_seconds(), 1),
            "heartbeat_interval": self.interval,
            "control_plane_url": self.control_plane_url,
            "node_id": self.node_id,
            "connected": self.connected_since is not None,
            "session": {
                "connected_since": _stamp(self.connected_since),
                "disconnected_since": _stamp(self.disconnected_since),
                "last_close_code": self.last_close_code,
                "last_close_reason": self.last_close_reason,
                "last_error": self.last_error,
                "next_retry_at": _stamp(self.next_retry_at),
                "reconnects": max(self.counters.sessions - 1, 0),
            },
            "last_heartbeat_at": _stamp(last_beat),
            "heartbeats_sent": beats.seq if beats is not None else 0,
            "ready": report.ready if report is not None else None,
            "failing": [
                {"name": d.name, "detail": d.detail}
                for d in (report.dependencies if report is not None else [])
                if not d.ok
            ],
            "disk": _disk(self.disk),
            "gpus": gpus,
            "replicas": [
                {
                    "replica_id": r.replica_id,
                    "status": r.status.value,
                    "image": r.image,
                    "gpus": list(r.gpus),
                }
                for r in self._table.replicas()
            ],
            "outbox": {
                "length": len(self._outbox),
                "dropped": self._outbox.dropped,
                "sent": self._outbox.sent,
            },
            "deploys": dict(sorted(self.counters.deploys.items())),
            "image_gc": {
                "runs": self.counters.image_gc_runs,
                "images_removed": self.counters.images_removed,
                "bytes_freed": self.counters.image_gc_bytes_freed,
            },
        }

    # --- writing --------------------------------------------------------------------

    def write(self) -> None:
        """Write the files now; a failure is logged once per path, never raised."""
        import json

        snapshot = self.snapshot()
        if self._status_path is not None:
            self._write(self._status_path, json.dumps(snapshot, indent=2) + "\n")
        if self._metrics_path is not None:
            # Only agents asked for a textfile load the Prometheus rendering.
            from vectorlay.app.agent.metrics import render_metrics

            self._write(self._metrics_path, render_metrics(snapshot))

    async def run(self) -> None:
        """Write on every change and at least once per interval; runs until cancelled."""
        while True:
            self._due = anyio.Event()
            self.write()
            await sleep_or_until(self._clock, self.interval, self._due)

    def _write(self, path: Path, text: str) -> None:
        try:
            self._write_file(path, text)
        except OSError as exc:
            if path not in self._failed_paths:
                log.warning("cannot write %s: %s", path, exc.strerror or type(exc).__name__)
                self._failed_paths.add(path)
        else:
            self._failed_paths.discard(path)


def _default_write(path: Path, text: str) -> None:
    from vectorlay.adapters.textfiles import write_atomic

    write_atomic(path, text)


def _stamp(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _disk(reading: DiskReading | None) -> dict[str, Any] | None:
    if reading is None:
        return None
    return {
        "path": reading.path,
        "measured": reading.measured,
        "free_bytes": reading.free_bytes,
        "total_bytes": reading.total_bytes,
    }


def _without_userinfo(url: str | None) -> str | None:
    """The URL as shown to operators: no ``user:password@``, query or fragment."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return None
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


__all__ = ["STATUS_FILE_NAME", "Counters", "StatusBoard"]
