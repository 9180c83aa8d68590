"""Replica truth on the agent: own vs foreign containers, exit reasons, vanished containers."""

from __future__ import annotations

import pytest

from vectorlay.domain.agent.exits import REMOVED_OUTSIDE, exit_reason, signal_name
from vectorlay.domain.agent.ownership import ForeignContainer, is_own
from vectorlay.domain.agent.replicas import (
    ContainerState,
    GpuSlot,
    ReplicaTable,
    ReportResult,
    StartContainer,
)
from vectorlay.domain.messages import DeployPayload, ReplicaReport
from vectorlay.domain.messages import ReplicaStatus as RS

SLOTS = [GpuSlot(f"0000:{0x17 + i:02x}:00.0", str(25 + i)) for i in range(4)]
ADDR = [s.pci_address for s in SLOTS]


def state(
    rid: str,
    node: str | None,
    gpus: tuple[str, ...] = (),
    status: RS = RS.RUNNING,
    code: int | None = None,
    *,
    oom: bool = False,
) -> ContainerState:
    return ContainerState(rid, status, code, gpus, "nginx:1.25", node, oom)


@pytest.mark.parametrize(
    ("label", "node", "own"),
    [
        (None, "node-a", True),  # made before the label existed
        ("", "node-a", True),
        ("node-a", "node-a", True),
        ("node-b", "node-a", False),
        ("node-a", None, False),  # not registered yet: no labelled container is ours
        (None, None, True),
    ],
)
def test_is_own(label: str | None, node: str | None, own: bool) -> None:
    assert is_own(label, node) is own


def test_adoption_takes_own_and_unlabelled_containers_only() -> None:
    states = [
        state("mine", "node-a", (ADDR[0],)),
        state("legacy", None, (ADDR[1],)),
        state("theirs", "node-b", (ADDR[2],)),
        state("theirs-ended", "node-b", (ADDR[3],), RS.EXITED, 0),
    ]
    table = ReplicaTable.adopt(SLOTS, states, node_id="node-a")
    assert [r.replica_id for r in table.replicas()] == ["legacy", "mine"]
    assert table.foreign == {
        "theirs": ForeignContainer("theirs", "node-b", (ADDR[2],)),
        "theirs-ended": ForeignContainer("theirs-ended", "node-b", (ADDR[3],)),
    }
    # The foreign containers' GPUs are not handed out while they exist.
    assert table.free_slots() == []
    assert set(table.foreign_gpus()) == {ADDR[2], ADDR[3]}
    assert "replica-theirs of node node-b" in table.foreign_gpus()[ADDR[2]]
    refused = table.deploy(DeployPayload("new", "nginx:1.25", gpu_count=1))
    assert isinstance(refused, ReportResult)
    assert refused.status is RS.FAILED
    # Once the foreign container is gone, its GPU is free again.
    table.observe([s for s in states if s.replica_id != "theirs"])
    assert table.free_slots() == [SLOTS[2]]


def test_a_fresh_identity_adopts_no_labelled_container() -> None:
    table = ReplicaTable.adopt(SLOTS, [state("r1", "node-a", (ADDR[0],))], node_id=None)
    assert table.replicas() == []
    assert table.reports() == []
    assert list(table.foreign) == ["r1"]
    # Nor is a stop for it carried out: the other agent owns that container.
    assert table.stop("r1") == ReportResult("r1", RS.STOPPED)


def test_deploys_carry_the_node_label_and_refuse_to_adopt_a_foreign_container() -> None:
    table = ReplicaTable(SLOTS, node_id="node-a")
    decision = table.deploy(DeployPayload("r1", "nginx:1.25", gpu_count=1))
    assert isinstance(decision, StartContainer)
    assert decision.spec.node_id == "node-a"
    # The name was taken by another identity's container: not this replica.
    result = table.adopted(state("r1", "node-b", (ADDR[3],)))
    assert result.status is RS.FAILED
    assert result.error == "container replica-r1 belongs to node node-b"
    assert table.held() == {}


def test_a_running_replica_whose_container_vanishes_fails_with_the_reason() -> None:
    table = ReplicaTable.adopt(SLOTS, [state("r1", "node-a", (ADDR[0],))], node_id="node-a")
    assert table.held() == {ADDR[0]: "r1"}
    assert table.observe([]) is True
    assert table.reports() == [ReplicaReport("r1", RS.FAILED, error=REMOVED_OUTSIDE)]
    assert table.held() == {}
    assert table.observe([]) is False


def test_ended_replicas_report_exit_code_and_reason() -> None:
    table = ReplicaTable.adopt(
        SLOTS,
        [
            state("killed", None, (ADDR[0],), RS.FAILED, 137),
            state("oom", None, (ADDR[1],), RS.FAILED, 137, oom=True),
            state("clean", None, (), RS.EXITED, 0),
            state("crash", None, (), RS.FAILED, 2),
        ],
    )
    assert table.reports() == [
        ReplicaReport("clean", RS.EXITED, exit_code=0, error=None),
        ReplicaReport("crash", RS.FAILED, exit_code=2, error="container exited with code 2"),
        ReplicaReport(
            "killed",
            RS.FAILED,
            exit_code=137,
            error="container exited with code 137 (killed by SIGKILL)",
        ),
        ReplicaReport(
            "oom",
            RS.FAILED,
            exit_code=137,
            error="container exited with code 137 (killed: out of memory)",
        ),
    ]


def test_an_oom_noticed_after_the_exit_updates_the_reason() -> None:
    table = ReplicaTable.adopt(SLOTS, [state("r", None, (), RS.RUNNING)])
    assert table.observe([state("r", None, (), RS.FAILED, 137)]) is True
    assert table.observe([state("r", None, (), RS.FAILED, 137, oom=True)]) is True
    assert table.reports()[0].error == "container exited with code 137 (killed: out of memory)"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (137, "SIGKILL"),
        (143, "SIGTERM"),
        (139, "SIGSEGV"),
        (134, "SIGABRT"),
        (128, None),
        (1, None),
        (255, None),
        (162, "SIGRTMIN+0"),
    ],
)
def test_signal_names(code: int, name: str | None) -> None:
    assert signal_name(code) == name


def test_exit_reason() -> None:
    assert exit_reason(0) is None
    assert exit_reason(143) == "container exited with code 143 (killed by SIGTERM)"
    assert exit_reason(None) is not None
