"""``vectorlay-agent status`` and the metrics textfile against a real agent process.

The agent runs on a fake host with the fake nerdctl (tests/support/); the
control plane is a scripted WebSocket peer.  ``status`` is the real CLI in a
process of its own, reading the agent's ``status.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import NODE_TOKEN, ORG_TOKEN, SECRET, AgentNode, Reaper
from tests.support.commands import vectorlay_argv
from tests.support.waits import wait_for
from tests.support.wspeer import WsPeer, register
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    ReplicaStatus,
    Stop,
    StopPayload,
    StopResult,
)

pytestmark = pytest.mark.integration

NODE_ID = "node-status-1"
IMAGE = "ghcr.io/acme/llm:1.2"


def status(node: AgentNode, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in node.env(None).items() if k != "VECTORLAY_STATE_DIR"}
    return subprocess.run(
        vectorlay_argv("status", "--state-dir", str(node.state_dir), *args),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status_json(node: AgentNode) -> tuple[int, dict[str, Any]]:
    done = status(node, "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def status_file(node: AgentNode) -> dict[str, Any] | None:
    try:
        data = json.loads((node.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    assert isinstance(data, dict)
    return data


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the textfile, parsed by prometheus_client's own parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_connected_then_control_plane_down_then_agent_stopped(
    node: AgentNode, peer: WsPeer, reaper: Reaper, backend: str
) -> None:
    agent = node.agent(peer.url, interval=1.0, backend=backend).start(reaper)
    session = register(peer, NODE_ID)
    wait_for(lambda: (status_file(node) or {}).get("connected") or None, what="connected")
    session.send_message(Deploy(DeployPayload("web-1", IMAGE, 1, {"API_KEY": SECRET})))
    assert session.receive_until(DeployResult).payload.status is ReplicaStatus.RUNNING

    def replica_listed() -> bool | None:
        return bool((status_file(node) or {}).get("replicas")) or None

    wait_for(replica_listed, what="replica in status.json")
    code, data = status_json(node)
    assert code == 0
    assert data["pid"] == agent.pid
    assert data["node_id"] == NODE_ID
    assert data["connected"] is True
    assert data["ready"] is True
    assert data["version"]
    [replica] = data["replicas"]
    assert (replica["replica_id"], replica["status"], replica["image"]) == (
        "web-1",
        "running",
        IMAGE,
    )
    assert len(replica["gpus"]) == 1
    held = [g for g in data["gpus"] if g["replica_id"] == "web-1"]
    assert [g["pci_address"] for g in held] == replica["gpus"]
    text = status(node)
    assert text.returncode == 0
    assert f"Node            {NODE_ID}" in text.stdout
    assert "Session         connected since" in text.stdout
    assert "Readiness       ready" in text.stdout
    assert ["web-1", "running", IMAGE, *replica["gpus"]] in rows(text.stdout)
    raw = (node.state_dir / "status.json").read_text()
    for secret in (SECRET, ORG_TOKEN, NODE_TOKEN):
        assert secret not in raw

    peer.stop()  # the control plane goes away; the agent keeps retrying
    wait_for(
        lambda: (status_file(node) or {"connected": True}).get("connected") is False or None,
        what="disconnected",
    )
    code, data = status_json(node)
    assert code == 1
    assert data["connected"] is False
    assert data["session"]["last_close_code"] == 1001
    text = status(node)
    assert text.returncode == 1
    assert "Session         DISCONNECTED since" in text.stdout
    assert "last end: code 1001" in text.stdout
    assert ["web-1", "running", IMAGE, *replica["gpus"]] in rows(
        text.stdout
    )  # still running: never stopped for a disconnect

    assert agent.terminate(10) == 0
    code, data = status_json(node)
    assert code == 3
    assert data["running"] is False
    assert f"agent pid {agent.pid} is not running" in data["problem"]
    text = status(node)
    assert text.returncode == 3
    assert text.stdout.startswith("no running agent: agent pid")


def test_no_status_file_means_no_agent(node: AgentNode) -> None:
    done = status(node)
    assert done.returncode == 3
    assert done.stdout == (
        f"no running agent: {node.state_dir / 'status.json'} does not exist "
        "(agent never started with this state dir?)\n"
    )


def test_a_stale_file_means_no_agent_even_with_a_live_pid(
    node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    agent = node.agent(peer.url, interval=0.5).start(reaper)
    register(peer, NODE_ID)
    wait_for(lambda: (status_file(node) or {}).get("connected") or None, what="connected")
    assert status(node).returncode == 0
    os.kill(agent.pid, signal.SIGSTOP)  # alive, but hung
    try:
        done = wait_for(
            lambda: d if (d := status(node)).returncode == 3 else None,
            timeout=20,
            what="stale status",
        )
        assert "status not updated for" in done.stdout
        assert "over 3 heartbeat intervals, 1.5 s" in done.stdout
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    wait_for(lambda: status(node).returncode == 0 or None, what="fresh again")
    agent.terminate(10)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_metrics_textfile_after_a_deploy_and_a_stop(
    node: AgentNode, peer: WsPeer, reaper: Reaper, backend: str
) -> None:
    prom = node.root / "textfile" / "vectorlay.prom"
    prom.parent.mkdir()
    agent = node.agent(peer.url, backend=backend, extra=["--metrics-textfile", str(prom)]).start(
        reaper
    )
    session = register(peer, NODE_ID)
    session.send_message(Deploy(DeployPayload("web-1", IMAGE, 2, {})))
    assert session.receive_until(DeployResult).payload.status is ReplicaStatus.RUNNING
    key = ("vectorlay_agent_replicas", (("status", "running"),))
    wait_for(lambda: metrics(prom).get(key) == 1 or None, what="running replica in textfile")
    after_deploy = metrics(prom)
    assert after_deploy[("vectorlay_agent_connected", ())] == 1
    assert after_deploy[("vectorlay_agent_ready", ())] == 1
    assert after_deploy[("vectorlay_agent_deploys_total", (("outcome", "running"),))] == 1
    assert after_deploy[("vectorlay_agent_results_sent_total", ())] == 1
    assert after_deploy[("vectorlay_agent_results_dropped_total", ())] == 0
    assert after_deploy[("vectorlay_agent_heartbeats_sent_total", ())] >= 1
    assert after_deploy[("vectorlay_agent_disk_free_bytes", ())] > 0
    gpus = {
        labels: value
        for (name, labels), value in after_deploy.items()
        if name == "vectorlay_agent_gpus"
    }
    assert sum(gpus.values()) == 8  # the fake host's passthrough GPUs, whatever their labels
    assert all(dict(labels)["assignable"] in ("true", "false") for labels in gpus)

    session.send_message(Stop(StopPayload("web-1")))
    assert session.receive_until(StopResult).payload.status is ReplicaStatus.STOPPED
    wait_for(lambda: metrics(prom).get(key) == 0 or None, what="no running replica")
    after_stop = metrics(prom)
    assert after_stop[("vectorlay_agent_results_sent_total", ())] == 2
    assert after_stop[("vectorlay_agent_deploys_total", (("outcome", "running"),))] == 1
    assert after_stop[("vectorlay_agent_replicas", (("status", "stopped"),))] in (0, 1)
    assert not [p.name for p in prom.parent.iterdir() if p.name != prom.name]  # no temp left
    agent.terminate(10)
