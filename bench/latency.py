"""Exit detection, cancellation and timeout accuracy, statewait vs its peers.

Every method runs against the same kind of child, and the methods take turns
sample by sample, so that whatever else the machine does falls on all of them
alike. Times come from CLOCK_MONOTONIC, which is system-wide on Linux: a
child's time.monotonic() and the parent's are comparable.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import statewait
from statewait import CancelToken, WaitOptions

from ._report import Stats, Table, ratio, us

#: Sleeps argv[1] seconds, writes its monotonic time, exits at once.
EXITING_CHILD = (
    "import os, sys, time\n"
    "time.sleep(float(sys.argv[1]))\n"
    "os.write(1, repr(time.monotonic()).encode())\n"
    "os._exit(0)\n"
)
#: A child that ignores SIGINT (sh's trap is inherited by its sleep).
IGNORES_SIGINT = ["sh", "-c", "trap '' INT; exec sleep 30"]

Waiter = Callable[[subprocess.Popen[bytes]], object]


def _statewait(backend: str) -> Waiter:
    def wait(child: subprocess.Popen[bytes]) -> None:
        options = WaitOptions(timeout=30, cancellation=CancelToken())
        statewait.wait_for_child(child, options, backend=backend)

    return wait


def _psutil_wait(child: subprocess.Popen[bytes]) -> None:
    import psutil  # type: ignore[import-untyped]

    psutil.Process(child.pid).wait(timeout=30)
    child.returncode = 0  # psutil reaped it; tell Popen so it does not wait again


def _psutil_wait_procs(child: subprocess.Popen[bytes]) -> None:
    import psutil

    psutil.wait_procs([psutil.Process(child.pid)], timeout=30)
    child.returncode = 0


def exit_waiters() -> dict[str, Waiter]:
    """The methods compared for exit detection, those available here."""
    methods: dict[str, Waiter] = {
        "Popen.wait() (blocking)": lambda c: c.wait(),
        "Popen.wait(timeout=30)": lambda c: c.wait(timeout=30),
    }
    for backend in statewait.available_backends():
        methods[f"statewait {backend}"] = _statewait(backend)
    try:
        import psutil  # noqa: F401
    except ImportError:
        pass
    else:
        methods["psutil Process.wait"] = _psutil_wait
        methods["psutil wait_procs"] = _psutil_wait_procs
    return methods


def _trio_sample(delay: float) -> float | None:
    try:
        import trio
    except ImportError:
        return None

    async def main() -> float:
        done = await trio.run_process(
            [sys.executable, "-c", EXITING_CHILD, str(delay)],
            capture_stdout=True,
            check=False,
            start_new_session=True,
        )
        returned = time.monotonic()
        return returned - float(done.stdout)

    return trio.run(main)


def exit_detection(samples: int, seed: int) -> Table:
    """From the child's last instant to the moment the parent's wait returned."""
    rng = random.Random(seed)
    methods = exit_waiters()
    results: dict[str, list[float]] = {name: [] for name in methods}
    trio_results: list[float] = []
    for _ in range(samples):
        for name, wait in methods.items():
            child = statewait.spawn(
                [sys.executable, "-c", EXITING_CHILD, str(rng.uniform(0.02, 0.08))],
                stdout=subprocess.PIPE,
            )
            wait(child)
            returned = time.monotonic()
            assert child.stdout is not None
            exited = float(child.stdout.read())
            child.stdout.close()
            results[name].append(returned - exited)
        lag = _trio_sample(rng.uniform(0.02, 0.08))
        if lag is not None:
            trio_results.append(lag)
    if trio_results:
        results["trio.run_process"] = trio_results
    base = Stats.of(results["Popen.wait() (blocking)"]).median
    polling = Stats.of(results["Popen.wait(timeout=30)"]).median
    table = Table(
        "Exit detection latency (us)",
        ["method", "median", "p99", "max", "vs blocking wait", "Popen.wait(timeout=) / this"],
    )
    for name, lags in results.items():
        s = Stats.of(lags)
        table.add(
            name,
            us(s.median),
            us(s.p99),
            us(s.max),
            ratio(s.median, base),
            ratio(polling, s.median),
        )
    table.notes.append(
        f"{samples} samples per method; children exit 20-80 ms after start; the child "
        "records time.monotonic() just before os._exit, the parent just after its wait returns."
    )
    return table


def cancellation(samples: int, seed: int) -> Table:
    """From CancelToken.cancel() (or Event.set()) to the soft interrupt being sent."""
    rng = random.Random(seed)
    kinds: dict[str, tuple[str, str]] = {}
    for backend in statewait.available_backends():
        kinds[f"statewait {backend}, CancelToken"] = (backend, "token")
    kinds["statewait auto, threading.Event (polled, 50 ms)"] = ("auto", "event")
    results: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(samples):
        for name, (backend, kind) in kinds.items():
            results[name].append(_one_cancellation(backend, kind, rng.uniform(0.01, 0.05)))
    table = Table("Cancellation latency (us)", ["method", "median", "p99", "max"])
    for name, lags in results.items():
        s = Stats.of(lags)
        table.add(name, us(s.median), us(s.p99), us(s.max))
    table.notes.append(
        f"{samples} samples per method; cancelled 10-50 ms into the wait from another thread; "
        "measured up to the first instant of the soft-interrupt callback."
    )
    return table


def _one_cancellation(backend: str, kind: str, after: float) -> float:
    flag: Any = CancelToken() if kind == "token" else threading.Event()
    fire = flag.cancel if kind == "token" else flag.set
    marks: dict[str, float] = {}

    def cancel() -> None:
        marks["cancel"] = time.monotonic()
        fire()

    def soft(child: subprocess.Popen[Any]) -> None:
        marks["soft"] = time.monotonic()
        statewait.interrupt_group(child)

    child = statewait.spawn(["sleep", "30"])
    timer = threading.Timer(after, cancel)
    timer.start()
    statewait.wait_for_child(
        child, WaitOptions(cancellation=flag), soft_interrupt=soft, backend=backend
    )
    timer.join()
    if isinstance(flag, CancelToken):
        flag.close()
    return marks["soft"] - marks["cancel"]


def timeout_accuracy(samples: int, seed: int) -> Table:
    """How late the soft interrupt comes after the deadline, and the hard kill after the grace."""
    rng = random.Random(seed)
    backends = statewait.available_backends()
    interrupt: dict[str, list[float]] = {b: [] for b in backends}
    kill: dict[str, list[float]] = {b: [] for b in backends}
    popen_late: list[float] = []
    for _ in range(samples):
        for backend in backends:
            timeout, grace = rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.04)
            child = statewait.spawn(IGNORES_SIGINT)
            outcome = statewait.wait_for_child(
                child, WaitOptions(timeout=timeout, interrupt_grace=grace), backend=backend
            )
            assert outcome.interrupted_at is not None
            assert outcome.killed_at is not None
            interrupt[backend].append(outcome.interrupted_at - timeout)
            kill[backend].append(outcome.killed_at - outcome.interrupted_at - grace)
        timeout = rng.uniform(0.02, 0.06)
        child = statewait.spawn(IGNORES_SIGINT)
        started = time.monotonic()
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen_late.append(time.monotonic() - started - timeout)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    table = Table(
        "Timeout accuracy (us late)",
        ["method", "interrupt median", "interrupt p99", "kill median", "kill p99"],
    )
    for backend in backends:
        i, k = Stats.of(interrupt[backend]), Stats.of(kill[backend])
        table.add(f"statewait {backend}", us(i.median), us(i.p99), us(k.median), us(k.p99))
    p = Stats.of(popen_late)
    table.add("Popen.wait(timeout=) raising TimeoutExpired", us(p.median), us(p.p99), "-", "-")
    table.notes.append(
        f"{samples} samples per method; timeout 20-60 ms, grace 20-40 ms; "
        "the interrupt is late by (interrupted_at - timeout), the kill by "
        "(killed_at - interrupted_at - grace). Deadlines are strict: never early."
    )
    return table
