"""Scenario and FakeChild: validation, normalisation, the child's script."""

from __future__ import annotations

import datetime

import pytest

from sim import ChildExit, FakeChild, Scenario, Signal

MS = 1_000_000


def test_Scenario_defaults_mirror_WaitOptions() -> None:
    s = Scenario()
    assert (s.timeout, s.interrupt_grace, s.poll_interval, s.abandon_after) == (
        None,
        2.0,
        0.05,
        None,
    )
    assert (s.cancel_at, s.cancel_kind, s.backend, s.lateness) == (None, "token", "event", ())
    assert s.child == FakeChild(on_interrupt=("exit", 0.0, -2), on_kill=("exit", 0.0, -9))


def test_Scenario_normalises_ints_timedeltas_and_lists() -> None:
    s = Scenario(
        timeout=1,
        interrupt_grace=datetime.timedelta(milliseconds=500),
        lateness=[0, 0.002],
        child=FakeChild(exit_at=2, on_kill=["exit", 1, -9]),
    )
    assert s == Scenario(
        timeout=1.0,
        interrupt_grace=0.5,
        lateness=(0.0, 0.002),
        child=FakeChild(exit_at=2.0, on_kill=("exit", 1.0, -9)),
    )
    assert isinstance(s.timeout, float)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"timeout": -1}, ValueError, "timeout must be >= 0 seconds, got -1"),
        ({"timeout": "1"}, TypeError, "timeout must be seconds"),
        ({"interrupt_grace": float("nan")}, ValueError, "interrupt_grace must be a finite"),
        ({"poll_interval": 0}, ValueError, "poll_interval must be > 0 seconds, got 0"),
        ({"cancel_at": True}, TypeError, "cancel_at must be seconds"),
        (
            {"cancel_kind": "event"},
            ValueError,
            "cancel_kind must be 'token' or 'flag', got 'event'",
        ),
        ({"backend": "pidfd"}, ValueError, "backend must be 'event' or 'poll', got 'pidfd'"),
        ({"abandon_after": -0.5}, ValueError, "abandon_after must be >= 0 seconds"),
        ({"lateness": (0.0, -0.001)}, ValueError, r"lateness\[1\] must be >= 0 seconds"),
        ({"lateness": 0.5}, TypeError, "lateness must be a sequence of durations"),
        ({"child": None}, TypeError, "child must be a FakeChild, got None"),
        ({"name": 3}, TypeError, "name must be a str, got 3"),
    ],
)
def test_Scenario_refuses_a_bad_field_and_names_it(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Scenario(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"exit_at": -1.0}, ValueError, "exit_at must be >= 0 seconds, got -1.0"),
        ({"exit_code": 1.5}, TypeError, "exit_code must be an int returncode, got 1.5"),
        ({"exit_code": False}, TypeError, "exit_code must be an int returncode, got False"),
        ({"on_interrupt": "exit"}, ValueError, "on_interrupt must be 'ignore' or"),
        ({"on_kill": ("exit", -1, -9)}, ValueError, "on_kill exit delay must be >= 0"),
        ({"on_kill": ("exit", 0.0, "9")}, TypeError, "on_kill exit code must be an int"),
    ],
)
def test_FakeChild_refuses_a_bad_field_and_names_it(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        FakeChild(**kwargs)  # type: ignore[arg-type]


def test_FakeChild_without_signals_exits_on_its_own_or_never() -> None:
    assert FakeChild(exit_at=0.3, exit_code=3).exit_given([]) == ChildExit(300 * MS, 3)
    assert FakeChild().exit_given([]) is None


def test_FakeChild_dies_of_SIGINT_after_its_delay_when_that_comes_first() -> None:
    child = FakeChild(exit_at=1.0, on_interrupt=("exit", 0.2, -2))
    assert child.exit_given([Signal(500 * MS, "soft_interrupt")]) == ChildExit(700 * MS, -2)
    # Later than its own exit: its own exit stands.
    assert child.exit_given([Signal(900 * MS, "soft_interrupt")]) == ChildExit(1000 * MS, 0)


def test_FakeChild_a_tie_keeps_the_exit_scheduled_first() -> None:
    child = FakeChild(exit_at=0.7, on_interrupt=("exit", 0.2, -2))
    assert child.exit_given([Signal(500 * MS, "soft_interrupt")]) == ChildExit(700 * MS, 0)


def test_FakeChild_that_ignores_SIGINT_dies_of_SIGKILL() -> None:
    child = FakeChild(on_interrupt="ignore")
    signals = [Signal(100 * MS, "soft_interrupt"), Signal(300 * MS, "hard_kill")]
    assert child.exit_given(signals[:1]) is None
    assert child.exit_given(signals) == ChildExit(300 * MS, -9)


def test_FakeChild_unkillable_never_exits() -> None:
    child = FakeChild(on_interrupt="ignore", on_kill="ignore")
    signals = [Signal(100 * MS, "soft_interrupt"), Signal(300 * MS, "hard_kill")]
    assert child.exit_given(signals) is None


def test_FakeChild_a_signal_after_its_exit_changes_nothing() -> None:
    child = FakeChild(exit_at=0.1, exit_code=4)
    assert child.exit_given([Signal(100 * MS, "hard_kill")]) == ChildExit(100 * MS, 4)
