# The waitid backend (any POSIX): a helper thread blocks in
# os.waitid(P_PID, pid, WEXITED | WNOWAIT), which reports the exit without
# reaping; the waiting thread sleeps on a condition that the helper and the
# CancelToken notify. Reaping stays Popen.wait()'s job, once.
#
# One helper per child, reused if the wait is entered again (after an
# abandoned wait, say), and gone when the child exits. If the helper fails
# (it should not), the waiter degrades to polling rather than hanging.
# The helper notifies listeners; the Supervisor listens too (`watch_exit`),
# for children that have no pidfd.

from __future__ import annotations

import logging
import os
import subprocess
import threading
import weakref
from typing import Any, Protocol

from .._cancel import CancelToken
from .._child import reap
from ._common import Waker

__all__ = ["ExitListener", "ExitWatch", "WaitidWaiter", "unwatch_exit", "watch_exit"]

logger = logging.getLogger("statewait")

#: waitid flags for a look that neither blocks nor reaps.
_LOOK = os.WEXITED | os.WNOHANG | os.WNOWAIT

_lock = threading.Lock()
_watches: weakref.WeakKeyDictionary[subprocess.Popen[Any], ExitWatch] = weakref.WeakKeyDictionary()


class ExitListener(Protocol):
    """Told (from the helper thread) that the exit is known or the helper failed."""

    def notify(self) -> None: ...


class ExitWatch:
    """A daemon thread that learns of one child's exit without reaping it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exited = False
        self.failed: BaseException | None = None
        self._listeners: list[ExitListener] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"statewait-waitid-{pid}", daemon=True
        )

    def add(self, listener: ExitListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: ExitListener) -> None:
        with self._lock:
            self._listeners.remove(listener)

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
                listeners = list(self._listeners)
            for listener in listeners:
                listener.notify()


def watch_exit(child: subprocess.Popen[Any], listener: ExitListener) -> ExitWatch:
    """The child's helper (started now, or reused), with `listener` added.

    A child that exited before the listener was added is not announced: look
    once (waitid WNOHANG, or Popen.poll) after this call.

    Raises:
        RuntimeError: no thread can be started.
    """
    with _lock:
        watch = _watches.get(child)
        if watch is None or watch.failed is not None:
            watch = ExitWatch(child.pid)
            watch.thread.start()
            _watches[child] = watch
    watch.add(listener)
    return watch


def unwatch_exit(child: subprocess.Popen[Any], watch: ExitWatch, listener: ExitListener) -> None:
    """Remove `listener`; forget the helper once it has seen the exit."""
    watch.remove(listener)
    if watch.exited:
        with _lock:
            if _watches.get(child) is watch:
                del _watches[child]


class WaitidWaiter:
    """Exit detection through a waitid(WNOWAIT) helper thread."""

    name = "waitid"

    def __init__(self, child: subprocess.Popen[Any], token: CancelToken | None) -> None:
        self._child = child
        self._waker = Waker(token)
        self._watch = watch_exit(child, self._waker) if child.returncode is None else None

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
            return reap(child)
        if timeout_ns != 0 and not self._exited_now():
            self._waker.sleep(timeout_ns, wake_on_cancel, lambda: self._exited() or self.polls)
        return reap(child) if self._exited_now() else None

    def close(self) -> None:
        self._waker.close()
        if self._watch is not None:
            unwatch_exit(self._child, self._watch, self._waker)
