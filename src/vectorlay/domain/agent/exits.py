"""Why a replica ended, in words an operator can act on.

Every ended replica carries the exit code the runtime reported and, when it
failed, a reason (docs/protocol.md, "Messages"): ``"container exited with code 137
(killed by SIGKILL)"``, ``"... (killed: out of memory)"`` when the runtime
reported an OOM kill, ``"container removed outside the agent"`` when the
container vanished without a ``stop``.  The texts are built from numbers and
fixed words only, so they never carry a secret.
"""

from __future__ import annotations

from typing import Final

REMOVED_OUTSIDE: Final = "container removed outside the agent"

# Linux signal numbers (x86-64 and arm64 agree on these): a shell, runc and
# Kata report a process killed by signal N as exit code 128 + N.
_SIGNALS: Final = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGUSR1",
    11: "SIGSEGV",
    12: "SIGUSR2",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
    16: "SIGSTKFLT",
    17: "SIGCHLD",
    18: "SIGCONT",
    19: "SIGSTOP",
    20: "SIGTSTP",
    21: "SIGTTIN",
    22: "SIGTTOU",
    23: "SIGURG",
    24: "SIGXCPU",
    25: "SIGXFSZ",
    26: "SIGVTALRM",
    27: "SIGPROF",
    28: "SIGWINCH",
    29: "SIGIO",
    30: "SIGPWR",
    31: "SIGSYS",
}
SIGNAL_BASE: Final = 128
SIGKILL_CODE: Final = SIGNAL_BASE + 9


def signal_name(exit_code: int) -> str | None:
    """The signal an exit code of 128 + N stands for, or ``None``."""
    if exit_code <= SIGNAL_BASE:
        return None
    number = exit_code - SIGNAL_BASE
    if number in _SIGNALS:
        return _SIGNALS[number]
    if 32 <= number <= 64:
        return f"SIGRTMIN+{number - 34}" if number >= 34 else f"signal {number}"
    return None


def exit_reason(exit_code: int | None, *, oom_killed: bool = False) -> str | None:
    """The ``error`` of a container that ended with ``exit_code``; ``None`` for a clean exit.

    ``oom_killed``: the runtime reported an out-of-memory kill for the
    container (nerdctl's ``/tasks/oom`` event, Docker's ``State.OOMKilled``).
    """
    if exit_code is None:
        return "container ended without an exit code (it never started, or its task was lost)"
    if exit_code == 0 and not oom_killed:
        return None
    text = f"container exited with code {exit_code}"
    if oom_killed:
        return f"{text} (killed: out of memory)"
    name = signal_name(exit_code)
    if name is not None:
        return f"{text} (killed by {name})"
    return text


__all__ = ["REMOVED_OUTSIDE", "SIGKILL_CODE", "exit_reason", "signal_name"]
