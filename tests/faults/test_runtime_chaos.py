"""Runtime chaos: a nerdctl that hangs, fails, is slow or prints garbage.

Invariants: heartbeats keep their cadence, one replica's hung call never
holds up another's, and every failure comes back as a result with an error
that says what happened (nerdctl's reason where it gave one), never a
made-up success and never a piece of an env value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.nerdctl.testing import install, runtime
from tests.faults.inproc import heartbeat_times
from tests.faults.recording import max_gap
from tests.faults.scenarios import CADENCE, runtime_chaos
from vectorlay.domain.agent.replicas import ContainerSpec
from vectorlay.errors import ContainerRuntimeError

pytestmark = pytest.mark.faults


def test_the_agent_process_under_runtime_chaos(tmp_path: Path, rounds: int, seed: int) -> None:
    tally = runtime_chaos(tmp_path, rounds, seed)
    assert tally.clean, tally.report()


async def test_a_hung_container_list_never_delays_a_heartbeat() -> None:
    # Resyncs every 3 beats; from the first heartbeat on, every list() hangs.
    times = await heartbeat_times(
        interval=30.0, duration=300.0, resync_interval=90.0, hang_list=True
    )
    assert len(times) >= 10
    assert max_gap(times) <= CADENCE * 30.0


async def test_slow_host_metrics_never_delay_a_heartbeat() -> None:
    # --heartbeat-interval 5 (the docs' example) and nvidia-smi hung until its timeout.
    times = await heartbeat_times(interval=5.0, duration=60.0, probe_delay=5.0)
    assert max_gap(times) <= CADENCE * 5.0


async def test_a_run_that_claims_success_without_a_container_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    fake.fail("run", "", rc=0, stdout="\x00garbage, not a container id\n", times=1)
    rt = runtime(fake, tmp_path / "state")
    with pytest.raises(ContainerRuntimeError, match="no container replica-ghost-1 exists"):
        await rt.run(ContainerSpec("ghost-1", "busybox"))
    assert fake.containers() == []


@pytest.mark.parametrize(
    ("before", "value"),
    [
        ("x" * 380 + " bad env K=", "q9zsekret-cut-at-the-limit-0123456789"),
        ("failed to create shim task: bad env K=", "q9zsekret  two spaces\tand a tab z"),
    ],
)
async def test_a_nerdctl_error_never_carries_a_piece_of_an_env_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str, value: str
) -> None:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    fake.fail("run", f'FATA[0000] {before}{value} "{value}"\n', times=1)
    rt = runtime(fake, tmp_path / "state")
    with pytest.raises(ContainerRuntimeError) as caught:
        await rt.run(ContainerSpec("leaky-1", "busybox", env={"K": value}))
    text = str(caught.value)
    assert "q9zse" not in text
    assert "<redact" in text
