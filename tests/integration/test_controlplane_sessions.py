"""Agent sessions on the in-process control plane over real loopback sockets.

Raw WebSocket clients (wsproto) play the agent, so every frame is under the
test's control.  Runs on asyncio and trio.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from tests.support import ADMIN_TOKEN, ORG_TOKEN, eventually
from tests.support.cp_client import (
    AgentClient,
    HandshakeRejected,
    heartbeat,
    running_control_plane,
    system_info,
)
from vectorlay.adapters.memory import ManualClock
from vectorlay.domain.messages import (
    MAX_FRAME_BYTES,
    SUBPROTOCOL,
    Deploy,
    DeployResult,
    Error,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopResult,
)

R = ReplicaStatus


async def test_register_then_system_info_on_the_same_connection(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, AgentClient.connect(cp.port, ORG_TOKEN) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        node_id, token = await ws.register(gpus=2, hostname="gpu-node-17")
        assert node_id.startswith("node-")
        assert len(token) >= 40
        await ws.send_message(system_info(node_id, gpus=2, hostname="gpu-node-17"))
        await ws.send_message(heartbeat())
        await eventually(lambda: cp.cp.fleet.is_connected(node_id))
        async with cp.admin() as admin:
            node = (await admin.get(f"/v1/nodes/{node_id}")).json()
        assert node["status"] == "online"
        assert node["hostname"] == "gpu-node-17"
        assert node["gpus_free"] == 2
        assert [g["pci_address"] for g in node["gpus"]] == ["0000:17:00.0", "0000:18:00.0"]
        assert node["last_seen"].endswith("Z")
        assert node["hold"] is None


async def test_node_token_session_and_degraded_when_not_ready(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_id, token = await ws.register()
        async with AgentClient.connect(cp.port, token, scheme="bEaReR") as ws:
            await ws.send_message(system_info(node_id, ready=False))
            await eventually(lambda: cp.cp.fleet.is_connected(node_id))
            node = cp.cp.fleet.node(node_id)
            assert node is not None
            assert node.status.value == "degraded"
        await eventually(lambda: not cp.cp.fleet.is_connected(node_id))
        node = cp.cp.fleet.node(node_id)
        assert node is not None
        assert node.status.value == "offline"


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_bad_credential_is_closed_4401_after_the_upgrade(
    tmp_path: Path, token: str | None
) -> None:
    async with running_control_plane(tmp_path) as cp, AgentClient.connect(cp.port, token) as ws:
        assert await ws.expect_close() == 4401


async def test_registration_is_refused_without_org_tokens(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path, org_tokens=()) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        assert await ws.expect_close() == 4401


async def test_upgrade_offering_only_other_subprotocols_is_refused(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        with pytest.raises(HandshakeRejected) as info:
            async with AgentClient.connect(cp.port, ORG_TOKEN, subprotocols=("chat", "x.v2")):
                pass
        assert info.value.status == 400
        assert SUBPROTOCOL.encode() in info.value.body


async def test_upgrade_offering_no_subprotocol_is_served(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        async with AgentClient.connect(cp.port, "wrong-token", subprotocols=()) as ws:
            assert ws.subprotocol is None  # nothing offered, nothing chosen
            assert await ws.expect_close() == 4401
        async with AgentClient.connect(cp.port, ORG_TOKEN, subprotocols=()) as ws:
            assert ws.subprotocol is None
            node_id, _ = await ws.register()
            await ws.send_message(system_info(node_id))
            await ws.send_message(heartbeat())
            await eventually(lambda: cp.cp.fleet.is_connected(node_id))
        async with AgentClient.connect(cp.port, ORG_TOKEN, subprotocols=("x", SUBPROTOCOL)) as ws:
            assert ws.subprotocol == SUBPROTOCOL


async def test_system_info_naming_another_node_gets_error_then_4401(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_a, _ = await ws.register()
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            _, token_b = await ws.register()
        async with AgentClient.connect(cp.port, token_b) as ws:
            await ws.send_message(system_info(node_a))
            answer = await ws.receive_message()
            assert isinstance(answer, Error)
            assert answer.payload.code == "unauthorized"
            assert await ws.expect_close() == 4401
        assert not cp.cp.fleet.is_connected(node_a)


async def test_bad_frames_get_errors_and_the_session_stays_open(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, AgentClient.connect(cp.port, ORG_TOKEN) as ws:
        node_id, _ = await ws.register()
        await ws.send_message(heartbeat())  # before system_info
        answer = await ws.receive_json()
        assert answer["payload"]["code"] == "invalid_message"
        assert "system_info" in answer["payload"]["message"]
        await ws.send_message(system_info(node_id))
        cases: list[tuple[str | bytes, str, str]] = [
            ("{not json", "invalid_message", "message"),
            (b"\x00\x01", "invalid_message", "binary"),
            ('{"type": "deploy", "payload": {}}', "unknown_type", "deploy"),
            ('{"type": "registration_success", "payload": {}}', "unknown_type", "registration"),
            ('{"type": "heartbeat", "payload": {"status": 5}}', "invalid_message", "heartbeat"),
            ('{"type": "nope"}', "unknown_type", "nope"),
            ("[]", "invalid_message", "message"),
        ]
        for frame, code, mentions in cases:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_text(frame)
            answer = await ws.receive_json()
            assert answer["type"] == "error"
            assert answer["payload"]["code"] == code, frame
            assert mentions in answer["payload"]["message"], answer
        # Still the same, working session.
        await ws.send_message(heartbeat())
        await ws.ping()
        await ws.wait_pong()
        assert cp.cp.fleet.is_connected(node_id)


async def test_a_frame_over_1_mib_is_closed_with_1009(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, AgentClient.connect(cp.port, ORG_TOKEN) as ws:
        node_id, _ = await ws.register()
        await ws.send_message(system_info(node_id))
        await ws.send_text('{"type": "heartbeat", "x": "' + "a" * MAX_FRAME_BYTES + '"}')
        answer = await ws.receive_json()
        assert answer["payload"]["code"] == "too_large"
        assert await ws.expect_close() == 1009


async def test_newest_session_wins_and_the_older_gets_4409(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_id, token = await ws.register()
        async with AgentClient.connect(cp.port, token) as older:
            await older.send_message(system_info(node_id))
            await eventually(lambda: cp.cp.fleet.is_connected(node_id))
            async with AgentClient.connect(cp.port, token) as newer:
                assert await older.expect_close() == 4409
                await newer.send_message(system_info(node_id))
                await newer.send_message(heartbeat())
                await anyio.sleep(0.05)
                assert cp.cp.fleet.is_connected(node_id)
                assert cp.cp.sessions[node_id] is not None
            await eventually(lambda: not cp.cp.fleet.is_connected(node_id))


async def test_liveness_deadline_is_exact_and_any_frame_refreshes_it(tmp_path: Path) -> None:
    clock = ManualClock(start=1000.0)
    async with (
        running_control_plane(tmp_path, clock=clock, offline_after=60.0) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        node_id, _ = await ws.register()
        await ws.send_message(system_info(node_id))
        await eventually(lambda: cp.cp.fleet.is_connected(node_id))
        clock.advance(59.5)
        await anyio.wait_all_tasks_blocked()
        await ws.ping()  # a ping is a frame too
        await ws.wait_pong()
        assert cp.cp.fleet.liveness_deadline(node_id) == 1119.5
        clock.advance(59.75)  # 1119.25: still inside
        await anyio.wait_all_tasks_blocked()
        assert cp.cp.fleet.is_connected(node_id)
        clock.advance(0.25)  # 1119.5: exactly the deadline
        assert await ws.expect_close() == 4001
        await eventually(lambda: not cp.cp.fleet.is_connected(node_id))
        node = cp.cp.fleet.node(node_id)
        assert node is not None
        assert node.status.value == "offline"


async def test_silent_node_is_offline_and_rescheduled_at_its_deadline(
    tmp_path: Path,
) -> None:
    """The close handshake (up to 2 s with an agent that never answers) comes after."""
    clock = ManualClock(start=1000.0)
    async with (
        running_control_plane(tmp_path, clock=clock, offline_after=60.0) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as a,
        cp.admin() as admin,
    ):
        node_a, token_a = await a.register(gpus=1)
        await a.send_message(system_info(node_a, gpus=1))  # A's last frame, at 1000
        await eventually(lambda: cp.cp.fleet.is_connected(node_a))
        created = await admin.post("/v1/replicas", json={"image": "busybox", "gpu_count": 1})
        rid = created.json()["replica_id"]
        assert created.json()["node_id"] == node_a
        clock.advance(30.0)
        async with AgentClient.connect(cp.port, ORG_TOKEN) as b:
            node_b, _ = await b.register(gpus=1)
            await b.send_message(system_info(node_b, gpus=1))  # B is due at 1090
            await eventually(lambda: cp.cp.fleet.is_connected(node_b))
            old_session = cp.cp.sessions[node_a]
            clock.advance(30.0)  # 1060: A's deadline; A reads nothing, answers no close
            await eventually(lambda: not cp.cp.fleet.is_connected(node_a), timeout=1.0)
            node = cp.cp.fleet.node(node_a)
            assert node is not None
            assert node.status.value == "offline"
            moved = await b.receive_message(timeout=1.0)
            assert isinstance(moved, Deploy)
            assert moved.payload.replica_id == rid
            replica = cp.cp.fleet.replica(rid)
            assert replica is not None
            assert replica.node_id == node_b
            assert old_session in cp.cp.live_sessions  # still in its close handshake
            # A newer session for A, while the old one is still closing: the
            # old one's end must not take the node offline again.
            async with AgentClient.connect(cp.port, token_a) as again:
                await again.send_message(system_info(node_a, gpus=1))
                await eventually(lambda: cp.cp.fleet.is_connected(node_a))
                assert await a.expect_close() == 4001
                await eventually(lambda: old_session not in cp.cp.live_sessions)
                assert cp.cp.fleet.is_connected(node_a)
                assert cp.cp.sessions[node_a] is not old_session
                await again.ping()
                await again.wait_pong()


async def test_a_connection_that_never_says_hello_is_closed_4001(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        running_control_plane(tmp_path, clock=clock, offline_after=10.0) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        await ws.ping()
        await ws.wait_pong()
        await ws.send_text("{}")  # frames other than register do not buy time
        await ws.receive_json()
        clock.advance(9.75)
        await anyio.wait_all_tasks_blocked()
        clock.advance(0.25)
        assert await ws.expect_close() == 4001


async def test_after_register_system_info_is_due_within_offline_after(tmp_path: Path) -> None:
    """Pings keep a registered connection alive only until system_info is due."""
    clock = ManualClock(start=100.0)
    async with (
        running_control_plane(tmp_path, clock=clock, offline_after=10.0) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        clock.advance(5.0)
        await anyio.wait_all_tasks_blocked()
        node_id, _ = await ws.register()  # at 105: system_info is due by 115
        for _ in range(3):
            clock.advance(3.0)
            await anyio.wait_all_tasks_blocked()
            await ws.ping()
            await ws.wait_pong()
        clock.advance(0.75)  # 114.75: 14.75 s after the upgrade, still open
        await anyio.wait_all_tasks_blocked()
        await ws.ping()
        await ws.wait_pong()
        clock.advance(0.25)  # 115: register + offline_after, whatever the pings
        assert await ws.expect_close() == 4001
        assert not cp.cp.fleet.is_connected(node_id)


async def test_deeply_nested_frame_is_invalid_and_the_session_stays_open(
    tmp_path: Path,
) -> None:
    async with running_control_plane(tmp_path) as cp, AgentClient.connect(cp.port, ORG_TOKEN) as ws:
        node_id, _ = await ws.register()
        await ws.send_message(system_info(node_id))
        depth = 100_000
        await ws.send_text('{"type": "heartbeat", "payload": ' + "[" * depth + "]" * depth + "}")
        answer = await ws.receive_json()
        assert answer["payload"]["code"] == "invalid_message"
        await ws.send_message(heartbeat())
        await ws.ping()
        await ws.wait_pong()
        assert cp.cp.fleet.is_connected(node_id)


async def test_deploy_heartbeat_stop_flow(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, AgentClient.connect(cp.port, ORG_TOKEN) as ws:
        node_id, _ = await ws.register(gpus=2)
        await ws.send_message(system_info(node_id, gpus=2))
        await eventually(lambda: cp.cp.fleet.is_connected(node_id))
        async with cp.admin() as admin:
            created = await admin.post(
                "/v1/replicas",
                json={"image": "ghcr.io/acme/llm:1.2", "gpu_count": 1, "env_vars": {"M": "x"}},
            )
            assert created.status_code == 201
            rid = created.json()["replica_id"]
            assert created.json() == {"replica_id": rid, "node_id": node_id, "status": "pending"}
            command = await ws.receive_message()
            assert isinstance(command, Deploy)
            assert (command.payload.replica_id, command.payload.gpu_count) == (rid, 1)
            assert command.payload.env_vars == {"M": "x"}
            await ws.send_message(DeployResult(ResultPayload(rid, R.RUNNING)))
            await ws.send_message(heartbeat({rid: R.RUNNING}))

            async def status() -> str:
                replica = await admin.get(f"/v1/replicas/{rid}")
                return str(replica.json()["status"])

            await eventually(lambda: _equals(status, "running"))
            node = (await admin.get(f"/v1/nodes/{node_id}")).json()
            assert (node["gpus_free"], node["replicas"]) == (1, [rid])
            listed = (await admin.get("/v1/replicas")).json()
            assert listed == [
                {
                    "replica_id": rid,
                    "node_id": node_id,
                    "image": "ghcr.io/acme/llm:1.2",
                    "gpu_count": 1,
                    "status": "running",
                    "gpus": [],
                }
            ]
            stopping = await admin.delete(f"/v1/replicas/{rid}")
            assert stopping.status_code == 202
            assert stopping.json()["status"] == "stopping"
            command = await ws.receive_message()
            assert isinstance(command, Stop)
            assert command.payload.replica_id == rid
            await ws.send_message(StopResult(ResultPayload(rid, R.STOPPED)))
            await eventually(lambda: _equals(status, "stopped"))
            node = (await admin.get(f"/v1/nodes/{node_id}")).json()
            assert node["gpus_free"] == 2
            assert node["replicas"] == []  # only replicas not ended yet
            assert [n["replicas"] for n in (await admin.get("/v1/nodes")).json()] == [[]]
            page = await admin.get("/")
            assert rid not in page.text.split("<h2>Replicas")[0]  # node table: none left
            assert rid in page.text  # the replicas table keeps it, stopped


async def _equals(read: object, wanted: str) -> bool:
    assert callable(read)
    return bool(await read() == wanted)


async def test_unanswered_command_is_resent_once_on_resume(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_id, token = await ws.register()
            await ws.send_message(system_info(node_id))
            await eventually(lambda: cp.cp.fleet.is_connected(node_id))
            async with cp.admin() as admin:
                created = await admin.post("/v1/replicas", json={"image": "busybox"})
            rid = created.json()["replica_id"]
            first = await ws.receive_message()
            assert isinstance(first, Deploy)
        await eventually(lambda: not cp.cp.fleet.is_connected(node_id))
        async with AgentClient.connect(cp.port, token) as ws:
            await ws.send_message(system_info(node_id))
            again = await ws.receive_message()
            assert again == first
            await ws.send_message(DeployResult(ResultPayload(rid, R.RUNNING)))
            await eventually(lambda: not cp.cp.fleet.pending_commands(node_id))
        await eventually(lambda: not cp.cp.fleet.is_connected(node_id))
        async with AgentClient.connect(cp.port, token) as ws:
            await ws.send_message(system_info(node_id, replicas={rid: R.RUNNING}))
            await ws.send_message(heartbeat({rid: R.RUNNING}))
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.3)


async def test_restart_keeps_identities_and_pending_commands(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
        cp.admin() as admin,
    ):
        node_id, token = await ws.register()
        await ws.send_message(system_info(node_id))
        await eventually(lambda: cp.cp.fleet.is_connected(node_id))
        rid = (await admin.post("/v1/replicas", json={"image": "busybox"})).json()["replica_id"]
        await ws.receive_message()
        await ws.send_message(DeployResult(ResultPayload(rid, R.RUNNING)))
        await eventually(lambda: not cp.cp.fleet.pending_commands())
        await ws.close()
        await eventually(lambda: not cp.cp.fleet.is_connected(node_id))
        # Stop while the node is away: the stop waits in the store.
        assert (await admin.delete(f"/v1/replicas/{rid}")).status_code == 202
    async with running_control_plane(tmp_path) as cp:
        node = cp.cp.fleet.node(node_id)
        assert node is not None
        assert node.status.value == "offline"
        async with AgentClient.connect(cp.port, token) as ws:
            await ws.send_message(system_info(node_id, replicas={rid: R.RUNNING}))
            command = await ws.receive_message()
            assert isinstance(command, Stop)
            assert command.payload.replica_id == rid
            await ws.send_message(StopResult(ResultPayload(rid, R.STOPPED)))
            await eventually(lambda: not cp.cp.fleet.pending_commands())
        assert [n.node_id for n in cp.cp.fleet.nodes()] == [node_id]


async def test_rescheduled_after_offline_after_and_duplicate_stopped_on_return(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with (
        running_control_plane(tmp_path, clock=clock, offline_after=60.0) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as b,
    ):
        node_b, _ = await b.register(gpus=1)
        await b.send_message(system_info(node_b, gpus=1))
        async with AgentClient.connect(cp.port, ORG_TOKEN) as a:
            node_a, token_a = await a.register(gpus=2)
            await a.send_message(system_info(node_a, gpus=2))
            await eventually(lambda: cp.cp.fleet.is_connected(node_a))
            async with cp.admin() as admin:
                created = await admin.post(
                    "/v1/replicas", json={"image": "busybox", "gpu_count": 1}
                )
            assert created.json()["node_id"] == node_a  # most free GPUs
            rid = created.json()["replica_id"]
            await a.receive_message()
            await a.send_message(DeployResult(ResultPayload(rid, R.RUNNING)))
            await eventually(lambda: not cp.cp.fleet.pending_commands())
            clock.advance(30.0)
            await b.send_message(heartbeat())
            await a.close()  # A's last frame, at t=30
            await a.expect_close()
        await eventually(lambda: not cp.cp.fleet.is_connected(node_a))
        # A node back before offline_after keeps its replicas: nothing moves yet.
        clock.advance(59.75)
        await anyio.wait_all_tasks_blocked()
        replica = cp.cp.fleet.replica(rid)
        assert replica is not None
        assert replica.node_id == node_a
        await b.send_message(heartbeat())
        await eventually(lambda: cp.cp.fleet.liveness_deadline(node_b) == 149.75)
        clock.advance(0.25)  # t=90: 60 s since A's last frame
        moved = await b.receive_message()
        assert isinstance(moved, Deploy)
        assert moved.payload.replica_id == rid
        await b.send_message(DeployResult(ResultPayload(rid, R.RUNNING)))
        async with AgentClient.connect(cp.port, token_a) as a:
            await a.send_message(system_info(node_a, gpus=2, replicas={rid: R.RUNNING}))
            duplicate = await a.receive_message()
            assert isinstance(duplicate, Stop)
            assert duplicate.payload.replica_id == rid
            await a.send_message(StopResult(ResultPayload(rid, R.STOPPED)))
            await eventually(lambda: not cp.cp.fleet.pending_commands())
        replica = cp.cp.fleet.replica(rid)
        assert replica is not None
        assert (replica.node_id, replica.status.value) == (node_b, "running")


async def test_env_values_and_tokens_never_reach_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "hunter2-very-secret-value"
    caplog.set_level(logging.DEBUG)
    async with running_control_plane(tmp_path) as cp:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_id, token = await ws.register()
            await ws.send_message(system_info(node_id))
            await eventually(lambda: cp.cp.fleet.is_connected(node_id))
            async with cp.admin() as admin:
                ok = await admin.post(
                    "/v1/replicas", json={"image": "busybox", "env_vars": {"PASSWORD": secret}}
                )
                assert ok.status_code == 201
                bad = await admin.post(
                    "/v1/replicas",
                    json={"image": "busybox", "env_vars": {"PASSWORD": secret + "\n"}},
                )
                assert bad.status_code == 422
                assert secret not in bad.text
                listed = await admin.get("/v1/replicas")
                assert secret not in listed.text
            deploy = await ws.receive_message()
            # An agent whose runtime echoed the value: the answer is logged, the value is not.
            rid = ok.json()["replica_id"]
            await ws.send_message(
                DeployResult(ResultPayload(rid, R.FAILED, f"exec failed: {secret}: not found"))
            )
            await eventually(
                lambda: any(r.getMessage() == "deploy answered" for r in caplog.records)
            )
            assert deploy is not None
        async with AgentClient.connect(cp.port, "not-a-token") as ws:
            await ws.expect_close()
    text = "\n".join(
        f"{r.getMessage()} {sorted((k, str(v)) for k, v in vars(r).items())}"
        for r in caplog.records
    )
    assert "PASSWORD" in text  # names are logged
    answered = [r for r in caplog.records if r.getMessage() == "deploy answered"]
    assert [getattr(r, "error", None) for r in answered] == ["exec failed: <redacted>: not found"]
    for forbidden in (secret, token, ORG_TOKEN, ADMIN_TOKEN, "not-a-token"):
        assert forbidden not in text
