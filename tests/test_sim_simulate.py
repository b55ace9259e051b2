"""simulate(): the real loop on virtual time, and what its Trace records."""

from __future__ import annotations

import doctest
import os
import threading
import time

import pytest

import sim
import sim._frozen
from sim import EPOCH, ChildExit, FakeChild, Scenario, Signal, check_invariants, simulate
from statewait import TerminationReason, WaitOutcome
from statewait._machine import MACHINE, TRANSITIONS, WaitState, build_machine
from statewait._wait import WaitEvent

MS = 1_000_000
S = 1_000_000_000

STUBBORN = FakeChild(on_interrupt="ignore")


def test_simulate_timeout_then_kill_has_the_contracted_timeline() -> None:
    trace = simulate(Scenario(timeout=1.0, interrupt_grace=0.5, child=STUBBORN))
    assert trace.events == (
        (0.0, "start", None),
        (1.0, "wakeup", 1.0),
        (1.001, "wakeup", 0.001),
        (1.001, "soft_interrupt", "timeout"),
        (1.501, "wakeup", 0.5),
        (1.502, "wakeup", 0.001),
        (1.502, "hard_kill", None),
        (1.502, "wakeup", None),
        (1.502, "exit", -9),
    )
    assert trace.outcome == WaitOutcome(-9, TerminationReason.TIMEOUT, 1.502, 1.001, 1.502)
    assert trace.signals == (Signal(1001 * MS, "soft_interrupt"), Signal(1502 * MS, "hard_kill"))
    assert trace.child_exit == ChildExit(1502 * MS, -9)
    assert (trace.end, trace.ended_at, trace.wakeups, trace.raised) == (
        "returned",
        1502 * MS,
        5,
        None,
    )


def test_simulate_records_the_requested_slices_and_their_lateness() -> None:
    trace = simulate(Scenario(timeout=1.0, lateness=(0.004,), child=FakeChild(exit_at=1.2)))
    first, second = trace.sleeps[:2]
    assert (first.began, first.requested, first.due, first.late, first.woke) == (
        0,
        S,
        S,
        4 * MS,
        1004 * MS,
    )
    # Woken 4 ms late, the timeout is past: interrupted at once; the child dies of it.
    assert trace.outcome is not None
    assert trace.outcome.interrupted_at == 1.004
    assert second.began == 1004 * MS


def test_simulate_event_backend_wakes_at_the_exit_poll_backend_at_the_next_poll() -> None:
    child = FakeChild(exit_at=0.13)
    event = simulate(Scenario(child=child))
    poll = simulate(Scenario(child=child, backend="poll", poll_interval=0.05))
    assert event.outcome is not None
    assert poll.outcome is not None
    assert (event.outcome.elapsed, event.wakeups) == (0.13, 1)
    assert (poll.outcome.elapsed, poll.wakeups) == (0.15, 3)
    assert [s.requested for s in poll.sleeps] == [50 * MS] * 3


def test_simulate_token_wakes_the_wait_at_once_flag_at_the_next_poll() -> None:
    token = simulate(Scenario(cancel_at=0.12, cancel_kind="token"))
    flag = simulate(Scenario(cancel_at=0.12, cancel_kind="flag", poll_interval=0.05))
    assert token.outcome is not None
    assert flag.outcome is not None
    assert token.outcome.interrupted_at == 0.12
    assert flag.outcome.interrupted_at == 0.15
    assert token.cancelled_at == flag.cancelled_at == 120 * MS
    assert token.outcome.termination is flag.outcome.termination is TerminationReason.CANCELLED


def test_simulate_unkillable_child_without_abandon_goes_on_for_ever() -> None:
    scenario = Scenario(
        timeout=1.0, interrupt_grace=0.5, child=FakeChild(on_interrupt="ignore", on_kill="ignore")
    )
    trace = simulate(scenario)
    assert (trace.end, trace.outcome, trace.ended_at) == ("forever", None, 1502 * MS)
    # The loop's last look after the simulation ended it is not in the trace.
    assert trace.timeline[-1].kind == "hard_kill"
    assert trace.child_exit is None
    assert check_invariants(scenario, trace) == []


def test_simulate_poll_backend_polls_once_more_before_calling_it_for_ever() -> None:
    scenario = Scenario(
        timeout=1.0,
        interrupt_grace=0.5,
        backend="poll",
        poll_interval=0.25,
        child=FakeChild(on_interrupt="ignore", on_kill="ignore"),
    )
    trace = simulate(scenario)
    assert trace.end == "forever"
    assert [e.kind for e in trace.timeline[-2:]] == ["hard_kill", "wakeup"]
    assert trace.ended_at == 1752 * MS


def test_simulate_no_timeout_no_cancellation_and_a_child_that_never_exits() -> None:
    trace = simulate(Scenario())
    assert (trace.end, trace.wakeups, [e.kind for e in trace.timeline]) == ("forever", 0, ["start"])


def test_simulate_until_stops_the_wait_and_keeps_what_happened_before() -> None:
    scenario = Scenario(timeout=1.0, interrupt_grace=0.5, child=STUBBORN)
    whole = simulate(scenario)
    part = simulate(scenario, until=1.2)
    assert (part.end, part.ended_at, part.outcome) == ("stopped", 1200 * MS, None)
    assert part.timeline == tuple(e for e in whole.timeline if e.at <= 1200 * MS)
    assert part.signals == whole.signals[:1]


def test_simulate_until_zero_keeps_the_first_look_and_all_else_at_that_instant() -> None:
    stopped = simulate(Scenario(timeout=1.0), until=0.0)
    assert ([e.kind for e in stopped.timeline], stopped.end) == (["start"], "stopped")
    # Cancelled at 0: the child dies of SIGINT at 0, seen by a wakeup at 0.
    done = simulate(Scenario(cancel_at=0.0), until=0.0)
    assert [e.kind for e in done.timeline] == ["start", "soft_interrupt", "wakeup", "exit"]
    assert done.end == "returned"


def test_simulate_is_deterministic() -> None:
    scenario = Scenario(
        timeout=0.3, cancel_at=0.2, cancel_kind="flag", backend="poll", lateness=(0.01, 0.002)
    )
    assert simulate(scenario) == simulate(scenario)


def test_simulate_releases_its_model_from_the_shared_machine() -> None:
    before = len(MACHINE.models)
    simulate(Scenario(timeout=1.0))
    simulate(Scenario(child=FakeChild(on_interrupt="ignore", on_kill="ignore"), timeout=0.0))
    assert len(MACHINE.models) == before


def test_simulate_never_creates_a_file_descriptor_for_the_token() -> None:
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for _ in range(50):
        simulate(Scenario(cancel_at=0.1, timeout=1.0))
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds


def test_simulate_starts_no_thread() -> None:
    before = threading.active_count()
    simulate(Scenario(cancel_at=0.1, cancel_kind="flag", backend="poll"))
    assert threading.active_count() == before


def test_simulate_runaway_is_stopped_after_max_wakeups() -> None:
    # A legitimate but long poll: the limit says when to stop looking.
    scenario = Scenario(backend="poll", poll_interval=0.001, child=FakeChild(exit_at=1.0))
    trace = simulate(scenario, max_wakeups=100)
    assert (trace.end, trace.wakeups) == ("runaway", 99)
    assert [v.invariant for v in check_invariants(scenario, trace)] == ["I8"]


# -- user callbacks and virtual time (freezegun)


def test_simulate_user_callbacks_see_virtual_time() -> None:
    seen: list[tuple[str, float, float]] = []

    def note(what: str) -> None:
        seen.append((what, time.monotonic() - EPOCH.timestamp(), time.time() - EPOCH.timestamp()))

    scenario = Scenario(timeout=1.0, interrupt_grace=0.5, child=STUBBORN)
    trace = simulate(
        scenario,
        soft_interrupt=lambda: note("soft"),
        hard_kill=lambda: note("hard"),
        observer=lambda event: note(event.kind) if event.kind == "exit" else None,
    )
    assert [(w, round(m, 6), round(t, 6)) for w, m, t in seen] == [
        ("soft", 1.001, 1.001),
        ("hard", 1.502, 1.502),
        ("exit", 1.502, 1.502),
    ]
    assert trace.outcome is not None
    # Real time again afterwards.
    assert time.time() > EPOCH.timestamp() + 10 * 365 * 86400


def test_simulate_observer_receives_every_event_of_the_trace_and_no_other() -> None:
    received: list[WaitEvent] = []
    scenario = Scenario(timeout=1.0, child=FakeChild(on_interrupt="ignore", on_kill="ignore"))
    trace = simulate(scenario, observer=received.append)
    assert trace.end == "forever"
    assert tuple(received) == trace.timeline  # not the loop's last look that ended it


def test_virtual_time_enters_freezegun_once_for_many_simulations() -> None:
    seen: list[float] = []
    with sim.virtual_time():
        for timeout in (0.1, 0.2):
            simulate(Scenario(timeout=timeout), soft_interrupt=lambda: seen.append(time.time()))
        assert sim._frozen._active
    assert not sim._frozen._active
    assert [round(t - EPOCH.timestamp(), 6) for t in seen] == [0.101, 0.201]


def test_simulate_a_callback_that_raises_is_escalated_and_recorded() -> None:
    def broken() -> None:
        raise RuntimeError("no such group")

    scenario = Scenario(timeout=0.1, interrupt_grace=5.0, child=STUBBORN)
    trace = simulate(scenario, soft_interrupt=broken)
    assert trace.end == "raised"
    assert isinstance(trace.raised, RuntimeError)
    assert trace.outcome is None
    # As in a real wait: the exception in TERMINATING escalates to the kill at once.
    assert trace.signals == (Signal(101 * MS, "soft_interrupt"), Signal(101 * MS, "hard_kill"))
    assert [e.kind for e in trace.timeline][-3:] == ["hard_kill", "wakeup", "exit"]
    assert trace.timeline[-1].state is WaitState.EXITED
    assert check_invariants(scenario, trace) == []


def test_simulate_does_not_swallow_an_exception_that_is_not_the_waits() -> None:
    # A guard the model does not have: the machine itself is broken, which is
    # the caller's bug, not something the simulated wait did.
    rows = [
        row._replace(conditions=("no_such_guard",)) if row.after == "interrupt_timeout" else row
        for row in TRANSITIONS
    ]
    with pytest.raises(AttributeError, match="no_such_guard"):
        simulate(Scenario(timeout=0.0), machine=build_machine(rows), max_wakeups=50)


def test_package_doctests() -> None:
    assert doctest.testmod(sim).failed == 0
    assert doctest.testmod(sim._frozen).failed == 0


def test_simulate_a_timeout_days_away_sleeps_a_day_at_a_time_and_keeps_every_invariant() -> None:
    day = 86_400.0
    scenario = Scenario(
        timeout=2.5 * day,
        interrupt_grace=1.5 * day,
        child=FakeChild(on_interrupt="ignore"),
    )
    trace = simulate(scenario)
    assert trace.outcome is not None
    assert (trace.outcome.interrupted_at, trace.outcome.killed_at) == (
        2.5 * day + 0.001,
        4 * day + 0.002,
    )
    # 3 wakeups to the timeout (2 capped, 1 at it), 1 floor; 2 in the grace, 1 floor; the exit.
    assert trace.wakeups == 8
    assert check_invariants(scenario, trace) == []


def test_simulate_an_observer_that_raises_is_escalated_and_the_timeline_stays_whole() -> None:
    # The loop stops calling an observer that failed; the trace must still
    # record the rest of the wait (the escalation, the exit) and be judged.
    received: list[str] = []

    def broken(event: WaitEvent) -> None:
        received.append(event.kind)
        if event.kind == "wakeup":
            raise RuntimeError("observer broke")

    scenario = Scenario(cancel_at=0.3, interrupt_grace=0.5, child=STUBBORN)
    trace = simulate(scenario, observer=broken)
    assert trace.end == "raised"
    assert isinstance(trace.raised, RuntimeError)
    assert received == ["start", "wakeup"]  # not called again once it failed
    assert trace.signals == (Signal(300 * MS, "soft_interrupt"), Signal(801 * MS, "hard_kill"))
    assert [e.kind for e in trace.timeline] == [
        "start",
        "wakeup",
        "exception",
        "soft_interrupt",
        "wakeup",
        "wakeup",
        "hard_kill",
        "wakeup",
        "exit",
    ]
    assert check_invariants(scenario, trace) == []
