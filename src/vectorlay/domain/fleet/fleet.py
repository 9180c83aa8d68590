"""The control plane's decisions about a fleet of nodes and their replicas.

Pure: no I/O, no clock reads.  Callers pass ``now`` (monotonic seconds) and
wall-clock stamps in; every method that creates work for a node returns the
:class:`Send` items to deliver now, and records what must be persisted, to be
collected with :meth:`Fleet.take_changes`.

Built on the shared domain: node status moves only through
:func:`vectorlay.domain.fleet.node.step`, liveness deadlines come from
:class:`~vectorlay.domain.agent.heartbeat.LivenessPolicy`, and a node's capacity is
its :func:`~vectorlay.domain.agent.replicas.assignable_slots`.

Rules (DESIGN.md section 6):

- Only ``online`` nodes with enough free assignable GPUs receive deploys.
- A replica holds ``gpu_count`` GPUs of its node while ``pending``,
  ``running`` or ``stopping``; ``exited``, ``failed`` and ``stopped`` free them.
- A node out of contact for ``offline_after`` seconds since its last frame
  loses its ``pending``/``running`` replicas to other online nodes (same
  replica id); with no room a replica waits, unplaced, until a node can take
  it.  When the old node comes back still running one that was placed
  elsewhere, it is sent a ``stop``; one still waiting stays where it runs
  (no stop, no deploy) if that node could take it as a deploy, and is
  stopped there otherwise.
- Commands not yet answered (one per node and replica: a later one replaces
  an earlier one) are re-sent when the node's session resumes; an answer
  clears only a command of its own kind.  A ``failed`` stop answers nothing:
  the container may still run, so the replica stays ``stopping`` (GPUs held,
  the agent's error kept) and the stop is sent again on the next session.
- ``system_info`` lists every replica the node manages.  A ``pending`` or
  ``running`` replica of the node missing from it, with no deploy still
  unanswered, is gone: it becomes ``failed`` ("not reported by node") and
  frees its GPUs.  Heartbeats list replicas too but are not used this way:
  the agent builds one while its deploys run, so it can trail the answers
  that follow it.
- A draining node becomes ``maintenance`` once no replica holds it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

import msgspec

from vectorlay.domain.agent.heartbeat import LivenessPolicy
from vectorlay.domain.agent.replicas import assignable_slots
from vectorlay.domain.fleet.node import Event, Node, Status, accepts_deploys, step
from vectorlay.domain.messages import (
    Dependency,
    Deploy,
    DeployPayload,
    Gpu,
    Hardware,
    RegisterPayload,
    ReplicaReport,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopPayload,
    SystemInfoPayload,
)
from vectorlay.domain.redact import redact_text
from vectorlay.errors import VectorlayError

# --- errors ------------------------------------------------------------------


class FleetError(VectorlayError):
    """An operator request the fleet cannot carry out."""


class UnknownNode(FleetError):
    pass


class UnknownReplica(FleetError):
    pass


class ReplicaExists(FleetError):
    pass


class NoCapacity(FleetError):
    """No online node has enough free GPUs."""


class WrongNode(FleetError):
    """A session claimed a node id its credential does not belong to."""


# --- records -----------------------------------------------------------------


class ReplicaPhase(enum.StrEnum):
    """A replica as the control plane tracks it (the wire statuses plus ``stopping``)."""

    PENDING = "pending"
    RUNNING = "running"
    EXITED = "exited"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


HOLDS_GPUS: Final = frozenset({ReplicaPhase.PENDING, ReplicaPhase.RUNNING, ReplicaPhase.STOPPING})
MOVABLE: Final = frozenset({ReplicaPhase.PENDING, ReplicaPhase.RUNNING})
_LIVE_REPORT: Final = frozenset({ReplicaStatus.PENDING, ReplicaStatus.RUNNING})
NOT_REPORTED: Final = "not reported by node"
STOP_FAILED: Final = "stop failed"


class CommandKind(enum.StrEnum):
    DEPLOY = "deploy"
    STOP = "stop"


class NodeRecord(msgspec.Struct, frozen=True):
    node_id: str
    state: Node = Node()
    agent_version: str = ""
    hardware: Hardware | None = None
    dependencies: list[Dependency] = []
    ready: bool = False
    registered_at: datetime | None = None
    last_seen: datetime | None = None

    @property
    def gpus(self) -> list[Gpu]:
        return list(self.hardware.gpus) if self.hardware is not None else []

    @property
    def hostname(self) -> str:
        return self.hardware.hostname if self.hardware is not None else ""

    @property
    def status(self) -> Status:
        return self.state.status


class ReplicaRecord(msgspec.Struct, frozen=True):
    replica_id: str
    image: str
    gpu_count: int = 0
    env_vars: dict[str, str] = {}
    node_id: str | None = None
    status: ReplicaPhase = ReplicaPhase.PENDING
    error: str | None = None

    def __repr__(self) -> str:
        # Env values are secrets; a repr may end up in a log or a traceback.
        return (
            f"ReplicaRecord(replica_id={self.replica_id!r}, image={self.image!r}, "
            f"gpu_count={self.gpu_count}, env_vars=<{len(self.env_vars)} redacted>, "
            f"node_id={self.node_id!r}, status={self.status.value!r})"
        )


class PendingCommand(msgspec.Struct, frozen=True):
    """A command sent (or to be sent) to a node and not answered yet."""

    node_id: str
    replica_id: str
    kind: CommandKind
    seq: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.node_id, self.replica_id)


class FleetSnapshot(msgspec.Struct, frozen=True):
    """Everything a store keeps; what a restarted control plane starts from."""

    nodes: list[NodeRecord] = []
    replicas: list[ReplicaRecord] = []
    commands: list[PendingCommand] = []


class FleetChanges(msgspec.Struct, frozen=True):
    """What to write since the last :meth:`Fleet.take_changes` (current values)."""

    nodes: list[NodeRecord] = []
    replicas: list[ReplicaRecord] = []
    commands_put: list[PendingCommand] = []
    commands_deleted: list[tuple[str, str]] = []

    @property
    def empty(self) -> bool:
        return not (self.nodes or self.replicas or self.commands_put or self.commands_deleted)


class Send(msgspec.Struct, frozen=True):
    """Deliver ``message`` to the node's open session now."""

    node_id: str
    message: Deploy | Stop


class Move(msgspec.Struct, frozen=True):
    """A replica taken from a node out of contact; ``to_node`` ``None``: waiting for room."""

    replica_id: str
    from_node: str
    to_node: str | None


def agent_error(replica: ReplicaRecord, result: ResultPayload) -> str | None:
    """The agent's error text as kept and shown: never with one of the replica's env values.

    A runtime that echoes a value into its error must not make the API, the
    status page or a log line show it.
    """
    return redact_text(result.error, replica.env_vars.values()) if result.error else None


def phase_of(status: ReplicaStatus) -> ReplicaPhase:
    return ReplicaPhase(status.value)


# --- the fleet ---------------------------------------------------------------


class Fleet:
    """Nodes, replicas and unanswered commands, with every decision about them.

    ``now`` is the monotonic time of construction: nodes loaded from a
    snapshot start offline and count as last heard from then, so a node gets
    ``offline_after`` seconds to reconnect after a control-plane restart
    before its replicas move.
    """

    def __init__(
        self,
        policy: LivenessPolicy,
        snapshot: FleetSnapshot | None = None,
        *,
        now: float,
    ) -> None:
        self.policy = policy
        self._nodes: dict[str, NodeRecord] = {}
        self._replicas: dict[str, ReplicaRecord] = {}
        self._by_node: dict[str, set[str]] = {}
        self._waiting: set[str] = set()
        self._commands: dict[tuple[str, str], PendingCommand] = {}
        self._last_frame: dict[str, float] = {}
        self._connected: set[str] = set()
        self._seq = 0
        self._dirty_nodes: set[str] = set()
        self._dirty_replicas: set[str] = set()
        self._put: dict[tuple[str, str], PendingCommand] = {}
        self._deleted: set[tuple[str, str]] = set()
        if snapshot is not None:
            self._load(snapshot, now)

    def _load(self, snapshot: FleetSnapshot, now: float) -> None:
        for record in snapshot.nodes:
            if record.state.status is not Status.OFFLINE:
                record = msgspec.structs.replace(record, state=step(record.state, Event.DISCONNECT))
                self._dirty_nodes.add(record.node_id)
            self._nodes[record.node_id] = record
            self._last_frame[record.node_id] = now
        for replica in snapshot.replicas:
            self._store_replica(replica)
        for command in snapshot.commands:
            self._commands[command.key] = command
            self._seq = max(self._seq, command.seq)

    # --- queries -------------------------------------------------------------

    def node(self, node_id: str) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def nodes(self) -> list[NodeRecord]:
        return [self._nodes[k] for k in sorted(self._nodes)]

    def replica(self, replica_id: str) -> ReplicaRecord | None:
        return self._replicas.get(replica_id)

    def replicas(self) -> list[ReplicaRecord]:
        return [self._replicas[k] for k in sorted(self._replicas)]

    def replicas_on(self, node_id: str) -> list[ReplicaRecord]:
        return [self._replicas[r] for r in sorted(self._by_node.get(node_id, ()))]

    def is_connected(self, node_id: str) -> bool:
        return node_id in self._connected

    def gpus_free(self, node_id: str) -> int:
        node = self._nodes.get(node_id)
        if node is None:
            return 0
        held = sum(
            self._replicas[r].gpu_count
            for r in self._by_node.get(node_id, ())
            if self._replicas[r].status in HOLDS_GPUS
        )
        return max(0, len(assignable_slots(node.gpus)) - held)

    def pending_commands(self, node_id: str | None = None) -> list[PendingCommand]:
        cmds = (c for c in self._commands.values() if node_id is None or c.node_id == node_id)
        return sorted(cmds, key=lambda c: c.seq)

    def liveness_deadline(self, node_id: str) -> float:
        """When the node counts as out of contact, given its last frame."""
        return self.policy.deadline(self._last_frame[node_id])

    def message_for(self, command: PendingCommand) -> Deploy | Stop:
        if command.kind is CommandKind.STOP:
            return Stop(StopPayload(command.replica_id))
        replica = self._replicas[command.replica_id]
        return Deploy(
            DeployPayload(
                replica_id=replica.replica_id,
                image=replica.image,
                gpu_count=replica.gpu_count,
                env_vars=dict(replica.env_vars),
            )
        )

    # --- agent sessions --------------------------------------------------------

    def register(
        self, node_id: str, payload: RegisterPayload, *, now: float, wall: datetime
    ) -> NodeRecord:
        """A new node from a ``register`` message; it stays offline until its session starts."""
        if node_id in self._nodes:
            raise ValueError(f"node id {node_id} already exists")
        record = NodeRecord(
            node_id=node_id,
            agent_version=payload.agent_version,
            hardware=payload.hardware,
            dependencies=list(payload.dependencies),
            ready=all(d.ok for d in payload.dependencies),
            registered_at=wall,
            last_seen=wall,
        )
        self._nodes[node_id] = record
        self._last_frame[node_id] = now
        self._dirty_nodes.add(node_id)
        return record

    def touch(self, node_id: str, *, now: float, wall: datetime) -> None:
        """A frame arrived from the node: its liveness deadline moves on.

        Not persisted by itself (it happens for every frame); the stamp is
        written along with the node's next persisted change.
        """
        self._last_frame[node_id] = now
        node = self._nodes.get(node_id)
        if node is not None:
            self._nodes[node_id] = msgspec.structs.replace(node, last_seen=wall)

    def session_started(
        self, node_id: str, info: SystemInfoPayload, *, now: float, wall: datetime
    ) -> list[Send]:
        """``system_info`` opened (or reopened) the node's session.

        Returns every unanswered command for the node (oldest first), then
        any deploys newly placed now that the node may take them.
        """
        node = self._require_node(node_id)
        if info.node_id != node_id:
            raise WrongNode(f"system_info names node {info.node_id!r}, not this session's node")
        state = node.state
        if state.status is not Status.OFFLINE:
            state = step(state, Event.DISCONNECT)  # a newer session replaced the old one
        state = step(state, Event.CONNECT)
        state = step(state, Event.DEPS_OK if info.ready else Event.DEPS_FAILED)
        self._set_node(
            msgspec.structs.replace(
                node,
                state=state,
                agent_version=info.agent_version,
                hardware=info.hardware,
                dependencies=list(info.dependencies),
                ready=info.ready,
                last_seen=wall,
            )
        )
        self._last_frame[node_id] = now
        self._connected.discard(node_id)  # commands from _observe are sent below with the rest
        self._observe(node_id, info.replicas)
        self._fail_unreported(node_id, info.replicas)
        self._settle(node_id)
        self._connected.add(node_id)
        sends = [Send(node_id, self.message_for(c)) for c in self.pending_commands(node_id)]
        return sends + self._place_waiting()

    def heartbeat(self, node_id: str, containers: Sequence[ReplicaReport]) -> list[Send]:
        if node_id not in self._connected:
            return []
        sends = self._observe(node_id, containers)
        self._settle(node_id)
        return sends + self._place_waiting()

    def deploy_result(self, node_id: str, result: ResultPayload) -> list[Send]:
        self._answered(node_id, result.replica_id, CommandKind.DEPLOY)
        replica = self._replicas.get(result.replica_id)
        if replica is None:
            return []
        if replica.node_id != node_id:
            sends = self._stop_duplicate(node_id, result.replica_id, result.status)
            return sends
        if replica.status not in (ReplicaPhase.STOPPING, ReplicaPhase.STOPPED):
            self._set_replica(
                msgspec.structs.replace(
                    replica, status=phase_of(result.status), error=agent_error(replica, result)
                )
            )
        self._settle(node_id)
        return self._place_waiting()

    def stop_result(self, node_id: str, result: ResultPayload) -> list[Send]:
        if result.status is ReplicaStatus.FAILED:
            return self._stop_failed(node_id, result)
        self._answered(node_id, result.replica_id, CommandKind.STOP)
        replica = self._replicas.get(result.replica_id)
        if replica is None or replica.node_id != node_id:
            return []
        if replica.status is ReplicaPhase.STOPPING:
            self._set_replica(
                msgspec.structs.replace(
                    replica, status=phase_of(result.status), error=agent_error(replica, result)
                )
            )
        self._settle(node_id)
        return self._place_waiting()

    def disconnect(self, node_id: str) -> bool:
        """The node's session ended (socket closed or liveness deadline passed).

        The last-frame time is left as it was: rescheduling counts from the
        last frame, not from the moment the socket closed.  Returns whether
        the node was connected.
        """
        if node_id not in self._connected:
            return False
        self._connected.discard(node_id)
        node = self._nodes[node_id]
        self._set_node(msgspec.structs.replace(node, state=step(node.state, Event.DISCONNECT)))
        return True

    # --- time --------------------------------------------------------------------

    def next_reschedule_at(self) -> float | None:
        """The earliest moment a disconnected node's replicas are due to move."""
        due = [
            self.liveness_deadline(node_id)
            for node_id in self._nodes
            if node_id not in self._connected and self._movable_on(node_id)
        ]
        return min(due, default=None)

    def reschedule_due(self, now: float) -> tuple[list[Move], list[Send]]:
        """Move the replicas of every node out of contact for ``offline_after``."""
        moves: list[Move] = []
        sends: list[Send] = []
        for node_id in sorted(self._nodes):
            if node_id in self._connected:
                continue
            if not self.policy.is_offline(self._last_frame[node_id], now):
                continue
            for replica_id in self._movable_on(node_id):
                move, send = self._move(replica_id, node_id)
                moves.append(move)
                sends.extend(send)
        return moves, sends

    # --- operator ------------------------------------------------------------------

    def deploy(self, payload: DeployPayload) -> tuple[ReplicaRecord, list[Send]]:
        """Place a new replica on an online node with enough free GPUs."""
        if payload.replica_id in self._replicas:
            raise ReplicaExists(f"replica_id: replica {payload.replica_id} already exists")
        target = self.pick_node(payload.gpu_count)
        if target is None:
            wanted = payload.gpu_count
            raise NoCapacity(
                f"gpu_count: no online node has {wanted} free GPU{'' if wanted == 1 else 's'}"
                if wanted
                else "no online node takes deploys now (every node is offline, degraded, "
                "draining or in maintenance)"
            )
        replica = ReplicaRecord(
            replica_id=payload.replica_id,
            image=payload.image,
            gpu_count=payload.gpu_count,
            env_vars=dict(payload.env_vars),
            node_id=target,
        )
        self._set_replica(replica)
        sends = self._command(target, replica.replica_id, CommandKind.DEPLOY)
        return replica, sends

    def stop(self, replica_id: str) -> tuple[ReplicaRecord, list[Send]]:
        """Stop a replica; on an offline node the stop waits for its return."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            raise UnknownReplica(f"replica {replica_id} not found")
        if replica.status is ReplicaPhase.STOPPED:
            return replica, []
        node_id = replica.node_id
        if node_id is None:
            replica = msgspec.structs.replace(replica, status=ReplicaPhase.STOPPED, error=None)
            self._set_replica(replica)
            return replica, []
        replica = msgspec.structs.replace(replica, status=ReplicaPhase.STOPPING, error=None)
        self._set_replica(replica)
        return replica, self._command(node_id, replica_id, CommandKind.STOP)

    def drain(self, node_id: str) -> tuple[NodeRecord, list[Send]]:
        return self._operator(node_id, Event.DRAIN)

    def maintenance(self, node_id: str) -> tuple[NodeRecord, list[Send]]:
        return self._operator(node_id, Event.MAINTENANCE)

    def resume(self, node_id: str) -> tuple[NodeRecord, list[Send]]:
        return self._operator(node_id, Event.RESUME)

    def pick_node(self, gpu_count: int, exclude: Iterable[str] = ()) -> str | None:
        """The online node to place a replica on: most free GPUs, then fewest replicas."""
        skip = set(exclude)
        best: tuple[int, int, str] | None = None
        for node_id in self._connected:
            if node_id in skip:
                continue
            free = self._room_for(node_id, gpu_count)
            if free is None:
                continue
            key = (-free, self._load_of(node_id), node_id)
            if best is None or key < best:
                best = key
        return best[2] if best is not None else None

    # --- persistence -----------------------------------------------------------------

    def take_changes(self) -> FleetChanges:
        changes = FleetChanges(
            nodes=[self._nodes[n] for n in sorted(self._dirty_nodes)],
            replicas=[self._replicas[r] for r in sorted(self._dirty_replicas)],
            commands_put=sorted(self._put.values(), key=lambda c: c.seq),
            commands_deleted=sorted(self._deleted),
        )
        self._dirty_nodes.clear()
        self._dirty_replicas.clear()
        self._put.clear()
        self._deleted.clear()
        return changes

    # --- internals -------------------------------------------------------------------

    def _require_node(self, node_id: str) -> NodeRecord:
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"node {node_id} not found")
        return node

    def _operator(self, node_id: str, event: Event) -> tuple[NodeRecord, list[Send]]:
        node = self._require_node(node_id)
        self._set_node(msgspec.structs.replace(node, state=step(node.state, event)))
        self._settle(node_id)
        sends = self._place_waiting()
        return self._nodes[node_id], sends

    def _set_node(self, record: NodeRecord) -> None:
        self._nodes[record.node_id] = record
        self._dirty_nodes.add(record.node_id)

    def _store_replica(self, replica: ReplicaRecord) -> None:
        old = self._replicas.get(replica.replica_id)
        if old is not None and old.node_id is not None and old.node_id != replica.node_id:
            self._by_node.get(old.node_id, set()).discard(replica.replica_id)
        self._replicas[replica.replica_id] = replica
        if replica.node_id is not None:
            self._by_node.setdefault(replica.node_id, set()).add(replica.replica_id)
        if replica.node_id is None and replica.status is ReplicaPhase.PENDING:
            self._waiting.add(replica.replica_id)
        else:
            self._waiting.discard(replica.replica_id)

    def _set_replica(self, replica: ReplicaRecord) -> None:
        self._store_replica(replica)
        self._dirty_replicas.add(replica.replica_id)

    def _load_of(self, node_id: str) -> int:
        return sum(
            1 for r in self._by_node.get(node_id, ()) if self._replicas[r].status in HOLDS_GPUS
        )

    def _movable_on(self, node_id: str) -> list[str]:
        return sorted(
            r for r in self._by_node.get(node_id, ()) if self._replicas[r].status in MOVABLE
        )

    def _command(self, node_id: str, replica_id: str, kind: CommandKind) -> list[Send]:
        """Record an unanswered command (replacing the node's earlier one for the replica)."""
        self._seq += 1
        command = PendingCommand(node_id, replica_id, kind, self._seq)
        self._commands[command.key] = command
        self._put[command.key] = command
        self._deleted.discard(command.key)
        if node_id in self._connected:
            return [Send(node_id, self.message_for(command))]
        return []

    def _answered(self, node_id: str, replica_id: str, kind: CommandKind) -> None:
        key = (node_id, replica_id)
        command = self._commands.get(key)
        if command is None or command.kind is not kind:
            return
        del self._commands[key]
        self._put.pop(key, None)
        self._deleted.add(key)

    def _observe(self, node_id: str, reports: Sequence[ReplicaReport]) -> list[Send]:
        """Take the statuses a node reports for its replicas; stop copies it should not run."""
        sends: list[Send] = []
        for report in reports:
            replica = self._replicas.get(report.replica_id)
            if replica is None:
                continue  # not a replica this control plane knows: leave it alone
            if self._reattach(node_id, replica, report.status):
                continue
            if replica.node_id != node_id or replica.status is ReplicaPhase.STOPPED:
                sends.extend(self._stop_duplicate(node_id, report.replica_id, report.status))
                continue
            status = phase_of(report.status)
            if replica.status is ReplicaPhase.STOPPING and status is not ReplicaPhase.STOPPED:
                continue  # the stop's answer decides
            if status is not replica.status:
                self._set_replica(msgspec.structs.replace(replica, status=status))
        return sends

    def _stop_failed(self, node_id: str, result: ResultPayload) -> list[Send]:
        """The agent could not stop it: the container may still run.

        The stop stays unanswered (re-sent on the node's next session, or at
        once by another ``DELETE``) and the replica keeps its GPUs.
        """
        replica = self._replicas.get(result.replica_id)
        if replica is None or replica.node_id != node_id:
            return []
        if replica.status is ReplicaPhase.STOPPING:
            error = agent_error(replica, result) or STOP_FAILED
            self._set_replica(msgspec.structs.replace(replica, error=error))
        return []

    def _fail_unreported(self, node_id: str, reports: Sequence[ReplicaReport]) -> None:
        """Replicas the node's complete list leaves out are gone from it."""
        reported = {r.replica_id for r in reports}
        for replica_id in self._movable_on(node_id):
            if replica_id in reported:
                continue
            pending = self._commands.get((node_id, replica_id))
            if pending is not None and pending.kind is CommandKind.DEPLOY:
                continue  # not started yet, or its answer is still on the way
            replica = self._replicas[replica_id]
            self._set_replica(
                msgspec.structs.replace(replica, status=ReplicaPhase.FAILED, error=NOT_REPORTED)
            )

    def _reattach(self, node_id: str, replica: ReplicaRecord, status: ReplicaStatus) -> bool:
        """A replica waiting for room that the node still runs stays there, if it may.

        Stopping it there to deploy it again (there or elsewhere) would
        restart the workload for nothing.  The node must be able to take it
        as a deploy (status, free GPUs); otherwise it is a duplicate.
        """
        if replica.replica_id not in self._waiting or status not in _LIVE_REPORT:
            return False
        if (node_id, replica.replica_id) in self._commands:
            # A stop sent while the replica lived elsewhere may already be on
            # its way to the agent: this copy is going, so it is not one to keep.
            return False
        if self._room_for(node_id, replica.gpu_count) is None:
            return False
        self._set_replica(
            msgspec.structs.replace(replica, node_id=node_id, status=phase_of(status), error=None)
        )
        return True

    def _room_for(self, node_id: str, gpu_count: int) -> int | None:
        """The node's free GPUs if it may take a replica of ``gpu_count``, else ``None``.

        The placement rule, connection aside: the node takes deploys and
        has the GPUs free.
        """
        node = self._nodes.get(node_id)
        if node is None or not accepts_deploys(node.state):
            return None
        free = self.gpus_free(node_id)
        return free if free >= gpu_count else None

    def _stop_duplicate(self, node_id: str, replica_id: str, status: ReplicaStatus) -> list[Send]:
        """The node runs a copy it should not (moved away or stopped): stop it once."""
        if status not in _LIVE_REPORT:
            return []
        pending = self._commands.get((node_id, replica_id))
        if pending is not None and pending.kind is CommandKind.STOP:
            return []
        return self._command(node_id, replica_id, CommandKind.STOP)

    def _settle(self, node_id: str) -> None:
        """A draining node with nothing left on it goes to maintenance."""
        node = self._nodes[node_id]
        if node.state.status is Status.DRAINING and self._load_of(node_id) == 0:
            self._set_node(
                msgspec.structs.replace(node, state=step(node.state, Event.REPLICAS_GONE))
            )

    def _move(self, replica_id: str, from_node: str) -> tuple[Move, list[Send]]:
        replica = self._replicas[replica_id]
        key = (from_node, replica_id)
        pending = self._commands.get(key)
        if pending is not None and pending.kind is CommandKind.DEPLOY:
            # The old node must not start it on return; if it already runs
            # it, its report gets it stopped.
            del self._commands[key]
            self._put.pop(key, None)
            self._deleted.add(key)
        # Detach first so the old node's GPUs do not count against the choice.
        self._set_replica(
            msgspec.structs.replace(replica, node_id=None, status=ReplicaPhase.PENDING, error=None)
        )
        target = self.pick_node(replica.gpu_count, exclude=[from_node])
        if target is None:
            return Move(replica_id, from_node, None), []
        self._set_replica(msgspec.structs.replace(self._replicas[replica_id], node_id=target))
        return Move(replica_id, from_node, target), self._command(
            target, replica_id, CommandKind.DEPLOY
        )

    def _place_waiting(self) -> list[Send]:
        """Give waiting replicas (moved with no room) to nodes that can take them now."""
        if not self._waiting:
            return []
        sends: list[Send] = []
        for replica_id in sorted(self._waiting):
            replica = self._replicas[replica_id]
            target = self.pick_node(replica.gpu_count)
            if target is None:
                continue
            self._set_replica(msgspec.structs.replace(replica, node_id=target))
            sends.extend(self._command(target, replica_id, CommandKind.DEPLOY))
        return sends


__all__ = [
    "HOLDS_GPUS",
    "MOVABLE",
    "CommandKind",
    "Fleet",
    "FleetChanges",
    "FleetError",
    "FleetSnapshot",
    "Move",
    "NoCapacity",
    "NodeRecord",
    "PendingCommand",
    "ReplicaExists",
    "ReplicaPhase",
    "ReplicaRecord",
    "Send",
    "UnknownNode",
    "UnknownReplica",
    "WrongNode",
]
