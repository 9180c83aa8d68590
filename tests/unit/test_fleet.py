"""Control-plane decisions on the shared domain: liveness, scheduling, rescheduling, drain.

Time is passed in (monotonic seconds), so every deadline is checked exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from vectorlay.adapters.memory import sample_report
from vectorlay.domain.fleet import placement
from vectorlay.domain.fleet.commands import CommandLedger, message_for
from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.fleet.inventory import Inventory
from vectorlay.domain.fleet.node import Hold, Node, Status
from vectorlay.domain.fleet.records import (
    CommandKind,
    FleetSnapshot,
    NodeRecord,
    PendingCommand,
    ReplicaPhase,
    ReplicaRecord,
    Send,
)
from vectorlay.domain.hostreport import is_ready
from vectorlay.domain.liveness import LivenessPolicy
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    Gpu,
    Hardware,
    RegisterPayload,
    ReplicaReport,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopPayload,
    SystemInfoPayload,
)
from vectorlay.errors import NoCapacity, ReplicaExists, UnknownNode, UnknownReplica, WrongNode

WALL = datetime(2026, 1, 1, tzinfo=UTC)
R = ReplicaStatus


def hardware(gpus: int, *, other_driver: int = 0) -> Hardware:
    base = sample_report(gpus=gpus).hardware
    extra = [
        Gpu(f"0000:{0x80 + i:02x}:00.0", "nvidia", "10de", "2330", "H100", "nvidia", None)
        for i in range(other_driver)
    ]
    return msgspec.structs.replace(base, gpus=[*base.gpus, *extra])


def info(
    node_id: str,
    *,
    gpus: int = 2,
    ready: bool = True,
    replicas: dict[str, ReplicaStatus] | None = None,
) -> SystemInfoPayload:
    report = sample_report(gpus=gpus, ready=ready)
    return SystemInfoPayload(
        node_id=node_id,
        agent_version="0.1.0",
        hardware=hardware(gpus),
        dependencies=report.dependencies,
        ready=ready,
        replicas=[ReplicaReport(k, v) for k, v in (replicas or {}).items()],
    )


def add_node(
    fleet: Fleet, node_id: str, *, gpus: int = 2, ready: bool = True, now: float = 0.0
) -> list[Send]:
    report = sample_report(gpus=gpus, ready=ready)
    fleet.register(
        node_id,
        RegisterPayload("0.1.0", hardware(gpus), report.dependencies),
        now=now,
        wall=WALL,
    )
    return fleet.session_started(node_id, info(node_id, gpus=gpus, ready=ready), now=now, wall=WALL)


def deploy(replica_id: str, gpu_count: int = 1, **env: str) -> DeployPayload:
    return DeployPayload(replica_id, "ghcr.io/acme/llm:1.2", gpu_count, dict(env))


def ok(replica_id: str, status: ReplicaStatus = R.RUNNING) -> ResultPayload:
    return ResultPayload(replica_id, status)


def node_of(fleet: Fleet, node_id: str) -> NodeRecord:
    node = fleet.node(node_id)
    assert node is not None
    return node


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(LivenessPolicy(60.0), now=0.0)


# --- liveness -------------------------------------------------------------------------


def test_liveness_deadline_is_exactly_offline_after_since_the_last_frame(fleet: Fleet) -> None:
    add_node(fleet, "a", now=100.0)
    assert fleet.liveness_deadline("a") == 160.0
    fleet.touch("a", now=130.5, wall=WALL)
    assert fleet.liveness_deadline("a") == 190.5


def test_replicas_move_exactly_offline_after_since_the_last_frame(fleet: Fleet) -> None:
    add_node(fleet, "a", now=0.0)
    add_node(fleet, "b", now=0.0)
    fleet.deploy(deploy("r1", 1))
    assert fleet.replica("r1") is not None
    first = fleet.replica("r1")
    assert first is not None
    assert first.node_id is not None
    home = first.node_id
    other = "b" if home == "a" else "a"
    fleet.touch(home, now=10.0, wall=WALL)
    fleet.touch(other, now=69.0, wall=WALL)
    assert fleet.disconnect(home)
    assert fleet.next_reschedule_at() == 70.0
    assert fleet.reschedule_due(69.999) == ([], [])
    moves, sends = fleet.reschedule_due(70.0)
    assert [(m.replica_id, m.from_node, m.to_node) for m in moves] == [("r1", home, other)]
    assert [(s.node_id, type(s.message)) for s in sends] == [(other, Deploy)]
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.node_id, replica.status) == (other, ReplicaPhase.PENDING)
    assert fleet.next_reschedule_at() is None


def test_node_that_reconnects_before_the_deadline_keeps_its_replicas(fleet: Fleet) -> None:
    add_node(fleet, "a")
    add_node(fleet, "b")
    replica, _ = fleet.deploy(deploy("r1", 1))
    home = replica.node_id
    assert home is not None
    fleet.disconnect(home)
    fleet.session_started(home, info(home, replicas={"r1": R.RUNNING}), now=59.0, wall=WALL)
    assert fleet.next_reschedule_at() is None
    assert fleet.reschedule_due(1000.0) == ([], [])
    assert fleet.replica("r1") == msgspec.structs.replace(replica, status=ReplicaPhase.RUNNING)


def test_disconnect_is_offline_at_once_and_keeps_the_hold(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.drain("a")
    fleet.disconnect("a")
    node = fleet.node("a")
    assert node is not None
    assert (node.status, node.state.hold) == (Status.OFFLINE, Hold.MAINTENANCE)


# --- scheduling -----------------------------------------------------------------------


def test_deploy_goes_to_an_online_node_with_enough_free_assignable_gpus(fleet: Fleet) -> None:
    add_node(fleet, "small", gpus=1)
    add_node(fleet, "big", gpus=4)
    add_node(fleet, "degraded", gpus=8, ready=False)
    replica, sends = fleet.deploy(deploy("r1", 3, MODEL="secret"))
    assert replica.node_id == "big"
    assert sends == [
        Send("big", Deploy(DeployPayload("r1", "ghcr.io/acme/llm:1.2", 3, {"MODEL": "secret"})))
    ]
    assert fleet.gpus_free("big") == 1
    with pytest.raises(NoCapacity, match="gpu_count"):
        fleet.deploy(deploy("r2", 2))
    assert fleet.replica("r2") is None


def test_only_vfio_gpus_with_an_iommu_group_count(fleet: Fleet) -> None:
    fleet.register("a", RegisterPayload("0.1.0", hardware(1, other_driver=3), []), now=0, wall=WALL)
    payload = msgspec.structs.replace(info("a"), hardware=hardware(1, other_driver=3))
    fleet.session_started("a", payload, now=0.0, wall=WALL)
    assert fleet.gpus_free("a") == 1


def test_spreads_by_free_gpus_then_replica_count(fleet: Fleet) -> None:
    add_node(fleet, "a", gpus=0)
    add_node(fleet, "b", gpus=0)
    placed = [fleet.deploy(deploy(f"r{i}", 0))[0].node_id for i in range(4)]
    assert placed == ["a", "b", "a", "b"]


def test_replica_id_is_unique_for_ever(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 0))
    fleet.stop("r1")
    fleet.stop_result("a", ok("r1", R.STOPPED))
    with pytest.raises(ReplicaExists):
        fleet.deploy(deploy("r1", 0))


def test_gpus_free_on_stop_confirmation_or_exit(fleet: Fleet) -> None:
    add_node(fleet, "a", gpus=2)
    fleet.deploy(deploy("r1", 1))
    fleet.deploy(deploy("r2", 1))
    fleet.deploy_result("a", ok("r1"))
    assert fleet.gpus_free("a") == 0
    fleet.stop("r1")
    assert fleet.gpus_free("a") == 0  # stopping still holds it
    fleet.stop_result("a", ok("r1", R.STOPPED))
    assert fleet.gpus_free("a") == 1
    fleet.heartbeat("a", [ReplicaReport("r2", R.FAILED)])
    assert fleet.gpus_free("a") == 2
    replica = fleet.replica("r2")
    assert replica is not None
    assert replica.status is ReplicaPhase.FAILED


def test_failed_deploy_result_keeps_the_agents_error(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.deploy_result("a", ResultPayload("r1", R.FAILED, "image not found: x"))
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.status, replica.error) == (ReplicaPhase.FAILED, "image not found: x")


# --- commands -------------------------------------------------------------------------


def test_unanswered_commands_are_resent_on_resume_and_answered_ones_never(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.deploy(deploy("r2", 1))
    fleet.deploy_result("a", ok("r1"))
    fleet.disconnect("a")
    sends = fleet.session_started("a", info("a"), now=1.0, wall=WALL)
    assert [(type(s.message), s.message.payload.replica_id) for s in sends] == [(Deploy, "r2")]
    fleet.deploy_result("a", ok("r2"))
    fleet.disconnect("a")
    assert fleet.session_started("a", info("a"), now=2.0, wall=WALL) == []


def test_commands_for_an_offline_node_wait_for_its_return(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.deploy_result("a", ok("r1"))
    fleet.disconnect("a")
    replica, sends = fleet.stop("r1")
    assert sends == []
    assert replica.status is ReplicaPhase.STOPPING
    resent = fleet.session_started("a", info("a", replicas={"r1": R.RUNNING}), now=1, wall=WALL)
    assert resent == [Send("a", Stop(StopPayload("r1")))]


def test_a_later_command_replaces_the_unanswered_one(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.stop("r1")
    assert [(c.replica_id, c.kind) for c in fleet.pending_commands("a")] == [
        ("r1", CommandKind.STOP)
    ]
    # The deploy's late answer clears nothing and does not undo the stop.
    fleet.deploy_result("a", ok("r1"))
    assert [c.kind for c in fleet.pending_commands("a")] == [CommandKind.STOP]
    replica = fleet.replica("r1")
    assert replica is not None
    assert replica.status is ReplicaPhase.STOPPING
    fleet.stop_result("a", ok("r1", R.STOPPED))
    assert fleet.pending_commands() == []
    replica = fleet.replica("r1")
    assert replica is not None
    assert replica.status is ReplicaPhase.STOPPED


def test_results_for_unknown_replicas_are_ignored(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.take_changes()
    assert fleet.deploy_result("a", ok("ghost")) == []
    assert fleet.stop_result("a", ok("ghost", R.STOPPED)) == []
    assert fleet.heartbeat("a", [ReplicaReport("ghost", R.RUNNING)]) == []
    assert fleet.take_changes().empty


def test_stopping_a_waiting_replica_needs_no_node(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 2))
    fleet.disconnect("a")
    fleet.reschedule_due(60.0)
    replica, sends = fleet.stop("r1")
    assert (replica.node_id, replica.status, sends) == (None, ReplicaPhase.STOPPED, [])
    with pytest.raises(UnknownReplica):
        fleet.stop("nope")


def test_failed_stop_keeps_the_gpus_and_the_stop_for_the_next_session(fleet: Fleet) -> None:
    add_node(fleet, "a", gpus=1)
    fleet.deploy(deploy("r1", 1))
    fleet.deploy_result("a", ok("r1"))
    fleet.stop("r1")
    fleet.take_changes()
    error = "nerdctl rm replica-r1: timed out after 30 s"
    assert fleet.stop_result("a", ResultPayload("r1", R.FAILED, error)) == []
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.status, replica.error) == (ReplicaPhase.STOPPING, error)
    assert fleet.gpus_free("a") == 0  # the container may still run
    changes = fleet.take_changes()
    assert [r.error for r in changes.replicas] == [error]
    assert changes.commands_deleted == []
    assert [(c.replica_id, c.kind) for c in fleet.pending_commands("a")] == [
        ("r1", CommandKind.STOP)
    ]
    # Still running per its heartbeat: the stop's answer decides, not the report.
    fleet.heartbeat("a", [ReplicaReport("r1", R.RUNNING)])
    assert fleet.gpus_free("a") == 0
    fleet.disconnect("a")
    again = info("a", gpus=1, replicas={"r1": R.RUNNING})
    assert fleet.session_started("a", again, now=1, wall=WALL) == [
        Send("a", Stop(StopPayload("r1")))
    ]
    fleet.stop_result("a", ok("r1", R.STOPPED))
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.status, replica.error) == (ReplicaPhase.STOPPED, None)
    assert fleet.gpus_free("a") == 1
    assert fleet.pending_commands() == []


def test_failed_stop_without_an_error_text_says_so(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.stop("r1")
    fleet.stop_result("a", ResultPayload("r1", R.FAILED))
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.status, replica.error) == (ReplicaPhase.STOPPING, "stop failed")


def test_failed_stop_of_a_duplicate_is_sent_again_on_return(fleet: Fleet) -> None:
    add_node(fleet, "a", gpus=2)
    fleet.deploy(deploy("r1", 2))
    fleet.deploy_result("a", ok("r1"))
    fleet.disconnect("a")
    add_node(fleet, "b", gpus=2, now=30.0)
    fleet.reschedule_due(60.0)
    sends = fleet.session_started("a", info("a", replicas={"r1": R.RUNNING}), now=61, wall=WALL)
    assert sends == [Send("a", Stop(StopPayload("r1")))]
    fleet.stop_result("a", ResultPayload("r1", R.FAILED, "timed out"))
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.node_id, replica.status, replica.error) == ("b", ReplicaPhase.PENDING, None)
    fleet.disconnect("a")
    sends = fleet.session_started("a", info("a", replicas={"r1": R.RUNNING}), now=62, wall=WALL)
    assert sends == [Send("a", Stop(StopPayload("r1")))]


# --- reconciling with the node's own list ---------------------------------------------


def test_replicas_missing_from_system_info_fail_and_free_their_gpus(fleet: Fleet) -> None:
    add_node(fleet, "a", gpus=2)
    fleet.deploy(deploy("gone", 1))
    fleet.deploy(deploy("kept", 1))
    fleet.deploy_result("a", ok("gone"))
    fleet.deploy_result("a", ok("kept"))
    assert fleet.gpus_free("a") == 0
    fleet.disconnect("a")
    fleet.take_changes()
    fleet.session_started("a", info("a", replicas={"kept": R.RUNNING}), now=1, wall=WALL)
    gone, kept = fleet.replica("gone"), fleet.replica("kept")
    assert gone is not None
    assert kept is not None
    assert (gone.status, gone.error) == (ReplicaPhase.FAILED, "not reported by node")
    assert kept.status is ReplicaPhase.RUNNING
    assert fleet.gpus_free("a") == 1
    assert "gone" in [r.replica_id for r in fleet.take_changes().replicas]
    # A later report of it running takes it back.
    fleet.heartbeat("a", [ReplicaReport("gone", R.RUNNING), ReplicaReport("kept", R.RUNNING)])
    gone = fleet.replica("gone")
    assert gone is not None
    assert gone.status is ReplicaPhase.RUNNING
    assert fleet.gpus_free("a") == 0


def test_unreported_replica_with_a_deploy_unanswered_is_left_alone(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))  # sent, not answered yet
    fleet.disconnect("a")
    sends = fleet.session_started("a", info("a"), now=1, wall=WALL)
    assert [type(s.message) for s in sends] == [Deploy]
    replica = fleet.replica("r1")
    assert replica is not None
    assert replica.status is ReplicaPhase.PENDING
    assert fleet.gpus_free("a") == 1


def test_unreported_stopping_and_ended_replicas_are_left_to_their_answers(
    fleet: Fleet,
) -> None:
    add_node(fleet, "a", gpus=2)
    fleet.deploy(deploy("stopping", 1))
    fleet.deploy(deploy("exited", 1))
    fleet.deploy_result("a", ok("stopping"))
    fleet.deploy_result("a", ok("exited", R.EXITED))
    fleet.stop("stopping")
    fleet.disconnect("a")
    sends = fleet.session_started("a", info("a"), now=1, wall=WALL)
    assert sends == [Send("a", Stop(StopPayload("stopping")))]
    statuses = [(r.replica_id, r.status, r.error) for r in fleet.replicas()]
    assert statuses == [
        ("exited", ReplicaPhase.EXITED, None),
        ("stopping", ReplicaPhase.STOPPING, None),
    ]


def test_a_heartbeat_missing_a_running_replica_fails_it(fleet: Fleet) -> None:
    # A heartbeat's list is complete (PROTOCOL.md section 5), as at a reconnect.
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.deploy(deploy("r2", 1))  # its deploy is still in flight: not touched
    fleet.deploy_result("a", ok("r1"))
    fleet.take_changes()
    assert fleet.heartbeat("a", []) == []
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.status, replica.error) == (ReplicaPhase.FAILED, "not reported by node")
    assert fleet.gpus_free("a") == 1  # r1's GPU is free, r2 still holds one
    r2 = fleet.replica("r2")
    assert r2 is not None
    assert r2.status is ReplicaPhase.PENDING
    assert [r.replica_id for r in fleet.take_changes().replicas] == ["r1"]


def test_a_draining_node_whose_last_replica_went_unreported_is_maintenance(
    fleet: Fleet,
) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.deploy_result("a", ok("r1"))
    fleet.drain("a")
    fleet.disconnect("a")
    fleet.session_started("a", info("a"), now=1, wall=WALL)
    assert node_of(fleet, "a").status is Status.MAINTENANCE


# --- rescheduling and duplicates ------------------------------------------------------


def test_moved_replica_waits_without_room_then_lands_when_a_node_comes(fleet: Fleet) -> None:
    add_node(fleet, "a", gpus=2)
    fleet.deploy(deploy("r1", 2))
    fleet.deploy_result("a", ok("r1"))
    fleet.disconnect("a")
    moves, sends = fleet.reschedule_due(60.0)
    assert [(m.to_node, sends) for m in moves] == [(None, [])]
    # The pending deploy to the old node is gone: it must not start it on return.
    assert fleet.pending_commands("a") == []
    sends = add_node(fleet, "b", gpus=2, now=70.0)
    assert [(s.node_id, type(s.message)) for s in sends] == [("b", Deploy)]
    replica = fleet.replica("r1")
    assert replica is not None
    assert replica.node_id == "b"


def test_old_node_returning_with_the_moved_replica_gets_a_stop(fleet: Fleet) -> None:
    add_node(fleet, "a")
    add_node(fleet, "b", gpus=1)
    fleet.deploy(deploy("r1", 2))  # only "a" has two
    fleet.deploy_result("a", ok("r1"))
    fleet.disconnect("a")
    add_node(fleet, "c", gpus=2, now=30.0)
    fleet.reschedule_due(60.0)
    replica = fleet.replica("r1")
    assert replica is not None
    assert replica.node_id == "c"
    sends = fleet.session_started("a", info("a", replicas={"r1": R.RUNNING}), now=61, wall=WALL)
    assert [(s.node_id, type(s.message), s.message.payload.replica_id) for s in sends] == [
        ("a", Stop, "r1")
    ]
    # Its late deploy_result neither moves the replica back nor repeats the stop.
    assert fleet.deploy_result("a", ok("r1")) == []
    assert fleet.heartbeat("a", [ReplicaReport("r1", R.RUNNING)]) == []
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.node_id, replica.status) == ("c", ReplicaPhase.PENDING)
    # Its stop_result does not stop the new copy.
    fleet.stop_result("a", ok("r1", R.STOPPED))
    replica = fleet.replica("r1")
    assert replica is not None
    assert replica.status is ReplicaPhase.PENDING
    assert fleet.pending_commands("a") == []


def waiting_replica_off(fleet: Fleet, node_id: str, *, gpu_count: int = 1) -> None:
    """``r1`` ran on ``node_id``, which went out of contact; no room elsewhere: it waits."""
    add_node(fleet, node_id, gpus=2)
    fleet.deploy(deploy("r1", gpu_count))
    fleet.deploy_result(node_id, ok("r1"))
    fleet.disconnect(node_id)
    moves, _ = fleet.reschedule_due(60.0)
    assert [m.to_node for m in moves] == [None]
    fleet.take_changes()


@pytest.mark.parametrize("status", [R.RUNNING, R.PENDING])
def test_old_node_returning_with_a_waiting_replica_keeps_it(
    fleet: Fleet, status: ReplicaStatus
) -> None:
    waiting_replica_off(fleet, "a", gpu_count=2)
    sends = fleet.session_started("a", info("a", replicas={"r1": status}), now=61, wall=WALL)
    assert sends == []  # no stop, no deploy: the workload runs on
    assert fleet.pending_commands() == []
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.node_id, replica.status) == ("a", ReplicaPhase(status.value))
    assert fleet.gpus_free("a") == 0
    assert [r.replica_id for r in fleet.take_changes().replicas] == ["r1"]
    # Nothing left waiting: a node that comes later gets no deploy for it.
    assert add_node(fleet, "b", gpus=2, now=70.0) == []


def test_a_copy_already_told_to_stop_is_not_kept(fleet: Fleet) -> None:
    # r1 runs on a; a goes silent and r1 moves to b.
    add_node(fleet, "a", gpus=2)
    fleet.deploy(deploy("r1", 2))
    fleet.deploy_result("a", ok("r1"))
    fleet.disconnect("a")
    add_node(fleet, "b", gpus=2, now=30.0)
    moves, _ = fleet.reschedule_due(60.0)
    assert [m.to_node for m in moves] == ["b"]
    fleet.deploy_result("b", ok("r1"))
    # a returns still running its copy: told to stop it, it drops before answering.
    sends = fleet.session_started("a", info("a", replicas={"r1": R.RUNNING}), now=61, wall=WALL)
    assert [type(s.message) for s in sends] == [Stop]
    fleet.disconnect("a")
    # b goes silent with no room anywhere: r1 waits.
    fleet.disconnect("b")
    moves, _ = fleet.reschedule_due(200.0)
    assert [m.to_node for m in moves] == [None]
    # a returns again, its copy still running: the stop may already be on its
    # way, so the copy is not kept as the replica; r1 is deployed there anew.
    sends = fleet.session_started("a", info("a", replicas={"r1": R.RUNNING}), now=201, wall=WALL)
    assert any(isinstance(s.message, Deploy) for s in sends)
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.node_id, replica.status) == ("a", ReplicaPhase.PENDING)
    fleet.stop_result("a", ok("r1", R.STOPPED))
    fleet.deploy_result("a", ok("r1"))
    fleet.heartbeat("a", [ReplicaReport("r1", R.RUNNING)])
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.node_id, replica.status) == ("a", ReplicaPhase.RUNNING)


def test_an_agent_error_never_keeps_an_env_value(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1, PASSWORD="hunter2-secret", SHORT="hunter2"))
    fleet.deploy_result("a", ResultPayload("r1", R.FAILED, "exec failed: hunter2-secret: no"))
    replica = fleet.replica("r1")
    assert replica is not None
    assert replica.error == "exec failed: <redacted>: no"


@pytest.mark.parametrize("why", ["maintenance", "drain", "degraded", "gpus"])
def test_old_node_that_cannot_take_a_waiting_replica_stops_it(fleet: Fleet, why: str) -> None:
    waiting_replica_off(fleet, "a", gpu_count=2)
    if why == "maintenance":
        fleet.maintenance("a")
    elif why == "drain":
        fleet.drain("a")
    gpus = 1 if why == "gpus" else 2
    report = info("a", gpus=gpus, ready=why != "degraded", replicas={"r1": R.RUNNING})
    sends = fleet.session_started("a", report, now=61, wall=WALL)
    assert [(s.node_id, type(s.message)) for s in sends] == [("a", Stop)]
    replica = fleet.replica("r1")
    assert replica is not None
    assert (replica.node_id, replica.status) == (None, ReplicaPhase.PENDING)
    # Its GPUs are not counted as held by the replica it is told to stop.
    assert fleet.gpus_free("a") == gpus


def test_stopping_replicas_stay_with_their_node(fleet: Fleet) -> None:
    add_node(fleet, "a")
    add_node(fleet, "b")
    replica, _ = fleet.deploy(deploy("r1", 1))
    assert replica.node_id is not None
    fleet.stop("r1")
    fleet.disconnect(replica.node_id)
    assert fleet.next_reschedule_at() is None
    assert fleet.reschedule_due(1000.0) == ([], [])


# --- drain, maintenance, resume -------------------------------------------------------


def test_drain_waits_for_replicas_then_maintenance_and_resume(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.deploy_result("a", ok("r1"))
    node, _ = fleet.drain("a")
    assert node.status is Status.DRAINING
    with pytest.raises(NoCapacity):
        fleet.deploy(deploy("r2", 0))
    fleet.heartbeat("a", [ReplicaReport("r1", R.RUNNING)])
    assert node_of(fleet, "a").status is Status.DRAINING
    fleet.stop("r1")
    fleet.stop_result("a", ok("r1", R.STOPPED))
    assert node_of(fleet, "a").status is Status.MAINTENANCE
    node, sends = fleet.drain("a")  # a no-op: drain never loosens maintenance
    assert (node.status, node.state.hold, sends) == (Status.MAINTENANCE, Hold.MAINTENANCE, [])
    node, _ = fleet.resume("a")
    assert (node.status, node.state.hold) == (Status.ONLINE, None)


def test_drain_of_an_empty_node_is_maintenance_at_once(fleet: Fleet) -> None:
    add_node(fleet, "a")
    node, _ = fleet.drain("a")
    assert (node.status, node.state.hold) == (Status.MAINTENANCE, Hold.MAINTENANCE)


def test_exited_replica_ends_a_drain(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.deploy(deploy("r1", 1))
    fleet.drain("a")
    fleet.heartbeat("a", [ReplicaReport("r1", R.EXITED)])
    node = fleet.node("a")
    assert node is not None
    assert node.status is Status.MAINTENANCE


def test_holds_apply_to_offline_nodes_and_on_reconnect(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.disconnect("a")
    node, _ = fleet.maintenance("a")
    assert (node.status, node.state.hold) == (Status.OFFLINE, Hold.MAINTENANCE)
    fleet.session_started("a", info("a"), now=1, wall=WALL)
    assert node_of(fleet, "a").status is Status.MAINTENANCE
    node, _ = fleet.resume("a")
    assert node.status is Status.ONLINE
    with pytest.raises(UnknownNode):
        fleet.drain("nope")


def test_drain_keeps_the_maintenance_hold_of_an_offline_node(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.maintenance("a")
    fleet.disconnect("a")
    node, _ = fleet.drain("a")
    assert (node.status, node.state.hold) == (Status.OFFLINE, Hold.MAINTENANCE)
    fleet.session_started("a", info("a"), now=1, wall=WALL)
    assert node_of(fleet, "a").status is Status.MAINTENANCE


def test_resume_of_a_node_with_failed_deps_is_degraded(fleet: Fleet) -> None:
    add_node(fleet, "a", ready=False)
    fleet.maintenance("a")
    node, _ = fleet.resume("a")
    assert node.status is Status.DEGRADED


def test_resume_places_waiting_replicas(fleet: Fleet) -> None:
    add_node(fleet, "a", gpus=1)
    add_node(fleet, "b", gpus=1)
    fleet.maintenance("b")
    fleet.deploy(deploy("r1", 1))
    fleet.disconnect("a")
    moves, _ = fleet.reschedule_due(60.0)
    assert moves[0].to_node is None
    _, sends = fleet.resume("b")
    assert [s.node_id for s in sends] == ["b"]


# --- sessions -------------------------------------------------------------------------


def test_system_info_sets_status_by_ready(fleet: Fleet) -> None:
    add_node(fleet, "a", ready=False)
    node = fleet.node("a")
    assert node is not None
    assert node.status is Status.DEGRADED
    fleet.session_started("a", info("a", ready=True), now=1, wall=WALL)
    node = fleet.node("a")
    assert node is not None
    assert node.status is Status.ONLINE
    fleet.disconnect("a")
    with pytest.raises(NoCapacity):
        fleet.deploy(deploy("r1", 0))


def test_newer_session_replaces_a_connected_one(fleet: Fleet) -> None:
    add_node(fleet, "a")
    fleet.session_started("a", info("a"), now=1, wall=WALL)
    assert fleet.is_connected("a")
    node = fleet.node("a")
    assert node is not None
    assert node.status is Status.ONLINE


def test_system_info_for_another_node_is_refused(fleet: Fleet) -> None:
    add_node(fleet, "a")
    with pytest.raises(WrongNode):
        fleet.session_started("a", info("b"), now=1, wall=WALL)


# --- persistence ----------------------------------------------------------------------


def test_changes_name_what_to_write(fleet: Fleet) -> None:
    add_node(fleet, "a")
    changes = fleet.take_changes()
    assert [n.node_id for n in changes.nodes] == ["a"]
    fleet.deploy(deploy("r1", 1, TOKEN="s3cret"))
    changes = fleet.take_changes()
    assert [r.replica_id for r in changes.replicas] == ["r1"]
    assert [(c.node_id, c.replica_id, c.kind) for c in changes.commands_put] == [
        ("a", "r1", CommandKind.DEPLOY)
    ]
    fleet.deploy_result("a", ok("r1"))
    changes = fleet.take_changes()
    assert changes.commands_deleted == [("a", "r1")]
    assert fleet.take_changes().empty
    assert "s3cret" not in repr(fleet.replica("r1"))


def test_snapshot_restores_nodes_offline_with_a_fresh_deadline() -> None:
    node = NodeRecord("a", Node(Status.ONLINE, None, True), hardware=hardware(2), ready=True)
    replica = ReplicaRecord("r1", "img", 1, {"K": "v"}, "a", ReplicaPhase.RUNNING)
    command = PendingCommand("a", "r1", CommandKind.STOP, 7)
    fleet = Fleet(LivenessPolicy(60.0), FleetSnapshot([node], [replica], [command]), now=1000.0)
    loaded = fleet.node("a")
    assert loaded is not None
    assert loaded.status is Status.OFFLINE
    assert not fleet.is_connected("a")
    assert fleet.liveness_deadline("a") == 1060.0
    assert fleet.next_reschedule_at() == 1060.0
    assert [n.node_id for n in fleet.take_changes().nodes] == ["a"]
    sends = fleet.session_started("a", info("a", replicas={"r1": R.RUNNING}), now=1001, wall=WALL)
    assert [type(s.message) for s in sends] == [Stop]
    # Sequence numbers continue after the loaded ones.
    fleet.deploy(deploy("r2", 0))
    assert max(c.seq for c in fleet.pending_commands()) == 8


# --- the parts: command ledger, placement, readiness -------------------------------------


def test_the_ledger_keeps_one_command_per_node_and_replica() -> None:
    ledger = CommandLedger([PendingCommand("a", "r0", CommandKind.STOP, 7)])
    deploy_r1 = ledger.record("a", "r1", CommandKind.DEPLOY)
    assert deploy_r1.seq == 8  # numbering goes on from what was loaded
    stop_r1 = ledger.record("a", "r1", CommandKind.STOP)  # replaces the deploy
    ledger.record("b", "r1", CommandKind.DEPLOY)
    assert ledger.pending("a") == [PendingCommand("a", "r0", CommandKind.STOP, 7), stop_r1]
    assert [c.node_id for c in ledger.pending()] == ["a", "a", "b"]
    ledger.clear("a", "r1", CommandKind.DEPLOY)  # a late deploy answer clears no stop
    assert ledger.awaits("a", "r1", CommandKind.STOP)
    ledger.clear("a", "r1", CommandKind.STOP)
    assert ("a", "r1") not in ledger
    put, deleted = ledger.take_changes()
    assert [c.key for c in put] == [("b", "r1")]
    assert deleted == [("a", "r1")]
    assert ledger.take_changes() == ([], [])


def test_a_command_becomes_its_frame() -> None:
    replica = ReplicaRecord("r1", "img:1", 2, {"K": "v"}, "a")
    deploy_cmd = PendingCommand("a", "r1", CommandKind.DEPLOY, 1)
    assert message_for(deploy_cmd, replica) == Deploy(DeployPayload("r1", "img:1", 2, {"K": "v"}))
    stop_cmd = PendingCommand("a", "r9", CommandKind.STOP, 2)
    assert message_for(stop_cmd, None) == Stop(StopPayload("r9"))
    with pytest.raises(ValueError, match="r1"):
        message_for(deploy_cmd, None)


def test_placement_prefers_free_gpus_then_fewer_replicas_then_the_lower_id() -> None:
    inventory = Inventory()
    online = Node(Status.ONLINE, None, True)
    for node_id in ("c", "b", "a"):
        inventory.set_node(NodeRecord(node_id, online, hardware=hardware(4)))
    inventory.set_node(
        NodeRecord("held", Node(Status.DRAINING, Hold.DRAIN, True), hardware=hardware(8))
    )
    assert placement.pick_node(inventory, ["c", "b", "a", "held"], 1) == "a"
    inventory.set_replica(ReplicaRecord("r1", "img", 1, node_id="a"))
    inventory.set_replica(ReplicaRecord("r2", "img", 0, node_id="b"))
    assert placement.gpus_free(inventory, "a") == 3
    assert placement.pick_node(inventory, ["a", "b", "c"], 1) == "c"  # b and c: 4 free, c empty
    assert placement.room_for(inventory, "held", 1) is None  # drain takes no deploys
    assert placement.pick_node(inventory, ["a", "b", "c"], 5) is None
    assert placement.gpus_free(inventory, "unknown") == 0


def test_readiness_is_every_dependency_ok() -> None:
    good, bad = sample_report(ready=True).dependencies, sample_report(ready=False).dependencies
    assert is_ready(good)
    assert not is_ready(bad)
    assert is_ready([])
