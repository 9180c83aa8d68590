"""The env-file rule: what nerdctl's reader gives the container is what the deploy asked for.

``parse_env_file`` in the fake follows nerdctl's parseEnvVars/withOSEnv
(pkg/cmd/container/create.go): bufio.Scanner lines (64 KiB max),
strings.TrimSpace, ``#`` and empty lines skipped, split at the first ``=``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.nerdctl.fake_nerdctl import Fatal, parse_env_file
from vectorlay.adapters.runtime.envfile import (
    ENV_LINE_MAX_BYTES,
    env_file,
    env_file_bytes,
    prepare_env_dir,
)
from vectorlay.domain.validation import env_value_problem
from vectorlay.errors import ContainerRuntimeError, UnsupportedEnvValue

SURVIVING = {
    "EQUALS": "postgres://u:p@db/x?sslmode=require&a=b==",
    "HASH": "#not-a-comment",
    "QUOTED": "\"kept\" 'as is'",
    "EMPTY": "",
    "INNER_SPACE": "a  b\tc",
    "UNICODE": "ünïcödé ✓ 𝄞",
    "BACKSLASH": "C:\\path\\n",
    "DOLLAR": "$HOME ${X}",
    "LINE_SEP": "a\u2028b",  # not a line break for Go's scanner
}


def test_tricky_values_reach_the_container_unchanged() -> None:
    data = env_file_bytes(SURVIVING)
    assert parse_env_file(data) == [f"{k}={v}" for k, v in sorted(SURVIVING.items())]


@given(
    st.text(
        alphabet=st.characters(codec="utf-8"),
        max_size=200,
    )
)
def test_every_value_the_domain_accepts_survives(value: str) -> None:
    if env_value_problem(value) is not None:
        return
    assert parse_env_file(env_file_bytes({"V": value})) == [f"V={value}"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("line1\nline2", "line break"),
        ("carriage\rreturn", "line break"),
        ("nul\x00byte", "NUL"),
        (" leading-secret", "whitespace"),
        ("trailing-secret\t", "whitespace"),
        ("trailing\u00a0", "whitespace"),  # NBSP: Go's TrimSpace eats it too
        ("trailing\u3000", "whitespace"),
        ("\u0085next-line", "whitespace"),
        ("lone \udcff surrogate", "Unicode"),
    ],
)
def test_values_nerdctl_would_change_are_refused_by_name(value: str, problem: str) -> None:
    with pytest.raises(UnsupportedEnvValue) as caught:
        env_file_bytes({"OK": "fine", "API_KEY": value})
    assert caught.value.variable == "API_KEY"
    assert problem in str(caught.value)
    assert value not in str(caught.value)


def test_invalid_names_are_refused() -> None:
    for name in ("1ABC", "A-B", "A=B", "", "A\nB"):
        with pytest.raises(UnsupportedEnvValue, match="invalid variable name"):
            env_file_bytes({name: "x"})


def test_line_limit_of_nerdctls_reader() -> None:
    name = "BIG"
    fits = "x" * (ENV_LINE_MAX_BYTES - len(name) - 1)
    assert parse_env_file(env_file_bytes({name: fits})) == [f"{name}={fits}"]
    too_long = fits + "x"
    # nerdctl would fail on it ...
    with pytest.raises(Fatal, match="token too long"):
        parse_env_file(f"{name}={too_long}\n".encode())
    # ... so the adapter refuses it first, without naming the value.
    with pytest.raises(UnsupportedEnvValue, match="env-file limit") as caught:
        env_file_bytes({name: too_long})
    assert too_long not in str(caught.value)


def test_multibyte_values_count_in_bytes() -> None:
    value = "é" * (ENV_LINE_MAX_BYTES // 2)  # fewer characters than the limit, more bytes
    with pytest.raises(UnsupportedEnvValue, match="env-file limit"):
        env_file_bytes({"E": value})


def test_lines_without_equals_would_copy_nerdctls_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Why every line carries "=": a bare name takes the value nerdctl itself has.
    monkeypatch.setenv("AGENT_SECRET", "leaked")
    assert parse_env_file(b"AGENT_SECRET\n") == ["AGENT_SECRET=leaked"]
    assert parse_env_file(env_file_bytes({"AGENT_SECRET": ""})) == ["AGENT_SECRET="]


def test_env_file_is_private_while_used_and_gone_after(tmp_path: Path) -> None:
    env_dir = prepare_env_dir(tmp_path / "env")
    with env_file(env_dir, "replica-a", b"TOKEN=s3cret\n") as path:
        assert path is not None
        assert path.parent == env_dir
        assert path.name.startswith("replica-a.")
        assert path.suffix == ".env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes() == b"TOKEN=s3cret\n"
    assert list(env_dir.iterdir()) == []


def test_env_file_is_removed_when_the_block_fails(tmp_path: Path) -> None:
    env_dir = prepare_env_dir(tmp_path / "env")
    with pytest.raises(RuntimeError), env_file(env_dir, "replica-a", b"T=x\n"):
        raise RuntimeError("the engine call failed")
    assert list(env_dir.iterdir()) == []


def test_no_env_no_file(tmp_path: Path) -> None:
    env_dir = prepare_env_dir(tmp_path / "env")
    with env_file(env_dir, "replica-a", None) as path:
        assert path is None
        assert list(env_dir.iterdir()) == []


def test_an_unwritable_env_file_is_a_runtime_error_naming_no_value(tmp_path: Path) -> None:
    missing = tmp_path / "gone"  # the directory vanished under the agent
    with (
        pytest.raises(ContainerRuntimeError, match="cannot write the env file") as caught,
        env_file(missing, "replica-a", b"TOKEN=s3cret\n"),
    ):
        pass
    assert "s3cret" not in str(caught.value)
