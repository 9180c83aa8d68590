"""Settings from flags and environment: each value picked (the flag wins), checked, converted.

One line per problem (``UsageError``), naming the flag or variable to blame and
never echoing a secret.  Tokens are read from files or the environment, never
from argv.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

from vectorlay.adapters.filesystem import CONFIG_FILE_NAME
from vectorlay.adapters.runtime.engines import DEFAULT_OCI_RUNTIMES, ENGINES
from vectorlay.app import logs
from vectorlay.app.agent.settings import (
    DEFAULT_DATA_PATH,
    DEFAULT_STATE_DIR,
    DEFAULT_STOP_TIMEOUT,
    AgentSettings,
    CheckSettings,
    PrepareGpusSettings,
    StatusSettings,
)
from vectorlay.app.settings import (
    DEFAULT_CP_DB,
    DEFAULT_CP_LISTEN,
    ControlPlaneSettings,
    LogSettings,
)
from vectorlay.domain.agent.disk import DEFAULT_MIN_FREE_GB
from vectorlay.domain.agent.heartbeat import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_RECONNECT_DELAY
from vectorlay.domain.liveness import DEFAULT_OFFLINE_AFTER

BACKENDS = ("asyncio", "trio")
LOG_FORMATS = ("text", "json")
LOG_LEVELS: Final = tuple(logs.level_names())
_LOG_LEVEL_ALIASES: Final = {"warn": "warning"}
# The defaults of the settings themselves: what --help shows is what is used.
LOG_DEFAULTS: Final = LogSettings()
AGENT_DEFAULTS: Final = AgentSettings()

T = TypeVar("T")
Notes = list[tuple[int, str]]
"""(logging level, message) found while reading settings, logged once logging is set up."""


class UsageError(Exception):
    """A flag or environment value that cannot be used; one line for the operator."""


class _MissingTokenFile(UsageError):
    """The token file does not exist, as opposed to any other reason it cannot be read."""


# --- value resolution ----------------------------------------------------------


def _pick(flag: str | None, env: Mapping[str, str], var: str | None) -> tuple[str | None, str]:
    """The flag's value, else the environment's, with the name to blame."""
    if flag is not None:
        return flag, f"--{_flag_name(var)}" if var else "flag"
    if var is not None and env.get(var, "") != "":
        return env[var], var
    return None, ""


_FLAG_FOR_ENV: Final = {"VECTORLAY_CONTROL_PLANE_URL": "control-plane"}


def _flag_name(var: str) -> str:
    if var in _FLAG_FOR_ENV:
        return _FLAG_FOR_ENV[var]
    return var.removeprefix("VECTORLAY_").removeprefix("CP_").lower().replace("_", "-")


def _value(
    flag: str | None,
    env: Mapping[str, str],
    var: str,
    default: T,
    convert: Callable[[str, str], T],
) -> T:
    raw, where = _pick(flag, env, var)
    if raw is None:
        return default
    return convert(raw, where)


def _positive_float(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{where}: expected a number of seconds, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{where}: expected a number of seconds > 0, got {raw[:40]!r}")
    return value


def _nonneg_float(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{where}: expected a number of seconds, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{where}: expected a number of seconds >= 0, got {raw[:40]!r}")
    return value


def _choice(choices: Sequence[str]) -> Callable[[str, str], str]:
    def convert(raw: str, where: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise UsageError(f"{where}: expected one of {', '.join(choices)}, got {raw[:40]!r}")
        return value

    return convert


def _path(raw: str, _where: str) -> Path:
    return Path(raw)


def _text(raw: str, _where: str) -> str:
    return raw


def _read_secret_file(path: str, where: str, notes: Notes) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            _note_if_exposed(path, os.fstat(fh.fileno()).st_mode, where, notes)
            return fh.read()
    except FileNotFoundError as exc:
        raise _MissingTokenFile(f"{where}: cannot read token file {path}: {exc.strerror}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageError(f"{where}: cannot read token file {path}: {reason}") from None


def _note_if_exposed(path: str, mode: int, where: str, notes: Notes) -> None:
    # Read all the same: refusing would stop a running fleet over a chmod.
    if mode & 0o077:
        notes.append(
            (
                logging.WARNING,
                f"{where}: {path} is accessible to group or others "
                f"(mode {stat.S_IMODE(mode):04o}); it holds a token: chmod 600 it",
            )
        )


def _log_settings(args: argparse.Namespace, env: Mapping[str, str]) -> LogSettings:
    return LogSettings(
        format=_value(
            args.log_format, env, "VECTORLAY_LOG_FORMAT", LOG_DEFAULTS.format, _choice(LOG_FORMATS)
        ),
        level=_value(args.log_level, env, "VECTORLAY_LOG_LEVEL", LOG_DEFAULTS.level, _log_level),
    )


def _log_level(raw: str, where: str) -> str:
    value = raw.strip().lower()
    value = _LOG_LEVEL_ALIASES.get(value, value)
    if value not in LOG_LEVELS:
        raise UsageError(
            f"{where}: expected one of {', '.join(LOG_LEVELS)} (or warn), got {raw[:40]!r}"
        )
    return value


def _backend(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    return _value(args.backend, env, "VECTORLAY_BACKEND", AGENT_DEFAULTS.backend, _choice(BACKENDS))


def check_settings(args: argparse.Namespace, env: Mapping[str, str]) -> CheckSettings:
    return CheckSettings(
        json=bool(args.json),
        data_path=_value(args.data_path, env, "VECTORLAY_DATA_PATH", DEFAULT_DATA_PATH, _path),
        **_engine(args, env),
        backend=_backend(args, env),
        log=_log_settings(args, env),
        image_store=_value(args.image_store, env, "VECTORLAY_IMAGE_STORE", None, _path),
        min_free_gb=_min_free_gb(args, env),
    )


def _min_free_gb(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return _value(args.min_free_gb, env, "VECTORLAY_MIN_FREE_GB", DEFAULT_MIN_FREE_GB, _nonneg_int)


def _nonneg_int(raw: str, where: str) -> int:
    value = raw.strip()
    if not (value.isascii() and value.isdigit()):
        raise UsageError(f"{where}: expected a whole number >= 0, got {raw[:40]!r}")
    return int(value)


def status_settings(args: argparse.Namespace, env: Mapping[str, str]) -> StatusSettings:
    return StatusSettings(
        json=bool(args.json),
        state_dir=_value(args.state_dir, env, "VECTORLAY_STATE_DIR", DEFAULT_STATE_DIR, _path),
        log=_log_settings(args, env),
        backend=_backend(args, env),
    )


def prepare_gpus_settings(args: argparse.Namespace, env: Mapping[str, str]) -> PrepareGpusSettings:
    from vectorlay.adapters.probe.pci import normalize_address

    gpus: list[str] = []
    for raw in args.gpu:
        address = normalize_address(raw)
        if address is None:
            raise UsageError(
                f"--gpu: expected a PCI address such as 0000:17:00.0, got {raw[:40]!r}"
            )
        if address not in gpus:
            gpus.append(address)
    if args.root is not None and not args.persist:
        raise UsageError("--root: only with --persist")
    return PrepareGpusSettings(
        apply=bool(args.apply),
        persist=bool(args.persist),
        json=bool(args.json),
        gpus=tuple(gpus),
        root=Path(args.root) if args.root is not None else None,
        backend=_backend(args, env),
        log=_log_settings(args, env),
    )


def _engine(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """The engine and its command; VECTORLAY_NERDCTL is VECTORLAY_ENGINE_CLI's alias."""
    engine = _value(args.engine, env, "VECTORLAY_ENGINE", AGENT_DEFAULTS.engine, _choice(ENGINES))
    cli = _value(args.engine_cli, env, "VECTORLAY_ENGINE_CLI", None, _text)
    if cli is None:
        cli = _value(None, env, "VECTORLAY_NERDCTL", engine, _text)
    return {"engine": engine, "engine_cli": cli}


def _org_token(
    args: argparse.Namespace, env: Mapping[str, str], state_dir: Path, notes: Notes
) -> str | None:
    if args.token_file is None:
        return env.get("VECTORLAY_ORG_TOKEN", "").strip() or None
    try:
        token = _read_secret_file(args.token_file, "--token-file", notes).strip()
    except _MissingTokenFile as exc:
        node_file = state_dir / CONFIG_FILE_NAME
        # os.path.exists: an unreadable state directory counts as no node.json.
        if not os.path.exists(node_file):
            raise UsageError(f"{exc}, and there is no {node_file} to start from") from None
        # A registered node starts with the node token in node.json; the org
        # token file may be deleted once the node has registered.
        notes.append(
            (
                logging.INFO,
                f"--token-file: {args.token_file} does not exist; "
                f"starting with the node token in {node_file}",
            )
        )
        return None
    if not token:
        raise UsageError(f"--token-file: {args.token_file} is empty")
    return token


def agent_settings(
    args: argparse.Namespace, env: Mapping[str, str], notes: Notes | None = None
) -> AgentSettings:
    state_dir = _value(args.state_dir, env, "VECTORLAY_STATE_DIR", DEFAULT_STATE_DIR, _path)
    engine = _engine(args, env)
    token = _org_token(args, env, state_dir, [] if notes is None else notes)
    ca_raw, ca_where = _pick(args.ca_file, env, "VECTORLAY_CA_FILE")
    ca_file = Path(ca_raw) if ca_raw is not None else None
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"{ca_where}: {ca_file} is not a readable file")
    return AgentSettings(
        control_plane_url=_value(
            args.control_plane, env, "VECTORLAY_CONTROL_PLANE_URL", None, _text
        ),
        org_token=token,
        state_dir=state_dir,
        data_path=_value(args.data_path, env, "VECTORLAY_DATA_PATH", DEFAULT_DATA_PATH, _path),
        heartbeat_interval=_value(
            args.heartbeat_interval,
            env,
            "VECTORLAY_HEARTBEAT_INTERVAL",
            DEFAULT_HEARTBEAT_INTERVAL,
            _positive_float,
        ),
        reconnect_delay=_value(
            args.reconnect_delay,
            env,
            "VECTORLAY_RECONNECT_DELAY",
            DEFAULT_RECONNECT_DELAY,
            _nonneg_float,
        ),
        oci_runtime=_value(
            args.oci_runtime,
            env,
            "VECTORLAY_OCI_RUNTIME",
            DEFAULT_OCI_RUNTIMES[engine["engine"]],
            _text,
        ),
        **engine,
        ca_file=ca_file,
        insecure=bool(args.insecure),
        stop_timeout=_value(
            args.stop_timeout,
            env,
            "VECTORLAY_STOP_TIMEOUT",
            DEFAULT_STOP_TIMEOUT,
            _nonneg_float,
        ),
        backend=_backend(args, env),
        log=_log_settings(args, env),
        image_store=_value(args.image_store, env, "VECTORLAY_IMAGE_STORE", None, _path),
        min_free_gb=_min_free_gb(args, env),
        metrics_textfile=_value(
            args.metrics_textfile, env, "VECTORLAY_METRICS_TEXTFILE", None, _path
        ),
    )


def _listen(raw: str, where: str) -> tuple[str, int]:
    host, sep, port_text = raw.rpartition(":")
    host = host.strip("[]")
    # isascii: str.isdigit() accepts digits such as "²" that int() refuses.
    if (
        not sep
        or not host
        or not (port_text.isascii() and port_text.isdigit())
        or not 0 <= int(port_text) <= 65535
    ):
        raise UsageError(f"{where}: expected HOST:PORT, got {raw[:60]!r}")
    return host, int(port_text)


def _token_lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def control_plane_settings(
    args: argparse.Namespace, env: Mapping[str, str], notes: Notes | None = None
) -> ControlPlaneSettings:
    notes = [] if notes is None else notes
    host, port = _value(args.listen, env, "VECTORLAY_CP_LISTEN", None, _listen) or _listen(
        DEFAULT_CP_LISTEN, "default"
    )
    if args.org_token_file is not None:
        org = _token_lines(_read_secret_file(args.org_token_file, "--org-token-file", notes))
    else:
        org = tuple(
            t.strip() for t in env.get("VECTORLAY_CP_ORG_TOKENS", "").split(",") if t.strip()
        )
    if args.admin_token_file is not None:
        # Every token of the file counts, as for the org token file.
        admin = _token_lines(_read_secret_file(args.admin_token_file, "--admin-token-file", notes))
    else:
        admin = tuple(t for t in [env.get("VECTORLAY_CP_ADMIN_TOKEN", "").strip()] if t)
    return ControlPlaneSettings(
        host=host,
        port=port,
        db=_value(args.db, env, "VECTORLAY_CP_DB", DEFAULT_CP_DB, _path),
        org_tokens=org,
        admin_tokens=admin,
        offline_after=_value(
            args.offline_after,
            env,
            "VECTORLAY_CP_OFFLINE_AFTER",
            DEFAULT_OFFLINE_AFTER,
            _positive_float,
        ),
        backend=_backend(args, env),
        log=_log_settings(args, env),
    )
