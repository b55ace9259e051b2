# Hypothesis strategies for simulator scenarios, for our property tests and
# for users' own.
#
# This module owns how scenarios are generated. Every time is drawn as an
# integer number of milliseconds and converted to seconds, so that a shrunk
# counterexample reads as a plain timeline ("timeout 0.0, cancel at 0.001"),
# and ties between deadlines, exits and cancellations, where the rules are
# subtle, are drawn on purpose rather than left to chance. It needs
# hypothesis (`pip install 'statewait[sim]'`); importing `sim` alone does not.
#
# The poll interval is kept at least 1/100 of the scenario's horizon, so that
# a poll-backend example costs about a hundred wakeups at most and a
# 10,000-example property run takes about 15 s on one core.

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hypothesis import strategies as st

from ._scenario import BACKENDS, CANCEL_KINDS, FakeChild, Reaction, Scenario

__all__ = [
    "children",
    "lateness_schedules",
    "milliseconds",
    "reactions",
    "scenarios",
]

#: Poll intervals, in the order a shrinking example tends to: the default
#: first, then round values, then odd ones that do not divide the others.
_POLLS_MS = (50, 10, 100, 1, 5, 20, 250, 3, 7, 33, 120, 499)
#: At most this many polls over a scenario's horizon.
_MAX_POLLS = 100
#: A generated child's returncodes: shrinking tends to 0.
_CODES = st.integers(-128, 255)

# Every strategy below draws integers from strategy objects built once, in
# one composite per value, with no .map or builds layers: hypothesis
# validates each new strategy object and charges each layer per draw, and
# that used to cost three times the simulation itself.


class _Ms:
    """Whole-millisecond durations up to a bound, drawn as seconds."""

    def __init__(self, max_ms: int, *, min_ms: int = 0) -> None:
        self.ints = st.integers(min_ms, max_ms)
        self.maybe = st.none() | self.ints

    def draw(self, draw: st.DrawFn) -> float:
        return float(draw(self.ints)) / 1000

    def draw_optional(self, draw: st.DrawFn) -> float | None:
        ms = draw(self.maybe)
        return None if ms is None else ms / 1000


def milliseconds(max_ms: int, *, min_ms: int = 0) -> st.SearchStrategy[float]:
    """Durations in seconds that are whole milliseconds, shrinking towards `min_ms`."""
    return st.integers(min_ms, max_ms).map(lambda ms: ms / 1000)


class _ReactionParts:
    def __init__(self, max_ms: int, default_code: int) -> None:
        self.default: Reaction = ("exit", 0.0, default_code)
        self.kind = st.sampled_from(("default", "ignore", "exit"))
        self.delay = _Ms(max_ms)

    def draw(self, draw: st.DrawFn) -> Reaction:
        kind = draw(self.kind)
        if kind == "default":
            return self.default
        if kind == "ignore":
            return "ignore"
        return ("exit", self.delay.draw(draw), draw(_CODES))


@st.composite
def _reaction(draw: st.DrawFn, parts: _ReactionParts) -> Reaction:
    return parts.draw(draw)


def reactions(*, max_ms: int = 1000, default_code: int) -> st.SearchStrategy[Reaction]:
    """What a child does on a signal: exit at once with `default_code` (what
    it shrinks to), ignore it, or exit after a delay with some code."""
    return _reaction(_ReactionParts(max_ms, default_code))


class _ChildParts:
    def __init__(self, max_ms: int) -> None:
        self.exit_at = _Ms(2 * max_ms)
        self.on_interrupt = _ReactionParts(max_ms // 2, -2)
        self.on_kill = _ReactionParts(max_ms // 2, -9)

    def draw(self, draw: st.DrawFn) -> FakeChild:
        exit_at = self.exit_at.draw_optional(draw)
        return FakeChild(
            exit_at=exit_at,
            exit_code=0 if exit_at is None else draw(_CODES),
            on_interrupt=self.on_interrupt.draw(draw),
            on_kill=self.on_kill.draw(draw),
        )


@st.composite
def _child(draw: st.DrawFn, parts: _ChildParts) -> FakeChild:
    return parts.draw(draw)


def children(*, max_ms: int = 2000) -> st.SearchStrategy[FakeChild]:
    """Fake children: exits on its own (or never), reacts to each signal."""
    return _child(_ChildParts(max_ms))


class _LatenessParts:
    def __init__(self, max_ms: int, max_size: int) -> None:
        # On time shrinks first: a counterexample keeps only the lateness it needs.
        self.lists = st.lists(st.just(0) | st.integers(1, max_ms), max_size=max_size)

    def draw(self, draw: st.DrawFn) -> tuple[float, ...]:
        return tuple(ms / 1000 for ms in draw(self.lists))


@st.composite
def _lateness(draw: st.DrawFn, parts: _LatenessParts) -> tuple[float, ...]:
    return parts.draw(draw)


def lateness_schedules(
    *, max_ms: int = 20, max_size: int = 8
) -> st.SearchStrategy[tuple[float, ...]]:
    """How late each wakeup is, in whole milliseconds; shrinks to on time."""
    return _lateness(_LatenessParts(max_ms, max_size))


class _ScenarioParts:
    def __init__(
        self,
        backends: Sequence[str],
        cancel_kinds: Sequence[str],
        lateness: bool,
        max_ms: int,
    ) -> None:
        self.timeout = _Ms(max_ms)
        self.grace = _Ms(max_ms // 2)
        self.cancel_at = _Ms(max_ms)
        self.abandon_after = _Ms(max_ms // 2)
        self.child = _ChildParts(max_ms)
        self.poll_ms = st.sampled_from(_POLLS_MS)
        # One draw for both: every draw costs hypothesis time.
        self.kinds = st.sampled_from([(b, c) for b in backends for c in cancel_kinds])
        self.exit_tie = st.booleans()  # to the timeout, or to the cancellation
        self.lateness = _LatenessParts(20, 8) if lateness else None

    def draw(self, draw: st.DrawFn) -> Scenario:
        timeout = self.timeout.draw_optional(draw)
        grace = self.grace.draw(draw)
        cancel_at = _tied(draw, self.cancel_at.draw_optional(draw), timeout)
        abandon_after = self.abandon_after.draw_optional(draw)
        child = self.child.draw(draw)
        # Ties are where the rules are subtle: now and then the child exits
        # exactly at (or 1 ms after) the timeout or the cancellation, or
        # dies of SIGINT exactly when the grace ends.
        exit_at = _tied(draw, child.exit_at, timeout if draw(self.exit_tie) else cancel_at)
        on_interrupt = child.on_interrupt
        if on_interrupt != "ignore":
            delay = _tied(draw, on_interrupt[1], grace)
            assert delay is not None, "a delay tied to a duration is a duration"
            on_interrupt = ("exit", delay, on_interrupt[2])
        child = dataclasses.replace(child, exit_at=exit_at, on_interrupt=on_interrupt)
        # Keep a poll-backend example to a hundred wakeups or so.
        delays = [r[1] for r in (child.on_interrupt, child.on_kill) if r != "ignore"]
        horizon = sum(t or 0.0 for t in (timeout, cancel_at, grace, abandon_after, child.exit_at))
        least_poll_ms = max(1, round(1000 * (horizon + sum(delays))) // _MAX_POLLS)
        backend, cancel_kind = draw(self.kinds)
        return Scenario(
            timeout=timeout,
            interrupt_grace=grace,
            poll_interval=max(draw(self.poll_ms), least_poll_ms) / 1000,
            cancel_at=cancel_at,
            cancel_kind=cancel_kind,  # type: ignore[arg-type]
            backend=backend,  # type: ignore[arg-type]
            abandon_after=abandon_after,
            child=child,
            lateness=() if self.lateness is None else self.lateness.draw(draw),
        )


#: How a drawn time may be tied to another: not at all (what shrinking tends
#: to), exactly at it, or at the 1 ms floor after it.
_TIES = st.sampled_from((None, 0.0, 0.001))


def _tied(draw: st.DrawFn, value: float | None, anchor: float | None) -> float | None:
    """`value`, or now and then `anchor` itself or `anchor` + 1 ms."""
    if value is None or anchor is None:
        return value
    offset = draw(_TIES)
    return value if offset is None else round(anchor + offset, 3)


@st.composite
def _scenario(draw: st.DrawFn, parts: _ScenarioParts) -> Scenario:
    return parts.draw(draw)


def scenarios(
    *,
    backends: Sequence[str] = BACKENDS,
    cancel_kinds: Sequence[str] = CANCEL_KINDS,
    lateness: bool = True,
    max_ms: int = 2000,
) -> st.SearchStrategy[Scenario]:
    """Scenarios in whole milliseconds.

    Args:
        backends: the backends to draw from ("event", "poll").
        cancel_kinds: the cancellation kinds to draw from ("token", "flag").
        lateness: also draw a wake-up lateness schedule (up to 8 wakeups,
            each up to 20 ms late).
        max_ms: the scale of the timeline: timeouts and cancellations up to
            it, exits up to twice it.

    Examples:
        >>> from hypothesis import given
        >>> from sim import check_invariants, simulate
        >>> @given(scenarios(backends=["poll"]))
        ... def test_invariants_hold_with_polling(scenario):
        ...     assert check_invariants(scenario, simulate(scenario)) == []
    """
    return _scenario(_ScenarioParts(backends, cancel_kinds, lateness, max_ms))
