# The pidfd backend (Linux >= 5.4): the child's pidfd becomes readable when
# the child exits, so one sleep over the pidfd and the CancelToken's
# descriptor lasts until the exit, the cancellation or the slice's end.
# No thread, no polling. Contract: wait until the child is reapable; then
# reap it through Popen.wait(), once, so child.returncode is set.
#
# The sleep is select(2) while both descriptors are below FD_SETSIZE: its
# timeout has microsecond resolution, where poll(2) and epoll round up to the
# next millisecond (a deadline would fire up to 1 ms late). Past FD_SETSIZE,
# poll(2) it is.

from __future__ import annotations

import select
import subprocess
from typing import Any

from .._cancel import CancelToken
from .._child import pidfd_of, reap

__all__ = ["PidfdWaiter"]

#: select(2) handles descriptors below this only.
_FD_SETSIZE = 1024


def _seconds(timeout_ns: int | None) -> float | None:
    return None if timeout_ns is None else timeout_ns / 1e9


def _millis(timeout_ns: int | None) -> float | None:
    # poll(2) takes milliseconds; Python rounds a fraction up, so a deadline
    # is never woken for early.
    return None if timeout_ns is None else timeout_ns / 1e6


class PidfdWaiter:
    """Exit detection through the child's pidfd."""

    name = "pidfd"
    polls = False

    def __init__(self, child: subprocess.Popen[Any], token: CancelToken | None) -> None:
        self._child = child
        # The pidfd kept by spawn(), or one opened and verified now; None only
        # if Popen already reaped the child.
        self._pidfd = pidfd_of(child)
        self._token_fd = None if token is None or self._pidfd is None else token.fileno()
        fds = [fd for fd in (self._pidfd, self._token_fd) if fd is not None]
        self._fine = all(fd < _FD_SETSIZE for fd in fds)
        self._alone = select.poll()
        self._with_token = select.poll()
        if self._pidfd is not None:
            self._alone.register(self._pidfd, select.POLLIN)
            self._with_token.register(self._pidfd, select.POLLIN)
        if self._token_fd is not None:
            self._with_token.register(self._token_fd, select.POLLIN)

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        child = self._child
        if child.returncode is not None or self._pidfd is None:
            return child.returncode
        token_fd = self._token_fd if wake_on_cancel else None
        if self._fine:
            fds = [self._pidfd] if token_fd is None else [self._pidfd, token_fd]
            ready, _, _ = select.select(fds, [], [], _seconds(timeout_ns))
        else:
            poller = self._alone if token_fd is None else self._with_token
            ready = [fd for fd, _ in poller.poll(_millis(timeout_ns))]
        return reap(child) if self._pidfd in ready else None  # a zombie: at once

    def close(self) -> None:
        """Nothing to release: the pidfd belongs to the child's record."""
