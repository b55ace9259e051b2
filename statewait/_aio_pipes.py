# A child's pipes on the running asyncio loop, for statewait.aio.run: feed
# stdin, capture stdout and stderr keeping the newest `output_limit` bytes.
#
# Plain non-blocking reads and writes on the pipes' descriptors through
# loop.add_reader/add_writer: set up without awaiting anything, so that no
# cancellation can fall between the spawn and the start of the wait, and
# torn down explicitly. It does not wait for the child and does not decode.

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from typing import IO, Any

from ._result import Capture

__all__ = ["ChildPipes"]

#: How much one read or write moves at most.
_CHUNK = 65536

#: Once the drain is over, what the pipes already hold is read in reads of
#: this size, at most _LAST_READS of them per pipe: more than a full pipe
#: holds (64 KiB by default, up to 16 MiB with pipesize=), so a grandchild
#: that keeps writing cannot keep the read going.
_LAST_READ = 1 << 20
_LAST_READS = 16


class _Capture:
    """One output pipe, read until EOF into a buffer that keeps the newest bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: IO[bytes], limit: int | None) -> None:
        self._loop = loop
        self._pipe = pipe
        self._fd = pipe.fileno()
        #: The captured bytes (only the newest `limit` of them).
        self.buffer = Capture(limit)
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(self._fd, False)
        loop.add_reader(self._fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""  # treated as the end of the output
        if not chunk:
            self.close()
            return
        self.buffer.add(chunk)

    def read_what_is_left(self) -> None:
        """Take what the pipe holds now, without waiting for more.

        It was written before the drain ended (the child's last output, say,
        not read yet when its exit was seen): it is kept, as run() keeps it.
        """
        for _ in range(_LAST_READS):
            if self._pipe.closed:
                return
            try:
                chunk = os.read(self._fd, _LAST_READ)
            except OSError:  # BlockingIOError: the pipe is empty
                return
            if not chunk:
                self.close()
                return
            self.buffer.add(chunk)

    def close(self) -> None:
        if self._pipe.closed:
            return
        self._loop.remove_reader(self._fd)
        self._pipe.close()
        if not self.eof.done():
            self.eof.set_result(None)


class _Feed:
    """The input pipe: written as it becomes writable, closed at the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: IO[bytes], data: bytes) -> None:
        self._loop = loop
        self._pipe = pipe
        self._fd = pipe.fileno()
        self._data = memoryview(data)
        self._writing = False
        if not data:
            self.close()  # no input: the child reads EOF at once
            return
        os.set_blocking(self._fd, False)
        loop.add_writer(self._fd, self._write)
        self._writing = True

    def _write(self) -> None:
        try:
            written = os.write(self._fd, self._data[:_CHUNK])
        except BlockingIOError:
            return
        except OSError:
            self.close()  # the child closed its end or exited: the rest is not wanted
            return
        self._data = self._data[written:]
        if not self._data:
            self.close()

    def close(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        if not self._pipe.closed:
            # Nothing is buffered in the file object (every write went to the
            # descriptor), so closing cannot raise BrokenPipeError.
            with contextlib.suppress(OSError):
                self._pipe.close()


class ChildPipes:
    """The pipes of one child that aio.run feeds and captures.

    Args:
        loop: the running loop.
        child: the child; its stdin, stdout and stderr file objects are used
            where they exist (they were asked for as PIPE).
        input: what to write to stdin (then closed); None for nothing.
        limit: keep at most this many newest bytes per output; None: all.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        child: subprocess.Popen[Any],
        input: bytes | None,
        limit: int | None,
    ) -> None:
        self._feed: _Feed | None = None
        self.stdout: _Capture | None = None
        self.stderr: _Capture | None = None
        try:
            if child.stdin is not None:
                self._feed = _Feed(loop, child.stdin, input or b"")
            if child.stdout is not None:
                self.stdout = _Capture(loop, child.stdout, limit)
            if child.stderr is not None:
                self.stderr = _Capture(loop, child.stderr, limit)
        except BaseException:
            self.close()
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
            raise

    @property
    def truncated(self) -> bool:
        """Whether the limit dropped bytes from either output."""
        return any(c is not None and c.buffer.truncated for c in (self.stdout, self.stderr))

    async def drain(self, timeout: float | None) -> None:
        """Read on until both outputs end, for at most `timeout` seconds.

        After the child's exit its output may still be in the pipes, or a
        grandchild may hold them open; what arrives within the timeout is
        kept, and so is what the pipes hold when it is over. Then every pipe
        is closed.
        """
        captures = [c for c in (self.stdout, self.stderr) if c is not None]
        pending = [c.eof for c in captures if not c.eof.done()]
        try:
            if pending:
                await asyncio.wait(pending, timeout=timeout)
            for capture in captures:
                capture.read_what_is_left()
        finally:
            self.close()

    def close(self) -> None:
        """Stop feeding and reading; close every pipe. Idempotent."""
        for part in (self._feed, self.stdout, self.stderr):
            if part is not None:
                part.close()
