"""The agent starting up: its identity from node.json, or registration with the org token."""

from __future__ import annotations

import json

import anyio
import pytest

from tests.support import ORG_TOKEN
from tests.unit.agent_harness import (
    NODE,
    URL,
    deploy,
    recv,
    recv_until,
    running_agent,
)
from vectorlay.adapters.memory import (
    ManualClock,
    MemoryConfigStore,
    MemoryRuntime,
    MemoryTransport,
    StaticProbe,
)
from vectorlay.app.agent.config import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNAUTHORIZED,
    AgentConfig,
)
from vectorlay.app.agent.service import Agent
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import ContainerState
from vectorlay.domain.messages import (
    DeployResult,
    Error,
    ErrorPayload,
    Heartbeat,
    Register,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    ReplicaStatus,
    SystemInfo,
)
from vectorlay.errors import CorruptConfig


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
        assert await h.exited() == EXIT_FAILURE
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
        assert await h.exited() == EXIT_UNAUTHORIZED
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
        assert len(h.agent.outbox) == 0


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
