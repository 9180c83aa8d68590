"""Test helpers for the reference control plane: a raw agent-side WebSocket client,
an in-process control plane on 127.0.0.1, and protocol message builders.

The client is wsproto over an anyio TCP stream, so it runs on asyncio and
trio alike and can send what a well-behaved agent never would (binary
frames, oversized frames, control-plane message types, pings)::

    async with running_control_plane(tmp_path) as cp:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_id, token = await ws.register()
            await ws.send_message(system_info(node_id))
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.support.tokens import ADMIN_TOKEN, ORG_TOKEN
from vectorlay.adapters.clock import SystemClock
from vectorlay.adapters.controlplane.sqlite_store import SqliteFleetStore
from vectorlay.adapters.memory import sample_report
from vectorlay.app.controlplane.server import ControlPlane, ControlPlaneConfig
from vectorlay.domain.messages import (
    SUBPROTOCOL,
    Heartbeat,
    HeartbeatPayload,
    HeartbeatStatus,
    Inbound,
    Message,
    Register,
    RegisterPayload,
    RegistrationSuccess,
    ReplicaReport,
    ReplicaStatus,
    Storage,
    SystemInfo,
    SystemInfoPayload,
    decode_inbound,
    encode_text,
)
from vectorlay.ports import Clock

TIMEOUT = 5.0


class Closed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class HandshakeRejected(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"handshake rejected with HTTP {status}")
        self.status = status
        self.body = body


class AgentClient:
    """The agent's end of a session, speaking raw frames."""

    def __init__(self, stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.pongs = 0

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        port: int,
        token: str | None,
        *,
        subprotocols: tuple[str, ...] = (SUBPROTOCOL,),
        scheme: str = "Bearer",
    ) -> AsyncIterator[AgentClient]:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            headers = [(b"user-agent", b"cp-tests")]
            if token is not None:
                headers.append((b"authorization", f"{scheme} {token}".strip().encode()))
            client = cls(stream, ws)
            await stream.send(
                ws.send(
                    Request(
                        host=f"127.0.0.1:{port}",
                        target="/v1/agent",
                        subprotocols=list(subprotocols),
                        extra_headers=headers,
                    )
                )
            )
            await client._handshake()
            yield client

    async def _handshake(self) -> None:
        status, body = 0, b""
        with anyio.fail_after(TIMEOUT):
            while True:
                self.ws.receive_data(await self.stream.receive())
                for event in self.ws.events():
                    if isinstance(event, AcceptConnection):
                        self.subprotocol = event.subprotocol
                        return
                    if isinstance(event, RejectConnection):
                        status = event.status_code
                        if not event.has_body:
                            raise HandshakeRejected(status, body)
                    if isinstance(event, RejectData):
                        body += event.data
                        if event.body_finished:
                            raise HandshakeRejected(status, body)

    # --- sending ------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        await self.stream.send(self.ws.send(TextMessage(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send(self.ws.send(BytesMessage(data=data)))

    async def send_message(self, message: Message) -> None:
        await self.send_text(encode_text(message))

    async def send_json(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def ping(self, payload: bytes = b"hi") -> None:
        await self.stream.send(self.ws.send(Ping(payload=payload)))

    async def close(self, code: int = 1000) -> None:
        if self.ws.state is ConnectionState.OPEN:
            await self.stream.send(self.ws.send(CloseConnection(code=code)))

    # --- receiving ----------------------------------------------------------------

    async def receive(self, timeout: float = TIMEOUT) -> str | bytes:
        """The next message; raises :class:`Closed` when the server closes."""
        text: list[str] = []
        with anyio.fail_after(timeout):
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        text.append(event.data)
                        if event.message_finished:
                            return "".join(text)
                    elif isinstance(event, BytesMessage):
                        return bytes(event.data)
                    elif isinstance(event, Pong):
                        self.pongs += 1
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self.stream.send(self.ws.send(event.response()))
                        raise Closed(event.code)
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    self.close_code = 1006
                    raise Closed(1006) from None
                self.ws.receive_data(data)

    async def receive_message(self, timeout: float = TIMEOUT) -> Inbound:
        frame = await self.receive(timeout)
        return decode_inbound(frame)

    async def receive_json(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await self.receive(timeout)
        value = json.loads(frame)
        assert isinstance(value, dict)
        return value

    async def expect_close(self, timeout: float = TIMEOUT) -> int:
        """Read until the server closes; returns the close code (messages are dropped)."""
        try:
            while True:
                await self.receive(timeout)
        except Closed as exc:
            return exc.code

    async def wait_pong(self, timeout: float = TIMEOUT) -> None:
        with anyio.fail_after(timeout):
            while self.pongs == 0:
                for event in self.ws.events():
                    if isinstance(event, Pong):
                        self.pongs += 1
                if self.pongs == 0:
                    self.ws.receive_data(await self.stream.receive())

    # --- protocol steps -------------------------------------------------------------

    async def register(self, gpus: int = 0, hostname: str = "test-node") -> tuple[str, str]:
        await self.send_message(register_message(gpus=gpus, hostname=hostname))
        answer = await self.receive_message()
        assert isinstance(answer, RegistrationSuccess), answer
        return answer.payload.node_id, answer.payload.node_token


# --- messages ------------------------------------------------------------------------


def register_message(*, gpus: int = 0, hostname: str = "test-node") -> Register:
    report = sample_report(gpus=gpus)
    hardware = msgspec.structs.replace(report.hardware, hostname=hostname)
    return Register(RegisterPayload(report.agent_version, hardware, report.dependencies))


def system_info(
    node_id: str,
    *,
    gpus: int = 0,
    ready: bool = True,
    replicas: dict[str, ReplicaStatus] | None = None,
    hostname: str = "test-node",
) -> SystemInfo:
    report = sample_report(gpus=gpus, ready=ready)
    hardware = msgspec.structs.replace(report.hardware, hostname=hostname)
    return SystemInfo(
        SystemInfoPayload(
            node_id=node_id,
            agent_version=report.agent_version,
            hardware=hardware,
            dependencies=report.dependencies,
            ready=ready,
            replicas=[ReplicaReport(k, v) for k, v in sorted((replicas or {}).items())],
        )
    )


def heartbeat(replicas: dict[str, ReplicaStatus] | None = None, seq: int = 1) -> Heartbeat:
    return Heartbeat(
        HeartbeatPayload(
            status=HeartbeatStatus(
                containers=[ReplicaReport(k, v) for k, v in sorted((replicas or {}).items())],
                gpu_utilization=None,
                memory_used_gb=24,
                memory_total_gb=64,
                storage=Storage("/data", 500, 120, 24),
            ),
            seq=seq,
        )
    )


# --- an in-process control plane ---------------------------------------------------------


@dataclass
class RunningControlPlane:
    cp: ControlPlane
    port: int
    db: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, token: str | None = ADMIN_TOKEN) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=TIMEOUT)


@asynccontextmanager
async def running_control_plane(
    tmp_path: Path,
    *,
    clock: Clock | None = None,
    offline_after: float = 60.0,
    org_tokens: tuple[str, ...] = (ORG_TOKEN,),
    admin_token: str | None = ADMIN_TOKEN,
    db_name: str = "cp.sqlite3",
) -> AsyncIterator[RunningControlPlane]:
    db = tmp_path / db_name
    store = SqliteFleetStore(db)
    config = ControlPlaneConfig(
        org_tokens=org_tokens,
        admin_tokens=(admin_token,) if admin_token else (),
        offline_after=offline_after,
    )
    cp = ControlPlane(store, config, clock or SystemClock())
    try:
        await cp.load()
        async with anyio.create_task_group() as tg:
            port = await tg.start(cp.serve, "127.0.0.1", 0)
            yield RunningControlPlane(cp, port, db)
            tg.cancel_scope.cancel()
    finally:
        await store.aclose()
