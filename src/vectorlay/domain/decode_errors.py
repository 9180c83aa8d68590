"""Readable errors for frames that fail to decode: ``<type>.<field path>: <problem>``.

msgspec reports a validation failure as one text, ``Expected `int`, got
`str` - at `$.payload.gpu_count```; it has no structured form.  This module
is the one place that reads that wording, and falls back to the whole text
(under ``message:``) when it does not match, so a msgspec release that words
things differently degrades the message, never the decoding.  A unit test
pins the wording of the installed msgspec so such a change is noticed.

It also peeks at a frame that failed, to keep what is readable: the message
type, the ``replica_id`` (so a broken deploy still gets its ``deploy_result``)
and the name (never the value) of an env var whose value is not a string.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from vectorlay.errors import InvalidMessage, ProtocolError, UnknownMessageType

_AT_PATH: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING: Final = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def explain_validation_error(raw: str, data: bytes | str, known: frozenset[str]) -> ProtocolError:
    """Turn msgspec's text into ``<type>.<path>: <problem>`` plus what is readable."""
    peek = _peek(data)
    mtype, replica_id = peek.mtype, peek.replica_id
    match = _AT_PATH.match(raw)
    what = match.group("what") if match else raw
    path = (match.group("path") if match else None) or ""
    if path.startswith(_ENV_VALUE_PATH) and peek.bad_env_name is not None:
        # msgspec names a dict value only as "[...]"; the contract names the
        # variable (never its value).
        path = f".payload.env_vars.{peek.bad_env_name}{path[len(_ENV_VALUE_PATH) :]}"
    missing = _MISSING.match(what)
    if missing:
        path = f"{path}.{missing.group('field')}"
        problem = "missing required field"
    else:
        problem = what.replace("`", "")
        problem = problem[:1].lower() + problem[1:]
    if path == ".type":
        if mtype is None:
            return InvalidMessage("message.type: missing or not a string", replica_id=replica_id)
        if mtype not in known:
            return UnknownMessageType(
                f"message.type: unknown message type {_clip(mtype)!r}", message_type=mtype
            )
        # A known type that still fails on "type" (a repeated key): the tag
        # itself is at fault, not a field of that message.
        return InvalidMessage(
            f"message.type: {first_line(problem)}", message_type=mtype, replica_id=replica_id
        )
    prefix = mtype if mtype in known else "message"
    where = f"{prefix}{path}" if path else prefix
    return InvalidMessage(
        f"{where}: {first_line(problem)}", message_type=mtype, replica_id=replica_id
    )


_ENV_VALUE_PATH: Final = ".payload.env_vars[...]"
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _PeekPayload(msgspec.Struct):
    replica_id: Any = None
    env_vars: msgspec.Raw = msgspec.Raw(b"null")


class _Peek(msgspec.Struct):
    type: Any = None
    # Raw: the payload is only scanned, so a bad value elsewhere in it (a
    # number out of range, say) does not hide the replica id.
    payload: msgspec.Raw = msgspec.Raw(b"null")


class _Peeked(msgspec.Struct, frozen=True):
    mtype: str | None = None
    replica_id: str | None = None
    bad_env_name: str | None = None


_UNREADABLE: Final = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError)


def _peek(data: bytes | str) -> _Peeked:
    """Best-effort read of ``type``, ``payload.replica_id`` and a bad env name."""
    try:
        peek = msgspec.json.decode(data, type=_Peek)
    except _UNREADABLE:
        return _Peeked()
    mtype = peek.type if isinstance(peek.type, str) else None
    try:
        payload = msgspec.json.decode(peek.payload, type=_PeekPayload)
    except _UNREADABLE:
        return _Peeked(mtype)
    replica_id = payload.replica_id if isinstance(payload.replica_id, str) else None
    return _Peeked(mtype, replica_id, _first_non_string(payload.env_vars))


def _first_non_string(env_vars: msgspec.Raw) -> str | None:
    """The first env var (a well-formed name) whose value is not a JSON string."""
    try:
        env = msgspec.json.decode(env_vars, type=dict[str, msgspec.Raw])
    except _UNREADABLE:
        return None
    for name, raw in env.items():
        if not bytes(raw).startswith(b'"'):
            return name if _ENV_NAME.fullmatch(name) else None
    return None


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def first_line(text: str) -> str:
    return _clip(text.strip().splitlines()[0] if text.strip() else "", 200)


__all__ = ["explain_validation_error", "first_line"]
