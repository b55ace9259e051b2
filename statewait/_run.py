# run(): the one call for runners. It spawns the child in its own process
# group, moves its input and output while wait_for_child supervises it, and
# gives the pipes a bounded time to reach EOF once the child is gone.
#
# This module owns: run()'s argument checks (subprocess.run's rules and
# statewait's own), the I/O pump, output_limit, decoding, RunResult and what
# check=True raises. It does not own the wait (wait_for_child in _real.py and
# the one loop in _wait.py), spawning (_child.py) or signals (_signals.py).
#
# Why one helper thread: the wait runs in the calling thread, so that a
# KeyboardInterrupt reaches it and is escalated; meanwhile the pipes must be
# drained, or a child that fills a 64 KiB pipe blocks for ever. One thread
# multiplexes stdin, stdout and stderr with a selector. It owns the pipes from
# its start and closes each one itself (at EOF, after the input, or when told
# to stop), so no exception in the caller can leave a descriptor behind, and
# no descriptor is closed while the thread may still poll it.
#
# Why a drain limit: once the child has exited, a grandchild that left its
# group (or was never signalled) may hold the pipes open for ever;
# subprocess.run would wait for that EOF. run() waits io_drain_timeout.

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import subprocess
import threading
from typing import IO, Any

from ._cancel import CancelToken
from ._child import spawn
from ._options import (
    Cancellation,
    Duration,
)
from ._real import SignalCallback, wait_for_child
from ._result import Capture, RunResult, prepare_run
from ._signals import kill_group
from ._wait import WaitEvent

__all__ = ["RunResult", "run"]

#: The pipe size run() asks for (Linux, best effort) unless the caller passes
#: pipesize=: the default 64 KiB makes a child that writes fast wait for the
#: reader about twice as often (200 MB per stream: 0.9 s with 64 KiB, 0.5 s
#: with 1 MiB). 1 MiB is the default /proc/sys/fs/pipe-max-size.
_PIPE_SIZE = 1 << 20

#: Bytes asked for per read: one read empties a full pipe.
_READ_SIZE = _PIPE_SIZE

#: Reads per pipe, at most, once the I/O thread is told to stop: more than a
#: full pipe holds (1 MiB by default, up to 16 MiB with pipesize=).
_MAX_LAST_READS = 16

#: The selector: poll(2) needs no descriptor of its own (epoll does) and has
#: no FD_SETSIZE limit (select does).
_Selector: type[selectors.BaseSelector] = getattr(
    selectors, "PollSelector", selectors.SelectSelector
)


def run(
    args: Any,
    *,
    timeout: Duration | None = None,
    interrupt_grace: Duration = 2.0,
    cancellation: Cancellation = None,
    poll_interval: Duration = 0.05,
    abandon_after: Duration | None = None,
    input: bytes | bytearray | memoryview | str | None = None,
    capture_output: bool = False,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    output_limit: int | None = None,
    io_drain_timeout: Duration | None = 1.0,
    check: bool = False,
    soft_interrupt: SignalCallback | None = None,
    hard_kill: SignalCallback | None = None,
    **popen_kwargs: Any,
) -> RunResult:
    """Run a command in its own process group, capture its output, and wait for it.

    Like subprocess.run where the two overlap, with the supervision of
    wait_for_child: the child leads a new process group; once ``timeout``
    has passed (or ``cancellation`` is requested) the group gets the soft
    interrupt, and the hard kill once ``interrupt_grace`` more has passed.
    Input is written and output read concurrently with the wait, so neither
    side can deadlock on a full pipe. Unlike subprocess.run, a timeout does
    not raise unless ``check`` is true: the result says what happened.

    Once the child has exited, the pipes get at most ``io_drain_timeout``
    seconds to reach EOF; then they are closed, and output written later by
    a grandchild that still holds them is lost. Grandchildren that outlive
    the child are not signalled.

    **Cancellation:** as for wait_for_child. When the timeout elapses or the
    cancellation is requested, the soft interrupt goes to the child's group
    (SIGINT by default); the hard kill follows once, after the grace; the
    call always waits until the child has exited and been reaped (or
    ``abandon_after`` passed). An exception raised while waiting
    (KeyboardInterrupt included) is treated the same way, a second one
    during the grace sends the hard kill at once, and the exception is
    re-raised only after the child was reaped and the I/O thread stopped and
    its pipes closed.

    Args:
        args: the program and its arguments, as for subprocess.Popen.
        timeout: seconds (or a timedelta) after which the child is
            interrupted; None for no limit.
        interrupt_grace: seconds between the soft interrupt and the hard kill.
        cancellation: a CancelToken (acted on at once), a threading.Event or
            a callable returning True (polled every poll_interval), or None.
        poll_interval: how often a polled cancellation is checked; > 0.
        abandon_after: stop waiting this long after the hard kill if the
            child still runs (returncode None); None waits for ever.
        input: data for the child's stdin (bytes-like; str in text mode).
            The child's stdin is then a pipe that is closed after the data.
        capture_output: capture stdout and stderr (as stdout=stderr=PIPE).
        stdout: None (inherit), subprocess.PIPE (capture), DEVNULL, a file
            descriptor or a file object.
        stderr: as stdout, or subprocess.STDOUT to merge into stdout.
        text: decode the output (and encode ``input``) as text, with
            universal newlines, like subprocess.run(text=True).
        encoding: the text encoding (implies text); default the locale's.
        errors: the codec error handler (implies text); default "strict".
        output_limit: keep only the newest ``output_limit`` bytes of each
            captured stream (counted before decoding); None keeps all.
        io_drain_timeout: seconds to wait for EOF on the pipes after the
            child exited; None waits for EOF for ever, like subprocess.run.
        check: raise instead of returning when the child was interrupted or
            exited non-zero (see RunResult.check_returncode).
        soft_interrupt: called with the child's Popen to interrupt it;
            default interrupt_group (SIGINT to the group).
        hard_kill: called with the child's Popen to kill it; default
            kill_group (SIGKILL to the group).
        **popen_kwargs: passed to subprocess.Popen (cwd, env, pass_fds,
            pipesize, ...). ``universal_newlines`` is an alias of ``text``.

    Returns:
        The RunResult. The child was reaped unless the wait was abandoned:
        then ``returncode`` is None, and the child is left to subprocess's own
        clean-up (Python warns "subprocess N is still running" when its Popen
        is dropped).

    Raises:
        TypeError, ValueError: a bad argument or a conflicting combination
            (``input`` with ``stdin``, ``capture_output`` with ``stdout`` or
            ``stderr``); nothing was started.
        OSError: the program could not be started (FileNotFoundError,
            PermissionError, ...).
        ProcessTimedOut: with check=True, the timeout elapsed; it carries
            the outcome and the output captured so far. Also a TimeoutError.
        ProcessCancelled: with check=True, the wait was cancelled; likewise.
        subprocess.CalledProcessError: with check=True, the child exited
            non-zero by itself.
        BaseException: an exception raised while waiting, re-raised once the
            child was reaped.
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
    child: subprocess.Popen[bytes] = spawn(
        args, stdout=request.stdout, stderr=request.stderr, **request.popen_kwargs
    )
    supervised = False

    def note_start(event: WaitEvent) -> None:
        nonlocal supervised
        supervised = True  # from here on the wait escalates and reaps on any exception

    pump: _Pump | None = None
    try:
        pump = _Pump(
            child,
            request.input or b"",
            request.limit,
            widen="pipesize" not in request.popen_kwargs,
        )
        outcome = wait_for_child(
            child,
            request.options,
            soft_interrupt=soft_interrupt,
            hard_kill=hard_kill,
            observer=note_start,
        )
        pump.drain(request.drain)
    except BaseException:
        if pump is not None:
            pump.stop()
        if not supervised:
            _stop_unsupervised(child)
        raise
    pump.stop()
    pump.raise_failure()

    out, err = (request.output(*pump.captured(name)) for name in ("stdout", "stderr"))
    result = RunResult(child.args, outcome, out, err, output_truncated=pump.truncated)
    if check:
        result.check_returncode()
    return result


def _stop_unsupervised(child: subprocess.Popen[Any]) -> None:
    """Kill and reap a child that the wait never took charge of.

    Only when something failed between spawning and the wait's start (the I/O
    thread could not be started, say): the child must not run on unwatched.
    """
    with contextlib.suppress(Exception):
        kill_group(child)
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            _close_quietly(stream)  # the I/O thread, if any, has stopped
    child.wait()


class _Feed:
    """The input still to be written to the child's stdin."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.offset = 0


class _Pump:
    """Moves the child's stdin, stdout and stderr on one helper thread.

    The thread owns every pipe it was given and closes each one itself. No
    thread is started when the child has no pipe.
    """

    def __init__(
        self, child: subprocess.Popen[bytes], data: bytes, limit: int | None, *, widen: bool
    ) -> None:
        self._captures: dict[str, Capture] = {}
        self._files: list[IO[bytes]] = []
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None
        self._stop_token = CancelToken()
        try:
            if self._watch(child, data, limit, widen):
                self._thread = threading.Thread(
                    target=self._run, name=f"statewait-io-{child.pid}", daemon=True
                )
                self._thread.start()
        except BaseException:
            self._close()
            raise
        if self._thread is None:
            self._close()

    def _watch(
        self, child: subprocess.Popen[bytes], data: bytes, limit: int | None, widen: bool
    ) -> bool:
        """Register the child's pipes; False if none is left to move bytes through."""
        streams = [(name, getattr(child, name)) for name in ("stdin", "stdout", "stderr")]
        self._files = [stream for _, stream in streams if stream is not None]
        if not self._files:
            return False
        selector = self._selector = _Selector()
        # Its descriptor wakes the thread when stop() is called.
        selector.register(self._stop_token.fileno(), selectors.EVENT_READ, None)
        for name, stream in streams:
            if stream is None:
                continue
            if name == "stdin" and not data:
                _close_quietly(stream)  # no input: EOF at once, as subprocess.run does
                continue
            os.set_blocking(stream.fileno(), False)
            if widen:
                _widen_pipe(stream.fileno())
            if name == "stdin":
                selector.register(stream, selectors.EVENT_WRITE, _Feed(data))
            else:
                capture = self._captures[name] = Capture(limit)
                selector.register(stream, selectors.EVENT_READ, capture)
        return len(selector.get_map()) > 1  # more than the stop descriptor

    # -- the caller's side
    def drain(self, timeout: float | None) -> None:
        """Give the pipes up to `timeout` seconds (None: no limit) to finish."""
        if self._thread is not None:
            # join() refuses timeouts past threading.TIMEOUT_MAX (~292 years).
            self._thread.join(None if timeout is None else min(timeout, threading.TIMEOUT_MAX))

    def stop(self) -> None:
        """Make the thread stop and wait for it; it closes the pipes. Idempotent."""
        self._stop_token.cancel()
        if self._thread is not None:
            self._thread.join()

    def raise_failure(self) -> None:
        """Re-raise what made the thread fail, if anything did."""
        if self._failure is not None:
            raise self._failure

    def captured(self, name: str) -> tuple[bytes | None, bool]:
        """What was captured from "stdout" or "stderr" (None if not captured),
        and whether output_limit dropped older bytes of it."""
        capture = self._captures.get(name)
        if capture is None:
            return None, False
        return capture.take(), capture.truncated

    @property
    def truncated(self) -> bool:
        """output_limit dropped bytes from some stream."""
        return any(capture.truncated for capture in self._captures.values())

    # -- the thread's side
    def _run(self) -> None:
        selector = self._selector
        assert selector is not None, "a thread is started only with pipes to watch"
        try:
            # The map always holds the stop descriptor; anything more is a pipe.
            while len(selector.get_map()) > 1 and not self._stop_token.cancelled:
                for key, _ in selector.select():
                    if isinstance(key.data, Capture):
                        self._read(selector, key)
                    elif isinstance(key.data, _Feed):
                        self._write(selector, key)
            self._read_what_is_left(selector)
        except BaseException as exc:  # reported to the caller by raise_failure()
            self._failure = exc
        finally:
            self._close()

    def _read_what_is_left(self, selector: selectors.BaseSelector) -> None:
        # Told to stop (the drain is over): what the pipes hold now was
        # written already -- the child's last output, maybe not read yet
        # when its exit was seen -- so take it, without waiting for more.
        # Bounded: a grandchild that keeps writing does not keep us here.
        for key in list(selector.get_map().values()):
            if isinstance(key.data, Capture):
                for _ in range(_MAX_LAST_READS):
                    if self._read(selector, key) < _READ_SIZE:
                        break  # the pipe is empty (or at EOF)

    def _read(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> int:
        """Read once from a readable pipe; how many bytes came."""
        try:
            data = os.read(key.fd, _READ_SIZE)
        except BlockingIOError:
            return 0
        if data:
            key.data.add(data)
        else:
            selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        return len(data)

    def _write(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        feed: _Feed = key.data
        try:
            feed.offset += os.write(key.fd, feed.view[feed.offset :])
        except BlockingIOError:
            return
        except BrokenPipeError:
            pass  # the child stopped reading: the rest is dropped, as subprocess.run does
        else:
            if feed.offset < len(feed.view):
                return
        selector.unregister(key.fileobj)
        _close_quietly(key.fileobj)  # type: ignore[arg-type]

    def _close(self) -> None:
        for stream in self._files:
            _close_quietly(stream)
        if self._selector is not None:
            self._selector.close()
        self._stop_token.close()


def _widen_pipe(fd: int) -> None:
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if setpipe is not None:
        # EPERM past the user's pipe-buffer quota: the default size still works.
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, _PIPE_SIZE)


def _close_quietly(stream: IO[bytes]) -> None:
    # Closing flushes a buffered writer first; the child may be gone already.
    with contextlib.suppress(BrokenPipeError):
        stream.close()
