"""Sessions end and come back: the outbox, backoff, close codes, and stopping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
import pytest

from tests.support import ORG_TOKEN
from tests.unit.agent_harness import (
    NODE,
    deploy,
    open_session,
    recv,
    recv_until,
    running_agent,
)
from vectorlay.adapters.memory import MemoryConnection, MemoryTransport
from vectorlay.app.agent.config import EXIT_OK, EXIT_UNAUTHORIZED, AgentConfig
from vectorlay.domain.messages import (
    DeployResult,
    Error,
    Heartbeat,
    ReplicaStatus,
    ResultPayload,
    StopResult,
    SystemInfo,
)
from vectorlay.errors import ConnectFailed, ConnectionClosed


async def test_results_made_while_disconnected_follow_system_info() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        gate = h.runtime.gate("run")
        await peer.send_message(deploy("a"))
        await h.settle()
        await peer.drop()
        await h.settle()
        gate.set()  # the deploy finishes while no session is open
        await h.settle()
        assert len(h.agent.outbox) == 1
        await h.advance(5)
        peer2 = await h.accept()
        info = await recv(peer2)
        assert isinstance(info, SystemInfo)
        assert [(r.replica_id, r.status) for r in info.payload.replicas] == [
            ("a", ReplicaStatus.RUNNING)
        ]
        queued = await recv(peer2)
        assert isinstance(queued, DeployResult)
        assert queued.payload.replica_id == "a"
        assert isinstance(await recv(peer2), Heartbeat)
        assert "a" in h.runtime.containers  # never stopped for a disconnect


async def test_outbox_is_bounded_and_drops_the_oldest() -> None:
    async with running_agent(outbox_size=2) as h:
        peer = await open_session(h)
        await peer.drop()
        await h.settle()
        for rid in ("a", "b", "c"):
            await h.agent.outbox.deliver(StopResult(ResultPayload(rid, ReplicaStatus.STOPPED)))
        assert [m.payload.replica_id for m in h.agent.outbox if isinstance(m, StopResult)] == [
            "b",
            "c",
        ]
        assert h.agent.outbox.dropped == 1


async def test_first_retry_after_the_reconnect_delay_then_backoff() -> None:
    async with running_agent(rand=0.999) as h:
        for _ in range(3):
            h.transport.refuse_next(ConnectFailed("connection refused"))
        await h.settle()
        assert len(h.transport.attempts) == 1
        await h.advance(5 + 0.999 * 5 - 0.01)
        assert len(h.transport.attempts) == 1
        await h.advance(0.02)
        assert len(h.transport.attempts) == 2
        # second failure: window 5..20
        await h.advance(5 + 0.999 * 15 + 0.01)
        assert len(h.transport.attempts) == 3
        for _ in range(10):
            await h.advance(60)
        assert len(h.transport.attempts) >= 4
        await open_session(h)


async def test_close_4401_exits_and_keeps_node_json() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.close(4401)
        assert await h.exited() == EXIT_UNAUTHORIZED
    assert h.store.config == NODE


@pytest.mark.parametrize("code", [4001, 4409, 1011])
async def test_other_close_codes_reconnect(code: int) -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.close(code)
        await h.settle()
        assert h.exit_code is None
        await h.advance(4.99)
        assert len(h.transport.attempts) == 1  # never before the reconnect delay
        await h.advance(0.01)
        await open_session(h)
        assert h.agent.sessions == 2


async def test_a_conflicting_session_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.close(4409)
        await h.settle()
    assert "another session for this node is open (code 4409)" in caplog.text


async def test_sigterm_style_stop_closes_1001_and_leaves_containers() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a"))
        await recv_until(peer, DeployResult)
        h.agent.request_stop()
        assert await h.exited() == EXIT_OK
        with pytest.raises(ConnectionClosed, match="1001"):
            await recv_until(peer, Error)
    assert "a" in h.runtime.containers
    assert [c for c in h.runtime.calls if c[0] == "stop"] == []


async def test_shutdown_lets_a_running_deploy_report_before_closing() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        gate = h.runtime.gate("run")
        await peer.send_message(deploy("late"))
        await h.settle()
        h.agent.request_stop()
        await h.settle()
        gate.set()
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.RUNNING
        with pytest.raises(ConnectionClosed, match="1001"):
            await recv_until(peer, Error)
    assert h.exit_code == EXIT_OK


class HangingTransport(MemoryTransport):
    """A handshake that never finishes (an unreachable control plane, a long timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.dialing = anyio.Event()

    @asynccontextmanager
    async def connect(self, url: str, credential: str) -> AsyncIterator[MemoryConnection]:
        self.dialing.set()
        await anyio.sleep_forever()
        async with super().connect(url, credential) as conn:
            yield conn


async def test_a_stop_during_a_handshake_gives_the_handshake_up_at_once() -> None:
    transport = HangingTransport()
    async with running_agent(transport=transport) as h:
        with anyio.fail_after(5):
            await transport.dialing.wait()
        h.agent.request_stop()  # no clock advance: no connect timeout ever passes
        assert await h.exited() == EXIT_OK
    assert h.agent.sessions == 0


async def test_a_stop_before_the_first_session_connects_nowhere() -> None:
    async with running_agent() as h:
        h.agent.request_stop()
        assert await h.exited() == EXIT_OK
    assert h.transport.attempts == []


async def test_config_repr_hides_the_token() -> None:
    config = replace(AgentConfig(), org_token=ORG_TOKEN)
    assert ORG_TOKEN not in repr(config)
