"""The agent's timing: heartbeats, its keepalive figures and reconnect backoff.

Every function takes its inputs (durations, a random source) as arguments, so
the policy is pure and tests are exact.  Whether a silent control plane is
gone is :mod:`vectorlay.domain.liveness`'s to say; the close codes are in
:mod:`vectorlay.domain.closecodes`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Final

import msgspec

from vectorlay.domain.closecodes import CLOSE_UNAUTHORIZED

DEFAULT_HEARTBEAT_INTERVAL: Final = 30.0
DEFAULT_PONG_TIMEOUT: Final = 10.0
DEFAULT_RECONNECT_DELAY: Final = 5.0
DEFAULT_RECONNECT_CAP: Final = 60.0
MIN_BACKOFF_BASE: Final = 0.5
# The first retry's jitter window, in units of the reconnect delay: the
# protocol wants the first retry right after the delay, so it stays narrow.
RECONNECT_SPREAD: Final = 1.0


class HeartbeatPolicy(msgspec.Struct, frozen=True):
    """How often the agent beats, and the keepalive figures that follow from it."""

    interval: float = DEFAULT_HEARTBEAT_INTERVAL
    pong_timeout: float = DEFAULT_PONG_TIMEOUT

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("heartbeat interval must be > 0")
        if not self.pong_timeout > 0:
            raise ValueError("pong timeout must be > 0")

    @property
    def ping_after(self) -> float:
        """Silence from the peer after which the agent sends a WebSocket ping."""
        return 2 * self.interval


class ReconnectPolicy(msgspec.Struct, frozen=True):
    """Exponential backoff with full jitter, never earlier than ``first_delay``.

    Attempt ``n`` (from 0) waits ``first_delay + U(0, window_n)`` with
    ``window_n = min(cap, base * (1 + SPREAD) * 2**n) - first_delay`` and
    ``base = max(first_delay, MIN_BACKOFF_BASE)``.  With the defaults: 5-10 s,
    5-20 s, 5-40 s, then 5-60 s.  The first retry comes after the configured
    delay, as the protocol says, and no later than twice that, so a node that
    lost a healthy control plane is back long before the 60 s offline
    deadline; the jitter above the delay spreads a fleet that lost its control
    plane at the same instant.  No delay exceeds ``cap``, and none is shorter
    than ``first_delay``: that floor is what makes the agent wait at least the
    reconnect delay after every close, ``4409`` included.
    """

    first_delay: float = DEFAULT_RECONNECT_DELAY
    cap: float = DEFAULT_RECONNECT_CAP

    def __post_init__(self) -> None:
        if not self.first_delay >= 0:
            raise ValueError("reconnect delay must be >= 0")
        if not self.cap >= self.first_delay:
            raise ValueError("reconnect cap must be >= the first delay")

    def window(self, attempt: int) -> float:
        # A zero first delay (tests, impatient operators) must still back
        # off: the growth starts from at least MIN_BACKOFF_BASE seconds.
        base = max(self.first_delay, MIN_BACKOFF_BASE) * (1 + RECONNECT_SPREAD)
        # Bound the exponent: 2**1100 overflows a float.
        ceiling = min(self.cap, base * 2.0 ** min(attempt, 64))
        return max(0.0, ceiling - self.first_delay)


def backoff(policy: ReconnectPolicy, rand: Callable[[], float]) -> Iterator[float]:
    """Endless delays for consecutive failed attempts.

    ``rand`` returns floats in ``[0, 1)`` (``random.Random().random``).  Start
    a new generator after a good session: that is the reset.
    """
    attempt = 0
    while True:
        yield policy.first_delay + rand() * policy.window(attempt)
        attempt += 1


def good_session(*, system_info_sent: bool, connected_for: float, interval: float) -> bool:
    """Whether a session earned a backoff reset (``docs/protocol.md``, Reconnect and backoff)."""
    return system_info_sent and connected_for >= interval


class CloseAction(enum.Enum):
    RECONNECT = "reconnect"  # after the next backoff delay
    EXIT = "exit"  # retrying cannot help


def on_close(code: int) -> CloseAction:
    """What the agent does when the control plane closes with ``code``.

    Only a refused credential stops it.  ``4409`` (another session for this
    node) needs no timing of its own: every backoff delay is already at least
    the reconnect delay the protocol asks for.
    """
    if code == CLOSE_UNAUTHORIZED:
        return CloseAction.EXIT
    return CloseAction.RECONNECT
