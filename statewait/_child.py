# What statewait knows about a child beyond its Popen: a pidfd that names the
# child itself rather than its pid number, kept from spawn() until the child
# is reaped, and the proof that a Popen still stands for a child of ours.
#
# Why: a pid is only a number. Once a child is reaped (by Popen or by anybody
# calling os.wait*), the kernel may give its pid to an unrelated process, and
# a signal sent "to the child" would hit that stranger. A pidfd opened while
# the child was still ours keeps naming the child: signals through it fail
# with ESRCH once the child is gone, never reaching the stranger.
#
# This module owns the record and the checks. It does not signal
# (_signals.py) and does not wait (_backends/). Reaping stays Popen's job --
# or asyncio's, for an asyncio Process: the record and the checks need only a
# ChildHandle (a pid, and a returncode once its owner reaped it).

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, Protocol

from ._errors import ChildLostError

__all__ = [
    "ChildHandle",
    "ChildLostError",
    "claim",
    "one_wait",
    "pidfd_of",
    "pidfds_usable",
    "reap",
    "release",
    "spawn",
    "unclaim",
    "verify_child",
]

logger = logging.getLogger("statewait")


@functools.cache
def pidfds_usable() -> bool:
    """Whether statewait can keep and use pidfds here.

    That takes pidfd_open(2) (Linux >= 5.3) and waitid(P_PIDFD) (Linux >= 5.4),
    which proves a kept pidfd still names an unreaped child. Probed once, on
    this process's own pidfd: a kernel with P_PIDFD answers ECHILD (we are not
    our own child), Linux 5.3 answers EINVAL.
    """
    if not hasattr(os, "pidfd_open") or not hasattr(os, "P_PIDFD"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError as exc:
        # No pidfds at all (old kernel, seccomp sandbox) -- or none to spare
        # right now (EMFILE), which says nothing against the kernel.
        return exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL)
    try:
        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return True
    except OSError as exc:
        return exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM)
    finally:
        os.close(fd)
    return True


class ChildHandle(Protocol):
    """What statewait needs of a child to signal it safely.

    A subprocess.Popen is one; statewait.aio wraps an asyncio Process in one.
    """

    @property
    def pid(self) -> int:
        """The child's pid."""
        ...

    @property
    def returncode(self) -> int | None:
        """Its status once its owner (Popen, asyncio) reaped it; None before."""
        ...


_lock = threading.Lock()
# child -> its pidfd. Weak keys: a Popen that is dropped closes its pidfd
# through the finalizer registered beside it.
_pidfds: weakref.WeakKeyDictionary[ChildHandle, int] = weakref.WeakKeyDictionary()
_finalizers: weakref.WeakKeyDictionary[ChildHandle, weakref.finalize[Any, Any]] = (
    weakref.WeakKeyDictionary()
)


# The children (their Popen or asyncio Process) under a wait right now. One
# wait per child at a time: two would race to reap it and to close its pidfd.
_waited: weakref.WeakSet[object] = weakref.WeakSet()


@contextlib.contextmanager
def one_wait(child: object, pid: int) -> Iterator[None]:
    """Hold `child` as under a wait for the duration of the block.

    Raises:
        ValueError: another statewait wait (wait_for_child, a Supervisor,
            statewait.aio) is waiting for this child now.
    """
    claim(child, pid)
    try:
        yield
    finally:
        unclaim(child)


def claim(child: object, pid: int) -> None:
    """Mark `child` as under a wait; see one_wait."""
    with _lock:
        if child in _waited:
            raise ValueError(
                f"pid {pid} is already being waited for by another statewait wait "
                "(wait_for_child, a Supervisor or statewait.aio): one wait per child at a time"
            )
        _waited.add(child)


def unclaim(child: object) -> None:
    """The wait on `child` is over. Idempotent."""
    with _lock:
        _waited.discard(child)


def spawn(args: Any, **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start a child as the leader of a new process group, keeping its pidfd.

    Like subprocess.Popen(args, **popen_kwargs), except that the child leads
    its own process group (``process_group=0`` on Python 3.11+,
    ``start_new_session=True`` before), so interrupt_group and kill_group
    reach it and everything it starts, and never the caller's group. The
    child's pidfd is opened at once, while the pid is certainly the child's,
    and kept until the child is reaped.

    Args:
        args: the program and its arguments, as for subprocess.Popen.
        **popen_kwargs: passed to subprocess.Popen. ``process_group`` or
            ``start_new_session`` given here are respected. A ``preexec_fn``
            runs first; then the child makes its own group unless preexec_fn
            did (``preexec_fn=os.setsid`` works, as with Popen).

    Returns:
        The Popen.
    """
    if "process_group" not in popen_kwargs and not popen_kwargs.get("start_new_session"):
        preexec_fn = popen_kwargs.get("preexec_fn")
        if preexec_fn is not None:
            # Popen makes the group before preexec_fn runs, and a group leader
            # may not call setsid(): the usual preexec_fn=os.setsid would fail.
            popen_kwargs["preexec_fn"] = functools.partial(_lead_a_group_after, preexec_fn)
        elif sys.version_info >= (3, 11):
            popen_kwargs["process_group"] = 0
        else:
            popen_kwargs["start_new_session"] = True
    child: subprocess.Popen[Any] = subprocess.Popen(args, **popen_kwargs)
    # No reaping can happen between Popen returning and this line (Popen reaps
    # only when asked), so the pid still names our child, alive or zombie.
    try:
        _adopt(child)
    except OSError as exc:
        # EMFILE, say. The child runs and the caller holds it: do not kill it.
        # Without a kept pidfd the waits fall back to the waitid or poll
        # backend, and signals to the pid-based path guarded by Popen's state.
        logger.debug("pid %d: no pidfd kept (%s)", child.pid, exc)
    return child


def _lead_a_group_after(preexec_fn: Callable[[], object]) -> None:
    """In the forked child: the caller's preexec_fn, then a group of its own
    unless preexec_fn made one already (os.setsid, say)."""
    preexec_fn()
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)


def _adopt(child: ChildHandle) -> int | None:
    """Open and keep the child's pidfd; None where the kernel has none.

    Raises:
        ProcessLookupError: no process has the child's pid.
    """
    if not pidfds_usable():
        return None
    try:
        fd = os.pidfd_open(child.pid)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return None  # a kernel or sandbox without pidfds: the pid-based fallback
        raise
    with _lock:
        old = _pidfds.pop(child, None)
        _pidfds[child] = fd
        _finalizers[child] = weakref.finalize(child, _close_quietly, fd)
    if old is not None:
        _close_quietly(old)
    return fd


def pidfd_of(child: ChildHandle) -> int | None:
    """The child's pidfd, opened now if spawn() did not keep one.

    Returns None when pidfds are unavailable or the child was reaped by Popen.

    Raises:
        ChildLostError: the pid no longer names a child of ours.
        OSError: pidfd_open failed for another reason (EMFILE, say).
    """
    if child.returncode is not None:
        return None
    with _lock:
        fd = _pidfds.get(child)
    if fd is not None:
        return fd
    try:
        fd = _adopt(child)
    except ProcessLookupError:
        if _reaped_by_its_popen(child):
            return None
        _raise_lost(child)  # no process has that pid, yet Popen never reaped it
    if fd is not None:
        # The pid named *a* process when it was opened; prove it is our child
        # (an unreaped one) and not a stranger that was given a reused pid.
        # If not, ChildLostError, and the fd (it may name that stranger) is
        # closed, never kept for signals.
        verify_child(child)
        if child.returncode is not None:
            _forget(child)  # Popen reaped it meanwhile: the fd may name a stranger
            return None
    return fd


#: waitid(2) flags that look at a child's exit without blocking or reaping.
_LOOK = os.WEXITED | os.WNOHANG | os.WNOWAIT


def _exited(child: ChildHandle) -> bool:
    """Whether the unreaped child has exited (is a zombie of ours).

    Raises:
        ChildProcessError: it is not a child of ours any more.
    """
    with _lock:
        fd = _pidfds.get(child)
    if fd is not None:
        return os.waitid(os.P_PIDFD, fd, _LOOK) is not None
    return os.waitid(os.P_PID, child.pid, _LOOK) is not None


def verify_child(child: ChildHandle) -> None:
    """Check that the Popen still stands for a child of ours, not yet reaped.

    Raises:
        ChildLostError: it was reaped outside its Popen.
    """
    if child.returncode is not None:
        return  # reaped by Popen itself: known and fine
    try:
        _exited(child)
    except ChildProcessError:
        if not _reaped_by_its_popen(child):
            _raise_lost(child)


def reap(child: subprocess.Popen[Any]) -> int | None:
    """Reap the child through its Popen if it has exited; never blocks.

    Popen reaps only a child that the kernel shows as an exited child of ours,
    so the status Popen makes up for a child it cannot find (0) is never
    reported as the child's.

    Returns:
        The child's returncode, or None while it runs.

    Raises:
        ChildLostError: the child was reaped behind Popen's back while it was
            waited for (SIGCHLD ignored, a SIGCHLD handler, os.wait): its exit
            status is lost. Popen is told it is gone (its returncode becomes
            subprocess's meaningless 0), so nothing signals its pid again.
    """
    if child.returncode is not None:
        return child.returncode
    try:
        exited = _exited(child)
    except ChildProcessError:
        if _reaped_by_its_popen(child):
            return child.returncode
        child.poll()  # ECHILD: Popen marks it done; nothing may signal the pid now
        _raise_lost(child, waited=True)
    return child.wait() if exited else None


def _reaped_by_its_popen(child: ChildHandle) -> bool:
    """After ECHILD: whether the child's own Popen reaped it, in another thread
    (a concurrent child.wait(), say), so its returncode is known.

    Popen reaps while holding its waitpid lock and sets returncode before it
    lets go; once the lock is free, a returncode still unset means somebody
    else reaped the child.
    """
    lock = getattr(child, "_waitpid_lock", None)
    if lock is not None:
        with lock:
            pass
    return child.returncode is not None


def _raise_lost(child: ChildHandle, *, waited: bool = False) -> NoReturn:
    _forget(child)  # its pidfd names a dead process: nothing to keep it open for
    when = " while it was waited for" if waited else ""
    raise ChildLostError(
        f"pid {child.pid} is not a child of this process any more: it was reaped outside "
        f"its Popen{when} (os.wait/os.waitpid, a SIGCHLD handler, or SIGCHLD ignored), "
        "so its exit status is lost; its pid is not signalled"
    )


def release(child: ChildHandle) -> None:
    """Close the kept pidfd once the child is reaped (it can name nothing more)."""
    if child.returncode is None:
        return
    _forget(child)


def _forget(child: ChildHandle) -> None:
    with _lock:
        _pidfds.pop(child, None)
        finalizer = _finalizers.pop(child, None)
    if finalizer is not None:
        finalizer()  # closes the fd once, and detaches


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
