"""Properties over generated scenarios: the invariants hold for the real machine.

The examples come from sim.strategies (whole milliseconds, so ties are
frequent and a shrunk counterexample is a readable timeline). The "ci"
profile (tests/conftest.py) is derandomized; HYPOTHESIS_PROFILE=thorough
runs 10,000 examples a test.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from transitions import Machine

from sim import Scenario, Trace, check_invariants, load_scenarios, scenario_to_toml, simulate
from sim.mutants import MUTANTS
from sim.strategies import children, lateness_schedules, reactions, scenarios
from statewait import TerminationReason
from statewait._machine import MACHINE
from statewait._options import to_ns

MS = 1_000_000


@given(scenarios())
def test_invariants_hold_for_generated_scenarios_with_lateness(scenario: Scenario) -> None:
    trace = simulate(scenario)
    assert check_invariants(scenario, trace) == []


@given(scenarios(backends=["poll"], cancel_kinds=["flag"]))
def test_invariants_hold_when_everything_is_polled(scenario: Scenario) -> None:
    assert check_invariants(scenario, simulate(scenario)) == []


@given(scenarios(lateness=False))
def test_on_time_wakeups_fire_each_deadline_within_1ms(scenario: Scenario) -> None:
    # I4 as DESIGN.md states it for on-time wakeups, checked directly.
    trace = simulate(scenario)
    soft = [s.at for s in trace.signals if s.kind == "soft_interrupt"]
    hard = [s.at for s in trace.signals if s.kind == "hard_kill"]
    reason = next((e.detail for e in trace.timeline if e.kind == "soft_interrupt"), None)
    if reason is TerminationReason.TIMEOUT:
        assert scenario.timeout is not None
        assert to_ns(scenario.timeout) < soft[0] <= to_ns(scenario.timeout) + MS
    if hard:
        grace_end = soft[0] + to_ns(scenario.interrupt_grace)
        assert grace_end < hard[0] <= grace_end + MS


@given(scenarios())
def test_simulate_is_deterministic(scenario: Scenario) -> None:
    assert simulate(scenario) == simulate(scenario)


@given(scenarios())
def test_the_trace_child_exit_is_the_fake_childs_own_account(scenario: Scenario) -> None:
    trace = simulate(scenario)
    assert trace.child_exit == scenario.child.exit_given(trace.signals)


@given(scenarios(), st.integers(0, 3000))
def test_stopping_early_keeps_the_past(scenario: Scenario, until_ms: int) -> None:
    whole = simulate(scenario)
    part = simulate(scenario, until=until_ms / 1000)
    until = until_ms * MS
    assert part.timeline == tuple(e for e in whole.timeline if e.at <= until)
    assert part.signals == tuple(s for s in whole.signals if s.at <= until)


# Any name a UTF-8 file can hold (lone surrogates cannot be written at all).
@given(
    scenario=scenarios(),
    name=st.text(st.characters(blacklist_categories=["Cs"]), max_size=20),
)
def test_a_scenario_written_as_toml_reads_back_the_same(
    tmp_path_factory: pytest.TempPathFactory, scenario: Scenario, name: str
) -> None:
    named = dataclasses.replace(scenario, name=name or "unnamed")
    path = tmp_path_factory.mktemp("toml") / "one.toml"
    path.write_text(scenario_to_toml(named), encoding="utf-8")
    (case,) = load_scenarios(path)
    assert case.scenario == named


@given(children(), reactions(default_code=-2), lateness_schedules())
def test_the_exported_strategies_produce_valid_values(
    child: object, reaction: object, lateness: tuple[float, ...]
) -> None:
    # Users build their own scenarios from the parts.
    Scenario(child=child, lateness=lateness)  # type: ignore[arg-type]
    assert reaction == "ignore" or reaction[0] == "exit"  # type: ignore[index]


class CancellationArrivesMidWait(RuleBasedStateMachine):
    """A user watches a wait on virtual time and cancels it when they choose.

    The wait is re-simulated up to "now" after every step. Whatever the user
    does now never changes what happened before now, and the invariants hold
    on every partial trace.
    """

    #: The machine under test; a test swaps in a broken one.
    machine: Machine = MACHINE

    def __init__(self) -> None:
        super().__init__()
        self.scenario = Scenario()
        self.now_ms = 0
        self.trace: Trace | None = None
        self.unchanged_before = 0  # ns: the past that a step may not change

    @initialize(base=scenarios(max_ms=1000))
    def start(self, base: Scenario) -> None:
        self.scenario = dataclasses.replace(base, cancel_at=None)
        self._advance_to(0)

    @rule(ms=st.integers(0, 300))
    def let_time_pass(self, ms: int) -> None:
        self._advance_to(self.now_ms + ms)

    @precondition(lambda self: self.scenario.cancel_at is None)
    @rule(
        moment=st.sampled_from(
            ["now", "at the timeout deadline", "1 ms after the timeout deadline", "soon"]
        ),
        soon_ms=st.integers(1, 50),
    )
    def cancel(self, moment: str, soon_ms: int) -> None:
        timeout_ms = None if self.scenario.timeout is None else round(self.scenario.timeout * 1000)
        at_ms = {
            "now": self.now_ms,
            "at the timeout deadline": timeout_ms,
            "1 ms after the timeout deadline": None if timeout_ms is None else timeout_ms + 1,
            "soon": self.now_ms + soon_ms,
        }[moment]
        at_ms = max(self.now_ms, self.now_ms if at_ms is None else at_ms)  # never in the past
        self.scenario = dataclasses.replace(self.scenario, cancel_at=at_ms / 1000)
        self.unchanged_before = at_ms * MS
        self._advance_to(self.now_ms)

    @rule()
    def the_user_cancels_again(self) -> None:
        # CancelToken.cancel() and Event.set() are idempotent: a second request
        # changes nothing, so the scenario keeps the first.
        before = self.trace
        self._advance_to(self.now_ms)
        assert self.trace == before

    def _advance_to(self, now_ms: int) -> None:
        old = self.trace
        new = simulate(self.scenario, until=now_ms / 1000, machine=self.machine)
        if old is not None:
            # What the old trace knows: up to where it stopped (or saw that the
            # wait would go on for ever), and before any change just made.
            horizon = old.ended_at
            if self.unchanged_before:
                horizon = min(horizon, self.unchanged_before)
            assert [e for e in new.timeline if e.at < horizon] == [
                e for e in old.timeline if e.at < horizon
            ]
        self.unchanged_before = 0
        self.trace, self.now_ms = new, now_ms

    @invariant()
    def invariants_hold(self) -> None:
        if self.trace is not None:
            violations = check_invariants(self.scenario, self.trace)
            assert violations == [], "\n".join(map(str, violations))

    @invariant()
    def a_wait_past_the_cancellation_is_no_longer_running(self) -> None:
        trace, c = self.trace, self.scenario.cancel_at
        if trace is None or c is None or trace.end != "stopped":
            return
        poll = max(self.scenario.poll_interval, 0.001)
        slack = 0.0 if self.scenario.cancel_kind == "token" else poll
        late = max(self.scenario.lateness, default=0.0)
        if trace.ended_at / 1e9 > c + slack + late:
            assert trace.timeline[-1].state.name != "RUNNING"


# Every step re-simulates from the start: fewer, shorter runs than the
# profile's, scaled with it.
CancellationArrivesMidWait.TestCase.settings = settings(
    settings.default,
    max_examples=max(25, settings.default.max_examples // 4),
    stateful_step_count=12,
)
TestCancellationArrivesMidWait = CancellationArrivesMidWait.TestCase


class WithCancellationIgnored(CancellationArrivesMidWait):
    machine = MUTANTS["cancellation-ignored"].machine


def test_the_stateful_test_fails_when_cancellations_are_ignored() -> None:
    with pytest.raises(AssertionError, match="I5"):
        run_state_machine_as_test(
            WithCancellationIgnored,
            settings=settings(
                settings.default,
                max_examples=50,
                stateful_step_count=12,
                report_multiple_bugs=False,
                phases=[Phase.generate],  # failing is the point; no need to shrink
            ),
        )
