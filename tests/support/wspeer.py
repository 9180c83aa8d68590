"""A scriptable WebSocket peer on 127.0.0.1 for integration tests.

The server is the ``websockets`` library (asyncio) running in a background
thread with its own event loop, so tests on any anyio backend, and tests that
drive the real agent as a subprocess, can talk to it.  Every method is
blocking with a timeout; from async tests call them through
:func:`call` (``await call(session.receive)``), which runs them in a worker
thread so the event loop of the test keeps serving the client under test.

    with WsPeer() as peer:                       # listens on a free port
        ... start a client on peer.url ...
        session = peer.accept()                  # the next WebSocket session
        assert session.headers["authorization"] == "Bearer ..."
        message = session.receive_message()      # decoded Outbound message
        beat = session.receive_until(Heartbeat)  # skipping what comes before
        session.send_message(deploy)             # any Message
        session.close(4409)                      # or drop(), go_silent()

:func:`register` plays the control plane's side of a first registration.

Knobs: ``peer.reject_with = 401`` answers the next handshakes with that HTTP
status; ``peer.kill()`` vanishes like a crashed process (no close frames)
and ``peer.start()`` listens again on the same port.  Every handshake
attempt, rejected or not, is recorded in ``peer.handshakes``.

The library logs handshake headers (credentials) at debug level: its records
go to the ``tests.wspeer`` logger, kept at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.http11 import Request, Response

from tests.support.tokens import NODE_TOKEN, ORG_TOKEN
from vectorlay.domain.messages import (
    SUBPROTOCOL,
    Message,
    Outbound,
    Register,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    SystemInfo,
    decode_outbound,
    encode_text,
)
from vectorlay.errors import ConnectionClosed, ConnectionLost

T = TypeVar("T")
M = TypeVar("M", bound=Message)

PEER_LOGGER = logging.getLogger("tests.wspeer")
PEER_LOGGER.setLevel(logging.WARNING)

DEFAULT_TIMEOUT = 5.0


async def call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking peer method off the event loop of an async test."""
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))


@dataclass(frozen=True)
class Handshake:
    """One opening handshake as the peer saw it (header names lowercased)."""

    path: str
    headers: Mapping[str, str]


class PeerSession:
    """The peer's end of one WebSocket session."""

    def __init__(self, peer: WsPeer, connection: ServerConnection) -> None:
        self._peer = peer
        self._connection = connection
        request = connection.request
        assert request is not None
        self.path = request.path
        self.headers: Mapping[str, str] = _lower_headers(request)
        self.subprotocol: str | None = connection.subprotocol

    # --- sending -------------------------------------------------------

    def send_text(self, text: str) -> None:
        self._peer.run(self._connection.send(text))

    def send_bytes(self, data: bytes) -> None:
        self._peer.run(self._connection.send(data))

    def send_message(self, message: Message) -> None:
        self.send_text(encode_text(message))

    def send_fragments(self, fragments: Iterable[str] | Iterable[bytes]) -> None:
        """One message sent as several frames (continuation frames)."""
        self._peer.run(self._connection.send(list(fragments)))

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the TCP connection, for frames the library would never send."""
        self._peer.call_soon(lambda: self._connection.transport.write(data))

    def ping(self, timeout: float = DEFAULT_TIMEOUT) -> float:
        """Ping the client; the round-trip time in seconds once its pong is back."""

        async def ping() -> float:
            waiter = await self._connection.ping()
            return await asyncio.wait_for(waiter, timeout)

        return self._peer.run(ping(), timeout=timeout + DEFAULT_TIMEOUT)

    def pong(self, payload: bytes = b"unsolicited") -> None:
        """A pong the client never asked for (allowed as a one-way heartbeat)."""
        self._peer.run(self._connection.pong(payload))

    # --- receiving -----------------------------------------------------

    def receive(self, timeout: float = DEFAULT_TIMEOUT) -> str | bytes:
        """The next frame from the client.

        Raises ``ConnectionClosed`` (the client's close code), ``ConnectionLost``
        (no close frame) or ``TimeoutError``.
        """
        return self._peer.run(self._receive(timeout), timeout=timeout + DEFAULT_TIMEOUT)

    def receive_message(self, timeout: float = DEFAULT_TIMEOUT) -> Outbound:
        return decode_outbound(self.receive(timeout))

    def receive_until(self, kind: type[M], timeout: float = 10.0) -> M:
        """The next message of type ``kind``; the messages before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive_message(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(msg, kind):
                return msg

    async def _receive(self, timeout: float) -> str | bytes:
        try:
            # wait_for cancels recv() inside the loop before returning, and
            # websockets documents a cancelled recv() as losing no data.
            return await asyncio.wait_for(self._connection.recv(), timeout)
        except WsConnectionClosed as exc:
            if exc.rcvd is not None:
                raise ConnectionClosed(exc.rcvd.code, exc.rcvd.reason) from None
            raise ConnectionLost("client went away without a close frame") from None

    # --- ending ----------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Closing handshake: send a close frame and wait for the answer."""
        self._peer.run(self._connection.close(code, reason))

    def drop(self) -> None:
        """End the TCP connection without a close frame, like a vanished network."""
        self._peer.call_soon(self._connection.transport.abort)

    def go_silent(self) -> None:
        """Stop reading: pings go unanswered while the TCP connection stays up.

        The kernel still acknowledges the bytes, so the client sees a peer that
        is there but never answers (a half-open session).  The peer can still
        send.  Nothing the client sends afterwards is read.
        """

        def ignore(data: bytes) -> None:
            del data

        def mute() -> None:
            # Shadow the protocol's data_received: flow control elsewhere in
            # the library may resume reading, but nothing gets processed.
            self._connection.data_received = ignore  # type: ignore[method-assign]

        self._peer.call_soon(mute)

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Wait for the session to end; the close code the client sent, if any."""
        self._peer.run(asyncio.wait_for(self._connection.wait_closed(), timeout))
        return self.close_code

    @property
    def close_code(self) -> int | None:
        """The close code received from the client (1006 when it just vanished)."""
        return self._connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self._connection.close_reason


class WsPeer:
    """A WebSocket server on the loopback interface, scripted from tests."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/v1/agent",
        ssl_context: ssl.SSLContext | None = None,
        subprotocols: Iterable[str] = (SUBPROTOCOL,),
        select_subprotocol: Callable[[Iterable[str]], str | None] | None = None,
        max_size: int | None = 4 * 1024 * 1024,
        ping_interval: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.ssl_context = ssl_context
        self.subprotocols = tuple(subprotocols)
        self.select_subprotocol = select_subprotocol
        self.max_size = max_size
        self.ping_interval = ping_interval
        self.reject_with: int | None = None
        self.handshakes: list[Handshake] = []
        self._accepted: queue.Queue[PeerSession] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None

    # --- lifecycle ------------------------------------------------------

    def __enter__(self) -> WsPeer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}{self.path}"

    def start(self) -> WsPeer:
        """Listen (again, on the same port after :meth:`stop` or :meth:`kill`)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="wspeer", daemon=True
            )
            self._thread.start()
        self._server = self.run(self._serve())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening; open sessions are closed with 1001 (going away)."""
        server, self._server = self._server, None
        if server is not None:
            self.call_soon(server.close)
            self.run(server.wait_closed())

    def kill(self) -> None:
        """Stop listening and cut every session without a close frame."""
        server, self._server = self._server, None
        if server is None:
            return

        def abort_all() -> None:
            for connection in server.connections:
                connection.transport.abort()
            server.close(close_connections=False)

        self.call_soon(abort_all)
        self.run(server.wait_closed())

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        """Stop the server and its thread."""
        self.stop()
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            assert self._thread is not None
            self._thread.join(DEFAULT_TIMEOUT)
            loop.close()

    # --- sessions -------------------------------------------------------

    def accept(self, timeout: float = DEFAULT_TIMEOUT) -> PeerSession:
        """The next session whose opening handshake succeeded."""
        try:
            return self._accepted.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no WebSocket session within {timeout} s") from None

    def no_session(self, within: float) -> bool:
        """True when no session opened within ``within`` seconds."""
        try:
            session = self._accepted.get(timeout=within)
        except queue.Empty:
            return True
        self._accepted.put(session)
        return False

    # --- plumbing -------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 2 * DEFAULT_TIMEOUT) -> T:
        """Run a coroutine on the peer's loop and wait for its result."""
        assert self._loop is not None, "peer not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call_soon(self, func: Callable[[], None]) -> None:
        """Run a plain function on the peer's loop and wait for it."""

        async def wrapper() -> None:
            func()

        self.run(wrapper())

    async def _serve(self) -> Server:
        return await serve(
            self._handler,
            self.host,
            self.port,
            ssl=self.ssl_context,
            subprotocols=[_subprotocol(p) for p in self.subprotocols] or None,
            select_subprotocol=self._select if self.select_subprotocol else None,
            process_request=self._process_request,
            max_size=self.max_size,
            ping_interval=self.ping_interval,
            compression=None,
            logger=PEER_LOGGER,
        )

    def _select(self, connection: ServerConnection, offered: Iterable[str]) -> Any:
        assert self.select_subprotocol is not None
        return self.select_subprotocol(offered)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(Handshake(request.path, _lower_headers(request)))
        if self.reject_with is not None:
            status = HTTPStatus(self.reject_with)
            return connection.respond(status, f"{status.phrase}\n")
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        self._accepted.put(PeerSession(self, connection))
        # The library closes the session when the handler returns: keep it
        # open until the test or the client ends it.
        await connection.wait_closed()


def register(peer: WsPeer, node_id: str = "node-1") -> PeerSession:
    """Accept an agent's first session and register it as ``node_id`` (with
    :data:`~tests.support.tokens.NODE_TOKEN`); the session once its system_info is in."""
    session = peer.accept(timeout=20)
    assert session.headers["authorization"] == f"Bearer {ORG_TOKEN}"
    first = session.receive_message(timeout=10)
    assert isinstance(first, Register), first
    session.send_message(RegistrationSuccess(RegistrationSuccessPayload(node_id, NODE_TOKEN)))
    info = session.receive_message(timeout=10)
    assert isinstance(info, SystemInfo), info
    assert info.payload.node_id == node_id
    return session


def _lower_headers(request: Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.raw_items()}


def _subprotocol(name: str) -> Any:
    # websockets types subprotocols as a NewType of str.
    return name


# --- TLS material ----------------------------------------------------------


@dataclass(frozen=True)
class TestCertificates:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""

    __test__ = False  # not a pytest test class

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificates(directory: Path) -> TestCertificates:
    """Create a CA and a server certificate with the ``openssl`` command."""
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=vectorlay test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", "2",
        "-days", "2", "-out", cert, "-extfile", ext,
    )  # fmt: skip
    return TestCertificates(ca=ca, cert=cert, key=key)


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)],
        check=True,
        capture_output=True,
        timeout=30,
    )
