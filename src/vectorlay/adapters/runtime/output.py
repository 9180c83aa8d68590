"""What the engine prints about containers, read into replica states.

``inspect`` prints docker-compatible JSON objects on every engine: managed
containers are read from them, labels included (``ps`` prints labels as one
comma-joined string whose values may contain commas, so it is never split).
An engine's own ``ps`` line is read into a :class:`PsEntry` by its dialect
module (:mod:`vectorlay.adapters.runtime.nerdctl`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec

from vectorlay.adapters.runtime.labels import (
    LABEL_GPUS,
    LABEL_NODE_ID,
    LABEL_REPLICA_ID,
    parse_gpu_label,
)
from vectorlay.domain.agent.replicas import ContainerState, container_name
from vectorlay.domain.messages import ReplicaStatus
from vectorlay.domain.validation import check_replica_id
from vectorlay.errors import ContainerRuntimeError, ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PsEntry:
    """One container as ``ps`` lists it: enough to inspect it and to notice a change."""

    container_id: str
    names: str
    status: str


@dataclass(frozen=True, slots=True)
class Listed:
    """A managed container: its containerd id, its name and what it means to the agent."""

    container_id: str
    name: str
    state: ContainerState


class _InspectState(msgspec.Struct):
    status: str = msgspec.field(default="", name="Status")
    exit_code: int = msgspec.field(default=0, name="ExitCode")
    # Docker and Podman say so here; nerdctl never does (its event stream does).
    oom_killed: bool = msgspec.field(default=False, name="OOMKilled")


class _InspectConfig(msgspec.Struct):
    labels: dict[str, str] | None = msgspec.field(default=None, name="Labels")
    image: str = msgspec.field(default="", name="Image")


class _Inspected(msgspec.Struct):
    id: str = msgspec.field(default="", name="Id")
    name: str = msgspec.field(default="", name="Name")
    image: str = msgspec.field(default="", name="Image")
    # Older nerdctl prints null for a container without a task.
    state: _InspectState | None = msgspec.field(default=None, name="State")
    config: _InspectConfig | None = msgspec.field(default=None, name="Config")


_INSPECT_DECODER: Final = msgspec.json.Decoder(list[_Inspected])


class _PsLine(msgspec.Struct):
    id: str = msgspec.field(name="ID")
    names: str = msgspec.field(default="", name="Names")
    status: str = msgspec.field(default="", name="Status")


_PS_LINE_DECODER: Final = msgspec.json.Decoder(_PsLine)
T = TypeVar("T")


def printed_id(stdout: str) -> str:
    """The container id ``run -d`` printed: its last non-empty line (a pull's
    progress, when there is one, comes before it)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def json_lines(text: str, decoder: msgspec.json.Decoder[T], what: str) -> list[T]:
    """Output printed as one JSON object per line (blank lines skipped), decoded.

    ``what`` names the command in the error (``nerdctl ps``), which gives the
    line number, never the line: an engine's output can carry env values.
    """
    items: list[T] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise ContainerRuntimeError(
                f"{what} printed an unreadable line {number}: {exc}"
            ) from None
    return items


def parse_ps_lines(text: str, engine: str) -> list[PsEntry]:
    """``<engine> ps --format '{{json .}}'`` (nerdctl, Docker): one JSON object per line.

    Only the id, names and status are read; ``Labels`` is a comma-joined
    string that cannot be split reliably and is left alone.
    """
    return [
        PsEntry(item.id, item.names, item.status)
        for item in json_lines(text, _PS_LINE_DECODER, f"{engine} ps")
    ]


def parse_inspect(text: str) -> list[Listed]:
    """``nerdctl inspect --type container``: a JSON array of docker-compatible objects.

    Containers without a valid ``vectorlay.replica-id`` label are skipped.
    The objects also hold each container's environment (secrets): nothing
    of them but the fields read here is kept or logged.
    """
    if not text.strip():
        return []
    try:
        items = _INSPECT_DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise ContainerRuntimeError(
            f"inspect printed something other than a container list: {exc}"
        ) from None
    listed: list[Listed] = []
    for item in items:
        state = _container_state(item)
        if state is not None:
            listed.append(Listed(item.id, item.name, state))
    return listed


def _container_state(item: _Inspected) -> ContainerState | None:
    labels = (item.config.labels if item.config is not None else None) or {}
    replica_id = labels.get(LABEL_REPLICA_ID)
    if replica_id is None:
        return None
    try:
        check_replica_id(replica_id, LABEL_REPLICA_ID)
    except ValidationError:
        log.warning("container %s has an invalid %s label; ignored", item.id[:12], LABEL_REPLICA_ID)
        return None
    raw = item.state.status if item.state is not None else ""
    code = item.state.exit_code if item.state is not None else None
    status, exit_code = replica_status(raw, code)
    # Config.Image is the reference on every engine; Podman's and Docker's
    # top-level Image is the image id.
    image = (item.config.image if item.config is not None else "") or item.image
    gpus = parse_gpu_label(labels.get(LABEL_GPUS, ""), item.id)
    node_id = labels.get(LABEL_NODE_ID) or None
    oom_killed = item.state is not None and item.state.oom_killed
    return ContainerState(
        replica_id, status, exit_code, gpus, image, node_id, oom_killed=oom_killed
    )


def replica_status(status: str, exit_code: int | None) -> tuple[ReplicaStatus, int | None]:
    """Map nerdctl's container status (``State.Status``) to a replica status.

    - ``running``; and ``paused``/``pausing``/``restarting``, whose VM is
      alive and keeps its GPUs: ``running``.
    - ``exited``: ``exited`` with code 0, else ``failed``.
    - ``created``, empty (no task: it never started, or the host rebooted),
      ``unknown`` and anything new: ``failed``, without an exit code.
    """
    match status.lower():
        case "running" | "paused" | "pausing" | "restarting":
            return ReplicaStatus.RUNNING, None
        case "exited" | "stopped":
            code = exit_code or 0
            return (ReplicaStatus.EXITED if code == 0 else ReplicaStatus.FAILED), code
        case _:
            return ReplicaStatus.FAILED, None


def one_per_replica(listed: Iterable[Listed]) -> list[ContainerState]:
    """One state per replica id, should two containers carry the same label.

    The one named ``replica-<id>`` wins, then a running one.
    """
    best: dict[str, tuple[tuple[bool, bool], ContainerState]] = {}
    for item in listed:
        rid = item.state.replica_id
        rank = (
            item.name.lstrip("/") == container_name(rid),
            item.state.status is ReplicaStatus.RUNNING,
        )
        if rid not in best or rank > best[rid][0]:
            best[rid] = (rank, item.state)
    return [best[rid][1] for rid in sorted(best)]


__all__ = [
    "Listed",
    "PsEntry",
    "json_lines",
    "one_per_replica",
    "parse_inspect",
    "parse_ps_lines",
    "printed_id",
    "replica_status",
]
