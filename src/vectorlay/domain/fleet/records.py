"""What the control plane keeps about nodes, replicas and commands, and what it hands out.

Records are frozen: a change is a new record, so what a store was given and
what the fleet holds never alias.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from typing import Final

import msgspec

from vectorlay.domain.fleet.node import Event, Node, Status, step
from vectorlay.domain.messages import (
    Dependency,
    Deploy,
    Gpu,
    Hardware,
    ReplicaReport,
    ReplicaStatus,
    ResultPayload,
    Stop,
    SystemInfoPayload,
)
from vectorlay.domain.redact import redact_text


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
# A node reporting a replica in one of these statuses still runs (or starts) it.
LIVE_REPORT: Final = frozenset({ReplicaStatus.PENDING, ReplicaStatus.RUNNING})
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
    gpus: list[str] = []  # the PCI addresses the node reported it holds
    # The container's exit code as the node reported it (an ended replica).
    exit_code: int | None = None

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
    """What to write since the last ``Fleet.take_changes`` (current values)."""

    nodes: list[NodeRecord] = []
    replicas: list[ReplicaRecord] = []
    commands_put: list[PendingCommand] = []
    commands_deleted: list[tuple[str, str]] = []
    # Nodes an operator removed: their records and token digests go.
    nodes_deleted: list[str] = []

    @property
    def empty(self) -> bool:
        return not (
            self.nodes
            or self.replicas
            or self.commands_put
            or self.commands_deleted
            or self.nodes_deleted
        )


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


def held_gpus(
    replica: ReplicaRecord, status: ReplicaPhase, reported: list[str] | None
) -> list[str]:
    """The GPUs a replica holds after a report: what the node says while it holds
    any (kept when the report says nothing), none once it holds none."""
    if status not in HOLDS_GPUS:
        return []
    return list(reported) if reported else replica.gpus


def reported(replica: ReplicaRecord, report: ReplicaReport) -> ReplicaRecord:
    """The replica as a node's report shows it: status, and for an ended one its exit
    code and error (redacted of the replica's env values).

    A report without them (an older agent) keeps what a result said of the same status.
    """
    status = phase_of(report.status)
    same = status is replica.status
    error = redact_text(report.error, replica.env_vars.values()) if report.error else None
    if error is None and same:
        error = replica.error
    exit_code = report.exit_code
    if exit_code is None and same:
        exit_code = replica.exit_code
    if status in HOLDS_GPUS:
        error, exit_code = None, None
    gpus = held_gpus(replica, status, report.gpus)
    return msgspec.structs.replace(
        replica, status=status, error=error, exit_code=exit_code, gpus=gpus
    )


def phase_of(status: ReplicaStatus) -> ReplicaPhase:
    return ReplicaPhase(status.value)


def token_digest(token: str) -> bytes:
    """What a store keeps of a node token: its SHA-256 digest, never the token.

    Tokens are 256-bit random values, so an unsalted fast hash is enough:
    there is nothing to brute-force.
    """
    return hashlib.sha256(token.encode("utf-8")).digest()


def connected(node: NodeRecord, info: SystemInfoPayload, wall: datetime) -> NodeRecord:
    """The node as the ``system_info`` that opened (or reopened) its session shows it."""
    state = node.state
    if state.status is not Status.OFFLINE:
        state = step(state, Event.DISCONNECT)  # a newer session replaced the old one
    state = step(state, Event.CONNECT)
    state = step(state, Event.DEPS_OK if info.ready else Event.DEPS_FAILED)
    return msgspec.structs.replace(
        node,
        state=state,
        agent_version=info.agent_version,
        hardware=info.hardware,
        dependencies=list(info.dependencies),
        ready=info.ready,
        last_seen=wall,
    )
