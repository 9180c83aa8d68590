"""The agent's timing: heartbeat and keepalive figures, reconnect backoff, close actions."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vectorlay.domain.agent.heartbeat import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_RECONNECT_CAP,
    DEFAULT_RECONNECT_DELAY,
    CloseAction,
    HeartbeatPolicy,
    ReconnectPolicy,
    backoff,
    good_session,
    on_close,
)
from vectorlay.domain.closecodes import (
    CLOSE_GOING_AWAY,
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_SESSION_CONFLICT,
    CLOSE_UNAUTHORIZED,
)

LOWEST = 0.0
HIGHEST = math.nextafter(1.0, 0.0)  # the largest float random() can return


def const(value: float) -> Callable[[], float]:
    return lambda: value


def first(n: int, policy: ReconnectPolicy, rand: Callable[[], float]) -> list[float]:
    return list(itertools.islice(backoff(policy, rand), n))


# --- defaults -----------------------------------------------------------------


def test_defaults_match_the_protocol() -> None:
    assert DEFAULT_HEARTBEAT_INTERVAL == 30.0
    assert DEFAULT_RECONNECT_DELAY == 5.0
    assert DEFAULT_RECONNECT_CAP == 60.0
    assert HeartbeatPolicy().interval == 30.0
    assert HeartbeatPolicy().pong_timeout == 10.0
    assert ReconnectPolicy() == ReconnectPolicy(first_delay=5.0, cap=60.0)


# --- heartbeat policy -----------------------------------------------------------


def test_ping_after_two_silent_intervals() -> None:
    policy = HeartbeatPolicy(interval=30, pong_timeout=10)
    assert policy.ping_after == 60.0
    assert HeartbeatPolicy(interval=0.25).ping_after == 0.5


@pytest.mark.parametrize(
    ("interval", "pong"), [(0, 10), (-1, 10), (math.nan, 10), (30, 0), (30, -5), (30, math.nan)]
)
def test_heartbeat_policy_rejects_non_positive_values(interval: float, pong: float) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        HeartbeatPolicy(interval=interval, pong_timeout=pong)


# --- reconnect backoff ------------------------------------------------------------


@pytest.mark.parametrize("rand", [LOWEST, 0.5, HIGHEST])
def test_first_delay_is_at_least_the_configured_delay_and_within_its_window(rand: float) -> None:
    policy = ReconnectPolicy(first_delay=5, cap=60)
    delay = first(1, policy, const(rand))[0]
    # Float rounding may land the top of the window on its bound, never past it.
    assert 5.0 <= delay <= 10.0
    assert delay == 5.0 + rand * 5.0


def test_lowest_random_gives_exactly_the_configured_delay_every_time() -> None:
    assert first(10, ReconnectPolicy(first_delay=5, cap=60), const(LOWEST)) == [5.0] * 10


def test_highest_random_grows_exponentially_to_just_below_the_cap() -> None:
    delays = first(8, ReconnectPolicy(first_delay=5, cap=60), const(HIGHEST))
    ceilings = [10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0, 60.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert delay <= ceiling
        assert delay == pytest.approx(ceiling, rel=1e-9)
    assert delays == sorted(delays)


@pytest.mark.parametrize("attempt", range(8))
def test_jitter_range_per_attempt(attempt: int) -> None:
    policy = ReconnectPolicy(first_delay=5, cap=60)
    ceiling = min(60.0, 5.0 * 2 * 2**attempt)
    assert policy.window(attempt) == ceiling - 5.0
    low = first(attempt + 1, policy, const(LOWEST))[-1]
    high = first(attempt + 1, policy, const(HIGHEST))[-1]
    assert low == 5.0
    assert 5.0 <= high <= ceiling
    assert high - low == pytest.approx(policy.window(attempt), rel=1e-9)


def test_jitter_uses_the_random_source_once_per_attempt() -> None:
    draws = iter([0.0, 0.25, 0.5, 0.75])
    delays = first(4, ReconnectPolicy(first_delay=1, cap=100), lambda: next(draws))
    assert delays == [1.0, 1.0 + 0.25 * 3, 1.0 + 0.5 * 7, 1.0 + 0.75 * 15]


def test_seeded_random_is_deterministic_and_spreads_a_fleet() -> None:
    policy = ReconnectPolicy()
    a = first(20, policy, random.Random(42).random)
    b = first(20, policy, random.Random(42).random)
    c = first(20, policy, random.Random(43).random)
    assert a == b
    assert a != c
    # Agents that lost the control plane at the same instant do not retry together.
    fleet = {first(1, policy, random.Random(seed).random)[0] for seed in range(100)}
    assert len(fleet) == 100


@given(
    st.floats(min_value=0, max_value=120),
    st.floats(min_value=0, max_value=600),
    st.integers(min_value=1, max_value=200),
    st.randoms(use_true_random=False),
)
def test_every_delay_is_between_first_delay_and_cap(
    first_delay: float, extra: float, n: int, rng: random.Random
) -> None:
    policy = ReconnectPolicy(first_delay=first_delay, cap=first_delay + extra)
    for delay in first(n, policy, rng.random):
        assert first_delay <= delay <= policy.cap


def test_reset_is_a_new_generator() -> None:
    policy = ReconnectPolicy(first_delay=5, cap=60)
    old = backoff(policy, const(HIGHEST))
    grown = [next(old) for _ in range(5)]
    assert grown[-1] > 59
    fresh = backoff(policy, const(HIGHEST))
    assert next(fresh) <= 10.0
    assert next(old) > 59  # the old one keeps its place


@pytest.mark.parametrize("attempt", [63, 64, 65, 1_000, 10**6, 10**18])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    policy = ReconnectPolicy(first_delay=5, cap=60)
    assert policy.window(attempt) == 55.0


def test_long_running_generator_stays_capped() -> None:
    delays = first(5_000, ReconnectPolicy(first_delay=5, cap=60), const(HIGHEST))
    assert max(delays) <= 60.0
    assert all(math.isfinite(d) for d in delays)


def test_huge_first_delay_does_not_overflow() -> None:
    policy = ReconnectPolicy(first_delay=1e300, cap=1e300)
    assert first(3, policy, const(HIGHEST)) == [1e300] * 3


def test_cap_equal_to_first_delay_means_no_jitter() -> None:
    assert first(5, ReconnectPolicy(first_delay=7, cap=7), const(HIGHEST)) == [7.0] * 5


@pytest.mark.parametrize(
    ("first_delay", "cap"), [(-1, 60), (math.nan, 60), (5, 4), (5, math.nan), (61, 60)]
)
def test_reconnect_policy_rejects_bad_values(first_delay: float, cap: float) -> None:
    with pytest.raises(ValueError, match="reconnect"):
        ReconnectPolicy(first_delay=first_delay, cap=cap)


# --- what resets backoff, what a close code means ---------------------------------


def test_good_session_needs_system_info_and_one_interval() -> None:
    assert good_session(system_info_sent=True, connected_for=30.0, interval=30.0)
    assert good_session(system_info_sent=True, connected_for=31.0, interval=30.0)
    assert not good_session(system_info_sent=True, connected_for=29.99, interval=30.0)
    assert not good_session(system_info_sent=False, connected_for=3600.0, interval=30.0)
    assert not good_session(system_info_sent=False, connected_for=0.0, interval=30.0)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (CLOSE_HEARTBEAT_TIMEOUT, CloseAction.RECONNECT),
        (CLOSE_UNAUTHORIZED, CloseAction.EXIT),
        (CLOSE_SESSION_CONFLICT, CloseAction.RECONNECT),
        (CLOSE_GOING_AWAY, CloseAction.RECONNECT),
        (1000, CloseAction.RECONNECT),
        (1006, CloseAction.RECONNECT),
        (1009, CloseAction.RECONNECT),
        (1011, CloseAction.RECONNECT),
        (4000, CloseAction.RECONNECT),
        (4400, CloseAction.RECONNECT),
        (4403, CloseAction.RECONNECT),
        (4999, CloseAction.RECONNECT),
    ],
)
def test_on_close(code: int, action: CloseAction) -> None:
    assert on_close(code) is action


@pytest.mark.parametrize("rand", [LOWEST, 0.5, HIGHEST])
def test_after_4409_the_retry_waits_at_least_the_reconnect_delay(rand: float) -> None:
    # The protocol asks for at least the reconnect delay after 4409: the
    # backoff's floor gives it, with no step of its own.
    assert on_close(CLOSE_SESSION_CONFLICT) is CloseAction.RECONNECT
    policy = ReconnectPolicy(first_delay=5, cap=60)
    assert min(first(50, policy, const(rand))) >= 5.0
    assert first(1, policy, const(LOWEST)) == [5.0]


def test_close_code_values_match_the_protocol() -> None:
    assert (CLOSE_HEARTBEAT_TIMEOUT, CLOSE_UNAUTHORIZED, CLOSE_SESSION_CONFLICT) == (
        4001,
        4401,
        4409,
    )
    assert CLOSE_GOING_AWAY == 1001


def test_zero_reconnect_delay_still_backs_off() -> None:
    policy = ReconnectPolicy(first_delay=0.0)
    windows = [policy.window(n) for n in range(8)]
    assert windows[0] > 0
    assert windows == sorted(windows)
    assert windows[-1] == policy.cap
