# wait_for_child: the one wait loop (_wait.run_wait) on the real monotonic
# clock, with a real exit waiter (_backends) and the default signals
# (_signals). This module only assembles them and checks the caller's input.
# The checks and the signal hooks are shared with the other real front ends
# (the Supervisor and statewait.aio), so that every real wait refuses the same
# input and signals the same way.

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._backends import open_waiter
from ._cancel import probe
from ._child import ChildHandle, one_wait, release, verify_child
from ._options import WaitOptions, WaitOutcome
from ._signals import interrupt_group, kill_group
from ._wait import Observer, run_wait

__all__ = [
    "SignalCallback",
    "check_arguments",
    "check_callbacks",
    "signal_hooks",
    "wait_for_child",
]

#: A soft-interrupt or hard-kill callback: receives the child's Popen.
SignalCallback = Callable[[subprocess.Popen[Any]], None]

_Handle = TypeVar("_Handle")

_DEFAULT_OPTIONS = WaitOptions()


def wait_for_child(
    child: subprocess.Popen[Any],
    options: WaitOptions = _DEFAULT_OPTIONS,
    *,
    soft_interrupt: SignalCallback | None = None,
    hard_kill: SignalCallback | None = None,
    backend: str = "auto",
    observer: Observer | None = None,
) -> WaitOutcome:
    """Wait for a child to exit, interrupting and killing it when it must.

    At every wakeup: an observed exit ends the wait; while the child runs, a
    timeout (strictly exceeded) or else a cancellation sends the soft
    interrupt; once the grace is strictly exceeded the hard kill is sent,
    once; once abandon_after is exceeded after it, the wait gives up. Exit
    detection is event-driven except with ``backend="poll"``.

    **Cancellation:** when the timeout elapses or the cancellation is
    requested, the soft interrupt goes to the child (by default SIGINT to its
    process group, see interrupt_group); if the child is still running more
    than ``interrupt_grace`` seconds later, the hard kill follows (by default
    SIGKILL to its group), exactly once. The call then keeps waiting until the
    child has exited and been reaped (or ``abandon_after`` passed), and
    returns the outcome. If an exception arrives while waiting --
    KeyboardInterrupt included, or one raised by a callback -- the same
    escalation runs as for a cancellation, a second exception during the grace
    skips straight to the hard kill, and the first exception is re-raised only
    once the child has exited and been reaped. If a custom ``hard_kill``
    raises, the default kill_group is sent before the exception goes on.

    Args:
        child: a Popen of a child of this process, ideally started by spawn()
            (which keeps its pidfd from the start and puts it in its own group).
        options: timeout, cancellation, poll_interval, interrupt_grace,
            abandon_after.
        soft_interrupt: called with the child to interrupt it; default
            interrupt_group.
        hard_kill: called with the child to kill it; default kill_group.
        backend: "auto" (pidfd, else waitid, else poll), "pidfd", "waitid" or "poll".
        observer: receives each timeline event (WaitEvent) as it happens.

    Returns:
        The WaitOutcome. The child is reaped (child.returncode is set) unless
        the outcome says it was abandoned.

    Raises:
        TypeError, ValueError: a bad argument; nothing was started or signalled.
        ValueError: another statewait wait (wait_for_child in another thread,
            a Supervisor, statewait.aio) is waiting for this child now.
        ChildLostError: the child was reaped outside its Popen, before the
            call or while it waited.
        BackendUnavailable: the named backend does not work here.
        BaseException: the first exception raised while waiting, re-raised
            after the child was escalated and reaped.
    """
    if not isinstance(child, subprocess.Popen):
        raise TypeError(f"child must be a subprocess.Popen, got {type(child).__name__}")
    check_arguments(options, soft_interrupt=soft_interrupt, hard_kill=hard_kill, observer=observer)
    with one_wait(child, child.pid):
        verify_child(child)
        waiter = open_waiter(child, probe(options.cancellation).token, backend)
        soft, hard = signal_hooks(child, child, soft_interrupt, hard_kill)
        try:
            return run_wait(
                options,
                time.monotonic_ns,
                waiter,
                soft_interrupt=soft,
                hard_kill=hard,
                observer=observer,
                label=f"pid {child.pid}",
            )
        finally:
            waiter.close()
            release(child)


def check_arguments(options: object, **callables: object) -> None:
    """Refuse bad options or callbacks before anything is started or signalled.

    Raises:
        TypeError: options is not a WaitOptions, or a callback is neither
            callable nor None.
    """
    if not isinstance(options, WaitOptions):
        raise TypeError(f"options must be a WaitOptions, got {type(options).__name__}")
    check_callbacks(**callables)


def check_callbacks(**callbacks: object) -> None:
    """Check that each named callback is callable or None.

    Raises:
        TypeError: one is neither; the message names it and its value.
    """
    for name, value in callbacks.items():
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None, got {value!r}")


def signal_hooks(
    child: ChildHandle,
    handle: _Handle,
    soft_interrupt: Callable[[_Handle], None] | None,
    hard_kill: Callable[[_Handle], None] | None,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The soft-interrupt and hard-kill hooks of one wait.

    Args:
        child: the child that the default signals go to.
        handle: what the caller's callbacks receive (the child itself, or the
            asyncio Process that wraps it).
        soft_interrupt: the caller's soft interrupt; None for interrupt_group.
        hard_kill: the caller's hard kill; None for kill_group. If it raises,
            kill_group is sent before the exception goes on: the child must
            not outlive a broken callback.

    Returns:
        (soft_interrupt, hard_kill) as the zero-argument hooks a Wait calls.
    """

    def soft() -> None:
        if soft_interrupt is None:
            interrupt_group(child)
        else:
            soft_interrupt(handle)

    def hard() -> None:
        if hard_kill is None:
            kill_group(child)
            return
        try:
            hard_kill(handle)
        except BaseException:
            kill_group(child)
            raise

    return soft, hard
