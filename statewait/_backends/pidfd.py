# The pidfd backend (Linux >= 5.3): the child's pidfd becomes readable when
# the child exits, so one poll(2) over the pidfd and the CancelToken's
# descriptor sleeps until the exit, the cancellation or the slice's end.
# No thread, no polling. Contract: wait until the child is reapable; then
# reap it through Popen.wait(), once, so child.returncode is set.

from __future__ import annotations

import select
import subprocess
from typing import Any

from .._cancel import CancelToken
from .._child import pidfd_of

__all__ = ["PidfdWaiter"]


class PidfdWaiter:
    """Exit detection through the child's pidfd."""

    name = "pidfd"
    polls = False

    def __init__(self, child: subprocess.Popen[Any], token: CancelToken | None) -> None:
        self._child = child
        # The pidfd kept by spawn(), or one opened and verified now; None only
        # if Popen already reaped the child.
        self._pidfd = pidfd_of(child)
        self._alone = select.poll()
        self._with_token: select.poll | None = None
        if self._pidfd is not None:
            self._alone.register(self._pidfd, select.POLLIN)
            if token is not None:
                self._with_token = select.poll()
                self._with_token.register(self._pidfd, select.POLLIN)
                self._with_token.register(token.fileno(), select.POLLIN)

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        child = self._child
        if child.returncode is not None or self._pidfd is None:
            return child.returncode
        poller = self._with_token if wake_on_cancel and self._with_token else self._alone
        # poll(2) takes milliseconds; Python rounds a fraction up, so a
        # deadline is never woken for early.
        for fd, _ in poller.poll(None if timeout_ns is None else timeout_ns / 1e6):
            if fd == self._pidfd:
                return child.wait()  # a zombie: returns at once
        return None

    def close(self) -> None:
        """Nothing to release: the pidfd belongs to the child's record."""
