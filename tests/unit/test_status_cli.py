"""``vectorlay-agent status`` on hand-written status files: each reason for exit 3, and the text."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from vectorlay.app.agent.status import (
    EXIT_CONNECTED,
    EXIT_NOT_CONNECTED,
    EXIT_NOT_RUNNING,
    status,
)
from vectorlay.app.agent.statusboard import _without_userinfo


def stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".000Z"


def snapshot(**changes: Any) -> dict[str, Any]:
    now = time.time()
    started = psutil.Process(os.getpid()).create_time()
    data: dict[str, Any] = {
        "pid": os.getpid(),
        "version": "0.1.0",
        "started_at": stamp(started),
        "updated_at": stamp(now),
        "uptime_s": 12.0,
        "heartbeat_interval": 30.0,
        "control_plane_url": "wss://cp.example.com/v1/agent",
        "node_id": "node-1",
        "connected": False,
        "session": {
            "connected_since": None,
            "disconnected_since": stamp(now - 5),
            "last_close_code": 1006,
            "last_close_reason": "connection lost",
            "next_retry_at": stamp(now + 3),
            "reconnects": 2,
        },
        "last_heartbeat_at": None,
        "heartbeats_sent": 0,
        "ready": False,
        "failing": [{"name": "disk", "detail": "3 GB free on /var/lib/containerd: under"}],
        "disk": None,
        "gpus": [
            {"pci_address": "0000:02:00.0", "iommu_group": "10", "model": "M", "driver": "vfio-pci",
             "replica_id": None, "health": "ok"},
            {"pci_address": "0000:01:00.0", "iommu_group": "9", "model": "M", "driver": "vfio-pci",
             "replica_id": "r1"},
        ],
        "replicas": [
            {"replica_id": "r1", "status": "running", "image": "img:1", "gpus": ["0000:01:00.0"]}
        ],
        "outbox": {"length": 3, "dropped": 1, "sent": 7},
    }  # fmt: skip
    data.update(changes)
    return data


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_disconnected_agent_exit_1_and_what_it_shows(tmp_path: Path) -> None:
    code, text = status(write(tmp_path, snapshot()), as_json=False)
    assert code == EXIT_NOT_CONNECTED
    assert "Session         DISCONNECTED since" in text
    assert "last end: code 1006: connection lost" in text
    assert "next retry" in text
    assert "from now" in text
    assert "  - disk: 3 GB free on /var/lib/containerd: under" in text
    gpu_rows = [
        line.split()
        for line in text.splitlines()
        if line.startswith("  9") or line.startswith("  10")
    ]
    assert gpu_rows == [
        ["9", "0000:01:00.0", "M", "vfio-pci", "-", "r1"],
        ["10", "0000:02:00.0", "M", "vfio-pci", "ok", "free"],
    ]  # by group, numerically
    assert "3 result(s) waiting, 1 dropped, 7 sent" in text


def test_connected_agent_exit_0(tmp_path: Path) -> None:
    data = snapshot(connected=True)
    data["session"]["connected_since"] = stamp(time.time() - 60)
    code, text = status(write(tmp_path, data), as_json=True)
    assert code == EXIT_CONNECTED
    shown = json.loads(text)
    assert (shown["running"], shown["connected"], shown["problem"]) == (True, True, None)


def test_each_reason_for_no_running_agent(tmp_path: Path) -> None:
    missing = status(tmp_path / "status.json", as_json=False)
    assert missing[0] == EXIT_NOT_RUNNING
    assert "does not exist" in missing[1]
    corrupt = status(write(tmp_path, "{not json"), as_json=False)
    assert corrupt == (
        EXIT_NOT_RUNNING,
        f"no running agent: {tmp_path / 'status.json'} is not valid JSON\n",
    )
    foreign = status(write(tmp_path, [1, 2]), as_json=False)
    assert "is not an agent status file" in foreign[1]
    dead = status(write(tmp_path, snapshot(pid=2**22 + 12345)), as_json=False)
    assert dead[0] == EXIT_NOT_RUNNING
    assert "is not running" in dead[1]
    # Our own pid, but the file says the agent started before this process did: a reused pid.
    reused = status(write(tmp_path, snapshot(started_at=stamp(time.time() - 10**6))), as_json=False)
    assert reused[0] == EXIT_NOT_RUNNING
    assert "is not running" in reused[1]
    stale = snapshot(updated_at=stamp(time.time() - 100))
    code, text = status(write(tmp_path, stale), as_json=True)
    shown = json.loads(text)
    assert code == EXIT_NOT_RUNNING
    assert shown["running"] is False
    assert shown["connected"] is False
    assert "over 3 heartbeat intervals, 90 s" in shown["problem"]


def test_control_plane_url_without_credentials() -> None:
    assert _without_userinfo("wss://user:pw@cp.example.com:8443/v1/agent?t=x#f") == (
        "wss://cp.example.com:8443/v1/agent"
    )
    assert _without_userinfo("ws://[::1]:8787/v1/agent") == "ws://[::1]:8787/v1/agent"
    assert _without_userinfo(None) is None
