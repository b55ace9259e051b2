"""The wait loop, driven by a fake clock and a fake exit waiter."""

from __future__ import annotations

import contextlib
import logging
import threading

import pytest

from statewait import CancelToken, TerminationReason, WaitOptions, WaitOutcome
from statewait._machine import MACHINE, WaitState
from statewait._wait import MAX_SLICE_NS, MIN_SLICE_NS, Wait, WaitEvent, run_wait, run_wait_async

from ._fakes import MS, FakeWaiter, S


def wait_with(
    fake: FakeWaiter, options: WaitOptions, events: list[WaitEvent] | None = None
) -> WaitOutcome:
    return run_wait(
        options,
        fake.clock,
        fake,
        soft_interrupt=fake.soft_interrupt,
        hard_kill=fake.hard_kill,
        observer=None if events is None else events.append,
    )


def kinds(events: list[WaitEvent]) -> list[tuple[int, str]]:
    return [(e.at, e.kind) for e in events]


def test_run_wait_child_exits_before_every_deadline_gets_no_signal() -> None:
    fake = FakeWaiter(exit_at=300 * MS, code=3)
    outcome = wait_with(fake, WaitOptions(timeout=1.0))
    assert outcome == WaitOutcome(3, None, 0.3, None, None)
    assert fake.signals == []


def test_run_wait_child_already_exited_returns_at_once_without_a_wakeup() -> None:
    fake = FakeWaiter(exit_at=0, code=0)
    events: list[WaitEvent] = []
    outcome = wait_with(fake, WaitOptions(timeout=0), events)
    assert outcome == WaitOutcome(0, None, 0.0, None, None)
    assert kinds(events) == [(0, "start"), (0, "exit")]
    assert fake.slices == [0]


def test_run_wait_timeout_interrupts_1ms_after_the_deadline_then_kills_after_the_grace() -> None:
    fake = FakeWaiter(exit_at=10 * S)
    events: list[WaitEvent] = []
    outcome = wait_with(fake, WaitOptions(timeout=1.0, interrupt_grace=0.5), events)
    # The wakeup exactly at the deadline is not strictly past it: 1 ms more.
    assert fake.slices == [0, S, MS, 500 * MS, MS, None]
    assert fake.signals == [("soft_interrupt", S + MS), ("hard_kill", 1502 * MS)]
    assert outcome == WaitOutcome(-9, TerminationReason.TIMEOUT, 1.502, 1.001, 1.502)
    assert kinds(events) == [
        (0, "start"),
        (S, "wakeup"),
        (S + MS, "wakeup"),
        (S + MS, "soft_interrupt"),
        (1501 * MS, "wakeup"),
        (1502 * MS, "wakeup"),
        (1502 * MS, "hard_kill"),
        (1502 * MS, "wakeup"),
        (1502 * MS, "exit"),
    ]


def test_run_wait_wakeup_exactly_at_the_deadline_does_not_fire_and_the_next_slice_is_1ms() -> None:
    fake = FakeWaiter(exit_at=10 * S)
    wait = Wait(
        WaitOptions(timeout=2.0),
        0,
        soft_interrupt=fake.soft_interrupt,
        hard_kill=fake.hard_kill,
    )
    try:
        wait.wake(0, None, woke=False)
        assert wait.next_slice() == 2 * S
        wait.wake(2 * S, None)
        assert wait.state is WaitState.RUNNING
        assert fake.signals == []
        assert wait.next_slice() == MIN_SLICE_NS
        wait.wake(2 * S + 1, None)  # one nanosecond past: fires
        assert fake.signals == [("soft_interrupt", 0)]  # the fake's clock was not moved
        assert wait.interrupted_at == 2 * S + 1
    finally:
        wait.release()


def test_run_wait_timeout_and_token_cancellation_at_the_same_wakeup_is_TIMEOUT() -> None:
    token = CancelToken()
    # The token fires exactly when the timeout's extra 1 ms ends.
    fake = FakeWaiter(exit_at=10 * S, cancellation=token, cancel_at=S + MS, exits_after_interrupt=0)
    outcome = wait_with(fake, WaitOptions(timeout=1.0, cancellation=token))
    assert outcome.termination is TerminationReason.TIMEOUT
    assert outcome.interrupted_at == 1.001
    assert outcome.returncode == -2


def test_run_wait_token_cancellation_interrupts_at_once() -> None:
    token = CancelToken()
    fake = FakeWaiter(cancellation=token, cancel_at=250 * MS, exits_after_interrupt=10 * MS)
    outcome = wait_with(fake, WaitOptions(cancellation=token, interrupt_grace=1.0))
    assert outcome == WaitOutcome(-2, TerminationReason.CANCELLED, 0.26, 0.25, None)
    assert fake.slices == [0, None, S]  # no polling while RUNNING


def test_run_wait_event_driven_token_and_no_timeout_makes_exactly_one_wakeup() -> None:
    token = CancelToken()
    fake = FakeWaiter(exit_at=7 * S, code=0, cancellation=token)
    events: list[WaitEvent] = []
    outcome = wait_with(fake, WaitOptions(cancellation=token), events)
    assert outcome == WaitOutcome(0, None, 7.0, None, None)
    assert [e.kind for e in events].count("wakeup") == 1
    assert fake.slices == [0, None]


def test_run_wait_polled_event_is_noticed_within_one_poll_interval() -> None:
    flag = threading.Event()
    fake = FakeWaiter(cancellation=flag, cancel_at=120 * MS, exits_after_interrupt=0)
    outcome = wait_with(fake, WaitOptions(cancellation=flag, poll_interval=0.05))
    assert outcome.termination is TerminationReason.CANCELLED
    assert outcome.interrupted_at == 0.15
    # Polled every 50 ms while RUNNING; then unbounded (the grace is the next deadline).
    assert fake.slices == [0, 50 * MS, 50 * MS, 50 * MS, 2 * S]


def test_run_wait_polled_callable_stops_being_polled_after_the_interrupt() -> None:
    calls: list[int] = []
    fake = FakeWaiter(exit_at=10 * S)

    def cancelled() -> bool:
        calls.append(fake.now)
        return fake.now >= 100 * MS

    outcome = wait_with(fake, WaitOptions(cancellation=cancelled, poll_interval=0.1))
    assert outcome.termination is TerminationReason.CANCELLED
    assert calls == [0, 100 * MS]
    assert fake.signals == [("soft_interrupt", 100 * MS), ("hard_kill", 2101 * MS)]


def test_run_wait_polling_waiter_slices_at_poll_interval_and_sees_the_exit_late() -> None:
    fake = FakeWaiter(exit_at=130 * MS, polls=True)
    outcome = wait_with(fake, WaitOptions(poll_interval=0.05))
    assert outcome.elapsed == 0.15
    assert fake.slices == [0, 50 * MS, 50 * MS, 50 * MS]


def test_run_wait_polling_waiter_caps_slices_at_the_next_deadline() -> None:
    fake = FakeWaiter(exit_at=10 * S, polls=True, exits_after_interrupt=0)
    outcome = wait_with(fake, WaitOptions(timeout=0.12, poll_interval=0.05))
    # The exit that follows the interrupt at once is seen at the next poll.
    assert fake.slices == [0, 50 * MS, 50 * MS, 20 * MS, MS, 50 * MS]
    assert (outcome.interrupted_at, outcome.elapsed) == (0.121, 0.171)


def test_run_wait_far_deadlines_are_approached_a_day_at_a_time_and_fire_exactly() -> None:
    # select, poll and epoll refuse timeouts past a few weeks: no slice is
    # longer than a day, and the day-long wakeups change nothing.
    day = MAX_SLICE_NS
    assert day == 86_400 * S
    fake = FakeWaiter(exit_at=10 * day)
    outcome = wait_with(fake, WaitOptions(timeout=2.5 * 86_400, interrupt_grace=1.5 * 86_400))
    assert fake.slices == [0, day, day, day // 2, MS, day, day // 2, MS, None]
    assert fake.signals == [("soft_interrupt", 5 * day // 2 + MS), ("hard_kill", 4 * day + 2 * MS)]
    assert outcome.termination is TerminationReason.TIMEOUT


def test_run_wait_far_deadlines_past_any_float_still_wait() -> None:
    fake = FakeWaiter(exit_at=3 * S, code=4)
    outcome = wait_with(fake, WaitOptions(timeout=1e300, interrupt_grace=1e300))
    assert outcome == WaitOutcome(4, None, 3.0, None, None)
    assert fake.slices == [0, MAX_SLICE_NS]  # the exit ends the first day-long slice


def test_run_wait_exit_observed_at_a_wakeup_beats_the_due_timeout() -> None:
    # The child exits exactly when the deadline's 1 ms floor ends: the exit wins.
    fake = FakeWaiter(exit_at=S + MS, code=0)
    outcome = wait_with(fake, WaitOptions(timeout=1.0))
    assert outcome == WaitOutcome(0, None, 1.001, None, None)
    assert fake.signals == []


def test_run_wait_exit_during_the_grace_sends_no_hard_kill() -> None:
    fake = FakeWaiter(exit_at=10 * S, exits_after_interrupt=300 * MS)
    outcome = wait_with(fake, WaitOptions(timeout=0.5, interrupt_grace=1.0))
    assert outcome == WaitOutcome(-2, TerminationReason.TIMEOUT, 0.801, 0.501, None)
    assert [s for s, _ in fake.signals] == ["soft_interrupt"]


def test_run_wait_hard_kill_is_sent_once_even_if_the_child_survives_it() -> None:
    fake = FakeWaiter(exits_after_kill=None)  # unkillable
    outcome = wait_with(fake, WaitOptions(timeout=0, interrupt_grace=0, abandon_after=5.0))
    assert [s for s, _ in fake.signals] == ["soft_interrupt", "hard_kill"]
    assert outcome == WaitOutcome(None, TerminationReason.TIMEOUT, 5.003, 0.001, 0.002, True)


def test_run_wait_zero_grace_kills_1ms_after_the_interrupt() -> None:
    fake = FakeWaiter()
    outcome = wait_with(fake, WaitOptions(timeout=0, interrupt_grace=0))
    assert outcome == WaitOutcome(-9, TerminationReason.TIMEOUT, 0.002, 0.001, 0.002)


def test_run_wait_abandon_after_zero_gives_up_1ms_after_the_kill() -> None:
    fake = FakeWaiter(exits_after_kill=None)
    outcome = wait_with(fake, WaitOptions(timeout=0, interrupt_grace=0, abandon_after=0))
    assert outcome.abandoned is True
    assert outcome.returncode is None
    assert outcome.elapsed == 0.003


def test_run_wait_keyboard_interrupt_escalates_reaps_then_reraises() -> None:
    fake = FakeWaiter(interrupts_at=(400 * MS,))
    events: list[WaitEvent] = []
    with pytest.raises(KeyboardInterrupt):
        wait_with(fake, WaitOptions(interrupt_grace=1.0), events)
    assert fake.signals == [("soft_interrupt", 400 * MS), ("hard_kill", 1401 * MS)]
    assert [(e.at, e.kind) for e in events if e.kind != "wakeup"] == [
        (0, "start"),
        (400 * MS, "exception"),
        (400 * MS, "soft_interrupt"),
        (1401 * MS, "hard_kill"),
        (1401 * MS, "exit"),
    ]
    assert events[-1].state is WaitState.EXITED


def test_run_wait_second_keyboard_interrupt_skips_the_rest_of_the_grace() -> None:
    fake = FakeWaiter(interrupts_at=(400 * MS, 600 * MS))
    events: list[WaitEvent] = []
    with pytest.raises(KeyboardInterrupt):
        wait_with(fake, WaitOptions(interrupt_grace=5.0), events)
    assert fake.signals == [("soft_interrupt", 400 * MS), ("hard_kill", 600 * MS)]
    assert [(e.at, e.kind) for e in events if e.kind != "wakeup"] == [
        (0, "start"),
        (400 * MS, "exception"),
        (400 * MS, "soft_interrupt"),
        (600 * MS, "exception"),
        (600 * MS, "hard_kill"),
        (600 * MS, "exit"),
    ]


def test_run_wait_interrupt_during_a_timeouts_grace_escalates_at_once() -> None:
    fake = FakeWaiter(interrupts_at=(1200 * MS,))
    with pytest.raises(KeyboardInterrupt):
        wait_with(fake, WaitOptions(timeout=1.0, interrupt_grace=5.0))
    assert fake.signals == [("soft_interrupt", 1001 * MS), ("hard_kill", 1200 * MS)]


def test_run_wait_soft_interrupt_callback_that_raises_is_escalated_then_reraised() -> None:
    fake = FakeWaiter()

    def broken() -> None:
        fake.signals.append(("soft_interrupt", fake.now))
        raise RuntimeError("no such group")

    with pytest.raises(RuntimeError, match="no such group"):
        run_wait(
            WaitOptions(timeout=0.1, interrupt_grace=0.2),
            fake.clock,
            fake,
            soft_interrupt=broken,
            hard_kill=fake.hard_kill,
        )
    # The exception arrived in TERMINATING: escalated at once, then reaped.
    assert fake.signals == [("soft_interrupt", 101 * MS), ("hard_kill", 101 * MS)]


def test_run_wait_exception_after_the_exit_is_raised_without_signals() -> None:
    fake = FakeWaiter(exit_at=S)

    def observer(event: WaitEvent) -> None:
        if event.kind == "exit":
            raise ValueError("observer failed")

    with pytest.raises(ValueError, match="observer failed"):
        run_wait(
            WaitOptions(timeout=5.0),
            fake.clock,
            fake,
            soft_interrupt=fake.soft_interrupt,
            hard_kill=fake.hard_kill,
            observer=observer,
        )
    assert fake.signals == []


@pytest.mark.parametrize("interrupts_at", [(), (100 * MS,)])
def test_run_wait_releases_its_model_from_the_shared_machine(
    interrupts_at: tuple[int, ...],
) -> None:
    before = len(MACHINE.models)
    fake = FakeWaiter(exit_at=S, interrupts_at=interrupts_at)
    with contextlib.suppress(KeyboardInterrupt):
        wait_with(fake, WaitOptions(timeout=5.0))
    assert len(MACHINE.models) == before


def test_run_wait_logs_one_debug_line_per_transition(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeWaiter(exit_at=10 * S)
    with caplog.at_level(logging.DEBUG, logger="statewait"):
        run_wait(
            WaitOptions(timeout=1.0, interrupt_grace=0.5),
            fake.clock,
            fake,
            soft_interrupt=fake.soft_interrupt,
            hard_kill=fake.hard_kill,
            label="pid 42",
        )
    assert [r.getMessage() for r in caplog.records] == [
        "pid 42: soft_interrupt at 1.001000s -> TERMINATING ('timeout')",
        "pid 42: hard_kill at 1.502000s -> KILLING",
        "pid 42: exit at 1.502000s -> EXITED (-9)",
    ]


# -- the seams the supervisor and asyncio drive: step, stop, result, deadline_ns


def new_wait(fake: FakeWaiter, options: WaitOptions, events: list[WaitEvent] | None = None) -> Wait:
    return Wait(
        options,
        fake.now,
        soft_interrupt=fake.soft_interrupt,
        hard_kill=fake.hard_kill,
        observer=None if events is None else events.append,
    )


def test_Wait_step_plans_the_first_look_then_a_block_to_the_deadline() -> None:
    fake = FakeWaiter(exit_at=10 * S)
    wait = new_wait(fake, WaitOptions(timeout=2.0))
    assert (wait.slice_ns, wait.deadline_ns) == (0, 0)  # the first look does not sleep
    wait.step(0, None)
    assert (wait.slice_ns, wait.deadline_ns, wait.wakeups) == (2 * S, 2 * S, 0)
    wait.step(2 * S, None)
    assert (wait.slice_ns, wait.deadline_ns, wait.wakeups) == (MS, 2 * S + MS, 1)
    wait.step(2 * S + MS, None)
    assert wait.state is WaitState.TERMINATING
    wait.step(2 * S + 5 * MS, -2)
    assert wait.result() == WaitOutcome(-2, TerminationReason.TIMEOUT, 2.005, 2.001, None)
    assert wait not in MACHINE.models


def test_Wait_stop_in_RUNNING_is_a_cancellation_and_a_second_stop_skips_the_grace() -> None:
    fake = FakeWaiter(exit_at=60 * S)
    wait = new_wait(fake, WaitOptions(interrupt_grace=5.0))
    wait.step(0, None)
    assert wait.slice_ns is None  # nothing to wait for but the exit
    wait.stop()
    wait.step(300 * MS, None)
    assert (wait.state, wait.reason) == (WaitState.TERMINATING, TerminationReason.CANCELLED)
    assert wait.slice_ns == 5 * S
    wait.stop()
    wait.step(400 * MS, None)
    assert wait.state is WaitState.KILLING
    assert fake.signals == [("soft_interrupt", 0), ("hard_kill", 0)]  # the fake's clock stood still
    wait.step(410 * MS, -9)
    outcome = wait.result()  # a stop is no failure: an outcome, not an exception
    assert outcome == WaitOutcome(-9, TerminationReason.CANCELLED, 0.41, 0.3, 0.4)


def test_Wait_stop_once_the_exit_is_observable_sends_nothing() -> None:
    fake = FakeWaiter()
    wait = new_wait(fake, WaitOptions())
    wait.step(0, None)
    wait.stop()
    wait.step(MS, 0)
    assert wait.result() == WaitOutcome(0, None, 0.001, None, None)
    assert fake.signals == []


def test_Wait_step_keeps_a_failing_hook_and_asks_for_an_immediate_look() -> None:
    fake = FakeWaiter()

    def broken() -> None:
        raise RuntimeError("no such group")

    wait = Wait(
        WaitOptions(timeout=0, interrupt_grace=9),
        0,
        soft_interrupt=broken,
        hard_kill=fake.hard_kill,
    )
    wait.step(0, None)
    wait.step(MS, None)  # the timeout fires; the soft interrupt raises
    assert isinstance(wait.failure, RuntimeError)
    assert (wait.state, wait.slice_ns) == (WaitState.TERMINATING, 0)
    wait.step(MS, None)  # the failure arrived in TERMINATING: the hard kill at once
    assert wait.state is WaitState.KILLING
    wait.step(2 * MS, -9)
    with pytest.raises(RuntimeError, match="no such group"):
        wait.result()


def test_run_wait_observer_failing_at_the_start_escalates_then_reraises() -> None:
    fake = FakeWaiter(exit_at=10 * S, exits_after_interrupt=0)

    def observer(event: WaitEvent) -> None:
        if event.kind == "start":
            raise ValueError("observer failed")

    before = len(MACHINE.models)
    with pytest.raises(ValueError, match="observer failed"):
        run_wait(
            WaitOptions(),
            fake.clock,
            fake,
            soft_interrupt=fake.soft_interrupt,
            hard_kill=fake.hard_kill,
            observer=observer,
        )
    assert fake.signals == [("soft_interrupt", 0)]  # never left unsupervised
    assert len(MACHINE.models) == before


class AsyncFake:
    """FakeWaiter behind the AsyncExitWaiter protocol."""

    def __init__(self, fake: FakeWaiter) -> None:
        self.fake = fake

    @property
    def polls(self) -> bool:
        return self.fake.polls

    async def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        return self.fake.wait(timeout_ns, wake_on_cancel)


@pytest.mark.parametrize(
    "script",
    [
        {"exit_at": 10 * S},
        {"exit_at": 130 * MS, "polls": True},
        {"interrupts_at": (400 * MS, 600 * MS)},
        {"exits_after_kill": None},
    ],
)
def test_run_wait_async_takes_the_same_steps_as_run_wait(script: dict[str, object]) -> None:
    import asyncio

    options = WaitOptions(timeout=1.0, interrupt_grace=0.5, poll_interval=0.05, abandon_after=1.0)
    results = []
    for driver in ("sync", "async"):
        fake = FakeWaiter(**script)  # type: ignore[arg-type]
        events: list[WaitEvent] = []
        try:
            if driver == "sync":
                outcome: object = wait_with(fake, options, events)
            else:
                outcome = asyncio.run(
                    run_wait_async(
                        options,
                        fake.clock,
                        AsyncFake(fake),
                        soft_interrupt=fake.soft_interrupt,
                        hard_kill=fake.hard_kill,
                        observer=events.append,
                    )
                )
        except KeyboardInterrupt as exc:
            outcome = type(exc)
        timeline = [
            (e.at, e.kind, e.state, type(e.detail) if e.kind == "exception" else e.detail)
            for e in events
        ]
        results.append((outcome, fake.slices, fake.signals, timeline))
    assert results[0] == results[1]


@pytest.mark.timeout(10, method="thread")  # the loop would swallow a signal's Failed
def test_run_wait_a_clock_that_keeps_failing_still_escalates_and_reraises() -> None:
    # Each reading after the first raises: the loop must not spin on looks
    # that never reach the table; time stands still at the last reading, each
    # failure acts as an exception (the interrupt, then the kill), and the
    # first failure is re-raised once the child is gone.
    fake = FakeWaiter(exit_at=10 * S)
    readings = 0

    def clock() -> int:
        nonlocal readings
        readings += 1
        if readings > 1:
            raise OSError(f"clock broke ({readings})")
        return fake.clock()

    events: list[WaitEvent] = []
    with pytest.raises(OSError, match=r"clock broke \(2\)"):
        run_wait(
            WaitOptions(timeout=1.0, interrupt_grace=0.5),
            clock,
            fake,
            soft_interrupt=fake.soft_interrupt,
            hard_kill=fake.hard_kill,
            observer=events.append,
        )
    assert [kind for kind, _ in fake.signals] == ["soft_interrupt", "hard_kill"]
    assert events[-1].kind == "exit"
    assert len(fake.slices) < 10


def test_run_wait_a_KeyboardInterrupt_between_the_wakeup_and_the_step_escalates() -> None:
    # A Ctrl-C lands after the waiter returned and before the table is
    # evaluated (here: while the loop reads `polls`): it is a failure like
    # any other, not an escape that leaves the child unsupervised.
    fake = FakeWaiter(exit_at=10 * S, exits_after_interrupt=None)
    reads = 0

    class LandsAfterTheWakeup:
        def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
            return fake.wait(timeout_ns, wake_on_cancel)

        @property
        def polls(self) -> bool:
            nonlocal reads
            reads += 1
            if reads == 2:
                raise KeyboardInterrupt
            return False

    with pytest.raises(KeyboardInterrupt):
        run_wait(
            WaitOptions(timeout=1.0, interrupt_grace=0.5),
            fake.clock,
            LandsAfterTheWakeup(),
            soft_interrupt=fake.soft_interrupt,
            hard_kill=fake.hard_kill,
        )
    assert [kind for kind, _ in fake.signals] == ["soft_interrupt", "hard_kill"]


@pytest.mark.timeout(10, method="thread")  # the loop would swallow a signal's Failed
def test_run_wait_a_waiter_that_keeps_failing_still_escalates_and_reraises() -> None:
    # The look after an exception fails too (a descriptor closed under the
    # waiter, say): act on the exception without that look, rather than look
    # again and again and never signal.
    fake = FakeWaiter(exit_at=10 * S)
    failures = 0

    class Broken:
        polls = False

        def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
            nonlocal failures
            if not fake.signals or fake.signals[-1][0] != "hard_kill":
                failures += 1
                raise OSError(9, "Bad file descriptor")
            return fake.wait(timeout_ns, wake_on_cancel)

    with pytest.raises(OSError, match="Bad file descriptor"):
        run_wait(
            WaitOptions(interrupt_grace=0.5),
            fake.clock,
            Broken(),
            soft_interrupt=fake.soft_interrupt,
            hard_kill=fake.hard_kill,
        )
    assert [kind for kind, _ in fake.signals] == ["soft_interrupt", "hard_kill"]
    assert failures < 10
