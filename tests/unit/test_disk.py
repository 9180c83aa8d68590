"""The ``disk`` dependency: thresholds on a faked filesystem size, and the agent following it."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from tests.unit.agent_harness import deploy, open_session, recv_until, running_agent
from vectorlay.adapters.memory import MemoryDisk
from vectorlay.adapters.probe.disk import nearest_existing, read_disk
from vectorlay.domain.agent.disk import GB, DiskReading, disk_dependency, with_disk
from vectorlay.domain.messages import Dependency, DeployResult, ReplicaStatus, SystemInfo

STORE = "/var/lib/containerd"


def reading(free_gb: float, total_gb: float = 1000, measured: str = STORE) -> DiskReading:
    return DiskReading(STORE, measured, int(total_gb * GB), int(free_gb * GB))


@pytest.mark.parametrize(
    ("free_gb", "minimum", "ok", "detail"),
    [
        (412, 20, True, "412 GB free on /var/lib/containerd"),
        (50, 20, True, "50 GB free on /var/lib/containerd"),
        (
            49.9,
            20,
            True,
            "49 GB free on /var/lib/containerd (warning: under 50 GB, large images may not fit)",
        ),
        (
            20,
            20,
            True,
            "20 GB free on /var/lib/containerd (warning: under 50 GB, large images may not fit)",
        ),
        (
            19.99,
            20,
            False,
            "19 GB free on /var/lib/containerd: under the 20 GB minimum to pull an image",
        ),
        (
            0,
            0,
            True,
            "0 GB free on /var/lib/containerd (warning: under 50 GB, large images may not fit)",
        ),
        (
            80,
            100,
            False,
            "80 GB free on /var/lib/containerd: under the 100 GB minimum to pull an image",
        ),
    ],
)
def test_thresholds(free_gb: float, minimum: int, ok: bool, detail: str) -> None:
    dep = disk_dependency(reading(free_gb), minimum)
    assert (dep.name, dep.ok, dep.version, dep.detail) == ("disk", ok, None, detail)


def test_a_missing_store_is_measured_on_its_parent_and_says_so() -> None:
    dep = disk_dependency(reading(300, measured="/var/lib"), 20)
    assert dep.ok
    assert dep.detail == "300 GB free on /var/lib/containerd (missing; measured on /var/lib)"


def test_an_unreadable_disk_is_not_ok_and_says_why() -> None:
    dep = disk_dependency(DiskReading(STORE, STORE, problem="Input/output error"), 20)
    assert not dep.ok
    assert dep.detail == "free space on /var/lib/containerd unknown: Input/output error"


def test_with_disk_replaces_the_old_entry() -> None:
    deps = [Dependency("vfio", True), Dependency("disk", False, None, "old")]
    new = Dependency("disk", True, None, "new")
    assert with_disk(deps, new) == [Dependency("vfio", True), new]
    assert with_disk(deps[:1], new) == [Dependency("vfio", True), new]


def test_read_disk_on_a_real_filesystem(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet"
    assert nearest_existing(missing) == tmp_path
    found = read_disk(missing)
    st = os.statvfs(tmp_path)
    assert (found.path, found.measured) == (str(missing), str(tmp_path))
    assert found.total_bytes == st.f_blocks * st.f_frsize
    assert found.free_bytes is not None
    assert 0 < found.free_bytes <= found.total_bytes


async def test_a_node_that_fills_up_turns_degraded_and_cleaned_turns_ready() -> None:
    disk = MemoryDisk(free_bytes=400 * GB)
    async with running_agent(disk=disk) as h:
        peer = await open_session(h)
        await h.settle()
        assert disk.reads >= 1
        disk.free_bytes = 10 * GB
        await h.advance(30)
        info = await recv_until(peer, SystemInfo)
        assert info.payload.ready is False
        failing = [d for d in info.payload.dependencies if not d.ok]
        assert [(d.name, d.detail) for d in failing] == [
            ("disk", "10 GB free on /var/lib/containerd: under the 20 GB minimum to pull an image")
        ]
        await peer.send_message(deploy("a"))
        refused = await recv_until(peer, DeployResult)
        assert refused.payload.status is ReplicaStatus.FAILED
        assert "a" not in h.runtime.containers
        disk.free_bytes = 120 * GB
        await h.advance(30)
        info = await recv_until(peer, SystemInfo)
        assert info.payload.ready is True
        assert info.payload.dependencies[-1].detail == "120 GB free on /var/lib/containerd"


async def test_a_change_that_keeps_readiness_sends_no_system_info() -> None:
    disk = MemoryDisk(free_bytes=400 * GB)
    async with running_agent(disk=disk) as h:
        peer = await open_session(h)
        await h.settle()
        disk.free_bytes = 45 * GB  # a warning, still ready
        await h.advance(30)
        await h.advance(30)
        assert h.agent.board is not None
        assert h.agent.board.host is not None
        assert h.agent.board.host.report.dependencies[-1].detail.endswith("may not fit)")
        seen = []
        with anyio.move_on_after(0.3):
            while True:
                seen.append(type(await peer.receive_message()).__name__)
        assert "Heartbeat" in seen
        assert "SystemInfo" not in seen
