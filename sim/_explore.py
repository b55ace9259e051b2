# Searching generated scenarios for a broken invariant, and timing the search.
#
# This module owns `python -m sim explore` and `python -m sim bench`: both
# drive sim.strategies with hypothesis, so both import it only when called.

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
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


class Bench:
    """What `bench` measured."""

    def __init__(self) -> None:
        #: (label, scenarios per second, mean wakeups) for each plain loop.
        self.loops: list[tuple[str, float, float]] = []
        #: hypothesis examples (generate + simulate + check) per second.
        self.examples_per_second = 0.0
        #: Entering and leaving freeze_time once (what simulate pays per run
        #: with callbacks outside virtual_time), in seconds.
        self.freeze_enter = 0.0
        #: Moving the frozen time once (what each callback pays), in seconds.
        self.freeze_move = 0.0


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

    def wakeups(items: Sequence[Scenario]) -> float:
        return sum(simulate(s).wakeups for s in items) / len(items)

    result.loops.append(("generated", _rate(sample, _check_one, budget), wakeups(sample)))
    if files:
        result.loops.append(("files", _rate(files, _check_one, budget), wakeups(files)))

    prop = given(scenarios())(settings(common, max_examples=examples)(_check_one))
    start = time.perf_counter()
    prop()
    result.examples_per_second = examples / (time.perf_counter() - start)

    import freezegun

    start = time.perf_counter()
    for _ in range(10):
        with freezegun.freeze_time("2000-01-01"):
            pass
    result.freeze_enter = (time.perf_counter() - start) / 10
    # Inside virtual_time() perf_counter is frozen too; process_time is not
    # (and this is CPU-bound work).
    scenario = Scenario(timeout=0.0, interrupt_grace=0.0, child=FakeChild(on_interrupt="ignore"))
    runs = 1000
    with virtual_time():
        start = time.process_time()
        for _ in range(runs):
            simulate(scenario, hard_kill=lambda: None)
        with_callback = time.process_time() - start
    start = time.process_time()
    for _ in range(runs):
        simulate(scenario)
    result.freeze_move = max(0.0, (with_callback - (time.process_time() - start)) / runs)
    return result
