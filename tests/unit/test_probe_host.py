"""HostProbe on a fake host: the full report and the per-heartbeat metrics."""

from __future__ import annotations

import logging
import platform
import threading
import time
from pathlib import Path

import msgspec
import pytest

import vectorlay
from tests.fakes.host.fakehost import (
    CPU_MODEL,
    CPUS,
    EXPECTED_VERSIONS,
    FIXTURES,
    HOSTNAME,
    NVIDIA_DRIVER,
    PASSTHROUGH,
    TOOLS,
    FakeHost,
    build_fake_host,
)
from vectorlay.adapters.probe import host as host_module
from vectorlay.adapters.probe.host import HostProbe
from vectorlay.domain.agent.disk import GB, DiskReading
from vectorlay.domain.agent.replicas import assignable_slots
from vectorlay.domain.messages import HostReport, SystemInfoPayload


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = build_fake_host(tmp_path / "host")
    monkeypatch.setenv("PATH", fake.path_env)
    return fake


@pytest.fixture
def nvidia_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = build_fake_host(tmp_path / "host", NVIDIA_DRIVER)
    monkeypatch.setenv("PATH", fake.path_env)
    return fake


def roomy_disk(path: Path) -> DiskReading:
    """A 1 TB image store with 500 GB free, whatever the test machine has."""
    return DiskReading(str(path), str(path), total_bytes=1000 * GB, free_bytes=500 * GB)


def probe(host: FakeHost, **kwargs: object) -> HostProbe:
    kwargs.setdefault("disk_reader", roomy_disk)
    return HostProbe(
        data_path=host.data,
        host_proc=host.proc,
        host_sys=host.sys,
        host_dev=host.dev,
        **kwargs,  # type: ignore[arg-type]
    )


# --- report ----------------------------------------------------------------------------


async def test_ready_host(host: FakeHost) -> None:
    report = await probe(host).report()
    assert report.agent_version == vectorlay.__version__
    assert report.ready is True
    assert [d.name for d in report.dependencies] == [*TOOLS, "vfio", "disk"]
    assert {d.name: d.version for d in report.dependencies} == {
        **EXPECTED_VERSIONS,
        "vfio": None,
        "disk": None,
    }
    assert all(d.ok and d.detail == "" for d in report.dependencies[:-1])
    assert report.dependencies[-1].detail == "500 GB free on /var/lib/containerd"
    hw = report.hardware
    assert (hw.hostname, hw.cpu_model, hw.cpu_cores, hw.ram_gb) == (HOSTNAME, CPU_MODEL, CPUS, 504)
    assert hw.storage.path == str(host.data)
    assert hw.storage.total_gb is not None
    assert hw.storage.total_gb > 0
    assert hw.storage.used_gb is not None
    assert hw.storage.usage_percent is not None
    assert hw.gpu_source == "lspci"
    assert [g.pci_address for g in hw.gpus] == PASSTHROUGH.gpu_addresses
    assert [g.iommu_group for g in hw.gpus] == [str(n) for n in range(30, 38)]
    assert {(g.vendor, g.model, g.driver) for g in hw.gpus} == {
        ("nvidia", "AD102GL [RTX 6000 Ada Generation]", "vfio-pci")
    }
    assert hw.gpu_info[0] == (
        "0000:5a:00.0 VGA compatible controller [0300]: NVIDIA Corporation "
        "AD102GL [RTX 6000 Ada Generation] [10de:26b1]"
    )
    assert len(assignable_slots(hw.gpus)) == 8
    assert host.programs_run().count("lspci") == 1


async def test_report_is_the_system_info_payload_less_two_keys(host: FakeHost) -> None:
    report = await probe(host).report()
    data = msgspec.json.decode(msgspec.json.encode(report))
    assert set(data) == {"agent_version", "hardware", "dependencies", "ready"}
    payload = msgspec.json.decode(
        msgspec.json.encode({**data, "node_id": "node-1", "replicas": []}),
        type=SystemInfoPayload,
    )
    assert payload.hardware == report.hardware
    assert msgspec.json.decode(msgspec.json.encode(report), type=HostReport) == report


async def test_lspci_missing_sysfs_finds_every_gpu(host: FakeHost) -> None:
    with_lspci = await probe(host).report()
    host.remove_program("lspci")
    report = await probe(host).report()
    assert report.hardware.gpu_source == "sysfs"
    assert [(g.pci_address, g.driver, g.iommu_group) for g in report.hardware.gpus] == [
        (g.pci_address, g.driver, g.iommu_group) for g in with_lspci.hardware.gpus
    ]
    assert report.hardware.gpus[0].model == "Device 26b1"
    assert report.ready  # lspci is how GPUs are named, not a dependency


@pytest.mark.parametrize(
    "breakage",
    [
        {"stdout": "", "status": 1, "stderr": "pcilib: Cannot open /sys/bus/pci/devices\n"},
        {"stdout": b"\x00\xff\xfe junk \x1b[2J\n" * 100},
        {"stdout": ""},
    ],
)
async def test_unusable_lspci_falls_back_to_sysfs(
    host: FakeHost, breakage: dict[str, object]
) -> None:
    host.answer("lspci", **breakage)  # type: ignore[arg-type]
    report = await probe(host).report()
    assert report.hardware.gpu_source == "sysfs"
    assert len(report.hardware.gpus) == 8


async def test_hung_lspci_falls_back_within_its_timeout(host: FakeHost) -> None:
    host.hang("lspci")
    started = time.monotonic()
    report = await probe(host, command_timeout=0.5).report()
    assert time.monotonic() - started < 3
    assert report.hardware.gpu_source == "sysfs"
    assert len(report.hardware.gpus) == 8


@pytest.mark.parametrize("tool", TOOLS)
async def test_each_tool_missing(host: FakeHost, tool: str) -> None:
    host.remove_program(tool)
    report = await probe(host).report()
    assert report.ready is False
    failed = [d for d in report.dependencies if not d.ok]
    assert [(d.name, d.version, d.detail) for d in failed] == [(tool, None, "not found on PATH")]


async def test_hung_kata_runtime_is_bounded_by_its_own_timeout(host: FakeHost) -> None:
    host.hang("kata-runtime")
    started = time.monotonic()
    report = await probe(host, command_timeout=0.5).report()
    assert time.monotonic() - started < 3
    kata = report.dependencies[2]
    assert kata.name == "kata-runtime"
    assert not kata.ok
    assert kata.detail.endswith("--version` did not answer within 0.5 s")
    assert [d.ok for d in report.dependencies] == [True, True, False, True, True, True]


async def test_configured_nerdctl_path(host: FakeHost, tmp_path: Path) -> None:
    elsewhere = tmp_path / "opt" / "nerdctl"
    elsewhere.parent.mkdir()
    host.bin.joinpath("nerdctl").rename(elsewhere)
    report = await probe(host).report()
    assert report.dependencies[1].detail == "not found on PATH"
    # The fake answers from its own folder: give it one there.
    (tmp_path / "fake").symlink_to(host.fake)
    report = await probe(host, nerdctl=str(elsewhere)).report()
    assert (report.dependencies[1].ok, report.dependencies[1].version) == (True, "2.2.1")
    missing = await probe(host, nerdctl=str(tmp_path / "nope")).report()
    assert missing.dependencies[1].detail == f"not found: {tmp_path / 'nope'}"


async def test_vfio_built_in_without_proc_modules(host: FakeHost) -> None:
    host.remove_proc_modules()
    report = await probe(host).report()
    assert report.dependencies[-2].detail == "missing modules: vfio, vfio_pci, vfio_iommu_type1"
    host.add_builtin_modules(["vfio", "vfio_pci", "vfio_iommu_type1"])
    assert (await probe(host).report()).ready


async def test_unbound_gpu_is_reported_and_marked(host: FakeHost) -> None:
    hgx = FIXTURES / "lspci" / "hgx_h100_8gpu_4nvswitch_lspci_Dvmmnnk_CONVERTED.txt"
    host.answer("lspci", stdout=hgx.read_bytes())
    report = await probe(host).report()
    assert len(report.hardware.gpus) == 8
    assert all(g.driver is None for g in report.hardware.gpus)
    assert all(line.endswith(" (no driver bound)") for line in report.hardware.gpu_info)
    assert assignable_slots(report.hardware.gpus) == []


async def test_driver_comes_from_sysfs_when_lspci_has_no_driver_line(host: FakeHost) -> None:
    # lspci run without -k (or by a pciutils that cannot see drivers) prints no
    # Driver: line; sysfs still knows each GPU is on vfio-pci.
    fixture = FIXTURES / "lspci" / "rtx6000ada_x8_vfio_lspci_Dvmmnnk_CONVERTED.txt"
    without_k = b"".join(
        line
        for line in fixture.read_bytes().splitlines(keepends=True)
        if not line.startswith((b"Driver:", b"Module:"))
    )
    host.answer("lspci", stdout=without_k)
    report = await probe(host).report()
    assert report.hardware.gpu_source == "lspci"
    assert {g.driver for g in report.hardware.gpus} == {"vfio-pci"}
    assert not any(line.endswith(" (no driver bound)") for line in report.hardware.gpu_info)
    assert len(assignable_slots(report.hardware.gpus)) == 8


async def test_sysfs_driver_wins_over_lspci(host: FakeHost) -> None:
    host.bind("0000:5a:00.0", None)
    host.bind("0000:5d:00.0", "nvidia")
    report = await probe(host).report()  # lspci still says vfio-pci for both
    drivers = {g.pci_address: g.driver for g in report.hardware.gpus}
    assert (drivers["0000:5a:00.0"], drivers["0000:5d:00.0"]) == (None, "nvidia")
    assert report.hardware.gpu_info[0].endswith(" (no driver bound)")
    assert len(assignable_slots(report.hardware.gpus)) == 6


OTHER_HOST_LSPCI = "ocp_sriov_mellanox_vf_lspci_v_nn_mm_k_s_libkmod_warning_inline.txt"


async def test_lspci_without_gpus_yields_to_sysfs_with_gpus(
    host: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    # lspci reads the /sys it sees, not $HOST_SYS: from a container it may list
    # another machine's (or only bridge) functions while the host's GPUs are there.
    host.answer("lspci", stdout=(FIXTURES / "lspci" / OTHER_HOST_LSPCI).read_bytes())
    with caplog.at_level(logging.INFO, logger="vectorlay.adapters.probe.host"):
        report = await probe(host).report()
    assert report.hardware.gpu_source == "sysfs"
    assert [g.pci_address for g in report.hardware.gpus] == PASSTHROUGH.gpu_addresses
    assert {g.driver for g in report.hardware.gpus} == {"vfio-pci"}
    reasons = [r for r in caplog.records if "lspci lists no GPU" in r.getMessage()]
    assert [r.levelno for r in reasons] == [logging.INFO]


async def test_no_gpu_anywhere_stays_an_lspci_answer(host: FakeHost) -> None:
    host.answer("lspci", stdout=(FIXTURES / "lspci" / OTHER_HOST_LSPCI).read_bytes())
    for link in (host.sys / "bus" / "pci" / "devices").iterdir():
        link.unlink()
    report = await probe(host).report()
    assert (report.hardware.gpu_source, report.hardware.gpus) == ("lspci", [])


async def test_arm_cpu_is_named_from_cpuinfo(host: FakeHost) -> None:
    fixture = FIXTURES / "cpuinfo" / "gcp_axion_neoverse_v2_aarch64_cpuinfo.txt"
    (host.proc / "cpuinfo").write_bytes(fixture.read_bytes())
    report = await probe(host).report()
    assert (report.hardware.cpu_model, report.hardware.cpu_cores) == ("ARM Neoverse-V2", 1)


async def test_unnamed_cpu_is_unknown_never_this_machine_architecture(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    # platform.processor() runs `uname -p` and names the agent's architecture.
    monkeypatch.setattr(platform, "processor", lambda: "x86_64")
    (host.proc / "cpuinfo").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n\n")
    report = await probe(host).report()
    assert (report.hardware.cpu_model, report.hardware.cpu_cores) == ("unknown", 1)


async def test_missing_host_cpuinfo_falls_back_to_this_process_view(
    host: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own-proc"
    own.mkdir()
    fixture = FIXTURES / "cpuinfo" / "power9_powernv_8375_42A_cpuinfo_tail.txt"
    (own / "cpuinfo").write_bytes(fixture.read_bytes())
    monkeypatch.setattr(host_module, "OWN_PROC", own)
    (host.proc / "cpuinfo").unlink()
    report = await probe(host).report()
    assert report.hardware.cpu_model == "POWER9 (raw), altivec supported"


async def test_missing_data_path_and_host_files(host: FakeHost) -> None:
    (host.proc / "cpuinfo").unlink()
    (host.proc / "sys" / "kernel" / "hostname").unlink()
    (host.proc / "meminfo").unlink()
    report = await HostProbe(
        data_path=host.root / "no-such-dir", host_proc=host.proc, host_sys=host.sys
    ).report()
    hw = report.hardware
    assert (hw.storage.total_gb, hw.storage.used_gb, hw.storage.usage_percent) == (None,) * 3
    assert hw.hostname
    assert hw.cpu_cores >= 1
    assert hw.ram_gb > 0


async def test_host_roots_from_the_environment(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_PROC", str(host.proc))
    monkeypatch.setenv("HOST_SYS", str(host.sys))
    monkeypatch.setenv("HOST_DEV", str(host.dev))
    from_env = HostProbe(data_path=host.data)
    assert (from_env.host_proc, from_env.host_sys) == (host.proc, host.sys)
    assert from_env.host_dev == host.dev
    report = await from_env.report()
    assert report.ready
    assert all(g.assignable for g in report.hardware.gpus)  # /dev/vfio/<N> found under HOST_DEV
    monkeypatch.setenv("HOST_PROC", "")
    monkeypatch.delenv("HOST_SYS")
    monkeypatch.delenv("HOST_DEV")
    default = HostProbe(data_path=host.data)
    assert (default.host_proc, default.host_sys) == (Path("/proc"), Path("/sys"))
    assert default.host_dev == Path("/dev")


# --- metrics ---------------------------------------------------------------------------


async def test_metrics_on_a_passthrough_host_run_nothing(host: FakeHost) -> None:
    p = probe(host)
    await p.report()
    before = host.calls()
    metrics = await p.metrics()
    assert host.calls() == before  # no lspci, no nvidia-smi: every GPU is on vfio-pci
    assert metrics.gpu_utilization is None
    assert (metrics.memory_total_gb, metrics.memory_used_gb) == (504, 120)
    assert metrics.storage.path == str(host.data)
    assert metrics.storage.total_gb is not None
    assert metrics.storage.usage_percent is not None


async def test_metrics_with_nvidia_driver(nvidia_host: FakeHost) -> None:
    p = probe(nvidia_host)
    await p.report()
    metrics = await p.metrics()
    assert metrics.gpu_utilization == 51  # 40 and 61
    assert nvidia_host.programs_run().count("nvidia-smi") == 1
    assert nvidia_host.programs_run().count("lspci") == 1


async def test_metrics_follow_a_driver_change_without_lspci(nvidia_host: FakeHost) -> None:
    p = probe(nvidia_host)
    await p.report()
    nvidia_host.bind("0000:05:00.0", "vfio-pci")
    assert (await p.metrics()).gpu_utilization == 61  # only 0a:00.0 is still on nvidia
    nvidia_host.bind("0000:0a:00.0", "vfio-pci")
    runs = nvidia_host.programs_run().count("nvidia-smi")
    assert (await p.metrics()).gpu_utilization is None
    assert nvidia_host.programs_run().count("nvidia-smi") == runs
    assert nvidia_host.programs_run().count("lspci") == 1


async def test_metrics_before_any_report_use_sysfs(nvidia_host: FakeHost) -> None:
    metrics = await probe(nvidia_host).metrics()
    assert metrics.gpu_utilization == 51
    assert "lspci" not in nvidia_host.programs_run()


async def test_metrics_without_nvidia_smi_or_with_a_broken_one(nvidia_host: FakeHost) -> None:
    p = probe(nvidia_host, command_timeout=0.3)
    nvidia_host.answer(
        "nvidia-smi", stdout="", stderr="NVML: Driver/library version mismatch\n", status=18
    )
    assert (await p.metrics()).gpu_utilization is None
    nvidia_host.hang("nvidia-smi")
    assert (await p.metrics()).gpu_utilization is None
    nvidia_host.remove_program("nvidia-smi")
    assert (await p.metrics()).gpu_utilization is None


async def test_metrics_average_the_gpus_nvidia_smi_could_read(nvidia_host: FakeHost) -> None:
    nvidia_host.answer(
        "nvidia-smi",
        stdout="00000000:05:00.0, 40\n"
        "Unable to determine the device handle for GPU0000:0A:00.0: Unknown Error\n",
        status=15,
    )
    assert (await probe(nvidia_host).metrics()).gpu_utilization == 40


async def test_metrics_with_missing_data_path(host: FakeHost) -> None:
    metrics = await HostProbe(
        data_path=host.root / "later", host_proc=host.proc, host_sys=host.sys
    ).metrics()
    assert metrics.storage.path == str(host.root / "later")
    assert metrics.storage.total_gb is None
    assert metrics.storage.usage_percent is None


async def test_metrics_fall_back_to_this_process_memory(host: FakeHost) -> None:
    (host.proc / "meminfo").write_text("garbage\n")
    metrics = await probe(host).metrics()
    assert metrics.memory_total_gb is not None
    assert metrics.memory_total_gb > 0


async def test_hung_statvfs_never_stalls_a_heartbeat(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    calls: list[str] = []

    def stuck(path: str) -> tuple[int, int, float] | None:
        calls.append(path)
        release.wait(10)  # a dead NFS mount under the data path
        return None

    monkeypatch.setattr(host_module, "_disk_usage", stuck)
    p = probe(host, command_timeout=0.2)
    try:
        started = time.monotonic()
        first = await p.metrics()
        second = await p.metrics()
        elapsed = time.monotonic() - started
        assert first.storage.total_gb is None
        assert second.storage.total_gb is None
        assert len(calls) == 1  # the second heartbeat did not start another thread
        assert elapsed < 2
        assert first.memory_total_gb == 504  # the rest of the heartbeat is intact
    finally:
        release.set()
