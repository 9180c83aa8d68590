"""Out-of-memory kills the event stream reported, for engines whose inspect does not.

nerdctl's ``inspect`` never says a container was OOM-killed; containerd's
``/tasks/oom`` event is the only word of it, and it may come before or after
the exit.  The runtime notes each one here and marks the ended containers it
lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from vectorlay.adapters.runtime.output import Listed
from vectorlay.domain.messages import ReplicaStatus

# Containers with an OOM kill on record; bounded so a churning host cannot grow it.
OOM_MEMORY: Final = 4096


class OomKills:
    """Container ids with an OOM kill on record, oldest first, at most ``limit``."""

    def __init__(self, limit: int = OOM_MEMORY) -> None:
        self._limit = limit
        self._ids: dict[str, None] = {}

    def note(self, container_id: str) -> None:
        self._ids.pop(container_id, None)
        self._ids[container_id] = None
        while len(self._ids) > self._limit:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._ids

    def mark(self, listed: Iterable[Listed]) -> list[Listed]:
        """``listed`` with every ended container on record marked ``oom_killed``."""
        out = []
        for item in listed:
            if item.container_id in self._ids and item.state.status is not ReplicaStatus.RUNNING:
                item = Listed(
                    item.container_id,
                    item.name,
                    msgspec.structs.replace(item.state, oom_killed=True),
                )
            out.append(item)
        return out


__all__ = ["OOM_MEMORY", "OomKills"]
