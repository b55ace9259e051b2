# Every exception statewait raises on purpose, under one root.
#
# Validation errors are the builtin ValueError/TypeError (see _options.py);
# a non-zero exit under check=True is subprocess.CalledProcessError, as with
# subprocess.run. This module owns the rest.

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from ._options import WaitOutcome

__all__ = [
    "BackendUnavailable",
    "ChildLostError",
    "ProcessCancelled",
    "ProcessTimedOut",
    "StatewaitError",
    "UnsafeSignalError",
]

_Args: TypeAlias = "str | bytes | Sequence[object]"


class StatewaitError(Exception):
    """The root of statewait's own exceptions."""


class ChildLostError(StatewaitError):
    """The Popen no longer stands for a live or reapable child of this process.

    It was reaped outside its Popen (os.wait, os.waitpid, a SIGCHLD handler,
    or SIGCHLD set to SIG_IGN), so its exit status is lost and its pid may
    already belong to another process. Nothing was signalled.
    """


class UnsafeSignalError(StatewaitError):
    """statewait refused to send a signal that could reach processes it does not own."""


class BackendUnavailable(StatewaitError):
    """The requested exit-detection backend does not work on this system."""


class _Terminated(StatewaitError):
    """A child that statewait interrupted, with what it wrote so far."""

    #: Which phrase the message uses.
    _verb = "was terminated"

    def __init__(
        self,
        cmd: _Args,
        outcome: WaitOutcome,
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
    ) -> None:
        self.cmd = cmd
        self.outcome = outcome
        self.output = output
        self.stderr = stderr
        # One argument, the message: OSError (TimeoutError's base) would read
        # two to five as errno, strerror and filename -- the command as errno,
        # the output as filename.
        super().__init__(str(self))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickle with the real arguments (for multiprocessing and friends).
        return (type(self), (self.cmd, self.outcome, self.output, self.stderr), self.__dict__)

    @property
    def stdout(self) -> bytes | str | None:
        """Alias of `output`, as on subprocess.CalledProcessError."""
        return self.output

    @property
    def returncode(self) -> int | None:
        """The child's returncode (None if the wait was abandoned)."""
        return self.outcome.returncode

    def __str__(self) -> str:
        how = (
            "was abandoned after the hard kill"
            if self.outcome.abandoned
            else f"exited with {self.outcome.returncode}"
        )
        return f"Command {self.cmd!r} {self._verb}, then {how} after {self.outcome.elapsed:.3f}s"


class ProcessTimedOut(_Terminated, TimeoutError):
    """The child ran past its timeout and was interrupted (check=True).

    Also a TimeoutError, so `except TimeoutError` catches it.
    """

    _verb = "timed out"


class ProcessCancelled(_Terminated):
    """The wait was cancelled and the child was interrupted (check=True)."""

    _verb = "was cancelled"
