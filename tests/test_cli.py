"""The `statewait` command: grammar, exit statuses, --json, signals sent to it.

Most cases call main(argv) in this process (fast); signals sent to statewait
itself need their own process, started as `python -m statewait`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from statewait import TerminationReason, WaitOutcome
from statewait._cli import exit_status, main, parse_duration, parse_signal

from .conftest import (
    HAS_A_GRANDCHILD,
    IGNORES_SIGINT,
    PY,
    TRAPS_SIGINT_EXITS_42_AFTER_100MS,
    UNBLOCK,
    Subreaper,
    child_script,
    signals_held,
    zombie_children,
)

pytestmark = [pytest.mark.timeout(60)]

real = pytest.mark.real

#: Prints its pid; on SIGINT says "got INT" and goes on sleeping. Like the
#: children of conftest, it takes a SIGINT that signals_held() kept for it.
REPORTS_SIGINT = child_script(
    "import os, signal, time\n"
    "signal.signal(signal.SIGINT, lambda *_: print('got INT', flush=True))\n"
    "print(os.getpid(), flush=True)\n" + UNBLOCK + "time.sleep(60)\n"
)


def last_json(stderr: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(stderr.strip().splitlines()[-1])
    return report


# -- durations and signals


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 10.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("0", 0.0),
        (".25", 0.25),
        ("1e3ms", 1.0),
    ],
)
def test_parse_duration_accepts_numbers_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "nan",
        "inf",
        "1e999",
        "1x",
        "1.2.3",
        " 1",
        "1 s",
        "s",
        "1S",
        "1min",
        "+1",
        "\u0661",
        "\uff15s",
    ],
)
def test_parse_duration_refuses_anything_else_naming_the_value(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"invalid duration {text!r}")):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("INT", signal.SIGINT),
        ("SIGINT", signal.SIGINT),
        ("sigterm", signal.SIGTERM),
        ("kill", signal.SIGKILL),
        ("9", signal.SIGKILL),
        ("usr1", signal.SIGUSR1),
        (str(signal.SIGRTMIN + 1), signal.SIGRTMIN + 1),
    ],
)
def test_parse_signal_accepts_names_with_or_without_SIG_and_numbers(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize(
    "text", ["FOO", "SIGFOO", "0", "-9", "99999", "", "SIG", "INT2", "\uff12", "\u0669"]
)
def test_parse_signal_refuses_unknown_signals(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"unknown signal {text!r}")):
        parse_signal(text)


# -- exit_status: the table, without processes

TIMEOUT, CANCELLED = TerminationReason.TIMEOUT, TerminationReason.CANCELLED


@pytest.mark.parametrize(
    ("returncode", "termination", "preserve", "signalled", "status"),
    [
        (0, None, False, None, 0),
        (3, None, False, None, 3),
        (-signal.SIGTERM, None, False, None, 143),  # 128+N, like a shell
        (-signal.SIGKILL, None, False, None, 137),
        (-signal.SIGINT, TIMEOUT, False, None, 124),
        (42, TIMEOUT, False, None, 124),
        (0, TIMEOUT, False, None, 124),
        (-signal.SIGKILL, TIMEOUT, False, None, 137),  # GNU timeout: the KILL shows
        (-signal.SIGINT, TIMEOUT, True, None, 130),
        (42, TIMEOUT, True, None, 42),
        (-signal.SIGINT, CANCELLED, False, signal.SIGINT, 130),
        (0, CANCELLED, False, signal.SIGTERM, 143),  # a cancelled run never reports success
        (-signal.SIGKILL, CANCELLED, False, signal.SIGINT, 130),
        (0, CANCELLED, True, signal.SIGTERM, 0),
        (None, TIMEOUT, False, None, 125),  # abandoned: it may still run
        (None, CANCELLED, True, signal.SIGINT, 125),
    ],
)
def test_exit_status_follows_GNU_timeout(
    returncode: int | None,
    termination: TerminationReason | None,
    preserve: bool,
    signalled: int | None,
    status: int,
) -> None:
    outcome = WaitOutcome(returncode, termination, 1.0, 0.5, None, abandoned=returncode is None)
    assert exit_status(outcome, preserve_status=preserve, signalled=signalled) == status


# -- exit statuses with real commands, in this process


@real
@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["--", "true"], 0),
        (["--", "sh", "-c", "exit 3"], 3),
        (["sh", "-c", "exit 4"], 4),  # `--` may be left out, as with GNU timeout
        (["--timeout", "1e300", "--grace", "1e300", "--", "sh", "-c", "exit 5"], 5),  # far off
        (["--timeout", "0.2", "--", "sleep", "10"], 124),
        (["--timeout", "0.2", "--preserve-status", "--", "sleep", "10"], 128 + signal.SIGINT),
        (["--timeout", "0.2", "--signal", "TERM", "--", "sleep", "10"], 124),
        (["--timeout", "0.2", "--signal", "15", "--preserve-status", "--", "sleep", "10"], 143),
        (["--timeout", "0", "--", "sh", "-c", "sleep 0.2; exit 5"], 5),  # 0: no timeout
        (["--", "sh", "-c", "kill -9 $$"], 128 + 9),
        (["--", "sh", "-c", "kill -TERM $$"], 128 + 15),
    ],
)
def test_main_exit_status_of_a_command(
    argv: list[str], status: int, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", *argv]) == status
    assert capfd.readouterr().err == ""  # statewait itself says nothing


@real
@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["--timeout", "0.2", "--", *TRAPS_SIGINT_EXITS_42_AFTER_100MS], 124),
        (["--timeout", "0.2", "--preserve-status", "--", *TRAPS_SIGINT_EXITS_42_AFTER_100MS], 42),
        (["--timeout", "0.2", "--grace", "0.2", "--", *IGNORES_SIGINT], 137),
        (["--timeout", "0.2", "--grace", "0", "--kill-signal", "TERM", "--", *IGNORES_SIGINT], 124),
        (["--timeout", "0.2", "--grace", "0", "--kill-signal", "TERM", "--preserve-status", "--",
          *IGNORES_SIGINT], 143),
    ],
)  # fmt: skip
def test_main_exit_status_of_a_command_that_handles_SIGINT(
    argv: list[str], status: int, capfd: pytest.CaptureFixture[str]
) -> None:
    with signals_held(signal.SIGINT):
        assert main(["run", *argv]) == status
    assert capfd.readouterr().err == ""


@real
def test_main_command_not_found_exits_127_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--", "/no/such/program", "arg"]) == 127
    err = capsys.readouterr().err
    assert err == "statewait: failed to run command '/no/such/program': No such file or directory\n"


def test_main_empty_command_name_exits_127_like_gnu_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `statewait run -- "$UNSET"`: Popen reports exec's search of PATH for ""
    # as EACCES (each directory "is" the program), so it said "Permission
    # denied" and 126; execvp and GNU timeout say ENOENT, 127.
    assert main(["run", "--", ""]) == 127
    err = capsys.readouterr().err
    assert err == "statewait: failed to run command '': No such file or directory\n"


@real
def test_main_command_not_executable_exits_126(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\ntouch started\n")
    script.chmod(0o644)
    assert main(["run", "--", str(script)]) == 126
    assert main(["run", "--", str(tmp_path)]) == 126  # a directory
    assert capsys.readouterr().err.count("Permission denied\n") == 2
    assert zombie_children() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--timeout", "abc", "--"], "argument --timeout: invalid duration 'abc'"),
        (["run", "--timeout", "-1", "--"], "argument --timeout: invalid duration '-1'"),
        (["run", "--timeout", "nan", "--"], "argument --timeout: invalid duration 'nan'"),
        (["run", "--grace", "5 s", "--"], "argument --grace: invalid duration '5 s'"),
        (["run", "--abandon-after", "1y", "--"], "argument --abandon-after: invalid duration"),
        (["run", "--poll-interval", "0", "--"], "argument --poll-interval: invalid duration '0'"),
        (["run", "--signal", "FOO", "--"], "argument --signal: unknown signal 'FOO'"),
        (["run", "--kill-signal", "SIGNOPE", "--"], "argument --kill-signal: unknown signal"),
        (["run", "--bogus", "--"], "unrecognized arguments: --bogus"),
        (["walk", "--"], "argument COMMAND: invalid choice: 'walk'"),
    ],
)
def test_main_bad_usage_exits_125_with_one_line_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    marker = tmp_path / "started"
    assert main([*argv, "touch", str(marker)]) == 125
    err = capsys.readouterr().err
    assert err.startswith(f"statewait: {message}")
    assert err.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv", [[], ["run"], ["run", "--"], ["run", "--timeout", "1", "--"], ["run", "--timeout"]]
)
def test_main_missing_command_exits_125(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 125
    err = capsys.readouterr().err
    assert err.startswith("statewait: ")
    assert any(
        reason in err
        for reason in ("required: COMMAND", "missing the command to run", "expected one argument")
    )
    assert err.count("\n") == 1


#: A command that prints its arguments, some of which look like statewait's.
PRINTS_ITS_ARGUMENTS = ["sh", "-c", "printf '%s\\n' \"$@\"", "sh", "--timeout=--", "--x=--", "--"]


@pytest.mark.parametrize("options", [[], ["--timeout", "5", "--json"], ["--time", "5", "--"]])
def test_main_the_commands_own_arguments_are_never_taken_for_statewaits(
    capfd: pytest.CaptureFixture[str], options: list[str]
) -> None:
    # Without "--", the command starts at the first word that is not an option:
    # what follows is its own, even "--timeout=--" or a lone "--".
    assert main(["run", *options, *PRINTS_ITS_ARGUMENTS]) == 0
    assert capfd.readouterr().out == "--timeout=--\n--x=--\n--\n"


@pytest.mark.parametrize("option", ["--timeout=--", "--time=--", "--grace=--", "--signal=--"])
def test_main_dashdash_as_the_value_of_its_own_option_exits_125_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    marker = tmp_path / "started"
    assert main(["run", option, "touch", str(marker)]) == 125
    assert capsys.readouterr().err.startswith(f"statewait: invalid value '--' for {option[:-3]}")
    assert not marker.exists()


def test_main_help_shows_examples_and_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "statewait run --timeout 10 -- make test" in out
    for status in ("124", "125", "126", "127", "128+N"):
        assert status in out
    assert main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    from statewait import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"statewait {__version__}\n"


# -- --json


@real
def test_main_json_reports_a_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--timeout", "200ms", "--json", "--", "sleep", "10"]) == 124
    report = last_json(capsys.readouterr().err)
    assert list(report) == [
        "returncode",
        "termination",
        "elapsed",
        "interrupted_at",
        "killed_at",
        "abandoned",
        "exit_status",
    ]
    assert (report["returncode"], report["termination"]) == (-signal.SIGINT, "timeout")
    assert (report["killed_at"], report["abandoned"], report["exit_status"]) == (None, False, 124)
    assert 0.2 < report["interrupted_at"] <= report["elapsed"] < 10


@real
def test_main_json_reports_a_plain_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--json", "--", "sh", "-c", "exit 7"]) == 7
    report = last_json(capsys.readouterr().err)
    assert report["returncode"] == report["exit_status"] == 7
    assert (report["termination"], report["interrupted_at"], report["killed_at"]) == (None,) * 3


# -- as a process: python -m statewait, and signals sent to it


def statewait(*argv: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "statewait", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@real
def test_python_m_statewait_exits_with_the_commands_status() -> None:
    assert finish(statewait("run", "--", "sh", "-c", "echo hi; exit 9")) == (9, "hi\n", "")
    code, _, err = finish(statewait("run", "--", "/no/such/program"))
    assert (code, err.count("\n")) == (127, 1)


@real
def test_statewait_started_with_SIGINT_ignored_still_interrupts_the_command_with_it() -> None:
    # As a background job of a non-interactive shell: SIGINT is ignored. The
    # command must not inherit that, or the soft interrupt would do nothing
    # and every timeout would end in SIGKILL; statewait itself keeps ignoring it.
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            f"trap '' INT; exec {PY} -m statewait run --timeout 1 --grace 20 --json -- sleep 30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # ignored by statewait: no cancellation
    code, _, err = finish(proc)
    report = last_json(err)
    assert code == 124
    assert (report["termination"], report["killed_at"]) == ("timeout", None)
    assert report["returncode"] == -signal.SIGINT
    assert report["elapsed"] < 20


@real
def test_python_m_statewait_bad_usage_exits_125_and_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    code, _, err = finish(statewait("run", "--timeout", "10x", "--", "touch", str(marker)))
    assert code == 125
    assert err == (
        "statewait: argument --timeout: invalid duration '10x': expected a number of seconds "
        "with an optional unit: 10, 1.5s, 500ms, 2m, 1h, 1d (see 'statewait run --help')\n"
    )
    assert not marker.exists()


@real
def test_SIGINT_to_statewait_interrupts_the_commands_whole_group_and_exits_130(
    subreaper: Subreaper,
) -> None:
    proc = statewait("run", "--json", "--", *HAS_A_GRANDCHILD)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C: statewait alone gets it
    code, _, err = finish(proc)
    report = last_json(err)
    assert code == 130
    assert (report["termination"], report["returncode"]) == ("cancelled", -signal.SIGINT)
    assert report["killed_at"] is None
    # The command's child, orphaned and adopted here, died of the same SIGINT.
    status = subreaper.wait_for(grandchild)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGINT


@real
def test_SIGTERM_to_statewait_cancels_too_and_exits_143() -> None:
    proc = statewait("run", "--json", "--", *TRAPS_SIGINT_EXITS_42_AFTER_100MS)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 143  # the command exited 42 after the soft interrupt: not a success
    assert (last_json(err)["returncode"], last_json(err)["termination"]) == (42, "cancelled")


@real
def test_SIGINT_with_preserve_status_exits_with_the_commands_status() -> None:
    proc = statewait("run", "--preserve-status", "--", *TRAPS_SIGINT_EXITS_42_AFTER_100MS)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    assert finish(proc)[0] == 42


@real
@pytest.mark.parametrize(
    ("second", "after_the_interrupt"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["a second Ctrl-C during the grace", "kill -INT; kill -TERM back to back"],
)
def test_second_signal_to_statewait_sends_the_hard_kill_at_once(
    second: signal.Signals, after_the_interrupt: bool
) -> None:
    # Back to back, the second signal lands before the wait has acted on the
    # first: it used to be dropped, and the command got the whole grace.
    started = time.monotonic()
    proc = statewait("run", "--grace", "30", "--json", "--", *REPORTS_SIGINT)
    assert proc.stdout is not None
    proc.stdout.readline()  # the pid: statewait's handlers are in place
    proc.send_signal(signal.SIGINT)
    if after_the_interrupt:
        assert proc.stdout.readline() == "got INT\n"  # the soft interrupt reached the command
    proc.send_signal(second)
    code, _, err = finish(proc)
    report = last_json(err)
    assert code == 130  # the first signal's
    assert (report["returncode"], report["termination"]) == (-signal.SIGKILL, "cancelled")
    assert report["interrupted_at"] <= report["killed_at"] <= report["elapsed"]
    assert time.monotonic() - started < 20  # not the 30 s grace


@real
def test_signal_to_statewait_during_a_timeouts_grace_escalates() -> None:
    # SIGINT held: statewait passes the mask on to the command, which takes the
    # timeout's SIGINT once ready; statewait itself is then signalled with SIGTERM.
    with signals_held(signal.SIGINT):
        proc = statewait(
            "run", "--timeout", "0.2", "--grace", "30", "--json", "--", *REPORTS_SIGINT
        )
    assert proc.stdout is not None
    proc.stdout.readline()
    assert proc.stdout.readline() == "got INT\n"  # the timeout's soft interrupt
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    report = last_json(err)
    assert (report["returncode"], report["termination"]) == (-signal.SIGKILL, "timeout")
    assert code == 137  # a timeout that needed SIGKILL, as GNU timeout reports it
    assert report["elapsed"] < 20


@real
def test_abandoned_command_exits_125_and_says_so(subreaper: Subreaper) -> None:
    # INT and USR1 ignored, and USR1 is the "hard kill": it never lands.
    stubborn = child_script(
        "import os, signal, time\n"
        "for s in (signal.SIGINT, signal.SIGUSR1): signal.signal(s, signal.SIG_IGN)\n"
        "print(os.getpid(), flush=True)\n" + UNBLOCK + "time.sleep(60)\n"
    )
    with signals_held(signal.SIGINT, signal.SIGUSR1):
        proc = statewait(
            "run", "--timeout", "0.1", "--grace", "0.1", "--kill-signal", "USR1",
            "--abandon-after", "0.2", "--json", "--", *stubborn,
        )  # fmt: skip
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    try:
        proc.wait(timeout=30)  # statewait gives up and exits; the command runs on
    finally:
        os.kill(pid, signal.SIGKILL)  # it holds our pipes: only then do they reach EOF
    code, _, err = finish(proc)
    subreaper.wait_for(pid)  # orphaned when statewait exited; adopted here
    assert code == 125
    assert f"statewait: gave up on {PY!r} (pid {pid}): still running" in err
    report = last_json(err)
    assert (report["abandoned"], report["returncode"], report["exit_status"]) == (True, None, 125)
