"""Deploy and stop through a live session: results, ordering, refusals, bad frames."""

from __future__ import annotations

import anyio
import pytest

from tests.unit.agent_harness import deploy, open_session, recv_until, running_agent
from vectorlay.adapters.memory import MemoryRuntime, sample_report
from vectorlay.domain.agent.replicas import ContainerState
from vectorlay.domain.messages import (
    DeployResult,
    Error,
    ReplicaStatus,
    Stop,
    StopPayload,
    StopResult,
    SystemInfo,
)
from vectorlay.errors import ContainerRuntimeError


async def test_deploy_is_idempotent_and_stop_frees_gpus() -> None:
    async with running_agent(gpus=1) as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a", gpus=1, TOKEN="hunter2"))
        first = await recv_until(peer, DeployResult)
        assert first.payload.status is ReplicaStatus.RUNNING
        assert h.runtime.specs["a"].env == {"TOKEN": "hunter2"}
        await peer.send_message(deploy("a", gpus=1))
        again = await recv_until(peer, DeployResult)
        assert again.payload.status is ReplicaStatus.RUNNING
        assert [c for c in h.runtime.calls if c[0] == "run"] == [("run", "a")]
        await peer.send_message(deploy("b", gpus=1))
        full = await recv_until(peer, DeployResult)
        assert full.payload.status is ReplicaStatus.FAILED
        assert full.payload.error is not None
        assert "not enough free GPUs" in full.payload.error
        await peer.send_message(Stop(StopPayload("a")))
        stopped = await recv_until(peer, StopResult)
        assert stopped.payload.status is ReplicaStatus.STOPPED
        await peer.send_message(deploy("b", gpus=1))
        ok = await recv_until(peer, DeployResult)
        assert ok.payload.status is ReplicaStatus.RUNNING
        await peer.send_message(Stop(StopPayload("never-existed")))
        unknown = await recv_until(peer, StopResult)
        assert unknown.payload.status is ReplicaStatus.STOPPED


async def test_commands_for_one_replica_run_in_order() -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        gate = h.runtime.gate("run")
        await peer.send_message(deploy("a"))
        await peer.send_message(Stop(StopPayload("a")))
        await h.settle()
        assert [c[0] for c in h.runtime.calls if c[1] == "a"] == ["run"]
        gate.set()
        assert isinstance(await recv_until(peer, DeployResult), DeployResult)
        stop = await recv_until(peer, StopResult)
        assert stop.payload.status is ReplicaStatus.STOPPED
        assert "a" not in h.runtime.containers


async def test_runtime_failure_is_reported_and_frees_gpus() -> None:
    async with running_agent(gpus=1) as h:
        peer = await open_session(h)
        h.runtime.fail_next("run", ContainerRuntimeError("image not found: ghcr.io/acme/llm:1.2"))
        await peer.send_message(deploy("a", gpus=1))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.FAILED
        assert result.payload.error == "image not found: ghcr.io/acme/llm:1.2"
        await peer.send_message(deploy("b", gpus=1))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.RUNNING


async def test_degraded_node_refuses_deploys_without_touching_the_runtime() -> None:
    async with running_agent(ready=False) as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a"))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.FAILED
        assert result.payload.error is not None
        assert "degraded" in result.payload.error
        assert h.runtime.calls == [("list", ""), ("list", "")]


@pytest.mark.parametrize(
    ("frame", "expect"),
    [
        ('{"type":"deploy","payload":{"replica_id":"a","image":"x","gpu_count":"1"}}', "result"),
        ('{"type":"deploy","payload":{"replica_id":"a","image":"Bad Image!"}}', "result"),
        ('{"type":"deploy","payload":{"replica_id":"a;rm","image":"nginx"}}', "result"),
        ('{"type":"deploy","payload":{"image":"nginx"}}', "invalid_message"),
        ('{"type":"stop","payload":{"replica_id":7}}', "invalid_message"),
        ('{"type":"heartbeat","payload":{}}', "unknown_type"),
        ("not json", "invalid_message"),
        ("[]", "invalid_message"),
        (b"\x00\x01binary", "invalid_message"),
        ("x" * (1024 * 1024 + 1), "too_large"),
    ],
)
async def test_bad_frames_get_an_answer_and_the_session_continues(
    frame: str | bytes, expect: str
) -> None:
    async with running_agent() as h:
        peer = await open_session(h)
        await peer.send(frame)
        if expect == "result":
            reply = await recv_until(peer, DeployResult)
            assert reply.payload.status is ReplicaStatus.FAILED
            assert reply.payload.error
        else:
            error = await recv_until(peer, Error)
            assert error.payload.code == expect
        assert [c for c in h.runtime.calls if c[0] == "run"] == []
        # Still alive: a valid deploy works.
        await peer.send_message(deploy("ok"))
        good = await recv_until(peer, DeployResult)
        assert good.payload.status is ReplicaStatus.RUNNING


class StaleListRuntime(MemoryRuntime):
    """A runtime whose list answers late with what it saw when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_lists = False
        self.release = anyio.Event()

    async def list(self) -> list[ContainerState]:
        snapshot = [self.containers[k] for k in sorted(self.containers)]
        if self.hold_lists:
            await self.release.wait()
        return snapshot


async def test_a_list_taken_before_a_deploy_finished_never_frees_its_gpus() -> None:
    runtime = StaleListRuntime()
    async with running_agent(gpus=1, runtime=runtime) as h:
        peer = await open_session(h)
        runtime.hold_lists = True
        runtime._notify()  # the watcher starts a list and waits
        await h.settle()
        await peer.send_message(deploy("a", gpus=1))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.RUNNING
        runtime.release.set()  # the stale list (without "a") arrives now
        runtime.hold_lists = False
        await h.settle()
        await peer.send_message(deploy("b", gpus=1))
        refused = await recv_until(peer, DeployResult)
        assert refused.payload.status is ReplicaStatus.FAILED
        assert h.agent.table.double_assigned() == {}
        assert h.agent.table.get("a") is not None


async def test_readiness_change_mid_session_sends_system_info_again() -> None:
    async with running_agent(reprobe_interval=60) as h:
        peer = await open_session(h)
        h.probe.host = sample_report(ready=False, gpus=2)
        await h.advance(60)
        info = await recv_until(peer, SystemInfo)
        assert info.payload.ready is False
        await peer.send_message(deploy("x"))
        refused = await recv_until(peer, DeployResult)
        assert refused.payload.status is ReplicaStatus.FAILED


async def test_a_deploy_meeting_its_own_container_adopts_it() -> None:
    async with running_agent(gpus=2) as h:
        peer = await open_session(h)
        # A container for "a" appears that the table does not know (the nerdctl
        # call of an agent killed mid-deploy finished after the restart).
        h.runtime.containers["a"] = ContainerState(
            "a", ReplicaStatus.RUNNING, gpus=("0000:18:00.0",), image="nginx"
        )
        await peer.send_message(deploy("a", gpus=1))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.RUNNING
        replica = h.agent.table.get("a")
        assert replica is not None
        assert replica.gpus == ("0000:18:00.0",)
        await peer.send_message(deploy("b", gpus=1))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.RUNNING
        assert [g.pci_address for g in h.runtime.specs["b"].gpus] == ["0000:17:00.0"]
        assert h.agent.table.double_assigned() == {}
