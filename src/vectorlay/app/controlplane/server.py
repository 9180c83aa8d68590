"""The reference control plane: one listener for the agent WebSocket, the admin API and pages.

Wiring: a :class:`~vectorlay.domain.fleet.fleet.Fleet` (every decision), a
:class:`~vectorlay.ports.FleetStore` (durability, written before anything is
sent), the agent sessions (:mod:`vectorlay.app.controlplane.session`), the HTTP
side (:mod:`vectorlay.app.controlplane.api`), and one rescheduler task that
sleeps until the earliest moment a disconnected node's replicas are due to move.

The sessions and the admin API each see the control plane through a small
Protocol of what they use (``SessionHost``, ``AdminHost``); this module is the
only one that knows the whole :class:`ControlPlane`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from vectorlay.adapters.controlplane.http import (
    Request,
    Response,
    Upgrade,
    bearer,
    serve_connection,
    token_matches,
)
from vectorlay.app.controlplane import api as cp_api
from vectorlay.app.controlplane.session import AgentSession, Phase
from vectorlay.app.controlplane.transitions import Transitions
from vectorlay.domain.closecodes import CLOSE_GOING_AWAY, CLOSE_UNAUTHORIZED
from vectorlay.domain.fleet.fleet import Fleet
from vectorlay.domain.fleet.records import Send
from vectorlay.domain.liveness import DEFAULT_OFFLINE_AFTER, LivenessPolicy
from vectorlay.domain.messages import MAX_FRAME_BYTES, SUBPROTOCOL
from vectorlay.ports import Clock, FleetStore

log = logging.getLogger("vectorlay.controlplane")

AGENT_PATH: Final = "/v1/agent"
SHUTDOWN_GRACE: Final = 5.0


@dataclass(frozen=True)
class ControlPlaneConfig:
    """Tokens are compared in constant time; any listed admin token opens the admin API."""

    org_tokens: tuple[str, ...] = field(default=(), repr=False)
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    offline_after: float = DEFAULT_OFFLINE_AFTER


def _peer(stream: anyio.abc.ByteStream) -> str:
    address = stream.extra(SocketAttribute.remote_address, None)  # noqa: S610
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address) if address is not None else "?"


class ControlPlane:
    """Build with a store and a clock, :meth:`load`, then :meth:`serve`."""

    def __init__(self, store: FleetStore, config: ControlPlaneConfig, clock: Clock) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.policy = LivenessPolicy(config.offline_after)
        self.fleet = Fleet(self.policy, now=clock.monotonic())
        self.sessions: dict[str, AgentSession] = {}
        self.live_sessions: set[AgentSession] = set()
        self._commit_lock = anyio.Lock()
        self.transitions = Transitions()
        self._wake = anyio.Event()
        self._accepting = anyio.CancelScope()
        self._rescheduling = anyio.CancelScope()

    async def load(self) -> None:
        """Rebuild the fleet from the store: every node offline, given a fresh deadline."""
        snapshot = await self.store.load()
        self.fleet = Fleet(self.policy, snapshot, now=self.clock.monotonic())
        self.transitions.seed(snapshot.replicas)
        await self.commit([])
        log.info(
            "fleet loaded",
            extra={
                "nodes": len(snapshot.nodes),
                "replicas": len(snapshot.replicas),
                "pending_commands": len(snapshot.commands),
            },
        )

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until cancelled or :meth:`shutdown`; reports the bound port.

        After :meth:`shutdown` it stops accepting, lets open connections end
        (sessions close with ``1001``) for up to ``SHUTDOWN_GRACE`` seconds,
        and returns.
        """
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        bound = int(listener.extra(SocketAttribute.local_port))  # noqa: S610
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(self._rescheduler)
            log.info(
                "control plane listening",
                extra={"url": f"http://{host}:{bound}", "agent_path": AGENT_PATH},
            )
            task_status.started(bound)
            with self._accepting:
                await listener.serve(self._connection, task_group=tg)
            self._rescheduling.cancel()
            tg.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_GRACE

    @property
    def admin_tokens(self) -> tuple[str, ...]:
        return self.config.admin_tokens

    @property
    def shutting_down(self) -> bool:
        return self._accepting.cancel_called

    def shutdown(self) -> None:
        """Stop accepting and close every agent session with ``1001`` (going away).

        Closing each session through its own small cancel scope, rather than
        cancelling one scope over thousands of tasks, keeps a restart with a
        large fleet connected fast.
        """
        self._accepting.cancel()
        for session in list(self.live_sessions):
            session.end(CLOSE_GOING_AWAY)

    # --- agent sessions ----------------------------------------------------------------

    def claim_node(self, node_id: str, session: AgentSession) -> AgentSession | None:
        """Make ``session`` the node's session; returns the older one it replaces, if any."""
        older = self.sessions.get(node_id)
        self.sessions[node_id] = session
        return older if older is not session else None

    def release_node(self, node_id: str, session: AgentSession) -> bool:
        """Forget ``session`` as the node's session; ``False`` if it was not (any more)."""
        if self.sessions.get(node_id) is not session:
            return False
        del self.sessions[node_id]
        return True

    def owns_node(self, node_id: str, session: AgentSession) -> bool:
        return self.sessions.get(node_id) is session

    @property
    def changed_at(self) -> Mapping[str, datetime]:
        return self.transitions.changed_at

    def now(self) -> datetime:
        return self.clock.now()

    def revoke_sessions(self, node_id: str) -> int:
        """Close every open session of a removed node with 4401 (its token is revoked)."""
        doomed = [s for s in self.live_sessions if s.node_id == node_id]
        for session in doomed:
            session.end(CLOSE_UNAUTHORIZED)
        self.sessions.pop(node_id, None)
        return len(doomed)

    # --- persistence and delivery ----------------------------------------------------

    async def commit(self, sends: Sequence[Send]) -> None:
        """Persist what the fleet changed, then deliver its sends to open sessions."""
        async with self._commit_lock:
            changes = self.fleet.take_changes()
            if not changes.empty:
                await self.store.save(changes)
            self.transitions.observe(changes.replicas, self.clock.now())
        for item in sends:
            session = self.sessions.get(item.node_id)
            # A session that has not sent system_info gets its commands from
            # the resend when it does.
            if session is not None and session.phase is Phase.STARTED:
                session.send(item.message)

    def wake_rescheduler(self) -> None:
        self._wake.set()

    async def _rescheduler(self) -> None:
        with self._rescheduling:
            await self._reschedule_forever()

    async def _reschedule_forever(self) -> None:
        while True:
            wake = self._wake = anyio.Event()
            due_at = self.fleet.next_reschedule_at()
            async with anyio.create_task_group() as tg:

                async def woken(
                    event: anyio.Event = wake, scope: anyio.CancelScope = tg.cancel_scope
                ) -> None:
                    await event.wait()
                    scope.cancel()

                tg.start_soon(woken)
                if due_at is not None:
                    delay = due_at - self.clock.monotonic()
                    if delay > 0:
                        await self.clock.sleep(delay)
                    tg.cancel_scope.cancel()
            moves, sends = self.fleet.reschedule_due(self.clock.monotonic())
            for move in moves:
                log.info(
                    "replica moved off a node out of contact"
                    if move.to_node
                    else "replica waits for room: no online node can take it",
                    extra={
                        "replica_id": move.replica_id,
                        "from_node": move.from_node,
                        "to_node": move.to_node,
                    },
                )
            await self.commit(sends)

    # --- connections ----------------------------------------------------------------

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        try:
            await serve_connection(stream, self)
        except Exception:
            log.exception("connection handler failed")
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await stream.aclose()

    async def http(self, request: Request) -> Response:
        return await cp_api.handle(self, request)

    def wants_websocket(self, request: Request) -> bool:
        return request.path == AGENT_PATH and request.method == "GET"

    async def websocket(self, request: Request, upgrade: Upgrade) -> None:
        peer = _peer(upgrade.stream)
        offered = upgrade.subprotocols
        # Liberal: a client that offers no subprotocol is served (and a bad
        # credential still gets its 4401 after the upgrade); only one that
        # offers others and not ours is refused, as it asked for another protocol.
        if offered and SUBPROTOCOL not in offered:
            await upgrade.reject(400, f"Sec-WebSocket-Protocol: offer {SUBPROTOCOL}")
            return
        credential = bearer(request.header("authorization"))
        registering = credential is not None and token_matches(credential, self.config.org_tokens)
        node_id: str | None = None
        if credential is not None and not registering:
            node_id = await self.store.node_for_token(credential)
            if node_id is not None and self.fleet.node(node_id) is None:
                node_id = None
        ws = await upgrade.accept(
            SUBPROTOCOL if offered else None, max_message_bytes=MAX_FRAME_BYTES
        )
        if not registering and node_id is None:
            log.warning(
                "agent credential rejected (4401)",
                extra={"peer": peer, "credential": "missing" if credential is None else "unknown"},
            )
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        session = AgentSession(self, ws, node_id=node_id, peer=peer)
        if self._accepting.cancel_called:
            session.end(CLOSE_GOING_AWAY)
        self.live_sessions.add(session)
        try:
            await session.run()
        finally:
            self.live_sessions.discard(session)
