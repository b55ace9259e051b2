# Deliberately broken machines, to prove that the invariant checker bites.
#
# This module owns the mutants: each is the real table (statewait._machine.
# TRANSITIONS) with one plausible mistake, built with build_machine, plus the
# invariants the checker must report for it and a scenario that shows it. The
# tests run every mutant through that scenario and through a hypothesis
# search; `python -m sim explore --mutant NAME` prints its minimal
# counterexample. Nothing here is used by a real wait.
#
# Some mistakes need a guard or an action the real model does not have (a
# non-strict comparison, a hard kill without its once-only assertion, as
# under `python -O`). They are plain functions of the model, below; the
# mutants' Machine subclass resolves their names through transitions' own
# `resolve_callable` hook, so neither statewait's model nor its loop changes.

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transitions import Machine

from statewait import TerminationReason
from statewait._machine import KILLING, TERMINATING, TRANSITIONS, Row, WaitModel, build_machine

from ._scenario import FakeChild, Scenario

__all__ = ["MUTANTS", "Mutant", "mutant"]


# -- the extra guards and actions a mutated row may name
def _deadline_reached(model: WaitModel) -> bool:
    """The current state's deadline is reached (non-strict: >=)."""
    deadline = model.pending_deadline()
    return deadline is not None and model.now >= deadline


def _grace_passed_long_ago(model: WaitModel) -> bool:
    """The grace has passed (true for ever once in KILLING)."""
    return model.interrupted_at is not None and model.now - model.interrupted_at > model.grace


def _kill_unchecked(model: WaitModel) -> None:
    """The hard kill without its once-only assertion (as under python -O)."""
    model.on_hard_kill()


def _interrupt_again_as_cancelled(model: WaitModel) -> None:
    """A second soft interrupt that overwrites the reason."""
    model.reason = TerminationReason.CANCELLED
    model.on_soft_interrupt()


_EXTRA: dict[str, Callable[[Any], Any]] = {
    "deadline_reached": _deadline_reached,
    "grace_passed_long_ago": _grace_passed_long_ago,
    "kill_unchecked": _kill_unchecked,
    "interrupt_again_as_cancelled": _interrupt_again_as_cancelled,
}


class _MutantMachine(Machine):
    """A Machine whose rows may also name the functions in _EXTRA."""

    @staticmethod
    def resolve_callable(func: Any, event_data: Any) -> Any:
        if isinstance(func, str) and func in _EXTRA:
            return functools.partial(_EXTRA[func], event_data.model)
        return Machine.resolve_callable(func, event_data)


def _find(rows: Sequence[Row], after: str) -> int:
    """The index of the one row whose action is `after`."""
    (index,) = [i for i, row in enumerate(rows) if row.after == after and row.trigger == "wakeup"]
    return index


def _swap_timeout_and_cancel(rows: list[Row]) -> list[Row]:
    t, c = _find(rows, "interrupt_timeout"), _find(rows, "interrupt_cancel")
    rows[t], rows[c] = rows[c], rows[t]
    return rows


def _add_second_kill(rows: list[Row]) -> list[Row]:
    # Last, after the abandon row: any other wakeup in KILLING kills again.
    rows.append(
        Row("wakeup", (KILLING,), KILLING, ("grace_passed_long_ago",), (), "kill_unchecked")
    )
    return rows


def _non_strict(after: str) -> Callable[[list[Row]], list[Row]]:
    def mutate(rows: list[Row]) -> list[Row]:
        i = _find(rows, after)
        rows[i] = rows[i]._replace(conditions=("deadline_reached",))
        return rows

    return mutate


def _exit_checked_last(rows: list[Row]) -> list[Row]:
    exit_row = rows.pop(_find(rows, "record_exit"))
    rows.append(exit_row)
    return rows


def _drop(after: str) -> Callable[[list[Row]], list[Row]]:
    def mutate(rows: list[Row]) -> list[Row]:
        del rows[_find(rows, after)]
        return rows

    return mutate


def _reinterrupt_on_cancel(rows: list[Row]) -> list[Row]:
    rows.append(
        Row(
            "wakeup",
            (TERMINATING,),
            TERMINATING,
            ("cancel_requested",),
            (),
            "interrupt_again_as_cancelled",
        )
    )
    return rows


@dataclass(frozen=True)
class Mutant:
    """One deliberately broken table.

    Attributes:
        name: how the CLI and the tests call it.
        mistake: what is wrong with the table, in a phrase.
        invariants: exactly what the checker reports on `scenario`.
        scenario: a scenario on which the mistake shows.
        mutate: turns a copy of the real table into the broken one.
    """

    name: str
    mistake: str
    invariants: frozenset[str]
    scenario: Scenario
    mutate: Callable[[list[Row]], list[Row]]

    @functools.cached_property
    def machine(self) -> Machine:
        """The broken machine, for simulate(..., machine=...)."""
        return build_machine(self.mutate(list(TRANSITIONS)), machine_class=_MutantMachine)


_STUBBORN = FakeChild(on_interrupt="ignore")

MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "cancel-before-timeout",
            "the cancellation row comes before the timeout row",
            frozenset({"I1"}),
            # The token fires at the wakeup where the timeout is first past.
            Scenario(timeout=1.0, cancel_at=1.001, child=FakeChild(exit_at=5.0)),
            _swap_timeout_and_cancel,
        ),
        Mutant(
            "second-hard-kill",
            "a row lets KILLING kill again",
            frozenset({"I2"}),
            Scenario(
                timeout=1.0,
                interrupt_grace=0.5,
                backend="poll",
                poll_interval=0.1,
                child=FakeChild(on_interrupt="ignore", on_kill=("exit", 0.25, -9)),
            ),
            _add_second_kill,
        ),
        Mutant(
            "non-strict-timeout",
            "the timeout fires at the deadline (>=), not strictly after it",
            frozenset({"I4"}),
            Scenario(timeout=1.0, child=FakeChild(exit_at=5.0)),
            _non_strict("interrupt_timeout"),
        ),
        Mutant(
            "non-strict-grace",
            "the hard kill fires when the grace is reached (>=), not exceeded",
            frozenset({"I3"}),
            Scenario(timeout=1.0, interrupt_grace=0.5, child=_STUBBORN),
            _non_strict("kill"),
        ),
        Mutant(
            "non-strict-abandon",
            "the wait gives up when abandon_after is reached (>=), not exceeded",
            frozenset({"I4"}),
            Scenario(
                timeout=0.0,
                interrupt_grace=0.0,
                abandon_after=1.0,
                child=FakeChild(on_interrupt="ignore", on_kill="ignore"),
            ),
            _non_strict("record_abandon"),
        ),
        Mutant(
            "exit-checked-last",
            "the exit row comes after the deadline rows",
            frozenset({"I6", "I9"}),
            # The child exits just as the cancellation is requested.
            Scenario(cancel_at=0.5, child=FakeChild(exit_at=0.5)),
            _exit_checked_last,
        ),
        Mutant(
            "cancellation-ignored",
            "the cancellation row is missing",
            frozenset({"I5"}),
            # (With a token, the loop would also spin: woken by it at once, for ever.)
            Scenario(timeout=2.0, cancel_at=0.5, cancel_kind="flag", child=FakeChild(exit_at=3.0)),
            _drop("interrupt_cancel"),
        ),
        Mutant(
            "no-hard-kill",
            "the grace row is missing: a child that ignores SIGINT is never killed",
            frozenset({"I4"}),
            Scenario(
                timeout=1.0,
                interrupt_grace=0.5,
                child=FakeChild(on_interrupt="ignore", exit_at=3.0),
            ),
            _drop("kill"),
        ),
        Mutant(
            "reinterrupt-on-cancel",
            "a cancellation during the grace interrupts again and overwrites the reason",
            frozenset({"I2", "I7"}),
            Scenario(timeout=1.0, interrupt_grace=0.5, cancel_at=1.2, child=_STUBBORN),
            _reinterrupt_on_cancel,
        ),
    )
}


def mutant(name: str) -> Mutant:
    """The mutant called `name`.

    Raises:
        KeyError: there is none; the message lists the names.
    """
    try:
        return MUTANTS[name]
    except KeyError:
        raise KeyError(f"no mutant {name!r}; choose from {', '.join(MUTANTS)}") from None
