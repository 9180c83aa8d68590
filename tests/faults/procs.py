"""Real processes for the fault scenarios: agents, control planes, a recording relay.

Everything a scenario starts goes through a :class:`Reaper`, whose
``close()`` kills it: agents, control planes, and the fake nerdctl calls a
SIGKILLed agent left orphaned (nerdctl runs in a session of its own, so a
killed agent's ``run`` or ``events`` call outlives it, as it would on a
real host).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.host.fakehost import FakeHost, build_fake_host
from tests.fakes.nerdctl.fake_nerdctl import LAUNCHER, FakeNerdctl
from tests.integration.wspeer import PEER_LOGGER, PeerSession, WsPeer
from tests.support import (
    agent_argv,
    agent_env,
    control_plane_argv,
    control_plane_env,
    free_port,
    wait_for,
)
from vectorlay.domain.messages import (
    SUBPROTOCOL,
    Message,
    Outbound,
    Register,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    SystemInfo,
    decode_outbound,
)
from vectorlay.errors import ConnectionClosed, ConnectionLost, ProtocolError

ORG_TOKEN = "fz-org-token-7d2e41c9b3"
ADMIN_TOKEN = "fz-admin-token-0a9b8c7d"
NODE_TOKEN = "fz-node-token-5e4f3a2b1c"  # what a scripted peer hands out
T = TypeVar("T")


# --- processes -------------------------------------------------------------------------


@dataclass
class Proc:
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, reaper: Reaper, *, piped: bool = False) -> Proc:
        """Start it; ``piped`` copies its output through a pipe, for a process that
        cannot write files (a file size limit) but must still be heard."""
        if piped:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            threading.Thread(target=self._copy, name="proc-log", daemon=True).start()
        else:
            with self.log_path.open("ab") as log:
                self.popen = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        reaper.procs.append(self.popen)
        return self

    def _copy(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        with self.log_path.open("ab") as log:
            for line in self.popen.stdout:
                log.write(line)
                log.flush()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        code = self.popen.wait(timeout)
        if self.popen.stdout is not None:
            time.sleep(0.1)  # let the copying thread catch up
        return code

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Reaper:
    """Kills whatever a scenario started, whatever happened."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    fakes: list[FakeNerdctl] = field(default_factory=list)
    peers: list[WsPeer | Relay] = field(default_factory=list)

    def close(self) -> None:
        for popen in self.procs:
            if popen.poll() is None:
                popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(10)
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.close()
        for fake in self.fakes:
            kill_orphans(fake)
            fake.close()

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fake_process(pid: int, fake: FakeNerdctl) -> bool:
    """Whether ``pid`` is still a call of this fake nerdctl (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return str(LAUNCHER).encode() in cmdline and str(fake.state_path).encode() in environ


def in_flight(fake: FakeNerdctl, *, events: bool = False) -> list[int]:
    """Pids of fake nerdctl calls still running (``events`` streams left out by default)."""
    return [
        call.pid
        for call in fake.calls()
        if call.end is None and (events or call.op != "events") and _fake_process(call.pid, fake)
    ]


def kill_orphans(fake: FakeNerdctl) -> int:
    pids = in_flight(fake, events=True)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # each call leads a session of its own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


# --- one machine: fake host, fake nerdctl, state dir, agent --------------------------------


@dataclass
class AgentNode:
    root: Path
    host: FakeHost
    nerdctl: FakeNerdctl
    reaper: Reaper

    @classmethod
    def build(cls, root: Path, reaper: Reaper) -> AgentNode:
        root.mkdir(parents=True, exist_ok=True)
        fake = FakeNerdctl(root / "nerdctl")
        reaper.fakes.append(fake)
        return cls(root, build_fake_host(root / "host"), fake, reaper)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def node_json(self) -> Path:
        return self.state_dir / "node.json"

    @property
    def env_dir(self) -> Path:
        return self.state_dir / "env"

    def env(self, org_token: str | None = ORG_TOKEN) -> dict[str, str]:
        return agent_env(self.host, self.nerdctl, org_token=org_token)

    def agent(
        self,
        url: str,
        *,
        org_token: str | None = ORG_TOKEN,
        interval: float = 1.0,
        reconnect: float = 0.2,
        extra: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        log_name: str = "agent.log",
    ) -> Proc:
        argv = [
            *wrapper,
            *agent_argv(
                url,
                state_dir=self.state_dir,
                nerdctl=self.nerdctl,
                data_path=self.host.data,
                interval=interval,
                reconnect=reconnect,
                extra=extra,
            ),
        ]
        return Proc(argv, self.env(org_token), self.root / log_name)

    def containers_of(self, rid: str) -> list[dict[str, Any]]:
        return [
            c
            for c in self.nerdctl.containers()
            if c.get("labels", {}).get("vectorlay.replica-id") == rid
        ]

    def duplicate_containers(self) -> dict[str, int]:
        """Replica id -> number of containers, where more than one."""
        counts: dict[str, int] = {}
        for c in self.nerdctl.containers():
            rid = c.get("labels", {}).get("vectorlay.replica-id")
            if rid is not None:
                counts[rid] = counts.get(rid, 0) + 1
        return {rid: n for rid, n in counts.items() if n > 1}

    def double_assigned_gpus(self) -> dict[str, list[str]]:
        """PCI address -> replica ids, for GPUs named by two running containers' labels."""
        holders: dict[str, list[str]] = {}
        for c in self.nerdctl.containers():
            labels = c.get("labels", {})
            if c.get("status") not in ("running", "paused") or not labels.get("vectorlay.gpus"):
                continue
            for addr in labels["vectorlay.gpus"].split("+"):
                holders.setdefault(addr, []).append(labels.get("vectorlay.replica-id", "?"))
        return {a: ids for a, ids in holders.items() if len(ids) > 1}

    def env_files(self) -> list[str]:
        if not self.env_dir.is_dir():
            return []
        return sorted(p.name for p in self.env_dir.iterdir())

    def runs(self, rid: str) -> list[Any]:
        return [c for c in self.nerdctl.calls() if c.op == "run" and f"replica-{rid}" in c.argv]


# --- the reference control plane as a process --------------------------------------------


@dataclass
class ControlPlaneProc:
    root: Path
    reaper: Reaper
    offline_after: float = 60.0
    port: int = field(default_factory=free_port)
    proc: Proc | None = None
    starts: int = 0
    responses: list[str] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.root / "cp.sqlite3"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/agent"

    @property
    def log_path(self) -> Path:
        return self.root / "cp.log"

    def start(self) -> ControlPlaneProc:
        self.root.mkdir(parents=True, exist_ok=True)
        env = control_plane_env(ORG_TOKEN, ADMIN_TOKEN)
        argv = control_plane_argv(self.port, self.db, offline_after=self.offline_after)
        self.proc = Proc(argv, env, self.log_path).start(self.reaper)
        self.starts += 1
        wait_for(self._healthy, 20, "the control plane to listen")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"the control plane exited: {self.log[-2000:]}")
        with httpx.Client(timeout=2) as http:
            return http.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def terminate(self) -> int:
        assert self.proc is not None
        return self.proc.terminate()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN_TOKEN
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=5
        ) as http:
            response = http.request(method, path, json=body)
        self.responses.append(response.text)
        return response

    def get(self, path: str) -> Any:
        response = self.request("GET", path)
        response.raise_for_status()
        return response.json()

    def replica(self, rid: str) -> dict[str, Any]:
        value: dict[str, Any] = self.get(f"/v1/replicas/{rid}")
        return value

    def node(self, node_id: str) -> dict[str, Any]:
        value: dict[str, Any] = self.get(f"/v1/nodes/{node_id}")
        return value

    def unanswered(self) -> list[tuple[str, str, str]]:
        """(node, replica, kind) of commands the control plane still waits on."""
        uri = f"file:{self.db}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            rows = db.execute("SELECT node_id, replica_id, kind FROM commands").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]


def node_id_of(node: AgentNode) -> str | None:
    try:
        value = json.loads(node.node_json.read_text())["node_id"]
    except (OSError, ValueError, KeyError):
        return None
    return str(value)


def online(cp: ControlPlaneProc, node: AgentNode, timeout: float = 30) -> str:
    node_id = wait_for(lambda: node_id_of(node), timeout, "node.json")
    wait_for(lambda: cp.node(node_id)["status"] == "online", timeout, "the node online")
    return node_id


# --- a scripted control plane: WsPeer plus a reader thread ------------------------------------


def register(peer: WsPeer, node_id: str = "node-fz-1") -> PeerSession:
    """Accept the agent's first session and register it."""
    session = peer.accept(timeout=20)
    first = session.receive_message(timeout=10)
    assert isinstance(first, Register), first
    session.send_message(RegistrationSuccess(RegistrationSuccessPayload(node_id, NODE_TOKEN)))
    info = session.receive_message(timeout=10)
    assert isinstance(info, SystemInfo), info
    return session


@dataclass
class Received:
    at: float
    frame: str | bytes
    message: Outbound | None


class Collector:
    """Reads every frame of one peer session in a thread, with arrival times."""

    def __init__(self, session: PeerSession) -> None:
        self.session = session
        self.items: list[Received] = []
        self.closed: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def start(self) -> Collector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.session.receive(timeout=0.2)
            except TimeoutError:
                continue
            except (ConnectionClosed, ConnectionLost) as exc:
                self.closed = exc
                return
            try:
                message: Outbound | None = decode_outbound(frame)
            except ProtocolError:
                message = None
            self.items.append(Received(time.monotonic(), frame, message))

    def messages(self, kind: type[T]) -> list[T]:
        return [r.message for r in list(self.items) if isinstance(r.message, kind)]

    def times(self, kind: type[Message]) -> list[float]:
        return [r.at for r in list(self.items) if isinstance(r.message, kind)]


def max_gap(times: Sequence[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


# --- a relay that records what the control plane sends and receives ---------------------------


@dataclass(frozen=True)
class Record:
    direction: str  # "down": control plane -> agent; "up": agent -> control plane
    text: str
    at: float

    def parsed(self) -> dict[str, Any]:
        try:
            value = json.loads(self.text)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Relay:
    """Agent ⇄ relay ⇄ control plane, one upstream session per agent session.

    It records every message both ways (the control plane's view of the
    conversation), passes close codes through, and cuts the agent's
    connection without a close frame when the control plane vanishes.  While
    the control plane is down, handshakes are answered 502.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self.records: list[Record] = []
        self._pending: dict[object, ClientConnection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/agent"

    def start(self) -> Relay:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._thread.start()
        self._server = self._run(self._serve())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        server, self._server = self._server, None
        if server is not None:

            async def shut() -> None:
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self) -> Server:
        return await serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            process_request=self._process_request,
            max_size=None,
            ping_interval=None,
            compression=None,
            logger=PEER_LOGGER,
        )

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        headers = {"Authorization": request.headers.get("Authorization", "")}
        try:
            upstream = await connect(
                self.upstream,
                additional_headers=headers,
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                max_size=None,
                ping_interval=None,
                compression=None,
                open_timeout=5,
                logger=PEER_LOGGER,
            )
        except Exception:  # the control plane is down or refused
            return connection.respond(HTTPStatus.BAD_GATEWAY, "control plane unavailable\n")
        self._pending[connection.id] = upstream
        return None

    async def _handler(self, down: ServerConnection) -> None:
        up = self._pending.pop(down.id)
        tasks = [
            asyncio.create_task(self._pump(down, up, "up")),
            asyncio.create_task(self._pump(up, down, "down")),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:  # the other direction ends with the close passed on
            await asyncio.wait(pending, timeout=5)
        for task in pending:
            task.cancel()
        up.transport.abort()
        down.transport.abort()

    async def _pump(
        self,
        src: ServerConnection | ClientConnection,
        dst: ServerConnection | ClientConnection,
        direction: str,
    ) -> None:
        try:
            async for message in src:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                self.records.append(Record(direction, text, time.monotonic()))
                await dst.send(message)
        except WsConnectionClosed:
            pass
        received = src.protocol.close_rcvd
        if received is not None and received.code not in (1005, 1006):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dst.close(received.code, received.reason), 3)
        else:
            dst.transport.abort()


@contextlib.contextmanager
def reaping() -> Iterator[Reaper]:
    reaper = Reaper()
    try:
        yield reaper
    finally:
        reaper.close()
