"""Command-line settings: flags beat environment, clear usage errors, tokens kept off argv."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import ORG_TOKEN as SECRET
from vectorlay import __version__
from vectorlay.app import cli, logs
from vectorlay.app.agent.settings import AgentSettings, CheckSettings
from vectorlay.app.cli import main
from vectorlay.app.options import (
    Notes,
    UsageError,
    agent_settings,
    check_settings,
    control_plane_settings,
)
from vectorlay.app.settings import ControlPlaneSettings


def parse(*argv: str) -> argparse.Namespace:
    return cli._parser().parse_args(list(argv))


def agent(*argv: str, env: Mapping[str, str] | None = None) -> AgentSettings:
    return agent_settings(parse("run", *argv), env or {})


def cp(*argv: str, env: Mapping[str, str] | None = None) -> ControlPlaneSettings:
    return control_plane_settings(parse("control-plane", *argv), env or {})


def check(*argv: str, env: Mapping[str, str] | None = None) -> CheckSettings:
    return check_settings(parse("check", *argv), env or {})


def usage_error(build: Callable[[], object]) -> str:
    with pytest.raises(UsageError) as info:
        build()
    return str(info.value)


# --- agent settings ------------------------------------------------------------------


def test_agent_defaults() -> None:
    settings = agent()
    assert settings == AgentSettings()
    assert settings.control_plane_url is None
    assert settings.org_token is None
    assert settings.state_dir == Path("/var/lib/vectorlay")
    assert settings.data_path == Path("/data")
    assert settings.heartbeat_interval == 30.0
    assert settings.reconnect_delay == 5.0
    assert settings.oci_runtime == "io.containerd.kata.v2"
    assert (settings.engine, settings.engine_cli) == ("nerdctl", "nerdctl")
    assert settings.stop_timeout == 30.0
    assert (settings.backend, settings.log.format, settings.log.level) == (
        "asyncio",
        "text",
        "info",
    )


# (flag, environment variable, attribute, flag value, env value, expected from flag, from env)
AGENT_TABLE: list[tuple[str, str, str, str, str, Any, Any]] = [
    (
        "--control-plane",
        "VECTORLAY_CONTROL_PLANE_URL",
        "control_plane_url",
        "wss://a.example/v1/agent",
        "wss://b.example/v1/agent",
        "wss://a.example/v1/agent",
        "wss://b.example/v1/agent",
    ),
    ("--state-dir", "VECTORLAY_STATE_DIR", "state_dir", "/s1", "/s2", Path("/s1"), Path("/s2")),
    ("--data-path", "VECTORLAY_DATA_PATH", "data_path", "/d1", "/d2", Path("/d1"), Path("/d2")),
    (
        "--heartbeat-interval",
        "VECTORLAY_HEARTBEAT_INTERVAL",
        "heartbeat_interval",
        "10",
        "2.5",
        10.0,
        2.5,
    ),
    ("--reconnect-delay", "VECTORLAY_RECONNECT_DELAY", "reconnect_delay", "1", "0", 1.0, 0.0),
    ("--oci-runtime", "VECTORLAY_OCI_RUNTIME", "oci_runtime", "runc", "kata", "runc", "kata"),
    ("--nerdctl", "VECTORLAY_NERDCTL", "engine_cli", "/opt/n", "/usr/n", "/opt/n", "/usr/n"),
    ("--engine-cli", "VECTORLAY_ENGINE_CLI", "engine_cli", "/opt/n", "/usr/n", "/opt/n", "/usr/n"),
    ("--engine", "VECTORLAY_ENGINE", "engine", "podman", "docker", "podman", "docker"),
    ("--stop-timeout", "VECTORLAY_STOP_TIMEOUT", "stop_timeout", "0", "45", 0.0, 45.0),
    ("--backend", "VECTORLAY_BACKEND", "backend", "trio", "asyncio", "trio", "asyncio"),
]


@pytest.mark.parametrize(
    ("flag", "var", "attr", "flag_value", "env_value", "from_flag", "from_env"), AGENT_TABLE
)
def test_agent_flag_beats_env_and_env_is_used_without_flag(
    flag: str,
    var: str,
    attr: str,
    flag_value: str,
    env_value: str,
    from_flag: Any,
    from_env: Any,
) -> None:
    env = {var: env_value}
    assert getattr(agent(flag, flag_value, env=env), attr) == from_flag
    assert getattr(agent(env=env), attr) == from_env
    # An empty variable counts as unset.
    assert getattr(agent(env={var: ""}), attr) == getattr(AgentSettings(), attr)


@pytest.mark.parametrize(
    ("flag", "var", "bad"),
    [
        ("--heartbeat-interval", "VECTORLAY_HEARTBEAT_INTERVAL", "abc"),
        ("--heartbeat-interval", "VECTORLAY_HEARTBEAT_INTERVAL", "0"),
        ("--heartbeat-interval", "VECTORLAY_HEARTBEAT_INTERVAL", "-1"),
        ("--heartbeat-interval", "VECTORLAY_HEARTBEAT_INTERVAL", "nan"),
        ("--heartbeat-interval", "VECTORLAY_HEARTBEAT_INTERVAL", "inf"),
        ("--heartbeat-interval", "VECTORLAY_HEARTBEAT_INTERVAL", "1e999"),
        ("--reconnect-delay", "VECTORLAY_RECONNECT_DELAY", "-0.5"),
        ("--reconnect-delay", "VECTORLAY_RECONNECT_DELAY", "5s"),
        ("--stop-timeout", "VECTORLAY_STOP_TIMEOUT", "-1"),
        ("--stop-timeout", "VECTORLAY_STOP_TIMEOUT", ""),
        ("--backend", "VECTORLAY_BACKEND", "curio"),
        ("--log-format", "VECTORLAY_LOG_FORMAT", "xml"),
        ("--log-level", "VECTORLAY_LOG_LEVEL", "loud"),
    ],
)
def test_bad_values_name_the_flag_or_the_variable(flag: str, var: str, bad: str) -> None:
    from_flag = usage_error(lambda: agent(flag, bad))
    assert from_flag.startswith(f"{flag}: ")
    if bad:
        from_env = usage_error(lambda: agent(env={var: bad}))
        assert from_env.startswith(f"{var}: ")
    assert "\n" not in from_flag


def test_bad_number_message_quotes_a_clipped_value() -> None:
    text = usage_error(lambda: agent("--heartbeat-interval", "x" * 500))
    assert text.startswith("--heartbeat-interval: expected a number of seconds")
    assert len(text) < 120


def test_choices_are_case_insensitive() -> None:
    settings = agent(
        "--backend", "TRIO", "--log-format", "Json", env={"VECTORLAY_LOG_LEVEL": "DEBUG"}
    )
    assert (settings.backend, settings.log.format, settings.log.level) == ("trio", "json", "debug")


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("critical", "critical"),
        ("CRITICAL", "critical"),
        ("warn", "warning"),
        ("WARN", "warning"),
        (" Warning ", "warning"),
        ("Error", "error"),
        ("info", "info"),
    ],
)
def test_log_levels_for_the_agent_and_the_control_plane(raw: str, level: str) -> None:
    for build in (agent, cp):
        assert build("--log-level", raw).log.level == level
        assert build(env={"VECTORLAY_LOG_LEVEL": raw}).log.level == level


@pytest.mark.parametrize("bad", ["loud", "warnings", "fatal", "notset"])
@pytest.mark.parametrize("build", [agent, cp])
def test_unknown_log_levels_are_usage_errors(build: Callable[..., object], bad: str) -> None:
    text = usage_error(lambda: build("--log-level", bad))
    assert text.startswith("--log-level: expected one of debug, info, warning, error, critical")


LOGGING_SCRIPT = """
import logging, sys, types
def fake_main(settings):
    log = logging.getLogger("vectorlay.test")
    for level in ("debug", "info", "warning", "error", "critical"):
        getattr(log, level)(level.upper() + "-LINE")
    logging.getLogger("httpx").error("THIRD-PARTY-ERROR-LINE")
    return 0
for name in ("vectorlay.app.agent.bootstrap", "vectorlay.app.controlplane.bootstrap"):
    fake = types.ModuleType(name)
    fake.main = fake_main
    sys.modules[name] = fake
from vectorlay.app.cli import main
sys.exit(main(sys.argv[1:], {}))
"""


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["control-plane", "--log-level", "Critical"], ["CRITICAL"]),
        (["run", "--log-level", "CRITICAL"], ["CRITICAL"]),
        (["run", "--log-level", "warn"], ["WARNING", "ERROR", "CRITICAL", "THIRD-PARTY-ERROR"]),
    ],
)
def test_the_log_level_given_is_the_one_logged_at(argv: list[str], shown: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    logged = [line.split()[-1].removesuffix("-LINE") for line in done.stderr.splitlines()]
    assert logged == shown


def test_ca_file_must_exist_and_the_error_names_its_source(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert agent("--ca-file", str(ca)).ca_file == ca
    assert agent(env={"VECTORLAY_CA_FILE": str(ca)}).ca_file == ca
    missing = str(tmp_path / "missing.pem")
    assert usage_error(lambda: agent("--ca-file", missing)).startswith("--ca-file: ")
    text = usage_error(lambda: agent(env={"VECTORLAY_CA_FILE": missing}))
    assert text.startswith("VECTORLAY_CA_FILE: ")
    assert usage_error(lambda: agent("--ca-file", str(tmp_path))).startswith("--ca-file: ")


def test_insecure_is_a_plain_switch() -> None:
    assert agent("--insecure").insecure is True
    assert agent().insecure is False


# --- the org token ----------------------------------------------------------------------


def test_token_from_file_is_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {SECRET}\n\n")
    assert agent("--token-file", str(token_file)).org_token == SECRET


def test_token_from_environment_when_no_file() -> None:
    assert agent(env={"VECTORLAY_ORG_TOKEN": f" {SECRET} "}).org_token == SECRET
    assert agent(env={"VECTORLAY_ORG_TOKEN": "   "}).org_token is None


def test_token_file_beats_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    settings = agent("--token-file", str(token_file), env={"VECTORLAY_ORG_TOKEN": SECRET})
    assert settings.org_token == "from-file"


def test_unreadable_or_empty_token_file_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + SECRET.encode())
    for path in (tmp_path / "missing", tmp_path, empty, binary):
        with pytest.raises(UsageError) as info:
            agent("--token-file", str(path))
        text = str(info.value)
        assert text.startswith("--token-file: ")
        assert SECRET not in text
        assert "\n" not in text


def registered_state(tmp_path: Path) -> Path:
    """A state directory holding the node.json of a node that has registered."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "node.json").write_text(
        '{"node_id": "n-1", "node_token": "t", "control_plane_url": "u"}'
    )
    return state


def test_missing_token_file_is_fine_once_the_node_has_registered(tmp_path: Path) -> None:
    state = registered_state(tmp_path)
    missing = str(tmp_path / "org-token")
    notes: Notes = []
    settings = agent_settings(
        parse("run", "--token-file", missing, "--state-dir", str(state)), {}, notes
    )
    assert settings.org_token is None
    assert notes == [
        (
            logging.INFO,
            f"--token-file: {missing} does not exist; starting with the node token in "
            f"{state / 'node.json'}",
        )
    ]
    # The state directory may come from the environment as well.
    from_env = agent("--token-file", missing, env={"VECTORLAY_STATE_DIR": str(state)})
    assert from_env.org_token is None


def test_missing_token_file_without_node_json_is_a_usage_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    text = usage_error(
        lambda: agent("--token-file", str(tmp_path / "org-token"), "--state-dir", str(state))
    )
    assert text.startswith("--token-file: cannot read token file ")
    assert "No such file or directory" in text
    assert f"no {state / 'node.json'}" in text


def test_other_token_file_problems_stay_usage_errors_with_node_json(tmp_path: Path) -> None:
    state = registered_state(tmp_path)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    unreadable = tmp_path / "unreadable"
    unreadable.write_text(SECRET)
    unreadable.chmod(0)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    cases = [(tmp_path, "Is a directory"), (empty, "is empty"), (binary, "UnicodeDecodeError")]
    if os.geteuid() != 0:  # root reads a file whatever its mode
        cases.append((unreadable, "Permission denied"))
    for path, reason in cases:
        with pytest.raises(UsageError) as info:
            agent("--token-file", str(path), "--state-dir", str(state))
        text = str(info.value)
        assert text.startswith("--token-file: ")
        assert reason in text
        assert SECRET not in text


def test_main_logs_the_missing_token_file_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = install_fake_command(monkeypatch, "vectorlay.app.agent.bootstrap", 0)
    state = registered_state(tmp_path)
    with caplog.at_level(logging.INFO, logger="vectorlay.cli"):
        code = main(
            ["run", "--token-file", str(tmp_path / "gone"), "--state-dir", str(state)], env={}
        )
    assert code == 0
    assert isinstance(seen[0], AgentSettings)
    assert seen[0].org_token is None
    assert [r.getMessage() for r in caplog.records if r.name == "vectorlay.cli"] == [
        f"--token-file: {tmp_path / 'gone'} does not exist; starting with the node token in "
        f"{state / 'node.json'}"
    ]
    with pytest.raises(SystemExit) as info:
        main(["run", "--token-file", str(tmp_path / "gone"), "--state-dir", str(tmp_path)], env={})
    assert info.value.code == 2


def exposed_warning(path: Path, mode: str, where: str = "--token-file") -> tuple[int, str]:
    return (
        logging.WARNING,
        f"{where}: {path} is accessible to group or others (mode {mode}); "
        "it holds a token: chmod 600 it",
    )


def test_a_token_file_open_to_others_is_read_with_a_warning(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET)
    for mode, expected in ((0o600, []), (0o400, []), (0o644, ["0644"]), (0o620, ["0620"])):
        token_file.chmod(mode)
        notes: Notes = []
        settings = agent_settings(parse("run", "--token-file", str(token_file)), {}, notes)
        assert settings.org_token == SECRET
        assert notes == [exposed_warning(token_file, m) for m in expected]


def test_control_plane_token_files_open_to_others_are_read_with_a_warning(
    tmp_path: Path,
) -> None:
    org, admin = tmp_path / "org", tmp_path / "admin"
    org.write_text(f"{SECRET}\n")
    admin.write_text("admin-1\n")
    org.chmod(0o640)
    admin.chmod(0o604)
    notes: Notes = []
    args = parse("control-plane", "--org-token-file", str(org), "--admin-token-file", str(admin))
    settings = control_plane_settings(args, {}, notes)
    assert (settings.org_tokens, settings.admin_tokens) == ((SECRET,), ("admin-1",))
    assert notes == [
        exposed_warning(org, "0640", "--org-token-file"),
        exposed_warning(admin, "0604", "--admin-token-file"),
    ]
    org.chmod(0o600)
    admin.chmod(0o600)
    notes.clear()
    control_plane_settings(args, {}, notes)
    assert notes == []


def test_the_warning_reaches_stderr_as_a_log_line(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET)
    token_file.chmod(0o644)
    argv = ["run", "--token-file", str(token_file), "--log-format", "json"]
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    cli_records = [(r["level"], r["msg"]) for r in records if r["logger"] == "vectorlay.cli"]
    assert cli_records == [("warning", exposed_warning(token_file, "0644")[1])]


def test_settings_repr_never_shows_the_token() -> None:
    settings = agent(env={"VECTORLAY_ORG_TOKEN": SECRET})
    assert settings.org_token == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--token", SECRET],
        ["run", f"--token={SECRET}"],
        ["run", "--org-token", SECRET],
        ["run", "--tok", SECRET],  # no prefix matching onto --token-file
        ["run", "--token-f", SECRET],
        ["run", SECRET],
    ],
)
def test_token_is_never_taken_from_argv(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv, env={})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert SECRET not in err


# --- check and control-plane settings -------------------------------------------------


def test_check_settings() -> None:
    assert check() == CheckSettings()
    settings = check("--json", "--data-path", "/mnt/d", env={"VECTORLAY_NERDCTL": "/opt/nerdctl"})
    assert settings.json is True
    assert settings.data_path == Path("/mnt/d")
    assert settings.engine_cli == "/opt/nerdctl"
    assert check(env={"VECTORLAY_DATA_PATH": "/e"}).data_path == Path("/e")
    assert check("--data-path", "/f", env={"VECTORLAY_DATA_PATH": "/e"}).data_path == Path("/f")
    assert usage_error(lambda: check("--backend", "x")).startswith("--backend: ")


def test_control_plane_defaults() -> None:
    settings = cp()
    assert (settings.host, settings.port) == ("127.0.0.1", 8787)
    assert settings.db == Path("vectorlay-cp.sqlite3")
    assert settings.org_tokens == ()
    assert settings.admin_tokens == ()
    assert settings.offline_after == 60.0


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        ("0.0.0.0:9000", "0.0.0.0", 9000),
        ("localhost:0", "localhost", 0),
        ("[::1]:8787", "::1", 8787),
        ("[::]:65535", "::", 65535),
    ],
)
def test_listen_address(raw: str, host: str, port: int) -> None:
    settings = cp("--listen", raw)
    assert (settings.host, settings.port) == (host, port)
    settings = cp(env={"VECTORLAY_CP_LISTEN": raw})
    assert (settings.host, settings.port) == (host, port)


@pytest.mark.parametrize(
    "raw", ["8787", "host:", ":8787", "host:65536", "host:-1", "host:x", "h:²"]
)
def test_bad_listen_address(raw: str) -> None:
    assert usage_error(lambda: cp("--listen", raw)).startswith("--listen: expected HOST:PORT")
    text = usage_error(lambda: cp(env={"VECTORLAY_CP_LISTEN": raw}))
    assert text.startswith("VECTORLAY_CP_LISTEN: expected HOST:PORT")


def test_control_plane_flag_beats_env() -> None:
    env = {
        "VECTORLAY_CP_LISTEN": "127.0.0.1:1",
        "VECTORLAY_CP_DB": "/env.db",
        "VECTORLAY_CP_OFFLINE_AFTER": "5",
    }
    from_env = cp(env=env)
    assert (from_env.port, from_env.db, from_env.offline_after) == (1, Path("/env.db"), 5.0)
    from_flags = cp("--listen", "127.0.0.1:2", "--db", "/f.db", "--offline-after", "0.5", env=env)
    assert (from_flags.port, from_flags.db, from_flags.offline_after) == (2, Path("/f.db"), 0.5)
    assert usage_error(lambda: cp("--offline-after", "0")).startswith("--offline-after: ")
    text = usage_error(lambda: cp(env={"VECTORLAY_CP_OFFLINE_AFTER": "x"}))
    assert text.startswith("VECTORLAY_CP_OFFLINE_AFTER: ")


def test_control_plane_tokens_from_files_and_env(tmp_path: Path) -> None:
    org = tmp_path / "org"
    org.write_text(f"\n  {SECRET}  \n\nsecond\n")
    admin = tmp_path / "admin"
    admin.write_text("\nadmin-1\nadmin-2\n")
    env = {"VECTORLAY_CP_ORG_TOKENS": "e1, e2,,", "VECTORLAY_CP_ADMIN_TOKEN": " env-admin "}
    from_env = cp(env=env)
    assert from_env.org_tokens == ("e1", "e2")
    assert from_env.admin_tokens == ("env-admin",)
    from_files = cp("--org-token-file", str(org), "--admin-token-file", str(admin), env=env)
    assert from_files.org_tokens == (SECRET, "second")
    assert from_files.admin_tokens == ("admin-1", "admin-2")
    assert SECRET not in repr(from_files)
    assert "admin-1" not in repr(from_files)
    text = usage_error(lambda: cp("--org-token-file", str(tmp_path / "nope")))
    assert text.startswith("--org-token-file: ")
    text = usage_error(lambda: cp("--admin-token-file", str(tmp_path / "nope")))
    assert text.startswith("--admin-token-file: ")


# --- main -----------------------------------------------------------------------------


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"], env={})
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


# The defaults README.md and DESIGN.md give, as --help must show them.
HELP_DEFAULTS: dict[str, list[str]] = {
    "run": [
        "VECTORLAY_STATE_DIR; default /var/lib/vectorlay",
        "VECTORLAY_DATA_PATH; default /data",
        "VECTORLAY_HEARTBEAT_INTERVAL; default 30",
        "VECTORLAY_RECONNECT_DELAY; default 5",
        "VECTORLAY_OCI_RUNTIME; default io.containerd.kata.v2",
        "VECTORLAY_ENGINE; default nerdctl",
        "VECTORLAY_ENGINE_CLI (alias --nerdctl, VECTORLAY_NERDCTL)",
        "kata (podman)",
        "VECTORLAY_CA_FILE; default the system trust store",
        "VECTORLAY_STOP_TIMEOUT; default 30",
        "VECTORLAY_BACKEND; default asyncio",
        "VECTORLAY_LOG_FORMAT; default text",
        "VECTORLAY_LOG_LEVEL; default info",
    ],
    "control-plane": [
        "VECTORLAY_CP_LISTEN; default 127.0.0.1:8787",
        "VECTORLAY_CP_DB; default ./vectorlay-cp.sqlite3",
        "default none: registration refused",
        "default none: admin API refused",
        "VECTORLAY_CP_OFFLINE_AFTER; default 60",
        "VECTORLAY_BACKEND; default asyncio",
    ],
    "check": [
        "VECTORLAY_DATA_PATH; default /data",
        "VECTORLAY_ENGINE; default nerdctl",
        "VECTORLAY_ENGINE_CLI (alias --nerdctl, VECTORLAY_NERDCTL)",
        "VECTORLAY_LOG_LEVEL; default info",
    ],
}


@pytest.mark.parametrize("command", sorted(HELP_DEFAULTS))
def test_help_shows_the_defaults(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(command, capsys)
    missing = [d for d in HELP_DEFAULTS[command] if d not in text]
    assert missing == []


def test_help_shows_the_defaults_the_settings_use(capsys: pytest.CaptureFixture[str]) -> None:
    defaults = AgentSettings()
    text = help_text("run", capsys)
    assert f"default {defaults.state_dir}" in text
    assert f"default {defaults.heartbeat_interval:g}" in text
    assert f"default {defaults.oci_runtime}" in text
    assert f"default {defaults.log.level}" in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vectorlay-agent {__version__}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], env={}) == 2
    assert "usage: vectorlay-agent" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["run", "--heartbeat-interval", "soon"], {}, "--heartbeat-interval: "),
        (["run"], {"VECTORLAY_RECONNECT_DELAY": "-3"}, "VECTORLAY_RECONNECT_DELAY: "),
        (["run", "--token-file", "/nonexistent/token"], {}, "--token-file: "),
        (["check", "--backend", "gevent"], {}, "--backend: "),
        (["control-plane", "--listen", "nowhere"], {}, "--listen: "),
        (["run", "--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["run", "--token", "s3cret"], {}, "use --token-file PATH or the VECTORLAY_ORG_TOKEN"),
        (["run", "--token=s3cret"], {}, "use --token-file PATH or the VECTORLAY_ORG_TOKEN"),
        (["reboot"], {}, "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv, env=env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vectorlay-agent")
    assert needle in last


def install_fake_command(monkeypatch: pytest.MonkeyPatch, module: str, code: int) -> list[object]:
    """Replace a command module so main() dispatches without running anything."""
    seen: list[object] = []

    def fake_main(settings: object) -> int:
        seen.append(settings)
        return code

    fake = types.ModuleType(module)
    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    monkeypatch.setattr(logs, "configure", lambda *args: None)
    return seen


@pytest.mark.parametrize(
    ("argv", "module", "kind"),
    [
        (["check", "--json"], "vectorlay.app.agent.check", CheckSettings),
        (["run", "--heartbeat-interval", "7"], "vectorlay.app.agent.bootstrap", AgentSettings),
        (
            ["control-plane", "--listen", "127.0.0.1:1"],
            "vectorlay.app.controlplane.bootstrap",
            ControlPlaneSettings,
        ),
    ],
)
@pytest.mark.parametrize("code", [0, 1])
def test_main_dispatches_with_settings_and_returns_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], module: str, kind: type, code: int
) -> None:
    seen = install_fake_command(monkeypatch, module, code)
    assert main(argv, env={}) == code
    assert len(seen) == 1
    assert isinstance(seen[0], kind)


def test_main_reads_the_real_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = install_fake_command(monkeypatch, "vectorlay.app.agent.bootstrap", 0)
    monkeypatch.setenv("VECTORLAY_HEARTBEAT_INTERVAL", "3")
    monkeypatch.setenv("VECTORLAY_ORG_TOKEN", SECRET)
    assert main(["run"]) == 0
    settings = seen[0]
    assert isinstance(settings, AgentSettings)
    assert settings.heartbeat_interval == 3.0
    assert settings.org_token == SECRET


def test_secrets_leave_the_environment_once_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import vectorlay.app.agent.bootstrap as agent_module

    seen: dict[str, object] = {}

    def fake_main(settings: AgentSettings) -> int:
        seen["token"] = settings.org_token
        seen["env"] = os.environ.get("VECTORLAY_ORG_TOKEN")
        return 0

    monkeypatch.setattr(agent_module, "main", fake_main)
    monkeypatch.setenv("VECTORLAY_ORG_TOKEN", "tok-from-env")
    assert cli.main(["run", "--state-dir", str(tmp_path)]) == 0
    assert seen == {"token": "tok-from-env", "env": None}


# --- the container engine ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "cli", "oci_runtime"),
    [
        ("nerdctl", "nerdctl", "io.containerd.kata.v2"),
        ("docker", "docker", "io.containerd.kata.v2"),
        ("podman", "podman", "kata"),
    ],
)
def test_engine_picks_its_command_and_oci_runtime(engine: str, cli: str, oci_runtime: str) -> None:
    settings = agent("--engine", engine)
    assert (settings.engine, settings.engine_cli, settings.oci_runtime) == (
        engine,
        cli,
        oci_runtime,
    )
    assert agent(env={"VECTORLAY_ENGINE": engine}).engine_cli == cli
    assert check("--engine", engine).engine_cli == cli
    # An explicit runtime wins over the engine's default.
    assert agent("--engine", engine, "--oci-runtime", "runc").oci_runtime == "runc"


def test_engine_cli_beats_its_nerdctl_alias() -> None:
    env = {"VECTORLAY_ENGINE_CLI": "/opt/podman", "VECTORLAY_NERDCTL": "/opt/nerdctl"}
    assert agent("--engine", "podman", env=env).engine_cli == "/opt/podman"
    assert agent(env={"VECTORLAY_NERDCTL": "/opt/nerdctl"}).engine_cli == "/opt/nerdctl"
    assert agent("--nerdctl", "/a", env=env).engine_cli == "/a"


def test_unknown_engine_is_a_usage_error() -> None:
    assert usage_error(lambda: agent("--engine", "lxc")).startswith("--engine: expected one of")
    message = usage_error(lambda: check(env={"VECTORLAY_ENGINE": "rkt"}))
    assert message.startswith("VECTORLAY_ENGINE: expected one of nerdctl, docker, podman")


def test_a_token_on_the_command_line_is_never_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--token", "s3cret-value"], env={})
    err = capsys.readouterr().err
    assert "s3cret-value" not in err
    assert "--token-file PATH or the VECTORLAY_ORG_TOKEN environment variable" in err
