"""The fleet's view follows the node: exit codes and errors, node removal, 409 reasons."""

from __future__ import annotations

import pytest

from tests.unit.test_fleet import add_node, deploy, ok
from vectorlay.domain.fleet import refusals
from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.fleet.records import ReplicaPhase
from vectorlay.domain.liveness import LivenessPolicy
from vectorlay.domain.messages import ReplicaReport
from vectorlay.domain.messages import ReplicaStatus as R
from vectorlay.errors import NoCapacity, NodeBusy, UnknownNode


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(LivenessPolicy(60.0), now=0.0)


def test_exit_code_and_error_reported_by_the_node_are_kept(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1, TOKEN="hunter2-secret"))
    fleet.deploy_result("a", ok("r1"))
    reason = "container exited with code 137 (killed by SIGKILL) hunter2-secret"
    fleet.heartbeat("a", [ReplicaReport("r1", R.FAILED, exit_code=137, error=reason)])
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.status, replica.exit_code) == (ReplicaPhase.FAILED, 137)
    assert replica.error is not None
    assert "hunter2-secret" not in replica.error  # redacted of the replica's env values
    assert replica.error.startswith("container exited with code 137 (killed by SIGKILL)")
    assert fleet.gpus_free("a") == 2
    # A later report of the same status without the keys (an older agent) keeps them.
    fleet.heartbeat("a", [ReplicaReport("r1", R.FAILED)])
    again = fleet.replica("r1")
    assert again is not None
    assert again.exit_code == 137


def test_removing_a_node(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.deploy_result("a", ok("r1"))
    with pytest.raises(UnknownNode):
        fleet.remove_node("nope")
    with pytest.raises(NodeBusy, match="is online"):
        fleet.remove_node("a")
    fleet.maintenance("a")
    with pytest.raises(NodeBusy, match=r"r1 \(running\)"):
        fleet.remove_node("a")
    fleet.stop("r1")
    with pytest.raises(NodeBusy, match=r"r1 \(stopping\)"):
        fleet.remove_node("a")
    fleet.stop_result("a", ok("r1", R.STOPPED))
    fleet.take_changes()
    fleet.remove_node("a")  # connected, in maintenance, nothing live: may go
    assert fleet.node("a") is None
    changes = fleet.take_changes()
    assert changes.nodes_deleted == ["a"]
    # The stopped record stays, as history.
    stopped = fleet.replica("r1")
    assert stopped is not None
    assert stopped.status is ReplicaPhase.STOPPED
    # Its last words after removal change nothing.
    assert fleet.heartbeat("a", []) == []
    assert fleet.stop_result("a", ok("r1", R.STOPPED)) == []


def test_an_offline_node_may_be_removed(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.disconnect("a")
    fleet.remove_node("a")
    assert fleet.nodes() == []


def reason_of(fleet: Fleet, gpus: int) -> NoCapacity:
    with pytest.raises(NoCapacity) as caught:
        fleet.deploy(deploy(f"x{gpus}", gpus))
    return caught.value


def test_each_409_reason(fleet: Fleet) -> None:
    assert reason_of(fleet, 1).reason == refusals.NO_NODE_ONLINE
    add_node(fleet, "a", gpus=2)
    add_node(fleet, "b", gpus=4)
    too_many = reason_of(fleet, 5)
    assert too_many.reason == refusals.TOO_MANY_GPUS
    assert str(too_many).startswith("gpu_count:")
    assert "the largest has 4 GPUs" in str(too_many)
    fleet.deploy(deploy("keep", 1))  # on b, the node with the most free GPUs
    fleet.drain("b")
    fleet.maintenance("a")
    held = reason_of(fleet, 1)
    assert held.reason == refusals.NODES_HELD
    assert "a (maintenance, 2 free GPUs)" in str(held)
    assert "b (draining, 3 free GPUs)" in str(held)
    fleet.resume("a")
    fleet.deploy(deploy("big", 2))
    full = reason_of(fleet, 1)
    assert full.reason == refusals.NO_FREE_GPUS
    assert str(full).startswith("gpu_count:")
    fleet.disconnect("a")
    fleet.disconnect("b")
    offline = reason_of(fleet, 1)
    assert offline.reason == refusals.NO_NODE_ONLINE
    assert "2 known, all offline" in str(offline)
    # Too many beats offline: waiting never fixes it.
    assert reason_of(fleet, 9).reason == refusals.TOO_MANY_GPUS


def test_a_degraded_node_is_named(fleet: Fleet) -> None:
    add_node(fleet, "a", ready=False)
    refused = reason_of(fleet, 1)
    assert refused.reason == refusals.NODES_DEGRADED
    assert "a is degraded" in str(refused)
