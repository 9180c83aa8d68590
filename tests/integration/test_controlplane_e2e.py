"""End to end: `vectorlay-agent control-plane` and `vectorlay-agent run` as real processes.

Agents run on a fake host (fake lspci & co., fake /proc and /sys) with the
stateful fake nerdctl; the control plane keeps its SQLite file in the test's
temporary directory.  Everything talks over 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import (
    ADMIN_TOKEN,
    ORG_TOKEN,
    SECRET,
    AgentNode,
    ControlPlaneProcess,
    Process,
    Reaper,
    free_port,
    online,
    vectorlay_argv,
    wait_for,
)

pytestmark = pytest.mark.integration


def control_plane(
    tmp: Path, reaper: Reaper, *, offline_after: float = 60.0, backend: str | None = None
) -> ControlPlaneProcess:
    """The control plane under test, started; it accepts a second org token besides the agents'."""
    return ControlPlaneProcess(
        tmp,
        reaper,
        offline_after=offline_after,
        backend=backend,
        org_tokens=f"other-token,{ORG_TOKEN}",
    ).start()


def agent(node: AgentNode, url: str, backend: str | None = None) -> Process:
    return node.agent(url, interval=0.5, log_level="info", backend=backend).start(node.reaper)


def status(cp: ControlPlaneProcess, node_id: str) -> str:
    return str(cp.node(node_id)["status"])


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_register_deploy_heartbeat_stop(tmp_path: Path, reaper: Reaper, backend: str) -> None:
    cp = control_plane(tmp_path, reaper, backend=backend)
    node = AgentNode.build(tmp_path / "n1", reaper)
    running = agent(node, cp.url, backend)
    node_id = online(cp, node)
    listed = cp.nodes()
    assert [n["node_id"] for n in listed] == [node_id]
    assert listed[0]["hostname"] == "gpu-node-17"
    assert listed[0]["gpus"]
    free = listed[0]["gpus_free"]
    assert free >= 1

    created = cp.deploy(image="ghcr.io/acme/llm:1.2", gpu_count=1, env_vars={"API_KEY": SECRET})
    rid = created["replica_id"]
    assert created["node_id"] == node_id
    wait_for(lambda: cp.replica(rid)["status"] == "running", what="replica running")
    assert len(node.runs(rid)) == 1
    assert cp.node(node_id)["gpus_free"] == free - 1
    # A heartbeat later it is still reported running, and the GPU stays held.
    time.sleep(1.2)
    assert cp.replica(rid)["status"] == "running"

    assert cp.request("DELETE", f"/v1/replicas/{rid}").status_code == 202
    wait_for(lambda: cp.replica(rid)["status"] == "stopped", what="replica stopped")
    assert len(node.stops(rid)) == 1
    assert cp.node(node_id)["gpus_free"] == free
    assert running.terminate() == 0
    wait_for(lambda: status(cp, node_id) == "offline", what="node offline")
    assert cp.terminate() == 0
    for text in (cp.log, running.log):
        assert SECRET not in text
        assert ORG_TOKEN not in text
        assert ADMIN_TOKEN not in text
    assert "API_KEY" in cp.log


def test_control_plane_restart_keeps_identity_and_delivers_pending_once(
    tmp_path: Path, reaper: Reaper
) -> None:
    cp = control_plane(tmp_path, reaper)
    node = AgentNode.build(tmp_path / "n1", reaper)
    running = agent(node, cp.url)
    node_id = online(cp, node)
    rid = cp.deploy(image="busybox", replica_id="keep-1")["replica_id"]
    wait_for(lambda: cp.replica(rid)["status"] == "running", what="replica running")

    # Restart under a connected agent: it comes back with its node token.
    assert cp.terminate() == 0
    cp.start()
    wait_for(lambda: status(cp, node_id) == "online", what="node back online")
    assert [n["node_id"] for n in cp.nodes()] == [node_id]

    # A stop made while the agent is away survives another restart and is
    # delivered exactly once.
    assert running.terminate() == 0
    wait_for(lambda: status(cp, node_id) == "offline", what="node offline")
    assert cp.request("DELETE", f"/v1/replicas/{rid}").status_code == 202
    assert cp.replica(rid)["status"] == "stopping"
    assert cp.terminate() == 0
    cp.start()
    agent(node, cp.url)
    wait_for(lambda: cp.replica(rid)["status"] == "stopped", what="replica stopped")
    time.sleep(1.5)  # a few heartbeats and no second delivery
    assert len(node.stops(rid)) == 1
    assert [n["node_id"] for n in cp.nodes()] == [node_id]
    assert cp.log.count("node registered") == 1
    assert len(node.runs(rid)) == 1


def test_killed_agent_goes_offline_and_its_replica_moves(tmp_path: Path, reaper: Reaper) -> None:
    cp = control_plane(tmp_path, reaper, offline_after=2.0)
    first = AgentNode.build(tmp_path / "n1", reaper)
    running = agent(first, cp.url)
    first_id = online(cp, first)
    rid = cp.deploy(image="busybox", replica_id="moving-1", gpu_count=1)["replica_id"]
    wait_for(lambda: cp.replica(rid)["status"] == "running", what="replica running")
    second = AgentNode.build(tmp_path / "n2", reaper)
    agent(second, cp.url)
    second_id = online(cp, second)

    running.kill()
    wait_for(lambda: status(cp, first_id) == "offline", timeout=5, what="offline at once")
    moved = wait_for(
        lambda: (r := cp.replica(rid))["node_id"] == second_id and r["status"] == "running",
        what="replica running on the second node",
    )
    assert moved
    assert len(second.runs(rid)) == 1
    assert cp.node(first_id)["replicas"] == []


def test_drain_then_maintenance_then_resume(tmp_path: Path, reaper: Reaper) -> None:
    cp = control_plane(tmp_path, reaper)
    node = AgentNode.build(tmp_path / "n1", reaper)
    agent(node, cp.url)
    node_id = online(cp, node)
    rid = cp.deploy(image="busybox", replica_id="drain-1")["replica_id"]
    wait_for(lambda: cp.replica(rid)["status"] == "running", what="replica running")

    drained = cp.request("POST", f"/v1/nodes/{node_id}/drain").json()
    assert (drained["status"], drained["hold"]) == ("draining", "drain")
    assert cp.request("POST", "/v1/replicas", {"image": "busybox"}).status_code == 409
    assert cp.request("DELETE", f"/v1/replicas/{rid}").status_code == 202
    wait_for(lambda: status(cp, node_id) == "maintenance", what="maintenance")
    resumed = cp.request("POST", f"/v1/nodes/{node_id}/resume").json()
    assert (resumed["status"], resumed["hold"]) == ("online", None)


def test_control_plane_cannot_start_is_exit_1(tmp_path: Path) -> None:
    bad_db = tmp_path / "not-a-db"
    bad_db.write_bytes(b"garbage" * 1000)
    argv = vectorlay_argv(
        "control-plane", "--db", str(bad_db), "--listen", f"127.0.0.1:{free_port()}"
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "cannot open the control-plane store" in result.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = vectorlay_argv(
            "control-plane", "--db", str(tmp_path / "ok.sqlite3"), "--listen", f"127.0.0.1:{port}"
        )
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
