"""The viability and problem rules on IOMMU group listings taken from real machines.

The listings (tests/fixtures/sysfs/iommu_groups/, see SOURCES.md) name each
member's driver; they are turned into the groups the sysfs reader would
build, and the rules must say what QEMU/Kata would: which groups can go into
a VM, and which device spoils the others.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from tests.fakes.host.fakehost import FIXTURES
from vectorlay.domain.agent.gpustate import assess
from vectorlay.domain.agent.passthrough import (
    GroupMember,
    IommuGroup,
    group_problems,
    is_viable,
    members_to_bind,
)
from vectorlay.domain.messages import Gpu

LISTINGS: Final = FIXTURES / "sysfs" / "iommu_groups"
# "Group:  1   0000:01:00.0 Processing accelerators [1200]: ... [10ee:5000]   Driver: vfio-pci"
_VIEWER: Final = re.compile(
    r"^Group:\s+(?P<group>\d+)\s+(?P<addr>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])"
    r" .*?\[(?P<cls>[0-9a-f]{4})\]:.*?(?:Driver: (?P<driver>\S+))?\s*$"
)
# "IOMMU Group 114: 05:00.0 Bridge [0680]: NVIDIA ... (rev a1) (driver: nvidia-nvswitch)"
_H200: Final = re.compile(
    r"^IOMMU Group (?P<group>\d+): (?P<addr>[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])"
    r" .*?\[(?P<cls>[0-9a-f]{4})\]:.*?(?:\(driver: (?P<driver>[^)]+)\))?\s*$"
)


def groups_from(path: Path, pattern: re.Pattern[str]) -> dict[str, IommuGroup]:
    members: dict[str, list[GroupMember]] = {}
    for line in path.read_text().splitlines():
        match = pattern.match(line)
        if match is None:
            continue
        addr = match["addr"] if match["addr"].count(":") == 2 else f"0000:{match['addr']}"
        members.setdefault(match["group"], []).append(
            GroupMember(addr, match["driver"], match["cls"])
        )
    return {n: IommuGroup(n, tuple(m)) for n, m in members.items()}


def test_fpga_on_vfio_beside_a_gpu_on_nvidia_without_acs() -> None:
    groups = groups_from(
        LISTINGS / "z390_fpga_vfio_and_rtx_nvidia_one_group_iommu_viewer_with_drivers.txt",
        _VIEWER,
    )
    one = groups["1"]
    assert len(one.members) == 6
    assert not is_viable(one)
    # The root ports on pcieport do not spoil it; the GPU and its audio do, by name.
    assert group_problems(one) == [
        "IOMMU group 1 is not viable: 0000:02:00.0 is bound to nvidia",
        "IOMMU group 1 is not viable: 0000:02:00.1 is bound to snd_hda_intel",
    ]
    # Making the group usable binds the GPU and its audio, never the bridges.
    assert [m.address for m in members_to_bind(one, ["0000:02:00.0"])] == [
        "0000:02:00.0",
        "0000:02:00.1",
    ]
    gpu = Gpu("0000:02:00.0", "nvidia", "10de", "2489", "GA104", "nvidia", "1")
    (assessed,) = assess([gpu], groups=groups, vfio_present={"1": True}, health={})
    assert assessed.assignable is False
    assert assessed.problems == [
        "0000:02:00.0 is bound to nvidia, not vfio-pci",
        "IOMMU group 1 is not viable: 0000:02:00.1 is bound to snd_hda_intel",
    ]


def test_after_an_acs_override_the_gpu_alone_in_its_group_needs_only_its_own_bind() -> None:
    groups = groups_from(
        LISTINGS / "z390_acs_override_split_full_iommu_viewer_with_drivers.txt", _VIEWER
    )
    assert [m.address for m in groups["14"].members] == ["0000:02:00.0"]
    assert not is_viable(groups["15"])  # its audio function, on snd_hda_intel, is apart
    gpu = Gpu("0000:02:00.0", "nvidia", "10de", "2489", "GA104", "nvidia", "14")
    (listed,) = assess([gpu], groups=groups, vfio_present={"14": False}, health={})
    assert listed.problems == [
        "0000:02:00.0 is bound to nvidia, not vfio-pci",
        "/dev/vfio/14 is missing",
    ]
    # Bound to vfio-pci (its node then appears), the GPU is assignable on its own.
    bound = {"14": IommuGroup("14", (GroupMember("0000:02:00.0", "vfio-pci", "0300"),))}
    on_vfio = Gpu("0000:02:00.0", "nvidia", "10de", "2489", "GA104", "vfio-pci", "14")
    (ok,) = assess([on_vfio], groups=bound, vfio_present={"14": True}, health={})
    assert (ok.assignable, ok.problems) == (True, [])


def test_hgx_nvswitches_share_a_group_that_no_vm_may_take() -> None:
    groups = groups_from(
        LISTINGS / "hgx_h200_8gpu_nvswitches_shared_group_with_drivers_TRUNCATED.txt", _H200
    )
    switches = groups["114"]
    assert {m.class_id for m in switches.members} == {"0680"}
    assert not is_viable(switches)  # NVSwitches are class 0680 but bound to nvidia-nvswitch
    gpu_groups = [g for g in groups.values() if g.members[0].class_id == "0302"]
    assert len(gpu_groups) == 8
    assert all(len(g.members) == 1 for g in gpu_groups)  # one GPU per group: ACS works
