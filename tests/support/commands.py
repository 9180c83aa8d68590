"""The command lines and environments of `vectorlay-agent run` and `control-plane` in tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.fakes.host.fakehost import FakeHost
from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl


def vectorlay_argv(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "vectorlay", command, *args]


def agent_argv(
    url: str,
    *,
    state_dir: Path,
    nerdctl: FakeNerdctl,
    data_path: Path | None = None,
    interval: float = 1.0,
    reconnect: float = 0.2,
    stop_timeout: float = 1.0,
    log_level: str = "debug",
    extra: Sequence[str] = (),
) -> list[str]:
    """`vectorlay-agent run` with the short intervals tests use."""
    argv = vectorlay_argv(
        "run",
        "--control-plane",
        url,
        "--state-dir",
        str(state_dir),
        "--nerdctl",
        str(nerdctl.executable),
        "--heartbeat-interval",
        f"{interval:g}",
        "--reconnect-delay",
        f"{reconnect:g}",
        "--stop-timeout",
        f"{stop_timeout:g}",
        "--log-level",
        log_level,
    )
    if data_path is not None:
        argv += ["--data-path", str(data_path)]
    return [*argv, *extra]


def agent_env(
    host: FakeHost, nerdctl: FakeNerdctl, *, org_token: str | None = None
) -> dict[str, str]:
    """An agent's environment on a fake host: fake programs first on PATH."""
    env = {
        **host.env({}),
        **nerdctl.environ(),
        "PATH": os.pathsep.join(
            [str(host.bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
        ),
    }
    if os.environ.get("PYTHONPATH"):  # a checkout other than the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if org_token is not None:
        env["VECTORLAY_ORG_TOKEN"] = org_token
    return env


def control_plane_argv(
    port: int,
    db: Path,
    *,
    offline_after: float = 60.0,
    backend: str | None = None,
    log_level: str = "debug",
) -> list[str]:
    argv = vectorlay_argv(
        "control-plane",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        str(db),
        "--offline-after",
        f"{offline_after:g}",
        "--log-level",
        log_level,
    )
    return argv + (["--backend", backend] if backend else [])


def control_plane_env(org_tokens: str, admin_token: str) -> dict[str, str]:
    env: Mapping[str, str] = os.environ
    return {
        **env,
        "VECTORLAY_CP_ORG_TOKENS": org_tokens,
        "VECTORLAY_CP_ADMIN_TOKEN": admin_token,
    }
