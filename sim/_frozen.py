# Virtual wall-clock time for the user's callbacks, through freezegun.
#
# This module owns the one dependency on freezegun, imported only when a
# simulation runs user callbacks (freezegun is not needed to run scenarios).
# The wait loop itself never reads time.*: it reads the virtual clock it is
# given. Only the user's callbacks (observer, soft_interrupt, hard_kill) need
# time.monotonic() and time.time() to follow the virtual clock.
#
# Why not freeze for every simulation: entering freeze_time scans every loaded
# module for references to the time functions, 2 to 3.5 ms per entry in a
# test process (the first entry builds freezegun's cache: ~20 ms; importing
# freezegun ~0.4 s), against ~0.15 ms for a whole simulation. So a simulation
# freezes time only when it has user callbacks, and `virtual_time()` lets a
# property test enter freezegun once for all its examples; moving the frozen
# time costs 2.5 us, 10 to 20 us per callback all told. Between callbacks the
# frozen time is left where the last callback saw it.

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator
from typing import Any, Protocol

__all__ = ["EPOCH", "FrozenClock", "frozen_for_run", "virtual_time"]

#: The wall-clock time at virtual time 0: time.time() == 946684800.0 + t.
EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)

# freezegun would also freeze the clocks hypothesis reads to time its examples
# (deadlines, health checks) when virtual_time() surrounds a property test.
_IGNORE = ["hypothesis"]


class _Freezer(Protocol):
    def move_to(self, target_datetime: datetime.datetime) -> None: ...


class FrozenClock:
    """Shows the virtual time to user callbacks while a simulation runs."""

    def __init__(self, freezer: _Freezer, epoch: datetime.datetime) -> None:
        self._freezer = freezer
        self._epoch = epoch

    def show(self, now_ns: int) -> None:
        """Set time.time() and time.monotonic() to `epoch + now_ns`.

        freezegun keeps datetimes, so the callbacks see microseconds.
        """
        self._freezer.move_to(self._epoch + datetime.timedelta(microseconds=now_ns // 1000))

    def wrap(self, clock: Callable[[], int], callback: Callable[..., Any]) -> Callable[..., Any]:
        """`callback`, called with the frozen time set to `clock()` first."""

        def at_virtual_time(*args: Any) -> Any:
            self.show(clock())
            return callback(*args)

        return at_virtual_time


# The innermost active virtual_time() block; freezegun itself is process-wide.
_active: list[FrozenClock] = []


def _freeze_time(epoch: datetime.datetime) -> Any:
    try:
        import freezegun
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "simulating user callbacks needs freezegun: pip install 'statewait[sim]'"
        ) from exc
    return freezegun.freeze_time(epoch, ignore=_IGNORE)


@contextlib.contextmanager
def virtual_time(epoch: datetime.datetime = EPOCH) -> Iterator[None]:
    """Enter freezegun once for every simulation inside the block.

    Use it around a property test whose simulations run callbacks, so that
    each example does not pay for entering freeze_time (2 to 3.5 ms) but only
    for moving the frozen time (10 to 20 us per callback).

    Args:
        epoch: the wall-clock time at virtual time 0.

    Examples:
        >>> import time
        >>> from sim import FakeChild, Scenario, simulate
        >>> seen = []
        >>> with virtual_time():
        ...     trace = simulate(Scenario(timeout=1.0, child=FakeChild(exit_at=5.0)),
        ...                      soft_interrupt=lambda: seen.append(time.monotonic()))
        >>> round(seen[0] - EPOCH.timestamp(), 6)
        1.001
    """
    freezer = _freeze_time(epoch)
    frozen = FrozenClock(freezer.start(), epoch)
    _active.append(frozen)
    try:
        yield
    finally:
        _active.remove(frozen)
        freezer.stop()


@contextlib.contextmanager
def frozen_for_run() -> Iterator[FrozenClock]:
    """The active virtual_time() block's clock, or one entered for one run."""
    if _active:
        yield _active[-1]
        return
    with virtual_time():
        yield _active[-1]
