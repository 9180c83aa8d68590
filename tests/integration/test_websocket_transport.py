"""The httpx-ws transport against a real WebSocket server on 127.0.0.1.

Every async test runs on asyncio and trio; the server (tests/support/
wspeer.py) runs on its own asyncio loop in a background thread.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.support import NODE_TOKEN as TOKEN
from tests.support import free_port
from tests.support.wspeer import (
    PeerSession,
    TestCertificates,
    WsPeer,
    call,
    make_certificates,
)
from vectorlay.adapters.transport import (
    CLOSE_TIMEOUT,
    WebSocketConnection,
    WebSocketTransport,
    check_url,
)
from vectorlay.domain.messages import MAX_FRAME_BYTES, SUBPROTOCOL
from vectorlay.errors import (
    ConfigError,
    ConnectFailed,
    ConnectionClosed,
    ConnectionLost,
    InsecureURL,
    MessageTooLarge,
    PeerUnresponsive,
    ProtocolError,
    Unauthorized,
)

pytestmark = pytest.mark.integration

USER_AGENT = "vectorlay-agent/0.1.0"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_certificates(tmp_path_factory.mktemp("certs"))


def transport(**kwargs: object) -> WebSocketTransport:
    options: dict[str, object] = {"user_agent": USER_AGENT, "connect_timeout": 5.0}
    options.update(kwargs)
    return WebSocketTransport(**options)  # type: ignore[arg-type]


@asynccontextmanager
async def session_with(
    peer: WsPeer, client: WebSocketTransport | None = None, url: str | None = None
) -> AsyncIterator[tuple[WebSocketConnection, PeerSession]]:
    """A connected client and the peer's end of the same session."""
    async with (client or transport()).connect(url or peer.url, TOKEN) as conn:
        yield conn, await call(peer.accept)


# --- URL policy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "insecure", "error"),
    [
        ("wss://cp.example.com/v1/agent", False, None),
        ("WSS://cp.example.com:8443/v1/agent?x=1", False, None),
        ("ws://127.0.0.1:8787/v1/agent", False, None),
        ("ws://127.8.9.10/v1/agent", False, None),
        ("ws://localhost:8787/v1/agent", False, None),
        ("ws://LOCALHOST./v1/agent", False, None),
        ("ws://[::1]:8787/v1/agent", False, None),
        ("ws://[::ffff:127.0.0.1]/v1/agent", False, None),
        ("ws://cp.example.com/v1/agent", False, InsecureURL),
        ("ws://10.0.0.1/v1/agent", False, InsecureURL),
        ("ws://128.0.0.1/v1/agent", False, InsecureURL),
        ("ws://[::2]/v1/agent", False, InsecureURL),
        ("ws://localhost.example.com/v1/agent", False, InsecureURL),
        ("ws://cp.example.com/v1/agent", True, None),
        ("http://cp.example.com/v1/agent", False, ConfigError),
        ("https://cp.example.com/v1/agent", True, ConfigError),
        ("cp.example.com/v1/agent", False, ConfigError),
        ("", False, ConfigError),
        ("wss:///v1/agent", False, ConfigError),
        ("wss://", False, ConfigError),
        ("wss://cp.example.com:99999/v1/agent", False, ConfigError),
        ("wss://[::1/v1/agent", False, ConfigError),
        ("wss://user:pw@cp.example.com/v1/agent", False, ConfigError),
    ],
)
def test_check_url(url: str, insecure: bool, error: type[Exception] | None) -> None:
    if error is None:
        check_url(url, insecure=insecure)
    else:
        with pytest.raises(error):
            check_url(url, insecure=insecure)


def test_check_url_messages_never_show_the_whole_url() -> None:
    with pytest.raises(InsecureURL) as refused:
        check_url("ws://cp.example.com/v1/agent?key=hidden-value", insecure=False)
    assert "cp.example.com" in str(refused.value)
    assert "hidden-value" not in str(refused.value)
    assert "--insecure" in str(refused.value)


async def test_insecure_url_is_refused_before_any_connection() -> None:
    with pytest.raises(InsecureURL):
        async with transport().connect("ws://192.0.2.1:9/v1/agent", TOKEN):
            pytest.fail("connected")


# --- handshake --------------------------------------------------------------------


async def test_handshake_sends_bearer_subprotocol_and_user_agent(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        assert server.headers["authorization"] == f"Bearer {TOKEN}"
        assert server.headers["sec-websocket-protocol"] == SUBPROTOCOL
        assert server.headers["user-agent"] == USER_AGENT
        assert server.path == "/v1/agent"
        assert server.subprotocol == SUBPROTOCOL
        assert conn.subprotocol == SUBPROTOCOL


@pytest.mark.parametrize("status", [401, 403])
async def test_http_401_or_403_at_handshake_is_unauthorized(peer: WsPeer, status: int) -> None:
    peer.reject_with = status
    with pytest.raises(Unauthorized, match=f"HTTP {status}"):
        async with transport().connect(peer.url, TOKEN):
            pytest.fail("connected")
    assert peer.handshakes[-1].headers["authorization"] == f"Bearer {TOKEN}"


async def test_other_handshake_refusal_is_connect_failed(peer: WsPeer) -> None:
    peer.reject_with = 503
    with pytest.raises(ConnectFailed, match="HTTP 503"):
        async with transport().connect(peer.url, TOKEN):
            pytest.fail("connected")


async def test_subprotocol_the_agent_did_not_offer_is_refused() -> None:
    with (
        WsPeer(select_subprotocol=lambda offered: "vectorlay.agent.v9") as peer,
        pytest.raises(ConnectFailed, match="subprotocol"),
    ):
        async with transport().connect(peer.url, TOKEN):
            pytest.fail("connected")


async def test_refused_port_is_connect_failed() -> None:
    with pytest.raises(ConnectFailed, match=re.escape("127.0.0.1")):
        async with transport().connect(f"ws://127.0.0.1:{free_port()}/v1/agent", TOKEN):
            pytest.fail("connected")


async def test_unresolvable_host_is_connect_failed() -> None:
    client = transport(insecure=True, connect_timeout=10.0)
    with pytest.raises(ConnectFailed, match=re.escape("no-such-host.invalid")):
        async with client.connect("ws://no-such-host.invalid/v1/agent", TOKEN):
            pytest.fail("connected")


async def test_server_that_never_answers_the_upgrade_times_out() -> None:
    # The kernel completes the TCP handshake from the backlog; nothing answers HTTP.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/v1/agent"
        with anyio.fail_after(5):
            with pytest.raises(ConnectFailed, match=re.escape("127.0.0.1")):
                async with transport(connect_timeout=0.5).connect(url, TOKEN):
                    pytest.fail("connected")


@pytest.mark.parametrize("credential", ["", "two words", "line\nbreak", "caf\u00e9"])
async def test_credential_that_cannot_go_in_a_header_is_a_config_error(
    peer: WsPeer, credential: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        async with transport().connect(peer.url, credential):
            pytest.fail("connected")
    if credential:
        assert credential not in str(refused.value)
    assert peer.handshakes == []


# --- frames -----------------------------------------------------------------------


async def test_text_frames_both_ways(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await conn.send('{"type": "heartbeat", "payload": {"note": "gr\u00fc\u00df"}}')
        assert await call(server.receive) == (
            '{"type": "heartbeat", "payload": {"note": "gr\u00fc\u00df"}}'
        )
        await call(server.send_text, '{"type": "stop"}')
        assert await conn.receive() == '{"type": "stop"}'


async def test_binary_frame_surfaces_as_bytes(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.send_bytes, b"\x00\x01{}")
        frame = await conn.receive()
        assert frame == b"\x00\x01{}"
        assert isinstance(frame, bytes)


async def test_fragmented_message_is_reassembled(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.send_fragments, ['{"type": ', '"stop", ', '"payload": {}}'])
        assert await conn.receive() == '{"type": "stop", "payload": {}}'


async def test_frame_of_exactly_the_limit_is_delivered(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.send_text, "x" * MAX_FRAME_BYTES)
        frame = await conn.receive()
        assert len(frame) == MAX_FRAME_BYTES


@pytest.mark.parametrize(
    "oversize",
    [
        pytest.param(["x" * (MAX_FRAME_BYTES + 1)], id="ascii"),
        pytest.param(["\u00e9" * (MAX_FRAME_BYTES // 2 + 1)], id="utf8-bytes-over"),
        pytest.param(["y" * (256 * 1024)] * 5, id="fragmented"),
        pytest.param([b"z" * (MAX_FRAME_BYTES + 1)], id="binary"),
    ],
)
async def test_oversize_message_is_rejected_and_session_continues(
    peer: WsPeer, oversize: list[str] | list[bytes]
) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.send_fragments, oversize)
        with pytest.raises(MessageTooLarge) as rejected:
            await conn.receive()
        assert isinstance(rejected.value, ProtocolError)
        assert rejected.value.code == "too_large"
        await call(server.send_text, '{"type": "stop"}')
        assert await conn.receive() == '{"type": "stop"}'
        await conn.send("still here")
        assert await call(server.receive) == "still here"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b"\x83\x00", 1002, id="reserved-opcode"),
        pytest.param(b"\x81\x02\xff\xfe", 1007, id="text-not-utf8"),
        pytest.param(b"\x81\x82abcd\x00\x00", 1002, id="masked-by-server"),
        pytest.param(b"\x89\x7e\x00\x80" + b"p" * 128, 1002, id="control-frame-too-long"),
    ],
)
async def test_invalid_websocket_data_is_connection_lost(
    peer: WsPeer, raw: bytes, code: int
) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.send_raw, raw)
        with pytest.raises(ConnectionLost, match="invalid WebSocket data"):
            await conn.receive()
        assert await call(server.wait_closed) == code


# --- pings ------------------------------------------------------------------------


async def test_pings_from_the_peer_are_answered(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.ping)
        await call(server.send_text, "after ping")
        assert await conn.receive() == "after ping"


async def test_unsolicited_pong_does_not_break_the_session(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.pong, b"not-our-ping")
        await call(server.send_text, "after pong")
        assert await conn.receive() == "after pong"


async def test_silent_peer_is_detected_after_ping_after_plus_pong_timeout(peer: WsPeer) -> None:
    ping_after, pong_timeout = 0.4, 0.3
    client = transport(ping_after=ping_after, pong_timeout=pong_timeout)
    async with session_with(peer, client) as (conn, server):
        await call(server.send_text, "last words")
        assert await conn.receive() == "last words"
        started = anyio.current_time()
        await call(server.go_silent)
        with anyio.fail_after(ping_after + pong_timeout + 3), pytest.raises(PeerUnresponsive):
            await conn.receive()
        assert anyio.current_time() - started >= ping_after + pong_timeout - 0.1
        with pytest.raises(PeerUnresponsive):
            await conn.send("anyone?")
        with pytest.raises(PeerUnresponsive):
            await conn.receive()


async def test_quiet_peer_that_answers_pings_stays_connected(peer: WsPeer) -> None:
    client = transport(ping_after=0.2, pong_timeout=0.2)
    async with session_with(peer, client) as (conn, server):
        with anyio.move_on_after(1.5):
            frame = await conn.receive()
            pytest.fail(f"unexpected frame {frame!r}")
        await call(server.send_text, "still alive")
        assert await conn.receive() == "still alive"


async def test_keepalive_measures_silence_not_a_fixed_interval(peer: WsPeer) -> None:
    # The peer answers no pings but keeps talking: traffic alone keeps it alive.
    client = transport(ping_after=0.3, pong_timeout=0.2)
    async with session_with(peer, client) as (conn, server):
        await call(server.go_silent)
        for n in range(12):
            await call(server.send_text, f"frame {n}")
            assert await conn.receive() == f"frame {n}"
            await anyio.sleep(0.1)
        with anyio.fail_after(3), pytest.raises(PeerUnresponsive):
            await conn.receive()


async def test_slow_reader_is_not_mistaken_for_a_silent_peer(peer: WsPeer) -> None:
    client = transport(ping_after=0.2, pong_timeout=0.2)
    async with session_with(peer, client) as (conn, server):
        await call(server.send_text, "waiting for you")
        await anyio.sleep(1.0)  # the frame sits undelivered: nothing more is read
        assert await conn.receive() == "waiting for you"
        await call(server.send_text, "next")
        assert await conn.receive() == "next"


# --- endings ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [4001, 4401, 4409, 1000, 1001])
async def test_close_from_peer_is_connection_closed_with_its_code(peer: WsPeer, code: int) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.close, code, "because")
        with pytest.raises(ConnectionClosed) as closed:
            await conn.receive()
        assert (closed.value.code, closed.value.reason) == (code, "because")
        with pytest.raises(ConnectionClosed) as again:
            await conn.receive()
        assert again.value.code == code
        with pytest.raises(ConnectionClosed) as on_send:
            await conn.send("late")
        assert on_send.value.code == code


async def test_dropped_tcp_connection_is_connection_lost(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.drop)
        with pytest.raises(ConnectionLost) as lost:
            await conn.receive()
        assert not isinstance(lost.value, PeerUnresponsive)
        with pytest.raises(ConnectionLost):
            await conn.send("late")


async def test_peer_killed_and_restarted_on_the_same_port(peer: WsPeer) -> None:
    url = peer.url
    async with session_with(peer) as (conn, _):
        await call(peer.kill)
        with pytest.raises(ConnectionLost):
            await conn.receive()
    with pytest.raises(ConnectFailed):
        async with transport().connect(url, TOKEN):
            pytest.fail("connected to a killed peer")
    await call(peer.start)
    assert peer.url == url
    async with session_with(peer) as (conn, server):
        await conn.send("back")
        assert await call(server.receive) == "back"


async def test_peer_stop_closes_sessions_with_1001(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, _):
        await call(peer.stop)
        with pytest.raises(ConnectionClosed) as closed:
            await conn.receive()
        assert closed.value.code == 1001


async def test_close_sends_code_and_reason_and_never_raises(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        with anyio.fail_after(CLOSE_TIMEOUT + 2):
            await conn.close(1001, "shutting down")
        assert await call(server.wait_closed) == 1001
        assert server.close_reason == "shutting down"
        await conn.close(1000)
        with pytest.raises(ConnectionLost):
            await conn.send("after close")
        with pytest.raises(ConnectionLost):
            await conn.receive()


async def test_close_after_the_peer_vanished_does_not_raise(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.drop)
        with pytest.raises(ConnectionLost):
            await conn.receive()
        with anyio.fail_after(CLOSE_TIMEOUT + 2):
            await conn.close(1001)


async def test_close_to_a_silent_peer_is_bounded(peer: WsPeer) -> None:
    async with session_with(peer) as (conn, server):
        await call(server.go_silent)
        with anyio.fail_after(CLOSE_TIMEOUT + 2):
            await conn.close(1001)


async def test_errors_leave_connect_unwrapped(peer: WsPeer) -> None:
    with pytest.raises(ValueError, match="from the body"):
        async with session_with(peer):
            raise ValueError("from the body")

    async def closed_by_peer() -> None:
        async with session_with(peer) as (conn, server):
            await call(server.close, 4409)
            await conn.receive()

    with pytest.raises(ConnectionClosed) as closed:
        await closed_by_peer()
    assert closed.value.code == 4409


async def test_cancelling_the_body_cancels_cleanly(peer: WsPeer) -> None:
    with anyio.move_on_after(0.5) as scope:
        async with session_with(peer) as (conn, _):
            await conn.receive()
    assert scope.cancelled_caught


# --- TLS --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_wss_with_ca_file_works(certs: TestCertificates, host: str) -> None:
    with WsPeer(ssl_context=certs.server_context()) as peer:
        url = peer.url.replace("127.0.0.1", host)
        async with session_with(peer, transport(ca_file=certs.ca), url) as (conn, server):
            await conn.send("over tls")
            assert await call(server.receive) == "over tls"
            await call(server.send_text, "back")
            assert await conn.receive() == "back"


async def test_wss_without_the_ca_fails_verification(certs: TestCertificates) -> None:
    with WsPeer(ssl_context=certs.server_context()) as peer:
        for client in (transport(), transport(insecure=True)):
            with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
                async with client.connect(peer.url, TOKEN):
                    pytest.fail("connected")
        assert peer.no_session(within=0.1)


async def test_wss_to_a_name_not_in_the_certificate_fails(certs: TestCertificates) -> None:
    with (
        WsPeer(ssl_context=certs.server_context(), host="127.0.0.2") as peer,
        pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        async with transport(ca_file=certs.ca).connect(peer.url, TOKEN):
            pytest.fail("connected")


async def test_silent_peer_over_wss_is_detected_and_closing_is_bounded(
    certs: TestCertificates,
) -> None:
    client = transport(ca_file=certs.ca, ping_after=0.3, pong_timeout=0.2)
    with WsPeer(ssl_context=certs.server_context()) as peer, anyio.fail_after(CLOSE_TIMEOUT + 5):
        async with session_with(peer, client) as (conn, server):
            await call(server.go_silent)
            with pytest.raises(PeerUnresponsive):
                await conn.receive()
            await conn.close(1001)


def test_unusable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("missing.pem")):
        transport(ca_file=tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=re.escape("garbage.pem")):
        transport(ca_file=garbage)


# --- secrets ----------------------------------------------------------------------


def _texts(exc: BaseException) -> list[str]:
    """Every text an operator could see of ``exc``: messages, reprs, tracebacks, chains."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    stack = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        texts += [str(item), repr(item)]
        stack += [e for e in (item.__cause__, item.__context__) if e is not None]
        if isinstance(item, BaseExceptionGroup):
            stack += list(item.exceptions)
    return texts


async def test_credential_never_in_errors_or_log_records(
    peer: WsPeer, certs: TestCertificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []

    async def attempt(client: WebSocketTransport, url: str, script: str = "") -> None:
        try:
            async with client.connect(url, TOKEN) as conn:
                server = await call(peer.accept)
                if script == "close":
                    await call(server.close, 4401, "unauthorized")
                elif script == "drop":
                    await call(server.drop)
                elif script == "silent":
                    await call(server.go_silent)
                elif script == "oversize":
                    await call(server.send_text, "x" * (MAX_FRAME_BYTES + 1))
                await conn.send("hello")
                await conn.receive()
        except Exception as exc:
            errors.append(exc)

    quick = transport(ping_after=0.2, pong_timeout=0.2)
    for script in ("close", "drop", "silent", "oversize"):
        await attempt(quick, peer.url, script)
    peer.reject_with = 401
    await attempt(quick, peer.url)
    peer.reject_with = 500
    await attempt(quick, peer.url)
    await attempt(quick, f"ws://127.0.0.1:{free_port()}/v1/agent")
    with WsPeer(ssl_context=certs.server_context()) as tls_peer:
        await attempt(quick, tls_peer.url)

    assert len(errors) == 8
    kinds = {type(e) for e in errors}
    assert {ConnectionClosed, ConnectionLost, PeerUnresponsive, MessageTooLarge} <= kinds
    assert {Unauthorized, ConnectFailed} <= kinds
    for error in errors:
        for text in _texts(error):
            assert TOKEN not in text
    assert caplog.records, "debug logging was not captured"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in repr(record.args)
