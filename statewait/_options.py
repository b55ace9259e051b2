# What one wait is asked to do, and what it reports.
#
# This module owns the public value types of a wait -- WaitOptions,
# TerminationReason, WaitOutcome -- and the validation of every duration a
# user can pass in. It does no waiting and no signalling.
#
# Durations are accepted in seconds (int or float) or as datetime.timedelta and
# stored as float seconds on the public objects. The machine and the loop work
# in integer nanoseconds (see `to_ns`), so that a deadline tie is a real tie.

from __future__ import annotations

import datetime
import enum
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from ._cancel import CancelToken

__all__ = [
    "NS_PER_SECOND",
    "Cancellation",
    "Duration",
    "TerminationReason",
    "WaitOptions",
    "WaitOutcome",
    "check_duration",
    "to_ns",
]

#: What a duration may be given as.
Duration: TypeAlias = "float | int | datetime.timedelta"

#: What may request a cancellation: a CancelToken (wakes the wait at once), a
#: threading.Event or a callable returning True (both polled every
#: poll_interval), or None.
Cancellation: TypeAlias = "CancelToken | threading.Event | Callable[[], bool] | None"

#: Integer, so that ns / NS_PER_SECOND is exact division (correctly rounded,
#: and no overflow for ns past float's range).
NS_PER_SECOND = 1_000_000_000


class TerminationReason(enum.Enum):
    """Why statewait interrupted the child."""

    #: The timeout elapsed while the child was running.
    TIMEOUT = "timeout"
    #: A cancellation was requested (or an exception arrived) while the child was running.
    CANCELLED = "cancelled"

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


def check_duration(
    field: str, value: object, *, optional: bool = False, positive: bool = False
) -> float | None:
    """Validate one duration and return it as float seconds.

    Args:
        field: the name of the option, used in error messages.
        value: what the caller passed.
        optional: whether None is allowed (and returned as None).
        positive: whether zero is refused as well as negative values.

    Returns:
        The duration in seconds, or None when it is optional and absent.

    Raises:
        TypeError: the value is not a number or timedelta (bool and str included).
        ValueError: the value is negative (or zero when positive), NaN or infinite.
    """
    if value is None:
        if optional:
            return None
        raise TypeError(f"{field} must be a duration in seconds, got None")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int past float's range
            raise ValueError(
                f"{field} must be a finite number of seconds, got an int of "
                f"{int(value).bit_length()} bits, past float's range"
            ) from None
    else:
        expected = "seconds (int, float or timedelta)" + (" or None" if optional else "")
        raise TypeError(f"{field} must be {expected}, got {value!r} ({type(value).__name__})")
    if math.isnan(seconds) or math.isinf(seconds):
        hint = "; use None for no limit" if optional else ""
        raise ValueError(f"{field} must be a finite number of seconds, got {value!r}{hint}")
    if seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{field} must be {bound} seconds, got {value!r}")
    return seconds


def to_ns(seconds: float) -> int:
    """Convert validated seconds to integer nanoseconds (rounded to the nearest).

    Exact for any finite duration: past ~1e299 s the product overflows a float,
    and the whole seconds are used (a fraction of a second no longer matters).
    """
    ns = seconds * NS_PER_SECOND
    return round(ns) if math.isfinite(ns) else int(seconds) * NS_PER_SECOND


def _check_cancellation(value: object) -> None:
    from ._cancel import CancelToken

    if value is None or isinstance(value, (CancelToken, threading.Event)) or callable(value):
        return
    raise TypeError(
        "cancellation must be a CancelToken, a threading.Event, a callable returning bool "
        f"or None, got {value!r} ({type(value).__name__})"
    )


@dataclass(frozen=True)
class WaitOptions:
    """How to wait for one child.

    All durations are seconds (int, float or datetime.timedelta; a timedelta
    is stored as float seconds).

    Attributes:
        timeout: interrupt the child once more than this has elapsed; None waits for ever.
        cancellation: a CancelToken (acted on at once), a threading.Event or a
            callable returning True (polled every poll_interval), or None.
        poll_interval: how often a polled cancellation (or the poll backend)
            is checked; > 0.
        interrupt_grace: how long after the soft interrupt the hard kill is
            sent; >= 0.
        abandon_after: stop waiting this long after the hard kill if the child
            still has not exited; None waits for ever.

    Raises:
        TypeError: a field has the wrong type (bool and str durations included).
        ValueError: a duration is negative, NaN or infinite, or poll_interval is 0.
    """

    timeout: float | None = None
    cancellation: Cancellation = None
    poll_interval: float = 0.05
    interrupt_grace: float = 2.0
    abandon_after: float | None = None

    def __post_init__(self) -> None:
        # Normalise in place (frozen): a timedelta or int becomes float seconds,
        # so that equal options compare and print equal.
        set_field = object.__setattr__
        set_field(self, "timeout", check_duration("timeout", self.timeout, optional=True))
        set_field(
            self,
            "poll_interval",
            check_duration("poll_interval", self.poll_interval, positive=True),
        )
        set_field(self, "interrupt_grace", check_duration("interrupt_grace", self.interrupt_grace))
        set_field(
            self,
            "abandon_after",
            check_duration("abandon_after", self.abandon_after, optional=True),
        )
        _check_cancellation(self.cancellation)


@dataclass(frozen=True)
class WaitOutcome:
    """What happened during one wait.

    Times are float seconds measured from the start of the wait on the
    monotonic clock.

    Attributes:
        returncode: the child's exit status in the Popen convention (-N: killed
            by signal N); None only when the wait was abandoned.
        termination: why statewait interrupted the child; None when the child
            exited without being interrupted.
        elapsed: seconds from the start to the end of the wait.
        interrupted_at: when the soft interrupt was sent, or None.
        killed_at: when the hard kill was sent, or None.
        abandoned: True when the wait gave up on a child that survived the
            hard kill for abandon_after seconds.
    """

    returncode: int | None
    termination: TerminationReason | None
    elapsed: float
    interrupted_at: float | None
    killed_at: float | None
    abandoned: bool = False

    @property
    def timed_out(self) -> bool:
        """Whether the child was interrupted because the timeout elapsed."""
        return self.termination is TerminationReason.TIMEOUT

    @property
    def cancelled(self) -> bool:
        """Whether the child was interrupted because of a cancellation."""
        return self.termination is TerminationReason.CANCELLED
