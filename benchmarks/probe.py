"""How much a host probe costs, on the fake host of the tests.

Prints the median wall and CPU time of:

- one full probe (``HostProbe.report()``: lspci, four ``--version`` runs,
  /proc and /sys reads, statvfs), with the CPU its subprocesses used and
  the wall time the same probe takes with no program on PATH (no
  subprocess at all), so the share spent in subprocesses shows;
- the per-heartbeat ``metrics()`` on a passthrough host (every GPU on
  vfio-pci: no subprocess) and on a host whose GPUs are on the nvidia
  driver (one nvidia-smi run each time);
- the per-heartbeat GPU state and health read (``gpus()``: drivers, IOMMU
  groups, ``/dev/vfio`` stats, config/AER/link/reset_method files) on the
  8-GPU passthrough host, through the probe (with its worker-thread hop)
  and the reader alone, with the number of programs it ran (must be 0);
- baselines from the same run: spawning ``/bin/true`` once, and the naive
  psutil calls (``virtual_memory()`` + ``disk_usage()``).

Targets: metrics and the health read each under 1 ms of CPU when no
subprocess is needed; a full probe under 300 ms wall on the fake host.

    .venv/bin/python benchmarks/probe.py [--backend asyncio|trio] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.support import NVIDIA_DRIVER, PASSTHROUGH, FakeHost, build_fake_host  # noqa: E402

from vectorlay.adapters.commands import run_command  # noqa: E402
from vectorlay.adapters.probe.gpustate import GpuStateReader  # noqa: E402
from vectorlay.adapters.probe.host import HostProbe  # noqa: E402

HEALTH = "gpus(): GPU state + health, 8 GPUs"
HEALTH_READER = "  the reader alone"


@dataclass
class Sample:
    wall: float
    cpu: float
    children_cpu: float


@dataclass
class Figures:
    name: str
    samples: list[Sample]

    def median(self, field: str) -> float:
        return float(statistics.median(float(getattr(s, field)) for s in self.samples))

    def mean(self, field: str) -> float:
        # Child CPU is accounted in coarse steps; a mean over many runs is
        # steadier than a median there.
        return statistics.fmean(float(getattr(s, field)) for s in self.samples)

    def line(self) -> str:
        return (
            f"{self.name:<44} {self.median('wall') * 1e3:9.3f} {self.median('cpu') * 1e3:9.3f} "
            f"{self.mean('children_cpu') * 1e3:10.3f}  (n={len(self.samples)})"
        )


def _children_cpu() -> float:
    # Finished (waited-for) children only: every probe command is waited for.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measure(name: str, runs: int, call: Callable[[], Awaitable[object]]) -> Figures:
    await call()  # warm caches and imports
    samples = []
    for _ in range(runs):
        child0 = _children_cpu()
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        await call()
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        samples.append(Sample(wall, cpu, _children_cpu() - child0))
    return Figures(name, samples)


def probe_for(host: FakeHost) -> HostProbe:
    return HostProbe(data_path=host.data, host_proc=host.proc, host_sys=host.sys, host_dev=host.dev)


async def naive_psutil(path: str) -> None:
    psutil.virtual_memory()
    psutil.disk_usage(path)


async def bench(runs: int) -> list[Figures]:
    with tempfile.TemporaryDirectory() as tmp:
        passthrough = build_fake_host(Path(tmp) / "passthrough", PASSTHROUGH)
        nvidia = build_fake_host(Path(tmp) / "nvidia", NVIDIA_DRIVER)
        empty_path = Path(tmp) / "empty-bin"
        empty_path.mkdir()
        figures = []

        figures.append(
            await measure(
                "baseline: spawn /bin/true once",
                runs,
                lambda: run_command(["/bin/true"], timeout=5),
            )
        )
        figures.append(
            await measure(
                "baseline: psutil virtual_memory+disk_usage",
                runs * 20,
                lambda: naive_psutil(str(passthrough.data)),
            )
        )

        os.environ["PATH"] = passthrough.path_env
        probe = probe_for(passthrough)
        figures.append(await measure("report(), fake host (lspci + 4 tools)", runs, probe.report))
        os.environ["PATH"] = str(empty_path)
        figures.append(
            await measure(
                "report(), nothing on PATH (no subprocess)", runs, probe_for(passthrough).report
            )
        )

        os.environ["PATH"] = passthrough.path_env
        await probe.report()
        figures.append(await measure("metrics(), all GPUs on vfio-pci", runs * 20, probe.metrics))
        calls = len(passthrough.calls())
        figures.append(await measure(HEALTH, runs * 20, probe.gpus))
        reported = (await probe.report()).hardware.gpus
        calls = len(passthrough.calls())
        reader = GpuStateReader(passthrough.sys, passthrough.dev)

        async def read_only() -> None:
            reader.read(reported)

        figures.append(await measure(HEALTH_READER, runs * 20, read_only))
        programs_during_health_reads = len(passthrough.calls()) - calls
        figures[-1].name += f" [{len(reported)} GPUs, {programs_during_health_reads} programs]"

        os.environ["PATH"] = nvidia.path_env
        nvidia_probe = probe_for(nvidia)
        await nvidia_probe.report()
        figures.append(
            await measure("metrics(), GPUs on nvidia (runs nvidia-smi)", runs, nvidia_probe.metrics)
        )
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    saved_path = os.environ.get("PATH", "")
    try:
        figures = anyio.run(bench, args.runs, backend=args.backend)
    finally:
        os.environ["PATH"] = saved_path
    print(
        f"host: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" backend {args.backend}"
    )
    print(
        f"{'per call (median; child CPU: mean)':<44} {'wall ms':>9} {'cpu ms':>9} {'child ms':>10}"
    )
    for fig in figures:
        print(fig.line())
    by_name = {f.name: f for f in figures}
    full = by_name["report(), fake host (lspci + 4 tools)"]
    bare = by_name["report(), nothing on PATH (no subprocess)"]
    cpu_total = full.median("cpu") + full.mean("children_cpu")
    wall_share = 1 - bare.median("wall") / full.median("wall")
    print()
    print(
        f"full probe: {full.median('wall') * 1e3:.1f} ms wall (target < 300 ms); "
        f"subprocesses: {wall_share:.0%} of its wall time, "
        f"{full.mean('children_cpu') / cpu_total:.0%} of its CPU time"
    )
    metrics = by_name["metrics(), all GPUs on vfio-pci"]
    print(
        f"metrics without subprocess: {metrics.median('cpu') * 1e3:.3f} ms CPU "
        f"(target < 1 ms), {metrics.median('wall') * 1e3:.3f} ms wall"
    )
    health = by_name[HEALTH]
    print(
        f"GPU state + health per heartbeat: {health.median('cpu') * 1e3:.3f} ms CPU "
        f"(target < 1 ms), {health.median('wall') * 1e3:.3f} ms wall; "
        f"together with metrics: {(health.median('cpu') + metrics.median('cpu')) * 1e3:.3f} ms CPU"
    )


if __name__ == "__main__":
    main()
