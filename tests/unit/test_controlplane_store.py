"""Every fleet store keeps the same contract: SQLite's and its in-memory twin.

The SQLite file itself (reopening, modes, digests on disk, bad files) is
checked in ``tests/integration/test_controlplane_sqlite_store.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.records import node_record as node
from tests.support.records import replica_record as replica
from tests.support.tokens import NODE_TOKEN as TOKEN
from vectorlay.adapters.controlplane.sqlite_store import MEMORY, SqliteFleetStore
from vectorlay.adapters.memory import MemoryFleetStore
from vectorlay.domain.fleet.records import (
    CommandKind,
    FleetChanges,
    FleetSnapshot,
    NodeRecord,
    PendingCommand,
    ReplicaPhase,
    ReplicaRecord,
)
from vectorlay.errors import StoreError
from vectorlay.ports import FleetStore


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[FleetStore]:
    kept: FleetStore = SqliteFleetStore(MEMORY) if request.param == "sqlite" else MemoryFleetStore()
    yield kept
    await kept.aclose()


async def test_a_new_store_is_empty(store: FleetStore) -> None:
    assert await store.load() == FleetSnapshot()
    assert await store.node_for_token(TOKEN) is None


async def test_what_is_saved_is_loaded(store: FleetStore) -> None:
    record = node()
    kept = replica(K="v")
    await store.add_node(record, TOKEN)
    await store.save(
        FleetChanges(
            replicas=[kept],
            commands_put=[
                PendingCommand("node-1", "r1", CommandKind.DEPLOY, 3),
                PendingCommand("node-1", "r2", CommandKind.STOP, 4),
            ],
        )
    )
    await store.save(FleetChanges(commands_deleted=[("node-1", "r2")]))
    snapshot = await store.load()
    assert snapshot.nodes == [record]
    assert snapshot.replicas == [kept]
    assert snapshot.commands == [PendingCommand("node-1", "r1", CommandKind.DEPLOY, 3)]


async def test_a_later_write_replaces_an_earlier_one(store: FleetStore) -> None:
    await store.save(
        FleetChanges(
            nodes=[NodeRecord("node-2"), NodeRecord("node-1")],
            replicas=[replica("r2"), replica("r1")],
            commands_put=[PendingCommand("node-1", "r1", CommandKind.DEPLOY, 1)],
        )
    )
    stopped = ReplicaRecord("r1", "ghcr.io/a/b:1", 1, {}, "node-1", ReplicaPhase.STOPPED)
    await store.save(
        FleetChanges(
            replicas=[stopped],
            commands_put=[PendingCommand("node-1", "r1", CommandKind.STOP, 2)],
        )
    )
    snapshot = await store.load()
    assert [n.node_id for n in snapshot.nodes] == ["node-1", "node-2"]  # in id order
    assert snapshot.replicas == [stopped, replica("r2")]
    assert snapshot.commands == [PendingCommand("node-1", "r1", CommandKind.STOP, 2)]


async def test_commands_load_oldest_first(store: FleetStore) -> None:
    commands = [
        PendingCommand("node-2", "r1", CommandKind.DEPLOY, 7),
        PendingCommand("node-1", "r9", CommandKind.STOP, 2),
        PendingCommand("node-1", "r3", CommandKind.DEPLOY, 5),
    ]
    await store.save(FleetChanges(commands_put=commands))
    assert [c.seq for c in (await store.load()).commands] == [2, 5, 7]


async def test_a_token_finds_only_its_node(store: FleetStore) -> None:
    await store.add_node(node(), TOKEN)
    await store.add_node(node("node-2"), TOKEN + "-2")
    assert await store.node_for_token(TOKEN) == "node-1"
    assert await store.node_for_token(TOKEN + "-2") == "node-2"
    assert await store.node_for_token(TOKEN + "x") is None
    assert await store.node_for_token("") is None


async def test_a_node_update_keeps_its_token(store: FleetStore) -> None:
    await store.add_node(node(), TOKEN)
    await store.save(FleetChanges(nodes=[NodeRecord("node-1")]))
    assert await store.node_for_token(TOKEN) == "node-1"
    assert (await store.load()).nodes == [NodeRecord("node-1")]


async def test_duplicate_node_id_is_refused(store: FleetStore) -> None:
    await store.add_node(node(), TOKEN)
    with pytest.raises(StoreError, match="cannot write"):
        await store.add_node(node(), "another-token")
    assert await store.node_for_token("another-token") is None


async def test_a_closed_store_refuses_work(store: FleetStore) -> None:
    await store.add_node(node(), TOKEN)
    await store.aclose()
    with pytest.raises(StoreError):
        await store.load()
    with pytest.raises(StoreError):
        await store.node_for_token(TOKEN)
    with pytest.raises(StoreError):
        await store.save(FleetChanges(nodes=[NodeRecord("node-1")]))


# --- the in-memory twin -----------------------------------------------------------


async def test_the_twin_never_aliases_what_it_was_given() -> None:
    store = MemoryFleetStore()
    env = {"K": "v"}
    given = replica(**env)
    await store.save(FleetChanges(replicas=[given]))
    given.env_vars["K"] = "changed later"
    (loaded,) = (await store.load()).replicas
    assert loaded.env_vars == env
    assert loaded is not given


async def test_the_twin_records_batches_and_fails_a_batch_whole() -> None:
    store = MemoryFleetStore()
    first = FleetChanges(nodes=[NodeRecord("node-1")])
    await store.save(first)
    await store.save(FleetChanges())  # nothing to write: not a batch
    store.fail_next_write()
    with pytest.raises(StoreError, match="simulated"):
        await store.save(FleetChanges(nodes=[NodeRecord("node-2")], replicas=[replica()]))
    store.fail_next_write(StoreError("disk gone"))
    with pytest.raises(StoreError, match="disk gone"):
        await store.add_node(node("node-3"), TOKEN)
    assert store.saves == [first]
    assert await store.load() == FleetSnapshot(nodes=[NodeRecord("node-1")])
    assert await store.node_for_token(TOKEN) is None
