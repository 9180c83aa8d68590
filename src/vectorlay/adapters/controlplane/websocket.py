"""Server side of one WebSocket over an anyio byte stream, with wsproto.

wsproto is sans-I/O: it turns bytes into events and events into bytes; this
module does the reading and writing.  Messages are assembled from fragments
up to a size limit; pings are answered at once; every frame the peer sends
calls ``on_frame`` (liveness counts pings too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

import anyio
import anyio.abc
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from vectorlay.errors import MessageTooBig, WebSocketClosed

RECEIVE_CHUNK: Final = 65536
CLOSE_TIMEOUT: Final = 2.0
CLOSE_NORMAL: Final = 1000
CLOSE_ABNORMAL: Final = 1006
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013

_STREAM_ERRORS: Final = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


def _nothing() -> None:
    return None


class ServerWebSocket:
    """An accepted WebSocket; build it with :meth:`accept`."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        *,
        max_message_bytes: int,
        on_frame: Callable[[], None] = _nothing,
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._max = max_message_bytes
        self.on_frame = on_frame
        self._send_lock = anyio.Lock()
        self._text: list[str] = []
        self._binary: list[bytes] = []
        self._size = 0
        self.close_code: int | None = None

    @classmethod
    async def accept(
        cls,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        trailing: bytes,
        *,
        subprotocol: str | None,
        max_message_bytes: int,
    ) -> ServerWebSocket:
        """Answer the upgrade request ``ws`` has parsed with ``101 Switching Protocols``."""
        await stream.send(ws.send(AcceptConnection(subprotocol=subprotocol)))
        if trailing:
            ws.receive_data(trailing)
        return cls(stream, ws, max_message_bytes=max_message_bytes)

    async def receive(self) -> str | bytes:
        """The next whole message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`WebSocketClosed` when the session ends and
        :class:`MessageTooBig` as soon as a message grows over the limit
        (the caller closes with 1009: the rest of it is never read).
        """
        while True:
            for event in self._ws.events():
                message = await self._on_event(event)
                if message is not None:
                    return message
            try:
                data = await self._stream.receive(RECEIVE_CHUNK)
            except _STREAM_ERRORS:
                self.close_code = CLOSE_ABNORMAL
                raise WebSocketClosed(CLOSE_ABNORMAL) from None
            try:
                self._ws.receive_data(data)
            except LocalProtocolError:
                self.close_code = CLOSE_ABNORMAL
                raise WebSocketClosed(CLOSE_ABNORMAL) from None

    async def _on_event(self, event: object) -> str | bytes | None:
        self.on_frame()
        if isinstance(event, TextMessage | BytesMessage):
            return self._collect(event)
        if isinstance(event, Ping):
            await self._send_bytes(self._ws.send(event.response()))
            return None
        if isinstance(event, Pong):
            return None
        if isinstance(event, CloseConnection):
            # A close from the peer, or wsproto's verdict on a broken frame
            # (bad UTF-8, bad opcode): answer with the same code.
            self.close_code = event.code
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self._send_bytes(self._ws.send(event.response()))
            await self._close_stream()
            raise WebSocketClosed(event.code, event.reason or "")
        return None

    def _collect(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        # str length counts characters, never more than the UTF-8 bytes they
        # take, so this bound is safe; the decoder checks the exact byte size.
        self._size += len(event.data)
        if self._size > self._max:
            raise MessageTooBig(f"message larger than {self._max} bytes")
        if isinstance(event, TextMessage):
            self._text.append(event.data)
        else:
            self._binary.append(bytes(event.data))
        if not event.message_finished:
            return None
        self._size = 0
        if isinstance(event, TextMessage):
            text = "".join(self._text)
            self._text.clear()
            return text
        data = b"".join(self._binary)
        self._binary.clear()
        return data

    async def send_text(self, text: str) -> None:
        """Send one text message; raises :class:`WebSocketClosed` if the socket is gone."""
        try:
            payload = self._ws.send(TextMessage(data=text))
        except LocalProtocolError:
            raise WebSocketClosed(self.close_code or CLOSE_ABNORMAL) from None
        await self._send_bytes(payload, strict=True)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame, wait briefly for the peer's, and drop the socket.  Never raises."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            if self._ws.state is ConnectionState.OPEN:
                self.close_code = code
                await self._send_bytes(self._ws.send(CloseConnection(code=code, reason=reason)))
                await self._await_peer_close()
        await self._close_stream()

    async def _await_peer_close(self) -> None:
        while self._ws.state is ConnectionState.LOCAL_CLOSING:
            try:
                data = await self._stream.receive(RECEIVE_CHUNK)
                self._ws.receive_data(data)
            except (*_STREAM_ERRORS, LocalProtocolError):
                return
            for _ in self._ws.events():
                pass

    async def _close_stream(self) -> None:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(CLOSE_TIMEOUT),
            contextlib.suppress(*_STREAM_ERRORS),
        ):
            await self._stream.aclose()

    async def _send_bytes(self, payload: bytes, *, strict: bool = False) -> None:
        try:
            async with self._send_lock:
                await self._stream.send(payload)
        except _STREAM_ERRORS:
            if strict:
                raise WebSocketClosed(CLOSE_ABNORMAL) from None
