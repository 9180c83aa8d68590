"""The WebSocket transport to the control plane, over httpx-ws.

:class:`WebSocketTransport` implements :class:`vectorlay.ports.Transport`::

    transport = WebSocketTransport(user_agent="vectorlay-agent/0.1.0", ca_file=None)
    async with transport.connect("wss://cp.example.com/v1/agent", node_token) as conn:
        await conn.send(text)
        frame = await conn.receive()

Every error of httpx, httpcore, httpx-ws, wsproto and anyio is translated
into :mod:`vectorlay.errors` (``failures``).  The credential goes in the
``Authorization`` header only: it never appears in an exception text or a
log record.

Modules: ``url`` (which URLs the agent may use), ``client`` (TLS, handshake,
``connect()``), ``connection`` (what the agent's code holds), ``session``
(the httpx-ws session: receive loop, keepalive, close), ``failures``.
"""

from vectorlay.adapters.transport.client import READ_CHUNK_BYTES, WebSocketTransport
from vectorlay.adapters.transport.connection import WebSocketConnection
from vectorlay.adapters.transport.session import CLOSE_TIMEOUT
from vectorlay.adapters.transport.url import check_url, is_loopback

__all__ = [
    "CLOSE_TIMEOUT",
    "READ_CHUNK_BYTES",
    "WebSocketConnection",
    "WebSocketTransport",
    "check_url",
    "is_loopback",
]
