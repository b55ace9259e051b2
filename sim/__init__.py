"""sim: the statewait simulator.

It runs the real wait loop (statewait._wait.run_wait) on a virtual clock
against a scripted fake child, so every timing rule can be checked exactly
and deterministically: `simulate` plays a Scenario and returns a Trace,
`check_invariants` judges the trace against the invariants I1-I9 of
docs/invariants.md. `sim.strategies` holds hypothesis strategies for property
tests (it needs hypothesis); `load_scenarios` reads scenario files and
`python -m sim` runs them; `sim.mutants` holds deliberately broken machines.

Examples:
    >>> from sim import FakeChild, Scenario, check_invariants, simulate
    >>> scenario = Scenario(timeout=1.0, interrupt_grace=0.5,
    ...                     child=FakeChild(on_interrupt="ignore"))
    >>> trace = simulate(scenario)
    >>> trace.outcome.interrupted_at, trace.outcome.killed_at, trace.outcome.returncode
    (1.001, 1.502, -9)
    >>> check_invariants(scenario, trace)
    []
"""

from __future__ import annotations

from ._clock import VirtualClock
from ._files import Case, Expect, ScenarioFileError, load_scenarios, scenario_to_toml
from ._frozen import EPOCH, virtual_time
from ._invariants import INVARIANTS, Violation, check_invariants
from ._scenario import ChildExit, FakeChild, Reaction, Scenario, Signal
from ._simulate import Sleep, Trace, simulate

__all__ = [
    "EPOCH",
    "INVARIANTS",
    "Case",
    "ChildExit",
    "Expect",
    "FakeChild",
    "Reaction",
    "Scenario",
    "ScenarioFileError",
    "Signal",
    "Sleep",
    "Trace",
    "Violation",
    "VirtualClock",
    "check_invariants",
    "load_scenarios",
    "scenario_to_toml",
    "simulate",
    "virtual_time",
]
