"""wait_for_child with real children, on every backend that works here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from statewait import (
    BackendUnavailable,
    CancelToken,
    ChildLostError,
    TerminationReason,
    WaitEvent,
    WaitOptions,
    available_backends,
    spawn,
    wait_for_child,
)

from .conftest import (
    DIES_ON_SIGINT,
    HAS_A_GRANDCHILD,
    IGNORES_SIGINT,
    TRAPS_SIGINT_EXITS_42_AFTER_100MS,
    Subreaper,
    child_script,
    close_pipes,
    open_fds,
    settle_threads,
    start_ready,
    zombie_children,
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]


def kinds(events: list[WaitEvent]) -> list[str]:
    return [e.kind for e in events if e.kind not in ("start", "wakeup")]


@pytest.mark.parametrize(
    ("body", "returncode"),
    [
        ("pass", 0),
        ("import sys; sys.exit(3)", 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
    ],
)
def test_wait_for_child_child_that_exits_by_itself_gets_no_signal(
    backend: str, body: str, returncode: int
) -> None:
    child = spawn(child_script(body))
    events: list[WaitEvent] = []
    outcome = wait_for_child(
        child, WaitOptions(timeout=30), backend=backend, observer=events.append
    )
    assert outcome.returncode == returncode
    assert child.returncode == returncode
    assert (outcome.termination, outcome.interrupted_at, outcome.killed_at) == (None, None, None)
    assert outcome.abandoned is False
    assert kinds(events) == ["exit"]


def test_wait_for_child_child_that_traps_SIGINT_ends_with_its_own_status(backend: str) -> None:
    child = start_ready(TRAPS_SIGINT_EXITS_42_AFTER_100MS)
    outcome = wait_for_child(child, WaitOptions(timeout=0.2, interrupt_grace=20), backend=backend)
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (42, TerminationReason.TIMEOUT)
    assert outcome.killed_at is None
    assert outcome.interrupted_at is not None
    assert outcome.interrupted_at > 0.2
    assert outcome.elapsed - outcome.interrupted_at >= 0.1


def test_wait_for_child_child_that_ignores_SIGINT_is_killed_after_the_grace(backend: str) -> None:
    child = start_ready(IGNORES_SIGINT)
    events: list[WaitEvent] = []
    outcome = wait_for_child(
        child,
        WaitOptions(timeout=0.1, interrupt_grace=0.3),
        backend=backend,
        observer=events.append,
    )
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (-signal.SIGKILL, TerminationReason.TIMEOUT)
    assert outcome.interrupted_at is not None
    assert outcome.killed_at is not None
    assert outcome.killed_at - outcome.interrupted_at > 0.3
    assert kinds(events) == ["soft_interrupt", "hard_kill", "exit"]


def test_wait_for_child_interrupts_the_whole_group_grandchild_included(
    backend: str, subreaper: Subreaper
) -> None:
    child = start_ready(HAS_A_GRANDCHILD)
    grandchild = int(child.first_line)  # type: ignore[attr-defined]
    assert os.getpgid(grandchild) == child.pid
    outcome = wait_for_child(child, WaitOptions(timeout=0.1, interrupt_grace=10), backend=backend)
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (-signal.SIGINT, TerminationReason.TIMEOUT)
    # The orphaned grandchild was adopted by this process: it died of the same SIGINT.
    status = subreaper.wait_for(grandchild)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGINT


def test_wait_for_child_hard_kill_reaches_the_grandchild_too(
    backend: str, subreaper: Subreaper
) -> None:
    child = start_ready(
        child_script(
            "import os, signal, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"  # inherited by the grandchild
            "print(os.posix_spawnp('sleep', ['sleep', '60'], os.environ), flush=True)\n"
            "time.sleep(60)\n"
        )
    )
    grandchild = int(child.first_line)  # type: ignore[attr-defined]
    outcome = wait_for_child(child, WaitOptions(timeout=0.1, interrupt_grace=0.2), backend=backend)
    close_pipes(child)
    assert outcome.returncode == -signal.SIGKILL
    status = subreaper.wait_for(grandchild)
    assert os.WTERMSIG(status) == signal.SIGKILL


def _cancel_later(cancel: Any, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, cancel)
    timer.start()
    return timer


@pytest.mark.parametrize("kind", ["token", "event", "callable"])
def test_wait_for_child_cancellation_interrupts_with_CANCELLED(backend: str, kind: str) -> None:
    child = start_ready(DIES_ON_SIGINT)
    cancellation: Any
    if kind == "token":
        cancellation = CancelToken()
        timer = _cancel_later(cancellation.cancel, 0.2)
    elif kind == "event":
        cancellation = threading.Event()
        timer = _cancel_later(cancellation.set, 0.2)
    else:
        flag = threading.Event()
        cancellation = flag.is_set
        timer = _cancel_later(flag.set, 0.2)
    started = time.monotonic()
    outcome = wait_for_child(
        child, WaitOptions(timeout=30, cancellation=cancellation), backend=backend
    )
    timer.join()
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (
        -signal.SIGINT,
        TerminationReason.CANCELLED,
    )
    assert outcome.interrupted_at is not None
    assert 0.15 < outcome.interrupted_at < 10  # generous: never flaky
    assert time.monotonic() - started < 20


def test_wait_for_child_already_cancelled_token_interrupts_at_once(backend: str) -> None:
    token = CancelToken()
    token.cancel()
    child = start_ready(DIES_ON_SIGINT)
    events: list[WaitEvent] = []
    outcome = wait_for_child(
        child, WaitOptions(cancellation=token), backend=backend, observer=events.append
    )
    close_pipes(child)
    assert outcome.termination is TerminationReason.CANCELLED
    # At the first look, before any sleep.
    assert [e.kind for e in events][:2] == ["start", "soft_interrupt"]


@pytest.mark.parametrize("reaped_by_popen", [False, True])
def test_wait_for_child_child_that_exited_before_the_call_returns_at_once(
    backend: str, reaped_by_popen: bool
) -> None:
    child = spawn(child_script("import sys; sys.exit(7)"))
    if reaped_by_popen:
        child.wait()
    else:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
    events: list[WaitEvent] = []
    outcome = wait_for_child(child, WaitOptions(timeout=0), backend=backend, observer=events.append)
    assert (outcome.returncode, outcome.termination) == (7, None)
    assert outcome.elapsed < 5
    assert [e.kind for e in events] == ["start", "exit"]  # no wakeup, no signal


def test_wait_for_child_child_reaped_behind_popens_back_is_a_clear_error(backend: str) -> None:
    child = spawn(child_script("pass"))
    os.waitpid(child.pid, 0)
    with pytest.raises(ChildLostError, match=rf"pid {child.pid} is not a child of this process"):
        wait_for_child(child, WaitOptions(timeout=1), backend=backend)
    assert child.returncode is None  # Popen was never told a made-up status
    child.wait()  # Popen's own answer to ECHILD (0), so it does not warn when dropped


def test_wait_for_child_soft_interrupt_that_raises_is_escalated_and_reaped(backend: str) -> None:
    child = start_ready(DIES_ON_SIGINT)
    sent: list[int] = []

    def broken(c: subprocess.Popen[Any]) -> None:
        sent.append(c.pid)
        raise RuntimeError("soft interrupt failed")

    with pytest.raises(RuntimeError, match="soft interrupt failed"):
        wait_for_child(
            child,
            WaitOptions(timeout=0.1, interrupt_grace=30),
            soft_interrupt=broken,
            backend=backend,
        )
    close_pipes(child)
    assert sent == [child.pid]
    # The failure arrived during the grace: the hard kill went at once.
    assert child.returncode == -signal.SIGKILL


def test_wait_for_child_hard_kill_that_raises_falls_back_to_kill_group(backend: str) -> None:
    child = start_ready(IGNORES_SIGINT)

    def broken(c: subprocess.Popen[Any]) -> None:
        raise OSError("custom kill failed")

    with pytest.raises(OSError, match="custom kill failed"):
        wait_for_child(
            child, WaitOptions(timeout=0, interrupt_grace=0), hard_kill=broken, backend=backend
        )
    close_pipes(child)
    assert child.returncode == -signal.SIGKILL


def test_wait_for_child_custom_callbacks_receive_the_child(backend: str) -> None:
    child = start_ready(IGNORES_SIGINT)
    calls: list[tuple[str, int]] = []

    def soft(c: subprocess.Popen[Any]) -> None:
        calls.append(("soft", c.pid))
        os.killpg(c.pid, signal.SIGTERM)

    outcome = wait_for_child(
        child,
        WaitOptions(timeout=0.05),
        soft_interrupt=soft,
        hard_kill=lambda c: calls.append(("hard", c.pid)),
        backend=backend,
    )
    close_pipes(child)
    assert calls == [("soft", child.pid)]
    assert outcome.returncode == -signal.SIGTERM


def test_wait_for_child_child_in_the_callers_group_is_signalled_alone(backend: str) -> None:
    # Not spawn(): the child shares this process's group. A group signal would
    # interrupt pytest itself; the child alone must get it.
    child = subprocess.Popen(DIES_ON_SIGINT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert os.getpgid(child.pid) == os.getpgrp()
    outcome = wait_for_child(child, WaitOptions(timeout=0.05), backend=backend)
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (-signal.SIGINT, TerminationReason.TIMEOUT)


def test_wait_for_child_abandons_a_child_that_outlives_the_kill(backend: str) -> None:
    child = start_ready(IGNORES_SIGINT)
    outcome = wait_for_child(
        child,
        WaitOptions(timeout=0, interrupt_grace=0, abandon_after=0.2),
        hard_kill=lambda c: None,  # a kill that never lands: the child outlives it
        backend=backend,
    )
    assert outcome.abandoned is True
    assert outcome.returncode is None
    assert child.returncode is None
    assert outcome.killed_at is not None
    assert outcome.elapsed - outcome.killed_at > 0.2
    # The caller still owns the child; a second wait, with a kill that lands, reaps it.
    again = wait_for_child(child, WaitOptions(timeout=0, interrupt_grace=0), backend=backend)
    close_pipes(child)
    assert again.returncode == -signal.SIGKILL


needs_pidfd = pytest.mark.skipif(
    "pidfd" not in available_backends(), reason="needs pidfd (Linux >= 5.3)"
)


@needs_pidfd
def test_wait_for_child_pidfd_with_token_and_timeout_wakes_only_on_the_exit() -> None:
    child = spawn(child_script("import time; time.sleep(2)"))
    events: list[WaitEvent] = []
    outcome = wait_for_child(
        child,
        WaitOptions(timeout=10, cancellation=CancelToken(), poll_interval=0.01),
        backend="pidfd",
        observer=events.append,
    )
    assert outcome.returncode == 0
    wakeups = [e for e in events if e.kind == "wakeup"]
    assert len(wakeups) == 1  # the exit; no poll_interval ticks
    slice_ns = wakeups[0].detail
    assert isinstance(slice_ns, int)
    assert slice_ns > 9 * 10**9  # the one sleep was aimed at the timeout deadline


@needs_pidfd
def test_wait_for_child_pidfd_with_token_acts_on_a_cancellation_at_once() -> None:
    token = CancelToken()
    child = start_ready(DIES_ON_SIGINT)
    cancelled_at: list[float] = []

    def cancel() -> None:
        cancelled_at.append(time.monotonic())
        token.cancel()

    timer = _cancel_later(cancel, 0.3)
    started = time.monotonic()
    events: list[WaitEvent] = []
    outcome = wait_for_child(
        child, WaitOptions(cancellation=token), backend="pidfd", observer=events.append
    )
    timer.join()
    close_pipes(child)
    assert outcome.termination is TerminationReason.CANCELLED
    assert outcome.interrupted_at is not None
    lag = started + outcome.interrupted_at - cancelled_at[0]
    assert -0.01 < lag < 0.5  # measured precisely in bench/; here only a safety bound
    # Woken by the token itself: one wakeup before the interrupt, not a poll tick.
    assert [e.kind for e in events][:3] == ["start", "wakeup", "soft_interrupt"]
    assert events[1].detail is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "nope"}, ValueError, r"backend must be 'auto' or one of"),
        ({"backend": 3}, TypeError, r"backend must be a str, got 3"),
        ({"options": 5}, TypeError, r"options must be a WaitOptions, got int"),
        ({"soft_interrupt": "x"}, TypeError, r"soft_interrupt must be callable"),
        ({"hard_kill": 1}, TypeError, r"hard_kill must be callable"),
        ({"observer": []}, TypeError, r"observer must be callable"),
    ],
)
def test_wait_for_child_bad_arguments_raise_before_any_signal(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    child = spawn(child_script("import time; time.sleep(0.2)"))
    with pytest.raises(error, match=match):
        wait_for_child(child, **kwargs)
    assert wait_for_child(child).returncode == 0  # untouched by the failed call


def test_wait_for_child_refuses_something_that_is_not_a_Popen() -> None:
    with pytest.raises(TypeError, match=r"child must be a subprocess\.Popen, got int"):
        wait_for_child(os.getpid())  # type: ignore[arg-type]


def test_wait_for_child_unavailable_backend_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import statewait._backends as backends

    monkeypatch.setattr(backends, "available_backends", lambda: ("waitid", "poll"))
    child = spawn(child_script("pass"))
    with pytest.raises(BackendUnavailable, match="backend 'pidfd' does not work on this system"):
        wait_for_child(child, backend="pidfd")
    assert wait_for_child(child).returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wait_for_child_2000_sequential_waits_leak_no_fds_threads_or_zombies() -> None:
    fds, threads = open_fds(), threading.active_count()
    backends = available_backends()
    token = CancelToken()
    for i in range(2000):
        backend = backends[i % len(backends)]
        child = spawn(["true"])
        options = WaitOptions(
            timeout=30, cancellation=token if i % 2 else None, poll_interval=0.002
        )
        assert wait_for_child(child, options, backend=backend).returncode == 0
    token.close()
    assert open_fds() == fds
    assert settle_threads(threads) == threads
    assert zombie_children() == []


def test_spawn_makes_the_child_lead_a_new_group_and_respects_explicit_choices() -> None:
    child = spawn(child_script("import time; time.sleep(5)"))
    try:
        assert os.getpgid(child.pid) == child.pid
        assert os.getsid(child.pid) == os.getsid(0)  # same session: keeps the terminal
    finally:
        child.kill()
        child.wait()
    session = spawn(child_script("import time; time.sleep(5)"), start_new_session=True)
    try:
        assert os.getsid(session.pid) == session.pid
    finally:
        session.kill()
        session.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_spawn_keeps_a_pidfd_until_the_child_is_reaped() -> None:
    before = open_fds()
    child = spawn(child_script("pass"))
    assert open_fds() == before + 1
    wait_for_child(child)
    assert open_fds() == before


@needs_pidfd
def test_wait_for_child_pidfd_backend_uses_poll_for_descriptors_past_FD_SETSIZE(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import select

    import statewait._backends.pidfd as pidfd_backend

    monkeypatch.setattr(pidfd_backend, "_FD_SETSIZE", 0)  # as if every fd were >= 1024

    def no_select(*args: object) -> None:
        raise AssertionError("select(2) cannot take descriptors past FD_SETSIZE")

    monkeypatch.setattr(select, "select", no_select)
    token = CancelToken()
    child = start_ready(IGNORES_SIGINT)
    timer = _cancel_later(token.cancel, 0.1)
    outcome = wait_for_child(
        child, WaitOptions(timeout=30, cancellation=token, interrupt_grace=0.1), backend="pidfd"
    )
    timer.join()
    close_pipes(child)
    assert (outcome.termination, outcome.returncode) == (
        TerminationReason.CANCELLED,
        -signal.SIGKILL,
    )
    assert outcome.killed_at is not None
    assert outcome.interrupted_at is not None
    assert outcome.killed_at - outcome.interrupted_at > 0.1
