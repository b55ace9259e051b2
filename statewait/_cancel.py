# Cooperative cancellation: the CancelToken, and how the wait loop reads any
# kind of cancellation.
#
# A CancelToken wakes waiters at once: it carries a file descriptor (an
# eventfd on Linux, a self-pipe elsewhere) that becomes readable for ever when
# the token is cancelled, so a selector, an asyncio loop or a supervisor
# thread can watch it beside a child's pidfd. The descriptor is created only
# when somebody asks for it, so a token used as a plain flag costs no fd.
#
# A threading.Event or a callable carries no such descriptor: the loop polls
# it every poll_interval. This module owns that distinction (`probe`); it does
# not wait for children.

from __future__ import annotations

import _thread
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import NamedTuple

from ._options import Cancellation

__all__ = ["CancelProbe", "CancelToken", "WakeupFd", "finish_soon", "probe"]


def finish_soon(
    locked: threading.Lock, action: Callable[[], None], then: Callable[[], None] | None = None
) -> None:
    """Run `action` holding `locked`, then `then` without it: now if the lock
    is free, else from a thread of their own.

    For code that a signal handler may run: the handler runs in the main
    thread between two bytecodes, maybe while that very thread holds the
    lock, and waiting for it would deadlock. A raw thread (threading.Thread's
    start() takes locks of its own) takes the lock once its holder lets go.
    """

    def run(block: bool) -> bool:
        if not locked.acquire(blocking=block):
            return False
        try:
            action()
        finally:
            locked.release()
        if then is not None:
            then()
        return True

    if run(block=False):
        return
    try:
        _thread.start_new_thread(run, (True,))
    except RuntimeError:  # no thread to be had: block (the lock is held for microseconds)
        run(block=True)


class CancelToken:
    """A thread-safe, one-shot cancellation request.

    `cancel()` may be called from any thread or from a signal handler, any
    number of times; `cancelled` is True as soon as it returns, and every wait
    blocked on the token is woken at once. A token cannot be reset: use a new
    one for the next job. After os.fork() the child's copy is a token of its
    own: a cancel() on either side does not wake the other.

    Examples:
        >>> token = CancelToken()
        >>> token.cancelled
        False
        >>> token.cancel()
        >>> token.cancelled, token.wait(0)
        (True, True)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._cancelled = False
        self._woken = False
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<CancelToken cancelled={self.cancelled}>"

    @property
    def cancelled(self) -> bool:
        """Whether cancel() has been called."""
        return self._cancelled

    def cancel(self) -> None:
        """Request cancellation and wake every waiter. Idempotent.

        Safe in a signal handler: it never waits for the token's lock (see
        finish_soon); the flag is set at once, the wakeups follow as soon as
        the lock is free.
        """
        if self._cancelled:
            return
        self._cancelled = True  # what `cancelled`, wait() and the loop's checks read
        callbacks: list[Callable[[], None]] = []

        def wake() -> None:
            if self._woken:
                return
            self._woken = True
            if self._write_fd is not None:
                _signal_fd(self._write_fd)
            self._changed.notify_all()
            callbacks.extend(self._callbacks)
            self._callbacks.clear()

        def call_back() -> None:
            for callback in callbacks:
                callback()

        finish_soon(self._lock, wake, call_back)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the token is cancelled or `timeout` seconds pass.

        Returns:
            Whether the token is cancelled.
        """
        with self._changed:
            return self._changed.wait_for(lambda: self._woken, timeout) or self._cancelled

    def _subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` once, on cancel() (from the cancelling thread, or a
        helper thread when cancel() came from a signal handler).

        For waiters that block on something other than the descriptor (a
        threading.Event, an asyncio loop). Called at once if already
        cancelled. Returns a function that unsubscribes.
        """
        with self._lock:
            if not self._woken:
                self._callbacks.append(callback)
                return lambda: self._unsubscribe(callback)
        callback()
        return lambda: None

    def _unsubscribe(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def fileno(self) -> int:
        """A descriptor that becomes readable (and stays so) once cancelled.

        Created on first use and owned by the token: do not read from it or
        close it; call `close()` when no wait uses the token any more (a token
        used again after close() simply makes a new descriptor).
        """
        with self._lock:
            if self._read_fd is None:
                self._read_fd, self._write_fd = _new_wakeup_fds()
                _with_descriptors.add(self)
                if self._woken:
                    _signal_fd(self._write_fd)
            return self._read_fd

    def close(self) -> None:
        """Release the token's descriptor, if it has one. The token keeps working.

        Do not close a token while a wait is blocked on it: its descriptor
        would vanish under the wait.
        """
        with self._lock:
            fds = {self._read_fd, self._write_fd} - {None}
            self._read_fd = self._write_fd = None
        for fd in fds:
            assert fd is not None
            os.close(fd)

    def _after_fork_in_child(self) -> None:
        # os.fork() copied the descriptor: the child's copy and the parent's
        # are one eventfd (or pipe), so a cancel() on one side would make it
        # readable on the other, whose flag stays False. The child lets go of
        # its copy (the next fileno() makes its own) and of a lock that a
        # thread the fork did not copy may have held.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        fds = {self._read_fd, self._write_fd} - {None}
        self._read_fd = self._write_fd = None
        for fd in fds:
            assert fd is not None
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> CancelToken:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A token dropped without close() must not leak its descriptor.
        if getattr(self, "_read_fd", None) is not None:
            self.close()


#: The tokens that hold a descriptor, for the child of os.fork().
_with_descriptors: weakref.WeakSet[CancelToken] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for token in list(_with_descriptors):
        token._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WakeupFd:
    """A descriptor that any thread can make readable, to wake a selector.

    An eventfd on Linux, a non-blocking self-pipe elsewhere. Unlike a token's
    descriptor it is drained after each wakeup: it wakes a loop that has more
    than one thing to do (the Supervisor's).
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = _new_wakeup_fds()

    def fileno(self) -> int:
        """The descriptor to watch for reading."""
        return self._read_fd

    def signal(self) -> None:
        """Make the descriptor readable (from any thread)."""
        # A full pipe is readable already: nothing is lost.
        with contextlib.suppress(BlockingIOError):
            _signal_fd(self._write_fd)

    def drain(self) -> None:
        """Make it unreadable again, until the next signal()."""
        try:
            if self._read_fd == self._write_fd:
                os.eventfd_read(self._read_fd)
            else:
                while os.read(self._read_fd, 4096):
                    pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close the descriptor(s)."""
        for fd in {self._read_fd, self._write_fd}:
            os.close(fd)


def _new_wakeup_fds() -> tuple[int, int]:
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        return fd, fd
    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        os.set_blocking(fd, False)
    return read_fd, write_fd


def _signal_fd(fd: int) -> None:
    # Nobody ever reads the descriptor, so one write keeps it readable for ever.
    if hasattr(os, "eventfd_write"):
        os.eventfd_write(fd, 1)
    else:
        os.write(fd, b"\0")


class CancelProbe(NamedTuple):
    """How the wait loop reads one cancellation."""

    #: Returns True once cancellation is requested; None if there is none.
    check: Callable[[], bool] | None
    #: The loop must poll `check` every poll_interval (nothing wakes it).
    polled: bool
    #: The token whose descriptor wakes a waiter, when there is one.
    token: CancelToken | None


def probe(cancellation: Cancellation) -> CancelProbe:
    """Classify a WaitOptions.cancellation for the wait loop."""
    if cancellation is None:
        return CancelProbe(None, polled=False, token=None)
    if isinstance(cancellation, CancelToken):
        return CancelProbe(lambda: cancellation.cancelled, polled=False, token=cancellation)
    if isinstance(cancellation, threading.Event):
        return CancelProbe(cancellation.is_set, polled=True, token=None)
    return CancelProbe(cancellation, polled=True, token=None)
