"""GPUs, drivers and IOMMU groups read straight from a (fake) /sys."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.host.fakehost import NVIDIA_DRIVER, PASSTHROUGH, build_fake_host
from vectorlay.adapters.probe import sysfs
from vectorlay.adapters.probe.pci import gpu_line, to_gpu


def test_every_gpu_and_nothing_else(tmp_path: Path) -> None:
    host = build_fake_host(tmp_path)
    found = sysfs.read_gpu_functions(host.sys)
    assert [f.address for f in found] == PASSTHROUGH.gpu_addresses
    assert len(found) == 8  # audio functions and the host bridge are left out
    first = found[0]
    assert (first.class_id, first.vendor_id, first.device_id) == ("0300", "10de", "26b1")
    assert (first.driver, first.iommu_group) == ("vfio-pci", "30")
    gpu = to_gpu(first)
    assert (gpu.vendor, gpu.model) == ("nvidia", "Device 26b1")
    assert gpu_line(first) == (
        "0000:5a:00.0 VGA compatible controller [0300]: NVIDIA Corporation Device [10de:26b1]"
    )


def test_drivers(tmp_path: Path) -> None:
    host = build_fake_host(tmp_path, NVIDIA_DRIVER)
    assert sysfs.driver_of(host.sys, "0000:05:00.0") == "nvidia"
    host.bind("0000:05:00.0", "vfio-pci")
    assert sysfs.driver_of(host.sys, "0000:05:00.0") == "vfio-pci"
    host.bind("0000:05:00.0", None)
    assert sysfs.driver_of(host.sys, "0000:05:00.0") is None
    assert isinstance(sysfs.driver_of(host.sys, "0000:77:00.0"), sysfs.Absent)
    unbound = next(f for f in sysfs.read_gpu_functions(host.sys) if f.address == "0000:05:00.0")
    assert unbound.driver is None
    assert gpu_line(unbound).endswith(" (no driver bound)")


def test_missing_tree(tmp_path: Path) -> None:
    assert sysfs.read_gpu_functions(tmp_path / "nothing") == []
    assert sysfs.iommu_group_of(tmp_path, "0000:17:00.0") is None


def test_junk_files_skip_only_that_device(tmp_path: Path) -> None:
    host = build_fake_host(tmp_path)
    base = host.sys / "devices" / "pci0000:00"
    (base / "0000:5a:00.0" / "class").write_bytes(b"\xff\x00junk")
    (base / "0000:5d:00.0" / "vendor").write_text("0x10de0x10de\n")
    (base / "0000:62:00.0" / "device").unlink()
    (base / "0000:63:00.0" / "iommu_group").unlink()
    (base / "0000:63:00.0" / "iommu_group").symlink_to("../../../kernel/iommu_groups/../../x")
    found = {f.address: f for f in sysfs.read_gpu_functions(host.sys)}
    assert "0000:5a:00.0" not in found
    assert "0000:5d:00.0" not in found
    assert "0000:62:00.0" not in found
    assert found["0000:63:00.0"].iommu_group is None
    assert len(found) == 5


def test_stray_entries_are_ignored(tmp_path: Path) -> None:
    host = build_fake_host(tmp_path)
    devices = host.sys / "bus" / "pci" / "devices"
    (devices / "not-an-address").mkdir()
    (devices / "0000:99:00.0").symlink_to("../../../devices/nowhere")
    assert len(sysfs.read_gpu_functions(host.sys)) == 8


def test_module_present(tmp_path: Path) -> None:
    host = build_fake_host(tmp_path)
    assert not sysfs.module_present(host.sys, "vfio_pci")
    host.add_builtin_modules(["vfio_pci"])
    assert sysfs.module_present(host.sys, "vfio_pci")
