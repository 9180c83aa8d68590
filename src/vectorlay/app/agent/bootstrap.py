"""``vectorlay-agent run``: the real adapters, chosen and wired in one place, signals, one loop."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import anyio

from vectorlay import __version__
from vectorlay.app.agent.config import EXIT_CONFIG, AgentConfig
from vectorlay.app.agent.registration import load_identity
from vectorlay.app.agent.service import Agent
from vectorlay.app.agent.settings import AgentSettings
from vectorlay.app.agent.statusboard import STATUS_FILE_NAME
from vectorlay.domain.agent.heartbeat import HeartbeatPolicy
from vectorlay.errors import ConfigError, FatalError, InsecureURL

log = logging.getLogger("vectorlay.agent")


def main(settings: AgentSettings) -> int:
    """``vectorlay-agent run``: real adapters, signals, one event loop."""
    if settings.backend == "asyncio":
        _keep_trio_out()
    return anyio.run(_main, settings, backend=settings.backend)


def _keep_trio_out() -> None:
    """Stop httpcore from importing trio just because it is installed.

    httpcore probes ``import trio`` at import time; on the asyncio backend
    that costs about 4 MB of RSS and 100 ms of start-up for nothing.  A
    ``None`` entry in ``sys.modules`` makes that import fail as if trio were
    absent.
    """
    if "trio" not in sys.modules:
        sys.modules["trio"] = None  # type: ignore[assignment]


def build_agent(settings: AgentSettings) -> Agent:
    """The one place where the real adapters are chosen and wired."""
    # Imported here so that library users of Agent on in-memory adapters do
    # not pay for httpx, psutil and friends.
    from vectorlay.adapters.clock import SystemClock
    from vectorlay.adapters.deployrecord import RECORD_FILE_NAME, FileDeployRecord
    from vectorlay.adapters.filesystem import FileConfigStore
    from vectorlay.adapters.probe.host import HostProbe
    from vectorlay.adapters.runtime import EngineRuntime
    from vectorlay.adapters.runtime.images import NerdctlImages
    from vectorlay.adapters.transport import WebSocketTransport, check_url

    if settings.control_plane_url:
        check_url(settings.control_plane_url, insecure=settings.insecure)
    _ensure_private_dir(settings.state_dir)
    policy = HeartbeatPolicy(interval=settings.heartbeat_interval)
    probe = HostProbe(
        data_path=settings.data_path,
        engine=settings.engine,
        engine_cli=settings.engine_cli,
        image_store=settings.image_store,
        min_free_gb=settings.min_free_gb,
    )
    return Agent(
        agent_config(settings),
        transport=WebSocketTransport(
            user_agent=f"vectorlay-agent/{__version__}",
            ca_file=settings.ca_file,
            insecure=settings.insecure,
            ping_after=policy.ping_after,
            pong_timeout=policy.pong_timeout,
        ),
        runtime=EngineRuntime(
            engine=settings.engine,
            cli=settings.engine_cli,
            oci_runtime=settings.oci_runtime,
            env_dir=settings.state_dir / "env",
        ),
        probe=probe,
        store=FileConfigStore(settings.state_dir),
        clock=SystemClock(),
        disk=probe,
        images=NerdctlImages(nerdctl=settings.engine_cli, engine=settings.engine),
        record=FileDeployRecord(settings.state_dir / RECORD_FILE_NAME),
    )


def agent_config(settings: AgentSettings) -> AgentConfig:
    return AgentConfig(
        control_plane_url=settings.control_plane_url,
        org_token=settings.org_token,
        heartbeat_interval=settings.heartbeat_interval,
        reconnect_delay=settings.reconnect_delay,
        stop_timeout=settings.stop_timeout,
        status_file=settings.state_dir / STATUS_FILE_NAME,
        metrics_textfile=settings.metrics_textfile,
    )


async def _identity_problem(settings: AgentSettings) -> FatalError | None:
    """Why the agent could never start (no node.json and nothing to register with), if so.

    Asked before any adapter is built, so that such a configuration error
    leaves nothing behind in the state directory (no ``env/``).
    """
    from vectorlay.adapters.filesystem import FileConfigStore

    try:
        await load_identity(FileConfigStore(settings.state_dir), agent_config(settings))
    except FatalError as exc:
        return exc
    return None


def _ensure_private_dir(path: Path) -> None:
    """Create the state dir 0700 before any adapter creates something inside it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the state dir {path}: {exc.strerror}") from None
    if path.stat().st_mode & 0o077:
        log.warning("state dir %s is accessible to other users; it should be mode 0700", path)


async def _main(settings: AgentSettings) -> int:
    problem = await _identity_problem(settings)
    if problem is not None:
        log.error("%s", problem)
        return problem.exit_code
    try:
        agent = build_agent(settings)
    except (InsecureURL, ConfigError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, agent)
        code = await agent.run()
        tg.cancel_scope.cancel()
    if code != EXIT_CONFIG:  # a usage error stays the one line that says what to set
        log.info("agent stopped (exit status %d); containers left running", code)
    return code


async def _stop_on_signal(agent: Agent) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s received: closing the session and exiting", signal.Signals(signum).name)
            agent.request_stop()
