"""Image garbage collection: the pure rules, the deploy record, and the collector on fakes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from tests.unit.agent_harness import deploy, open_session, recv_until, running_agent
from vectorlay.adapters.deployrecord import FileDeployRecord
from vectorlay.adapters.memory import ManualClock, MemoryDisk, MemoryImages
from vectorlay.app.agent.imagegc import ImageCollector
from vectorlay.domain.agent.disk import GB, DiskReading
from vectorlay.domain.agent.imagegc import (
    Image,
    collection_needed,
    normalize_ref,
    plan,
    removable,
    target_met,
)
from vectorlay.domain.agent.replicas import ReplicaTable
from vectorlay.domain.messages import (
    DeployPayload,
    DeployResult,
    ReplicaStatus,
    Stop,
    StopPayload,
    StopResult,
)
from vectorlay.errors import ContainerRuntimeError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def reading(free_gb: float, total_gb: float = 1000) -> DiskReading:
    return DiskReading("/s", "/s", int(total_gb * GB), int(free_gb * GB))


# --- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free_gb", "total_gb", "needed"),
    [
        (151, 1000, False),  # 84.9% used, plenty free
        (150, 1000, True),  # 85% used
        (49.9, 60, True),  # under 50 GB free, whatever the share
        (50, 60, False),
        (500, 1000, False),
    ],
)
def test_when_a_collection_starts(free_gb: float, total_gb: float, needed: bool) -> None:
    assert collection_needed(reading(free_gb, total_gb)) is needed


def test_unknown_figures_never_start_one() -> None:
    assert not collection_needed(DiskReading("/s", "/s", problem="EIO"))


def test_when_it_stops() -> None:
    assert target_met(1000 * GB, 200 * GB)  # 80% used, 200 GB free
    assert not target_met(1000 * GB, 199 * GB)  # 80.1% used
    assert not target_met(100 * GB, 49 * GB)  # 51% used but under 50 GB free
    assert target_met(100 * GB, 50 * GB)


def test_references_are_compared_normalized() -> None:
    assert normalize_ref("nginx") == "docker.io/library/nginx:latest"
    assert normalize_ref("acme/llm:1") == "docker.io/acme/llm:1"
    assert normalize_ref("ghcr.io/acme/llm") == "ghcr.io/acme/llm:latest"
    assert normalize_ref("localhost:5000/llm:2") == "localhost:5000/llm:2"
    assert normalize_ref("nginx@sha256:ab") == "docker.io/library/nginx@sha256:ab"


def images(*refs: str, size_gb: int = 10) -> list[Image]:
    return [Image(normalize_ref(r), f"id{i:010d}", size_gb * GB) for i, r in enumerate(refs)]


def test_order_is_never_deployed_first_then_least_recently_deployed() -> None:
    held = images("a:1", "b:1", "c:1", "d:1", "e:1")
    order = removable(
        held,
        in_use=set(),
        protected=set(),
        last_deployed={
            normalize_ref("a:1"): T0 + timedelta(days=3),
            normalize_ref("b:1"): T0 + timedelta(days=1),
            normalize_ref("d:1"): T0 + timedelta(days=2),
        },
    )
    assert [i.ref.split("/")[-1] for i in order] == ["c:1", "e:1", "b:1", "d:1", "a:1"]


def test_an_image_in_use_or_protected_never_goes() -> None:
    held = images("a:1", "b:1", "c:1", "d:1")
    order = removable(
        held,
        in_use={"docker.io/library/a:1", "id0000000003"},  # by name and by id (d:1)
        protected={"b:1"},  # a pending or running replica, or a pull: compared normalized
        last_deployed={},
    )
    assert [i.ref for i in order] == ["docker.io/library/c:1"]


def test_plan_stops_at_the_target_or_when_nothing_more_may_go() -> None:
    held = images("a:1", "b:1", "c:1", size_gb=30)
    # 900 of 1000 GB used: 100 GB must go to reach 80% used.
    assert plan(reading(100), held) == held
    assert len(plan(reading(100), held)) == 3  # 30+30+30 = 90 < 100: all, and still short
    assert len(plan(reading(140), held)) == 2  # 140+60 = 200: met after two
    assert plan(reading(500), held) == []  # nothing needed


# --- the record ----------------------------------------------------------------------------


def test_record_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "images.json"
    record = FileDeployRecord(path)
    assert record.last_deployed() == {}
    record.deployed("docker.io/library/a:1", T0)
    record.deployed("docker.io/library/b:1", T0 + timedelta(hours=1))
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.json"]
    again = FileDeployRecord(path)
    assert again.last_deployed() == {
        "docker.io/library/a:1": T0,
        "docker.io/library/b:1": T0 + timedelta(hours=1),
    }
    again.forget(["docker.io/library/a:1"])
    assert list(FileDeployRecord(path).last_deployed()) == ["docker.io/library/b:1"]


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '{"last_deployed": 7}', "\x00\xff", ""],
)
def test_a_corrupt_record_means_unknown_and_never_a_crash(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "images.json"
    path.write_text(text, errors="surrogateescape")
    record = FileDeployRecord(path)
    with caplog.at_level(logging.WARNING):
        assert record.last_deployed() == {}
    assert "every image counts as never deployed" in caplog.text
    record.deployed("docker.io/library/a:1", T0)  # and it heals on the next deploy
    assert FileDeployRecord(path).last_deployed() == {"docker.io/library/a:1": T0}


def test_one_bad_stamp_loses_only_that_image(tmp_path: Path) -> None:
    path = tmp_path / "images.json"
    path.write_text(
        '{"format": 1, "last_deployed": {"a": "yesterday", "b": "2026-01-01T00:00:00Z"}}'
    )
    assert FileDeployRecord(path).last_deployed() == {"b": T0}


# --- the collector ---------------------------------------------------------------------------


class Rig:
    def __init__(self, tmp_path: Path, *, free_gb: float, total_gb: float = 1000) -> None:
        self.disk = MemoryDisk(total_bytes=int(total_gb * GB), free_bytes=int(free_gb * GB))
        self.images = MemoryImages(disk=self.disk)
        self.table = ReplicaTable()
        self.pulls: set[str] = set()
        self.record = FileDeployRecord(tmp_path / "images.json")
        self.counts: list[tuple[int, int]] = []
        self.collector = ImageCollector(
            self.images,
            self.disk,
            table=self.table,
            pulling=lambda: self.pulls,
            record=self.record,
            clock=ManualClock(),
            counted=lambda removed, freed: self.counts.append((removed, freed)),
        )


async def test_removes_oldest_first_until_the_target(tmp_path: Path) -> None:
    rig = Rig(tmp_path, free_gb=120)  # 88% used: 80 GB must go
    for ref in ("old:1", "mid:1", "new:1", "never:1"):
        rig.images.add(ref, 40 * GB)
    rig.record.deployed(normalize_ref("old:1"), T0)
    rig.record.deployed(normalize_ref("mid:1"), T0 + timedelta(days=1))
    rig.record.deployed(normalize_ref("new:1"), T0 + timedelta(days=2))
    freed = await rig.collector.collect()
    assert rig.images.removed == ["docker.io/library/never:1", "docker.io/library/old:1"]
    assert freed == 80 * GB
    assert rig.counts == [(2, 80 * GB)]
    assert normalize_ref("old:1") not in rig.record.last_deployed()  # forgotten once removed


async def test_nothing_happens_below_the_threshold(tmp_path: Path) -> None:
    rig = Rig(tmp_path, free_gb=300)
    rig.images.add("a:1", 40 * GB)
    assert await rig.collector.collect() == 0
    assert rig.images.lists == 0


async def test_live_replicas_and_pulls_are_protected(tmp_path: Path) -> None:
    rig = Rig(tmp_path, free_gb=10)  # nothing can reach the target: all that may go goes
    for ref in ("run:1", "pend:1", "pull:1", "free:1"):
        rig.images.add(ref, 20 * GB)
    rig.table.deploy(DeployPayload("r1", "run:1"))
    rig.table.deploy(DeployPayload("r2", "pend:1"))
    rig.pulls.add("pull:1")
    await rig.collector.collect()
    assert rig.images.removed == ["docker.io/library/free:1"]


async def test_a_conflict_is_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, free_gb=100)
    rig.images.add("a:1", 60 * GB)
    rig.images.add("b:1", 60 * GB)
    rig.images.add("c:1", 60 * GB)
    # Used by a container the listing missed (made meanwhile): rmi refuses.
    rig.images.fail[normalize_ref("a:1")] = ContainerRuntimeError(
        "conflict: unable to delete a:1 (cannot be forced) - image is being used by running "
        "container 59261bebc8113ca1"
    )
    with caplog.at_level(logging.INFO):
        await rig.collector.collect()
    assert rig.images.removed == ["docker.io/library/b:1", "docker.io/library/c:1"]
    assert "image docker.io/library/a:1 not removed: conflict: unable to delete" in caplog.text
    assert f"removed image docker.io/library/b:1: {60 * GB} bytes freed" in caplog.text


async def test_an_image_a_container_uses_is_not_even_tried(tmp_path: Path) -> None:
    rig = Rig(tmp_path, free_gb=10)
    rig.images.add("theirs:1", 20 * GB)
    rig.images.used.add("theirs:1")  # another program's stopped container
    await rig.collector.collect()
    assert rig.images.removed == []


async def test_when_the_target_cannot_be_reached_it_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, free_gb=10)
    rig.images.add("a:1", 5 * GB)
    with caplog.at_level(logging.INFO):
        assert await rig.collector.collect() == 5 * GB
    assert "nothing more may go; 15.0 GB free of 1000.0 GB" in caplog.text


async def test_one_collection_at_a_time(tmp_path: Path) -> None:
    rig = Rig(tmp_path, free_gb=10)
    rig.images.add("a:1", 5 * GB)
    rig.images.gate = anyio.Event()
    results: list[int] = []

    async def collect() -> None:
        results.append(await rig.collector.collect())

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect)
        await anyio.wait_all_tasks_blocked()
        assert await rig.collector.collect() == 0  # the first one holds the store
        rig.images.gate.set()
    assert results == [5 * GB]
    assert rig.images.lists == 1


async def test_a_pull_that_starts_during_a_collection_keeps_its_image(tmp_path: Path) -> None:
    rig = Rig(tmp_path, free_gb=10)
    rig.images.add("a:1", 5 * GB, image_id="aaaaaaaaaaaa")
    rig.images.add("b:1", 5 * GB, image_id="bbbbbbbbbbbb")
    rig.record.deployed(normalize_ref("b:1"), T0)  # a (never deployed) goes first
    rig.images.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(rig.collector.collect)
        await anyio.wait_all_tasks_blocked()
        rig.pulls.add("b:1")  # a deploy of b:1 arrives while a:1 is being removed
        rig.images.gate.set()
    assert rig.images.removed == ["docker.io/library/a:1"]


# --- in the agent -----------------------------------------------------------------------------


async def test_the_agent_collects_after_a_stop_and_records_deploys(tmp_path: Path) -> None:
    disk = MemoryDisk(total_bytes=1000 * GB, free_bytes=300 * GB)
    held = MemoryImages(disk=disk)
    held.add("ghcr.io/acme/llm:1.2", 200 * GB)
    record = FileDeployRecord(tmp_path / "images.json")
    async with running_agent(disk=disk, images=held, record=record) as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a"))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.RUNNING
        await h.settle()
        assert normalize_ref("ghcr.io/acme/llm:1.2") in record.last_deployed()
        disk.free_bytes = 100 * GB  # the store fills up: the next reading starts a collection
        await h.advance(30)
        assert h.agent.collector is not None
        assert h.agent.collector.runs == 1
        assert held.removed == []  # its replica runs: protected
        await peer.send_message(Stop(StopPayload("a")))
        assert (await recv_until(peer, StopResult)).payload.status is ReplicaStatus.STOPPED
        await h.settle()
        assert held.removed == ["ghcr.io/acme/llm:1.2"]
        assert h.agent.board is not None
        gc = h.agent.board.snapshot()["image_gc"]
        assert gc["images_removed"] == 1
        assert gc["bytes_freed"] == 200 * GB
