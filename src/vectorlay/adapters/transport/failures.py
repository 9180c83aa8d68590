"""Errors of the libraries under the transport, translated into :mod:`vectorlay.errors`.

A single error leaves ``connect()`` bare, not wrapped in the
``ExceptionGroup`` that the task group of httpx-ws would put around it.
"""

from __future__ import annotations

from typing import Final

import anyio
import httpcore
import httpx
from httpx_ws import HTTPXWSException, WebSocketUpgradeError
from wsproto.utilities import LocalProtocolError

from vectorlay.errors import (
    ConnectFailed,
    ConnectionLost,
    TransportError,
    Unauthorized,
    VectorlayError,
)

# What the libraries under this adapter raise when the network, TLS or the
# peer misbehaves.  Anything else (our own errors, cancellation, bugs) passes
# through untouched.  Once a session is open, only errors that can come from
# nowhere but these libraries are translated: an OSError or TimeoutError
# leaving the body of ``connect()`` belongs to the caller.
LIBRARY_ERRORS: Final = (
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


def translate(exc: BaseException, *, entered: bool, where: str, credential: str) -> BaseException:
    """The error to raise from ``connect()`` for ``exc``; ``exc`` itself to re-raise it."""
    leaf = _unwrap(exc)
    ours = _SESSION_LIBRARY_ERRORS if entered else LIBRARY_ERRORS
    if isinstance(leaf, VectorlayError) or not isinstance(leaf, ours):
        return leaf
    if isinstance(leaf, WebSocketUpgradeError):
        # from None: the response holds the request, and the request our credential.
        status = leaf.response.status_code
        if status in (401, 403):
            return _no_cause(Unauthorized(f"{where} refused the credential (HTTP {status})"))
        return _no_cause(ConnectFailed(f"{where} refused the WebSocket upgrade (HTTP {status})"))
    detail = describe(leaf).replace(credential, "<redacted>")
    if entered:
        error: TransportError = ConnectionLost(f"connection to {where} lost: {detail}")
    elif isinstance(leaf, httpx.TimeoutException):
        error = ConnectFailed(f"timed out connecting to {where}: {detail}")
    else:
        error = ConnectFailed(f"cannot connect to {where}: {detail}")
    error.__cause__ = leaf
    return error


def describe(exc: BaseException) -> str:
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
