"""Sessions with the control plane, one after the other until the agent stops.

Every session, in this order: registration when the node has no identity
yet, ``system_info``, the results kept while disconnected (the outbox), then
heartbeats and commands.  One task group per session runs its reader,
heartbeats and re-probes; when one fails, the session ends as a whole and
the loop decides: reconnect after a backoff delay (reset by a good session)
or exit when retrying cannot help.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import anyio

from vectorlay import __version__
from vectorlay.app.agent.commands import CommandRunner, Outbox
from vectorlay.app.agent.config import EXIT_CONFIG, EXIT_OK, EXIT_UNAUTHORIZED, AgentConfig
from vectorlay.app.agent.heartbeats import Heartbeats
from vectorlay.app.agent.registration import Identity, credential, register
from vectorlay.app.agent.statusboard import StatusBoard
from vectorlay.app.agent.sync import HostState, RuntimeSync
from vectorlay.app.agent.waits import sleep_or_until
from vectorlay.domain.agent.framing import fit_frame
from vectorlay.domain.agent.gpustate import changed as gpus_changed
from vectorlay.domain.agent.heartbeat import CloseAction, good_session, on_close
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import ReplicaTable
from vectorlay.domain.agent.session import Event, Phase, step
from vectorlay.domain.closecodes import CLOSE_GOING_AWAY, CLOSE_SESSION_CONFLICT
from vectorlay.domain.messages import (
    Deploy,
    DeployResult,
    Error,
    ErrorCode,
    Gpu,
    HostReport,
    Message,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopResult,
    SystemInfo,
    SystemInfoPayload,
    decode_inbound,
    error_message,
)
from vectorlay.errors import (
    ConfigError,
    ConnectionClosed,
    FatalError,
    InsecureURL,
    ProtocolError,
    TransportError,
    Unauthorized,
    VectorlayError,
)
from vectorlay.ports import Clock, ConfigStore, Connection, Transport

log = logging.getLogger("vectorlay.agent")


class Session:
    """One connection to the control plane, from the handshake to its end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.phase = Phase.OPENING
        self.system_info_at: float | None = None  # monotonic time system_info went out
        self._sending = anyio.Lock()  # one frame at a time, whole

    def step(self, event: Event) -> None:
        self.phase = step(self.phase, event)

    async def send(self, message: Message) -> None:
        text = fit_frame(message)
        async with self._sending:
            await self.conn.send(text)

    async def receive(self) -> str | bytes:
        return await self.conn.receive()


class SessionLoop:
    """Connect, open, serve; reconnect with backoff until stopped or refused for good."""

    def __init__(
        self,
        config: AgentConfig,
        identity: Identity,
        *,
        transport: Transport,
        store: ConfigStore,
        clock: Clock,
        host: HostState,
        table: ReplicaTable,
        sync: RuntimeSync,
        runner: CommandRunner,
        outbox: Outbox,
        heartbeats: Heartbeats,
        stopping: anyio.Event,
        backoff: Callable[[], Iterator[float]],
        opened: Callable[[], None],
        board: StatusBoard | None = None,
    ) -> None:
        self._config = config
        self.identity = identity
        self._transport = transport
        self._store = store
        self._clock = clock
        self._host = host
        self._table = table
        self._sync = sync
        self._runner = runner
        self._outbox = outbox
        self._heartbeats = heartbeats
        self._stopping = stopping
        self._backoff = backoff  # a fresh delay sequence: the reset after a good session
        self._opened = opened  # called for every session that connected
        self._board = board  # told of sessions opening, ending and retrying
        self._session: Session | None = None  # the connected session, if any
        self._attempt = anyio.CancelScope()  # the scope of the attempt under way

    @property
    def url(self) -> str:
        return self._config.control_plane_url or self.identity.control_plane_url

    async def run(self) -> int:
        """Sessions until the agent stops (0), or the exit status of a fatal error."""
        delays = self._backoff()
        while not self._stopping.is_set():
            try:
                await self._observed_attempt()
            except FatalError as exc:
                log.error("%s", exc)
                return exc.exit_code
            except Unauthorized as exc:
                log.error(
                    "the control plane rejected this node's credential (%s): %s; "
                    "node.json is left untouched: fix the token or re-register",
                    "node token" if isinstance(self.identity, NodeConfig) else "org token",
                    exc,
                )
                return EXIT_UNAUTHORIZED
            except (InsecureURL, ConfigError) as exc:
                log.error("%s", exc)
                return EXIT_CONFIG
            except ConnectionClosed as exc:
                if on_close(exc.code) is CloseAction.EXIT:
                    log.error(
                        "the control plane closed the session as unauthorized (%d); "
                        "node.json is left untouched",
                        exc.code,
                    )
                    return EXIT_UNAUTHORIZED
                if exc.code == CLOSE_SESSION_CONFLICT:
                    log.warning(
                        "another session for this node is open (code %d); retrying after a pause",
                        exc.code,
                    )
                else:
                    log.warning("session closed by the control plane (code %d)", exc.code)
            except TransportError as exc:
                if not self._stopping.is_set():
                    log.warning("session ended: %s", exc)
            session, self._session = self._session, None
            if self._stopping.is_set():
                break
            sent_at = session.system_info_at if session is not None else None
            if sent_at is not None and good_session(
                system_info_sent=True,
                connected_for=self._clock.monotonic() - sent_at,
                interval=self._config.heartbeat_interval,
            ):
                delays = self._backoff()
            # Every delay is at least the reconnect delay, after a 4409 too.
            delay = next(delays)
            log.info("reconnecting in %.1f s", delay)
            if self._board is not None:
                self._board.retrying(delay)
            await sleep_or_until(self._clock, delay, self._stopping)
        return EXIT_OK

    async def abandon_dial_on_stop(self) -> None:
        """When the agent stops before a handshake finished, give that attempt up at once.

        A handshake with an unreachable control plane can take its full
        connect timeout; a connected session closes itself (1001) instead.
        """
        await self._stopping.wait()
        if self._session is None:
            self._attempt.cancel()

    async def send_system_info(self) -> None:
        """A fresh ``system_info`` on the open session (readiness changed); no-op when none."""
        session = self._session
        if session is None or session.system_info_at is None:
            return  # a session still opening sends the current report itself
        if not isinstance(self.identity, NodeConfig):
            return
        # A failed send: the session's reader sees the same failure and ends it.
        with contextlib.suppress(TransportError):
            await session.send(system_info(self.identity, self._host.report, self._table))

    async def _observed_attempt(self) -> None:
        try:
            await self._attempt_session()
        except BaseException as exc:
            if self._board is not None:
                self._board.session_ended(exc)
            raise
        if self._board is not None:
            self._board.session_ended(None)

    async def _attempt_session(self) -> None:
        try:
            with anyio.CancelScope() as self._attempt:
                async with self._transport.connect(self.url, credential(self.identity)) as conn:
                    session = Session(conn)
                    self._session = session
                    self._opened()
                    await self._serve(session)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _serve(self, session: Session) -> None:
        self._outbox.attach(session)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._close_on_stop, session, tg.cancel_scope)
                node = await self._open(session)
                tg.start_soon(self._heartbeats.beat, session.send)
                tg.start_soon(self._reprobe, session, node)
                tg.start_soon(self._watch_gpus, session, node)
                await self._read(session)
        finally:
            session.step(Event.ENDED)
            self._outbox.detach()

    async def _close_on_stop(self, session: Session, scope: anyio.CancelScope) -> None:
        await self._stopping.wait()
        # New deploys are refused from here on; operations under way get a
        # moment to finish so that their results still reach the control plane.
        await self._runner.until_idle(self._config.shutdown_grace)
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await session.conn.close(CLOSE_GOING_AWAY, "agent shutting down")
        scope.cancel()

    async def _open(self, session: Session) -> NodeConfig:
        """Register if needed, then system_info, then the outbox, in that order."""
        node = await self._identify(session)
        if self._host.older_than(self._config.probe_reuse):
            await self._host.probe()
        # Until one list has succeeded the table may miss running containers,
        # and a control plane takes an unreported replica for gone: wait longer.
        wait = self._config.open_refresh_timeout * (1 if self._sync.listed else 4)
        with anyio.move_on_after(wait):
            await self._sync.refresh()
        report = self._host.report
        await session.send(system_info(node, report, self._table))
        session.step(Event.SYSTEM_INFO_SENT)
        session.system_info_at = self._clock.monotonic()
        if self._board is not None:
            self._board.session_opened(node.node_id)
        if self._host.report is not report:
            # The host changed while system_info was on its way (a disk
            # reading): the control plane gets the current report too.
            await session.send(system_info(node, self._host.report, self._table))
        log.info(
            "session open: node %s, %s, %d replica(s)",
            node.node_id,
            "ready" if report.ready else "degraded",
            len(self._table.replicas()),
        )
        await self._outbox.flush(session.send)
        # No await between the flush's last look at the outbox and this step:
        # a result made meanwhile went to the outbox and was flushed.
        session.step(Event.OUTBOX_SENT)
        return node

    async def _identify(self, session: Session) -> NodeConfig:
        """The node's identity; registers first on a node that has none yet."""
        if isinstance(self.identity, NodeConfig):
            return self.identity
        session.step(Event.REGISTER)
        node = await register(
            session,
            self.identity,
            self._host.report,
            store=self._store,
            timeout=self._config.registration_timeout,
        )
        self.identity = node
        # Containers are labelled with the node id from now on.
        self._table.node_id = node.node_id
        session.step(Event.REGISTERED)
        return node

    async def _reprobe(self, session: Session, node: NodeConfig) -> None:
        """Probe again now and then; a change of readiness gets a fresh system_info."""
        while True:
            await self._clock.sleep(self._config.reprobe_interval)
            was_ready = self._host.report.ready
            gpus_before = self._host.report.hardware.gpus
            report = await self._host.probe()
            if report.ready != was_ready:
                log.info("host is now %s", "ready" if report.ready else "degraded")
            gpus_now = report.hardware.gpus
            if report.ready != was_ready or gpus_changed(gpus_before, gpus_now):
                log_gpu_changes(gpus_before, gpus_now)
                await session.send(system_info(node, report, self._table))

    async def _watch_gpus(self, session: Session, node: NodeConfig) -> None:
        """Read the GPUs' state and health every heartbeat interval (or at once
        after a start changed a quarantine); a change gets a fresh system_info."""
        while True:
            await sleep_or_until(self._clock, self._config.heartbeat_interval, self._host.gpus_due)
            before = self._host.report.hardware.gpus
            try:
                changed = await self._host.refresh_gpus()
            except Exception as exc:  # a probe bug must not end the session
                log.warning("reading GPU state failed: %s", type(exc).__name__)
                continue
            if changed:
                log_gpu_changes(before, self._host.report.hardware.gpus)
                await session.send(system_info(node, self._host.report, self._table))

    async def _read(self, session: Session) -> None:
        while True:
            try:
                frame = await session.receive()
            except ProtocolError as exc:  # an oversize frame the transport dropped
                await self._reject(session, exc)
                continue
            if isinstance(frame, bytes):
                await session.send(
                    error_message(
                        ErrorCode.INVALID_MESSAGE, "message: binary frames are not accepted"
                    )
                )
                continue
            try:
                msg = decode_inbound(frame)
            except ProtocolError as exc:
                await self._reject(session, exc)
                continue
            if isinstance(msg, Deploy | Stop):
                self._runner.enqueue(msg)
            elif isinstance(msg, Error):
                log.warning(
                    "control plane reported an error: %s: %s",
                    msg.payload.code[:40],
                    msg.payload.message[:200],
                )
            else:
                await session.send(
                    error_message(
                        ErrorCode.INVALID_MESSAGE,
                        "registration_success: not expected in a node session",
                    )
                )

    async def _reject(self, session: Session, exc: ProtocolError) -> None:
        """Answer a frame that could not be read: with a failed result when it names a replica."""
        log.warning("rejected an inbound message: %s", exc.message)
        if exc.replica_id is not None and exc.message_type == "deploy":
            await self._outbox.deliver(
                DeployResult(ResultPayload(exc.replica_id, ReplicaStatus.FAILED, exc.message))
            )
        elif exc.replica_id is not None and exc.message_type == "stop":
            await self._outbox.deliver(
                StopResult(ResultPayload(exc.replica_id, ReplicaStatus.FAILED, exc.message))
            )
        else:
            await session.send(error_message(exc.code, exc.message))


def log_gpu_changes(before: Sequence[Gpu], after: Sequence[Gpu]) -> None:
    """One line per GPU whose ``assignable``/``health`` changed; running replicas are left be."""
    old = {g.pci_address: g for g in before}
    for gpu in after:
        was = old.get(gpu.pci_address)
        if was is not None and (was.assignable, was.health) == (gpu.assignable, gpu.health):
            continue
        level = logging.WARNING if gpu.health != "ok" or not gpu.assignable else logging.INFO
        log.log(
            level,
            "GPU %s is now %s, %s%s",
            gpu.pci_address,
            gpu.health,
            "assignable" if gpu.assignable else "not assignable",
            f": {'; '.join(gpu.problems)}" if gpu.problems else "",
        )


def system_info(node: NodeConfig, report: HostReport, table: ReplicaTable) -> SystemInfo:
    return SystemInfo(
        SystemInfoPayload(
            node_id=node.node_id,
            agent_version=__version__,
            hardware=report.hardware,
            dependencies=report.dependencies,
            ready=report.ready,
            replicas=table.reports(),
        )
    )


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
    for wanted in (FatalError, Unauthorized, ConnectionClosed, VectorlayError, Exception):
        for leaf in leaves:
            if isinstance(leaf, wanted):
                return leaf
    return leaves[0] if leaves else group
