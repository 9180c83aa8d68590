"""Node status as the control plane sees it: a transition table and a pure step.

``offline --connect--> degraded --deps ok--> online``; ``online --deps
fail--> degraded``; any connected status ``--disconnect--> offline``;
``online|degraded --drain--> draining --replicas gone--> maintenance``;
``maintenance --resume--> online`` (``degraded`` when deps are not ok).
An operator hold (drain or maintenance) is part of the node and survives a
disconnect: the reconnecting node comes back ``draining`` or
``maintenance``, never ``online``.  Drain on a node already held in
maintenance is a no-op: maintenance is the stricter hold, and drain would
only loosen it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

import msgspec

from vectorlay.errors import InvalidTransition


class Status(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DEGRADED = "degraded"
    DRAINING = "draining"
    MAINTENANCE = "maintenance"


class Hold(enum.StrEnum):
    """An operator's decision that outlives sessions."""

    DRAIN = "drain"
    MAINTENANCE = "maintenance"


class Event(enum.StrEnum):
    CONNECT = "connect"  # a session authenticated
    DISCONNECT = "disconnect"  # socket closed or liveness deadline passed
    DEPS_OK = "deps_ok"  # system_info with ready = true
    DEPS_FAILED = "deps_failed"  # system_info with ready = false
    DRAIN = "drain"  # operator
    MAINTENANCE = "maintenance"  # operator
    RESUME = "resume"  # operator
    REPLICAS_GONE = "replicas_gone"  # the last replica of a draining node ended


class Node(msgspec.Struct, frozen=True):
    status: Status = Status.OFFLINE
    hold: Hold | None = None
    deps_ok: bool = False


def _connected_target(node: Node) -> Status:
    """Where a connected node stands given its hold and dependencies."""
    if node.hold is Hold.MAINTENANCE:
        return Status.MAINTENANCE
    if node.hold is Hold.DRAIN:
        return Status.DRAINING
    return Status.ONLINE if node.deps_ok else Status.DEGRADED


Rule = Callable[[Node], Node]


def _to(status: Status) -> Rule:
    return lambda node: msgspec.structs.replace(node, status=status)


def _deps(ok: bool) -> Rule:
    def rule(node: Node) -> Node:
        node = msgspec.structs.replace(node, deps_ok=ok)
        return msgspec.structs.replace(node, status=_connected_target(node))

    return rule


def _hold(hold: Hold | None, *, connected: bool) -> Rule:
    def rule(node: Node) -> Node:
        node = msgspec.structs.replace(node, hold=hold)
        status = _connected_target(node) if connected else Status.OFFLINE
        return msgspec.structs.replace(node, status=status)

    return rule


def _drain(*, connected: bool) -> Rule:
    """Drain, unless maintenance already holds the node (then nothing changes)."""
    hold_drain = _hold(Hold.DRAIN, connected=connected)

    def rule(node: Node) -> Node:
        return node if node.hold is Hold.MAINTENANCE else hold_drain(node)

    return rule


def _connect(node: Node) -> Node:
    # Dependencies are unknown until the session's system_info arrives.
    node = msgspec.structs.replace(node, deps_ok=False)
    return msgspec.structs.replace(node, status=_connected_target(node))


_CONNECTED: Final = (Status.ONLINE, Status.DEGRADED, Status.DRAINING, Status.MAINTENANCE)

TRANSITIONS: Final[dict[tuple[Status, Event], Rule]] = {
    (Status.OFFLINE, Event.CONNECT): _connect,
    # Operators may act on an offline node; the hold applies on reconnect.
    (Status.OFFLINE, Event.DRAIN): _drain(connected=False),
    (Status.OFFLINE, Event.MAINTENANCE): _hold(Hold.MAINTENANCE, connected=False),
    (Status.OFFLINE, Event.RESUME): _hold(None, connected=False),
    **{(s, Event.DISCONNECT): _to(Status.OFFLINE) for s in _CONNECTED},
    **{(s, Event.DEPS_OK): _deps(True) for s in _CONNECTED},
    **{(s, Event.DEPS_FAILED): _deps(False) for s in _CONNECTED},
    (Status.ONLINE, Event.DRAIN): _hold(Hold.DRAIN, connected=True),
    (Status.DEGRADED, Event.DRAIN): _hold(Hold.DRAIN, connected=True),
    (Status.DRAINING, Event.DRAIN): _hold(Hold.DRAIN, connected=True),
    (Status.MAINTENANCE, Event.DRAIN): _drain(connected=True),
    (Status.DRAINING, Event.REPLICAS_GONE): _hold(Hold.MAINTENANCE, connected=True),
    **{(s, Event.MAINTENANCE): _hold(Hold.MAINTENANCE, connected=True) for s in _CONNECTED},
    (Status.MAINTENANCE, Event.RESUME): _hold(None, connected=True),
    (Status.DRAINING, Event.RESUME): _hold(None, connected=True),
    # Resuming a node that has no hold is a harmless repeat of the operator's wish.
    (Status.ONLINE, Event.RESUME): _hold(None, connected=True),
    (Status.DEGRADED, Event.RESUME): _hold(None, connected=True),
}


def step(node: Node, event: Event) -> Node:
    """The node after ``event``; raises :class:`InvalidTransition` if no row matches."""
    rule = TRANSITIONS.get((node.status, event))
    if rule is None:
        raise InvalidTransition(f"no transition from {node.status.value} on {event.value}")
    return rule(node)


def accepts_deploys(node: Node) -> bool:
    return node.status is Status.ONLINE
