"""The ``prepare-gpus`` plan: what is bound, what is left alone and why, and the verdict."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from vectorlay.domain.agent.gpuprep import (
    IOMMU_OFF,
    NO_GROUP,
    Action,
    GpuFacts,
    SelectionError,
    Step,
    exit_code,
    kernel_parameters,
    make_plan,
)
from vectorlay.domain.agent.passthrough import GroupMember, IommuGroup

GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
USB = "0000:01:00.2"
PORT = "0000:00:01.0"
GPU2 = "0000:02:00.0"
NVME = "0000:03:00.0"


def gpu(address: str = GPU, driver: str | None = None, group: str | None = "1") -> GpuFacts:
    return GpuFacts(address, "0300", driver, group)


def groups(*members: GroupMember, number: str = "1") -> dict[str, IommuGroup]:
    return {number: IommuGroup(number, members)}


def actions(steps: Sequence[Step]) -> dict[str, Action]:
    return {s.address: s.action for s in steps}


def test_a_gpu_alone_on_no_driver_is_bound_and_assignable_afterwards() -> None:
    plan = make_plan([gpu()], groups(GroupMember(GPU, None, "0300")), iommu_on=True)
    assert actions(plan.steps) == {GPU: Action.BIND}
    assert plan.assignable_after == {"1": (GPU,)}
    assert exit_code(plan) == 1


def test_gpu_with_audio_usb_and_root_port_binds_the_functions_and_keeps_the_port() -> None:
    # The Comet Lake listing: root port + GPU + HD audio + USB in one group.
    members = (
        GroupMember(PORT, "pcieport", "0604"),
        GroupMember(GPU, "vfio-pci", "0300"),
        GroupMember(AUDIO, "snd_hda_intel", "0403"),
        GroupMember(USB, "xhci_hcd", "0c03"),
    )
    plan = make_plan([gpu(driver="vfio-pci")], groups(*members), iommu_on=True)
    assert actions(plan.steps) == {
        PORT: Action.OK,
        GPU: Action.OK,
        AUDIO: Action.BIND,
        USB: Action.BIND,
    }
    port = plan.steps[0]
    assert port.reason == "bridge, stays on pcieport"
    assert plan.assignable_after == {"1": (GPU,)}


def test_nothing_to_do_exits_0() -> None:
    members = (GroupMember(GPU, "vfio-pci", "0300"), GroupMember(AUDIO, "vfio-pci", "0403"))
    plan = make_plan([gpu(driver="vfio-pci")], groups(*members), iommu_on=True)
    assert not plan.binds
    assert exit_code(plan) == 0
    assert plan.assignable_after == {"1": (GPU,)}


def test_a_gpu_on_nvidia_is_skipped_unless_named() -> None:
    members = (GroupMember(GPU, "nvidia", "0300"), GroupMember(AUDIO, "snd_hda_intel", "0403"))
    plan = make_plan([gpu(driver="nvidia")], groups(*members), iommu_on=True)
    assert actions(plan.steps) == {GPU: Action.SKIP, AUDIO: Action.SKIP}
    assert "host driver nvidia" in plan.steps[0].reason
    assert "--gpu" in plan.steps[0].reason
    assert plan.assignable_after == {}
    assert exit_code(plan) == 0  # skipped GPUs do not count

    named = make_plan([gpu(driver="nvidia")], groups(*members), iommu_on=True, selected=[GPU])
    assert actions(named.steps) == {GPU: Action.BIND, AUDIO: Action.BIND}
    assert named.assignable_after == {"1": (GPU,)}


def test_the_console_gpu_is_skipped_with_its_group_unless_named() -> None:
    members = (GroupMember(GPU, None, "0300"), GroupMember(AUDIO, "snd_hda_intel", "0403"))
    plan = make_plan([gpu()], groups(*members), iommu_on=True, console=[GPU])
    assert actions(plan.steps) == {GPU: Action.SKIP, AUDIO: Action.SKIP}
    assert "console (boot_vga 1)" in plan.steps[1].reason
    taken = make_plan([gpu()], groups(*members), iommu_on=True, console=[GPU], selected=[GPU])
    assert actions(taken.steps) == {GPU: Action.BIND, AUDIO: Action.BIND}


def test_two_gpus_in_one_group_go_together_or_not_at_all() -> None:
    # The Intel x16/x8 listing: an RTX 2080 Ti and an RX 580 share group 1.
    members = (
        GroupMember(GPU, None, "0300"),
        GroupMember(AUDIO, "snd_hda_intel", "0403"),
        GroupMember(GPU2, "amdgpu", "0300"),
    )
    facts = [gpu(), gpu(GPU2, "amdgpu")]
    plan = make_plan(facts, groups(*members), iommu_on=True)
    assert set(actions(plan.steps).values()) == {Action.SKIP}
    assert f"{GPU2} is on the host driver amdgpu" in str(plan.groups[0].skipped)
    # Naming the first GPU brings the second into the run, still on its own rules.
    one = make_plan(facts, groups(*members), iommu_on=True, selected=[GPU])
    assert set(actions(one.steps).values()) == {Action.SKIP}
    both = make_plan(facts, groups(*members), iommu_on=True, selected=[GPU, GPU2])
    assert set(actions(both.steps).values()) == {Action.BIND}
    assert both.assignable_after == {"1": (GPU, GPU2)}


def test_a_storage_controller_sharing_the_group_needs_the_gpu_named() -> None:
    # The AMD 400 chipset group: RTX 3060 + audio + NVMe + NIC behind chipset ports.
    members = (
        GroupMember(PORT, "pcieport", "0604"),
        GroupMember(GPU, None, "0300"),
        GroupMember(NVME, "nvme", "0108"),
    )
    plan = make_plan([gpu()], groups(*members), iommu_on=True)
    assert actions(plan.steps)[NVME] is Action.SKIP
    assert "storage controller, on nvme" in plan.steps[1].reason
    named = make_plan([gpu()], groups(*members), iommu_on=True, selected=[GPU])
    assert actions(named.steps)[NVME] is Action.BIND


def test_a_group_that_stays_not_viable_is_skipped() -> None:
    # An NVSwitch is class 0680 (a bridge VFIO never binds) on nvidia-nvswitch.
    members = (GroupMember(GPU, None, "0302"), GroupMember(GPU2, "nvidia-nvswitch", "0680"))
    plan = make_plan([gpu()], groups(*members), iommu_on=True)
    assert actions(plan.steps) == {GPU: Action.SKIP, GPU2: Action.OK}
    assert "is bound to nvidia-nvswitch even after binding" in plan.steps[0].reason


def test_iommu_off_skips_every_gpu_and_exits_1() -> None:
    plan = make_plan([gpu(group=None)], {}, iommu_on=False)
    assert [(s.action, s.reason) for s in plan.steps] == [(Action.SKIP, IOMMU_OFF)]
    assert exit_code(plan) == 1


def test_a_gpu_without_a_group_on_an_iommu_host_is_skipped() -> None:
    plan = make_plan([gpu(group=None)], {}, iommu_on=True)
    assert plan.steps[0].reason == NO_GROUP
    assert exit_code(plan) == 0


def test_a_group_sysfs_does_not_list_is_never_bound() -> None:
    plan = make_plan([gpu(group="7")], {}, iommu_on=True)
    assert plan.steps[0].action is Action.SKIP
    assert "group 7 is not listed" in plan.steps[0].reason


def test_gpu_selection_limits_the_run_and_refuses_non_gpus() -> None:
    all_groups = {
        **groups(GroupMember(GPU, None, "0300")),
        **groups(GroupMember(GPU2, None, "0300"), number="2"),
    }
    facts = [gpu(), gpu(GPU2, group="2")]
    assert [s.address for s in make_plan(facts, all_groups, iommu_on=True).steps] == [GPU, GPU2]
    only = make_plan(facts, all_groups, iommu_on=True, selected=[GPU2])
    assert [s.address for s in only.steps] == [GPU2]
    with pytest.raises(SelectionError, match=r"--gpu 0000:09:00\.0: not a GPU"):
        make_plan(facts, all_groups, iommu_on=True, selected=["0000:09:00.0"])


def test_groups_are_listed_in_numeric_order() -> None:
    facts = [gpu(group="10"), gpu(GPU2, group="9")]
    all_groups = {
        **groups(GroupMember(GPU, None, "0300"), number="10"),
        **groups(GroupMember(GPU2, None, "0300"), number="9"),
    }
    assert [g.number for g in make_plan(facts, all_groups, iommu_on=True).groups] == ["9", "10"]


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [
        ("GenuineIntel", "intel_iommu=on iommu=pt"),
        ("AuthenticAMD", "amd_iommu=on iommu=pt"),
        (None, "intel_iommu=on iommu=pt (Intel) or amd_iommu=on iommu=pt (AMD)"),
    ],
)
def test_kernel_parameters_follow_the_cpu_vendor(vendor: str | None, expected: str) -> None:
    assert kernel_parameters(vendor) == expected
