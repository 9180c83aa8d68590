"""``vectorlay-agent``: parse flags and environment, configure logging, run.

Every setting is a flag and an environment variable; the flag wins.  Tokens
are read from files or the environment, never from argv (argv is
world-readable in ``/proc``).  Exit status: 0 success/ready, 1 failure or
degraded, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

from vectorlay import __version__
from vectorlay.adapters.filesystem import CONFIG_FILE_NAME
from vectorlay.adapters.runtime.nerdctl import DEFAULT_OCI_RUNTIME
from vectorlay.app import logs
from vectorlay.app.backends import missing_backend
from vectorlay.app.settings import (
    DEFAULT_CP_DB,
    DEFAULT_CP_LISTEN,
    DEFAULT_DATA_PATH,
    DEFAULT_STATE_DIR,
    DEFAULT_STOP_TIMEOUT,
    AgentSettings,
    CheckSettings,
    ControlPlaneSettings,
    LogSettings,
    StatusSettings,
)
from vectorlay.domain.agent.disk import DEFAULT_MIN_FREE_GB
from vectorlay.domain.agent.heartbeat import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_RECONNECT_DELAY
from vectorlay.domain.liveness import DEFAULT_OFFLINE_AFTER

PROG = "vectorlay-agent"
EXIT_USAGE = 2
BACKENDS = ("asyncio", "trio")
LOG_FORMATS = ("text", "json")
LOG_LEVELS: Final = tuple(logs.level_names())
_LOG_LEVEL_ALIASES: Final = {"warn": "warning"}
# The defaults of the settings themselves: what --help shows is what is used.
_LOG_DEFAULTS: Final = LogSettings()
_AGENT_DEFAULTS: Final = AgentSettings()

T = TypeVar("T")
Notes = list[tuple[int, str]]
"""(logging level, message) found while reading settings, logged once logging is set up."""

_log = logging.getLogger("vectorlay.cli")


class UsageError(Exception):
    """A flag or environment value that cannot be used; one line for the operator."""


class _MissingTokenFile(UsageError):
    """The token file does not exist, as opposed to any other reason it cannot be read."""


class _Parser(argparse.ArgumentParser):
    """argparse without prefix matching, and without echoing stray values.

    Prefix matching would read ``--token SECRET`` as ``--token-file SECRET``
    and print the secret in the "cannot read" error; and argparse's own
    "unrecognized arguments" error repeats every value, so a token pasted
    on the command line would land in the error output too.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            names = [a.split("=", 1)[0] for a in message[len(prefix) :].split() if a[:1] == "-"]
            message = f"{prefix}{' '.join(names) or '(values not shown)'}"
        super().error(message)


def _env(var: str, default: object = None) -> str:
    """Help text: the environment variable, and the default when there is one."""
    if default is None:
        return var
    if isinstance(default, float):
        default = f"{default:g}"
    return f"{var}; default {default}"


def _shown_path(path: Path) -> str:
    return str(path) if path.is_absolute() else f"./{path}"


_NERDCTL_DEFAULT: Final = f"{_AGENT_DEFAULTS.nerdctl} on PATH"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Node agent of the vectorlay GPU cloud.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser("check", help="probe this host (hardware, GPUs, dependencies)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument(
        "--data-path", metavar="DIR", help=_env("VECTORLAY_DATA_PATH", DEFAULT_DATA_PATH)
    )
    check.add_argument(
        "--nerdctl", metavar="PATH", help=_env("VECTORLAY_NERDCTL", _NERDCTL_DEFAULT)
    )
    _disk_args(check)
    _common(check)

    run = sub.add_parser("run", help="run the agent daemon")
    run.add_argument(
        "--control-plane",
        metavar="URL",
        help="VECTORLAY_CONTROL_PLANE_URL; needed to register, afterwards node.json has it",
    )
    run.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the org token (or VECTORLAY_ORG_TOKEN, the token itself); "
        "needed to register only",
    )
    run.add_argument(
        "--state-dir", metavar="DIR", help=_env("VECTORLAY_STATE_DIR", DEFAULT_STATE_DIR)
    )
    run.add_argument(
        "--data-path", metavar="DIR", help=_env("VECTORLAY_DATA_PATH", DEFAULT_DATA_PATH)
    )
    run.add_argument(
        "--heartbeat-interval",
        metavar="S",
        help=_env("VECTORLAY_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL),
    )
    run.add_argument(
        "--reconnect-delay",
        metavar="S",
        help=_env("VECTORLAY_RECONNECT_DELAY", DEFAULT_RECONNECT_DELAY)
        + " (first retry; jittered backoff after)",
    )
    run.add_argument(
        "--oci-runtime", metavar="NAME", help=_env("VECTORLAY_OCI_RUNTIME", DEFAULT_OCI_RUNTIME)
    )
    run.add_argument("--nerdctl", metavar="PATH", help=_env("VECTORLAY_NERDCTL", _NERDCTL_DEFAULT))
    run.add_argument(
        "--ca-file", metavar="PATH", help=_env("VECTORLAY_CA_FILE", "the system trust store")
    )
    run.add_argument("--insecure", action="store_true", help="allow ws:// to a non-loopback host")
    run.add_argument(
        "--stop-timeout",
        metavar="S",
        help=_env("VECTORLAY_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT) + " (grace before SIGKILL)",
    )
    _disk_args(run)
    run.add_argument(
        "--metrics-textfile",
        metavar="PATH",
        help="VECTORLAY_METRICS_TEXTFILE; default none (Prometheus text for node_exporter)",
    )
    _common(run)

    status = sub.add_parser("status", help="what the running agent on this node is doing")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--state-dir", metavar="DIR", help=_env("VECTORLAY_STATE_DIR", DEFAULT_STATE_DIR)
    )
    _common(status)

    cp = sub.add_parser("control-plane", help="run the reference control plane")
    cp.add_argument(
        "--listen", metavar="HOST:PORT", help=_env("VECTORLAY_CP_LISTEN", DEFAULT_CP_LISTEN)
    )
    cp.add_argument(
        "--db", metavar="PATH", help=_env("VECTORLAY_CP_DB", _shown_path(DEFAULT_CP_DB))
    )
    cp.add_argument(
        "--org-token-file",
        metavar="PATH",
        help="one token per line (or VECTORLAY_CP_ORG_TOKENS, comma-separated); "
        "default none: registration refused",
    )
    cp.add_argument(
        "--admin-token-file",
        metavar="PATH",
        help="one token per line (or VECTORLAY_CP_ADMIN_TOKEN); default none: admin API refused",
    )
    cp.add_argument(
        "--offline-after",
        metavar="S",
        help=_env("VECTORLAY_CP_OFFLINE_AFTER", DEFAULT_OFFLINE_AFTER),
    )
    _common(cp)
    return parser


def _disk_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image-store",
        metavar="DIR",
        help="VECTORLAY_IMAGE_STORE; default the engine's (/var/lib/containerd for nerdctl)",
    )
    p.add_argument(
        "--min-free-gb",
        metavar="N",
        help=_env("VECTORLAY_MIN_FREE_GB", DEFAULT_MIN_FREE_GB) + " (disk is not ok below it)",
    )


def _disk_settings(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "image_store": _value(args.image_store, env, "VECTORLAY_IMAGE_STORE", None, _path),
        "min_free_gb": _value(
            args.min_free_gb, env, "VECTORLAY_MIN_FREE_GB", DEFAULT_MIN_FREE_GB, _nonneg_int
        ),
    }


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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend", metavar="asyncio|trio", help=_env("VECTORLAY_BACKEND", _AGENT_DEFAULTS.backend)
    )
    p.add_argument(
        "--log-format", metavar="text|json", help=_env("VECTORLAY_LOG_FORMAT", _LOG_DEFAULTS.format)
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (or warn); "
        + _env("VECTORLAY_LOG_LEVEL", _LOG_DEFAULTS.level),
    )


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
            args.log_format, env, "VECTORLAY_LOG_FORMAT", _LOG_DEFAULTS.format, _choice(LOG_FORMATS)
        ),
        level=_value(args.log_level, env, "VECTORLAY_LOG_LEVEL", _LOG_DEFAULTS.level, _log_level),
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
    return _value(
        args.backend, env, "VECTORLAY_BACKEND", _AGENT_DEFAULTS.backend, _choice(BACKENDS)
    )


def check_settings(args: argparse.Namespace, env: Mapping[str, str]) -> CheckSettings:
    return CheckSettings(
        json=bool(args.json),
        data_path=_value(args.data_path, env, "VECTORLAY_DATA_PATH", DEFAULT_DATA_PATH, _path),
        nerdctl=_value(args.nerdctl, env, "VECTORLAY_NERDCTL", _AGENT_DEFAULTS.nerdctl, _text),
        backend=_backend(args, env),
        log=_log_settings(args, env),
        **_disk_settings(args, env),
    )


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
            args.oci_runtime, env, "VECTORLAY_OCI_RUNTIME", DEFAULT_OCI_RUNTIME, _text
        ),
        nerdctl=_value(args.nerdctl, env, "VECTORLAY_NERDCTL", _AGENT_DEFAULTS.nerdctl, _text),
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
        **_disk_settings(args, env),
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


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


# Secrets read from the environment are dropped from it once read, so that
# no subprocess the agent runs (lspci, nerdctl, ...) inherits them.
_SECRET_ENV: Final = ("VECTORLAY_ORG_TOKEN", "VECTORLAY_CP_ORG_TOKENS", "VECTORLAY_CP_ADMIN_TOKEN")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    notes: Notes = []
    try:
        settings: CheckSettings | AgentSettings | ControlPlaneSettings | StatusSettings
        if args.command == "check":
            settings = check_settings(args, environ)
        elif args.command == "status":
            settings = status_settings(args, environ)
        elif args.command == "run":
            settings = agent_settings(args, environ, notes)
        else:
            settings = control_plane_settings(args, environ, notes)
    except UsageError as exc:
        _fail(str(exc))
    if env is None:
        for name in _SECRET_ENV:
            os.environ.pop(name, None)
    problem = missing_backend(settings.backend, PROG)
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log.format, settings.log.level)
    for level, message in notes:
        _log.log(level, message)
    try:
        return _dispatch(settings)
    except KeyboardInterrupt:
        return 130


def _dispatch(
    settings: CheckSettings | AgentSettings | ControlPlaneSettings | StatusSettings,
) -> int:
    # Each command imports only what it needs: `check` never loads httpx.
    if isinstance(settings, StatusSettings):
        from vectorlay.app.agent.status import main as status_main

        return status_main(settings)
    if isinstance(settings, CheckSettings):
        from vectorlay.app.agent.check import main as check_main

        return check_main(settings)
    if isinstance(settings, AgentSettings):
        from vectorlay.app.agent.bootstrap import main as agent_main

        return agent_main(settings)
    from vectorlay.app.controlplane.bootstrap import main as cp_main

    return cp_main(settings)
