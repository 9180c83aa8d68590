"""One open session with the control plane, as the agent's code sees it."""

from __future__ import annotations

import logging

from wsproto.events import BytesMessage, TextMessage
from wsproto.utilities import LocalProtocolError

from vectorlay.adapters.transport.failures import LIBRARY_ERRORS, describe
from vectorlay.adapters.transport.session import ClosedLocally, FrameTooLarge, WsSession
from vectorlay.domain.messages import MAX_FRAME_BYTES
from vectorlay.errors import (
    ConnectionClosed,
    ConnectionLost,
    MessageTooLarge,
    PeerUnresponsive,
    TransportError,
)

logger = logging.getLogger("vectorlay.transport")


class WebSocketConnection:
    """One session with the control plane (:class:`vectorlay.ports.Connection`).

    ``receive()`` is for one reader task at a time; ``send()`` may be called
    from several tasks (frames never interleave).  A message over
    ``MAX_FRAME_BYTES`` is dropped without being buffered and ``receive()``
    raises ``MessageTooLarge`` (a ``ProtocolError`` with code ``too_large``);
    the session stays open, so the agent answers it like any invalid frame.
    """

    def __init__(self, session: WsSession, *, where: str, ping_after: float, pong_timeout: float):
        self._session = session
        self._where = where
        self._ping_after = ping_after
        self._pong_timeout = pong_timeout
        self._closed_locally = False
        self._gone: str | None = None

    @property
    def subprotocol(self) -> str | None:
        return self._session.subprotocol

    async def send(self, text: str) -> None:
        ended = self._why_ended()
        if ended is not None:
            raise ended
        try:
            await self._session.send(TextMessage(data=text))
        except LocalProtocolError:
            raise self._why_ended() or self._lost("the session is closing") from None
        except LIBRARY_ERRORS as exc:
            raise self._why_ended() or self._lost(describe(exc)) from exc

    async def receive(self) -> str | bytes:
        while True:
            ended = self._why_ended()
            if ended is not None:
                raise ended
            try:
                event = await self._session.receive()
            except FrameTooLarge:
                raise MessageTooLarge(
                    f"message: frame larger than {MAX_FRAME_BYTES} bytes"
                ) from None
            except ClosedLocally:
                self._closed_locally = True
            except LIBRARY_ERRORS as exc:
                # A close frame, silence or a broken stream: the session
                # recorded which, and the loop raises it from now on.
                if self._why_ended() is None:
                    self._gone = describe(exc)
            else:
                if isinstance(event, TextMessage):
                    return event.data
                if isinstance(event, BytesMessage):
                    return bytes(event.data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self._session.close(code, reason)
        except Exception as exc:  # close never raises, by contract
            logger.debug("closing the session failed: %s", describe(exc))
        self._closed_locally = True

    def _why_ended(self) -> TransportError | None:
        """The error for any call once the session is over; None while it is open."""
        session = self._session
        if session.silent:
            return PeerUnresponsive(
                f"{self._where} did not answer a keepalive ping within {self._pong_timeout:g} s "
                f"after {self._ping_after:g} s of silence"
            )
        if session.peer_close is not None:
            return ConnectionClosed(*session.peer_close)
        if session.failure is not None:
            return self._lost(session.failure)
        if self._closed_locally:
            return ConnectionLost(f"the session with {self._where} was closed by this agent")
        if self._gone is not None:
            return self._lost(self._gone)
        return None

    def _lost(self, detail: str) -> ConnectionLost:
        return ConnectionLost(f"connection to {self._where} lost: {detail}")
