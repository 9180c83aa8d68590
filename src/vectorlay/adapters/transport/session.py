"""The httpx-ws session under a connection: its receive loop, keepalive and close.

httpx-ws 0.9 supplies the handshake, the network stream and the session
object; :class:`WsSession` replaces its receive loop and keepalive, which
httpx-ws starts in its own task group.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import suppress
from typing import Final

import anyio
import httpcore
import httpx
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketDisconnect,
    WebSocketNetworkError,
)
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from vectorlay.adapters.transport.failures import describe
from vectorlay.domain.liveness import LivenessPolicy, Verdict
from vectorlay.domain.messages import MAX_FRAME_BYTES

logger = logging.getLogger("vectorlay.transport")

CLOSE_TIMEOUT: Final = 2.0
"""Longest wait for our close frame to go out and the peer's answer to come back."""

_ABORT_TIMEOUT: Final = 1.0
_MAX_CLOSE_REASON_BYTES: Final = 123


class FrameTooLarge(HTTPXWSException):
    """Marker in the event stream: a message over the size limit was dropped."""


class PeerSilent(HTTPXWSException):
    """Marker in the event stream: the keepalive ping went unanswered."""


class ClosedLocally(HTTPXWSException):
    """Marker in the event stream: the peer answered the close frame we sent."""


class _MessageBuffer:
    """Reassembles fragmented messages; one over ``limit`` bytes is dropped as it arrives."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[str | bytes] = []
        self._size = 0
        self._overflow = False

    def add(self, event: TextMessage | BytesMessage) -> Event | HTTPXWSException | None:
        """The complete message (or a too-large marker) once its last fragment is in."""
        data = event.data
        if not self._overflow:
            if isinstance(data, str):
                self._size += len(data) if data.isascii() else len(data.encode("utf-8"))
            else:
                data = bytes(data)
                self._size += len(data)
            if self._size > self._limit:
                self._overflow = True
                self._parts.clear()
            else:
                self._parts.append(data)
        if not event.message_finished:
            return None
        result = self._result(text=isinstance(event, TextMessage))
        self._parts, self._size, self._overflow = [], 0, False
        return result

    def _result(self, *, text: bool) -> Event | HTTPXWSException:
        if self._overflow:
            return FrameTooLarge()
        if text:
            return TextMessage(data="".join(p for p in self._parts if isinstance(p, str)))
        return BytesMessage(data=b"".join(p for p in self._parts if isinstance(p, bytes)))


class WsSession(AsyncWebSocketSession):
    """An httpx-ws session with the receive loop and keepalive this protocol needs.

    httpx-ws 0.9's own loop does not fit (read from its source, the same on
    asyncio and trio since it is plain anyio): its keepalive pings on a fixed
    interval whatever the traffic and reports a lost pong as a plain network
    error; a pong with a payload it did not send crashes its receive task
    (``KeyError`` in the ping manager); ``max_message_size_bytes`` is only the
    read size, messages are reassembled without limit; a close frame from the
    peer is answered only when the session exits.  httpx-ws starts the two
    methods overridden here in its own task group.

    Keepalive: any bytes from the peer count as a sign of life, and a
    :class:`~vectorlay.domain.liveness.LivenessPolicy` built from httpx-ws's
    ``interval`` and ``timeout`` decides: after ``interval`` seconds without
    any, one ping; when nothing at all arrives within ``timeout`` seconds of
    it, the peer is declared silent.
    """

    def __init__(
        self,
        stream: httpcore.AsyncNetworkStream,
        *,
        max_message_size_bytes: int,
        queue_size: int,
        keepalive_ping_interval_seconds: float | None,
        keepalive_ping_timeout_seconds: float | None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(
            stream,
            max_message_size_bytes=max_message_size_bytes,
            queue_size=queue_size,
            keepalive_ping_interval_seconds=keepalive_ping_interval_seconds,
            keepalive_ping_timeout_seconds=keepalive_ping_timeout_seconds,
            response=response,
        )
        self.last_received = anyio.current_time()
        self.peer_close: tuple[int, str] | None = None
        self.failure: str | None = None
        self.silent = False
        self.broken = False
        self._delivering = False
        self._activity: anyio.Event | None = None
        self._receive_ended = anyio.Event()

    # --- writing ---------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            if self.broken:
                raise WebSocketNetworkError()
            try:
                await self.stream.write(data)
            except BaseException:
                # Cancelled or failed mid-write: a frame may be cut short, and
                # nothing sent after it could be parsed by the peer.
                self.broken = True
                raise

    async def send(self, event: Event) -> None:
        """Send one event; raises ``LocalProtocolError`` once the session is closing."""
        await self._write(self.connection.send(event))

    # --- receiving -------------------------------------------------------

    async def _deliver(self, item: Event | HTTPXWSException) -> None:
        self._delivering = True
        try:
            await self._send_event.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self._delivering = False
            self._note_activity()

    def _note_activity(self) -> None:
        self.last_received = anyio.current_time()
        if self._activity is not None:
            self._activity.set()

    async def _background_receive(self, max_bytes: int) -> None:
        message = _MessageBuffer(MAX_FRAME_BYTES)
        try:
            while True:
                data = await self.stream.read(max_bytes)
                if not data:
                    await self._end(WebSocketNetworkError(), "TCP closed without a close frame")
                    return
                self._note_activity()
                self.connection.receive_data(data)
                for event in self.connection.events():
                    if not await self._handle(event, message):
                        return
        except Exception as exc:  # every way a stream breaks ends here, never in the task group
            await self._end(WebSocketNetworkError(), describe(exc))
        finally:
            self._receive_ended.set()

    async def _handle(self, event: Event, message: _MessageBuffer) -> bool:
        """Act on one event; False once the session is over."""
        if isinstance(event, Ping):
            if self.connection.state is ConnectionState.OPEN:
                await self._write(self.connection.send(event.response()))
        elif isinstance(event, TextMessage | BytesMessage):
            item = message.add(event)
            if item is not None:
                await self._deliver(item)
        elif isinstance(event, CloseConnection):
            await self._on_close(event)
            return False
        # Pongs need nothing more: any bytes received already count as life.
        return True

    async def _on_close(self, event: CloseConnection) -> None:
        state = self.connection.state
        if state is ConnectionState.OPEN:
            # wsproto reports a frame it cannot parse as a close event and
            # leaves the state alone: the peer did not close, it broke the
            # protocol.  Failing the connection means a close frame, then TCP
            # goes too (RFC 6455 7.1.7).
            reason = event.reason or "invalid frame"
            with suppress(Exception):
                await self._write(self.connection.send(CloseConnection(event.code, reason)))
            await self._end(WebSocketNetworkError(), f"invalid WebSocket data: {reason}")
            return
        if state is ConnectionState.REMOTE_CLOSING:
            self.peer_close = (event.code, event.reason or "")
            with suppress(Exception):
                await self._write(self.connection.send(event.response()))
            item: HTTPXWSException = WebSocketDisconnect(event.code, event.reason)
        else:
            item = ClosedLocally()  # the answer to our own close frame
        # Both close frames are out: TCP must go too (RFC 6455 5.5.1), or the
        # peer waits for that until its own close timeout.
        await self._end(item, None)

    async def _end(self, item: HTTPXWSException, failure: str | None) -> None:
        """The session is over: record why, close the stream, tell the reader."""
        if failure is not None and self.failure is None:
            self.failure = failure
        await self._close_stream()
        self._receive_ended.set()
        await self._deliver(item)

    # --- keepalive -------------------------------------------------------

    async def _background_keepalive_ping(
        self, interval_seconds: float, timeout_seconds: float | None = None
    ) -> None:
        pong_timeout = interval_seconds if timeout_seconds is None else timeout_seconds
        policy = LivenessPolicy(
            offline_after=interval_seconds + pong_timeout, probe_timeout=pong_timeout
        )
        probed_at: float | None = None
        answer = anyio.Event()
        while True:
            now = anyio.current_time()
            # A reader slow to take a frame is not a silent peer.
            heard = now if self._delivering else self.last_received
            verdict = policy.verdict(last_heard=heard, now=now, probed_at=probed_at)
            if verdict is Verdict.GONE:
                self.silent = True
                await self._deliver(PeerSilent())
                return
            if verdict is Verdict.PROBE:
                probed_at = now
                sent = await self._ping()
                if sent is None:
                    return
                answer = sent
                continue
            wait = policy.next_check(last_heard=heard, probed_at=probed_at) - now
            if verdict is Verdict.PROBED:
                with anyio.move_on_after(wait):
                    await answer.wait()
            else:
                await anyio.sleep(wait)

    async def _ping(self) -> anyio.Event | None:
        """Send a ping: the event any bytes from the peer set, or None if it could not go out."""
        activity = self._activity = anyio.Event()
        try:
            await self.send(Ping(secrets.token_bytes(8)))
        except LocalProtocolError:
            return None  # closing: the close handshake has its own timeout
        except Exception as exc:
            await self._end(WebSocketNetworkError(), describe(exc))
            return None
        return activity

    # --- closing ---------------------------------------------------------

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame, wait briefly for the answer, close the stream; never raises.

        httpx-ws also calls this when the session exits, after cancelling the
        receive loop; a second call only makes sure the stream is closed.
        """
        self._should_close.set()
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + CLOSE_TIMEOUT
            # A silent peer will not answer the close frame either.
            if await self._send_close(code, reason or "") and not self.silent:
                await self._receive_ended.wait()
        await self._close_stream()

    async def _close_stream(self) -> None:
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + _ABORT_TIMEOUT
            with suppress(Exception):
                await self.stream.aclose()

    async def _send_close(self, code: int, reason: str) -> bool:
        """Whether a close frame went out and its answer is worth waiting for."""
        if self.broken or self.connection.state is not ConnectionState.OPEN:
            if self.connection.state is ConnectionState.REMOTE_CLOSING and not self.broken:
                with suppress(Exception):
                    await self.send(CloseConnection(code, _clip_reason(reason)))
            return False
        try:
            await self.send(CloseConnection(code, _clip_reason(reason)))
        except Exception as exc:
            logger.debug("close frame not sent: %s", describe(exc))
            return False
        return True


def _clip_reason(reason: str) -> str:
    data = reason.encode("utf-8")[:_MAX_CLOSE_REASON_BYTES]
    return data.decode("utf-8", "ignore")
