"""Sleeping on the agent's clock, cut short by an event."""

from __future__ import annotations

import anyio

from vectorlay.ports import Clock


async def sleep_or_until(clock: Clock, seconds: float, event: anyio.Event) -> None:
    """Sleep ``seconds`` on ``clock``, or until ``event`` is set, whichever comes first.

    The sleep goes through the clock port (a manual clock in tests), so it
    cannot simply be a timeout around ``event.wait()``.
    """
    async with anyio.create_task_group() as tg:

        async def sleeper() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        async def waiter() -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(sleeper)
        tg.start_soon(waiter)
