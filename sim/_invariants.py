# The invariants I1-I9 of one wait, checked on a simulated trace.
#
# This module owns `check_invariants` and `Violation`. It is a specification,
# not a second implementation: every check is an inequality between instants
# of the trace (signals, evaluations, sleeps, the child's exit) and the
# scenario's durations. It never computes a slice the way the loop does, so a
# loop or table that computes one wrongly is caught rather than copied.
# docs/invariants.md explains each invariant with a shipped scenario.
#
# Vocabulary. An *evaluation* is one look of the loop at the table: the first
# look (the "start" event), each wakeup, and each look after an exception; its
# state before and after and the events it caused are read from the timeline.
# A *sleep* is one slice the loop asked for (Trace.sleeps, aligned with the
# wakeup events). The *deadline* of a state: RUNNING start + timeout,
# TERMINATING interrupt + grace, KILLING kill + abandon_after; a rule fires
# once `now` is strictly past it. The child's exit is observable from the
# instant it happens, as the fake child (FakeChild.exit_given) says given the
# signals it had received by then.
#
# A broken machine tends to break one rule at every wakeup: each rule (a
# check site, `_Found.rule`) is reported once, with how often it broke.

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from statewait import TerminationReason
from statewait._machine import (
    ABANDONED,
    EXITED,
    KILLING,
    LIVE_STATES,
    RUNNING,
    TERMINATING,
    WaitState,
)
from statewait._options import NS_PER_SECOND, to_ns
from statewait._wait import MAX_SLICE_NS, MIN_SLICE_NS, WaitEvent

from ._format import seconds
from ._scenario import ChildExit, Scenario
from ._simulate import Sleep, Trace

__all__ = ["INVARIANTS", "Violation", "check_invariants"]

#: Each invariant's id and its statement (docs/invariants.md explains them).
INVARIANTS: dict[str, str] = {
    "I1": "timeout and cancellation both due at one wakeup: the reason is TIMEOUT",
    "I2": "at most one soft interrupt and at most one hard kill",
    "I3": "a hard kill only after a soft interrupt, strictly more than the grace after it "
    "(or at an escalation)",
    "I4": "a deadline fires strictly after it, and no later than the 1 ms floor "
    "(plus the wakeup's lateness) after it",
    "I5": "a cancellation is acted on at once (token) or within poll_interval (flag), "
    "plus the 1 ms floor and the lateness, and never before it is requested",
    "I6": "no signal once the exit is observable; the wait ends only on the exit (with the "
    "child's returncode) or an abandon, and notices the exit in time",
    "I7": "termination is None exactly when no soft interrupt was sent, and never changes",
    "I8": "no slice under 1 ms, none over poll_interval while polling, no needless wakeup",
    "I9": "a child that exits before every deadline receives no signal",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant.

    Attributes:
        invariant: its id, "I1" to "I9".
        at: when (seconds from the start), or None if it is about the whole wait.
        message: what happened and what was expected instead.
    """

    invariant: str
    at: float | None
    message: str

    def __str__(self) -> str:
        when = "" if self.at is None else f" at {seconds(to_ns(self.at))} s"
        return f"{self.invariant}{when}: {self.message}"


class _Found(NamedTuple):
    rule: str
    at: int | None
    message: str


class _Evaluation(NamedTuple):
    at: int
    kind: str  # "start", "wakeup" or "exception"
    before: WaitState
    after: WaitState
    #: How many signals had been sent before it began.
    sent_before: int
    #: The events it caused (its own start/wakeup/exception event excluded).
    caused: tuple[WaitEvent, ...]

    @property
    def name(self) -> str:
        """How a message calls it."""
        return {"start": "the first look", "wakeup": "this wakeup"}.get(
            self.kind, "the look after the exception"
        )

    def interrupts(self, reason: TerminationReason) -> bool:
        """It sent a soft interrupt with `reason`."""
        return any(e.kind == "soft_interrupt" and e.detail is reason for e in self.caused)


def _evaluations(trace: Trace) -> Iterator[_Evaluation]:
    opened: WaitEvent | None = None
    caused: list[WaitEvent] = []
    sent = sent_before = 0
    for event in [*trace.timeline, None]:
        if event is None or event.kind in ("start", "wakeup", "exception"):
            if opened is not None:
                after = caused[-1].state if caused else opened.state
                # The opening event is emitted before the table is looked at.
                yield _Evaluation(
                    opened.at, opened.kind, opened.state, after, sent_before, tuple(caused)
                )
            opened, caused, sent_before = event, [], sent
        else:
            caused.append(event)
            sent += event.kind in ("soft_interrupt", "hard_kill")


class _Facts:
    """The instants of one trace that the checks compare."""

    def __init__(self, scenario: Scenario, trace: Trace) -> None:
        self.s = scenario
        self.trace = trace
        self.timeout = None if scenario.timeout is None else to_ns(scenario.timeout)
        self.grace = to_ns(scenario.interrupt_grace)
        self.abandon = None if scenario.abandon_after is None else to_ns(scenario.abandon_after)
        self.poll = to_ns(scenario.poll_interval)
        self.cancel_at = None if scenario.cancel_at is None else to_ns(scenario.cancel_at)
        # The spec's own account of the child, from the signals it received:
        # exits[k] is its exit as known after its first k signals.
        child = scenario.child
        self.exits = [child.own_exit()]
        for signal in trace.signals:
            self.exits.append(child.after(self.exits[-1], signal))
        self.exit: ChildExit | None = self.exits[-1]
        self.soft = [sig.at for sig in trace.signals if sig.kind == "soft_interrupt"]
        self.hard = [sig.at for sig in trace.signals if sig.kind == "hard_kill"]
        self.evaluations = list(_evaluations(trace))
        #: The evaluations that decide: not those cut short by an exception (a
        #: hook or the observer raised), which the look after the exception,
        #: at the same instant, completes.
        self.decisive = [
            ev
            for ev, then in zip(self.evaluations, [*self.evaluations[1:], None], strict=True)
            if then is None or then.kind != "exception" or then.at != ev.at
        ]
        self.reasons = [e.detail for e in trace.timeline if e.kind == "soft_interrupt"]
        states = [e.state for e in trace.timeline if e.kind == "wakeup"]
        #: Each sleep with the state the wait was in while it slept.
        self.sleeps: list[tuple[Sleep, WaitState]] = list(zip(trace.sleeps, states, strict=True))
        self.last_state = trace.timeline[-1].state if trace.timeline else RUNNING

    def deadline(self, state: WaitState) -> int | None:
        """The instant after which the rule of `state` fires, if it has one."""
        if state is RUNNING:
            return self.timeout
        if state is TERMINATING and self.soft:
            return self.soft[0] + self.grace
        if state is KILLING and self.hard and self.abandon is not None:
            return self.hard[0] + self.abandon
        return None

    def polled(self, state: WaitState) -> bool:
        """Whether the wait must poll in `state`."""
        return self.s.backend == "poll" or (self.s.cancel_kind == "flag" and state is RUNNING)

    def exit_before(self, signals: int) -> ChildExit | None:
        """The child's exit as known after its first `signals` signals."""
        # min(): a hand-made trace may name more signals in its timeline than
        # the child received; judge it anyway.
        return self.exits[min(signals, len(self.exits) - 1)]

    def escalated_at(self, at: int) -> bool:
        """An exception arrived during the grace at `at` (it escalates to the kill)."""
        return any(
            e.kind == "exception" and e.at == at and e.before is TERMINATING
            for e in self.evaluations
        )


def check_invariants(scenario: Scenario, trace: Trace) -> list[Violation]:
    """Check the invariants I1-I9 on a trace of `scenario`.

    Args:
        scenario: the scenario that was simulated.
        trace: what `simulate(scenario)` returned, with any machine.

    Returns:
        The violations, ordered by invariant then time; [] if there is none.
        A rule broken at many wakeups is reported once, saying how often.
    """
    facts = _Facts(scenario, trace)
    by_rule: dict[str, list[_Found]] = {}
    for check in _CHECKS:
        for found in check(facts):
            by_rule.setdefault(found.rule, []).append(found)
    violations = []
    for rule, founds in by_rule.items():
        first, message = founds[0], founds[0].message
        if len(founds) > 1:
            message += f" (and {len(founds) - 1} more times, the last at {_at(founds[-1].at)})"
        violations.append(
            Violation(
                rule.split(".")[0], None if first.at is None else first.at / NS_PER_SECOND, message
            )
        )
    return sorted(violations, key=lambda v: (int(v.invariant[1:]), v.at or 0.0))


def _at(ns: int | None) -> str:
    return "the end" if ns is None else f"{seconds(ns)} s"


def _i1_precedence(f: _Facts) -> Iterator[_Found]:
    if f.timeout is None:
        return
    for ev in f.evaluations:
        if (
            ev.before is RUNNING
            and ev.at > f.timeout
            and ev.interrupts(TerminationReason.CANCELLED)
        ):
            yield _Found(
                "I1.cancelled-past-timeout",
                ev.at,
                f"interrupted with reason CANCELLED although the timeout ({seconds(f.timeout)} s) "
                "was past too: the timeout takes precedence",
            )


def _i2_once(f: _Facts) -> Iterator[_Found]:
    for name, times in (("soft interrupt", f.soft), ("hard kill", f.hard)):
        if len(times) > 1:
            sent = ", ".join(seconds(t) for t in times)
            yield _Found(
                f"I2.{name}", times[1], f"the {name} was sent {len(times)} times (at {sent} s)"
            )


def _i3_kill_after_grace(f: _Facts) -> Iterator[_Found]:
    if not f.hard:
        return
    kill = f.hard[0]
    if not f.soft or f.soft[0] > kill:
        yield _Found("I3.no-interrupt", kill, "hard kill without a soft interrupt before it")
    elif not f.escalated_at(kill) and kill - f.soft[0] <= f.grace:
        yield _Found(
            "I3.within-grace",
            kill,
            f"hard kill {seconds(kill - f.soft[0])} s after the soft interrupt "
            f"({seconds(f.soft[0])} s); more than the grace ({seconds(f.grace)} s) must pass",
        )


_STATE_RULE = {
    RUNNING: "the timeout's soft interrupt",
    TERMINATING: "the hard kill",
    KILLING: "the abandon",
}


def _i4_deadlines(f: _Facts) -> Iterator[_Found]:
    # Strictly after: the timeout's interrupt and the abandon (the kill is I3's).
    for ev in f.evaluations:
        if ev.interrupts(TerminationReason.TIMEOUT) and (f.timeout is None or ev.at <= f.timeout):
            limit = "there is none" if f.timeout is None else f"{seconds(f.timeout)} s"
            yield _Found(
                "I4.timeout-early",
                ev.at,
                f"interrupted for the timeout, which is not strictly past (timeout: {limit})",
            )
        if any(e.kind == "abandon" for e in ev.caused):
            deadline = f.deadline(KILLING)
            if deadline is None or ev.at <= deadline:
                yield _Found(
                    "I4.abandon-early",
                    ev.at,
                    "abandoned before more than abandon_after had passed since the hard kill",
                )
    # No later than the floor: a look strictly past its state's deadline acts
    # on it (or on the exit) ...
    for ev in f.decisive:
        deadline = f.deadline(ev.before)
        if deadline is not None and ev.at > deadline and ev.after is ev.before:
            yield _Found(
                f"I4.overdue-{ev.before.name}",
                ev.at,
                f"{_STATE_RULE[ev.before]} was due after {seconds(deadline)} s, "
                f"but {ev.name} left the wait {ev.before.name}",
            )
    # ... and no sleep is planned past a pending deadline, beyond the 1 ms floor.
    for sleep, state in f.sleeps:
        deadline = f.deadline(state)
        if deadline is None:
            continue
        latest = max(deadline, sleep.began + MIN_SLICE_NS)
        if sleep.requested is None or sleep.began + sleep.requested > latest:
            planned = "no limit" if sleep.requested is None else f"{seconds(sleep.requested)} s"
            yield _Found(
                f"I4.oversleep-{state.name}",
                sleep.began,
                f"in {state.name}, slept for {planned}: past the deadline of "
                f"{_STATE_RULE[state]} ({seconds(deadline)} s) and the 1 ms floor",
            )
    deadline = f.deadline(f.last_state)
    if f.trace.end == "forever" and deadline is not None:
        yield _Found(
            "I4.forever",
            f.trace.ended_at,
            f"the wait would go on for ever in {f.last_state.name}, "
            f"though {_STATE_RULE[f.last_state]} is due after {seconds(deadline)} s",
        )


def _i5_cancellation(f: _Facts) -> Iterator[_Found]:
    c = f.cancel_at
    for ev in f.evaluations:
        # An exception in RUNNING is a cancellation too.
        requested = ev.kind == "exception" or (c is not None and ev.at >= c)
        if ev.before is RUNNING and ev.interrupts(TerminationReason.CANCELLED) and not requested:
            yield _Found(
                "I5.cancelled-early", ev.at, "interrupted as CANCELLED before any cancellation"
            )
    if c is None:
        return
    # Every look at or after the request acts on it (or on the exit, or the timeout) ...
    for ev in f.decisive:
        if ev.at >= c and ev.before is RUNNING and ev.after is RUNNING:
            yield _Found(
                "I5.ignored",
                ev.at,
                f"the cancellation requested at {seconds(c)} s was not acted on at {ev.name}",
            )
    # ... and the first look after it is due at once (token) or within the poll (flag).
    slack = 0 if f.s.cancel_kind == "token" else max(f.poll, MIN_SLICE_NS)
    for sleep, state in f.sleeps:
        if state is RUNNING and sleep.began < c <= sleep.woke and sleep.due > c + slack:
            bound = "at once" if slack == 0 else f"within {seconds(slack)} s"
            yield _Found(
                "I5.late",
                sleep.woke,
                f"the {f.s.cancel_kind} cancellation requested at {seconds(c)} s was looked at "
                f"{seconds(sleep.due)} s (+{seconds(sleep.late)} s late), not {bound}",
            )
    if f.trace.end == "forever" and f.last_state is RUNNING:
        yield _Found(
            "I5.forever",
            f.trace.ended_at,
            f"the wait would go on for ever though cancelled at {seconds(c)} s",
        )


def _i6_exit(f: _Facts) -> Iterator[_Found]:
    # "Observable" means before the loop acted: a child that dies of a signal
    # at once exits at the signal's instant, and that signal was legitimate.
    for i, sig in enumerate(f.trace.signals):
        known = f.exit_before(i)
        if known is not None and known.at <= sig.at:
            yield _Found(
                "I6.signal-after-exit",
                sig.at,
                f"{sig.kind.replace('_', ' ')} sent to a child whose exit was observable "
                f"since {seconds(known.at)} s",
            )
    for ev in f.decisive:
        known = f.exit_before(ev.sent_before)
        if known is None or known.at > ev.at or ev.before not in LIVE_STATES:
            continue
        if ev.after is not EXITED:
            yield _Found(
                "I6.exit-missed",
                ev.at,
                f"{ev.name} did not end the wait, though the child exited at {seconds(known.at)} s",
            )
    # The exit is noticed at once (event backend) or at the next poll.
    sent = 0
    for sleep, _ in f.sleeps:
        while sent < len(f.trace.signals) and f.trace.signals[sent].at <= sleep.began:
            sent += 1
        known = f.exit_before(sent)
        if known is None or not sleep.began < known.at <= sleep.woke:
            continue
        poll_end = sleep.began + max(f.poll, MIN_SLICE_NS)
        if sleep.due > (known.at if f.s.backend == "event" else poll_end):
            yield _Found(
                "I6.exit-late",
                sleep.woke,
                f"the exit at {seconds(known.at)} s was noticed at {seconds(sleep.due)} s "
                f"(+{seconds(sleep.late)} s late) with the {f.s.backend} backend",
            )
    if f.trace.end == "forever" and f.exit is not None:
        yield _Found(
            "I6.forever",
            f.trace.ended_at,
            f"the wait would go on for ever, though the child exits at {seconds(f.exit.at)} s",
        )
    yield from _i6_end(f)


def _i6_end(f: _Facts) -> Iterator[_Found]:
    x = f.exit
    for event in f.trace.timeline:
        if event.kind == "exit" and (x is None or x.at > event.at):
            yield _Found("I6.exit-early", event.at, "the wait ended EXITED before the child exited")
        elif event.kind == "exit" and event.detail != x.code:  # type: ignore[union-attr]
            code = x.code  # type: ignore[union-attr]
            yield _Found(
                "I6.returncode",
                event.at,
                f"the exit was reported with returncode {event.detail!r}, the child's is {code}",
            )
        elif event.kind == "abandon" and not f.hard:
            yield _Found("I6.abandon", event.at, "abandoned without a hard kill")
    # Exactly one terminal event, the last one: nothing happens after the end.
    ends = [i for i, e in enumerate(f.trace.timeline) if e.kind in ("exit", "abandon")]
    if len(ends) > 1 or (ends and ends[-1] != len(f.trace.timeline) - 1):
        extra = f.trace.timeline[ends[1] if len(ends) > 1 else ends[0] + 1]
        yield _Found(
            "I6.after-end",
            extra.at,
            f"event {extra.kind!r} after the wait had ended "
            f"({f.trace.timeline[ends[0]].kind} at {seconds(f.trace.timeline[ends[0]].at)} s)",
        )
    out = f.trace.outcome
    if f.trace.end in ("returned", "raised") and not ends:
        what = repr(f.trace.raised) if out is None else str(out)
        yield _Found(
            "I6.returned-early",
            f.trace.ended_at,
            f"the wait {f.trace.end} {what} in {f.last_state.name}, "
            "neither on the exit nor an abandon",
        )
    if out is None:
        return
    # elapsed is the end's time in seconds, as the nearest float.
    if ends and out.elapsed != f.trace.timeline[ends[0]].at / NS_PER_SECOND:
        yield _Found(
            "I6.elapsed",
            f.trace.ended_at,
            f"the outcome says elapsed={out.elapsed!r}, the wait ended at "
            f"{seconds(f.trace.timeline[ends[0]].at)} s",
        )
    if out.abandoned != (f.last_state is ABANDONED) or (
        out.abandoned and out.returncode is not None
    ):
        yield _Found("I6.outcome", f.trace.ended_at, f"{out} does not say how the wait ended")
    elif not out.abandoned and (x is None or out.returncode != x.code):
        yield _Found(
            "I6.outcome",
            f.trace.ended_at,
            f"the outcome's returncode {out.returncode!r} is not the child's "
            f"({'none' if x is None else x.code})",
        )


def _reason(reason: object) -> str:
    return repr(reason.value) if isinstance(reason, TerminationReason) else repr(reason)


def _i7_termination(f: _Facts) -> Iterator[_Found]:
    if len(set(f.reasons)) > 1:
        changes = " then ".join(_reason(r) for r in f.reasons)
        yield _Found("I7.changed", f.soft[-1] if f.soft else None, f"the reason changed: {changes}")
    out = f.trace.outcome
    if out is None:
        return
    first = f.reasons[0] if f.reasons else None
    if out.termination is not first:
        sent = "never sent" if not f.soft else f"sent with reason {_reason(first)}"
        yield _Found(
            "I7.termination",
            None,
            f"the outcome's termination is {_reason(out.termination)}, "
            f"but the soft interrupt was {sent}",
        )
    for name, reported, sent_at in (
        ("interrupted_at", out.interrupted_at, f.soft),
        ("killed_at", out.killed_at, f.hard),
    ):
        actual = sent_at[0] if sent_at else None
        if (None if reported is None else to_ns(reported)) != actual:
            truth = "never" if actual is None else f"at {seconds(actual)} s"
            yield _Found(
                f"I7.{name}", None, f"the outcome says {name}={reported!r}, the signal came {truth}"
            )


def _i8_slices(f: _Facts) -> Iterator[_Found]:
    poll_cap = min(max(f.poll, MIN_SLICE_NS), MAX_SLICE_NS)
    for sleep, state in f.sleeps:
        req = sleep.requested
        if req is not None and req < MIN_SLICE_NS:
            yield _Found(
                "I8.floor", sleep.began, f"a slice of {seconds(req)} s, under the 1 ms floor"
            )
        polled = f.polled(state)
        if polled and (req is None or req > poll_cap):
            planned = "no limit" if req is None else f"{seconds(req)} s"
            yield _Found(
                "I8.poll",
                sleep.began,
                f"in {state.name}, slept for {planned} while polling every {seconds(f.poll)} s",
            )
        # No needless wakeup: a slice lasts until the first thing it waits for
        # (its state's deadline or the next poll), floor and one-day cap aside; with nothing
        # to wait for it has no limit.
        reasons = []
        deadline = f.deadline(state)
        if deadline is not None:
            reasons.append(min(max(deadline - sleep.began, MIN_SLICE_NS), MAX_SLICE_NS))
        if polled:
            reasons.append(poll_cap)
        if req is not None and (not reasons or req < min(reasons)):
            why = (
                "nothing was due"
                if not reasons
                else f"nothing was due for {seconds(min(reasons))} s"
            )
            yield _Found(
                "I8.needless",
                sleep.woke,
                f"in {state.name}, a needless wakeup after {seconds(req)} s: {why}",
            )
    if f.trace.end == "runaway":
        yield _Found(
            "I8.runaway",
            f.trace.ended_at,
            f"the wait had not ended after {f.trace.wakeups} wakeups, "
            f"{len(f.trace.timeline)} events (stopped as a runaway)",
        )


def _i9_early_exit(f: _Facts) -> Iterator[_Found]:
    natural = f.s.child.exit_at
    if natural is None or not f.trace.signals:
        return
    x = to_ns(natural)
    if all(x <= d for d in (f.timeout, f.cancel_at) if d is not None):
        first = f.trace.signals[0]
        yield _Found(
            "I9.signalled",
            first.at,
            f"{first.kind.replace('_', ' ')} sent to a child that exits at {seconds(x)} s, "
            "no later than every deadline",
        )


_CHECKS = (
    _i1_precedence,
    _i2_once,
    _i3_kill_after_grace,
    _i4_deadlines,
    _i5_cancellation,
    _i6_exit,
    _i7_termination,
    _i8_slices,
    _i9_early_exit,
)
