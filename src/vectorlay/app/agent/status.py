"""``vectorlay-agent status [--json]``: what the running agent on this node is doing.

Read from ``<state-dir>/status.json``, which the agent rewrites on every
change and at least once per heartbeat interval.  Exit status 0 when the
agent is connected to its control plane, 1 when it runs but is not
connected, 3 when no agent is running: no file, a pid that is not alive (or
is another process by now), or a file not updated for three of the agent's
heartbeat intervals.  The reason is printed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from vectorlay.app.agent.settings import StatusSettings
from vectorlay.app.agent.statusboard import STATUS_FILE_NAME

EXIT_CONNECTED: Final = 0
EXIT_NOT_CONNECTED: Final = 1
EXIT_NOT_RUNNING: Final = 3
STALE_AFTER_INTERVALS: Final = 3
# A pid whose process started this much later than the agent did is a reused pid.
_START_SLACK_S: Final = 5.0


def main(settings: StatusSettings) -> int:
    code, text = status(settings.state_dir / STATUS_FILE_NAME, as_json=settings.json)
    sys.stdout.write(text)
    sys.stdout.flush()
    return code


def status(path: Path, *, as_json: bool, now: float | None = None) -> tuple[int, str]:
    """The exit status and the text to print for the status file at ``path``."""
    now = time.time() if now is None else now
    data, problem = _load(path)
    if data is not None and not problem:
        problem = _not_running(data, now)
    if problem:
        if as_json:
            shown = dict(data or {})
            shown.update(running=False, connected=False, problem=problem)
            return EXIT_NOT_RUNNING, json.dumps(shown, indent=2) + "\n"
        return EXIT_NOT_RUNNING, f"no running agent: {problem}\n"
    assert data is not None
    code = EXIT_CONNECTED if data.get("connected") else EXIT_NOT_CONNECTED
    if as_json:
        return code, json.dumps({**data, "running": True, "problem": None}, indent=2) + "\n"
    return code, render(data, now)


def _load(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path} does not exist (agent never started with this state dir?)"
    except PermissionError:
        return None, f"cannot read {path}: permission denied (run as the agent's user, or root)"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        return None, f"cannot read {path}: {reason}"
    try:
        data = json.loads(text)
    except ValueError:
        return None, f"{path} is not valid JSON"
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None, f"{path} is not an agent status file"
    return data, ""


def _not_running(data: Mapping[str, Any], now: float) -> str:
    pid = int(data["pid"])
    started = _epoch(data.get("started_at"))
    if not _alive(pid, started):
        return f"agent pid {pid} is not running (status file left from an earlier run)"
    updated = _epoch(data.get("updated_at"))
    interval = data.get("heartbeat_interval")
    if updated is not None and isinstance(interval, int | float) and interval > 0:
        limit = STALE_AFTER_INTERVALS * float(interval)
        if now - updated > limit:
            return (
                f"status not updated for {now - updated:.0f} s (over {STALE_AFTER_INTERVALS} "
                f"heartbeat intervals, {limit:g} s): agent pid {pid} is hung or stopped"
            )
    return ""


def _alive(pid: int, started: float | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if started is None:
        return True
    try:
        import psutil

        created = psutil.Process(pid).create_time()
    except Exception:
        return True  # cannot tell: trust the pid
    return created <= started + _START_SLACK_S


def _epoch(stamp: object) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- the readable form --------------------------------------------------------------


def render(data: Mapping[str, Any], now: float) -> str:
    session = data.get("session") or {}
    lines = [
        f"vectorlay-agent {data.get('version')}, pid {data.get('pid')}, "
        f"up {_duration(data.get('uptime_s'))}",
        f"Control plane   {data.get('control_plane_url') or '-'}",
        f"Node            {data.get('node_id') or '(not registered yet)'}",
    ]
    if data.get("connected"):
        lines.append(
            f"Session         connected since {_when(session.get('connected_since'), now)}"
        )
    else:
        lines.append(
            f"Session         DISCONNECTED since {_when(session.get('disconnected_since'), now)}"
        )
        close = session.get("last_close_code")
        reason = session.get("last_close_reason")
        if close is not None or reason:
            code = f"code {close}" if close is not None else "no close code"
            lines.append(f"                last end: {code}{': ' + reason if reason else ''}")
        if session.get("last_error"):
            lines.append(f"                last attempt: {session['last_error']}")
        if session.get("next_retry_at"):
            lines.append(f"                next retry {_when(session['next_retry_at'], now)}")
    lines.append(f"                {session.get('reconnects', 0)} reconnect(s)")
    lines.append(
        f"Last heartbeat  {_when(data.get('last_heartbeat_at'), now)}"
        f" ({data.get('heartbeats_sent', 0)} sent)"
    )
    failing = data.get("failing") or []
    if data.get("ready"):
        lines.append("Readiness       ready")
    else:
        lines.append("Readiness       DEGRADED")
        lines += [
            f"                - {f.get('name')}: {f.get('detail') or 'not ok'}" for f in failing
        ]
    disk = data.get("disk")
    if disk and disk.get("free_bytes") is not None:
        free, total = _gb(disk["free_bytes"]), _gb(disk.get("total_bytes"))
        lines.append(f"Image store     {free} GB free of {total} GB on {disk.get('path')}")
    lines += ["", *_gpus(data.get("gpus") or []), "", *_replicas(data.get("replicas") or [])]
    outbox = data.get("outbox") or {}
    lines += [
        "",
        f"Outbox          {outbox.get('length', 0)} result(s) waiting, "
        f"{outbox.get('dropped', 0)} dropped, {outbox.get('sent', 0)} sent",
    ]
    return "\n".join(lines) + "\n"


def _gpus(gpus: Sequence[Mapping[str, Any]]) -> list[str]:
    if not gpus:
        return ["GPUs            none"]
    rows = [
        (
            str(g.get("iommu_group") or "-"),
            str(g.get("pci_address")),
            str(g.get("model") or ""),
            str(g.get("driver") or "(none)"),
            str(g.get("health") or "-"),
            str(g.get("replica_id") or "free"),
        )
        for g in sorted(gpus, key=lambda g: (_group_key(g.get("iommu_group")), g["pci_address"]))
    ]
    return [
        f"GPUs            {len(gpus)}, by IOMMU group",
        *_table(("GROUP", "PCI ADDRESS", "MODEL", "DRIVER", "HEALTH", "HELD BY"), rows),
    ]


def _replicas(replicas: Sequence[Mapping[str, Any]]) -> list[str]:
    if not replicas:
        return ["Replicas        none"]
    rows = [
        (
            str(r.get("replica_id")),
            str(r.get("status")),
            str(r.get("image") or "-"),
            "+".join(r.get("gpus") or []) or "-",
        )
        for r in replicas
    ]
    return [
        f"Replicas        {len(replicas)}",
        *_table(("REPLICA", "STATUS", "IMAGE", "GPUS"), rows),
    ]


def _group_key(group: object) -> tuple[int, str]:
    text = str(group) if group is not None else ""
    return (int(text), "") if text.isdigit() else (1 << 30, text)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        ("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in (header, *rows)
    ]


def _when(stamp: object, now: float) -> str:
    epoch = _epoch(stamp)
    if epoch is None:
        return "never"
    delta = now - epoch
    rel = f"{_duration(abs(delta))} {'ago' if delta >= 0 else 'from now'}"
    return f"{stamp} ({rel})"


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _gb(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    return str(int(value) >> 30)


__all__ = ["EXIT_CONNECTED", "EXIT_NOT_CONNECTED", "EXIT_NOT_RUNNING", "main", "render", "status"]
