# The `statewait` command line: `statewait run [options] -- CMD [ARG...]`.
#
# This module owns the command's grammar (durations, signal names), its exit
# statuses (GNU timeout's: 124, 125, 126, 127, 128+N), --json, and what
# SIGINT, SIGTERM and SIGHUP sent to statewait itself do. The wait is
# wait_for_child's; the child is spawn()'s; signals go through signal_group.
# It captures nothing: the command inherits statewait's stdin, stdout and
# stderr, as with GNU timeout.
#
# Signals sent to statewait: the command runs in its own process group, so a
# Ctrl-C at the terminal reaches statewait only. The first signal cancels the
# wait (a CancelToken: the soft interrupt to the command's group, the grace,
# the hard kill). One that arrives while the command is already being
# interrupted (a second Ctrl-C, or the first after the timeout fired) raises
# _Escalate in the main thread; the wait loop then sends the hard kill at
# once, reaps the command and re-raises it here, where the timeline recorded
# by the observer still tells what happened.

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

from ._cancel import CancelToken
from ._child import ChildHandle, spawn
from ._options import TerminationReason, WaitOptions, WaitOutcome
from ._real import wait_for_child
from ._signals import signal_group
from ._wait import WaitEvent

__all__ = [
    "EXIT_CANNOT_INVOKE",
    "EXIT_ENOENT",
    "EXIT_FAILURE",
    "EXIT_TIMEDOUT",
    "exit_status",
    "main",
    "parse_duration",
    "parse_signal",
]

#: The command timed out (and --preserve-status was not given).
EXIT_TIMEDOUT = 124
#: statewait itself failed, or was used wrongly; nothing was started.
EXIT_FAILURE = 125
#: The command was found but could not be run.
EXIT_CANNOT_INVOKE = 126
#: The command was not found.
EXIT_ENOENT = 127

#: The signals that cancel the wait when sent to statewait.
_RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?P<unit>ms|s|m|h|d)?",
    re.ASCII,  # digits 0-9 only, as a shell user means them
)
_DURATION_HELP = "a number of seconds with an optional unit: 10, 1.5s, 500ms, 2m, 1h, 1d"

_EXAMPLES = """\
examples:
  statewait run --timeout 10 -- make test
      after 10 s, SIGINT to make's whole process group; SIGKILL 2 s later
  statewait run --timeout 1.5m --grace 10 --signal TERM -- ./server --port 8080
      like `timeout -s TERM -k 10 90 ./server --port 8080`
  statewait run --timeout 500ms --json -- sh -c 'sleep 5'
      exits 124 and writes {"returncode": -2, "termination": "timeout", ...} to stderr
  statewait run -- ./long-job
      no timeout: Ctrl-C interrupts the job's group, a second Ctrl-C kills it

"""
_STATUSES = """
signals: a name, with or without SIG, in any case (INT, SIGTERM, kill), or a number (2).

exit status (as GNU timeout):
  124     the command timed out (unless --preserve-status)
  125     statewait failed or was used wrongly (then nothing was started),
          or it gave up on the command (--abandon-after)
  126     the command was found but could not be run
  127     the command was not found
  128+N   the command was killed by signal N (137: SIGKILL, also after a timeout);
          statewait was stopped by signal N (130: SIGINT, 143: SIGTERM)
  other   the command's own exit status
"""
_EPILOG = f"{_EXAMPLES}durations: {_DURATION_HELP};\n  --timeout 0 means no timeout.{_STATUSES}"
_DESCRIPTION = """\
Start CMD in its own process group and wait for it. When the timeout passes,
or statewait gets SIGINT, SIGTERM or SIGHUP, send the soft interrupt to CMD's
group; if CMD still runs after the grace, send the hard kill, once. A second
signal to statewait during the grace sends the hard kill at once."""


class _UsageError(Exception):
    """Bad usage: reported in one line, exit status 125, nothing started."""


class _Escalate(BaseException):
    """Raised from the signal handler: the wait sends the hard kill at once.

    A BaseException, like KeyboardInterrupt, so that nothing on the way
    mistakes it for an error to handle.
    """


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 125 with one line, as GNU timeout's do."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def parse_duration(text: str) -> float:
    """Parse a command-line duration into seconds.

    Accepts "10", "1.5s", "500ms", "2m", "1h", "1d" (and exponents: "1e3").

    Raises:
        argparse.ArgumentTypeError: anything else, negative, NaN or infinite.
    """
    match = _DURATION.fullmatch(text)
    seconds = float(match["number"]) * _UNITS[match["unit"] or "s"] if match else math.nan
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected {_DURATION_HELP}")
    return seconds


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be more than 0")
    return seconds


def parse_signal(text: str) -> int:
    """Parse a signal name (INT, SIGINT, sigint) or number (2).

    Raises:
        argparse.ArgumentTypeError: not a signal of this system.
    """
    name = text.upper()
    if name.isascii() and name.isdigit():
        if int(name) in signal.valid_signals():
            return int(name)
    else:
        try:
            return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
        except KeyError:
            pass
    raise argparse.ArgumentTypeError(
        f"unknown signal {text!r}: expected a name (INT, SIGTERM) or a number (2)"
    )


def _build_parser() -> _Parser:
    from . import __version__

    parser = _Parser(
        prog="statewait",
        description="Run a command with a timeout; interrupt, then kill, its whole process group.",
        epilog=_EXAMPLES + "Run 'statewait run --help' for every option and the exit statuses.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a command under a timeout",
        description=_DESCRIPTION,
        usage="statewait run [options] -- CMD [ARG...]",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--timeout",
        type=parse_duration,
        default=0.0,
        metavar="D",
        help="interrupt CMD after D (default: no timeout)",
    )
    run.add_argument(
        "--grace",
        type=parse_duration,
        default=2.0,
        metavar="D",
        help="send the hard kill D after the soft interrupt (default: 2s)",
    )
    run.add_argument(
        "--signal",
        type=parse_signal,
        default=signal.SIGINT,
        metavar="SIG",
        help="the soft interrupt sent to CMD's group (default: INT)",
    )
    run.add_argument(
        "--kill-signal",
        type=parse_signal,
        default=signal.SIGKILL,
        metavar="SIG",
        help="the hard kill sent to CMD's group (default: KILL)",
    )
    run.add_argument(
        "--abandon-after",
        type=parse_duration,
        default=None,
        metavar="D",
        help="give up D after the hard kill if CMD still runs (exit 125)",
    )
    run.add_argument(
        "--poll-interval",
        type=_positive_duration,
        default=0.05,
        metavar="D",
        help="how often to look when exits must be polled (default: 50ms)",
    )
    run.add_argument(
        "--preserve-status",
        action="store_true",
        help="exit with CMD's status even when it timed out or was cancelled",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="write the outcome as one JSON object to stderr when CMD ends",
    )
    run.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]", help=argparse.SUPPRESS
    )
    return parser


@dataclass(frozen=True)
class _Request:
    command: list[str]
    options: WaitOptions
    soft_signal: int
    kill_signal: int
    preserve_status: bool
    json: bool


#: The options of `statewait run` that take a value (the next word, or after "=").
_VALUE_OPTIONS = (
    "--timeout",
    "--grace",
    "--signal",
    "--kill-signal",
    "--abandon-after",
    "--poll-interval",
)


def _refuse_dashdash_values(argv: Sequence[str]) -> None:
    """Refuse "--" as the value of one of statewait's own options.

    argparse drops a "--" given as an option's value (--timeout=--) and would
    run the command without the option. Only statewait's own options are
    looked at: they end at "--" or at the command's first word, and what
    follows belongs to the command, whatever it looks like.
    """
    words = iter(argv[1:] if argv[:1] == ["run"] else argv)
    for token in words:
        if token == "--" or not token.startswith("-"):
            return  # the command starts here
        name, equals, value = token.partition("=")
        if equals:
            if value == "--":
                raise _UsageError(f"invalid value '--' for {name} (see 'statewait run --help')")
        elif len(name) > 2 and any(option.startswith(name) for option in _VALUE_OPTIONS):
            next(words, None)  # its value (argparse accepts unambiguous prefixes)


def _parse(argv: Sequence[str]) -> _Request:
    _refuse_dashdash_values(argv)
    args, unknown = _build_parser().parse_known_args(argv)
    if unknown:  # run's own options, before the command: the only place they can be
        raise _UsageError(
            f"unrecognized arguments: {' '.join(unknown)} (see 'statewait run --help')"
        )
    command = list(args.command)
    if command[:1] == ["--"]:
        del command[0]
    if not command:
        raise _UsageError("missing the command to run after '--' (see 'statewait run --help')")
    return _Request(
        command=command,
        options=WaitOptions(
            timeout=args.timeout or None,  # 0 disables the timeout, as with GNU timeout
            interrupt_grace=args.grace,
            poll_interval=args.poll_interval,
            abandon_after=args.abandon_after,
        ),
        soft_signal=args.signal,
        kill_signal=args.kill_signal,
        preserve_status=args.preserve_status,
        json=args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `statewait` command.

    Args:
        argv: the arguments after the program name; default sys.argv[1:].

    Returns:
        The exit status (see `statewait run --help`).
    """
    try:
        request = _parse(sys.argv[1:] if argv is None else argv)
    except _UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    return _run(request)


def _run(request: _Request) -> int:
    timeline = _Timeline()
    with (
        CancelToken() as token,
        _SignalRelay(token, timeline).installed(request.soft_signal) as relay,
    ):
        if relay.first is not None:
            return 128 + relay.first  # stopped before anything was started
        try:
            if not request.command[0]:
                # Popen's PATH search takes every directory for "": EACCES.
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "")
            child = spawn(request.command)
        except OSError as exc:
            return _cannot_run(request.command, exc)
        except (ValueError, TypeError) as exc:  # an embedded NUL byte, say
            return _fail(f"cannot run {request.command[0]!r}: {exc}")
        try:
            outcome = wait_for_child(
                child,
                dataclasses.replace(request.options, cancellation=token),
                soft_interrupt=functools.partial(relay.soft_interrupt, sig=request.soft_signal),
                hard_kill=functools.partial(signal_group, sig=request.kill_signal),
                observer=timeline,
            )
        except _Escalate:
            outcome = timeline.outcome()  # re-raised after the command was reaped
        except Exception as exc:
            return _fail(f"{type(exc).__name__}: {exc}")
    status = exit_status(outcome, preserve_status=request.preserve_status, signalled=relay.first)
    if outcome.abandoned:
        _say(
            f"gave up on {request.command[0]!r} (pid {child.pid}): still running "
            f"{outcome.elapsed - (outcome.killed_at or 0):.3f}s after the hard kill"
        )
    if request.json:
        report = {
            "returncode": outcome.returncode,
            "termination": None if outcome.termination is None else outcome.termination.value,
            "elapsed": outcome.elapsed,
            "interrupted_at": outcome.interrupted_at,
            "killed_at": outcome.killed_at,
            "abandoned": outcome.abandoned,
            "exit_status": status,
        }
        _say(json.dumps(report), prefix="")
    return status


def exit_status(outcome: WaitOutcome, *, preserve_status: bool, signalled: int | None) -> int:
    """The exit status of `statewait run`, as GNU timeout would give it.

    Args:
        outcome: how the wait ended.
        preserve_status: --preserve-status was given.
        signalled: the first signal statewait received, if any.

    Returns:
        125 if the command was abandoned (it may still run). Otherwise its own
        status (128+N if signal N killed it) when it was not interrupted or
        --preserve-status was given, or when a timeout needed SIGKILL (137,
        as GNU timeout reports it); otherwise 124 for a timeout, and 128+N
        for a cancellation by signal N sent to statewait.
    """
    if outcome.returncode is None:
        return EXIT_FAILURE
    own = outcome.returncode if outcome.returncode >= 0 else 128 - outcome.returncode
    if outcome.termination is None or preserve_status:
        return own
    if outcome.termination is TerminationReason.TIMEOUT:
        return own if outcome.returncode == -signal.SIGKILL else EXIT_TIMEDOUT
    assert signalled is not None, "only a signal to statewait cancels the command"
    return 128 + signalled


def _cannot_run(command: list[str], exc: OSError) -> int:
    # Popen reports exec's failure (ENOENT and the rest, with the program as
    # filename) as it would its own; one without a filename is statewait's
    # own failure (fork: EAGAIN, ENOMEM).
    if exc.filename is None:
        return _fail(f"cannot start {command[0]!r}: {exc.strerror or exc}")
    _say(f"failed to run command {command[0]!r}: {exc.strerror or exc}")
    return EXIT_ENOENT if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_INVOKE


def _say(line: str, *, prefix: str = "statewait: ") -> None:
    print(prefix + line, file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    _say(message)
    return EXIT_FAILURE


class _Timeline:
    """The wait's observer: where the wait stands, and its outcome even when
    the wait ends in _Escalate (which carries no outcome)."""

    def __init__(self) -> None:
        self.reason: TerminationReason | None = None
        self.interrupted_at: int | None = None
        self.killed_at: int | None = None
        self.ended_at: int | None = None
        self.returncode: int | None = None
        self.abandoned = False

    def __call__(self, event: WaitEvent) -> None:
        if event.kind == "soft_interrupt":
            assert isinstance(event.detail, TerminationReason)
            self.reason, self.interrupted_at = event.detail, event.at
        elif event.kind == "hard_kill":
            self.killed_at = event.at
        elif event.kind in ("exit", "abandon"):
            self.ended_at, self.abandoned = event.at, event.kind == "abandon"
            self.returncode = event.detail if isinstance(event.detail, int) else None

    @property
    def in_grace(self) -> bool:
        """The soft interrupt was sent; the hard kill not yet; the wait goes on."""
        return self.interrupted_at is not None and self.killed_at is None and self.ended_at is None

    def outcome(self) -> WaitOutcome:
        """The outcome of the finished wait, from its timeline."""
        assert self.ended_at is not None, "_Escalate is re-raised only after the wait ended"
        return WaitOutcome(
            returncode=self.returncode,
            termination=self.reason,
            elapsed=_seconds(self.ended_at),
            interrupted_at=None if self.interrupted_at is None else _seconds(self.interrupted_at),
            killed_at=None if self.killed_at is None else _seconds(self.killed_at),
            abandoned=self.abandoned,
        )


def _seconds(ns: int) -> float:
    return ns / 1e9


def _still_ignored(signum: int, frame: FrameType | None) -> None:
    """Ignores a signal, as SIG_IGN would, without passing SIG_IGN on to exec."""


class _SignalRelay:
    """Turns SIGINT, SIGTERM and SIGHUP sent to statewait into a cancellation
    (the first) or an escalation (one during the grace)."""

    def __init__(self, token: CancelToken, timeline: _Timeline) -> None:
        self._token = token
        self._timeline = timeline
        #: The first relayed signal statewait received.
        self.first: int | None = None
        #: A second one, received before the wait sent the soft interrupt.
        self.early_second: int | None = None

    @contextmanager
    def installed(self, soft_signal: int) -> Iterator[_SignalRelay]:
        """Handle the signals for the duration of the block (main thread only),
        then restore the previous handlers.

        A signal ignored by statewait's caller (SIGHUP under nohup, SIGINT in
        a shell's background job) stays ignored by statewait. But the command
        must not start with `soft_signal` ignored -- exec keeps an ignored
        signal, and the soft interrupt would do nothing -- so an ignored
        soft_signal gets a handler that ignores it: exec resets handlers to
        the default action.
        """
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in _RELAYED:
                handler = signal.getsignal(signum)
                if handler is not signal.SIG_IGN:
                    previous[signum] = handler
                    signal.signal(signum, self._on_signal)
            if soft_signal not in previous and signal.getsignal(soft_signal) is signal.SIG_IGN:
                previous[soft_signal] = signal.SIG_IGN
                signal.signal(soft_signal, _still_ignored)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._timeline.in_grace:
            raise _Escalate(signum)
        if self.first is None:
            self.first = signum
            self._token.cancel()  # safe in a signal handler
        elif self._timeline.ended_at is None:
            # The wait has not acted on the first one yet (`kill -INT; kill
            # -TERM`): raising here would only repeat the cancellation.
            self.early_second = signum

    def soft_interrupt(self, child: ChildHandle, sig: int) -> None:
        """Send the soft interrupt; then escalate at once if a second signal
        came before it went out, as one during the grace would."""
        signal_group(child, sig)
        if self.early_second is not None:
            raise _Escalate(self.early_second)
