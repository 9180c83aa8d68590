"""One liveness policy for both ends: the control plane's deadline, the agent's probe."""

from __future__ import annotations

import math

import pytest

from vectorlay.domain.agent.heartbeat import HeartbeatPolicy
from vectorlay.domain.liveness import DEFAULT_OFFLINE_AFTER, LivenessPolicy, Verdict

ALIVE, PROBE, PROBED, GONE = Verdict.ALIVE, Verdict.PROBE, Verdict.PROBED, Verdict.GONE


def agent_side(interval: float = 30.0, pong_timeout: float = 10.0) -> LivenessPolicy:
    """The policy the agent's transport builds: ping after 2 intervals, then wait for the pong."""
    heartbeat = HeartbeatPolicy(interval=interval, pong_timeout=pong_timeout)
    return LivenessPolicy(
        offline_after=heartbeat.ping_after + heartbeat.pong_timeout,
        probe_timeout=heartbeat.pong_timeout,
    )


def test_default_matches_the_protocol() -> None:
    assert DEFAULT_OFFLINE_AFTER == 60.0
    assert LivenessPolicy() == LivenessPolicy(offline_after=60.0, probe_timeout=0.0)


# --- the control plane's side: a deadline, no probe -------------------------------


def test_liveness_is_an_exact_60_second_deadline() -> None:
    policy = LivenessPolicy()
    last_seen = 12_345.5
    assert policy.deadline(last_seen) == 12_405.5
    assert not policy.is_offline(last_seen, last_seen + 30.0)  # no 30 s sweep rounding
    assert not policy.is_offline(last_seen, last_seen + 59.999)
    assert not policy.is_offline(last_seen, math.nextafter(last_seen + 60.0, 0.0))
    assert policy.is_offline(last_seen, last_seen + 60.0)
    assert policy.is_offline(last_seen, last_seen + 61.0)


def test_a_new_frame_moves_the_deadline() -> None:
    policy = LivenessPolicy(offline_after=60)
    assert policy.is_offline(0.0, 60.0)
    assert not policy.is_offline(59.0, 60.0)
    assert policy.deadline(59.0) == 119.0


def test_liveness_deadline_is_configurable() -> None:
    policy = LivenessPolicy(offline_after=0.5)
    assert policy.is_offline(10.0, 10.5)
    assert not policy.is_offline(10.0, 10.49)


@pytest.mark.parametrize("now", [0.0, 30.0, 59.999, math.nextafter(60.0, 0.0), 60.0, 61.0, 1e6])
def test_without_a_probe_the_verdict_is_the_deadline(now: float) -> None:
    policy = LivenessPolicy(offline_after=60)
    assert policy.verdict(last_heard=0.0, now=now) is (
        GONE if policy.is_offline(0.0, now) else ALIVE
    )
    assert policy.next_check(last_heard=0.0) == policy.deadline(0.0) == 60.0


@pytest.mark.parametrize("value", [0, -1, math.nan])
def test_liveness_rejects_non_positive(value: float) -> None:
    with pytest.raises(ValueError, match="offline_after"):
        LivenessPolicy(offline_after=value)


@pytest.mark.parametrize("probe_timeout", [-1.0, math.nan, 60.5, math.inf])
def test_liveness_rejects_a_probe_timeout_outside_the_deadline(probe_timeout: float) -> None:
    with pytest.raises(ValueError, match="probe_timeout"):
        LivenessPolicy(offline_after=60, probe_timeout=probe_timeout)


# --- the agent's side: a ping before the deadline, then the pong's timeout ---------


def test_agent_pings_after_two_silent_intervals_and_gives_up_after_the_pong_timeout() -> None:
    policy = agent_side(interval=30, pong_timeout=10)
    assert policy.probe_due(1000.0) == 1060.0
    assert policy.deadline(1000.0) == 1070.0
    assert policy.next_check(last_heard=1000.0) == 1060.0


def test_probe_boundary() -> None:
    policy = agent_side(interval=30, pong_timeout=10)
    last = 1000.0
    assert policy.verdict(last_heard=last, now=last) is ALIVE
    assert policy.verdict(last_heard=last, now=last + 59.999) is ALIVE
    assert policy.verdict(last_heard=last, now=math.nextafter(last + 60.0, 0.0)) is ALIVE
    assert policy.verdict(last_heard=last, now=last + 60.0) is PROBE
    assert policy.verdict(last_heard=last, now=last + 10_000) is PROBE  # never gone unprobed


def test_unanswered_probe_boundary() -> None:
    policy = agent_side(interval=30, pong_timeout=10)
    last, probed = 1000.0, 1060.0
    assert policy.next_check(last_heard=last, probed_at=probed) == 1070.0
    assert policy.verdict(last_heard=last, now=probed, probed_at=probed) is PROBED
    assert policy.verdict(last_heard=last, now=1069.999, probed_at=probed) is PROBED
    assert policy.verdict(last_heard=last, now=math.nextafter(1070.0, 0.0), probed_at=probed) is (
        PROBED
    )
    assert policy.verdict(last_heard=last, now=1070.0, probed_at=probed) is GONE
    assert policy.verdict(last_heard=last, now=10_000.0, probed_at=probed) is GONE


def test_any_frame_since_the_probe_answers_it() -> None:
    policy = agent_side(interval=30, pong_timeout=10)
    probed = 1060.0
    for heard in (probed, 1060.001, 1069.0):
        assert policy.verdict(last_heard=heard, now=1070.0, probed_at=probed) is ALIVE
        assert policy.next_check(last_heard=heard, probed_at=probed) == heard + 60.0
    # A frame from before the probe does not.
    assert policy.verdict(last_heard=1059.0, now=1070.0, probed_at=probed) is GONE


def test_a_late_probe_still_gets_its_full_timeout() -> None:
    # A busy writer held the ping back 5 s past its due time.
    policy = agent_side(interval=30, pong_timeout=10)
    last, probed = 1000.0, 1065.0
    assert policy.is_offline(last, 1070.0)
    assert policy.verdict(last_heard=last, now=1070.0, probed_at=probed) is PROBED
    assert policy.verdict(last_heard=last, now=1075.0, probed_at=probed) is GONE


def test_a_probe_timeout_as_long_as_the_deadline_probes_at_once() -> None:
    policy = LivenessPolicy(offline_after=10, probe_timeout=10)
    assert policy.verdict(last_heard=5.0, now=5.0) is PROBE
