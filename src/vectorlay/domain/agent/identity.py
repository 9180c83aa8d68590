"""The node's saved identity (``node.json``)."""

from __future__ import annotations

from typing import Any

import msgspec

from vectorlay.domain.redact import redacted_items, redacted_repr


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
