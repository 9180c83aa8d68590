"""Exit detection: ``changes()`` wakes the agent within 2 s of a container exiting."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl, publish
from tests.fakes.nerdctl.testing import Watcher, calls_of, install, runtime
from tests.support import eventually
from vectorlay.adapters.runtime import NerdctlRuntime
from vectorlay.domain.agent.replicas import ContainerSpec
from vectorlay.domain.messages import ReplicaStatus

pytestmark = pytest.mark.integration

DETECTION_DEADLINE = 2.0  # the contract: the control plane hears of an exit within 2 s


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNerdctl]:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    yield fake
    fake.close()


def failed_with(watcher: Watcher, replica_id: str, code: int) -> bool:
    state = watcher.state(replica_id)
    return state is not None and (state.status, state.exit_code) == (ReplicaStatus.FAILED, code)


@pytest.mark.parametrize("watch", ["events", "poll"])
async def test_exit_is_seen_within_two_seconds(
    fake: FakeNerdctl, tmp_path: Path, watch: str
) -> None:
    rt = runtime(fake, tmp_path, watch=watch, poll_interval=1.0)
    await rt.run(ContainerSpec("a", "nginx"))
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        assert watcher.state("a") is not None
        fake.exit("replica-a", 3)
        await watcher.until(lambda: failed_with(watcher, "a", 3), DETECTION_DEADLINE)
        tg.cancel_scope.cancel()


async def test_a_container_ending_by_itself_is_seen(fake: FakeNerdctl, tmp_path: Path) -> None:
    fake.exit_after("replica-a", 0.5, 0)
    rt = runtime(fake, tmp_path)
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        await rt.run(ContainerSpec("a", "nginx"))
        await watcher.until(
            lambda: getattr(watcher.state("a"), "status", None) is ReplicaStatus.EXITED,
            0.5 + DETECTION_DEADLINE,
        )
        tg.cancel_scope.cancel()


async def test_older_nerdctl_event_lines_without_id_work(fake: FakeNerdctl, tmp_path: Path) -> None:
    fake.set("events_format", "v1")
    rt = runtime(fake, tmp_path)
    await rt.run(ContainerSpec("a", "nginx"))
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        fake.exit("replica-a", 9)
        await watcher.until(lambda: failed_with(watcher, "a", 9), DETECTION_DEADLINE)
        tg.cancel_scope.cancel()


async def test_unrelated_events_do_not_wake_the_agent(fake: FakeNerdctl, tmp_path: Path) -> None:
    rt = runtime(fake, tmp_path)
    await rt.run(ContainerSpec("a", "nginx"))
    assert fake.cli("run", "-d", "--name", "someone-else", "nginx").returncode == 0
    ours = fake.container("replica-a")
    assert ours is not None
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        woken = watcher.wakeups
        fake.exit("someone-else", 1)  # not ours
        assert fake.cli("rm", "-f", "someone-else").returncode == 0
        # A process exec'd inside our container ends: its id is not the container's.
        exec_exit = {"container_id": ours["id"], "id": "exec-1", "pid": 7, "exit_status": 0}
        publish(fake.state_path, "/tasks/exit", exec_exit, ours["id"])
        fake.exit("replica-a", 2)  # ours: the only wake-up
        await watcher.until(lambda: failed_with(watcher, "a", 2), DETECTION_DEADLINE)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert watcher.wakeups == woken + 1


async def test_a_burst_of_events_is_one_wake_up(fake: FakeNerdctl, tmp_path: Path) -> None:
    rt = runtime(fake, tmp_path)
    await rt.run(ContainerSpec("a", "nginx"))
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        woken = watcher.wakeups
        # An operator removes it by force: /tasks/exit, /tasks/delete, /containers/delete.
        assert fake.cli("rm", "-f", "replica-a").returncode == 0
        await watcher.until(lambda: watcher.state("a") is None, DETECTION_DEADLINE)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert watcher.wakeups == woken + 1


async def test_the_event_stream_is_restarted_when_it_dies(
    fake: FakeNerdctl, tmp_path: Path
) -> None:
    rt = runtime(fake, tmp_path)
    await rt.run(ContainerSpec("a", "nginx"))
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        [first] = calls_of(fake, "events")
        os.kill(first.pid, signal.SIGKILL)
        await eventually(lambda: len(calls_of(fake, "events")) == 2)
        await anyio.sleep(0.3)  # the new stream subscribes
        fake.exit("replica-a", 4)
        await watcher.until(lambda: failed_with(watcher, "a", 4), DETECTION_DEADLINE)
        tg.cancel_scope.cancel()
    assert all(c.argv[1:] == ["events", "--format", "{{json .}}"] for c in calls_of(fake, "events"))


async def test_events_failing_at_once_are_retried_with_backoff(
    fake: FakeNerdctl, tmp_path: Path
) -> None:
    fake.fail("events", "FATA[0000] cannot access containerd socket\n", times=3)
    # Delays long enough that a loaded machine's process start-up (the fake is
    # Python) cannot hide their doubling.
    rt = runtime(fake, tmp_path, events_restart_delay=0.25)
    await rt.run(ContainerSpec("a", "nginx"))
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        await eventually(lambda: len(calls_of(fake, "events")) == 4)
        await anyio.sleep(0.3)
        fake.exit("replica-a", 5)
        await watcher.until(lambda: failed_with(watcher, "a", 5), DETECTION_DEADLINE)
        tg.cancel_scope.cancel()
    starts = [c.start for c in calls_of(fake, "events")]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[2] > gaps[0]  # the delay doubles: 0.25, 0.5, 1 s


async def test_watching_survives_a_missing_nerdctl(tmp_path: Path) -> None:
    rt = NerdctlRuntime(
        nerdctl=str(tmp_path / "no-nerdctl"),
        env_dir=tmp_path / "env",
        events_restart_delay=0.05,
    )
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        await watcher.until(lambda: watcher.wakeups >= 3, 5.0)
        tg.cancel_scope.cancel()
    assert watcher.errors  # each wake-up's list() said what is wrong
    assert "no-nerdctl" in str(watcher.errors[0])


async def test_watching_stops_its_event_process(fake: FakeNerdctl, tmp_path: Path) -> None:
    rt = runtime(fake, tmp_path)
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        tg.cancel_scope.cancel()
    [events] = calls_of(fake, "events")
    with pytest.raises(ProcessLookupError):
        os.kill(events.pid, 0)
