"""The agent service: :class:`Agent` ties the parts of a running agent together.

Life of the process::

    load node.json ─┬─ found ──────────────► connect with node token
                    └─ none + org token ──► connect, register, save node.json
    before the first session: probe the host, adopt the containers running
    every session:  system_info → outbox → heartbeats + commands
    session ends:   backoff (first retry after the reconnect delay), again

The parts, one module each: who the node is (:mod:`.registration`), the
sessions and their reconnection (:mod:`.sessions`), deploy and stop with the
outbox (:mod:`.commands`), heartbeats (:mod:`.heartbeats`), the host and its
containers kept current (:mod:`.sync`).  Every decision they act on comes
from the domain (``ReplicaTable`` for deploy/stop, ``domain.agent`` for
timing, refusals, framing and the session's phases).  The real adapters are
chosen in :mod:`.bootstrap`.

Commands and the runtime watch run in the agent's own task group, not a
session's: a deploy that is half-way when the connection drops still
finishes, and its result waits in the outbox for the next session.
Containers are never stopped because the control plane went away.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator

import anyio

from vectorlay.app.agent.commands import CommandRunner, Outbox
from vectorlay.app.agent.config import EXIT_OK, AgentConfig
from vectorlay.app.agent.diskwatch import DiskWatch
from vectorlay.app.agent.heartbeats import Heartbeats
from vectorlay.app.agent.imagegc import ImageCollector
from vectorlay.app.agent.registration import load_identity
from vectorlay.app.agent.sessions import SessionLoop
from vectorlay.app.agent.statusboard import StatusBoard
from vectorlay.app.agent.sync import ConflictLog, ForeignLog, HostState, RuntimeSync
from vectorlay.domain.agent.heartbeat import HeartbeatPolicy, ReconnectPolicy, backoff
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.imagegc import normalize_ref
from vectorlay.domain.agent.replicas import ReplicaTable
from vectorlay.errors import FatalError
from vectorlay.ports import (
    Clock,
    ConfigStore,
    DeployRecord,
    DiskProbe,
    HardwareProbe,
    ImageRuntime,
    Runtime,
    Transport,
)

log = logging.getLogger("vectorlay.agent")


class Agent:
    """The node agent, on any set of adapters (real ones, or ``adapters.memory``)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: Transport,
        runtime: Runtime,
        probe: HardwareProbe,
        store: ConfigStore,
        clock: Clock,
        rand: Callable[[], float] | None = None,
        disk: DiskProbe | None = None,
        images: ImageRuntime | None = None,
        record: DeployRecord | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.runtime = runtime
        self.probe = probe
        self.store = store
        self.clock = clock
        self.disk = disk  # the image store's free space, re-read every heartbeat interval
        self.images = images  # for image garbage collection (with disk and record)
        self.record = record  # when each image was last deployed
        # Read whenever a backoff sequence starts afresh, so it may be swapped while running.
        self.rand = rand or random.Random().random
        self.heartbeat_policy = HeartbeatPolicy(interval=config.heartbeat_interval)
        self.reconnect_policy = ReconnectPolicy(
            first_delay=config.reconnect_delay,
            cap=max(config.reconnect_cap, config.reconnect_delay),
        )
        self.table = ReplicaTable()
        self.outbox = Outbox(config.outbox_size)
        self.sessions = 0  # sessions that connected, for the life of the process
        self._stop_requested = anyio.Event()
        self.board: StatusBoard | None = None  # set while running
        self.collector: ImageCollector | None = None  # set while running, with images

    async def run(self) -> int:
        """Run until :meth:`request_stop` (returns 0) or a fatal error (non-zero)."""
        try:
            identity = await load_identity(self.store, self.config)
        except FatalError as exc:
            log.error("%s", exc)
            return exc.exit_code
        if isinstance(identity, NodeConfig):
            # Only containers labelled with this id (or none) are this agent's.
            self.table.node_id = identity.node_id
        async with anyio.create_task_group() as tasks:
            host = await HostState.probed(self.probe, self.table, self.clock)
            board = self.board = StatusBoard(
                clock=self.clock,
                interval=self.config.heartbeat_interval,
                table=self.table,
                outbox=self.outbox,
                control_plane_url=None,
                node_id=identity.node_id if isinstance(identity, NodeConfig) else None,
                status_path=self.config.status_file,
                metrics_path=self.config.metrics_textfile,
            )
            board.host = host
            host.listeners.append(board.touch)
            conflicts = ConflictLog(self.table, ForeignLog(self.table, host.recheck_gpus))
            heartbeats = Heartbeats(
                tasks,
                probe=self.probe,
                host=host,
                table=self.table,
                clock=self.clock,
                policy=self.heartbeat_policy,
                metrics_wait=self.config.metrics_wait,
            )
            board.heartbeats = heartbeats

            def changed() -> None:
                heartbeats.soon()
                board.touch()

            runner = CommandRunner(
                tasks,
                runtime=self.runtime,
                table=self.table,
                host=host,
                conflicts=conflicts,
                outbox=self.outbox,
                stopping=self._stop_requested,
                done=changed,
                max_concurrent=self.config.max_concurrent_commands,
                stop_timeout=self.config.stop_timeout,
                deployed=self._deployed,
                stopped=self._replica_stopped,
            )
            sync = RuntimeSync(
                runtime=self.runtime,
                table=self.table,
                clock=self.clock,
                conflicts=conflicts,
                busy=runner.busy,
                changed=changed,
                resync_interval=self.config.resync_interval,
                retry_delay=self.config.reconnect_delay or 1.0,
            )
            await sync.refresh(adopting=True)
            if replicas := self.table.replicas():
                log.info(
                    "adopted %d existing replica(s): %s",
                    len(replicas),
                    ", ".join(r.replica_id for r in replicas),
                )
            sessions = SessionLoop(
                self.config,
                identity,
                transport=self.transport,
                store=self.store,
                clock=self.clock,
                host=host,
                table=self.table,
                sync=sync,
                runner=runner,
                outbox=self.outbox,
                heartbeats=heartbeats,
                stopping=self._stop_requested,
                backoff=self._backoff,
                opened=self._count_session,
                board=board,
            )
            board.set_url(sessions.url)
            if self.disk is not None:
                watch = DiskWatch(
                    self.disk,
                    host=host,
                    clock=self.clock,
                    interval=self.config.heartbeat_interval,
                    ready_changed=sessions.send_system_info,
                )
                watch.readers.append(board.disk_read)
                if self.images is not None and self.record is not None:
                    self.collector = ImageCollector(
                        self.images,
                        self.disk,
                        table=self.table,
                        pulling=runner.pulling,
                        record=self.record,
                        clock=self.clock,
                        after=watch.read_safely,
                        counted=board.images_collected,
                    )
                    watch.readers.append(self.collector.disk_read)
                    tasks.start_soon(self.collector.run)
                # The first system_info already carries the disk.
                await watch.read_safely()
                tasks.start_soon(watch.follow)
            if self.config.status_file is not None or self.config.metrics_textfile is not None:
                tasks.start_soon(board.run)
            tasks.start_soon(sync.watch)
            tasks.start_soon(sessions.abandon_dial_on_stop)
            try:
                exit_code = await sessions.run()
                if exit_code == EXIT_OK:
                    # Stopped: operations under way get a moment to finish
                    # rather than being cut off half-way.
                    await runner.until_idle(self.config.shutdown_grace)
            finally:
                runner.warn_unfinished()
                tasks.cancel_scope.cancel()
        return exit_code

    def request_stop(self) -> None:
        """Ask the agent to close its session (1001) and return; containers keep running.

        New deploys are refused from now on.  A handshake still under way is
        given up at once.
        """
        self._stop_requested.set()

    def _deployed(self, outcome: str, image: str) -> None:
        if self.board is not None:
            self.board.deployed(outcome, image)
        if self.record is not None:
            self.record.deployed(normalize_ref(image), self.clock.now())

    def _replica_stopped(self) -> None:
        if self.collector is not None:
            self.collector.replica_stopped()

    def _backoff(self) -> Iterator[float]:
        return backoff(self.reconnect_policy, self.rand)

    def _count_session(self) -> None:
        self.sessions += 1
