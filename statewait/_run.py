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

import codecs
import contextlib
import fcntl
import locale
import os
import selectors
import subprocess
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from ._cancel import CancelToken
from ._child import spawn
from ._errors import ProcessCancelled, ProcessTimedOut
from ._options import (
    Cancellation,
    Duration,
    TerminationReason,
    WaitOptions,
    WaitOutcome,
    check_duration,
)
from ._real import SignalCallback, check_callbacks, wait_for_child
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

#: How far into captured text a character cut in two by output_limit may
#: reach: no codec Python ships has longer characters.
_MAX_CHAR_BYTES = 4

#: The selector: poll(2) needs no descriptor of its own (epoll does) and has
#: no FD_SETSIZE limit (select does).
_Selector: type[selectors.BaseSelector] = getattr(
    selectors, "PollSelector", selectors.SelectSelector
)


class RunResult(subprocess.CompletedProcess[Any]):
    """What run() returns: a subprocess.CompletedProcess with the wait's outcome.

    Attributes:
        args: the program and arguments, as given.
        returncode: Popen's convention (-N: killed by signal N); None only
            when the wait was abandoned (``outcome.abandoned``).
        stdout: the captured output (bytes, or str in text mode), or None if
            it was not captured.
        stderr: likewise.
        outcome: the WaitOutcome: termination, elapsed, interrupted_at,
            killed_at, abandoned.
        output_truncated: output_limit dropped older bytes of stdout or stderr.
    """

    def __init__(
        self,
        args: Any,
        outcome: WaitOutcome,
        stdout: Any = None,
        stderr: Any = None,
        *,
        output_truncated: bool = False,
    ) -> None:
        # returncode is None only if the wait was abandoned (typeshed says int).
        super().__init__(args, outcome.returncode, stdout, stderr)  # type: ignore[arg-type]
        self.outcome = outcome
        self.output_truncated = output_truncated

    @property
    def termination(self) -> TerminationReason | None:
        """Why statewait interrupted the child; None if it exited by itself."""
        return self.outcome.termination

    def check_returncode(self) -> None:
        """Raise if the child was interrupted or exited with a non-zero status.

        Raises:
            ProcessTimedOut: it ran past the timeout (abandoned or not).
            ProcessCancelled: the wait was cancelled (abandoned or not).
            subprocess.CalledProcessError: it exited non-zero by itself.
        """
        outcome = self.outcome
        if outcome.termination is TerminationReason.TIMEOUT:
            raise ProcessTimedOut(self.args, outcome, self.stdout, self.stderr)
        if outcome.termination is TerminationReason.CANCELLED:
            raise ProcessCancelled(self.args, outcome, self.stdout, self.stderr)
        super().check_returncode()

    def __repr__(self) -> str:
        fields: dict[str, object] = {"args": self.args, "returncode": self.returncode}
        if self.termination is not None:
            fields["termination"] = self.termination
        for name in ("stdout", "stderr"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        if self.output_truncated:
            fields["output_truncated"] = True
        shown = ", ".join(f"{name}={value!r}" for name, value in fields.items())
        return f"{type(self).__name__}({shown})"


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
    durations: dict[str, Any] = {
        "timeout": timeout,
        "poll_interval": poll_interval,
        "interrupt_grace": interrupt_grace,
        "abandon_after": abandon_after,
    }
    # WaitOptions takes any Duration and stores float seconds (its fields are
    # typed as stored); it validates each one and names it in the error.
    options = WaitOptions(cancellation=cancellation, **durations)
    drain = check_duration("io_drain_timeout", io_drain_timeout, optional=True)
    limit = _check_output_limit(output_limit)
    check_callbacks(soft_interrupt=soft_interrupt, hard_kill=hard_kill)
    if isinstance(args, Sequence) and not isinstance(args, (str, bytes)) and not args:
        raise ValueError("args must name a program to run, got an empty sequence")
    codec = _text_codec(text, encoding, errors, popen_kwargs)
    data = _input_bytes(input, codec)
    if data is not None:
        if popen_kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used")
        popen_kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = subprocess.PIPE

    child: subprocess.Popen[bytes] = spawn(args, stdout=stdout, stderr=stderr, **popen_kwargs)
    supervised = False

    def note_start(event: WaitEvent) -> None:
        nonlocal supervised
        supervised = True  # from here on the wait escalates and reaps on any exception

    pump: _Pump | None = None
    try:
        pump = _Pump(child, data or b"", limit, widen="pipesize" not in popen_kwargs)
        outcome = wait_for_child(
            child, options, soft_interrupt=soft_interrupt, hard_kill=hard_kill, observer=note_start
        )
        pump.drain(drain)
    except BaseException:
        if pump is not None:
            pump.stop()
        if not supervised:
            _stop_unsupervised(child)
        raise
    pump.stop()
    pump.raise_failure()

    out, err = (pump.output(name, codec) for name in ("stdout", "stderr"))
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


def _check_output_limit(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"output_limit must be a number of bytes (int) or None, got {value!r} "
            f"({type(value).__name__})"
        )
    if value <= 0:
        raise ValueError(f"output_limit must be > 0 bytes, got {value!r}")
    return value


@dataclass(frozen=True)
class _Codec:
    """How text mode encodes the input and decodes the output."""

    encoding: str
    errors: str

    def encode(self, text: str) -> bytes:
        return text.encode(self.encoding, self.errors)

    def decode(self, data: bytes, truncated: bool) -> str:
        """Decode with universal newlines, as subprocess.run(text=True) does."""
        if truncated:
            data = self._skip_cut_character(data)
        return data.decode(self.encoding, self.errors).replace("\r\n", "\n").replace("\r", "\n")

    def _skip_cut_character(self, data: bytes) -> bytes:
        # output_limit keeps the newest bytes, so the oldest kept one may be
        # the middle of a multi-byte character: drop those few bytes rather
        # than fail (errors="strict") or start with U+FFFD.
        for skip in range(min(_MAX_CHAR_BYTES, len(data))):
            decoder = codecs.getincrementaldecoder(self.encoding)("strict")
            try:
                decoder.decode(data[skip : skip + 4 * _MAX_CHAR_BYTES])
            except UnicodeDecodeError:
                continue
            return data[skip:]
        return data  # not a cut character but bad data: the caller's errors= decides


def _text_codec(
    text: bool, encoding: str | None, errors: str | None, popen_kwargs: dict[str, Any]
) -> _Codec | None:
    """The codec of text mode, or None in binary mode (subprocess's rules)."""
    universal_newlines = popen_kwargs.pop("universal_newlines", None)
    if text and universal_newlines is not None and not universal_newlines:
        raise ValueError("text=True and universal_newlines=False disagree; pass one or the other")
    for name, value in (("encoding", encoding), ("errors", errors)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str or None, got {value!r}")
    if not (text or universal_newlines or encoding or errors):
        return None
    if encoding is None:
        encoding = locale.getpreferredencoding(False)  # as subprocess: UTF-8 in UTF-8 mode
    try:
        codecs.lookup(encoding)
        codecs.lookup_error(errors or "strict")
    except LookupError as exc:
        raise ValueError(f"unknown encoding or error handler: {exc}") from None
    return _Codec(encoding, errors or "strict")


def _input_bytes(value: object, codec: _Codec | None) -> bytes | None:
    if value is None:
        return None
    if codec is not None:
        if not isinstance(value, str):
            raise TypeError(f"input must be a str in text mode, got {type(value).__name__}")
        return codec.encode(value)
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"input must be bytes-like (or a str with text=True), got {type(value).__name__}"
    )


class _Capture:
    """The bytes read from one output pipe, or only the newest `limit` of them."""

    def __init__(self, limit: int | None) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        #: Older bytes were dropped to respect the limit.
        self.truncated = False

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._limit is not None and self._size > self._limit:
            self._drop(self._size - self._limit)

    def _drop(self, excess: int) -> None:
        # 0 < limit < size, so the oldest chunks cover `excess` and one remains.
        self.truncated = True
        self._size -= excess
        chunks = self._chunks
        while excess >= len(chunks[0]):
            excess -= len(chunks.popleft())
        if excess:
            chunks[0] = chunks[0][excess:]

    def take(self) -> bytes:
        """All the kept bytes, as one object (the chunks are released)."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


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
        self._captures: dict[str, _Capture] = {}
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
                capture = self._captures[name] = _Capture(limit)
                selector.register(stream, selectors.EVENT_READ, capture)
        return len(selector.get_map()) > 1  # more than the stop descriptor

    # -- the caller's side
    def drain(self, timeout: float | None) -> None:
        """Give the pipes up to `timeout` seconds (None: no limit) to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        """Make the thread stop and wait for it; it closes the pipes. Idempotent."""
        self._stop_token.cancel()
        if self._thread is not None:
            self._thread.join()

    def raise_failure(self) -> None:
        """Re-raise what made the thread fail, if anything did."""
        if self._failure is not None:
            raise self._failure

    def output(self, name: str, codec: _Codec | None) -> bytes | str | None:
        """What was captured from "stdout" or "stderr" (None if not captured)."""
        capture = self._captures.get(name)
        if capture is None:
            return None
        data = capture.take()
        return data if codec is None else codec.decode(data, capture.truncated)

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
                    if isinstance(key.data, _Capture):
                        self._read(selector, key)
                    elif isinstance(key.data, _Feed):
                        self._write(selector, key)
        except BaseException as exc:  # reported to the caller by raise_failure()
            self._failure = exc
        finally:
            self._close()

    def _read(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        try:
            data = os.read(key.fd, _READ_SIZE)
        except BlockingIOError:
            return
        if data:
            key.data.add(data)
        else:
            selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]

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
