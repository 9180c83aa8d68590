"""The control plane's store in memory: a ``FleetStore`` twin of the SQLite store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import msgspec

from vectorlay.domain.fleet.records import (
    FleetChanges,
    FleetSnapshot,
    NodeRecord,
    PendingCommand,
    ReplicaRecord,
    token_digest,
)
from vectorlay.errors import StoreError


@dataclass
class MemoryFleetStore:
    """The control plane's store in dicts, with SQLite's contract.

    Records go through the same JSON codec as in SQLite, so what the fleet
    holds and what is stored never alias; tokens are kept as digests; a
    batch is all or nothing (``fail_next_write`` makes the next write raise
    ``StoreError`` and change nothing); a closed store raises ``StoreError``.
    ``saves`` records every batch written.
    """

    saves: list[FleetChanges] = field(default_factory=list)
    _nodes: dict[str, bytes] = field(default_factory=dict)
    _replicas: dict[str, bytes] = field(default_factory=dict)
    _commands: dict[tuple[str, str], PendingCommand] = field(default_factory=dict)
    _tokens: dict[bytes, str] = field(default_factory=dict)
    _fail: list[Exception] = field(default_factory=list)
    _closed: bool = False

    def fail_next_write(self, error: Exception | None = None) -> None:
        self._fail.append(error or StoreError("memory: cannot write the store (simulated)"))

    async def load(self) -> FleetSnapshot:
        await self._ready()
        return FleetSnapshot(
            nodes=[
                msgspec.json.decode(self._nodes[k], type=NodeRecord) for k in sorted(self._nodes)
            ],
            replicas=[
                msgspec.json.decode(self._replicas[k], type=ReplicaRecord)
                for k in sorted(self._replicas)
            ],
            commands=sorted(self._commands.values(), key=lambda c: c.seq),
        )

    async def add_node(self, record: NodeRecord, node_token: str) -> None:
        await self._ready(writing=True)
        digest = token_digest(node_token)
        if record.node_id in self._nodes or digest in self._tokens:
            raise StoreError(f"memory: cannot write the store: node {record.node_id} exists")
        self._nodes[record.node_id] = msgspec.json.encode(record)
        self._tokens[digest] = record.node_id

    async def node_for_token(self, node_token: str) -> str | None:
        await self._ready()
        return self._tokens.get(token_digest(node_token))

    async def save(self, changes: FleetChanges) -> None:
        if changes.empty:
            return
        await self._ready(writing=True)
        self._nodes.update((n.node_id, msgspec.json.encode(n)) for n in changes.nodes)
        self._replicas.update((r.replica_id, msgspec.json.encode(r)) for r in changes.replicas)
        for key in changes.commands_deleted:
            self._commands.pop(key, None)
        self._commands.update((c.key, c) for c in changes.commands_put)
        self.saves.append(changes)

    async def aclose(self) -> None:
        self._closed = True

    async def _ready(self, *, writing: bool = False) -> None:
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise StoreError("memory: the store is closed")
        if writing and self._fail:
            raise self._fail.pop(0)


if TYPE_CHECKING:
    from vectorlay import ports

    _fleet_store: ports.FleetStore = MemoryFleetStore()
