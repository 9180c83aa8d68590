"""The real host behind the :class:`~vectorlay.ports.HardwareProbe` port.

:class:`HostProbe` puts the single-purpose adapters together:

- GPUs from ``lspci -Dvmmnnk`` (:mod:`.lspci`), or from ``$HOST_SYS`` when
  lspci is missing, its answer is unusable, or it lists no GPU where
  ``$HOST_SYS`` does (:mod:`.sysfs`); the result says which (``gpu_source``).
  Drivers and IOMMU groups from ``$HOST_SYS`` (lspci's ``Driver:`` line
  only for a device sysfs does not list).
- hostname, CPU and memory from ``$HOST_PROC`` (:mod:`.procfs`), falling
  back to what this process can see; a CPU that ``cpuinfo`` does not name
  is ``unknown``.
- dependencies: ``containerd``, ``nerdctl``, ``kata-runtime`` and
  ``virtiofsd`` from ``PATH`` with their ``--version`` (:mod:`.versions`),
  and the vfio modules (:mod:`.vfio`); ``disk``, the free space of the
  image store's filesystem (:mod:`.disk`, rules in ``domain.agent.disk``).
- per heartbeat: memory, storage of the data path and GPU utilization
  (:mod:`.nvidia_smi`, run only while some GPU is on the ``nvidia`` driver).

``report()`` runs every outside command at once, each under its own timeout,
so it answers within about one ``command_timeout`` whatever hangs.
``metrics()`` is built to run every heartbeat: it never runs lspci, reads
one ``/proc`` file and one symlink per GPU, and runs ``statvfs`` in a worker
thread with a timeout (a hung network mount under the data path must not
stop the event loop).

Sizes are whole GiB, reported under the protocol's ``*_gb`` names.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import anyio.to_thread
import psutil

import vectorlay
from vectorlay.adapters.probe import lspci, sysfs
from vectorlay.adapters.probe.disk import read_disk
from vectorlay.adapters.probe.gpustate import GpuStateReader
from vectorlay.adapters.probe.nvidia_smi import mean_utilization, query_utilization
from vectorlay.adapters.probe.pci import PciFunction, gpu_line, is_gpu, to_gpu
from vectorlay.adapters.probe.procfs import (
    CpuInfo,
    MemInfo,
    parse_cpuinfo,
    parse_meminfo,
    read_hostname,
    read_text,
)
from vectorlay.adapters.probe.versions import check_tool, locate
from vectorlay.adapters.probe.vfio import check_vfio
from vectorlay.adapters.runtime.imagestores import default_image_store
from vectorlay.domain.agent.disk import (
    DEFAULT_MIN_FREE_GB,
    DISK,
    DiskCheck,
    DiskReading,
    disk_dependency,
)
from vectorlay.domain.hostreport import is_ready
from vectorlay.domain.messages import (
    Dependency,
    Gpu,
    Hardware,
    HostMetrics,
    HostReport,
    Storage,
)

if TYPE_CHECKING:
    from vectorlay.ports import HardwareProbe

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_COMMAND_TIMEOUT: Final = 5.0
GIB: Final = 1 << 30
# Dependencies in the order reports list them; vfio and disk come last.
TOOLS: Final = ("containerd", "nerdctl", "kata-runtime", "virtiofsd")


def engine_tools(engine: str) -> tuple[str, ...]:
    """The tools checked with ``engine``: containerd only where the engine runs on it.

    nerdctl and Docker (dockerd >= 23 starts Kata's containerd shim) need
    containerd; Podman drives its OCI runtime through conmon, without it.
    """
    if engine == "nerdctl":
        return TOOLS
    if engine == "podman":
        return (engine, "kata-runtime", "virtiofsd")
    return ("containerd", engine, "kata-runtime", "virtiofsd")


GPU_SOURCE_LSPCI: Final = "lspci"
GPU_SOURCE_SYSFS: Final = "sysfs"
NVIDIA_DRIVER: Final = "nvidia"
OWN_PROC: Final = Path("/proc")


@dataclass(frozen=True, slots=True)
class _Facts:
    hostname: str
    cpu: CpuInfo
    memory: MemInfo | None


def host_root(env: Mapping[str, str], var: str, default: str) -> Path:
    """``$HOST_PROC`` / ``$HOST_SYS`` / ``$HOST_DEV``, or the default when unset or empty."""
    return Path(env.get(var) or default)


class HostProbe:
    """Probe of the Linux host this agent runs on.

    ``host_proc``/``host_sys`` of ``None`` mean ``$HOST_PROC``/``$HOST_SYS``
    from the environment at construction time, else ``/proc`` and ``/sys``.
    ``engine`` picks the tools checked (:func:`engine_tools`);
    ``engine_cli`` (``nerdctl`` is its former name) is the engine's command,
    a name looked up on ``PATH`` or a path (with a ``/``).
    """

    def __init__(
        self,
        *,
        data_path: Path,
        engine: str = "nerdctl",
        engine_cli: str | None = None,
        nerdctl: str | None = None,
        host_proc: Path | None = None,
        host_sys: Path | None = None,
        host_dev: Path | None = None,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        image_store: Path | None = None,
        min_free_gb: int = DEFAULT_MIN_FREE_GB,
        disk_reader: Callable[[Path], DiskReading] = read_disk,
    ) -> None:
        self.data_path = Path(data_path)
        self.engine = engine
        self.engine_cli = engine_cli or nerdctl or engine
        self.tools = engine_tools(engine)
        self.image_store = image_store if image_store is not None else default_image_store(engine)
        self.min_free_gb = min_free_gb
        self._disk_reader = disk_reader
        self._disk_gate = _ThreadGate()
        self.host_proc = (
            host_proc if host_proc is not None else host_root(os.environ, "HOST_PROC", "/proc")
        )
        self.host_sys = (
            host_sys if host_sys is not None else host_root(os.environ, "HOST_SYS", "/sys")
        )
        self.host_dev = (
            host_dev if host_dev is not None else host_root(os.environ, "HOST_DEV", "/dev")
        )
        self.command_timeout = command_timeout
        self._gpus: tuple[PciFunction, ...] | None = None
        self._gpu_state = GpuStateReader(self.host_sys, self.host_dev)
        self._reported: list[Gpu] | None = None  # the GPUs of the last report
        self._statvfs = _ThreadGate()

    # --- the port --------------------------------------------------------------

    async def report(self) -> HostReport:
        path_env = _path_env()
        found: dict[str, Dependency] = {}
        gpus: list[PciFunction] = []
        source: list[str] = []

        async def discover() -> None:
            functions, origin = await self._discover_gpus(path_env)
            gpus.extend(functions)
            source.append(origin)

        async def check(name: str, command: str) -> None:
            found[name] = await check_tool(
                name, command, path_env=path_env, timeout=self.command_timeout
            )

        async with anyio.create_task_group() as group:
            group.start_soon(discover)
            for name in self.tools:
                group.start_soon(check, name, self.engine_cli if name == self.engine else name)
            facts = await anyio.to_thread.run_sync(self._read_facts)
            found["vfio"] = await anyio.to_thread.run_sync(
                check_vfio, self.host_proc, self.host_sys
            )
            storage = await self._storage()
            found[DISK] = (await self.disk()).dependency
        self._gpus = tuple(gpus)
        self._reported = [to_gpu(g) for g in gpus]
        assessed = await anyio.to_thread.run_sync(self._gpu_state.read, self._reported)
        dependencies = [found[name] for name in (*self.tools, "vfio", DISK)]
        memory = facts.memory
        hardware = Hardware(
            hostname=facts.hostname,
            cpu_model=facts.cpu.model or "unknown",
            cpu_cores=facts.cpu.logical_cpus,
            ram_gb=_gib(memory.total_bytes) if memory else 0,
            storage=storage,
            gpu_info=[gpu_line(g) for g in gpus],
            gpus=assessed,
            gpu_source=source[0],
        )
        return HostReport(
            agent_version=vectorlay.__version__,
            hardware=hardware,
            dependencies=dependencies,
            ready=is_ready(dependencies),
        )

    async def metrics(self) -> HostMetrics:
        if self._gpus is None:
            # No report yet: sysfs alone names the GPUs (lspci is for reports).
            self._gpus = tuple(sysfs.read_gpu_functions(self.host_sys))
        memory = self._memory()
        storage = await self._storage()
        utilization = await self._utilization(self._gpus)
        return HostMetrics(
            gpu_utilization=utilization,
            memory_used_gb=_gib(memory.total_bytes - memory.available_bytes) if memory else None,
            memory_total_gb=_gib(memory.total_bytes) if memory else None,
            storage=storage,
        )

    async def disk(self) -> DiskCheck:
        """Free space of the image store's filesystem, and the ``disk`` dependency it gives."""
        path = str(self.image_store)
        reading = DiskReading(path, path, problem="an earlier statvfs has not returned")
        if not self._disk_gate.busy:
            with anyio.move_on_after(self.command_timeout) as scope:
                reading = await anyio.to_thread.run_sync(
                    self._disk_gate.run, self._read_disk, path, abandon_on_cancel=True
                )
            if scope.cancelled_caught:
                reading = DiskReading(
                    path, path, problem=f"statvfs did not answer within {self.command_timeout:g} s"
                )
        return DiskCheck(reading, disk_dependency(reading, self.min_free_gb))

    def _read_disk(self, path: str) -> DiskReading:
        return self._disk_reader(Path(path))

    async def gpus(self) -> list[Gpu]:
        if self._reported is None:
            self._reported = [to_gpu(g) for g in sysfs.read_gpu_functions(self.host_sys)]
        return await anyio.to_thread.run_sync(self._gpu_state.read, self._reported)

    # --- GPUs ------------------------------------------------------------------

    async def _discover_gpus(self, path_env: str) -> tuple[list[PciFunction], str]:
        located = locate("lspci", path_env)
        if located.path is not None:
            try:
                functions = await lspci.list_functions(located.path, timeout=self.command_timeout)
            except lspci.LspciFailed as exc:
                log.warning("%s; reading GPUs from %s", exc, sysfs.devices_dir(self.host_sys))
            else:
                gpus = self._with_sysfs_facts(f for f in functions if is_gpu(f))
                if gpus:
                    return gpus, GPU_SOURCE_LSPCI
                return await self._when_lspci_lists_no_gpu()
        else:
            log.info("lspci: %s; reading GPUs from %s", located.problem, self.host_sys)
        functions = await anyio.to_thread.run_sync(sysfs.read_gpu_functions, self.host_sys)
        return functions, GPU_SOURCE_SYSFS

    async def _when_lspci_lists_no_gpu(self) -> tuple[list[PciFunction], str]:
        # lspci reads the /sys it sees, which is not $HOST_SYS when the agent
        # runs in a container: trust it about names, not about absence.
        functions = await anyio.to_thread.run_sync(sysfs.read_gpu_functions, self.host_sys)
        if not functions:
            return [], GPU_SOURCE_LSPCI
        log.info(
            "lspci lists no GPU but %s lists %d; reporting those",
            sysfs.devices_dir(self.host_sys),
            len(functions),
        )
        return functions, GPU_SOURCE_SYSFS

    def _with_sysfs_facts(self, gpus: Iterable[PciFunction]) -> list[PciFunction]:
        """lspci's GPUs with the driver and IOMMU group that sysfs gives.

        sysfs is what the heartbeat reads too, and it knows the driver even
        when lspci printed no ``Driver:`` line (run without ``-k``, or by a
        pciutils that cannot see drivers); lspci's word counts only for a
        device sysfs does not list.
        """
        result = []
        for gpu in gpus:
            group = sysfs.iommu_group_of(self.host_sys, gpu.address) or gpu.iommu_group
            result.append(replace(gpu, driver=self._current_driver(gpu), iommu_group=group))
        return sorted(result, key=lambda g: g.address)

    def _current_driver(self, gpu: PciFunction) -> str | None:
        """sysfs's driver link (bound or unbound); ``gpu.driver`` if sysfs lacks the device."""
        driver = sysfs.driver_of(self.host_sys, gpu.address)
        return gpu.driver if isinstance(driver, sysfs.Absent) else driver

    async def _utilization(self, gpus: Sequence[PciFunction]) -> int | None:
        on_nvidia = [g.address for g in gpus if self._current_driver(g) == NVIDIA_DRIVER]
        if not on_nvidia:
            return None
        located = locate("nvidia-smi", _path_env())
        if located.path is None:
            return None
        values = await query_utilization(located.path, timeout=self.command_timeout)
        return mean_utilization(values, on_nvidia)

    # --- memory, storage, host facts --------------------------------------------

    def _memory(self) -> MemInfo | None:
        text = read_text(self.host_proc / "meminfo")
        memory = parse_meminfo(text) if text is not None else None
        if memory is not None:
            return memory
        try:
            vm = psutil.virtual_memory()
        except (OSError, RuntimeError):
            return None
        return MemInfo(int(vm.total), int(vm.available))

    def _read_facts(self) -> _Facts:
        hostname = read_hostname(self.host_proc) or socket.gethostname()
        text = read_text(self.host_proc / "cpuinfo")
        if text is None and self.host_proc != OWN_PROC:
            # cpuinfo is not namespaced: this process sees the host's CPUs.
            text = read_text(OWN_PROC / "cpuinfo")
        cpu = parse_cpuinfo(text) if text is not None else CpuInfo(None, 0)
        if cpu.logical_cpus == 0:
            cpu = CpuInfo(cpu.model, os.cpu_count() or 0)
        # A CPU that cpuinfo does not name stays unnamed ("unknown" in the
        # report): platform.processor() would run `uname -p` and give the
        # architecture ("x86_64"), which is not a model.
        return _Facts(hostname, cpu, self._memory())

    async def _storage(self) -> Storage:
        path = str(self.data_path)
        if self._statvfs.busy:
            # An earlier statvfs is still stuck (a dead network mount): do
            # not wait behind it, and do not pile up threads.
            return Storage(path=path)
        usage = None
        with anyio.move_on_after(self.command_timeout) as scope:
            usage = await anyio.to_thread.run_sync(
                self._statvfs.run, _disk_usage, path, abandon_on_cancel=True
            )
        if scope.cancelled_caught:
            log.warning(
                "statvfs of the data path %s did not answer within %g s; storage is unknown",
                path,
                self.command_timeout,
            )
        if usage is None:
            return Storage(path=path)
        total, used, percent = usage
        return Storage(
            path=path,
            total_gb=_gib(total),
            used_gb=_gib(used),
            usage_percent=_half_up(percent),
        )


class _ThreadGate:
    """Counts calls still running in worker threads.

    A thread abandoned at its timeout keeps running; the count (kept by the
    threads themselves, so a call cancelled before it started never counts)
    tells the next caller not to start another one behind it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0

    @property
    def busy(self) -> bool:
        return self._running > 0

    def run(self, func: Callable[[str], _T], arg: str) -> _T:
        with self._lock:
            self._running += 1
        try:
            return func(arg)
        finally:
            with self._lock:
                self._running -= 1


def _disk_usage(path: str) -> tuple[int, int, float] | None:
    try:
        usage = psutil.disk_usage(path)
    except (OSError, ValueError):
        return None
    return int(usage.total), int(usage.used), float(usage.percent)


def _path_env() -> str:
    return os.environ.get("PATH", os.defpath)


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _gib(size: int | float) -> int:
    return _half_up(size / GIB)


if TYPE_CHECKING:
    _: HardwareProbe = HostProbe(data_path=Path("/data"))

__all__ = ["DEFAULT_COMMAND_TIMEOUT", "TOOLS", "HostProbe", "host_root"]
