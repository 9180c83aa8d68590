"""Heartbeats: one every interval, one at once when something changed, with host figures.

The sequence number runs for the life of the process, across sessions.
Reading the host figures (nvidia-smi, the data mount) never holds a beat
back for long: a read that is slow goes on in the agent's task group, one at
a time, and a later beat carries what it found.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio
import anyio.abc

from vectorlay.app.agent.sync import HostState
from vectorlay.app.agent.waits import sleep_or_until
from vectorlay.domain.agent.heartbeat import HeartbeatPolicy
from vectorlay.domain.agent.replicas import ReplicaTable
from vectorlay.domain.messages import (
    Heartbeat,
    HeartbeatPayload,
    HeartbeatStatus,
    HostMetrics,
    Message,
    rfc3339,
)
from vectorlay.ports import Clock, HardwareProbe

log = logging.getLogger("vectorlay.agent")


class Heartbeats:
    """The heartbeats of every session; :meth:`soon` asks for the next one now."""

    def __init__(
        self,
        tasks: anyio.abc.TaskGroup,
        *,
        probe: HardwareProbe,
        host: HostState,
        table: ReplicaTable,
        clock: Clock,
        policy: HeartbeatPolicy,
        metrics_wait: float,
    ) -> None:
        self._tasks = tasks
        self._probe = probe
        self._host = host
        self._table = table
        self._clock = clock
        self._policy = policy
        # Never longer than a quarter of the interval, so beats stay on time.
        self._metrics_wait = min(metrics_wait, policy.interval / 4)
        self.seq = 0
        self.last_sent_at: datetime | None = None  # wall clock of the last beat sent
        self._due = anyio.Event()  # set: the next beat goes out now
        self._metrics: HostMetrics | None = None  # the latest figures read, if any
        self._beat_without_metrics = False
        # Set when the latest read of host figures ended: none is in flight.
        self._read_done = anyio.Event()
        self._read_done.set()

    def soon(self) -> None:
        """Send the next beat now rather than at the end of the interval."""
        self._due.set()

    async def beat(self, send: Callable[[Message], Awaitable[None]]) -> None:
        """Beat on ``send`` at once, then every interval or sooner; runs until cancelled."""
        while True:
            self._due = anyio.Event()
            await send(await self._next())
            self.last_sent_at = self._clock.now()
            await sleep_or_until(self._clock, self._policy.interval, self._due)

    async def _next(self) -> Heartbeat:
        metrics = await self._read_metrics()
        self.seq += 1
        return Heartbeat(
            HeartbeatPayload(
                status=HeartbeatStatus(
                    containers=self._table.reports(),
                    gpu_utilization=metrics.gpu_utilization,
                    memory_used_gb=metrics.memory_used_gb,
                    memory_total_gb=metrics.memory_total_gb,
                    storage=metrics.storage,
                ),
                seq=self.seq,
                sent_at=rfc3339(self._clock.now()),
            )
        )

    async def _read_metrics(self) -> HostMetrics:
        """Fresh host figures if they come quickly, else the last ones."""
        if self._read_done.is_set():
            self._read_done = anyio.Event()
            self._tasks.start_soon(self._read_in_background, self._read_done)
        await sleep_or_until(self._clock, self._metrics_wait, self._read_done)
        if self._metrics is None:
            self._beat_without_metrics = True
            return HostMetrics(None, None, None, self._host.report.hardware.storage)
        return self._metrics

    async def _read_in_background(self, done: anyio.Event) -> None:
        try:
            self._metrics = await self._probe.metrics()
        except Exception as exc:
            log.warning("host metrics unavailable: %s", type(exc).__name__)
        finally:
            done.set()
        if self._metrics is not None and self._beat_without_metrics:
            # A slow first read (nvidia-smi without persistence mode takes
            # seconds) sent a beat of nulls: the figures follow at once, not
            # a whole interval later.
            self._beat_without_metrics = False
            self.soon()
