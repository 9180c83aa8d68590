"""Settings the shared command line builds for every program but the agent's.

:class:`LogSettings` for every command, and the reference control plane's
settings (``control-plane``), here rather than in the control plane's package
so that parsing a command line never loads that package into the agent's
process.  The agent's settings need its adapters' defaults (the engines) and
live in :mod:`vectorlay.app.agent.settings`.  Secrets (org and admin tokens)
are held here after being read; the reprs never show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vectorlay.domain.liveness import DEFAULT_OFFLINE_AFTER


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"  # "text" | "json"
    level: str = "info"


DEFAULT_CP_LISTEN = "127.0.0.1:8787"
DEFAULT_CP_DB = Path("vectorlay-cp.sqlite3")


@dataclass(frozen=True)
class ControlPlaneSettings:
    host: str = "127.0.0.1"
    port: int = 8787
    db: Path = DEFAULT_CP_DB
    org_tokens: tuple[str, ...] = field(default=(), repr=False)
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    offline_after: float = DEFAULT_OFFLINE_AFTER
    backend: str = "asyncio"
    log: LogSettings = field(default_factory=LogSettings)
