"""A small fake clock and exit waiter for loop tests (the full simulator is sim/)."""

from __future__ import annotations

import math
import threading

from statewait import CancelToken

MS = 1_000_000
S = 1_000_000_000


class FakeWaiter:
    """A virtual clock and a scripted child in one object.

    The child exits at `exit_at` (ns) with `code`; `exits_after_interrupt` /
    `exits_after_kill` schedule an exit relative to the signal. The
    cancellation (a CancelToken or a threading.Event) is fired when the clock
    passes `cancel_at`. `interrupts_at` lists times at which the wait is hit
    by an exception (KeyboardInterrupt unless given).
    """

    def __init__(
        self,
        *,
        exit_at: int | None = None,
        code: int = 0,
        polls: bool = False,
        cancellation: CancelToken | threading.Event | None = None,
        cancel_at: int | None = None,
        exits_after_interrupt: int | None = None,
        exits_after_kill: int | None = 0,
        interrupts_at: tuple[int, ...] = (),
        exception: type[BaseException] = KeyboardInterrupt,
    ) -> None:
        self.now = 0
        self.exit_at = exit_at
        self.code = code
        self.polls = polls
        self.cancellation = cancellation
        self.cancel_at = cancel_at
        self.exits_after_interrupt = exits_after_interrupt
        self.exits_after_kill = exits_after_kill
        self.interrupts_at = list(interrupts_at)
        self.exception = exception
        self.slices: list[int | None] = []
        self.signals: list[tuple[str, int]] = []

    def clock(self) -> int:
        return self.now

    def soft_interrupt(self) -> None:
        self.signals.append(("soft_interrupt", self.now))
        if self.exits_after_interrupt is not None:
            self._exit_by(self.now + self.exits_after_interrupt, -2)

    def hard_kill(self) -> None:
        self.signals.append(("hard_kill", self.now))
        if self.exits_after_kill is not None:
            self._exit_by(self.now + self.exits_after_kill, -9)

    def _exit_by(self, at: int, code: int) -> None:
        if self.exit_at is None or at < self.exit_at:
            self.exit_at, self.code = at, code

    def _cancelled(self) -> bool:
        c = self.cancellation
        return c is not None and (c.cancelled if isinstance(c, CancelToken) else c.is_set())

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        self.slices.append(timeout_ns)
        target: float = math.inf if timeout_ns is None else self.now + timeout_ns
        if self.exit_at is not None and not self.polls:
            target = min(target, max(self.exit_at, self.now))
        if wake_on_cancel and self.cancel_at is not None and not self._cancelled():
            target = min(target, max(self.cancel_at, self.now))
        if self.interrupts_at and self.interrupts_at[0] <= target:
            self.now = max(self.now, self.interrupts_at.pop(0))
            raise self.exception
        assert target != math.inf, "the loop would block for ever"
        self.now = int(target)
        if self.cancel_at is not None and self.now >= self.cancel_at and not self._cancelled():
            c = self.cancellation
            assert c is not None
            c.cancel() if isinstance(c, CancelToken) else c.set()
        if self.exit_at is not None and self.now >= self.exit_at:
            return self.code
        return None
