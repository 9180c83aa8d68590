"""Rules for values off the wire: image references, replica ids, env vars, gpu_count."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vectorlay.domain.validation import (
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARS,
    MAX_GPU_COUNT,
    check_env_vars,
    check_gpu_count,
    check_image,
    check_replica_id,
    env_value_problem,
)
from vectorlay.errors import ValidationError

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8

# --- image references ---------------------------------------------------------

REAL_IMAGES = [
    "nginx",
    "nginx:1.25",
    "nginx:latest",
    "library/nginx",
    "docker.io/library/nginx:1.25",
    "docker.io/nvidia/cuda:12.3.1-runtime-ubuntu22.04",
    "ghcr.io/acme/llm:1.2",
    "ghcr.io/huggingface/text-generation-inference:2.0.4",
    "nvcr.io/nvidia/pytorch:24.01-py3",
    "nvcr.io/nvidia/tritonserver:24.01-trtllm-python-py3",
    "quay.io/prometheus/node-exporter:v1.7.0",
    "public.ecr.aws/docker/library/redis:7.2-alpine",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/model-server:2024-01-15",
    "europe-docker.pkg.dev/project-id/repo/image:tag",
    "registry.k8s.io/pause:3.9",
    "localhost/app",
    "localhost:5000/x",
    "127.0.0.1:5000/team/app:dev",
    "[::1]:5000/x",
    "[2001:db8::1]/team/app",
    "registry:5000/a/b",
    "registry.example.com:443/a/b/c/d:TAG_1.0",
    "REGISTRY.EXAMPLE.COM/app",  # registry host names are case-insensitive
    "my_app",
    "my__app",
    "my-app",
    "my--app",
    "my.app",
    "a/b/c/d/e/f",
    "ubuntu@" + SHA256,
    "ubuntu:22.04@" + SHA256,
    "docker.io/library/ubuntu@" + SHA256,
    "quay.io/org/img@" + SHA512,
    "vllm/vllm-openai:v0.4.0",
    "x:" + "t" * 128,  # longest tag
    "localhost:5000",  # the image "localhost" with tag "5000", as docker reads it
]


@pytest.mark.parametrize("image", REAL_IMAGES)
def test_real_world_image_references_are_accepted(image: str) -> None:
    assert check_image(image) == image


HOSTILE_IMAGES = [
    ("", "empty"),
    ("nginx;rm -rf /", "semicolon"),
    ("nginx|cat /etc/shadow", "pipe"),
    ("nginx&&id", "ampersand"),
    ("$(id)", "command substitution"),
    ("nginx$(id)", "command substitution inside"),
    ("`id`", "backticks"),
    ("nginx>out", "redirect"),
    ("nginx latest", "space"),
    (" nginx", "leading space"),
    ("nginx ", "trailing space"),
    ("nginx\n", "newline"),
    ("nginx\nid", "embedded newline"),
    ("nginx\t", "tab"),
    ("nginx\x00", "NUL"),
    ("Nginx", "uppercase path"),
    ("docker.io/Library/nginx", "uppercase path after registry"),
    ("ghcr.io/Acme/llm", "uppercase org"),
    ("..", "dot dot"),
    ("../x", "leading dot dot"),
    ("a/../b", "dot dot component"),
    ("a/./b", "dot component"),
    ("x" * 300, "300 characters"),
    ("docker.io/" + "a" * 250 + "/b", "name over 255"),
    ("-nginx", "leading dash"),
    (".nginx", "leading dot"),
    ("_nginx", "leading underscore"),
    ("nginx-", "trailing dash"),
    ("nginx:", "trailing colon"),
    ("nginx:-x", "tag starting with dash"),
    ("nginx:.x", "tag starting with dot"),
    ("x:" + "t" * 129, "tag over 128"),
    ("nginx:a:b", "two tags"),
    ("a//b", "empty component"),
    ("a/", "trailing slash"),
    ("/a", "leading slash"),
    ("a___b", "three underscores"),
    ("a_.b", "mixed separators"),
    ("nginx@", "empty digest"),
    ("@" + SHA256, "digest only"),
    ("ubuntu@sha256:abc", "short sha256"),
    ("ubuntu@sha256:" + "a" * 63, "sha256 one short"),
    ("ubuntu@sha256:" + "a" * 65, "sha256 one long"),
    ("ubuntu@sha512:" + "a" * 64, "sha512 of sha256 length"),
    ("ubuntu@sha256:" + "A" * 64, "uppercase sha256 hex"),
    ("ubuntu@sha256:" + "g" * 64, "non-hex digest"),
    ("ubuntu@" + SHA256 + "@" + SHA256, "two digests"),
    ("localhost:99999/x", "port over 65535"),
    ("localhost:0/x", "port zero"),
    ("host:/x", "empty port"),
    ("[::1]/X", "uppercase after IPv6 registry"),
    ("ngin\u0445", "Cyrillic ha lookalike"),
    ("\uff4eginx", "fullwidth lookalike"),
    ("nginx:\uff4catest", "fullwidth tag"),
    ("ngin\u200bx", "zero-width space"),
    ("nginx\u2024latest", "one dot leader"),
    ("\uff47hcr.io/acme/llm", "fullwidth registry"),
    ("https://ghcr.io/acme/llm", "URL scheme"),
    ("ghcr.io/acme/llm:1.2\r", "carriage return"),
    ("--help", "option lookalike"),
]


@pytest.mark.parametrize(("image", "why"), HOSTILE_IMAGES, ids=[w for _, w in HOSTILE_IMAGES])
def test_hostile_image_references_are_rejected(image: str, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_image(image, "deploy.payload.image")
    assert info.value.field == "deploy.payload.image"
    assert str(info.value).startswith("deploy.payload.image: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, 5, b"nginx", ["nginx"], {"image": "nginx"}])
def test_image_must_be_a_string(value: Any) -> None:
    with pytest.raises(ValidationError, match=r"^image: expected str, got "):
        check_image(value)


def test_image_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match=r"^image: must not be empty$"):
        check_image("")
    with pytest.raises(ValidationError, match=r"sha256 digest must be 64 lowercase hex"):
        check_image("ubuntu@sha256:abc" + "0" * 29)
    with pytest.raises(ValidationError, match=r"registry port out of range: 99999"):
        check_image("localhost:99999/x")
    with pytest.raises(ValidationError, match=r"longer than 255"):
        check_image("a" * 256)
    with pytest.raises(ValidationError, match=r"not a valid image reference: 'a b'"):
        check_image("a b")


def test_long_hostile_image_is_clipped_in_the_message() -> None:
    with pytest.raises(ValidationError) as info:
        check_image("A" * 10_000)
    assert len(str(info.value)) < 200


def test_name_length_limit_is_on_the_name_not_the_tag() -> None:
    name = "a" * 255
    assert check_image(name) == name
    assert check_image(f"{name}:{'t' * 128}@{SHA256}")
    with pytest.raises(ValidationError):
        check_image("a" * 256)


def test_unregistered_digest_algorithms_follow_the_generic_grammar() -> None:
    assert check_image("ubuntu@blake3:" + "a" * 64)
    with pytest.raises(ValidationError):
        check_image("ubuntu@blake3:" + "a" * 31)


# --- replica ids --------------------------------------------------------------


@pytest.mark.parametrize(
    "rid", ["a", "0", "abc-123", "A_B.c-d", "7f3a9b2c-1d4e-4f5a-8b6c-9d0e1f2a3b4c", "x" * 64]
)
def test_valid_replica_ids(rid: str) -> None:
    assert check_replica_id(rid) == rid


@pytest.mark.parametrize(
    "rid",
    [
        "",
        "x" * 65,
        "-a",
        ".a",
        "_a",
        "a b",
        "a/b",
        "../a",
        "a;b",
        "a\n",
        "a\x00",
        "é",
        "\uff41",
        "$(id)",
    ],
)
def test_invalid_replica_ids(rid: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_replica_id(rid, "stop.payload.replica_id")
    assert info.value.field == "stop.payload.replica_id"
    assert "1-64 characters" in str(info.value)


@pytest.mark.parametrize("rid", [None, 5, True, b"a", ["a"]])
def test_replica_id_must_be_a_string(rid: Any) -> None:
    with pytest.raises(ValidationError, match=r"^replica_id: expected str, got "):
        check_replica_id(rid)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True))
def test_every_id_of_the_grammar_is_accepted(rid: str) -> None:
    assert check_replica_id(rid) == rid


@given(st.text(max_size=70))
def test_replica_id_check_agrees_with_the_protocol_rule(rid: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    ok = 1 <= len(rid) <= 64 and set(rid) <= allowed and rid[0] not in "_.-"
    try:
        check_replica_id(rid)
    except ValidationError:
        assert not ok
    else:
        assert ok


# --- env vars -------------------------------------------------------------------

SECRET = "hunter2-Secret"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"MODEL": "llama-3-8b"},
        {"_": "x", "A1": "y", "a_b_C": "z"},
        {"EMPTY": ""},
        {"EQ": "a=b=c"},
        {"URL": "postgres://u:p@h:5432/db?sslmode=require&x=1"},
        {"JSON": '{"k": [1, 2]}'},
        {"INNER": "two  spaces inside"},
        {"QUOTES": "'\"`$(id)`\"'"},
        {"UNICODE": "naïve \u2013 日本語 😀"},
        {"LONG": "x" * MAX_ENV_VALUE_CHARS},
    ],
)
def test_valid_env_vars(env: dict[str, str]) -> None:
    assert check_env_vars(env) == env


@pytest.mark.parametrize(
    "name", ["", "1A", "A-B", "A B", "A=B", "A.B", "É", "A\n", "A\x00", "$A", "\uff21\uff22"]
)
def test_invalid_env_names(name: str) -> None:
    with pytest.raises(ValidationError, match=r"^deploy.payload.env_vars: invalid variable name"):
        check_env_vars({name: "x"}, "deploy.payload.env_vars")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"{SECRET}\x00", "value contains a NUL character"),
        (f"{SECRET}\n", "value contains a line break"),
        (f"a\n{SECRET}", "value contains a line break"),
        (f"{SECRET}\r", "value contains a line break"),
        (f"a\r\n{SECRET}", "value contains a line break"),
        (f" {SECRET}", "value has leading or trailing whitespace"),
        (f"{SECRET} ", "value has leading or trailing whitespace"),
        (f"\t{SECRET}", "value has leading or trailing whitespace"),
        (f"{SECRET}\u00a0", "value has leading or trailing whitespace"),
        (" ", "value has leading or trailing whitespace"),
        (SECRET + "x" * MAX_ENV_VALUE_CHARS, f"value longer than {MAX_ENV_VALUE_CHARS} characters"),
    ],
)
def test_invalid_env_values_name_the_variable_never_the_value(value: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_env_vars({"OK": "fine", "API_KEY": value}, "deploy.payload.env_vars")
    assert info.value.field == "deploy.payload.env_vars.API_KEY"
    assert str(info.value) == f"deploy.payload.env_vars.API_KEY: {problem}"
    assert SECRET not in str(info.value)
    assert env_value_problem(value) == problem


@pytest.mark.parametrize("value", [None, 5, True, ["x"], {"k": "v"}])
def test_env_values_must_be_strings(value: Any) -> None:
    with pytest.raises(ValidationError, match=r"^env_vars.A: expected str, got "):
        check_env_vars({"A": value})


@pytest.mark.parametrize("value", [None, [], "A=b", [("A", "b")]])
def test_env_vars_must_be_an_object(value: Any) -> None:
    with pytest.raises(ValidationError, match=r"^env_vars: expected object, got "):
        check_env_vars(value)


def test_too_many_env_vars() -> None:
    env = {f"V{i}": "x" for i in range(MAX_ENV_VARS + 1)}
    with pytest.raises(ValidationError, match=rf"more than {MAX_ENV_VARS} variables"):
        check_env_vars(env)
    assert len(check_env_vars(dict(list(env.items())[:MAX_ENV_VARS]))) == MAX_ENV_VARS


def test_non_string_env_name_is_rejected() -> None:
    with pytest.raises(ValidationError, match="invalid variable name"):
        check_env_vars({1: "x"})


@given(st.text(max_size=50))
def test_env_value_problem_never_repeats_the_value(value: str) -> None:
    problem = env_value_problem(value)
    if problem is None:
        assert "\x00" not in value
        assert "\n" not in value
        assert "\r" not in value
        assert value == value.strip()
    else:
        assert problem.startswith("value ")
        if len(value) > 3:
            assert value not in problem


# --- gpu_count ------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 8, MAX_GPU_COUNT])
def test_valid_gpu_counts(count: int) -> None:
    assert check_gpu_count(count) == count


@pytest.mark.parametrize(
    ("count", "message"),
    [
        (True, "gpu_count: expected int, got bool"),
        (False, "gpu_count: expected int, got bool"),
        (1.0, "gpu_count: expected int, got float"),
        ("1", "gpu_count: expected int, got str"),
        (None, "gpu_count: expected int, got NoneType"),
        (-1, "gpu_count: must be >= 0"),
        (-(10**30), "gpu_count: must be >= 0"),
        (MAX_GPU_COUNT + 1, f"gpu_count: must be <= {MAX_GPU_COUNT}"),
        (10**30, f"gpu_count: must be <= {MAX_GPU_COUNT}"),
        (2**63, f"gpu_count: must be <= {MAX_GPU_COUNT}"),
    ],
)
def test_invalid_gpu_counts(count: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_gpu_count(count)
    assert str(info.value) == message
