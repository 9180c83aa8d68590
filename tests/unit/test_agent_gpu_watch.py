"""The agent re-reads GPU state every interval: system_info on a change, quarantine, no stops."""

from __future__ import annotations

import msgspec

from tests.unit.agent_harness import deploy, open_session, recv, recv_until, running_agent
from vectorlay.adapters.memory import MemoryPeer, StaticProbe, sample_report
from vectorlay.domain.messages import (
    DeployResult,
    Gpu,
    Heartbeat,
    HostReport,
    ReplicaStatus,
    SystemInfo,
)
from vectorlay.errors import ContainerRuntimeError, ImageNotFound

INTERVAL = 30.0


def with_gpu(report: HostReport, index: int, **changes: object) -> HostReport:
    gpus = list(report.hardware.gpus)
    gpus[index] = msgspec.structs.replace(gpus[index], **changes)
    return msgspec.structs.replace(
        report, hardware=msgspec.structs.replace(report.hardware, gpus=gpus)
    )


async def next_system_info(peer: MemoryPeer) -> SystemInfo:
    return await recv_until(peer, SystemInfo)


async def test_a_health_change_sends_system_info_within_an_interval() -> None:
    async with running_agent(gpus=2) as h:
        peer = await open_session(h)
        await peer.send_message(deploy("a", gpus=1))
        result = await recv_until(peer, DeployResult)
        assert result.payload.status is ReplicaStatus.RUNNING
        held = result.payload.gpus
        assert held == ["0000:17:00.0"]
        # The held GPU falls off the bus.
        h.probe.host = with_gpu(
            h.probe.host,
            0,
            assignable=False,
            health="failed",
            problems=["0000:17:00.0 config space reads all ones (fallen off the bus)"],
        )
        await h.advance(INTERVAL)
        info = await next_system_info(peer)
        gpus = {g.pci_address: g for g in info.payload.hardware.gpus}
        assert (gpus["0000:17:00.0"].assignable, gpus["0000:17:00.0"].health) == (
            False,
            "failed",
        )
        # The replica on it keeps running, and still says which GPU it holds.
        assert [(r.replica_id, r.status, r.gpus) for r in info.payload.replicas] == [
            ("a", ReplicaStatus.RUNNING, ["0000:17:00.0"])
        ]
        assert [c for c in h.runtime.calls if c[0] == "stop"] == []
        # No change, no new system_info: the next message is a heartbeat.
        await h.advance(INTERVAL)
        assert isinstance(await recv(peer), Heartbeat)


async def test_three_failed_starts_quarantine_the_group_until_a_retry_succeeds() -> None:
    async with running_agent(gpus=1) as h:
        peer = await open_session(h)
        h.runtime.fail_next("run", ImageNotFound("image not found: ghcr.io/acme/llm:1.2"))
        await peer.send_message(deploy("img", gpus=1))
        assert (await recv_until(peer, DeployResult)).payload.status is ReplicaStatus.FAILED
        for n in range(3):
            h.runtime.fail_next("run", ContainerRuntimeError("vfio: group 25 is not viable"))
            await peer.send_message(deploy(f"r{n}", gpus=1))
            failed = await recv_until(peer, DeployResult)
            assert failed.payload.status is ReplicaStatus.FAILED
        info = await next_system_info(peer)  # at once, not an interval later
        (gpu,) = info.payload.hardware.gpus
        assert (gpu.assignable, gpu.health) == (False, "failed")
        assert gpu.problems == ["quarantined after 3 failed starts: vfio: group 25 is not viable"]
        await peer.send_message(deploy("refused", gpus=1))
        refused = await recv_until(peer, DeployResult)
        assert refused.payload.error == (
            "not enough free GPUs: 1 requested, 0 free; not assignable: "
            "0000:17:00.0: quarantined after 3 failed starts: vfio: group 25 is not viable"
        )
        runs = len([c for c in h.runtime.calls if c[0] == "run"])
        assert runs == 4  # the refused deploy never reached the runtime
        await h.advance(600)
        released = await next_system_info(peer)
        (gpu,) = released.payload.hardware.gpus
        assert (gpu.assignable, gpu.health) == (True, "warning")
        await peer.send_message(deploy("retry", gpus=1))
        ok = await recv_until(peer, DeployResult)
        assert ok.payload.status is ReplicaStatus.RUNNING
        cleared = await next_system_info(peer)
        (gpu,) = cleared.payload.hardware.gpus
        assert (gpu.assignable, gpu.health, gpu.problems) == (True, "ok", [])


def test_sample_gpus_are_assignable() -> None:
    assert all(isinstance(g, Gpu) and g.assignable for g in sample_report(gpus=2).hardware.gpus)


class BrokenGpuProbe(StaticProbe):
    async def gpus(self) -> list[Gpu]:
        raise RuntimeError("unexpected")


async def test_a_failing_gpu_read_does_not_end_the_session() -> None:
    probe = BrokenGpuProbe(sample_report(gpus=1))
    async with running_agent(probe=probe) as h:
        peer = await open_session(h)
        await h.advance(INTERVAL)
        await h.advance(INTERVAL)
        assert isinstance(await recv_until(peer, Heartbeat), Heartbeat)
        assert h.agent.sessions == 1
