"""Waiting for a condition: one polling loop for blocking code, one for async code.

Both take a check that returns something truthy once the condition holds,
treat a check that fails to connect (the server under test is still coming
up, or restarting) as "not yet", and fail the test with an AssertionError
that names what they waited for.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, overload

import anyio
import httpx

T = TypeVar("T")

NOT_YET: Final = (httpx.TransportError, OSError)


def _timed_out(timeout: float, what: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_for(
    check: Callable[[], T | None],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except NOT_YET:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = ...,
    what: str = ...,
    interval: float = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    timeout: float = ...,
    what: str = ...,
    interval: float = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    timeout: float = 5.0,
    what: str = "condition",
    interval: float = 0.01,
) -> Any:
    """Poll ``check`` (plain or async) until it returns something truthy, and return that."""
    with anyio.move_on_after(timeout):
        while True:
            try:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
            except NOT_YET:
                result = None
            if result:
                return result
            await anyio.sleep(interval)
    raise _timed_out(timeout, what)
