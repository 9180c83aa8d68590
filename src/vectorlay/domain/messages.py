"""Wire messages of protocol version 1 as frozen msgspec Structs.

Every message is ``{"type": ..., "payload": {...}}``: a Struct tagged on
``type`` with one ``payload`` field.  Frames are decoded once, at the edge,
with :func:`decode_inbound` (agent side) or :func:`decode_outbound` (control
plane side); both raise only :class:`~vectorlay.errors.ProtocolError`
subclasses whose text names the offending field, e.g.
``deploy.payload.gpu_count: expected int, got str``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from vectorlay.domain.redact import redacted_items, redacted_repr
from vectorlay.errors import (
    InvalidMessage,
    MessageTooLarge,
    ProtocolError,
)

PROTOCOL_VERSION: Final = 1
SUBPROTOCOL: Final = "vectorlay.agent.v1"
MAX_FRAME_BYTES: Final = 1024 * 1024


class ReplicaStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    EXITED = "exited"
    FAILED = "failed"
    STOPPED = "stopped"


class ErrorCode(enum.StrEnum):
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    INTERNAL = "internal"


# --- payload parts ---------------------------------------------------------

# gc=False on every wire Struct: decoded messages are trees of strings,
# numbers and other Structs that never form reference cycles, so tracking
# them in the cycle collector only slows decoding (about 10% on a heartbeat).

# Figures are typed float so that a receiver accepts 500 and 500.0 alike; the
# agent fills them with whole numbers, as the protocol's examples show.


class Storage(msgspec.Struct, frozen=True, gc=False):
    path: str
    total_gb: float | None = None
    used_gb: float | None = None
    usage_percent: float | None = None


class Gpu(msgspec.Struct, frozen=True, gc=False):
    pci_address: str
    vendor: str
    vendor_id: str
    device_id: str
    model: str
    driver: str | None = None
    iommu_group: str | None = None
    # docs/protocol.md, "GPU passthrough".  ``None``: a peer that does not send the key (an older
    # agent); readers then fall back to "vfio-pci with an IOMMU group".
    assignable: bool | None = None
    health: str = "ok"  # "ok" | "warning" | "failed"
    problems: list[str] = []


class Hardware(msgspec.Struct, frozen=True, gc=False):
    hostname: str
    cpu_model: str
    cpu_cores: int
    ram_gb: float
    storage: Storage
    gpu_info: list[str] = []
    gpus: list[Gpu] = []
    # Where the GPU list came from ("lspci" or "sysfs"); receivers that do not
    # know the key ignore it.
    gpu_source: str | None = None


class Dependency(msgspec.Struct, frozen=True, gc=False):
    name: str
    ok: bool
    version: str | None = None
    detail: str = ""


class ReplicaReport(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    replica_id: str
    status: ReplicaStatus
    # The PCI addresses the replica holds (live replicas only).
    gpus: list[str] = []
    # An ended container: the runtime's exit code, and for `failed` why.
    exit_code: int | None = None
    error: str | None = None


class HeartbeatStatus(msgspec.Struct, frozen=True, gc=False):
    containers: list[ReplicaReport]
    gpu_utilization: int | None
    memory_used_gb: float | None
    memory_total_gb: float | None
    storage: Storage


class HostMetrics(msgspec.Struct, frozen=True, gc=False):
    """Per-heartbeat host figures: a heartbeat ``status`` without ``containers``."""

    gpu_utilization: int | None
    memory_used_gb: float | None
    memory_total_gb: float | None
    storage: Storage


class HostReport(msgspec.Struct, frozen=True, gc=False):
    """What a host probe finds: ``system_info`` without ``node_id``/``replicas``.

    It is also the output of ``vectorlay-agent check --json``.
    """

    agent_version: str
    hardware: Hardware
    dependencies: list[Dependency]
    ready: bool


# --- payloads --------------------------------------------------------------


class RegisterPayload(msgspec.Struct, frozen=True, gc=False):
    agent_version: str
    hardware: Hardware
    dependencies: list[Dependency]


class RegistrationSuccessPayload(msgspec.Struct, frozen=True, gc=False):
    node_id: str
    node_token: str

    def __repr__(self) -> str:
        return redacted_repr(self, _TOKEN)

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return redacted_items(self, _TOKEN)


class SystemInfoPayload(msgspec.Struct, frozen=True, gc=False):
    node_id: str
    agent_version: str
    hardware: Hardware
    dependencies: list[Dependency]
    ready: bool
    replicas: list[ReplicaReport] = []


class HeartbeatPayload(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    status: HeartbeatStatus
    seq: int | None = None
    sent_at: str | None = None


class DeployPayload(msgspec.Struct, frozen=True, gc=False):
    replica_id: str
    image: str
    gpu_count: int = 0
    env_vars: dict[str, str] = {}

    def __repr__(self) -> str:
        # Env values are secrets; a repr may end up in a log or a traceback.
        return redacted_repr(self, _ENV)

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return redacted_items(self, _ENV)


class ResultPayload(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    replica_id: str
    status: ReplicaStatus
    error: str | None = None
    gpus: list[str] | None = None  # on ``running``: the PCI addresses it holds


class StopPayload(msgspec.Struct, frozen=True, gc=False):
    replica_id: str


class ErrorPayload(msgspec.Struct, frozen=True, gc=False):
    code: str
    message: str


# --- messages --------------------------------------------------------------


_TOKEN: Final = frozenset({"node_token"})
_ENV: Final = frozenset({"env_vars"})


class Message(msgspec.Struct, frozen=True, gc=False, tag_field="type"):
    """Base of every message; the subclass's tag is the ``type`` value."""


class Register(Message, frozen=True, tag="register"):
    payload: RegisterPayload


class RegistrationSuccess(Message, frozen=True, tag="registration_success"):
    payload: RegistrationSuccessPayload


class SystemInfo(Message, frozen=True, tag="system_info"):
    payload: SystemInfoPayload


class Heartbeat(Message, frozen=True, tag="heartbeat"):
    payload: HeartbeatPayload


class Deploy(Message, frozen=True, tag="deploy"):
    payload: DeployPayload


class DeployResult(Message, frozen=True, tag="deploy_result"):
    payload: ResultPayload


class Stop(Message, frozen=True, tag="stop"):
    payload: StopPayload


class StopResult(Message, frozen=True, tag="stop_result"):
    payload: ResultPayload


class Error(Message, frozen=True, tag="error"):
    payload: ErrorPayload


Inbound = RegistrationSuccess | Deploy | Stop | Error
"""Messages the control plane sends to the agent."""

Outbound = Register | SystemInfo | Heartbeat | DeployResult | StopResult | Error
"""Messages the agent sends to the control plane."""

ALL_MESSAGE_TYPES: Final[tuple[type[Message], ...]] = (
    Register,
    RegistrationSuccess,
    SystemInfo,
    Heartbeat,
    Deploy,
    DeployResult,
    Stop,
    StopResult,
    Error,
)


def message_type(cls: type[Message]) -> str:
    """The wire ``type`` of a message class."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def rfc3339(moment: datetime) -> str:
    """A wire timestamp: UTC, milliseconds, ``Z`` (``2026-01-01T00:00:00.000Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_message(code: ErrorCode | str, message: str) -> Error:
    return Error(ErrorPayload(code=str(code), message=message))


# --- codec -----------------------------------------------------------------

_inbound_decoder: Final = msgspec.json.Decoder(Inbound)
_outbound_decoder: Final = msgspec.json.Decoder(Outbound)
_encoder: Final = msgspec.json.Encoder()
_INBOUND_TYPES: Final = frozenset(
    message_type(c) for c in (RegistrationSuccess, Deploy, Stop, Error)
)
_OUTBOUND_TYPES: Final = frozenset(
    message_type(c) for c in (Register, SystemInfo, Heartbeat, DeployResult, StopResult, Error)
)


def encode(message: Message) -> bytes:
    """One message as UTF-8 JSON, ready for a text frame."""
    return _encoder.encode(message)


def encode_text(message: Message) -> str:
    return _encoder.encode(message).decode()


def decode_inbound(data: bytes | str) -> Inbound:
    """Decode a frame the agent received.  Raises only ``ProtocolError``s."""
    return _decode(data, _inbound_decoder, _INBOUND_TYPES)  # type: ignore[no-any-return]


def decode_outbound(data: bytes | str) -> Outbound:
    """Decode a frame the control plane received.  Raises only ``ProtocolError``s."""
    return _decode(data, _outbound_decoder, _OUTBOUND_TYPES)  # type: ignore[no-any-return]


def _decode(data: bytes | str, decoder: msgspec.json.Decoder[Any], known: frozenset[str]) -> Any:
    if isinstance(data, str):
        # A str holds at most 4 UTF-8 bytes per character; only encode when
        # the cheap bound is not enough to decide.
        if len(data) > MAX_FRAME_BYTES or (
            len(data) * 4 > MAX_FRAME_BYTES
            and len(data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES
        ):
            raise MessageTooLarge(f"message: frame larger than {MAX_FRAME_BYTES} bytes")
    elif len(data) > MAX_FRAME_BYTES:
        raise MessageTooLarge(f"message: frame larger than {MAX_FRAME_BYTES} bytes")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        # Loaded on the first bad frame only: a healthy session never needs it.
        from vectorlay.domain.decode_errors import explain_validation_error

        raise explain_validation_error(str(exc), data, known) from None
    except RecursionError:
        raise InvalidMessage("message: JSON nested too deeply") from None
    except (msgspec.DecodeError, UnicodeError, ValueError) as exc:
        from vectorlay.domain.decode_errors import first_line

        raise InvalidMessage(f"message: not valid UTF-8 JSON ({first_line(str(exc))})") from None


__all__ = [
    "ALL_MESSAGE_TYPES",
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "Dependency",
    "Deploy",
    "DeployPayload",
    "DeployResult",
    "Error",
    "ErrorCode",
    "ErrorPayload",
    "Gpu",
    "Hardware",
    "Heartbeat",
    "HeartbeatPayload",
    "HeartbeatStatus",
    "HostMetrics",
    "HostReport",
    "Inbound",
    "Message",
    "Outbound",
    "ProtocolError",
    "Register",
    "RegisterPayload",
    "RegistrationSuccess",
    "RegistrationSuccessPayload",
    "ReplicaReport",
    "ReplicaStatus",
    "ResultPayload",
    "Stop",
    "StopPayload",
    "StopResult",
    "Storage",
    "SystemInfo",
    "SystemInfoPayload",
    "decode_inbound",
    "decode_outbound",
    "encode",
    "encode_text",
    "error_message",
    "message_type",
    "rfc3339",
]
