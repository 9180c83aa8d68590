"""Control-plane chaos: the control plane restarted (SIGKILL or SIGTERM) while deploys
and stops are in flight on a slow runtime.

Seen from the control plane's side of the wire (a relay records every
message): every command it sent is answered, never more often than sent;
its view converges; no replica gets a second container; and the agent never
stops a replica because the control plane went away.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import control_plane_chaos

pytestmark = pytest.mark.faults


def test_restarts_with_commands_in_flight(tmp_path: Path, rounds: int, seed: int) -> None:
    tally = control_plane_chaos(tmp_path, rounds, seed)
    assert tally.clean, tally.report()
    assert tally.info["agent sessions"] > rounds  # the agent came back after every restart
