"""Containers removed or killed behind the agents' backs, two agent identities on one host.

Invariants (tests/faults/truth.py): the control plane's view converges to
the runtime's within 2 heartbeat intervals; no container is stopped by an
agent nobody asked; labels name the node the control plane has each
container on; one container per replica, no GPU held twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.truth import behind_the_back

pytestmark = pytest.mark.faults


def test_containers_removed_and_killed_behind_the_agents_backs(
    tmp_path: Path, rounds: int, seed: int
) -> None:
    tally = behind_the_back(tmp_path, max(rounds, 4), seed)
    assert tally.clean, tally.report()
