"""Signals reach the child and its own group, once each, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statewait import (
    ChildLostError,
    UnsafeSignalError,
    interrupt_group,
    kill_group,
    signal_group,
    spawn,
    wait_for_child,
)
from statewait._signals import check_group

from .conftest import PY, child_script, close_pipes, start_ready

pytestmark = [pytest.mark.real, pytest.mark.timeout(60)]

#: Appends its name to a file on each SIGINT; prints "ready" first.
COUNTS_SIGINT = (
    "import signal, sys, time\n"
    "name, path = sys.argv[1], sys.argv[2]\n"
    "def handler(*_):\n"
    "    with open(path, 'a') as f:\n"
    "        f.write(name + '\\n')\n"
    "signal.signal(signal.SIGINT, handler)\n"
)


@pytest.mark.parametrize("pgid", [0, 1, -5])
def test_check_group_refuses_pgid_0_1_and_negative(pgid: int) -> None:
    with pytest.raises(UnsafeSignalError, match=f"refusing to signal process group {pgid}"):
        check_group(pgid)


def test_check_group_refuses_the_callers_own_group() -> None:
    with pytest.raises(
        UnsafeSignalError, match="refusing to signal the caller's own process group"
    ):
        check_group(os.getpgrp())


def test_signal_group_each_process_in_the_group_gets_the_signal_once(tmp_path: Path) -> None:
    log = tmp_path / "sigint.log"
    child = start_ready(
        [
            PY,
            "-c",
            COUNTS_SIGINT + "import subprocess\n"
            "g = subprocess.Popen([sys.executable, '-c', sys.argv[3], 'grandchild', path],"
            " stdout=subprocess.PIPE, text=True)\n"
            "g.stdout.readline()\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            "child",
            str(log),
            COUNTS_SIGINT + "print('ready', flush=True)\ntime.sleep(60)\n",
        ]
    )
    interrupt_group(child)
    deadline = time.monotonic() + 10
    while not log.exists() or sorted(log.read_text().split()) != ["child", "grandchild"]:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    time.sleep(0.2)  # room for a duplicate to arrive, if one were sent
    assert sorted(log.read_text().split()) == ["child", "grandchild"]
    kill_group(child)
    child.wait()
    close_pipes(child)


def test_signal_group_sends_any_signal_to_the_group() -> None:
    child = spawn(child_script("import time; time.sleep(60)"))
    signal_group(child, signal.SIGTERM)
    assert child.wait(timeout=10) == -signal.SIGTERM


def test_signal_group_after_popen_reaped_the_child_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = spawn(child_script("pass"))
    child.wait()

    def no_signals(*args: object) -> None:
        raise AssertionError(f"a signal was sent: {args}")

    monkeypatch.setattr(os, "killpg", no_signals)
    monkeypatch.setattr(os, "kill", no_signals)
    monkeypatch.setattr(signal, "pidfd_send_signal", no_signals)
    interrupt_group(child)
    kill_group(child)


def test_signal_group_child_in_the_callers_group_goes_through_its_pidfd_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = subprocess.Popen(child_script("import time; time.sleep(60)"))
    sent: list[int] = []
    real = signal.pidfd_send_signal

    def recording(fd: int, sig: int, *args: Any) -> None:
        sent.append(sig)
        real(fd, sig, *args)

    def no_group_signals(*args: object) -> None:
        raise AssertionError(f"a group or pid signal was sent: {args}")

    monkeypatch.setattr(signal, "pidfd_send_signal", recording)
    monkeypatch.setattr(os, "killpg", no_group_signals)
    monkeypatch.setattr(os, "kill", no_group_signals)
    kill_group(child)
    monkeypatch.undo()
    assert child.wait(timeout=10) == -signal.SIGKILL
    assert sent == [0, signal.SIGKILL]  # the liveness proof, then the signal


@pytest.fixture
def stranger(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A live process that is not our child (orphaned, adopted by init), that
    records any SIGINT it receives."""
    log = tmp_path / "stranger.log"
    log.write_text("")
    script = COUNTS_SIGINT + "print('ready', flush=True)\ntime.sleep(60)\n"
    launcher = subprocess.run(
        [
            "sh",
            "-c",
            '"$0" -c "$1" stranger "$2" > "$2.out" 2>&1 < /dev/null & echo $!',
            PY,
            script,
            str(log),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(launcher.stdout)
    deadline = time.monotonic() + 10
    while "ready" not in Path(f"{log}.out").read_text():
        assert time.monotonic() < deadline, "the stranger never became ready"
        time.sleep(0.01)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # not our child
    try:
        yield pid, log
    finally:
        os.kill(pid, signal.SIGKILL)


def _stale_handle(child: subprocess.Popen[Any], stranger_pid: int) -> None:
    """Reap `child` behind Popen's back and let its pid be "reused" by the stranger."""
    os.waitpid(child.pid, 0)
    child.pid = stranger_pid


def test_signal_group_stale_spawned_handle_signals_nobody(
    stranger: tuple[int, Path],
) -> None:
    pid, log = stranger
    child = spawn(child_script("pass"))
    _stale_handle(child, pid)
    interrupt_group(child)  # the kept pidfd names the dead child: ESRCH, nothing sent
    kill_group(child)
    time.sleep(0.2)
    assert log.read_text() == ""
    os.kill(pid, 0)  # the stranger lives
    child.returncode = 0  # let the stale Popen go quietly


def test_signal_group_stale_plain_popen_handle_is_refused(stranger: tuple[int, Path]) -> None:
    pid, log = stranger
    child = subprocess.Popen(child_script("pass"))
    _stale_handle(child, pid)
    with pytest.raises(ChildLostError, match=f"pid {pid} is not a child of this process"):
        interrupt_group(child)
    with pytest.raises(ChildLostError):
        wait_for_child(child)
    # The pidfd opened for the check named the stranger: it was not kept, so
    # asking again is refused again rather than signalling through it.
    with pytest.raises(ChildLostError):
        interrupt_group(child)
    time.sleep(0.2)
    assert log.read_text() == ""
    os.kill(pid, 0)
    child.returncode = 0
