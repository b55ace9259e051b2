# What one simulation is asked to play: the Scenario and its FakeChild.
#
# This module owns the value types a user writes (in Python or, through
# sim/_files.py, in TOML) and their validation. It runs nothing: sim/_simulate.py
# plays a Scenario, sim/_invariants.py judges the result.
#
# The public API speaks float seconds, like statewait.WaitOptions; the
# simulation works in integer nanoseconds (`statewait._options.to_ns`), so
# that a tie between a deadline, an exit and a cancellation is a real tie.
#
# The fake child's whole behaviour is `FakeChild.exit_given`: a pure function
# from the signals it received to when (and how) it exits. The simulation asks
# it after every signal and the invariant checker asks it again afterwards,
# so both agree on what "the child's exit" is without sharing any state.

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeAlias

from statewait._options import check_duration, to_ns

__all__ = [
    "BACKENDS",
    "CANCEL_KINDS",
    "ChildExit",
    "FakeChild",
    "Reaction",
    "Scenario",
    "Signal",
    "SignalKind",
]

#: How the fake child reacts to a signal: "ignore" it, or ("exit", delay, code):
#: exit `delay` seconds after receiving it, with returncode `code`.
Reaction: TypeAlias = "Literal['ignore'] | tuple[Literal['exit'], float, int]"

#: The exit waiters the simulation models. "event": an exit is noticed the
#: moment it happens (pidfd, waitid thread); "poll": only when a slice ends.
BACKENDS = ("event", "poll")
#: The cancellations the simulation models. "token": a CancelToken, which wakes
#: the wait at once; "flag": a threading.Event, noticed when a slice ends.
CANCEL_KINDS = ("token", "flag")

#: The signals a wait sends, by their timeline names.
SignalKind: TypeAlias = "Literal['soft_interrupt', 'hard_kill']"


class Signal(NamedTuple):
    """One signal as the fake child received it."""

    #: Nanoseconds since the start of the wait.
    at: int
    kind: SignalKind


class ChildExit(NamedTuple):
    """When the fake child exits, and with which returncode."""

    #: Nanoseconds since the start of the wait; the exit is observable from then on.
    at: int
    code: int


def _duration(field_name: str, value: object) -> float:
    seconds = check_duration(field_name, value)
    assert seconds is not None, "check_duration refuses None unless optional"
    return seconds


def _optional_duration(field_name: str, value: object) -> float | None:
    return check_duration(field_name, value, optional=True)


def _positive_duration(field_name: str, value: object) -> float:
    seconds = check_duration(field_name, value, positive=True)
    assert seconds is not None, "check_duration refuses None unless optional"
    return seconds


def _returncode(field_name: str, value: object) -> int:
    # bool is an int to Python, never a returncode to a reader.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{field_name} must be an int returncode, got {value!r}")
    return value


def _reaction(field_name: str, value: object) -> Reaction:
    if value == "ignore":
        return "ignore"
    if isinstance(value, (tuple, list)) and len(value) == 3 and value[0] == "exit":
        delay = _duration(f"{field_name} exit delay", value[1])
        return ("exit", delay, _returncode(f"{field_name} exit code", value[2]))
    raise ValueError(f"{field_name} must be 'ignore' or ('exit', delay, code), got {value!r}")


def _choice(options: tuple[str, ...]) -> Callable[[str, object], str]:
    def check(field_name: str, value: object) -> str:
        if value not in options:
            expected = " or ".join(repr(o) for o in options)
            raise ValueError(f"{field_name} must be {expected}, got {value!r}")
        assert isinstance(value, str)
        return value

    return check


def _lateness(field_name: str, value: object) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{field_name} must be a sequence of durations, got {value!r}")
    return tuple(_duration(f"{field_name}[{i}]", late) for i, late in enumerate(value))


def _name(field_name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field_name} must be a str, got {value!r}")
    return value


def _child(field_name: str, value: object) -> FakeChild:
    if not isinstance(value, FakeChild):
        raise TypeError(f"{field_name} must be a FakeChild, got {value!r}")
    return value


#: Each field's check: it takes the field's name (for the message) and the
#: value, returns the normalised value or raises TypeError/ValueError. The
#: TOML loader calls the same checks with dotted names ("child.exit_at").
CHILD_CHECKS: dict[str, Callable[[str, object], object]] = {
    "exit_at": _optional_duration,
    "exit_code": _returncode,
    "on_interrupt": _reaction,
    "on_kill": _reaction,
}
SCENARIO_CHECKS: dict[str, Callable[[str, object], object]] = {
    "name": _name,
    "timeout": _optional_duration,
    "interrupt_grace": _duration,
    "poll_interval": _positive_duration,
    "cancel_at": _optional_duration,
    "cancel_kind": _choice(CANCEL_KINDS),
    "backend": _choice(BACKENDS),
    "abandon_after": _optional_duration,
    "lateness": _lateness,
    "child": _child,
}


def _normalise(obj: object, checks: dict[str, Callable[[str, object], object]]) -> None:
    # Frozen dataclasses: normalise in place, so that equal scenarios compare
    # and print equal (an int duration becomes float seconds, a list a tuple).
    for name, check in checks.items():
        object.__setattr__(obj, name, check(name, getattr(obj, name)))


@dataclass(frozen=True)
class FakeChild:
    """A scripted child process.

    Attributes:
        exit_at: when the child exits on its own (seconds from the start), or
            None if it never does.
        exit_code: its returncode when it exits on its own.
        on_interrupt: what it does on the soft interrupt: "ignore", or
            ("exit", delay, code) to exit `delay` seconds later with `code`.
        on_kill: likewise for the hard kill; "ignore" models an unkillable
            child (stuck in uninterruptible sleep, say).

    A signal that arrives after the child exited changes nothing (the
    invariant checker reports it). When two exits are due at the same
    instant, the one scheduled first wins.

    Raises:
        TypeError, ValueError: a field is invalid; the message names it.
    """

    exit_at: float | None = None
    exit_code: int = 0
    on_interrupt: Reaction = ("exit", 0.0, -2)
    on_kill: Reaction = ("exit", 0.0, -9)

    def __post_init__(self) -> None:
        _normalise(self, CHILD_CHECKS)

    def exit_given(self, signals: Iterable[Signal]) -> ChildExit | None:
        """When the child exits, given the signals it receives (in time order).

        Returns:
            The exit, or None if the child never exits.
        """
        current = self.own_exit()
        for signal in signals:
            current = self.after(current, signal)
        return current

    def own_exit(self) -> ChildExit | None:
        """When the child exits if it receives no signal."""
        return None if self.exit_at is None else ChildExit(to_ns(self.exit_at), self.exit_code)

    def after(self, current: ChildExit | None, signal: Signal) -> ChildExit | None:
        """Its exit once `signal` arrives, given the exit it was heading for."""
        if current is not None and signal.at >= current.at:
            return current  # dead already: a signal changes nothing
        reaction = self.on_interrupt if signal.kind == "soft_interrupt" else self.on_kill
        if reaction == "ignore":
            return current
        _, delay, code = reaction
        at = signal.at + to_ns(delay)
        return ChildExit(at, code) if current is None or at < current.at else current


@dataclass(frozen=True)
class Scenario:
    """One wait to simulate: the options, the world around it, the child.

    The timing fields mean what they mean in statewait.WaitOptions, and
    default likewise. Times are seconds from the start of the wait.

    Attributes:
        timeout: interrupt the child once more than this has elapsed; None: never.
        interrupt_grace: how long after the soft interrupt the hard kill comes.
        poll_interval: how often a flag cancellation or the poll backend is checked.
        cancel_at: when the cancellation is requested, or None for never.
        cancel_kind: "token" (a CancelToken: wakes the wait at once) or
            "flag" (a threading.Event: noticed at the next poll). The wait
            always holds a cancellation of this kind, requested or not.
        backend: "event" (an exit is noticed at once) or "poll" (when a slice ends).
        abandon_after: give up this long after the hard kill; None: wait for ever.
        child: the scripted child.
        lateness: how late each wakeup is, in order (an OS may wake a thread
            late): the k-th wakeup, whatever woke it, happens lateness[k]
            seconds after it was due. Wakeups past the end of the tuple are
            on time (it does not cycle).
        name: a label for timelines and reports.

    Raises:
        TypeError, ValueError: a field is invalid; the message names it.
    """

    timeout: float | None = None
    interrupt_grace: float = 2.0
    poll_interval: float = 0.05
    cancel_at: float | None = None
    cancel_kind: Literal["token", "flag"] = "token"
    backend: Literal["event", "poll"] = "event"
    abandon_after: float | None = None
    child: FakeChild = field(default_factory=FakeChild)
    lateness: tuple[float, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        _normalise(self, SCENARIO_CHECKS)
