"""docs/protocol.md stays true to the code: every message type documented, every example valid."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from vectorlay.domain import closecodes, messages
from vectorlay.domain.agent import heartbeat
from vectorlay.domain.fleet import node
from vectorlay.domain.liveness import DEFAULT_OFFLINE_AFTER
from vectorlay.errors import ProtocolError

DOC: Final = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

Decoder = Callable[[bytes | str], messages.Message]


def _tags(union: Any) -> set[str]:
    return {messages.message_type(cls) for cls in union.__args__}


INBOUND: Final = _tags(messages.Inbound)
OUTBOUND: Final = _tags(messages.Outbound)
ALL_TYPES: Final = {messages.message_type(cls) for cls in messages.ALL_MESSAGE_TYPES}

_FENCE: Final = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_H2: Final = re.compile(r"^## (?P<title>.+)$", re.MULTILINE)
_MESSAGE_HEADING: Final = re.compile(r"^### `(?P<name>[a-z_]+)`\s*$", re.MULTILINE)


def chapter(text: str, title: str) -> str:
    """The text under ``## title`` up to the next ``## `` heading."""
    heads = list(_H2.finditer(text))
    for i, head in enumerate(heads):
        if head.group("title").strip() == title:
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            return text[head.end() : end]
    raise AssertionError(f"no '## {title}' chapter")


def message_sections(text: str) -> dict[str, str]:
    """``### `type` `` sections of the Messages chapter, by type."""
    body = chapter(text, "Messages")
    heads = list(_MESSAGE_HEADING.finditer(body))
    return {
        head.group("name"): body[head.end() : heads[i + 1].start() if i + 1 < len(heads) else None]
        for i, head in enumerate(heads)
    }


def json_blocks(text: str) -> Iterator[str]:
    for fence in _FENCE.finditer(text):
        if fence.group("info").strip() == "json":
            yield fence.group("body")


def json_objects(block: str) -> list[Any]:
    """Every JSON value in a block: one or more, separated by whitespace."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    pos = 0
    while True:
        while pos < len(block) and block[pos].isspace():
            pos += 1
        if pos == len(block):
            return out
        value, pos = decoder.raw_decode(block, pos)
        out.append(value)


def decoders_for(mtype: str) -> list[Decoder]:
    out: list[Decoder] = []
    if mtype in INBOUND:
        out.append(messages.decode_inbound)
    if mtype in OUTBOUND:
        out.append(messages.decode_outbound)
    return out


def unknown_keys(example: Any, decoded: Any, path: str = "") -> list[str]:
    """Keys in the example that the decoded message does not have (typos pass silently)."""
    if isinstance(example, dict) and isinstance(decoded, dict):
        found: list[str] = []
        for key, value in example.items():
            if key not in decoded:
                found.append(f"{path}.{key}")
            else:
                found.extend(unknown_keys(value, decoded[key], f"{path}.{key}"))
        return found
    if isinstance(example, list) and isinstance(decoded, list):
        return [
            k
            for i, (a, b) in enumerate(zip(example, decoded, strict=False))
            for k in unknown_keys(a, b, f"{path}[{i}]")
        ]
    return []


def example_problems(text: str) -> list[str]:
    """Why the JSON examples of a protocol document do not match the code."""
    problems: list[str] = []
    for block in json_blocks(text):
        try:
            objects = json_objects(block)
        except json.JSONDecodeError as exc:
            problems.append(f"example is not JSON: {exc}: {block[:60]!r}")
            continue
        for obj in objects:
            mtype = obj.get("type") if isinstance(obj, dict) else None
            if not isinstance(mtype, str) or mtype not in ALL_TYPES:
                problems.append(f"example is not a known message: {str(obj)[:60]}")
                continue
            raw = json.dumps(obj)
            for decode in decoders_for(mtype):
                try:
                    decoded = decode(raw)
                except ProtocolError as exc:
                    problems.append(f"{mtype} example does not decode: {exc}")
                    continue
                again = json.loads(messages.encode(decoded))
                problems.extend(
                    f"{mtype} example has a key the code does not know: {key}"
                    for key in unknown_keys(obj, again)
                )
    return problems


def coverage_problems(text: str) -> list[str]:
    """Message types without a section, or without an example in their section."""
    sections = message_sections(text)
    problems = [f"no section for message type {t!r}" for t in sorted(ALL_TYPES - set(sections))]
    problems += [
        f"section for unknown message type {t!r}" for t in sorted(set(sections) - ALL_TYPES)
    ]
    for mtype, body in sorted(sections.items()):
        types = {
            obj.get("type")
            for block in json_blocks(body)
            for obj in json_objects(block)
            if isinstance(obj, dict)
        }
        if mtype not in types:
            problems.append(f"section {mtype!r} has no JSON example of its type")
    return problems


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


# --- the document ---------------------------------------------------------------


def test_every_message_type_has_a_section_with_an_example(doc: str) -> None:
    assert coverage_problems(doc) == []


def test_every_json_example_decodes_with_the_matching_decoder(doc: str) -> None:
    assert example_problems(doc) == []


def test_the_doc_has_examples_to_check(doc: str) -> None:
    """Guard against a test that passes because it found nothing."""
    types = [obj["type"] for block in json_blocks(doc) for obj in json_objects(block)]
    assert set(types) == ALL_TYPES
    assert len(types) >= len(ALL_TYPES) + 4  # several results and errors


def test_the_doc_states_the_codes_and_limits_of_the_code(doc: str) -> None:
    codes = chapter(doc, "Error codes")
    for code in messages.ErrorCode:
        assert f"| `{code.value}` |" in codes, code
    closes = chapter(doc, "Sessions")
    for close in (
        closecodes.CLOSE_HEARTBEAT_TIMEOUT,
        closecodes.CLOSE_UNAUTHORIZED,
        closecodes.CLOSE_SESSION_CONFLICT,
        closecodes.CLOSE_GOING_AWAY,
    ):
        assert f"| `{close}` |" in closes, close
    statuses = chapter(doc, "Node statuses (control-plane view)")
    for status in node.Status:
        assert f"| `{status.value}` |" in statuses, status
    replicas = chapter(doc, "Replica statuses")
    for rstatus in messages.ReplicaStatus:
        assert f"| `{rstatus.value}` |" in replicas, rstatus
    connection = chapter(doc, "Connection")
    assert f"`{messages.SUBPROTOCOL}`" in connection
    assert f"{messages.MAX_FRAME_BYTES} bytes" in connection
    assert "`Authorization` | `Bearer <credential>`" in connection
    assert "`vectorlay-agent/<version>`" in connection
    backoff = chapter(doc, "Reconnect and backoff")
    assert f"default {heartbeat.DEFAULT_RECONNECT_DELAY:g} s" in backoff
    spread = f"{1 + heartbeat.RECONNECT_SPREAD:g} * delay * 2^n"
    assert f"min({heartbeat.DEFAULT_RECONNECT_CAP:g}, {spread}) - delay" in backoff
    liveness = chapter(doc, "Liveness")
    assert f"{DEFAULT_OFFLINE_AFTER:g} s after the last" in liveness


# --- the checks fail when the doc drifts -----------------------------------------------


def test_a_missing_section_is_reported(doc: str) -> None:
    without_stop = re.sub(r"### `stop`\n.*?(?=### `stop_result`)", "", doc, flags=re.DOTALL)
    assert without_stop != doc
    assert coverage_problems(without_stop) == ["no section for message type 'stop'"]


def test_a_section_without_its_example_is_reported(doc: str) -> None:
    broken = doc.replace('{"type": "stop", "payload"', '{"type": "stop_result", "payload"', 1)
    assert broken != doc
    assert "section 'stop' has no JSON example of its type" in coverage_problems(broken)


def test_an_invalid_example_is_reported(doc: str) -> None:
    broken = doc.replace('"gpu_count": 1,', '"gpu_count": "1",', 1)
    assert broken != doc
    assert example_problems(broken) == [
        "deploy example does not decode: deploy.payload.gpu_count: expected int, got str"
    ]


def test_a_misspelled_key_is_reported(doc: str) -> None:
    broken = doc.replace('"gpu_utilization": 78', '"gpu_utilisation": 78', 1)
    assert broken != doc
    problems = example_problems(broken)
    assert "heartbeat example does not decode: " in problems[0]
    broken = doc.replace('"seq": 42', '"sequence": 42', 1)
    assert example_problems(broken) == [
        "heartbeat example has a key the code does not know: .payload.sequence"
    ]


def test_a_message_in_the_wrong_direction_is_reported() -> None:
    text = '```json\n{"type": "stop", "payload": {"replica_id": "a"}}\n```\n'
    assert example_problems(text) == []
    assert decoders_for("stop") == [messages.decode_inbound]
    assert decoders_for("error") == [messages.decode_inbound, messages.decode_outbound]
    assert example_problems('```json\n{"type": "reboot", "payload": {}}\n```\n') == [
        "example is not a known message: {'type': 'reboot', 'payload': {}}"
    ]
