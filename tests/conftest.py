"""Shared fixtures: real children and what happened to every process; the
hypothesis profiles for the whole suite.

`python -m pytest` runs the "ci" profile: derandomized (the same examples on
every run, so a property test is never flaky) and a moderate number of
examples, so the suite stays quick. HYPOTHESIS_PROFILE=thorough runs many
more, randomized, and keeps failures in the local example database.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from statewait import available_backends, spawn

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=10_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PY = sys.executable
_PR_SET_CHILD_SUBREAPER = 36


def child_script(body: str) -> list[str]:
    """argv for a Python child running `body`."""
    return [PY, "-c", body]


#: For children started under signals_held(): unblocks the held signals once
#: the child's handlers are in place, so one that arrived early is delivered now.
#: A no-op for a child started without it.
UNBLOCK = "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGUSR1})\n"

#: Children that report "ready" on stdout once their signal handling is set up
#: (and then take a SIGINT that signals_held() kept for them).
TRAPS_SIGINT_EXITS_42_AFTER_100MS = child_script(
    "import signal, sys, time\n"
    "def handler(*_):\n"
    "    time.sleep(0.1)\n"
    "    sys.exit(42)\n"
    "signal.signal(signal.SIGINT, handler)\n"
    "print('ready', flush=True)\n" + UNBLOCK + "time.sleep(60)\n"
)
IGNORES_SIGINT = child_script(
    "import signal, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n" + UNBLOCK + "time.sleep(60)\n"
)
DIES_ON_SIGINT = child_script(
    "import signal, time\nprint('ready', flush=True)\n" + UNBLOCK + "time.sleep(60)\n"
)
#: Starts a grandchild (`sleep 60`) in its group, prints its pid, waits. Not
#: through subprocess: Popen.__del__ would reap the grandchild as the child
#: exits, and the test could no longer see how it ended.
HAS_A_GRANDCHILD = child_script(
    "import os, time\n"
    "print(os.posix_spawnp('sleep', ['sleep', '60'], os.environ), flush=True)\n"
    "time.sleep(60)\n"
)


def start_ready(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """spawn() a child and wait for its first line (it is ready for signals)."""
    child = spawn(argv, stdout=subprocess.PIPE, text=True, **kwargs)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, "the child died before it was ready"
    child.first_line = line.strip()  # type: ignore[attr-defined]
    return child


def close_pipes(child: subprocess.Popen[Any]) -> None:
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(params=available_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """Each exit-detection backend that works here."""
    name: str = request.param
    return name


class Subreaper:
    """This process adopts orphaned descendants, so tests can see how they ended."""

    def wait_for(self, pid: int, timeout: float = 10.0) -> int:
        """Reap an adopted orphan; return its raw wait status."""
        deadline = time.monotonic() + timeout
        while True:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"pid {pid} is still alive after {timeout}s")
            time.sleep(0.01)


@pytest.fixture
def subreaper() -> Iterator[Subreaper]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    try:
        yield Subreaper()
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def zombie_children() -> list[int]:
    """Pids of this process's children that are zombies."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            found.append(int(entry))
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle_threads(expected: int, timeout: float = 10.0) -> int:
    """The thread count once helper threads that are finishing have finished."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


@contextlib.contextmanager
def signals_held(*signums: int) -> Iterator[None]:
    """Block signals in this thread while it starts children; they inherit the mask.

    run() and the command line start the timeout with the child, not once it
    is ready, so a slow child may be signalled before its handlers exist. A
    child started in this block keeps such a signal pending until it runs
    UNBLOCK, and then handles it as it would have once ready.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(signums))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def rss_kib() -> int:
    """This process's resident memory, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")
