"""One agent's WebSocket session on the reference control plane.

A session runs three tasks in one task group: the reader (decodes frames and
hands them to the fleet), the writer (sends what this session's outbox
holds), and the watchdog (closes with ``4001`` when the node's liveness
deadline passes).  If any of them ends the session, the group ends as a whole.

Phases: a connection made with an org token waits for ``register``; one made
with a node token (or just registered) waits for ``system_info``; after that
the node is connected and heartbeats, results and commands flow.

A session needs only a few things of the control plane that runs it, named
by :class:`SessionHost`; the one node-to-session map belongs to that host,
which :meth:`SessionHost.claim_node` and :meth:`SessionHost.release_node` change.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Sequence
from typing import Final, Protocol

import anyio

from vectorlay.adapters.controlplane.websocket import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    ServerWebSocket,
)
from vectorlay.domain.closecodes import (
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_SESSION_CONFLICT,
    CLOSE_UNAUTHORIZED,
)
from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.fleet.records import ReplicaRecord, Send, agent_error
from vectorlay.domain.messages import (
    DeployResult,
    Error,
    ErrorCode,
    Heartbeat,
    Message,
    Outbound,
    ProtocolError,
    Register,
    RegisterPayload,
    RegistrationSuccess,
    RegistrationSuccessPayload,
    ResultPayload,
    StopResult,
    SystemInfo,
    SystemInfoPayload,
    decode_outbound,
    encode_text,
    error_message,
    message_type,
)
from vectorlay.errors import MessageTooBig, UnknownNode, WebSocketClosed, WrongNode
from vectorlay.ports import Clock, FleetStore

log = logging.getLogger("vectorlay.controlplane")

OUTBOX_LIMIT: Final = 1024
NODE_TOKEN_BYTES: Final = 32
CLOSE_FLUSH_TIMEOUT: Final = 2.0


class Phase(enum.Enum):
    REGISTERING = "registering"  # org token: waiting for register
    IDENTIFIED = "identified"  # node known: waiting for system_info
    STARTED = "started"  # system_info seen: the node is connected


def new_node_id() -> str:
    return f"node-{secrets.token_hex(8)}"


class SessionHost(Protocol):
    """What an agent session uses of the control plane that runs it."""

    @property
    def clock(self) -> Clock: ...

    @property
    def fleet(self) -> Fleet: ...

    @property
    def store(self) -> FleetStore: ...

    async def commit(self, sends: Sequence[Send]) -> None:
        """Persist what the fleet changed, then deliver ``sends``."""
        ...

    def wake_rescheduler(self) -> None: ...

    def claim_node(self, node_id: str, session: AgentSession) -> AgentSession | None:
        """Make ``session`` the node's session; returns the older one it replaces, if any."""
        ...

    def release_node(self, node_id: str, session: AgentSession) -> bool:
        """Forget ``session`` as the node's session; ``False`` if it was not (any more)."""
        ...

    def owns_node(self, node_id: str, session: AgentSession) -> bool:
        """Whether ``session`` is the node's session now."""
        ...


class AgentSession:
    def __init__(
        self, cp: SessionHost, ws: ServerWebSocket, *, node_id: str | None, peer: str
    ) -> None:
        self.cp = cp
        self.ws = ws
        self.node_id = node_id
        self.peer = peer
        self.phase = Phase.REGISTERING if node_id is None else Phase.IDENTIFIED
        # What the hello deadline counts from: the upgrade, then the register
        # (after which system_info is due); frames in between buy no time.
        self._waiting_since = cp.clock.monotonic()
        self._send, self._outbox = anyio.create_memory_object_stream[str](OUTBOX_LIMIT)
        self._scope: anyio.CancelScope | None = None
        self._close_code: int | None = None
        self._peer_closed = False
        ws.on_frame = self._frame_seen

    # --- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        if self.node_id is not None:
            self._claim(self.node_id)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                with anyio.CancelScope() as self._scope:
                    if self._close_code is not None:
                        self._scope.cancel()
                    async with anyio.create_task_group() as inner:
                        inner.start_soon(self._watchdog)
                        await self._reader()
                        inner.cancel_scope.cancel()
                # The node is offline as soon as the session ends (at its
                # deadline, for the watchdog), not after the outbox flush and
                # the close handshake, which an agent that no longer answers
                # can stretch to their timeouts.
                with anyio.CancelScope(shield=True):
                    await self._release()
                # The writer sends what is queued (an error before a close,
                # say), then stops; an agent that does not read gets a bound.
                self._send.close()
                if self._peer_closed:
                    tg.cancel_scope.cancel()
                tg.cancel_scope.deadline = anyio.current_time() + CLOSE_FLUSH_TIMEOUT
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()  # if not done above (cancelled from outside)
                if not self._peer_closed:
                    await self.ws.close(self._close_code or CLOSE_NORMAL)
                self._send.close()
                self._outbox.close()

    def end(self, code: int) -> None:
        """Close the session with ``code`` (the first reason given wins)."""
        if self._close_code is None:
            self._close_code = code
        if self._scope is not None:
            self._scope.cancel()

    def send(self, message: Message) -> None:
        """Queue a message for the writer; an agent that stops reading is closed."""
        try:
            self._send.send_nowait(encode_text(message))
        except anyio.WouldBlock:
            log.warning(
                "agent is not reading its session; closing it",
                extra={"node_id": self.node_id, "queued": OUTBOX_LIMIT},
            )
            self.end(CLOSE_TRY_AGAIN)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def _claim(self, node_id: str) -> None:
        older = self.cp.claim_node(node_id, self)
        if older is not None:
            log.info(
                "newer session for node replaces the older one (4409)", extra={"node_id": node_id}
            )
            older.end(CLOSE_SESSION_CONFLICT)

    async def _release(self) -> None:
        """Give up the node: offline, persisted, rescheduler woken.  Runs once.

        Only the session that owns the node releases it: after the first
        call (or once a newer session has claimed the node) it does nothing.
        """
        node_id = self.node_id
        if node_id is None or not self.cp.release_node(node_id, self):
            return  # released already, or a newer session owns the node now
        if self.cp.fleet.disconnect(node_id):
            await self.cp.commit([])
            self.cp.wake_rescheduler()
            log.info(
                "node offline",
                extra={"node_id": node_id, "close_code": self._close_code or self.ws.close_code},
            )

    # --- tasks ----------------------------------------------------------------------

    async def _reader(self) -> None:
        while True:
            try:
                frame = await self.ws.receive()
            except WebSocketClosed:
                self._peer_closed = True
                return
            except MessageTooBig as exc:
                self.send(error_message(ErrorCode.TOO_LARGE, f"message: {exc}"))
                self.end(CLOSE_TOO_BIG)
                return
            try:
                await self._handle(frame)
            except Exception:
                log.exception("error handling an agent message", extra={"node_id": self.node_id})
                self.send(error_message(ErrorCode.INTERNAL, "message: internal error"))

    async def _writer(self) -> None:
        async for text in self._outbox:
            try:
                await self.ws.send_text(text)
            except WebSocketClosed:
                self._peer_closed = True
                self.end(CLOSE_INTERNAL)
                return

    async def _watchdog(self) -> None:
        clock = self.cp.clock
        while True:
            remaining = self._deadline() - clock.monotonic()
            if remaining <= 0:
                break
            await clock.sleep(remaining)
        log.info(
            "no frame from agent within the liveness deadline; closing (4001)",
            extra={"node_id": self.node_id, "offline_after": self.cp.fleet.policy.offline_after},
        )
        self.end(CLOSE_HEARTBEAT_TIMEOUT)

    def _deadline(self) -> float:
        if self.phase is Phase.STARTED and self.node_id is not None:
            return self.cp.fleet.liveness_deadline(self.node_id)
        return self.cp.fleet.policy.deadline(self._waiting_since)

    def _frame_seen(self) -> None:
        # A released session (closing, or replaced by a newer one) no longer
        # speaks for the node: its frames must not move the node's deadline.
        if (
            self.phase is Phase.STARTED
            and self.node_id is not None
            and self.cp.owns_node(self.node_id, self)
        ):
            now = self.cp.clock.monotonic()
            self.cp.fleet.touch(self.node_id, now=now, wall=self.cp.clock.now())

    # --- messages -----------------------------------------------------------------------

    async def _handle(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self.send(
                error_message(
                    ErrorCode.INVALID_MESSAGE,
                    "message: binary frames are not allowed; send JSON in a text frame",
                )
            )
            return
        try:
            message = decode_outbound(frame)
        except ProtocolError as exc:
            self.send(error_message(exc.code, exc.message))
            return
        if isinstance(message, Error):
            log.warning(
                "agent reported an error",
                extra={"node_id": self.node_id, "code": message.payload.code[:40]},
            )
            return
        if self.phase is Phase.REGISTERING:
            await self._registering(message)
        elif self.phase is Phase.IDENTIFIED:
            await self._identified(message)
        else:
            await self._started(message)

    async def _registering(self, message: Outbound) -> None:
        if isinstance(message, Register):
            await self._register(message.payload)
        else:
            self._unexpected(message, "register on a connection made with an org token")

    async def _identified(self, message: Outbound) -> None:
        if isinstance(message, SystemInfo):
            await self._system_info(message.payload)
        else:
            self._unexpected(message, "system_info first")

    async def _started(self, message: Outbound) -> None:
        assert self.node_id is not None
        fleet = self.cp.fleet
        if isinstance(message, Heartbeat):
            await self.cp.commit(fleet.heartbeat(self.node_id, message.payload.status.containers))
        elif isinstance(message, DeployResult | StopResult):
            answer = fleet.deploy_result if isinstance(message, DeployResult) else fleet.stop_result
            await self.cp.commit(answer(self.node_id, message.payload))
            self._log_result(message)
        elif isinstance(message, SystemInfo):
            await self._system_info(message.payload)
        else:
            self._unexpected(message, "no register on a node session")

    def _unexpected(self, message: Outbound, wanted: str) -> None:
        kind = message_type(type(message))
        self.send(
            error_message(
                ErrorCode.INVALID_MESSAGE, f"message.type: got {kind!r}, expected {wanted}"
            )
        )

    async def _register(self, payload: RegisterPayload) -> None:
        cp = self.cp
        node_id = new_node_id()
        while cp.fleet.node(node_id) is not None:
            node_id = new_node_id()
        token = secrets.token_urlsafe(NODE_TOKEN_BYTES)
        record = cp.fleet.register(node_id, payload, now=cp.clock.monotonic(), wall=cp.clock.now())
        # The identity is durable before the agent learns it.
        await cp.store.add_node(record, token)
        await cp.commit([])
        self.node_id = node_id
        self.phase = Phase.IDENTIFIED
        self._waiting_since = cp.clock.monotonic()
        self._claim(node_id)
        self.send(
            RegistrationSuccess(RegistrationSuccessPayload(node_id=node_id, node_token=token))
        )
        log.info(
            "node registered",
            extra={"node_id": node_id, "hostname": record.hostname[:80], "peer": self.peer},
        )

    def _log_result(self, message: DeployResult | StopResult) -> None:
        """One line per answered command, so an operator sees a deploy or stop end."""
        result = message.payload
        replica = self.cp.fleet.replica(result.replica_id)
        log.info(
            "deploy answered" if isinstance(message, DeployResult) else "stop answered",
            extra={
                "node_id": self.node_id,
                "replica_id": result.replica_id[:80],
                "status": result.status.value,
                "replica_status": replica.status.value if replica is not None else "unknown",
                **({"error": _shown_error(result, replica)} if result.error else {}),
            },
        )

    async def _system_info(self, info: SystemInfoPayload) -> None:
        assert self.node_id is not None
        cp = self.cp
        try:
            sends = cp.fleet.session_started(
                self.node_id, info, now=cp.clock.monotonic(), wall=cp.clock.now()
            )
        except (WrongNode, UnknownNode) as exc:
            log.warning(
                "system_info names another node than the credential's; closing (4401)"
                if isinstance(exc, WrongNode)
                else "node was removed; its token is revoked; closing (4401)",
                extra={"node_id": self.node_id, "peer": self.peer},
            )
            self.send(
                error_message(
                    ErrorCode.UNAUTHORIZED,
                    "system_info.payload.node_id: does not match the node of this credential"
                    if isinstance(exc, WrongNode)
                    else "this node was removed by an operator; its token is revoked",
                )
            )
            self.end(CLOSE_UNAUTHORIZED)
            return
        first = self.phase is not Phase.STARTED
        self.phase = Phase.STARTED
        await cp.commit(sends)
        if first:
            node = cp.fleet.node(self.node_id)
            log.info(
                "node connected",
                extra={
                    "node_id": self.node_id,
                    "status": node.status.value if node is not None else "?",
                    "resent": len(sends),
                    "peer": self.peer,
                },
            )


def _shown_error(result: ResultPayload, replica: ReplicaRecord | None) -> str:
    shown = agent_error(replica, result) if replica is not None else result.error
    return (shown or "")[:200]
