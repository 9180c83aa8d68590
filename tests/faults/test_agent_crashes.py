"""Agent crashes: SIGKILL before, during and after the nerdctl call, then restart.

Invariants: node.json intact, replicas adopted (never restarted), no GPU
held by two running containers (their ``vectorlay.gpus`` labels), no env
file left in ``<state>/env``, and the control plane's view converges: every
replica it asked for runs, every one it stopped is gone, no command waits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import agent_crashes

pytestmark = pytest.mark.faults


def test_sigkill_at_any_point_of_deploy_and_stop(tmp_path: Path, rounds: int, seed: int) -> None:
    tally = agent_crashes(tmp_path, max(rounds, 4), seed, points=("before", "during", "after"))
    assert tally.clean, tally.report()


def test_a_deploy_racing_the_dead_agents_nerdctl_call(tmp_path: Path, seed: int) -> None:
    tally = agent_crashes(tmp_path, 1, seed, points=("racing",), converge_timeout=8.0)
    if not tally.info["races reached (nerdctl run)"]:
        pytest.skip(f"the race was not reached: {tally.report()}")
    assert tally.clean, tally.report()
