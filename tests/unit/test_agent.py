"""The agent service on in-memory adapters and a manual clock (both backends)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio
import pytest

from vectorlay.adapters.memory import (
    ManualClock,
    MemoryConfigStore,
    MemoryPeer,
    MemoryRuntime,
    MemoryTransport,
    StaticProbe,
    sample_report,
)
from vectorlay.app.agent.service import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNAUTHORIZED,
    Agent,
    AgentConfig,
)
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import ContainerState
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    Error,
    ErrorPayload,
    Heartbeat,
    HostMetrics,
    Message,
    Outbound,
    Register,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopPayload,
    StopResult,
    SystemInfo,
)
from vectorlay.errors import ConnectFailed, ConnectionClosed, ContainerRuntimeError, CorruptConfig

URL = "ws://127.0.0.1:8787/v1/agent"
ORG_TOKEN = "org-secret-token-1"
NODE = NodeConfig("node-1", "node-secret-token-1", URL)


@dataclass
class Harness:
    agent: Agent
    transport: MemoryTransport
    runtime: MemoryRuntime
    probe: StaticProbe
    store: MemoryConfigStore
    clock: ManualClock
    exit_code: int | None = None

    async def accept(self) -> MemoryPeer:
        with anyio.fail_after(5):
            return await self.transport.accept()

    async def settle(self) -> None:
        await anyio.wait_all_tasks_blocked()

    async def advance(self, seconds: float) -> None:
        await anyio.wait_all_tasks_blocked()
        self.clock.advance(seconds)
        await anyio.wait_all_tasks_blocked()


async def recv(peer: MemoryPeer) -> Outbound:
    with anyio.fail_after(5):
        return await peer.receive_message()


M = TypeVar("M", bound=Message)


async def recv_until(peer: MemoryPeer, kind: type[M]) -> M:
    while True:
        msg = await recv(peer)
        if isinstance(msg, kind):
            return msg


@asynccontextmanager
async def running_agent(
    *,
    node: NodeConfig | None = NODE,
    org_token: str | None = None,
    gpus: int = 2,
    ready: bool = True,
    rand: float = 0.0,
    runtime: MemoryRuntime | None = None,
    **config: float,
) -> AsyncIterator[Harness]:
    clock = ManualClock()
    h = Harness(
        agent=None,  # type: ignore[arg-type]
        transport=MemoryTransport(),
        runtime=runtime or MemoryRuntime(),
        probe=StaticProbe(sample_report(ready=ready, gpus=gpus)),
        store=MemoryConfigStore(node),
        clock=clock,
    )
    h.agent = Agent(
        AgentConfig(
            control_plane_url=URL,
            org_token=org_token,
            heartbeat_interval=30.0,
            reconnect_delay=5.0,
            **config,  # type: ignore[arg-type]
        ),
        transport=h.transport,
        runtime=h.runtime,
        probe=h.probe,
        store=h.store,
        clock=clock,
        rand=lambda: rand,
    )

    async def run() -> None:
        h.exit_code = await h.agent.run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        yield h
        h.agent.request_stop()


async def open_session(h: Harness) -> MemoryPeer:
    peer = await h.accept()
    first = await recv(peer)
    assert isinstance(first, SystemInfo)
    return peer


def deploy(rid: str, gpus: int = 0, **env: str) -> Deploy:
    return Deploy(DeployPayload(rid, "ghcr.io/acme/llm:1.2", gpus, dict(env)))


# --- startup ---------------------------------------------------------------------


async def test_no_config_and_no_token_exits_with_a_hint(caplog: pytest.LogCaptureFixture) -> None:
    async with running_agent(node=None) as h:
        pass
    assert h.exit_code == EXIT_CONFIG
    assert "VECTORLAY_ORG_TOKEN" in caplog.text
    assert h.transport.attempts == []


async def test_corrupt_config_is_fatal_and_never_registers_over_it() -> None:
    store = MemoryConfigStore()

    async def broken() -> NodeConfig | None:
        raise CorruptConfig("/var/lib/vectorlay/node.json: not valid JSON")

    store.load = broken  # type: ignore[method-assign]
    clock = ManualClock()
    agent = Agent(
        AgentConfig(control_plane_url=URL, org_token=ORG_TOKEN),
        transport=(transport := MemoryTransport()),
        runtime=MemoryRuntime(),
        probe=StaticProbe(),
        store=store,
        clock=clock,
    )
    assert await agent.run() == EXIT_FAILURE
    assert transport.attempts == []
    assert store.saves == []


async def test_registration_saves_config_before_system_info() -> None:
    async with running_agent(node=None, org_token=ORG_TOKEN) as h:
        peer = await h.accept()
        assert peer.credential == ORG_TOKEN
        register = await recv(peer)
        assert isinstance(register, Register)
        assert register.payload.hardware.hostname == "test-node"
        assert h.store.saves == []
        await peer.send_message(
            RegistrationSuccess(RegistrationSuccessPayload("node-9", "node-token-9"))
        )
        info = await recv(peer)
        assert isinstance(info, SystemInfo)
        # node.json was written before system_info went out.
        assert h.store.saves == [NodeConfig("node-9", "node-token-9", URL)]
        assert info.payload.node_id == "node-9"
    assert h.exit_code == EXIT_OK


async def test_registration_save_failure_is_fatal() -> None:
    async with running_agent(node=None, org_token=ORG_TOKEN) as h:
        h.store.fail_next_save()
        peer = await h.accept()
        await recv(peer)
        await peer.send_message(
            RegistrationSuccess(RegistrationSuccessPayload("node-9", "node-token-9"))
        )
        with anyio.fail_after(5):
            while h.exit_code is None:
                await anyio.sleep(0.01)
    assert h.exit_code == EXIT_FAILURE
    assert h.store.config is None


async def test_saved_config_connects_with_node_token_and_adopts_replicas() -> None:
    runtime = MemoryRuntime()
    runtime.containers["old-1"] = ContainerState(
        "old-1", ReplicaStatus.RUNNING, gpus=("0000:17:00.0",), image="x"
    )
    async with running_agent(runtime=runtime) as h:
        peer = await h.accept()
        assert peer.credential == NODE.node_token
        info = await recv(peer)
        assert isinstance(info, SystemInfo)
        assert [(r.replica_id, r.status) for r in info.payload.replicas] == [
            ("old-1", ReplicaStatus.RUNNING)
        ]
        assert info.payload.ready is True
        # The adopted replica's GPU stays taken: the next deploy gets the other one.
        await peer.send_message(deploy("new-1", gpus=1))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.RUNNING
        assert [g.pci_address for g in runtime.specs["new-1"].gpus] == ["0000:18:00.0"]
        assert ("run", "old-1") not in runtime.calls


# --- heartbeats ------------------------------------------------------------------


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


# --- commands ----------------------------------------------------------------------


async def test_deploy_is_idempotent_and_stop_frees_gpus() -> None:
    async with running_agent(gpus=1) as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a", gpus=1, TOKEN="hunter2"))
        first = await recv_until(peer, DeployResult)
        assert first.payload.status is ReplicaStatus.RUNNING
        assert h.runtime.specs["a"].env == {"TOKEN": "hunter2"}
        await peer.send_message(deploy("a", gpus=1))
        again = await recv_until(peer, DeployResult)
        assert again.payload.status is ReplicaStatus.RUNNING
        assert [c for c in h.runtime.calls if c[0] == "run"] == [("run", "a")]
        await peer.send_message(deploy("b", gpus=1))
        full = await recv_until(peer, DeployResult)
        assert full.payload.status is ReplicaStatus.FAILED
        assert full.payload.error is not None
        assert "not enough free GPUs" in full.payload.error
        await peer.send_message(Stop(StopPayload("a")))
        stopped = await recv_until(peer, StopResult)
        assert stopped.payload.status is ReplicaStatus.STOPPED
        await peer.send_message(deploy("b", gpus=1))
        ok = await recv_until(peer, DeployResult)
        assert ok.payload.status is ReplicaStatus.RUNNING
        await peer.send_message(Stop(StopPayload("never-existed")))
        unknown = await recv_until(peer, StopResult)
        assert unknown.payload.status is ReplicaStatus.STOPPED


async def test_commands_for_one_replica_run_in_order() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        gate = h.runtime.gate("run")
        await peer.send_message(deploy("a"))
        await peer.send_message(Stop(StopPayload("a")))
        await h.settle()
        assert [c[0] for c in h.runtime.calls if c[1] == "a"] == ["run"]
        gate.set()
        assert isinstance(await recv_until(peer, DeployResult), DeployResult)
        stop = await recv_until(peer, StopResult)
        assert stop.payload.status is ReplicaStatus.STOPPED
        assert "a" not in h.runtime.containers


async def test_runtime_failure_is_reported_and_frees_gpus() -> None:
    async with running_agent(gpus=1) as h:
        peer = await open_session(h)
        h.runtime.fail_next("run", ContainerRuntimeError("image not found: ghcr.io/acme/llm:1.2"))
        await peer.send_message(deploy("a", gpus=1))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.FAILED
        assert result.payload.error == "image not found: ghcr.io/acme/llm:1.2"
        await peer.send_message(deploy("b", gpus=1))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.RUNNING


async def test_degraded_node_refuses_deploys_without_touching_the_runtime() -> None:
    async with running_agent(ready=False) as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a"))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.FAILED
        assert result.payload.error is not None
        assert "degraded" in result.payload.error
        assert h.runtime.calls == [("list", ""), ("list", "")]


@pytest.mark.parametrize(
    ("frame", "expect"),
    [
        ('{"type":"deploy","payload":{"replica_id":"a","image":"x","gpu_count":"1"}}', "result"),
        ('{"type":"deploy","payload":{"replica_id":"a","image":"Bad Image!"}}', "result"),
        ('{"type":"deploy","payload":{"replica_id":"a;rm","image":"nginx"}}', "result"),
        ('{"type":"deploy","payload":{"image":"nginx"}}', "invalid_message"),
        ('{"type":"stop","payload":{"replica_id":7}}', "invalid_message"),
        ('{"type":"heartbeat","payload":{}}', "unknown_type"),
        ("not json", "invalid_message"),
        ("[]", "invalid_message"),
        (b"\x00\x01binary", "invalid_message"),
        ("x" * (1024 * 1024 + 1), "too_large"),
    ],
)
async def test_bad_frames_get_an_answer_and_the_session_continues(
    frame: str | bytes, expect: str
) -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.send(frame)
        if expect == "result":
            reply = await recv_until(peer, DeployResult)
            assert reply.payload.status is ReplicaStatus.FAILED
            assert reply.payload.error
        else:
            error = await recv_until(peer, Error)
            assert error.payload.code == expect
        assert [c for c in h.runtime.calls if c[0] == "run"] == []
        # Still alive: a valid deploy works.
        await peer.send_message(deploy("ok"))
        good = await recv_until(peer, DeployResult)
        assert good.payload.status is ReplicaStatus.RUNNING


# --- reconnection and outbox -----------------------------------------------------------


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
            await h.agent._deliver(StopResult(ResultPayload(rid, ReplicaStatus.STOPPED)))
        assert [m.payload.replica_id for m in h.agent.outbox if isinstance(m, StopResult)] == [
            "b",
            "c",
        ]
        assert h.agent.dropped_results == 1


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
        with anyio.fail_after(5):
            while h.exit_code is None:
                await anyio.sleep(0.01)
    assert h.exit_code == EXIT_UNAUTHORIZED
    assert h.store.config == NODE


@pytest.mark.parametrize("code", [4001, 4409, 1011])
async def test_other_close_codes_reconnect(code: int) -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.close(code)
        await h.settle()
        assert h.exit_code is None
        await h.advance(5)
        await open_session(h)
        assert h.agent.sessions == 2


async def test_sigterm_style_stop_closes_1001_and_leaves_containers() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a"))
        await recv_until(peer, DeployResult)
        h.agent.request_stop()
        with anyio.fail_after(5):
            while h.exit_code is None:
                await anyio.sleep(0.01)
        with pytest.raises(ConnectionClosed, match="1001"):
            await recv_until(peer, Error)
    assert h.exit_code == EXIT_OK
    assert "a" in h.runtime.containers
    assert [c for c in h.runtime.calls if c[0] == "stop"] == []


async def test_config_repr_hides_the_token() -> None:
    config = replace(AgentConfig(), org_token=ORG_TOKEN)
    assert ORG_TOKEN not in repr(config)


# --- review fixes: registration, stale lists, heartbeat path, shutdown order --------------


async def test_registration_without_an_answer_reconnects_instead_of_crashing() -> None:
    async with running_agent(node=None, org_token=ORG_TOKEN, registration_timeout=0.2) as h:
        peer = await h.accept()
        assert isinstance(await recv(peer), Register)
        await anyio.sleep(0.4)  # real time: the registration timeout passes
        await h.advance(10)
        again = await h.accept()
        assert isinstance(await recv(again), Register)
        assert h.exit_code is None
        assert h.store.saves == []


async def test_registration_refused_with_error_backs_off_and_retries() -> None:
    async with running_agent(node=None, org_token=ORG_TOKEN) as h:
        peer = await h.accept()
        await recv(peer)
        await peer.send_message(Error(ErrorPayload("internal", "database unavailable")))
        await h.advance(10)
        again = await h.accept()
        assert isinstance(await recv(again), Register)
        assert h.exit_code is None


async def test_registration_refused_as_unauthorized_exits_without_saving() -> None:
    async with running_agent(node=None, org_token=ORG_TOKEN) as h:
        peer = await h.accept()
        await recv(peer)
        await peer.send_message(Error(ErrorPayload("unauthorized", "bad org token")))
        with anyio.fail_after(5):
            while h.exit_code is None:
                await anyio.sleep(0.01)
    assert h.exit_code == EXIT_UNAUTHORIZED
    assert h.store.saves == []


async def test_bad_frames_while_registering_are_answered_and_registration_goes_on() -> None:
    async with running_agent(node=None, org_token=ORG_TOKEN) as h:
        peer = await h.accept()
        assert isinstance(await recv(peer), Register)
        await peer.send('{"type": "teleport"}')
        assert (await recv_until(peer, Error)).payload.code == "unknown_type"
        await peer.send(b"\x00")
        assert (await recv_until(peer, Error)).payload.code == "invalid_message"
        bad_deploy = {"replica_id": "r9", "image": "a", "gpu_count": "x"}
        await peer.send(json.dumps({"type": "deploy", "payload": bad_deploy}))
        assert (await recv_until(peer, Error)).payload.code == "invalid_message"
        await peer.send_message(RegistrationSuccess(RegistrationSuccessPayload("node-1", "tok-1")))
        assert isinstance(await recv_until(peer, SystemInfo), SystemInfo)
        assert [c.node_id for c in h.store.saves] == ["node-1"]
        await h.advance(30)
        assert isinstance(await recv(peer), Heartbeat)  # no stray deploy_result before it
        assert not h.agent.outbox


async def test_an_unusable_registration_answer_is_not_saved() -> None:
    async with running_agent(node=None, org_token=ORG_TOKEN) as h:
        peer = await h.accept()
        await recv(peer)
        await peer.send_message(
            RegistrationSuccess(RegistrationSuccessPayload("node-1", "bad token\nwith newline"))
        )
        await h.advance(10)
        await h.accept()
        assert h.store.saves == []


class StaleListRuntime(MemoryRuntime):
    """A runtime whose list answers late with what it saw when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_lists = False
        self.release = anyio.Event()

    async def list(self) -> list[ContainerState]:
        snapshot = [self.containers[k] for k in sorted(self.containers)]
        if self.hold_lists:
            await self.release.wait()
        return snapshot


async def test_a_list_taken_before_a_deploy_finished_never_frees_its_gpus() -> None:
    runtime = StaleListRuntime()
    async with running_agent(gpus=1, runtime=runtime) as h:
        peer = await open_session(h)
        runtime.hold_lists = True
        runtime._notify()  # the watcher starts a list and waits
        await h.settle()
        await peer.send_message(deploy("a", gpus=1))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.RUNNING
        runtime.release.set()  # the stale list (without "a") arrives now
        runtime.hold_lists = False
        await h.settle()
        await peer.send_message(deploy("b", gpus=1))
        refused = await recv_until(peer, DeployResult)
        assert refused.payload.status is ReplicaStatus.FAILED
        assert h.agent.table.double_assigned() == {}
        assert h.agent.table.get("a") is not None


class GatedProbe(StaticProbe):
    """Host metrics that come only when the gate opens (a slow nvidia-smi)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()

    async def metrics(self) -> HostMetrics:
        await self.gate.wait()
        return await super().metrics()


async def test_a_beat_sent_before_the_first_host_figures_is_followed_when_they_come() -> None:
    async with running_agent() as h:
        probe = GatedProbe()
        h.agent.probe = probe
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


async def test_readiness_change_mid_session_sends_system_info_again() -> None:
    async with running_agent(reprobe_interval=60) as h:
        peer = await open_session(h)
        h.probe.host = sample_report(ready=False, gpus=2)
        await h.advance(60)
        info = await recv_until(peer, SystemInfo)
        assert info.payload.ready is False
        await peer.send_message(deploy("x"))
        refused = await recv_until(peer, DeployResult)
        assert refused.payload.status is ReplicaStatus.FAILED


async def test_a_deploy_meeting_its_own_container_adopts_it() -> None:
    async with running_agent(gpus=2) as h:
        peer = await open_session(h)
        # A container for "a" appears that the table does not know (the nerdctl
        # call of an agent killed mid-deploy finished after the restart).
        h.runtime.containers["a"] = ContainerState(
            "a", ReplicaStatus.RUNNING, gpus=("0000:18:00.0",), image="nginx"
        )
        await peer.send_message(deploy("a", gpus=1))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.RUNNING
        replica = h.agent.table.get("a")
        assert replica is not None
        assert replica.gpus == ("0000:18:00.0",)
        await peer.send_message(deploy("b", gpus=1))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.RUNNING
        assert [g.pci_address for g in h.runtime.specs["b"].gpus] == ["0000:17:00.0"]
        assert h.agent.table.double_assigned() == {}


def test_a_result_never_outgrows_a_frame() -> None:
    from vectorlay.app.agent.service import _fit_frame
    from vectorlay.domain.messages import MAX_FRAME_BYTES, decode_outbound

    long_error = "deploy.payload.replica_id: must be 1-64 characters" * 3
    fits = decode_outbound(
        _fit_frame(
            DeployResult(
                ResultPayload("r" * (MAX_FRAME_BYTES - 100), ReplicaStatus.FAILED, long_error)
            )
        )
    )
    assert isinstance(fits, DeployResult)
    assert fits.payload.status is ReplicaStatus.FAILED
    hopeless = _fit_frame(
        StopResult(ResultPayload("r" * (MAX_FRAME_BYTES - 60), ReplicaStatus.FAILED))
    )
    assert len(hopeless.encode()) <= MAX_FRAME_BYTES
    error = decode_outbound(hopeless)
    assert isinstance(error, Error)
    assert error.payload.message.startswith("stop.payload.replica_id")
    small = DeployResult(ResultPayload("a", ReplicaStatus.RUNNING))
    assert decode_outbound(_fit_frame(small)) == small
