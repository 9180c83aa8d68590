"""NerdctlRuntime against the fake nerdctl executable: runs, lists, stops, errors, secrets."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl
from tests.fakes.nerdctl.testing import (
    alive,
    calls_of,
    install,
    max_overlap,
    runtime,
)
from tests.support import eventually
from vectorlay.adapters.runtime import NerdctlRuntime
from vectorlay.domain.agent.replicas import (
    ContainerSpec,
    ContainerState,
    GpuSlot,
    ReplicaTable,
    ReportResult,
)
from vectorlay.domain.messages import DeployPayload, ReplicaStatus
from vectorlay.errors import (
    ContainerRuntimeError,
    ImageNotFound,
    NameInUse,
    RuntimeNotInstalled,
    RuntimeTimeout,
    SnapshotterUnavailable,
    UnsupportedEnvValue,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nerdctl"
SLOTS = (
    GpuSlot("0000:17:00.0", "25"),
    GpuSlot("0000:2a:00.0", "31"),
    GpuSlot("0000:ca:00.0", "77"),
)
SECRETS = {
    "HF_TOKEN": "hf_Secret-Value=with=equals",
    "DB_URL": "postgres://user:p#ss@db:5432/app?x=1",
    "QUOTED": '"don\'t" strip me',
}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNerdctl]:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    yield fake
    fake.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def env_files(state_dir: Path) -> list[Path]:
    return list((state_dir / "env").iterdir())


# --- run, list, stop ---------------------------------------------------------------


async def test_run_list_stop_cycle(fake: FakeNerdctl, state_dir: Path) -> None:
    rt = runtime(fake, state_dir)
    spec = ContainerSpec("abc-123", "ghcr.io/acme/llm:1.2", SLOTS[:2], SECRETS)

    state = await rt.run(spec)

    assert state == ContainerState(
        "abc-123",
        ReplicaStatus.RUNNING,
        None,
        ("0000:17:00.0", "0000:2a:00.0"),
        "ghcr.io/acme/llm:1.2",
    )
    record = fake.container("replica-abc-123")
    assert record is not None
    assert record["runtime"] == "io.containerd.kata.v2"
    assert record["devices"] == ["/dev/vfio/25", "/dev/vfio/31"]
    assert record["labels"] == {
        "vectorlay.replica-id": "abc-123",
        "vectorlay.gpus": "0000:17:00.0+0000:2a:00.0",
    }
    assert await rt.list() == [state]

    await rt.stop("abc-123", grace=30)

    assert await rt.list() == []
    assert fake.containers() == []
    assert [c.argv[1:] for c in calls_of(fake, "stop")] == [["stop", "-t", "30", "replica-abc-123"]]
    assert [c.argv[1:] for c in calls_of(fake, "rm")] == [["rm", "-f", "replica-abc-123"]]


async def test_stop_is_idempotent(fake: FakeNerdctl, state_dir: Path) -> None:
    rt = runtime(fake, state_dir)
    await rt.stop("never-existed", grace=5)
    await rt.run(ContainerSpec("a", "nginx"))
    await rt.stop("a", grace=5)
    await rt.stop("a", grace=5)
    assert fake.containers() == []
    stops = calls_of(fake, "stop")
    assert [c.rc for c in stops] == [1, 0, 1]  # nerdctl says "no such container"


async def test_exited_and_failed_containers_are_listed(fake: FakeNerdctl, state_dir: Path) -> None:
    rt = runtime(fake, state_dir)
    for rid in ("ok", "bad", "up"):
        await rt.run(ContainerSpec(rid, "nginx"))
    fake.exit("replica-ok", 0)
    fake.exit("replica-bad", 3)
    assert [(s.replica_id, s.status, s.exit_code) for s in await rt.list()] == [
        ("bad", ReplicaStatus.FAILED, 3),
        ("ok", ReplicaStatus.EXITED, 0),
        ("up", ReplicaStatus.RUNNING, None),
    ]


async def test_a_container_that_exits_at_once_is_not_reported_running(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    fake.exit_after("crashy", 0.0, 1)
    rt = runtime(fake, state_dir)
    await rt.run(ContainerSpec("c", "ghcr.io/acme/crashy:1"))
    await eventually(lambda: (fake.container("replica-c") or {}).get("status") == "exited")
    [state] = await rt.list()
    assert (state.status, state.exit_code) == (ReplicaStatus.FAILED, 1)


async def test_labels_are_read_from_inspect_not_from_the_ps_string(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    # Another label's value carries commas, "=" and even our label's key: a
    # split of ps's comma-joined Labels would read the wrong GPUs.
    created = fake.cli(
        "run",
        "-d",
        "--name",
        "replica-x",
        "--label",
        "vectorlay.replica-id=x",
        "--label",
        "vectorlay.gpus=0000:17:00.0+0000:2a:00.0",
        "--label",
        "note=moved from node-3,vectorlay.gpus=0000:ca:00.0",
        "--label",
        'meta={"a":1,"b":[2,3]}',
        "nginx",
    )
    assert created.returncode == 0, created.stderr
    assert fake.cli("run", "-d", "--name", "unmanaged", "nginx").returncode == 0
    ps = fake.cli("ps", "-a", "--format", "{{json .}}", "--filter", "label=vectorlay.replica-id")
    [line] = ps.stdout.splitlines()
    assert "vectorlay.gpus=0000:ca:00.0" in json.loads(line)["Labels"]

    [state] = await runtime(fake, state_dir).list()

    assert state.replica_id == "x"
    assert state.gpus == ("0000:17:00.0", "0000:2a:00.0")


async def test_a_long_pull_does_not_drown_the_run(fake: FakeNerdctl, state_dir: Path) -> None:
    # nerdctl redraws pull progress every 100 ms for the whole pull.
    fake.set("pull_progress_bytes", 8 * 1024 * 1024)
    state = await runtime(fake, state_dir).run(ContainerSpec("a", "nginx"))
    assert state.status is ReplicaStatus.RUNNING
    fake.set("missing_images", ["docker.io/library/gone:latest"])
    with pytest.raises(ImageNotFound, match="pull access denied"):
        await runtime(fake, state_dir).run(ContainerSpec("b", "gone"))


async def test_a_container_gone_between_ps_and_inspect_is_just_gone(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    rt = runtime(fake, state_dir)
    await rt.run(ContainerSpec("a", "nginx"))
    fake.fail("inspect", "FATA[0000] 1 errors:\nno such container: 0123\n", stdout="[]\n", times=1)
    assert await rt.list() == []


# --- env files and secrets --------------------------------------------------------


async def test_env_values_reach_the_container_and_no_argv(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    rt = runtime(fake, state_dir)
    await rt.run(ContainerSpec("a", "nginx", env=SECRETS))
    await rt.list()
    await rt.stop("a", grace=1)

    # (checked before the stop removed the record)
    run_call = calls_of(fake, "run")[0]
    env_file = run_call.argv[run_call.argv.index("--env-file") + 1]
    assert Path(env_file).parent == state_dir / "env"
    for call in fake.calls():
        for value in SECRETS.values():
            assert all(value not in arg for arg in call.argv), call.argv
        assert "-e" not in call.argv
        assert "--env" not in call.argv
    assert env_files(state_dir) == []
    assert stat.S_IMODE((state_dir / "env").stat().st_mode) == 0o700


async def test_env_file_is_private_and_values_survive(fake: FakeNerdctl, state_dir: Path) -> None:
    await runtime(fake, state_dir).run(ContainerSpec("a", "nginx", env=SECRETS))
    record = fake.container("replica-a")
    assert record is not None
    assert record["env_file_modes"] == ["0o600"]
    assert sorted(record["env"]) == sorted(f"{k}={v}" for k, v in SECRETS.items())
    assert env_files(state_dir) == []


async def test_env_file_removed_after_a_failed_run(fake: FakeNerdctl, state_dir: Path) -> None:
    fake.set("missing_images", ["docker.io/library/nosuch:latest"])
    with pytest.raises(ImageNotFound) as caught:
        await runtime(fake, state_dir).run(ContainerSpec("a", "nosuch", env=SECRETS))
    assert calls_of(fake, "run")
    assert env_files(state_dir) == []
    assert all(value not in str(caught.value) for value in SECRETS.values())


async def test_env_file_removed_after_a_timed_out_run(fake: FakeNerdctl, state_dir: Path) -> None:
    fake.delay("run", 60)
    with pytest.raises(RuntimeTimeout, match="run replica-a"):
        await runtime(fake, state_dir, run_timeout=0.5).run(
            ContainerSpec("a", "nginx", env=SECRETS)
        )
    assert env_files(state_dir) == []
    [run] = calls_of(fake, "run")
    assert not alive(run.pid)


async def test_env_file_removed_when_the_run_is_cancelled(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    fake.delay("run", 60)
    rt = runtime(fake, state_dir)
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.run, ContainerSpec("a", "nginx", env=SECRETS))
        await eventually(lambda: bool(calls_of(fake, "run")) and bool(env_files(state_dir)))
        tg.cancel_scope.cancel()
    assert env_files(state_dir) == []
    [run] = calls_of(fake, "run")
    assert not alive(run.pid)


async def test_values_nerdctl_cannot_carry_never_reach_it(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    with pytest.raises(UnsupportedEnvValue, match="HF_TOKEN") as caught:
        await runtime(fake, state_dir).run(
            ContainerSpec("a", "nginx", env={"HF_TOKEN": "first-line\nsecond-line"})
        )
    assert "first-line" not in str(caught.value)
    assert fake.calls() == []


# --- errors ---------------------------------------------------------------------------


@pytest.fixture(params=["logfmt", "tty"])
def log_format(request: pytest.FixtureRequest, fake: FakeNerdctl) -> str:
    # logfmt is what nerdctl writes to a pipe (the agent's case); tty what the
    # published captures show.
    fake.set("log_format", request.param)
    return str(request.param)


async def test_image_not_found(fake: FakeNerdctl, state_dir: Path, log_format: str) -> None:
    fake.set("missing_images", ["ghcr.io/acme/llm:9.9"])
    with pytest.raises(ImageNotFound) as caught:
        await runtime(fake, state_dir).run(ContainerSpec("a", "ghcr.io/acme/llm:9.9"))
    assert str(caught.value) == (
        "image not found: ghcr.io/acme/llm:9.9 (pull access denied, repository "
        "does not exist or may require authorization: server message: insufficient_scope: "
        "authorization failed)"
    )


async def test_name_in_use_leaves_the_other_container_alone(
    fake: FakeNerdctl, state_dir: Path, log_format: str
) -> None:
    assert fake.cli("run", "-d", "--name", "replica-a", "nginx").returncode == 0
    other = fake.container("replica-a")
    assert other is not None
    with pytest.raises(NameInUse) as caught:
        await runtime(fake, state_dir).run(ContainerSpec("a", "nginx"))
    assert str(caught.value) == f'name "replica-a" is already used by ID "{other["id"]}"'
    assert fake.container("replica-a") == other
    assert calls_of(fake, "rm") == []


async def test_runtime_not_installed_and_its_leftover_removed(
    fake: FakeNerdctl, state_dir: Path, log_format: str
) -> None:
    rt = runtime(fake, state_dir, oci_runtime="io.containerd.kata-fc.v2")
    with pytest.raises(RuntimeNotInstalled) as caught:
        await rt.run(ContainerSpec("a", "nginx", (SLOTS[0],)))
    assert str(caught.value) == (
        "failed to create shim task: failed to start shim: failed to resolve runtime path: "
        'runtime "io.containerd.kata-fc.v2" binary not installed "containerd-shim-kata-fc-v2": '
        "file does not exist: unknown"
    )
    # nerdctl left a Created container holding the name and the GPU label.
    assert [c.argv[1:] for c in calls_of(fake, "rm")] == [["rm", "-f", "replica-a"]]
    assert fake.containers() == []


async def test_snapshotter_not_loaded(fake: FakeNerdctl, state_dir: Path, log_format: str) -> None:
    fake.set("snapshotter_missing", True)
    with pytest.raises(SnapshotterUnavailable, match="snapshotter not loaded: devmapper"):
        await runtime(fake, state_dir).run(ContainerSpec("a", "nginx"))


async def test_other_errors_keep_nerdctls_words(
    fake: FakeNerdctl, state_dir: Path, log_format: str
) -> None:
    capture = FIXTURES / "nerdctl_run_kata_cgroup_permission_denied_with_pull_progress.txt"
    fake.fail("run", capture.read_text())
    with pytest.raises(ContainerRuntimeError) as caught:
        await runtime(fake, state_dir).run(ContainerSpec("a", "nginx"))
    assert type(caught.value) is ContainerRuntimeError
    assert str(caught.value) == (
        "failed to create shim task: Could not create the sandbox resource controller "
        "mkdir /sys/fs/cgroup/systemd/vc: permission denied: unknown"
    )


async def test_nerdctl_missing(tmp_path: Path) -> None:
    rt = NerdctlRuntime(nerdctl=str(tmp_path / "no-nerdctl"), env_dir=tmp_path / "env")
    with pytest.raises(RuntimeNotInstalled, match="No such file or directory"):
        await rt.list()
    with pytest.raises(RuntimeNotInstalled):
        await rt.run(ContainerSpec("a", "nginx", env={"K": "v"}))
    assert list((tmp_path / "env").iterdir()) == []


async def test_removal_failure_is_reported(fake: FakeNerdctl, state_dir: Path) -> None:
    rt = runtime(fake, state_dir)
    await rt.run(ContainerSpec("a", "nginx"))
    # With -f nerdctl only logs the error and exits 0.
    fake.fail("rm", "ERRO[0000] 1 errors:\nunknown container status pausing\n", rc=0)
    with pytest.raises(ContainerRuntimeError, match=r"^unknown container status pausing$"):
        await rt.stop("a", grace=1)


# --- stop timing ----------------------------------------------------------------------


async def test_stop_waits_out_the_grace_of_a_container_ignoring_sigterm(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    fake.ignore_sigterm("replica-s")
    rt = runtime(fake, state_dir, call_timeout=0.5)
    await rt.run(ContainerSpec("s", "nginx"))
    await rt.stop("s", grace=1.2)  # -t 2: nerdctl's SIGKILL comes after 2 s, > call_timeout
    [stop] = calls_of(fake, "stop")
    assert stop.argv[1:] == ["stop", "-t", "2", "replica-s"]
    assert stop.rc == 0
    assert fake.containers() == []


async def test_a_hung_stop_falls_back_to_forced_removal(fake: FakeNerdctl, state_dir: Path) -> None:
    rt = runtime(fake, state_dir, call_timeout=0.5)
    await rt.run(ContainerSpec("a", "nginx"))
    fake.delay("stop", 60)
    await rt.stop("a", grace=0)
    assert fake.containers() == []
    [stop] = calls_of(fake, "stop")
    assert not alive(stop.pid)


# --- hung calls and concurrency ---------------------------------------------------------


async def test_a_hung_call_times_out_while_a_ticker_keeps_ticking(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    fake.delay("ps", 60)
    rt = runtime(fake, state_dir, call_timeout=0.5)
    ticks = 0

    async def ticker() -> None:  # stands for the heartbeat loop
        nonlocal ticks
        while True:
            await anyio.sleep(0.02)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with pytest.raises(RuntimeTimeout, match=r"ps did not finish within 0\.5 s"):
            await rt.list()
        tg.cancel_scope.cancel()
    assert ticks >= 10
    [ps] = calls_of(fake, "ps")
    assert not alive(ps.pid)


async def test_a_hung_run_does_not_hold_up_other_replicas(
    fake: FakeNerdctl, state_dir: Path
) -> None:
    fake.delay("run", 60, match="replica-slow")
    rt = runtime(fake, state_dir, run_timeout=3.0)
    finished: list[str] = []

    async def slow() -> None:
        with pytest.raises(RuntimeTimeout):
            await rt.run(ContainerSpec("slow", "nginx", env={"K": "v"}))
        finished.append("slow")

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await eventually(lambda: bool(calls_of(fake, "run", "replica-slow")))
        await rt.run(ContainerSpec("fast", "nginx"))
        assert [s.replica_id for s in await rt.list()] == ["fast"]
        await rt.stop("fast", grace=1)
        finished.append("fast")
    assert finished == ["fast", "slow"]
    assert fake.containers() == []


async def test_two_replicas_start_in_parallel(fake: FakeNerdctl, state_dir: Path) -> None:
    fake.delay("run", 0.5)
    rt = runtime(fake, state_dir)
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.run, ContainerSpec("a", "nginx", (SLOTS[0],)))
        tg.start_soon(rt.run, ContainerSpec("b", "nginx", (SLOTS[1],)))
    assert max_overlap(calls_of(fake, "run")) == 2
    assert {s.replica_id: s.gpus for s in await rt.list()} == {
        "a": ("0000:17:00.0",),
        "b": ("0000:2a:00.0",),
    }


async def test_calls_for_one_replica_are_serialized(fake: FakeNerdctl, state_dir: Path) -> None:
    fake.delay("run", 0.4)
    rt = runtime(fake, state_dir)
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.run, ContainerSpec("a", "nginx"))
        await eventually(lambda: bool(calls_of(fake, "run")))
        tg.start_soon(partial(rt.stop, "a", grace=1.0))
    [run] = calls_of(fake, "run")
    [stop] = calls_of(fake, "stop")
    assert run.end is not None
    assert stop.start >= run.end
    assert fake.containers() == []


async def test_concurrency_is_bounded(fake: FakeNerdctl, state_dir: Path) -> None:
    fake.delay("run", 0.4)
    rt = runtime(fake, state_dir, max_concurrency=2)
    async with anyio.create_task_group() as tg:
        for rid in ("a", "b", "c", "d"):
            tg.start_soon(rt.run, ContainerSpec(rid, "nginx"))
    assert max_overlap(calls_of(fake, "run")) == 2
    assert len(await rt.list()) == 4


# --- adoption -----------------------------------------------------------------------------


async def test_adoption_after_an_agent_restart(fake: FakeNerdctl, state_dir: Path) -> None:
    before = runtime(fake, state_dir)
    await before.run(ContainerSpec("llm", "ghcr.io/acme/llm:1.2", SLOTS[:2]))
    await before.run(ContainerSpec("batch", "ghcr.io/acme/batch:3", (SLOTS[2],)))
    fake.exit("replica-batch", 0)
    del before  # the agent process ends; the containers do not

    after = runtime(fake, state_dir)
    states = await after.list()
    table = ReplicaTable.adopt(SLOTS, states)

    assert [(r.replica_id, r.status, r.gpus) for r in table.replicas()] == [
        ("batch", ReplicaStatus.EXITED, ("0000:ca:00.0",)),
        ("llm", ReplicaStatus.RUNNING, ("0000:17:00.0", "0000:2a:00.0")),
    ]
    assert table.held() == {"0000:17:00.0": "llm", "0000:2a:00.0": "llm"}
    assert table.free_slots() == [SLOTS[2]]
    decision = table.deploy(DeployPayload("more", "nginx", gpu_count=2))
    assert decision == ReportResult(
        "more", ReplicaStatus.FAILED, "not enough free GPUs: 2 requested, 1 free"
    )
    assert table.double_assigned() == {}
    # Nothing was restarted: one run per replica, all by the first instance.
    assert len(calls_of(fake, "run")) == 2
