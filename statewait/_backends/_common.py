# What the thread-based backends share: a condition that the exit watcher and
# the CancelToken both notify, so one wait can sleep until either (or the
# slice's end) with nanosecond timeouts and no file descriptor.

from __future__ import annotations

import threading
from collections.abc import Callable

from .._cancel import CancelToken, finish_soon

__all__ = ["Waker"]


class Waker:
    """Sleep until a predicate holds, the token fires (if asked), or a timeout."""

    def __init__(self, token: CancelToken | None) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._token = token
        self._unsubscribe = token._subscribe(self.notify) if token is not None else None

    def notify(self) -> None:
        """Wake every sleeper so that it looks again (any thread, or a signal
        handler's cancel(): see finish_soon)."""
        finish_soon(self._lock, self._cond.notify_all)

    def sleep(
        self, timeout_ns: int | None, wake_on_cancel: bool, ready: Callable[[], bool]
    ) -> None:
        """Return when `ready()` holds, the token is cancelled (if `wake_on_cancel`),
        or `timeout_ns` passed (None: no limit)."""
        token = self._token if wake_on_cancel else None
        timeout = None if timeout_ns is None else timeout_ns / 1e9
        with self._cond:
            self._cond.wait_for(lambda: ready() or (token is not None and token.cancelled), timeout)

    def close(self) -> None:
        """Stop listening to the token."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
