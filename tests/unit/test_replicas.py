"""Replica table and GPU ledger: deploy/stop decisions, observation, exclusivity."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vectorlay.domain.agent.replicas import (
    ContainerSpec,
    ContainerState,
    GpuSlot,
    ReplicaTable,
    ReportResult,
    StartContainer,
    StopContainer,
    assignable_slots,
    container_name,
)
from vectorlay.domain.messages import DeployPayload, Gpu, ReplicaReport
from vectorlay.domain.messages import ReplicaStatus as RS

SECRET = "Tr0ub4dor-secret"
SLOTS = [GpuSlot(f"0000:{0x17 + i:02x}:00.0", str(25 + i)) for i in range(4)]
ADDR = [s.pci_address for s in SLOTS]


def payload(rid: str = "r1", gpus: int = 0, image: str = "nginx:1.25", **env: str) -> DeployPayload:
    return DeployPayload(rid, image, gpus, dict(env))


def start(table: ReplicaTable, rid: str, gpus: int = 0) -> StartContainer:
    decision = table.deploy(payload(rid, gpus))
    assert isinstance(decision, StartContainer), decision
    return decision


def run(table: ReplicaTable, decision: StartContainer) -> ContainerState:
    """What the runtime reports after starting ``decision`` successfully."""
    spec = decision.spec
    state = ContainerState(
        spec.replica_id, RS.RUNNING, gpus=tuple(g.pci_address for g in spec.gpus), image=spec.image
    )
    assert table.started(state) == ReportResult(spec.replica_id, RS.RUNNING, gpus=state.gpus)
    return state


# --- helpers and specs ----------------------------------------------------------


def test_container_name() -> None:
    assert container_name("abc-123") == "replica-abc-123"
    assert ContainerSpec("abc-123", "nginx").name == "replica-abc-123"


def test_assignable_slots_are_vfio_gpus_with_a_group_sorted_by_address() -> None:
    def gpu(addr: str, driver: str | None, group: str | None) -> Gpu:
        return Gpu(addr, "nvidia", "10de", "2330", "H100", driver, group)

    gpus = [
        gpu("0000:b1:00.0", "vfio-pci", "40"),
        gpu("0000:17:00.0", "vfio-pci", "25"),
        gpu("0000:31:00.0", "nvidia", "30"),  # host driver: reported, never assigned
        gpu("0000:41:00.0", None, None),
        gpu("0000:51:00.0", "vfio-pci", None),  # no IOMMU group: cannot pass through
        gpu("0000:61:00.0", "vfio-pci", ""),
    ]
    assert assignable_slots(gpus) == [
        GpuSlot("0000:17:00.0", "25"),
        GpuSlot("0000:b1:00.0", "40"),
    ]


def test_container_spec_repr_hides_env_values() -> None:
    spec = ContainerSpec("r1", "nginx", (SLOTS[0],), {"TOKEN": SECRET})
    assert SECRET not in repr(spec)
    assert "TOKEN" in repr(spec)


# --- deploy decisions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (payload("-bad"), "deploy.payload.replica_id"),
        (payload("r1", image="Nginx;reboot"), "deploy.payload.image"),
        (payload("r1", image=""), "deploy.payload.image"),
        (payload("r1", gpus=-1), "deploy.payload.gpu_count"),
        (payload("r1", gpus=10**9), "deploy.payload.gpu_count"),
        (DeployPayload("r1", "nginx", True), "deploy.payload.gpu_count"),
        (DeployPayload("r1", "nginx", 0, {"BAD-NAME": "x"}), "deploy.payload.env_vars"),
        (payload("r1", API_KEY=f"{SECRET}\n"), "deploy.payload.env_vars.API_KEY"),
        (payload("r1", API_KEY=f" {SECRET}"), "deploy.payload.env_vars.API_KEY"),
        (payload("r1", API_KEY=f"{SECRET}\x00"), "deploy.payload.env_vars.API_KEY"),
    ],
)
def test_invalid_deploys_name_the_field_and_never_start(bad: DeployPayload, field: str) -> None:
    table = ReplicaTable(SLOTS)
    decision = table.deploy(bad)
    assert isinstance(decision, ReportResult)
    assert decision.replica_id == bad.replica_id
    assert decision.status is RS.FAILED
    assert decision.error is not None
    assert decision.error.startswith(f"{field}: ")
    assert SECRET not in decision.error
    assert table.get(bad.replica_id) is None
    assert table.free_slots() == SLOTS


def test_validation_is_reported_before_a_refusal() -> None:
    table = ReplicaTable(SLOTS)
    decision = table.deploy(payload("r1", image="BAD"), refusal="node is draining")
    assert isinstance(decision, ReportResult)
    assert decision.error is not None
    assert decision.error.startswith("deploy.payload.image: ")


@pytest.mark.parametrize("why", ["node is degraded", "node is draining"])
def test_refused_deploys_never_start(why: str) -> None:
    table = ReplicaTable(SLOTS)
    assert table.deploy(payload("r1", 1), refusal=why) == ReportResult("r1", RS.FAILED, why)
    assert table.get("r1") is None
    assert table.free_slots() == SLOTS


def test_not_enough_gpus() -> None:
    table = ReplicaTable(SLOTS)
    run(table, start(table, "r1", 3))
    decision = table.deploy(payload("r2", 2))
    assert decision == ReportResult("r2", RS.FAILED, "not enough free GPUs: 2 requested, 1 free")
    assert table.get("r2") is None
    assert ReplicaTable().deploy(payload("r3", 1)) == ReportResult(
        "r3", RS.FAILED, "not enough free GPUs: 1 requested, 0 free"
    )


def test_zero_gpu_deploys_need_no_gpu() -> None:
    table = ReplicaTable()
    decision = start(table, "cpu-only", 0)
    assert decision.spec.gpus == ()
    assert decision.replace is False


def test_start_carries_the_spec_and_reserves_gpus() -> None:
    table = ReplicaTable(SLOTS)
    decision = table.deploy(payload("r1", 2, "ghcr.io/acme/llm:1.2", MODEL="llama"))
    assert decision == StartContainer(
        ContainerSpec("r1", "ghcr.io/acme/llm:1.2", (SLOTS[0], SLOTS[1]), {"MODEL": "llama"})
    )
    # Reserved at once: a second deploy cannot take them while the first starts.
    assert table.get("r1") is not None
    assert table.held() == {ADDR[0]: "r1", ADDR[1]: "r1"}
    assert table.free_slots() == SLOTS[2:]


def test_lowest_free_gpu_first_and_freed_gpus_are_reused() -> None:
    table = ReplicaTable(list(reversed(SLOTS)))  # order of discovery does not matter
    assert start(table, "a", 1).spec.gpus == (SLOTS[0],)
    assert start(table, "b", 2).spec.gpus == (SLOTS[1], SLOTS[2])
    assert isinstance(table.stop("a"), StopContainer)
    assert table.stopped("a") == ReportResult("a", RS.STOPPED)
    assert start(table, "c", 2).spec.gpus == (SLOTS[0], SLOTS[3])


def test_repeat_deploy_of_a_live_replica_is_idempotent() -> None:
    table = ReplicaTable(SLOTS)
    first = start(table, "r1", 1)
    # While the start is still in flight the repeat says so, and starts nothing.
    held = (ADDR[0],)
    assert table.deploy(payload("r1", 1)) == ReportResult("r1", RS.PENDING, gpus=held)
    run(table, first)
    assert table.deploy(payload("r1", 1)) == ReportResult("r1", RS.RUNNING, gpus=held)
    # Even a repeat with different values never starts a second container.
    assert table.deploy(payload("r1", 3, "other:2")) == ReportResult("r1", RS.RUNNING, gpus=held)
    assert table.held() == {ADDR[0]: "r1"}


def test_redeploy_of_an_exited_replica_replaces_its_container() -> None:
    table = ReplicaTable(SLOTS)
    state = run(table, start(table, "r1", 1))
    assert table.observe([ContainerState("r1", RS.EXITED, 0, state.gpus, state.image)])
    assert table.free_slots() == SLOTS  # an exited replica holds no GPU
    decision = start(table, "r1", 2)
    assert decision.replace is True
    assert decision.spec.gpus == (SLOTS[0], SLOTS[1])


def test_redeploy_after_a_failed_start_replaces() -> None:
    table = ReplicaTable(SLOTS)
    start(table, "r1", 1)
    table.start_failed("r1", "image not found: nginx:1.25")
    assert start(table, "r1", 1).replace is True


def test_start_failed_frees_gpus_and_keeps_reporting_the_failure() -> None:
    table = ReplicaTable(SLOTS)
    start(table, "r1", 2)
    error = "image not found: nginx:1.25"
    assert table.start_failed("r1", error) == ReportResult("r1", RS.FAILED, error)
    assert table.free_slots() == SLOTS
    assert table.reports() == [ReplicaReport("r1", RS.FAILED)]
    # A failed start never had a container; observing the runtime keeps it.
    assert table.observe([]) is False
    assert table.reports() == [ReplicaReport("r1", RS.FAILED)]


# --- stop -------------------------------------------------------------------------


def test_stop_asks_the_runtime_even_for_unknown_replicas() -> None:
    table = ReplicaTable(SLOTS)
    assert table.stop("ghost") == StopContainer("ghost")
    assert table.stopped("ghost") == ReportResult("ghost", RS.STOPPED)


def test_stop_with_an_invalid_id_is_answered_without_the_runtime() -> None:
    decision = ReplicaTable().stop("../etc")
    assert isinstance(decision, ReportResult)
    assert decision.status is RS.FAILED
    assert decision.error is not None
    assert decision.error.startswith("stop.payload.replica_id: ")


def test_stopped_frees_gpus_and_forgets_the_replica() -> None:
    table = ReplicaTable(SLOTS)
    run(table, start(table, "r1", 4))
    assert table.free_slots() == []
    table.stopped("r1")
    assert table.get("r1") is None
    assert table.free_slots() == SLOTS
    assert table.reports() == []


# --- observe and adopt -------------------------------------------------------------


def test_adopt_rebuilds_the_table_from_observed_containers() -> None:
    states = [
        ContainerState("b", RS.RUNNING, None, (ADDR[1], ADDR[2]), "nginx"),
        ContainerState("a", RS.EXITED, 0, (ADDR[0],), "nginx"),
        ContainerState("c", RS.FAILED, 137, (ADDR[3],), "nginx"),
    ]
    table = ReplicaTable.adopt(SLOTS, states)
    assert table.reports() == [
        ReplicaReport("a", RS.EXITED),
        ReplicaReport("b", RS.RUNNING, [ADDR[1], ADDR[2]]),
        ReplicaReport("c", RS.FAILED),
    ]
    assert table.held() == {ADDR[1]: "b", ADDR[2]: "b"}
    assert table.free_slots() == [SLOTS[0], SLOTS[3]]
    # A new deploy never lands on an adopted replica's GPU.
    assert start(table, "d", 2).spec.gpus == (SLOTS[0], SLOTS[3])
    assert table.deploy(payload("b", 1)) == ReportResult("b", RS.RUNNING, gpus=(ADDR[1], ADDR[2]))


def test_observe_reports_exits_and_forgets_vanished_containers() -> None:
    table = ReplicaTable(SLOTS)
    a = run(table, start(table, "a", 1))
    b = run(table, start(table, "b", 1))
    assert table.observe([a, b]) is False  # nothing changed
    assert table.observe([ContainerState("a", RS.FAILED, 1, a.gpus, a.image), b]) is True
    assert table.get("a") is not None
    assert table.held() == {ADDR[1]: "b"}
    assert table.observe([b]) is True  # a's container was removed outside the agent
    assert table.get("a") is None


def test_observe_keeps_pending_and_busy_replicas() -> None:
    table = ReplicaTable(SLOTS)
    start(table, "starting", 1)  # no container yet
    b = run(table, start(table, "b", 1))
    assert table.observe([], busy=["b"]) is False
    assert table.get("starting") is not None
    assert table.get("b") is not None
    # A busy replica's listed state is not applied while its operation runs.
    assert table.observe([ContainerState("b", RS.EXITED, 0, b.gpus)], busy=["b"]) is False
    assert table.held() == {ADDR[0]: "starting", ADDR[1]: "b"}


def test_observe_adopts_unknown_containers_with_their_gpus() -> None:
    table = ReplicaTable(SLOTS)
    stray = ContainerState("stray", RS.RUNNING, None, (ADDR[2],), "nginx")
    assert table.observe([stray]) is True
    assert table.held() == {ADDR[2]: "stray"}
    assert start(table, "new", 3).spec.gpus == (SLOTS[0], SLOTS[1], SLOTS[3])


def test_set_slots_after_a_new_probe() -> None:
    table = ReplicaTable(SLOTS[:1])
    table.set_slots(SLOTS)
    assert table.free_slots() == SLOTS


def test_container_that_came_up_after_a_failed_start_is_not_double_assigned() -> None:
    table = ReplicaTable(SLOTS[:1])
    start(table, "a", 1)
    table.start_failed("a", "runtime timed out")  # the container may still come up
    b = run(table, start(table, "b", 1))
    late = ContainerState("a", RS.RUNNING, None, (ADDR[0],), "nginx")
    table.observe([late, b])
    assert table.double_assigned() == {}
    assert table.conflicts == {"a": (ADDR[0],)}


def test_start_finishing_after_a_stop_raced_it_claims_no_taken_gpu() -> None:
    table = ReplicaTable(SLOTS[:1])
    start(table, "a", 1)
    table.stopped("a")  # the stop was applied before the start finished
    run(table, start(table, "b", 1))
    table.started(ContainerState("a", RS.RUNNING, None, (ADDR[0],), "nginx"))
    assert table.double_assigned() == {}
    assert table.conflicts == {"a": (ADDR[0],)}


# --- random operation sequences -----------------------------------------------------

RIDS = ["r0", "r1", "r2", "r3", "r4"]


class LedgerMachine(RuleBasedStateMachine):
    """The table driven like the agent drives it, against a model runtime.

    Starts are decided, then succeed or fail; containers exit; stops run;
    the runtime is observed now and then, with in-flight starts busy.
    """

    def __init__(self) -> None:
        super().__init__()
        self.table = ReplicaTable(SLOTS)
        self.runtime: dict[str, ContainerState] = {}
        self.starting: dict[str, ContainerSpec] = {}

    @rule(rid=st.sampled_from(RIDS), gpus=st.integers(0, 5), refused=st.booleans())
    def deploy(self, rid: str, gpus: int, refused: bool) -> None:
        free_before = self.table.free_slots()
        before = self.table.get(rid)
        decision = self.table.deploy(
            payload(rid, gpus), refusal="node is draining" if refused else None
        )
        if isinstance(decision, StartContainer):
            assert not refused
            assert rid not in self.starting
            assert list(decision.spec.gpus) == free_before[:gpus]  # lowest first
            # A replica the table knew (exited, failed) may have a container to replace.
            assert decision.replace == (before is not None)
            assert decision.replace or rid not in self.runtime
            if decision.replace:
                self.runtime.pop(rid, None)
            self.starting[rid] = decision.spec
        else:
            live = self.table.get(rid)
            if live is None or live.status not in (RS.PENDING, RS.RUNNING):
                assert decision.status is RS.FAILED
                assert refused or gpus > len(free_before)

    @precondition(lambda self: bool(self.starting))
    @rule(data=st.data(), ok=st.booleans())
    def finish_start(self, data: st.DataObject, ok: bool) -> None:
        rid = data.draw(st.sampled_from(sorted(self.starting)))
        spec = self.starting.pop(rid)
        if ok:
            state = ContainerState(
                rid, RS.RUNNING, gpus=tuple(g.pci_address for g in spec.gpus), image=spec.image
            )
            self.runtime[rid] = state
            self.table.started(state)
        else:
            self.table.start_failed(rid, "image not found")

    @precondition(lambda self: any(s.status is RS.RUNNING for s in self.runtime.values()))
    @rule(data=st.data(), code=st.sampled_from([0, 1, 137]))
    def exit(self, data: st.DataObject, code: int) -> None:
        running = sorted(r for r, s in self.runtime.items() if s.status is RS.RUNNING)
        rid = data.draw(st.sampled_from(running))
        status = RS.EXITED if code == 0 else RS.FAILED
        state = self.runtime[rid]
        self.runtime[rid] = ContainerState(rid, status, code, state.gpus, state.image)

    @rule(rid=st.sampled_from(RIDS))
    def stop(self, rid: str) -> None:
        if rid in self.starting:
            return  # the agent serialises operations per replica
        assert self.table.stop(rid) == StopContainer(rid)
        self.runtime.pop(rid, None)
        assert self.table.stopped(rid) == ReportResult(rid, RS.STOPPED)
        assert self.table.get(rid) is None

    @rule()
    def observe(self) -> None:
        self.table.observe(list(self.runtime.values()), busy=list(self.starting))

    @rule()
    def freed_gpus_are_reusable(self) -> None:
        free = self.table.free_slots()
        live = [
            ContainerState(r.replica_id, r.status, None, r.gpus)
            for r in self.table.replicas()
            if r.status in (RS.PENDING, RS.RUNNING)
        ]
        probe = ReplicaTable.adopt(SLOTS, live)
        assert probe.free_slots() == free
        if free:
            decision = probe.deploy(payload("fresh", len(free)))
            assert isinstance(decision, StartContainer)
            assert list(decision.spec.gpus) == free

    @invariant()
    def no_gpu_is_double_assigned(self) -> None:
        assert self.table.double_assigned() == {}

    @invariant()
    def held_and_free_partition_the_slots(self) -> None:
        held = set(self.table.held())
        free = {s.pci_address for s in self.table.free_slots()}
        assert held <= set(ADDR)
        assert held | free == set(ADDR)
        assert not held & free

    @invariant()
    def running_containers_never_share_a_gpu(self) -> None:
        claimed = [addr for s in self.runtime.values() if s.status is RS.RUNNING for addr in s.gpus]
        assert len(claimed) == len(set(claimed))

    @invariant()
    def only_live_replicas_hold_gpus(self) -> None:
        for rid in set(self.table.held().values()):
            replica = self.table.get(rid)
            assert replica is not None
            assert replica.status in (RS.PENDING, RS.RUNNING)


LedgerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
TestLedger = LedgerMachine.TestCase


@pytest.mark.parametrize(
    ("exit_code", "error"),
    [
        (3, "container exited with code 3 right after it started"),
        (None, "container stopped right after it started"),
    ],
)
def test_a_container_failed_at_once_is_answered_with_a_cause(
    exit_code: int | None, error: str
) -> None:
    table = ReplicaTable()
    decision = table.deploy(DeployPayload("a", "nginx"))
    assert isinstance(decision, StartContainer)
    result = table.started(ContainerState("a", RS.FAILED, exit_code))
    assert result == ReportResult("a", RS.FAILED, error)
    assert table.started(ContainerState("a", RS.EXITED, 0)) == ReportResult("a", RS.EXITED)
