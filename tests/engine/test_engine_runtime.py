"""The runtime adapter against a real engine: Podman, and the Docker CLI against Podman.

What the fake nerdctl only imitates is checked here for real: the env file
(gone after ``run``, its values inside the container), labels, a device
standing in for a VFIO group, stop with grace, exit codes and how soon an
exit is seen, a second runtime finding what the first started, a container
removed behind the adapter's back, a name in use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.engine.conftest import Names
from tests.fakes.nerdctl.testing import Watcher
from tests.support import engine as real
from vectorlay.adapters.runtime import EngineRuntime
from vectorlay.domain.agent.replicas import ContainerSpec, GpuSlot, container_name
from vectorlay.domain.messages import ReplicaStatus
from vectorlay.errors import NameInUse, RuntimeNotInstalled

pytestmark = [pytest.mark.engine, pytest.mark.integration]

DETECTION_DEADLINE = 2.0  # the contract: an exit is reported within 2 s
SECRETS = {
    "API_TOKEN": "not-a-real-token=with=equals",
    "DB_URL": "postgres://user:p#ss@db:5432/app?x=1",
    "QUOTED": '"don\'t" strip me',
}
# An IOMMU group number no real host here has: its /dev/vfio node is a /dev/null.
GROUP = "4242"


@pytest.fixture
def vfio_group() -> Iterator[str]:
    made = real.make_device(GROUP)
    yield GROUP
    real.remove_device(made)


@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "env"


def make_runtime(engine: real.Engine, env_dir: Path, **kwargs: object) -> EngineRuntime:
    options: dict[str, object] = {
        "engine": engine.name,
        "cli": engine.cli,
        "oci_runtime": engine.oci_runtime,
        "env_dir": env_dir,
        "events_settle": 0.3,
    }
    options.update(kwargs)
    return EngineRuntime(**options)  # type: ignore[arg-type]


@pytest.fixture
def with_engine_env(engine: real.Engine, monkeypatch: pytest.MonkeyPatch) -> real.Engine:
    for key, value in engine.env.items():
        monkeypatch.setenv(key, value)
    return engine


async def test_a_replica_from_run_to_stop(
    with_engine_env: real.Engine, env_dir: Path, rids: Names, vfio_group: str
) -> None:
    engine = with_engine_env
    rt = make_runtime(engine, env_dir)
    rid = rids("life")
    name = container_name(rid)
    gpus = (GpuSlot("0000:17:00.0", vfio_group),) if engine.devices else ()
    state = await rt.run(ContainerSpec(rid, real.IMAGE, gpus, SECRETS))
    assert (state.replica_id, state.status, state.exit_code) == (rid, ReplicaStatus.RUNNING, None)
    assert state.image == real.IMAGE
    assert state.gpus == tuple(g.pci_address for g in gpus)
    # The env file is gone once run returns; its values are inside the container, verbatim.
    assert list(env_dir.iterdir()) == []
    inside = real.exec_env(name)
    assert {k: inside.get(k) for k in SECRETS} == SECRETS
    item = real.inspect(name)
    assert item is not None
    config = item["Config"]
    assert isinstance(config, dict)
    labels = config["Labels"]
    assert labels["vectorlay.replica-id"] == rid
    if gpus:
        assert labels["vectorlay.gpus"] == "0000:17:00.0"
        host_config = item["HostConfig"]
        assert isinstance(host_config, dict)
        # PathInContainer is the node the agent asked for; Podman works PathOnHost
        # back out of major:minor, which every /dev/null stand-in shares.
        devices = host_config["Devices"]
        assert [d["PathInContainer"] for d in devices] == [f"/dev/vfio/{vfio_group}"]
    # Podman keeps the whole `run` argv: the values never were on it.
    kept = " ".join(str(a) for a in config.get("CreateCommand") or [])
    assert not any(value in kept for value in SECRETS.values())

    # The name is taken: refused, and the container holding it is left alone.
    with pytest.raises(NameInUse, match="already in use"):
        await rt.run(ContainerSpec(rid, real.IMAGE, env={"API_TOKEN": "second"}))
    assert real.exec_env(name)["API_TOKEN"] == SECRETS["API_TOKEN"]
    assert list(env_dir.iterdir()) == []

    # A new agent process: a runtime that knows nothing yet finds it as it is.
    again = make_runtime(engine, env_dir)
    [found] = [s for s in await again.list() if s.replica_id == rid]
    assert found == state

    started = time.monotonic()
    await again.stop(rid, grace=10)
    # The image's PID 1 exits on SIGTERM: the stop never waits out the grace.
    assert time.monotonic() - started < 5
    assert real.inspect(name) is None
    assert all(s.replica_id != rid for s in await again.list())
    # Stopping what is not there is no error.
    await again.stop(rid, grace=1)


async def test_exits_and_removals_are_seen_within_two_seconds(
    with_engine_env: real.Engine, env_dir: Path, rids: Names
) -> None:
    rt = make_runtime(with_engine_env, env_dir)
    failing, removed = rids("exit"), rids("gone")
    watcher = Watcher(rt)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        await rt.run(ContainerSpec(failing, real.IMAGE, env={"VL_SLEEP": "1", "VL_EXIT": "3"}))
        await rt.run(ContainerSpec(removed, real.IMAGE))
        await watcher.until(lambda: watcher.state(removed) is not None, DETECTION_DEADLINE)

        def failed() -> bool:
            state = watcher.state(failing)
            return state is not None and state.status is ReplicaStatus.FAILED

        await watcher.until(failed, 1 + DETECTION_DEADLINE + 3)
        seen = time.time()
        # Removed behind the runtime's back (by hand, by another tool).
        result = real.podman("rm", "-f", "-t", "0", container_name(removed))
        assert result.returncode == 0, result.stderr
        await watcher.until(lambda: watcher.state(removed) is None, DETECTION_DEADLINE)
        tg.cancel_scope.cancel()
    state = watcher.state(failing)
    assert state is not None
    assert state.exit_code == 3
    latency = seen - real.finished_at(container_name(failing))
    assert latency <= DETECTION_DEADLINE, f"exit seen {latency:.2f} s after it happened"
    # A runtime started afterwards reads the same exit.
    [again] = [
        s for s in await make_runtime(with_engine_env, env_dir).list() if s.replica_id == failing
    ]
    assert (again.status, again.exit_code) == (ReplicaStatus.FAILED, 3)


async def test_podman_without_kata_says_the_runtime_is_missing(
    podman_engine: real.Engine, env_dir: Path, rids: Names
) -> None:
    # Podman's name for Kata; no supported Kata (>= 2) can be driven by Podman.
    rt = make_runtime(podman_engine, env_dir, oci_runtime="kata")
    with pytest.raises(RuntimeNotInstalled, match='default OCI runtime "kata" not found'):
        await rt.run(ContainerSpec(rids("kata"), real.IMAGE))
    assert list(env_dir.iterdir()) == []
