"""What the agent service is told (:class:`AgentConfig`) and the exit statuses it answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
# The control plane rejected the credential: a restart cannot help, so the
# systemd unit lists this status in RestartPreventExitStatus.
EXIT_UNAUTHORIZED: Final = 3


@dataclass(frozen=True)
class AgentConfig:
    control_plane_url: str | None = None
    org_token: str | None = field(default=None, repr=False)
    heartbeat_interval: float = 30.0
    reconnect_delay: float = 5.0
    reconnect_cap: float = 60.0
    stop_timeout: float = 30.0
    outbox_size: int = 1000
    max_concurrent_commands: int = 4
    registration_timeout: float = 30.0
    # How often the replica table is re-read from the runtime even when the
    # runtime reported no change (a safety net; exits arrive through changes()).
    resync_interval: float = 300.0
    # On shutdown, in-flight commands get this long to finish (their results
    # still go out on the open session) before the session is closed.
    shutdown_grace: float = 2.5
    # Dependencies are probed again this often during a session; a change of
    # readiness is reported with a fresh system_info.
    reprobe_interval: float = 300.0
    # A probe younger than this is reused when a session opens.
    probe_reuse: float = 10.0
    # A heartbeat waits this long for fresh host metrics, then goes out with
    # the last ones (never longer than a quarter of the interval).
    metrics_wait: float = 2.0
    # Listing containers before system_info may take this long at most;
    # after that the table as it stands is reported.
    open_refresh_timeout: float = 5.0
    # Kept current for `vectorlay-agent status`; none: not written.
    status_file: Path | None = None
    # Prometheus text for node_exporter's textfile collector; none: not written.
    metrics_textfile: Path | None = None
