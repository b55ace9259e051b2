"""Deliberately broken machines and loops: the checker names the right invariant.

Each table mutant (sim.mutants) is run on its own scenario, where the checker
must report exactly its invariants, and through a seeded hypothesis search,
whose shrunk counterexample must break only those. The slice rule is the
loop's, not the table's, so I8 is proved against a broken `Wait.next_slice`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim import FakeChild, Scenario, check_invariants, simulate
from sim._explore import explore
from sim.mutants import MUTANTS, Mutant, mutant
from statewait._wait import MIN_SLICE_NS, Wait

MS = 1_000_000


@pytest.mark.parametrize("m", MUTANTS.values(), ids=list(MUTANTS))
def test_mutant_on_its_scenario_is_reported_under_its_invariants(m: Mutant) -> None:
    trace = simulate(m.scenario, machine=m.machine)
    assert {v.invariant for v in check_invariants(m.scenario, trace)} == m.invariants
    # The same scenario with the real machine is healthy.
    assert check_invariants(m.scenario, simulate(m.scenario)) == []


@pytest.mark.parametrize("m", MUTANTS.values(), ids=list(MUTANTS))
def test_mutant_is_found_by_a_search_and_shrunk_to_its_invariants(m: Mutant) -> None:
    # On-time wakeups: the same mutants are found with lateness too, but a
    # tie (cancel-before-timeout) then takes the shrinker seconds to isolate.
    found = explore(1000, seed=1, machine=m.machine, lateness=False)
    assert found is not None, f"no counterexample for {m.name}"
    reported = {v.invariant for v in check_invariants(found, simulate(found, machine=m.machine))}
    assert reported
    assert reported <= m.invariants


def test_mutant_cancel_before_timeout_is_I1_at_the_tie() -> None:
    m = MUTANTS["cancel-before-timeout"]
    (violation,) = check_invariants(m.scenario, simulate(m.scenario, machine=m.machine))
    assert (violation.invariant, violation.at) == ("I1", 1.001)


def test_mutant_second_hard_kill_is_I2_with_every_kill_listed() -> None:
    m = MUTANTS["second-hard-kill"]
    trace = simulate(m.scenario, machine=m.machine)
    assert [s.at for s in trace.signals if s.kind == "hard_kill"] == [
        1502 * MS,
        1602 * MS,
        1702 * MS,
    ]
    (violation,) = check_invariants(m.scenario, trace)
    assert violation.message == "the hard kill was sent 3 times (at 1.502, 1.602, 1.702 s)"


def test_mutant_non_strict_timeout_fires_at_the_deadline_itself() -> None:
    m = MUTANTS["non-strict-timeout"]
    trace = simulate(m.scenario, machine=m.machine)
    assert trace.outcome is not None
    assert trace.outcome.interrupted_at == 1.0
    (violation,) = check_invariants(m.scenario, trace)
    assert violation.invariant == "I4"


def test_mutant_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="no mutant 'nope'; choose from cancel-before-timeout"):
        mutant("nope")


# -- broken slices: the loop's own rule, patched for one test


def _patched_slice(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[Wait, int | None], int | None]
) -> None:
    real = Wait.next_slice

    def broken(self: Wait) -> int | None:
        return change(self, real(self))

    monkeypatch.setattr(Wait, "next_slice", broken)


def _reported(scenario: Scenario) -> set[str]:
    return {v.invariant for v in check_invariants(scenario, simulate(scenario))}


def test_broken_slice_without_the_1ms_floor_is_I8(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_floor(wait: Wait, slice_ns: int | None) -> int | None:
        deadline = wait.pending_deadline()
        if slice_ns == MIN_SLICE_NS and deadline is not None:
            return max(1, deadline - wait.now)  # 1 ns: as close to a busy loop as it gets
        return slice_ns

    _patched_slice(monkeypatch, no_floor)
    assert "I8" in _reported(Scenario(timeout=1.0, child=FakeChild(exit_at=2.0)))


def test_broken_slice_past_the_poll_interval_is_I8(monkeypatch: pytest.MonkeyPatch) -> None:
    _patched_slice(monkeypatch, lambda _, s: None if s is None else 2 * s)
    scenario = Scenario(backend="poll", poll_interval=0.05, child=FakeChild(exit_at=0.3))
    # And so the exit is noticed later than the next poll: I6 too.
    assert _reported(scenario) == {"I6", "I8"}


def test_broken_slice_with_needless_wakeups_is_I8(monkeypatch: pytest.MonkeyPatch) -> None:
    _patched_slice(monkeypatch, lambda _, s: 10 * MS if s is None else min(s, 10 * MS))
    assert _reported(Scenario(timeout=1.0, child=FakeChild(exit_at=0.3))) == {"I8"}


def test_broken_slice_past_the_deadline_is_I4(monkeypatch: pytest.MonkeyPatch) -> None:
    _patched_slice(monkeypatch, lambda _, s: None if s is None else s + 5 * MS)
    assert _reported(Scenario(timeout=1.0, interrupt_grace=0.5, child=FakeChild(exit_at=9.0))) == {
        "I4"
    }
