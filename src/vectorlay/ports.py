"""The ports: what the agent needs from the outside world, as Protocols.

Adapters in :mod:`vectorlay.adapters` implement them for real hosts;
:mod:`vectorlay.adapters.memory` implements every one in memory for tests.
This module imports only the domain, and each program's types only for
annotations, so that neither program's process loads the other's domain
through it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from vectorlay.domain.messages import Gpu, HostMetrics, HostReport

if TYPE_CHECKING:
    from vectorlay.domain.agent.disk import DiskCheck
    from vectorlay.domain.agent.identity import NodeConfig
    from vectorlay.domain.agent.imagegc import Image
    from vectorlay.domain.agent.replicas import ContainerSpec, ContainerState


class Connection(Protocol):
    """One open WebSocket session with the control plane."""

    async def send(self, text: str) -> None:
        """Send one text frame.  Raises ``ConnectionLost``/``ConnectionClosed``."""
        ...

    async def receive(self) -> str | bytes:
        """The next frame: ``str`` for text, ``bytes`` for a binary frame.

        Raises ``ConnectionClosed`` (with the peer's close code),
        ``ConnectionLost`` or ``PeerUnresponsive`` when the session ends, and
        ``MessageTooLarge`` for a frame it dropped unread (the session stays
        open).
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

    def changes(self) -> AsyncGenerator[None, None]:
        """Yields whenever managed containers may have changed state.

        The consumer calls :meth:`list` to learn what changed.  Iteration
        ends only when the caller stops it; close the generator
        (``contextlib.aclosing``) so that whatever watches the runtime stops
        with it.
        """
        ...


class HardwareProbe(Protocol):
    async def report(self) -> HostReport:
        """Full probe: hardware, GPUs, dependencies, readiness."""
        ...

    async def metrics(self) -> HostMetrics:
        """Cheap per-heartbeat figures (memory, storage, GPU utilization)."""
        ...

    async def gpus(self) -> list[Gpu]:
        """The GPUs of the last report with ``assignable``/``health``/``problems`` read
        again: cheap (sysfs and ``stat`` only), run every heartbeat interval."""
        ...


class DiskProbe(Protocol):
    async def disk(self) -> DiskCheck:
        """Free space of the image store's filesystem and the ``disk`` dependency; never raises."""
        ...


class ImageRuntime(Protocol):
    """The engine's images, for image garbage collection."""

    async def images(self) -> Sequence[Image]:
        """Every image the engine holds; raises ``ContainerRuntimeError``."""
        ...

    async def images_in_use(self) -> set[str]:
        """The images of every container, running or stopped, this agent's or not."""
        ...

    async def remove_image(self, ref: str) -> None:
        """Remove one image, never forced; raises ``ContainerRuntimeError`` (in use, say)."""
        ...


class DeployRecord(Protocol):
    """When each image was last deployed here (image garbage collection's order)."""

    def last_deployed(self) -> Mapping[str, datetime]:
        """Normalized reference -> time; empty when the record is missing or unreadable."""
        ...

    def deployed(self, ref: str, when: datetime) -> None:
        """Note a deploy; a write failure is logged, never raised."""
        ...

    def forget(self, refs: list[str]) -> None:
        """Drop removed images from the record."""
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
    "DeployRecord",
    "DiskProbe",
    "HardwareProbe",
    "ImageRuntime",
    "Runtime",
    "Transport",
]


# --- control plane ---------------------------------------------------------------

if TYPE_CHECKING:
    # Only annotations need them: the agent never loads the control plane's domain.
    from vectorlay.domain.fleet.records import FleetChanges, FleetSnapshot, NodeRecord


class FleetStore(Protocol):
    """Where a control plane keeps nodes, replicas and unanswered commands.

    The reference control plane uses SQLite
    (``adapters/controlplane/sqlite_store.py``; its in-memory twin is
    ``adapters/memory/fleet.py``'s ``MemoryFleetStore``); a fleet-scale deployment
    puts PostgreSQL or Redis behind the same methods.
    Node tokens are handed over in clear only to be hashed: a store keeps a
    digest and compares in constant time.
    """

    async def load(self) -> FleetSnapshot:
        """Everything stored, to rebuild the fleet after a restart."""
        ...

    async def add_node(self, record: NodeRecord, node_token: str) -> None:
        """Persist a newly registered node with (a digest of) its token."""
        ...

    async def node_for_token(self, node_token: str) -> str | None:
        """The node id the token belongs to, ``None`` for an unknown token."""
        ...

    async def save(self, changes: FleetChanges) -> None:
        """Write a batch of changes atomically (all or nothing)."""
        ...

    async def aclose(self) -> None: ...


__all__ += ["FleetStore"]


# --- prepare-gpus ------------------------------------------------------------------


class SysfsWriter(Protocol):
    """Binding PCI devices to drivers through the host's sysfs (``$HOST_SYS``).

    The real adapter is ``adapters/probe/binding.py``'s ``SysfsFileWriter``;
    its in-memory twin, which answers as the kernel does, is
    ``adapters/probe/binding_memory.py``'s ``MemorySysfs``.
    """

    def write(self, relative: str, value: str) -> None:
        """Write ``value`` to the existing attribute ``$HOST_SYS/<relative>`` in one write.

        Raises ``OSError`` with the kernel's answer (``EBUSY``, ``ENODEV``,
        ``EACCES`` ...); never creates a file.
        """
        ...

    def driver(self, address: str) -> str | None:
        """The driver bound to the PCI function ``address`` now; ``None`` when none is."""
        ...

    def driver_loaded(self, name: str) -> bool:
        """``$HOST_SYS/bus/pci/drivers/<name>`` exists (the driver is loaded or built in)."""
        ...


__all__ += ["SysfsWriter"]
