"""GPU passthrough truth through the real `vectorlay-agent run` process, on both backends.

Fake hosts with IOMMU groups shared by two GPUs, spoiled by a host driver,
and GPUs whose health changes under the running agent; the fake nerdctl
records what reaches the runtime.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.host.fakehost import (
    AUDIO_ON_HOST,
    BRIDGE_IN_GROUP,
    DUAL_VFIO,
    GPU_A,
    GPU_B,
    TWO_GPUS_ONE_GROUP,
    VARIANT_DRIVER,
    fall_off_bus,
    remove_vfio_node,
    set_aer_total,
    set_health_file,
    vanish,
)
from tests.support import NODE_TOKEN, AgentNode, Reaper
from tests.support.wspeer import PeerSession, WsPeer, register
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    Heartbeat,
    Register,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    ReplicaStatus,
    SystemInfo,
)

pytestmark = pytest.mark.integration

NODE_ID = "node-gpu-1"
BACKENDS = ["asyncio", "trio"]


def deploy(rid: str, gpus: int) -> Deploy:
    return Deploy(DeployPayload(rid, "ghcr.io/acme/llm:1.2", gpus))


def devices(node: AgentNode, rid: str) -> list[str]:
    (run,) = node.runs(rid)
    return [run.argv[i + 1] for i, a in enumerate(run.argv) if a == "--device"]


def register_with_info(peer: WsPeer) -> tuple[PeerSession, SystemInfo]:
    session = peer.accept(timeout=20)
    assert isinstance(session.receive_message(timeout=10), Register)
    session.send_message(RegistrationSuccess(RegistrationSuccessPayload(NODE_ID, NODE_TOKEN)))
    info = session.receive_message(timeout=10)
    assert isinstance(info, SystemInfo), info
    return session, info


def result_of(session: PeerSession, rid: str) -> DeployResult:
    while True:
        result = session.receive_until(DeployResult)
        if result.payload.replica_id == rid:
            return result


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_gpus_in_one_group_go_together_or_not_at_all(
    tmp_path: Path, peer: WsPeer, reaper: Reaper, backend: str
) -> None:
    node = AgentNode.build(tmp_path, reaper, TWO_GPUS_ONE_GROUP)
    agent = node.agent(peer.url, backend=backend).start(reaper)
    session = register(peer, NODE_ID)
    session.send_message(deploy("one", 1))
    refused = result_of(session, "one")
    assert refused.payload.status is ReplicaStatus.FAILED
    assert refused.payload.error == ("no free IOMMU groups make exactly 1 GPU: free groups hold 2")
    assert node.runs("one") == []
    session.send_message(deploy("two", 2))
    ok = result_of(session, "two")
    assert ok.payload.status is ReplicaStatus.RUNNING, ok.payload.error
    assert ok.payload.gpus == [GPU_A, GPU_B]
    assert devices(node, "two") == ["/dev/vfio/12"]  # one --device for the one group
    beat = session.receive_until(Heartbeat)
    assert [(c.replica_id, c.gpus) for c in beat.payload.status.containers] == [
        ("two", [GPU_A, GPU_B])
    ]
    agent.terminate()

    # After a restart the adopted container holds the whole group again.
    again = node.agent(peer.url, backend=backend, org_token=None).start(reaper)
    second = peer.accept(timeout=15)
    info = second.receive_message(timeout=10)
    assert isinstance(info, SystemInfo)
    assert [(r.replica_id, r.gpus) for r in info.payload.replicas if r.gpus] == [
        ("two", [GPU_A, GPU_B])
    ]
    second.send_message(deploy("three", 2))
    full = result_of(second, "three")
    assert full.payload.status is ReplicaStatus.FAILED
    assert full.payload.error == "not enough free GPUs: 2 requested, 0 free"
    assert node.runs("three") == []
    again.terminate()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_viable_group_never_reaches_the_runtime(
    tmp_path: Path, peer: WsPeer, reaper: Reaper, backend: str
) -> None:
    node = AgentNode.build(tmp_path, reaper, AUDIO_ON_HOST)
    agent = node.agent(peer.url, backend=backend).start(reaper)
    session, info = register_with_info(peer)
    gpus = {g.pci_address: g for g in info.payload.hardware.gpus}
    assert gpus[GPU_A].assignable is False
    assert gpus[GPU_A].problems == [
        "IOMMU group 12 is not viable: 0000:05:00.1 is bound to snd_hda_intel"
    ]
    session.send_message(deploy("both", 2))
    refused = result_of(session, "both")
    assert refused.payload.status is ReplicaStatus.FAILED
    assert refused.payload.error == (
        "not enough free GPUs: 2 requested, 1 free; not assignable: "
        "0000:05:00.0: IOMMU group 12 is not viable: 0000:05:00.1 is bound to snd_hda_intel"
    )
    assert node.runs("both") == []
    session.send_message(deploy("one", 1))
    ok = result_of(session, "one")
    assert ok.payload.status is ReplicaStatus.RUNNING, ok.payload.error
    assert ok.payload.gpus == [GPU_B]
    assert devices(node, "one") == ["/dev/vfio/13"]
    agent.terminate()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_health_change_sends_system_info_and_stops_nothing(
    tmp_path: Path, peer: WsPeer, reaper: Reaper, backend: str
) -> None:
    node = AgentNode.build(tmp_path, reaper, DUAL_VFIO)
    agent = node.agent(peer.url, backend=backend).start(reaper)
    session = register(peer, NODE_ID)
    session.send_message(deploy("a", 1))
    ok = result_of(session, "a")
    assert ok.payload.gpus == [GPU_A]
    fall_off_bus(node.host, GPU_A)
    set_health_file(node.host, GPU_B, "current_link_width", b"4\n")
    info = session.receive_until(SystemInfo, timeout=10)
    gpus = {g.pci_address: g for g in info.payload.hardware.gpus}
    assert (gpus[GPU_A].assignable, gpus[GPU_A].health) == (False, "failed")
    assert gpus[GPU_A].problems == [f"{GPU_A} config space reads all ones (fallen off the bus)"]
    if gpus[GPU_B].health != "warning":  # the two writes fell into two reads
        info = session.receive_until(SystemInfo, timeout=10)
        gpus = {g.pci_address: g for g in info.payload.hardware.gpus}
    assert (gpus[GPU_B].assignable, gpus[GPU_B].health) == (True, "warning")
    assert [(r.replica_id, r.status) for r in info.payload.replicas] == [
        ("a", ReplicaStatus.RUNNING)
    ]
    assert node.stops("a") == []
    assert "GPU 0000:05:00.0 is now failed, not assignable" in agent.log
    agent.terminate()


def _vanish_a(node: AgentNode) -> None:
    vanish(node.host, GPU_A)


def _fatal_a(node: AgentNode) -> None:
    set_aer_total(node.host, GPU_A, "fatal", 1)


def _no_vfio_node_a(node: AgentNode) -> None:
    remove_vfio_node(node.host, "12")


def _no_reset_a(node: AgentNode) -> None:
    set_health_file(node.host, GPU_A, "reset_method", b"")


def _narrow_link_a(node: AgentNode) -> None:
    set_health_file(node.host, GPU_A, "current_link_width", b"4\n")


CHANGES = {
    "vanished": (_vanish_a, False, "failed", f"{GPU_A} is gone from sysfs (removed from the bus)"),
    "aer-fatal": (_fatal_a, False, "failed", f"{GPU_A} reported 1 fatal PCIe error(s) (AER)"),
    "no-vfio-node": (_no_vfio_node_a, False, "ok", "/dev/vfio/12 is missing"),
    "reset-disabled": (_no_reset_a, True, "warning", "reset_method is empty"),
    "link-x4": (_narrow_link_a, True, "warning", "PCIe link trained at x4 of x16"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_host_side_change_reaches_the_control_plane(
    tmp_path: Path, peer: WsPeer, reaper: Reaper, backend: str, change: str
) -> None:
    act, assignable, health, problem = CHANGES[change]
    node = AgentNode.build(tmp_path, reaper, VARIANT_DRIVER)  # GPU A on nvgrace-gpu-vfio-pci
    agent = node.agent(peer.url, backend=backend).start(reaper)
    session, info = register_with_info(peer)
    assert [(g.assignable, g.health) for g in info.payload.hardware.gpus] == [
        (True, "ok"),
        (True, "ok"),
    ]
    act(node)
    info = session.receive_until(SystemInfo, timeout=10)
    gpus = {g.pci_address: g for g in info.payload.hardware.gpus}
    assert (gpus[GPU_A].assignable, gpus[GPU_A].health) == (assignable, health)
    assert any(problem in line for line in gpus[GPU_A].problems), gpus[GPU_A].problems
    assert (gpus[GPU_B].assignable, gpus[GPU_B].health) == (True, "ok")
    agent.terminate()


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_failed_starts_quarantine_the_group(
    tmp_path: Path, peer: WsPeer, reaper: Reaper, backend: str
) -> None:
    node = AgentNode.build(tmp_path, reaper, BRIDGE_IN_GROUP)  # root port in group 12
    agent = node.agent(peer.url, backend=backend).start(reaper)
    session, _ = register_with_info(peer)
    error = (
        "failed to create shim task: QMP command failed: vfio 0000:05:00.0: group 12 is not viable"
    )
    node.nerdctl.fail("run", f"FATA[0000] {error}", times=3)
    for n in range(3):
        session.send_message(deploy(f"r{n}", 1))
        failed = result_of(session, f"r{n}")
        assert failed.payload.status is ReplicaStatus.FAILED
    assert [devices(node, f"r{n}") for n in range(3)] == [["/dev/vfio/12"]] * 3
    info = session.receive_until(SystemInfo, timeout=10)
    gpus = {g.pci_address: g for g in info.payload.hardware.gpus}
    assert (gpus[GPU_A].assignable, gpus[GPU_A].health) == (False, "failed")
    assert gpus[GPU_A].problems[0].startswith("quarantined after 3 failed starts: ")
    session.send_message(deploy("next", 1))
    ok = result_of(session, "next")
    assert ok.payload.gpus == [GPU_B]  # the quarantined group is passed over
    agent.terminate()
