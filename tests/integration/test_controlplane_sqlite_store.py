"""The SQLite fleet store on disk: reopening, hashed tokens, file modes, bad files.

What every fleet store does (SQLite's and its in-memory twin) is checked in
``tests/unit/test_controlplane_store.py``.
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from tests.support.records import node_record as node
from tests.support.tokens import NODE_TOKEN as TOKEN
from vectorlay.adapters.controlplane.sqlite_store import SqliteFleetStore
from vectorlay.domain.fleet.records import (
    CommandKind,
    FleetChanges,
    PendingCommand,
    ReplicaPhase,
    ReplicaRecord,
    token_digest,
)
from vectorlay.errors import StoreError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_round_trip_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite3"
    store = SqliteFleetStore(db)
    record = node()
    replica = ReplicaRecord("r1", "ghcr.io/a/b:1", 1, {"K": "v"}, "node-1", ReplicaPhase.RUNNING)
    await store.add_node(record, TOKEN)
    await store.save(
        FleetChanges(
            replicas=[replica],
            commands_put=[
                PendingCommand("node-1", "r1", CommandKind.DEPLOY, 3),
                PendingCommand("node-1", "r2", CommandKind.STOP, 4),
            ],
        )
    )
    await store.save(FleetChanges(commands_deleted=[("node-1", "r2")]))
    await store.aclose()

    again = SqliteFleetStore(db)
    snapshot = await again.load()
    assert snapshot.nodes == [record]
    assert snapshot.replicas == [replica]
    assert snapshot.commands == [PendingCommand("node-1", "r1", CommandKind.DEPLOY, 3)]
    assert await again.node_for_token(TOKEN) == "node-1"
    await again.aclose()


async def test_tokens_are_kept_as_digests_only(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite3"
    store = SqliteFleetStore(db)
    await store.add_node(node(), TOKEN)
    assert await store.node_for_token(TOKEN) == "node-1"
    assert await store.node_for_token(TOKEN + "x") is None
    assert await store.node_for_token("") is None
    await store.aclose()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert TOKEN.encode() not in raw
    with sqlite3.connect(db) as conn:
        (digest,) = conn.execute("SELECT token_hash FROM nodes").fetchone()
    assert digest == token_digest(TOKEN)


async def test_file_and_wal_companions_are_private(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite3"
    db.touch(mode=0o644)
    db.chmod(0o644)
    store = SqliteFleetStore(db)
    await store.add_node(node(), TOKEN)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("cp.sqlite3")]
    assert {p.name for p in files} >= {"cp.sqlite3", "cp.sqlite3-wal"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    await store.aclose()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite3"
    db.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match=r"cp\.sqlite3: cannot open the store"):
        SqliteFleetStore(db)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteFleetStore(db)


async def test_an_unreadable_record_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "cp.sqlite3"
    SqliteFleetStore(db)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO replicas VALUES ('r9', ?)", (b'{"replica_id": 5}',))
    store = SqliteFleetStore(db)
    with pytest.raises(StoreError, match="replica r9 is not readable"):
        await store.load()
    await store.aclose()


INSERTS = {
    "node": "INSERT INTO nodes (node_id, record) VALUES ('n9', ?)",
    "replica": "INSERT INTO replicas (replica_id, record) VALUES ('n9', ?)",
}


@pytest.mark.parametrize("kind", sorted(INSERTS))
async def test_a_deeply_nested_record_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "cp.sqlite3"
    SqliteFleetStore(db)
    # An unknown field is skipped, but skipping still walks every level.
    deep = b"[" * 100_000 + b"]" * 100_000
    record = b'{"node_id": "n9", "replica_id": "n9", "image": "i", "extra": ' + deep + b"}"
    with sqlite3.connect(db) as conn:
        conn.execute(INSERTS[kind], (record,))
    store = SqliteFleetStore(db)
    with pytest.raises(StoreError, match=f"{kind} n9 is not readable: nested too deeply"):
        await store.load()
    await store.aclose()


def test_a_directory_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the store"):
        SqliteFleetStore(tmp_path)
