# Searching generated scenarios for a broken invariant, and timing the search.
#
# This module owns `python -m sim explore` and `python -m sim bench`: both
# drive sim.strategies with hypothesis, so both import it only when called.

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from transitions import Machine

from statewait._machine import MACHINE

from ._frozen import virtual_time
from ._invariants import check_invariants
from ._scenario import FakeChild, Scenario
from ._simulate import simulate

__all__ = ["Bench", "bench", "explore"]

T = TypeVar("T")


def _violated(machine: Machine) -> Callable[[Scenario], bool]:
    def violated(scenario: Scenario) -> bool:
        return bool(check_invariants(scenario, simulate(scenario, machine=machine)))

    return violated


def explore(
    examples: int, seed: int, *, machine: Machine = MACHINE, lateness: bool = True
) -> Scenario | None:
    """Search generated scenarios for one that breaks an invariant.

    Args:
        examples: how many scenarios to try at most.
        seed: makes the search repeatable.
        machine: the machine to check (sim.mutants has broken ones).
        lateness: also generate wake-up lateness.

    Returns:
        The minimal (shrunk) scenario that breaks an invariant, or None.
    """
    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    from .strategies import scenarios

    try:
        return find(
            scenarios(lateness=lateness),
            _violated(machine),
            # From hypothesis' defaults, not the caller's profile: the seed alone
            # decides the search, so `--seed` repeats it anywhere.
            settings=settings(
                settings.get_profile("default"),
                max_examples=examples,
                derandomize=False,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
            random=random.Random(seed),
        )
    except NoSuchExample:
        return None


@dataclass
class Bench:
    """What `bench` measured. Rates are per second; times in seconds."""

    #: (label, simulate alone, simulate + check_invariants, mean wakeups) per sample.
    loops: list[tuple[str, float, float, float]] = field(default_factory=list)
    #: hypothesis examples (generate + simulate + check) per second.
    examples_per_second: float = 0.0
    #: simulate() with a user callback outside virtual_time(): it enters and
    #: leaves freeze_time itself. The first run in a process, then the median.
    freeze_first_run: float = 0.0
    freeze_run: float = 0.0
    #: What a callback adds inside virtual_time(): moving the frozen time.
    freeze_move: float = 0.0


def _rate(items: Sequence[T], run: Callable[[T], object], budget: float) -> float:
    """Items per second over `budget` seconds of running `run` on them, in turn."""
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            run(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return done / elapsed


def _check_one(scenario: Scenario) -> None:
    violations = check_invariants(scenario, simulate(scenario))
    assert not violations, (scenario, violations)


def bench(*, budget: float = 2.0, examples: int = 2000, files: Sequence[Scenario] = ()) -> Bench:
    """Time the simulator.

    Args:
        budget: seconds to spend on each plain loop.
        examples: how many hypothesis examples to time.
        files: scenarios read from files, timed in a plain loop too.
    """
    from hypothesis import HealthCheck, given, settings

    from .strategies import scenarios

    result = Bench()
    common = settings(
        database=None, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    sample: list[Scenario] = []

    def collect(scenario: Scenario) -> None:
        sample.append(scenario)

    given(scenarios())(settings(common, max_examples=500)(collect))()
    for label, items in (("generated", sample), ("files", list(files))):
        if items:
            wakeups = sum(simulate(s).wakeups for s in items) / len(items)
            alone = _rate(items, simulate, budget / 2)
            result.loops.append((label, alone, _rate(items, _check_one, budget / 2), wakeups))

    prop = given(scenarios())(settings(common, max_examples=examples)(_check_one))
    start = time.perf_counter()
    prop()
    result.examples_per_second = examples / (time.perf_counter() - start)

    scenario = Scenario(timeout=0.0, interrupt_grace=0.0, child=FakeChild(on_interrupt="ignore"))
    runs = []
    for _ in range(21):
        start = time.perf_counter()
        simulate(scenario, hard_kill=lambda: None)
        runs.append(time.perf_counter() - start)
    result.freeze_first_run, result.freeze_run = runs[0], statistics.median(runs[1:])
    # Inside virtual_time() perf_counter is frozen too; process_time is not
    # (and this is CPU-bound work).
    count = 2000
    with virtual_time():
        start = time.process_time()
        for _ in range(count):
            simulate(scenario, hard_kill=lambda: None)
        with_callback = time.process_time() - start
    start = time.process_time()
    for _ in range(count):
        simulate(scenario)
    result.freeze_move = max(0.0, (with_callback - (time.process_time() - start)) / count)
    return result
