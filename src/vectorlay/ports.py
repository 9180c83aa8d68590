"""The ports: what the agent needs from the outside world, as Protocols.

Adapters in :mod:`vectorlay.adapters` implement them for real hosts;
:mod:`vectorlay.adapters.memory` implements every one in memory for tests.
This module imports only the domain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from vectorlay.domain.identity import NodeConfig
from vectorlay.domain.messages import HostMetrics, HostReport
from vectorlay.domain.replicas import ContainerSpec, ContainerState


class Connection(Protocol):
    """One open WebSocket session with the control plane."""

    async def send(self, text: str) -> None:
        """Send one text frame.  Raises ``ConnectionLost``/``ConnectionClosed``."""
        ...

    async def receive(self) -> str | bytes:
        """The next frame: ``str`` for text, ``bytes`` for a binary frame.

        Raises ``ConnectionClosed`` (with the peer's close code),
        ``ConnectionLost`` or ``PeerUnresponsive`` when the session ends.
        """
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the session; never raises."""
        ...


class Transport(Protocol):
    def connect(self, url: str, credential: str) -> AbstractAsyncContextManager[Connection]:
        """Open a session authenticated with ``credential``.

        Raises ``ConnectFailed``, ``Unauthorized`` (HTTP 401/403 at the
        handshake) or ``InsecureURL`` on entering the context.
        """
        ...


class Runtime(Protocol):
    """Containers of this node's replicas."""

    async def run(self, spec: ContainerSpec) -> ContainerState:
        """Start a detached container for ``spec``; raises ``ContainerRuntimeError``."""
        ...

    async def stop(self, replica_id: str, *, grace: float) -> None:
        """Stop and remove the replica's container; unknown replicas are success."""
        ...

    async def list(self) -> Sequence[ContainerState]:
        """Every container this agent manages, running or not."""
        ...

    def changes(self) -> AsyncIterator[None]:
        """Yields whenever managed containers may have changed state.

        The consumer calls :meth:`list` to learn what changed.  Iteration
        ends only when the caller stops it.
        """
        ...


class HardwareProbe(Protocol):
    async def report(self) -> HostReport:
        """Full probe: hardware, GPUs, dependencies, readiness."""
        ...

    async def metrics(self) -> HostMetrics:
        """Cheap per-heartbeat figures (memory, storage, GPU utilization)."""
        ...


class ConfigStore(Protocol):
    async def load(self) -> NodeConfig | None:
        """The saved node config, ``None`` when there is none.

        Raises ``CorruptConfig`` for a file that exists but cannot be used.
        """
        ...

    async def save(self, config: NodeConfig) -> None:
        """Persist atomically; raises ``ConfigWriteError`` leaving the old file intact."""
        ...


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def now(self) -> datetime:
        """Wall clock, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None: ...


__all__ = [
    "Clock",
    "ConfigStore",
    "Connection",
    "HardwareProbe",
    "Runtime",
    "Transport",
]
