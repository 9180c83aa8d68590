"""Opening a session: TLS, the handshake and its checks, errors translated on the way out."""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import anyio
import httpx
from httpx_ws import AsyncWebSocketSession, aconnect_ws

from vectorlay.adapters.transport.connection import WebSocketConnection
from vectorlay.adapters.transport.failures import translate
from vectorlay.adapters.transport.session import WsSession
from vectorlay.adapters.transport.url import check_url, is_tls, origin
from vectorlay.domain.agent.identity import identity_problem
from vectorlay.domain.messages import SUBPROTOCOL
from vectorlay.errors import ConfigError, ConnectFailed

logger = logging.getLogger("vectorlay.transport")

READ_CHUNK_BYTES: Final = 65_536
"""Bytes read from the socket at a time (httpx-ws's ``max_message_size_bytes``)."""

_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketTransport:
    """Opens WebSocket sessions to the control plane (:class:`vectorlay.ports.Transport`).

    ``wss://`` verifies the server certificate against ``ca_file`` when given
    (that bundle only) or the system store; ``insecure`` allows ``ws://`` to a
    non-loopback host and never turns certificate checks off.  ``ping_after``
    seconds without any frame from the peer trigger a ping, and a peer that
    stays silent ``pong_timeout`` seconds longer ends the session with
    ``PeerUnresponsive``.  ``connect_timeout`` bounds TCP connect, TLS and the
    HTTP upgrade together.  Proxy and netrc settings from the environment are
    ignored.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        ca_file: Path | None = None,
        insecure: bool = False,
        ping_after: float = 60.0,
        pong_timeout: float = 10.0,
        connect_timeout: float = 15.0,
    ) -> None:
        for name, value in (
            ("ping_after", ping_after),
            ("pong_timeout", pong_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds")
        self._user_agent = user_agent
        self._ca_file = ca_file
        self._insecure = insecure
        self._ping_after = ping_after
        self._pong_timeout = pong_timeout
        self._connect_timeout = connect_timeout
        self._tls: ssl.SSLContext | None = _load_ca(ca_file) if ca_file is not None else None
        self._plain: ssl.SSLContext | None = None

    @asynccontextmanager
    async def connect(self, url: str, credential: str) -> AsyncIterator[WebSocketConnection]:
        """Open a session; see :class:`vectorlay.ports.Transport`.

        Raises ``InsecureURL`` or ``ConfigError`` for a URL it must not use,
        ``Unauthorized`` for HTTP 401/403, ``ConnectFailed`` for anything else
        that stops the session from opening.
        """
        check_url(url, insecure=self._insecure)
        problem = identity_problem("the credential for the control plane", credential)
        if problem:
            raise ConfigError(problem)
        where = origin(url)
        entered = False
        try:
            with anyio.CancelScope() as handshake:
                handshake.deadline = anyio.current_time() + self._connect_timeout
                async with (
                    self._client(url) as client,
                    aconnect_ws(
                        url,
                        client,
                        headers={
                            "Authorization": f"Bearer {credential}",
                            "User-Agent": self._user_agent,
                        },
                        subprotocols=[SUBPROTOCOL],
                        session_class=WsSession,
                        max_message_size_bytes=READ_CHUNK_BYTES,
                        keepalive_ping_interval_seconds=self._ping_after,
                        keepalive_ping_timeout_seconds=self._pong_timeout,
                    ) as session,
                ):
                    handshake.deadline = math.inf
                    _check_handshake(session, where)
                    logger.debug("WebSocket session open with %s", where)
                    entered = True
                    yield WebSocketConnection(
                        session,
                        where=where,
                        ping_after=self._ping_after,
                        pong_timeout=self._pong_timeout,
                    )
        except BaseException as exc:
            error = translate(exc, entered=entered, where=where, credential=credential)
            if error is exc:
                raise
            raise error from error.__cause__
        if not entered:
            raise ConnectFailed(
                f"no WebSocket session with {where} within {self._connect_timeout:g} s"
            )

    def _client(self, url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=self._ssl_context(url),
            timeout=httpx.Timeout(self._connect_timeout),
            trust_env=False,
            follow_redirects=False,
        )

    def _ssl_context(self, url: str) -> ssl.SSLContext:
        if is_tls(url):
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls
        # httpx would otherwise load a CA bundle for every plain ws:// client;
        # this context verifies too, it just trusts nothing.
        if self._plain is None:
            self._plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return self._plain


def _load_ca(ca_file: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot load CA file {ca_file}: {detail}") from None


def _check_handshake(session: AsyncWebSocketSession, where: str) -> None:
    response = session.response
    if response is None:
        raise ConnectFailed(f"no handshake response from {where}")
    key = response.request.headers.get("sec-websocket-key", "")
    accept = response.headers.get("sec-websocket-accept")
    expected = base64.b64encode(
        hashlib.sha1(key.encode() + _WS_GUID, usedforsecurity=False).digest()
    ).decode()
    if accept != expected:
        raise ConnectFailed(f"{where} answered the upgrade without a valid Sec-WebSocket-Accept")
    if session.subprotocol not in (None, SUBPROTOCOL):
        raise ConnectFailed(
            f"{where} chose subprotocol {session.subprotocol!r}, not {SUBPROTOCOL!r}"
        )
