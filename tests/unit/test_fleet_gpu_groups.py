"""The control plane places by whole IOMMU groups of assignable GPUs, as the agent assigns them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vectorlay.adapters.memory import sample_report
from vectorlay.domain.agent.replicas import (
    ContainerState,
    ReplicaTable,
    ReportResult,
    StartContainer,
)
from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.fleet.placement import NOT_WHOLE_GROUPS
from vectorlay.domain.hostreport import assignable_slots
from vectorlay.domain.liveness import LivenessPolicy
from vectorlay.domain.messages import (
    DeployPayload,
    Gpu,
    Hardware,
    RegisterPayload,
    ReplicaReport,
    ReplicaStatus,
    ResultPayload,
    SystemInfoPayload,
)
from vectorlay.errors import NoCapacity

R = ReplicaStatus
WALL = datetime(2026, 1, 1, tzinfo=UTC)


def gpu(addr: str, group: str, *, assignable: bool | None = True, health: str = "ok") -> Gpu:
    return Gpu(addr, "nvidia", "10de", "2204", "GA102", "vfio-pci", group, assignable, health)


def add_node(fleet: Fleet, node_id: str, gpus: list[Gpu]) -> None:
    report = sample_report()
    hardware = Hardware("h", "cpu", 8, 64, report.hardware.storage, [], gpus)
    fleet.register(
        node_id, RegisterPayload("0.1.0", hardware, report.dependencies), now=0, wall=WALL
    )
    info = SystemInfoPayload(node_id, "0.1.0", hardware, report.dependencies, True, [])
    fleet.session_started(node_id, info, now=0, wall=WALL)


def deploy(rid: str, count: int) -> DeployPayload:
    return DeployPayload(rid, "ghcr.io/acme/llm:1.2", count)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(LivenessPolicy(60.0), now=0.0)


A, B, C = "0000:05:00.0", "0000:0a:00.0", "0000:0b:00.0"


def test_a_node_whose_two_gpus_share_a_group_takes_only_two(fleet: Fleet) -> None:
    add_node(fleet, "n", [gpu(A, "12"), gpu(B, "12")])
    assert fleet.gpus_free("n") == 2
    with pytest.raises(NoCapacity) as refused:
        fleet.deploy(deploy("one", 1))
    assert str(refused.value) == NOT_WHOLE_GROUPS
    assert "not in whole groups of the right size" in str(refused.value)
    replica, _ = fleet.deploy(deploy("two", 2))
    assert replica.node_id == "n"
    assert fleet.gpus_free("n") == 0


def test_gpus_free_counts_assignable_gpus_only(fleet: Fleet) -> None:
    add_node(
        fleet,
        "n",
        [gpu(A, "12"), gpu(B, "13", assignable=False, health="failed"), gpu(C, "14")],
    )
    assert fleet.gpus_free("n") == 2
    with pytest.raises(NoCapacity) as refused:
        fleet.deploy(deploy("three", 3))
    assert str(refused.value) != NOT_WHOLE_GROUPS  # not a group problem: too few GPUs


def test_reported_gpus_pin_the_groups_a_replica_holds(fleet: Fleet) -> None:
    add_node(fleet, "n", [gpu(A, "12"), gpu(B, "13"), gpu(C, "13")])
    replica, _ = fleet.deploy(deploy("r1", 1))
    assert fleet.gpus_free("n") == 2  # group 12 taken by the rule until reported
    fleet.deploy_result("n", ResultPayload("r1", R.RUNNING, gpus=[A]))
    stored = fleet.replica("r1")
    assert stored is not None
    assert stored.gpus == [A]
    # A heartbeat saying it holds one GPU of group 13 moves the hold there, whole.
    fleet.heartbeat("n", [ReplicaReport("r1", R.RUNNING, [B])])
    assert fleet.gpus_free("n") == 1
    replica, _ = fleet.deploy(deploy("r2", 1))
    assert replica.node_id == "n"
    fleet.heartbeat("n", [ReplicaReport("r1", R.EXITED), ReplicaReport("r2", R.RUNNING, [A])])
    done = fleet.replica("r1")
    assert done is not None
    assert done.gpus == []
    assert fleet.gpus_free("n") == 2


def test_older_agents_without_the_key_count_vfio_gpus(fleet: Fleet) -> None:
    add_node(fleet, "n", [gpu(A, "12", assignable=None), gpu(B, "13", assignable=None)])
    assert fleet.gpus_free("n") == 2


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    counts=st.lists(st.integers(1, 5), max_size=8),
)
def test_the_control_plane_places_exactly_where_the_agent_would_accept(
    sizes: list[int], counts: list[int]
) -> None:
    gpus = [
        gpu(f"0000:{16 + i:02x}:00.{fn}", str(10 + i))
        for i, size in enumerate(sizes)
        for fn in range(size)
    ]
    fleet = Fleet(LivenessPolicy(60.0), now=0.0)
    add_node(fleet, "n", gpus)
    table = ReplicaTable(assignable_slots(gpus))
    for n, count in enumerate(counts):
        rid = f"r{n}"
        agent = table.deploy(deploy(rid, count))
        try:
            placed, _ = fleet.deploy(deploy(rid, count))
        except NoCapacity:
            assert isinstance(agent, ReportResult), "the agent would have taken it"
            continue
        assert isinstance(agent, StartContainer), agent
        assert placed.node_id == "n"
        held = [g.pci_address for g in agent.spec.gpus]
        table.started(ContainerState(rid, R.RUNNING, None, tuple(held), "x:1"))
        fleet.deploy_result("n", ResultPayload(rid, R.RUNNING, gpus=held))
        assert fleet.gpus_free("n") == len(table.free_slots())
