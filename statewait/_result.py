# What a run returns: RunResult, how its captured output becomes text, and
# what check=True raises.
#
# This module owns the result of a run and nothing that runs: statewait.aio's
# run() builds one (and so can statewait.run(), which is built beside it with
# the same DESIGN.md shape: a CompletedProcess with termination, outcome and
# output_truncated).

from __future__ import annotations

import codecs
import locale
import subprocess
from collections.abc import Sequence
from typing import Any

from ._errors import ProcessCancelled, ProcessTimedOut
from ._options import TerminationReason, WaitOutcome

__all__ = ["RunResult", "decode_output", "text_encoding"]


class RunResult(subprocess.CompletedProcess[Any]):
    """A finished run: a subprocess.CompletedProcess, plus what statewait did.

    Attributes:
        args: the arguments the child was started with.
        returncode: its exit status (-N: killed by signal N); None only if
            the wait was abandoned.
        stdout: the captured output (bytes, or str in text mode), or None
            if it was not captured.
        stderr: likewise for the error output.
        termination: why statewait interrupted the child; None if it was not
            interrupted (the same as ``outcome.termination``).
        outcome: the WaitOutcome of the wait.
        output_truncated: True if ``output_limit`` made the run drop the
            oldest bytes of stdout or stderr.
    """

    def __init__(
        self,
        args: str | bytes | Sequence[Any],
        stdout: bytes | str | None,
        stderr: bytes | str | None,
        *,
        outcome: WaitOutcome,
        output_truncated: bool,
    ) -> None:
        # returncode is None only when the wait was abandoned (the child may
        # still run); CompletedProcess's stub does not foresee it.
        super().__init__(args, outcome.returncode, stdout, stderr)  # type: ignore[arg-type]
        self.outcome = outcome
        self.termination: TerminationReason | None = outcome.termination
        self.output_truncated = output_truncated

    def check_returncode(self) -> None:
        """Raise if the run was interrupted or failed (what check=True does).

        Raises:
            ProcessTimedOut: the timeout interrupted the child.
            ProcessCancelled: a cancellation interrupted the child.
            subprocess.CalledProcessError: it exited by itself with a
                non-zero status.
        """
        if self.termination is TerminationReason.TIMEOUT:
            raise ProcessTimedOut(self.args, self.outcome, self.stdout, self.stderr)
        if self.termination is TerminationReason.CANCELLED:
            raise ProcessCancelled(self.args, self.outcome, self.stdout, self.stderr)
        super().check_returncode()


def decode_output(data: bytes, *, truncated: bool, encoding: str | None, errors: str | None) -> str:
    """Captured bytes as text, as subprocess's text mode reads them.

    Universal newlines: "\\r\\n" and "\\r" become "\\n". When the oldest bytes
    were dropped, the cut may have split a character: up to 3 leading bytes
    that do not decode are dropped too.

    Args:
        data: the bytes.
        truncated: whether the oldest bytes were dropped.
        encoding: the encoding; None for the locale's (as subprocess).
        errors: the error handler; None for "strict".

    Raises:
        UnicodeDecodeError: the bytes do not decode (with errors="strict").
    """
    codec = text_encoding(encoding)
    handler = errors or "strict"
    for skip in range(4 if truncated else 1):
        try:
            text = data[skip:].decode(codec, handler)
            break
        except UnicodeDecodeError:
            if skip == (3 if truncated else 0):
                raise
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_encoding(encoding: str | None) -> str:
    """The encoding text mode uses: `encoding`, else the locale's (as subprocess)."""
    return codecs.lookup(encoding or locale.getpreferredencoding(False)).name
