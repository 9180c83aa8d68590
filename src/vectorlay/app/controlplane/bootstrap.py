"""``vectorlay-agent control-plane``: the reference control plane as a process.

A reference and development peer for the agent (conformance tests, local
trials), not a fleet-scale service: one process, one SQLite file.  See
``docs/controlplane.md``.  Its server libraries (h11, wsproto) come with the
``vectorlay[controlplane]`` extra and are imported only here, never by the
agent.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from vectorlay.app.backends import missing_backend
from vectorlay.app.settings import ControlPlaneSettings
from vectorlay.errors import StoreError

if TYPE_CHECKING:
    from vectorlay.app.controlplane.server import ControlPlane, ControlPlaneConfig

log = logging.getLogger("vectorlay.controlplane")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
PROG = "vectorlay-agent"


def main(settings: ControlPlaneSettings) -> int:
    missing = missing_backend(settings.backend, PROG)
    if missing is not None:
        print(missing, file=sys.stderr)
        return EXIT_USAGE
    try:
        import h11  # noqa: F401
        import wsproto  # noqa: F401
    except ImportError as exc:
        print(
            f"{PROG}: error: the control plane needs {exc.name}: "
            "pip install 'vectorlay[controlplane]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return anyio.run(run, settings, backend=settings.backend)


async def run(settings: ControlPlaneSettings) -> int:
    """Serve until SIGINT/SIGTERM; 0 after a signal, 1 when it cannot start."""
    from vectorlay.adapters.clock import SystemClock
    from vectorlay.adapters.controlplane.sqlite_store import SqliteFleetStore
    from vectorlay.app.controlplane.server import ControlPlane

    try:
        store = SqliteFleetStore(settings.db)
    except StoreError as exc:
        log.error("cannot open the control-plane store: %s", exc)
        return EXIT_FAILED
    cp = ControlPlane(store, config_from(settings), SystemClock())
    if not settings.org_tokens:
        log.warning("no org token configured: agents cannot register (VECTORLAY_CP_ORG_TOKENS)")
    if not settings.admin_tokens:
        log.warning("no admin token configured: the admin API refuses every request")
    failure: str | None = None
    try:
        await cp.load()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, cp, tg.cancel_scope)
            try:
                await tg.start(_serve, cp, settings, tg.cancel_scope)
            except OSError as exc:
                failure = f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
                tg.cancel_scope.cancel()
    except* StoreError as group:
        failure = f"control-plane store failed: {group.exceptions[0]}"
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()
    if failure is not None:
        log.error("%s", failure)
        return EXIT_FAILED
    log.info("control plane stopped")
    return EXIT_OK


def config_from(settings: ControlPlaneSettings) -> ControlPlaneConfig:
    from vectorlay.app.controlplane.server import ControlPlaneConfig

    return ControlPlaneConfig(
        org_tokens=settings.org_tokens,
        admin_tokens=settings.admin_tokens,
        offline_after=settings.offline_after,
    )


async def _serve(
    cp: ControlPlane,
    settings: ControlPlaneSettings,
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve; once serving ends (after a graceful shutdown), stop the signal watcher too."""
    await cp.serve(settings.host, settings.port, task_status=task_status)
    scope.cancel()


async def _stop_on_signal(cp: ControlPlane, scope: anyio.CancelScope) -> None:
    """First signal: close sessions (1001) and stop; a second one stops at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if cp.shutting_down:
                scope.cancel()
                return
            log.info("stopping on %s", signal.Signals(signum).name)
            cp.shutdown()
