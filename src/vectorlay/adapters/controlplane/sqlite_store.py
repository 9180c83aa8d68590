"""The reference control plane's fleet store: one SQLite file (stdlib ``sqlite3``).

- WAL journal with ``synchronous=NORMAL``: a commit is an append to the WAL
  file without an fsync, so it survives a crash of the process (not of the
  machine's power).  That fits a reference and development peer.
- The file is created with mode ``0600`` and tightened to it if it exists:
  it holds the env values of replicas, which are secrets.
- Node tokens are kept as digests only
  (:func:`~vectorlay.domain.fleet.records.token_digest`) and compared with
  :func:`hmac.compare_digest`.
- Records are stored as msgspec JSON documents keyed by id; the schema
  version lives in ``PRAGMA user_version``.

Blocking calls: every method is one short transaction on a local file (tens
of microseconds), run inline on the event loop.  That keeps writes in the
order the fleet made them without a lock; a remote database belongs behind
the same :class:`~vectorlay.ports.FleetStore` protocol with real async I/O.
"""

from __future__ import annotations

import hmac
import os
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec

from vectorlay.domain.fleet.records import (
    CommandKind,
    FleetChanges,
    FleetSnapshot,
    NodeRecord,
    PendingCommand,
    ReplicaRecord,
    token_digest,
)
from vectorlay.errors import StoreError

SCHEMA_VERSION: Final = 1
MEMORY: Final = ":memory:"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id    TEXT PRIMARY KEY,
    token_hash BLOB UNIQUE,
    record     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS replicas (
    replica_id TEXT PRIMARY KEY,
    record     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    node_id    TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (node_id, replica_id)
);
"""

_T = TypeVar("_T", NodeRecord, ReplicaRecord)
_encoder: Final = msgspec.json.Encoder()
_node_decoder: Final = msgspec.json.Decoder(NodeRecord)
_replica_decoder: Final = msgspec.json.Decoder(ReplicaRecord)


def _private_file(path: Path) -> None:
    """Create ``path`` (and tighten it with its WAL companions) to mode 0600."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode != 0o600:
            candidate.chmod(0o600)


class SqliteFleetStore:
    """A :class:`~vectorlay.ports.FleetStore` in one SQLite file (``":memory:"`` for tests)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            if self.path != MEMORY:
                _private_file(Path(self.path))
            # Autocommit mode: transactions are opened explicitly in _write.
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                self._db.close()
                raise StoreError(
                    f"{self.path}: store schema version {version} is newer than this "
                    f"control plane understands ({SCHEMA_VERSION})"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from None

    # --- FleetStore -------------------------------------------------------------

    async def load(self) -> FleetSnapshot:
        try:
            nodes = [
                self._decode(_node_decoder, blob, f"node {node_id}")
                for node_id, blob in self._db.execute(
                    "SELECT node_id, record FROM nodes ORDER BY node_id"
                )
            ]
            replicas = [
                self._decode(_replica_decoder, blob, f"replica {replica_id}")
                for replica_id, blob in self._db.execute(
                    "SELECT replica_id, record FROM replicas ORDER BY replica_id"
                )
            ]
            commands = [
                PendingCommand(node_id, replica_id, CommandKind(kind), seq)
                for node_id, replica_id, kind, seq in self._db.execute(
                    "SELECT node_id, replica_id, kind, seq FROM commands ORDER BY seq"
                )
            ]
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"{self.path}: cannot read the store: {exc}") from None
        return FleetSnapshot(nodes=nodes, replicas=replicas, commands=commands)

    async def add_node(self, record: NodeRecord, node_token: str) -> None:
        self._write(
            [
                (
                    "INSERT INTO nodes (node_id, token_hash, record) VALUES (?, ?, ?)",
                    (record.node_id, token_digest(node_token), _encoder.encode(record)),
                )
            ]
        )

    async def node_for_token(self, node_token: str) -> str | None:
        digest = token_digest(node_token)
        try:
            row = self._db.execute(
                "SELECT node_id, token_hash FROM nodes WHERE token_hash = ?", (digest,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the store: {exc}") from None
        if row is None or not hmac.compare_digest(bytes(row[1]), digest):
            return None
        return str(row[0])

    async def save(self, changes: FleetChanges) -> None:
        if changes.empty:
            return
        statements: list[tuple[str, tuple[object, ...]]] = []
        for node in changes.nodes:
            statements.append(
                (
                    "INSERT INTO nodes (node_id, record) VALUES (?, ?) "
                    "ON CONFLICT (node_id) DO UPDATE SET record = excluded.record",
                    (node.node_id, _encoder.encode(node)),
                )
            )
        for replica in changes.replicas:
            statements.append(
                (
                    "INSERT INTO replicas (replica_id, record) VALUES (?, ?) "
                    "ON CONFLICT (replica_id) DO UPDATE SET record = excluded.record",
                    (replica.replica_id, _encoder.encode(replica)),
                )
            )
        for node_id, replica_id in changes.commands_deleted:
            statements.append(
                (
                    "DELETE FROM commands WHERE node_id = ? AND replica_id = ?",
                    (node_id, replica_id),
                )
            )
        for node_id in changes.nodes_deleted:
            # The token digest lives in the node's row: deleting it revokes the token.
            statements.append(("DELETE FROM nodes WHERE node_id = ?", (node_id,)))
            statements.append(("DELETE FROM commands WHERE node_id = ?", (node_id,)))
        for command in changes.commands_put:
            statements.append(
                (
                    "INSERT OR REPLACE INTO commands (node_id, replica_id, kind, seq) "
                    "VALUES (?, ?, ?, ?)",
                    (command.node_id, command.replica_id, command.kind.value, command.seq),
                )
            )
        self._write(statements)

    async def aclose(self) -> None:
        self._db.close()

    # --- internals ----------------------------------------------------------------

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write the store: {exc}") from None

    def _decode(self, decoder: msgspec.json.Decoder[_T], blob: bytes, what: str) -> _T:
        try:
            return decoder.decode(blob)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"{self.path}: {what} is not readable: {exc}") from None
        except RecursionError:
            raise StoreError(f"{self.path}: {what} is not readable: nested too deeply") from None


if TYPE_CHECKING:
    from vectorlay.ports import FleetStore

    _: FleetStore = SqliteFleetStore(MEMORY)
