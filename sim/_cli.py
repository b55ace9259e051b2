# The `python -m sim` command line.
#
# This module owns the three commands and their exit codes:
#   run PATH...        simulate scenario files (or directories of *.toml),
#                      print each timeline and verdict, then a summary line;
#   explore            search generated scenarios for a broken invariant;
#   bench              time the simulator.
# Exit codes: 0 everything passed; 1 an expectation or an invariant failed
# (or explore found a counterexample); 2 bad input (a malformed scenario
# file, a missing path, a bad option), with a message naming the file, the
# scenario and the field. The work itself lives in the other modules.

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ._files import Case, Expect, ScenarioFileError, load_scenarios, scenario_to_toml
from ._invariants import check_invariants
from ._report import describe, summary, timeline, verdict
from ._simulate import simulate

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="The statewait simulator: the real wait loop on a virtual clock.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="simulate scenario files and check them")
    run.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="a .toml file or a directory of them"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="verdicts only, no timelines")
    explore = commands.add_parser(
        "explore", help="search generated scenarios for a broken invariant"
    )
    explore.add_argument(
        "--examples", type=int, default=1000, metavar="N", help="scenarios to try (default 1000)"
    )
    explore.add_argument(
        "--seed", type=int, metavar="S", help="repeat a search (default: a random seed, printed)"
    )
    explore.add_argument(
        "--mutant", metavar="NAME", help="check a deliberately broken machine (see sim.mutants)"
    )
    explore.add_argument("--no-lateness", action="store_true", help="generate on-time wakeups only")
    bench = commands.add_parser("bench", help="time the simulator")
    bench.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="also time these scenario files"
    )
    bench.add_argument("--seconds", type=float, default=2.0, help="per plain loop (default 2)")
    bench.add_argument(
        "--examples", type=int, default=2000, help="hypothesis examples to time (default 2000)"
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments (default: sys.argv[1:]).
        out: where the report goes (default: sys.stdout); errors go to stderr.

    Returns:
        The exit code.
    """
    out = sys.stdout if out is None else out
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    if args.command == "run":
        return _run(args.paths, quiet=args.quiet, out=out)
    try:
        import hypothesis  # noqa: F401  (explore and bench generate with it)
    except ImportError:
        print(
            f"sim: {args.command} needs hypothesis: pip install 'statewait[sim]'", file=sys.stderr
        )
        return EXIT_USAGE
    if args.command == "explore":
        return _explore(args, out)
    return _bench(args, out)


def _files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.toml"))
            if not found:
                raise ScenarioFileError(path, None, "no *.toml scenario files in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ScenarioFileError(path, None, "not a regular file or a directory of *.toml files")
        else:
            raise ScenarioFileError(path, None, "no such file or directory")
    return files


def _load(paths: Sequence[Path]) -> list[Case] | None:
    """Every case of every file, or None after printing each file's error."""
    try:
        files = _files(paths)
    except ScenarioFileError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return None
    cases: list[Case] = []
    errors = 0
    for file in files:
        try:
            cases.extend(load_scenarios(file))
        except ScenarioFileError as exc:
            print(f"sim: {exc}", file=sys.stderr)
            errors += 1
    return None if errors else cases


def _run(paths: Sequence[Path], *, quiet: bool, out: TextIO) -> int:
    cases = _load(paths)
    if cases is None:
        return EXIT_USAGE
    failed = 0
    for case in cases:
        trace = simulate(case.scenario)
        lines = verdict(case.expect.failures(trace), check_invariants(case.scenario, trace))
        failed += lines[0] == "FAIL"
        print(f"== {case.path} {case.label}", file=out)
        if not quiet:
            print(_indent([describe(case.scenario), *timeline(case.scenario, trace)]), file=out)
        print(f"   {lines[0]}: {summary(trace)}", file=out)
        for line in lines[1:]:
            print(f"   {line}", file=out)
        if not quiet:
            print(file=out)
    files = len({case.path for case in cases})
    print(
        f"{len(cases)} scenarios in {files} files: {len(cases) - failed} passed, {failed} failed",
        file=out,
    )
    return EXIT_FAILED if failed else EXIT_OK


def _indent(lines: Sequence[str]) -> str:
    return "\n".join("   " + line for text in lines for line in text.splitlines())


def _explore(args: argparse.Namespace, out: TextIO) -> int:
    from ._explore import explore
    from .mutants import MUTANTS

    if args.examples < 1:
        print("sim: --examples must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.mutant is not None and args.mutant not in MUTANTS:
        print(f"sim: no mutant {args.mutant!r}; choose from {', '.join(MUTANTS)}", file=sys.stderr)
        return EXIT_USAGE
    seed = random.randrange(2**32) if args.seed is None else args.seed
    machine_name = "the real machine" if args.mutant is None else f"mutant {args.mutant}"
    print(f"exploring {args.examples} generated scenarios on {machine_name}, seed {seed}", file=out)
    if args.mutant is None:
        found = explore(args.examples, seed, lateness=not args.no_lateness)
    else:
        mutant = MUTANTS[args.mutant]
        print(f"  its mistake: {mutant.mistake}", file=out)
        found = explore(args.examples, seed, machine=mutant.machine, lateness=not args.no_lateness)
    if found is None:
        print("no invariant violated", file=out)
        return EXIT_OK
    machine = None if args.mutant is None else MUTANTS[args.mutant].machine
    trace = simulate(found) if machine is None else simulate(found, machine=machine)
    named = found if found.name else dataclasses.replace(found, name="counterexample")
    print("minimal counterexample, as a scenario file:\n", file=out)
    print(scenario_to_toml(named, Expect()), file=out)
    print(_indent([describe(found), *timeline(found, trace)]), file=out)
    for violation in check_invariants(found, trace):
        print(f"   {violation}", file=out)
    return EXIT_FAILED


def _bench(args: argparse.Namespace, out: TextIO) -> int:
    from ._explore import bench

    if not (math.isfinite(args.seconds) and args.seconds > 0):
        print(f"sim: --seconds must be a finite number > 0, got {args.seconds}", file=sys.stderr)
        return EXIT_USAGE
    if args.examples < 1:
        print("sim: --examples must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    cases = _load(args.paths) if args.paths else []
    if cases is None:
        return EXIT_USAGE
    result = bench(
        budget=args.seconds, examples=args.examples, files=[case.scenario for case in cases]
    )
    print("plain loop, scenarios/s:     simulate   + check_invariants   wakeups", file=out)
    for label, alone, checked, wakeups in result.loops:
        print(f"  {label:<24} {alone:>9,.0f} {checked:>18,.0f} {wakeups:>9.1f}", file=out)
    rate = result.examples_per_second
    print(
        f"hypothesis property run: {rate:,.0f} examples/s; "
        f"10,000 examples in {10_000 / rate:.1f} s",
        file=out,
    )
    print(
        "freezegun, simulate() with a callback: "
        f"{result.freeze_first_run * 1e3:.1f} ms the first time, "
        f"{result.freeze_run * 1e3:.1f} ms after (it enters freeze_time); "
        f"inside virtual_time() +{result.freeze_move * 1e6:.0f} us",
        file=out,
    )
    return EXIT_OK
