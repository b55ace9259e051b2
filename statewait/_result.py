# What a run is asked and what it returns, shared by statewait.run() (a
# helper thread moves the pipes) and statewait.aio.run() (the event loop
# does): the argument checks (subprocess.run's rules and statewait's own),
# text mode, the bounded capture buffer of output_limit, and RunResult with
# what check=True raises.
#
# It owns no process and no pipe: it checks, decodes, keeps bytes and reports.

from __future__ import annotations

import codecs
import locale
import subprocess
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from ._errors import ProcessCancelled, ProcessTimedOut
from ._options import (
    Cancellation,
    Duration,
    TerminationReason,
    WaitOptions,
    WaitOutcome,
    check_duration,
)
from ._real import SignalCallback, check_callbacks

__all__ = [
    "Capture",
    "Codec",
    "RunRequest",
    "RunResult",
    "check_output_limit",
    "input_bytes",
    "prepare_run",
    "text_codec",
]

#: How far into captured text a character cut in two by output_limit may
#: reach: no codec Python ships has longer characters.
_MAX_CHAR_BYTES = 4


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


@dataclass
class RunRequest:
    """A run's checked arguments, ready to spawn and wait."""

    options: WaitOptions
    drain: float | None
    limit: int | None
    codec: Codec | None
    #: What to write to stdin (then closed); None when stdin is not a pipe for input.
    input: bytes | None
    stdout: int | IO[Any] | None
    stderr: int | IO[Any] | None
    popen_kwargs: dict[str, Any]

    def output(self, data: bytes | None, truncated: bool) -> bytes | str | None:
        """Captured bytes as run() returns them: decoded in text mode."""
        if data is None or self.codec is None:
            return data
        return self.codec.decode(data, truncated)


def prepare_run(
    args: Any,
    *,
    timeout: Duration | None,
    interrupt_grace: Duration,
    cancellation: Cancellation,
    poll_interval: Duration,
    abandon_after: Duration | None,
    input: object,
    capture_output: bool,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    text: bool,
    encoding: str | None,
    errors: str | None,
    output_limit: int | None,
    io_drain_timeout: Duration | None,
    soft_interrupt: SignalCallback | None,
    hard_kill: SignalCallback | None,
    popen_kwargs: dict[str, Any],
) -> RunRequest:
    """Check every argument of a run before anything is started.

    Raises:
        TypeError, ValueError: a bad argument, named with its value.
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
    limit = check_output_limit(output_limit)
    check_callbacks(soft_interrupt=soft_interrupt, hard_kill=hard_kill)
    if isinstance(args, Sequence) and not isinstance(args, (str, bytes)) and not args:
        raise ValueError("args must name a program to run, got an empty sequence")
    codec = text_codec(text, encoding, errors, popen_kwargs)
    data = input_bytes(input, codec)
    if data is not None:
        if popen_kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used")
        popen_kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = subprocess.PIPE

    return RunRequest(options, drain, limit, codec, data, stdout, stderr, popen_kwargs)


def check_output_limit(value: object) -> int | None:
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
class Codec:
    """How text mode encodes the input and decodes the output."""

    encoding: str
    errors: str

    def encode(self, text: str) -> bytes:
        return text.encode(self.encoding, self.errors)

    def decode(self, data: bytes, truncated: bool) -> str:
        """Decode with universal newlines, as subprocess.run(text=True) does."""
        text = self._decode_cut(data) if truncated else None
        if text is None:
            text = data.decode(self.encoding, self.errors)
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def _decode_cut(self, data: bytes) -> str | None:
        # output_limit keeps the newest bytes, so the oldest kept one may be
        # the middle of a character: drop those few bytes rather than fail
        # (errors="strict") or start with U+FFFD. Up to len(data) itself: a
        # limit smaller than one character may have kept nothing but the cut
        # character's tail.
        skips = range(min(_MAX_CHAR_BYTES, len(data) + 1))
        # Best, a cut after which everything decodes. This also realigns
        # UTF-16 and UTF-32, where almost any few bytes decode as something.
        for skip in skips:
            try:
                return data[skip:].decode(self.encoding, "strict")
            except UnicodeError:
                continue
        # Bad data further on (the caller's errors= decides about it): a cut
        # after which the first characters decode.
        for skip in skips:
            head = data[skip : skip + 4 * _MAX_CHAR_BYTES]
            decoder = codecs.getincrementaldecoder(self.encoding)("strict")
            try:
                decoder.decode(head, final=skip + len(head) == len(data))
            except UnicodeError:  # the "utf-16" codec's "no BOM" is not a UnicodeDecodeError
                continue
            return data[skip:].decode(self.encoding, self.errors)
        return None  # not a cut character but bad data: the caller's errors= decides


def text_codec(
    text: bool, encoding: str | None, errors: str | None, popen_kwargs: dict[str, Any]
) -> Codec | None:
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
    return Codec(encoding, errors or "strict")


def input_bytes(value: object, codec: Codec | None) -> bytes | None:
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


class Capture:
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
