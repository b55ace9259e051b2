# The wait state machine: every rule of one wait, as one table.
#
# Rules of this file: no I/O and no clocks. It imports no os, time, signal or
# threading; it decides, it never acts. Time arrives as integer nanoseconds in
# `WaitModel.now`, set by the driver (statewait/_wait.py) before each trigger,
# and the signals are sent by hooks that the driver overrides.
#
# How it works: `TRANSITIONS` is the whole table, one row per line. For one
# (trigger, source) pair the rows are tried top to bottom and the first whose
# guards hold wins, so row order is precedence:
#   an observed exit > the timeout > a cancellation   (in RUNNING)
#   an observed exit > the grace                      (in TERMINATING)
#   an observed exit > abandon_after                  (in KILLING)
# A trigger that no row accepts from the current state raises
# transitions.MachineError and leaves the state unchanged; a `wakeup` whose
# guards all fail is accepted and changes nothing.
#
# Invariants, each held by the shape of the table rather than by a flag:
#   - the hard kill is sent at most once: the only rows into KILLING leave
#     TERMINATING, and no row leaves KILLING except to EXITED or ABANDONED;
#   - the soft interrupt is sent at most once, and before any hard kill: the
#     only rows into TERMINATING leave RUNNING;
#   - the termination reason is set once, on the way out of RUNNING;
#   - EXITED and ABANDONED are dead ends: no row leaves them.
#
# The machine is built once, at import (building one per wait costs ~40 us);
# each wait adds its WaitModel and must remove it afterwards (`release`),
# because the machine keeps a strong reference to every model it holds.

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from transitions import Machine

from ._options import TerminationReason

__all__ = [
    "FINAL_STATES",
    "LIVE_STATES",
    "MACHINE",
    "TRANSITIONS",
    "Row",
    "WaitModel",
    "WaitState",
    "build_machine",
]


class WaitState(enum.Enum):
    """Where one wait stands."""

    #: The child runs; nothing has been sent to it.
    RUNNING = "running"
    #: The soft interrupt was sent; the grace period runs.
    TERMINATING = "terminating"
    #: The hard kill was sent (once); waiting for the exit.
    KILLING = "killing"
    #: The child's exit was observed. Dead end.
    EXITED = "exited"
    #: The child outlived the hard kill by abandon_after; the wait gave up. Dead end.
    ABANDONED = "abandoned"

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


RUNNING, TERMINATING, KILLING, EXITED, ABANDONED = WaitState

#: States in which the child may still be alive and the wait goes on.
LIVE_STATES = (RUNNING, TERMINATING, KILLING)
#: Dead ends: the wait is over.
FINAL_STATES = (EXITED, ABANDONED)


class Row(NamedTuple):
    """One transition: on `trigger` in `source`, if every condition holds and
    no `unless` holds, go to `dest` and call `after` on the model."""

    trigger: str
    source: tuple[WaitState, ...]
    dest: WaitState
    conditions: tuple[str, ...]
    unless: tuple[str, ...]
    after: str


# fmt: off
TRANSITIONS: tuple[Row, ...] = (
    #   trigger     source          dest         conditions             unless after
    # An exit seen at a wakeup ends the wait before any deadline is looked at:
    # no signal ever goes to a child whose exit is known.
    Row("wakeup",   LIVE_STATES,    EXITED,      ("exit_observed",),    (),    "record_exit"),
    # Timeout before cancellation: when both hold at one wakeup, the reason is TIMEOUT.
    Row("wakeup",   (RUNNING,),     TERMINATING, ("timeout_due",),      (),    "interrupt_timeout"),
    # A cancellation, or an exception that arrived while waiting.
    Row("wakeup",   (RUNNING,),     TERMINATING, ("cancel_requested",), (),    "interrupt_cancel"),
    # The grace ran out: the one hard kill.
    Row("wakeup",   (TERMINATING,), KILLING,     ("grace_expired",),    (),    "kill"),
    # A second Ctrl-C: skip the rest of the grace. Refused in every other state.
    Row("escalate", (TERMINATING,), KILLING,     (),                    (),    "kill"),
    # The child outlived the hard kill by abandon_after: stop waiting.
    Row("wakeup",   (KILLING,),     ABANDONED,   ("abandon_due",),      (),    "record_abandon"),
)
# fmt: on


class WaitModel:
    """The state of one wait, as the machine sees it.

    All times are integer nanoseconds on the wait's clock. The driver sets
    `now` (and `exit_status`) before each trigger. The four `on_*` hooks do
    nothing here; the driver overrides them to signal, log and record.
    """

    # Bound by the machine in add_model; declared for type checkers only, so
    # that transitions does not find an attribute and skip the binding.
    state: WaitState
    wakeup: Callable[[], bool]
    escalate: Callable[[], bool]
    may_escalate: Callable[[], bool]

    def __init__(
        self,
        start: int,
        *,
        timeout: int | None,
        grace: int,
        abandon_after: int | None,
        cancel_check: Callable[[], bool] | None = None,
    ) -> None:
        self.start = start
        self.now = start
        self.timeout = timeout
        self.grace = grace
        self.abandon_after = abandon_after
        self.cancel_check = cancel_check
        #: The child's returncode once its exit is observable, else None.
        self.exit_status: int | None = None
        #: Set when an exception arrives in RUNNING: it acts as a cancellation.
        self.stop_requested = False
        self.reason: TerminationReason | None = None
        self.interrupted_at: int | None = None
        self.killed_at: int | None = None
        self.ended_at: int | None = None

    # -- deadlines: the instant after which a rule of the current state fires
    def pending_deadline(self) -> int | None:
        """The deadline the current state waits for, or None if it has none.

        A rule fires once `now` is strictly past its deadline.
        """
        if self.state is RUNNING:
            return None if self.timeout is None else self.start + self.timeout
        if self.state is TERMINATING:
            assert self.interrupted_at is not None, "TERMINATING is entered by an interrupt"
            return self.interrupted_at + self.grace
        if self.state is KILLING and self.abandon_after is not None:
            assert self.killed_at is not None, "KILLING is entered by a kill"
            return self.killed_at + self.abandon_after
        return None

    def _past_deadline(self) -> bool:
        deadline = self.pending_deadline()
        return deadline is not None and self.now > deadline

    # -- guards (conditions); each is a pure function of the fields above
    def exit_observed(self) -> bool:
        """The child's exit is observable."""
        return self.exit_status is not None

    def timeout_due(self) -> bool:
        """More than `timeout` has elapsed since the start (strictly)."""
        return self._past_deadline()

    def cancel_requested(self) -> bool:
        """A cancellation was requested, or an exception asked the wait to stop."""
        # bool(): transitions compares a guard's result with True, and a user's
        # callable may return any truthy value.
        return self.stop_requested or (self.cancel_check is not None and bool(self.cancel_check()))

    def grace_expired(self) -> bool:
        """More than `grace` has elapsed since the soft interrupt (strictly)."""
        return self._past_deadline()

    def abandon_due(self) -> bool:
        """More than `abandon_after` has elapsed since the hard kill (strictly)."""
        return self._past_deadline()

    # -- actions (after callbacks): record first, then act, so that a hook
    # that raises leaves a consistent record behind.
    def record_exit(self) -> None:
        self.ended_at = self.now
        self.on_end()

    def interrupt_timeout(self) -> None:
        self._interrupt(TerminationReason.TIMEOUT)

    def interrupt_cancel(self) -> None:
        self._interrupt(TerminationReason.CANCELLED)

    def _interrupt(self, reason: TerminationReason) -> None:
        assert self.reason is None, "the reason is set once"
        self.reason = reason
        self.interrupted_at = self.now
        self.on_soft_interrupt()

    def kill(self) -> None:
        assert self.killed_at is None, "the hard kill is sent once"
        self.killed_at = self.now
        self.on_hard_kill()

    def record_abandon(self) -> None:
        self.ended_at = self.now
        self.on_end()

    # -- hooks for the driver
    def on_soft_interrupt(self) -> None:
        """Send the soft interrupt (the driver's job)."""

    def on_hard_kill(self) -> None:
        """Send the hard kill (the driver's job)."""

    def on_end(self) -> None:
        """The wait reached EXITED or ABANDONED."""


def build_machine(
    rows: Sequence[Row] = TRANSITIONS, machine_class: type[Machine] = Machine
) -> Machine:
    """Build a machine with no models from a table.

    The module-level MACHINE is built from TRANSITIONS. Tests build variants
    from mutated tables to prove that the invariant checker catches them, and
    the docs script passes transitions' GraphMachine to draw the diagram.
    """
    transitions: list[dict[str, Any]] = [
        {
            "trigger": row.trigger,
            "source": list(row.source),
            "dest": row.dest,
            "conditions": list(row.conditions),
            "unless": list(row.unless),
            "after": row.after,
        }
        for row in rows
    ]
    return machine_class(
        model=None,
        states=WaitState,
        transitions=transitions,
        initial=RUNNING,
        auto_transitions=False,
        ignore_invalid_triggers=False,
        send_event=False,
    )


#: The one machine every wait uses.
MACHINE = build_machine()
