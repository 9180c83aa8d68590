"""The image adapter on the fake nerdctl: list, what is used, remove, the in-use conflict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.nerdctl.fake_nerdctl import FakeNerdctl
from tests.fakes.nerdctl.testing import install, runtime
from vectorlay.adapters.runtime.images import NerdctlImages
from vectorlay.adapters.runtime.nerdctl import is_in_use
from vectorlay.domain.agent.replicas import ContainerSpec
from vectorlay.errors import ContainerRuntimeError

pytestmark = pytest.mark.integration

LLM = "ghcr.io/acme/llm:1.2"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNerdctl]:
    fake = install(tmp_path / "nerdctl", monkeypatch)
    yield fake
    fake.close()


async def test_list_use_and_remove(fake: FakeNerdctl, tmp_path: Path) -> None:
    fake.add_image("nginx", 211_900_000)
    fake.set("pull_size_bytes", 12_340_000_000)
    rt = runtime(fake, tmp_path / "state")
    await rt.run(ContainerSpec("r1", LLM))  # pulls the image
    images = NerdctlImages(nerdctl=str(fake.executable))

    listed = {i.ref: i.size_bytes for i in await images.images()}
    assert listed == {"docker.io/library/nginx:latest": 211_900_000, LLM: 12_340_000_000}
    assert LLM in await images.images_in_use()

    # Running: refused, in nerdctl's words.
    with pytest.raises(ContainerRuntimeError) as running:
        await images.remove_image(LLM)
    assert str(running.value).startswith(f"conflict: unable to delete {LLM} (cannot be forced)")
    assert is_in_use(str(running.value))

    # A stopped container of another program still holds it.
    fake.exit("replica-r1", 0)
    with pytest.raises(ContainerRuntimeError) as stopped:
        await images.remove_image(LLM)
    assert "(must be forced) - image is being used by stopped container" in str(stopped.value)
    assert LLM in fake.images()

    await rt.stop("r1", grace=1)  # stop removes the container
    assert LLM not in await images.images_in_use()
    await images.remove_image(LLM)
    assert fake.images() == ["docker.io/library/nginx:latest"]
    await images.remove_image("docker.io/library/nginx:latest")
    assert await images.images() == []


async def test_removing_a_missing_image_is_an_error(fake: FakeNerdctl) -> None:
    images = NerdctlImages(nerdctl=str(fake.executable))
    with pytest.raises(ContainerRuntimeError, match=r"no such image: docker\.io/library/gone:1"):
        await images.remove_image("docker.io/library/gone:1")
