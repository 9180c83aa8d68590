"""The phases of one session, as the agent sees it: a transition table and a pure step.

A session starts ``opening`` once the handshake succeeded.  A node without
an identity goes ``opening --register--> registering --registered-->
opening``; then ``opening --system_info_sent--> flushing`` (the results kept
while disconnected go out) ``--outbox_sent--> ready``.  Every phase ends
``closed`` when the connection goes, however it goes; nothing leaves
``closed``: the next connection is a new session.

Only a ``ready`` session takes results straight away.  Before that, a result
waits in the outbox, which goes out right after ``system_info``: no result
ever precedes the ``system_info`` that opens its session.
"""

from __future__ import annotations

import enum
from typing import Final

from vectorlay.errors import InvalidTransition


class Phase(enum.StrEnum):
    OPENING = "opening"  # connected; system_info has not gone out yet
    REGISTERING = "registering"  # connected with the org token, waiting for an identity
    FLUSHING = "flushing"  # system_info is out; the results kept meanwhile follow it
    READY = "ready"  # results go straight to the control plane
    CLOSED = "closed"  # the connection is gone


class Event(enum.StrEnum):
    REGISTER = "register"  # no node identity yet: registration asks for one
    REGISTERED = "registered"  # registration_success arrived and node.json is saved
    SYSTEM_INFO_SENT = "system_info_sent"
    OUTBOX_SENT = "outbox_sent"  # every result kept while disconnected is out
    ENDED = "ended"  # the connection is gone, whatever the reason


_OPEN: Final = (Phase.OPENING, Phase.REGISTERING, Phase.FLUSHING, Phase.READY)

TRANSITIONS: Final[dict[tuple[Phase, Event], Phase]] = {
    (Phase.OPENING, Event.REGISTER): Phase.REGISTERING,
    (Phase.REGISTERING, Event.REGISTERED): Phase.OPENING,
    (Phase.OPENING, Event.SYSTEM_INFO_SENT): Phase.FLUSHING,
    (Phase.FLUSHING, Event.OUTBOX_SENT): Phase.READY,
    **{(phase, Event.ENDED): Phase.CLOSED for phase in _OPEN},
}


def step(phase: Phase, event: Event) -> Phase:
    """The phase after ``event``; raises :class:`InvalidTransition` if no row matches."""
    after = TRANSITIONS.get((phase, event))
    if after is None:
        raise InvalidTransition(f"no session transition from {phase.value} on {event.value}")
    return after


def takes_results(phase: Phase) -> bool:
    """Whether a result made now goes straight out (else it waits in the outbox)."""
    return phase is Phase.READY
