"""Group viability and GPU assignability (PROTOCOL §2.1), and reading groups from sysfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vectorlay.adapters.probe.iommu import (
    has_iommu_groups,
    read_group,
    read_groups,
    vfio_device_present,
)
from vectorlay.domain.agent.passthrough import (
    GroupMember,
    IommuGroup,
    gpu_problems,
    gpus_by_group,
    group_problems,
    is_assignable,
    is_vfio_driver,
    is_viable,
    members_to_bind,
)

GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
BRIDGE = "0000:00:01.0"


def group(*members: GroupMember, number: str = "12") -> IommuGroup:
    return IommuGroup(number=number, members=members)


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        ("vfio-pci", True),
        ("nvgrace-gpu-vfio-pci", True),
        ("mlx5_vfio_pci", True),
        ("nvidia", False),
        ("pci-stub", False),
        (None, False),
        ("vfio-pci-extra", False),
    ],
)
def test_vfio_driver_and_its_variants(driver: str | None, expected: bool) -> None:
    assert is_vfio_driver(driver) is expected


@pytest.mark.parametrize(
    "sibling_driver", ["vfio-pci", "nvgrace-gpu-vfio-pci", "pci-stub", "pcieport", None]
)
def test_a_group_is_viable_when_no_member_is_on_a_host_driver(sibling_driver: str | None) -> None:
    g = group(GroupMember(GPU, "vfio-pci", "0300"), GroupMember(AUDIO, sibling_driver, "0403"))
    assert is_viable(g)
    assert group_problems(g) == []


@pytest.mark.parametrize("sibling_driver", ["snd_hda_intel", "xhci_hcd", "nvidia"])
def test_a_host_driver_on_any_member_spoils_the_group_and_is_named(sibling_driver: str) -> None:
    g = group(GroupMember(GPU, "vfio-pci", "0300"), GroupMember(AUDIO, sibling_driver, "0403"))
    assert not is_viable(g)
    assert group_problems(g) == [
        f"IOMMU group 12 is not viable: {AUDIO} is bound to {sibling_driver}"
    ]


def test_an_assignable_gpu_has_no_problems() -> None:
    g = group(GroupMember(GPU, "vfio-pci", "0302"))
    assert is_assignable(driver="vfio-pci", group=g, vfio_device_present=True, health_failed=False)
    assert gpu_problems(address=GPU, driver="vfio-pci", group=g, vfio_device_present=True) == []


def test_every_reason_is_a_line_of_its_own() -> None:
    g = group(GroupMember(GPU, "nvidia", "0302"), GroupMember(AUDIO, "snd_hda_intel", "0403"))
    problems = gpu_problems(
        address=GPU,
        driver="nvidia",
        group=g,
        vfio_device_present=False,
        health_problems=["link trained at x4 of x16"],
    )
    assert problems == [
        f"{GPU} is bound to nvidia, not vfio-pci",
        f"IOMMU group 12 is not viable: {AUDIO} is bound to snd_hda_intel",
        "/dev/vfio/12 is missing",
        "link trained at x4 of x16",
    ]
    assert not is_assignable(
        driver="nvidia", group=g, vfio_device_present=False, health_failed=False
    )


def test_no_group_and_no_driver_are_reasons() -> None:
    assert gpu_problems(address=GPU, driver=None, group=None, vfio_device_present=False) == [
        f"{GPU} has no driver bound (passthrough needs vfio-pci)",
        f"{GPU} has no IOMMU group (IOMMU off or unsupported)",
    ]


def test_failed_health_alone_makes_a_gpu_unassignable() -> None:
    g = group(GroupMember(GPU, "vfio-pci", "0302"))
    assert not is_assignable(
        driver="vfio-pci", group=g, vfio_device_present=True, health_failed=True
    )


def test_binding_takes_the_gpu_and_spoiling_siblings_never_a_bridge() -> None:
    g = group(
        GroupMember(BRIDGE, "pcieport", "0604"),
        GroupMember(GPU, "nvidia", "0300"),
        GroupMember(AUDIO, "snd_hda_intel", "0403"),
        GroupMember("0000:01:00.2", None, "0c03"),
        GroupMember("0000:01:00.3", "pci-stub", "0c80"),
    )
    assert [m.address for m in members_to_bind(g, [GPU])] == [GPU, AUDIO]


def test_a_gpu_without_a_driver_is_bound_a_driverless_sibling_is_not() -> None:
    g = group(GroupMember(GPU, None, "0300"), GroupMember(AUDIO, None, "0403"))
    assert [m.address for m in members_to_bind(g, [GPU])] == [GPU]


def test_gpus_by_group() -> None:
    g1 = group(
        GroupMember(GPU, "vfio-pci", "0300"), GroupMember("0000:02:00.0", "vfio-pci", "0300")
    )
    g2 = group(GroupMember("0000:03:00.0", "vfio-pci", "0300"), number="13")
    g3 = group(GroupMember(AUDIO, "snd_hda_intel", "0403"), number="14")
    assert gpus_by_group([g1, g2, g3], [GPU, "0000:02:00.0", "0000:03:00.0"]) == {
        "12": [GPU, "0000:02:00.0"],
        "13": ["0000:03:00.0"],
    }


# --- reading sysfs ----------------------------------------------------------


def _device(sys_root: Path, address: str, pci_class: str, driver: str | None, grp: str) -> None:
    real = sys_root / "devices" / "pci0000:00" / address
    real.mkdir(parents=True)
    (real / "class").write_text(f"0x{pci_class}\n")
    if driver is not None:
        drv = sys_root / "bus" / "pci" / "drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../../../bus/pci/drivers/{driver}", real / "driver")
    link = sys_root / "bus" / "pci" / "devices" / address
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../devices/pci0000:00/{address}", link)
    members = sys_root / "kernel" / "iommu_groups" / grp / "devices"
    members.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../../devices/pci0000:00/{address}", members / address)


def test_read_groups_from_a_sysfs_tree(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    assert not has_iommu_groups(sys_root)
    _device(sys_root, GPU, "030000", "vfio-pci", "12")
    _device(sys_root, AUDIO, "040300", "snd_hda_intel", "12")
    _device(sys_root, "0000:02:00.0", "030200", None, "3")
    assert has_iommu_groups(sys_root)
    assert read_group(sys_root, "12") == group(
        GroupMember(GPU, "vfio-pci", "0300"), GroupMember(AUDIO, "snd_hda_intel", "0403")
    )
    assert list(read_groups(sys_root)) == ["3", "12"]
    assert list(read_groups(sys_root, {"3"})) == ["3"]
    assert read_group(sys_root, "99") is None
    assert read_group(sys_root, "../12") is None


def test_a_vfio_node_is_present_whatever_its_file_type(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "vfio").mkdir(parents=True)
    (dev / "vfio" / "12").write_text("")
    assert vfio_device_present(dev, "12")
    assert not vfio_device_present(dev, "13")
