"""statewait: wait for a child process with a timeout, cooperative
cancellation, a soft interrupt to its process group, a grace period and a
hard kill sent at most once -- one table-driven state machine, event-driven
exit detection.

`wait_for_child` waits for one child on the calling thread; `Supervisor`
waits for many children on one background thread; the submodule
`statewait.aio` waits inside an asyncio event loop (`await
statewait.aio.wait_for_child(...)`, `await statewait.aio.run(...)`). All of
them drive the same state machine.

The public names are listed in `__all__`; every other module is private,
except the public submodule `statewait.aio`.
"""

from __future__ import annotations

from ._backends import BACKENDS, available_backends
from ._cancel import CancelToken
from ._child import spawn
from ._errors import (
    BackendUnavailable,
    ChildLostError,
    ProcessCancelled,
    ProcessTimedOut,
    StatewaitError,
    UnsafeSignalError,
)
from ._machine import WaitState
from ._options import TerminationReason, WaitOptions, WaitOutcome
from ._real import wait_for_child
from ._result import RunResult
from ._run import run
from ._signals import interrupt_group, kill_group, signal_group
from ._supervisor import Supervisor
from ._wait import WaitEvent

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "CancelToken",
    "ChildLostError",
    "ProcessCancelled",
    "ProcessTimedOut",
    "RunResult",
    "StatewaitError",
    "Supervisor",
    "TerminationReason",
    "UnsafeSignalError",
    "WaitEvent",
    "WaitOptions",
    "WaitOutcome",
    "WaitState",
    "__version__",
    "available_backends",
    "interrupt_group",
    "kill_group",
    "run",
    "signal_group",
    "spawn",
    "wait_for_child",
]
