"""Faults and soak: statewait never loses a child, never hangs, never leaks."""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import statewait
from statewait import (
    CancelToken,
    TerminationReason,
    WaitEvent,
    WaitOptions,
    available_backends,
    signal_group,
    spawn,
    wait_for_child,
)
from statewait._child import pidfds_usable

from .conftest import (
    DIES_ON_SIGINT,
    IGNORES_SIGINT,
    Subreaper,
    child_script,
    close_pipes,
    open_fds,
    rss_kib,
    settle_threads,
    start_ready,
    zombie_children,
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(120)]

IGNORES_SIGINT_AND_SIGTERM = child_script(
    "import signal, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_child_ignoring_SIGINT_and_SIGTERM_is_killed_once_after_the_grace(backend: str) -> None:
    child = start_ready(IGNORES_SIGINT_AND_SIGTERM)
    events: list[WaitEvent] = []
    outcome = wait_for_child(
        child,
        WaitOptions(timeout=0.05, interrupt_grace=0.2),
        soft_interrupt=functools.partial(signal_group, sig=signal.SIGTERM),
        backend=backend,
        observer=events.append,
    )
    close_pipes(child)
    assert outcome.returncode == -signal.SIGKILL
    assert [e.kind for e in events if e.kind in ("soft_interrupt", "hard_kill")] == [
        "soft_interrupt",
        "hard_kill",
    ]


def test_real_SIGINT_to_the_caller_mid_wait_escalates_reaps_and_reraises(backend: str) -> None:
    # The child leads its own group, so only this process gets the SIGINT,
    # as from a terminal's Ctrl-C aimed at the runner.
    child = start_ready(IGNORES_SIGINT)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
    events: list[WaitEvent] = []
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        wait_for_child(
            child,
            WaitOptions(interrupt_grace=0.3),
            backend=backend,
            observer=events.append,
        )
    timer.join()
    close_pipes(child)
    assert child.returncode == -signal.SIGKILL  # reaped before the exception went on
    assert [e.kind for e in events if e.kind not in ("start", "wakeup")] == [
        "exception",
        "soft_interrupt",
        "hard_kill",
        "exit",
    ]
    assert time.monotonic() - started < 30


def test_second_real_SIGINT_during_the_grace_kills_at_once(backend: str) -> None:
    child = start_ready(IGNORES_SIGINT)
    main = threading.main_thread().ident
    assert main is not None
    timers = [threading.Timer(t, signal.pthread_kill, (main, signal.SIGINT)) for t in (0.2, 0.5)]
    events: list[WaitEvent] = []
    for timer in timers:
        timer.start()
    with pytest.raises(KeyboardInterrupt):
        wait_for_child(
            child, WaitOptions(interrupt_grace=60), backend=backend, observer=events.append
        )
    for timer in timers:
        timer.join()
    close_pipes(child)
    assert child.returncode == -signal.SIGKILL
    soft = next(e for e in events if e.kind == "soft_interrupt")
    kill = next(e for e in events if e.kind == "hard_kill")
    assert (kill.at - soft.at) / 1e9 < 30  # not the 60 s grace


def test_EINTR_storm_does_not_disturb_the_wait(backend: str) -> None:
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    main = threading.main_thread().ident
    assert main is not None
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            signal.pthread_kill(main, signal.SIGUSR1)
            time.sleep(0.001)

    storm_thread = threading.Thread(target=storm)
    child = start_ready(IGNORES_SIGINT)
    events: list[WaitEvent] = []
    storm_thread.start()
    try:
        outcome = wait_for_child(
            child,
            WaitOptions(timeout=0.3, interrupt_grace=0.2, cancellation=CancelToken()),
            backend=backend,
            observer=events.append,
        )
    finally:
        stop.set()
        storm_thread.join()
        signal.signal(signal.SIGUSR1, previous)
    close_pipes(child)
    assert len(received) > 50  # it really stormed
    assert (outcome.returncode, outcome.termination) == (-signal.SIGKILL, TerminationReason.TIMEOUT)
    assert outcome.interrupted_at is not None
    assert outcome.killed_at is not None
    assert outcome.interrupted_at > 0.3
    assert outcome.killed_at - outcome.interrupted_at > 0.2
    # Interrupted system calls are resumed, not turned into wakeups.
    if backend != "poll":
        assert sum(e.kind == "wakeup" for e in events) <= 6


def test_waitid_helper_thread_that_fails_degrades_to_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_waitid = os.waitid

    def broken_blocking_waitid(idtype: int, ident: int, options: int) -> object:
        if not options & os.WNOHANG and threading.current_thread().name.startswith(
            "statewait-waitid"
        ):
            raise OSError("injected: the helper's waitid failed")
        return real_waitid(idtype, ident, options)

    monkeypatch.setattr(os, "waitid", broken_blocking_waitid)
    child = spawn(child_script("import time; time.sleep(0.3)"))
    events: list[WaitEvent] = []
    outcome = wait_for_child(
        child,
        WaitOptions(timeout=30, poll_interval=0.02),
        backend="waitid",
        observer=events.append,
    )
    assert (outcome.returncode, outcome.termination) == (0, None)
    slices = [e.detail for e in events if e.kind == "wakeup"]
    assert len(slices) >= 3
    assert all(s == 20_000_000 for s in slices[1:])  # polled every poll_interval


@pytest.fixture
def few_fds() -> Iterator[None]:
    """Lower RLIMIT_NOFILE to just above what is open now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 8, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fill_fds() -> list[int]:
    """Open descriptors until the next one would fail."""
    held: list[int] = []
    with contextlib.suppress(OSError):
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    return held


@pytest.mark.skipif("pidfd" not in available_backends(), reason="needs pidfd")
def test_no_descriptor_left_for_a_pidfd_auto_falls_back_named_backend_says_so(
    few_fds: None,
) -> None:
    before, threads = open_fds(), threading.active_count()
    # Plain Popens: no pidfd kept, so each wait must open one, and cannot.
    exits = subprocess.Popen(child_script("import time; time.sleep(0.2)"))
    sleeps = subprocess.Popen(child_script("import time; time.sleep(30)"))
    token = CancelToken()
    held = _fill_fds()
    try:
        with pytest.raises(OSError, match="Too many open files"):
            wait_for_child(sleeps, backend="pidfd")  # the named backend: a clear error
        outcome = wait_for_child(exits, WaitOptions(timeout=30, cancellation=token))
        assert (outcome.returncode, outcome.termination) == (0, None)
        outcome = wait_for_child(sleeps, WaitOptions(timeout=0.1, cancellation=token))
        assert (outcome.returncode, outcome.termination) == (
            -signal.SIGINT,
            TerminationReason.TIMEOUT,
        )
    finally:
        for fd in held:
            os.close(fd)
    token.close()
    assert open_fds() == before
    assert settle_threads(threads) == threads
    assert zombie_children() == []


def test_spawn_without_a_descriptor_for_the_pidfd_still_starts_and_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def emfile(pid: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", emfile)
    before = open_fds()
    child = spawn(child_script("import time; time.sleep(30)"))
    assert open_fds() == before  # nothing kept
    outcome = wait_for_child(child, WaitOptions(timeout=0.1))  # waitid, then signals by pid
    assert (outcome.returncode, outcome.termination) == (-signal.SIGINT, TerminationReason.TIMEOUT)


@pytest.fixture
def linux_5_3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A kernel with pidfd_open but without waitid(P_PIDFD), as Linux 5.3 is."""
    real_waitid = os.waitid

    def waitid(idtype: int, ident: int, options: int) -> object:
        if idtype == os.P_PIDFD:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_waitid(idtype, ident, options)

    monkeypatch.setattr(os, "waitid", waitid)
    pidfds_usable.cache_clear()
    yield
    pidfds_usable.cache_clear()


@pytest.mark.usefixtures("linux_5_3")
def test_a_kernel_without_waitid_P_PIDFD_uses_no_pidfd_and_still_waits_and_signals() -> None:
    assert available_backends() == ("waitid", "poll")
    quick = spawn(["true"])
    with pytest.raises(statewait.BackendUnavailable):
        wait_for_child(quick, backend="pidfd")
    assert wait_for_child(quick).returncode == 0
    before = open_fds()
    child = spawn(child_script("import time; time.sleep(30)"))
    assert open_fds() == before  # no pidfd kept
    outcome = wait_for_child(child, WaitOptions(timeout=0.1))  # waitid, then signals by pid
    assert (outcome.returncode, outcome.termination) == (-signal.SIGINT, TerminationReason.TIMEOUT)
    with statewait.Supervisor() as supervisor:
        watched = supervisor.watch(spawn(["sh", "-c", "exit 4"]), WaitOptions(timeout=30))
        assert watched.result(timeout=30).returncode == 4
    assert open_fds() == before
    assert zombie_children() == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_10000_mixed_waits_leak_no_fds_threads_memory_or_zombies() -> None:
    backends = available_backends()
    token = CancelToken()
    token.cancel()

    def one(i: int) -> None:
        backend = backends[i % len(backends)]
        kind = i % 3
        if kind == 0:  # exits by itself
            child = spawn(["true"])
            options = WaitOptions(timeout=30, poll_interval=0.002)
            expected = (0, None)
        elif kind == 1:  # times out
            child = spawn(["sleep", "30"])
            options = WaitOptions(timeout=0.001, poll_interval=0.002)
            expected = (-signal.SIGINT, TerminationReason.TIMEOUT)
        else:  # cancelled before the call
            child = spawn(["sleep", "30"])
            options = WaitOptions(cancellation=token, poll_interval=0.002)
            expected = (-signal.SIGINT, TerminationReason.CANCELLED)
        outcome = wait_for_child(child, options, backend=backend)
        assert (outcome.returncode, outcome.termination) == expected

    for i in range(300):  # warm up: caches, lazily created objects
        one(i)
    gc.collect()  # what the warm-up left for the collector (3.13 keeps some longer)
    fds, threads, rss = open_fds(), threading.active_count(), rss_kib()
    for i in range(10_000):
        one(i)
    gc.collect()
    assert open_fds() == fds
    assert settle_threads(threads) == threads
    assert zombie_children() == []
    assert rss_kib() - rss < 8 * 1024  # KiB: noise, not growth per wait


def test_dies_on_sigint_child_script_is_what_the_tests_assume() -> None:
    # The fault tests rely on this child dying of SIGINT with the default handler.
    child = start_ready(DIES_ON_SIGINT)
    os.kill(child.pid, signal.SIGINT)
    assert child.wait(timeout=10) == -signal.SIGINT
    close_pipes(child)


def test_grandchild_that_leaves_the_group_and_holds_the_pipe_costs_only_the_drain(
    subreaper: Subreaper,
) -> None:
    # The grandchild calls setsid(): no group signal reaches it, by design; run()
    # must still return, about io_drain_timeout after the child's exit.
    script = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "print('hi', flush=True)\n"
    )
    started = time.monotonic()
    result = statewait.run(
        [sys.executable, "-c", script], capture_output=True, text=True, io_drain_timeout=0.5
    )
    took = time.monotonic() - started
    grandchild_line, last = result.stdout.split()
    grandchild = int(grandchild_line)
    try:
        assert (result.returncode, last) == (0, "hi")
        assert took < 10  # not the grandchild's 60 s
        assert os.getsid(grandchild) == grandchild  # it really left the group
    finally:
        os.kill(grandchild, signal.SIGKILL)
        subreaper.wait_for(grandchild)
