# The default soft interrupt and hard kill, and the guards that keep every
# signal on the child and its own process group.
#
# Rules (DESIGN.md, "Rules every real wait keeps"):
#   - never signal a child that Popen has reaped (its pid may be reused);
#   - never signal the caller's own process group, pgid 0 or pgid 1;
#   - a child that leads a group: the pidfd first proves the leader is still
#     our child (pidfd_send_signal with signal 0), then one killpg, so that
#     each process in the group receives the signal once;
#   - a child that leads no group (it shares the caller's, say): the child
#     alone, through its pidfd;
#   - ESRCH (everybody already gone) is not an error.
#
# This module owns the decision of what to signal. It does not wait.

from __future__ import annotations

import os
import signal

from ._child import ChildHandle, pidfd_of, verify_child
from ._errors import UnsafeSignalError

__all__ = ["UnsafeSignalError", "interrupt_group", "kill_group", "signal_group"]


def signal_group(child: ChildHandle, sig: int) -> None:
    """Send `sig` to the child's process group, or to the child alone.

    The group is signalled when the child leads it (as children started by
    spawn() do); otherwise only the child is. Nothing is sent once Popen has
    reaped the child, or when the child is already gone.

    Args:
        child: the Popen of a child of this process (or another ChildHandle:
            statewait.aio passes one for an asyncio Process).
        sig: the signal number (signal.SIGTERM, say).

    Raises:
        UnsafeSignalError: the target group would be pgid 0, 1 or the caller's own.
        ChildLostError: the child, which has no kept pidfd, was reaped
            outside its Popen, so its pid may name a stranger; nothing was
            sent. (A child from spawn() reaped that way is signalled nothing,
            silently: its kept pidfd names the dead child, not the pid.)
    """
    if child.returncode is not None:
        return  # reaped: its pid may already be somebody else's
    try:
        pidfd = pidfd_of(child)
    except OSError:
        pidfd = None  # no descriptor to spare (EMFILE): the pid-based path below
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, 0)  # the child itself, alive or zombie
        except ProcessLookupError:
            return  # reaped behind Popen's back; the pidfd kept us off its pid
    else:
        verify_child(child)  # no pidfd here: prove the pid is still our unreaped child
        if child.returncode is not None:
            return  # its Popen reaped it meanwhile, in another thread
    try:
        pgid = os.getpgid(child.pid)
    except ProcessLookupError:
        return
    try:
        if pgid == child.pid:
            check_group(pgid)
            os.killpg(pgid, sig)
        elif pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(child.pid, sig)
    except ProcessLookupError:
        pass


def check_group(pgid: int) -> None:
    """Refuse a process group that statewait must never signal.

    Raises:
        UnsafeSignalError: pgid is 0 (the caller's group, to the kernel), 1
            (init's), negative, or the caller's own group.
    """
    own = os.getpgrp()
    if pgid <= 1 or pgid == own:
        what = "the caller's own process group" if pgid == own else f"process group {pgid}"
        raise UnsafeSignalError(
            f"refusing to signal {what}: statewait only signals a child's own group"
        )


def interrupt_group(child: ChildHandle) -> None:
    """The default soft interrupt: SIGINT to the child's group (see signal_group)."""
    signal_group(child, signal.SIGINT)


def kill_group(child: ChildHandle) -> None:
    """The default hard kill: SIGKILL to the child's group (see signal_group)."""
    signal_group(child, signal.SIGKILL)
