"""What waiting costs while nothing happens: CPU and wakeups of the waiting thread."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import statewait
from statewait import CancelToken, WaitOptions

from ._report import Table


def _switches() -> int:
    """Voluntary context switches of the calling thread: each is a wakeup."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _methods(duration: float) -> dict[str, Callable[[subprocess.Popen[Any]], object]]:
    def sw(backend: str) -> Callable[[subprocess.Popen[Any]], object]:
        token = CancelToken()
        options = WaitOptions(timeout=2 * duration, cancellation=token)
        return lambda c: statewait.wait_for_child(c, options, backend=backend)

    methods = {f"statewait {b}": sw(b) for b in statewait.available_backends()}
    methods["Popen.wait(timeout=)"] = lambda c: c.wait(timeout=2 * duration)
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return methods

    def psutil_wait(c: subprocess.Popen[Any]) -> None:
        psutil.Process(c.pid).wait(timeout=2 * duration)
        c.returncode = 0

    methods["psutil Process.wait(timeout=)"] = psutil_wait
    return methods


def idle_cost(duration: float) -> Table:
    """Wait `duration` seconds for a child that sleeps that long, with a timeout
    (twice as long) and a CancelToken, and count what the waiting thread spent."""
    table = Table(
        f"Idle cost of a {duration:g} s wait",
        ["method", "waiting-thread wakeups", "waiting-thread CPU (ms)", "process CPU (ms)"],
    )
    for name, wait in _methods(duration).items():
        wait(statewait.spawn(["true"]))  # first-call costs (imports, caches) are not idling
        child = statewait.spawn(["sleep", str(duration)])
        switches, cpu, times = _switches(), time.thread_time(), os.times()
        wait(child)
        after = os.times()
        table.add(
            name,
            _switches() - switches,
            f"{(time.thread_time() - cpu) * 1e3:.2f}",
            f"{(after.user + after.system - times.user - times.system) * 1e3:.0f}",
        )
    table.notes.append(
        "Wakeups are the waiting thread's voluntary context switches (the final one is the "
        "exit). The waitid backend's helper thread sleeps in one blocking waitid call."
    )
    return table
