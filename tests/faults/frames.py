"""Inbound frames for fuzzing the agent, and an oracle for what each one deserves.

Strategies (hypothesis) cover every inbound message: valid ``deploy``,
``stop``, ``error`` and ``registration_success``; near-valid ones with one
field wrong; random JSON; random text and bytes; frames at and over the
1 MiB limit; deeply nested JSON; bytes that are not UTF-8.

The oracle reads a frame the way docs/protocol.md describes it, written here
independently of the agent's codec: a frame of at most 1 MiB of UTF-8 JSON
(RFC 8259: no ``NaN``) whose object has ``type`` ``deploy``/``stop`` and a
``payload`` object with a string ``replica_id`` must get exactly one result;
any other frame that is not a valid ``error`` must get an ``error`` reply.
Env values always carry :data:`SECRET_MARK`, so a leak of any of them, or
of a piece of one, is a plain substring search.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import strategies as st

MAX_FRAME: Final = 1024 * 1024
SECRET_MARK: Final = "q9zsekret"
"""Every generated env value contains this; nothing else does."""

Frame = str | bytes
Json = Any

# --- the oracle ------------------------------------------------------------------

_REPLICA_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# distribution/reference: [domain/]path[:tag][@digest], lowercase path components.
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN: Final = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)
_IMAGE: Final = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(frame: Frame) -> Json | None:
    """The JSON value of a text frame the protocol lets a receiver read, else None."""
    if isinstance(frame, bytes):
        return None  # binary frames are a protocol error
    try:
        size = len(frame.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    if size > MAX_FRAME:
        return None
    try:
        return json.loads(frame, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None


NESTING_LIMIT: Final = 400
"""Frames nested deeper may be refused by any JSON parser (each has a depth limit)."""


def nesting(text: str) -> int:
    """How deeply arrays and objects nest in JSON text (strings skipped)."""
    if text.count("[") + text.count("{") <= NESTING_LIMIT:
        return 0  # cannot be deeper; skip the scan
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@dataclass(frozen=True)
class Expectation:
    """What the agent owes the control plane for one frame."""

    result: tuple[str, str] | None = None  # ("deploy" | "stop", replica_id)
    error_reply: bool = False
    runnable: bool = False  # a deploy that may reach the runtime
    # Readable, but nested past NESTING_LIMIT: a result or an error, exactly one.
    either: bool = False


def expect(frame: Frame) -> Expectation:
    value = parse(frame)
    if not isinstance(value, dict):
        return Expectation(error_reply=True)
    kind = value.get("type")
    payload = value.get("payload")
    if kind in ("deploy", "stop") and isinstance(payload, dict):
        rid = payload.get("replica_id")
        if isinstance(rid, str):
            assert isinstance(frame, str)
            return Expectation(
                result=(kind, rid),
                runnable=kind == "deploy" and deploy_ok(payload),
                either=nesting(frame) > NESTING_LIMIT,
            )
    if (
        kind == "error"
        and isinstance(payload, dict)
        and isinstance(payload.get("code"), str)
        and isinstance(payload.get("message"), str)
    ):
        return Expectation()  # logged, never answered
    return Expectation(error_reply=True)


def replica_id_ok(value: Any) -> bool:
    return isinstance(value, str) and _REPLICA_ID.fullmatch(value) is not None


def image_ok(value: Any) -> bool:
    return isinstance(value, str) and _IMAGE.fullmatch(value) is not None


def env_value_ok(value: Any) -> bool:
    return (
        isinstance(value, str)
        and not any(c in value for c in "\x00\r\n")
        and value == value.strip()
    )


def env_ok(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and _ENV_NAME.fullmatch(k) and env_value_ok(v) for k, v in value.items()
    )


def gpu_count_ok(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def deploy_ok(payload: Mapping[str, Any]) -> bool:
    """Every field of a deploy payload as docs/protocol.md allows it (unknown keys ignored)."""
    return (
        replica_id_ok(payload.get("replica_id"))
        and image_ok(payload.get("image"))
        and gpu_count_ok(payload.get("gpu_count", 0))
        and env_ok(payload.get("env_vars", {}))
    )


@dataclass
class Verdict:
    lost: int = 0  # owed results that did not come
    extra: int = 0  # results beyond one per command
    problems: list[str] = field(default_factory=list)


@dataclass
class Expected:
    """What a batch of frames is owed."""

    results: Counter[tuple[str, str]]
    maybe: Counter[tuple[str, str]]  # a result or an error reply, either
    errors: int
    runnable: Counter[str]  # replica id -> valid deploys of it

    @classmethod
    def of(cls, frames: Sequence[Frame]) -> Expected:
        results: Counter[tuple[str, str]] = Counter()
        maybe: Counter[tuple[str, str]] = Counter()
        runnable: Counter[str] = Counter()
        errors = 0
        for frame in frames:
            e = expect(frame)
            if e.result is not None:
                (maybe if e.either else results)[e.result] += 1
                if e.runnable:
                    runnable[e.result[1]] += 1
            errors += e.error_reply
        return cls(results, maybe, errors, runnable)

    def _settled_maybe(self, results: Counter[tuple[str, str]]) -> int:
        """How many of the either-way frames were answered with a result."""
        return sum(
            max(0, min(results[k], self.results[k] + n) - self.results[k])
            for k, n in self.maybe.items()
        )

    def answered(self, results: Counter[tuple[str, str]], errors: int) -> bool:
        """Everything owed has arrived (duplicates may still follow)."""
        return all(results[k] >= n for k, n in self.results.items()) and (
            errors + self._settled_maybe(results) >= self.errors + sum(self.maybe.values())
        )

    def judge(self, results: Counter[tuple[str, str]], errors: int) -> Verdict:
        verdict = Verdict()
        for key in self.results.keys() | self.maybe.keys() | results.keys():
            low = self.results[key]
            high = low + self.maybe[key]
            got = results[key]
            if low <= got <= high:
                continue
            if got < low:
                verdict.lost += low - got
            else:
                verdict.extra += got - high
            verdict.problems.append(
                f"{key[0]} {key[1][:40]!r}: {got} result(s) for {low} command(s)"
            )
        want = self.errors + sum(self.maybe.values()) - self._settled_maybe(results)
        if errors != want:
            verdict.problems.append(f"{errors} error replies, {want} owed")
        return verdict


# --- building blocks -------------------------------------------------------------------

POOL: Final = tuple(f"fz-{i}" for i in range(6))
"""A few ids that recur, so deploys repeat and stops meet live replicas."""

replica_ids = st.one_of(
    st.sampled_from(POOL),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True),
)
GOOD_IMAGES: Final = (
    "busybox",
    "ghcr.io/acme/llm:1.2",
    "localhost:5000/team/model_server:latest",
    "registry.example.com:443/a/b-c/d__e:v2.0.1",
    "docker.io/library/ubuntu@sha256:" + "a" * 64,
    "quay.io/acme/x.y:tag_1@sha256:" + "0123456789abcdef" * 4,
    "[::1]:5000/img",
)
BAD_REPLICA_IDS: Final = ("", "-x", "_x", ".x", "a" * 65, "a b", "é", "a/b", "a\nb", "..", "\x00")
BAD_IMAGES: Final = (
    "",
    "UPPER/case",
    "acme/UPPER",
    "a;rm -rf /",
    "-flag",
    ":tag",
    "image:",
    "image@sha256:xyz",
    "a b",
    "ghcr.io/acme/llm:1.2\n",
    "x" * 300,
    "ghcr.io//double",
    "näme",
)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
_inner_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r\n"),
    max_size=24,
)
secret_values = st.builds(
    lambda n, inner: f"{SECRET_MARK}{n:06x}{inner}.",
    st.integers(0, 0xFFFFFF),
    _inner_text,
)
BAD_ENV_VALUES: Final = ("\n", "\r", "\x00", " lead", "trail ", "\t", "mid\nline", "\u2028edge")


@st.composite
def bad_secret(draw: st.DrawFn) -> str:
    """An env value the wire refuses that still holds a secret."""
    value = draw(secret_values)
    flaw = draw(st.sampled_from(BAD_ENV_VALUES))
    where = draw(st.sampled_from(["start", "end", "middle"]))
    if where == "start":
        return flaw + value
    if where == "end":
        return value + flaw
    half = len(value) // 2
    return value[:half] + flaw + value[half:]


envs = st.dictionaries(env_names, secret_values, max_size=4)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def deploy_payload(rid: str, image: str, gpus: int, env: dict[str, str]) -> dict[str, Any]:
    return {"replica_id": rid, "image": image, "gpu_count": gpus, "env_vars": env}


valid_deploys = st.builds(
    deploy_payload,
    replica_ids,
    st.sampled_from(GOOD_IMAGES),
    st.integers(0, 3),  # the node has two assignable GPUs: 3 is refused
    envs,
).map(lambda p: {"type": "deploy", "payload": p})
valid_stops = st.builds(lambda rid: {"type": "stop", "payload": {"replica_id": rid}}, replica_ids)
valid_errors = st.builds(
    lambda code, msg: {"type": "error", "payload": {"code": code, "message": msg}},
    st.sampled_from(["invalid_message", "unknown_type", "internal", "x" * 200]),
    st.text(max_size=300),
)
registration_successes = st.builds(
    lambda nid, tok: {
        "type": "registration_success",
        "payload": {"node_id": nid, "node_token": tok},
    },
    st.text(max_size=10),
    st.text(max_size=10),
)
WRONG_VALUES: Final[tuple[Any, ...]] = (
    None,
    True,
    0,
    -1,
    2**64,
    1.5,
    1e400,  # serialized as Infinity: not JSON at all
    "",
    "2",
    [],
    {},
    ["busybox"],
    {"nested": {"deeper": [1, 2]}},
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid deploy or stop with exactly one thing wrong (or one harmless extra)."""
    msg: dict[str, Any] = draw(st.one_of(valid_deploys, valid_stops))
    payload: dict[str, Any] = dict(msg["payload"])
    fields = sorted(payload)
    how = draw(
        st.sampled_from(
            [
                "wrong_type",
                "drop_field",
                "bad_replica_id",
                "bad_image",
                "bad_gpu_count",
                "bad_env_name",
                "bad_env_value",
                "env_not_string",
                "extra_field",
                "bad_type_tag",
                "payload_not_object",
                "no_payload",
            ]
        )
    )
    if how == "wrong_type":
        payload[draw(st.sampled_from(fields))] = draw(st.sampled_from(WRONG_VALUES))
    elif how == "drop_field":
        del payload[draw(st.sampled_from(fields))]
    elif how == "bad_replica_id":
        payload["replica_id"] = draw(
            st.sampled_from(
                ["", "-x", "_x", ".x", "a" * 65, "a b", "é", "a/b", "a\nb", "..", "\x00"]
            )
        )
    elif how == "bad_image" and "image" in payload:
        payload["image"] = draw(st.sampled_from(BAD_IMAGES))
    elif how == "bad_gpu_count" and msg["type"] == "deploy":
        payload["gpu_count"] = draw(st.sampled_from([-1, -(2**63), 2**63, 257, 99, True, "1", 1.0]))
    elif how == "bad_env_name" and msg["type"] == "deploy":
        env = dict(payload["env_vars"])
        env[draw(st.sampled_from(["1A", "A-B", "", "A B", "é", "A=B"]))] = draw(secret_values)
        payload["env_vars"] = env
    elif how == "bad_env_value" and msg["type"] == "deploy":
        env = dict(payload["env_vars"])
        env[draw(env_names)] = draw(bad_secret())
        payload["env_vars"] = env
    elif how == "env_not_string" and msg["type"] == "deploy":
        env = dict(payload["env_vars"])
        env[draw(env_names)] = draw(st.sampled_from([1, None, True, ["x"], {"x": 1}]))
        payload["env_vars"] = env
    elif how == "extra_field":
        payload[draw(st.sampled_from(["extra", "gpus", "replicaId", "x" * 40]))] = draw(json_values)
    elif how == "bad_type_tag":
        kind = draw(st.sampled_from(["Deploy", "deploy ", "", "STOP", "deploy_result", 7, None]))
        return {"type": kind, "payload": payload}
    elif how == "payload_not_object":
        return {
            "type": msg["type"],
            "payload": draw(st.sampled_from([None, [], "x", 1, [payload]])),
        }
    elif how == "no_payload":
        return {"type": msg["type"]}
    return {"type": msg["type"], "payload": payload}


@st.composite
def serialized(draw: st.DrawFn, messages: st.SearchStrategy[Any]) -> str:
    """JSON text, sometimes ASCII-escaped, sometimes with its keys in reverse order."""
    value = draw(messages)
    if isinstance(value, dict) and draw(st.booleans()):
        value = dict(reversed(list(value.items())))
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


@st.composite
def huge_frames(draw: st.DrawFn) -> str:
    """A deploy padded to just under, at, or just over 1 MiB of UTF-8."""
    rid = draw(st.sampled_from(POOL))
    target = MAX_FRAME + draw(st.sampled_from([-1000, -1, 0, 1, 4096]))
    fill = draw(st.sampled_from(["x", "é", "€", "😀"]))  # 1 to 4 UTF-8 bytes a character
    # Not the replica id: a readable id near 1 MiB cannot be echoed in a
    # result that fits a frame (docs/faults.md, finding 1; its own test).
    where = draw(st.sampled_from(["pad", "image"]))
    payload = deploy_payload(rid, "busybox", 0, {})
    key = "pad" if where == "pad" else where
    payload[key] = ""
    base = len(json.dumps({"type": "deploy", "payload": payload}, ensure_ascii=False).encode())
    room = max(0, target - base)
    width = len(fill.encode())
    payload[key] = fill * (room // width) + "x" * (room % width)
    return json.dumps({"type": "deploy", "payload": payload}, ensure_ascii=False)


@st.composite
def deep_frames(draw: st.DrawFn) -> str:
    depth = draw(st.sampled_from([16, 200, 500, 900, 990, 1000, 5000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["bare", "payload", "field"]))
    if where == "bare":
        return nested
    if where == "payload":
        return '{"type": "deploy", "payload": ' + nested + "}"
    rid = draw(st.sampled_from(POOL))
    return (
        '{"type": "deploy", "payload": {"replica_id": "' + rid + '", "image": "busybox", '
        '"gpu_count": 0, "env_vars": ' + nested + "}}"
    )


non_utf8 = st.one_of(
    st.binary(min_size=1, max_size=64).filter(lambda b: not _is_utf8(b)),
    st.sampled_from([b"\xff", b"\xc3\x28", b'{"type": "deploy"\xff}', b"\xed\xa0\x80"]),
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


frames = st.one_of(
    serialized(valid_deploys),
    serialized(valid_stops),
    serialized(valid_errors),
    serialized(registration_successes),
    serialized(near_valid()),
    serialized(json_values),
    serialized(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["deploy", "stop", "error", "heartbeat", "nope"]),
                "payload": json_values,
            }
        )
    ),
    st.text(max_size=40),
    st.binary(max_size=40),
    non_utf8,
    huge_frames(),
    deep_frames(),
)
"""Any inbound frame: text (str) or binary (bytes)."""

batches = st.lists(frames, min_size=1, max_size=24)


def secrets_in(frames_sent: Sequence[Frame]) -> list[str]:
    """The env values (secrets) of a batch: every string holding the marker."""
    found: list[str] = []
    for frame in frames_sent:
        value = parse(frame) if isinstance(frame, str) else None
        _collect_marked(value, found)
    return found


def _collect_marked(value: Any, out: list[str]) -> None:
    if isinstance(value, str) and SECRET_MARK in value:
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_marked(item, out)
    elif isinstance(value, list):
        for item in value:
            _collect_marked(item, out)


def leaks(text: str) -> int:
    """How many times a secret, or what is left of one cut short, shows up in ``text``."""
    return text.count(SECRET_MARK[:5])
