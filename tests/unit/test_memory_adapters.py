"""The in-memory adapters library users test against: clock, transport, runtime, store."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from vectorlay.adapters.memory import (
    ManualClock,
    MemoryConfigStore,
    MemoryRuntime,
    MemoryTransport,
    StaticProbe,
    sample_report,
)
from vectorlay.domain.agent.identity import NodeConfig
from vectorlay.domain.agent.replicas import ContainerSpec, ContainerState, GpuSlot
from vectorlay.domain.messages import (
    Deploy,
    DeployPayload,
    ReplicaStatus,
    ResultPayload,
    Stop,
    StopPayload,
    StopResult,
    decode_inbound,
    encode_text,
)
from vectorlay.errors import (
    ConfigWriteError,
    ConnectFailed,
    ConnectionClosed,
    ConnectionLost,
    ImageNotFound,
    Unauthorized,
)

# --- ManualClock --------------------------------------------------------------------


async def test_clock_starts_where_told_and_moves_only_on_advance() -> None:
    wall = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    clock = ManualClock(start=100.0, wall=wall)
    assert clock.monotonic() == 100.0
    assert clock.now() == wall
    await anyio.sleep(0.01)
    assert clock.monotonic() == 100.0
    clock.advance(2.5)
    assert clock.monotonic() == 102.5
    assert clock.now() == wall + timedelta(seconds=2.5)
    assert clock.now().tzinfo is not None


async def test_advance_wakes_sleepers_in_deadline_order() -> None:
    clock = ManualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    async with anyio.create_task_group() as tg:
        # Registered latest-deadline first, so insertion order would be wrong.
        for name, seconds in [("c", 30.0), ("b", 20.0), ("a", 10.0), ("a2", 10.0)]:
            tg.start_soon(sleeper, name, seconds)
            await anyio.wait_all_tasks_blocked()
        assert clock.sleepers == 4
        assert clock.next_deadline() == 10.0
        clock.advance(9.5)
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        clock.advance(15.0)  # passes a's and b's deadlines in one jump
        await anyio.wait_all_tasks_blocked()
        assert [name for name, _ in woke] == ["a", "a2", "b"]
        assert clock.next_deadline() == 30.0
        clock.advance(5.5)
        await anyio.wait_all_tasks_blocked()
    assert woke == [("a", 24.5), ("a2", 24.5), ("b", 24.5), ("c", 30.0)]
    assert clock.sleepers == 0
    assert clock.next_deadline() is None


async def test_zero_negative_and_nan_sleeps_return_at_once() -> None:
    clock = ManualClock()
    with anyio.fail_after(1):
        await clock.sleep(0)
        await clock.sleep(-5)
        await clock.sleep(float("nan"))
    assert clock.sleepers == 0


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    clock = ManualClock()
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 10.0)
        await anyio.wait_all_tasks_blocked()
        assert clock.sleepers == 1
        tg.cancel_scope.cancel()
    assert clock.sleepers == 0
    assert clock.next_deadline() is None


async def test_clock_works_with_fail_after_timeouts() -> None:
    clock = ManualClock()
    with anyio.move_on_after(0.05) as scope:
        await clock.sleep(1.0)  # never advanced: only the real timeout ends it
    assert scope.cancelled_caught


# --- MemoryTransport / MemoryPeer ------------------------------------------------------

URL = "ws://127.0.0.1:8787/v1/agent"


async def test_transport_round_trip_both_ways() -> None:
    transport = MemoryTransport()
    async with transport.connect(URL, "node-token") as conn:
        peer = await transport.accept()
        assert (peer.url, peer.credential) == (URL, "node-token")
        assert transport.attempts == [(URL, "node-token")]

        result = StopResult(ResultPayload("r1", ReplicaStatus.STOPPED))
        await conn.send(encode_text(result))
        assert await peer.receive_message() == result

        deploy = Deploy(DeployPayload("r1", "nginx", 0, {"K": "v"}))
        await peer.send_message(deploy)
        assert decode_inbound(await conn.receive()) == deploy

        await peer.send(b"\x00binary")
        assert await conn.receive() == b"\x00binary"
        await peer.send("raw text")
        assert await conn.receive() == "raw text"


async def test_frames_keep_their_order() -> None:
    transport = MemoryTransport()
    async with transport.connect(URL, "t") as conn:
        peer = await transport.accept()
        for i in range(50):
            await peer.send_message(Stop(StopPayload(f"r{i}")))
        got = [decode_inbound(await conn.receive()) for _ in range(50)]
    assert got == [Stop(StopPayload(f"r{i}")) for i in range(50)]


@pytest.mark.parametrize("code", [4001, 4401, 4409, 1001, 1000])
async def test_peer_close_code_reaches_the_agent(code: int) -> None:
    transport = MemoryTransport()
    async with transport.connect(URL, "t") as conn:
        peer = await transport.accept()
        await peer.close(code, "bye")
        with pytest.raises(ConnectionClosed) as info:
            await conn.receive()
        assert (info.value.code, info.value.reason) == (code, "bye")
        assert conn.closed_with == code
        with pytest.raises(ConnectionLost):
            await conn.send("after close")


async def test_agent_close_code_reaches_the_peer() -> None:
    transport = MemoryTransport()
    async with transport.connect(URL, "t") as conn:
        peer = await transport.accept()
        await conn.close(4000, "shutting down")
        await conn.close(1000)  # a second close is a no-op and never raises
    with pytest.raises(ConnectionClosed) as info:
        await peer.receive()
    assert info.value.code == 4000
    assert peer.closed_with == 4000
    with pytest.raises(ConnectionLost):
        await peer.receive()


async def test_leaving_the_context_closes_normally() -> None:
    transport = MemoryTransport()
    async with transport.connect(URL, "t"):
        peer = await transport.accept()
    with pytest.raises(ConnectionClosed) as info:
        await peer.receive()
    assert info.value.code == 1000


async def test_a_dropped_network_is_connection_lost_not_a_close() -> None:
    transport = MemoryTransport()
    async with transport.connect(URL, "t") as conn:
        peer = await transport.accept()
        await peer.drop()
        with pytest.raises(ConnectionLost) as info:
            await conn.receive()
        assert not isinstance(info.value, ConnectionClosed)
        with pytest.raises(ConnectionLost):
            await conn.send("x")


async def test_refused_connects_raise_in_order_and_are_recorded() -> None:
    transport = MemoryTransport()
    transport.refuse_next(ConnectFailed("connection refused"))
    transport.refuse_next(Unauthorized("401 at the handshake"))
    with pytest.raises(ConnectFailed):
        async with transport.connect(URL, "org-token"):
            pass
    with pytest.raises(Unauthorized):
        async with transport.connect(URL, "org-token"):
            pass
    async with transport.connect(URL, "node-token"):
        assert (await transport.accept()).credential == "node-token"
    assert [c for _, c in transport.attempts] == ["org-token", "org-token", "node-token"]


async def test_accept_waits_for_the_next_connection() -> None:
    transport = MemoryTransport()
    peers: list[str] = []

    async def control_plane() -> None:
        peers.append((await transport.accept()).credential)

    async with anyio.create_task_group() as tg:
        tg.start_soon(control_plane)
        await anyio.wait_all_tasks_blocked()
        assert peers == []
        async with transport.connect(URL, "second"):
            await anyio.wait_all_tasks_blocked()
    assert peers == ["second"]


# --- MemoryRuntime ------------------------------------------------------------------------


def spec(rid: str = "r1", gpus: int = 1) -> ContainerSpec:
    slots = tuple(GpuSlot(f"0000:{0x17 + i:02x}:00.0", str(25 + i)) for i in range(gpus))
    return ContainerSpec(rid, "nginx:1.25", slots, {"K": "v"})


async def test_runtime_runs_lists_and_stops() -> None:
    runtime = MemoryRuntime()
    state = await runtime.run(spec("b", 2))
    assert state == ContainerState(
        "b", ReplicaStatus.RUNNING, None, ("0000:17:00.0", "0000:18:00.0"), "nginx:1.25"
    )
    await runtime.run(spec("a", 0))
    assert [s.replica_id for s in await runtime.list()] == ["a", "b"]
    assert runtime.specs["b"] == spec("b", 2)
    await runtime.stop("b", grace=5)
    await runtime.stop("never-existed", grace=5)  # unknown replicas are success
    assert [s.replica_id for s in await runtime.list()] == ["a"]
    assert runtime.calls == [
        ("run", "b"),
        ("run", "a"),
        ("list", ""),
        ("stop", "b"),
        ("stop", "never-existed"),
        ("list", ""),
    ]


async def test_fail_next_fails_once_per_registration() -> None:
    runtime = MemoryRuntime()
    runtime.fail_next("run", ImageNotFound("image not found: nginx:1.25"))
    runtime.fail_next("run", ImageNotFound("second"))
    with pytest.raises(ImageNotFound, match="nginx"):
        await runtime.run(spec())
    with pytest.raises(ImageNotFound, match="second"):
        await runtime.run(spec())
    assert runtime.containers == {}
    await runtime.run(spec())
    assert list(runtime.containers) == ["r1"]
    runtime.fail_next("list", ImageNotFound("x"))
    with pytest.raises(ImageNotFound):
        await runtime.list()
    assert len(await runtime.list()) == 1


async def test_gate_holds_an_operation_until_set() -> None:
    runtime = MemoryRuntime()
    gate = runtime.gate("run")
    done: list[str] = []

    async def deploy() -> None:
        await runtime.run(spec())
        done.append("run")

    async with anyio.create_task_group() as tg:
        tg.start_soon(deploy)
        await anyio.wait_all_tasks_blocked()
        assert done == []
        assert runtime.calls == [("run", "r1")]  # entered, waiting at the gate
        assert runtime.containers == {}
        gate.set()
    assert done == ["run"]


async def test_set_status_wakes_changes() -> None:
    runtime = MemoryRuntime()
    await runtime.run(spec())
    seen: list[ReplicaStatus] = []

    async def watch() -> None:
        async for _ in runtime.changes():
            seen.append((await runtime.list())[0].status)
            if len(seen) == 2:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.wait_all_tasks_blocked()
        assert seen == []
        runtime.set_status("r1", ReplicaStatus.FAILED, 137)
        await anyio.wait_all_tasks_blocked()
        assert seen == [ReplicaStatus.FAILED]
        runtime.set_status("r1", ReplicaStatus.EXITED, 0)
    assert seen == [ReplicaStatus.FAILED, ReplicaStatus.EXITED]
    assert runtime.containers["r1"].exit_code == 0


async def test_a_change_while_the_watcher_is_busy_is_not_lost() -> None:
    runtime = MemoryRuntime()
    await runtime.run(spec())
    gate = runtime.gate("list")
    wakeups = 0

    async def watch() -> None:
        nonlocal wakeups
        async for _ in runtime.changes():
            wakeups += 1
            await runtime.list()  # slow: held at the gate
            if wakeups == 2:
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.wait_all_tasks_blocked()
            runtime.set_status("r1", ReplicaStatus.RUNNING)
            await anyio.wait_all_tasks_blocked()
            assert wakeups == 1
            # The watcher is inside list(), not waiting on changes(): this
            # change must still wake it once it comes back.
            runtime.set_status("r1", ReplicaStatus.EXITED, 0)
            gate.set()
    assert wakeups == 2


# --- StaticProbe and MemoryConfigStore -------------------------------------------------------


async def test_static_probe_returns_what_it_was_given() -> None:
    report = sample_report(ready=False, gpus=2)
    probe = StaticProbe(host=report)
    assert await probe.report() is report
    assert (await probe.metrics()).storage.path == "/data"
    await probe.metrics()
    assert (probe.report_calls, probe.metrics_calls) == (1, 2)
    assert report.ready is False
    assert [d.name for d in report.dependencies if not d.ok] == ["vfio"]
    assert [g.iommu_group for g in report.hardware.gpus] == ["25", "26"]
    assert len(report.hardware.gpu_info) == 2
    assert sample_report().ready is True


async def test_config_store_round_trip_and_failures() -> None:
    store = MemoryConfigStore()
    assert await store.load() is None
    config = NodeConfig("node-1", "secret-node-token", URL)
    await store.save(config)
    assert await store.load() == config
    assert store.saves == [config]

    store.fail_next_save()
    newer = NodeConfig("node-2", "other", URL)
    with pytest.raises(ConfigWriteError):
        await store.save(newer)
    assert await store.load() == config  # the old config is intact
    store.fail_next_save(OSError("read-only file system"))
    with pytest.raises(OSError, match="read-only"):
        await store.save(newer)
    await store.save(newer)
    assert store.saves == [config, newer]


async def test_config_store_can_start_with_a_config() -> None:
    config = NodeConfig("node-1", "t", URL)
    assert await MemoryConfigStore(config).load() == config


# --- docs/library.md: its example is a test of its own ---------------------------------------

LIBRARY_DOC = Path(__file__).resolve().parents[2] / "docs" / "library.md"


def library_example() -> dict[str, Any]:
    """Run the doc's Python example as a module and return its namespace."""
    text = LIBRARY_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "docs/library.md should hold one Python example"
    namespace: dict[str, Any] = {"__name__": "library_doc_example"}
    exec(compile(blocks[0], str(LIBRARY_DOC), "exec"), namespace)  # noqa: S102
    return namespace


LIBRARY_TESTS = sorted(name for name in library_example() if name.startswith("test_"))


def test_library_doc_has_its_example_tests() -> None:
    assert len(LIBRARY_TESTS) == 3


@pytest.mark.parametrize("name", LIBRARY_TESTS)
async def test_library_doc_example(name: str) -> None:
    test: Callable[[], Awaitable[None]] = library_example()[name]
    with anyio.fail_after(5):
        await test()
