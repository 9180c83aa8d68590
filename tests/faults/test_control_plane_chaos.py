"""Control-plane chaos: the control plane restarted (SIGKILL or SIGTERM) while deploys
and stops are in flight on a slow runtime.

Seen from the control plane's side of the wire (a relay records every
message): every command it sent is answered, never more often than sent;
its view converges; no replica gets a second container; and the agent never
stops a replica because the control plane went away.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.faults.scenarios import (
    CP_INTERVAL,
    GOOD_SESSION,
    RECONNECT_WAIT,
    control_plane_chaos,
)
from vectorlay.domain.agent.heartbeat import ReconnectPolicy, backoff, good_session

pytestmark = pytest.mark.faults

RECONNECT_DELAY = 0.2  # the --reconnect-delay of the agents these scenarios start


def test_restarts_with_commands_in_flight(tmp_path: Path, rounds: int, seed: int) -> None:
    tally = control_plane_chaos(tmp_path, rounds, seed)
    assert tally.clean, tally.report()
    assert tally.info["agent sessions"] > rounds  # the agent came back after every restart


def test_the_wait_for_a_restarted_node_outlasts_the_agents_longest_backoff() -> None:
    """Restarts less than a heartbeat interval into each session grow the agent's wait.

    Each short session and each refused handshake while the control plane is
    down is one more failed attempt, so after a few rounds the agent may
    wait over 30 s, the time the scenario once gave the node to come back
    (its deploys then got HTTP 409, no online node).  The scenario now waits
    past the backoff cap and lets every session last long enough to reset it.
    """
    waits = list(itertools.islice(backoff(ReconnectPolicy(RECONNECT_DELAY), lambda: 0.999), 12))
    assert max(waits[:8]) > 30.0
    assert max(waits) + 15.0 < RECONNECT_WAIT  # then connect, probe the host, system_info
    assert good_session(system_info_sent=True, connected_for=GOOD_SESSION, interval=CP_INTERVAL)
