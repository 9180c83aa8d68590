"""Admin HTTP API, health and status page of the in-process control plane (docs/controlplane.md)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import h11
import pytest

from tests.support import ADMIN_TOKEN, ORG_TOKEN, eventually
from tests.support.cp_client import (
    AgentClient,
    running_control_plane,
    system_info,
)
from vectorlay.domain.messages import DeployResult, ReplicaStatus, ResultPayload, StopResult

R = ReplicaStatus


async def _online_node(
    cp: Any, ws: AgentClient, *, gpus: int = 2, hostname: str = "test-node"
) -> str:
    node_id, _ = await ws.register(gpus=gpus)
    await ws.send_message(system_info(node_id, gpus=gpus, hostname=hostname))
    await eventually(lambda: cp.cp.fleet.is_connected(node_id))
    return node_id


async def test_healthz_needs_no_token(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, cp.admin(token=None) as http:
        response = await http.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert (await http.post("/healthz")).status_code == 405


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nodes"),
        ("GET", "/v1/nodes/x"),
        ("POST", "/v1/nodes/x/drain"),
        ("GET", "/v1/replicas"),
        ("POST", "/v1/replicas"),
        ("DELETE", "/v1/replicas/x"),
    ],
)
async def test_admin_api_wants_the_admin_token(tmp_path: Path, method: str, path: str) -> None:
    async with running_control_plane(tmp_path) as cp:
        for token in (None, "wrong", ORG_TOKEN):
            async with cp.admin(token=token) as http:
                response = await http.request(method, path)
            assert response.status_code == 401, token
            assert response.headers["www-authenticate"].lower().startswith("bearer")
        async with cp.admin() as http:
            http.headers["authorization"] = http.headers["authorization"].replace(
                "Bearer", "BEARER"
            )
            assert (await http.get("/v1/nodes")).status_code == 200


async def test_admin_api_is_refused_without_a_configured_token(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path, admin_token=None) as cp, cp.admin() as http:
        response = await http.get("/v1/nodes")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].lower().startswith("bearer")
        assert "VECTORLAY_CP_ADMIN_TOKEN" in response.json()["error"]


async def test_every_configured_admin_token_is_accepted(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path, admin_token=None) as cp:
        cp.cp.config = replace(cp.cp.config, admin_tokens=("admin-a", "admin-b"))
        for token, status in (("admin-a", 200), ("admin-b", 200), ("admin-c", 401), (None, 401)):
            async with cp.admin(token=token) as http:
                assert (await http.get("/v1/nodes")).status_code == status, token


async def test_unknown_paths_and_methods(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, cp.admin() as http:
        assert (await http.get("/nope")).status_code == 404
        assert (await http.get("/v1/nope")).status_code == 404
        assert (await http.get("/v1/nodes/missing")).status_code == 404
        assert (await http.post("/v1/nodes/missing/drain")).status_code == 404
        assert (await http.post("/v1/nodes/missing/explode")).status_code == 404
        assert (await http.delete("/v1/replicas/missing")).status_code == 404
        put = await http.put("/v1/replicas")
        assert put.status_code == 405
        assert put.headers["allow"] == "GET, HEAD, POST"
        assert (await http.post("/")).headers["allow"] == "GET, HEAD"
        agent = await http.get("/v1/agent")
        assert agent.status_code == 426


@pytest.mark.parametrize(
    ("body", "status", "field", "mentions"),
    [
        (b"{not json", 400, None, "JSON"),
        (b"", 400, None, "JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, None, "nested too deeply"),
        (b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None, "nested too deeply"),
        (b"[1, 2]", 422, "body", "object"),
        (b"{}", 422, "image", "missing"),
        (b'{"image": "Not A Valid Image!"}', 422, "image", "image"),
        (b'{"image": 5}', 422, "image", "expected str"),
        (b'{"image": "busybox", "gpu_count": "1"}', 422, "gpu_count", "int"),
        (b'{"image": "busybox", "gpu_count": -1}', 422, "gpu_count", ">= 0"),
        (b'{"image": "busybox", "gpu_count": true}', 422, "gpu_count", "int"),
        (b'{"image": "busybox", "env_vars": []}', 422, "env_vars", "object"),
        (b'{"image": "busybox", "env_vars": {"1BAD": "v"}}', 422, "env_vars", "1BAD"),
        (b'{"image": "busybox", "env_vars": {"K": 1}}', 422, "env_vars.K", "str"),
        (b'{"image": "busybox", "env_vars": {"K": " edge"}}', 422, "env_vars.K", "whitespace"),
        (b'{"image": "busybox", "env_vars": {"K": "a\\u0000b"}}', 422, "env_vars.K", "NUL"),
        (b'{"image": "busybox", "replica_id": "-bad"}', 422, "replica_id", "replica_id"),
        (b'{"image": "busybox", "gpus": 1}', 422, "gpus", "unknown field"),
    ],
)
async def test_deploy_validation_names_the_field(
    tmp_path: Path, body: bytes, status: int, field: str | None, mentions: str
) -> None:
    async with running_control_plane(tmp_path) as cp, cp.admin() as http:
        response = await http.post(
            "/v1/replicas", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == status
        answer = response.json()
        assert mentions in answer["error"]
        assert answer.get("field") == field
        assert " edge" not in answer["error"]


async def test_deploy_conflicts_and_capacity(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        cp.admin() as http,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        no_node = await http.post("/v1/replicas", json={"image": "busybox"})
        assert no_node.status_code == 409
        assert "field" not in no_node.json()  # no GPUs asked: no field is to blame
        assert no_node.json()["reason"] == "no_node_online"
        assert "no node online" in no_node.json()["error"]
        node_id = await _online_node(cp, ws, gpus=1)
        first = await http.post(
            "/v1/replicas", json={"image": "busybox", "replica_id": "r1", "gpu_count": 1}
        )
        assert first.status_code == 201
        assert first.json() == {"replica_id": "r1", "node_id": node_id, "status": "pending"}
        again = await http.post("/v1/replicas", json={"image": "busybox", "replica_id": "r1"})
        assert again.status_code == 409
        assert again.json()["field"] == "replica_id"
        full = await http.post("/v1/replicas", json={"image": "busybox", "gpu_count": 1})
        assert full.status_code == 409
        assert full.json()["field"] == "gpu_count"
        generated = await http.post("/v1/replicas", json={"image": "busybox"})
        assert generated.status_code == 201
        assert generated.json()["replica_id"].startswith("r-")


async def test_drain_maintenance_resume(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        cp.admin() as http,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        node_id = await _online_node(cp, ws)
        await http.post("/v1/replicas", json={"image": "busybox", "replica_id": "r1"})
        await ws.receive_message()
        await ws.send_message(DeployResult(ResultPayload("r1", R.RUNNING)))
        drained = await http.post(f"/v1/nodes/{node_id}/drain")
        assert drained.status_code == 200
        assert (drained.json()["status"], drained.json()["hold"]) == ("draining", "drain")
        refused = await http.post("/v1/replicas", json={"image": "busybox"})
        assert refused.status_code == 409
        assert (await http.delete("/v1/replicas/r1")).status_code == 202
        await ws.receive_message()
        await ws.send_message(StopResult(ResultPayload("r1", R.STOPPED)))

        async def status() -> Any:
            return (await http.get(f"/v1/nodes/{node_id}")).json()["status"]

        await eventually(lambda: _is(status, "maintenance"))
        again = await http.post(f"/v1/nodes/{node_id}/drain")  # no-op: keeps maintenance
        assert again.status_code == 200
        assert (again.json()["status"], again.json()["hold"]) == ("maintenance", "maintenance")
        resumed = await http.post(f"/v1/nodes/{node_id}/resume")
        assert resumed.status_code == 200
        assert (resumed.json()["status"], resumed.json()["hold"]) == ("online", None)
        held = await http.post(f"/v1/nodes/{node_id}/maintenance")
        assert (held.json()["status"], held.json()["hold"]) == ("maintenance", "maintenance")


async def test_drain_of_an_offline_node_in_maintenance_keeps_maintenance(
    tmp_path: Path,
) -> None:
    async with running_control_plane(tmp_path) as cp, cp.admin() as http:
        async with AgentClient.connect(cp.port, ORG_TOKEN) as ws:
            node_id = await _online_node(cp, ws)
            held = await http.post(f"/v1/nodes/{node_id}/maintenance")
            assert held.json()["hold"] == "maintenance"
        await eventually(lambda: not cp.cp.fleet.is_connected(node_id))
        drained = await http.post(f"/v1/nodes/{node_id}/drain")
        assert drained.status_code == 200
        assert (drained.json()["status"], drained.json()["hold"]) == ("offline", "maintenance")


async def _is(read: Any, wanted: str) -> bool:
    return bool(await read() == wanted)


async def test_node_listing_shape(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        cp.admin() as http,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        node_id = await _online_node(cp, ws, gpus=2)
        nodes = (await http.get("/v1/nodes")).json()
        assert len(nodes) == 1
        node = nodes[0]
        assert set(node) >= {
            "node_id",
            "status",
            "hostname",
            "gpus",
            "gpus_free",
            "dependencies",
            "last_seen",
            "replicas",
            "hold",
        }
        assert node["node_id"] == node_id
        assert node["gpus"][0] == {
            "pci_address": "0000:17:00.0",
            "vendor": "nvidia",
            "vendor_id": "10de",
            "device_id": "2330",
            "model": "GH100 [H100 SXM5 80GB]",
            "driver": "vfio-pci",
            "iommu_group": "25",
            "assignable": True,
            "health": "ok",
            "problems": [],
        }
        assert node["gpus_free"] == 2
        assert node["replicas"] == []
        assert [d["name"] for d in node["dependencies"]][:2] == ["containerd", "nerdctl"]


async def test_status_page_escapes_and_refreshes(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        cp.admin(token=None) as http,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        empty = await http.get("/")
        assert "no nodes yet" in empty.text
        node_id = await _online_node(cp, ws, hostname="<script>alert(1)</script>")
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<meta http-equiv="refresh"' in page.text
        assert "<script>" not in page.text
        assert "&lt;script&gt;" in page.text
        assert node_id in page.text
        assert "online" in page.text
        # Each GPU with its group and health; free / assignable / total per node.
        assert "<small>group 25, health ok</small>" in page.text
        assert '<span class="num">2 / 2 / 2</span> <small>free / assignable / total</small>' in (
            page.text
        )


async def test_keep_alive_serves_several_requests_on_one_connection(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        stream = await anyio.connect_tcp("127.0.0.1", cp.port)
        async with stream:
            request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
            await stream.send(request + request)
            received = b""
            with anyio.fail_after(5):
                while received.count(b"HTTP/1.1 200") < 2:
                    received += await stream.receive()


async def _exchange(
    port: int, requests: list[tuple[str, str, bool]]
) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Send ``(method, path, with_admin_token)`` requests on one connection, read each answer.

    An h11 client frames the answers: a body sent after the head of a HEAD
    answer would be taken for the next answer and fail to parse.
    """
    conn = h11.Connection(h11.CLIENT)
    answers: list[tuple[int, dict[bytes, bytes], bytes]] = []
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        for method, path, auth in requests:
            headers = [("host", "x")]
            if auth:
                headers.append(("authorization", f"Bearer {ADMIN_TOKEN}"))
            await stream.send(conn.send(h11.Request(method=method, target=path, headers=headers)))
            await stream.send(conn.send(h11.EndOfMessage()))
            status, head, body = 0, {}, b""
            with anyio.fail_after(5):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive())
                    elif isinstance(event, h11.Response):
                        status, head = event.status_code, dict(event.headers)
                    elif isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
            answers.append((status, head, body))
            conn.start_next_cycle()
    return answers


@pytest.mark.parametrize(
    ("path", "auth"),
    [
        ("/", False),
        ("/healthz", False),
        ("/v1/nodes", True),
        ("/v1/replicas", True),
        ("/v1/replicas/missing", True),
        ("/v1/nodes", False),
        ("/v1/agent", False),
        ("/nope", False),
    ],
)
async def test_head_is_answered_like_get_without_a_body(
    tmp_path: Path, path: str, auth: bool
) -> None:
    async with running_control_plane(tmp_path) as cp:
        head, get, after = await _exchange(
            cp.port, [("HEAD", path, auth), ("GET", path, auth), ("GET", "/healthz", False)]
        )
    assert head[0] == get[0]
    assert head[2] == b""
    assert get[2] != b""
    assert head[1][b"content-length"] == str(len(get[2])).encode()
    assert head[1][b"content-type"] == get[1][b"content-type"]
    assert after[:1] == (200,)  # the connection is still good after a HEAD


async def test_head_on_a_post_only_route_is_405_without_a_body(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        [(status, headers, body)] = await _exchange(cp.port, [("HEAD", "/v1/nodes/x/drain", True)])
    assert (status, body) == (405, b"")
    assert headers[b"allow"] == b"POST"


async def test_oversized_and_malformed_requests(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp, cp.admin() as http:
        big = await http.post(
            "/v1/replicas",
            content=b"x" * (1024 * 1024 + 1),
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413
        stream = await anyio.connect_tcp("127.0.0.1", cp.port)
        async with stream:
            await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
            with anyio.fail_after(5):
                answer = await stream.receive()
            assert answer.startswith(b"HTTP/1.1 400")
        # The server is still serving.
        assert (await http.get("/healthz")).status_code == 200


async def test_get_one_replica_and_list_hides_env(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        cp.admin() as http,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        await _online_node(cp, ws)
        await http.post(
            "/v1/replicas",
            json={"image": "busybox", "replica_id": "r1", "env_vars": {"TOKEN": "s3cr3t"}},
        )
        one = await http.get("/v1/replicas/r1")
        assert one.json()["status"] == "pending"
        for response in (one, await http.get("/v1/replicas"), await http.get("/v1/nodes")):
            assert "s3cr3t" not in response.text


async def test_expect_100_continue_is_answered_before_the_body(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path) as cp:
        stream = await anyio.connect_tcp("127.0.0.1", cp.port)
        async with stream:
            body = b'{"image": "busybox"}'
            await stream.send(
                b"POST /v1/replicas HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
                b"authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
                b"content-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
            )
            with anyio.fail_after(5):
                interim = await stream.receive()
            assert interim.startswith(b"HTTP/1.1 100")
            await stream.send(body)
            answer = b""
            with anyio.fail_after(5):
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive()
            assert answer.startswith(b"HTTP/1.1 409")  # no node yet
