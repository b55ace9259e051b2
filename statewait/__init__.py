"""statewait: wait for a child process with a timeout, cooperative
cancellation, a soft interrupt to its process group, a grace period and a
hard kill sent at most once -- one table-driven state machine, event-driven
exit detection.

The public names are listed in `__all__`; every other module is private.
"""

from __future__ import annotations

from ._cancel import CancelToken
from ._errors import ProcessCancelled, ProcessTimedOut, StatewaitError
from ._options import TerminationReason, WaitOptions, WaitOutcome

__version__ = "0.1.0"

__all__ = [
    "CancelToken",
    "ProcessCancelled",
    "ProcessTimedOut",
    "StatewaitError",
    "TerminationReason",
    "WaitOptions",
    "WaitOutcome",
    "__version__",
]
