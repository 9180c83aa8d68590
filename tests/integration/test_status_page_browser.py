"""The status page in a real browser: headless Chromium renders it, a test reads the text.

Skipped where Chromium is not installed (``.ci/run`` installs Debian's
``chromium``).  A screenshot at 1280 px is left under the test's temporary
directory (``status-page.png``) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from tests.support import ORG_TOKEN, eventually
from tests.support.cp_client import AgentClient, running_control_plane, system_info
from vectorlay.domain.messages import (
    Dependency,
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

pytestmark = pytest.mark.integration

R = ReplicaStatus
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_TIMEOUT = 60.0


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--window-size=1280,1000",
        *args,
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False
    )


def text_of(dom: str) -> str:
    """The page's visible text, roughly: tags dropped, whitespace folded."""
    body = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).replace("&gt;", ">").strip()


async def fleet_in_every_status(cp: Any, ws: AgentClient) -> str:
    """One node (a failing dependency, 4 GPUs) holding replicas in every status."""
    node_id, _ = await ws.register(gpus=4)
    info = system_info(node_id, gpus=4, ready=True)
    await ws.send_message(info)
    await eventually(lambda: cp.cp.fleet.is_connected(node_id))
    http = cp.admin()
    async with http:
        for rid in ("r-pending", "r-running", "r-exited", "r-failed", "r-stopping", "r-stopped"):
            body = {"image": "ghcr.io/acme/llm:1.2", "replica_id": rid, "gpu_count": 0}
            if rid == "r-running":
                body["gpu_count"] = 2
            assert (await http.post("/v1/replicas", json=body)).status_code == 201
            await ws.receive_message()
            if rid != "r-pending":
                await ws.send_message(DeployResult(ResultPayload(rid, R.RUNNING)))
        reports = [
            ReplicaReport("r-pending", R.PENDING),
            ReplicaReport("r-running", R.RUNNING),
            ReplicaReport("r-exited", R.EXITED, exit_code=0),
            ReplicaReport(
                "r-failed",
                R.FAILED,
                exit_code=137,
                error="container exited with code 137 (killed by SIGKILL)",
            ),
            ReplicaReport("r-stopping", R.RUNNING),
            ReplicaReport("r-stopped", R.RUNNING),
        ]
        status = HeartbeatStatus(reports, None, None, None, Storage("/data", None))
        await ws.send_message(Heartbeat(HeartbeatPayload(status, seq=2)))
        await eventually(lambda: cp.cp.fleet.replica("r-failed").status.value == "failed")
        for rid in ("r-stopping", "r-stopped"):
            assert (await http.delete(f"/v1/replicas/{rid}")).status_code == 202
            await ws.receive_message()
        await ws.send_message(StopResult(ResultPayload("r-stopped", R.STOPPED)))
        await eventually(lambda: cp.cp.fleet.replica("r-stopped").status.value == "stopped")
        # The node turns degraded with a failing dependency that says why.
        deps = [
            *info.payload.dependencies,
            Dependency("vfio", False, None, "missing modules: vfio_pci"),
        ]
        still = [r for r in reports if r.replica_id != "r-stopped"]
        degraded = msgspec.structs.replace(
            info.payload, dependencies=deps, ready=False, replicas=still
        )
        await ws.send_message(msgspec.structs.replace(info, payload=degraded))
        await eventually(lambda: cp.cp.fleet.node(node_id).status.value == "degraded")
    return node_id


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)",
)
async def test_the_status_page_in_headless_chromium(tmp_path: Path) -> None:
    async with (
        running_control_plane(tmp_path) as cp,
        AgentClient.connect(cp.port, ORG_TOKEN) as ws,
    ):
        node_id = await fleet_in_every_status(cp, ws)
        url = f"http://127.0.0.1:{cp.port}/"
        dumped = await anyio.to_thread.run_sync(chromium, tmp_path, "--dump-dom", url)
        shot = tmp_path / "status-page.png"
        pictured = await anyio.to_thread.run_sync(
            chromium, tmp_path, f"--screenshot={shot}", "--hide-scrollbars", url
        )
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    text = text_of(dumped.stdout)
    assert f"{node_id} test-node degraded" in text
    assert "draining" not in text
    assert "vfio: missing modules: vfio_pci" in text  # why it is degraded
    # free / assignable / total, and each GPU with its group and holder.
    assert "2 / 4 / 4" in text
    assert "group 25" in text
    for rid, status in [
        ("r-pending", "pending"),
        ("r-running", "running"),
        ("r-exited", "exited"),
        ("r-failed", "failed"),
        ("r-stopping", "stopping"),
        ("r-stopped", "stopped"),
    ]:
        assert f"{rid} {status} {node_id}" in text, rid
        assert f'class="st {status}"' in dumped.stdout  # coloured by status
    assert "r-pending r-running r-stopping" in text  # the node's live replicas
    assert "container exited with code 137 (killed by SIGKILL)" in text
    assert "exit code 0" in text
    # Ids and timestamps never wrap.
    assert 'class="id"' in dumped.stdout
    assert "white-space:nowrap" in dumped.stdout
    assert pictured.returncode == 0, pictured.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
