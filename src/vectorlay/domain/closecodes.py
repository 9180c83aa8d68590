"""WebSocket close codes of the protocol, as both ends send and read them.

``docs/protocol.md`` (Sessions) lists them with what the agent does on each.
"""

from __future__ import annotations

from typing import Final

CLOSE_GOING_AWAY: Final = 1001
"""RFC 6455: the sender is shutting down (the agent on SIGTERM, the control plane on stop)."""

CLOSE_HEARTBEAT_TIMEOUT: Final = 4001
"""The control plane heard nothing from the node within its liveness deadline."""

CLOSE_UNAUTHORIZED: Final = 4401
"""The control plane refused the credential."""

CLOSE_SESSION_CONFLICT: Final = 4409
"""A newer session for the same node took over."""
