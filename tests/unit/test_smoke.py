from __future__ import annotations

import anyio

from vectorlay import __version__
from vectorlay.adapters.memory import ManualClock


def test_version() -> None:
    assert __version__.count(".") == 2


async def test_manual_clock_wakes_sleeper(anyio_backend: str) -> None:
    clock = ManualClock()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(5)
        woke.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        clock.advance(4.9)
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        clock.advance(0.1)
    assert woke == [5.0]
