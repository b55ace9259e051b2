# Virtual time for the simulator.
#
# This module owns the clock: integer nanoseconds since the start of the
# simulated wait, moved only by jumps. A sleep ends at the earliest moment
# something is due (the sleep's own timeout, a child's exit, a cancellation),
# plus the injected lateness of that wakeup; nothing is stepped one poll at a
# time, so a scenario that sleeps an hour costs one jump. It knows nothing of
# children or cancellations: sim/_simulate.py says which moments are due.

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["VirtualClock"]


class VirtualClock:
    """A monotonic clock in integer nanoseconds that moves only by jumps.

    Calling the clock reads it, so it is a `statewait._wait.Clock`.

    Args:
        lateness: how late (ns) each wakeup is, in order; wakeups past the end
            of the sequence are on time.

    Examples:
        >>> clock = VirtualClock(lateness=[0, 5])
        >>> clock.sleep(clock.due(100, wake_at=[40]))  # woken at 40 by an event
        0
        >>> clock.sleep(clock.due(100, wake_at=[])), clock()  # 5 ns late
        (5, 145)
    """

    def __init__(self, lateness: Sequence[int] = ()) -> None:
        self.now = 0
        #: How many sleeps have ended.
        self.wakeups = 0
        self._lateness = lateness

    def __call__(self) -> int:
        return self.now

    def due(self, timeout: int | None, wake_at: Iterable[int]) -> int | None:
        """When a sleep that starts now would be due to end.

        Args:
            timeout: the sleep's own limit (ns), or None for none.
            wake_at: instants that also end it (an exit, a cancellation); one
                already past ends it at once.

        Returns:
            The earliest of now + timeout and `wake_at`, or None if the sleep
            would never end.
        """
        candidates = [max(self.now, at) for at in wake_at]
        if timeout is not None:
            candidates.append(self.now + timeout)
        return min(candidates, default=None)

    def next_lateness(self) -> int:
        """How late (ns) the next wakeup will be."""
        k = self.wakeups
        return self._lateness[k] if k < len(self._lateness) else 0

    def sleep(self, due: int) -> int:
        """Jump to `due` plus the next wakeup's lateness.

        Returns:
            How late (ns) this wakeup was.
        """
        assert due >= self.now, "a monotonic clock never goes back"
        late = self.next_lateness()
        self.now = due + late
        self.wakeups += 1
        return late
