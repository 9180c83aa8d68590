"""Host facts from /proc, and the vfio dependency from /proc/modules and /sys/module."""

from __future__ import annotations

from pathlib import Path

import pytest

from vectorlay.adapters.probe.procfs import (
    parse_cpuinfo,
    parse_meminfo,
    parse_modules,
    read_hostname,
)
from vectorlay.adapters.probe.vfio import REQUIRED_MODULES, check_vfio, missing_modules

VFIO = Path(__file__).resolve().parent.parent / "fixtures" / "vfio"
CPUINFO = Path(__file__).resolve().parent.parent / "fixtures" / "cpuinfo"


# --- modules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "kr_ubuntu_lsmod_grep_vfio_with_iommufd.txt",
            {"vfio_pci", "vfio_pci_core", "irqbypass", "vfio_iommu_type1", "vfio", "iommufd"},
        ),
        (
            "kr_ubuntu_proc_modules_vfio_with_iommufd_CONVERTED.txt",
            {"vfio_pci", "vfio_pci_core", "irqbypass", "vfio_iommu_type1", "vfio", "iommufd"},
        ),
        (
            "proxmox_amd_lsmod_grep_i_vfio_pci_core_virqfd.txt",
            {"vfio_pci", "vfio_pci_core", "vfio_virqfd", "irqbypass", "vfio_iommu_type1", "vfio"},
        ),
        (
            "synology_nas_old_kernel_lsmod_grep_vfio_kvm_iommu.txt",
            {"vfio_pci", "vfio_virqfd", "vfio_iommu_type1", "vfio", "kvm_amd", "kvm", "irqbypass"},
        ),
        ("proc_modules_vfio_pci_line_grep_E_vfio_pci_ocp_root.txt", {"vfio_pci"}),
    ],
)
def test_module_lines(fixture: str, expected: set[str]) -> None:
    assert parse_modules((VFIO / fixture).read_text()) == expected


def test_module_junk() -> None:
    assert parse_modules("") == set()
    assert parse_modules("\x00\xff garbage\n$(rm -rf) 1 2\n\n   \n") == set()
    assert parse_modules("Module                  Size  Used by\nvfio 1 0\n") == {"Module", "vfio"}


def fake_host(tmp_path: Path, modules: str | None, builtin: tuple[str, ...] = ()) -> Path:
    proc = tmp_path / "proc"
    sysfs = tmp_path / "sys"
    proc.mkdir(parents=True)
    (sysfs / "module").mkdir(parents=True)
    if modules is not None:
        (proc / "modules").write_text(modules)
    for name in builtin:
        (sysfs / "module" / name).mkdir()
    return tmp_path


def test_vfio_ok_from_proc_modules(tmp_path: Path) -> None:
    text = (VFIO / "kr_ubuntu_proc_modules_vfio_with_iommufd_CONVERTED.txt").read_text()
    root = fake_host(tmp_path, text)
    dep = check_vfio(root / "proc", root / "sys")
    assert (dep.name, dep.ok, dep.version, dep.detail) == ("vfio", True, None, "")


def test_vfio_pci_only_is_missing_two(tmp_path: Path) -> None:
    text = (VFIO / "proc_modules_vfio_pci_line_grep_E_vfio_pci_ocp_root.txt").read_text()
    root = fake_host(tmp_path, text)
    dep = check_vfio(root / "proc", root / "sys")
    assert not dep.ok
    assert dep.detail == "missing modules: vfio, vfio_iommu_type1"


def test_builtin_vfio_pci_counts(tmp_path: Path) -> None:
    # Ubuntu: vfio_pci built in, so /proc/modules lists only the other two.
    text = "vfio_iommu_type1 49152 0 - Live 0x0\nvfio 69632 1 vfio_iommu_type1, Live 0x0\n"
    root = fake_host(tmp_path, text, builtin=("vfio_pci",))
    assert check_vfio(root / "proc", root / "sys").ok


def test_no_proc_modules_falls_back_to_sys_module(tmp_path: Path) -> None:
    root = fake_host(tmp_path, None, builtin=REQUIRED_MODULES)
    assert missing_modules(root / "proc", root / "sys") == []
    root2 = fake_host(tmp_path / "b", None, builtin=("vfio",))
    dep = check_vfio(root2 / "proc", root2 / "sys")
    assert dep.detail == "missing modules: vfio_pci, vfio_iommu_type1"


def test_nothing_readable_at_all(tmp_path: Path) -> None:
    dep = check_vfio(tmp_path / "nope", tmp_path / "nope")
    assert dep.detail == "missing modules: vfio, vfio_pci, vfio_iommu_type1"


def test_old_kernel_lsmod_style_file(tmp_path: Path) -> None:
    text = (VFIO / "synology_nas_old_kernel_lsmod_grep_vfio_kvm_iommu.txt").read_text()
    root = fake_host(tmp_path, text)
    assert check_vfio(root / "proc", root / "sys").ok


# --- cpuinfo, meminfo, hostname -------------------------------------------------------

X86_CPUINFO = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\n"
    "processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\n"
)
ARM_CPUINFO = "Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\nprocessor\t: 1\n"


def test_cpuinfo() -> None:
    info = parse_cpuinfo(X86_CPUINFO)
    assert (info.model, info.logical_cpus) == ("AMD EPYC 7763 64-Core Processor", 2)
    arm = parse_cpuinfo(ARM_CPUINFO)
    assert (arm.model, arm.logical_cpus) == ("ARMv7 Processor rev 4 (v7l)", 2)
    none = parse_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\n")
    assert (none.model, none.logical_cpus) == (None, 1)
    assert parse_cpuinfo("\x00\xffjunk").logical_cpus == 0


def test_cpuinfo_squeezes_spaces() -> None:
    info = parse_cpuinfo("model name\t: Intel(R) Xeon(R)   CPU   @ 2.00GHz\nprocessor : 0\n")
    assert info.model == "Intel(R) Xeon(R) CPU @ 2.00GHz"


@pytest.mark.parametrize(
    ("fixture", "model", "cpus"),
    [
        ("gcp_axion_neoverse_v2_aarch64_cpuinfo.txt", "ARM Neoverse-V2", 1),
        ("debian_rpi4_cortex_a72_aarch64_cpuinfo.txt", "ARM Cortex-A72", 1),
        ("cavium_thunderx_aarch64_cpuinfo.txt", "Cavium ThunderX-88XX", 1),
        ("power9_powernv_8375_42A_cpuinfo_tail.txt", "POWER9 (raw), altivec supported", 1),
        ("s390x_2827_cpuinfo.txt", "IBM/S390 machine type 2827", 0),
    ],
)
def test_cpuinfo_of_other_architectures(fixture: str, model: str, cpus: int) -> None:
    info = parse_cpuinfo((CPUINFO / fixture).read_text())
    assert (info.model, info.logical_cpus) == (model, cpus)


ARM_BLOCK = "processor\t: {n}\nCPU implementer\t: {impl}\nCPU part\t: {part}\n\n"


def arm_cpuinfo(*cores: tuple[str, str]) -> str:
    return "".join(ARM_BLOCK.format(n=n, impl=i, part=p) for n, (i, p) in enumerate(cores))


@pytest.mark.parametrize(
    ("cores", "model"),
    [
        ([("0x41", "0xd0c")] * 4, "ARM Neoverse-N1"),  # Ampere Altra, Graviton2
        ([("0x41", "0xd40")], "ARM Neoverse-V1"),
        ([("0x41", "0xd49")], "ARM Neoverse-N2"),
        ([("0x41", "0xd4f")] * 72, "ARM Neoverse-V2"),  # NVIDIA Grace
        ([("0x41", "0xd8e")], "ARM Neoverse-N3"),
        ([("0xc0", "0xac3")], "Ampere-1"),
        ([("0xc0", "0xac4")], "Ampere-1a"),
        ([("0x4e", "0x004")], "NVIDIA Carmel"),
        ([("0x41", "0xd05"), ("0x41", "0xd0b")], "ARM Cortex-A55 + ARM Cortex-A76"),
        ([("0x4e", "0x010")], "ARM implementer 0x4e part 0x010"),
        ([("0x99", "0xd4f")], "ARM implementer 0x99 part 0xd4f"),
        ([("0x41", "junk")], None),
    ],
)
def test_arm_cores_are_named_as_lscpu_names_them(
    cores: list[tuple[str, str]], model: str | None
) -> None:
    assert parse_cpuinfo(arm_cpuinfo(*cores)).model == model


@pytest.mark.parametrize(
    ("text", "model"),
    [
        # Raspberry Pi OS names the board.
        (
            "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n"
            "Revision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
            "Raspberry Pi 4 Model B Rev 1.4",
        ),
        (
            "processor\t: 0\ncpu\t\t: POWER9 (architected), altivec supported\n",
            "POWER9 (architected), altivec supported",
        ),
        ("processor : 0\ncpu model : MIPS 24Kc V7.4\n", "MIPS 24Kc V7.4"),
        ("processor\t: 0\nhart\t\t: 0\nuarch\t\t: sifive,u74-mc\n", "sifive,u74-mc"),
        ("vendor_id : IBM/S390\nmachine : 3931\n", "IBM/S390 machine type 3931"),
        ("vendor_id : GenuineIntel\nmachine : 3931\n", None),
        ("processor\t: 0\ncpu family\t: 6\ncpu MHz\t\t: 2000.0\n", None),
    ],
)
def test_cpu_model_keys(text: str, model: str | None) -> None:
    assert parse_cpuinfo(text).model == model


def test_meminfo() -> None:
    mem = parse_meminfo("MemTotal:  65536000 kB\nMemFree: 1000 kB\nMemAvailable: 32768000 kB\n")
    assert mem is not None
    assert (mem.total_bytes, mem.available_bytes) == (65536000 * 1024, 32768000 * 1024)


def test_meminfo_before_memavailable() -> None:
    mem = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
    assert mem is not None
    assert mem.available_bytes == 400 * 1024


@pytest.mark.parametrize("text", ["", "garbage", "MemTotal: lots kB", "MemTotal: 0 kB"])
def test_meminfo_unusable(text: str) -> None:
    assert parse_meminfo(text) is None


def test_hostname(tmp_path: Path) -> None:
    assert read_hostname(tmp_path) is None
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "hostname").write_text("gpu-node-17\n")
    assert read_hostname(tmp_path) == "gpu-node-17"
    (tmp_path / "sys" / "kernel" / "hostname").write_text("\n")
    assert read_hostname(tmp_path) is None
