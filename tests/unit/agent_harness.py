"""An agent on in-memory adapters and a manual clock, and the peer's side of its sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio

from tests.support import NODE_TOKEN
from vectorlay.adapters.memory import (
    ManualClock,
    MemoryConfigStore,
    MemoryDisk,
    MemoryImages,
    MemoryPeer,
    MemoryRuntime,
    MemoryTransport,
    StaticProbe,
    sample_report,
)
from vectorlay.app.agent.config import AgentConfig
from vectorlay.app.agent.service import Agent
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.messages import Deploy, DeployPayload, Message, Outbound, SystemInfo
from vectorlay.ports import DeployRecord

URL = "ws://127.0.0.1:8787/v1/agent"
NODE = NodeConfig("node-1", NODE_TOKEN, URL)


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

    async def exited(self) -> int:
        """The agent's exit status, once it has returned (real time, 5 s at most)."""
        with anyio.fail_after(5):
            while self.exit_code is None:
                await anyio.sleep(0.01)
        return self.exit_code


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
    probe: StaticProbe | None = None,
    transport: MemoryTransport | None = None,
    disk: MemoryDisk | None = None,
    images: MemoryImages | None = None,
    record: DeployRecord | None = None,
    **config: float,
) -> AsyncIterator[Harness]:
    """An agent running in the background; asked to stop when the block ends."""
    clock = ManualClock()
    transport = transport or MemoryTransport()
    runtime = runtime or MemoryRuntime()
    probe = probe or StaticProbe(sample_report(ready=ready, gpus=gpus))
    store = MemoryConfigStore(node)
    agent = Agent(
        AgentConfig(
            control_plane_url=URL,
            org_token=org_token,
            heartbeat_interval=30.0,
            reconnect_delay=5.0,
            **config,  # type: ignore[arg-type]
        ),
        transport=transport,
        runtime=runtime,
        probe=probe,
        store=store,
        clock=clock,
        rand=lambda: rand,
        disk=disk,
        images=images,
        record=record,
    )
    h = Harness(agent, transport, runtime, probe, store, clock)

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
