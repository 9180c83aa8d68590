"""HTTP/1.1 on one anyio byte stream with h11, handing WebSocket upgrades to wsproto.

h11 parses requests and frames responses (sans-I/O); this module reads and
writes the socket, bounds what a client can make it hold (header block, body
size, time to send a request, idle keep-alive), and hands a request that asks
for a WebSocket upgrade over to the caller with the bytes that followed it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import unquote

import anyio
import anyio.abc
import h11
import msgspec
from wsproto import ConnectionType, WSConnection
from wsproto.events import RejectConnection, RejectData
from wsproto.events import Request as WsRequest
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from vectorlay.adapters.controlplane.websocket import ServerWebSocket

log = logging.getLogger("vectorlay.controlplane")

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BODY_BYTES: Final = 1024 * 1024
REQUEST_TIMEOUT: Final = 30.0
IDLE_TIMEOUT: Final = 75.0
RECEIVE_CHUNK: Final = 65536
SERVER_HEADER: Final = b"vectorlay-control-plane"

_STREAM_ERRORS: Final = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("ascii")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def segments(self) -> list[str]:
        """The path split on ``/``, each part percent-decoded."""
        return [unquote(part) for part in self.path.strip("/").split("/")] if self.path else []


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


_json: Final = msgspec.json.Encoder()


def json_response(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, _json.encode(obj) + b"\n", "application/json", headers)


def error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    body: dict[str, str] = {"error": message}
    if field is not None:
        body["field"] = field
    return json_response(status, body, headers)


def bearer(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_matches(candidate: str, tokens: Sequence[str]) -> bool:
    """Constant-time membership: every configured token is compared."""
    given = candidate.encode("utf-8")
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.encode("utf-8"))
    return found


@dataclass
class Upgrade:
    """A WebSocket upgrade request, parsed by wsproto and not answered yet."""

    stream: anyio.abc.ByteStream
    ws: WSConnection
    request: WsRequest
    trailing: bytes
    answered: bool = field(default=False)

    @property
    def subprotocols(self) -> list[str]:
        return list(self.request.subprotocols)

    async def accept(self, subprotocol: str | None, *, max_message_bytes: int) -> ServerWebSocket:
        self.answered = True
        return await ServerWebSocket.accept(
            self.stream,
            self.ws,
            self.trailing,
            subprotocol=subprotocol,
            max_message_bytes=max_message_bytes,
        )

    async def reject(self, status: int, message: str) -> None:
        self.answered = True
        body = _json.encode({"error": message}) + b"\n"
        head = RejectConnection(
            status_code=status,
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            has_body=True,
        )
        await self.stream.send(self.ws.send(head) + self.ws.send(RejectData(body)))


class Handler(Protocol):
    async def http(self, request: Request) -> Response: ...

    def wants_websocket(self, request: Request) -> bool:
        """Whether this upgrade request goes to :meth:`websocket`."""
        ...

    async def websocket(self, request: Request, upgrade: Upgrade) -> None:
        """Answer the upgrade (accept or reject) and run the session to its end."""
        ...


class _TooLarge(Exception):
    pass


async def serve_connection(stream: anyio.abc.ByteStream, handler: Handler) -> None:
    """Serve requests on ``stream`` until the client leaves or a WebSocket session ends."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    while True:
        head = False  # the answer to a HEAD request carries no body, whatever it is
        try:
            with anyio.fail_after(IDLE_TIMEOUT):
                event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            request = _request(event)
            head = request.method == "HEAD"
            if _is_upgrade(request) and handler.wants_websocket(request):
                await _upgrade(conn, stream, handler, request)
                return
            with anyio.fail_after(REQUEST_TIMEOUT):
                body = await _read_body(conn, stream, event)
            request = Request(
                request.method,
                request.target,
                request.path,
                request.query,
                request.headers,
                body,
            )
        except TimeoutError:
            return
        except _TooLarge:
            too_large = error_response(413, f"body larger than {MAX_BODY_BYTES}")
            await _send(conn, stream, too_large, head=head)
            return
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
            await _send(conn, stream, error_response(status, "malformed HTTP request"), head=head)
            return
        response = await _respond(handler, request)
        await _send(conn, stream, response, head=head)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _respond(handler: Handler, request: Request) -> Response:
    try:
        response = await handler.http(request)
    except Exception:
        log.exception("error handling %s %s", request.method, request.path)
        response = error_response(500, "internal error")
    log.debug("http %s %s -> %d", request.method, request.path, response.status)
    return response


async def _next_event(conn: h11.Connection, stream: anyio.abc.ByteStream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(RECEIVE_CHUNK)
        except _STREAM_ERRORS:
            data = b""
        conn.receive_data(data)


def _request(event: h11.Request) -> Request:
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    return Request(
        method=event.method.decode("ascii", "replace"),
        target=target,
        path=path,
        query=query,
        headers=tuple((bytes(k), bytes(v)) for k, v in event.headers),
    )


def _is_upgrade(request: Request) -> bool:
    upgrade = request.header("upgrade") or ""
    return "websocket" in upgrade.lower()


async def _read_body(
    conn: h11.Connection, stream: anyio.abc.ByteStream, head: h11.Request
) -> bytes:
    length = dict(head.headers).get(b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _TooLarge
    if conn.they_are_waiting_for_100_continue:
        # curl sends a larger body only after this (or after a 1 s pause).
        await stream.send(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY_BYTES:
                raise _TooLarge
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("connection closed mid-request")


async def _upgrade(
    conn: h11.Connection, stream: anyio.abc.ByteStream, handler: Handler, request: Request
) -> None:
    with anyio.fail_after(REQUEST_TIMEOUT):
        while True:
            event = await _next_event(conn, stream)
            if event is h11.PAUSED or isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    if isinstance(event, h11.ConnectionClosed):
        return
    if event is not h11.PAUSED:
        # A request h11 does not treat as a protocol switch (e.g. no
        # ``Connection: upgrade``): let wsproto explain what is missing.
        event = conn.next_event()
    trailing = conn.trailing_data[0] if event is h11.PAUSED else b""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.initiate_upgrade_connection(list(request.headers), request.target)
        parsed = next(e for e in ws.events() if isinstance(e, WsRequest))
    except WsRemoteProtocolError as exc:
        hint = exc.event_hint
        reject = hint if isinstance(hint, RejectConnection) else RejectConnection(status_code=400)
        with anyio.move_on_after(REQUEST_TIMEOUT):
            await stream.send(ws.send(reject))
        return
    upgrade = Upgrade(stream, ws, parsed, bytes(trailing))
    await handler.websocket(request, upgrade)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def _send(
    conn: h11.Connection, stream: anyio.abc.ByteStream, response: Response, *, head: bool = False
) -> None:
    """Write ``response``; for a HEAD request, its head only (Content-Length as for GET)."""
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("cache-control", "no-store"),
        ("server", SERVER_HEADER.decode()),
        *response.headers,
    ]
    try:
        status_line = h11.Response(
            status_code=response.status, headers=headers, reason=_reason(response.status)
        )
        data = conn.send(status_line) or b""
        if not head:
            data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return
    try:
        with anyio.fail_after(REQUEST_TIMEOUT):
            await stream.send(data)
    except (*_STREAM_ERRORS, TimeoutError):
        conn.send_failed()
