"""One exception tree for every layer and both programs.

Adapters translate the errors of the libraries and programs they wrap into
these classes at their boundary (``raise ConnectionLost(...) from exc``), so
the agent decides on retries and exits by type alone.  Messages never carry
secrets: callers put field and variable *names* in them, never values.
"""

from __future__ import annotations


class VectorlayError(Exception):
    """Root of every error this package raises on purpose."""


class FatalError(VectorlayError):
    """Retrying cannot help: the process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- wire messages -------------------------------------------------------


class ProtocolError(VectorlayError):
    """An inbound frame could not be turned into a message.

    ``code`` is the error code to answer with (``docs/protocol.md``).  ``message_type``
    and ``replica_id`` are filled in when they could still be read, so that a
    broken ``deploy`` can be answered with a ``deploy_result``.
    """

    code = "invalid_message"

    def __init__(
        self,
        message: str,
        *,
        message_type: str | None = None,
        replica_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.message_type = message_type
        self.replica_id = replica_id


class InvalidMessage(ProtocolError):
    code = "invalid_message"


class UnknownMessageType(ProtocolError):
    code = "unknown_type"


class MessageTooLarge(ProtocolError):
    code = "too_large"


# --- domain decisions ----------------------------------------------------


class ValidationError(VectorlayError):
    """A value broke a rule of the contract; ``field`` names where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class InvalidTransition(VectorlayError):
    """The node state machine has no row for this status and event."""


# --- transport -----------------------------------------------------------


class TransportError(VectorlayError):
    """Anything that went wrong talking to the control plane."""


class ConnectFailed(TransportError):
    """The connection or the WebSocket handshake did not succeed."""


class ConnectionLost(TransportError):
    """An established session ended without an orderly close."""


class ConnectionClosed(TransportError):
    """The peer closed the session with a close code."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(
            f"connection closed by peer (code {code}{': ' + reason if reason else ''})"
        )
        self.code = code
        self.reason = reason


class Unauthorized(TransportError):
    """The control plane rejected our credential (4401, or 401/403 at the handshake)."""


class PeerUnresponsive(ConnectionLost):
    """No pong to our keepalive ping in time: a half-open connection."""


class InsecureURL(VectorlayError):
    """A ``ws://`` URL to a non-loopback host without the insecure flag."""


# --- containers ----------------------------------------------------------


class ContainerRuntimeError(VectorlayError):
    """The container runtime refused or failed an operation."""


class RuntimeTimeout(ContainerRuntimeError):
    """A container runtime call did not finish within its timeout."""


class ImageNotFound(ContainerRuntimeError):
    pass


class NameInUse(ContainerRuntimeError):
    pass


class RuntimeNotInstalled(ContainerRuntimeError):
    pass


class SnapshotterUnavailable(ContainerRuntimeError):
    """containerd cannot unpack the image: its snapshotter is not loaded."""


class UnsupportedEnvValue(ContainerRuntimeError):
    """An env var cannot reach the container unchanged; names the variable, never the value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"env var {variable}: {problem}")
        self.variable = variable
        self.problem = problem


# --- configuration and state ---------------------------------------------


class ConfigError(VectorlayError):
    """Settings or the saved node config cannot be used."""


class CorruptConfig(ConfigError):
    """``node.json`` exists but cannot be read as a node config."""


class ConfigWriteError(ConfigError):
    """``node.json`` could not be written; the previous file is intact."""


class ProbeError(VectorlayError):
    """A host probe failed in a way that has no place in the report."""


# --- reference control plane ---------------------------------------------


class FleetError(VectorlayError):
    """A request the fleet refuses: an operator's, or a session's claim."""


class UnknownNode(FleetError):
    pass


class UnknownReplica(FleetError):
    pass


class ReplicaExists(FleetError):
    pass


class NoCapacity(FleetError):
    """No online node has enough free GPUs; ``reason`` says which cause holds (a code)."""

    def __init__(self, message: str, *, reason: str = "no_free_gpus") -> None:
        super().__init__(message)
        self.reason = reason


class NodeBusy(FleetError):
    """An operator asked to remove a node that is connected and serving, or holds replicas."""


class WrongNode(FleetError):
    """A session claimed a node id its credential does not belong to."""


class StoreError(VectorlayError):
    """The fleet store cannot be opened, read or written."""


class WebSocketClosed(VectorlayError):
    """An agent's session is over: it closed (with ``code``) or the socket went away (1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed (code {code})")
        self.code = code
        self.reason = reason


class MessageTooBig(VectorlayError):
    """A message from an agent grew past the limit while being received."""
