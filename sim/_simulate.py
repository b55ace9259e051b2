# Play one Scenario through the real wait loop on virtual time.
#
# This module owns `simulate` and the `Trace` it returns. It plugs a virtual
# clock and a virtual exit waiter (`_World`) into statewait._wait.run_wait --
# the production loop, not a copy -- and records what happened: the loop's
# timeline, every sleep the loop asked for, the signals the fake child got.
# It judges nothing: sim/_invariants.py does.
#
# The world is scripted by the Scenario: the child's exit (FakeChild), the
# cancellation (a real CancelToken or threading.Event, requested when virtual
# time reaches cancel_at) and the lateness of each wakeup. A sleep ends at the
# earliest of its timeout, the child's exit (event backend only: the poll
# backend notices an exit when a slice ends) and the cancellation (token only,
# and only while the loop asks to be woken by it), then the wakeup's lateness
# is added.
#
# The loop never returns by itself in three cases, which the simulation ends
# and reports in `Trace.end`:
#   - "forever": the wait would go on for ever: the loop asked to sleep with
#     no limit and nothing will wake it, or it keeps waking up to the same
#     nothing (polling an unkillable child without abandon_after, say). The
#     simulation calls a wait settled when the child will never exit, no
#     cancellation is still to come, every deadline that has started is past
#     and the last wakeup did nothing (or what the one before did). Guards
#     only compare `now` with past deadlines, so every later wakeup would do
#     the same: for ever;
#   - "stopped": virtual time reached `until`;
#   - "runaway": more than `max_wakeups` wakeups, or SPIN_LIMIT in a row at
#     one instant (a broken machine that spins).
# To end it, the waiter raises `_Abort`; by the loop's contract an exception
# is escalated only after a look at the child, so the waiter reports an exit
# at that look, the loop finishes without signalling, and the simulation drops
# the events of that last look. The user's callbacks never see them.

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

from transitions import Machine

from statewait import CancelToken, TerminationReason, WaitOptions, WaitOutcome
from statewait._machine import MACHINE
from statewait._options import NS_PER_SECOND, to_ns
from statewait._wait import WaitEvent, run_wait

from ._clock import VirtualClock
from ._frozen import FrozenClock, frozen_for_run
from ._scenario import ChildExit, Scenario, Signal

__all__ = ["Sleep", "Trace", "TraceEnd", "simulate"]

#: How a simulation ended: the wait returned, raised (a user callback's
#: exception, re-raised by the loop after the child was dealt with), would
#: go on for ever, was stopped at `until`, or ran away (see the header).
TraceEnd: TypeAlias = "Literal['returned', 'raised', 'forever', 'stopped', 'runaway']"

#: How many wakeups a simulation allows before it calls the wait a runaway.
MAX_WAKEUPS = 20_000
#: How many wakeups in a row at one instant make a runaway: a wait that spins
#: without time passing never ends (a healthy one has two at most: the one
#: that sends a signal and the one that sees the child die of it).
SPIN_LIMIT = 100


class Sleep(NamedTuple):
    """One sleep the loop asked for; each ends in one wakeup event."""

    #: When the sleep began (ns since the start).
    began: int
    #: The slice the loop asked for (ns), None for no limit.
    requested: int | None
    #: When it was due to end: the slice's end, or an earlier exit or cancellation.
    due: int
    #: The injected lateness (ns): the wakeup happened at due + late.
    late: int

    @property
    def woke(self) -> int:
        """When the wakeup happened (ns since the start)."""
        return self.due + self.late


@dataclass(frozen=True)
class Trace:
    """What happened in one simulated wait. Times are ns since the start.

    Attributes:
        timeline: the loop's own events, in order (statewait._wait.WaitEvent).
        outcome: the WaitOutcome, if the wait returned.
        sleeps: every sleep the loop asked for, in order (the first look at
            the child, which does not sleep, is not one).
        signals: the signals the fake child received, in order.
        child_exit: when the child exits given those signals (possibly after
            the end of a stopped trace), or None if it never does.
        cancelled_at: when the cancellation was requested, if it was by the end.
        end: how the simulation ended (see TraceEnd).
        ended_at: when it ended: the wait's end, or the moment the simulation
            saw it would go on for ever, was stopped or ran away.
        raised: the exception the wait re-raised when end == "raised".
    """

    timeline: tuple[WaitEvent, ...]
    outcome: WaitOutcome | None
    sleeps: tuple[Sleep, ...]
    signals: tuple[Signal, ...]
    child_exit: ChildExit | None
    cancelled_at: int | None
    end: TraceEnd
    ended_at: int
    raised: BaseException | None = None

    @property
    def wakeups(self) -> int:
        """How many times the loop woke up (slices that ended)."""
        return len(self.sleeps)

    @property
    def events(self) -> tuple[tuple[float, str, object], ...]:
        """The timeline as (seconds, kind, detail): a wakeup's detail is its
        slice in seconds (None: unbounded), a soft interrupt's its reason
        ("timeout" or "cancelled"), an exit's the returncode."""
        return tuple((e.at / NS_PER_SECOND, e.kind, _plain(e)) for e in self.timeline)


def _plain(event: WaitEvent) -> object:
    detail = event.detail
    if event.kind == "wakeup":
        return None if detail is None else detail / NS_PER_SECOND  # type: ignore[operator]
    if isinstance(detail, TerminationReason):
        return detail.value
    return detail


class _Abort(BaseException):
    """Ends a simulation that the loop would not end by itself (see the header)."""


class _World:
    """The virtual exit waiter: the clock, the child and the cancellation."""

    def __init__(
        self,
        scenario: Scenario,
        clock: VirtualClock,
        cancellation: CancelToken | threading.Event,
        *,
        until: int | None,
        max_wakeups: int,
    ) -> None:
        self.polls = scenario.backend == "poll"
        self._scenario = scenario
        self._clock = clock
        self._cancellation = cancellation
        self._cancel_at = None if scenario.cancel_at is None else to_ns(scenario.cancel_at)
        self._until = until
        self._max_wakeups = max_wakeups
        self.timeline: list[WaitEvent] = []
        self.sleeps: list[Sleep] = []
        self.signals: list[Signal] = []
        self.exit = scenario.child.own_exit()
        self.cancelled_at: int | None = None
        self.end: TraceEnd | None = None
        self.kept = 0  # how many timeline events to keep when the loop was aborted
        # What the last two wakeups caused (event kinds), None before any.
        self._did: tuple[str, ...] | None = None
        self._did_before: tuple[str, ...] | None = None
        self._calls = 0
        self._spins = 0  # wakeups in a row at one instant
        # The scenario's durations in ns, and when the grace and the abandon
        # deadlines started (set by the first soft interrupt and hard kill).
        self._timeout = None if scenario.timeout is None else to_ns(scenario.timeout)
        self._grace = to_ns(scenario.interrupt_grace)
        self._abandon = None if scenario.abandon_after is None else to_ns(scenario.abandon_after)
        self._first: dict[str, int] = {}

    # -- ExitWaiter
    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        if self.end is not None:
            return 0  # the look that lets the loop finish after _Abort
        clock = self._clock
        self._calls += 1
        if self._calls > self._max_wakeups:
            # Counts looks too: a machine whose actions raise makes the loop
            # look again at once, for ever, without sleeping.
            self._abort("runaway")
        if timeout_ns != 0:
            wake_at = []
            if self.exit is not None and not self.polls:
                wake_at.append(self.exit.at)
            if wake_on_cancel and self._cancel_at is not None:
                wake_at.append(self._cancel_at)  # a cancelled token stays readable
            due = clock.due(timeout_ns, wake_at)
            if due is None or self._settled():
                self._abort("forever")
            elif self._until is not None and due + clock.next_lateness() > self._until:
                clock.now = self._until
                self._abort("stopped")
            elif self._spins >= SPIN_LIMIT:
                self._abort("runaway")
            else:
                began = clock.now
                late = clock.sleep(due)
                self.sleeps.append(Sleep(began, timeout_ns, due, late))
                self._spins = self._spins + 1 if clock.now == began else 0
        self._request_cancel_if_due()
        exited = self.exit is not None and self.exit.at <= clock.now
        return self.exit.code if exited and self.exit is not None else None

    def _settled(self) -> bool:
        """Nothing new can happen any more (see the module header)."""
        if self._did is None or self._did not in ((), self._did_before):
            return False
        if self.exit is not None or (self._cancel_at is not None and self.cancelled_at is None):
            return False
        soft, hard = self._first.get("soft_interrupt"), self._first.get("hard_kill")
        started = [
            self._timeout,
            None if soft is None else soft + self._grace,
            None if hard is None or self._abandon is None else hard + self._abandon,
        ]
        now = self._clock.now
        return all(now > deadline for deadline in started if deadline is not None)

    def _request_cancel_if_due(self) -> None:
        c_at = self._cancel_at
        if self.cancelled_at is None and c_at is not None and self._clock.now >= c_at:
            self.cancelled_at = self._cancel_at
            c = self._cancellation
            c.cancel() if isinstance(c, CancelToken) else c.set()

    def _abort(self, end: TraceEnd) -> None:
        self.end = end
        self.kept = len(self.timeline)
        raise _Abort(end)

    # -- run_wait's callbacks
    def observe(self, event: WaitEvent) -> None:
        self.timeline.append(event)
        if event.kind == "wakeup":
            self._did_before, self._did = self._did, ()
        elif self._did is not None:
            self._did += (event.kind,)

    def soft_interrupt(self) -> None:
        self._signal("soft_interrupt")

    def hard_kill(self) -> None:
        self._signal("hard_kill")

    def _signal(self, kind: Literal["soft_interrupt", "hard_kill"]) -> None:
        signal = Signal(self._clock.now, kind)
        self.signals.append(signal)
        self._first.setdefault(kind, signal.at)
        self.exit = self._scenario.child.after(self.exit, signal)


Callback: TypeAlias = "Callable[[], None]"


def simulate(
    scenario: Scenario,
    *,
    machine: Machine = MACHINE,
    until: float | None = None,
    observer: Callable[[WaitEvent], None] | None = None,
    soft_interrupt: Callback | None = None,
    hard_kill: Callback | None = None,
    max_wakeups: int = MAX_WAKEUPS,
) -> Trace:
    """Run the real wait loop on a scenario, on virtual time.

    Args:
        scenario: what to play.
        machine: the state machine to drive; tests pass mutated ones
            (see sim.mutants).
        until: stop the simulation once virtual time would pass this many
            seconds (the trace then ends "stopped").
        observer: also receives each timeline event, as run_wait's observer.
        soft_interrupt: also called when the soft interrupt is sent.
        hard_kill: also called when the hard kill is sent.
        max_wakeups: call the wait a runaway after this many wakeups.

    While the user's callbacks run, time.time() and time.monotonic() follow
    the virtual clock (freezegun; see sim.virtual_time).

    Returns:
        The Trace. An exception raised by a callback is escalated and
        re-raised by the loop as in a real wait; it ends up in `Trace.raised`.
    """
    clock = VirtualClock([to_ns(late) for late in scenario.lateness])
    cancellation: CancelToken | threading.Event = (
        CancelToken() if scenario.cancel_kind == "token" else threading.Event()
    )
    world = _World(
        scenario,
        clock,
        cancellation,
        until=None if until is None else to_ns(until),
        max_wakeups=max_wakeups,
    )
    options = WaitOptions(
        timeout=scenario.timeout,
        cancellation=cancellation,
        poll_interval=scenario.poll_interval,
        interrupt_grace=scenario.interrupt_grace,
        abandon_after=scenario.abandon_after,
    )
    user = {"observer": observer, "soft_interrupt": soft_interrupt, "hard_kill": hard_kill}
    frozen_context = frozen_for_run() if any(user.values()) else contextlib.nullcontext(None)
    callback_errors: list[BaseException] = []
    outcome: WaitOutcome | None = None
    raised: BaseException | None = None
    with frozen_context as frozen:
        hooks = _hooks(world, clock, frozen, user, callback_errors)
        try:
            outcome = run_wait(
                options,
                clock,
                world,
                soft_interrupt=hooks["soft_interrupt"],
                hard_kill=hooks["hard_kill"],
                observer=hooks.get("observer"),
                label=scenario.name or "fake child",
                machine=machine,
                # Not the observer: the loop drops an observer that raised,
                # and the trace must record the whole timeline all the same.
                recorder=world.observe,
            )
        except BaseException as exc:
            # A user's callback failed: the loop escalated, then re-raised it.
            # Anything else (a real Ctrl-C, a bug) is not the simulated wait's.
            if not (isinstance(exc, _Abort) or any(exc is e for e in callback_errors)):
                raise
            raised = exc
    end: TraceEnd = world.end or ("returned" if outcome is not None else "raised")
    timeline = world.timeline if world.end is None else world.timeline[: world.kept]
    return Trace(
        timeline=tuple(timeline),
        outcome=outcome,
        sleeps=tuple(world.sleeps),
        signals=tuple(world.signals),
        child_exit=world.exit,
        cancelled_at=world.cancelled_at,
        end=end,
        ended_at=timeline[-1].at if world.end is None else clock.now,
        raised=raised if end == "raised" else None,
    )


def _hooks(
    world: _World,
    clock: VirtualClock,
    frozen: FrozenClock | None,
    user: dict[str, Callable[..., None] | None],
    errors: list[BaseException],
) -> dict[str, Callable[..., None]]:
    """run_wait's callbacks: the world's, then the user's at virtual time.
    The world records the timeline as run_wait's recorder, so the observer is
    the user's alone (absent if there is none)."""
    own: dict[str, Callable[..., None]] = {
        "soft_interrupt": world.soft_interrupt,
        "hard_kill": world.hard_kill,
    }
    hooks = dict(own)
    for name, callback in user.items():
        if callback is None:
            continue
        assert frozen is not None, "user callbacks run at frozen virtual time"
        at_virtual_time = frozen.wrap(clock, callback)
        world_first = own.get(name)  # the observer is the user's alone

        def both(
            *args: object,
            mine: Callable[..., None] | None = world_first,
            theirs: Callable[..., None] = at_virtual_time,
        ) -> None:
            if mine is not None:
                mine(*args)
            if world.end is not None:
                return  # the events of the look after _Abort are not the wait's
            try:
                theirs(*args)
            except BaseException as exc:
                errors.append(exc)
                raise

        hooks[name] = both
    return hooks
