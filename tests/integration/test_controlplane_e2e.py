"""End to end: `vectorlay-agent control-plane` and `vectorlay-agent run` as real processes.

Agents run on a fake host (fake lspci & co., fake /proc and /sys) with the
stateful fake nerdctl; the control plane keeps its SQLite file in the test's
temporary directory.  Everything talks over 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.host.fakehost import FakeHost, build_fake_host
from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl
from tests.support import (
    agent_argv,
    agent_env,
    control_plane_argv,
    control_plane_env,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.integration

ORG_TOKEN = "org-e2e-4c3b2a1f"
ADMIN_TOKEN = "admin-e2e-9f8e7d6c"
SECRET = "e2e-secret-value-5d4c"


@dataclass
class Process:
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        return self

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def end(self) -> None:
        """Teardown: SIGTERM first, so that an agent's nerdctl watcher ends with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class ControlPlane:
    tmp: Path
    offline_after: float = 60.0
    port: int = field(default_factory=free_port)
    backend: str = "asyncio"
    process: Process | None = None

    @property
    def db(self) -> Path:
        return self.tmp / "cp.sqlite3"

    @property
    def agent_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/agent"

    def start(self) -> ControlPlane:
        env = control_plane_env(f"other-token,{ORG_TOKEN}", ADMIN_TOKEN)
        argv = control_plane_argv(
            self.port, self.db, offline_after=self.offline_after, backend=self.backend
        )
        self.process = Process(argv, env, self.tmp / "cp.log").start()
        wait_for(lambda: self.http().get("/healthz").status_code == 200, what="control plane")
        return self

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=5,
        )

    def get(self, path: str) -> Any:
        with self.http() as http:
            response = http.get(path)
            response.raise_for_status()
            return response.json()

    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/v1/nodes")
        return result

    def replica(self, rid: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/v1/replicas/{rid}")
        return result

    def deploy(self, **body: Any) -> dict[str, Any]:
        with self.http() as http:
            response = http.post("/v1/replicas", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def post(self, path: str) -> httpx.Response:
        with self.http() as http:
            return http.post(path)

    def delete(self, path: str) -> httpx.Response:
        with self.http() as http:
            return http.delete(path)

    @property
    def log(self) -> str:
        return (self.tmp / "cp.log").read_text(errors="replace")

    def node_status(self, node_id: str) -> str:
        return str(self.get(f"/v1/nodes/{node_id}")["status"])


@dataclass
class Node:
    """One agent's machine: a fake host, a fake nerdctl and a state directory."""

    tmp: Path
    host: FakeHost
    nerdctl: FakeNerdctl

    @classmethod
    def build(cls, tmp: Path) -> Node:
        tmp.mkdir(parents=True, exist_ok=True)
        return cls(tmp, build_fake_host(tmp / "host"), FakeNerdctl(tmp / "nerdctl"))

    def agent(self, url: str, backend: str = "asyncio") -> Process:
        env = agent_env(self.host, self.nerdctl, org_token=ORG_TOKEN)
        argv = agent_argv(
            url,
            state_dir=self.tmp / "state",
            nerdctl=self.nerdctl,
            data_path=self.host.data,
            interval=0.5,
            log_level="info",
            extra=("--backend", backend),
        )
        return Process(argv, env, self.tmp / "agent.log")

    def node_id(self) -> str | None:
        path = self.tmp / "state" / "node.json"
        if not path.exists():
            return None
        value = json.loads(path.read_text())["node_id"]
        return str(value)

    def runs(self, rid: str) -> int:
        return sum(1 for c in self.nerdctl.calls() if c.op == "run" and f"replica-{rid}" in c.argv)

    def stops(self, rid: str) -> int:
        return sum(1 for c in self.nerdctl.calls() if c.op == "stop" and f"replica-{rid}" in c.argv)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.end()


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[list[Node]]:
    built: list[Node] = []
    yield built
    for node in built:
        node.nerdctl.close()


def online_node(cp: ControlPlane, node: Node) -> str:
    node_id: str = wait_for(node.node_id, what="node.json")
    wait_for(lambda: cp.node_status(node_id) == "online", what="node online")
    return node_id


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_register_deploy_heartbeat_stop(
    tmp_path: Path, backend: str, processes: list[Process], machines: list[Node]
) -> None:
    cp = ControlPlane(tmp_path, backend=backend).start()
    assert cp.process is not None
    processes.append(cp.process)
    machines.append(node := Node.build(tmp_path / "n1"))
    processes.append(agent := node.agent(cp.agent_url, backend).start())
    node_id = online_node(cp, node)
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
    assert node.runs(rid) == 1
    assert cp.get(f"/v1/nodes/{node_id}")["gpus_free"] == free - 1
    # A heartbeat later it is still reported running, and the GPU stays held.
    time.sleep(1.2)
    assert cp.replica(rid)["status"] == "running"

    assert cp.delete(f"/v1/replicas/{rid}").status_code == 202
    wait_for(lambda: cp.replica(rid)["status"] == "stopped", what="replica stopped")
    assert node.stops(rid) == 1
    assert cp.get(f"/v1/nodes/{node_id}")["gpus_free"] == free
    assert agent.terminate() == 0
    wait_for(lambda: cp.node_status(node_id) == "offline", what="node offline")
    assert cp.process.terminate() == 0
    for text in (cp.log, agent.log):
        assert SECRET not in text
        assert ORG_TOKEN not in text
        assert ADMIN_TOKEN not in text
    assert "API_KEY" in cp.log


def test_control_plane_restart_keeps_identity_and_delivers_pending_once(
    tmp_path: Path, processes: list[Process], machines: list[Node]
) -> None:
    cp = ControlPlane(tmp_path).start()
    assert cp.process is not None
    processes.append(cp.process)
    machines.append(node := Node.build(tmp_path / "n1"))
    processes.append(agent := node.agent(cp.agent_url).start())
    node_id = online_node(cp, node)
    rid = cp.deploy(image="busybox", replica_id="keep-1")["replica_id"]
    wait_for(lambda: cp.replica(rid)["status"] == "running", what="replica running")

    # Restart under a connected agent: it comes back with its node token.
    assert cp.process.terminate() == 0
    cp.start()
    processes.append(cp.process)
    wait_for(lambda: cp.node_status(node_id) == "online", what="node back online")
    assert [n["node_id"] for n in cp.nodes()] == [node_id]

    # A stop made while the agent is away survives another restart and is
    # delivered exactly once.
    assert agent.terminate() == 0
    wait_for(lambda: cp.node_status(node_id) == "offline", what="node offline")
    assert cp.delete(f"/v1/replicas/{rid}").status_code == 202
    assert cp.replica(rid)["status"] == "stopping"
    assert cp.process.terminate() == 0
    cp.start()
    processes.append(cp.process)
    processes.append(agent := node.agent(cp.agent_url).start())
    wait_for(lambda: cp.replica(rid)["status"] == "stopped", what="replica stopped")
    time.sleep(1.5)  # a few heartbeats and no second delivery
    assert node.stops(rid) == 1
    assert [n["node_id"] for n in cp.nodes()] == [node_id]
    assert cp.log.count("node registered") == 1
    assert node.runs(rid) == 1


def test_killed_agent_goes_offline_and_its_replica_moves(
    tmp_path: Path, processes: list[Process], machines: list[Node]
) -> None:
    cp = ControlPlane(tmp_path, offline_after=2.0).start()
    assert cp.process is not None
    processes.append(cp.process)
    machines.append(first := Node.build(tmp_path / "n1"))
    processes.append(agent := first.agent(cp.agent_url).start())
    first_id = online_node(cp, first)
    rid = cp.deploy(image="busybox", replica_id="moving-1", gpu_count=1)["replica_id"]
    wait_for(lambda: cp.replica(rid)["status"] == "running", what="replica running")
    machines.append(second := Node.build(tmp_path / "n2"))
    processes.append(second.agent(cp.agent_url).start())
    second_id = online_node(cp, second)

    agent.kill()
    wait_for(lambda: cp.node_status(first_id) == "offline", timeout=5, what="offline at once")
    moved = wait_for(
        lambda: (r := cp.replica(rid))["node_id"] == second_id and r["status"] == "running",
        what="replica running on the second node",
    )
    assert moved
    assert second.runs(rid) == 1
    assert cp.get(f"/v1/nodes/{first_id}")["replicas"] == []


def test_drain_then_maintenance_then_resume(
    tmp_path: Path, processes: list[Process], machines: list[Node]
) -> None:
    cp = ControlPlane(tmp_path).start()
    assert cp.process is not None
    processes.append(cp.process)
    machines.append(node := Node.build(tmp_path / "n1"))
    processes.append(node.agent(cp.agent_url).start())
    node_id = online_node(cp, node)
    rid = cp.deploy(image="busybox", replica_id="drain-1")["replica_id"]
    wait_for(lambda: cp.replica(rid)["status"] == "running", what="replica running")

    drained = cp.post(f"/v1/nodes/{node_id}/drain").json()
    assert (drained["status"], drained["hold"]) == ("draining", "drain")
    with cp.http() as http:
        assert http.post("/v1/replicas", json={"image": "busybox"}).status_code == 409
    assert cp.delete(f"/v1/replicas/{rid}").status_code == 202
    wait_for(lambda: cp.node_status(node_id) == "maintenance", what="maintenance")
    resumed = cp.post(f"/v1/nodes/{node_id}/resume").json()
    assert (resumed["status"], resumed["hold"]) == ("online", None)


def test_control_plane_cannot_start_is_exit_1(tmp_path: Path) -> None:
    bad_db = tmp_path / "not-a-db"
    bad_db.write_bytes(b"garbage" * 1000)
    argv = [sys.executable, "-m", "vectorlay", "control-plane", "--db", str(bad_db)]
    argv += ["--listen", f"127.0.0.1:{free_port()}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "cannot open the control-plane store" in result.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "vectorlay", "control-plane"]
        argv += ["--db", str(tmp_path / "ok.sqlite3"), "--listen", f"127.0.0.1:{port}"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
