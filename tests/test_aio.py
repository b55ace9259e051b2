"""statewait.aio with real children: asyncio Processes, task cancellation,
fallbacks, many waits on one loop, and run().

The semantics of one wait of a Popen, common to every front end, are in
test_front_ends.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

import statewait.aio as aio
from statewait import (
    CancelToken,
    ChildLostError,
    ProcessCancelled,
    ProcessTimedOut,
    TerminationReason,
    WaitEvent,
    WaitOptions,
    WaitOutcome,
    available_backends,
    spawn,
)
from statewait._aio_pipes import ChildPipes

from .conftest import (
    DIES_ON_SIGINT,
    HAS_A_GRANDCHILD,
    IGNORES_SIGINT,
    PY,
    TRAPS_SIGINT_EXITS_42_AFTER_100MS,
    Subreaper,
    child_script,
    close_pipes,
    open_fds,
    start_ready,
    zombie_children,
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]

T = TypeVar("T")

#: asyncio.create_subprocess_exec's way to put the child in its own group.
OWN_GROUP: dict[str, Any] = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
)


def arun(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a test's coroutine in a fresh loop (closed afterwards, as asyncio.run does)."""
    return asyncio.run(main())


def kinds(events: list[WaitEvent]) -> list[str]:
    return [e.kind for e in events if e.kind not in ("start", "wakeup")]


async def start_ready_process(argv: list[str]) -> asyncio.subprocess.Process:
    """An asyncio Process in its own group, once it printed its first line."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, **OWN_GROUP
    )
    assert process.stdout is not None
    assert await process.stdout.readline()
    return process


async def finish_process(process: asyncio.subprocess.Process) -> None:
    """Read to EOF so that asyncio closes the transport (no ResourceWarning)."""
    if process.stdout is not None:
        await process.stdout.read()
    await process.wait()


# -- wait_for_child of an asyncio Process (a Popen: see test_front_ends.py)


@pytest.mark.parametrize(
    ("body", "returncode"),
    [
        ("pass", 0),
        ("import sys; sys.exit(3)", 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
    ],
)
def test_aio_asyncio_process_that_exits_by_itself_gets_no_signal(
    body: str, returncode: int
) -> None:
    async def main() -> None:
        events: list[WaitEvent] = []
        process = await asyncio.create_subprocess_exec(*child_script(body), **OWN_GROUP)
        outcome = await aio.wait_for_child(process, WaitOptions(timeout=30), observer=events.append)
        assert (outcome.returncode, outcome.termination) == (returncode, None)
        assert (outcome.interrupted_at, outcome.killed_at) == (None, None)
        assert process.returncode == returncode
        assert kinds(events) == ["exit"]

    arun(main)


def test_aio_asyncio_process_that_ignores_SIGINT_is_killed_once_after_the_grace() -> None:
    async def main() -> None:
        events: list[WaitEvent] = []
        process = await start_ready_process(IGNORES_SIGINT)
        outcome = await aio.wait_for_child(
            process, WaitOptions(timeout=0.1, interrupt_grace=0.3), observer=events.append
        )
        await finish_process(process)
        assert (outcome.returncode, outcome.termination) == (
            -signal.SIGKILL,
            TerminationReason.TIMEOUT,
        )
        assert outcome.interrupted_at is not None
        assert outcome.killed_at is not None
        assert outcome.killed_at - outcome.interrupted_at > 0.3
        assert kinds(events) == ["soft_interrupt", "hard_kill", "exit"]

    arun(main)


def test_aio_asyncio_process_interrupts_the_whole_group_grandchild_included(
    subreaper: Subreaper,
) -> None:
    async def main() -> int:
        process = await asyncio.create_subprocess_exec(
            *HAS_A_GRANDCHILD, stdout=asyncio.subprocess.PIPE, **OWN_GROUP
        )
        assert process.stdout is not None
        grandchild = int(await process.stdout.readline())
        outcome = await aio.wait_for_child(process, WaitOptions(timeout=0.1, interrupt_grace=10))
        await finish_process(process)
        assert (outcome.returncode, outcome.termination) == (
            -signal.SIGINT,
            TerminationReason.TIMEOUT,
        )
        return grandchild

    grandchild = arun(main)
    status = subreaper.wait_for(grandchild)
    assert os.WTERMSIG(status) == signal.SIGINT


def test_aio_wait_for_child_token_wakes_at_once_not_by_polling() -> None:
    async def main() -> None:
        token = CancelToken()
        child = start_ready(DIES_ON_SIGINT)
        events: list[WaitEvent] = []
        asyncio.get_running_loop().call_later(0.2, token.cancel)
        outcome = await aio.wait_for_child(
            child, WaitOptions(cancellation=token), observer=events.append
        )
        close_pipes(child)
        assert outcome.termination is TerminationReason.CANCELLED
        assert [e.kind for e in events][:3] == ["start", "wakeup", "soft_interrupt"]
        assert events[1].detail is None  # an unbounded slice, ended by the token

    arun(main)


def test_aio_wait_for_child_of_an_asyncio_process_that_asyncio_already_reaped() -> None:
    async def main() -> None:
        process = await asyncio.create_subprocess_exec(*child_script("import sys; sys.exit(5)"))
        await asyncio.sleep(0.3)  # asyncio's watcher reaps it meanwhile
        outcome = await aio.wait_for_child(process, WaitOptions(timeout=0))
        assert (outcome.returncode, outcome.termination) == (5, None)

    arun(main)


# -- cancelling the awaiting task


def test_aio_cancelling_the_task_escalates_waits_for_the_exit_then_reraises() -> None:
    async def main() -> None:
        child = start_ready(TRAPS_SIGINT_EXITS_42_AFTER_100MS)
        events: list[WaitEvent] = []
        task = asyncio.ensure_future(
            aio.wait_for_child(child, WaitOptions(interrupt_grace=20), observer=events.append)
        )
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        close_pipes(child)
        # Re-raised only once the child had exited (its SIGINT handler took 100 ms).
        assert child.returncode == 42
        assert kinds(events) == ["exception", "soft_interrupt", "exit"]
        soft = next(e for e in events if e.kind == "soft_interrupt")
        assert soft.detail is TerminationReason.CANCELLED

    arun(main)


@pytest.mark.parametrize("kind", ["popen", "asyncio"])
def test_aio_second_cancellation_in_the_grace_kills_at_once(kind: str) -> None:
    async def main() -> None:
        process: Any = (
            start_ready(IGNORES_SIGINT)
            if kind == "popen"
            else await start_ready_process(IGNORES_SIGINT)
        )
        events: list[WaitEvent] = []
        task = asyncio.ensure_future(
            aio.wait_for_child(process, WaitOptions(interrupt_grace=60), observer=events.append)
        )
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.sleep(0.2)
        assert not task.done()  # in the 60 s grace
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if kind == "popen":
            close_pipes(process)
        else:
            await finish_process(process)
        assert process.returncode == -signal.SIGKILL
        hard = next(e for e in events if e.kind == "hard_kill")
        assert hard.at < 10 * 10**9

    arun(main)


def test_aio_wait_for_timeout_around_the_wait_reaps_before_raising() -> None:
    async def main() -> None:
        child = start_ready(DIES_ON_SIGINT)
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(aio.wait_for_child(child), 0.2)
        close_pipes(child)
        assert child.returncode == -signal.SIGINT

    arun(main)


def test_aio_callbacks_receive_the_process_they_were_given() -> None:
    async def main() -> None:
        process = await start_ready_process(IGNORES_SIGINT)
        got: list[object] = []

        def soft(p: asyncio.subprocess.Process) -> None:
            got.append(p)
            p.terminate()

        outcome = await aio.wait_for_child(process, WaitOptions(timeout=0.05), soft_interrupt=soft)
        await finish_process(process)
        assert got == [process]
        assert outcome.returncode == -signal.SIGTERM

    arun(main)


# -- arguments


def test_aio_wait_for_child_refuses_other_types_and_a_lost_child() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match=r"process must be an asyncio\.subprocess\.Process"):
            await aio.wait_for_child(os.getpid())  # type: ignore[type-var]
        lost = spawn(["true"])
        os.waitpid(lost.pid, 0)
        with pytest.raises(ChildLostError):
            await aio.wait_for_child(lost)
        lost.wait()

    arun(main)


def test_aio_two_concurrent_waits_on_one_child_one_is_refused_none_hangs() -> None:
    async def main() -> None:
        for kind in ("popen", "asyncio"):
            process: Any = (
                spawn(["sleep", "0.3"])
                if kind == "popen"
                else await asyncio.create_subprocess_exec("sleep", "0.3", **OWN_GROUP)
            )
            first, second = await asyncio.wait_for(
                asyncio.gather(
                    aio.wait_for_child(process), aio.wait_for_child(process), return_exceptions=True
                ),
                30,
            )
            assert isinstance(first, WaitOutcome)
            assert first.returncode == 0
            assert isinstance(second, ValueError), second
            assert "already being waited for" in str(second)

    arun(main)


# -- fallbacks where there is no pidfd


def test_aio_popen_without_pidfd_uses_the_waitid_helper_then_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aio, "pidfd_of", lambda child: None)

    async def main() -> None:
        threads = threading.active_count()
        task = asyncio.ensure_future(aio.wait_for_child(spawn(["sleep", "0.3"])))
        await asyncio.sleep(0.1)
        assert threading.active_count() == threads + 1  # the helper
        assert (await task).returncode == 0

        def no_thread(child: object, listener: object) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(aio, "watch_exit", no_thread)
        events: list[WaitEvent] = []
        outcome = await aio.wait_for_child(
            spawn(["sleep", "0.2"]), WaitOptions(poll_interval=0.05), observer=events.append
        )
        assert outcome.returncode == 0
        assert {e.detail for e in events if e.kind == "wakeup"} == {50_000_000}

    arun(main)


def test_aio_asyncio_process_without_pidfd_learns_the_exit_from_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_descriptors(child: object) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(aio, "pidfd_of", no_descriptors)

    async def main() -> None:
        process = await asyncio.create_subprocess_exec("sleep", "0.2", **OWN_GROUP)
        assert (await aio.wait_for_child(process, WaitOptions(timeout=30))).returncode == 0
        process = await asyncio.create_subprocess_exec("sleep", "30", **OWN_GROUP)
        outcome = await aio.wait_for_child(process, WaitOptions(timeout=0.1))
        assert (outcome.returncode, outcome.termination) == (-2, TerminationReason.TIMEOUT)

    arun(main)


# -- many waits on one loop


needs_pidfd = pytest.mark.skipif(
    "pidfd" not in available_backends(), reason="needs pidfd (Linux >= 5.4)"
)


@needs_pidfd
def test_aio_200_concurrent_waits_use_no_thread_and_one_descriptor_per_child() -> None:
    async def main() -> None:
        token = CancelToken()  # shared by every wait
        threads, fds = threading.active_count(), open_fds()
        children = [spawn(["sleep", "60"]) for _ in range(200)]
        tasks = [
            asyncio.ensure_future(aio.wait_for_child(c, WaitOptions(cancellation=token)))
            for c in children
        ]
        await asyncio.sleep(0.2)
        assert threading.active_count() == threads
        assert open_fds() == fds + 200  # each child's pidfd, nothing more
        token.cancel()
        outcomes = await asyncio.gather(*tasks)
        assert {(o.returncode, o.termination) for o in outcomes} == {
            (-signal.SIGINT, TerminationReason.CANCELLED)
        }
        assert open_fds() == fds

    arun(main)
    assert zombie_children() == []


@needs_pidfd
def test_aio_200_concurrent_runs_with_random_exits_and_timeouts() -> None:
    async def main() -> None:
        threads = threading.active_count()
        plans: list[tuple[Awaitable[aio.RunResult], tuple[int, TerminationReason | None]]] = []
        for i in range(200):
            if i % 10 == 0:
                plans.append(
                    (aio.run(["sleep", "30"], timeout=0.3), (-2, TerminationReason.TIMEOUT))
                )
            else:
                code = i % 4
                body = f"import time, os; time.sleep({(i % 7) / 20}); print({i}); os._exit({code})"
                plans.append(
                    (aio.run(child_script(body), timeout=30, capture_output=True), (code, None))
                )
        tasks = [asyncio.ensure_future(p) for p, _ in plans]
        await asyncio.sleep(0.1)
        assert threading.active_count() == threads
        results = await asyncio.gather(*tasks)
        assert [(r.returncode, r.termination) for r in results] == [e for _, e in plans]
        for i, result in enumerate(results):
            if i % 10:
                assert result.stdout == f"{i}\n".encode()

    arun(main)
    assert zombie_children() == []


# -- run()


def test_aio_run_captures_output_as_bytes_or_text() -> None:
    async def main() -> None:
        body = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
        result = await aio.run(child_script(body), capture_output=True)
        assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
        assert (result.termination, result.output_truncated) == (None, False)
        assert isinstance(result, subprocess.CompletedProcess)
        text = await aio.run(
            child_script("import sys; sys.stdout.buffer.write('é\\r\\nb\\r'.encode())"),
            stdout=subprocess.PIPE,
            encoding="utf-8",
        )
        assert (text.stdout, text.stderr) == ("é\nb\n", None)
        merged = await aio.run(
            child_script(body), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert sorted(merged.stdout.split()) == ["err", "out"]

    arun(main)


def test_aio_run_feeds_input_and_closes_stdin() -> None:
    async def main() -> None:
        big = os.urandom(1 << 20)  # more than a pipe holds: written as it drains
        result = await aio.run(["cat"], input=big, capture_output=True)
        assert result.stdout == big
        text = await aio.run(["cat"], input="héllo", capture_output=True, text=True)
        assert text.stdout == "héllo"
        # A child that never reads its input: the rest is dropped, no error.
        ignored = await aio.run(["true"], input=big)
        assert ignored.returncode == 0
        # stdin=PIPE without input: closed at once, the child reads EOF.
        eof = await aio.run(["cat"], stdin=subprocess.PIPE, capture_output=True)
        assert eof.stdout == b""

    arun(main)


def test_aio_run_output_limit_keeps_the_newest_bytes() -> None:
    async def main() -> None:
        body = "import sys; sys.stdout.write('x' * 100000 + 'THE END')"
        result = await aio.run(child_script(body), capture_output=True, output_limit=7)
        assert (result.stdout, result.output_truncated) == (b"THE END", True)
        text = await aio.run(
            child_script("print('ééé', end='')"), capture_output=True, output_limit=5, text=True
        )
        # The cut fell inside a character: its leftover byte is dropped.
        assert (text.stdout, text.output_truncated) == ("éé", True)
        fits = await aio.run(child_script(body), capture_output=True, output_limit=100007)
        assert (len(fits.stdout), fits.output_truncated) == (100007, False)

    arun(main)


def test_aio_run_io_drain_timeout_bounds_the_read_after_the_exit(subreaper: Subreaper) -> None:
    async def main() -> int:
        # The child exits at once; its grandchild keeps stdout open for 30 s.
        body = "import os; print(os.posix_spawnp('sleep', ['sleep', '30'], os.environ), flush=True)"
        started = time.monotonic()
        result = await aio.run(child_script(body), capture_output=True, io_drain_timeout=0.3)
        assert result.returncode == 0
        assert 0.25 < time.monotonic() - started < 10
        return int(result.stdout)

    grandchild = arun(main)
    os.kill(grandchild, signal.SIGKILL)
    subreaper.wait_for(grandchild)


def test_aio_run_drain_ending_keeps_what_the_pipe_already_holds() -> None:
    # 900 kB already in a widened pipe whose writer (a grandchild, say) keeps
    # it open: a drain of 0 s must still keep every byte, as run() does. The
    # loop reads 64 KiB per readiness, so this used to keep a few of them.
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1 << 20)  # type: ignore[attr-defined]
    os.write(write_fd, b"x" * 900_000)

    async def main(child: Any) -> bytes:
        pipes = ChildPipes(asyncio.get_running_loop(), child, None, None)
        await pipes.drain(0)
        assert pipes.stdout is not None
        return pipes.stdout.buffer.take()

    with open(read_fd, "rb") as stdout:
        child = types.SimpleNamespace(stdin=None, stdout=stdout, stderr=None)
        try:
            assert len(arun(lambda: main(child))) == 900_000
            assert stdout.closed
        finally:
            os.close(write_fd)


def test_aio_run_timeout_and_check() -> None:
    async def main() -> None:
        result = await aio.run(["sleep", "30"], timeout=0.1)
        assert (result.returncode, result.termination) == (-2, TerminationReason.TIMEOUT)
        with pytest.raises(ProcessTimedOut) as timed_out:
            await aio.run(["sleep", "30"], timeout=0.1, check=True)
        assert timed_out.value.returncode == -2
        token = CancelToken()
        token.cancel()
        with pytest.raises(ProcessCancelled):
            await aio.run(["sleep", "30"], cancellation=token, check=True)
        with pytest.raises(subprocess.CalledProcessError):
            await aio.run(["false"], check=True)

    arun(main)


def test_aio_run_cancelling_the_task_reaps_the_child_and_closes_its_pipes() -> None:
    async def main() -> None:
        fds = open_fds()
        body = "import time; print('ready', flush=True); time.sleep(30)"
        task = asyncio.ensure_future(aio.run(child_script(body), capture_output=True))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_fds() == fds

    arun(main)
    assert zombie_children() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"capture_output": True, "stdout": subprocess.PIPE}, ValueError, "capture_output"),
        ({"input": b"x", "stdin": subprocess.PIPE}, ValueError, "stdin and input"),
        ({"input": "x"}, TypeError, r"input must be bytes-like \(or a str with text=True\)"),
        ({"output_limit": 0}, ValueError, "output_limit must be > 0 bytes"),
        ({"output_limit": True}, TypeError, r"output_limit must be a number of bytes \(int\)"),
        ({"io_drain_timeout": -1}, ValueError, "io_drain_timeout must be >= 0"),
        ({"timeout": "1"}, TypeError, "timeout must be"),
        ({"hard_kill": 3}, TypeError, "hard_kill must be callable"),
    ],
)
def test_aio_run_checks_its_arguments_before_starting_anything(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    async def main() -> None:
        with pytest.raises(error, match=match):
            await aio.run([PY, "-c", "raise SystemExit('must not run')"], **kwargs)

    arun(main)
    assert zombie_children() == []


def test_aio_asyncio_child_reaped_by_asyncio_before_its_signal_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No pidfd (EMFILE), and asyncio's watcher reaps the child between the
    # exit and the loop learning of it: the timeout's signal finds no child.
    monkeypatch.setattr(aio, "pidfd_of", lambda child: None)

    def lost(child: object) -> None:
        raise ChildLostError("pid 1 is not a child of this process any more")

    async def main() -> None:
        process = await asyncio.create_subprocess_exec("sleep", "0.3", **OWN_GROUP)
        monkeypatch.setattr("statewait._real.interrupt_group", lost)
        outcome = await aio.wait_for_child(process, WaitOptions(timeout=0.05))
        assert (outcome.returncode, outcome.termination) == (0, TerminationReason.TIMEOUT)

    arun(main)


def test_aio_wait_closed_with_its_event_loop_kills_the_child_at_once_and_lets_go() -> None:
    # A loop closed with the wait still pending: the coroutine is closed
    # (GeneratorExit) and can await nothing more. It used to send the soft
    # interrupt, try to await the grace -- "coroutine ignored GeneratorExit" --
    # and leave a child that ignores SIGINT running unsupervised.
    child = start_ready(IGNORES_SIGINT)
    events: list[WaitEvent] = []
    loop = asyncio.new_event_loop()
    task = loop.create_task(
        aio.wait_for_child(child, WaitOptions(interrupt_grace=60), observer=events.append)
    )
    loop.run_until_complete(asyncio.sleep(0.1))
    loop.close()
    task.get_coro().close()  # what the garbage collector does to the dropped task
    assert child.wait(timeout=30) == -signal.SIGKILL
    close_pipes(child)
    assert [k for k in kinds(events) if k in ("soft_interrupt", "hard_kill")] == [
        "soft_interrupt",
        "hard_kill",
    ]
    # The child is free again for another wait.
    assert arun(lambda: aio.wait_for_child(child)).returncode == -signal.SIGKILL
