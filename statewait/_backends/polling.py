# The portable fallback: Popen.poll() at the end of every slice. The loop
# wakes every poll_interval because `polls` is True; a CancelToken still
# wakes the sleep at once. Popen.poll() reaps, through Popen, once.

from __future__ import annotations

import subprocess
from typing import Any

from .._cancel import CancelToken
from .._child import reap
from ._common import Waker

__all__ = ["PollingWaiter"]


class PollingWaiter:
    """Exit detection by polling Popen.poll()."""

    name = "poll"
    polls = True

    def __init__(self, child: subprocess.Popen[Any], token: CancelToken | None) -> None:
        self._child = child
        self._waker = Waker(token)

    def wait(self, timeout_ns: int | None, wake_on_cancel: bool) -> int | None:
        returncode = reap(self._child)
        if returncode is not None or timeout_ns == 0:
            return returncode
        assert timeout_ns is not None, "a polled wait always has a slice"
        self._waker.sleep(timeout_ns, wake_on_cancel, lambda: False)
        return reap(self._child)

    def close(self) -> None:
        self._waker.close()
