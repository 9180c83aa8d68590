"""The command ledger: commands sent to nodes and not answered yet.

One command per node and replica: a later one replaces an earlier one.  An
answer clears only a command of its own kind, so a late deploy answer cannot
clear the stop that followed it.  Every command gets a sequence number, which
orders the re-sends when a node's session resumes.  The ledger also notes
what it changed, for the fleet's next batch of writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from vectorlay.domain.fleet.records import CommandKind, PendingCommand, ReplicaRecord
from vectorlay.domain.messages import Deploy, DeployPayload, Stop, StopPayload

Key = tuple[str, str]


class CommandLedger:
    def __init__(self, commands: Iterable[PendingCommand] = ()) -> None:
        self._commands: dict[Key, PendingCommand] = {}
        self._seq = 0
        self._put: dict[Key, PendingCommand] = {}
        self._deleted: set[Key] = set()
        for command in commands:
            self._commands[command.key] = command
            self._seq = max(self._seq, command.seq)

    def __contains__(self, key: Key) -> bool:
        return key in self._commands

    def get(self, node_id: str, replica_id: str) -> PendingCommand | None:
        return self._commands.get((node_id, replica_id))

    def awaits(self, node_id: str, replica_id: str, kind: CommandKind) -> bool:
        """Whether the node's unanswered command for the replica is of ``kind``."""
        command = self._commands.get((node_id, replica_id))
        return command is not None and command.kind is kind

    def pending(self, node_id: str | None = None) -> list[PendingCommand]:
        """Unanswered commands (of one node, or all), oldest first."""
        cmds = (c for c in self._commands.values() if node_id is None or c.node_id == node_id)
        return sorted(cmds, key=lambda c: c.seq)

    def record(self, node_id: str, replica_id: str, kind: CommandKind) -> PendingCommand:
        """A new unanswered command, replacing the node's earlier one for the replica."""
        self._seq += 1
        command = PendingCommand(node_id, replica_id, kind, self._seq)
        self._commands[command.key] = command
        self._put[command.key] = command
        self._deleted.discard(command.key)
        return command

    def clear(self, node_id: str, replica_id: str, kind: CommandKind) -> None:
        """Forget the node's command for the replica if it is of ``kind`` (answered, withdrawn)."""
        key = (node_id, replica_id)
        if not self.awaits(node_id, replica_id, kind):
            return
        del self._commands[key]
        self._put.pop(key, None)
        self._deleted.add(key)

    def take_changes(self) -> tuple[list[PendingCommand], list[Key]]:
        """Commands to write and keys to delete since the last call."""
        put = sorted(self._put.values(), key=lambda c: c.seq)
        deleted = sorted(self._deleted)
        self._put.clear()
        self._deleted.clear()
        return put, deleted


def message_for(command: PendingCommand, replica: ReplicaRecord | None) -> Deploy | Stop:
    """The frame that carries ``command``; a deploy needs its replica's record."""
    if command.kind is CommandKind.STOP:
        return Stop(StopPayload(command.replica_id))
    if replica is None:
        raise ValueError(f"deploy of unknown replica {command.replica_id}")
    return Deploy(
        DeployPayload(
            replica_id=replica.replica_id,
            image=replica.image,
            gpu_count=replica.gpu_count,
            env_vars=dict(replica.env_vars),
        )
    )
