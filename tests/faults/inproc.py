"""Fuzz a live agent session in-process: the real ``Agent`` on in-memory adapters.

One call of :func:`fuzz_session` starts an agent with a saved identity and
two assignable GPUs, opens its session, sends every frame of a batch, waits
until each frame got what it is owed (see :mod:`tests.faults.frames`), and
checks the invariants.  It returns the violations instead of raising, so
that a campaign can count them; a test asserts there are none.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio

from tests.faults.frames import (
    MAX_FRAME,
    Expected,
    Frame,
    deploy_ok,
    leaks,
)
from tests.support.tokens import NODE_TOKEN
from vectorlay.adapters.memory import (
    ManualClock,
    MemoryConfigStore,
    MemoryPeer,
    MemoryRuntime,
    MemoryTransport,
    StaticProbe,
    sample_report,
)
from vectorlay.app.agent.config import AgentConfig
from vectorlay.app.agent.service import Agent
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import ContainerSpec, ContainerState
from vectorlay.domain.messages import (
    DeployResult,
    Error,
    Heartbeat,
    HostMetrics,
    StopResult,
    SystemInfo,
    decode_outbound,
)
from vectorlay.errors import ProtocolError, TransportError

URL = "ws://127.0.0.1:8787/v1/agent"
NODE = NodeConfig("node-fuzz", NODE_TOKEN, URL)
GPUS = 2
WAIT = 10.0  # seconds for every owed answer to arrive


@dataclass
class RecordingRuntime(MemoryRuntime):
    """The in-memory runtime, keeping every spec that reached ``run``."""

    runs: list[ContainerSpec] = field(default_factory=list)

    async def run(self, spec: ContainerSpec) -> ContainerState:
        self.runs.append(spec)
        return await super().run(spec)


@dataclass
class Outcome:
    """What one fuzzed session showed."""

    frames: int = 0
    lost: int = 0  # owed results that never came
    extra: int = 0  # results beyond one per command
    double_gpus: int = 0
    secrets: int = 0
    violations: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.violations.append(text)


class _LogTap(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@contextmanager
def tapped_logs() -> Iterator[_LogTap]:
    """Every record of the ``vectorlay`` loggers, at debug level, while the block runs."""
    logger = logging.getLogger("vectorlay")
    tap = _LogTap()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(tap)
    try:
        yield tap
    finally:
        logger.removeHandler(tap)
        logger.setLevel(level)


def run_fuzz_session(frames: Sequence[Frame], backend: str, wait: float = WAIT) -> Outcome:
    """:func:`fuzz_session` on its own event loop (asyncio or trio)."""
    return anyio.run(fuzz_session, list(frames), wait, backend=backend)


async def fuzz_session(frames: Sequence[Frame], wait: float = WAIT) -> Outcome:
    outcome = Outcome(frames=len(frames))
    expected = Expected.of(frames)
    runtime = RecordingRuntime()
    transport = MemoryTransport()
    agent = Agent(
        AgentConfig(control_plane_url=URL, heartbeat_interval=30.0, reconnect_delay=5.0),
        transport=transport,
        runtime=runtime,
        probe=StaticProbe(sample_report(gpus=GPUS)),
        store=MemoryConfigStore(NODE),
        clock=ManualClock(),
        rand=lambda: 0.0,
    )
    exit_codes: list[int] = []
    outbound: list[str | bytes] = []
    with tapped_logs() as tap:
        async with anyio.create_task_group() as tg:

            async def run_agent() -> None:
                exit_codes.append(await agent.run())

            tg.start_soon(run_agent)
            with anyio.fail_after(5):
                peer = await transport.accept()
                first = await peer.receive()
            if not isinstance(decode_outbound(first), SystemInfo):
                outcome.fail("the session did not start with system_info")
            for frame in frames:
                await peer.send(frame)
            await _collect(peer, expected, outbound, outcome, wait)
            if exit_codes:
                outcome.fail(f"the agent exited with status {exit_codes[0]} while fuzzed")
            if len(transport.attempts) != 1:
                outcome.fail(f"the session broke: {len(transport.attempts)} connections")
            agent.request_stop()
    _check_answers(expected, outbound, outcome)
    _check_runtime(expected, runtime, agent, outcome)
    outcome.secrets = sum(leaks(str(f)) for f in outbound) + sum(leaks(line) for line in tap.lines)
    if outcome.secrets:
        outcome.fail(f"{outcome.secrets} env value(s) leaked into results or logs")
    return outcome


async def _collect(
    peer: MemoryPeer,
    expected: Expected,
    outbound: list[str | bytes],
    outcome: Outcome,
    wait: float,
) -> None:
    """Read until every owed answer is in, then a little longer for extras."""
    results: Counter[tuple[str, str]] = Counter()
    errors = 0

    def satisfied() -> bool:
        return expected.answered(results, errors)

    async def read_one(timeout: float) -> bool:
        nonlocal errors
        with anyio.move_on_after(timeout):
            try:
                frame = await peer.receive()
            except TransportError as exc:
                outcome.fail(f"the agent closed the session: {exc}")
                return False
            outbound.append(frame)
            try:
                msg = decode_outbound(frame)
            except ProtocolError as exc:
                outcome.fail(f"the agent sent a frame it may not send: {exc}")
                return True
            if isinstance(msg, DeployResult):
                results["deploy", msg.payload.replica_id] += 1
            elif isinstance(msg, StopResult):
                results["stop", msg.payload.replica_id] += 1
            elif isinstance(msg, Error):
                errors += 1
            elif not isinstance(msg, Heartbeat):
                outcome.fail(f"unexpected {type(msg).__name__} mid-session")
            return True
        return False

    with anyio.move_on_after(wait):
        while not satisfied():
            if not await read_one(wait):
                break
    # Anything owed has arrived; a duplicate would follow within moments.
    await anyio.wait_all_tasks_blocked()
    while await read_one(0.02):
        pass


def _check_answers(expected: Expected, outbound: Sequence[str | bytes], outcome: Outcome) -> None:
    results: Counter[tuple[str, str]] = Counter()
    errors = 0
    for frame in outbound:
        if isinstance(frame, bytes):
            outcome.fail("the agent sent a binary frame")
            continue
        if len(frame.encode("utf-8", "surrogatepass")) > MAX_FRAME:
            outcome.fail(f"the agent sent a frame over 1 MiB ({len(frame)} characters)")
        try:
            msg = decode_outbound(frame)
        except ProtocolError:
            continue
        if isinstance(msg, DeployResult):
            results["deploy", msg.payload.replica_id] += 1
            if msg.payload.status == "failed" and not msg.payload.error:
                outcome.fail(f"deploy {msg.payload.replica_id[:40]!r} failed without an error")
        elif isinstance(msg, StopResult):
            results["stop", msg.payload.replica_id] += 1
        elif isinstance(msg, Error):
            errors += 1
    verdict = expected.judge(results, errors)
    outcome.lost += verdict.lost
    outcome.extra += verdict.extra
    for problem in verdict.problems:
        outcome.fail(problem)


def _check_runtime(
    expected: Expected, runtime: RecordingRuntime, agent: Agent, outcome: Outcome
) -> None:
    runs: Counter[str] = Counter()
    for spec in runtime.runs:
        runs[spec.replica_id] += 1
        payload = {
            "replica_id": spec.replica_id,
            "image": spec.image,
            "gpu_count": len(spec.gpus),
            "env_vars": spec.env,
        }
        if not deploy_ok(payload) or spec.replica_id not in expected.runnable:
            outcome.fail(f"an invalid deploy reached the runtime: {spec!r}")
        if len(spec.gpus) > GPUS or len(set(spec.gpus)) != len(spec.gpus):
            outcome.fail(f"impossible GPU assignment: {spec!r}")
    for rid, count in runs.items():
        if count > expected.runnable[rid]:
            outcome.fail(f"{rid!r} started {count} times for {expected.runnable[rid]} deploys")
    held: Counter[str] = Counter()
    for state in runtime.containers.values():
        if state.status in ("running", "pending"):
            held.update(state.gpus)
    doubled = [addr for addr, n in held.items() if n > 1]
    doubled += list(agent.table.double_assigned())
    if doubled:
        outcome.double_gpus += len(set(doubled))
        outcome.fail(f"GPUs held by two replicas: {sorted(set(doubled))}")


# --- heartbeat cadence on a manual clock ----------------------------------------------------


@dataclass
class SlowProbe(StaticProbe):
    """A probe whose per-heartbeat metrics take ``delay`` seconds of the agent's clock,
    as the real one does when nvidia-smi or a network mount under the data path hangs
    (each is cut off at the probe's 5 s command timeout)."""

    clock: ManualClock | None = None
    delay: float = 0.0

    async def metrics(self) -> HostMetrics:
        assert self.clock is not None
        await self.clock.sleep(self.delay)
        return await super().metrics()


async def heartbeat_times(
    *,
    interval: float,
    duration: float,
    runtime: MemoryRuntime | None = None,
    probe_delay: float = 0.0,
    resync_interval: float = 300.0,
    hang_list: bool = False,
) -> list[float]:
    """Run an agent for ``duration`` seconds of a manual clock, in steps of a tenth of
    the interval; the clock time at which each heartbeat reached the control plane."""
    clock = ManualClock()
    runtime = runtime or MemoryRuntime()
    transport = MemoryTransport()
    probe = SlowProbe(sample_report(gpus=GPUS), clock=clock)
    agent = Agent(
        AgentConfig(
            control_plane_url=URL,
            heartbeat_interval=interval,
            reconnect_delay=5.0,
            resync_interval=resync_interval,
        ),
        transport=transport,
        runtime=runtime,
        probe=probe,
        store=MemoryConfigStore(NODE),
        clock=clock,
        rand=lambda: 0.0,
    )
    times: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        with anyio.fail_after(5):
            peer = await transport.accept()
            await peer.receive()  # system_info
            first = await peer.receive()
        assert isinstance(decode_outbound(first), Heartbeat)
        times.append(clock.monotonic())
        probe.delay = probe_delay
        if hang_list:
            runtime.gate("list")  # every list() from now on waits, as a hung `nerdctl ps` does

        async def read() -> None:
            while True:
                msg = decode_outbound(await peer.receive())
                if isinstance(msg, Heartbeat):
                    times.append(clock.monotonic())

        tg.start_soon(read)
        step = interval / 10
        steps = round(duration / step)
        for _ in range(steps):
            await anyio.wait_all_tasks_blocked()
            clock.advance(step)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    return times
