"""The fake host can be built again over itself, as docs/controlplane.md does from each shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.host.fakehost import BUILT_MARK, NVIDIA_DRIVER, PASSTHROUGH, build_fake_host
from vectorlay.adapters.probe import sysfs


def gpu_addresses(sys_root: Path) -> list[str]:
    return [f.address for f in sysfs.read_gpu_functions(sys_root)]


def test_a_second_build_reuses_the_host_as_it_is(tmp_path: Path) -> None:
    first = build_fake_host(tmp_path / "host")
    first.hang("nerdctl")
    (first.fake / "calls.log").write_text("lspci -Dvmmnnk\n")
    again = build_fake_host(tmp_path / "host")
    assert again.root == first.root
    assert (again.fake / "nerdctl.mode").read_text() == "hang\n"
    assert again.calls() == ["lspci -Dvmmnnk"]
    assert gpu_addresses(again.sys) == PASSTHROUGH.gpu_addresses


def test_a_build_cut_short_is_completed(tmp_path: Path) -> None:
    host = build_fake_host(tmp_path / "host")
    (host.fake / BUILT_MARK).unlink()
    (host.sys / "devices" / "pci0000:00" / "0000:5a:00.0" / "iommu_group").unlink()
    again = build_fake_host(tmp_path / "host")
    found = sysfs.read_gpu_functions(again.sys)
    assert [f.address for f in found] == PASSTHROUGH.gpu_addresses
    assert (found[0].driver, found[0].iommu_group) == ("vfio-pci", "30")
    assert (again.fake / BUILT_MARK).is_file()


def test_a_host_of_another_profile_is_refused(tmp_path: Path) -> None:
    build_fake_host(tmp_path / "host")
    with pytest.raises(ValueError, match="another profile"):
        build_fake_host(tmp_path / "host", NVIDIA_DRIVER)
