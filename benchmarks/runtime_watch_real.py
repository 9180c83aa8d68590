"""The real-engine row of ``runtime_watch.py``: Podman's events, watched by the agent's runtime.

    .venv/bin/python benchmarks/runtime_watch.py --real-engine podman [--real-exits 8]

Needs root and Podman set up by ``scripts/setup-podman.sh`` (the script is
run first; where it cannot set Podman up, the row says why).  With
``--real-engine docker`` the Docker CLI drives Podman's compatible service.

Idle phase: 4 real containers run while the consumer waits on
``changes()``; CPU is counted for this process, for the engine commands it
ran and reaped (``RUSAGE_CHILDREN``: real ``podman ps``/``inspect`` runs, no
estimate) and for the live ``events`` process.  Latency phase: a container
ends by itself (``sh`` sleeping 1-2 s, then ``exit 1``); the latency is from
its ``State.FinishedAt`` (the engine's own record of the exit) to the
moment ``list()`` shows the replica ``failed``.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import time
from pathlib import Path

import anyio
from tests.support import children_cpu
from tests.support import engine as real

from vectorlay.adapters.runtime import EngineRuntime
from vectorlay.domain.agent.replicas import ContainerSpec, container_name
from vectorlay.domain.messages import ReplicaStatus


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_reaped_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def engine_or_reason(name: str) -> real.Engine | str:
    try:
        reason = real.prepare()
    except RuntimeError as exc:
        return str(exc).splitlines()[0]
    if reason is not None:
        return reason
    return real.engines_here()[name]


async def measure_real(
    engine: real.Engine, root: Path, idle: float, exits: int, replicas: int, consumer_type: type
) -> dict[str, float]:
    os.environ.update(engine.env)
    runtime = EngineRuntime(
        engine=engine.name,
        cli=engine.cli,
        oci_runtime=engine.oci_runtime,
        env_dir=root / "state-real" / "env",
    )
    prefix = f"bench{os.getpid()}"
    ids = [f"{prefix}-{n}" for n in range(replicas)]
    made: list[str] = []
    try:
        for rid in ids:
            await runtime.run(ContainerSpec(rid, real.IMAGE, env={"TOKEN": "x=y"}))
            made.append(container_name(rid))
        consumer = consumer_type(runtime)
        async with anyio.create_task_group() as tg:
            await tg.start(consumer.run)
            await anyio.sleep(2.0)
            wakeups_before = consumer.wakeups
            live_before = children_cpu()
            self_before, reaped_before = cpu_self(), cpu_reaped_children()
            began = time.perf_counter()
            await anyio.sleep(idle)
            elapsed = time.perf_counter() - began
            self_cpu = cpu_self() - self_before
            reaped = cpu_reaped_children() - reaped_before
            live_after = children_cpu()
            live = sum(live_after[pid] - live_before.get(pid, 0.0) for pid in live_after)
            wakeups = consumer.wakeups - wakeups_before

            latencies: list[float] = []
            for n in range(exits):
                rid = f"{prefix}-exit-{n}"
                sleep = f"{random.uniform(1.0, 2.0):.2f}"
                spec = ContainerSpec(rid, real.IMAGE, env={"VL_SLEEP": sleep, "VL_EXIT": "1"})
                await runtime.run(spec)
                made.append(container_name(rid))
                with anyio.fail_after(15):
                    await consumer.until(rid, ReplicaStatus.FAILED)
                seen = time.time()
                latencies.append(seen - real.finished_at(container_name(rid)))
                await runtime.stop(rid, grace=0)
            tg.cancel_scope.cancel()
    finally:
        real.remove(made)
    per_minute = 60.0 / elapsed
    return {
        "agent": self_cpu * per_minute,
        "engine_runs": reaped * per_minute,
        "events_process": live * per_minute,
        "wakeups": wakeups * per_minute,
        "median": statistics.median(latencies),
        "max": max(latencies),
        "min": min(latencies),
        "exits": float(len(latencies)),
    }


__all__ = ["engine_or_reason", "measure_real"]
