"""GPUs by whole IOMMU groups: the choice rule, and the ledger under random deploys and stops."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from vectorlay.domain.agent.replicas import (
    ContainerState,
    GpuSlot,
    ReplicaTable,
    ReportResult,
    StartContainer,
)
from vectorlay.domain.gpugroups import choose_groups, free_groups, groups_of, refusal
from vectorlay.domain.messages import DeployPayload
from vectorlay.domain.messages import ReplicaStatus as RS


def host(sizes: list[int]) -> list[GpuSlot]:
    """Groups numbered 10, 11, ... holding ``sizes`` GPUs each, on buses 0x10, 0x11, ..."""
    return [
        GpuSlot(f"0000:{16 + i:02x}:00.{fn}", str(10 + i))
        for i, size in enumerate(sizes)
        for fn in range(size)
    ]


def test_two_gpus_in_one_group_cannot_be_split() -> None:
    free = groups_of(host([2, 2]))
    assert choose_groups(free, 1) is None
    assert refusal(1, free) == "no free IOMMU groups make exactly 1 GPU: free groups hold 2, 2"
    assert choose_groups(free, 2) == ["10"]
    assert choose_groups(free, 4) == ["10", "11"]
    assert refusal(5, free) == "not enough free GPUs: 5 requested, 4 free"


def test_best_fit_takes_the_fewest_groups_then_the_smallest() -> None:
    free = groups_of(host([1, 2, 1, 3]))
    assert choose_groups(free, 2) == ["11"]  # one group of 2 beats two of 1
    assert choose_groups(free, 3) == ["13"]
    assert choose_groups(free, 1) == ["10"]  # the lowest address among equals
    assert choose_groups(free, 4) == ["10", "13"]  # {1, 3} before {2, ...}: smallest sizes
    assert choose_groups(free, 0) == []


def test_a_group_partly_held_is_held_whole() -> None:
    groups = groups_of(host([2, 1]))
    assert free_groups(groups, ["0000:10:00.1"]) == {"11": ("0000:11:00.0",)}


def test_ledger_gives_one_group_of_two_to_a_deploy_for_two() -> None:
    table = ReplicaTable(host([2]))
    refused = table.deploy(DeployPayload("a", "nginx:1", 1))
    assert refused == ReportResult(
        "a", RS.FAILED, "no free IOMMU groups make exactly 1 GPU: free groups hold 2"
    )
    decision = table.deploy(DeployPayload("b", "nginx:1", 2))
    assert isinstance(decision, StartContainer)
    assert {g.iommu_group for g in decision.spec.gpus} == {"10"}
    assert len(decision.spec.gpus) == 2


def test_an_adopted_container_holding_part_of_a_group_holds_the_group() -> None:
    slots = host([2, 1])
    states = [ContainerState("old", RS.RUNNING, None, ("0000:10:00.1",), "nginx:1")]
    table = ReplicaTable.adopt(slots, states)
    assert table.free_groups() == {"11": ("0000:11:00.0",)}
    # A second container claiming the other GPU of the held group gets nothing of it.
    table.observe([*states, ContainerState("late", RS.RUNNING, None, ("0000:10:00.0",), "x:1")])
    late = table.get("late")
    assert late is not None
    assert late.gpus == ()
    assert table.conflicts == {"late": ("0000:10:00.0",)}


# --- random hosts, random deploy/stop sequences ------------------------------------

Op = tuple[str, int]  # ("deploy", gpu_count) | ("stop", index of a replica made so far) | ...
ops = st.lists(
    st.one_of(
        st.tuples(st.just("deploy"), st.integers(0, 5)),
        st.tuples(st.just("stop"), st.integers(0, 30)),
        st.tuples(st.just("fail"), st.integers(0, 30)),
    ),
    max_size=30,
)


def _exact_sets(free: dict[str, tuple[str, ...]], count: int) -> list[tuple[str, ...]]:
    names = sorted(free)
    return [
        combo
        for k in range(len(names) + 1)
        for combo in combinations(names, k)
        if sum(len(free[g]) for g in combo) == count
    ]


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), max_size=6), steps=ops)
def test_ledger_never_splits_a_group_and_explains_every_refusal(
    sizes: list[int], steps: list[Op]
) -> None:
    slots = host(sizes)
    group_of = {s.pci_address: s.iommu_group for s in slots}
    group_size = {g: sizes[int(g) - 10] for g in set(group_of.values())}
    table = ReplicaTable(slots)
    made: list[str] = []
    asked: dict[str, int] = {}
    for n, (op, arg) in enumerate(steps):
        if op == "deploy":
            rid = f"r{n}"
            free = table.free_groups()
            decision = table.deploy(DeployPayload(rid, "nginx:1", arg))
            exact = _exact_sets(free, arg)
            if isinstance(decision, ReportResult):
                assert decision.status is RS.FAILED
                assert not exact, f"refused although {exact[0]} fits {arg}"
                assert decision.error == refusal(arg, free)
                assert decision.error.startswith(
                    ("not enough free GPUs", "no free IOMMU groups make exactly")
                )
                continue
            chosen = {g.iommu_group for g in decision.spec.gpus}
            assert len(decision.spec.gpus) == arg
            assert chosen <= set(free)
            assert len(chosen) == min(len(s) for s in exact)  # fewest groups
            made.append(rid)
            asked[rid] = arg
            addrs = tuple(g.pci_address for g in decision.spec.gpus)
            table.started(ContainerState(rid, RS.RUNNING, None, addrs, "nginx:1"))
        elif made:
            rid = made[arg % len(made)]
            if op == "stop":
                table.stopped(rid)
            else:
                table.observe(
                    [
                        ContainerState(r.replica_id, RS.FAILED if r.replica_id == rid else r.status)
                        for r in table.replicas()
                    ]
                )
        holders: dict[str, set[str]] = {}
        for replica in table.replicas():
            if replica.status not in (RS.PENDING, RS.RUNNING):
                continue
            assert len(replica.gpus) == asked[replica.replica_id]
            for addr in replica.gpus:
                holders.setdefault(group_of[addr], set()).add(replica.replica_id)
            # Exact and whole: every group it touches, it holds entirely.
            touched = {group_of[a] for a in replica.gpus}
            assert len(replica.gpus) == sum(group_size[g] for g in touched)
        assert table.double_assigned() == {}
        assert all(len(ids) == 1 for ids in holders.values()), holders
