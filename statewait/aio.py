# statewait.aio: the same waits inside an asyncio event loop.
#
# This module owns the asyncio front end: `wait_for_child` for a
# subprocess.Popen or an asyncio.subprocess.Process, `run` (statewait.run()'s
# twin), and `_LoopWaiter`, the exit waiter on the running loop. The loop that
# drives the wait is _wait.run_wait_async, the twin of the synchronous one;
# the rules are the table's; signals go through _signals, guarded by the
# child's pidfd.
#
# Exit detection, best first:
#   - Linux: the child's pidfd with loop.add_reader. No thread, no polling.
#     For an asyncio Process, asyncio's own child watcher reaps the child (a
#     thread per child on 3.10/3.11, a pidfd on 3.12+): the pidfd only tells
#     that it exited, and the status comes from `await process.wait()`. For a
#     Popen, Popen.wait() reaps it once the pidfd is readable (a zombie:
#     instant).
#   - no pidfd, asyncio Process: `process.wait()` itself, as a task.
#   - no pidfd, Popen: the waitid helper thread of _backends/waitid.py, which
#     wakes the loop with call_soon_threadsafe; if no thread can be started,
#     Popen.poll() every poll_interval.
# A CancelToken wakes the wait through `_subscribe` + call_soon_threadsafe:
# one token may be shared by any number of waits (add_reader takes one
# callback per descriptor). No child watcher API is used: nothing here is
# deprecated or removed in 3.12-3.13.
#
# run() does not use asyncio.create_subprocess_exec: on 3.10/3.11 its child
# watcher costs a thread per child, and it may reap the child before a pidfd
# could be opened. It spawns with statewait.spawn (the pidfd is kept from the
# start) and moves the pipes' bytes with add_reader/add_writer (_aio_pipes).

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, Any, TypeVar

from ._aio_pipes import ChildPipes
from ._backends.waitid import ExitWatch, unwatch_exit, watch_exit
from ._cancel import CancelToken, probe
from ._child import ChildHandle, one_wait, pidfd_of, reap, release, spawn, verify_child
from ._errors import ChildLostError
from ._options import Cancellation, WaitOptions, WaitOutcome
from ._real import check_arguments, signal_hooks
from ._result import RunResult, prepare_run
from ._signals import kill_group
from ._wait import Observer, run_wait_async

__all__ = ["RunResult", "run", "wait_for_child"]

_DEFAULT_OPTIONS = WaitOptions()

#: The process types wait_for_child accepts; its callbacks receive the same one.
_Process = TypeVar("_Process", asyncio.subprocess.Process, subprocess.Popen[Any])


async def wait_for_child(
    process: _Process,
    options: WaitOptions = _DEFAULT_OPTIONS,
    *,
    soft_interrupt: Callable[[_Process], None] | None = None,
    hard_kill: Callable[[_Process], None] | None = None,
    observer: Observer | None = None,
) -> WaitOutcome:
    """Wait for a child inside the running event loop, as wait_for_child does.

    The same rules as statewait.wait_for_child: at every wakeup an observed
    exit ends the wait; while the child runs, a timeout (strictly exceeded)
    or else a cancellation sends the soft interrupt; once the grace is
    strictly exceeded the hard kill is sent, once; abandon_after gives up
    after it. On Linux the exit is seen through the child's pidfd
    (loop.add_reader): no thread per child.

    **Cancellation:** cancelling the task that awaits this call is a
    cancellation of the child: the soft interrupt goes to it (by default
    SIGINT to its process group); if it is still running more than
    ``interrupt_grace`` seconds later, the hard kill follows (by default
    SIGKILL to its group), exactly once; a second cancellation during the
    grace sends the hard kill at once. The call keeps waiting until the child
    has exited and been reaped (or ``abandon_after`` passed), then re-raises
    CancelledError. So does the timeout, or ``options.cancellation``, except
    that the call then returns the outcome. An exception raised by a callback
    or the observer is escalated the same way and re-raised once the child
    was reaped; if a custom ``hard_kill`` raises, kill_group is sent first.

    Args:
        process: an asyncio.subprocess.Process, or a subprocess.Popen (ideally
            from statewait.spawn(), which keeps its pidfd and puts it in its
            own process group). An asyncio Process is reaped by asyncio; a
            Popen through Popen.
        options: timeout, cancellation, poll_interval, interrupt_grace,
            abandon_after.
        soft_interrupt: called with `process` to interrupt it; default
            interrupt_group.
        hard_kill: called with `process` to kill it; default kill_group.
        observer: receives each timeline event (WaitEvent) as it happens.

    Returns:
        The WaitOutcome. The child is reaped (its returncode is set) unless
        the outcome says it was abandoned.

    Raises:
        TypeError, ValueError: a bad argument; nothing was started or signalled.
        ValueError: another statewait wait (another aio wait, wait_for_child,
            a Supervisor) is waiting for this child now.
        ChildLostError: the Popen's child was reaped outside its Popen.
        RuntimeError: no event loop is running.
        BaseException: the first exception raised while waiting
            (CancelledError included), re-raised after the child was
            escalated and reaped.
    """
    child = _handle_of(process)
    check_arguments(options, soft_interrupt=soft_interrupt, hard_kill=hard_kill, observer=observer)
    loop = asyncio.get_running_loop()
    with one_wait(process, process.pid):
        waiter = _LoopWaiter.open(loop, process, child, probe(options.cancellation).token)
        soft, hard = signal_hooks(child, process, soft_interrupt, hard_kill)
        if isinstance(child, _AsyncioChild):
            soft, hard = _reaped_is_gone(soft), _reaped_is_gone(hard)
        try:
            return await run_wait_async(
                options,
                time.monotonic_ns,
                waiter,
                soft_interrupt=soft,
                hard_kill=hard,
                observer=observer,
                label=f"pid {process.pid}",
            )
        finally:
            waiter.close()
            release(child)


async def run(
    args: str | bytes | Sequence[Any],
    *,
    timeout: float | None = None,
    interrupt_grace: float = 2.0,
    cancellation: Cancellation = None,
    poll_interval: float = 0.05,
    abandon_after: float | None = None,
    input: bytes | str | None = None,
    capture_output: bool = False,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    output_limit: int | None = None,
    io_drain_timeout: float | None = 1.0,
    check: bool = False,
    soft_interrupt: Callable[[subprocess.Popen[Any]], None] | None = None,
    hard_kill: Callable[[subprocess.Popen[Any]], None] | None = None,
    **popen_kwargs: Any,
) -> RunResult:
    """Run a command inside the running event loop and wait for it, as statewait.run().

    The child is started with statewait.spawn (in its own process group, its
    pidfd kept from the start), its output is read while it runs, and it is
    waited for with aio.wait_for_child. No thread per child on Linux.

    **Cancellation:** cancelling the awaiting task interrupts the child (by
    default SIGINT to its process group), sends the hard kill (SIGKILL to
    the group) if it is still running ``interrupt_grace`` seconds later
    (at once on a second cancellation), waits until it has exited and been
    reaped, closes its pipes and re-raises CancelledError. The timeout and
    ``cancellation`` do the same, except that run() then returns the result
    (or raises ProcessTimedOut / ProcessCancelled with check=True).

    Durations are seconds (a datetime.timedelta is accepted too), checked as
    WaitOptions checks them.

    Args:
        args: the program and its arguments, as for subprocess.Popen.
        timeout: interrupt the child after this many seconds; None: never.
        interrupt_grace: seconds between the soft interrupt and the hard kill.
        cancellation: a CancelToken (acted on at once), a threading.Event or
            a callable returning True (polled every poll_interval), or None.
        poll_interval: how often a polled cancellation is checked.
        abandon_after: give up this long after the hard kill; None: never.
        input: written to the child's stdin, which is then closed (str in
            text mode). Not with ``stdin``.
        capture_output: capture stdout and stderr. Not with ``stdout`` or
            ``stderr``.
        stdout: as for subprocess.run; subprocess.PIPE captures it.
        stderr: as for subprocess.run; subprocess.PIPE captures it,
            subprocess.STDOUT merges it into stdout.
        text: decode the captured output (and encode `input`) as text, with
            universal newlines.
        encoding: the text encoding (implies text); default the locale's.
        errors: the text error handler (implies text); default "strict".
        output_limit: keep at most this many of the newest bytes of each
            captured output (the oldest are dropped and
            ``output_truncated`` is set); None keeps everything.
        io_drain_timeout: after the child exited, read its pipes for at most
            this many seconds more (a grandchild may keep them open); None
            reads until they are closed.
        check: raise if the child was interrupted (ProcessTimedOut,
            ProcessCancelled) or exited with a non-zero status
            (subprocess.CalledProcessError).
        soft_interrupt: called with the child's Popen to interrupt it;
            default interrupt_group.
        hard_kill: called with the child's Popen to kill it; default kill_group.
        **popen_kwargs: passed to subprocess.Popen (cwd, env, ...).

    Returns:
        The RunResult: a subprocess.CompletedProcess with ``termination``,
        ``outcome`` and ``output_truncated``.

    Raises:
        TypeError, ValueError: a bad argument; nothing was started.
        ProcessTimedOut, ProcessCancelled, subprocess.CalledProcessError:
            with check=True.
        OSError: the program could not be started.
        BaseException: an exception raised while waiting (CancelledError
            included), re-raised after the child was escalated and reaped.
    """
    request = prepare_run(
        args,
        timeout=timeout,
        interrupt_grace=interrupt_grace,
        cancellation=cancellation,
        poll_interval=poll_interval,
        abandon_after=abandon_after,
        input=input,
        capture_output=capture_output,
        stdout=stdout,
        stderr=stderr,
        text=text,
        encoding=encoding,
        errors=errors,
        output_limit=output_limit,
        io_drain_timeout=io_drain_timeout,
        soft_interrupt=soft_interrupt,
        hard_kill=hard_kill,
        popen_kwargs=popen_kwargs,
    )
    loop = asyncio.get_running_loop()
    child = spawn(args, stdout=request.stdout, stderr=request.stderr, **request.popen_kwargs)
    try:
        pipes = ChildPipes(loop, child, request.input, request.limit)
    except BaseException:
        kill_group(child)  # nothing supervises it yet: it must not outlive the failure
        child.wait()
        raise
    try:
        outcome = await wait_for_child(
            child, request.options, soft_interrupt=soft_interrupt, hard_kill=hard_kill
        )
        await pipes.drain(request.drain)
    finally:
        pipes.close()
    out, err = (
        None if capture is None else request.output(capture.buffer.take(), capture.buffer.truncated)
        for capture in (pipes.stdout, pipes.stderr)
    )
    result = RunResult(child.args, outcome, out, err, output_truncated=pipes.truncated)
    if check:
        result.check_returncode()
    return result


class _AsyncioChild:
    """An asyncio Process as a ChildHandle: its pid, and the returncode that
    asyncio sets once its child watcher has reaped it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode


def _reaped_is_gone(send: Callable[[], None]) -> Callable[[], None]:
    """A signal hook for an asyncio child: asyncio's watcher may reap it at any
    moment (in a thread, before the loop learns the status); without a kept
    pidfd the signal would then find its pid lost. It is gone: nothing to send."""

    def guarded() -> None:
        with contextlib.suppress(ChildLostError):
            send()

    return guarded


def _handle_of(process: object) -> ChildHandle:
    if isinstance(process, subprocess.Popen):
        return process
    if isinstance(process, asyncio.subprocess.Process):
        return _AsyncioChild(process)
    raise TypeError(
        "process must be an asyncio.subprocess.Process or a subprocess.Popen, "
        f"got {type(process).__name__}"
    )


class _LoopWaiter:
    """An AsyncExitWaiter for one child on the running loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        token: CancelToken | None,
        look: Callable[[], int | None],
        status: Callable[[], Awaitable[int | None]],
    ) -> None:
        self._loop = loop
        self._token = token
        self._look = look
        self._status = status
        #: True once exits can only be noticed by looking (see ExitWaiter.polls).
        self.polls = False
        self._exited = False
        self._wakeup: asyncio.Future[None] | None = None
        self._wake_on_cancel = False
        self._helper: ExitWatch | None = None
        self._closers: list[Callable[[], object]] = []
        if token is not None:
            self._closers.append(token._subscribe(self._cancelled_from_any_thread))

    @classmethod
    def open(
        cls,
        loop: asyncio.AbstractEventLoop,
        process: asyncio.subprocess.Process | subprocess.Popen[Any],
        child: ChildHandle,
        token: CancelToken | None,
    ) -> _LoopWaiter:
        """The waiter for `process`, watching its exit the best way there is here.

        Raises:
            ChildLostError: a Popen's child was reaped outside its Popen.
        """
        if isinstance(process, subprocess.Popen):
            verify_child(process)
            popen = process

            def look() -> int | None:
                return reap(popen)  # ChildLostError if it was reaped behind Popen's back

            async def status() -> int | None:
                return reap(popen)  # a zombie once the exit is known: returns at once

            waiter = cls(loop, token, look, status)
            try:
                if popen.returncode is None and not waiter._watch_pidfd(popen):
                    waiter._watch_helper(popen)
            except BaseException:
                waiter.close()  # ChildLostError: let go of the token before raising
                raise
            return waiter
        waiter = cls(loop, token, lambda: process.returncode, process.wait)
        # asyncio reaps this child, maybe already: a pidfd that cannot be
        # opened or proved (ChildLostError) only means that asyncio has the
        # status, and process.wait() will give it.
        if process.returncode is None and not waiter._watch_pidfd(child, lost_ok=True):
            task = asyncio.ensure_future(process.wait())
            task.add_done_callback(lambda _: waiter._exit_known())
            waiter._closers.append(task.cancel)
        return waiter

    # -- how the exit becomes known

    def _watch_pidfd(self, child: ChildHandle, lost_ok: bool = False) -> bool:
        try:
            pidfd = pidfd_of(child)
        except ChildLostError:
            if not lost_ok:
                raise
            return False
        except OSError:
            return False  # EMFILE, say: the next way
        if pidfd is None:
            return False
        try:
            self._loop.add_reader(pidfd, self._pidfd_readable, pidfd)
        except NotImplementedError:
            return False  # a loop without add_reader
        self._closers.append(lambda: self._loop.remove_reader(pidfd))
        return True

    def _pidfd_readable(self, pidfd: int) -> None:
        self._loop.remove_reader(pidfd)  # it stays readable for ever
        self._exit_known()

    def _watch_helper(self, popen: subprocess.Popen[Any]) -> None:
        try:
            watch = watch_exit(popen, self)
        except RuntimeError:
            self.polls = True  # no thread either: Popen.poll() every poll_interval
            return
        self._helper = watch
        self._closers.append(lambda: unwatch_exit(popen, watch, self))

    def notify(self) -> None:
        """From the waitid helper's thread: the exit is known, or the helper failed."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._helper_notified)

    def _helper_notified(self) -> None:
        assert self._helper is not None, "only the helper notifies"
        if self._helper.exited:
            self._exit_known()
        elif self._helper.failed is not None:
            self.polls = True  # poll rather than hang
            self._wake()

    def _exit_known(self) -> None:
        self._exited = True
        self._wake()

    # -- the token

    def _cancelled_from_any_thread(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._cancelled)

    def _cancelled(self) -> None:
        if self._wake_on_cancel:
            self._wake()

    # -- AsyncExitWaiter

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        """Sleep until the exit, the token (if asked) or `timeout_ns`; see ExitWaiter."""
        cancelled = wake_on_cancel and self._token is not None and self._token.cancelled
        if timeout_ns != 0 and not self._exited and not cancelled:
            self._wakeup = self._loop.create_future()
            self._wake_on_cancel = wake_on_cancel
            timer = (
                None if timeout_ns is None else self._loop.call_later(timeout_ns / 1e9, self._wake)
            )
            try:
                await self._wakeup
            finally:
                self._wakeup = None
                self._wake_on_cancel = False
                if timer is not None:
                    timer.cancel()
        if self._exited:
            return await self._status()
        if timeout_ns == 0 or self.polls:
            return self._look()
        return None

    def close(self) -> None:
        """Stop watching: the reader, the token, the task or the helper."""
        closers, self._closers = self._closers, []
        for close in closers:
            close()
