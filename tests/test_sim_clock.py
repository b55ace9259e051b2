"""VirtualClock: time moves only by jumps, to the earliest due moment, plus lateness."""

from __future__ import annotations

import doctest

import pytest

import sim._clock
from sim import FakeChild, Scenario, VirtualClock, simulate

S = 1_000_000_000


def test_VirtualClock_starts_at_zero_and_reads_without_moving() -> None:
    clock = VirtualClock()
    assert (clock(), clock(), clock.wakeups) == (0, 0, 0)


def test_VirtualClock_due_is_the_earliest_of_the_timeout_and_the_events() -> None:
    clock = VirtualClock()
    clock.now = 10
    assert clock.due(100, wake_at=[]) == 110
    assert clock.due(100, wake_at=[50, 30]) == 30
    assert clock.due(None, wake_at=[500]) == 500
    assert clock.due(100, wake_at=[5]) == 10  # already past: at once
    assert clock.due(None, wake_at=[]) is None  # would never end


def test_VirtualClock_sleep_jumps_and_adds_each_wakeups_lateness_in_order() -> None:
    clock = VirtualClock(lateness=[3, 0, 7])
    assert [clock.sleep(clock() + 100) for _ in range(4)] == [3, 0, 7, 0]
    assert clock() == 400 + 10
    assert clock.wakeups == 4


def test_VirtualClock_never_goes_back() -> None:
    clock = VirtualClock()
    clock.now = 10
    with pytest.raises(AssertionError, match="never goes back"):
        clock.sleep(5)


def test_VirtualClock_doctest() -> None:
    assert doctest.testmod(sim._clock).failed == 0


def test_simulate_an_hour_of_silence_is_one_jump() -> None:
    trace = simulate(Scenario(child=FakeChild(exit_at=3600.0)))
    assert trace.wakeups == 1
    assert [(s.began, s.requested, s.due) for s in trace.sleeps] == [(0, None, 3600 * S)]


def test_simulate_a_long_timeout_costs_two_wakeups_not_one_per_poll() -> None:
    trace = simulate(Scenario(timeout=1000.0, child=FakeChild(exit_at=2000.0)))
    assert [s.woke for s in trace.sleeps][:2] == [1000 * S, 1000 * S + 1_000_000]
