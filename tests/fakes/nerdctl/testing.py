"""Helpers for tests that drive the nerdctl runtime adapter against the fake."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from tests.fakes.nerdctl.fake_nerdctl import Call, FakeNerdctl
from vectorlay.adapters.runtime import NerdctlRuntime
from vectorlay.domain.agent.replicas import ContainerState
from vectorlay.errors import ContainerRuntimeError


def install(root: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNerdctl:
    """A fake nerdctl whose processes find their state through the environment."""
    fake = FakeNerdctl(root)
    for key, value in fake.environ().items():
        monkeypatch.setenv(key, value)
    # The launcher runs `python3` from PATH: the test's own interpreter starts
    # quickest (a version-manager shim costs ten times as much per call).
    path = os.environ.get("PATH", "")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{path}")
    return fake


def runtime(fake: FakeNerdctl, state_dir: Path, **kwargs: Any) -> NerdctlRuntime:
    options: dict[str, Any] = {"events_settle": 0.1, "events_restart_delay": 0.1}
    options.update(kwargs)
    return NerdctlRuntime(nerdctl=str(fake.executable), env_dir=state_dir / "env", **options)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def calls_of(fake: FakeNerdctl, op: str, match: str | None = None) -> list[Call]:
    return [c for c in fake.calls() if c.op == op and (match is None or match in c.argv)]


def max_overlap(calls: Sequence[Call]) -> int:
    """The most calls that were running at one moment."""
    edges = sorted(
        [(c.start, 1) for c in calls] + [(c.end if c.end is not None else 1e18, -1) for c in calls],
        key=lambda edge: (edge[0], edge[1]),
    )
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


class Watcher:
    """Consumes ``changes()`` as the agent does: a ``list()`` after every wake-up."""

    def __init__(self, runtime: NerdctlRuntime) -> None:
        self.runtime = runtime
        self.wakeups = 0
        self.states: list[ContainerState] = []
        self.errors: list[ContainerRuntimeError] = []
        self._changed = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        async with aclosing(self.runtime.changes()) as changes:
            async for _ in changes:
                self.wakeups += 1
                try:
                    self.states = list(await self.runtime.list())
                except ContainerRuntimeError as exc:
                    self.errors.append(exc)
                self._changed.set()
                self._changed = anyio.Event()
                if not started:
                    started = True
                    task_status.started()

    def state(self, replica_id: str) -> ContainerState | None:
        return next((s for s in self.states if s.replica_id == replica_id), None)

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()
