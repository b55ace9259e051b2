# Exit waiters for real children: one module per mechanism, and the one
# function that picks one.
#
#   pidfd   Linux >= 5.4: select(2) on the child's pidfd and the token's fd.
#   waitid  any POSIX: a helper thread in waitid(WEXITED | WNOWAIT).
#   poll    anywhere: Popen.poll() every poll_interval.
#
# Every waiter implements statewait._wait.ExitWaiter plus close(). None reaps
# behind Popen's back: each reports the exit, then reaps through Popen.wait()
# or Popen.poll(), once, so child.returncode is always set afterwards.

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any, Protocol

from .._cancel import CancelToken
from .._child import pidfds_usable
from .._errors import BackendUnavailable
from .pidfd import PidfdWaiter
from .polling import PollingWaiter
from .waitid import WaitidWaiter

__all__ = ["BACKENDS", "BackendUnavailable", "RealWaiter", "available_backends", "open_waiter"]

logger = logging.getLogger("statewait")

#: The backends, best first; "auto" takes the first that works.
BACKENDS = ("pidfd", "waitid", "poll")


class RealWaiter(Protocol):
    """An ExitWaiter for a real child, with a name and resources to release."""

    name: str

    @property
    def polls(self) -> bool: ...

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None: ...

    def close(self) -> None: ...


def available_backends() -> tuple[str, ...]:
    """The backends that work here, best first."""
    usable = {
        "pidfd": pidfds_usable(),
        "waitid": hasattr(os, "waitid") and hasattr(os, "WNOWAIT"),
        "poll": True,
    }
    return tuple(name for name in BACKENDS if usable[name])


def open_waiter(
    child: subprocess.Popen[Any], token: CancelToken | None, backend: str = "auto"
) -> RealWaiter:
    """Open the exit waiter for one wait.

    Args:
        child: the child to wait for.
        token: the wait's CancelToken, if it has one (it wakes the waiter).
        backend: "auto", or one of BACKENDS.

    Returns:
        The waiter. "auto" falls back to the next backend when one cannot be
        opened (no descriptors left for a pidfd, no thread for waitid).

    Raises:
        TypeError, ValueError: backend is not a known name.
        BackendUnavailable: the named backend does not work here.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {backend!r} ({type(backend).__name__})")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    usable = available_backends()
    if backend != "auto":
        if backend not in usable:
            raise BackendUnavailable(
                f"backend {backend!r} does not work on this system; available: {usable}"
            )
        return _open(backend, child, token)
    for name in usable:
        try:
            return _open(name, child, token)
        except (OSError, RuntimeError) as exc:
            if name == usable[-1]:
                raise
            # EMFILE for the pidfd or the token's fd; no thread for waitid.
            _note_fallback(name, exc)
    raise AssertionError("unreachable: the poll backend always opens")


def _open(name: str, child: subprocess.Popen[Any], token: CancelToken | None) -> RealWaiter:
    if name == "pidfd":
        return PidfdWaiter(child, token)
    if name == "waitid":
        return WaitidWaiter(child, token)
    return PollingWaiter(child, token)


def _note_fallback(name: str, exc: BaseException) -> None:
    logger.debug("backend %s unavailable (%r); falling back", name, exc)
