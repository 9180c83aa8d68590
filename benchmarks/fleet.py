"""Fleet benchmark: N agents against the reference control plane over loopback.

The control plane runs as its own process (``vectorlay-agent control-plane``,
SQLite in a temporary directory) so that its CPU time is measured apart; the
agents are the library's :class:`~vectorlay.app.agent.service.Agent` with in-memory
runtime and probe and the real WebSocket transport, all in this process.

Figures printed:

1. sessions held (N agents registered and connected, as the control plane's
   admin API counts them),
2. heartbeats per second and control-plane CPU per 1,000 heartbeats, next to
   the idle control plane's CPU measured in the same run,
3. a reconnect storm: the control plane is restarted with N connected, twice:
   once with the agents' backoff (exponential, full jitter) and once with a
   fixed 5 s retry (every agent retries at the same moment).  For each: time
   until all N are back, peak connection attempts per second, attempts made.

    .venv/bin/python benchmarks/fleet.py                 # N = 2000
    .venv/bin/python benchmarks/fleet.py --agents 200 --interval 2
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ORG_TOKEN, ControlPlaneProcess, reaping

from vectorlay.adapters.clock import SystemClock
from vectorlay.adapters.memory import MemoryConfigStore, MemoryRuntime, StaticProbe, sample_report
from vectorlay.adapters.transport import WebSocketConnection, WebSocketTransport
from vectorlay.app.agent.config import AgentConfig
from vectorlay.app.agent.service import Agent

# --- the control-plane process ---------------------------------------------------------
# The agents share this event loop: every blocking call on the process runs in a thread.


async def start(cp: ControlPlaneProcess) -> None:
    await anyio.to_thread.run_sync(partial(cp.start, timeout=30))


async def stop(cp: ControlPlaneProcess, *, crash: bool = False) -> None:
    """SIGTERM (sessions closed with 1001), or SIGKILL with ``crash`` (sockets just drop)."""
    await anyio.to_thread.run_sync(cp.kill if crash else partial(cp.terminate, 60))


def cpu_seconds(cp: ControlPlaneProcess) -> float:
    times = psutil.Process(cp.pid).cpu_times()
    return float(times.user + times.system)


def rss_mb(cp: ControlPlaneProcess) -> float:
    return float(psutil.Process(cp.pid).memory_info().rss) / 2**20


async def online(cp: ControlPlaneProcess) -> int:
    nodes = await anyio.to_thread.run_sync(cp.nodes)
    return sum(1 for n in nodes if n["status"] == "online")


# --- agents --------------------------------------------------------------------------------


# msgspec writes the tag field first: a heartbeat frame starts with this.
HEARTBEAT_PREFIX = '{"type":"heartbeat"'


class CountingConnection:
    """The real connection, counting the heartbeats the agent sends on it."""

    def __init__(self, inner: WebSocketConnection, transport: CountingTransport) -> None:
        self.inner = inner
        self.transport = transport

    async def send(self, text: str) -> None:
        if text.startswith(HEARTBEAT_PREFIX):
            self.transport.heartbeats += 1
        await self.inner.send(text)

    async def receive(self) -> str | bytes:
        return await self.inner.receive()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.close(code, reason)


class CountingTransport:
    """The real transport, with every connection attempt time-stamped and every
    heartbeat sent counted."""

    def __init__(self, inner: WebSocketTransport) -> None:
        self.inner = inner
        self.attempts: list[float] = []
        self.heartbeats = 0

    @asynccontextmanager
    async def connect(self, url: str, credential: str) -> AsyncIterator[CountingConnection]:
        self.attempts.append(time.monotonic())
        async with self.inner.connect(url, credential) as conn:
            yield CountingConnection(conn, self)


@dataclass
class Fleet:
    transport: CountingTransport
    agents: list[Agent] = field(default_factory=list)

    def heartbeats(self) -> int:
        return self.transport.heartbeats

    def sessions(self) -> list[int]:
        return [a.sessions for a in self.agents]


def make_agent(url: str, transport: CountingTransport, interval: float) -> Agent:
    return Agent(
        AgentConfig(
            control_plane_url=url,
            org_token=ORG_TOKEN,
            heartbeat_interval=interval,
            reconnect_delay=5.0,
        ),
        transport=transport,
        runtime=MemoryRuntime(),
        probe=StaticProbe(sample_report(gpus=2)),
        store=MemoryConfigStore(),
        clock=SystemClock(),
        rand=random.Random().random,
    )


# --- measurements -------------------------------------------------------------------------------


@dataclass
class Storm:
    label: str
    back_after: float | None
    peak_per_second: int
    attempts: int
    stop_took: float
    cp_down_for: float


async def storm(
    label: str,
    cp: ControlPlaneProcess,
    fleet: Fleet,
    transport: CountingTransport,
    *,
    limit: float,
    crash: bool,
) -> Storm:
    """Restart the control plane with every agent connected; wait until all are back."""
    before = fleet.sessions()
    first_attempt = len(transport.attempts)
    t0 = time.monotonic()
    await stop(cp, crash=crash)
    down = time.monotonic()
    await start(cp)
    cp_down_for = time.monotonic() - down
    stop_took = down - t0
    back_after: float | None = None
    with anyio.move_on_after(limit):
        while True:
            now = fleet.sessions()
            if all(n > b for n, b in zip(now, before, strict=True)):
                back_after = time.monotonic() - t0
                break
            await anyio.sleep(0.05)
    attempts = sorted(t - t0 for t in transport.attempts[first_attempt:])
    return Storm(
        label,
        back_after,
        peak_per_second(attempts),
        len(attempts),
        stop_took,
        cp_down_for,
    )


def peak_per_second(times: list[float]) -> int:
    """The most attempts within any 1-second window (sorted input)."""
    peak, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    n, interval = args.agents, args.interval
    with tempfile.TemporaryDirectory(prefix="vectorlay-fleet-") as tmp, reaping() as reaper:
        cp = ControlPlaneProcess(
            Path(tmp),
            reaper,
            offline_after=args.offline_after,
            log_level="warning",
            http_timeout=60,  # listing thousands of nodes under load
        )
        await start(cp)
        idle_start = cpu_seconds(cp)
        await anyio.sleep(args.measure / 4)
        idle_cpu = (cpu_seconds(cp) - idle_start) / (args.measure / 4)

        url = cp.url
        transport = CountingTransport(
            WebSocketTransport(user_agent="vectorlay-bench", ping_after=2 * interval)
        )
        fleet = Fleet(transport, [make_agent(url, transport, interval) for _ in range(n)])
        me = psutil.Process()
        async with anyio.create_task_group() as tg:
            started = time.monotonic()
            for i, agent in enumerate(fleet.agents):
                tg.start_soon(agent.run)
                if i % args.ramp == args.ramp - 1:
                    await anyio.sleep(1.0)
            with anyio.fail_after(300):
                while min(fleet.sessions()) < 1:
                    await anyio.sleep(0.2)
                ramp_time = time.monotonic() - started
                while (held := await online(cp)) < n:
                    await anyio.sleep(1.0)
            print(f"agents: {n}, heartbeat interval {interval:g} s, host CPUs {os.cpu_count()}")
            print(f"sessions held: {held} of {n} online (all connected after {ramp_time:.1f} s)")

            await anyio.sleep(2 * interval)  # every agent past its first beats
            hb0, cpu0, me0, t0 = (
                fleet.heartbeats(),
                cpu_seconds(cp),
                me.cpu_times(),
                time.monotonic(),
            )
            await anyio.sleep(args.measure)
            hb1, cpu1, me1, t1 = (
                fleet.heartbeats(),
                cpu_seconds(cp),
                me.cpu_times(),
                time.monotonic(),
            )
            beats, span, cp_cpu = hb1 - hb0, t1 - t0, cpu1 - cpu0
            agents_cpu = (me1.user + me1.system) - (me0.user + me0.system)
            print(f"heartbeats processed: {beats / span:.0f}/s over {span:.0f} s")
            print(
                f"control-plane CPU: {1000 * cp_cpu / max(beats, 1) * 1000:.0f} ms per 1,000 "
                f"heartbeats ({100 * cp_cpu / span:.1f}% of one core with {held} sessions; "
                f"idle with no sessions: {100 * idle_cpu:.1f}%); RSS {rss_mb(cp):.0f} MiB"
            )
            print(f"agents' process CPU: {100 * agents_cpu / span:.1f}% of one core")

            crash = args.restart == "kill"
            limit = args.storm_limit
            jittered = await storm(
                "backoff (full jitter)", cp, fleet, transport, limit=limit, crash=crash
            )
            await anyio.sleep(max(1.5 * interval, 2.0))  # a good session resets the backoff
            for agent in fleet.agents:
                agent.rand = lambda: 0.0  # no jitter: every agent retries after exactly 5 s
            fixed = await storm("fixed 5 s retry", cp, fleet, transport, limit=limit, crash=crash)
            back = await online(cp)
            how = "killed (SIGKILL)" if crash else "stopped (SIGTERM)"
            print(f"reconnect storm (control plane {how} and restarted with {n} connected):")
            print(f"  {'policy':<24}{'all back after':>16}{'peak attempts/s':>18}{'attempts':>10}")
            for s in (jittered, fixed):
                after = f"{s.back_after:.1f} s" if s.back_after is not None else "not all"
                print(f"  {s.label:<24}{after:>16}{s.peak_per_second:>18}{s.attempts:>10}")
            ratio = jittered.peak_per_second / max(fixed.peak_per_second, 1)
            print(
                f"  peak ratio backoff/fixed: {ratio:.2f}; {back} online at the end; "
                f"stop took {jittered.stop_took:.1f} s / {fixed.stop_took:.1f} s, "
                f"start {jittered.cp_down_for:.1f} s / {fixed.cp_down_for:.1f} s"
            )
            for agent in fleet.agents:
                agent.request_stop()
        await stop(cp)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval (s)")
    parser.add_argument("--measure", type=float, default=20.0, help="steady-state window (s)")
    parser.add_argument("--ramp", type=int, default=200, help="agents started per second")
    parser.add_argument("--offline-after", type=float, default=60.0)
    parser.add_argument("--storm-limit", type=float, default=120.0)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--restart",
        choices=("kill", "term"),
        default="kill",
        help="how the control plane goes down in the storm: a crash, or SIGTERM (closes 1001)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)
    arguments = parse()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    anyio.run(main, arguments, backend=arguments.backend)
