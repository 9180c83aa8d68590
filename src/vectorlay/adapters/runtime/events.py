"""Following the engine's event stream: one long-lived ``events`` process, idle when quiet.

:func:`event_changes` yields once when a stream is up (whatever happened
before the subscription is caught by one listing) and then once per burst of
relevant lines; a stream that ends is restarted with a growing delay.  What
a line means is the caller's ``relevant`` predicate (the engine's format).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Final

import anyio
from anyio.abc import ByteReceiveStream

from vectorlay.adapters.commands import kill_group

log = logging.getLogger(__name__)

# An event stream that lived this long was healthy: its restart delay resets.
HEALTHY_STREAM_SECONDS: Final = 60.0


class LineReader:
    """Lines from a byte stream; cancellation-safe (a cancelled read loses nothing)."""

    def __init__(self, stream: ByteReceiveStream, limit: int = 1 << 20) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._limit = limit
        self._eof = False

    async def readline(self) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if self._eof:
                rest, self._buffer = bytes(self._buffer), bytearray()
                return rest or None
            if len(self._buffer) > self._limit:
                # An endless line is not an event; drop what we have.
                self._buffer.clear()
            try:
                self._buffer += await self._stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._eof = True


async def event_changes(
    argv: list[str],
    relevant: Callable[[bytes], bool],
    *,
    restart_delay: float,
    restart_cap: float,
    settle: float,
    debounce: float,
    cwd: str | None = None,
) -> AsyncGenerator[None, None]:
    """Follow ``argv`` for ever (run in ``cwd``), restarting it whenever it ends."""
    delay = restart_delay
    while True:
        began = anyio.current_time()
        stream = _event_stream(argv, relevant, settle=settle, debounce=debounce, cwd=cwd)
        async with aclosing(stream):
            async for _ in stream:
                yield
        if anyio.current_time() - began >= HEALTHY_STREAM_SECONDS:
            delay = restart_delay
        log.warning("%s events stopped; restarting it in %.1f s", argv[0], delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, restart_cap)


async def _event_stream(
    argv: list[str],
    relevant: Callable[[bytes], bool],
    *,
    settle: float,
    debounce: float,
    cwd: str | None = None,
) -> AsyncGenerator[None, None]:
    """Yield once when the stream is up, then after each burst of relevant events."""
    try:
        process = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            # Its stderr is never read: a full pipe must not stall it.
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )
    except OSError as exc:
        log.warning("cannot run %s events: %s", argv[0], exc.strerror or exc)
        yield  # the consumer's list() will say what is wrong
        return
    try:
        assert process.stdout is not None
        reader = LineReader(process.stdout)
        # Whatever happened before the subscription is caught by one list.
        await anyio.sleep(settle)
        yield
        while True:
            line = await reader.readline()
            if line is None:
                break
            if not relevant(line):
                continue
            # Gather the rest of the burst (exit, delete, ...) into one wake-up.
            ended = False
            with anyio.move_on_after(debounce):
                while not ended:
                    ended = await reader.readline() is None
            yield
            if ended:
                break
    finally:
        with anyio.CancelScope(shield=True):
            kill_group(process)
            await process.aclose()
        log.debug("%s events exited with %s", argv[0], process.returncode)


__all__ = ["HEALTHY_STREAM_SECONDS", "LineReader", "event_changes"]
