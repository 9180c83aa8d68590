"""Wire messages: round trips, field-naming decode errors, hostile input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vectorlay.domain import messages as m
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import ContainerSpec, GpuSlot
from vectorlay.errors import InvalidMessage, MessageTooLarge, ProtocolError, UnknownMessageType

SECRET = "s3cr3t-value-Zq9"

Decoder = Callable[[bytes | str], m.Message]

STORAGE = m.Storage("/data", 500, 120, 24)
HARDWARE = m.Hardware(
    hostname="gpu-node-17",
    cpu_model="AMD EPYC 7763 64-Core Processor",
    cpu_cores=128,
    ram_gb=512,
    storage=m.Storage("/data", 500),
    gpu_info=[
        "0000:17:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330]"
    ],
    gpus=[
        m.Gpu(
            pci_address="0000:17:00.0",
            vendor="nvidia",
            vendor_id="10de",
            device_id="2330",
            model="GH100 [H100 SXM5 80GB]",
            driver="vfio-pci",
            iommu_group="25",
        )
    ],
    gpu_source="lspci",
)
DEPENDENCIES = [
    m.Dependency("containerd", True, "1.7.2"),
    m.Dependency("vfio", False, None, "missing modules: vfio_pci"),
]

# One fully populated instance of every message type, keyed by wire type.
SAMPLES: dict[str, m.Message] = {
    "register": m.Register(m.RegisterPayload("0.1.0", HARDWARE, DEPENDENCIES)),
    "registration_success": m.RegistrationSuccess(
        m.RegistrationSuccessPayload("node-7f3a", SECRET)
    ),
    "system_info": m.SystemInfo(
        m.SystemInfoPayload(
            node_id="node-7f3a",
            agent_version="0.1.0",
            hardware=HARDWARE,
            dependencies=DEPENDENCIES,
            ready=False,
            replicas=[m.ReplicaReport("abc-123", m.ReplicaStatus.RUNNING)],
        )
    ),
    "heartbeat": m.Heartbeat(
        m.HeartbeatPayload(
            m.HeartbeatStatus(
                containers=[
                    m.ReplicaReport("abc-123", m.ReplicaStatus.RUNNING),
                    m.ReplicaReport("def-456", m.ReplicaStatus.EXITED),
                ],
                gpu_utilization=78,
                memory_used_gb=24,
                memory_total_gb=64,
                storage=STORAGE,
            ),
            seq=7,
            sent_at="2026-01-01T00:00:00Z",
        )
    ),
    "deploy": m.Deploy(
        m.DeployPayload(
            "abc-123", "ghcr.io/acme/llm:1.2", 2, {"MODEL": "llama-3-8b", "KEY": SECRET}
        )
    ),
    "deploy_result": m.DeployResult(
        m.ResultPayload("abc-123", m.ReplicaStatus.FAILED, "image not found: ghcr.io/acme/llm:1.2")
    ),
    "stop": m.Stop(m.StopPayload("abc-123")),
    "stop_result": m.StopResult(m.ResultPayload("abc-123", m.ReplicaStatus.STOPPED)),
    "error": m.error_message(m.ErrorCode.INVALID_MESSAGE, "deploy.payload.gpu_count: bad"),
}

INBOUND = {"registration_success", "deploy", "stop", "error"}
OUTBOUND = {"register", "system_info", "heartbeat", "deploy_result", "stop_result", "error"}
KNOWN_TYPES = sorted(INBOUND | OUTBOUND)


def decoders_for(mtype: str) -> list[Decoder]:
    out: list[Decoder] = []
    if mtype in INBOUND:
        out.append(m.decode_inbound)
    if mtype in OUTBOUND:
        out.append(m.decode_outbound)
    return out


def as_dict(message: m.Message) -> dict[str, Any]:
    obj = json.loads(m.encode(message))
    assert isinstance(obj, dict)
    return obj


def frame(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decode_error(decoder: Decoder, data: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decoder(data)
    return info.value


# --- the set of messages ------------------------------------------------------


def test_every_message_type_has_a_sample_and_a_direction() -> None:
    wire_types = {m.message_type(cls) for cls in m.ALL_MESSAGE_TYPES}
    assert wire_types == set(SAMPLES)
    assert wire_types == INBOUND | OUTBOUND
    for mtype, sample in SAMPLES.items():
        assert m.message_type(type(sample)) == mtype


def test_inbound_and_outbound_unions_match_the_protocol() -> None:
    def tags(union: Any) -> set[str]:
        return {m.message_type(cls) for cls in union.__args__}

    assert tags(m.Inbound) == INBOUND
    assert tags(m.Outbound) == OUTBOUND


# --- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("mtype", sorted(SAMPLES))
def test_round_trip_bytes_and_text(mtype: str) -> None:
    sample = SAMPLES[mtype]
    for decoder in decoders_for(mtype):
        assert decoder(m.encode(sample)) == sample
        assert decoder(m.encode_text(sample)) == sample


@pytest.mark.parametrize("mtype", sorted(SAMPLES))
def test_envelope_is_type_and_payload(mtype: str) -> None:
    obj = as_dict(SAMPLES[mtype])
    assert set(obj) == {"type", "payload"}
    assert obj["type"] == mtype
    assert isinstance(obj["payload"], dict)


@pytest.mark.parametrize("mtype", sorted(SAMPLES))
def test_wrong_direction_is_unknown_type(mtype: str) -> None:
    data = m.encode(SAMPLES[mtype])
    if mtype not in INBOUND:
        err = decode_error(m.decode_inbound, data)
        assert isinstance(err, UnknownMessageType)
        assert err.code == "unknown_type"
        assert err.message_type == mtype
    if mtype not in OUTBOUND:
        err = decode_error(m.decode_outbound, data)
        assert isinstance(err, UnknownMessageType)
        assert err.message_type == mtype


def test_defaults_fill_in_and_optional_keys_are_omitted() -> None:
    deploy = m.decode_inbound('{"type":"deploy","payload":{"replica_id":"a","image":"nginx"}}')
    assert isinstance(deploy, m.Deploy)
    assert deploy.payload.gpu_count == 0
    assert deploy.payload.env_vars == {}

    beat = SAMPLES["heartbeat"]
    assert isinstance(beat, m.Heartbeat)
    bare = m.Heartbeat(msgspec.structs.replace(beat.payload, seq=None, sent_at=None))
    assert set(as_dict(bare)["payload"]) == {"status"}
    assert set(as_dict(beat)["payload"]) == {"status", "seq", "sent_at"}

    ok = m.DeployResult(m.ResultPayload("a", m.ReplicaStatus.RUNNING))
    assert as_dict(ok)["payload"] == {"replica_id": "a", "status": "running"}


def test_unknown_figures_are_sent_as_null_not_zero() -> None:
    status = m.HeartbeatStatus([], None, None, None, m.Storage("/data"))
    obj = as_dict(m.Heartbeat(m.HeartbeatPayload(status)))
    assert obj["payload"]["status"]["gpu_utilization"] is None
    assert obj["payload"]["status"]["storage"] == {
        "path": "/data",
        "total_gb": None,
        "used_gb": None,
        "usage_percent": None,
    }


def test_whole_numbers_and_floats_are_both_accepted_as_figures() -> None:
    obj = as_dict(SAMPLES["heartbeat"])
    obj["payload"]["status"]["memory_used_gb"] = 24.5
    beat = m.decode_outbound(frame(obj))
    assert isinstance(beat, m.Heartbeat)
    assert beat.payload.status.memory_used_gb == 24.5


def test_unknown_extra_keys_are_ignored_at_every_level() -> None:
    obj = as_dict(SAMPLES["system_info"])
    obj["future"] = {"x": [1, 2]}
    obj["payload"]["capabilities"] = ["gpu-sharing"]
    obj["payload"]["hardware"]["numa_nodes"] = 2
    obj["payload"]["hardware"]["gpus"][0]["serial"] = "1650"
    obj["payload"]["dependencies"][0]["path"] = "/usr/bin/containerd"
    assert m.decode_outbound(frame(obj)) == SAMPLES["system_info"]

    deploy = as_dict(SAMPLES["deploy"])
    deploy["payload"]["priority"] = "high"
    deploy["v"] = 2
    assert m.decode_inbound(frame(deploy)) == SAMPLES["deploy"]


def test_error_code_enum_matches_the_protocol() -> None:
    assert {c.value for c in m.ErrorCode} == {
        "invalid_message",
        "unknown_type",
        "too_large",
        "unauthorized",
        "internal",
    }
    assert InvalidMessage.code == "invalid_message"
    assert UnknownMessageType.code == "unknown_type"
    assert MessageTooLarge.code == "too_large"
    err = m.error_message(m.ErrorCode.TOO_LARGE, "too big")
    assert as_dict(err) == {"type": "error", "payload": {"code": "too_large", "message": "too big"}}


def test_an_unknown_error_code_from_a_newer_peer_still_decodes() -> None:
    msg = m.decode_inbound('{"type":"error","payload":{"code":"rate_limited","message":"slow"}}')
    assert isinstance(msg, m.Error)
    assert msg.payload.code == "rate_limited"


# --- decode errors ----------------------------------------------------------------

RID = "abc-123"
DEPLOY_OK = {"replica_id": RID, "image": "nginx:1.25", "gpu_count": 1, "env_vars": {}}


def deploy_with(**changes: Any) -> bytes:
    payload = {**DEPLOY_OK, **changes}
    return frame({"type": "deploy", "payload": payload})


@pytest.mark.parametrize(
    ("data", "text", "rid"),
    [
        (deploy_with(gpu_count="1"), "deploy.payload.gpu_count: expected int, got str", RID),
        (
            deploy_with(gpu_count=1.5),
            "deploy.payload.gpu_count: expected int, got float",
            RID,
        ),
        (
            deploy_with(gpu_count=True),
            "deploy.payload.gpu_count: expected int, got bool",
            RID,
        ),
        (
            deploy_with(gpu_count=None),
            "deploy.payload.gpu_count: expected int, got null",
            RID,
        ),
        (deploy_with(image=5), "deploy.payload.image: expected str, got int", RID),
        (
            deploy_with(env_vars=[]),
            "deploy.payload.env_vars: expected object, got array",
            RID,
        ),
        (
            deploy_with(env_vars={"OK": "x", "PORT": 8080}),
            "deploy.payload.env_vars.PORT: expected str, got int",
            RID,
        ),
        (deploy_with(replica_id=7), "deploy.payload.replica_id: expected str, got int", None),
        (
            frame({"type": "deploy", "payload": {"image": "nginx"}}),
            "deploy.payload.replica_id: missing required field",
            None,
        ),
        (
            frame({"type": "deploy", "payload": {"replica_id": "r1"}}),
            "deploy.payload.image: missing required field",
            "r1",
        ),
        (frame({"type": "deploy"}), "deploy.payload: missing required field", None),
        (
            frame({"type": "deploy", "payload": "abc"}),
            "deploy.payload: expected object, got str",
            None,
        ),
        (
            frame({"type": "stop", "payload": {"replica_id": ["a"]}}),
            "stop.payload.replica_id: expected str, got array",
            None,
        ),
    ],
)
def test_inbound_errors_name_the_field(data: bytes, text: str, rid: str | None) -> None:
    for variant in (data, data.decode()):
        err = decode_error(m.decode_inbound, variant)
        assert type(err) is InvalidMessage
        assert str(err) == text
        assert err.message == text
        assert err.message_type == text.split(".", 1)[0]
        assert err.replica_id == rid


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        (
            {"type": "deploy_result", "payload": {"replica_id": "a", "status": "weird"}},
            "deploy_result.payload.status: invalid enum value 'weird'",
        ),
        (
            {"type": "stop_result", "payload": {"replica_id": "a"}},
            "stop_result.payload.status: missing required field",
        ),
        (
            {"type": "heartbeat", "payload": {"status": {"containers": {}}}},
            "heartbeat.payload.status.containers: expected array, got object",
        ),
        (
            {"type": "heartbeat", "payload": {}},
            "heartbeat.payload.status: missing required field",
        ),
        (
            {"type": "error", "payload": {"code": 1, "message": "x"}},
            "error.payload.code: expected str, got int",
        ),
    ],
)
def test_outbound_errors_name_the_field(obj: dict[str, Any], text: str) -> None:
    err = decode_error(m.decode_outbound, frame(obj))
    assert type(err) is InvalidMessage
    assert str(err) == text
    assert err.message_type == obj["type"]


def test_nested_list_errors_name_the_index() -> None:
    obj = as_dict(SAMPLES["system_info"])
    obj["payload"]["hardware"]["gpus"][0]["vendor_id"] = 4318
    err = decode_error(m.decode_outbound, frame(obj))
    assert str(err) == "system_info.payload.hardware.gpus[0].vendor_id: expected str, got int"
    obj = as_dict(SAMPLES["system_info"])
    obj["payload"]["hardware"]["cpu_cores"] = 1.5
    err = decode_error(m.decode_outbound, frame(obj))
    assert str(err) == "system_info.payload.hardware.cpu_cores: expected int, got float"


def test_type_problems() -> None:
    cases: list[tuple[Any, type[ProtocolError], str]] = [
        ({"payload": {}}, InvalidMessage, "message.type: missing or not a string"),
        ({"type": 5, "payload": {}}, InvalidMessage, "message.type: missing or not a string"),
        ({"type": None}, InvalidMessage, "message.type: missing or not a string"),
        (
            {"type": "reboot", "payload": {}},
            UnknownMessageType,
            "message.type: unknown message type 'reboot'",
        ),
        ({"type": ""}, UnknownMessageType, "message.type: unknown message type ''"),
        ([], InvalidMessage, "message: expected object, got array"),
        ("deploy", InvalidMessage, "message: expected object, got str"),
        (None, InvalidMessage, "message: expected object, got null"),
        (3, InvalidMessage, "message: expected object, got int"),
    ]
    for obj, cls, text in cases:
        err = decode_error(m.decode_inbound, frame(obj))
        assert type(err) is cls, obj
        assert str(err) == text


def test_unknown_type_carries_the_type_and_clips_a_long_one() -> None:
    err = decode_error(m.decode_inbound, frame({"type": "x" * 500, "payload": {}}))
    assert isinstance(err, UnknownMessageType)
    assert err.message_type == "x" * 500
    assert len(str(err)) < 120


def test_a_repeated_type_key_is_an_invalid_message() -> None:
    data = '{"type":"deploy","payload":{"replica_id":"a","image":"x"},"type":"stop"}'
    err = decode_error(m.decode_inbound, data)
    assert type(err) is InvalidMessage
    assert str(err) == "message.type: invalid value 'stop'"


def test_replica_id_is_readable_even_when_another_value_is_out_of_range() -> None:
    data = '{"type":"deploy","payload":{"replica_id":"r9","image":"x","gpu_count":1e999}}'
    err = decode_error(m.decode_inbound, data)
    assert str(err) == "deploy.payload.gpu_count: number out of range"
    assert (err.message_type, err.replica_id) == ("deploy", "r9")


def test_wrong_typed_env_value_names_the_variable_never_the_value() -> None:
    err = decode_error(m.decode_inbound, deploy_with(env_vars={"TOKEN": [SECRET]}))
    assert str(err) == "deploy.payload.env_vars.TOKEN: expected str, got array"
    assert SECRET not in str(err)
    # A name that is no env name is not echoed into the path.
    err = decode_error(m.decode_inbound, deploy_with(env_vars={"bad name\n": 1}))
    assert str(err) == "deploy.payload.env_vars[...]: expected str, got int"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"\xff\xfe\x00{",
        b'{"type":"error","payload":{"code":"\xff","message":"x"}}',
        b'{"type":"stop"',
        b'{"type":"stop","payload":{"replica_id":"a"}} trailing',
        b"NaN",
        b"1e999999",
        b"-" + b"9" * 5000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"type":"deploy","payload":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        '{"type":"error","payload":{"code":"\ud800","message":""}}'.encode(
            "utf-8", "surrogatepass"
        ),
    ],
)
def test_hostile_bytes_give_invalid_message(data: bytes) -> None:
    for decoder in (m.decode_inbound, m.decode_outbound):
        err = decode_error(decoder, data)
        assert type(err) is InvalidMessage
        assert str(err).startswith("message")
        assert "\n" not in str(err)


def test_lone_surrogate_in_text_is_an_invalid_message() -> None:
    err = decode_error(m.decode_inbound, '{"type":"stop","payload":{"replica_id":"\ud800"}}')
    assert type(err) is InvalidMessage


def test_huge_integer_decodes_and_is_left_to_validation() -> None:
    msg = m.decode_inbound(deploy_with(gpu_count=10**30))
    assert isinstance(msg, m.Deploy)
    assert msg.payload.gpu_count == 10**30


# --- size limit -----------------------------------------------------------------


def stop_frame(filler: str, count: int) -> str:
    """A valid stop frame padded with ``count`` times ``filler`` in an extra key."""
    return '{"type":"stop","payload":{"replica_id":"a","pad":"' + filler * count + '"}}'


def utf8_size(text: str) -> int:
    return len(text.encode())


FILLERS = [" ", "é", "€", "😀"]  # 1, 2, 3 and 4 bytes in UTF-8


def largest_count(filler: str) -> int:
    """How many ``filler``s fit in a stop frame without passing the limit."""
    overhead = utf8_size(stop_frame(filler, 0))
    return (m.MAX_FRAME_BYTES - overhead) // utf8_size(filler)


@pytest.mark.parametrize("filler", FILLERS)
def test_largest_frame_within_the_limit_is_accepted(filler: str) -> None:
    text = stop_frame(filler, largest_count(filler))
    assert m.MAX_FRAME_BYTES - utf8_size(filler) < utf8_size(text) <= m.MAX_FRAME_BYTES
    assert m.decode_inbound(text) == m.Stop(m.StopPayload("a"))
    assert m.decode_inbound(text.encode()) == m.Stop(m.StopPayload("a"))


def test_frame_of_exactly_max_bytes_is_accepted() -> None:
    text = stop_frame(" ", largest_count(" "))
    assert utf8_size(text) == m.MAX_FRAME_BYTES
    assert m.decode_inbound(text.encode()) == m.Stop(m.StopPayload("a"))


@pytest.mark.parametrize("filler", FILLERS)
def test_oversize_frame_is_too_large_for_str_and_bytes(filler: str) -> None:
    text = stop_frame(filler, largest_count(filler) + 1)
    assert utf8_size(text) > m.MAX_FRAME_BYTES
    # With multi-byte characters the text has fewer characters than the
    # limit, yet its UTF-8 form is larger: the limit is on bytes.
    assert len(text) <= m.MAX_FRAME_BYTES or filler == " "
    for data in (text, text.encode()):
        for decoder in (m.decode_inbound, m.decode_outbound):
            err = decode_error(decoder, data)
            assert type(err) is MessageTooLarge
            assert err.code == "too_large"
            assert str(err) == "message: frame larger than 1048576 bytes"


def test_oversize_garbage_is_too_large_before_it_is_parsed() -> None:
    for data in (b"\xff" * (m.MAX_FRAME_BYTES + 1), "[" * (m.MAX_FRAME_BYTES + 1)):
        assert type(decode_error(m.decode_inbound, data)) is MessageTooLarge


# --- secrets never show ---------------------------------------------------------


def test_reprs_never_show_secrets() -> None:
    deploy = SAMPLES["deploy"]
    assert isinstance(deploy, m.Deploy)
    success = SAMPLES["registration_success"]
    assert isinstance(success, m.RegistrationSuccess)
    spec = ContainerSpec("abc-123", "nginx", (GpuSlot("0000:17:00.0", "25"),), {"KEY": SECRET})
    config = NodeConfig("node-7f3a", SECRET, "wss://cp.example.com/v1/agent")
    for obj in (deploy, deploy.payload, success, success.payload, spec, config):
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
            assert SECRET not in text, type(obj).__name__
    # The names stay visible: they are what an operator needs to debug.
    assert "KEY" in repr(deploy.payload)
    assert "MODEL" in repr(deploy.payload)
    assert "node-7f3a" in repr(config)
    assert "KEY" in repr(spec)


def test_decode_errors_never_show_env_values() -> None:
    hostile = [
        deploy_with(env_vars={"KEY": SECRET, "N": 5}),
        deploy_with(env_vars={"KEY": {"nested": SECRET}}),
        deploy_with(gpu_count=SECRET, env_vars={"KEY": SECRET}),
    ]
    for data in hostile:
        err = decode_error(m.decode_inbound, data)
        assert SECRET not in str(err)
        assert SECRET not in repr(err)


# --- property tests -------------------------------------------------------------

# A frame error reads "<where>: <problem>", where is "message" or a known type
# followed by a field path.
ERROR_TEXT = re.compile(rf"^(?:message|{'|'.join(KNOWN_TYPES)})(?:\.[A-Za-z0-9_]+|\[[^\]]*\])*: \S")


def outcome(decoder: Decoder, data: bytes | str) -> m.Message | ProtocolError:
    try:
        return decoder(data)
    except ProtocolError as exc:
        return exc


def check_decode(decoder: Decoder, data: bytes | str) -> m.Message | ProtocolError:
    """The decoder returns a message or a well-formed ProtocolError, nothing else."""
    result = outcome(decoder, data)
    if isinstance(result, ProtocolError):
        text = str(result)
        assert ERROR_TEXT.match(text), text
        assert "\n" not in text
        assert result.code in {c.value for c in m.ErrorCode}
        assert result.message_type is None or isinstance(result.message_type, str)
        assert result.replica_id is None or isinstance(result.replica_id, str)
    else:
        assert isinstance(result, m.Message)
    return result


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    check_decode(m.decode_inbound, data)
    check_decode(m.decode_outbound, data)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_protocol_errors(data: str) -> None:
    check_decode(m.decode_inbound, data)
    check_decode(m.decode_outbound, data)


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_values_raise_only_protocol_errors(value: Any) -> None:
    data = json.dumps(value)
    check_decode(m.decode_inbound, data)
    check_decode(m.decode_outbound, data.encode())


@settings(max_examples=300)
@given(st.sampled_from(KNOWN_TYPES), json_values)
def test_known_type_with_arbitrary_payload(mtype: str, payload: Any) -> None:
    data = frame({"type": mtype, "payload": payload})
    check_decode(m.decode_inbound, data)
    check_decode(m.decode_outbound, data)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside a decoded JSON object."""
    out: list[tuple[Any, ...]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.append((*prefix, key))
            out.extend(paths(value, (*prefix, key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out.append((*prefix, i))
            out.extend(paths(value, (*prefix, i)))
    return out


@settings(max_examples=400)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_one_corrupted_field_gives_a_field_naming_error(mtype: str, data: st.DataObject) -> None:
    obj = as_dict(SAMPLES[mtype])
    path = data.draw(st.sampled_from(paths(obj)))
    replacement = data.draw(json_values)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    for decoder in decoders_for(mtype):
        result = check_decode(decoder, frame(obj))
        if isinstance(result, InvalidMessage) and path[0] == "payload":
            # The type is still readable, so the error names it.
            assert str(result).startswith(f"{mtype}."), str(result)
            assert result.message_type == mtype


def test_rich_reprs_hide_secrets_too() -> None:
    from vectorlay.domain.agent.identity import NodeConfig
    from vectorlay.domain.agent.replicas import ContainerSpec
    from vectorlay.domain.messages import DeployPayload, RegistrationSuccessPayload

    secret = "s3cr3t-rich"
    objects = [
        NodeConfig("n", secret, "ws://127.0.0.1/v1/agent"),
        DeployPayload("r", "nginx", 0, {"KEY": secret}),
        RegistrationSuccessPayload("n", secret),
        ContainerSpec("r", "nginx", (), {"KEY": secret}),
    ]
    for obj in objects:
        assert secret not in repr(obj)
        assert secret not in repr(list(obj.__rich_repr__()))
        assert "KEY" in repr(obj) or "node_token" in repr(obj)
