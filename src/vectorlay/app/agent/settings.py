"""Typed settings of the agent's commands (``run``, ``check``, ``status``, ``prepare-gpus``).

Filled by :mod:`vectorlay.app.options`.  The org token is held here after
being read from a file or the environment; the reprs never show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vectorlay.adapters.runtime.engines import DEFAULT_ENGINE, default_oci_runtime
from vectorlay.app.settings import LogSettings
from vectorlay.domain.agent.disk import DEFAULT_MIN_FREE_GB
from vectorlay.domain.agent.heartbeat import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_RECONNECT_DELAY

DEFAULT_STATE_DIR = Path("/var/lib/vectorlay")
DEFAULT_DATA_PATH = Path("/data")
DEFAULT_STOP_TIMEOUT = 30.0
DEFAULT_OCI_RUNTIME = default_oci_runtime(DEFAULT_ENGINE)


@dataclass(frozen=True)
class CheckSettings:
    json: bool = False
    data_path: Path = DEFAULT_DATA_PATH
    engine: str = DEFAULT_ENGINE
    # The engine's command: its name on PATH unless --engine-cli says otherwise.
    engine_cli: str = DEFAULT_ENGINE
    backend: str = "asyncio"
    log: LogSettings = field(default_factory=LogSettings)
    image_store: Path | None = None  # None: the engine's own
    min_free_gb: int = DEFAULT_MIN_FREE_GB


@dataclass(frozen=True)
class StatusSettings:
    json: bool = False
    state_dir: Path = DEFAULT_STATE_DIR
    log: LogSettings = field(default_factory=LogSettings)
    backend: str = "asyncio"


@dataclass(frozen=True)
class AgentSettings:
    control_plane_url: str | None = None
    org_token: str | None = field(default=None, repr=False)
    state_dir: Path = DEFAULT_STATE_DIR
    data_path: Path = DEFAULT_DATA_PATH
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    reconnect_delay: float = DEFAULT_RECONNECT_DELAY
    oci_runtime: str = DEFAULT_OCI_RUNTIME
    engine: str = DEFAULT_ENGINE
    engine_cli: str = DEFAULT_ENGINE
    ca_file: Path | None = None
    insecure: bool = False
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    backend: str = "asyncio"
    log: LogSettings = field(default_factory=LogSettings)
    image_store: Path | None = None  # None: the engine's own
    min_free_gb: int = DEFAULT_MIN_FREE_GB
    metrics_textfile: Path | None = None


@dataclass(frozen=True)
class PrepareGpusSettings:
    apply: bool = False
    persist: bool = False
    json: bool = False
    gpus: tuple[str, ...] = ()  # normalized PCI addresses named with --gpu; () = every GPU
    root: Path | None = None  # --root: where --persist installs the unit (default /)
    backend: str = "asyncio"
    log: LogSettings = field(default_factory=LogSettings)
