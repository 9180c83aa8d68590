"""In-memory twins of the host: its probe, the image store's disk and the engine's images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from vectorlay.domain.agent.disk import DiskCheck, DiskReading, disk_dependency
from vectorlay.domain.agent.imagegc import Image, normalize_ref
from vectorlay.domain.messages import (
    Dependency,
    Gpu,
    Hardware,
    HostMetrics,
    HostReport,
    Storage,
)
from vectorlay.errors import ContainerRuntimeError

if TYPE_CHECKING:
    from vectorlay import ports


def sample_report(*, ready: bool = True, gpus: int = 0) -> HostReport:
    """A plausible host report for tests; ``gpus`` vfio-bound NVIDIA GPUs."""
    gpu_list = [
        Gpu(
            pci_address=f"0000:{0x17 + i:02x}:00.0",
            vendor="nvidia",
            vendor_id="10de",
            device_id="2330",
            model="GH100 [H100 SXM5 80GB]",
            driver="vfio-pci",
            iommu_group=str(25 + i),
            assignable=True,
        )
        for i in range(gpus)
    ]
    deps = [
        Dependency(name, True, "1.0.0")
        for name in ("containerd", "nerdctl", "kata-runtime", "virtiofsd")
    ] + [Dependency("vfio", ready, None, "" if ready else "missing modules: vfio_pci")]
    return HostReport(
        agent_version="0.1.0",
        hardware=Hardware(
            hostname="test-node",
            cpu_model="Test CPU",
            cpu_cores=8,
            ram_gb=64,
            storage=Storage("/data", 500),
            gpu_info=[
                f"{g.pci_address} 3D controller [0302]: NVIDIA Corporation {g.model} [10de:2330]"
                for g in gpu_list
            ],
            gpus=gpu_list,
        ),
        dependencies=deps,
        ready=ready,
    )


@dataclass
class StaticProbe:
    """Returns the report and metrics it was given; counts calls."""

    host: HostReport = field(default_factory=sample_report)
    host_metrics: HostMetrics = field(
        default_factory=lambda: HostMetrics(None, 24, 64, Storage("/data", 500, 120, 24))
    )
    report_calls: int = 0
    metrics_calls: int = 0

    async def report(self) -> HostReport:
        self.report_calls += 1
        await anyio.lowlevel.checkpoint()
        return self.host

    async def metrics(self) -> HostMetrics:
        self.metrics_calls += 1
        await anyio.lowlevel.checkpoint()
        return self.host_metrics

    async def gpus(self) -> list[Gpu]:
        await anyio.lowlevel.checkpoint()
        return list(self.host.hardware.gpus)


if TYPE_CHECKING:
    _probe: ports.HardwareProbe = StaticProbe()


@dataclass
class MemoryDisk:
    """An image store whose size and free space a test sets; counts readings."""

    path: str = "/var/lib/containerd"
    total_bytes: int = 1000 * (1 << 30)
    free_bytes: int = 500 * (1 << 30)
    min_free_gb: int = 20
    reads: int = 0

    async def disk(self) -> DiskCheck:
        self.reads += 1
        await anyio.lowlevel.checkpoint()
        reading = DiskReading(self.path, self.path, self.total_bytes, self.free_bytes)
        return DiskCheck(reading, disk_dependency(reading, self.min_free_gb))


if TYPE_CHECKING:
    _disk: ports.DiskProbe = MemoryDisk()


# --- images ------------------------------------------------------------------


@dataclass
class MemoryImages:
    """An engine's images: removing one frees its size on ``disk`` (when given).

    ``used`` holds the references containers use: removing one of those
    fails as nerdctl does (a conflict).  ``fail`` maps a reference to the
    error its removal raises.  ``gate`` (when set) holds every removal until
    it is set.
    """

    disk: MemoryDisk | None = None
    held: dict[str, Image] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    fail: dict[str, Exception] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    gate: anyio.Event | None = None
    lists: int = 0

    def add(self, ref: str, size_bytes: int, image_id: str = "") -> None:
        ref = normalize_ref(ref)
        self.held[ref] = Image(ref, image_id or f"{abs(hash(ref)) % 16**12:012x}", size_bytes)

    async def images(self) -> Sequence[Image]:
        self.lists += 1
        await anyio.lowlevel.checkpoint()
        return list(self.held.values())

    async def images_in_use(self) -> set[str]:
        await anyio.lowlevel.checkpoint()
        return {normalize_ref(r) for r in self.used}

    async def remove_image(self, ref: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await anyio.lowlevel.checkpoint()
        if ref in self.fail:
            raise self.fail.pop(ref)
        if normalize_ref(ref) in {normalize_ref(r) for r in self.used}:
            raise ContainerRuntimeError(
                f"conflict: unable to delete {ref} (must be forced) - "
                "image is being used by stopped container 59261bebc811"
            )
        image = self.held.pop(normalize_ref(ref), None)
        if image is None:
            raise ContainerRuntimeError(f"no such image: {ref}")
        self.removed.append(image.ref)
        if self.disk is not None:
            self.disk.free_bytes += image.size_bytes


if TYPE_CHECKING:
    _images: ports.ImageRuntime = MemoryImages()
