"""One wait's semantics with real children, through every front end.

wait_for_child, the Supervisor and statewait.aio drive the same machine; these
scenarios hold for each of them, on each exit-detection backend that works
here (aio detects exits its own way, so it runs once). What only one front
end does is tested in its own module (test_wait_for_child, test_supervisor,
test_aio).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

from statewait import (
    CancelToken,
    ChildLostError,
    Supervisor,
    TerminationReason,
    WaitEvent,
    WaitOptions,
    WaitOutcome,
    aio,
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
    start_ready,
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]

#: Generous: a wait that takes this long is a bug, not a slow machine.
RESULT_TIMEOUT = 30

#: Waits for one child through a front end: (child, options, **keywords) -> outcome.
Waiter = Callable[..., WaitOutcome]

DEFAULT = WaitOptions()


def _front_ends() -> list[Any]:
    params = []
    for backend in available_backends():
        params.append(pytest.param(("wait_for_child", backend), id=f"wait_for_child-{backend}"))
        params.append(pytest.param(("supervisor", backend), id=f"supervisor-{backend}"))
    params.append(pytest.param(("aio", "auto"), id="aio"))
    return params


@pytest.fixture(params=_front_ends())
def wait(request: pytest.FixtureRequest) -> Waiter:
    """Wait for one child, blocking, through one front end and backend."""
    front_end, backend = request.param

    def via_wait_for_child(
        child: subprocess.Popen[Any], options: WaitOptions = DEFAULT, **kw: Any
    ) -> WaitOutcome:
        return wait_for_child(child, options, backend=backend, **kw)

    def via_supervisor(
        child: subprocess.Popen[Any], options: WaitOptions = DEFAULT, **kw: Any
    ) -> WaitOutcome:
        with Supervisor(backend=backend) as sup:
            return sup.watch(child, options, **kw).result(RESULT_TIMEOUT)

    def via_aio(
        child: subprocess.Popen[Any], options: WaitOptions = DEFAULT, **kw: Any
    ) -> WaitOutcome:
        return asyncio.run(aio.wait_for_child(child, options, **kw))

    waiters: dict[str, Waiter] = {
        "wait_for_child": via_wait_for_child,
        "supervisor": via_supervisor,
        "aio": via_aio,
    }
    return waiters[front_end]


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
def test_child_that_exits_by_itself_gets_no_signal(
    wait: Waiter, body: str, returncode: int
) -> None:
    child = spawn(child_script(body))
    events: list[WaitEvent] = []
    outcome = wait(child, WaitOptions(timeout=30), observer=events.append)
    assert outcome.returncode == returncode
    assert child.returncode == returncode
    assert (outcome.termination, outcome.interrupted_at, outcome.killed_at) == (None, None, None)
    assert outcome.abandoned is False
    assert kinds(events) == ["exit"]


def test_child_that_traps_SIGINT_ends_with_its_own_status(wait: Waiter) -> None:
    child = start_ready(TRAPS_SIGINT_EXITS_42_AFTER_100MS)
    outcome = wait(child, WaitOptions(timeout=0.2, interrupt_grace=20))
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (42, TerminationReason.TIMEOUT)
    assert outcome.killed_at is None
    assert outcome.interrupted_at is not None
    assert outcome.interrupted_at > 0.2
    assert outcome.elapsed - outcome.interrupted_at >= 0.1


def test_child_that_ignores_SIGINT_is_killed_once_after_the_grace(wait: Waiter) -> None:
    child = start_ready(IGNORES_SIGINT)
    events: list[WaitEvent] = []
    outcome = wait(child, WaitOptions(timeout=0.1, interrupt_grace=0.3), observer=events.append)
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (-signal.SIGKILL, TerminationReason.TIMEOUT)
    assert outcome.interrupted_at is not None
    assert outcome.killed_at is not None
    assert outcome.interrupted_at > 0.1
    assert outcome.killed_at - outcome.interrupted_at > 0.3
    assert kinds(events) == ["soft_interrupt", "hard_kill", "exit"]


def test_interrupts_the_whole_group_grandchild_included(wait: Waiter, subreaper: Subreaper) -> None:
    child = start_ready(HAS_A_GRANDCHILD)
    grandchild = int(child.first_line)  # type: ignore[attr-defined]
    assert os.getpgid(grandchild) == child.pid
    outcome = wait(child, WaitOptions(timeout=0.1, interrupt_grace=10))
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (-signal.SIGINT, TerminationReason.TIMEOUT)
    # The orphaned grandchild was adopted by this process: it died of the same SIGINT.
    status = subreaper.wait_for(grandchild)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGINT


def test_hard_kill_reaches_the_grandchild_too(wait: Waiter, subreaper: Subreaper) -> None:
    child = start_ready(
        child_script(
            "import os, signal, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"  # inherited by the grandchild
            "print(os.posix_spawnp('sleep', ['sleep', '60'], os.environ), flush=True)\n"
            "time.sleep(60)\n"
        )
    )
    grandchild = int(child.first_line)  # type: ignore[attr-defined]
    outcome = wait(child, WaitOptions(timeout=0.1, interrupt_grace=0.2))
    close_pipes(child)
    assert outcome.returncode == -signal.SIGKILL
    status = subreaper.wait_for(grandchild)
    assert os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("kind", ["token", "event", "callable"])
def test_cancellation_interrupts_with_CANCELLED(wait: Waiter, kind: str) -> None:
    child = start_ready(DIES_ON_SIGINT)
    cancellation: Any
    if kind == "token":
        cancellation = CancelToken()
        fire = cancellation.cancel
    elif kind == "event":
        cancellation = threading.Event()
        fire = cancellation.set
    else:
        flag = threading.Event()
        cancellation, fire = flag.is_set, flag.set
    timer = threading.Timer(0.2, fire)  # from another thread, as in real use
    timer.start()
    outcome = wait(child, WaitOptions(timeout=30, cancellation=cancellation, poll_interval=0.02))
    timer.join()
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (
        -signal.SIGINT,
        TerminationReason.CANCELLED,
    )
    assert outcome.interrupted_at is not None
    assert 0.15 < outcome.interrupted_at < 10  # generous: never flaky


def test_already_cancelled_token_interrupts_at_the_first_look(wait: Waiter) -> None:
    token = CancelToken()
    token.cancel()
    child = start_ready(DIES_ON_SIGINT)
    events: list[WaitEvent] = []
    outcome = wait(child, WaitOptions(cancellation=token), observer=events.append)
    close_pipes(child)
    assert outcome.termination is TerminationReason.CANCELLED
    assert [e.kind for e in events][:2] == ["start", "soft_interrupt"]  # before any sleep


@pytest.mark.parametrize("reaped_by_popen", [False, True])
def test_child_that_exited_before_the_wait_returns_at_once(
    wait: Waiter, reaped_by_popen: bool
) -> None:
    child = spawn(child_script("import sys; sys.exit(7)"))
    if reaped_by_popen:
        child.wait()
    else:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
    events: list[WaitEvent] = []
    outcome = wait(child, WaitOptions(timeout=0), observer=events.append)
    assert (outcome.returncode, outcome.termination) == (7, None)
    assert outcome.elapsed < 5
    assert [e.kind for e in events] == ["start", "exit"]  # no wakeup, no signal


def test_child_reaped_behind_popens_back_is_a_clear_error(wait: Waiter) -> None:
    child = spawn(child_script("pass"))
    os.waitpid(child.pid, 0)
    with pytest.raises(ChildLostError, match=rf"pid {child.pid} is not a child of this process"):
        wait(child, WaitOptions(timeout=1))
    assert child.returncode is None  # Popen was never told a made-up status
    child.wait()  # Popen's own answer to ECHILD (0), so it does not warn when dropped


def test_child_reaped_behind_popens_back_during_the_wait_is_an_error_not_a_status(
    wait: Waiter,
) -> None:
    # SIGCHLD ignored: the kernel reaps the child the moment it exits, and
    # Popen would answer ECHILD with a made-up returncode of 0 -- a false pass.
    child = spawn(child_script("import sys, time; time.sleep(0.3); sys.exit(3)"))
    events: list[WaitEvent] = []
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with pytest.raises(ChildLostError, match="while it was waited for"):
            wait(child, WaitOptions(timeout=30), observer=events.append)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert kinds(events) == ["exception", "exit"]  # no signal went to its pid
    assert child.returncode is not None  # Popen knows it is gone: nothing signals the pid


def test_observer_that_fails_on_every_event_is_escalated_reaped_and_reraised(
    wait: Waiter,
) -> None:
    child = start_ready(DIES_ON_SIGINT)
    calls: list[str] = []

    def broken(event: WaitEvent) -> None:
        calls.append(event.kind)
        raise ZeroDivisionError(len(calls))

    with pytest.raises(ZeroDivisionError) as raised:
        wait(child, WaitOptions(timeout=30), observer=broken)
    assert raised.value.args == (1,)  # the first failure, on "start"
    assert calls == ["start"]  # not called again: its failures cannot loop the wait
    assert child.returncode == -signal.SIGINT  # escalated like a cancellation, and reaped
    close_pipes(child)


def test_deadlines_months_or_eons_away_do_not_overflow_any_sleep(wait: Waiter) -> None:
    child = spawn(child_script("import sys, time; time.sleep(0.1); sys.exit(6)"))
    far = WaitOptions(
        timeout=1e300, interrupt_grace=1e10, abandon_after=40 * 86_400, cancellation=CancelToken()
    )
    assert wait(child, far).returncode == 6


def test_a_second_concurrent_wait_on_one_child_is_refused_and_the_first_goes_on(
    wait: Waiter,
) -> None:
    child = spawn(child_script("import sys, time; time.sleep(0.5); sys.exit(8)"))
    with Supervisor() as first:
        future = first.watch(child, WaitOptions(timeout=30))
        with pytest.raises(ValueError, match=rf"pid {child.pid} is already being waited for"):
            wait(child, WaitOptions(timeout=30))
        assert future.result(RESULT_TIMEOUT).returncode == 8
    assert wait(child, WaitOptions(timeout=30)).returncode == 8  # one at a time is fine


def test_soft_interrupt_that_raises_is_escalated_reaped_and_reraised(wait: Waiter) -> None:
    child = start_ready(DIES_ON_SIGINT)
    sent: list[int] = []

    def broken(c: subprocess.Popen[Any]) -> None:
        sent.append(c.pid)
        raise RuntimeError("soft interrupt failed")

    with pytest.raises(RuntimeError, match="soft interrupt failed"):
        wait(child, WaitOptions(timeout=0.1, interrupt_grace=30), soft_interrupt=broken)
    close_pipes(child)
    assert sent == [child.pid]
    # The failure arrived during the grace: the hard kill went at once.
    assert child.returncode == -signal.SIGKILL


def test_hard_kill_that_raises_falls_back_to_kill_group(wait: Waiter) -> None:
    child = start_ready(IGNORES_SIGINT)

    def broken(c: subprocess.Popen[Any]) -> None:
        raise OSError("custom kill failed")

    with pytest.raises(OSError, match="custom kill failed"):
        wait(child, WaitOptions(timeout=0, interrupt_grace=0), hard_kill=broken)
    close_pipes(child)
    assert child.returncode == -signal.SIGKILL


def test_custom_callbacks_receive_the_child(wait: Waiter) -> None:
    child = start_ready(IGNORES_SIGINT)
    calls: list[tuple[str, int]] = []

    def soft(c: subprocess.Popen[Any]) -> None:
        calls.append(("soft", c.pid))
        os.killpg(c.pid, signal.SIGTERM)

    outcome = wait(
        child,
        WaitOptions(timeout=0.05),
        soft_interrupt=soft,
        hard_kill=lambda c: calls.append(("hard", c.pid)),
    )
    close_pipes(child)
    assert calls == [("soft", child.pid)]
    assert outcome.returncode == -signal.SIGTERM


def test_child_in_the_callers_group_is_signalled_alone(wait: Waiter) -> None:
    # Not spawn(): the child shares this process's group. A group signal would
    # interrupt pytest itself; the child alone must get it.
    child = subprocess.Popen(DIES_ON_SIGINT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert os.getpgid(child.pid) == os.getpgrp()
    outcome = wait(child, WaitOptions(timeout=0.05))
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (-signal.SIGINT, TerminationReason.TIMEOUT)


def test_abandons_a_child_that_outlives_the_kill_and_can_wait_again(wait: Waiter) -> None:
    child = start_ready(IGNORES_SIGINT)
    outcome = wait(
        child,
        WaitOptions(timeout=0, interrupt_grace=0, abandon_after=0.2),
        hard_kill=lambda c: None,  # a kill that never lands: the child outlives it
    )
    assert (outcome.abandoned, outcome.returncode, child.returncode) == (True, None, None)
    assert outcome.killed_at is not None
    assert outcome.elapsed - outcome.killed_at > 0.2
    # The caller still owns the child; a second wait, with a kill that lands, reaps it.
    again = wait(child, WaitOptions(timeout=0, interrupt_grace=0))
    close_pipes(child)
    assert again.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"options": 5}, TypeError, r"options must be a WaitOptions, got int"),
        ({"soft_interrupt": "x"}, TypeError, r"soft_interrupt must be callable"),
        ({"hard_kill": 1}, TypeError, r"hard_kill must be callable"),
        ({"observer": []}, TypeError, r"observer must be callable"),
    ],
)
def test_bad_arguments_raise_before_anything_happens(
    wait: Waiter, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    child = spawn(child_script("import time; time.sleep(0.2)"))
    with pytest.raises(error, match=match):
        wait(child, **kwargs)
    assert wait(child).returncode == 0  # untouched by the failed call
