"""The shipped scenarios (scenarios/*.toml): each passes, and together they cover the contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim import Case, check_invariants, load_scenarios, simulate
from sim._files import observed

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    case for path in sorted((ROOT / "scenarios").glob("*.toml")) for case in load_scenarios(path)
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.path.stem}:{c.scenario.name}" for c in CASES])
def test_shipped_scenario_meets_its_expectations_and_the_invariants(case: Case) -> None:
    trace = simulate(case.scenario)
    assert case.expect.values, "every shipped scenario says what it expects"
    assert case.expect.failures(trace) == []
    assert check_invariants(case.scenario, trace) == []


def test_shipped_scenarios_are_at_least_twelve_with_unique_names() -> None:
    names = [case.scenario.name for case in CASES]
    assert len(names) >= 12
    assert len(set(names)) == len(names)


def _outcomes() -> list[tuple[Case, dict[str, object]]]:
    return [(case, observed(simulate(case.scenario))) for case in CASES]


def test_shipped_scenarios_cover_every_termination_path() -> None:
    paths = set()
    for _, seen in _outcomes():
        signals = ("SIGINT" if seen["interrupted_at"] is not None else "") + (
            "+SIGKILL" if seen["killed_at"] is not None else ""
        )
        end = "abandoned" if seen["abandoned"] is True else "exit" if seen["returns"] else "never"
        paths.add((seen["termination"], signals, end))
    assert {
        (None, "", "exit"),  # exits on its own
        ("timeout", "SIGINT", "exit"),  # dies of SIGINT
        ("timeout", "SIGINT+SIGKILL", "exit"),  # killed after the grace
        ("cancelled", "SIGINT", "exit"),
        ("cancelled", "SIGINT+SIGKILL", "exit"),
        ("timeout", "SIGINT+SIGKILL", "abandoned"),
        ("timeout", "SIGINT+SIGKILL", "never"),  # unkillable, no abandon_after
    } <= paths


def test_shipped_scenarios_cover_both_backends_both_cancellations_and_the_edges() -> None:
    scenarios = [case.scenario for case in CASES]
    assert {s.backend for s in scenarios} == {"event", "poll"}
    assert {s.cancel_kind for s in scenarios if s.cancel_at is not None} == {"token", "flag"}
    assert any(s.timeout == 0.0 for s in scenarios)  # zero timeout
    assert any(s.interrupt_grace == 0.0 for s in scenarios)  # zero grace
    assert any(s.abandon_after == 0.0 for s in scenarios)  # abandon at once
    assert any(s.lateness for s in scenarios)  # late wakeups
    assert any(s.poll_interval < 0.001 for s in scenarios)  # the 1 ms floor
    # Ties: an exit or a cancellation exactly at the timeout deadline, or at its 1 ms floor.
    assert any(s.timeout is not None and s.child.exit_at == s.timeout for s in scenarios)
    assert any(s.timeout is not None and s.cancel_at == s.timeout for s in scenarios)
    assert any(s.timeout is not None and s.cancel_at == s.timeout + 0.001 for s in scenarios)
    assert any(s.cancel_at is not None and s.cancel_at == s.child.exit_at for s in scenarios)


def test_docs_cite_only_shipped_scenarios() -> None:
    names = {case.scenario.name for case in CASES}
    text = (ROOT / "docs" / "invariants.md").read_text("utf-8")
    cited = re.findall(r'scenario\s+"([^"]+)"', text, flags=re.IGNORECASE)
    assert cited, "docs/invariants.md shows each invariant with a shipped scenario"
    assert set(cited) <= names, set(cited) - names
    assert len(set(cited)) >= 9
