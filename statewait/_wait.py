# THE wait loop, and the per-wait driver it shares with every other front end.
#
# This module owns two things:
#   - `Wait`: one wait's driver. It feeds time and exit observations to the
#     machine (statewait/_machine.py), turns its transitions into signals and
#     timeline events, and computes how long to sleep until the next wakeup
#     (`next_slice`). It never blocks and never reads a clock itself, so the
#     synchronous loop below, a supervisor thread multiplexing many children
#     and an asyncio loop can all drive it.
#   - the loop, `run_wait_async`, parameterised by a clock and an exit
#     waiter. asyncio awaits it (statewait/aio.py); `run_wait` runs it to its
#     end on a blocking waiter -- the real backends (statewait/_backends) and
#     the simulator (sim/) plug theirs in. There is no other copy of this
#     loop. The supervisor (statewait/_supervisor.py) has no loop per wait: it
#     calls `Wait.step` from its event loop. What one turn does -- wake, keep
#     the first exception and act on it at once, plan the next block -- lives
#     in `Wait.step`, once.
#
# It does not own: the rules (the table in _machine.py), how an exit is
# detected (_backends), what a signal is (_signals.py), or spawning (_run.py).
#
# Time is integer nanoseconds on the caller's monotonic clock. The slice rule:
# sleep until the earliest of the current state's deadline and, where
# something must be polled, now + poll_interval; never less than 1 ms, nor
# more than a day (MAX_SLICE_NS). With nothing to poll and no deadline (an
# event-driven waiter, a CancelToken or no cancellation, no timeout) the loop
# sleeps until the exit or the token.

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple, Protocol

from transitions import Machine

from ._cancel import probe
from ._machine import FINAL_STATES, MACHINE, RUNNING, WaitModel, WaitState
from ._options import NS_PER_SECOND, TerminationReason, WaitOptions, WaitOutcome, to_ns

__all__ = [
    "MAX_SLICE_NS",
    "MIN_SLICE_NS",
    "AsyncExitWaiter",
    "Clock",
    "EventKind",
    "ExitWaiter",
    "Observer",
    "Wait",
    "WaitEvent",
    "run_wait",
    "run_wait_async",
]

logger = logging.getLogger("statewait")

#: The shortest sleep between two wakeups: a deadline that is due "now but not
#: strictly past" is looked at again 1 ms later, never in a busy loop.
MIN_SLICE_NS = 1_000_000

#: The longest bounded sleep: a deadline further away (a timeout of a month,
#: say) is approached a day at a time, because the sleeps underneath (select,
#: poll, epoll, Event.wait) refuse timeouts past a few weeks or years. A wait
#: with no deadline and nothing to poll still sleeps without a limit.
MAX_SLICE_NS = 86_400 * NS_PER_SECOND

#: What a timeline event can be.
EventKind = Literal[
    "start", "wakeup", "soft_interrupt", "hard_kill", "exit", "abandon", "exception"
]

#: A monotonic clock in integer nanoseconds, such as time.monotonic_ns.
Clock = Callable[[], int]


class WaitEvent(NamedTuple):
    """One entry of a wait's timeline.

    Attributes:
        at: nanoseconds since the start of the wait.
        kind: what happened.
        state: the machine's state after it happened.
        detail: "wakeup": the slice (ns) that ended, None if it was unbounded;
            "soft_interrupt": the TerminationReason; "exit": the returncode;
            "exception": the exception; otherwise None.
    """

    at: int
    kind: EventKind
    state: WaitState
    detail: object


#: Receives every timeline event, in order, synchronously.
Observer = Callable[[WaitEvent], None]


class ExitWaiter(Protocol):
    """How the loop learns that the child exited.

    A waiter blocks for at most one slice and reports whether the child's exit
    is observable. Real waiters reap the child only through Popen, once the
    exit is known, so `child.returncode` is set when they report it.
    """

    @property
    def polls(self) -> bool:
        """True if an exit is only noticed when `wait` returns at a slice's end
        (so the loop must wake every poll_interval)."""
        ...

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        """Block until the exit is observable or `timeout_ns` passes.

        Args:
            timeout_ns: how long to block at most; 0 only looks, None blocks
                until the exit (or the cancellation).
            wake_on_cancel: also return early when the wait's CancelToken is
                cancelled. The loop asks for it only while the cancellation
                still matters (in RUNNING), so a cancelled token never spins it.

        Returns:
            The child's returncode if its exit is observable, else None.
        """
        ...


class AsyncExitWaiter(Protocol):
    """ExitWaiter for an asyncio loop: `wait` is a coroutine, same contract."""

    @property
    def polls(self) -> bool:
        """As ExitWaiter.polls."""
        ...

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> Awaitable[int | None]:
        """As ExitWaiter.wait, without blocking the loop."""
        ...


class Wait(WaitModel):
    """The driver of one wait: feeds the machine, signals, records, slices.

    A front end drives it like this: block for at most `slice_ns` (0: only
    look; None: until the exit, or the token when `wakes_on_cancel`), then
    call `step` with the clock and the exit status; repeat until `done`; an
    exception raised while blocking goes to `interrupted`. `result()` then
    returns the outcome or re-raises the first exception.

    Args:
        options: the validated WaitOptions.
        start: the clock's reading when the wait began (ns).
        soft_interrupt: sends the soft interrupt; called once at most.
        hard_kill: sends the hard kill; called once at most.
        polls: the exit waiter only notices an exit when polled.
        observer: receives each timeline event.
        label: names the child in log lines.
        machine: the machine to attach to; tests pass mutated ones.
        recorder: also receives each timeline event, before the observer, and
            is never dropped (the observer is, once it raised): the
            simulator's record of the whole timeline. It must not raise.
    """

    def __init__(
        self,
        options: WaitOptions,
        start: int,
        *,
        soft_interrupt: Callable[[], None],
        hard_kill: Callable[[], None],
        polls: bool = False,
        observer: Observer | None = None,
        label: str = "child",
        machine: Machine = MACHINE,
        recorder: Observer | None = None,
    ) -> None:
        cancel = probe(options.cancellation)
        super().__init__(
            start,
            timeout=None if options.timeout is None else to_ns(options.timeout),
            grace=to_ns(options.interrupt_grace),
            abandon_after=None if options.abandon_after is None else to_ns(options.abandon_after),
            cancel_check=cancel.check,
        )
        self._send_soft_interrupt = soft_interrupt
        self._send_hard_kill = hard_kill
        self._observer = observer
        self._recorder = recorder
        self._label = label
        self._poll = to_ns(options.poll_interval)
        #: The exit waiter notices exits only when polled; run_wait refreshes
        #: it after every wait, since a backend may degrade to polling.
        self.polls_exit = polls
        self._cancel_polled = cancel.polled
        self._wakes_on_token = cancel.token is not None
        # The planned block: the first look does not sleep (the child may be
        # gone already); 0 again after an exception, to act on it at once.
        self._slice: int | None = 0
        self._pending_exception: BaseException | None = None
        self._stop_pending = False
        #: The first exception raised while waiting; `result()` re-raises it.
        self.failure: BaseException | None = None
        #: How many times a slice ended (the initial look is not a wakeup).
        self.wakeups = 0
        self._machine = machine
        machine.add_model(self, initial=RUNNING)
        self._attached = True
        try:
            self._emit("start", None)
        except BaseException as exc:
            self.interrupted(exc)  # an observer that fails at once: escalate like any failure

    # -- what the front ends call
    @property
    def done(self) -> bool:
        """The wait reached EXITED or ABANDONED."""
        return self.state in FINAL_STATES

    @property
    def wakes_on_cancel(self) -> bool:
        """The waiter should return when the CancelToken fires (only in RUNNING)."""
        return self._wakes_on_token and self.state is RUNNING

    @property
    def acting(self) -> bool:
        """An exception or a stop waits for the next `step` to be acted on."""
        return self._pending_exception is not None or self._stop_pending

    @property
    def slice_ns(self) -> int | None:
        """How long the driver may block before the next `step` (ns).

        0: only look (the start, or an exception to act on at once); None: no
        limit (until the exit, or the token when `wakes_on_cancel`).
        """
        return self._slice

    @property
    def deadline_ns(self) -> int | None:
        """`slice_ns` as an instant on the clock, for drivers that keep timers."""
        return None if self._slice is None else self.now + self._slice

    def step(self, now: int, exit_status: int | None) -> None:
        """One turn of the loop, after a block of `slice_ns` ended.

        Evaluates the table at `now` and plans the next block. An exception
        raised by a hook or the observer is kept (see `failure`) and acted on
        at once (`slice_ns` becomes 0), exactly as if it had been raised while
        blocking.

        Args:
            now: the clock's reading (ns).
            exit_status: the child's returncode if its exit is observable.
        """
        try:
            self.wake(now, exit_status, woke=self._slice != 0)
            if not self.done:
                self._slice = self.next_slice()
        except BaseException as exc:
            self.interrupted(exc)

    def wake(self, now: int, exit_status: int | None, *, woke: bool = True) -> None:
        """Evaluate the table at `now`.

        Args:
            now: the clock's reading (ns).
            exit_status: the child's returncode if its exit is observable.
            woke: a slice ended here (counted and recorded as a wakeup);
                False for a look that did not sleep.
        """
        self.now = now
        self.exit_status = exit_status
        if woke:
            self.wakeups += 1
            self._emit("wakeup", self._slice)
        exc, self._pending_exception = self._pending_exception, None
        stop, self._stop_pending = self._stop_pending, False
        if exc is not None:
            self._emit("exception", exc)
        if (exc is not None or stop) and exit_status is None:
            if self.state is RUNNING:
                self.stop_requested = True  # acts as a cancellation below
            elif self.may_escalate():
                self.escalate()  # a second interrupt: skip the rest of the grace
        self.wakeup()

    def interrupted(self, exc: BaseException) -> None:
        """An exception arrived while waiting; acted on at the next `wake`.

        The first one is kept in `failure`. Unless the wait is over, it acts
        like `stop()` at once: in RUNNING a cancellation (soft interrupt,
        grace, hard kill), in TERMINATING the hard kill.
        """
        if self.failure is None:
            self.failure = exc
        if not self.done:
            self._pending_exception = exc
            self._slice = 0

    def stop(self) -> None:
        """The driver asks the wait to stop, with no exception; acted on at the next `wake`.

        In RUNNING it is a cancellation (reason CANCELLED unless the timeout
        is due at the same wakeup); in TERMINATING, a second request, it skips
        the rest of the grace; elsewhere it does nothing. Used by the
        Supervisor's cancel_all, close and Future.cancel.
        """
        self._stop_pending = True

    def result(self) -> WaitOutcome:
        """The outcome of a finished wait, or its first failure re-raised.

        Raises:
            BaseException: the first exception raised while waiting.
        """
        self.release()
        if self.failure is not None:
            raise self.failure
        return self.outcome()

    def next_slice(self) -> int | None:
        """How long to sleep (ns) before the next wakeup; None for no limit."""
        deadline = self.pending_deadline()
        slice_ns = None if deadline is None else deadline - self.now
        if self.polls_exit or (self._cancel_polled and self.state is RUNNING):
            slice_ns = self._poll if slice_ns is None else min(slice_ns, self._poll)
        if slice_ns is not None:
            slice_ns = min(max(slice_ns, MIN_SLICE_NS), MAX_SLICE_NS)
        return slice_ns

    def outcome(self) -> WaitOutcome:
        """The WaitOutcome of a finished wait."""
        assert self.ended_at is not None, "outcome() is for a finished wait"
        return WaitOutcome(
            returncode=self.exit_status,
            termination=self.reason,
            elapsed=self._seconds(self.ended_at),
            interrupted_at=self._maybe_seconds(self.interrupted_at),
            killed_at=self._maybe_seconds(self.killed_at),
            abandoned=self.state is WaitState.ABANDONED,
        )

    def release(self) -> None:
        """Detach from the machine (it holds a strong reference). Idempotent.

        Also lets go of the caller's cancellation and observer: the machine's
        bindings make a Wait a reference cycle, freed only by the garbage
        collector, and a CancelToken kept that long keeps its descriptor.
        """
        if self._attached:
            self._attached = False
            self._machine.remove_model(self)
            self.cancel_check = None
            self._observer = None
            self._recorder = None

    # -- the machine's hooks
    def on_soft_interrupt(self) -> None:
        self._emit("soft_interrupt", self.reason)
        self._send_soft_interrupt()

    def on_hard_kill(self) -> None:
        self._emit("hard_kill", None)
        self._send_hard_kill()

    def on_end(self) -> None:
        if self.state is WaitState.EXITED:
            self._emit("exit", self.exit_status)
        else:
            self._emit("abandon", None)
        self.release()

    # -- helpers
    def _seconds(self, at: int) -> float:
        return (at - self.start) / NS_PER_SECOND

    def _maybe_seconds(self, at: int | None) -> float | None:
        return None if at is None else self._seconds(at)

    def _emit(self, kind: EventKind, detail: object) -> None:
        at = self.now - self.start
        event = WaitEvent(at, kind, self.state, detail)
        if self._recorder is not None:
            self._recorder(event)
        observer = self._observer
        if observer is not None:
            try:
                observer(event)
            except BaseException:
                # Heard once, like any failure; an observer that fails on every
                # event would otherwise fail the escalation's events too, for ever.
                self._observer = None
                raise
        if kind not in ("start", "wakeup") and logger.isEnabledFor(logging.DEBUG):
            shown = detail.value if isinstance(detail, TerminationReason) else detail
            logger.debug(
                "%s: %s at %.6fs -> %s%s",
                self._label,
                kind,
                at / NS_PER_SECOND,
                self.state.name,
                "" if shown is None else f" ({shown!r})",
            )


def run_wait(
    options: WaitOptions,
    clock: Clock,
    waiter: ExitWaiter,
    *,
    soft_interrupt: Callable[[], None],
    hard_kill: Callable[[], None],
    observer: Observer | None = None,
    label: str = "child",
    machine: Machine = MACHINE,
    recorder: Observer | None = None,
) -> WaitOutcome:
    """Wait for one child on this thread: the one wait loop, blocking.

    This is `run_wait_async`'s loop, run to its end in one step: the waiter
    blocks inside an `await` that never suspends, so there is one loop for
    every front end, not a synchronous copy.

    Args:
        options: the validated WaitOptions.
        clock: monotonic integer nanoseconds (time.monotonic_ns, or a virtual clock).
        waiter: reports the child's exit; see ExitWaiter.
        soft_interrupt: sends the soft interrupt.
        hard_kill: sends the hard kill.
        observer: receives each timeline event.
        label: names the child in log lines.
        machine: the machine to drive; tests pass mutated ones.
        recorder: see Wait (the simulator's record of the timeline).

    Returns:
        The WaitOutcome, once the exit was observed or the wait was abandoned.

    Raises:
        BaseException: the first exception raised while waiting (by the
            waiter, a callback or the observer; KeyboardInterrupt included),
            re-raised only after the child was escalated and its exit observed
            (or the wait abandoned).
    """
    loop = run_wait_async(
        options,
        clock,
        _Blocking(waiter),
        soft_interrupt=soft_interrupt,
        hard_kill=hard_kill,
        observer=observer,
        label=label,
        machine=machine,
        recorder=recorder,
    )
    try:
        loop.send(None)
    except StopIteration as finished:
        outcome: WaitOutcome = finished.value
        return outcome
    loop.close()
    raise AssertionError("unreachable: a blocking waiter never suspends the loop")


class _Blocking:
    """An ExitWaiter seen as an AsyncExitWaiter: `wait` blocks the thread and
    never suspends, so run_wait_async runs to its end within one send()."""

    def __init__(self, waiter: ExitWaiter) -> None:
        self._waiter = waiter

    @property
    def polls(self) -> bool:
        return self._waiter.polls

    async def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        return self._waiter.wait(timeout_ns, wake_on_cancel)


async def run_wait_async(
    options: WaitOptions,
    clock: Clock,
    waiter: AsyncExitWaiter,
    *,
    soft_interrupt: Callable[[], None],
    hard_kill: Callable[[], None],
    observer: Observer | None = None,
    label: str = "child",
    machine: Machine = MACHINE,
    recorder: Observer | None = None,
) -> WaitOutcome:
    """THE wait loop: block for the slice the Wait asks for, step, repeat.

    Every decision is in `Wait`; the loop only waits and feeds it. asyncio
    awaits it (statewait/aio.py); run_wait runs it on a blocking waiter. A
    task cancellation arrives as CancelledError from the waiter and is an
    exception like any other: a cancellation in RUNNING, the hard kill at
    once in TERMINATING, re-raised once the child has exited (or the wait was
    abandoned).

    Args:
        options: the validated WaitOptions.
        clock: monotonic integer nanoseconds.
        waiter: reports the child's exit without blocking the loop.
        soft_interrupt: sends the soft interrupt.
        hard_kill: sends the hard kill.
        observer: receives each timeline event.
        label: names the child in log lines.
        machine: the machine to drive; tests pass mutated ones.
        recorder: see Wait (the simulator's record of the timeline).

    Returns:
        The WaitOutcome, once the exit was observed or the wait was abandoned.

    Raises:
        BaseException: the first exception raised while waiting
            (CancelledError and KeyboardInterrupt included), re-raised only
            after the child was escalated and its exit observed (or the wait
            abandoned).
    """
    wait = Wait(
        options,
        clock(),
        soft_interrupt=soft_interrupt,
        hard_kill=hard_kill,
        polls=waiter.polls,
        observer=observer,
        label=label,
        machine=machine,
        recorder=recorder,
    )
    try:
        while not wait.done:
            try:
                exit_status = await waiter.wait(wait.slice_ns, wait.wakes_on_cancel)
            except GeneratorExit:
                # The coroutine is being closed (its event loop is gone, say):
                # it can await nothing more, so no grace can be timed and no
                # exit seen. Escalate at once rather than leave the child
                # running unsupervised: the soft interrupt, then the hard kill.
                for _ in range(2):
                    if not wait.done:
                        wait.stop()
                        wait.step(_read(clock, wait), None)
                raise
            except BaseException as exc:
                # Acted on after one look at the child (the next turn), so that
                # no signal goes to a child that has exited -- unless this was
                # that look: then act without it, rather than look for ever.
                looked = wait.acting
                wait.interrupted(exc)
                if not looked:
                    continue
                exit_status = None
            try:
                wait.polls_exit = waiter.polls
                wait.step(_read(clock, wait), exit_status)
            except BaseException as exc:  # step keeps its own; a Ctrl-C just before it
                wait.interrupted(exc)
    finally:
        wait.release()
    return wait.result()


def _read(clock: Clock, wait: Wait) -> int:
    """The clock's reading. A clock that raises is a failure like any other
    (kept, acted on at once), and time stands still at the last reading: the
    table is still evaluated, so the loop neither spins nor skips the escalation."""
    try:
        return clock()
    except BaseException as exc:
        wait.interrupted(exc)
        return wait.now
