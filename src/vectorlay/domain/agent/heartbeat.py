"""Timing policy: heartbeats, peer liveness, and reconnect backoff.

Every function takes ``now`` (monotonic seconds) or a random source as an
argument, so the policy is pure and tests are exact.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Final

import msgspec

DEFAULT_HEARTBEAT_INTERVAL: Final = 30.0
DEFAULT_PONG_TIMEOUT: Final = 10.0
DEFAULT_OFFLINE_AFTER: Final = 60.0
DEFAULT_RECONNECT_DELAY: Final = 5.0
DEFAULT_RECONNECT_CAP: Final = 60.0
MIN_BACKOFF_BASE: Final = 0.5
# The first retry's jitter window, in units of the reconnect delay: the
# protocol wants the first retry right after the delay, so it stays narrow.
RECONNECT_SPREAD: Final = 1.0


class HeartbeatPolicy(msgspec.Struct, frozen=True):
    """The agent's side: when to beat, when to ping, when the peer is dead."""

    interval: float = DEFAULT_HEARTBEAT_INTERVAL
    pong_timeout: float = DEFAULT_PONG_TIMEOUT

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("heartbeat interval must be > 0")
        if not self.pong_timeout > 0:
            raise ValueError("pong timeout must be > 0")

    def next_beat(self, last_beat: float) -> float:
        return last_beat + self.interval

    @property
    def ping_after(self) -> float:
        """Silence from the peer after which the agent sends a WebSocket ping."""
        return 2 * self.interval

    @property
    def dead_after(self) -> float:
        """Silence after which the connection counts as dead (ping + pong timeout)."""
        return self.ping_after + self.pong_timeout

    def peer_dead(self, last_received: float, now: float) -> bool:
        return now - last_received >= self.dead_after


class LivenessPolicy(msgspec.Struct, frozen=True):
    """The control plane's side: a node silent for ``offline_after`` is offline.

    A per-node exact deadline, refreshed by every frame, rather than a
    periodic sweep that would add up to one sweep period of lateness.
    """

    offline_after: float = DEFAULT_OFFLINE_AFTER

    def __post_init__(self) -> None:
        if not self.offline_after > 0:
            raise ValueError("offline_after must be > 0")

    def deadline(self, last_seen: float) -> float:
        return last_seen + self.offline_after

    def is_offline(self, last_seen: float, now: float) -> bool:
        return now >= self.deadline(last_seen)


class ReconnectPolicy(msgspec.Struct, frozen=True):
    """Exponential backoff with full jitter, never earlier than ``first_delay``.

    Attempt ``n`` (from 0) waits ``first_delay + U(0, window_n)`` with
    ``window_n = min(cap, base * (1 + SPREAD) * 2**n) - first_delay`` and
    ``base = max(first_delay, MIN_BACKOFF_BASE)``.  With the defaults: 5-10 s,
    5-20 s, 5-40 s, then 5-60 s.  The first retry comes after the configured
    delay, as the protocol says, and no later than twice that, so a node that
    lost a healthy control plane is back long before the 60 s offline
    deadline; the jitter above the delay spreads a fleet that lost its control
    plane at the same instant.  No delay exceeds ``cap``.
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
    """Whether a session earned a backoff reset (PROTOCOL.md section 4)."""
    return system_info_sent and connected_for >= interval


class CloseAction(enum.Enum):
    RECONNECT = "reconnect"
    BACK_OFF = "back_off"  # wait at least the reconnect delay, then retry
    EXIT = "exit"  # retrying cannot help


CLOSE_HEARTBEAT_TIMEOUT: Final = 4001
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_SESSION_CONFLICT: Final = 4409
CLOSE_GOING_AWAY: Final = 1001


def on_close(code: int) -> CloseAction:
    """What the agent does when the control plane closes with ``code``."""
    if code == CLOSE_UNAUTHORIZED:
        return CloseAction.EXIT
    if code == CLOSE_SESSION_CONFLICT:
        return CloseAction.BACK_OFF
    return CloseAction.RECONNECT
