"""wait_for_child with real children: what only it does (its backends, its
arguments), and spawn(). The semantics of a wait, common to every front end,
are in test_front_ends.py."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import pytest

from statewait import (
    BackendUnavailable,
    CancelToken,
    TerminationReason,
    WaitEvent,
    WaitOptions,
    available_backends,
    spawn,
    wait_for_child,
)

from .conftest import (
    DIES_ON_SIGINT,
    IGNORES_SIGINT,
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


def _cancel_later(cancel: Any, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, cancel)
    timer.start()
    return timer


needs_pidfd = pytest.mark.skipif(
    "pidfd" not in available_backends(), reason="needs pidfd (Linux >= 5.4)"
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
        if sys.version_info >= (3, 11):  # process_group=0: same session, keeps the terminal
            assert os.getsid(child.pid) == os.getsid(0)
        else:  # 3.10 has no process_group: start_new_session makes the group
            assert os.getsid(child.pid) == child.pid
    finally:
        child.kill()
        child.wait()
    session = spawn(child_script("import time; time.sleep(5)"), start_new_session=True)
    try:
        assert os.getsid(session.pid) == session.pid
    finally:
        session.kill()
        session.wait()


def test_spawn_with_a_preexec_fn_still_leads_a_group_and_allows_setsid() -> None:
    # preexec_fn=os.setsid is the usual subprocess idiom for "a group of its
    # own". It runs after Popen's process_group=0, and a group leader may not
    # call setsid(): Popen failed with "Exception occurred in preexec_fn".
    script = child_script("import time; time.sleep(5)")
    session = spawn(script, preexec_fn=os.setsid)
    plain = spawn(script, preexec_fn=lambda: None)
    try:
        assert os.getsid(session.pid) == os.getpgid(session.pid) == session.pid
        assert os.getpgid(plain.pid) == plain.pid
    finally:
        for child in (session, plain):
            child.kill()
            child.wait()


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


@pytest.mark.parametrize("backend", available_backends())
def test_wait_for_child_while_another_thread_reaps_through_the_Popen(backend: str) -> None:
    # child.wait() in another thread reaps through the Popen, legitimately:
    # the exit status is known (returncode), nothing was reaped behind
    # Popen's back, so the wait reports it instead of raising ChildLostError.
    # Both wake at the child's exit, so each round races the two reapers.
    fds = open_fds()
    for _ in range(20):
        child = spawn(child_script("import time; time.sleep(0.02); raise SystemExit(3)"))
        reaper = threading.Thread(target=child.wait)
        reaper.start()
        outcome = wait_for_child(child, WaitOptions(timeout=30), backend=backend)
        reaper.join()
        assert outcome.returncode == 3
        assert outcome.termination is None
    assert open_fds() == fds
    assert zombie_children() == []
