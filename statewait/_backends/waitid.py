# The waitid backend (any POSIX): a helper thread blocks in
# os.waitid(P_PID, pid, WEXITED | WNOWAIT), which reports the exit without
# reaping; the waiting thread sleeps on a condition that the helper and the
# CancelToken notify. Reaping stays Popen.wait()'s job, once.
#
# One helper per child, reused if the wait is entered again (after an
# abandoned wait, say), and gone when the child exits. If the helper fails
# (it should not), the waiter degrades to polling rather than hanging.

from __future__ import annotations

import logging
import os
import subprocess
import threading
import weakref
from typing import Any

from .._cancel import CancelToken
from ._common import Waker

__all__ = ["WaitidWaiter"]

logger = logging.getLogger("statewait")

#: waitid flags for a look that neither blocks nor reaps.
_LOOK = os.WEXITED | os.WNOHANG | os.WNOWAIT

_lock = threading.Lock()
_watches: weakref.WeakKeyDictionary[subprocess.Popen[Any], _ExitWatch] = weakref.WeakKeyDictionary()


class _ExitWatch:
    """A daemon thread that learns of one child's exit without reaping it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exited = False
        self.failed: BaseException | None = None
        self._wakers: list[Waker] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"statewait-waitid-{pid}", daemon=True
        )

    def add(self, waker: Waker) -> None:
        with self._lock:
            self._wakers.append(waker)

    def remove(self, waker: Waker) -> None:
        with self._lock:
            self._wakers.remove(waker)

    def _run(self) -> None:
        try:
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            self.exited = True
        except ChildProcessError:
            self.exited = True  # reaped already (by Popen, or SIGCHLD ignored)
        except BaseException as exc:
            self.failed = exc
            logger.debug("pid %d: waitid helper failed (%r); polling instead", self.pid, exc)
        finally:
            with self._lock:
                wakers = list(self._wakers)
            for waker in wakers:
                waker.notify()


def _watch_for(child: subprocess.Popen[Any]) -> _ExitWatch:
    with _lock:
        watch = _watches.get(child)
        if watch is None or watch.failed is not None:
            watch = _ExitWatch(child.pid)
            watch.thread.start()  # RuntimeError if no thread can be started
            _watches[child] = watch
        return watch


class WaitidWaiter:
    """Exit detection through a waitid(WNOWAIT) helper thread."""

    name = "waitid"

    def __init__(self, child: subprocess.Popen[Any], token: CancelToken | None) -> None:
        self._child = child
        self._waker = Waker(token)
        self._watch = _watch_for(child) if child.returncode is None else None
        if self._watch is not None:
            self._watch.add(self._waker)

    @property
    def polls(self) -> bool:
        """False, unless the helper thread failed and exits are now polled."""
        return self._watch is not None and self._watch.failed is not None

    def _exited(self) -> bool:
        return self._watch is None or self._watch.exited

    def _exited_now(self) -> bool:
        # The helper may not have run yet (a child that exited before the
        # call): ask the kernel directly, without blocking or reaping.
        if self._exited():
            return True
        try:
            return os.waitid(os.P_PID, self._child.pid, _LOOK) is not None
        except ChildProcessError:
            return True  # reaped already; Popen will say how

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        child = self._child
        if child.returncode is not None:
            return child.returncode
        if self.polls:
            if timeout_ns != 0:
                self._waker.sleep(timeout_ns, wake_on_cancel, lambda: False)
            return child.poll()
        if timeout_ns != 0 and not self._exited_now():
            self._waker.sleep(timeout_ns, wake_on_cancel, lambda: self._exited() or self.polls)
        return child.wait() if self._exited_now() else None

    def close(self) -> None:
        self._waker.close()
        if self._watch is not None:
            self._watch.remove(self._waker)
            if self._watch.exited:
                with _lock:
                    _watches.pop(self._child, None)
