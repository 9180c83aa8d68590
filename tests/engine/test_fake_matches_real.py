"""The fake nerdctl against real Podman: one command sequence, the same parsed results.

The fake stays the engine of the fast and fault-injecting tests; this keeps
it from drifting away from a real engine on what both do (run, name in use,
an exit with its code, a container removed by hand, stop, stop again).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from tests.engine.conftest import Names
from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl
from tests.fakes.nerdctl.testing import install
from tests.support import engine as real
from vectorlay.adapters.runtime import EngineRuntime
from vectorlay.domain.agent.replicas import ContainerSpec, ContainerState, GpuSlot, container_name
from vectorlay.errors import ContainerRuntimeError

pytestmark = [pytest.mark.engine, pytest.mark.integration]

GROUP = "4243"
Row = tuple[str, str, int | None, tuple[str, ...], str]


@pytest.fixture
def vfio_group() -> Iterator[str]:
    made = real.make_device(GROUP)
    yield GROUP
    real.remove_device(made)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNerdctl]:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    yield fake
    fake.close()


async def sequence(
    rt: EngineRuntime,
    rid: Callable[[str], str],
    remove_by_hand: Callable[[str], None],
    group: str,
) -> list[object]:
    """The commands, and what the runtime made of each answer."""
    prefix = rid("")

    def rows(states: list[ContainerState] | ContainerState) -> list[Row]:
        items = states if isinstance(states, list) else [states]
        return sorted(
            (
                s.replica_id.removeprefix(prefix),
                s.status.value,
                s.exit_code,
                s.gpus,
                s.image,
            )
            for s in items
            if s.replica_id.startswith(prefix)
        )

    async def attempt(call: Awaitable[object]) -> str:
        try:
            await call
        except ContainerRuntimeError as exc:
            return type(exc).__name__
        return "ok"

    async def listed() -> list[Row]:
        return rows(list(await rt.list()))

    seen: list[object] = []
    gpu = GpuSlot("0000:17:00.0", group)
    seen.append(rows(await rt.run(ContainerSpec(rid("a"), real.IMAGE, (gpu,), {"MODEL": "m"}))))
    seen.append(await attempt(rt.run(ContainerSpec(rid("a"), real.IMAGE))))
    # Ends by itself after a second with code 3 (the image reads VL_*; the
    # fake is told the same with exit_after).
    exiting = ContainerSpec(rid("b"), real.IMAGE, env={"VL_SLEEP": "1", "VL_EXIT": "3"})
    seen.append(rows(await rt.run(exiting)))
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        if any(row[0] == "b" and row[1] != "running" for row in await listed()):
            break
        await anyio.sleep(0.2)
    seen.append(await listed())
    seen.append(rows(await rt.run(ContainerSpec(rid("c"), real.IMAGE))))
    remove_by_hand(container_name(rid("c")))
    seen.append(await listed())
    seen.append(await attempt(rt.stop(rid("a"), grace=5)))
    seen.append(await listed())
    seen.append(await attempt(rt.stop(rid("a"), grace=5)))
    seen.append(await attempt(rt.stop(rid("b"), grace=5)))
    seen.append(await listed())
    return seen


async def test_the_fake_answers_as_podman_does(
    podman_engine: real.Engine,
    fake: FakeNerdctl,
    rids: Names,
    tmp_path: Path,
    vfio_group: str,
) -> None:
    fake.exit_after("-b", 1.0, 3)

    def fake_rm(name: str) -> None:
        assert fake.cli("rm", "-f", name).returncode == 0

    def podman_rm(name: str) -> None:
        result = real.podman("rm", "-f", "-t", "0", name)
        assert result.returncode == 0, result.stderr

    fake_rt = EngineRuntime(cli=str(fake.executable), env_dir=tmp_path / "fake-env")
    podman_rt = EngineRuntime(
        engine="podman",
        cli=podman_engine.cli,
        oci_runtime=podman_engine.oci_runtime,
        env_dir=tmp_path / "podman-env",
    )
    from_fake = await sequence(fake_rt, lambda s: f"fk-{rids.prefix}-{s}", fake_rm, vfio_group)
    from_podman = await sequence(podman_rt, rids, podman_rm, vfio_group)
    assert from_fake == from_podman
    # And what both said is what the contract says.
    running_a = ("a", "running", None, ("0000:17:00.0",), real.IMAGE)
    failed_b = ("b", "failed", 3, (), real.IMAGE)
    assert from_podman == [
        [running_a],
        "NameInUse",
        [("b", "running", None, (), real.IMAGE)],
        [running_a, failed_b],
        [("c", "running", None, (), real.IMAGE)],
        [running_a, failed_b],
        "ok",
        [failed_b],
        "ok",
        "ok",
        [],
    ]
