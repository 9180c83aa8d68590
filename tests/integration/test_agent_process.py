"""The real `vectorlay-agent run` process against a WebSocket peer on 127.0.0.1.

The agent runs with a fake host (fake lspci & co., fake /proc and /sys) and
the stateful fake nerdctl; the peer is scripted from the test.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.fakes.host.fakehost import FakeHost, build_fake_host
from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl
from tests.integration.wspeer import PeerSession, WsPeer
from tests.support import agent_argv, agent_env
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    Error,
    Heartbeat,
    Message,
    Register,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    ReplicaStatus,
    Stop,
    StopPayload,
    StopResult,
    SystemInfo,
)

pytestmark = pytest.mark.integration

ORG_TOKEN = "org-tok-5f1d2c3b4a"
NODE_TOKEN = "node-tok-9e8d7c6b5a"
SECRET = "s3cr3t-value-7a6b5c"
M = TypeVar("M", bound=Message)


@dataclass
class AgentProcess:
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[str] = field(default_factory=list)

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        log.close()
        return self

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def terminate(self) -> tuple[int, float]:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        return code, time.monotonic() - started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """End a leftover agent; SIGTERM first so that its nerdctl watcher ends too."""
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Node:
    host: FakeHost
    nerdctl: FakeNerdctl
    state_dir: Path
    tmp: Path

    def agent(
        self, url: str, *, backend: str = "asyncio", token: bool = True, log_level: str = "debug"
    ) -> AgentProcess:
        env = agent_env(self.host, self.nerdctl, org_token=ORG_TOKEN if token else None)
        argv = agent_argv(
            url,
            state_dir=self.state_dir,
            nerdctl=self.nerdctl,
            log_level=log_level,
            extra=("--backend", backend),
        )
        return AgentProcess(argv, env, self.tmp / "agent.log")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    fake = FakeNerdctl(tmp_path / "nerdctl")
    yield Node(build_fake_host(tmp_path / "host"), fake, tmp_path / "state", tmp_path)
    fake.close()


@pytest.fixture
def peer() -> Iterator[WsPeer]:
    with WsPeer() as p:
        yield p


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


def until(session: PeerSession, kind: type[M], timeout: float = 10.0) -> M:
    deadline = time.monotonic() + timeout
    while True:
        msg = session.receive_message(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(msg, kind):
            return msg


def register(peer: WsPeer) -> PeerSession:
    session = peer.accept(timeout=15)
    assert session.headers["authorization"] == f"Bearer {ORG_TOKEN}"
    assert isinstance(session.receive_message(timeout=10), Register)
    session.send_message(RegistrationSuccess(RegistrationSuccessPayload("node-int-1", NODE_TOKEN)))
    info = session.receive_message(timeout=10)
    assert isinstance(info, SystemInfo)
    assert info.payload.node_id == "node-int-1"
    return session


def deploy(rid: str, gpus: int = 0, **env: str) -> Deploy:
    return Deploy(DeployPayload(rid, "ghcr.io/acme/llm:1.2", gpus, dict(env)))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_register_sigterm_then_restart_with_node_token(
    node: Node, peer: WsPeer, agents: list[AgentProcess], backend: str
) -> None:
    agent = node.agent(peer.url, backend=backend)
    agents.append(agent.start())
    session = register(peer)
    assert session.headers["sec-websocket-protocol"] == "vectorlay.agent.v1"
    assert session.headers["user-agent"].startswith("vectorlay-agent/")
    saved = node.state_dir / "node.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert node.state_dir.stat().st_mode & 0o777 == 0o700
    beat = until(session, Heartbeat)
    assert beat.payload.seq is not None
    code, took = agent.terminate()
    assert code == 0
    assert took < 5
    assert session.wait_closed() == 1001

    again = node.agent(peer.url, backend=backend, token=False)
    agents.append(again.start())
    second = peer.accept(timeout=15)
    assert second.headers["authorization"] == f"Bearer {NODE_TOKEN}"
    first = second.receive_message(timeout=10)
    assert isinstance(first, SystemInfo)  # no register: the node.json identity is used
    assert first.payload.node_id == "node-int-1"
    again.terminate()
    assert ORG_TOKEN not in agent.log
    assert NODE_TOKEN not in agent.log


def test_deploy_and_stop_keep_the_secret_out_of_logs_and_argv(
    node: Node, peer: WsPeer, agents: list[AgentProcess]
) -> None:
    agent = node.agent(peer.url)
    agents.append(agent.start())
    session = register(peer)
    session.send_message(deploy("web-1", gpus=1, API_KEY=SECRET, DSN="a=b=c"))
    result = until(session, DeployResult)
    assert result.payload.status is ReplicaStatus.RUNNING, result.payload.error
    running = until(session, Heartbeat)
    assert [(c.replica_id, c.status) for c in running.payload.status.containers] == [
        ("web-1", ReplicaStatus.RUNNING)
    ]
    container = node.nerdctl.container("replica-web-1")
    assert container is not None
    session.send_message(Stop(StopPayload("web-1")))
    stopped = until(session, StopResult)
    assert stopped.payload.status is ReplicaStatus.STOPPED
    assert node.nerdctl.container("replica-web-1") is None
    agent.terminate()
    argvs = [" ".join(call.argv) for call in node.nerdctl.calls()]
    assert any("--env-file" in a for a in argvs)
    assert not any(SECRET in a for a in argvs)
    assert SECRET not in agent.log
    assert list((node.state_dir / "env").iterdir()) == []


BAD_FRAMES: list[str | bytes] = [
    "",
    "not json",
    "{",
    "[]",
    "null",
    "42",
    '"deploy"',
    "{}",
    '{"type": 7, "payload": {}}',
    '{"type": "launch_missiles", "payload": {}}',
    '{"type": "heartbeat", "payload": {"status": {}}}',
    '{"type": "deploy"}',
    '{"type": "deploy", "payload": []}',
    '{"type": "deploy", "payload": {"image": "nginx"}}',
    '{"type": "stop", "payload": {"replica_id": null}}',
    '{"type": "error", "payload": {"code": 1}}',
    '{"type": "registration_success", "payload": {"node_id": "x", "node_token": "y"}}',
    "[" * 100_000,
    "x" * (1024 * 1024 + 10),
    b"\x00\xff binary frame",
]
BAD_DEPLOYS: list[str] = [
    '{"type": "deploy", "payload": {"replica_id": "bad-1", "image": "nginx", "gpu_count": "2"}}',
    '{"type": "deploy", "payload": {"replica_id": "bad-2", "image": "nginx", "gpu_count": true}}',
    '{"type": "deploy", "payload": {"replica_id": "bad-3", "image": "nginx", "gpu_count": -1}}',
    '{"type": "deploy", "payload": {"replica_id": "bad-4", "image": "a;rm -rf /"}}',
    '{"type": "deploy", "payload": {"replica_id": "bad-5", "image": "acme/UPPER"}}',
    '{"type": "deploy", "payload": {"replica_id": "bad 6", "image": "nginx"}}',
    '{"type": "deploy", "payload": {"replica_id": "bad-7", "image": "nginx",'
    ' "env_vars": {"A": "x\\ny"}}}',
    '{"type": "deploy", "payload": {"replica_id": "bad-8", "image": "nginx",'
    ' "env_vars": {"1A": "x"}}}',
    '{"type": "deploy", "payload": {"replica_id": "bad-9", "image": "nginx", "gpu_count": 99}}',
]


def test_bad_frames_are_answered_and_never_reach_the_runtime(
    node: Node, peer: WsPeer, agents: list[AgentProcess]
) -> None:
    agent = node.agent(peer.url)
    agents.append(agent.start())
    session = register(peer)
    runs_before = len([c for c in node.nerdctl.calls() if c.op == "run"])
    for frame in BAD_FRAMES:
        if isinstance(frame, bytes):
            session.send_bytes(frame)
        else:
            session.send_text(frame)
        reply = until(session, Error)
        assert reply.payload.code in {"invalid_message", "unknown_type", "too_large"}
        assert agent.alive()
    for frame in BAD_DEPLOYS:
        session.send_text(frame)
        result = until(session, DeployResult)
        assert result.payload.status is ReplicaStatus.FAILED
        assert result.payload.error
    assert len([c for c in node.nerdctl.calls() if c.op == "run"]) == runs_before
    session.send_message(deploy("good-1"))
    assert until(session, DeployResult).payload.status is ReplicaStatus.RUNNING
    agent.terminate()


def test_control_plane_restart_delivers_the_outbox_once(
    node: Node, peer: WsPeer, agents: list[AgentProcess]
) -> None:
    agent = node.agent(peer.url)
    agents.append(agent.start())
    session = register(peer)
    node.nerdctl.delay("run", 1.5, times=1)
    session.send_message(deploy("slow-1"))
    time.sleep(0.3)
    peer.kill()  # vanishes mid-deploy, no close frame
    time.sleep(2.0)  # the deploy finishes while disconnected
    peer.start()  # same port
    again = peer.accept(timeout=20)
    info = again.receive_message(timeout=10)
    assert isinstance(info, SystemInfo)
    assert [(r.replica_id, r.status) for r in info.payload.replicas] == [
        ("slow-1", ReplicaStatus.RUNNING)
    ]
    queued = again.receive_message(timeout=10)
    assert isinstance(queued, DeployResult)
    assert queued.payload.replica_id == "slow-1"
    assert isinstance(again.receive_message(timeout=10), Heartbeat)
    # The control plane re-sends the unanswered command: no second container.
    again.send_message(deploy("slow-1"))
    assert until(again, DeployResult).payload.status is ReplicaStatus.RUNNING
    names = [c["name"] for c in node.nerdctl.containers()]
    assert names.count("replica-slow-1") == 1
    agent.terminate()
    assert node.nerdctl.container("replica-slow-1") is not None  # left running


def test_a_silent_peer_is_detected_and_the_agent_reconnects(
    node: Node, peer: WsPeer, agents: list[AgentProcess]
) -> None:
    agent = node.agent(peer.url)
    agents.append(agent.start())
    session = register(peer)
    session.go_silent()  # half-open: no pongs, no close
    started = time.monotonic()
    again = peer.accept(timeout=25)
    took = time.monotonic() - started
    # interval 1 s: ping after 2 s of silence, dead 10 s later.
    assert took <= 2 * 1 + 10 + 3
    assert isinstance(again.receive_message(timeout=10), SystemInfo)
    agent.terminate()


def test_4401_exits_non_zero_and_keeps_node_json(
    node: Node, peer: WsPeer, agents: list[AgentProcess]
) -> None:
    agent = node.agent(peer.url)
    agents.append(agent.start())
    session = register(peer)
    saved = (node.state_dir / "node.json").read_bytes()
    session.close(4401, "unauthorized")
    assert agent.wait(10) == 3
    assert (node.state_dir / "node.json").read_bytes() == saved
    assert "rejected" in agent.log or "unauthorized" in agent.log


def test_no_token_and_no_node_json_is_a_one_line_error(node: Node, peer: WsPeer) -> None:
    agent = node.agent(peer.url, token=False).start()
    assert agent.wait(10) == 2
    errors = [line for line in agent.log.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert "VECTORLAY_ORG_TOKEN" in errors[0]
    # At the default level the error is all it prints.
    agent.log_path.write_text("")
    quiet = node.agent(peer.url, token=False, log_level="info").start()
    assert quiet.wait(10) == 2
    assert len(quiet.log.splitlines()) == 1, quiet.log


def test_ws_to_a_remote_host_is_refused_without_insecure(node: Node) -> None:
    agent = node.agent("ws://203.0.113.7:8787/v1/agent").start()
    assert agent.wait(10) == 2
    assert "insecure" in agent.log.lower()
