"""check_invariants is a specification: each invariant is reported, and only when broken.

The traces here are real traces edited by hand into the shape a broken loop
would produce, so each check is exercised without any broken machine (for
those, see test_sim_mutants.py).
"""

from __future__ import annotations

import dataclasses

from sim import (
    INVARIANTS,
    FakeChild,
    Scenario,
    Signal,
    Sleep,
    Trace,
    Violation,
    check_invariants,
    simulate,
)
from statewait import TerminationReason
from statewait._wait import WaitEvent

MS = 1_000_000

STUBBORN = FakeChild(on_interrupt="ignore")
KILLED = Scenario(timeout=1.0, interrupt_grace=0.5, child=STUBBORN)


def ids(scenario: Scenario, trace: Trace) -> list[str]:
    return [v.invariant for v in check_invariants(scenario, trace)]


def one_violation(scenario: Scenario, trace: Trace, invariant: str) -> str:
    """The message of the one violation that the trace must have, of `invariant`."""
    (violation,) = check_invariants(scenario, trace)
    assert violation.invariant == invariant
    return violation.message


def test_INVARIANTS_lists_I1_to_I9() -> None:
    assert list(INVARIANTS) == [f"I{i}" for i in range(1, 10)]


def test_Violation_reads_as_id_time_and_message() -> None:
    assert str(Violation("I4", 1.0005, "too early")) == "I4 at 1.0005 s: too early"
    assert str(Violation("I7", None, "the outcome lies")) == "I7: the outcome lies"


def test_check_invariants_a_healthy_trace_has_no_violation() -> None:
    assert check_invariants(KILLED, simulate(KILLED)) == []


def test_check_invariants_I2_a_second_hard_kill() -> None:
    trace = simulate(KILLED)
    again = Signal(1502 * MS, "hard_kill")
    broken = dataclasses.replace(trace, signals=(*trace.signals, again))
    two_kills, to_the_dead = check_invariants(KILLED, broken)
    assert two_kills.invariant == "I2"
    assert two_kills.message == "the hard kill was sent 2 times (at 1.502, 1.502 s)"
    # The child had died of the first one at that very instant.
    assert to_the_dead.invariant == "I6"


def test_check_invariants_I3_a_kill_within_the_grace_and_a_kill_without_interrupt() -> None:
    trace = simulate(KILLED)
    early = dataclasses.replace(trace, signals=(trace.signals[0], Signal(1501 * MS, "hard_kill")))
    assert "I3" in ids(KILLED, early)
    assert any(
        "more than the grace (0.500 s) must pass" in v.message
        for v in check_invariants(KILLED, early)
    )
    alone = dataclasses.replace(trace, signals=(trace.signals[1],))
    assert "hard kill without a soft interrupt before it" in [
        v.message for v in check_invariants(KILLED, alone) if v.invariant == "I3"
    ]


def test_check_invariants_I6_the_outcome_must_carry_the_childs_returncode() -> None:
    trace = simulate(KILLED)
    assert trace.outcome is not None
    wrong = dataclasses.replace(trace, outcome=dataclasses.replace(trace.outcome, returncode=0))
    assert "returncode 0 is not the child's (-9)" in one_violation(KILLED, wrong, "I6")


def test_check_invariants_I6_a_signal_to_a_child_already_exited() -> None:
    # The child exits at 0.9; the trace pretends the wait interrupted it at 1.001.
    scenario = dataclasses.replace(KILLED, child=FakeChild(exit_at=0.9, on_interrupt="ignore"))
    trace = simulate(KILLED)
    assert "I6" in ids(scenario, trace)
    assert "I9" in ids(scenario, trace)  # it exited before every deadline, too


def test_check_invariants_I7_the_outcome_must_tell_the_truth() -> None:
    trace = simulate(KILLED)
    assert trace.outcome is not None
    silent = dataclasses.replace(
        trace, outcome=dataclasses.replace(trace.outcome, termination=None)
    )
    late = dataclasses.replace(trace, outcome=dataclasses.replace(trace.outcome, killed_at=1.6))
    assert ids(KILLED, silent) == ["I7"]
    assert ids(KILLED, late) == ["I7"]
    assert "killed_at=1.6, the signal came at 1.502 s" in check_invariants(KILLED, late)[0].message


def test_check_invariants_I7_a_reason_that_changes() -> None:
    trace = simulate(KILLED)
    event = WaitEvent(
        1200 * MS, "soft_interrupt", trace.timeline[3].state, TerminationReason.CANCELLED
    )
    changed = dataclasses.replace(trace, timeline=(*trace.timeline[:4], event, *trace.timeline[4:]))
    assert "I7" in ids(KILLED, changed)


def _with_sleep(trace: Trace, index: int, **changes: object) -> Trace:
    sleeps = list(trace.sleeps)
    sleeps[index] = sleeps[index]._replace(**changes)  # type: ignore[arg-type]
    return dataclasses.replace(trace, sleeps=tuple(sleeps))


def test_check_invariants_I8_a_slice_under_the_floor() -> None:
    trace = simulate(KILLED)
    # The 1 ms slice from the deadline (1.0) to 1.001, asked as 0.5 ms.
    broken = _with_sleep(trace, 1, requested=MS // 2)
    assert "I8" in ids(KILLED, broken)


def test_check_invariants_I8_a_slice_over_the_poll_interval() -> None:
    scenario = Scenario(backend="poll", poll_interval=0.05, child=FakeChild(exit_at=0.13))
    trace = simulate(scenario)
    broken = _with_sleep(trace, 0, requested=80 * MS)
    assert [v.invariant for v in check_invariants(scenario, broken)] == ["I8"]
    assert (
        "slept for 0.080 s while polling every 0.050 s"
        in check_invariants(scenario, broken)[0].message
    )


def test_check_invariants_I8_a_needless_wakeup() -> None:
    scenario = Scenario(timeout=1.0, child=FakeChild(exit_at=0.3))
    trace = simulate(scenario)
    broken = _with_sleep(trace, 0, requested=100 * MS)  # nothing was due before 1.0
    assert "needless wakeup after 0.100 s: nothing was due for 1.000 s" in one_violation(
        scenario, broken, "I8"
    )


def test_check_invariants_I8_an_event_driven_wait_with_nothing_due_sleeps_without_limit() -> None:
    scenario = Scenario(child=FakeChild(exit_at=7.0))
    trace = simulate(scenario)
    broken = _with_sleep(trace, 0, requested=5_000 * MS)
    assert ids(scenario, broken) == ["I8"]


def test_check_invariants_I4_a_slice_planned_past_the_deadline() -> None:
    trace = simulate(KILLED)
    broken = _with_sleep(trace, 0, requested=1100 * MS)
    assert "I4" in ids(KILLED, broken)


def test_check_invariants_reports_a_rule_broken_at_every_wakeup_once() -> None:
    scenario = Scenario(backend="poll", poll_interval=0.05, child=FakeChild(exit_at=0.3))
    trace = simulate(scenario)
    broken = dataclasses.replace(
        trace, sleeps=tuple(s._replace(requested=80 * MS) for s in trace.sleeps)
    )
    (violation,) = check_invariants(scenario, broken)
    assert violation.message.endswith("(and 5 more times, the last at 0.250 s)")


def test_check_invariants_late_wakeups_are_not_violations() -> None:
    # 20 ms late on every wakeup: the deadlines fire late, within their lateness.
    scenario = dataclasses.replace(KILLED, lateness=(0.02,) * 6, cancel_at=0.5, cancel_kind="flag")
    trace = simulate(scenario)
    assert trace.outcome is not None
    assert trace.outcome.interrupted_at == 0.52
    assert check_invariants(scenario, trace) == []


def test_check_invariants_the_forever_trace_of_an_unkillable_child_is_healthy() -> None:
    scenario = Scenario(
        timeout=0.0, interrupt_grace=0.0, child=FakeChild(on_interrupt="ignore", on_kill="ignore")
    )
    trace = simulate(scenario)
    assert trace.end == "forever"
    assert check_invariants(scenario, trace) == []


def test_check_invariants_a_wait_that_would_never_notice_the_exit() -> None:
    scenario = Scenario(child=FakeChild(exit_at=1.0))
    trace = simulate(Scenario())  # the wait of a child that never exits
    assert [v.invariant for v in check_invariants(scenario, trace)] == ["I6"]


def test_check_invariants_a_stopped_trace_is_judged_up_to_where_it_stops() -> None:
    trace = simulate(KILLED, until=1.2)
    assert trace.end == "stopped"
    assert check_invariants(KILLED, trace) == []


def test_check_invariants_sleep_record_matches_the_wakeup_events() -> None:
    trace = simulate(KILLED)
    wakeups = [e for e in trace.timeline if e.kind == "wakeup"]
    assert [(s.woke, s.requested) for s in trace.sleeps] == [(e.at, e.detail) for e in wakeups]
    assert isinstance(trace.sleeps[0], Sleep)


def test_check_invariants_I6_a_wait_that_returned_before_the_exit() -> None:
    # The loop returned in RUNNING, with the returncode the child will have:
    # no exit event, no signal, yet the child was still running.
    scenario = Scenario(child=FakeChild(exit_at=5.0, exit_code=0))
    trace = simulate(scenario)
    assert trace.outcome is not None
    early = dataclasses.replace(
        trace,
        timeline=trace.timeline[:1],
        outcome=dataclasses.replace(trace.outcome, elapsed=0.0),
        sleeps=(),
        ended_at=0,
    )
    assert "neither on the exit nor an abandon" in one_violation(scenario, early, "I6")


def test_check_invariants_I6_the_outcome_must_say_when_the_wait_ended() -> None:
    trace = simulate(KILLED)
    assert trace.outcome is not None
    wrong = dataclasses.replace(trace, outcome=dataclasses.replace(trace.outcome, elapsed=0.1))
    assert "elapsed=0.1, the wait ended at 1.502 s" in one_violation(KILLED, wrong, "I6")


def test_check_invariants_I6_nothing_after_the_terminal_event() -> None:
    scenario = Scenario(child=FakeChild(exit_at=0.0))
    trace = simulate(scenario)
    twice = dataclasses.replace(trace, timeline=(*trace.timeline, trace.timeline[-1]))
    assert "event 'exit' after the wait had ended (exit at 0.000 s)" in one_violation(
        scenario, twice, "I6"
    )


def test_check_invariants_I6_a_wait_that_raised_before_the_exit() -> None:
    # A failing callback is re-raised only once the child is gone: a trace
    # that raised while the child was still in its grace breaks I6.
    scenario = Scenario(cancel_at=0.3, child=STUBBORN)

    def broken() -> None:
        raise RuntimeError("no such group")

    trace = simulate(scenario, soft_interrupt=broken)
    assert trace.end == "raised"
    assert check_invariants(scenario, trace) == []
    cut = trace.timeline.index(next(e for e in trace.timeline if e.kind == "exception"))
    early = dataclasses.replace(
        trace,
        timeline=trace.timeline[: cut + 1],
        signals=trace.signals[:1],
        sleeps=trace.sleeps[:1],
        ended_at=trace.timeline[cut].at,
    )
    assert "the wait raised RuntimeError('no such group') in TERMINATING" in one_violation(
        scenario, early, "I6"
    )
