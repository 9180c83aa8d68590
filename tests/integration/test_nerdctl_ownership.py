"""The runtime adapter on the fake nerdctl: node-id labels, OOM kills, kills and removals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl
from tests.fakes.nerdctl.testing import Watcher, install, runtime
from vectorlay.adapters.runtime.labels import LABEL_NODE_ID
from vectorlay.domain.agent.replicas import ContainerSpec
from vectorlay.domain.messages import ReplicaStatus

pytestmark = pytest.mark.integration

DEADLINE = 2.0


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNerdctl]:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    yield fake
    fake.close()


async def test_containers_carry_the_node_label_read_back_by_list(
    fake: FakeNerdctl, tmp_path: Path
) -> None:
    rt = runtime(fake, tmp_path)
    await rt.run(ContainerSpec("a", "nginx", node_id="node-1f2e"))
    await rt.run(ContainerSpec("legacy", "nginx"))
    record = fake.container("replica-a")
    assert record is not None
    assert record["labels"][LABEL_NODE_ID] == "node-1f2e"
    listed = {s.replica_id: s for s in await rt.list()}
    assert listed["a"].node_id == "node-1f2e"
    assert listed["legacy"].node_id is None


async def test_an_oom_kill_is_read_from_the_event_stream(fake: FakeNerdctl, tmp_path: Path) -> None:
    rt = runtime(fake, tmp_path)
    await rt.run(ContainerSpec("hog", "nginx"))
    await rt.run(ContainerSpec("shot", "nginx"))
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        assert fake.oom("replica-hog")
        kill = fake.cli("kill", "replica-shot")
        assert kill.returncode == 0, kill.stderr
        assert kill.stdout.strip() == "replica-shot"

        def both_ended() -> bool:
            hog, shot = watcher.state("hog"), watcher.state("shot")
            return (
                hog is not None
                and hog.oom_killed
                and shot is not None
                and shot.status is ReplicaStatus.FAILED
            )

        await watcher.until(both_ended, DEADLINE)
        hog, shot = watcher.state("hog"), watcher.state("shot")
        assert hog is not None
        assert (hog.status, hog.exit_code) == (ReplicaStatus.FAILED, 137)
        assert shot is not None
        assert (shot.exit_code, shot.oom_killed) == (137, False)
        tg.cancel_scope.cancel()


async def test_kill_with_a_signal_name_ends_with_128_plus_its_number(
    fake: FakeNerdctl, tmp_path: Path
) -> None:
    rt = runtime(fake, tmp_path)
    await rt.run(ContainerSpec("t", "nginx"))
    assert fake.cli("kill", "-s", "SIGTERM", "replica-t").returncode == 0
    listed = {s.replica_id: s for s in await rt.list()}
    assert (listed["t"].status, listed["t"].exit_code) == (ReplicaStatus.FAILED, 143)
    again = fake.cli("kill", "replica-t")
    assert again.returncode == 1
    assert "is not running" in again.stderr
