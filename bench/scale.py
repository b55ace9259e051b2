"""Many children at once: exit detection, threads and descriptors.

Starts N real children (1,000 by default) that exit at random times, some of
them timing out (and some of those ignoring SIGINT, so they are killed after
the grace), and waits for all of them with each contender:

- ``Supervisor``: statewait.Supervisor, one thread for every child;
- ``aio``: statewait.aio.wait_for_child, one task per child on one loop;
- ``threads``: a thread per child running statewait.wait_for_child;
- ``psutil``: psutil.wait_procs (exit detection only: it has no timeouts or
  signals, so the children that would time out are killed afterwards), if
  psutil is installed (``pip install -e ".[bench]"``).

Each child records time.monotonic() just before os._exit (CLOCK_MONOTONIC is
system-wide on Linux) in a shared file; the contender records when it learnt
of the exit. Exit detection = the difference, over the children that exit by
themselves. The children start together: each one waits on a shared pipe
until every child is ready, so their Python start-up does not load the
machine while exits are measured.

Usage:
    python -m bench.scale [--children N] [--only supervisor,aio,threads,psutil]

Prints one row per contender: outcomes that match the plan, exit detection
p50/p99/max (ms), how late the timeouts' soft interrupts were (p99, ms),
threads and descriptors while every child was being waited for (beyond those
before the run; spawn() keeps one pidfd per child, so N of them are the
children's), and the CPU time the process spent while the children exited.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import gc
import importlib
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import statewait
from statewait import (
    Supervisor,
    TerminationReason,
    WaitEvent,
    WaitOptions,
    WaitOutcome,
    aio,
    spawn,
)

from ._report import Table

#: The child: says it is ready, waits for the start, sleeps, records the time, exits.
CHILD = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN if sys.argv[3] == "1" else signal.SIG_DFL)
os.write(1, b"r\\n")
os.read(0, 1)
time.sleep(float(sys.argv[1]))
os.write(1, b"x %d %.9f\\n" % (os.getpid(), time.monotonic()))
os._exit(int(sys.argv[2]))
"""

#: Children that would time out sleep this long (they are interrupted first).
LONG_SLEEP = 120.0
#: Voluntary exits begin this long after the start line: 1,000 children
#: leaving the start line together keep both CPUs busy for a while, which no
#: waiter can help. They spread over `--spread` seconds from there.
FIRST_EXIT = 0.3
#: Timeouts begin this long after the wait's start and spread over 3/4 of
#: `--spread` (not all at one instant: 100 children killed together cost the
#: kernel ~25 ms of teardown on 2 CPUs, which delays every exit around them,
#: whoever waits). The other children have NO_TIMEOUT.
FIRST_TIMEOUT = 1.0
NO_TIMEOUT = 60.0
GRACE = 0.5


@dataclass(frozen=True)
class Plan:
    """What one child will do, and what its wait must report."""

    delay: float
    code: int
    times_out: bool
    ignores_sigint: bool
    timeout: float = NO_TIMEOUT

    @property
    def argv(self) -> list[str]:
        sleep = LONG_SLEEP if self.times_out else self.delay
        return [
            sys.executable,
            "-I",
            "-S",
            "-c",
            CHILD,
            f"{sleep:.6f}",
            str(self.code),
            "1" if self.ignores_sigint else "0",
        ]

    @property
    def options(self) -> WaitOptions:
        return WaitOptions(timeout=self.timeout, interrupt_grace=GRACE)

    @property
    def expected(self) -> tuple[int, TerminationReason | None]:
        if not self.times_out:
            return self.code, None
        return (-9 if self.ignores_sigint else -2), TerminationReason.TIMEOUT


def make_plans(
    n: int, seed: int, timeout_every: int, ignore_every: int, spread: float
) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for i in range(n):
        times_out = timeout_every > 0 and i % timeout_every == 0
        plans.append(
            Plan(
                delay=rng.uniform(FIRST_EXIT, FIRST_EXIT + spread),
                code=rng.randrange(4),
                times_out=times_out,
                ignores_sigint=times_out and ignore_every > 0 and i % ignore_every == 0,
                timeout=(
                    rng.uniform(FIRST_TIMEOUT, FIRST_TIMEOUT + 0.75 * spread)
                    if times_out
                    else NO_TIMEOUT
                ),
            )
        )
    return plans


@dataclass
class Result:
    """One contender's figures."""

    name: str
    matched: int = 0
    total: int = 0
    detection_ms: list[float] = field(default_factory=list)
    timeout_late_ms: list[float] = field(default_factory=list)
    threads: int = 0
    os_threads: int = 0
    fds: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


class Batch:
    """N children started and held at a shared start line."""

    #: The start pipe's write end, open until start(): not the contender's.
    HARNESS_FDS = 1

    def __init__(self, plans: Sequence[Plan], workdir: Path) -> None:
        self.plans = plans
        self.log = workdir / f"exits-{time.monotonic_ns()}.log"
        log_fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        start_read, self._start_write = os.pipe()
        try:
            self.children = [
                spawn(p.argv, stdin=start_read, stdout=log_fd, stderr=subprocess.DEVNULL)
                for p in plans
            ]
        finally:
            os.close(start_read)
            os.close(log_fd)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log.read_bytes().count(b"r\n") < len(self.children):
            if time.monotonic() > deadline:
                raise RuntimeError("the children did not become ready")
            time.sleep(0.05)

    def start(self) -> None:
        """Let every child go: each one reads EOF from the start pipe at once."""
        os.close(self._start_write)

    def exit_times(self) -> dict[int, float]:
        times = {}
        for line in self.log.read_text().splitlines():
            if line.startswith("x "):
                _, pid, at = line.split()
                times[int(pid)] = float(at)
        return times


def snapshot(result: Result, before_fds: int, before_threads: int) -> None:
    result.threads = threading.active_count() - before_threads
    result.os_threads = _os_threads()
    result.fds = _open_fds() - before_fds - Batch.HARNESS_FDS


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def measured(result: Result) -> Iterator[None]:
    cpu, wall = _cpu(), time.monotonic()
    yield
    result.cpu_s, result.wall_s = _cpu() - cpu, time.monotonic() - wall


def score(
    result: Result,
    batch: Batch,
    outcomes: dict[int, WaitOutcome | int],
    detected: dict[int, float],
) -> None:
    """Compare outcomes with the plan; compute detection and timeout lateness."""
    exits = batch.exit_times()
    result.total = len(batch.plans)
    for child, plan in zip(batch.children, batch.plans, strict=True):
        got = outcomes.get(child.pid)
        if isinstance(got, WaitOutcome):
            matched = (got.returncode, got.termination) == plan.expected
            if plan.times_out and got.interrupted_at is not None:
                result.timeout_late_ms.append((got.interrupted_at - plan.timeout) * 1e3)
        else:  # psutil: a returncode, for the children that exit by themselves
            matched = plan.times_out or got == plan.code
        result.matched += matched
        if not plan.times_out and child.pid in exits and child.pid in detected:
            result.detection_ms.append((detected[child.pid] - exits[child.pid]) * 1e3)


# -- the contenders


def bench_supervisor(batch: Batch, result: Result, before: tuple[int, int]) -> None:
    detected: dict[int, float] = {}
    futures: dict[int, concurrent.futures.Future[WaitOutcome]] = {}
    with Supervisor() as sup:
        for child, plan in zip(batch.children, batch.plans, strict=True):
            future = sup.watch(child, plan.options)
            future.add_done_callback(functools.partial(_stamp_future, detected, child.pid))
            futures[child.pid] = future
        # Requests are handled in order: once a later watch is done, every
        # child above is registered (its first look made) before the start.
        sup.watch(spawn(["true"])).result()
        snapshot(result, *before)
        with measured(result):
            batch.start()
            outcomes: dict[int, WaitOutcome | int] = {pid: f.result() for pid, f in futures.items()}
    score(result, batch, outcomes, detected)


def bench_aio(batch: Batch, result: Result, before: tuple[int, int]) -> None:
    detected: dict[int, float] = {}

    async def one(child: subprocess.Popen[Any], plan: Plan) -> WaitOutcome:
        outcome = await aio.wait_for_child(child, plan.options)
        _stamp(detected, child.pid)
        return outcome

    async def main() -> list[WaitOutcome]:
        tasks = [
            asyncio.ensure_future(one(c, p))
            for c, p in zip(batch.children, batch.plans, strict=True)
        ]
        # The tasks' first steps run before this coroutine resumes: every
        # child is registered (its first look made) before the start.
        await asyncio.sleep(0.1)
        snapshot(result, *before)
        with measured(result):
            batch.start()
            return await asyncio.gather(*tasks)

    got = asyncio.run(main())
    outcomes: dict[int, WaitOutcome | int] = {
        c.pid: o for c, o in zip(batch.children, got, strict=True)
    }
    score(result, batch, outcomes, detected)


def bench_threads(batch: Batch, result: Result, before: tuple[int, int]) -> None:
    detected: dict[int, float] = {}
    outcomes: dict[int, WaitOutcome | int] = {}

    waiting = threading.Semaphore(0)

    def started(event: WaitEvent) -> None:
        if event.kind == "start":
            waiting.release()

    def one(child: subprocess.Popen[Any], plan: Plan) -> None:
        outcome = statewait.wait_for_child(child, plan.options, observer=started)
        _stamp(detected, child.pid)
        outcomes[child.pid] = outcome

    threads = [
        threading.Thread(target=one, args=(c, p), daemon=True)
        for c, p in zip(batch.children, batch.plans, strict=True)
    ]
    for thread in threads:
        thread.start()
    for _ in threads:
        waiting.acquire()  # every thread has begun its wait ...
    time.sleep(0.1)  # ... and made its first look (right after "start") before the start
    snapshot(result, *before)
    with measured(result):
        batch.start()
        for thread in threads:
            thread.join()
    score(result, batch, outcomes, detected)


def bench_psutil(batch: Batch, result: Result, before: tuple[int, int]) -> None:
    import psutil  # type: ignore[import-untyped]  # an optional bench dependency

    detected: dict[int, float] = {}
    returncodes: dict[int, int] = {}
    procs = [psutil.Process(c.pid) for c in batch.children]

    def gone(proc: psutil.Process) -> None:
        _stamp(detected, proc.pid)
        returncodes[proc.pid] = proc.returncode

    snapshot(result, *before)
    with measured(result):
        batch.start()
        last_exit = max(p.delay for p in batch.plans if not p.times_out)
        _, alive = psutil.wait_procs(procs, timeout=last_exit + 1.0, callback=gone)
    # psutil reaped the children behind their Popens: tell them, and kill the rest.
    for child in batch.children:
        if child.pid in returncodes:
            child.returncode = returncodes[child.pid]
            statewait._child.release(child)
    for proc in alive:
        os.killpg(proc.pid, 9)
    for child in batch.children:
        child.wait()
    score(result, batch, dict(returncodes), detected)


def _stamp(detected: dict[int, float], pid: int) -> None:
    detected[pid] = time.monotonic()


def _stamp_future(detected: dict[int, float], pid: int, _: object) -> None:
    _stamp(detected, pid)  # a done-callback: on the supervisor thread, as it learns the exit


CONTENDERS: dict[str, Callable[[Batch, Result, tuple[int, int]], None]] = {
    "supervisor": bench_supervisor,
    "aio": bench_aio,
    "threads": bench_threads,
    "psutil": bench_psutil,
}


def run_contender(name: str, plans: Sequence[Plan], workdir: Path) -> Result:
    gc.collect()
    before = (_open_fds(), threading.active_count())
    batch = Batch(plans, workdir)
    result = Result(name)
    CONTENDERS[name](batch, result, before)
    return result


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(results: Sequence[Result], plans: Sequence[Plan], spread: float, repeat: int) -> str:
    timing_out = sum(p.times_out for p in plans)
    ignoring = sum(p.ignores_sigint for p in plans)
    voluntary = len(plans) - timing_out
    lines = [
        f"statewait scale benchmark: {len(plans)} children; {voluntary} exit by themselves "
        f"{FIRST_EXIT:g}-{FIRST_EXIT + spread:g} s after the start line "
        f"(~{voluntary / spread:.0f} exits/s); {timing_out} time out after "
        f"{FIRST_TIMEOUT:g}-{FIRST_TIMEOUT + 0.75 * spread:g} s, {ignoring} of them ignore "
        f"SIGINT and are killed after a {GRACE:g} s grace",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        "",
        f"{'contender':<11} {'outcomes':>10} {'detect p50':>10} {'p99':>7} {'max':>7} "
        f"{'timeout p99':>11} {'threads':>7} {'OS thr':>6} {'fds':>6} {'cpu s':>6} {'wall s':>6}",
    ]
    for r in results:
        late = f"{percentile(r.timeout_late_ms, 99):.2f}" if r.timeout_late_ms else "-"
        lines.append(
            f"{r.name:<11} {f'{r.matched}/{r.total}':>10} "
            f"{percentile(r.detection_ms, 50):>10.2f} {percentile(r.detection_ms, 99):>7.2f} "
            f"{max(r.detection_ms, default=float('nan')):>7.2f} {late:>11} "
            f"{r.threads:>+7d} {r.os_threads:>6d} {r.fds:>+6d} {r.cpu_s:>6.2f} {r.wall_s:>6.2f}"
        )
    if repeat > 1:
        lines += ["", f"median over {repeat} interleaved runs:"]
        for name in dict.fromkeys(r.name for r in results):
            runs = [r for r in results if r.name == name]
            p99s = [percentile(r.detection_ms, 99) for r in runs]
            p50s = [percentile(r.detection_ms, 50) for r in runs]
            lines.append(
                f"  {name:<11} detect p50 {statistics.median(p50s):.2f} ms, "
                f"p99 {statistics.median(p99s):.2f} ms (p99 of each run: "
                + ", ".join(f"{v:.1f}" for v in p99s)
                + ")"
            )
    lines += [
        "",
        "detect: ms from the child's last time.monotonic() to the contender knowing the exit,",
        "  over the children that exit by themselves; timeout p99: ms the soft interrupt came",
        "  after the timeout; threads: Python threads added while waiting (OS thr: the",
        "  process's total); fds: descriptors added, spawn()'s pidfd per child included;",
        "  cpu s: this process's CPU time from the start line to the last exit.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("--only", default="supervisor,aio,threads,psutil")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--spread", type=float, default=4.0, help="seconds over which the children exit"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the contenders this many times, interleaved"
    )
    parser.add_argument("--timeout-every", type=int, default=10, help="every Nth child times out")
    parser.add_argument(
        "--ignore-every", type=int, default=40, help="every Nth child ignores SIGINT (of those)"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {sorted(unknown)}; known: {sorted(CONTENDERS)}")
    results, plans = measure(
        args.children,
        names,
        seed=args.seed,
        spread=args.spread,
        repeat=args.repeat,
        timeout_every=args.timeout_every,
        ignore_every=args.ignore_every,
    )
    print(report(results, plans, args.spread, args.repeat))
    return 0 if all(r.matched == r.total for r in results) else 1


def measure(
    children: int,
    names: Sequence[str] = tuple(CONTENDERS),
    *,
    seed: int = 6,
    spread: float = 4.0,
    repeat: int = 1,
    timeout_every: int = 10,
    ignore_every: int = 40,
) -> tuple[list[Result], list[Plan]]:
    """Run each contender (psutil only if installed), interleaved `repeat` times."""
    names = list(names)
    if "psutil" in names:
        try:
            importlib.import_module("psutil")
        except ImportError:
            print("psutil is not installed: skipped (pip install -e '.[bench]')", file=sys.stderr)
            names.remove("psutil")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = children + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    plans = make_plans(children, seed, timeout_every, ignore_every, spread)
    results = []
    with tempfile.TemporaryDirectory(prefix="statewait-bench-") as workdir:
        for run in range(repeat):
            for name in names:
                print(f"run {run + 1}: {name} ...", file=sys.stderr, flush=True)
                results.append(run_contender(name, plans, Path(workdir)))
    return results, plans


def table(children: int, *, spread: float, repeat: int) -> Table:
    """The scale figures as one table for `python -m bench` (medians over the runs)."""
    results, plans = measure(children, spread=spread, repeat=repeat)
    out = Table(
        f"Scale: {children} concurrent children",
        [
            "method",
            "outcomes right",
            "detect p50 (ms)",
            "detect p99 (ms)",
            "threads added",
            "fds added",
        ],
    )
    for name in dict.fromkeys(r.name for r in results):
        runs = [r for r in results if r.name == name]
        out.add(
            {
                "supervisor": "statewait Supervisor",
                "aio": "statewait.aio",
                "threads": "thread per child (wait_for_child)",
                "psutil": "psutil.wait_procs",
            }.get(name, name),
            f"{sum(r.matched for r in runs)}/{sum(r.total for r in runs)}",
            f"{statistics.median(percentile(r.detection_ms, 50) for r in runs):.2f}",
            f"{statistics.median(percentile(r.detection_ms, 99) for r in runs):.2f}",
            max(r.threads for r in runs),
            max(r.fds for r in runs),
        )
    voluntary = sum(not p.times_out for p in plans)
    out.notes.append(
        f"{voluntary} children exit by themselves over {spread:g} s, "
        f"{children - voluntary} time out (some ignore SIGINT and are killed); "
        f"median of {repeat} interleaved run(s). fds include spawn()'s pidfd per child. "
        "psutil.wait_procs has no timeouts: those children are killed afterwards."
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
