"""The WebSocket transport to the control plane, over httpx-ws.

:class:`WebSocketTransport` implements :class:`vectorlay.ports.Transport`::

    transport = WebSocketTransport(user_agent="vectorlay-agent/0.1.0", ca_file=None)
    async with transport.connect("wss://cp.example.com/v1/agent", node_token) as conn:
        await conn.send(text)
        frame = await conn.receive()

Every error of httpx, httpcore, httpx-ws, wsproto and anyio is translated
here into :mod:`vectorlay.errors`, and a single error leaves ``connect()``
bare, not wrapped in the ``ExceptionGroup`` that the task group of httpx-ws
would put around it.

httpx-ws 0.9 supplies the handshake, the network stream and the session
object; its receive loop and keepalive are replaced (see :class:`_Session`).
The credential goes in the ``Authorization`` header only: it never appears in
an exception text or a log record.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import math
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Final
from urllib.parse import SplitResult, urlsplit

import anyio
import httpcore
import httpx
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketDisconnect,
    WebSocketNetworkError,
    WebSocketUpgradeError,
    aconnect_ws,
)
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from vectorlay.domain.messages import MAX_FRAME_BYTES, SUBPROTOCOL
from vectorlay.errors import (
    ConfigError,
    ConnectFailed,
    ConnectionClosed,
    ConnectionLost,
    InsecureURL,
    MessageTooLarge,
    PeerUnresponsive,
    TransportError,
    Unauthorized,
    VectorlayError,
)

logger = logging.getLogger("vectorlay.transport")

READ_CHUNK_BYTES: Final = 65_536
"""Bytes read from the socket at a time (httpx-ws's ``max_message_size_bytes``)."""

CLOSE_TIMEOUT: Final = 2.0
"""Longest wait for our close frame to go out and the peer's answer to come back."""

_ABORT_TIMEOUT: Final = 1.0
_MAX_CLOSE_REASON_BYTES: Final = 123
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# What the libraries under this adapter raise when the network, TLS or the
# peer misbehaves.  Anything else (our own errors, cancellation, bugs) passes
# through untouched.  Once a session is open, only errors that can come from
# nowhere but these libraries are translated: an OSError or TimeoutError
# leaving the body of ``connect()`` belongs to the caller.
_LIBRARY_ERRORS: Final = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.UnsupportedProtocol,
    HTTPXWSException,
    LocalProtocolError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)
_SESSION_LIBRARY_ERRORS: Final = (
    httpx.HTTPError,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    HTTPXWSException,
    LocalProtocolError,
)


# --- URL policy ---------------------------------------------------------------


def check_url(url: str, *, insecure: bool) -> None:
    """Refuse a control-plane URL the agent must never use.

    ``ConfigError`` for anything but an absolute ``ws://`` or ``wss://`` URL
    with a host; ``InsecureURL`` for ``ws://`` to a host outside the loopback
    interface (``127.0.0.0/8``, ``::1``, ``localhost``) unless ``insecure``.
    Messages name the scheme and host, never the whole URL.
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ConfigError(f"control plane URL must start with ws:// or wss:// (got {shown})")
    host = parts.hostname
    if not host:
        raise ConfigError("control plane URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("control plane URL must not carry a user name or password")
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"control plane URL for host {host} is invalid: {exc}") from None
    if scheme == "ws" and not insecure and not is_loopback(host):
        raise InsecureURL(
            f"refusing unencrypted ws:// to {host}, which is not a loopback address: "
            "use wss://, or pass --insecure to allow it"
        )


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (also as ``::ffff:127.x.y.z``)."""
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ConfigError(f"control plane URL is invalid: {exc}") from None
    return parts


def _where(url: str) -> str:
    """``scheme://host:port`` of a checked URL, for messages."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "wss" else 80)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _check_credential(credential: str) -> None:
    # A character h11 refuses in a header would surface as an error quoting
    # the whole header value, that is the credential.
    if not credential:
        raise ConfigError("the credential for the control plane is empty")
    if not all("\x21" <= ch <= "\x7e" for ch in credential):
        raise ConfigError(
            "the credential for the control plane contains characters that cannot "
            "be sent in an HTTP header (only visible ASCII is allowed)"
        )


# --- session -------------------------------------------------------------------


class _FrameTooLarge(HTTPXWSException):
    """Marker in the event stream: a message over the size limit was dropped."""


class _PeerSilent(HTTPXWSException):
    """Marker in the event stream: the keepalive ping went unanswered."""


class _ClosedLocally(HTTPXWSException):
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
            return _FrameTooLarge()
        if text:
            return TextMessage(data="".join(p for p in self._parts if isinstance(p, str)))
        return BytesMessage(data=b"".join(p for p in self._parts if isinstance(p, bytes)))


class _Session(AsyncWebSocketSession):
    """An httpx-ws session with the receive loop and keepalive this protocol needs.

    httpx-ws 0.9's own loop does not fit (read from its source, the same on
    asyncio and trio since it is plain anyio): its keepalive pings on a fixed
    interval whatever the traffic and reports a lost pong as a plain network
    error; a pong with a payload it did not send crashes its receive task
    (``KeyError`` in the ping manager); ``max_message_size_bytes`` is only the
    read size, messages are reassembled without limit; a close frame from the
    peer is answered only when the session exits.  httpx-ws starts the two
    methods overridden here in its own task group.

    Keepalive: any bytes from the peer count as a sign of life; after
    ``interval`` seconds without any, one ping; when nothing at all arrives
    within ``timeout`` seconds of it, the peer is declared silent.
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
            await self._end(WebSocketNetworkError(), _describe(exc))
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
            item = _ClosedLocally()  # the answer to our own close frame
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
        while True:
            # A reader slow to take a frame is not a silent peer.
            quiet_for = 0.0 if self._delivering else anyio.current_time() - self.last_received
            if quiet_for < interval_seconds:
                await anyio.sleep(interval_seconds - quiet_for)
                continue
            answered = await self._ping(pong_timeout)
            if answered is None:
                return
            if answered or self._delivering:
                continue
            self.silent = True
            await self._deliver(_PeerSilent())
            return

    async def _ping(self, timeout: float) -> bool | None:
        """Whether anything arrived within ``timeout`` of a ping; None if it could not go out."""
        activity = self._activity = anyio.Event()
        try:
            await self.send(Ping(secrets.token_bytes(8)))
        except LocalProtocolError:
            return None  # closing: the close handshake has its own timeout
        except Exception as exc:
            await self._end(WebSocketNetworkError(), _describe(exc))
            return None
        with anyio.move_on_after(timeout):
            await activity.wait()
        return activity.is_set()

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
            logger.debug("close frame not sent: %s", _describe(exc))
            return False
        return True


def _clip_reason(reason: str) -> str:
    data = reason.encode("utf-8")[:_MAX_CLOSE_REASON_BYTES]
    return data.decode("utf-8", "ignore")


# --- connection ----------------------------------------------------------------


class WebSocketConnection:
    """One session with the control plane (:class:`vectorlay.ports.Connection`).

    ``receive()`` is for one reader task at a time; ``send()`` may be called
    from several tasks (frames never interleave).  A message over
    ``MAX_FRAME_BYTES`` is dropped without being buffered and ``receive()``
    raises ``MessageTooLarge`` (a ``ProtocolError`` with code ``too_large``);
    the session stays open, so the agent answers it like any invalid frame.
    """

    def __init__(self, session: _Session, *, where: str, ping_after: float, pong_timeout: float):
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
        except _LIBRARY_ERRORS as exc:
            raise self._why_ended() or self._lost(_describe(exc)) from exc

    async def receive(self) -> str | bytes:
        while True:
            ended = self._why_ended()
            if ended is not None:
                raise ended
            try:
                event = await self._session.receive()
            except _FrameTooLarge:
                raise MessageTooLarge(
                    f"message: frame larger than {MAX_FRAME_BYTES} bytes"
                ) from None
            except _ClosedLocally:
                self._closed_locally = True
            except _LIBRARY_ERRORS as exc:
                # A close frame, silence or a broken stream: the session
                # recorded which, and the loop raises it from now on.
                if self._why_ended() is None:
                    self._gone = _describe(exc)
            else:
                if isinstance(event, TextMessage):
                    return event.data
                if isinstance(event, BytesMessage):
                    return bytes(event.data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self._session.close(code, reason)
        except Exception as exc:  # close never raises, by contract
            logger.debug("closing the session failed: %s", _describe(exc))
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


# --- transport -------------------------------------------------------------------


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
        _check_credential(credential)
        where = _where(url)
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
                        session_class=_Session,
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
            error = _translate(exc, entered=entered, where=where, credential=credential)
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
        if urlsplit(url.strip()).scheme.lower() == "wss":
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


def _translate(exc: BaseException, *, entered: bool, where: str, credential: str) -> BaseException:
    """The error to raise from ``connect()`` for ``exc``; ``exc`` itself to re-raise it."""
    leaf = _unwrap(exc)
    ours = _SESSION_LIBRARY_ERRORS if entered else _LIBRARY_ERRORS
    if isinstance(leaf, VectorlayError) or not isinstance(leaf, ours):
        return leaf
    if isinstance(leaf, WebSocketUpgradeError):
        # from None: the response holds the request, and the request our credential.
        status = leaf.response.status_code
        if status in (401, 403):
            return _no_cause(Unauthorized(f"{where} refused the credential (HTTP {status})"))
        return _no_cause(ConnectFailed(f"{where} refused the WebSocket upgrade (HTTP {status})"))
    detail = _describe(leaf).replace(credential, "<redacted>")
    if entered:
        error: TransportError = ConnectionLost(f"connection to {where} lost: {detail}")
    elif isinstance(leaf, httpx.TimeoutException):
        error = ConnectFailed(f"timed out connecting to {where}: {detail}")
    else:
        error = ConnectFailed(f"cannot connect to {where}: {detail}")
    error.__cause__ = leaf
    return error


def _no_cause(error: TransportError) -> TransportError:
    error.__cause__ = None
    error.__suppress_context__ = True
    return error


def _unwrap(exc: BaseException) -> BaseException:
    """The one error inside (nested) single-member groups, if it is an ``Exception``.

    Groups holding cancellation or several errors are left whole, so
    cancel scopes and ``except*`` keep working as they should.
    """
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, Exception) else exc


def _describe(exc: BaseException) -> str:
    """``Type: message (root cause)``, for one-line error texts.

    httpcore's errors often say little at the top: on trio a failed
    certificate check is an empty ``ConnectError`` with the ``ssl`` error two
    causes down, and a refused port is "all attempts failed" over the errno.
    """
    chain = [exc]
    for _ in range(10):
        inner = chain[-1]
        if isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            below: BaseException | None = inner.exceptions[0]
        else:
            below = inner.__cause__ or inner.__context__
        if below is None or below in chain:
            break
        chain.append(below)
    said = [e for e in chain if str(e)]
    if not said:
        return type(exc).__name__
    text = f"{type(exc).__name__}: {said[0]}"
    root = str(said[-1])
    return text if root in text else f"{text} ({root})"


__all__ = [
    "CLOSE_TIMEOUT",
    "READ_CHUNK_BYTES",
    "WebSocketConnection",
    "WebSocketTransport",
    "check_url",
    "is_loopback",
]
