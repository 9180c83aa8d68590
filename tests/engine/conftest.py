"""Real-engine tests: Podman (and the Docker CLI against Podman's service) on this machine.

The session fixture sets Podman up with ``scripts/setup-podman.sh`` (or finds
it ready); where that cannot be done (not root, no apt-get) every test here
is skipped with the script's reason.  ``-m "not engine"`` leaves them out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support import engine as real


@pytest.fixture(scope="session")
def engines_ready() -> dict[str, real.Engine | str]:
    reason = real.prepare()
    if reason is not None:
        pytest.skip(f"no real container engine: {reason}")
    return real.engines_here()


@pytest.fixture(params=["podman", "docker"])
def engine(
    request: pytest.FixtureRequest, engines_ready: dict[str, real.Engine | str]
) -> real.Engine:
    found = engines_ready[str(request.param)]
    if isinstance(found, str):
        pytest.skip(f"{request.param}: {found}")
    return found


@pytest.fixture
def podman_engine(engines_ready: dict[str, real.Engine | str]) -> real.Engine:
    found = engines_ready["podman"]
    if isinstance(found, str):
        pytest.skip(f"podman: {found}")
    return found


class Names:
    """Unique replica ids for one test; their containers are removed when it ends."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def __call__(self, label: str) -> str:
        rid = f"{self.prefix}-{label}"
        self.made.append(rid)
        return rid

    def containers(self) -> list[str]:
        return [f"replica-{rid}" for rid in self.made]


@pytest.fixture
def rids() -> Iterator[Names]:
    names = Names()
    yield names
    real.remove(names.containers())
