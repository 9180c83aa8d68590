"""The `vectorlay-agent run` process deploying onto a real engine (``--engine podman|docker``).

A fake host (lspci, /proc, /sys, kata-runtime & co.) stands in for the GPU
machine; the containers are real.  The control plane is a scripted peer.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import Names
from tests.fakes.host.fakehost import PASSTHROUGH, FakeHost, Profile, build_fake_host
from tests.support import SECRET, Process, Reaper
from tests.support import engine as real
from tests.support.commands import vectorlay_argv
from tests.support.tokens import ORG_TOKEN
from tests.support.wspeer import PeerSession, WsPeer, register
from vectorlay.domain.agent.replicas import container_name
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    Heartbeat,
    ReplicaReport,
    ReplicaStatus,
    Stop,
    StopPayload,
    StopResult,
    SystemInfo,
)

pytestmark = [pytest.mark.engine, pytest.mark.integration]

NODE_ID = "node-engine-1"
DETECTION_DEADLINE = 2.0
# The fake host's GPUs, in IOMMU groups no machine here has: the test makes
# their /dev/vfio nodes as copies of /dev/null.
FIRST_GROUP = 4300
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _profile() -> Profile:
    functions = tuple(
        dataclasses.replace(f, iommu_group=str(FIRST_GROUP + int(f.iommu_group) - 30))
        if f.iommu_group is not None
        else f
        for f in PASSTHROUGH.functions
    )
    return dataclasses.replace(PASSTHROUGH, functions=functions)


PROFILE = _profile()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    host = build_fake_host(tmp_path / "host", PROFILE)
    groups = sorted({f.iommu_group for f in PROFILE.functions if f.iommu_group is not None})
    made = [real.make_device(g) for g in groups]
    yield host
    for node in made:
        real.remove_device(node)


@pytest.fixture
def peer() -> Iterator[WsPeer]:
    with WsPeer() as p:
        yield p


def agent(
    engine: real.Engine, host: FakeHost, state_dir: Path, url: str, *, token: bool = True
) -> Process:
    argv = vectorlay_argv(
        "run",
        "--control-plane",
        url,
        "--state-dir",
        str(state_dir),
        "--data-path",
        str(host.data),
        "--engine",
        engine.name,
        "--engine-cli",
        engine.cli,
        "--oci-runtime",
        engine.oci_runtime,
        "--heartbeat-interval",
        "1",
        "--reconnect-delay",
        "0.2",
        "--stop-timeout",
        "10",
        "--log-level",
        "debug",
    )
    env = {
        **host.env({}),
        **engine.env,
        # The fake host's programs first (lspci, kata-runtime, ...); the engine's
        # own helpers (conmon, runc) from the system.
        "PATH": os.pathsep.join([str(host.bin), str(Path(sys.executable).parent), *SYSTEM_PATH]),
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if token:
        env["VECTORLAY_ORG_TOKEN"] = ORG_TOKEN
    return Process(argv, env, state_dir.parent / "agent.log")


def deploy(session: PeerSession, rid: str, gpus: int = 0, **env: str) -> DeployResult:
    session.send_message(Deploy(DeployPayload(rid, real.IMAGE, gpus, dict(env))))
    while True:
        result = session.receive_until(DeployResult, timeout=60)
        if result.payload.replica_id == rid:
            return result


def status_of(message: Heartbeat | SystemInfo, rid: str) -> ReplicaStatus | None:
    reports = (
        message.payload.status.containers
        if isinstance(message, Heartbeat)
        else message.payload.replicas
    )
    return next((r.status for r in reports if r.replica_id == rid), None)


def until_status(
    session: PeerSession, rid: str, wanted: set[ReplicaStatus | None], timeout: float
) -> float:
    """Wait for a heartbeat that shows ``rid`` in one of ``wanted``; when it came."""
    deadline = time.monotonic() + timeout
    while True:
        beat = session.receive_until(Heartbeat, timeout=max(0.1, deadline - time.monotonic()))
        if status_of(beat, rid) in wanted:
            return time.time()


def test_the_agent_runs_replicas_on_a_real_engine(
    engine: real.Engine, host: FakeHost, peer: WsPeer, reaper: Reaper, rids: Names, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    env_dir = state_dir / "env"
    first = agent(engine, host, state_dir, peer.url).start(reaper)
    session = register(peer, NODE_ID)

    # Deploy with env values (and a GPU, whose VFIO group node is a /dev/null).
    web = rids("web")
    gpus = 1 if engine.devices else 0
    result = deploy(session, web, gpus, API_TOKEN=SECRET, MODEL="tiny-model")
    assert result.payload.status is ReplicaStatus.RUNNING, result.payload.error
    assert list(env_dir.iterdir()) == []
    inside = real.exec_env(container_name(web))
    assert (inside["API_TOKEN"], inside["MODEL"]) == (SECRET, "tiny-model")
    item = real.inspect(container_name(web))
    assert item is not None
    labels = item["Config"]["Labels"]  # type: ignore[index]
    assert labels["vectorlay.replica-id"] == web
    if gpus:
        devices = item["HostConfig"]["Devices"]  # type: ignore[index]
        [device] = devices
        address = labels["vectorlay.gpus"]
        [group] = [f.iommu_group for f in PROFILE.functions if f.address == address]
        # PathInContainer, not PathOnHost: Podman works the host path back out of
        # major:minor, which every /dev/null stand-in shares.
        assert device["PathInContainer"] == f"/dev/vfio/{group}"

    # A failing container: its exit reaches the control plane within 2 s.
    failing = rids("fail")
    result = deploy(session, failing, VL_SLEEP="1", VL_EXIT="3")
    assert result.payload.status is ReplicaStatus.RUNNING, result.payload.error
    heard = until_status(session, failing, {ReplicaStatus.FAILED}, 10)
    latency = heard - real.finished_at(container_name(failing))
    assert latency <= DETECTION_DEADLINE, f"exit reported {latency:.2f} s after it happened"
    # Reports that carry the exit code (PROTOCOL.md) carry the container's.
    if "exit_code" in ReplicaReport.__struct_fields__:
        beat = session.receive_until(Heartbeat)
        [report] = [r for r in beat.payload.status.containers if r.replica_id == failing]
        assert getattr(report, "exit_code", None) == 3

    # A name held by a container that is not this replica's: refused, untouched.
    taken = rids("taken")
    made = real.podman("run", "-d", "--name", container_name(taken), real.IMAGE)
    assert made.returncode == 0, made.stderr
    result = deploy(session, taken)
    assert result.payload.status is ReplicaStatus.FAILED
    assert "already in use" in (result.payload.error or "")
    assert real.inspect(container_name(taken)) is not None

    # Stop with grace: the container's PID 1 ends on SIGTERM, and nothing is left.
    started = time.monotonic()
    session.send_message(Stop(StopPayload(web)))
    stopped = session.receive_until(StopResult, timeout=30)
    assert stopped.payload.status is ReplicaStatus.STOPPED
    assert time.monotonic() - started < 8
    assert real.inspect(container_name(web)) is None

    # An agent restart adopts what runs.
    kept = rids("kept")
    assert deploy(session, kept).payload.status is ReplicaStatus.RUNNING
    assert first.terminate(15) == 0
    assert real.inspect(container_name(kept)) is not None
    second = agent(engine, host, state_dir, peer.url, token=False).start(reaper)
    again = peer.accept(timeout=20)
    info = again.receive_until(SystemInfo, timeout=20)
    assert status_of(info, kept) is ReplicaStatus.RUNNING
    assert status_of(info, failing) is ReplicaStatus.FAILED

    # Removed behind the agent's back: the control plane hears it is no longer running.
    removed = real.podman("rm", "-f", "-t", "0", container_name(kept))
    assert removed.returncode == 0, removed.stderr
    gone = time.time()
    heard = until_status(again, kept, {None, ReplicaStatus.FAILED, ReplicaStatus.EXITED}, 10)
    assert heard - gone <= DETECTION_DEADLINE + 1.0

    second.terminate(15)
    for process in (first, second):
        assert SECRET not in process.log
    assert list(env_dir.iterdir()) == []
