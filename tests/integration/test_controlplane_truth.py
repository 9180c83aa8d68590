"""The in-process control plane: node removal with token revocation, 409 reasons,
exit codes and errors in /v1/replicas, the complete heartbeat list, transition logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.support import ORG_TOKEN, eventually
from tests.support.cp_client import AgentClient, running_control_plane, system_info
from vectorlay.domain.messages import (
    DeployResult,
    Heartbeat,
    HeartbeatPayload,
    HeartbeatStatus,
    ReplicaReport,
    ReplicaStatus,
    ResultPayload,
    StopResult,
    Storage,
)

R = ReplicaStatus


async def _online_node(cp: Any, ws: AgentClient, *, gpus: int = 2) -> tuple[str, str]:
    node_id, token = await ws.register(gpus=gpus)
    await ws.send_message(system_info(node_id, gpus=gpus))
    await eventually(lambda: cp.cp.fleet.is_connected(node_id))
    return node_id, token


def _status(cp: Any, replica_id: str) -> str | None:
    replica = cp.cp.fleet.replica(replica_id)
    return None if replica is None else str(replica.status.value)


def _beat(*reports: ReplicaReport) -> Heartbeat:
    status = HeartbeatStatus(list(reports), None, None, None, Storage("/data", None))
    return Heartbeat(HeartbeatPayload(status, seq=2))


async def test_removing_a_node_revokes_its_token(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, cp.admin() as http:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_id, token = await _online_node(cp, ws)
            assert (await http.delete("/v1/nodes/nope")).status_code == 404
            online = await http.delete(f"/v1/nodes/{node_id}")
            assert online.status_code == 409
            assert "is online" in online.json()["error"]
            await http.post("/v1/replicas", json={"image": "busybox", "replica_id": "r1"})
            await ws.receive_message()
            await ws.send_message(DeployResult(ResultPayload("r1", R.RUNNING)))
            await http.post(f"/v1/nodes/{node_id}/maintenance")
            busy = await http.delete(f"/v1/nodes/{node_id}")
            assert busy.status_code == 409
            assert "r1 (running)" in busy.json()["error"]
            await http.delete("/v1/replicas/r1")
            await ws.receive_message()
            await ws.send_message(StopResult(ResultPayload("r1", R.STOPPED)))
            await eventually(lambda: _status(cp, "r1") == "stopped")
            removed = await http.delete(f"/v1/nodes/{node_id}")
            assert removed.status_code == 204
            # The connected session is closed with 4401.
            assert await ws.expect_close() == 4401
        assert (await http.get(f"/v1/nodes/{node_id}")).status_code == 404
        # Its agent coming back with the old token is refused for good.
        async with AgentClient.connect(cp.port, token) as again:
            assert await again.expect_close() == 4401
        # The stopped record stays as history.
        (replica,) = (await http.get("/v1/replicas")).json()
        assert (replica["replica_id"], replica["status"]) == ("r1", "stopped")


async def test_each_409_reason_at_the_api(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        cp.admin() as http,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):

        async def refused(gpus: int) -> dict[str, Any]:
            answer = await http.post("/v1/replicas", json={"image": "busybox", "gpu_count": gpus})
            assert answer.status_code == 409
            body: dict[str, Any] = answer.json()
            return body

        assert (await refused(1))["reason"] == "no_node_online"
        node_id, _ = await _online_node(cp, ws, gpus=2)
        too_many = await refused(3)
        assert (too_many["reason"], too_many["field"]) == ("too_many_gpus", "gpu_count")
        await http.post(f"/v1/nodes/{node_id}/maintenance")
        held = await refused(1)
        assert held["reason"] == "nodes_held"
        assert f"{node_id} (maintenance, 2 free GPUs)" in held["error"]
        await http.post(f"/v1/nodes/{node_id}/resume")
        ok = await http.post("/v1/replicas", json={"image": "busybox", "gpu_count": 2})
        assert ok.status_code == 201
        full = await refused(1)
        assert (full["reason"], full["field"]) == ("no_free_gpus", "gpu_count")


async def test_exit_codes_errors_and_the_complete_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vectorlay.controlplane")
    async with (
        running_control_plane(tmp_path) as cp,
        cp.admin() as http,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        await _online_node(cp, ws, gpus=2)
        for rid in ("killed", "gone"):
            await http.post(
                "/v1/replicas", json={"image": "busybox", "replica_id": rid, "gpu_count": 1}
            )
            await ws.receive_message()
            await ws.send_message(DeployResult(ResultPayload(rid, R.RUNNING)))
        reason = "container exited with code 137 (killed by SIGKILL)"
        # "gone" is missing from the list: not reported by node.
        await ws.send_message(_beat(ReplicaReport("killed", R.FAILED, exit_code=137, error=reason)))

        async def both_failed() -> dict[str, dict[str, Any]] | None:
            views = {r["replica_id"]: r for r in (await http.get("/v1/replicas")).json()}
            done = all(views[rid]["status"] == "failed" for rid in ("killed", "gone"))
            return views if done else None

        views = await eventually(both_failed, what="both replicas failed")
        assert views["killed"] == {
            "replica_id": "killed",
            "node_id": views["killed"]["node_id"],
            "image": "busybox",
            "gpu_count": 1,
            "status": "failed",
            "gpus": None,
            "exit_code": 137,
            "error": reason,
        }
        assert (views["gone"]["error"], views["gone"]["exit_code"]) == (
            "not reported by node",
            None,
        )
        node = (await http.get("/v1/nodes")).json()[0]
        assert node["gpus_free"] == 2
    logged = [r.getMessage() for r in caplog.records]
    assert any("replica killed: running -> failed (" + reason in m for m in logged)
    assert any("replica gone: running -> failed (not reported by node)" in m for m in logged)
