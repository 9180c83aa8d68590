"""The agent service: startup, sessions, heartbeats, commands, reconnection.

:class:`Agent` wires the ports together and owns the loops; every decision
it acts on comes from the domain (``ReplicaTable`` for deploy/stop,
``heartbeat`` for timing and close codes).  :func:`main` builds the real
adapters for ``vectorlay-agent run``.

Life of the process::

    load node.json ─┬─ found ──────────────► connect with node token
                    └─ none + org token ──► connect, register, save node.json
    every session:  system_info → outbox → heartbeats + commands
    session ends:   backoff (first retry after the reconnect delay), again

Commands run in the agent's own task group, not the session's: a deploy that
is half-way when the connection drops still finishes, and its result waits
in the outbox for the next session.  Containers are never stopped because
the control plane went away.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import msgspec

from vectorlay import __version__
from vectorlay.app.settings import AgentSettings
from vectorlay.domain.agent.heartbeat import (
    CLOSE_GOING_AWAY,
    CloseAction,
    HeartbeatPolicy,
    ReconnectPolicy,
    backoff,
    good_session,
    on_close,
)
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import (
    ContainerState,
    ReplicaTable,
    ReportResult,
    StartContainer,
    StopContainer,
    assignable_slots,
)
from vectorlay.domain.messages import (
    MAX_FRAME_BYTES,
    Deploy,
    DeployPayload,
    DeployResult,
    Error,
    ErrorCode,
    Heartbeat,
    HeartbeatPayload,
    HeartbeatStatus,
    HostMetrics,
    HostReport,
    Message,
    Register,
    RegisterPayload,
    RegistrationSuccess,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopResult,
    Storage,
    SystemInfo,
    SystemInfoPayload,
    decode_inbound,
    encode_text,
    error_message,
    rfc3339,
)
from vectorlay.errors import (
    ConfigError,
    ConfigWriteError,
    ConnectFailed,
    ConnectionClosed,
    ContainerRuntimeError,
    CorruptConfig,
    FatalError,
    InsecureURL,
    InvalidMessage,
    NameInUse,
    ProtocolError,
    SessionConflict,
    TransportError,
    Unauthorized,
    VectorlayError,
)
from vectorlay.ports import Clock, ConfigStore, Connection, HardwareProbe, Runtime, Transport

log = logging.getLogger("vectorlay.agent")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
# The control plane rejected the credential: a restart cannot help, so the
# systemd unit lists this status in RestartPreventExitStatus.
EXIT_UNAUTHORIZED: Final = 3


@dataclass(frozen=True)
class AgentConfig:
    control_plane_url: str | None = None
    org_token: str | None = field(default=None, repr=False)
    heartbeat_interval: float = 30.0
    reconnect_delay: float = 5.0
    reconnect_cap: float = 60.0
    stop_timeout: float = 30.0
    outbox_size: int = 1000
    max_concurrent_commands: int = 4
    registration_timeout: float = 30.0
    # How often the replica table is re-read from the runtime even when the
    # runtime reported no change (a safety net; exits arrive through changes()).
    resync_interval: float = 300.0
    # On shutdown, in-flight commands get this long to finish (their results
    # still go out on the open session) before the session is closed.
    shutdown_grace: float = 2.5
    # Dependencies are probed again this often during a session; a change of
    # readiness is reported with a fresh system_info.
    reprobe_interval: float = 300.0
    # A probe younger than this is reused when a session opens.
    probe_reuse: float = 10.0
    # A heartbeat waits this long for fresh host metrics, then goes out with
    # the last ones (never longer than a quarter of the interval).
    metrics_wait: float = 2.0
    # Listing containers before system_info may take this long at most;
    # after that the table as it stands is reported.
    open_refresh_timeout: float = 5.0


Command = Deploy | Stop


@dataclass
class _Session:
    conn: Connection
    started: float
    ready: bool = False  # system_info and the outbox are out: results go straight through
    system_info_sent: bool = False
    system_info_at: float | None = None
    send_lock: anyio.Lock = field(default_factory=anyio.Lock)


class Agent:
    """The node agent, on any set of adapters (real ones, or ``adapters.memory``)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: Transport,
        runtime: Runtime,
        probe: HardwareProbe,
        store: ConfigStore,
        clock: Clock,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.runtime = runtime
        self.probe = probe
        self.store = store
        self.clock = clock
        self.rand = rand or random.Random().random
        self.heartbeat_policy = HeartbeatPolicy(interval=config.heartbeat_interval)
        self.reconnect_policy = ReconnectPolicy(
            first_delay=config.reconnect_delay,
            cap=max(config.reconnect_cap, config.reconnect_delay),
        )
        self.table = ReplicaTable()
        self.node: NodeConfig | None = None
        self.report: HostReport | None = None
        self.outbox: deque[Message] = deque()
        self.seq = 0
        self.sessions = 0
        self.dropped_results = 0
        self._metrics: HostMetrics | None = None
        self._beat_without_metrics = False
        self._session: _Session | None = None
        self._queues: dict[str, deque[Command]] = {}
        self._slots: anyio.Semaphore | None = None
        self._beat_now: anyio.Event | None = None
        self._stop_requested: anyio.Event | None = None
        self._stopping = False
        self._commands: anyio.abc.TaskGroup | None = None
        self._idle: anyio.Event | None = None
        self._logged_conflicts: dict[str, tuple[str, ...]] = {}
        self._connecting: anyio.CancelScope | None = None
        self._refresh_lock: anyio.Lock | None = None
        self._probed_at: float | None = None
        self._listed = False  # at least one runtime list succeeded
        self._metrics_read: anyio.Event | None = None  # set when the read in flight ends
        self._background: anyio.abc.TaskGroup | None = None

    # --- lifecycle ---------------------------------------------------------

    async def run(self) -> int:
        """Run until :meth:`request_stop` (returns 0) or a fatal error (non-zero)."""
        self._stop_requested = anyio.Event()
        self._beat_now = anyio.Event()
        self._slots = anyio.Semaphore(self.config.max_concurrent_commands)
        self._refresh_lock = anyio.Lock()
        try:
            await self._start()
        except FatalError as exc:
            log.error("%s", exc)
            return exc.exit_code
        exit_code = EXIT_OK
        async with anyio.create_task_group() as outer:
            async with anyio.create_task_group() as commands:
                self._commands = commands
                self._background = commands
                commands.start_soon(self._watch_runtime)
                try:
                    exit_code = await self._sessions_until_stopped()
                finally:
                    await self._wind_down(commands)
            outer.cancel_scope.cancel()
        return exit_code

    def request_stop(self) -> None:
        """Ask the agent to close its session (1001) and return; containers keep running."""
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        if self._session is None and self._connecting is not None:
            # Not connected yet (a handshake to an unreachable control plane
            # can take its full connect timeout): give up the attempt now.
            self._connecting.cancel()

    async def _wind_down(self, commands: anyio.abc.TaskGroup) -> None:
        if self._stopping and self._session is None:
            await self._until_idle(self.config.shutdown_grace)
        if self._queues:
            log.warning(
                "shutting down with %d replica operation(s) unfinished; "
                "their containers are reconciled at the next start",
                len(self._queues),
            )
        commands.cancel_scope.cancel()

    async def _start(self) -> None:
        try:
            self.node = await self.store.load()
        except CorruptConfig as exc:
            raise FatalError(f"{exc}; refusing to register over it") from None
        except ConfigError as exc:
            raise FatalError(str(exc)) from None
        if self.node is None:
            if not self.config.org_token:
                raise FatalError(
                    "no node config in the state dir and no org token: set --token-file "
                    "or VECTORLAY_ORG_TOKEN to register this node (or --state-dir / "
                    "VECTORLAY_STATE_DIR to where node.json is)",
                    EXIT_CONFIG,
                )
            if not self.config.control_plane_url:
                raise FatalError(
                    "no control plane to register with: set --control-plane or "
                    "VECTORLAY_CONTROL_PLANE_URL",
                    EXIT_CONFIG,
                )
        await self._probe()
        await self._refresh(adopting=True)
        if self.table.replicas():
            log.info(
                "adopted %d existing replica(s): %s",
                len(self.table.replicas()),
                ", ".join(r.replica_id for r in self.table.replicas()),
            )

    @property
    def url(self) -> str:
        if self.config.control_plane_url:
            return self.config.control_plane_url
        assert self.node is not None
        return self.node.control_plane_url

    # --- sessions and reconnection -------------------------------------------

    async def _sessions_until_stopped(self) -> int:
        delays = self._backoff()
        while not self._stopping:
            action = CloseAction.RECONNECT
            try:
                with anyio.CancelScope() as self._connecting:
                    await self._run_session()
            except FatalError as exc:
                log.error("%s", exc)
                return exc.exit_code
            except Unauthorized as exc:
                log.error(
                    "the control plane rejected this node's credential (%s): %s; "
                    "node.json is left untouched: fix the token or re-register",
                    "node token" if self.node else "org token",
                    exc,
                )
                return EXIT_UNAUTHORIZED
            except (InsecureURL, ConfigError) as exc:
                log.error("%s", exc)
                return EXIT_CONFIG
            except SessionConflict:
                action = CloseAction.BACK_OFF
            except ConnectionClosed as exc:
                action = on_close(exc.code)
                if action is CloseAction.EXIT:
                    log.error(
                        "the control plane closed the session as unauthorized (%d); "
                        "node.json is left untouched",
                        exc.code,
                    )
                    return EXIT_UNAUTHORIZED
                log.warning("session closed by the control plane (code %d)", exc.code)
            except TransportError as exc:
                if not self._stopping:
                    log.warning("session ended: %s", exc)
            session, self._session = self._session, None
            if self._stopping:
                break
            if session is not None and good_session(
                system_info_sent=session.system_info_sent,
                connected_for=self.clock.monotonic() - (session.system_info_at or math.inf),
                interval=self.config.heartbeat_interval,
            ):
                delays = self._backoff()
            delay = next(delays)
            if action is CloseAction.BACK_OFF:
                log.warning("another session for this node is open; retrying in %.1f s", delay)
                delay = max(delay, self.config.reconnect_delay)
            else:
                log.info("reconnecting in %.1f s", delay)
            await self._sleep_unless_stopping(delay)
        return EXIT_OK

    def _backoff(self) -> Iterator[float]:
        return backoff(self.reconnect_policy, self.rand)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        assert self._stop_requested is not None
        await self._sleep_or_until(seconds, self._stop_requested)

    async def _sleep_or_until(self, seconds: float, event: anyio.Event) -> None:
        """Sleep on the agent's clock, cut short when ``event`` is set."""
        async with anyio.create_task_group() as tg:

            async def sleeper() -> None:
                await self.clock.sleep(seconds)
                tg.cancel_scope.cancel()

            async def waiter() -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(sleeper)
            tg.start_soon(waiter)

    async def _run_session(self) -> None:
        credential = self.node.node_token if self.node else self.config.org_token
        assert credential is not None
        try:
            async with self.transport.connect(self.url, credential) as conn:
                session = _Session(conn, self.clock.monotonic())
                self._session = session
                self.sessions += 1
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._close_on_stop, session, tg.cancel_scope)
                        await self._open(session)
                        tg.start_soon(self._heartbeats, session)
                        tg.start_soon(self._reprobe, session)
                        await self._read(session)
                finally:
                    session.ready = False
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _close_on_stop(self, session: _Session, scope: anyio.CancelScope) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        # New deploys are refused from here on; operations under way get a
        # moment to finish so that their results still reach the control plane.
        await self._until_idle(self.config.shutdown_grace)
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await session.conn.close(CLOSE_GOING_AWAY, "agent shutting down")
        scope.cancel()

    async def _until_idle(self, timeout: float) -> None:
        """Wait until no replica operation is queued or running, at most ``timeout``."""
        if self._queues:
            self._idle = anyio.Event()
            with anyio.move_on_after(timeout, shield=True):
                await self._idle.wait()

    async def _open(self, session: _Session) -> None:
        """Register if needed, then system_info, then the outbox, in that order."""
        if self.node is None:
            await self._register(session)
        if self._probed_at is None or (
            self.clock.monotonic() - self._probed_at > self.config.probe_reuse
        ):
            await self._probe()
        # Until one list has succeeded the table may miss running containers,
        # and a control plane takes an unreported replica for gone: wait longer.
        wait = self.config.open_refresh_timeout * (1 if self._listed else 4)
        with anyio.move_on_after(wait):
            await self._refresh()
        assert self.node is not None
        assert self.report is not None
        info = self._system_info()
        await self._send(session, info)
        session.system_info_sent = True
        session.system_info_at = self.clock.monotonic()
        log.info(
            "session open: node %s, %s, %d replica(s)",
            self.node.node_id,
            "ready" if self.report.ready else "degraded",
            len(self.table.replicas()),
        )
        while self.outbox:
            # Taken out before sending: _deliver may trim the outbox meanwhile.
            message = self.outbox.popleft()
            try:
                await self._send(session, message)
            except BaseException:
                self.outbox.appendleft(message)
                raise
        # No await between the empty check above and this flag: a result made
        # meanwhile went to the outbox and was flushed by the loop.
        session.ready = True

    def _system_info(self) -> SystemInfo:
        assert self.node is not None
        assert self.report is not None
        return SystemInfo(
            SystemInfoPayload(
                node_id=self.node.node_id,
                agent_version=__version__,
                hardware=self.report.hardware,
                dependencies=self.report.dependencies,
                ready=self.report.ready,
                replicas=self.table.reports(),
            )
        )

    async def _register(self, session: _Session) -> None:
        assert self.report is not None
        assert self.config.control_plane_url
        log.info("registering this node with the control plane")
        await self._send(
            session,
            Register(
                RegisterPayload(
                    agent_version=__version__,
                    hardware=self.report.hardware,
                    dependencies=self.report.dependencies,
                )
            ),
        )
        answer: RegistrationSuccess | None = None
        with anyio.move_on_after(self.config.registration_timeout):
            while answer is None:
                try:
                    frame = await session.conn.receive()
                    if isinstance(frame, bytes):
                        raise InvalidMessage("message: binary frames are not accepted")
                    msg = decode_inbound(frame)
                except ProtocolError as exc:
                    # Only an error reply: a command cannot be meant for a node
                    # that has no identity yet, so no result goes to the outbox.
                    log.warning("rejected a message while registering: %s", exc.message)
                    await self._send(session, error_message(exc.code, exc.message))
                    continue
                if isinstance(msg, RegistrationSuccess):
                    answer = msg
                elif isinstance(msg, Error):
                    said = f"{msg.payload.code[:40]}: {msg.payload.message[:200]}"
                    if msg.payload.code == ErrorCode.UNAUTHORIZED:
                        # The close that follows says 4401; retrying the org token cannot help.
                        raise Unauthorized(f"the control plane refused the org token: {said}")
                    raise ConnectFailed(f"the control plane refused the registration: {said}")
                else:
                    log.warning(
                        "ignoring a %s message while registering", type(msg).__struct_config__.tag
                    )
        if answer is None:
            raise ConnectFailed(
                f"no registration_success within {self.config.registration_timeout:g} s"
            )
        problem = _identity_problem(answer.payload.node_id, answer.payload.node_token)
        if problem:
            raise ConnectFailed(f"registration_success carried an unusable identity: {problem}")
        node = NodeConfig(
            node_id=answer.payload.node_id,
            node_token=answer.payload.node_token,
            control_plane_url=self.config.control_plane_url,
        )
        try:
            await self.store.save(node)
        except ConfigWriteError as exc:
            raise FatalError(
                f"registered as {node.node_id} but could not save node.json: {exc}"
            ) from None
        self.node = node
        log.info("registered as node %s; node.json saved", node.node_id)

    async def _send(self, session: _Session, message: Message) -> None:
        text = _fit_frame(message)
        async with session.send_lock:
            await session.conn.send(text)

    # --- inbound -----------------------------------------------------------------

    async def _read(self, session: _Session) -> None:
        while True:
            try:
                frame = await session.conn.receive()
            except ProtocolError as exc:  # an oversize frame the transport dropped
                await self._reject(session, exc)
                continue
            if isinstance(frame, bytes):
                await self._send(
                    session,
                    error_message(
                        ErrorCode.INVALID_MESSAGE, "message: binary frames are not accepted"
                    ),
                )
                continue
            try:
                msg = decode_inbound(frame)
            except ProtocolError as exc:
                await self._reject(session, exc)
                continue
            if isinstance(msg, Deploy | Stop):
                self._enqueue(msg)
            elif isinstance(msg, Error):
                log.warning(
                    "control plane reported an error: %s: %s",
                    msg.payload.code[:40],
                    msg.payload.message[:200],
                )
            else:
                await self._send(
                    session,
                    error_message(
                        ErrorCode.INVALID_MESSAGE,
                        "registration_success: not expected in a node session",
                    ),
                )

    async def _reject(self, session: _Session, exc: ProtocolError) -> None:
        log.warning("rejected an inbound message: %s", exc.message)
        if exc.replica_id is not None and exc.message_type == "deploy":
            await self._deliver(
                DeployResult(ResultPayload(exc.replica_id, ReplicaStatus.FAILED, exc.message))
            )
        elif exc.replica_id is not None and exc.message_type == "stop":
            await self._deliver(
                StopResult(ResultPayload(exc.replica_id, ReplicaStatus.FAILED, exc.message))
            )
        else:
            await self._send(session, error_message(exc.code, exc.message))

    # --- commands ----------------------------------------------------------------

    def _enqueue(self, command: Command) -> None:
        """Queue a command behind earlier ones for the same replica."""
        rid = command.payload.replica_id
        queue = self._queues.get(rid)
        if queue is None:
            queue = self._queues[rid] = deque()
            assert self._commands is not None
            self._commands.start_soon(self._drain, rid, queue)
        queue.append(command)

    async def _drain(self, rid: str, queue: deque[Command]) -> None:
        assert self._slots is not None
        try:
            while queue:
                async with self._slots:
                    await self._execute(queue[0])
                queue.popleft()
        finally:
            del self._queues[rid]
            if not self._queues and self._idle is not None:
                self._idle.set()

    async def _execute(self, command: Command) -> None:
        if isinstance(command, Deploy):
            result = await self._deploy(command.payload)
            await self._deliver(DeployResult(_payload(result)))
        else:
            result = await self._stop(command.payload.replica_id)
            await self._deliver(StopResult(_payload(result)))
        self._heartbeat_soon()

    async def _deploy(self, payload: DeployPayload) -> ReportResult:
        decision = self.table.deploy(payload, refusal=self._refusal())
        if isinstance(decision, ReportResult):
            if decision.error:
                log.warning("deploy %s refused: %s", payload.replica_id[:64], decision.error)
            return decision
        assert isinstance(decision, StartContainer)
        spec = decision.spec
        log.info(
            "deploying %s: image %s, %d GPU(s), env %s",
            spec.replica_id,
            spec.image,
            len(spec.gpus),
            sorted(spec.env) or "none",
        )
        try:
            if decision.replace:
                await self.runtime.stop(spec.replica_id, grace=self.config.stop_timeout)
            state = await self.runtime.run(spec)
        except NameInUse as exc:
            # Most likely the nerdctl call of an agent that died mid-deploy
            # finished after all: that container is this replica.
            found = await self._find_container(spec.replica_id)
            if found is None:
                log.warning("deploy %s failed: %s", spec.replica_id, exc)
                return self.table.start_failed(spec.replica_id, str(exc))
            log.info("deploy %s: adopting the container already running it", spec.replica_id)
            result = self.table.adopted(found)
            self._log_conflicts()
            return result
        except ContainerRuntimeError as exc:
            log.warning("deploy %s failed: %s", spec.replica_id, exc)
            return self.table.start_failed(spec.replica_id, str(exc))
        except Exception as exc:
            log.exception("deploy %s failed unexpectedly", spec.replica_id)
            return self.table.start_failed(spec.replica_id, f"internal error: {type(exc).__name__}")
        log.info("replica %s is %s", spec.replica_id, state.status.value)
        result = self.table.started(state)
        self._log_conflicts()
        return result

    async def _find_container(self, replica_id: str) -> ContainerState | None:
        try:
            states = await self.runtime.list()
        except ContainerRuntimeError as exc:
            log.warning("cannot list containers: %s", exc)
            return None
        return next((s for s in states if s.replica_id == replica_id), None)

    async def _stop(self, replica_id: str) -> ReportResult:
        decision = self.table.stop(replica_id)
        if isinstance(decision, ReportResult):
            return decision
        assert isinstance(decision, StopContainer)
        log.info("stopping %s", replica_id)
        try:
            await self.runtime.stop(replica_id, grace=self.config.stop_timeout)
        except ContainerRuntimeError as exc:
            log.warning("stop %s failed: %s", replica_id, exc)
            return ReportResult(replica_id, ReplicaStatus.FAILED, str(exc))
        except Exception as exc:
            log.exception("stop %s failed unexpectedly", replica_id)
            return ReportResult(
                replica_id, ReplicaStatus.FAILED, f"internal error: {type(exc).__name__}"
            )
        log.info("replica %s is stopped", replica_id)
        return self.table.stopped(replica_id)

    def _refusal(self) -> str | None:
        if self._stopping:
            return "node is draining: the agent is shutting down"
        if self.report is not None and not self.report.ready:
            missing = [d.name for d in self.report.dependencies if not d.ok]
            return f"node is degraded: dependencies not ready: {', '.join(missing)}"
        return None

    async def _deliver(self, message: Message) -> None:
        """Send a result now, or keep it for the next session."""
        session = self._session
        if session is not None and session.ready:
            try:
                await self._send(session, message)
                return
            except TransportError:
                pass  # the reader sees the same failure and ends the session
        if len(self.outbox) >= self.config.outbox_size:
            self.outbox.popleft()
            self.dropped_results += 1
            log.warning("outbox full (%d): dropped the oldest result", self.config.outbox_size)
        self.outbox.append(message)

    # --- heartbeats -----------------------------------------------------------------

    def _heartbeat_soon(self) -> None:
        if self._beat_now is not None:
            self._beat_now.set()

    async def _heartbeats(self, session: _Session) -> None:
        while True:
            assert self._beat_now is not None
            self._beat_now = anyio.Event()
            await self._send(session, await self._heartbeat())
            await self._wait_for_beat(self.heartbeat_policy.interval)

    async def _wait_for_beat(self, seconds: float) -> None:
        assert self._beat_now is not None
        await self._sleep_or_until(seconds, self._beat_now)

    async def _heartbeat(self) -> Heartbeat:
        metrics = await self._read_metrics()
        self.seq += 1
        return Heartbeat(
            HeartbeatPayload(
                status=HeartbeatStatus(
                    containers=self.table.reports(),
                    gpu_utilization=metrics.gpu_utilization,
                    memory_used_gb=metrics.memory_used_gb,
                    memory_total_gb=metrics.memory_total_gb,
                    storage=metrics.storage,
                ),
                seq=self.seq,
                sent_at=rfc3339(self.clock.now()),
            )
        )

    async def _read_metrics(self) -> HostMetrics:
        """Fresh host figures if they come quickly, else the last ones.

        A hung nvidia-smi or data mount must not hold a heartbeat back: the
        read goes on in the background (one at a time) and a later beat
        carries its result.
        """
        assert self._background is not None
        if self._metrics_read is None:
            self._metrics_read = anyio.Event()
            self._background.start_soon(self._refresh_metrics, self._metrics_read)
        wait = min(self.config.metrics_wait, self.config.heartbeat_interval / 4)
        await self._sleep_or_until(wait, self._metrics_read)
        if self._metrics is None:
            self._beat_without_metrics = True
            storage = self.report.hardware.storage if self.report else Storage("")
            return HostMetrics(None, None, None, storage)
        return self._metrics

    async def _refresh_metrics(self, done: anyio.Event) -> None:
        try:
            self._metrics = await self.probe.metrics()
        except Exception as exc:
            log.warning("host metrics unavailable: %s", type(exc).__name__)
        finally:
            self._metrics_read = None
            done.set()
        if self._metrics is not None and self._beat_without_metrics:
            # A slow first read (nvidia-smi without persistence mode takes
            # seconds) sent a beat of nulls: the figures follow at once, not
            # a whole interval later.
            self._beat_without_metrics = False
            self._heartbeat_soon()

    # --- host and runtime state --------------------------------------------------------

    async def _probe(self) -> None:
        report = await self.probe.report()
        self.report = report
        self._probed_at = self.clock.monotonic()
        self.table.set_slots(assignable_slots(report.hardware.gpus))
        if not report.ready:
            missing = [f"{d.name} ({d.detail})" for d in report.dependencies if not d.ok]
            log.warning("host is degraded: %s", "; ".join(missing))

    async def _reprobe(self, session: _Session) -> None:
        """Probe again now and then; a change of readiness gets a fresh system_info."""
        while True:
            await self.clock.sleep(self.config.reprobe_interval)
            was_ready = self.report.ready if self.report else None
            await self._probe()
            assert self.report is not None
            if self.report.ready != was_ready:
                log.info("host is now %s", "ready" if self.report.ready else "degraded")
                await self._send(session, self._system_info())

    async def _refresh(self, *, adopting: bool = False) -> None:
        """Bring the replica table in line with the runtime's list.

        One refresh at a time; replicas that a command touched while the list
        was being taken keep what the command decided (the list is older).
        """
        assert self._refresh_lock is not None
        async with self._refresh_lock:
            versions = self.table.versions()
            busy = set(self._queues)
            try:
                states = await self.runtime.list()
            except ContainerRuntimeError as exc:
                log.warning("cannot list containers: %s", exc)
                return
            self._listed = True
            changed = self.table.observe(
                states, busy=busy | set(self._queues), unchanged_since=versions
            )
        if changed and not adopting:
            self._heartbeat_soon()
        self._log_conflicts()

    def _log_conflicts(self) -> None:
        """Say once when a container claims GPUs another replica holds."""
        conflicts = dict(self.table.conflicts)
        if conflicts and conflicts != self._logged_conflicts:
            log.error(
                "containers claim GPUs held by other replicas (the earlier holder keeps them): %s",
                "; ".join(f"{rid}: {'+'.join(gpus)}" for rid, gpus in sorted(conflicts.items())),
            )
        self._logged_conflicts = conflicts

    async def _watch_runtime(self) -> None:
        """Follow container changes, plus a slow periodic re-list as a safety net.

        Runtime I/O lives here, never on the heartbeat path: a hung nerdctl
        delays the table, not the heartbeats.
        """
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow_changes)
            while True:
                await self.clock.sleep(self.config.resync_interval)
                await self._refresh()

    async def _follow_changes(self) -> None:
        while True:
            try:
                # aclosing: the runtime's watcher (a nerdctl events process)
                # ends with this loop, not whenever the generator is collected.
                async with aclosing(self.runtime.changes()) as changes:
                    async for _ in changes:
                        await self._refresh()
            except ContainerRuntimeError as exc:
                log.warning("watching containers failed: %s; retrying", exc)
            await self.clock.sleep(self.config.reconnect_delay or 1.0)


def _identity_problem(node_id: str, node_token: str) -> str | None:
    """Why a registration answer cannot be saved and used, or ``None``.

    Both values travel in places (a file, an HTTP header) where empty or
    non-printable text would only fail later, at the next start.
    """
    for name, value in (("node_id", node_id), ("node_token", node_token)):
        if not value or len(value) > 4096:
            return f"{name} is empty or too long"
        if not all("\x21" <= ch <= "\x7e" for ch in value):
            return f"{name} has characters outside printable ASCII"
    return None


def _fit_frame(message: Message) -> str:
    """The message as a text frame no larger than the protocol's limit.

    Only a result can outgrow it: it echoes a replica id, which a broken
    control plane may have made nearly 1 MiB long.  The error text is cut
    first, then dropped; a result that still cannot fit becomes an error.
    """
    text = encode_text(message)
    if len(text) * 4 <= MAX_FRAME_BYTES or len(text.encode()) <= MAX_FRAME_BYTES:
        return text
    if isinstance(message, DeployResult | StopResult):
        kind = "deploy" if isinstance(message, DeployResult) else "stop"
        payload = message.payload
        for error in ("replica_id too long", None):
            shorter = msgspec.structs.replace(payload, error=error)
            text = encode_text(type(message)(shorter))
            if len(text.encode()) <= MAX_FRAME_BYTES:
                return text
        return encode_text(
            error_message(
                ErrorCode.INVALID_MESSAGE,
                f"{kind}.payload.replica_id: too long to be answered in a frame",
            )
        )
    return text


def _payload(result: ReportResult) -> ResultPayload:
    return ResultPayload(result.replica_id, result.status, result.error)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a session, out of a task group's exception group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    # The reason a session ended outranks the errors it caused in sibling
    # tasks (a 4401 close, then a failed heartbeat send on the dead socket).
    for wanted in (
        FatalError,
        Unauthorized,
        ConnectionClosed,
        SessionConflict,
        VectorlayError,
        Exception,
    ):
        for leaf in leaves:
            if isinstance(leaf, wanted):
                return leaf
    return leaves[0] if leaves else group


# --- the real process ---------------------------------------------------------------


def main(settings: AgentSettings) -> int:
    """``vectorlay-agent run``: real adapters, signals, one event loop."""
    if settings.backend == "asyncio":
        _keep_trio_out()
    return anyio.run(_main, settings, backend=settings.backend)


def _keep_trio_out() -> None:
    """Stop httpcore from importing trio just because it is installed.

    httpcore probes ``import trio`` at import time; on the asyncio backend
    that costs about 4 MB of RSS and 100 ms of start-up for nothing.  A
    ``None`` entry in ``sys.modules`` makes that import fail as if trio were
    absent.
    """
    if "trio" not in sys.modules:
        sys.modules["trio"] = None  # type: ignore[assignment]


def build_agent(settings: AgentSettings) -> Agent:
    """The one place where the real adapters are chosen and wired."""
    # Imported here so that library users of Agent on in-memory adapters do
    # not pay for httpx, psutil and friends.
    from vectorlay.adapters.clock import SystemClock
    from vectorlay.adapters.filesystem import FileConfigStore
    from vectorlay.adapters.probe.host import HostProbe
    from vectorlay.adapters.runtime.nerdctl import NerdctlRuntime
    from vectorlay.adapters.transport.websocket import WebSocketTransport, check_url

    if settings.control_plane_url:
        check_url(settings.control_plane_url, insecure=settings.insecure)
    _ensure_private_dir(settings.state_dir)
    policy = HeartbeatPolicy(interval=settings.heartbeat_interval)
    return Agent(
        AgentConfig(
            control_plane_url=settings.control_plane_url,
            org_token=settings.org_token,
            heartbeat_interval=settings.heartbeat_interval,
            reconnect_delay=settings.reconnect_delay,
            stop_timeout=settings.stop_timeout,
        ),
        transport=WebSocketTransport(
            user_agent=f"vectorlay-agent/{__version__}",
            ca_file=settings.ca_file,
            insecure=settings.insecure,
            ping_after=policy.ping_after,
            pong_timeout=policy.pong_timeout,
        ),
        runtime=NerdctlRuntime(
            nerdctl=settings.nerdctl,
            oci_runtime=settings.oci_runtime,
            env_dir=settings.state_dir / "env",
        ),
        probe=HostProbe(data_path=settings.data_path, nerdctl=settings.nerdctl),
        store=FileConfigStore(settings.state_dir),
        clock=SystemClock(),
    )


def _ensure_private_dir(path: Path) -> None:
    """Create the state dir 0700 before any adapter creates something inside it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the state dir {path}: {exc.strerror}") from None
    if path.stat().st_mode & 0o077:
        log.warning("state dir %s is accessible to other users; it should be mode 0700", path)


async def _main(settings: AgentSettings) -> int:
    try:
        agent = build_agent(settings)
    except (InsecureURL, ConfigError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, agent)
        code = await agent.run()
        tg.cancel_scope.cancel()
    if code != EXIT_CONFIG:  # a usage error stays the one line that says what to set
        log.info("agent stopped (exit status %d); containers left running", code)
    return code


async def _stop_on_signal(agent: Agent) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s received: closing the session and exiting", signal.Signals(signum).name)
            agent.request_stop()
