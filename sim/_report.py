# How a simulated wait reads on a terminal: its settings, its timeline, its verdict.
#
# This module owns the text of `python -m sim run` and `explore`. It writes
# the loop's own events (Trace.timeline) and, marked with a dot, what the
# world did: the cancellation being requested, the child exiting (which the
# poll backend notices only later), the simulation giving up on a wait that
# never ends. Times use the fewest decimals that show every instant exactly.

from __future__ import annotations

from collections.abc import Sequence

from statewait._options import to_ns
from statewait._wait import WaitEvent

from ._format import decimals_for, seconds
from ._invariants import Violation
from ._scenario import FakeChild, Reaction, Scenario
from ._simulate import Trace

__all__ = ["describe", "summary", "timeline", "verdict"]

_ENDINGS = {
    "forever": "the wait would go on for ever: nothing left can end it",
    "stopped": "the simulation was stopped here",
    "runaway": "the wait does not end: stopped as a runaway",
}


def _reaction(reaction: Reaction) -> str:
    if reaction == "ignore":
        return "ignores it"
    _, delay, code = reaction
    return f"exits {code} after {delay:g} s"


def _child(child: FakeChild) -> str:
    own = (
        "never exits"
        if child.exit_at is None
        else f"exits {child.exit_code} at {child.exit_at:g} s"
    )
    return (
        f"child {own}; on SIGINT {_reaction(child.on_interrupt)}; "
        f"on SIGKILL {_reaction(child.on_kill)}"
    )


def describe(scenario: Scenario) -> str:
    """The scenario's settings on one line."""
    s = scenario
    parts = [
        "no timeout" if s.timeout is None else f"timeout {s.timeout:g} s",
        f"grace {s.interrupt_grace:g} s",
        f"poll {s.poll_interval:g} s",
        f"{s.backend} backend",
        f"{s.cancel_kind} never cancelled"
        if s.cancel_at is None
        else f"{s.cancel_kind} cancelled at {s.cancel_at:g} s",
        "no abandon" if s.abandon_after is None else f"abandon after {s.abandon_after:g} s",
    ]
    if s.lateness:
        parts.append("wakeups late by " + ", ".join(f"{late:g}" for late in s.lateness) + " s")
    return "; ".join(parts) + "\n" + _child(s.child)


def _wakeup_detail(scenario: Scenario, trace: Trace, number: int, decimals: int) -> str:
    sleep = trace.sleeps[number]
    asked = "no limit" if sleep.requested is None else f"{seconds(sleep.requested, decimals)} s"
    text = f"slice {asked}"
    if sleep.requested is None or sleep.began + sleep.requested > sleep.due:
        x = trace.child_exit
        by_exit = x is not None and x.at == sleep.due and scenario.backend == "event"
        text += ", woken by the exit" if by_exit else ", woken by the token"
    if sleep.late:
        text += f", {seconds(sleep.late, decimals)} s late"
    return text


def _detail(scenario: Scenario, trace: Trace, event: WaitEvent, wakeup: int, decimals: int) -> str:
    if event.kind == "wakeup":
        return _wakeup_detail(scenario, trace, wakeup, decimals)
    if event.kind == "soft_interrupt":
        return f"SIGINT, reason {getattr(event.detail, 'value', event.detail)}"
    if event.kind == "hard_kill":
        return "SIGKILL"
    if event.kind == "exit":
        return f"returncode {event.detail}"
    if event.kind == "abandon":
        return "gave up on the child"
    if event.kind == "exception":
        return repr(event.detail)
    return ""


def timeline(scenario: Scenario, trace: Trace) -> list[str]:
    """The trace as aligned rows: t (s), event, state, detail."""
    instants = [e.at for e in trace.timeline] + [trace.ended_at]
    instants += [s.requested or 0 for s in trace.sleeps] + [s.late for s in trace.sleeps]
    decimals = decimals_for(instants)
    # (at, order, event, state, detail): `order` places a world row among
    # the loop's events of the same instant.
    rows: list[tuple[int, float, str, str, str]] = []
    wakeup = -1
    for i, event in enumerate(trace.timeline):
        wakeup += event.kind == "wakeup"
        detail = _detail(scenario, trace, event, wakeup, decimals)
        rows.append((event.at, i, event.kind, event.state.name.lower(), detail))
    if trace.cancelled_at is not None:
        call = "token.cancel()" if scenario.cancel_kind == "token" else "event.set()"
        rows.append((trace.cancelled_at, -1, "· cancel", "", call))
    x = trace.child_exit
    if x is not None and x.at <= trace.ended_at:
        # Right after the signal that made it exit, if that came at the same instant.
        signalled = [
            i
            for i, e in enumerate(trace.timeline)
            if e.kind in ("soft_interrupt", "hard_kill") and e.at == x.at
        ]
        order = signalled[-1] + 0.5 if signalled else -0.5
        rows.append((x.at, order, "· child exits", "", f"returncode {x.code}"))
    if trace.end in _ENDINGS:
        rows.append((trace.ended_at, len(rows), f"· {trace.end}", "", _ENDINGS[trace.end]))
    rows.sort(key=lambda row: (row[0], row[1]))
    width = max(5, len(seconds(rows[-1][0], decimals)))
    lines = [f"{'t (s)':>{width}}  {'event':<15} {'state':<12} detail"]
    for at, _, kind, state, detail in rows:
        lines.append(f"{seconds(at, decimals):>{width}}  {kind:<15} {state:<12} {detail}".rstrip())
    return lines


def summary(trace: Trace) -> str:
    """What the wait did, in one phrase."""
    out = trace.outcome
    signals = ", ".join(
        f"{'SIGINT' if s.kind == 'soft_interrupt' else 'SIGKILL'} at {seconds(s.at)} s"
        for s in trace.signals
    )
    if trace.end == "returned" and out is not None:
        ended = "abandoned" if out.abandoned else f"returncode {out.returncode}"
        how = f"{ended} at {seconds(to_ns(out.elapsed))} s"
    else:
        how = {
            "raised": f"raised {trace.raised!r} at {seconds(trace.ended_at)} s",
            "forever": "never returns",
            "stopped": f"stopped at {seconds(trace.ended_at)} s",
            "runaway": "runaway",
        }[trace.end]
    plural = "" if trace.wakeups == 1 else "s"
    return f"{how}; {signals or 'no signal'}; {trace.wakeups} wakeup{plural}"


def verdict(failures: Sequence[str], violations: Sequence[Violation]) -> list[str]:
    """PASS, or FAIL with one indented line per failure."""
    if not failures and not violations:
        return ["PASS"]
    return ["FAIL", *(f"  {f}" for f in failures), *(f"  {v}" for v in violations)]
