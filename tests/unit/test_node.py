"""Node status state machine: every row, every forbidden pair, random walks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vectorlay.domain.fleet.node import (
    TRANSITIONS,
    Event,
    Hold,
    Node,
    Status,
    accepts_deploys,
    step,
)
from vectorlay.errors import InvalidTransition

S, E, H = Status, Event, Hold

# (start, event, expected) — written from the protocol's node rules, one case
# or more for every row of the table.
CASES: list[tuple[Node, Event, Node]] = [
    # offline --connect--> degraded; deps are unknown until system_info.
    (Node(S.OFFLINE), E.CONNECT, Node(S.DEGRADED)),
    (Node(S.OFFLINE, deps_ok=True), E.CONNECT, Node(S.DEGRADED)),
    # A hold survives the disconnect and applies on reconnect.
    (Node(S.OFFLINE, H.DRAIN), E.CONNECT, Node(S.DRAINING, H.DRAIN)),
    (Node(S.OFFLINE, H.MAINTENANCE), E.CONNECT, Node(S.MAINTENANCE, H.MAINTENANCE)),
    # Operators may act on an offline node.
    (Node(S.OFFLINE), E.DRAIN, Node(S.OFFLINE, H.DRAIN)),
    # Drain never loosens maintenance: a no-op offline as well as connected.
    (Node(S.OFFLINE, H.MAINTENANCE), E.DRAIN, Node(S.OFFLINE, H.MAINTENANCE)),
    (Node(S.OFFLINE, H.MAINTENANCE, True), E.DRAIN, Node(S.OFFLINE, H.MAINTENANCE, True)),
    (Node(S.OFFLINE, H.DRAIN), E.DRAIN, Node(S.OFFLINE, H.DRAIN)),
    (Node(S.OFFLINE), E.MAINTENANCE, Node(S.OFFLINE, H.MAINTENANCE)),
    (Node(S.OFFLINE, H.DRAIN), E.MAINTENANCE, Node(S.OFFLINE, H.MAINTENANCE)),
    (Node(S.OFFLINE, H.DRAIN), E.RESUME, Node(S.OFFLINE)),
    (Node(S.OFFLINE, H.MAINTENANCE), E.RESUME, Node(S.OFFLINE)),
    (Node(S.OFFLINE), E.RESUME, Node(S.OFFLINE)),
    # Disconnect from every connected status; hold and deps are kept.
    (Node(S.ONLINE, deps_ok=True), E.DISCONNECT, Node(S.OFFLINE, deps_ok=True)),
    (Node(S.DEGRADED), E.DISCONNECT, Node(S.OFFLINE)),
    (Node(S.DRAINING, H.DRAIN, True), E.DISCONNECT, Node(S.OFFLINE, H.DRAIN, True)),
    (Node(S.MAINTENANCE, H.MAINTENANCE), E.DISCONNECT, Node(S.OFFLINE, H.MAINTENANCE)),
    # degraded --deps ok--> online; online --deps fail--> degraded.
    (Node(S.DEGRADED), E.DEPS_OK, Node(S.ONLINE, deps_ok=True)),
    (Node(S.ONLINE, deps_ok=True), E.DEPS_OK, Node(S.ONLINE, deps_ok=True)),
    (Node(S.ONLINE, deps_ok=True), E.DEPS_FAILED, Node(S.DEGRADED)),
    (Node(S.DEGRADED), E.DEPS_FAILED, Node(S.DEGRADED)),
    # Deps reports on a held node change deps, never the status.
    (Node(S.DRAINING, H.DRAIN), E.DEPS_OK, Node(S.DRAINING, H.DRAIN, True)),
    (Node(S.DRAINING, H.DRAIN, True), E.DEPS_FAILED, Node(S.DRAINING, H.DRAIN)),
    (Node(S.MAINTENANCE, H.MAINTENANCE), E.DEPS_OK, Node(S.MAINTENANCE, H.MAINTENANCE, True)),
    (Node(S.MAINTENANCE, H.MAINTENANCE, True), E.DEPS_FAILED, Node(S.MAINTENANCE, H.MAINTENANCE)),
    # online|degraded --drain--> draining --replicas gone--> maintenance.
    (Node(S.ONLINE, deps_ok=True), E.DRAIN, Node(S.DRAINING, H.DRAIN, True)),
    (Node(S.DEGRADED), E.DRAIN, Node(S.DRAINING, H.DRAIN)),
    (Node(S.DRAINING, H.DRAIN), E.DRAIN, Node(S.DRAINING, H.DRAIN)),
    (Node(S.DRAINING, H.DRAIN, True), E.REPLICAS_GONE, Node(S.MAINTENANCE, H.MAINTENANCE, True)),
    (Node(S.MAINTENANCE, H.MAINTENANCE), E.DRAIN, Node(S.MAINTENANCE, H.MAINTENANCE)),
    (Node(S.MAINTENANCE, H.MAINTENANCE, True), E.DRAIN, Node(S.MAINTENANCE, H.MAINTENANCE, True)),
    # Maintenance applies at once from every connected status.
    (Node(S.ONLINE, deps_ok=True), E.MAINTENANCE, Node(S.MAINTENANCE, H.MAINTENANCE, True)),
    (Node(S.DEGRADED), E.MAINTENANCE, Node(S.MAINTENANCE, H.MAINTENANCE)),
    (Node(S.DRAINING, H.DRAIN), E.MAINTENANCE, Node(S.MAINTENANCE, H.MAINTENANCE)),
    (Node(S.MAINTENANCE, H.MAINTENANCE), E.MAINTENANCE, Node(S.MAINTENANCE, H.MAINTENANCE)),
    # maintenance --resume--> online, or degraded when deps are not ok.
    (Node(S.MAINTENANCE, H.MAINTENANCE, True), E.RESUME, Node(S.ONLINE, deps_ok=True)),
    (Node(S.MAINTENANCE, H.MAINTENANCE), E.RESUME, Node(S.DEGRADED)),
    (Node(S.DRAINING, H.DRAIN, True), E.RESUME, Node(S.ONLINE, deps_ok=True)),
    (Node(S.DRAINING, H.DRAIN), E.RESUME, Node(S.DEGRADED)),
    # Resuming a node without a hold is a harmless repeat.
    (Node(S.ONLINE, deps_ok=True), E.RESUME, Node(S.ONLINE, deps_ok=True)),
    (Node(S.DEGRADED), E.RESUME, Node(S.DEGRADED)),
]

# Pairs with no row: each must raise InvalidTransition.
FORBIDDEN: set[tuple[Status, Event]] = {
    (S.OFFLINE, E.DISCONNECT),  # already disconnected
    (S.OFFLINE, E.DEPS_OK),  # deps arrive only within a session
    (S.OFFLINE, E.DEPS_FAILED),
    (S.OFFLINE, E.REPLICAS_GONE),
    (S.ONLINE, E.CONNECT),  # one session at a time: the old one ends first
    (S.DEGRADED, E.CONNECT),
    (S.DRAINING, E.CONNECT),
    (S.MAINTENANCE, E.CONNECT),
    (S.ONLINE, E.REPLICAS_GONE),  # only a draining node waits for its replicas
    (S.DEGRADED, E.REPLICAS_GONE),
    (S.MAINTENANCE, E.REPLICAS_GONE),
}

OPERATOR_EVENTS = (E.DRAIN, E.MAINTENANCE, E.RESUME)


@pytest.mark.parametrize(("start", "event", "expected"), CASES)
def test_transition(start: Node, event: Event, expected: Node) -> None:
    assert step(start, event) == expected


def test_every_row_of_the_table_has_a_case() -> None:
    covered = {(start.status, event) for start, event, _ in CASES}
    assert covered == set(TRANSITIONS)


def test_the_table_and_the_forbidden_pairs_cover_every_pair_exactly_once() -> None:
    every = set(itertools.product(Status, Event))
    assert set(TRANSITIONS) | FORBIDDEN == every
    assert not set(TRANSITIONS) & FORBIDDEN


@pytest.mark.parametrize(("status", "event"), sorted(FORBIDDEN))
def test_forbidden_pairs_raise(status: Status, event: Event) -> None:
    for hold, deps_ok in itertools.product([None, *Hold], [False, True]):
        node = Node(status, hold, deps_ok)
        with pytest.raises(InvalidTransition) as info:
            step(node, event)
        assert str(info.value) == f"no transition from {status.value} on {event.value}"


def test_operator_events_are_accepted_from_every_status() -> None:
    """The admin API answers drain, maintenance and resume with the node, never a conflict."""
    for status, event in itertools.product(Status, OPERATOR_EVENTS):
        assert (status, event) in TRANSITIONS


def test_step_never_mutates_its_input() -> None:
    node = Node(S.DEGRADED)
    step(node, E.DEPS_OK)
    assert node == Node(S.DEGRADED)


def test_only_online_nodes_accept_deploys() -> None:
    assert accepts_deploys(Node(S.ONLINE, deps_ok=True))
    for status in (S.OFFLINE, S.DEGRADED, S.DRAINING, S.MAINTENANCE):
        assert not accepts_deploys(Node(status))


def test_protocol_story() -> None:
    """The walk of the protocol's node section, end to end."""
    node = Node()
    assert node.status is S.OFFLINE
    for event, status in [
        (E.CONNECT, S.DEGRADED),
        (E.DEPS_OK, S.ONLINE),
        (E.DEPS_FAILED, S.DEGRADED),
        (E.DEPS_OK, S.ONLINE),
        (E.DRAIN, S.DRAINING),
        (E.DISCONNECT, S.OFFLINE),
        (E.CONNECT, S.DRAINING),
        (E.DEPS_OK, S.DRAINING),
        (E.REPLICAS_GONE, S.MAINTENANCE),
        (E.DISCONNECT, S.OFFLINE),
        (E.CONNECT, S.MAINTENANCE),
        (E.RESUME, S.DEGRADED),  # deps unknown after the reconnect
        (E.DEPS_OK, S.ONLINE),
        (E.DISCONNECT, S.OFFLINE),
    ]:
        node = step(node, event)
        assert node.status is status, event


# --- properties ---------------------------------------------------------------


def connected_target(node: Node) -> Status:
    if node.hold is H.MAINTENANCE:
        return S.MAINTENANCE
    if node.hold is H.DRAIN:
        return S.DRAINING
    return S.ONLINE if node.deps_ok else S.DEGRADED


def walk(events: list[Event]) -> list[Node]:
    """Nodes visited from a fresh node, skipping events with no row."""
    node = Node()
    visited = [node]
    for event in events:
        try:
            node = step(node, event)
        except InvalidTransition:
            assert (node.status, event) not in TRANSITIONS
            continue
        visited.append(node)
    return visited


events = st.lists(st.sampled_from(list(Event)), max_size=60)


@given(events)
def test_random_walks_stay_in_defined_states(seq: list[Event]) -> None:
    for node in walk(seq):
        assert node.status in set(Status)
        assert node.hold is None or node.hold in set(Hold)
        if node.status is S.ONLINE:
            assert node.deps_ok
            assert node.hold is None
        if node.status is not S.OFFLINE:
            # A connected node's status follows from its hold and deps.
            assert node.status is connected_target(node)
        if node.hold is H.DRAIN:
            assert node.status in (S.OFFLINE, S.DRAINING)
        if node.hold is H.MAINTENANCE:
            assert node.status in (S.OFFLINE, S.MAINTENANCE)


@given(events)
def test_holds_survive_disconnect_and_reconnect(seq: list[Event]) -> None:
    for node in walk(seq):
        if node.status is S.OFFLINE:
            continue
        back = step(step(node, E.DISCONNECT), E.CONNECT)
        assert back.hold is node.hold
        if node.hold is not None:
            assert back.status is node.status
        else:
            assert back.status is S.DEGRADED  # online again only after deps_ok


@given(events)
def test_drain_never_loosens_maintenance(seq: list[Event]) -> None:
    for node in walk(seq):
        if node.hold is H.MAINTENANCE:
            assert step(node, E.DRAIN) == node


@given(events)
def test_online_is_reachable_after_any_walk(seq: list[Event]) -> None:
    """No walk traps a node: resume, reconnect and deps ok bring it online."""
    node = step(walk(seq)[-1], E.RESUME)
    if node.status is S.OFFLINE:
        node = step(node, E.CONNECT)
    node = step(node, E.DEPS_OK)
    assert node == Node(S.ONLINE, None, True)
