"""``vectorlay-agent``: parse flags and environment, configure logging, run.

Every setting is a flag and an environment variable; the flag wins (the
values are resolved in :mod:`vectorlay.app.options`).  Tokens are read from
files or the environment, never from argv (argv is world-readable in
``/proc``).  Exit status: 0 success/ready, 1 failure or degraded, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from vectorlay import __version__
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
from vectorlay.app.backends import missing_backend
from vectorlay.app.options import (
    AGENT_DEFAULTS,
    LOG_DEFAULTS,
    LOG_LEVELS,
    Notes,
    UsageError,
    agent_settings,
    check_settings,
    control_plane_settings,
    prepare_gpus_settings,
    status_settings,
)
from vectorlay.app.settings import (
    DEFAULT_CP_DB,
    DEFAULT_CP_LISTEN,
    ControlPlaneSettings,
)
from vectorlay.domain.agent.disk import DEFAULT_MIN_FREE_GB
from vectorlay.domain.agent.heartbeat import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_RECONNECT_DELAY
from vectorlay.domain.liveness import DEFAULT_OFFLINE_AFTER

PROG = "vectorlay-agent"
EXIT_USAGE = 2

_log = logging.getLogger("vectorlay.cli")


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
            if "--token" in names:
                # argv is world-readable in /proc: the token itself never goes there.
                message += (
                    " (the org token is never taken on the command line: use "
                    "--token-file PATH or the VECTORLAY_ORG_TOKEN environment variable)"
                )
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


_ENGINE_CLI_HELP: Final = (
    "VECTORLAY_ENGINE_CLI (alias --nerdctl, VECTORLAY_NERDCTL); default the engine's name on PATH"
)
_OCI_RUNTIME_HELP: Final = "VECTORLAY_OCI_RUNTIME; default " + ", ".join(
    f"{runtime} ({engine})" for engine, runtime in DEFAULT_OCI_RUNTIMES.items()
)


def _engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        metavar="|".join(ENGINES),
        help=_env("VECTORLAY_ENGINE", AGENT_DEFAULTS.engine),
    )
    p.add_argument(
        "--engine-cli", "--nerdctl", dest="engine_cli", metavar="PATH", help=_ENGINE_CLI_HELP
    )


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
    _engine_flags(check)
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
    run.add_argument("--oci-runtime", metavar="NAME", help=_OCI_RUNTIME_HELP)
    _engine_flags(run)
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

    _prepare_gpus_parser(sub)

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


def _prepare_gpus_parser(sub: Any) -> None:
    prep = sub.add_parser(
        "prepare-gpus",
        help="bind GPUs and their IOMMU-group siblings to vfio-pci (plan only without --apply)",
    )
    prep.add_argument("--apply", action="store_true", help="do the binds (as root)")
    prep.add_argument(
        "--persist", action="store_true", help="install a systemd unit that binds at every boot"
    )
    prep.add_argument("--json", action="store_true", help="print one JSON object")
    prep.add_argument(
        "--gpu",
        metavar="ADDR",
        action="append",
        default=[],
        help="only this GPU and its group (repeatable); how a GPU on a host driver or "
        "driving the console is included",
    )
    prep.add_argument(
        "--root", metavar="DIR", help="with --persist: install the unit under DIR (default /)"
    )
    _common(prep)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend", metavar="asyncio|trio", help=_env("VECTORLAY_BACKEND", AGENT_DEFAULTS.backend)
    )
    p.add_argument(
        "--log-format", metavar="text|json", help=_env("VECTORLAY_LOG_FORMAT", LOG_DEFAULTS.format)
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (or warn); "
        + _env("VECTORLAY_LOG_LEVEL", LOG_DEFAULTS.level),
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
        settings: (
            CheckSettings
            | AgentSettings
            | ControlPlaneSettings
            | PrepareGpusSettings
            | StatusSettings
        )
        if args.command == "check":
            settings = check_settings(args, environ)
        elif args.command == "prepare-gpus":
            settings = prepare_gpus_settings(args, environ)
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


def entry() -> NoReturn:
    """The program: :func:`main`, then exit without the interpreter's teardown.

    Once a command has returned there is nothing left to do, but freeing the
    heap of every module a run loaded (httpx, ssl, anyio, msgspec, ...) took
    100-200 ms after "agent stopped" on a quiet 2-core machine, and more on a
    loaded one.  Exit handlers still run and every log and output stream is
    flushed; only that teardown is skipped.
    """
    code = main()  # usage errors leave through SystemExit, as ever
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _dispatch(
    settings: (
        CheckSettings | AgentSettings | ControlPlaneSettings | PrepareGpusSettings | StatusSettings
    ),
) -> int:
    # Each command imports only what it needs: `check` never loads httpx.
    if isinstance(settings, PrepareGpusSettings):
        from vectorlay.app.agent.prepare_gpus import main as prepare_gpus_main

        return prepare_gpus_main(settings)
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
