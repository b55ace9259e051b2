# The Supervisor: one background thread that waits for any number of
# children, each with the same table and the same semantics as wait_for_child.
#
# This module owns the multiplexing, nothing else: a selector over each live
# child's pidfd and one wakeup descriptor (new watches, cancellations, close),
# and a heap of timers (deadline_ns, seq, watch) with lazy invalidation. The
# rules, the slices and the escalation belong to each child's `Wait`
# (statewait/_wait.py): the thread calls `Wait.step` when something happened
# to that child -- its pidfd became readable, its timer fired, its token was
# cancelled, it was asked to stop -- and arms the timer the Wait asks for
# (`Wait.deadline_ns`). A block of 0 ("only look") is a Popen.poll() at once.
#
# Exit detection per child, best first: its pidfd in the selector (Linux);
# else the waitid helper thread of _backends/waitid.py, which wakes the
# selector through the wakeup descriptor (one thread per such child: the
# price of having no pidfd); else Popen.poll() every poll_interval through
# the heap (the Wait knows it must poll, `polls_exit`).
#
# A CancelToken wakes the thread through `_subscribe` rather than its
# descriptor: no descriptor per token, and none that stays readable for ever
# once cancelled. A threading.Event or a callable is polled by the slices the
# Wait asks for. Hooks, observers and Future callbacks all run on this one
# thread, in order; one child's failure is that child's Future's exception.

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import heapq
import itertools
import logging
import selectors
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from ._backends import BACKENDS, available_backends
from ._backends.waitid import ExitWatch, unwatch_exit, watch_exit
from ._cancel import WakeupFd, probe
from ._child import claim, pidfd_of, reap, release, unclaim, verify_child
from ._errors import BackendUnavailable, ChildLostError
from ._machine import RUNNING, TERMINATING, WaitState
from ._options import WaitOptions, WaitOutcome, check_duration, to_ns
from ._real import SignalCallback, check_arguments, signal_hooks
from ._signals import kill_group
from ._wait import MAX_SLICE_NS, Observer, Wait

__all__ = ["Supervisor"]

logger = logging.getLogger("statewait")

_DEFAULT_OPTIONS = WaitOptions()

#: Rebuild the timer heap once this many of its entries are stale (and they
#: are more than half of it), so finished or rescheduled waits do not pile up
#: behind a far deadline.
_COMPACT_AFTER = 64

#: How many requests, or due timers, one turn of the thread handles before it
#: looks at the selector again: a burst of watches or of timeouts must not
#: hold back the exits that are ready meanwhile (one request costs ~0.1 ms).
_TURN = 32

#: What the other threads ask of the supervisor thread.
_Request = Literal["watch", "wake", "exit", "stop", "stop_all", "close", "escalate"]


class _WaitFuture(concurrent.futures.Future[WaitOutcome]):
    """The Future of one watch. It is running from the start, so it cannot be
    cancelled; `cancel()` asks the Supervisor to cancel the wait instead."""

    def __init__(self, request_stop: Callable[[], None]) -> None:
        super().__init__()
        self._request_stop = request_stop

    def cancel(self) -> bool:
        """Request the cancellation of this child's wait; always False.

        The wait goes on -- soft interrupt, grace, hard kill -- and the Future
        completes with its outcome (``termination`` CANCELLED), as
        Future.cancel() promises for a call that is already running.
        """
        if not self.done():
            self._request_stop()
        return False


class _Watch:
    """One child's entry: its Wait and what the thread knows about it."""

    def __init__(
        self,
        child: subprocess.Popen[Any],
        options: WaitOptions,
        start: int,
        observer: Observer | None,
        soft_interrupt: SignalCallback | None,
        hard_kill: SignalCallback | None,
        supervisor: Supervisor,
    ) -> None:
        self.child = child
        self.options = options
        self.start = start
        self.observer = observer
        self.hooks = signal_hooks(child, child, soft_interrupt, hard_kill)
        self.future = _WaitFuture(lambda: supervisor._post("stop", self))
        self.future.set_running_or_notify_cancel()
        self._supervisor = supervisor
        # How the exit is detected; decided in watch(), before anything starts.
        self.pidfd: int | None = None
        self.exit_watch: ExitWatch | None = None
        self.polls = False
        # The thread's state: set when the watch is registered, cleared at the end.
        self.wait: Wait | None = None
        #: The pidfd while it is in the selector.
        self.selected: int | None = None
        self.unsubscribe: Callable[[], None] | None = None
        #: The seq of this watch's valid heap entry; -1: no timer armed.
        self.timer_seq = -1

    def notify(self) -> None:
        """The waitid helper saw the exit (or failed): from the helper's thread."""
        self._supervisor._post("exit", self)


class Supervisor:
    """One background thread that waits for many children at once.

    Each child watched gets its own wait with the same table and the same
    semantics as wait_for_child: at every wakeup an observed exit ends the
    wait; a timeout (strictly exceeded) or else a cancellation sends the soft
    interrupt; once the grace is strictly exceeded the hard kill follows,
    once; abandon_after gives up after it. One thread serves every child: a
    selector over their pidfds (Linux) and a heap of their deadlines. An idle
    Supervisor sleeps in the selector with no timeout.

    Use it as a context manager, or call close(): leaving the block cancels
    whatever is still running, escalates it and reaps it, and joins the
    thread.

    Examples:
        >>> from statewait import Supervisor, WaitOptions, spawn
        >>> with Supervisor() as sup:
        ...     futures = [sup.watch(spawn(["true"]), WaitOptions(timeout=10)) for _ in range(3)]
        ...     [f.result().returncode for f in futures]
        [0, 0, 0]

    **Cancellation:** a cancellation of one child -- its options'
    cancellation, ``future.cancel()``, cancel_all() or close() -- sends the
    soft interrupt (by default SIGINT to its process group); if the child is
    still running more than ``interrupt_grace`` seconds later, the hard kill
    follows (by default SIGKILL to its group), exactly once. Its Future
    completes only once the child has exited and been reaped (or
    ``abandon_after`` passed), with the outcome. If a callback or an observer
    raises, that child is escalated as wait_for_child escalates it (an
    exception in the grace skips to the hard kill; a custom hard kill that
    raises is followed by kill_group), reaped, and the exception is set on
    its Future; the other children are not disturbed.

    Args:
        backend: "auto" (per child: its pidfd, else a waitid helper thread,
            else polling), or one of "pidfd", "waitid", "poll" for every child.

    Raises:
        TypeError, ValueError: backend is not a known name.
        BackendUnavailable: the named backend does not work here.
        RuntimeError: the thread could not be started.
    """

    def __init__(self, *, backend: str = "auto") -> None:
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a str, got {backend!r} ({type(backend).__name__})")
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
        if backend != "auto" and backend not in available_backends():
            raise BackendUnavailable(
                f"backend {backend!r} does not work on this system; "
                f"available: {available_backends()}"
            )
        self._backend = backend
        # Shared with other threads, under _lock (reentrant: a CancelToken may
        # be cancelled from a signal handler that interrupted this very lock).
        self._lock = threading.RLock()
        self._inbox: deque[tuple[_Request, _Watch | int | None]] = deque()
        self._watched: dict[subprocess.Popen[Any], _Watch] = {}
        self._closing = False
        self._ended = False
        # The thread's own.
        self._wakeup = WakeupFd()
        try:
            self._selector = selectors.DefaultSelector()
        except BaseException:
            self._wakeup.close()
            raise
        self._selector.register(self._wakeup.fileno(), selectors.EVENT_READ, None)
        self._live: set[_Watch] = set()
        self._timers: list[tuple[int, int, _Watch]] = []
        self._stale = 0
        self._seq = itertools.count()
        self._closed_by_request = False
        self._escalate_at: int | None = None
        self._more = False  # requests or due timers were left for the next turn
        self._thread = threading.Thread(target=self._main, name="statewait-supervisor", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            self._selector.close()
            self._wakeup.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<Supervisor {state} watching={self.watching} backend={self._backend!r}>"

    @property
    def watching(self) -> int:
        """How many children are being watched (their Futures are not done)."""
        with self._lock:
            return len(self._watched)

    def watch(
        self,
        child: subprocess.Popen[Any],
        options: WaitOptions = _DEFAULT_OPTIONS,
        *,
        soft_interrupt: SignalCallback | None = None,
        hard_kill: SignalCallback | None = None,
        observer: Observer | None = None,
    ) -> concurrent.futures.Future[WaitOutcome]:
        """Start waiting for a child; return at once with its Future.

        The wait starts now (its timeout counts from this call). Arguments are
        checked before anything happens.

        **Cancellation:** as for the Supervisor. The Future is running from
        the start and cannot be cancelled: ``future.cancel()`` returns False
        and requests the cancellation of the child instead (soft interrupt,
        grace, hard kill); the Future then completes with the outcome.

        Args:
            child: a Popen of a child of this process, ideally started by
                spawn() (which keeps its pidfd and puts it in its own group).
            options: timeout, cancellation, poll_interval, interrupt_grace,
                abandon_after.
            soft_interrupt: called with the child to interrupt it; default
                interrupt_group. Runs on the supervisor thread.
            hard_kill: called with the child to kill it; default kill_group.
                Runs on the supervisor thread.
            observer: receives each timeline event (WaitEvent), on the
                supervisor thread.

        Returns:
            A concurrent.futures.Future that completes with the WaitOutcome
            once the child was reaped (or abandoned), or with the first
            exception raised by a callback or the observer, once the child
            was escalated and reaped. Its done-callbacks run on the supervisor
            thread: keep them short.

        Raises:
            TypeError: a bad argument.
            ValueError: this child is already watched by this Supervisor, or
                waited for by another statewait wait (wait_for_child,
                another Supervisor, statewait.aio).
            ChildLostError: the child was reaped outside its Popen.
            RuntimeError: the Supervisor is closed.
            OSError: backend "pidfd" was named and the child's pidfd could
                not be opened (EMFILE, say); "auto" falls back instead.
        """
        if not isinstance(child, subprocess.Popen):
            raise TypeError(f"child must be a subprocess.Popen, got {type(child).__name__}")
        check_arguments(
            options, soft_interrupt=soft_interrupt, hard_kill=hard_kill, observer=observer
        )
        with self._lock:
            if self._closing:
                raise RuntimeError("this Supervisor is closed: watch() needs an open one")
            if child in self._watched:
                raise ValueError(f"pid {child.pid} is already watched by this Supervisor")
            claim(child, child.pid)
            try:
                verify_child(child)
                watch = _Watch(
                    child, options, time.monotonic_ns(), observer, soft_interrupt, hard_kill, self
                )
                self._open_exit_source(watch)
            except BaseException:
                unclaim(child)
                raise
            self._watched[child] = watch
            self._post("watch", watch)
        return watch.future

    def cancel_all(self) -> None:
        """Request the cancellation of every child being watched now.

        Each one still running gets its soft interrupt at once, then its
        grace and its hard kill, as if its own cancellation had fired; the
        Futures complete with their outcomes. Children watched later are not
        affected. Returns at once.
        """
        self._post("stop_all")

    def close(self, timeout: float | None = None) -> None:
        """Cancel whatever is still running, reap it, and stop the thread.

        Every child still running is cancelled (soft interrupt, its own
        grace, hard kill) and the call returns once every Future is done and
        the thread has ended. watch() raises from the start of close() on.
        Idempotent; not from the supervisor thread itself.

        **Cancellation:** with `timeout`, a child still in its grace
        `timeout` seconds after close() was called gets its hard kill at once
        (the rest of the grace is skipped); a KeyboardInterrupt (any
        exception) while close() waits does the same at once, and is
        re-raised once every child was reaped. close() never returns early:
        a child that survives SIGKILL is waited for until its own
        ``abandon_after`` (for ever if None), as with wait_for_child.

        Args:
            timeout: seconds after which the remaining graces are cut short;
                None lets every child have its full grace.

        Raises:
            TypeError, ValueError: a bad timeout.
            RuntimeError: called from the supervisor thread (a callback, an
                observer or a done-callback), which would wait for itself.
        """
        seconds = check_duration("timeout", timeout, optional=True)
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "close() was called on the supervisor thread (from a callback, an observer "
                "or a Future's done-callback); it would wait for itself"
            )
        with self._lock:
            self._closing = True
        self._post("close", None if seconds is None else time.monotonic_ns() + to_ns(seconds))
        failure: BaseException | None = None
        while self._thread.is_alive():
            try:
                self._thread.join()
            except BaseException as exc:
                failure = failure or exc
                self._post("escalate")  # a second Ctrl-C: skip the graces
        if failure is not None:
            raise failure

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- any thread

    def _post(self, request: _Request, about: _Watch | int | None = None) -> None:
        with self._lock:
            if self._ended:
                return  # the thread is gone, and so is every wait it served
            self._inbox.append((request, about))
            self._wakeup.signal()

    def _open_exit_source(self, watch: _Watch) -> None:
        """Decide how this child's exit will be detected (in the caller's thread,
        so that errors are raised by watch())."""
        child, backend = watch.child, self._backend
        if backend in ("auto", "pidfd"):
            try:
                watch.pidfd = pidfd_of(child)  # ChildLostError goes on to the caller
            except OSError as exc:
                if backend == "pidfd":
                    raise
                logger.debug("pid %d: no pidfd (%r); falling back", child.pid, exc)
            if watch.pidfd is not None or child.returncode is not None:
                return
        if backend in ("auto", "waitid"):
            try:
                watch.exit_watch = watch_exit(child, watch)
                return
            except RuntimeError as exc:
                if backend == "waitid":
                    raise
                logger.debug("pid %d: no waitid helper (%r); polling", child.pid, exc)
        watch.polls = True

    # -- the supervisor thread

    def _main(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug: fail loudly, leave nobody waiting
            logger.exception("statewait supervisor thread failed")
            self._abort(exc)
        finally:
            with self._lock:
                self._ended = True
                self._closing = True
                self._wakeup.close()
            self._selector.close()

    def _serve(self) -> None:
        while not (self._closed_by_request and not self._live):
            timeout = 0.0 if self._more else self._select_timeout()
            self._more = False
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    self._wakeup.drain()
                else:
                    self._exited(key.data)
            self._read_inbox()
            self._fire_timers()

    def _select_timeout(self) -> float | None:
        timers = self._timers
        while timers and timers[0][1] != timers[0][2].timer_seq:
            heapq.heappop(timers)  # stale: its watch was rescheduled or finished
            self._stale -= 1
        deadlines = [
            d for d in (timers[0][0] if timers else None, self._escalate_at) if d is not None
        ]
        if not deadlines:
            return None  # idle: sleep until something happens
        return min(max(0, min(deadlines) - time.monotonic_ns()), MAX_SLICE_NS) / 1e9

    def _read_inbox(self) -> None:
        for _ in range(_TURN):
            with self._lock:
                if not self._inbox:
                    return
                request, about = self._inbox.popleft()
            if request == "close":
                self._closed_by_request = True
                self._stop_all(RUNNING)
                if isinstance(about, int) and (
                    self._escalate_at is None or about < self._escalate_at
                ):
                    self._escalate_at = about
            elif request == "stop_all":
                self._stop_all(RUNNING)
            elif request == "escalate":
                self._stop_all(TERMINATING)
            elif isinstance(about, _Watch):
                self._handle(request, about)
        self._more = True  # the rest after a look at the selector

    def _handle(self, request: _Request, watch: _Watch) -> None:
        if request == "watch":
            self._register(watch)
            return
        wait = watch.wait
        if watch not in self._live or wait is None:
            return  # a late message about a finished wait
        if request == "wake" and wait.wakes_on_cancel:
            self._advance(watch, self._look(watch))
        elif request == "stop" and wait.state is RUNNING:
            wait.stop()
            self._advance(watch, self._look(watch))
        elif request == "exit" and watch.exit_watch is not None:
            if watch.exit_watch.exited:
                self._advance(watch, self._look(watch))  # a zombie: returns at once
            elif watch.exit_watch.failed is not None:
                wait.polls_exit = True  # the helper failed: poll rather than hang
                self._advance(watch, self._look(watch))

    def _register(self, watch: _Watch) -> None:
        soft, hard = watch.hooks
        child = watch.child
        watch.wait = Wait(
            watch.options,
            watch.start,
            soft_interrupt=soft,
            hard_kill=hard,
            polls=watch.polls,
            observer=watch.observer,
            label=f"pid {child.pid}",
        )
        self._live.add(watch)
        if watch.pidfd is not None:
            try:
                self._selector.register(watch.pidfd, selectors.EVENT_READ, watch)
                watch.selected = watch.pidfd
            except (OSError, ValueError, KeyError) as exc:
                logger.debug("pid %d: pidfd not watchable (%r); polling", child.pid, exc)
                watch.wait.polls_exit = True
        token = probe(watch.options.cancellation).token
        if token is not None:
            watch.unsubscribe = token._subscribe(lambda: self._post("wake", watch))
        self._advance(watch, self._look(watch))  # the first look: the child may be gone already

    def _exited(self, watch: _Watch) -> None:
        """Its pidfd is readable: the child exited (it stays readable: stop watching it)."""
        self._unselect(watch)
        self._advance(watch, self._look(watch))  # a zombie: returns at once

    def _unselect(self, watch: _Watch) -> None:
        if watch.selected is not None:
            self._selector.unregister(watch.selected)
            watch.selected = None

    @staticmethod
    def _look(watch: _Watch) -> int | None:
        """The child's returncode if it has exited (reaped now), else None.

        A child reaped behind Popen's back fails its wait with ChildLostError,
        once the wait has seen that it is gone."""
        try:
            return reap(watch.child)
        except ChildLostError as exc:
            assert watch.wait is not None, "only registered watches look"
            watch.wait.interrupted(exc)
            return watch.child.returncode

    def _advance(self, watch: _Watch, exit_status: int | None) -> None:
        """Step the wait with what is known now; look again at once for as long
        as it asks to (block 0); then arm its timer, or finish it."""
        wait = watch.wait
        assert wait is not None, "only registered watches advance"
        wait.step(time.monotonic_ns(), exit_status)
        while not wait.done and wait.slice_ns == 0:
            wait.step(time.monotonic_ns(), self._look(watch))
        if wait.done:
            self._finish(watch)
        else:
            self._arm(watch, wait.deadline_ns)

    def _arm(self, watch: _Watch, deadline: int | None) -> None:
        if watch.timer_seq != -1:
            self._stale += 1
            watch.timer_seq = -1
        if deadline is not None:
            watch.timer_seq = next(self._seq)
            heapq.heappush(self._timers, (deadline, watch.timer_seq, watch))
        if self._stale > _COMPACT_AFTER and self._stale * 2 > len(self._timers):
            self._timers = [t for t in self._timers if t[1] == t[2].timer_seq]
            heapq.heapify(self._timers)
            self._stale = 0

    def _fire_timers(self) -> None:
        now = time.monotonic_ns()
        if self._escalate_at is not None and now >= self._escalate_at:
            self._escalate_at = None
            self._stop_all(TERMINATING)
        timers = self._timers
        fired = 0
        while timers and timers[0][0] <= now:
            if fired == _TURN:
                self._more = True  # the rest after a look at the selector
                return
            _, seq, watch = heapq.heappop(timers)
            if seq != watch.timer_seq:
                self._stale -= 1
                continue
            watch.timer_seq = -1
            fired += 1
            self._advance(watch, self._look(watch))

    def _stop_all(self, state: WaitState) -> None:
        """stop() every live wait in `state`: RUNNING cancels, TERMINATING escalates."""
        for watch in list(self._live):
            wait = watch.wait
            if watch in self._live and wait is not None and wait.state is state:
                wait.stop()
                self._advance(watch, self._look(watch))

    def _finish(self, watch: _Watch) -> None:
        self._live.discard(watch)
        self._arm(watch, None)  # its timer, if any, is stale now
        child = watch.child
        self._let_go(watch)
        with self._lock:
            self._watched.pop(child, None)
        unclaim(child)
        assert watch.wait is not None
        try:
            outcome = watch.wait.result()
        except BaseException as exc:
            self._settle(watch, functools.partial(watch.future.set_exception, exc))
        else:
            self._settle(watch, functools.partial(watch.future.set_result, outcome))

    def _let_go(self, watch: _Watch) -> None:
        """Stop listening for the child: its selector entry, its token
        subscription, its waitid helper; close its pidfd if it is reaped."""
        self._unselect(watch)
        if watch.unsubscribe is not None:
            watch.unsubscribe()
        if watch.exit_watch is not None:
            unwatch_exit(watch.child, watch.exit_watch, watch)
        release(watch.child)  # closes the kept pidfd once the child is reaped

    @staticmethod
    def _settle(watch: _Watch, complete: Callable[[], None]) -> None:
        # Future callbacks run here; concurrent.futures logs an Exception from
        # one, but not a BaseException: this thread must survive both.
        try:
            complete()
        except BaseException:
            logger.exception("pid %d: a Future done-callback failed", watch.child.pid)

    def _abort(self, exc: BaseException) -> None:
        """The thread is failing: kill and reap what it watched, then fail every
        Future (as close() would: a child killed but unreaped is a zombie)."""
        with self._lock:
            self._closing = True
            watches = list(self._watched.values())
            self._watched.clear()
        for watch in watches:
            with contextlib.suppress(BaseException):
                kill_group(watch.child)
        for watch in watches:
            child = watch.child
            with contextlib.suppress(BaseException):
                child.wait(watch.options.abandon_after)  # after SIGKILL, as long as a wait would
            with contextlib.suppress(BaseException):
                self._let_go(watch)
            unclaim(child)
            if watch.wait is not None:
                watch.wait.release()
            if not watch.future.done():
                self._settle(watch, functools.partial(watch.future.set_exception, exc))
