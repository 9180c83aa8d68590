"""The outbox: results go straight out on a ready session, else wait (bounded, oldest first)."""

from __future__ import annotations

import pytest

from vectorlay.app.agent.commands import Outbox
from vectorlay.domain.agent.session import Phase
from vectorlay.domain.messages import Message, ReplicaStatus, ResultPayload, StopResult
from vectorlay.errors import ConnectionLost


class FakeLink:
    """A session as the outbox sees it: a phase, and a send that records or fails."""

    def __init__(self, phase: Phase, fail: Exception | None = None) -> None:
        self.phase = phase
        self.fail = fail
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(message)


def result(rid: str) -> StopResult:
    return StopResult(ResultPayload(rid, ReplicaStatus.STOPPED))


async def test_without_a_session_results_are_kept() -> None:
    outbox = Outbox(10)
    await outbox.deliver(result("a"))
    assert list(outbox) == [result("a")]


@pytest.mark.parametrize("phase", [Phase.OPENING, Phase.REGISTERING, Phase.FLUSHING, Phase.CLOSED])
async def test_a_session_that_is_not_ready_gets_nothing_straight_away(phase: Phase) -> None:
    outbox = Outbox(10)
    link = FakeLink(phase)
    outbox.attach(link)
    await outbox.deliver(result("a"))
    assert link.sent == []
    assert list(outbox) == [result("a")]


async def test_a_ready_session_gets_results_at_once() -> None:
    outbox = Outbox(10)
    link = FakeLink(Phase.READY)
    outbox.attach(link)
    await outbox.deliver(result("a"))
    assert link.sent == [result("a")]
    assert len(outbox) == 0


async def test_a_result_the_session_failed_to_send_is_kept() -> None:
    outbox = Outbox(10)
    outbox.attach(FakeLink(Phase.READY, fail=ConnectionLost("reset")))
    await outbox.deliver(result("a"))
    assert list(outbox) == [result("a")]


async def test_after_detach_results_are_kept() -> None:
    outbox = Outbox(10)
    link = FakeLink(Phase.READY)
    outbox.attach(link)
    outbox.detach()
    await outbox.deliver(result("a"))
    assert link.sent == []
    assert list(outbox) == [result("a")]


async def test_a_full_outbox_drops_the_oldest_and_counts_it() -> None:
    outbox = Outbox(2)
    for rid in ("a", "b", "c"):
        await outbox.deliver(result(rid))
    assert list(outbox) == [result("b"), result("c")]
    assert outbox.dropped == 1


async def test_flush_sends_oldest_first_and_empties() -> None:
    outbox = Outbox(10)
    for rid in ("a", "b"):
        await outbox.deliver(result(rid))
    link = FakeLink(Phase.FLUSHING)
    await outbox.flush(link.send)
    assert link.sent == [result("a"), result("b")]
    assert len(outbox) == 0


async def test_a_result_that_fails_to_flush_stays_first() -> None:
    outbox = Outbox(10)
    for rid in ("a", "b"):
        await outbox.deliver(result(rid))
    with pytest.raises(ConnectionLost):
        await outbox.flush(FakeLink(Phase.FLUSHING, fail=ConnectionLost("reset")).send)
    assert list(outbox) == [result("a"), result("b")]
