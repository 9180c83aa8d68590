"""The phases of a session: the transition table, its pure step, and what each phase allows."""

from __future__ import annotations

import itertools

import pytest

from vectorlay.domain.agent.session import TRANSITIONS, Event, Phase, step, takes_results
from vectorlay.errors import InvalidTransition


def walk(*events: Event) -> Phase:
    phase = Phase.OPENING
    for event in events:
        phase = step(phase, event)
    return phase


def test_a_registered_node_opens_with_system_info_then_the_outbox() -> None:
    assert walk(Event.SYSTEM_INFO_SENT) is Phase.FLUSHING
    assert walk(Event.SYSTEM_INFO_SENT, Event.OUTBOX_SENT) is Phase.READY


def test_a_new_node_registers_before_system_info() -> None:
    assert walk(Event.REGISTER) is Phase.REGISTERING
    assert walk(Event.REGISTER, Event.REGISTERED) is Phase.OPENING
    assert (
        walk(Event.REGISTER, Event.REGISTERED, Event.SYSTEM_INFO_SENT, Event.OUTBOX_SENT)
        is Phase.READY
    )


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.CLOSED])
def test_every_open_phase_closes_when_the_connection_ends(phase: Phase) -> None:
    assert step(phase, Event.ENDED) is Phase.CLOSED


def test_only_a_ready_session_takes_results() -> None:
    assert [p for p in Phase if takes_results(p)] == [Phase.READY]


def test_the_table_has_exactly_these_rows() -> None:
    assert TRANSITIONS == {
        (Phase.OPENING, Event.REGISTER): Phase.REGISTERING,
        (Phase.REGISTERING, Event.REGISTERED): Phase.OPENING,
        (Phase.OPENING, Event.SYSTEM_INFO_SENT): Phase.FLUSHING,
        (Phase.FLUSHING, Event.OUTBOX_SENT): Phase.READY,
        (Phase.OPENING, Event.ENDED): Phase.CLOSED,
        (Phase.REGISTERING, Event.ENDED): Phase.CLOSED,
        (Phase.FLUSHING, Event.ENDED): Phase.CLOSED,
        (Phase.READY, Event.ENDED): Phase.CLOSED,
    }


MISSING = [pair for pair in itertools.product(Phase, Event) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("phase", "event"), MISSING)
def test_an_event_without_a_row_is_an_invalid_transition(phase: Phase, event: Event) -> None:
    with pytest.raises(InvalidTransition) as info:
        step(phase, event)
    assert phase.value in str(info.value)
    assert event.value in str(info.value)


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (Phase.CLOSED, Event.ENDED),  # a session ends once
        (Phase.CLOSED, Event.SYSTEM_INFO_SENT),  # nothing reopens a closed session
        (Phase.READY, Event.SYSTEM_INFO_SENT),  # system_info opens a session once
        (Phase.OPENING, Event.OUTBOX_SENT),  # the outbox never goes before system_info
        (Phase.READY, Event.REGISTER),  # a node registers before it opens, never after
        (Phase.OPENING, Event.REGISTERED),  # no identity without asking for one
    ],
)
def test_the_orderings_that_matter_are_refused(phase: Phase, event: Event) -> None:
    assert (phase, event) in MISSING
    with pytest.raises(InvalidTransition):
        step(phase, event)
