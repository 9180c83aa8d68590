"""Deploy and stop: the command runner, and the outbox that carries results out.

Commands for one replica run in arrival order; different replicas proceed
side by side, a few runtime operations at a time.  Commands run in the
agent's task group, not a session's: a deploy that is half-way when the
connection drops still finishes, and its result waits in the outbox for the
next session.  Containers are never stopped because the control plane went
away.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

import anyio
import anyio.abc

from vectorlay.app.agent.sync import ConflictLog, HostState
from vectorlay.domain.agent.refusals import deploy_refusal
from vectorlay.domain.agent.replicas import (
    ContainerState,
    ReplicaTable,
    ReportResult,
    StartContainer,
    StopContainer,
)
from vectorlay.domain.agent.session import Phase, takes_results
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    DeployResult,
    Message,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopResult,
)
from vectorlay.errors import (
    ContainerRuntimeError,
    ImageNotFound,
    NameInUse,
    SnapshotterUnavailable,
    TransportError,
    UnsupportedEnvValue,
)
from vectorlay.ports import Runtime

log = logging.getLogger("vectorlay.agent")

Command = Deploy | Stop


class Link(Protocol):
    """A connected session, as the outbox sees it."""

    @property
    def phase(self) -> Phase: ...

    async def send(self, message: Message) -> None: ...


class Outbox:
    """Results on their way out: sent at once on a session that takes them, else kept.

    At most ``size`` results are kept for the next session; when full, the
    oldest is dropped (and counted in :attr:`dropped`).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.dropped = 0
        self.sent = 0  # results sent, for the life of the process
        self._kept: deque[Message] = deque()
        self._link: Link | None = None  # the connected session, if any

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._kept)

    def attach(self, link: Link) -> None:
        """Results go to ``link`` from now on, once its phase takes them."""
        self._link = link

    def detach(self) -> None:
        self._link = None

    async def deliver(self, message: Message) -> None:
        """Send a result now, or keep it for the next session."""
        link = self._link
        if link is not None and takes_results(link.phase):
            try:
                await link.send(message)
                self.sent += 1
                return
            except TransportError:
                pass  # the session's reader sees the same failure and ends it
        if len(self._kept) >= self.size:
            self._kept.popleft()
            self.dropped += 1
            log.warning("outbox full (%d): dropped the oldest result", self.size)
        self._kept.append(message)

    async def flush(self, send: Callable[[Message], Awaitable[None]]) -> None:
        """Send every kept result, oldest first; one that fails to go out stays first."""
        while self._kept:
            # Taken out before sending: deliver() may drop the oldest meanwhile.
            message = self._kept.popleft()
            try:
                await send(message)
            except BaseException:
                self._kept.appendleft(message)
                raise
            self.sent += 1


class CommandRunner:
    """Carries out deploy and stop commands, each replica's in arrival order."""

    def __init__(
        self,
        tasks: anyio.abc.TaskGroup,
        *,
        runtime: Runtime,
        table: ReplicaTable,
        host: HostState,
        conflicts: ConflictLog,
        outbox: Outbox,
        stopping: anyio.Event,
        done: Callable[[], None],
        max_concurrent: int,
        stop_timeout: float,
        deployed: Callable[[str, str], None] | None = None,
        stopped: Callable[[], None] | None = None,
    ) -> None:
        self._tasks = tasks
        self._runtime = runtime
        self._table = table
        self._host = host
        self._conflicts = conflicts
        self._outbox = outbox
        self._stopping = stopping
        self._done = done  # called after each command, its result delivered
        self._stop_timeout = stop_timeout
        self._deployed = deployed  # told each deploy's outcome (replica status) and image
        self._stopped = stopped  # told after each stop that removed a container
        self._queues: dict[str, deque[Command]] = {}
        self._operation_limit = anyio.Semaphore(max_concurrent)
        self._idle = anyio.Event()  # set while no command is queued or running
        self._idle.set()

    def pulling(self) -> set[str]:
        """Images of the deploys queued or under way (their pull may be running)."""
        return {c.payload.image for q in self._queues.values() for c in q if isinstance(c, Deploy)}

    def busy(self) -> set[str]:
        """The replicas a command is queued or running for."""
        return set(self._queues)

    def enqueue(self, command: Command) -> None:
        """Queue a command behind earlier ones for the same replica."""
        rid = command.payload.replica_id
        queue = self._queues.get(rid)
        if queue is None:
            if not self._queues:
                self._idle = anyio.Event()
            queue = self._queues[rid] = deque()
            self._tasks.start_soon(self._run_queue, rid, queue)
        queue.append(command)

    async def until_idle(self, timeout: float) -> None:
        """Wait until no command is queued or running, at most ``timeout`` (shielded)."""
        if self._queues:
            with anyio.move_on_after(timeout, shield=True):
                await self._idle.wait()

    def warn_unfinished(self) -> None:
        if self._queues:
            log.warning(
                "shutting down with %d replica operation(s) unfinished; "
                "their containers are reconciled at the next start",
                len(self._queues),
            )

    async def _run_queue(self, rid: str, queue: deque[Command]) -> None:
        """Run a replica's commands one after the other until its queue is empty."""
        try:
            while queue:
                async with self._operation_limit:
                    await self._execute(queue[0])
                queue.popleft()
        finally:
            del self._queues[rid]
            if not self._queues:
                self._idle.set()

    async def _execute(self, command: Command) -> None:
        if isinstance(command, Deploy):
            result = await self._deploy(command.payload)
            if self._deployed is not None:
                self._deployed(result.status.value, command.payload.image)
            await self._outbox.deliver(DeployResult(_payload(result)))
        else:
            result = await self._stop(command.payload.replica_id)
            await self._outbox.deliver(StopResult(_payload(result)))
        self._done()

    async def _deploy(self, payload: DeployPayload) -> ReportResult:
        refusal = deploy_refusal(stopping=self._stopping.is_set(), report=self._host.report)
        decision = self._table.deploy(payload, refusal=refusal)
        if isinstance(decision, ReportResult):
            if decision.error:
                decision = _with_unassignable(decision, self._host)
                log.warning("deploy %s refused: %s", payload.replica_id[:64], decision.error)
            return decision
        assert isinstance(decision, StartContainer)
        spec = decision.spec
        groups = sorted({g.iommu_group for g in spec.gpus})
        log.info(
            "deploying %s: image %s, %d GPU(s), env %s",
            spec.replica_id,
            spec.image,
            len(spec.gpus),
            sorted(spec.env) or "none",
        )
        try:
            if decision.replace:
                await self._runtime.stop(spec.replica_id, grace=self._stop_timeout)
            state = await self._runtime.run(spec)
        except NameInUse as exc:
            # Most likely the nerdctl call of an agent that died mid-deploy
            # finished after all: that container is this replica.
            found = await self._find_container(spec.replica_id)
            if found is None:
                log.warning("deploy %s failed: %s", spec.replica_id, exc)
                return self._table.start_failed(spec.replica_id, str(exc))
            log.info("deploy %s: adopting the container already running it", spec.replica_id)
            result = self._table.adopted(found)
            self._conflicts.check()
            return result
        except ContainerRuntimeError as exc:
            log.warning("deploy %s failed: %s", spec.replica_id, exc)
            if not isinstance(exc, ImageNotFound | SnapshotterUnavailable | UnsupportedEnvValue):
                # Not the image (pull, unpack) nor the tenant's values: count it
                # against the GPUs' groups (docs/protocol.md, "GPU passthrough", quarantine).
                self._host.start_failed(groups, str(exc))
            return self._table.start_failed(spec.replica_id, str(exc))
        except Exception as exc:
            log.exception("deploy %s failed unexpectedly", spec.replica_id)
            return self._table.start_failed(
                spec.replica_id, f"internal error: {type(exc).__name__}"
            )
        log.info("replica %s is %s", spec.replica_id, state.status.value)
        if state.status is ReplicaStatus.RUNNING:
            self._host.started(groups)
        result = self._table.started(state)
        self._conflicts.check()
        return result

    async def _find_container(self, replica_id: str) -> ContainerState | None:
        try:
            states = await self._runtime.list()
        except ContainerRuntimeError as exc:
            log.warning("cannot list containers: %s", exc)
            return None
        return next((s for s in states if s.replica_id == replica_id), None)

    async def _stop(self, replica_id: str) -> ReportResult:
        decision = self._table.stop(replica_id)
        if isinstance(decision, ReportResult):
            return decision
        assert isinstance(decision, StopContainer)
        log.info("stopping %s", replica_id)
        try:
            await self._runtime.stop(replica_id, grace=self._stop_timeout)
        except ContainerRuntimeError as exc:
            log.warning("stop %s failed: %s", replica_id, exc)
            return ReportResult(replica_id, ReplicaStatus.FAILED, str(exc))
        except Exception as exc:
            log.exception("stop %s failed unexpectedly", replica_id)
            return ReportResult(
                replica_id, ReplicaStatus.FAILED, f"internal error: {type(exc).__name__}"
            )
        log.info("replica %s is stopped", replica_id)
        result = self._table.stopped(replica_id)
        if self._stopped is not None:
            self._stopped()
        return result


_LEDGER_REFUSALS = ("not enough free GPUs", "no free IOMMU groups")


def _with_unassignable(result: ReportResult, host: HostState) -> ReportResult:
    """A refusal for want of GPUs, with why the node's other GPUs are not assignable."""
    if not (result.error or "").startswith(_LEDGER_REFUSALS):
        return result
    notes = [
        f"{g.pci_address}: {g.problems[0] if g.problems else 'not assignable'}"
        for g in host.report.hardware.gpus
        if g.assignable is False
    ]
    if not notes:
        return result
    error = f"{result.error}; not assignable: {'; '.join(notes)}"
    return ReportResult(result.replica_id, result.status, error)


def _payload(result: ReportResult) -> ResultPayload:
    gpus = list(result.gpus) if result.gpus and result.status is ReplicaStatus.RUNNING else None
    return ResultPayload(result.replica_id, result.status, result.error, gpus)
