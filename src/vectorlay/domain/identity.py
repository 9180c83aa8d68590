"""The node's saved identity (``node.json``)."""

from __future__ import annotations

import msgspec


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """What registration yields and every later start needs.

    Unknown keys in ``node.json`` are tolerated so that a newer agent's file
    still loads after a downgrade.
    """

    node_id: str
    node_token: str
    control_plane_url: str

    def __repr__(self) -> str:
        return (
            f"NodeConfig(node_id={self.node_id!r}, node_token=<redacted>, "
            f"control_plane_url={self.control_plane_url!r})"
        )
