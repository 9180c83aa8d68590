"""The reference control plane as a process (`vectorlay-agent control-plane`), and its admin API.

It keeps its SQLite file and its log in its own directory, so a restart
finds the same fleet; every response the admin API gave is kept, so that a
test can search them for secrets.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.commands import control_plane_argv, control_plane_env
from tests.support.net import free_port
from tests.support.nodes import AgentNode, node_id_of
from tests.support.processes import Process, Reaper
from tests.support.tokens import ADMIN_TOKEN, ORG_TOKEN
from tests.support.waits import wait_for


@dataclass
class ControlPlaneProcess:
    root: Path
    reaper: Reaper
    offline_after: float = 60.0
    backend: str | None = None
    log_level: str = "debug"
    org_tokens: str = ORG_TOKEN  # comma-separated, as VECTORLAY_CP_ORG_TOKENS
    http_timeout: float = 5.0
    port: int = field(default_factory=free_port)
    proc: Process | None = None
    starts: int = 0
    responses: list[str] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.root / "cp.sqlite3"

    @property
    def url(self) -> str:
        """Where agents connect."""
        return f"ws://127.0.0.1:{self.port}/v1/agent"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "cp.log"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # --- the process ---------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> ControlPlaneProcess:
        """Start it (again, on the same port and file) and wait until it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = control_plane_env(self.org_tokens, ADMIN_TOKEN)
        argv = control_plane_argv(
            self.port,
            self.db,
            offline_after=self.offline_after,
            backend=self.backend,
            log_level=self.log_level,
        )
        self.proc = Process(argv, env, self.log_path).start(self.reaper)
        self.starts += 1
        wait_for(self._healthy, timeout, "the control plane to listen")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"the control plane exited: {self.log[-2000:]}")
        with httpx.Client(timeout=2) as http:
            return http.get(f"{self.base_url}/healthz").status_code == 200

    def kill(self) -> None:
        """SIGKILL: it vanishes, its sockets just drop."""
        if self.proc is not None:
            self.proc.kill()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM: it closes every session (1001) and exits; its exit status."""
        assert self.proc is not None
        return self.proc.terminate(timeout)

    # --- the admin API -------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN_TOKEN
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(
            base_url=self.base_url, headers=headers, timeout=self.http_timeout
        ) as http:
            response = http.request(method, path, json=body)
        self.responses.append(response.text)
        return response

    def get(self, path: str) -> Any:
        response = self.request("GET", path)
        response.raise_for_status()
        return response.json()

    def nodes(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self.get("/v1/nodes")
        return value

    def node(self, node_id: str) -> dict[str, Any]:
        value: dict[str, Any] = self.get(f"/v1/nodes/{node_id}")
        return value

    def replica(self, rid: str) -> dict[str, Any]:
        value: dict[str, Any] = self.get(f"/v1/replicas/{rid}")
        return value

    def deploy(self, **body: Any) -> dict[str, Any]:
        """POST /v1/replicas, which must create it."""
        response = self.request("POST", "/v1/replicas", body)
        assert response.status_code == 201, response.text
        value: dict[str, Any] = response.json()
        return value

    def unanswered(self) -> list[tuple[str, str, str]]:
        """(node, replica, kind) of commands the control plane still waits on."""
        uri = f"file:{self.db}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            rows = db.execute("SELECT node_id, replica_id, kind FROM commands").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]


def online(cp: ControlPlaneProcess, node: AgentNode, timeout: float = 30) -> str:
    """Wait until the node's agent registered and the control plane lists it online."""
    node_id = wait_for(lambda: node_id_of(node), timeout, "node.json")
    wait_for(lambda: cp.node(node_id)["status"] == "online", timeout, "the node online")
    return node_id
