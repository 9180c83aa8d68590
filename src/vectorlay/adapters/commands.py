"""Run one outside command with a deadline and a cap on what it may print.

The probe's commands (``lspci``, ``nvidia-smi``, ``<tool> --version``) and
the container engine's calls (``run``, ``ps``, ``inspect``, ``stop``,
``rm``; not the long-lived ``events``) are run through :func:`run_command`
only: an argv list, never a shell; stdin from ``/dev/null``; a timeout after
which the command and everything it started are killed (it runs in a session
of its own, so its process group can be killed as a whole and a hung
grandchild cannot hold the pipes open); and a cap on output, so a command
that prints without end cannot fill memory.

Nothing here raises for a command that fails: the outcome is data
(:class:`CommandResult`) and each caller decides what it means.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import anyio
from anyio.abc import ByteReceiveStream, Process

DEFAULT_OUTPUT_LIMIT: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended.

    ``returncode`` is ``None`` when it never started (``error`` says why) or
    was killed at the deadline (``timed_out``).  ``truncated`` means it
    printed more than the cap and was killed for it.
    """

    returncode: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False
    truncated: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.truncated and not self.timed_out


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    limit: int = DEFAULT_OUTPUT_LIMIT,
    env: dict[str, str] | None = None,
    stderr_tail: int | None = None,
    cwd: str | None = None,
) -> CommandResult:
    """Run ``argv`` and collect its output within ``timeout`` seconds.

    With ``stderr_tail``, only the last ``stderr_tail`` bytes of stderr are
    kept and stderr never counts against ``limit``: for a command that may
    print progress for as long as it runs and says what went wrong at the end.
    ``cwd`` is the directory it runs in (the caller's when ``None``).
    """
    try:
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    except OSError as exc:
        return CommandResult(None, error=_os_reason(exc))
    stdout = bytearray()
    stderr = bytearray()
    overflow = False
    returncode: int | None = None

    def on_overflow() -> None:
        nonlocal overflow
        overflow = True
        kill_group(process)

    try:
        with anyio.move_on_after(_finite(timeout)):
            async with anyio.create_task_group() as group:
                if process.stdout is not None:
                    group.start_soon(_collect, process.stdout, stdout, limit, on_overflow)
                if process.stderr is not None and stderr_tail is not None:
                    group.start_soon(_collect_tail, process.stderr, stderr, stderr_tail)
                elif process.stderr is not None:
                    group.start_soon(_collect, process.stderr, stderr, limit, on_overflow)
            returncode = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if returncode is None:
                kill_group(process)
            await process.aclose()
    timed_out = returncode is None
    return CommandResult(
        None if overflow or timed_out else returncode,
        bytes(stdout),
        bytes(stderr if stderr_tail is None else stderr[max(len(stderr) - stderr_tail, 0) :]),
        timed_out=timed_out and not overflow,
        truncated=overflow,
    )


async def _collect(
    stream: ByteReceiveStream, sink: bytearray, limit: int, on_overflow: Callable[[], None]
) -> None:
    async for chunk in stream:
        room = limit - len(sink)
        if len(chunk) > room:
            sink += chunk[:room]
            on_overflow()
            return
        sink += chunk


async def _collect_tail(stream: ByteReceiveStream, sink: bytearray, tail: int) -> None:
    async for chunk in stream:
        sink += chunk
        # Trimmed only once it holds twice the tail: moving the kept bytes
        # for every chunk would cost quadratic time on a chatty command.
        if len(sink) > 2 * tail:
            del sink[: len(sink) - tail]


def kill_group(process: Process) -> None:
    """SIGKILL a command started in its own session, with all it started.

    Also after the command itself exited: a child it left behind may still
    hold the output pipe.
    """
    # The command leads its own session, so its pid is its process group:
    # killing the group also ends whatever it started.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.kill()


def _finite(timeout: float) -> float:
    return timeout if math.isfinite(timeout) and timeout > 0 else 0.0


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def first_line(data: bytes, limit: int = 120) -> str:
    """The first non-blank line of some output, decoded leniently and bounded."""
    head = data[: limit * 8].decode("utf-8", "replace")
    for line in head.splitlines():
        stripped = line.strip()
        if stripped:
            return stripped[:limit]
    return ""


__all__ = ["DEFAULT_OUTPUT_LIMIT", "CommandResult", "first_line", "run_command"]
