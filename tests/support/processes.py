"""Real processes in tests: one wrapper around ``Popen``, and a reaper that ends them all.

Everything a test starts goes through a :class:`Reaper`, whose ``close()``
kills it: agents, control planes, peers, and the fake nerdctl calls a killed
agent left orphaned (nerdctl runs in a session of its own, so a killed
agent's ``run`` or ``events`` call outlives it, as it would on a real host).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from tests.fakes.nerdctl.fake_nerdctl import LAUNCHER, FakeNerdctl


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class Reaper:
    """Kills whatever a test started, whatever happened."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    fakes: list[FakeNerdctl] = field(default_factory=list)
    peers: list[Closeable] = field(default_factory=list)

    def close(self) -> None:
        for popen in self.procs:
            if popen.poll() is None:
                popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(10)
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.close()
        for fake in self.fakes:
            kill_orphans(fake)
            fake.close()

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def reaping() -> Iterator[Reaper]:
    reaper = Reaper()
    try:
        yield reaper
    finally:
        reaper.close()


@dataclass
class Process:
    """One command line, its environment and the file its output goes to."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, reaper: Reaper, *, piped: bool = False) -> Process:
        """Start it; ``piped`` copies its output through a pipe, for a process that
        cannot write files (a file size limit) but must still be heard."""
        if piped:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            threading.Thread(target=self._copy, name="proc-log", daemon=True).start()
        else:
            with self.log_path.open("ab") as log:
                self.popen = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        reaper.procs.append(self.popen)
        return self

    def _copy(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        with self.log_path.open("ab") as log:
            for line in self.popen.stdout:
                log.write(line)
                log.flush()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        code = self.popen.wait(timeout)
        if self.popen.stdout is not None:
            time.sleep(0.1)  # let the copying thread catch up
        return code

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, as an operator stops it; its exit status."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- the fake nerdctl's own processes ------------------------------------------------------


def _fake_process(pid: int, fake: FakeNerdctl) -> bool:
    """Whether ``pid`` is still a call of this fake nerdctl (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return str(LAUNCHER).encode() in cmdline and str(fake.state_path).encode() in environ


def in_flight(fake: FakeNerdctl, *, events: bool = False) -> list[int]:
    """Pids of fake nerdctl calls still running (``events`` streams left out by default)."""
    return [
        call.pid
        for call in fake.calls()
        if call.end is None and (events or call.op != "events") and _fake_process(call.pid, fake)
    ]


def kill_orphans(fake: FakeNerdctl) -> int:
    pids = in_flight(fake, events=True)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # each call leads a session of its own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


# --- measuring ------------------------------------------------------------------------------


def children_cpu(proc: psutil.Process | None = None) -> dict[int, float]:
    """CPU seconds (user + system) of each running descendant of ``proc`` (default: this one)."""
    seen: dict[int, float] = {}
    for child in (proc or psutil.Process()).children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue  # it ended between the listing and the read
        seen[child.pid] = times.user + times.system
    return seen
