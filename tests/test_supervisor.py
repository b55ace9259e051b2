"""Supervisor: many real children on one thread.

The semantics of each child's wait (the same as wait_for_child's) are tested
for every front end in test_front_ends.py; this module tests what only the
Supervisor does: Futures and cancelling them, cancel_all, close, failures
that stay with their child, fallbacks, threads, descriptors and scale.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import statewait._supervisor as supervisor_module
from statewait import (
    BackendUnavailable,
    CancelToken,
    ChildLostError,
    Supervisor,
    TerminationReason,
    WaitEvent,
    WaitOptions,
    WaitOutcome,
    available_backends,
    spawn,
)

from .conftest import (
    DIES_ON_SIGINT,
    IGNORES_SIGINT,
    TRAPS_SIGINT_EXITS_42_AFTER_100MS,
    child_script,
    close_pipes,
    open_fds,
    settle_threads,
    start_ready,
    zombie_children,
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]

#: Generous: a Future that takes this long is a bug, not a slow machine.
RESULT_TIMEOUT = 30


@pytest.fixture
def sup(backend: str) -> Iterator[Supervisor]:
    """A Supervisor on each backend that works here."""
    with Supervisor(backend=backend) as supervisor:
        yield supervisor


def kinds(events: list[WaitEvent]) -> list[str]:
    return [e.kind for e in events if e.kind not in ("start", "wakeup")]


def outcome_of(future: concurrent.futures.Future[WaitOutcome]) -> WaitOutcome:
    return future.result(RESULT_TIMEOUT)


# -- the semantics of one wait are in test_front_ends.py; here, what only the
# Supervisor does


def test_Supervisor_one_token_wakes_every_wait_that_shares_it_at_once() -> None:
    token = CancelToken()
    with Supervisor() as sup:
        children = [spawn(["sleep", "60"]) for _ in range(20)]
        events: list[list[WaitEvent]] = [[] for _ in children]
        futures = [
            sup.watch(c, WaitOptions(cancellation=token), observer=e.append)
            for c, e in zip(children, events, strict=True)
        ]
        time.sleep(0.1)
        token.cancel()
        outcomes = [outcome_of(f) for f in futures]
    assert {(o.returncode, o.termination) for o in outcomes} == {
        (-signal.SIGINT, TerminationReason.CANCELLED)
    }
    for timeline in events:
        # Woken by the token itself (an unbounded slice), not by a poll tick.
        wakeups = [e for e in timeline if e.kind == "wakeup"]
        assert wakeups[0].detail is None


# -- cancelling from outside: future.cancel(), cancel_all(), close()


def test_Supervisor_future_cancel_returns_False_and_cancels_the_child(sup: Supervisor) -> None:
    child = start_ready(DIES_ON_SIGINT)
    future = sup.watch(child)
    assert future.running()
    assert future.cancel() is False
    outcome = outcome_of(future)
    close_pipes(child)
    assert future.cancelled() is False
    assert (outcome.returncode, outcome.termination) == (
        -signal.SIGINT,
        TerminationReason.CANCELLED,
    )
    assert future.cancel() is False  # done: nothing to cancel


def test_Supervisor_cancelling_an_asyncio_wrapper_of_the_future_cancels_the_child() -> None:
    child = start_ready(DIES_ON_SIGINT)

    async def main(sup: Supervisor) -> concurrent.futures.Future[WaitOutcome]:
        future = sup.watch(child)
        task = asyncio.ensure_future(asyncio.wrap_future(future))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return future

    with Supervisor() as sup:
        future = asyncio.run(main(sup))
        outcome = outcome_of(future)
    close_pipes(child)
    assert outcome.termination is TerminationReason.CANCELLED


def test_Supervisor_cancel_all_cancels_the_running_children_not_the_later_ones(
    sup: Supervisor,
) -> None:
    children = [start_ready(DIES_ON_SIGINT) for _ in range(3)]
    futures = [sup.watch(c) for c in children]
    sup.cancel_all()
    outcomes = [outcome_of(f) for f in futures]
    later = outcome_of(sup.watch(spawn(child_script("import time; time.sleep(0.3)"))))
    assert (later.returncode, later.termination) == (0, None)
    for child in children:
        close_pipes(child)
    assert [(o.returncode, o.termination) for o in outcomes] == [
        (-signal.SIGINT, TerminationReason.CANCELLED)
    ] * 3


def test_Supervisor_close_cancels_and_reaps_whatever_is_left(backend: str) -> None:
    sup = Supervisor(backend=backend)
    done = sup.watch(spawn(["true"]))
    assert outcome_of(done).returncode == 0
    traps = start_ready(TRAPS_SIGINT_EXITS_42_AFTER_100MS)
    ignores = start_ready(IGNORES_SIGINT)
    futures = [
        sup.watch(traps),
        sup.watch(ignores, WaitOptions(interrupt_grace=0.3)),
        sup.watch(spawn(["sleep", "60"])),
    ]
    sup.close()
    assert all(f.done() for f in futures)  # close() returns once every child was reaped
    for child in (traps, ignores):
        close_pipes(child)
    assert [(f.result().returncode, f.result().termination) for f in futures] == [
        (42, TerminationReason.CANCELLED),
        (-signal.SIGKILL, TerminationReason.CANCELLED),
        (-signal.SIGINT, TerminationReason.CANCELLED),
    ]
    assert zombie_children() == []


def test_Supervisor_close_timeout_cuts_the_graces_short() -> None:
    child = start_ready(IGNORES_SIGINT)
    sup = Supervisor()
    future = sup.watch(child, WaitOptions(interrupt_grace=60))
    started = time.monotonic()
    sup.close(timeout=0.2)
    close_pipes(child)
    outcome = future.result(0)
    assert (outcome.returncode, outcome.termination) == (
        -signal.SIGKILL,
        TerminationReason.CANCELLED,
    )
    assert outcome.interrupted_at is not None
    assert outcome.killed_at is not None
    assert 0.15 < outcome.killed_at - outcome.interrupted_at < 10
    assert time.monotonic() - started < 20


def test_Supervisor_interrupt_while_close_waits_kills_at_once_then_is_reraised() -> None:
    child = start_ready(IGNORES_SIGINT)
    sup = Supervisor()
    future = sup.watch(child, WaitOptions(interrupt_grace=60))
    real_join = sup._thread.join
    calls = []

    def join_interrupted_once(timeout: float | None = None) -> None:
        calls.append(timeout)
        if len(calls) == 1:
            time.sleep(0.1)
            raise KeyboardInterrupt  # a Ctrl-C while close() waits
        real_join(timeout)

    sup._thread.join = join_interrupted_once  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        sup.close()
    close_pipes(child)
    outcome = future.result(0)
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.killed_at is not None
    assert outcome.killed_at < 10  # not the 60 s grace
    assert not sup._thread.is_alive()


def test_Supervisor_watch_after_close_raises_and_close_is_idempotent() -> None:
    sup = Supervisor()
    sup.close()
    sup.close()
    child = spawn(["true"])
    with pytest.raises(RuntimeError, match="this Supervisor is closed"):
        sup.watch(child)
    child.wait()
    sup.cancel_all()  # harmless
    assert repr(sup) == "<Supervisor closed watching=0 backend='auto'>"


def test_Supervisor_close_from_its_own_thread_is_refused() -> None:
    errors: list[BaseException] = []
    with Supervisor() as sup:

        def close_from_callback(_: object) -> None:
            try:
                sup.close()
            except RuntimeError as exc:
                errors.append(exc)

        future = sup.watch(spawn(["true"]))
        future.add_done_callback(close_from_callback)
        outcome_of(future)
    assert len(errors) == 1
    assert "would wait for itself" in str(errors[0])


# -- failures stay with their child


def test_Supervisor_soft_interrupt_that_raises_fails_only_its_own_child(sup: Supervisor) -> None:
    broken_child = start_ready(DIES_ON_SIGINT)
    others = [spawn(child_script("import time; time.sleep(0.5)")) for _ in range(3)]

    def broken(c: subprocess.Popen[Any]) -> None:
        raise RuntimeError("soft interrupt failed")

    broken_future = sup.watch(
        broken_child, WaitOptions(timeout=0.1, interrupt_grace=30), soft_interrupt=broken
    )
    futures = [sup.watch(c, WaitOptions(timeout=30)) for c in others]
    with pytest.raises(RuntimeError, match="soft interrupt failed"):
        broken_future.result(RESULT_TIMEOUT)
    close_pipes(broken_child)
    # The failure arrived in the grace: the hard kill went at once, then the reap.
    assert broken_child.returncode == -signal.SIGKILL
    assert [outcome_of(f).returncode for f in futures] == [0, 0, 0]


def test_Supervisor_observer_or_done_callback_that_raises_disturbs_nobody(
    sup: Supervisor,
) -> None:
    def observer(event: WaitEvent) -> None:
        if event.kind == "exit":
            raise ValueError("observer failed")

    failing = sup.watch(spawn(["true"]), observer=observer)
    with pytest.raises(ValueError, match="observer failed"):
        failing.result(RESULT_TIMEOUT)

    def callback(_: object) -> None:
        raise SystemExit("a done-callback that exits")

    first = sup.watch(spawn(["true"]))
    first.add_done_callback(callback)
    assert outcome_of(first).returncode == 0
    assert outcome_of(sup.watch(spawn(["true"]))).returncode == 0  # the thread lives on


def test_Supervisor_callbacks_run_on_the_supervisor_thread(sup: Supervisor) -> None:
    child = start_ready(IGNORES_SIGINT)
    calls: list[tuple[str, int, str]] = []

    def soft(c: subprocess.Popen[Any]) -> None:
        calls.append(("soft", c.pid, threading.current_thread().name))
        os.killpg(c.pid, signal.SIGTERM)

    outcome = outcome_of(
        sup.watch(
            child,
            WaitOptions(timeout=0.05),
            soft_interrupt=soft,
            hard_kill=lambda c: calls.append(("hard", c.pid, "")),
        )
    )
    close_pipes(child)
    assert calls == [("soft", child.pid, "statewait-supervisor")]
    assert outcome.returncode == -signal.SIGTERM


# -- arguments


def test_Supervisor_watch_refuses_a_non_Popen_a_watched_child_and_a_lost_one() -> None:
    with Supervisor() as sup:
        with pytest.raises(TypeError, match=r"child must be a subprocess\.Popen, got int"):
            sup.watch(os.getpid())  # type: ignore[arg-type]
        child = spawn(["sleep", "0.3"])
        future = sup.watch(child)
        with pytest.raises(ValueError, match=rf"pid {child.pid} is already watched"):
            sup.watch(child)
        assert outcome_of(future).returncode == 0
        lost = spawn(["true"])
        os.waitpid(lost.pid, 0)
        with pytest.raises(ChildLostError, match=rf"pid {lost.pid} is not a child"):
            sup.watch(lost)
        lost.wait()


@pytest.mark.parametrize(
    ("backend", "error", "match"),
    [
        ("nope", ValueError, r"backend must be 'auto' or one of"),
        (3, TypeError, r"backend must be a str, got 3"),
    ],
)
def test_Supervisor_refuses_a_bad_backend(backend: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Supervisor(backend=backend)


def test_Supervisor_unavailable_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "available_backends", lambda: ("waitid", "poll"))
    with pytest.raises(BackendUnavailable, match="backend 'pidfd' does not work on this system"):
        Supervisor(backend="pidfd")


@pytest.mark.parametrize("timeout", [-1, "1", float("nan")])
def test_Supervisor_close_checks_its_timeout(timeout: Any) -> None:
    with Supervisor() as sup, pytest.raises((TypeError, ValueError), match="timeout"):
        sup.close(timeout=timeout)


# -- fallbacks where a child has no pidfd


def test_Supervisor_auto_falls_back_per_child_when_pidfd_open_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_descriptors(child: subprocess.Popen[Any]) -> int:
        raise OSError(24, "Too many open files")

    child = start_ready(DIES_ON_SIGINT)
    monkeypatch.setattr(supervisor_module, "pidfd_of", no_descriptors)
    with Supervisor() as sup:
        threads = threading.active_count()
        future = sup.watch(child, WaitOptions(timeout=0.2))
        assert threading.active_count() == threads + 1  # the waitid helper of this child
        outcome = outcome_of(future)
    close_pipes(child)
    assert (outcome.returncode, outcome.termination) == (-signal.SIGINT, TerminationReason.TIMEOUT)


def test_Supervisor_auto_polls_when_no_helper_thread_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_pidfd(child: subprocess.Popen[Any]) -> None:
        return None

    def no_thread(child: subprocess.Popen[Any], listener: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(supervisor_module, "pidfd_of", no_pidfd)
    monkeypatch.setattr(supervisor_module, "watch_exit", no_thread)
    events: list[WaitEvent] = []
    with Supervisor() as sup:
        future = sup.watch(
            spawn(["sleep", "0.3"]), WaitOptions(poll_interval=0.05), observer=events.append
        )
        assert outcome_of(future).returncode == 0
    slices = {e.detail for e in events if e.kind == "wakeup"}
    assert slices == {50_000_000}  # polled every poll_interval


# -- resources: one thread, one descriptor per live child, no busy loop


needs_pidfd = pytest.mark.skipif(
    "pidfd" not in available_backends(), reason="needs pidfd (Linux >= 5.4)"
)


@needs_pidfd
def test_Supervisor_uses_one_thread_and_one_descriptor_per_live_child() -> None:
    n = 200
    threads, fds = threading.active_count(), open_fds()
    token = CancelToken()  # shared by every wait: it must cost no descriptor
    with Supervisor() as sup:
        assert threading.active_count() == threads + 1
        assert open_fds() == fds + 2  # the selector and its wakeup descriptor
        children = [spawn(["sleep", "60"]) for _ in range(n)]
        futures = [sup.watch(c, WaitOptions(timeout=60, cancellation=token)) for c in children]
        assert sup.watching == n
        assert threading.active_count() == threads + 1
        assert open_fds() == fds + 2 + n  # the pidfd each child keeps, nothing more
        token.cancel()
        outcomes = [outcome_of(f) for f in futures]
        assert open_fds() == fds + 2
    assert {o.termination for o in outcomes} == {TerminationReason.CANCELLED}
    assert open_fds() == fds
    assert settle_threads(threads) == threads
    assert zombie_children() == []


@needs_pidfd
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_Supervisor_idle_thread_sleeps_without_a_timeout() -> None:
    with Supervisor() as sup:
        child = spawn(["sleep", "60"])
        events: list[WaitEvent] = []
        future = sup.watch(child, WaitOptions(cancellation=CancelToken()), observer=events.append)
        time.sleep(0.05)
        tid = sup._thread.native_id
        before = _cpu_ticks(tid)
        time.sleep(0.5)
        assert _cpu_ticks(tid) - before <= 2  # clock ticks: it slept
        assert sup._select_timeout() is None
        future.cancel()
        assert outcome_of(future).termination is TerminationReason.CANCELLED
    assert [e.kind for e in events].count("wakeup") == 2  # the cancel, then the exit


def _cpu_ticks(tid: int | None) -> int:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_Supervisor_a_few_hundred_children_with_random_exits_and_timeouts() -> None:
    rng = random.Random(6)
    plans = []
    plan: tuple[list[str], WaitOptions, tuple[int, TerminationReason | None]]
    with Supervisor() as sup:
        for i in range(300):
            if i % 10 == 0:  # sleeps past its timeout: interrupted, dies of SIGINT
                plan = (["sleep", "30"], WaitOptions(timeout=0.3), (-2, TerminationReason.TIMEOUT))
            else:
                code = rng.randrange(4)
                body = f"import time, os; time.sleep({rng.uniform(0, 0.5):.3f}); os._exit({code})"
                plan = (child_script(body), WaitOptions(timeout=30), (code, None))
            plans.append((sup.watch(spawn(plan[0]), plan[1]), plan[2]))
        got = [(outcome_of(f).returncode, outcome_of(f).termination) for f, _ in plans]
    assert got == [expected for _, expected in plans]
    assert zombie_children() == []


def test_Supervisor_thread_failure_kills_and_reaps_every_child_before_failing_its_Future(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in the thread itself (here: its timers) must not leave zombies or
    # Futures failed while their child is still unreaped.
    fds = open_fds()
    sup = Supervisor(backend=backend)
    children = [spawn(["sleep", "60"]), start_ready(IGNORES_SIGINT)]
    futures = [sup.watch(child, WaitOptions(timeout=0.2)) for child in children]

    def broken() -> None:
        raise MemoryError("a bug in the supervisor thread")

    monkeypatch.setattr(sup, "_fire_timers", broken)  # fails at its next wakeup, before 0.2 s
    for future in futures:
        with pytest.raises(MemoryError):
            future.result(RESULT_TIMEOUT)
    sup.close()
    for child in children:
        close_pipes(child)
    assert [child.returncode for child in children] == [-signal.SIGKILL] * 2
    assert zombie_children() == []
    assert open_fds() == fds
