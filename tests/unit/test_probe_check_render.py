"""The readable report of ``vectorlay-agent check``."""

from __future__ import annotations

from vectorlay.app.agent.check import render
from vectorlay.domain.messages import Dependency, Gpu, Hardware, HostReport, Storage

H100 = Gpu(
    "0000:17:00.0", "nvidia", "10de", "2330", "GH100 [H100 SXM5 80GB]", "vfio-pci", "25", True
)
UNBOUND = Gpu(
    "0000:18:00.0",
    "nvidia",
    "10de",
    "2330",
    "GH100 [H100 SXM5 80GB]",
    None,
    "26",
    False,
    problems=["0000:18:00.0 has no driver bound (passthrough needs vfio-pci)"],
)
OK_DEPS = [
    Dependency("containerd", True, "1.7.3"),
    Dependency("nerdctl", True, "2.2.1"),
    Dependency("kata-runtime", True, "3.0.0"),
    Dependency("virtiofsd", True, "1.14.0"),
    Dependency("vfio", True),
]


def report(gpus: list[Gpu], deps: list[Dependency], storage: Storage | None = None) -> HostReport:
    hardware = Hardware(
        hostname="gpu-node-17",
        cpu_model="AMD EPYC 7763 64-Core Processor",
        cpu_cores=128,
        ram_gb=504,
        storage=storage or Storage("/data", 500, 120, 24),
        gpu_info=[],
        gpus=gpus,
        gpu_source="lspci",
    )
    return HostReport("0.1.0", hardware, deps, all(d.ok for d in deps))


def test_ready_host() -> None:
    text = render(report([H100], OK_DEPS))
    lines = text.splitlines()
    assert lines[0] == "vectorlay-agent 0.1.0 on gpu-node-17"
    assert "CPU      AMD EPYC 7763 64-Core Processor (128 logical CPUs)" in lines
    assert "Memory   504 GB" in lines
    assert "Storage  /data: 500 GB, 120 GB used (24%)" in lines
    assert "GPUs     1, found with lspci" in lines
    assert "  GROUP  PCI ADDRESS   MODEL                   DRIVER    ASSIGNABLE  HEALTH" in lines
    assert "  25     0000:17:00.0  GH100 [H100 SXM5 80GB]  vfio-pci  yes         ok" in lines
    assert "  1 of 1 assignable to replicas" in lines
    assert "  kata-runtime  ok      3.0.0" in lines
    assert lines[-1] == "READY: every dependency is ok"
    assert all(line == line.rstrip() for line in lines)


def test_degraded_host_names_every_reason() -> None:
    deps = [
        *OK_DEPS[:2],
        Dependency("kata-runtime", False, None, "not found on PATH"),
        OK_DEPS[3],
        Dependency("vfio", False, None, "missing modules: vfio_pci"),
    ]
    text = render(report([H100, UNBOUND], deps, Storage("/data")))
    lines = text.splitlines()
    assert "Storage  /data: not found or not readable" in lines
    assert "  26     0000:18:00.0  GH100 [H100 SXM5 80GB]  (none)    no          ok" in lines
    assert "      - 0000:18:00.0 has no driver bound (passthrough needs vfio-pci)" in lines
    assert "  1 GPU(s) with no driver bound: reported, never assigned" in lines
    assert "  kata-runtime  FAIL    -        not found on PATH" in lines
    assert lines[-3:] == [
        "DEGRADED:",
        "  - kata-runtime: not found on PATH",
        "  - vfio: missing modules: vfio_pci",
    ]


def test_no_gpus() -> None:
    assert "GPUs     none, found with lspci" in render(report([], OK_DEPS)).splitlines()


def test_gpus_sharing_a_group_sit_together_with_their_problems() -> None:
    a = Gpu("0000:05:00.0", "nvidia", "10de", "2204", "GA102", "vfio-pci", "12", True)
    b = Gpu("0000:0a:00.0", "nvidia", "10de", "2204", "GA102", "vfio-pci", "12", True)
    bad = Gpu(
        "0000:02:00.0",
        "nvidia",
        "10de",
        "2204",
        "GA102",
        "vfio-pci",
        "13",
        False,
        "failed",
        ["0000:02:00.0 config space reads all ones (fallen off the bus)"],
    )
    lines = render(report([b, bad, a], OK_DEPS)).splitlines()
    start = lines.index("  GROUP  PCI ADDRESS   MODEL  DRIVER    ASSIGNABLE  HEALTH")
    assert lines[start + 1 : start + 7] == [
        "  12     0000:05:00.0  GA102  vfio-pci  yes         ok",
        "  12     0000:0a:00.0  GA102  vfio-pci  yes         ok",
        "  13     0000:02:00.0  GA102  vfio-pci  no          failed",
        "      - 0000:02:00.0 config space reads all ones (fallen off the bus)",
        "  IOMMU groups holding several GPUs (assigned together): 12 (2 GPUs)",
        "  2 of 3 assignable to replicas",
    ]
