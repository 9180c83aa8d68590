"""What the control plane's side of a session saw, with arrival times.

:class:`Collector` reads every frame of one scripted-peer session in a
thread; :class:`Relay` sits between a real agent and a real control plane
and records the conversation both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.http11 import Request, Response

from tests.support.wspeer import PEER_LOGGER, PeerSession
from vectorlay.domain.messages import SUBPROTOCOL, Message, Outbound, decode_outbound
from vectorlay.errors import ConnectionClosed, ConnectionLost, ProtocolError

T = TypeVar("T")


@dataclass
class Received:
    at: float
    frame: str | bytes
    message: Outbound | None


class Collector:
    """Reads every frame of one peer session in a thread, with arrival times."""

    def __init__(self, session: PeerSession) -> None:
        self.session = session
        self.items: list[Received] = []
        self.closed: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def start(self) -> Collector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.session.receive(timeout=0.2)
            except TimeoutError:
                continue
            except (ConnectionClosed, ConnectionLost) as exc:
                self.closed = exc
                return
            try:
                message: Outbound | None = decode_outbound(frame)
            except ProtocolError:
                message = None
            self.items.append(Received(time.monotonic(), frame, message))

    def messages(self, kind: type[T]) -> list[T]:
        return [r.message for r in list(self.items) if isinstance(r.message, kind)]

    def times(self, kind: type[Message]) -> list[float]:
        return [r.at for r in list(self.items) if isinstance(r.message, kind)]


def max_gap(times: Sequence[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


# --- a relay that records what the control plane sends and receives ---------------------------


@dataclass(frozen=True)
class Record:
    direction: str  # "down": control plane -> agent; "up": agent -> control plane
    text: str
    at: float

    def parsed(self) -> dict[str, Any]:
        try:
            value = json.loads(self.text)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Relay:
    """Agent ⇄ relay ⇄ control plane, one upstream session per agent session.

    It records every message both ways (the control plane's view of the
    conversation), passes close codes through, and cuts the agent's
    connection without a close frame when the control plane vanishes.  While
    the control plane is down, handshakes are answered 502.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self.records: list[Record] = []
        self._pending: dict[object, ClientConnection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/agent"

    def start(self) -> Relay:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._thread.start()
        self._server = self._run(self._serve())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        server, self._server = self._server, None
        if server is not None:

            async def shut() -> None:
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self) -> Server:
        return await serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            process_request=self._process_request,
            max_size=None,
            ping_interval=None,
            compression=None,
            logger=PEER_LOGGER,
        )

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        headers = {"Authorization": request.headers.get("Authorization", "")}
        try:
            upstream = await connect(
                self.upstream,
                additional_headers=headers,
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                max_size=None,
                ping_interval=None,
                compression=None,
                open_timeout=5,
                logger=PEER_LOGGER,
            )
        except Exception:  # the control plane is down or refused
            return connection.respond(HTTPStatus.BAD_GATEWAY, "control plane unavailable\n")
        self._pending[connection.id] = upstream
        return None

    async def _handler(self, down: ServerConnection) -> None:
        up = self._pending.pop(down.id)
        tasks = [
            asyncio.create_task(self._pump(down, up, "up")),
            asyncio.create_task(self._pump(up, down, "down")),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:  # the other direction ends with the close passed on
            await asyncio.wait(pending, timeout=5)
        for task in pending:
            task.cancel()
        up.transport.abort()
        down.transport.abort()

    async def _pump(
        self,
        src: ServerConnection | ClientConnection,
        dst: ServerConnection | ClientConnection,
        direction: str,
    ) -> None:
        try:
            async for message in src:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                self.records.append(Record(direction, text, time.monotonic()))
                await dst.send(message)
        except WsConnectionClosed:
            pass
        received = src.protocol.close_rcvd
        if received is not None and received.code not in (1005, 1006):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dst.close(received.code, received.reason), 3)
        else:
            dst.transport.abort()
