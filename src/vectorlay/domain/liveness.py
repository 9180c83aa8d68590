"""Liveness: when a silent peer counts as gone, for both ends of a session.

The control plane gives up on a node silent for ``offline_after`` seconds;
the agent's transport probes a silent control plane with a WebSocket ping
before it gives up.  Both ask the same :class:`LivenessPolicy`, passing
``now`` (monotonic seconds) in, so the decision is pure and tests are exact.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

DEFAULT_OFFLINE_AFTER: Final = 60.0


class Verdict(enum.Enum):
    """Where a peer stands, given what was last heard from it and when."""

    ALIVE = "alive"  # heard from recently enough: nothing to do yet
    PROBE = "probe"  # silent long enough: probe it now
    PROBED = "probed"  # a probe is out and may still be answered
    GONE = "gone"  # silent past its deadline, or the probe went unanswered


class LivenessPolicy(msgspec.Struct, frozen=True):
    """A peer silent for ``offline_after`` seconds is gone.

    Every frame from the peer (a message, a ping, a pong) restarts the count,
    and each peer has its own exact deadline rather than a periodic sweep
    that would add up to one sweep period of lateness.

    With a ``probe_timeout``, the side that can probe (the agent, with a
    WebSocket ping) does so ``probe_timeout`` seconds before that deadline,
    and the peer is gone only once the probe has gone unanswered for
    ``probe_timeout``: a probe that went out late still gets its full time.
    Without one, the deadline alone decides.
    """

    offline_after: float = DEFAULT_OFFLINE_AFTER
    probe_timeout: float = 0.0

    def __post_init__(self) -> None:
        if not self.offline_after > 0:
            raise ValueError("offline_after must be > 0")
        if not 0 <= self.probe_timeout <= self.offline_after:
            raise ValueError("probe_timeout must be >= 0 and at most offline_after")

    def deadline(self, last_heard: float) -> float:
        """When a peer last heard from at ``last_heard`` has been silent ``offline_after``."""
        return last_heard + self.offline_after

    def is_offline(self, last_heard: float, now: float) -> bool:
        return now >= self.deadline(last_heard)

    def probe_due(self, last_heard: float) -> float:
        """When to probe a peer last heard from at ``last_heard``."""
        return self.deadline(last_heard) - self.probe_timeout

    def verdict(self, *, last_heard: float, now: float, probed_at: float | None = None) -> Verdict:
        """Where the peer stands; ``probed_at`` is when the latest probe went out, if any.

        A frame heard at or after ``probed_at`` answers the probe.
        """
        if probed_at is not None and last_heard < probed_at:
            return Verdict.GONE if now >= probed_at + self.probe_timeout else Verdict.PROBED
        if not self.probe_timeout:
            return Verdict.GONE if self.is_offline(last_heard, now) else Verdict.ALIVE
        return Verdict.PROBE if now >= self.probe_due(last_heard) else Verdict.ALIVE

    def next_check(self, *, last_heard: float, probed_at: float | None = None) -> float:
        """When the verdict changes next if nothing more is heard."""
        if probed_at is not None and last_heard < probed_at:
            return probed_at + self.probe_timeout
        return self.probe_due(last_heard)
