"""run() with real children: pipes, limits, the post-exit drain, errors, leaks."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from statewait import (
    CancelToken,
    ProcessCancelled,
    ProcessTimedOut,
    RunResult,
    TerminationReason,
    WaitOutcome,
    run,
)

from .conftest import (
    DIES_ON_SIGINT,
    IGNORES_SIGINT,
    TRAPS_SIGINT_EXITS_42_AFTER_100MS,
    child_script,
    open_fds,
    rss_kib,
    settle_threads,
    signals_held,
    zombie_children,
)

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]

MiB = 1 << 20
OUT_CHUNK = bytes(range(256)) * 4096  # 1 MiB
ERR_CHUNK = bytes(reversed(range(256))) * 4096

#: Writes argv[1] MiB to stdout and as much to stderr, alternately, in 1 MiB writes.
WRITES_BOTH_PIPES = child_script(
    "import os, sys\n"
    "out, err = bytes(range(256)) * 4096, bytes(reversed(range(256))) * 4096\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    for fd, chunk in ((1, out), (2, err)):\n"
    "        view = memoryview(chunk)\n"
    "        while view:\n"
    "            view = view[os.write(fd, view):]\n"
)


def digest(chunk: bytes, times: int) -> bytes:
    h = hashlib.sha256()
    for _ in range(times):
        h.update(chunk)
    return h.digest()


# -- output and input


def test_run_captures_stdout_and_stderr_apart_and_returns_a_CompletedProcess() -> None:
    result = run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True)
    assert isinstance(result, RunResult)
    assert isinstance(result, subprocess.CompletedProcess)
    assert (result.args, result.returncode) == (["sh", "-c", "echo out; echo err >&2; exit 3"], 3)
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    assert (result.termination, result.output_truncated) == (None, False)
    assert result.outcome.returncode == 3
    assert result.outcome.interrupted_at is None


def test_run_without_capture_leaves_the_output_alone(capfd: pytest.CaptureFixture[str]) -> None:
    result = run(["sh", "-c", "echo inherited"])
    assert (result.returncode, result.stdout, result.stderr) == (0, None, None)
    assert capfd.readouterr().out == "inherited\n"


def test_run_200_MiB_on_both_pipes_at_once_neither_deadlocks_nor_mixes_them() -> None:
    started = time.monotonic()
    result = run([*WRITES_BOTH_PIPES, "200"], capture_output=True, timeout=50)
    assert (result.returncode, result.termination) == (0, None)
    assert len(result.stdout) == len(result.stderr) == 200 * MiB
    assert hashlib.sha256(result.stdout).digest() == digest(OUT_CHUNK, 200)
    assert hashlib.sha256(result.stderr).digest() == digest(ERR_CHUNK, 200)
    assert time.monotonic() - started < 40  # about 1 s here; generous


def test_run_bytes_input_round_trip_through_cat() -> None:
    data = os.urandom(8 * MiB)
    result = run(["cat"], input=data, capture_output=True)
    assert result.returncode == 0
    assert result.stdout == data


def test_run_text_input_round_trip_encodes_and_translates_newlines() -> None:
    result = run(["cat"], input="héllo\r\nwörld\rend\n", capture_output=True, encoding="utf-8")
    assert result.stdout == "héllo\nwörld\nend\n"  # universal newlines, as subprocess.run
    assert result.stderr == ""


def test_run_child_that_writes_before_it_reads_does_not_deadlock_with_input() -> None:
    # 8 MiB out before reading 8 MiB in: both pipes fill unless they move together.
    child = child_script(
        "import sys\n"
        "sys.stdout.buffer.write(b'x' * (8 << 20)); sys.stdout.flush()\n"
        "data = sys.stdin.buffer.read()\n"
        "print(len(data), file=sys.stderr)\n"
    )
    result = run(child, input=b"y" * (8 * MiB), capture_output=True, timeout=30)
    assert result.returncode == 0
    assert len(result.stdout) == 8 * MiB
    assert result.stderr == b"%d\n" % (8 * MiB)


def test_run_input_the_child_never_reads_is_not_an_error() -> None:
    result = run(["true"], input=b"z" * (4 * MiB), capture_output=True)
    assert (result.returncode, result.stdout) == (0, b"")


def test_run_empty_input_is_EOF_at_once() -> None:
    result = run(["cat"], input=b"", capture_output=True, timeout=10)
    assert (result.returncode, result.stdout, result.termination) == (0, b"", None)


def test_run_stderr_STDOUT_merges_and_DEVNULL_discards() -> None:
    both = run(["sh", "-c", "echo a; echo b >&2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert (both.stdout, both.stderr) == (b"a\nb\n", None)
    quiet = run(
        ["sh", "-c", "echo a; echo b >&2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert (quiet.stdout, quiet.stderr) == (None, b"b\n")


def test_run_stdout_to_a_file_object_and_stderr_to_a_descriptor(tmp_path: Path) -> None:
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        result = run(["sh", "-c", "echo a; echo b >&2"], stdout=out, stderr=err.fileno())
    assert (result.stdout, result.stderr) == (None, None)
    assert (out_path.read_bytes(), err_path.read_bytes()) == (b"a\n", b"b\n")


def test_run_text_mode_errors_and_universal_newlines_alias() -> None:
    result = run(
        ["printf", "a\\377b\\r\\n"], capture_output=True, encoding="utf-8", errors="replace"
    )
    assert result.stdout == "a\ufffdb\n"
    alias = run(["printf", "x\\r\\n"], capture_output=True, universal_newlines=True)
    assert alias.stdout == "x\n"


def test_run_passes_popen_kwargs_and_the_child_leads_its_own_group(tmp_path: Path) -> None:
    child = child_script(
        "import os; print(os.getcwd(), os.environ['MARK'], os.getpgid(0) == os.getpid())"
    )
    result = run(child, capture_output=True, text=True, cwd=tmp_path, env={"MARK": "m"})
    assert result.stdout.split() == [str(tmp_path), "m", "True"]


# -- output_limit


def test_run_output_limit_keeps_the_newest_bytes_and_says_so() -> None:
    lines = child_script(
        "import sys\nfor i in range(100000): print(i)\nprint('err', file=sys.stderr)"
    )
    result = run(lines, capture_output=True, output_limit=1000)
    full = b"".join(b"%d\n" % i for i in range(100000))
    assert result.stdout == full[-1000:]
    assert result.stderr == b"err\n"  # under the limit: kept whole
    assert result.output_truncated is True


@pytest.mark.parametrize("limit", [1000, 1001, None])
def test_run_output_under_or_at_the_limit_is_not_truncated(limit: int | None) -> None:
    result = run(child_script("print('x' * 999)"), capture_output=True, output_limit=limit)
    assert (len(result.stdout), result.output_truncated) == (1000, False)


def test_run_output_limit_applies_to_stderr_too() -> None:
    result = run(
        child_script("import sys; sys.stderr.write('e' * 5000 + 'END')"),
        capture_output=True,
        output_limit=10,
    )
    assert (result.stdout, result.stderr, result.output_truncated) == (
        b"",
        b"eeeeeee" + b"END",
        True,
    )


def test_run_output_limit_in_text_mode_drops_a_character_cut_in_two() -> None:
    # 2000 bytes of 2-byte characters; the newest 101 start in a character's middle.
    result = run(
        child_script("import sys; sys.stdout.buffer.write('é'.encode() * 1000)"),
        capture_output=True,
        encoding="utf-8",
        output_limit=101,
    )
    assert result.stdout == "é" * 50
    assert result.output_truncated is True


@pytest.mark.parametrize(
    ("text", "limit", "kept"),
    [("ééé", 1, ""), ("ééé", 3, "é"), ("€", 1, ""), ("€", 2, ""), ("a€", 3, "€")],
)
def test_run_output_limit_smaller_than_a_character_keeps_no_fragment(
    text: str, limit: int, kept: str
) -> None:
    script = f"import sys; sys.stdout.buffer.write({text!r}.encode())"
    result = run(child_script(script), capture_output=True, encoding="utf-8", output_limit=limit)
    assert (result.stdout, result.output_truncated) == (kept, True)


@pytest.mark.parametrize(
    ("encoding", "limit"),
    [("utf-16-le", 41), ("utf-16-le", 5), ("utf-32-le", 41), ("utf-32-le", 43), ("utf-16", 41)],
)
def test_run_output_limit_in_text_mode_realigns_a_fixed_width_encoding(
    encoding: str, limit: int
) -> None:
    # In UTF-16 or UTF-32 almost any two or four bytes decode: a cut unit was
    # taken for a character, and the bytes left over at the end raised
    # UnicodeDecodeError (for "utf-16", whose BOM went with the oldest bytes:
    # UnicodeError) instead of returning the result.
    text = "abcé€" * 100
    script = f"import sys; sys.stdout.buffer.write({text!r}.encode({encoding!r}))"
    result = run(child_script(script), capture_output=True, encoding=encoding, output_limit=limit)
    little_endian = encoding if encoding.endswith("-le") else f"{encoding}-le"
    fits = [n for n in range(len(text) + 1) if len(text[n:].encode(little_endian)) <= limit]
    assert (result.stdout, result.output_truncated) == (text[fits[0] :], True)


# -- the post-exit drain


def test_run_limits_months_or_eons_away_do_not_overflow_any_sleep() -> None:
    result = run(
        ["sh", "-c", "echo hi"],
        timeout=1e300,
        interrupt_grace=1e300,
        io_drain_timeout=1e10,
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout) == (0, "hi\n")


def test_run_grandchild_holding_the_pipe_costs_only_io_drain_timeout() -> None:
    # The case: `sh -c 'sleep 30 & echo hi'`, plus the sleep's pid on stderr.
    started = time.monotonic()
    result = run(
        ["sh", "-c", "sleep 30 & echo $! >&2; echo hi"], capture_output=True, io_drain_timeout=0.5
    )
    took = time.monotonic() - started
    os.kill(int(result.stderr), signal.SIGKILL)  # the orphan is init's to reap
    assert (result.returncode, result.stdout, result.termination) == (0, b"hi\n", None)
    assert 0.45 < took < 10  # about 0.5 s; nowhere near the sleep's 30 s


def test_run_io_drain_timeout_None_waits_for_EOF_like_subprocess_run() -> None:
    result = run(
        ["sh", "-c", "(sleep 0.3; echo late) & echo early"],
        capture_output=True,
        io_drain_timeout=None,
    )
    assert result.stdout == b"early\nlate\n"


def test_run_io_drain_timeout_0_keeps_what_the_command_wrote_before_it_exited() -> None:
    # No drain time: nothing written later is waited for, but what the command
    # itself wrote is in the pipes already. It used to be lost whenever the
    # I/O thread had not read it by the time the exit was seen (a third of
    # the runs here, all of stderr).
    script = "import sys; sys.stdout.write('x' * 3_000_000); sys.stderr.write('e' * 100_000)"
    for _ in range(20):
        result = run(child_script(script), capture_output=True, io_drain_timeout=0)
        assert (len(result.stdout), len(result.stderr)) == (3_000_000, 100_000)


# -- interruption and check=True


def test_run_timeout_with_a_child_that_traps_SIGINT_returns_its_status_and_output() -> None:
    with signals_held(signal.SIGINT):
        result = run(
            TRAPS_SIGINT_EXITS_42_AFTER_100MS, capture_output=True, timeout=0.3, interrupt_grace=20
        )
    assert (result.returncode, result.termination) == (42, TerminationReason.TIMEOUT)
    assert result.stdout == b"ready\n"
    assert result.outcome.killed_at is None
    assert result.outcome.interrupted_at is not None
    assert result.outcome.interrupted_at > 0.3


def test_run_timeout_check_True_raises_ProcessTimedOut_with_the_partial_output() -> None:
    with signals_held(signal.SIGINT), pytest.raises(ProcessTimedOut) as caught:
        run(TRAPS_SIGINT_EXITS_42_AFTER_100MS, capture_output=True, timeout=0.3, check=True)
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert (error.output, error.stdout, error.stderr) == (b"ready\n", b"ready\n", b"")
    assert error.cmd == TRAPS_SIGINT_EXITS_42_AFTER_100MS
    assert (error.returncode, error.outcome.termination) == (42, TerminationReason.TIMEOUT)
    assert error.errno is None  # not an OSError's errno, although a TimeoutError
    assert "timed out, then exited with 42" in str(error)


def test_run_child_that_ignores_SIGINT_is_killed_after_the_grace() -> None:
    with signals_held(signal.SIGINT):
        result = run(IGNORES_SIGINT, capture_output=True, timeout=0.1, interrupt_grace=0.3)
    outcome = result.outcome
    assert (result.returncode, result.termination) == (-signal.SIGKILL, TerminationReason.TIMEOUT)
    assert outcome.interrupted_at is not None
    assert outcome.killed_at is not None
    assert outcome.killed_at - outcome.interrupted_at > 0.3
    assert result.stdout == b"ready\n"


def test_run_cancellation_check_True_raises_ProcessCancelled_with_the_output() -> None:
    token = CancelToken()
    timer = threading.Timer(0.3, token.cancel)
    timer.start()
    with token, signals_held(signal.SIGINT), pytest.raises(ProcessCancelled) as caught:
        run(DIES_ON_SIGINT, capture_output=True, cancellation=token, check=True)
    timer.join()
    assert not isinstance(caught.value, TimeoutError)
    assert caught.value.output == b"ready\n"
    assert caught.value.returncode == -signal.SIGINT
    assert caught.value.outcome.termination is TerminationReason.CANCELLED


def test_run_nonzero_exit_check_True_raises_CalledProcessError_with_the_output() -> None:
    with pytest.raises(subprocess.CalledProcessError) as caught:
        run(["sh", "-c", "echo o; echo e >&2; exit 3"], capture_output=True, check=True)
    assert (caught.value.returncode, caught.value.output, caught.value.stderr) == (
        3,
        b"o\n",
        b"e\n",
    )


def test_run_check_True_returns_the_result_of_a_clean_exit() -> None:
    assert run(["true"], check=True, timeout=10).returncode == 0


def test_RunResult_check_returncode_raises_what_check_True_would() -> None:
    result = run(DIES_ON_SIGINT, capture_output=True, timeout=0.2)
    assert result.termination is TerminationReason.TIMEOUT
    with pytest.raises(ProcessTimedOut):
        result.check_returncode()
    failed = run(["false"])
    with pytest.raises(subprocess.CalledProcessError):
        failed.check_returncode()


def test_run_abandoned_wait_returns_None_and_check_raises_the_timeout(tmp_path: Path) -> None:
    # Signals that never land: the child outlives the "kill", and run() gives up.
    pidfile = tmp_path / "pid"
    with pytest.warns(ResourceWarning, match="is still running"):
        result = _run_and_collect(
            ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"],
            timeout=0.05,
            interrupt_grace=0,
            abandon_after=0.1,
            soft_interrupt=lambda child: None,
            hard_kill=lambda child: None,
        )
    pid = int(_wait_for_text(pidfile))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # its Popen is gone: reap it here
    assert (result.returncode, result.outcome.abandoned) == (None, True)
    assert result.termination is TerminationReason.TIMEOUT
    with pytest.raises(ProcessTimedOut, match="was abandoned after the hard kill") as caught:
        result.check_returncode()
    assert caught.value.returncode is None


def _run_and_collect(args: list[str], **kwargs: Any) -> RunResult:
    result = run(args, **kwargs)
    gc.collect()  # the dropped Popen of an abandoned child warns now, not in a later test
    return result


def _wait_for_text(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.01)
    return path.read_text()


def test_RunResult_repr_shows_termination_and_truncation() -> None:
    outcome = WaitOutcome(-2, TerminationReason.TIMEOUT, 1.0, 0.5, None)
    result = RunResult(["x"], outcome, b"o", None, output_truncated=True)
    assert repr(result) == (
        "RunResult(args=['x'], returncode=-2, termination=TerminationReason.TIMEOUT, "
        "stdout=b'o', output_truncated=True)"
    )


# -- validation: nothing is started


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": -1}, ValueError, r"^timeout must be >= 0 seconds, got -1"),
        ({"interrupt_grace": "2"}, TypeError, r"^interrupt_grace must be seconds"),
        ({"poll_interval": 0}, ValueError, r"^poll_interval must be > 0 seconds, got 0"),
        ({"abandon_after": float("nan")}, ValueError, r"^abandon_after must be a finite"),
        ({"io_drain_timeout": -0.5}, ValueError, r"^io_drain_timeout must be >= 0 seconds"),
        ({"output_limit": 0}, ValueError, r"^output_limit must be > 0 bytes, got 0"),
        ({"output_limit": 1.5}, TypeError, r"^output_limit must be a number of bytes"),
        ({"output_limit": True}, TypeError, r"^output_limit must be a number of bytes"),
        ({"input": "text"}, TypeError, r"^input must be bytes-like .*got str"),
        ({"input": b"x", "text": True}, TypeError, r"^input must be a str in text mode"),
        ({"input": b"x", "stdin": subprocess.DEVNULL}, ValueError, r"^stdin and input"),
        ({"capture_output": True, "stderr": 1}, ValueError, r"with capture_output"),
        ({"text": True, "universal_newlines": False}, ValueError, r"disagree"),
        ({"encoding": "no-such-codec"}, ValueError, r"unknown encoding"),
        ({"errors": "no-such-handler"}, ValueError, r"unknown encoding or error handler"),
        ({"soft_interrupt": "x"}, TypeError, r"^soft_interrupt must be callable"),
        ({"hard_kill": 1}, TypeError, r"^hard_kill must be callable"),
        ({"cancellation": 5}, TypeError, r"^cancellation must be a CancelToken"),
        ({"no_such_popen_argument": 1}, TypeError, r"no_such_popen_argument"),
    ],
)
def test_run_bad_argument_raises_before_anything_starts(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    marker = tmp_path / "started"
    with pytest.raises(error, match=match):
        run(["touch", str(marker)], **kwargs)
    assert not marker.exists()
    assert zombie_children() == []


def test_run_empty_args_is_a_ValueError() -> None:
    with pytest.raises(ValueError, match="args must name a program"):
        run([])


def test_run_missing_program_raises_FileNotFoundError_and_leaks_nothing() -> None:
    fds = open_fds()
    with pytest.raises(FileNotFoundError):
        run(["/no/such/program"], capture_output=True, input=b"x")
    assert open_fds() == fds


# -- threads, descriptors, exceptions


def _thread_names() -> list[str]:
    return [t.name for t in threading.enumerate()]


def test_run_uses_one_io_thread_with_pipes_and_none_without() -> None:
    seen: list[list[str]] = []

    def look() -> bool:  # a polled cancellation: called in the waiting thread
        seen.append(_thread_names())
        return False

    sleeper = ["sleep", "0.2"]
    run(sleeper, capture_output=True, input=b"x", cancellation=look, poll_interval=0.05)
    assert sum(name.startswith("statewait-io-") for name in seen[-1]) == 1
    for nothing_to_move in ({}, {"input": b""}):  # no pipe; a stdin closed at once
        seen.clear()
        run(sleeper, cancellation=look, poll_interval=0.05, **nothing_to_move)
        assert not any(name.startswith("statewait-io-") for names in seen for name in names)


def test_run_KeyboardInterrupt_escalates_reaps_and_leaks_no_thread_or_fd() -> None:
    fds, threads = open_fds(), threading.active_count()
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run(DIES_ON_SIGINT, capture_output=True, input=b"unread", timeout=30)
    timer.join()
    assert time.monotonic() - started < 10
    assert open_fds() == fds
    assert settle_threads(threads) == threads
    assert zombie_children() == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_2000_sequential_calls_with_capture_leak_no_fds_threads_memory_or_zombies() -> None:
    for i in range(100):  # warm up: lazily created objects, allocator pools
        run(["cat"], input=b"%d" % i, capture_output=True, timeout=30)
    fds, threads, rss = open_fds(), threading.active_count(), rss_kib()
    for i in range(2000):
        result = run(["cat"], input=b"%d" % i, capture_output=True, timeout=30)
        assert result.stdout == b"%d" % i
    assert open_fds() == fds
    assert settle_threads(threads) == threads
    assert zombie_children() == []
    assert rss_kib() - rss < 8 * 1024  # KiB: noise, not growth per call


def test_run_works_from_a_thread_that_is_not_the_main_one() -> None:
    results: list[RunResult] = []
    worker = threading.Thread(
        target=lambda: results.append(run(["echo", "t"], capture_output=True))
    )
    worker.start()
    worker.join()
    assert results[0].stdout == b"t\n"
