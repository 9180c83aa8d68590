"""Who this node is: its saved identity, or registering with the org token to get one.

::

    load node.json ─┬─ found ──────────────► connect with the node token
                    └─ none + org token ──► connect, register, save node.json
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from vectorlay import __version__
from vectorlay.app.agent.config import EXIT_CONFIG, AgentConfig
from vectorlay.domain.agent.identity import MAX_REGISTERED_CHARS, NodeConfig, identity_problem
from vectorlay.domain.messages import (
    Error,
    ErrorCode,
    HostReport,
    Message,
    Register,
    RegisterPayload,
    RegistrationSuccess,
    decode_inbound,
    error_message,
)
from vectorlay.errors import (
    ConfigError,
    ConfigWriteError,
    ConnectFailed,
    CorruptConfig,
    FatalError,
    InvalidMessage,
    ProtocolError,
    Unauthorized,
)
from vectorlay.ports import ConfigStore

log = logging.getLogger("vectorlay.agent")


@dataclass(frozen=True)
class Enrolment:
    """A node without ``node.json``: where it registers, and the org token it shows."""

    control_plane_url: str
    org_token: str = field(repr=False)


Identity = NodeConfig | Enrolment


async def load_identity(store: ConfigStore, config: AgentConfig) -> Identity:
    """The saved identity, else what registering needs; :class:`FatalError` when neither."""
    try:
        node = await store.load()
    except CorruptConfig as exc:
        raise FatalError(f"{exc}; refusing to register over it") from None
    except ConfigError as exc:
        raise FatalError(str(exc)) from None
    if node is not None:
        return node
    if not config.org_token:
        raise FatalError(
            "no node config in the state dir and no org token: set --token-file "
            "or VECTORLAY_ORG_TOKEN to register this node (or --state-dir / "
            "VECTORLAY_STATE_DIR to where node.json is)",
            EXIT_CONFIG,
        )
    if not config.control_plane_url:
        raise FatalError(
            "no control plane to register with: set --control-plane or VECTORLAY_CONTROL_PLANE_URL",
            EXIT_CONFIG,
        )
    return Enrolment(config.control_plane_url, config.org_token)


def credential(identity: Identity) -> str:
    """What the node shows at the handshake: its node token, else the org token."""
    return identity.node_token if isinstance(identity, NodeConfig) else identity.org_token


class Exchange(Protocol):
    """The open connection registration talks over."""

    async def send(self, message: Message) -> None: ...

    async def receive(self) -> str | bytes: ...


async def register(
    exchange: Exchange,
    enrolment: Enrolment,
    report: HostReport,
    *,
    store: ConfigStore,
    timeout: float,
) -> NodeConfig:
    """Register, wait for the node's identity and save it as ``node.json`` before returning.

    An ``error`` answer, or none within ``timeout``, is :class:`ConnectFailed`
    (the session is retried); an ``unauthorized`` one is :class:`Unauthorized`;
    a ``node.json`` that cannot be written is :class:`FatalError`.
    """
    log.info("registering this node with the control plane")
    await exchange.send(
        Register(
            RegisterPayload(
                agent_version=__version__,
                hardware=report.hardware,
                dependencies=report.dependencies,
            )
        )
    )
    answer: RegistrationSuccess | None = None
    with anyio.move_on_after(timeout):
        while answer is None:
            try:
                frame = await exchange.receive()
                if isinstance(frame, bytes):
                    raise InvalidMessage("message: binary frames are not accepted")
                msg = decode_inbound(frame)
            except ProtocolError as exc:
                # Only an error reply: a command cannot be meant for a node
                # that has no identity yet, so no result goes to the outbox.
                log.warning("rejected a message while registering: %s", exc.message)
                await exchange.send(error_message(exc.code, exc.message))
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
        raise ConnectFailed(f"no registration_success within {timeout:g} s")
    for name, value in (
        ("node_id", answer.payload.node_id),
        ("node_token", answer.payload.node_token),
    ):
        problem = identity_problem(name, value, max_chars=MAX_REGISTERED_CHARS)
        if problem:
            raise ConnectFailed(f"registration_success carried an unusable identity: {problem}")
    node = NodeConfig(
        node_id=answer.payload.node_id,
        node_token=answer.payload.node_token,
        control_plane_url=enrolment.control_plane_url,
    )
    try:
        await store.save(node)
    except ConfigWriteError as exc:
        raise FatalError(
            f"registered as {node.node_id} but could not save node.json: {exc}"
        ) from None
    log.info("registered as node %s; node.json saved", node.node_id)
    return node
