"""The real `vectorlay-agent run` process against a WebSocket peer on 127.0.0.1.

The agent runs with a fake host (fake lspci & co., fake /proc and /sys) and
the stateful fake nerdctl; the peer is scripted from the test.
"""

from __future__ import annotations

import time

import pytest

from tests.support import NODE_TOKEN, ORG_TOKEN, SECRET, AgentNode, Reaper
from tests.support.wspeer import WsPeer, register
from vectorlay.domain.agent.replicas import container_name
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    Error,
    Heartbeat,
    ReplicaStatus,
    Stop,
    StopPayload,
    StopResult,
    SystemInfo,
)

pytestmark = pytest.mark.integration

NODE_ID = "node-int-1"


def deploy(rid: str, gpus: int = 0, **env: str) -> Deploy:
    return Deploy(DeployPayload(rid, "ghcr.io/acme/llm:1.2", gpus, dict(env)))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_register_sigterm_then_restart_with_node_token(
    node: AgentNode, peer: WsPeer, reaper: Reaper, backend: str
) -> None:
    agent = node.agent(peer.url, backend=backend).start(reaper)
    session = register(peer, NODE_ID)
    assert session.headers["sec-websocket-protocol"] == "vectorlay.agent.v1"
    assert session.headers["user-agent"].startswith("vectorlay-agent/")
    assert node.node_json.stat().st_mode & 0o777 == 0o600
    assert node.state_dir.stat().st_mode & 0o777 == 0o700
    beat = session.receive_until(Heartbeat)
    assert beat.payload.seq is not None
    started = time.monotonic()
    assert agent.terminate(10) == 0
    assert time.monotonic() - started < 5
    assert session.wait_closed() == 1001

    again = node.agent(peer.url, backend=backend, org_token=None).start(reaper)
    second = peer.accept(timeout=15)
    assert second.headers["authorization"] == f"Bearer {NODE_TOKEN}"
    first = second.receive_message(timeout=10)
    assert isinstance(first, SystemInfo)  # no register: the node.json identity is used
    assert first.payload.node_id == NODE_ID
    again.terminate(10)
    assert ORG_TOKEN not in agent.log
    assert NODE_TOKEN not in agent.log


def test_deploy_and_stop_keep_the_secret_out_of_logs_and_argv(
    node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    agent = node.agent(peer.url).start(reaper)
    session = register(peer, NODE_ID)
    session.send_message(deploy("web-1", gpus=1, API_KEY=SECRET, DSN="a=b=c"))
    result = session.receive_until(DeployResult)
    assert result.payload.status is ReplicaStatus.RUNNING, result.payload.error
    running = session.receive_until(Heartbeat)
    assert [(c.replica_id, c.status) for c in running.payload.status.containers] == [
        ("web-1", ReplicaStatus.RUNNING)
    ]
    container = node.nerdctl.container(container_name("web-1"))
    assert container is not None
    session.send_message(Stop(StopPayload("web-1")))
    stopped = session.receive_until(StopResult)
    assert stopped.payload.status is ReplicaStatus.STOPPED
    assert node.nerdctl.container(container_name("web-1")) is None
    agent.terminate()
    argvs = [" ".join(call.argv) for call in node.nerdctl.calls()]
    assert any("--env-file" in a for a in argvs)
    assert not any(SECRET in a for a in argvs)
    assert SECRET not in agent.log
    assert node.env_files() == []


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
    node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    agent = node.agent(peer.url).start(reaper)
    session = register(peer, NODE_ID)
    runs_before = len([c for c in node.nerdctl.calls() if c.op == "run"])
    for frame in BAD_FRAMES:
        if isinstance(frame, bytes):
            session.send_bytes(frame)
        else:
            session.send_text(frame)
        reply = session.receive_until(Error)
        assert reply.payload.code in {"invalid_message", "unknown_type", "too_large"}
        assert agent.alive()
    for frame in BAD_DEPLOYS:
        session.send_text(frame)
        result = session.receive_until(DeployResult)
        assert result.payload.status is ReplicaStatus.FAILED
        assert result.payload.error
    assert len([c for c in node.nerdctl.calls() if c.op == "run"]) == runs_before
    session.send_message(deploy("good-1"))
    assert session.receive_until(DeployResult).payload.status is ReplicaStatus.RUNNING
    agent.terminate()


def test_control_plane_restart_delivers_the_outbox_once(
    node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    agent = node.agent(peer.url).start(reaper)
    session = register(peer, NODE_ID)
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
    assert again.receive_until(DeployResult).payload.status is ReplicaStatus.RUNNING
    names = [c["name"] for c in node.nerdctl.containers()]
    assert names.count(container_name("slow-1")) == 1
    agent.terminate()
    assert node.nerdctl.container(container_name("slow-1")) is not None  # left running


def test_a_silent_peer_is_detected_and_the_agent_reconnects(
    node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    agent = node.agent(peer.url).start(reaper)
    session = register(peer, NODE_ID)
    session.go_silent()  # half-open: no pongs, no close
    started = time.monotonic()
    again = peer.accept(timeout=25)
    took = time.monotonic() - started
    # interval 1 s: ping after 2 s of silence, dead 10 s later.
    assert took <= 2 * 1 + 10 + 3
    assert isinstance(again.receive_message(timeout=10), SystemInfo)
    agent.terminate()


def test_4401_exits_non_zero_and_keeps_node_json(
    node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    agent = node.agent(peer.url).start(reaper)
    session = register(peer, NODE_ID)
    saved = node.node_json.read_bytes()
    session.close(4401, "unauthorized")
    assert agent.wait(10) == 3
    assert node.node_json.read_bytes() == saved
    assert "rejected" in agent.log or "unauthorized" in agent.log


def test_no_token_and_no_node_json_is_a_one_line_error(
    node: AgentNode, peer: WsPeer, reaper: Reaper
) -> None:
    agent = node.agent(peer.url, org_token=None).start(reaper)
    assert agent.wait(10) == 2
    errors = [line for line in agent.log.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert "VECTORLAY_ORG_TOKEN" in errors[0]
    # A configuration error leaves nothing behind in the state directory.
    assert not node.env_dir.exists()
    # At the default level the error is all it prints.
    agent.log_path.write_text("")
    quiet = node.agent(peer.url, org_token=None, log_level="info").start(reaper)
    assert quiet.wait(10) == 2
    assert len(quiet.log.splitlines()) == 1, quiet.log


def test_ws_to_a_remote_host_is_refused_without_insecure(node: AgentNode, reaper: Reaper) -> None:
    agent = node.agent("ws://203.0.113.7:8787/v1/agent").start(reaper)
    assert agent.wait(10) == 2
    assert "insecure" in agent.log.lower()
