"""Runtime watching: CPU per idle minute and exit-detection latency, events vs polling.

    .venv/bin/python benchmarks/runtime_watch.py [--idle 30] [--exits 20] [--backend trio]
        [--real-engine podman|docker|none] [--real-exits 8]

Runs NerdctlRuntime against the fake nerdctl (tests/fakes/nerdctl) with 4
replicas, for each watch mode:

- ``events`` (the default): one long-lived ``nerdctl events`` process;
- ``poll`` (the baseline): ``nerdctl ps`` every second.

Idle phase: nothing happens for ``--idle`` seconds while a consumer waits on
``changes()`` and calls ``list()`` after each wake-up, as the agent does.
CPU is counted for this process (the agent side), for its child processes
that ended in the window (``RUSAGE_CHILDREN``) and for those still alive
(the events process, through psutil).

Latency phase: ``--exits`` times, at a random moment, a container's process
ends (the fake marks it exited and publishes ``/tasks/exit``, as containerd
would) and the clock stops when ``list()`` shows the replica ``failed``.

The fake is a Python program: each of its runs costs a Python start-up, not
what a Go binary costs.  So the report keeps three figures apart: the
agent's own CPU (real), the fake's CPU (measured, not nerdctl's), and an
estimate with real nerdctl: agent CPU + nerdctl runs x ``--nerdctl-ms``
(default 30 ms of CPU per run, the "tens of ms" a Go CLI connecting to
containerd costs) + the idle events process (blocked in a read, as nerdctl
blocked on its gRPC stream is; measured).

With ``--real-engine`` (default ``podman``) a last row measures a real
engine the same way (:mod:`benchmarks.runtime_watch_real`): real containers,
real ``podman events``, no estimate; where Podman cannot be set up the row
says why.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runtime_watch_real import engine_or_reason, measure_real
from tests.support import FakeNerdctl, children_cpu

from vectorlay.adapters.runtime import NerdctlRuntime, ps_argv
from vectorlay.domain.agent.replicas import ContainerSpec, ContainerState, GpuSlot
from vectorlay.domain.messages import ReplicaStatus

REPLICAS = 4


class Consumer:
    """What the agent does with changes(): list() after every wake-up."""

    def __init__(self, runtime: NerdctlRuntime) -> None:
        self.runtime = runtime
        self.states: dict[str, ContainerState] = {}
        self.wakeups = 0
        self.changed = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        started = False
        async with aclosing(self.runtime.changes()) as changes:
            async for _ in changes:
                self.wakeups += 1
                self.states = {s.replica_id: s for s in await self.runtime.list()}
                self.changed.set()
                self.changed = anyio.Event()
                if not started:
                    started = True
                    task_status.started()

    async def until(self, replica_id: str, status: ReplicaStatus) -> None:
        while getattr(self.states.get(replica_id), "status", None) is not status:
            await self.changed.wait()


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_reaped_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spawn_cost(fake: FakeNerdctl, runs: int = 20) -> float:
    """CPU seconds of one fake `nerdctl ps` run, measured here."""
    import subprocess

    before = cpu_reaped_children()
    for _ in range(runs):
        subprocess.run(
            ps_argv(str(fake.executable)), capture_output=True, check=True, env=os.environ
        )
    return (cpu_reaped_children() - before) / runs


async def measure(
    fake: FakeNerdctl, root: Path, watch: str, args: argparse.Namespace
) -> dict[str, float]:
    runtime = NerdctlRuntime(
        nerdctl=str(fake.executable),
        env_dir=root / f"state-{watch}" / "env",
        watch="poll" if watch == "poll" else "events",
        poll_interval=1.0,
    )
    ids = [f"{watch}-{n}" for n in range(REPLICAS)]
    for n, rid in enumerate(ids):
        gpu = GpuSlot(f"0000:{0x17 + n:02x}:00.0", str(25 + n))
        await runtime.run(ContainerSpec(rid, "ghcr.io/acme/llm:1.2", (gpu,), {"TOKEN": "x=y"}))
    consumer = Consumer(runtime)
    async with anyio.create_task_group() as tg:
        await tg.start(consumer.run)
        await anyio.sleep(2.0)  # let start-up settle

        calls_before = len(fake.calls())
        wakeups_before = consumer.wakeups
        live_before = children_cpu()
        self_before, reaped_before = cpu_self(), cpu_reaped_children()
        began = time.perf_counter()
        await anyio.sleep(args.idle)
        elapsed = time.perf_counter() - began
        self_cpu = cpu_self() - self_before
        reaped = cpu_reaped_children() - reaped_before
        live_after = children_cpu()
        live = sum(live_after[pid] - live_before.get(pid, 0.0) for pid in live_after)
        spawns = len(fake.calls()) - calls_before
        wakeups = consumer.wakeups - wakeups_before

        latencies: list[float] = []
        for n in range(args.exits):
            rid = ids[n % REPLICAS]
            # Exits come at any moment, not in step with a poll.
            await anyio.sleep(random.uniform(0.0, 1.0))
            start = time.perf_counter()
            fake.exit(f"replica-{rid}", 1)
            await consumer.until(rid, ReplicaStatus.FAILED)
            latencies.append(time.perf_counter() - start)
            fake.revive(f"replica-{rid}")
            with anyio.fail_after(10):
                await consumer.until(rid, ReplicaStatus.RUNNING)
        tg.cancel_scope.cancel()
    for rid in ids:
        await runtime.stop(rid, grace=0)
    per_minute = 60.0 / elapsed
    return {
        "agent": self_cpu * per_minute,
        "fake_spawned": reaped * per_minute,
        "events_process": live * per_minute,
        "spawns": spawns * per_minute,
        "wakeups": wakeups * per_minute,
        "median": statistics.median(latencies),
        "max": max(latencies),
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="runtime-watch-") as tmp:
        root = Path(tmp)
        fake = FakeNerdctl(root / "nerdctl")
        os.environ.update(fake.environ())
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        try:
            fake_run_cpu = spawn_cost(fake)
            results = {
                watch: await measure(fake, root, watch, args) for watch in ("events", "poll")
            }
        finally:
            fake.close()
        real_row: dict[str, float] | str = "not measured (--real-engine none)"
        if args.real_engine != "none":
            engine = engine_or_reason(args.real_engine)
            real_row = (
                f"{args.real_engine}: {engine}"
                if isinstance(engine, str)
                else await measure_real(
                    engine, root, args.idle, args.real_exits, REPLICAS, Consumer
                )
            )
    nerdctl_cpu = args.nerdctl_ms / 1000.0
    print(
        f"runtime watching, {REPLICAS} replicas, idle {args.idle:g} s, {args.exits} exits, "
        f"backend {args.backend}, {os.cpu_count()} CPUs"
    )
    print(f"one fake `nerdctl ps` run: {fake_run_cpu * 1000:.1f} ms CPU (Python start-up)")
    print(f"assumed real nerdctl run: {args.nerdctl_ms:g} ms CPU")
    print()
    header = (
        f"{'mode':<16}{'agent':>9}{'fake runs':>11}{'events proc':>13}{'runs/min':>10}"
        f"{'est. real':>11}{'% core':>8}{'wakeups/min':>13}{'median':>9}{'max':>8}"
    )
    print("idle CPU in seconds per minute; latency in seconds from exit to list()")
    print(header)
    for watch, r in results.items():
        estimate = r["agent"] + r["spawns"] * nerdctl_cpu + r["events_process"]
        label = "events" if watch == "events" else "poll 1 s (base)"
        print(
            f"{label:<16}{r['agent']:>9.4f}{r['fake_spawned']:>11.4f}{r['events_process']:>13.4f}"
            f"{r['spawns']:>10.1f}{estimate:>11.4f}{estimate / 60 * 100:>7.3f}%"
            f"{r['wakeups']:>13.1f}{r['median']:>9.3f}{r['max']:>8.3f}"
        )
    print()
    print(
        "real engine, events: idle CPU in seconds per minute (engine runs = real commands"
        " reaped); latency in seconds from the engine's FinishedAt to list()"
    )
    if isinstance(real_row, str):
        print(f"  {real_row}")
        return
    r = real_row
    total = r["agent"] + r["engine_runs"] + r["events_process"]
    print(
        f"{'mode':<16}{'agent':>9}{'eng. runs':>11}{'events proc':>13}{'total':>9}{'% core':>8}"
        f"{'wakeups/min':>13}{'median':>9}{'max':>8}{'exits':>7}"
    )
    print(
        f"{args.real_engine + ' events':<16}{r['agent']:>9.4f}{r['engine_runs']:>11.4f}"
        f"{r['events_process']:>13.4f}{total:>9.4f}{total / 60 * 100:>7.3f}%"
        f"{r['wakeups']:>13.1f}{r['median']:>9.3f}{r['max']:>8.3f}{int(r['exits']):>7}"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    parser.add_argument("--exits", type=int, default=20, help="exits to time per mode")
    parser.add_argument(
        "--nerdctl-ms", type=float, default=30.0, help="CPU ms one real nerdctl run costs"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--real-engine",
        choices=["podman", "docker", "none"],
        default="podman",
        help="also measure this real engine (needs root; scripts/setup-podman.sh)",
    )
    parser.add_argument("--real-exits", type=int, default=8, help="exits to time on it")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    anyio.run(main, arguments, backend=arguments.backend)
