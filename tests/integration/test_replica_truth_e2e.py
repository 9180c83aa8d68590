"""Replica truth end to end: real agent and control-plane processes on the fake host.

The control plane's view follows the node: a second agent identity on the
same host leaves the first one's containers alone; a container removed by
hand or killed shows as ``failed`` with its reason (and exit code) within
2 s; a removed node's token is refused with 4401; every 409 says why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import AgentNode, ControlPlaneProcess, Process, Reaper, online, wait_for
from vectorlay.adapters.runtime import LABEL_GPUS, LABEL_NODE_ID

pytestmark = pytest.mark.integration

DEADLINE = 2.0  # the contract: the control plane's view follows within 2 s
BACKENDS = ["asyncio", "trio"]


def control_plane(tmp: Path, reaper: Reaper, backend: str) -> ControlPlaneProcess:
    return ControlPlaneProcess(tmp, reaper, backend=backend).start()


def agent(node: AgentNode, url: str, backend: str) -> Process:
    return node.agent(url, interval=0.5, log_level="info", backend=backend).start(node.reaper)


def running(cp: ControlPlaneProcess, rid: str) -> None:
    wait_for(lambda: cp.replica(rid)["status"] == "running", what=f"{rid} running")


def within(seconds: float, check: Any, what: str) -> Any:
    """Wait for ``check`` with the contract's deadline as the timeout (figures:
    benchmarks/replica_truth.py)."""
    return wait_for(check, timeout=seconds, what=what)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_identity_leaves_the_first_ones_containers_alone(
    tmp_path: Path, reaper: Reaper, backend: str
) -> None:
    cp = control_plane(tmp_path, reaper, backend)
    first = AgentNode.build(tmp_path / "a", reaper)
    agent(first, cp.url, backend)
    first_id = online(cp, first)
    total = cp.node(first_id)["gpus_free"]
    rids = [cp.deploy(image="busybox", gpu_count=1)["replica_id"] for _ in range(2)]
    for rid in rids:
        running(cp, rid)
        (container,) = first.containers_of(rid)
        assert container["labels"][LABEL_NODE_ID] == first_id
    # A second agent on the same host (same runtime), with a fresh state directory.
    (tmp_path / "b").mkdir()
    second = AgentNode(tmp_path / "b", first.host, first.nerdctl, reaper)
    second_agent = agent(second, cp.url, backend)
    second_id = online(cp, second)
    assert second_id != first_id
    assert cp.node(second_id)["replicas"] == []
    wait_for(lambda: "another node identity" in second_agent.log, what="the foreign log line")
    assert second_agent.log.count("leaving alone 2 container(s)") == 1
    assert "adopted 2 existing" not in second_agent.log
    # Its GPUs are not given out by the second agent: it reports them not
    # assignable, naming the container that holds them, so the control plane
    # never places there.
    held = {g for rid in rids for g in first.containers_of(rid)[0]["labels"][LABEL_GPUS].split("+")}

    def foreign_marked() -> bool:
        gpus = {g["pci_address"]: g for g in cp.node(second_id)["gpus"]}
        return all(
            not gpus[a]["assignable"] and any("replica-" in p for p in gpus[a]["problems"])
            for a in held
        )

    wait_for(foreign_marked, what="the foreign-held GPUs reported unassignable")
    assert cp.node(second_id)["gpus_free"] == total - len(held)
    refused = cp.request("POST", "/v1/replicas", {"image": "busybox", "gpu_count": total})
    assert refused.status_code == 409, refused.text
    assert len([c for c in first.nerdctl.calls() if c.op == "run"]) == len(rids)
    # No container of the first node was touched, and the API still shows them right.
    time.sleep(1.2)  # a couple of heartbeats of both agents
    for rid in rids:
        assert first.stops(rid) == []
        assert [c["status"] for c in first.containers_of(rid)] == ["running"]
        assert cp.replica(rid)["status"] == "running"
        assert cp.replica(rid)["node_id"] == first_id
    assert not [c for c in first.nerdctl.calls() if c.op == "rm"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_removed_and_killed_containers_show_failed_with_reason(
    tmp_path: Path, reaper: Reaper, backend: str
) -> None:
    cp = control_plane(tmp_path, reaper, backend)
    node = AgentNode.build(tmp_path / "n", reaper)
    process = agent(node, cp.url, backend)
    node_id = online(cp, node)
    free = cp.node(node_id)["gpus_free"]
    gone, shot, hog = (cp.deploy(image="busybox", gpu_count=1)["replica_id"] for _ in range(3))
    for rid in (gone, shot, hog):
        running(cp, rid)
    assert cp.node(node_id)["gpus_free"] == free - 3

    assert node.nerdctl.cli("rm", "-f", f"replica-{gone}").returncode == 0
    view = within(
        DEADLINE,
        lambda: (r := cp.replica(gone))["status"] == "failed" and r,
        "the removed container failed",
    )
    assert view["error"] == "container removed outside the agent"
    assert cp.node(node_id)["gpus_free"] == free - 2  # its GPU is free again

    assert node.nerdctl.cli("kill", f"replica-{shot}").returncode == 0
    view = within(DEADLINE, lambda: (r := cp.replica(shot))["exit_code"] and r, "SIGKILL seen")
    assert (view["status"], view["exit_code"]) == ("failed", 137)
    assert view["error"] == "container exited with code 137 (killed by SIGKILL)"

    assert node.nerdctl.oom(f"replica-{hog}")
    view = within(
        DEADLINE,
        lambda: "out of memory" in ((r := cp.replica(hog))["error"] or "") and r,
        "the OOM kill seen",
    )
    assert (view["status"], view["exit_code"]) == ("failed", 137)
    assert view["error"] == "container exited with code 137 (killed: out of memory)"
    assert cp.node(node_id)["gpus_free"] == free

    log = process.log
    assert f"replica {gone} is failed: container removed outside the agent" in log
    assert f"replica {shot} is failed: container exited with code 137 (killed by SIGKILL)" in log
    # The removed replica stays reported until its stop; the stop touches no container.
    time.sleep(1.0)
    assert cp.replica(gone)["status"] == "failed"
    assert cp.request("DELETE", f"/v1/replicas/{gone}").status_code == 202
    wait_for(lambda: cp.replica(gone)["status"] == "stopped", what="stopped")
    assert f"replica {gone}: failed -> stopping" in cp.log


@pytest.mark.parametrize("backend", BACKENDS)
def test_node_removal_revokes_the_token_and_409s_say_why(
    tmp_path: Path, reaper: Reaper, backend: str
) -> None:
    cp = control_plane(tmp_path, reaper, backend)

    def refused(gpus: int) -> dict[str, Any]:
        answer = cp.request("POST", "/v1/replicas", {"image": "busybox", "gpu_count": gpus})
        assert answer.status_code == 409, answer.text
        body: dict[str, Any] = answer.json()
        return body

    assert refused(1)["reason"] == "no_node_online"
    node = AgentNode.build(tmp_path / "n", reaper)
    process = agent(node, cp.url, backend)
    node_id = online(cp, node)
    total = cp.node(node_id)["gpus_free"]
    assert refused(total + 1)["reason"] == "too_many_gpus"
    assert cp.request("POST", f"/v1/nodes/{node_id}/drain").status_code == 200
    held = refused(1)
    assert held["reason"] == "nodes_held"
    assert f"{node_id} (maintenance, {total} free GPUs)" in held["error"]
    assert cp.request("POST", f"/v1/nodes/{node_id}/resume").status_code == 200
    wait_for(lambda: cp.node(node_id)["status"] == "online", what="online again")
    cp.deploy(image="busybox", gpu_count=total)
    assert refused(1)["reason"] == "no_free_gpus"

    # Removal: refused while online, then allowed in maintenance once nothing is live.
    assert cp.request("DELETE", f"/v1/nodes/{node_id}").status_code == 409
    for replica in cp.get("/v1/replicas"):
        cp.request("DELETE", f"/v1/replicas/{replica['replica_id']}")
    wait_for(
        lambda: all(r["status"] == "stopped" for r in cp.get("/v1/replicas")), what="all stopped"
    )
    assert cp.request("POST", f"/v1/nodes/{node_id}/maintenance").status_code == 200
    assert cp.request("DELETE", f"/v1/nodes/{node_id}").status_code == 204
    # The connected agent was closed with 4401: it exits non-zero, node.json untouched.
    assert process.wait(15) != 0
    assert "4401" in process.log or "unauthorized" in process.log.lower()
    assert node.node_json.is_file()
    assert cp.request("GET", f"/v1/nodes/{node_id}").status_code == 404
    # Coming back with the revoked token: 4401 again.
    again = agent(node, cp.url, backend)
    assert again.wait(15) != 0
    assert cp.nodes() == []
