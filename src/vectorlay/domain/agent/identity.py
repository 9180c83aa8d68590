"""The node's identity: its saved form (``node.json``) and what makes a value usable in it."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from vectorlay.domain.redact import redacted_items, redacted_repr

MAX_REGISTERED_CHARS: Final = 4096
"""The longest node id or node token the agent accepts from a registration."""


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """What registration yields and every later start needs.

    Unknown keys in ``node.json`` are tolerated so that a newer agent's file
    still loads after a downgrade.
    """

    node_id: str
    node_token: str
    control_plane_url: str

    def __repr__(self) -> str:
        return redacted_repr(self, _SECRET)

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return redacted_items(self, _SECRET)


_SECRET = frozenset({"node_token"})


def identity_problem(name: str, value: str, *, max_chars: int | None = None) -> str | None:
    """Why ``value`` (called ``name`` in the answer) cannot serve as a node id or credential.

    ``None`` when it can.  Credentials travel in an HTTP header and node ids
    and tokens in ``node.json``, where empty or non-printable text would only
    fail later: at the handshake with an error quoting the whole header, that
    is the secret, or at the next start.  The answer never quotes ``value``.
    """
    if not value:
        return f"{name} is empty"
    if max_chars is not None and len(value) > max_chars:
        return f"{name} is longer than {max_chars} characters"
    if not all("\x21" <= ch <= "\x7e" for ch in value):
        return f"{name} has characters outside visible ASCII, which an HTTP header cannot carry"
    return None
