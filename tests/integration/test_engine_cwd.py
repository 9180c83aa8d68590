"""The engine runs in the env directory, and a relative engine path still finds it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl
from tests.fakes.nerdctl.testing import calls_of, install
from vectorlay.adapters.runtime import EngineRuntime
from vectorlay.domain.agent.replicas import ContainerSpec

pytestmark = pytest.mark.integration


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNerdctl]:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    yield fake
    fake.close()


async def test_a_relative_engine_path_is_kept_relative_to_where_the_agent_started(
    fake: FakeNerdctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(fake.executable.parent)
    relative = os.path.join(".", fake.executable.name)
    rt = EngineRuntime(cli=relative, env_dir=tmp_path / "state" / "env")
    monkeypatch.chdir(tmp_path)
    state = await rt.run(ContainerSpec("rel-1", "nginx"))
    assert state.replica_id == "rel-1"
    assert len(calls_of(fake, "run")) == 1
