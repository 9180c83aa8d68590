"""In-memory twins of the agent's ports: for tests, yours and ours.

Each one records what happened instead of mocking calls::

    from vectorlay.adapters.memory import (
        ManualClock, MemoryConfigStore, MemoryRuntime, MemoryTransport, StaticProbe,
    )

    transport = MemoryTransport()
    # ... start the agent with transport=transport, then in the test:
    peer = await transport.accept()          # the control plane's end
    first = await peer.receive_message()     # decoded Outbound message
    await peer.send_message(deploy)          # any Message
    await peer.close(4001)                   # the agent sees ConnectionClosed(4001)

They work on asyncio and trio alike (anyio primitives only).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import ContainerSpec, ContainerState
from vectorlay.domain.messages import (
    Message,
    Outbound,
    ReplicaStatus,
    decode_outbound,
    encode_text,
)
from vectorlay.errors import (
    ConfigWriteError,
    ConnectionClosed,
    ConnectionLost,
    NameInUse,
    VectorlayError,
)

# --- clock -------------------------------------------------------------------


_Sleeper = tuple[float, anyio.Event]


class ManualClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers whose deadline is reached wake up, earliest deadline first (ties
    in the order they went to sleep); follow ``advance`` with
    ``await anyio.wait_all_tasks_blocked()`` to let them run.
    """

    def __init__(self, start: float = 0.0, wall: datetime | None = None) -> None:
        self._now = start
        self._wall0 = wall or datetime(2026, 1, 1, tzinfo=UTC)
        self._start = start
        self._sleepers: list[_Sleeper] = []
        # Due sleepers not yet resumed; only the first one's event is set.
        self._waking: list[_Sleeper] = []

    def monotonic(self) -> float:
        return self._now

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._now - self._start)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0 or math.isnan(seconds):
            await anyio.lowlevel.checkpoint()
            return
        entry = (self._now + seconds, anyio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            # A cancelled sleeper must not linger in `sleepers`/`next_deadline`.
            self._sleepers = [s for s in self._sleepers if s is not entry]
            self._pass_on(entry)

    def _pass_on(self, entry: _Sleeper) -> None:
        # Schedulers do not promise to run woken tasks in the order their
        # events were set (trio shuffles on purpose), so due sleepers are
        # woken one at a time: each resumed sleeper wakes the next.
        was_first = bool(self._waking) and self._waking[0] is entry
        self._waking = [s for s in self._waking if s is not entry]
        if was_first and self._waking:
            self._waking[0][1].set()

    def advance(self, seconds: float) -> None:
        """Move the clock; wake every sleeper now due, earliest deadline first."""
        self._now += seconds
        due = sorted((s for s in self._sleepers if s[0] <= self._now), key=lambda s: s[0])
        if not due:
            return
        self._sleepers = [s for s in self._sleepers if s[0] > self._now]
        # Earlier advances' due sleepers all have earlier deadlines: append.
        idle = not self._waking
        self._waking.extend(due)
        if idle:
            self._waking[0][1].set()

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)

    def next_deadline(self) -> float | None:
        return min((d for d, _ in self._sleepers), default=None)


# --- transport ---------------------------------------------------------------


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str = ""


Frame = str | bytes | _Close


class MemoryConnection:
    """The agent's end of an in-memory session."""

    def __init__(
        self, send: MemoryObjectSendStream[Frame], receive: MemoryObjectReceiveStream[Frame]
    ) -> None:
        self._send = send
        self._receive = receive
        self.closed_with: int | None = None

    async def send(self, text: str) -> None:
        if self.closed_with is not None:
            raise ConnectionLost("connection already closed")
        try:
            await self._send.send(text)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionLost("peer went away") from exc

    async def receive(self) -> str | bytes:
        try:
            frame = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise ConnectionLost("peer went away") from exc
        if isinstance(frame, _Close):
            self.closed_with = frame.code
            raise ConnectionClosed(frame.code, frame.reason)
        return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = code
            with suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._send.send_nowait(_Close(code, reason))
        await self._send.aclose()


class MemoryPeer:
    """The control plane's end of an in-memory session, for tests."""

    def __init__(
        self,
        url: str,
        credential: str,
        send: MemoryObjectSendStream[Frame],
        receive: MemoryObjectReceiveStream[Frame],
    ) -> None:
        self.url = url
        self.credential = credential
        self._send = send
        self._receive = receive
        self.closed_with: int | None = None

    async def send(self, frame: str | bytes) -> None:
        await self._send.send(frame)

    async def send_message(self, message: Message) -> None:
        await self._send.send(encode_text(message))

    async def receive(self) -> str | bytes:
        """The next frame; raises ``ConnectionClosed`` when the agent closed."""
        try:
            frame = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise ConnectionLost("agent went away") from exc
        if isinstance(frame, _Close):
            self.closed_with = frame.code
            raise ConnectionClosed(frame.code, frame.reason)
        return frame

    async def receive_message(self) -> Outbound:
        return decode_outbound(await self.receive())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = code
            with suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._send.send_nowait(_Close(code, reason))
        await self._send.aclose()

    async def drop(self) -> None:
        """End the session without a close frame, like a vanished network."""
        self.closed_with = -1
        await self._send.aclose()
        await self._receive.aclose()


class MemoryTransport:
    """Connections go to a queue of peers a test picks up with :meth:`accept`."""

    def __init__(self) -> None:
        self._refusals: list[VectorlayError] = []
        self.attempts: list[tuple[str, str]] = []
        self._pending_send: MemoryObjectSendStream[MemoryPeer] | None = None
        self._pending_receive: MemoryObjectReceiveStream[MemoryPeer] | None = None

    def _queue(
        self,
    ) -> tuple[MemoryObjectSendStream[MemoryPeer], MemoryObjectReceiveStream[MemoryPeer]]:
        if self._pending_send is None or self._pending_receive is None:
            self._pending_send, self._pending_receive = anyio.create_memory_object_stream[
                MemoryPeer
            ](100)
        return self._pending_send, self._pending_receive

    def refuse_next(self, error: VectorlayError) -> None:
        """Make the next connect attempt raise ``error`` (e.g. ``ConnectFailed``)."""
        self._refusals.append(error)

    @asynccontextmanager
    async def connect(self, url: str, credential: str) -> AsyncIterator[MemoryConnection]:
        self.attempts.append((url, credential))
        if self._refusals:
            raise self._refusals.pop(0)
        to_peer_send, to_peer_receive = anyio.create_memory_object_stream[Frame](1000)
        to_agent_send, to_agent_receive = anyio.create_memory_object_stream[Frame](1000)
        peer = MemoryPeer(url, credential, to_agent_send, to_peer_receive)
        conn = MemoryConnection(to_peer_send, to_agent_receive)
        self._queue()[0].send_nowait(peer)
        try:
            yield conn
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close(1000)
                await to_agent_receive.aclose()

    async def accept(self) -> MemoryPeer:
        """The peer of the next connection the agent opens."""
        return await self._queue()[1].receive()


# --- runtime -----------------------------------------------------------------


@dataclass
class MemoryRuntime:
    """Containers in a dict.

    ``fail_next(op, error)`` makes the next ``run``/``stop``/``list`` raise;
    ``gate(op)`` returns an event the operation waits on (a slow runtime);
    ``set_status`` simulates a container exiting and wakes ``changes()``.
    """

    containers: dict[str, ContainerState] = field(default_factory=dict)
    specs: dict[str, ContainerSpec] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _failures: dict[str, list[Exception]] = field(default_factory=dict)
    _gates: dict[str, anyio.Event] = field(default_factory=dict)
    _changed: anyio.Event | None = None
    # Counts status changes so that a change made while a consumer of
    # changes() is busy is still reported on its next iteration.
    _version: int = 0

    def fail_next(self, op: str, error: Exception) -> None:
        self._failures.setdefault(op, []).append(error)

    def gate(self, op: str) -> anyio.Event:
        event = anyio.Event()
        self._gates[op] = event
        return event

    def set_status(
        self, replica_id: str, status: ReplicaStatus, exit_code: int | None = None
    ) -> None:
        current = self.containers[replica_id]
        self.containers[replica_id] = msgspec.structs.replace(
            current, status=status, exit_code=exit_code
        )
        self._notify()

    def vanish(self, replica_id: str) -> None:
        """The container is removed behind the agent's back (``nerdctl rm -f`` by hand)."""
        self.containers.pop(replica_id, None)
        self._notify()

    def _notify(self) -> None:
        self._version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _enter(self, op: str, replica_id: str) -> None:
        self.calls.append((op, replica_id))
        gate = self._gates.get(op)
        if gate is not None:
            await gate.wait()
        failures = self._failures.get(op)
        if failures:
            raise failures.pop(0)

    async def run(self, spec: ContainerSpec) -> ContainerState:
        await self._enter("run", spec.replica_id)
        if spec.replica_id in self.containers:
            # As nerdctl: a name in use is an error, never a silent replacement.
            raise NameInUse(f"name {spec.name!r} is already used by a container")
        state = ContainerState(
            spec.replica_id,
            ReplicaStatus.RUNNING,
            gpus=tuple(g.pci_address for g in spec.gpus),
            image=spec.image,
            node_id=spec.node_id or None,
        )
        self.containers[spec.replica_id] = state
        self.specs[spec.replica_id] = spec
        return state

    async def stop(self, replica_id: str, *, grace: float) -> None:
        await self._enter("stop", replica_id)
        self.containers.pop(replica_id, None)

    async def list(self) -> Sequence[ContainerState]:
        await self._enter("list", "")
        return [self.containers[k] for k in sorted(self.containers)]

    async def changes(self) -> AsyncGenerator[None, None]:
        seen = self._version
        while True:
            while self._version == seen:
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
            seen = self._version
            yield


# --- config store ------------------------------------------------------------


@dataclass
class MemoryConfigStore:
    config: NodeConfig | None = None
    saves: list[NodeConfig] = field(default_factory=list)
    _fail: list[Exception] = field(default_factory=list)

    def fail_next_save(self, error: Exception | None = None) -> None:
        self._fail.append(error or ConfigWriteError("disk full (simulated)"))

    async def load(self) -> NodeConfig | None:
        await anyio.lowlevel.checkpoint()
        return self.config

    async def save(self, config: NodeConfig) -> None:
        await anyio.lowlevel.checkpoint()
        if self._fail:
            raise self._fail.pop(0)
        self.config = config
        self.saves.append(config)


if TYPE_CHECKING:
    from vectorlay import ports

    _clock: ports.Clock = ManualClock()
    _transport: ports.Transport = MemoryTransport()
    _connection: ports.Connection = MemoryConnection(*anyio.create_memory_object_stream[Frame]())
    _runtime: ports.Runtime = MemoryRuntime()
    _store: ports.ConfigStore = MemoryConfigStore()
