"""The control plane's decisions about a fleet of nodes and their replicas.

Pure: no I/O, no clock reads.  Callers pass ``now`` (monotonic seconds) and
wall-clock stamps in; every method that creates work for a node returns the
:class:`~vectorlay.domain.fleet.records.Send` items to deliver now, and
records what must be persisted, to be collected with :meth:`Fleet.take_changes`.
The rules are listed in :mod:`vectorlay.domain.fleet`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from vectorlay.domain.fleet import placement, refusals
from vectorlay.domain.fleet.commands import CommandLedger, message_for
from vectorlay.domain.fleet.inventory import Inventory
from vectorlay.domain.fleet.node import Event, Status, step
from vectorlay.domain.fleet.records import (
    LIVE_REPORT,
    STOP_FAILED,
    CommandKind,
    FleetChanges,
    FleetSnapshot,
    Move,
    NodeRecord,
    PendingCommand,
    ReplicaPhase,
    ReplicaRecord,
    Send,
    agent_error,
    connected,
    held_gpus,
    phase_of,
    reported,
)
from vectorlay.domain.fleet.removal import removal_problem
from vectorlay.domain.fleet.reports import may_reattach, unreported
from vectorlay.domain.hostreport import is_ready
from vectorlay.domain.liveness import LivenessPolicy
from vectorlay.domain.messages import (
    DeployPayload,
    RegisterPayload,
    ReplicaReport,
    ReplicaStatus,
    ResultPayload,
    SystemInfoPayload,
)
from vectorlay.errors import NodeBusy, ReplicaExists, UnknownNode, UnknownReplica, WrongNode


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
        self._records = Inventory()
        self._ledger = CommandLedger(snapshot.commands if snapshot is not None else ())
        self._last_frame: dict[str, float] = {}
        self._connected: set[str] = set()
        if snapshot is not None:
            self._load(snapshot, now)

    def _load(self, snapshot: FleetSnapshot, now: float) -> None:
        for record in snapshot.nodes:
            offline = record.state.status is Status.OFFLINE
            if not offline:
                record = msgspec.structs.replace(record, state=step(record.state, Event.DISCONNECT))
            self._records.set_node(record, persist=not offline)
            self._last_frame[record.node_id] = now
        for replica in snapshot.replicas:
            self._records.set_replica(replica, persist=False)

    # --- queries -------------------------------------------------------------

    def node(self, node_id: str) -> NodeRecord | None:
        return self._records.node(node_id)

    def nodes(self) -> list[NodeRecord]:
        return self._records.nodes()

    def replica(self, replica_id: str) -> ReplicaRecord | None:
        return self._records.replica(replica_id)

    def replicas(self) -> list[ReplicaRecord]:
        return self._records.replicas()

    def replicas_on(self, node_id: str) -> list[ReplicaRecord]:
        return self._records.replicas_on(node_id)

    def is_connected(self, node_id: str) -> bool:
        return node_id in self._connected

    def gpus_free(self, node_id: str) -> int:
        return placement.gpus_free(self._records, node_id)

    def pending_commands(self, node_id: str | None = None) -> list[PendingCommand]:
        return self._ledger.pending(node_id)

    def liveness_deadline(self, node_id: str) -> float:
        """When the node counts as out of contact, given its last frame."""
        return self.policy.deadline(self._last_frame[node_id])

    def pick_node(self, gpu_count: int, exclude: Iterable[str] = ()) -> str | None:
        """The online node to place a replica on (:func:`.placement.pick_node`)."""
        candidates = self._connected.difference(exclude)
        return placement.pick_node(self._records, candidates, gpu_count)

    # --- agent sessions --------------------------------------------------------

    def register(
        self, node_id: str, payload: RegisterPayload, *, now: float, wall: datetime
    ) -> NodeRecord:
        """A new node from a ``register`` message; it stays offline until its session starts."""
        if self._records.node(node_id) is not None:
            raise ValueError(f"node id {node_id} already exists")
        record = NodeRecord(
            node_id=node_id,
            agent_version=payload.agent_version,
            hardware=payload.hardware,
            dependencies=list(payload.dependencies),
            ready=is_ready(payload.dependencies),
            registered_at=wall,
            last_seen=wall,
        )
        self._records.set_node(record)
        self._last_frame[node_id] = now
        return record

    def touch(self, node_id: str, *, now: float, wall: datetime) -> None:
        """A frame arrived from the node: its liveness deadline moves on.

        Not persisted by itself (it happens for every frame); the stamp is
        written along with the node's next persisted change.
        """
        self._last_frame[node_id] = now
        node = self._records.node(node_id)
        if node is not None:
            self._records.set_node(msgspec.structs.replace(node, last_seen=wall), persist=False)

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
        self._records.set_node(connected(node, info, wall))
        self._last_frame[node_id] = now
        self._connected.discard(node_id)  # commands from _observe are sent below with the rest
        self._observe(node_id, info.replicas)
        self._fail_unreported(node_id, info.replicas)
        self._settle(node_id)
        self._connected.add(node_id)
        sends = [self._send(c) for c in self._ledger.pending(node_id)]
        return sends + self._place_waiting()

    def heartbeat(self, node_id: str, containers: Sequence[ReplicaReport]) -> list[Send]:
        if node_id not in self._connected:
            return []
        sends = self._observe(node_id, containers)
        # The list is complete (docs/protocol.md, "Node statuses"), as at a reconnect.
        self._fail_unreported(node_id, containers)
        self._settle(node_id)
        return sends + self._place_waiting()

    def deploy_result(self, node_id: str, result: ResultPayload) -> list[Send]:
        if node_id not in self._connected:
            return []  # a removed node's last words
        self._ledger.clear(node_id, result.replica_id, CommandKind.DEPLOY)
        replica = self._records.replica(result.replica_id)
        if replica is None:
            return []
        if replica.node_id != node_id:
            return self._stop_duplicate(node_id, result.replica_id, result.status)
        if replica.status not in (ReplicaPhase.STOPPING, ReplicaPhase.STOPPED):
            self._take_result(replica, result)
        self._settle(node_id)
        return self._place_waiting()

    def stop_result(self, node_id: str, result: ResultPayload) -> list[Send]:
        if node_id not in self._connected:
            return []  # a removed node's last words
        if result.status is ReplicaStatus.FAILED:
            return self._stop_failed(node_id, result)
        self._ledger.clear(node_id, result.replica_id, CommandKind.STOP)
        replica = self._records.replica(result.replica_id)
        if replica is None or replica.node_id != node_id:
            return []
        if replica.status is ReplicaPhase.STOPPING:
            self._take_result(replica, result)
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
        node = self._require_node(node_id)
        self._records.set_node(
            msgspec.structs.replace(node, state=step(node.state, Event.DISCONNECT))
        )
        return True

    # --- time --------------------------------------------------------------------

    def next_reschedule_at(self) -> float | None:
        """The earliest moment a disconnected node's replicas are due to move."""
        due = [
            self.liveness_deadline(node_id)
            for node_id in self._records.node_ids()
            if node_id not in self._connected and self._records.movable_on(node_id)
        ]
        return min(due, default=None)

    def reschedule_due(self, now: float) -> tuple[list[Move], list[Send]]:
        """Move the replicas of every node out of contact for ``offline_after``."""
        moves: list[Move] = []
        sends: list[Send] = []
        for node_id in self._records.node_ids():
            if node_id in self._connected:
                continue
            if not self.policy.is_offline(self._last_frame[node_id], now):
                continue
            for replica_id in self._records.movable_on(node_id):
                move, send = self._move(replica_id, node_id)
                moves.append(move)
                sends.extend(send)
        return moves, sends

    # --- operator ------------------------------------------------------------------

    def deploy(self, payload: DeployPayload) -> tuple[ReplicaRecord, list[Send]]:
        """Place a new replica on an online node with enough free GPUs."""
        if self._records.replica(payload.replica_id) is not None:
            raise ReplicaExists(f"replica_id: replica {payload.replica_id} already exists")
        target = self.pick_node(payload.gpu_count)
        if target is None:
            raise refusals.refusal(self._records, self._connected, payload.gpu_count)
        replica = ReplicaRecord(
            replica_id=payload.replica_id,
            image=payload.image,
            gpu_count=payload.gpu_count,
            env_vars=dict(payload.env_vars),
            node_id=target,
        )
        self._records.set_replica(replica)
        return replica, self._command(target, replica.replica_id, CommandKind.DEPLOY)

    def stop(self, replica_id: str) -> tuple[ReplicaRecord, list[Send]]:
        """Stop a replica; on an offline node the stop waits for its return."""
        replica = self._records.replica(replica_id)
        if replica is None:
            raise UnknownReplica(f"replica {replica_id} not found")
        if replica.status is ReplicaPhase.STOPPED:
            return replica, []
        node_id = replica.node_id
        if node_id is None:
            replica = msgspec.structs.replace(replica, status=ReplicaPhase.STOPPED, error=None)
            self._records.set_replica(replica)
            return replica, []
        replica = msgspec.structs.replace(replica, status=ReplicaPhase.STOPPING, error=None)
        self._records.set_replica(replica)
        return replica, self._command(node_id, replica_id, CommandKind.STOP)

    def remove_node(self, node_id: str) -> NodeRecord:
        """Forget a node (offline or in maintenance, nothing live on it) and its commands.

        Raises :class:`UnknownNode`, or :class:`NodeBusy` saying why not.
        The caller closes a connected session with 4401; the store drops the
        node's token with its record.
        """
        node = self._require_node(node_id)
        problem = removal_problem(node, self._records.replicas_on(node_id))
        if problem is not None:
            raise NodeBusy(problem)
        for command in self._ledger.pending(node_id):
            self._ledger.clear(node_id, command.replica_id, command.kind)
        self._records.remove_node(node_id)
        self._connected.discard(node_id)
        self._last_frame.pop(node_id, None)
        return node

    def drain(self, node_id: str) -> tuple[NodeRecord, list[Send]]:
        return self._operator(node_id, Event.DRAIN)

    def maintenance(self, node_id: str) -> tuple[NodeRecord, list[Send]]:
        return self._operator(node_id, Event.MAINTENANCE)

    def resume(self, node_id: str) -> tuple[NodeRecord, list[Send]]:
        return self._operator(node_id, Event.RESUME)

    # --- persistence -----------------------------------------------------------------

    def take_changes(self) -> FleetChanges:
        nodes, replicas, removed = self._records.take_changes()
        put, deleted = self._ledger.take_changes()
        return FleetChanges(
            nodes, replicas, commands_put=put, commands_deleted=deleted, nodes_deleted=removed
        )

    # --- internals -------------------------------------------------------------------

    def _require_node(self, node_id: str) -> NodeRecord:
        node = self._records.node(node_id)
        if node is None:
            raise UnknownNode(f"node {node_id} not found")
        return node

    def _operator(self, node_id: str, event: Event) -> tuple[NodeRecord, list[Send]]:
        node = self._require_node(node_id)
        self._records.set_node(msgspec.structs.replace(node, state=step(node.state, event)))
        self._settle(node_id)
        sends = self._place_waiting()
        return self._require_node(node_id), sends

    def _command(self, node_id: str, replica_id: str, kind: CommandKind) -> list[Send]:
        """Record an unanswered command; send it now if the node is connected."""
        command = self._ledger.record(node_id, replica_id, kind)
        return [self._send(command)] if node_id in self._connected else []

    def _send(self, command: PendingCommand) -> Send:
        replica = self._records.replica(command.replica_id)
        return Send(command.node_id, message_for(command, replica))

    def _take_result(self, replica: ReplicaRecord, result: ResultPayload) -> None:
        status, error = phase_of(result.status), agent_error(replica, result)
        gpus = held_gpus(replica, status, result.gpus)
        self._records.set_replica(
            msgspec.structs.replace(replica, status=status, error=error, gpus=gpus, exit_code=None)
        )

    def _observe(self, node_id: str, reports: Sequence[ReplicaReport]) -> list[Send]:
        """Take the statuses a node reports for its replicas; stop copies it should not run."""
        sends: list[Send] = []
        for report in reports:
            replica = self._records.replica(report.replica_id)
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
            updated = reported(replica, report)
            if updated != replica:
                self._records.set_replica(updated)
        return sends

    def _stop_failed(self, node_id: str, result: ResultPayload) -> list[Send]:
        """The agent could not stop it: the container may still run.

        The stop stays unanswered (re-sent on the node's next session, or at
        once by another ``DELETE``) and the replica keeps its GPUs.
        """
        replica = self._records.replica(result.replica_id)
        if replica is None or replica.node_id != node_id:
            return []
        if replica.status is ReplicaPhase.STOPPING:
            error = agent_error(replica, result) or STOP_FAILED
            self._records.set_replica(msgspec.structs.replace(replica, error=error))
        return []

    def _fail_unreported(self, node_id: str, reports: Sequence[ReplicaReport]) -> None:
        for failed in unreported(self._records, self._ledger, node_id, reports):
            self._records.set_replica(failed)

    def _reattach(self, node_id: str, replica: ReplicaRecord, status: ReplicaStatus) -> bool:
        """Keep a waiting replica where its node still runs it, when it may stay."""
        if not may_reattach(self._records, self._ledger, node_id, replica, status):
            return False
        self._records.set_replica(
            msgspec.structs.replace(
                replica, node_id=node_id, status=phase_of(status), error=None, gpus=[]
            )
        )
        return True

    def _stop_duplicate(self, node_id: str, replica_id: str, status: ReplicaStatus) -> list[Send]:
        """The node runs a copy it should not (moved away or stopped): stop it once."""
        if status not in LIVE_REPORT or self._ledger.awaits(node_id, replica_id, CommandKind.STOP):
            return []
        return self._command(node_id, replica_id, CommandKind.STOP)

    def _settle(self, node_id: str) -> None:
        """A draining node with nothing left on it goes to maintenance."""
        node = self._require_node(node_id)
        if node.state.status is Status.DRAINING and not self._records.holding_gpus_on(node_id):
            self._records.set_node(
                msgspec.structs.replace(node, state=step(node.state, Event.REPLICAS_GONE))
            )

    def _move(self, replica_id: str, from_node: str) -> tuple[Move, list[Send]]:
        replica = self._records.replica(replica_id)
        assert replica is not None  # movable_on lists known replicas only
        # The old node must not start it on return; if it already runs it,
        # its report gets it stopped.
        self._ledger.clear(from_node, replica_id, CommandKind.DEPLOY)
        # Detach first so the old node's GPUs do not count against the choice.
        detached = msgspec.structs.replace(
            replica, node_id=None, status=ReplicaPhase.PENDING, error=None, gpus=[]
        )
        self._records.set_replica(detached)
        target = self.pick_node(replica.gpu_count, exclude=[from_node])
        if target is None:
            return Move(replica_id, from_node, None), []
        self._records.set_replica(msgspec.structs.replace(detached, node_id=target))
        return Move(replica_id, from_node, target), self._command(
            target, replica_id, CommandKind.DEPLOY
        )

    def _place_waiting(self) -> list[Send]:
        """Give waiting replicas (moved with no room) to nodes that can take them now."""
        sends: list[Send] = []
        for replica_id in self._records.waiting():
            replica = self._records.replica(replica_id)
            assert replica is not None  # waiting lists known replicas only
            target = self.pick_node(replica.gpu_count)
            if target is None:
                continue
            self._records.set_replica(msgspec.structs.replace(replica, node_id=target))
            sends.extend(self._command(target, replica_id, CommandKind.DEPLOY))
        return sends
