"""The pieces of ``prepare-gpus``: the bind sequence on the in-memory twin, the sysfs
adapter, the boot-time unit, and the command line."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.gpukernel import AMD_CPUINFO, INTEL_CPUINFO, FakeKernel, audio, gpu
from vectorlay.adapters.commands import CommandResult
from vectorlay.adapters.probe.binding import SysfsFileWriter, boot_vga, cpu_vendor, read_pci_state
from vectorlay.adapters.probe.binding_memory import MemorySysfs
from vectorlay.app import cli, options
from vectorlay.app.agent import prepare_gpus
from vectorlay.app.agent.gpu_unit import UNIT_NAME, persist, render_unit
from vectorlay.app.agent.gpubind import apply_plan, ensure_loaded
from vectorlay.app.agent.settings import PrepareGpusSettings
from vectorlay.domain.agent.gpuprep import GpuFacts, Plan, make_plan
from vectorlay.domain.agent.passthrough import GroupMember, IommuGroup

GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
SND = "snd_hda_intel"
REPO = Path(__file__).resolve().parents[2]


def plan_for(drivers: dict[str, str | None]) -> Plan:
    members = tuple(
        GroupMember(a, d, "0300" if a.endswith(".0") else "0403") for a, d in drivers.items()
    )
    return make_plan(
        [GpuFacts(GPU, "0300", drivers[GPU], "1")], {"1": IommuGroup("1", members)}, iommu_on=True
    )


# --- the bind sequence on the in-memory twin ---------------------------------------


def test_the_sequence_on_the_twin_moves_a_whole_group() -> None:
    sysfs = MemorySysfs.of({GPU: "nvidia", AUDIO: "snd_hda_intel"}, loaded=["vfio-pci"])
    plan = make_plan(
        [GpuFacts(GPU, "0300", "nvidia", "1")],
        {
            "1": IommuGroup(
                "1",
                (GroupMember(GPU, "nvidia", "0300"), GroupMember(AUDIO, "snd_hda_intel", "0403")),
            )
        },
        iommu_on=True,
        selected=[GPU],
    )
    outcomes = apply_plan(plan, sysfs)
    assert [o.ok for o in outcomes] == [True, True]
    assert sysfs.drivers == {GPU: "vfio-pci", AUDIO: "vfio-pci"}
    assert sysfs.writes == [
        (f"bus/pci/devices/{GPU}/driver_override", "vfio-pci"),
        ("bus/pci/drivers/nvidia/unbind", GPU),
        ("bus/pci/drivers_probe", GPU),
        (f"bus/pci/devices/{AUDIO}/driver_override", "vfio-pci"),
        ("bus/pci/drivers/snd_hda_intel/unbind", AUDIO),
        ("bus/pci/drivers_probe", AUDIO),
    ]


def test_vfio_pci_not_loaded_leaves_the_device_driverless_then_given_back() -> None:
    # Without vfio-pci, drivers_probe finds no driver for the override:
    # the device would stay driverless, so the override is cleared again.
    sysfs = MemorySysfs.of({GPU: None, AUDIO: "snd_hda_intel"})
    outcomes = apply_plan(plan_for({GPU: None, AUDIO: "snd_hda_intel"}), sysfs)
    assert outcomes[0].detail == "did not bind to vfio-pci: now on no driver"
    assert GPU not in sysfs.overrides
    assert outcomes[1].detail.startswith("not attempted")


def test_a_refused_write_is_reported_and_the_device_given_back() -> None:
    class Busy(MemorySysfs):
        def write(self, relative: str, value: str) -> None:
            if relative.endswith("/unbind"):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), relative)
            super().write(relative, value)

    sysfs = Busy({GPU: "vfio-pci", AUDIO: "snd_hda_intel"}, {"vfio-pci"})
    outcomes = apply_plan(plan_for({GPU: "vfio-pci", AUDIO: "snd_hda_intel"}), sysfs)
    assert outcomes[0].detail == (
        "write failed: Device or resource busy; did not bind to vfio-pci: now on snd_hda_intel"
    )
    assert AUDIO not in sysfs.overrides


def test_without_privilege_nothing_more_is_tried() -> None:
    class ReadOnly(MemorySysfs):
        def write(self, relative: str, value: str) -> None:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), relative)

    sysfs = ReadOnly({GPU: None, AUDIO: "snd_hda_intel"}, {"vfio-pci"})
    outcomes = apply_plan(plan_for({GPU: None, AUDIO: "snd_hda_intel"}), sysfs)
    assert "run as root" in outcomes[0].detail
    assert outcomes[1].detail.startswith("not attempted:")
    assert not any(o.ok for o in outcomes)


async def test_ensure_loaded_runs_the_loader_only_when_the_driver_is_missing() -> None:
    sysfs = MemorySysfs.of({GPU: None})
    calls: list[str] = []

    async def load(name: str) -> str | None:
        calls.append(name)
        sysfs.load(name)
        return None

    assert await ensure_loaded(sysfs, load) is None
    assert await ensure_loaded(sysfs, load) is None
    assert calls == ["vfio-pci"]

    async def fail(name: str) -> str | None:
        return "modprobe: FATAL: Module vfio-pci not found"

    problem = await ensure_loaded(MemorySysfs.of({}), fail)
    assert problem == (
        "vfio-pci is not loaded and modprobe vfio-pci did not load it: "
        "modprobe: FATAL: Module vfio-pci not found"
    )


# --- the sysfs adapter ---------------------------------------------------------------


def test_the_writer_never_creates_a_file_nor_leaves_sysfs(tmp_path: Path) -> None:
    writer = SysfsFileWriter(tmp_path)
    with pytest.raises(FileNotFoundError):
        writer.write("bus/pci/drivers_probe", GPU)
    assert not (tmp_path / "bus").exists()
    with pytest.raises(ValueError, match="not a path inside HOST_SYS"):
        writer.write("../etc/passwd", "x")
    with pytest.raises(ValueError, match="not a path inside HOST_SYS"):
        writer.write("/dev/vfio/1", "x")


def test_the_state_read_from_a_fake_tree(tmp_path: Path) -> None:
    kernel = FakeKernel(
        tmp_path, [gpu(GPU, None, "3", boot_vga=True), audio(AUDIO, group="3")], loaded=()
    )
    state = read_pci_state(kernel.sys)
    assert state.gpus == (GpuFacts(GPU, "0300", None, "3"),)
    assert [m.address for m in state.groups["3"].members] == [GPU, AUDIO]
    assert state.console == frozenset({GPU})
    assert state.iommu_on
    assert boot_vga(kernel.sys, AUDIO) is False  # no boot_vga file: not the console
    assert not SysfsFileWriter(kernel.sys).driver_loaded("vfio-pci")


@pytest.mark.parametrize(
    ("fixture", "vendor"), [(INTEL_CPUINFO, "GenuineIntel"), (AMD_CPUINFO, "AuthenticAMD")]
)
def test_cpu_vendor_from_real_cpuinfo(fixture: Path, vendor: str) -> None:
    assert cpu_vendor(fixture.read_text()) == vendor


def test_cpu_vendor_of_a_cpuinfo_without_one() -> None:
    s390 = (REPO / "tests/fixtures/cpuinfo/s390x_2827_cpuinfo.txt").read_text()
    assert cpu_vendor(s390) == "IBM/S390"
    assert cpu_vendor("") is None


# --- the boot-time unit ----------------------------------------------------------------


def test_contrib_holds_the_unit_the_command_installs() -> None:
    assert (REPO / "contrib" / UNIT_NAME).read_text() == render_unit()


async def test_persist_under_a_root_writes_exactly_the_unit(tmp_path: Path) -> None:
    done = await persist([GPU, AUDIO], root=tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"etc/systemd/system/{UNIT_NAME}"]
    text = (tmp_path / "etc/systemd/system" / UNIT_NAME).read_text()
    assert (
        f"ExecStart=/usr/local/bin/vectorlay-agent prepare-gpus --apply --gpu {GPU} --gpu {AUDIO}"
        in text
    )
    assert "Before=containerd.service vectorlay-agent.service" in text
    assert oct((tmp_path / "etc/systemd/system" / UNIT_NAME).stat().st_mode & 0o777) == "0o644"
    assert not done.ran
    assert done.commands == (f"systemctl --root={tmp_path} enable {UNIT_NAME}",)


def test_persist_through_the_command_prints_what_to_run(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "host", [gpu(GPU, "vfio-pci", "1")])
    out = io.StringIO()
    settings = PrepareGpusSettings(apply=True, persist=True, root=tmp_path / "image")
    code = prepare_gpus.main(settings, env=kernel.env(), sysfs=kernel, out=out)
    assert code == 0
    assert f"Installed {tmp_path}/image/etc/systemd/system/{UNIT_NAME}" in out.getvalue()
    assert f"To run:\n  systemctl --root={tmp_path}/image enable {UNIT_NAME}" in out.getvalue()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # ExecStart must name an executable that exists where verify runs.
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(shutil.which("true") or "/bin/true", [GPU]))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert UNIT_NAME not in done.stderr, done.stderr


async def test_persist_on_this_host_runs_systemctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vectorlay.app.agent import gpu_unit

    written: list[Path] = []

    def write_unit(root: Path, text: str) -> Path:
        written.append(root)
        return root / "unit"

    monkeypatch.setattr(gpu_unit, "write_unit", write_unit)
    ran: list[Sequence[str]] = []

    async def systemctl(argv: Sequence[str]) -> CommandResult:
        ran.append(list(argv))
        return CommandResult(1 if "enable" in argv else 0, stderr=b"Failed to enable unit\n")

    done = await persist([], root=None, run=systemctl)
    assert written == [Path("/")]
    assert ran == [["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME]]
    assert done.ran
    assert done.problems == (f"systemctl enable {UNIT_NAME}: Failed to enable unit",)


# --- the command line -------------------------------------------------------------------


def test_gpu_addresses_are_normalized_and_bad_ones_refused() -> None:
    args = cli._parser().parse_args(["prepare-gpus", "--gpu", "01:00.0", "--gpu", "0000:01:00.0"])
    assert options.prepare_gpus_settings(args, {}).gpus == (GPU,)
    bad = cli._parser().parse_args(["prepare-gpus", "--gpu", "gpu0"])
    with pytest.raises(options.UsageError, match="--gpu: expected a PCI address"):
        options.prepare_gpus_settings(bad, {})
    root_alone = cli._parser().parse_args(["prepare-gpus", "--root", "/tmp/x"])
    with pytest.raises(options.UsageError, match="--root: only with --persist"):
        options.prepare_gpus_settings(root_alone, {})


def test_a_gpu_that_is_not_on_this_host_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path, [gpu(GPU, None, "1")])
    settings = PrepareGpusSettings(gpus=("0000:09:00.0",))
    assert prepare_gpus.main(settings, env=kernel.env(), sysfs=kernel) == 2
    assert "--gpu 0000:09:00.0: not a GPU on this host" in capsys.readouterr().err
    assert kernel.writes == []
