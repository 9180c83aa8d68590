"""The bounded command runner: deadlines, output caps, whole process groups."""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from tests.fakes.host.fakehost import running
from vectorlay.adapters.commands import first_line, run_command


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "cmd"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_collects_both_streams_and_status(tmp_path: Path) -> None:
    result = await run_command([script(tmp_path, "echo out; echo err >&2; exit 4")], timeout=5)
    assert (result.returncode, result.stdout, result.stderr) == (4, b"out\n", b"err\n")
    assert not result.ok
    assert not result.timed_out
    assert not result.truncated


async def test_not_runnable() -> None:
    result = await run_command(["/nonexistent/program"], timeout=5)
    assert result.returncode is None
    assert result.error == "No such file or directory"


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    # The command starts a grandchild that keeps stdout open and then waits:
    # both must be gone after the deadline.
    pid_file = tmp_path / "grandchild.pid"
    cmd = script(tmp_path, f"sleep 600 & echo $! > {pid_file}; wait")
    started = time.monotonic()
    result = await run_command([cmd], timeout=0.5)
    assert time.monotonic() - started < 5
    assert result.timed_out
    assert result.returncode is None
    grandchild = int(pid_file.read_text())
    with anyio.fail_after(5):
        while running(grandchild):
            await anyio.sleep(0.01)


async def test_exited_parent_with_grandchild_holding_the_pipe(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    cmd = script(tmp_path, f"sleep 600 & echo $! > {pid_file}; echo started")
    result = await run_command([cmd], timeout=0.5)
    assert result.timed_out
    assert result.stdout == b"started\n"
    grandchild = int(pid_file.read_text())
    with anyio.fail_after(5):
        while running(grandchild):
            await anyio.sleep(0.01)


async def test_output_cap(tmp_path: Path) -> None:
    result = await run_command([script(tmp_path, "exec yes")], timeout=10, limit=1000)
    assert result.truncated
    assert not result.timed_out
    assert len(result.stdout) == 1000
    assert result.returncode is None


async def test_stderr_tail_keeps_the_end_and_never_truncates(tmp_path: Path) -> None:
    # Progress first (far more than both the tail and the cap), the error last.
    body = "i=0; while [ $i -lt 3000 ]; do echo progress-line-$i >&2; i=$((i+1)); done; "
    body += "echo the-error >&2; echo out; exit 3"
    result = await run_command([script(tmp_path, body)], timeout=10, limit=100, stderr_tail=64)
    assert (result.returncode, result.stdout) == (3, b"out\n")
    assert not result.truncated
    assert len(result.stderr) == 64
    assert result.stderr.endswith(b"progress-line-2999\nthe-error\n")


async def test_stderr_tail_shorter_output_is_kept_whole(tmp_path: Path) -> None:
    result = await run_command([script(tmp_path, "echo short >&2")], timeout=5, stderr_tail=1 << 16)
    assert result.stderr == b"short\n"
    assert result.ok


async def test_stdout_cap_still_holds_with_a_stderr_tail(tmp_path: Path) -> None:
    result = await run_command(
        [script(tmp_path, "exec yes")], timeout=10, limit=1000, stderr_tail=64
    )
    assert result.truncated
    assert result.returncode is None
    assert len(result.stdout) == 1000


async def test_caller_cancellation_leaves_nothing_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    cmd = script(tmp_path, f"echo $$ > {pid_file}; exec sleep 600")
    with anyio.move_on_after(0.5):
        await run_command([cmd], timeout=60)
    pid = int(pid_file.read_text())
    with anyio.fail_after(5):
        while running(pid):
            await anyio.sleep(0.01)


async def test_stdin_is_closed(tmp_path: Path) -> None:
    result = await run_command([script(tmp_path, "cat; echo done")], timeout=5)
    assert result.stdout == b"done\n"


def test_first_line() -> None:
    assert first_line(b"\n\n  hello world \nsecond") == "hello world"
    assert first_line(b"") == ""
    assert first_line(b"\xff\xfe x") == "\ufffd\ufffd x"
    assert len(first_line(b"x" * 10_000, 50)) == 50
