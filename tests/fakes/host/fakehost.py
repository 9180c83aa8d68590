"""A fake Linux host on disk, for probe tests and the probe benchmark.

``build_fake_host(tmp)`` lays out, under one folder::

    bin/     fake lspci, nvidia-smi, containerd, nerdctl, kata-runtime, virtiofsd
    fake/    what each fake answers (see _respond.sh)
    proc/    cpuinfo, meminfo, modules, sys/kernel/hostname   -> HOST_PROC
    sys/     bus/pci/devices/*, devices/pci0000:00/*, module/*,
             kernel/iommu_groups/<N>/devices/*                 -> HOST_SYS
    dev/     vfio/<N> for every group with a member on vfio-pci -> HOST_DEV
    data/    the data path

The PCI functions in ``sys/`` describe the same machine as the lspci
fixture the fake lspci prints, so that the lspci path and the sysfs path
must find the same GPUs.  lspci output and ``--version`` answers are real
fixtures from ``tests/fixtures/``; cpuinfo, meminfo, IOMMU group numbers and
nvidia-smi utilization figures are made up for the fake host.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
FIXTURES: Final = HERE.parent.parent / "fixtures"
PROGRAMS: Final = ("lspci", "nvidia-smi", "containerd", "nerdctl", "kata-runtime", "virtiofsd")
TOOLS: Final = ("containerd", "nerdctl", "kata-runtime", "virtiofsd")
LSPCI_ARGS: Final = "-Dvmmnnk"
NVIDIA_SMI_ARGS: Final = "--query-gpu=pci.bus_id,utilization.gpu --format=csv,noheader,nounits"
LIBKMOD_WARNING: Final = "lspci: Unable to load libkmod resources: error -2\n"

VERSION_FIXTURES: Final = {
    "containerd": "versions/containerd_--version_v1.7.3.txt",
    "nerdctl": "versions/nerdctl_--version_2.2.1.txt",
    "kata-runtime": "versions/kata_runtime_--version_3.0.0.txt",
    "virtiofsd": "versions/virtiofsd_--version_rust_1.14.0.txt",
}
EXPECTED_VERSIONS: Final = {
    "containerd": "1.7.3",
    "nerdctl": "2.2.1",
    "kata-runtime": "3.0.0",
    "virtiofsd": "1.14.0",
}
PROC_MODULES_FIXTURE: Final = "vfio/kr_ubuntu_proc_modules_vfio_with_iommufd_CONVERTED.txt"
HOSTNAME: Final = "gpu-node-17"
CPU_MODEL: Final = "AMD EPYC 7763 64-Core Processor"
CPUS: Final = 4
MEM_TOTAL_KB: Final = 528_000_000  # 503.5 GiB -> reported as 504
MEM_AVAILABLE_KB: Final = 402_653_184  # 384 GiB available -> 120 GiB used
# Written last into fake/, naming the profile's lspci fixture: a folder holding
# it is a complete fake host.
BUILT_MARK: Final = "built"


@dataclass(frozen=True)
class FakeFunction:
    """A PCI function as sysfs shows it (``class_code`` with its prog-if: ``030000``)."""

    address: str
    class_code: str
    vendor: str
    device: str
    driver: str | None = None
    iommu_group: str | None = None


@dataclass(frozen=True)
class Profile:
    lspci_fixture: str
    functions: tuple[FakeFunction, ...]
    nvidia_smi_stdout: str = ""

    @property
    def gpu_addresses(self) -> list[str]:
        return sorted(
            f.address
            for f in self.functions
            if f.class_code[:4] in {"0300", "0302", "0380", "1200"} and f.vendor in {"10de", "1002"}
        )


_HOST_BRIDGE: Final = FakeFunction("0000:00:00.0", "060000", "8086", "09a2")


def _passthrough() -> Profile:
    functions = [_HOST_BRIDGE]
    for group, bus in enumerate(("5a", "5d", "62", "63", "d8", "d9", "dc", "e2"), start=30):
        functions.append(
            FakeFunction(f"0000:{bus}:00.0", "030000", "10de", "26b1", "vfio-pci", str(group))
        )
        functions.append(
            FakeFunction(f"0000:{bus}:00.1", "040300", "10de", "22ba", "vfio-pci", str(group))
        )
    return Profile("lspci/rtx6000ada_x8_vfio_lspci_Dvmmnnk_CONVERTED.txt", tuple(functions))


def _nvidia_driver() -> Profile:
    functions = [_HOST_BRIDGE]
    for group, bus in ((12, "05"), (13, "0a")):
        functions.append(
            FakeFunction(f"0000:{bus}:00.0", "030000", "10de", "2204", "nvidia", str(group))
        )
        functions.append(
            FakeFunction(f"0000:{bus}:00.1", "040300", "10de", "1aef", "snd_hda_intel", str(group))
        )
    # Utilization 40 and 61: the mean 50.5 is reported as 51.
    smi = "00000000:05:00.0, 40\n00000000:0A:00.0, 61\n"
    return Profile("lspci/dual_rtx3090_nvidia_lspci_Dvmmnnk_CONVERTED.txt", tuple(functions), smi)


PASSTHROUGH: Final = _passthrough()
NVIDIA_DRIVER: Final = _nvidia_driver()


@dataclass
class FakeHost:
    root: Path
    profile: Profile
    extra_path: list[str] = field(default_factory=list)

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def fake(self) -> Path:
        return self.root / "fake"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    @property
    def path_env(self) -> str:
        return os.pathsep.join([str(self.bin), *self.extra_path])

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for the CLI on this host (PATH holds the fakes only)."""
        env = dict(base or {})
        env.update(
            PATH=self.path_env,
            HOST_PROC=str(self.proc),
            HOST_SYS=str(self.sys),
            HOST_DEV=str(self.dev),
            VECTORLAY_DATA_PATH=str(self.data),
            # The test machine's free space is not the fake host's: no minimum.
            VECTORLAY_IMAGE_STORE=str(self.root / "containerd"),
            VECTORLAY_MIN_FREE_GB="0",
        )
        return env

    def calls(self) -> list[str]:
        """Every fake program run so far, as "<name> <arguments>"."""
        log = self.fake / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def programs_run(self) -> list[str]:
        return [line.split(" ", 1)[0] for line in self.calls()]

    # --- changing the host --------------------------------------------------------

    def remove_program(self, name: str) -> None:
        (self.bin / name).unlink()

    def hang(self, name: str) -> None:
        (self.fake / f"{name}.mode").write_text("hang\n")

    def hung_pid(self, name: str) -> int | None:
        """The pid of the hung ``name``, once it has been started."""
        path = self.fake / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def answer(
        self, name: str, stdout: str | bytes = b"", stderr: str | bytes = b"", status: int = 0
    ) -> None:
        for suffix, data in (("stdout", stdout), ("stderr", stderr)):
            raw = data.encode() if isinstance(data, str) else data
            (self.fake / f"{name}.{suffix}").write_bytes(raw)
        (self.fake / f"{name}.status").write_text(f"{status}\n")

    def bind(self, address: str, driver: str | None) -> None:
        """Bind ``address`` to ``driver`` in sysfs (``None``: unbind)."""
        link = _device_dir(self.sys, address) / "driver"
        if link.is_symlink():
            link.unlink()
        if driver is not None:
            _link_driver(self.sys, address, driver)

    def remove_proc_modules(self) -> None:
        (self.proc / "modules").unlink()

    def set_proc_modules(self, text: str) -> None:
        (self.proc / "modules").write_text(text)

    def add_builtin_modules(self, names: Iterable[str]) -> None:
        for name in names:
            (self.sys / "module" / name / "parameters").mkdir(parents=True, exist_ok=True)


def running(pid: int) -> bool:
    """Alive, as opposed to gone or a zombie waiting for init to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def build_fake_host(root: Path, profile: Profile = PASSTHROUGH) -> FakeHost:
    """A ready host: every program present and answering, vfio loaded, GPUs in sysfs.

    A folder that already holds a complete fake host of the same profile is
    reused as it is, so that the walkthrough in docs/controlplane.md can set up
    its environment again in another shell while an agent reads the host.  A
    build cut short is completed.
    """
    host = FakeHost(root, profile)
    mark = host.fake / BUILT_MARK
    if mark.is_file():
        built = mark.read_text().strip()
        if built != profile.lspci_fixture:
            raise ValueError(f"{root} holds a fake host of another profile ({built})")
        return host
    for folder in (host.bin, host.fake, host.proc / "sys" / "kernel", host.data):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "_respond.sh", host.fake / "_respond.sh")
    for name in PROGRAMS:
        shutil.copy2(HERE / name, host.bin / name)
    for tool, fixture in VERSION_FIXTURES.items():
        host.answer(tool, stdout=(FIXTURES / fixture).read_bytes())
        (host.fake / f"{tool}.args").write_text("--version\n")
    host.answer(
        "lspci",
        stdout=(FIXTURES / profile.lspci_fixture).read_bytes(),
        stderr=LIBKMOD_WARNING,
    )
    (host.fake / "lspci.args").write_text(LSPCI_ARGS + "\n")
    host.answer("nvidia-smi", stdout=profile.nvidia_smi_stdout)
    (host.fake / "nvidia-smi.args").write_text(NVIDIA_SMI_ARGS + "\n")
    _write_proc(host.proc)
    _write_sys(host.sys, profile.functions)
    write_passthrough(host, profile.functions)
    mark.write_text(profile.lspci_fixture + "\n")
    return host


def _write_proc(proc: Path) -> None:
    cpuinfo = "".join(
        f"processor\t: {n}\nvendor_id\t: AuthenticAMD\nmodel name\t: {CPU_MODEL}\n\n"
        for n in range(CPUS)
    )
    (proc / "cpuinfo").write_text(cpuinfo)
    (proc / "meminfo").write_text(
        f"MemTotal:       {MEM_TOTAL_KB} kB\n"
        "MemFree:         1000000 kB\n"
        f"MemAvailable:   {MEM_AVAILABLE_KB} kB\n"
        "Buffers:          200000 kB\n"
    )
    (proc / "sys" / "kernel" / "hostname").write_text(HOSTNAME + "\n")
    shutil.copy(FIXTURES / PROC_MODULES_FIXTURE, proc / "modules")


def _device_dir(sys_root: Path, address: str) -> Path:
    return sys_root / "devices" / "pci0000:00" / address


def _link_driver(sys_root: Path, address: str, driver: str) -> None:
    (sys_root / "bus" / "pci" / "drivers" / driver).mkdir(parents=True, exist_ok=True)
    _symlink(_device_dir(sys_root, address) / "driver", f"../../../bus/pci/drivers/{driver}")


def _symlink(link: Path, target: str) -> None:
    """``link`` -> ``target``, replacing what an unfinished build left there."""
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)


def _write_sys(sys_root: Path, functions: Iterable[FakeFunction]) -> None:
    devices = sys_root / "bus" / "pci" / "devices"
    devices.mkdir(parents=True, exist_ok=True)
    (sys_root / "module").mkdir(exist_ok=True)
    for function in functions:
        real = _device_dir(sys_root, function.address)
        real.mkdir(parents=True, exist_ok=True)
        (real / "class").write_text(f"0x{function.class_code}\n")
        (real / "vendor").write_text(f"0x{function.vendor}\n")
        (real / "device").write_text(f"0x{function.device}\n")
        if function.driver is not None:
            _link_driver(sys_root, function.address, function.driver)
        if function.iommu_group is not None:
            (sys_root / "kernel" / "iommu_groups" / function.iommu_group).mkdir(
                parents=True, exist_ok=True
            )
            _symlink(real / "iommu_group", f"../../../kernel/iommu_groups/{function.iommu_group}")
        _symlink(devices / function.address, f"../../../devices/pci0000:00/{function.address}")


__all__ = [
    "EXPECTED_VERSIONS",
    "NVIDIA_DRIVER",
    "PASSTHROUGH",
    "PROGRAMS",
    "TOOLS",
    "FakeFunction",
    "FakeHost",
    "Profile",
    "build_fake_host",
    "running",
]


# --- IOMMU groups, /dev/vfio and the GPU health files ----------------------------------------

SYSFS_FIXTURES: Final = FIXTURES / "sysfs"
HEALTH_FILES: Final = {
    "config": "config/nvidia_gk104_gtx760_first80_CONVERTED.bin",
    "aer_dev_fatal": "aer/aer_dev_fatal.linux-5.5-to-6.17_RECONSTRUCTED",
    "aer_dev_nonfatal": "aer/aer_dev_nonfatal.linux-5.5-to-6.17_RECONSTRUCTED",
    "current_link_width": "link/current_link_width.real_16",
    "max_link_width": "link/max_link_width.real_16",
    "current_link_speed": "link/current_link_speed.real_16.0GT_PCIe",
    "max_link_speed": "link/max_link_speed.real_16.0GT_PCIe",
    "reset_method": "reset_method/sandisk_nvme_flr_bus.real",
}
VFIO_DRIVERS: Final = ("vfio-pci", "vfio_pci")  # and the variants ending so


def write_passthrough(host: FakeHost, functions: Iterable[FakeFunction]) -> None:
    """Group listings, ``dev/vfio/<N>`` and healthy real-format health files for ``functions``."""
    for function in functions:
        if function.iommu_group is None:
            continue
        members = host.sys / "kernel" / "iommu_groups" / function.iommu_group / "devices"
        members.mkdir(parents=True, exist_ok=True)
        _symlink(members / function.address, f"../../../../devices/pci0000:00/{function.address}")
        if function.driver is not None and function.driver.endswith(VFIO_DRIVERS):
            (host.dev / "vfio").mkdir(parents=True, exist_ok=True)
            (host.dev / "vfio" / function.iommu_group).touch()
        if not function.class_code.startswith("06"):
            for name, fixture in HEALTH_FILES.items():
                target = _device_dir(host.sys, function.address) / name
                target.write_bytes((SYSFS_FIXTURES / fixture).read_bytes())


def set_aer_total(host: FakeHost, address: str, kind: str, count: int) -> None:
    """Rewrite ``aer_dev_<kind>`` (``fatal``/``nonfatal``) with its TOTAL line at ``count``."""
    path = _device_dir(host.sys, address) / f"aer_dev_{kind}"
    total = f"TOTAL_ERR_{kind.upper()}"
    lines = [
        f"{total} {count}" if line.startswith(total + " ") else line
        for line in path.read_text().splitlines()
    ]
    _replace_file(path, ("\n".join(lines) + "\n").encode())


def set_health_file(host: FakeHost, address: str, name: str, content: bytes | None) -> None:
    """Write one health file of ``address`` (``None``: remove it, as on an older kernel)."""
    path = _device_dir(host.sys, address) / name
    if content is None:
        path.unlink(missing_ok=True)
    else:
        _replace_file(path, content)


def fall_off_bus(host: FakeHost, address: str) -> None:
    """Config space reads all ones, as for a GPU that fell off the bus."""
    fixture = SYSFS_FIXTURES / "config" / "fallen_off_all_ones_64_RECONSTRUCTED.bin"
    set_health_file(host, address, "config", fixture.read_bytes())


def vanish(host: FakeHost, address: str) -> None:
    """The function is removed from sysfs (surprise removal): its directory and links go."""
    (host.sys / "bus" / "pci" / "devices" / address).unlink(missing_ok=True)
    shutil.rmtree(_device_dir(host.sys, address), ignore_errors=True)
    for members in (host.sys / "kernel" / "iommu_groups").glob("*/devices"):
        (members / address).unlink(missing_ok=True)


def remove_vfio_node(host: FakeHost, group: str) -> None:
    (host.dev / "vfio" / group).unlink(missing_ok=True)


def _replace_file(path: Path, content: bytes) -> None:
    """Atomically, so that a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


# --- passthrough profiles: two RTX 3090s (the dual_rtx3090 lspci fixture's addresses) ---------

DUAL_LSPCI: Final = "lspci/dual_rtx3090_nvidia_lspci_Dvmmnnk_CONVERTED.txt"
GPU_A: Final = "0000:05:00.0"
GPU_B: Final = "0000:0a:00.0"


def _dual(
    groups: tuple[str, str],
    drivers: tuple[str | None, str | None, str | None, str | None],
    root_port_group: str | None = None,
) -> Profile:
    """GPU A (05:00.0) and its audio (05:00.1) in ``groups[0]``, GPU B (0a:00.0) and its
    audio in ``groups[1]``, bound to ``drivers`` in that order; the root port above them
    in ``root_port_group`` when given (on pcieport, as on boards without ACS)."""
    a_gpu, a_audio, b_gpu, b_audio = drivers
    functions = [
        _HOST_BRIDGE,
        FakeFunction("0000:00:01.0", "060400", "8086", "1901", "pcieport", root_port_group),
        FakeFunction(GPU_A, "030000", "10de", "2204", a_gpu, groups[0]),
        FakeFunction("0000:05:00.1", "040300", "10de", "1aef", a_audio, groups[0]),
        FakeFunction(GPU_B, "030000", "10de", "2204", b_gpu, groups[1]),
        FakeFunction("0000:0a:00.1", "040300", "10de", "1aef", b_audio, groups[1]),
    ]
    return Profile(DUAL_LSPCI, tuple(functions))


_VFIO4: Final = ("vfio-pci", "vfio-pci", "vfio-pci", "vfio-pci")
# Two GPUs, each in its own group with its audio function: both assignable.
DUAL_VFIO: Final = _dual(("12", "13"), _VFIO4)
# No ACS: both GPUs, their audio functions and the root port share group 12.
TWO_GPUS_ONE_GROUP: Final = _dual(("12", "12"), _VFIO4, root_port_group="12")
# GPU A's audio function is on the host's snd_hda_intel: group 12 is not viable.
AUDIO_ON_HOST: Final = _dual(("12", "13"), ("vfio-pci", "snd_hda_intel", "vfio-pci", "vfio-pci"))
# The root port (pcieport, a bridge) shares GPU A's group: still viable.
BRIDGE_IN_GROUP: Final = _dual(("12", "13"), _VFIO4, root_port_group="12")
# GPU A on a vendor's variant of vfio-pci: assignable.
VARIANT_DRIVER: Final = _dual(
    ("12", "13"), ("nvgrace-gpu-vfio-pci", "vfio-pci", "vfio-pci", "vfio-pci")
)


__all__ += [
    "AUDIO_ON_HOST",
    "BRIDGE_IN_GROUP",
    "DUAL_VFIO",
    "GPU_A",
    "GPU_B",
    "TWO_GPUS_ONE_GROUP",
    "VARIANT_DRIVER",
    "fall_off_bus",
    "remove_vfio_node",
    "set_aer_total",
    "set_health_file",
    "vanish",
    "write_passthrough",
]
