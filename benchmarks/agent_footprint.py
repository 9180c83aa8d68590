"""Peak RSS and idle CPU of the real agent process, beside the bare-interpreter floor.

Starts the reference control plane and `vectorlay-agent run` (default
heartbeat interval, fake host, fake nerdctl) on 127.0.0.1, waits until the
node is online, then samples the agent process and its children for
``--seconds`` (default 60).  Prints:

- peak RSS of the agent process alone, of its children (the
  ``nerdctl events`` watcher; with the fake it is a Python process, with the
  real nerdctl a Go binary) and of both together;
- CPU seconds over the window of the agent alone and with its children (the
  watcher, and every short-lived command it ran and reaped), and as a share of
  one core;
- two floors measured in the same run: ``python -c pass``, and an interpreter
  that imports only the runtime dependencies the agent cannot run without
  (ssl and asyncio, anyio's backend, msgspec, httpx/httpx-ws, psutil) and
  nothing of vectorlay;
- what a ``wss://`` session adds: the TLS context with the system CA store;
- what dominates memory: the heaviest imports (``-X importtime``) and the top
  allocation sites after start-up (tracemalloc);
- the same idle agent again with ``--metrics-textfile`` set: its RSS and CPU
  and the difference (target: within 1 MB and 0.01% of a core).

    .venv/bin/python benchmarks/agent_footprint.py [--seconds 60] [--backend asyncio]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    AgentNode,
    ControlPlaneProcess,
    Process,
    children_cpu,
    reaping,
    wait_for,
)


def floor_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the
    # forking parent, which would charge this script's own memory to the floor.
    out = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/status').read())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return vm_hwm_mb(out.stdout)


def vm_hwm_mb(status: str) -> float:
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


STACK_FLOOR = """
import sys
if sys.argv[1] == "asyncio":
    sys.modules["trio"] = None
import ssl, msgspec, anyio, anyio.abc, anyio.to_thread, httpx, httpx_ws, psutil
BACKEND
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
before = rss()
ssl.create_default_context()
print(open("/proc/self/status").read())
print("TLS", (rss() - before) / 1024)
"""


def stack_floor(backend: str) -> tuple[float, float]:
    """Peak RSS of the runtime dependencies alone, and what a system-store TLS context adds."""
    code = STACK_FLOOR.replace(
        "BACKEND",
        # The trio backend never loads asyncio.
        "import asyncio, anyio._backends._asyncio"
        if backend == "asyncio"
        else "import trio, anyio._backends._trio",
    )
    out = subprocess.run(
        [sys.executable, "-c", code, backend], capture_output=True, text=True, check=True
    ).stdout
    tls_line = next(line for line in out.splitlines() if line.startswith("TLS "))
    # The TLS context is built after the imports: the floor is the RSS before it.
    return vm_hwm_mb(out) - float(tls_line.split()[1]), float(tls_line.split()[1])


class CpuMeter:
    """CPU seconds of a process and its children over a window.

    Children still running are read directly; children the agent already
    reaped are counted through its ``children_*`` times, so a short-lived
    ``lspci`` or ``nerdctl ps`` is not missed between two samples.
    """

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        times = proc.cpu_times()
        self.self0 = times.user + times.system
        self.reaped0 = times.children_user + times.children_system
        self.live0 = children_cpu(self.proc)
        self.live = dict(self.live0)

    def sample(self) -> None:
        self.live.update(children_cpu(self.proc))

    def totals(self) -> tuple[float, float]:
        """(agent alone, agent with children) over the window."""
        times = self.proc.cpu_times()
        alone = times.user + times.system - self.self0
        reaped = times.children_user + times.children_system - self.reaped0
        running = children_cpu(self.proc)
        # A child that ended in the window is in `reaped` whole; take off what
        # it had spent before the window started.
        before = sum(cpu for pid, cpu in self.live0.items() if pid not in running)
        live = sum(cpu - self.live0.get(pid, 0.0) for pid, cpu in running.items())
        return alone, alone + reaped - before + live


def wait_online(cp: ControlPlaneProcess, agent: Process, timeout: float = 30) -> None:
    def up() -> bool:
        return any(n["status"] in {"online", "degraded"} for n in cp.nodes())

    try:
        wait_for(up, timeout, "the agent online")
    except AssertionError:
        print(agent.log[-2000:], file=sys.stderr)
        raise SystemExit("the agent did not come online") from None


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def children_rss(proc: psutil.Process) -> list[int]:
    sizes = []
    for child in proc.children(recursive=True):
        try:
            sizes.append(child.memory_info().rss)
        except psutil.Error:
            continue  # it ended between the listing and the read
    return sizes


def heaviest_imports(backend: str, top: int = 8) -> list[tuple[str, float]]:
    """Top-level imports of the agent's path with their cumulative import time."""
    code = ("import sys; sys.modules['trio'] = None\n" if backend == "asyncio" else "") + (
        "import vectorlay.app.cli, vectorlay.app.agent.bootstrap, "
        "vectorlay.adapters.transport, vectorlay.adapters.probe.host, "
        "vectorlay.adapters.runtime.runtime, vectorlay.adapters.filesystem"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    rows: list[tuple[str, float]] = []
    for line in out.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        name = fields[2]
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if depth <= 1:
            rows.append(("  " * depth + name.strip(), int(fields[1]) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


def top_allocations(backend: str, top: int = 8) -> list[str]:
    code = f"""
import sys, tracemalloc
{"sys.modules['trio'] = None" if backend == "asyncio" else ""}
tracemalloc.start()
from pathlib import Path
from vectorlay.app.agent.bootstrap import build_agent
from vectorlay.app.agent.settings import AgentSettings
build_agent(AgentSettings(control_plane_url="ws://127.0.0.1:1/v1/agent",
                          org_token="x", state_dir=Path(sys.argv[1])))
snap = tracemalloc.take_snapshot()
stats = snap.statistics("filename")
total = sum(s.size for s in stats)
print(f"total traced after start-up: {{total / 2**20:.1f}} MiB")
by_pkg = {{}}
for s in stats:
    f = s.traceback[0].filename
    key = f.split("site-packages/")[-1].split("/")[0] if "site-packages" in f else (
        "vectorlay" if "/vectorlay/" in f else "stdlib:" + Path(f).name)
    by_pkg[key] = by_pkg.get(key, 0) + s.size
for key, size in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:{top}]:
    print(f"{{size / 2**20:6.2f}} MiB  {{key}}")
"""
    with tempfile.TemporaryDirectory() as state:
        out = subprocess.run(
            [sys.executable, "-c", code, state], capture_output=True, text=True, check=True
        )
    return out.stdout.splitlines()


class Footprint:
    """What one idle agent run measured."""

    def __init__(self, hwm: float, peak_self: int, peak_children: int, peak_both: int,
                 used: float, used_all: float) -> None:  # fmt: skip
        self.hwm = hwm
        self.peak_self = peak_self
        self.peak_children = peak_children
        self.peak_both = peak_both
        self.used = used
        self.used_all = used_all


def measure(seconds: float, backend: str, tmp: Path, extra: list[str]) -> Footprint:
    """Start a control plane and an agent (with ``extra`` flags); sample the idle agent."""
    with reaping() as reaper:
        cp = ControlPlaneProcess(tmp / "cp", reaper, log_level="warning").start(timeout=30)
        node = AgentNode.build(tmp / "node", reaper)
        # The defaults of `run`: 30 s heartbeats, 5 s reconnect delay.
        agent = node.agent(
            cp.url,
            interval=30,
            reconnect=5,
            stop_timeout=30,
            log_level="warning",
            backend=backend,
            extra=extra,
        )
        agent.env = {**os.environ, **agent.env}
        agent.start(reaper)
        try:
            wait_online(cp, agent)
            proc = psutil.Process(agent.pid)
            time.sleep(2.0)  # let start-up work (probe, first heartbeat) finish
            meter = CpuMeter(proc)
            peak_self = peak_children = peak_both = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                own = proc.memory_info().rss
                kids = sum(children_rss(proc))
                peak_self, peak_children = max(peak_self, own), max(peak_children, kids)
                peak_both = max(peak_both, own + kids)
                meter.sample()
                time.sleep(0.5)
            used, used_all = meter.totals()
            # Peak over the life of the process, start-up included.
            with open(f"/proc/{agent.pid}/status") as fh:
                hwm = vm_hwm_mb(fh.read())
        finally:
            for p in (agent, cp.proc):
                if p is None or not p.alive():
                    continue
                try:
                    p.terminate(10)
                except subprocess.TimeoutExpired:
                    print(f"pid {p.pid} ignored SIGTERM for 10 s; killed", file=sys.stderr)
    return Footprint(hwm, peak_self, peak_children, peak_both, used, used_all)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vl-footprint-"))
    plain = measure(args.seconds, args.backend, tmp / "plain", [])
    textfile = tmp / "textfile" / "vectorlay.prom"
    textfile.parent.mkdir(parents=True)
    metrics = measure(
        args.seconds, args.backend, tmp / "metrics", ["--metrics-textfile", str(textfile)]
    )
    f = plain

    floor = floor_rss_mb()
    stack, tls = stack_floor(args.backend)
    mb = 2**20
    print(f"agent footprint, backend {args.backend}, idle ws:// session at default intervals")
    print(f"  window                            {args.seconds:.0f} s")
    print(f"  python -c pass (floor) peak RSS   {floor:6.1f} MB")
    print(f"  runtime dependencies only, RSS    {stack:6.1f} MB   (no vectorlay code)")
    print(
        f"  agent peak RSS (VmHWM)            {f.hwm:6.1f} MB   "
        f"target <= 30 MB: {verdict(f.hwm <= 30)}"
    )
    print(f"  agent RSS while idle (max)        {f.peak_self / mb:6.1f} MB")
    print(f"  children RSS (events watcher)     {f.peak_children / mb:6.1f} MB   (fake nerdctl)")
    print(f"  agent + children RSS (max)        {f.peak_both / mb:6.1f} MB")
    print(f"  a wss:// session adds about       {tls:6.1f} MB   (TLS context, system CA store)")
    print(
        f"  agent CPU over the window         {f.used:6.2f} s = "
        f"{100 * f.used / args.seconds:.3f}% of one core   target <= 0.1%: "
        f"{verdict(f.used / args.seconds <= 0.001)} (kernel accounting: 0.01 s ticks)"
    )
    print(
        f"  agent + children CPU              {f.used_all:6.2f} s = "
        f"{100 * f.used_all / args.seconds:.3f}% of one core   (the fake nerdctl is Python)"
    )
    rss_delta = (metrics.peak_self - plain.peak_self) / mb
    hwm_delta = metrics.hwm - plain.hwm
    cpu_delta = 100 * (metrics.used - plain.used) / args.seconds
    print("  with --metrics-textfile (same run, a second agent):")
    print(
        f"    peak RSS (VmHWM)                {metrics.hwm:6.1f} MB   "
        f"({hwm_delta:+.1f} MB)   target <= +1 MB: {verdict(hwm_delta <= 1)}"
    )
    print(
        f"    RSS while idle (max)            {metrics.peak_self / mb:6.1f} MB   "
        f"({rss_delta:+.1f} MB)   target <= +1 MB: {verdict(rss_delta <= 1)}"
    )
    print(
        f"    CPU over the window             {metrics.used:6.2f} s = "
        f"{100 * metrics.used / args.seconds:.3f}% of one core   ({cpu_delta:+.3f} points)   "
        f"target <= +0.01: {verdict(cpu_delta <= 0.01)}"
    )
    print("  heaviest imports (cumulative ms):")
    for name, ms in heaviest_imports(args.backend):
        print(f"    {ms:7.1f}  {name}")
    print("  memory after start-up by package (tracemalloc):")
    for line in top_allocations(args.backend):
        print(f"    {line}")


if __name__ == "__main__":
    main()
