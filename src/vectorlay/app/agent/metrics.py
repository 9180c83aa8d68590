"""The agent's state in Prometheus text exposition format, for node_exporter's textfile collector.

Rendered from the status snapshot (:mod:`.statusboard`), written directly:
a few dozen lines do not need a client library in the agent's memory.
Names follow Prometheus conventions: the ``vectorlay_agent_`` prefix, base
units (bytes, seconds), ``_total`` for counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from vectorlay.domain.hostreport import ASSIGNABLE_DRIVER
from vectorlay.domain.messages import ReplicaStatus

PREFIX: Final = "vectorlay_agent_"


def render_metrics(snapshot: Mapping[str, Any]) -> str:
    """The text for a ``.prom`` file, from a :meth:`StatusBoard.snapshot`."""
    out: list[str] = []

    def metric(
        name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        full = PREFIX + name
        out.append(f"# HELP {full} {help_text}")
        out.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            out.append(f"{full}{_labels(labels)} {_number(value)}")

    def one(name: str, kind: str, help_text: str, value: float | None) -> None:
        if value is not None:
            metric(name, kind, help_text, [({}, value)])

    session = snapshot["session"]
    one(
        "connected",
        "gauge",
        "1 while a session with the control plane is open.",
        1 if snapshot["connected"] else 0,
    )
    ready = snapshot.get("ready")
    one("ready", "gauge", "1 while every dependency is ok.", None if ready is None else int(ready))
    started = datetime.fromisoformat(snapshot["started_at"].replace("Z", "+00:00"))
    one(
        "start_time_seconds", "gauge", "Start of the agent process, Unix time.", started.timestamp()
    )

    replicas: dict[str, int] = {s.value: 0 for s in ReplicaStatus}
    for replica in snapshot["replicas"]:
        replicas[replica["status"]] = replicas.get(replica["status"], 0) + 1
    metric(
        "replicas",
        "gauge",
        "Replicas of this node by status.",
        (({"status": s}, n) for s, n in sorted(replicas.items())),
    )

    gpus: dict[tuple[str, str], int] = {}
    for gpu in snapshot["gpus"]:
        key = (_assignable(gpu), str(gpu.get("health") or "unknown"))
        gpus[key] = gpus.get(key, 0) + 1
    metric(
        "gpus",
        "gauge",
        "GPUs of this node by assignability and health.",
        (({"assignable": a, "health": h}, n) for (a, h), n in sorted(gpus.items())),
    )

    outbox = snapshot["outbox"]
    one("outbox_results", "gauge", "Results waiting for a session.", outbox["length"])
    one(
        "session_reconnects_total",
        "counter",
        "Sessions opened after the first.",
        session["reconnects"],
    )
    one("heartbeats_sent_total", "counter", "Heartbeats sent.", snapshot["heartbeats_sent"])
    one("results_sent_total", "counter", "Deploy and stop results sent.", outbox["sent"])
    one(
        "results_dropped_total", "counter", "Results dropped from a full outbox.", outbox["dropped"]
    )
    metric(
        "deploys_total",
        "counter",
        "Deploy commands by outcome.",
        (({"outcome": o}, n) for o, n in sorted(snapshot["deploys"].items())),
    )
    gc = snapshot["image_gc"]
    one("image_gc_runs_total", "counter", "Image garbage collections run.", gc["runs"])
    one(
        "image_gc_images_removed_total",
        "counter",
        "Images removed by garbage collection.",
        gc["images_removed"],
    )
    one(
        "image_gc_freed_bytes_total",
        "counter",
        "Bytes freed by image garbage collection.",
        gc["bytes_freed"],
    )
    disk = snapshot.get("disk") or {}
    one(
        "disk_free_bytes",
        "gauge",
        "Free bytes on the image store's filesystem.",
        disk.get("free_bytes"),
    )
    one(
        "disk_size_bytes",
        "gauge",
        "Size of the image store's filesystem in bytes.",
        disk.get("total_bytes"),
    )
    return "\n".join(out) + "\n"


def _assignable(gpu: Mapping[str, Any]) -> str:
    if "assignable" in gpu:
        return "true" if gpu["assignable"] else "false"
    ok = gpu.get("driver") == ASSIGNABLE_DRIVER and bool(gpu.get("iommu_group"))
    return "true" if ok else "false"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


__all__ = ["PREFIX", "render_metrics"]
