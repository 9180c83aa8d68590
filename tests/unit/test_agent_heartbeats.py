"""The agent's heartbeats: on the interval, at once on a change, never held back."""

from __future__ import annotations

import anyio
import pytest

from tests.unit.agent_harness import deploy, open_session, recv, recv_until, running_agent
from vectorlay.adapters.memory import StaticProbe
from vectorlay.domain.messages import DeployResult, Heartbeat, HostMetrics, ReplicaStatus


async def test_heartbeats_follow_the_interval_with_growing_seq() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        first = await recv(peer)
        assert isinstance(first, Heartbeat)
        assert first.payload.seq == 1
        assert first.payload.sent_at is not None
        assert first.payload.sent_at.endswith("Z")
        await h.advance(29.5)
        with anyio.move_on_after(0.05):
            await peer.receive()
            pytest.fail("heartbeat before the interval")
        await h.advance(0.5)
        second = await recv(peer)
        assert isinstance(second, Heartbeat)
        assert second.payload.seq == 2
        assert second.payload.status.memory_total_gb == 64


async def test_container_exit_triggers_an_immediate_heartbeat() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await recv_until(peer, Heartbeat)
        await peer.send_message(deploy("r1"))
        await recv_until(peer, DeployResult)
        beat = await recv_until(peer, Heartbeat)
        assert [(c.replica_id, c.status) for c in beat.payload.status.containers] == [
            ("r1", ReplicaStatus.RUNNING)
        ]
        h.runtime.set_status("r1", ReplicaStatus.FAILED, 3)
        exit_beat = await recv(peer)  # no clock advance needed
        assert isinstance(exit_beat, Heartbeat)
        assert [(c.replica_id, c.status) for c in exit_beat.payload.status.containers] == [
            ("r1", ReplicaStatus.FAILED)
        ]


async def test_slow_deploy_does_not_delay_heartbeats() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await recv_until(peer, Heartbeat)
        gate = h.runtime.gate("run")
        await peer.send_message(deploy("slow"))
        await h.settle()
        await h.advance(30)
        beat = await recv(peer)
        assert isinstance(beat, Heartbeat)
        assert [(c.replica_id, c.status) for c in beat.payload.status.containers] == [
            ("slow", ReplicaStatus.PENDING)
        ]
        gate.set()
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.RUNNING


class GatedProbe(StaticProbe):
    """Host metrics that come only when the gate opens (a slow nvidia-smi)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()

    async def metrics(self) -> HostMetrics:
        await self.gate.wait()
        return await super().metrics()


async def test_a_beat_sent_before_the_first_host_figures_is_followed_when_they_come() -> None:
    probe = GatedProbe()
    async with running_agent(probe=probe) as h:
        peer = await open_session(h)
        await h.settle()
        await h.advance(2)  # the beat's wait for fresh figures runs out
        first = await recv_until(peer, Heartbeat)
        assert first.payload.status.memory_total_gb is None
        probe.gate.set()
        follow = await recv(peer)  # no clock advance: not a whole interval later
        assert isinstance(follow, Heartbeat)
        assert follow.payload.status.memory_total_gb == 64
        await h.advance(30)
        regular = await recv(peer)
        assert isinstance(regular, Heartbeat)
        assert follow.payload.seq is not None
        assert regular.payload.seq == follow.payload.seq + 1


async def test_a_hung_runtime_list_never_stops_heartbeats() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await recv_until(peer, Heartbeat)
        h.runtime.gate("list")  # every list from now on hangs
        for expected_seq in range(2, 14):
            await h.advance(30)
            beat = await recv(peer)
            assert isinstance(beat, Heartbeat)
            assert beat.payload.seq == expected_seq
