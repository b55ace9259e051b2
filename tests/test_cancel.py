"""CancelToken and how the loop reads each kind of cancellation."""

from __future__ import annotations

import os
import select
import selectors
import signal
import threading
import time

import pytest

from statewait import CancelToken
from statewait._cancel import probe


def test_CancelToken_starts_uncancelled_and_cancel_is_idempotent() -> None:
    token = CancelToken()
    assert token.cancelled is False
    assert token.wait(0) is False
    token.cancel()
    token.cancel()
    assert token.cancelled is True
    assert token.wait(0) is True
    assert repr(token) == "<CancelToken cancelled=True>"


def test_CancelToken_without_fileno_opens_no_descriptor() -> None:
    before = len(os.listdir("/proc/self/fd"))
    tokens = [CancelToken() for _ in range(50)]
    for token in tokens:
        token.cancel()
    assert len(os.listdir("/proc/self/fd")) == before


def test_CancelToken_fileno_becomes_readable_on_cancel_and_stays_readable() -> None:
    with CancelToken() as token, selectors.DefaultSelector() as sel:
        sel.register(token.fileno(), selectors.EVENT_READ)
        assert sel.select(0) == []
        token.cancel()
        assert len(sel.select(0)) == 1
        assert len(sel.select(0)) == 1  # level-triggered, never drained


def test_CancelToken_fileno_after_cancel_is_readable_at_once() -> None:
    with CancelToken() as token, selectors.DefaultSelector() as sel:
        token.cancel()
        sel.register(token.fileno(), selectors.EVENT_READ)
        assert len(sel.select(0)) == 1


def test_CancelToken_cancel_from_another_thread_wakes_every_waiter() -> None:
    token = CancelToken()
    woke: list[bool] = []
    threads = [threading.Thread(target=lambda: woke.append(token.wait(30))) for _ in range(5)]
    for t in threads:
        t.start()
    threading.Timer(0.05, token.cancel).start()
    for t in threads:
        t.join(30)
    assert woke == [True] * 5


def test_CancelToken_close_releases_the_descriptor_and_the_token_keeps_working() -> None:
    before = len(os.listdir("/proc/self/fd"))
    token = CancelToken()
    token.fileno()
    assert len(os.listdir("/proc/self/fd")) == before + 1
    token.close()
    assert len(os.listdir("/proc/self/fd")) == before
    token.cancel()
    assert token.cancelled
    with selectors.DefaultSelector() as sel:
        sel.register(token.fileno(), selectors.EVENT_READ)  # a new descriptor, readable
        assert len(sel.select(0)) == 1
    token.close()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.real
def test_wait_for_child_with_a_closed_token_still_cancels() -> None:
    import statewait

    token = CancelToken()
    token.fileno()
    token.close()
    child = statewait.spawn(["sleep", "30"])
    threading.Timer(0.1, token.cancel).start()
    outcome = statewait.wait_for_child(child, statewait.WaitOptions(cancellation=token))
    token.close()
    assert (outcome.returncode, outcome.cancelled) == (-2, True)


def test_CancelToken_dropped_without_close_does_not_leak() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        CancelToken().fileno()
    assert len(os.listdir("/proc/self/fd")) == before


def test_probe_classifies_each_kind() -> None:
    token, event = CancelToken(), threading.Event()
    assert probe(None) == (None, False, None)
    check, polled, found = probe(token)
    assert (polled, found) == (False, token)
    assert check is not None
    assert check() is False
    token.cancel()
    assert check() is True
    check, polled, found = probe(event)
    assert (polled, found) == (True, None)
    event.set()
    assert check is not None
    assert check() is True
    flag = [False]
    check, polled, found = probe(lambda: flag[0])
    assert (polled, found) == (True, None)
    assert check is not None
    assert check() is False


def test_CancelToken_wait_times_out() -> None:
    started = time.monotonic()
    assert CancelToken().wait(0.01) is False
    assert time.monotonic() - started >= 0.009


def test_CancelToken_cancel_from_a_signal_handler_that_interrupted_a_holder_of_its_lock() -> None:
    # A handler runs in the main thread between two bytecodes: here, while
    # that thread is inside the token (its lock held, as in fileno() or a
    # wait's subscribe). cancel() must neither wait for itself nor lose a wakeup.
    token = CancelToken()
    readable = token.fileno()
    called = threading.Event()
    token._subscribe(called.set)
    sleeper_woke = threading.Event()
    sleeper = threading.Thread(target=lambda: token.wait(30) and sleeper_woke.set())
    sleeper.start()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: token.cancel())
    try:
        with token._lock:
            signal.raise_signal(signal.SIGUSR1)  # the handler runs here, before the next line
            assert token.cancelled  # at once, though the wakeups wait for the lock
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert called.wait(10)
    assert sleeper_woke.wait(10)
    sleeper.join()
    assert select.select([readable], [], [], 10)[0] == [readable]
    token.close()


def test_Waker_notified_by_a_signal_handler_that_interrupted_its_sleeper_still_wakes_it() -> None:
    from statewait._backends._common import Waker

    token = CancelToken()
    waker = Waker(token)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: token.cancel())
    try:
        with waker._lock:  # as while the sleeper evaluates its predicate
            signal.raise_signal(signal.SIGUSR1)
        started = time.monotonic()
        waker.sleep(30 * 10**9, True, lambda: False)  # the token is cancelled: returns at once
        assert time.monotonic() - started < 10
    finally:
        signal.signal(signal.SIGUSR1, previous)
        waker.close()


_FORKED_TOKEN_SCRIPT = """
import os, select, sys
from statewait import CancelToken

def readable(token):
    return select.select([token.fileno()], [], [], 0)[0] != []

# The forked child cancels its copy: the parent's token must not look cancelled.
token = CancelToken()
token.fileno()
pid = os.fork()
if pid == 0:
    token.cancel()
    os._exit(0 if readable(token) else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the child's own cancel() must wake the child"
assert not token.cancelled
assert not readable(token), "a forked child's cancel() woke the parent's descriptor"

# The parent cancels after the fork: the child's copy must not look cancelled.
other = CancelToken()
other.fileno()
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(read_end, 1)  # until the parent cancelled
    os._exit(4 if readable(other) or other.cancelled else 0)
other.cancel()
os.write(write_end, b"x")
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the parent's cancel() woke the child's copy"
print("ok")
"""


def test_CancelToken_copies_in_a_forked_child_are_independent() -> None:
    # After os.fork() both processes hold the token's descriptor: a cancel()
    # in one used to make it readable in the other, whose flag stays False --
    # a wait there then spun at full CPU until its child exited.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FORKED_TOKEN_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
