"""Scenario files: what a [[scenario]] may hold, and errors that name file, scenario and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim import (
    Expect,
    FakeChild,
    Scenario,
    ScenarioFileError,
    load_scenarios,
    scenario_to_toml,
    simulate,
)
from sim._files import DEFAULT_TOLERANCE


def write(tmp_path: Path, text: str, name: str = "case.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_scenarios_reads_every_field_and_the_expectations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[scenario]]
name = "everything"
timeout = 1
interrupt_grace = 0.5
poll_interval = 0.02
cancel_at = 0.2
cancel_kind = "flag"
backend = "poll"
abandon_after = 2.0
lateness = [0.001, 0]
child = { exit_at = 10.0, exit_code = 3, on_interrupt = "ignore", on_kill = { exit_after = 0.5 } }

[scenario.expect]
termination = "cancelled"
returncode = "none"
abandoned = false
interrupted_at = 0.2
killed_at = "none"
elapsed = 1.5
wakeups = 4
returns = true
tolerance = 0.001
""",
    )
    (case,) = load_scenarios(path)
    assert case.scenario == Scenario(
        name="everything",
        timeout=1.0,
        interrupt_grace=0.5,
        poll_interval=0.02,
        cancel_at=0.2,
        cancel_kind="flag",
        backend="poll",
        abandon_after=2.0,
        lateness=(0.001, 0.0),
        child=FakeChild(
            exit_at=10.0, exit_code=3, on_interrupt="ignore", on_kill=("exit", 0.5, -9)
        ),
    )
    assert case.expect == Expect(
        {
            "termination": "cancelled",
            "returncode": None,
            "abandoned": False,
            "interrupted_at": 0.2,
            "killed_at": None,
            "elapsed": 1.5,
            "wakeups": 4,
            "returns": True,
        },
        tolerance=0.001,
    )
    assert (case.path, case.number, case.label) == (path, 1, '#1 "everything"')


def test_load_scenarios_reaction_defaults_are_sigint_minus_2_and_sigkill_minus_9(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        '[[scenario]]\nname = "d"\nchild = { on_interrupt = { exit_after = 0.1 }, on_kill = {} }\n',
    )
    (case,) = load_scenarios(path)
    assert case.scenario.child.on_interrupt == ("exit", 0.1, -2)
    assert case.scenario.child.on_kill == ("exit", 0.0, -9)
    assert case.expect == Expect({}, DEFAULT_TOLERANCE)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("timout = 1.0", "unknown field timout (known: abandon_after, backend, cancel_at"),
        ("timeout = -1", "timeout must be >= 0 seconds, got -1"),
        ('timeout = "1"', "timeout must be seconds"),
        ("poll_interval = 0", "poll_interval must be > 0 seconds, got 0"),
        ('backend = "pidfd"', "backend must be 'event' or 'poll', got 'pidfd'"),
        ("lateness = [0.0, -1]", "lateness[1] must be >= 0 seconds"),
        ("child = { exit_at = -2 }", "child.exit_at must be >= 0 seconds, got -2"),
        ("child = { exitat = 2 }", "unknown field child.exitat"),
        ("child = { exit_code = true }", "child.exit_code must be an int returncode, got True"),
        ('child = { on_kill = "exit" }', "child.on_kill must be 'ignore' or"),
        (
            "child = { on_kill = { exit_after = -1 } }",
            "child.on_kill.exit_after must be >= 0 seconds",
        ),
        ("child = { on_kill = { exit_code = 1.5 } }", "child.on_kill.exit_code must be an int"),
        ("child = { on_kill = { after = 1 } }", "unknown field child.on_kill.after"),
        ("child = 3", "child must be a table, got 3"),
        (
            "[scenario.expect]\nreturncode = 1.5",
            'expect.returncode must be an int or "none", got 1.5',
        ),
        ('[scenario.expect]\ntermination = "killed"', 'expect.termination must be "timeout"'),
        ("[scenario.expect]\nabandoned = 1", "expect.abandoned must be true or false, got 1"),
        ("[scenario.expect]\nelapsed = -1.0", "expect.elapsed must be >= 0 seconds"),
        ("[scenario.expect]\nwakeups = -1", "expect.wakeups must be an int >= 0, got -1"),
        ("[scenario.expect]\nelasped = 1.0", "unknown field expect.elasped"),
    ],
)
def test_load_scenarios_a_bad_field_names_file_scenario_and_field(
    tmp_path: Path, body: str, problem: str
) -> None:
    path = write(tmp_path, f'[[scenario]]\nname = "ok"\n\n[[scenario]]\nname = "bad one"\n{body}\n')
    with pytest.raises(ScenarioFileError, match=re.escape(problem)) as caught:
        load_scenarios(path)
    assert str(caught.value).startswith(f'{path}: scenario #2 "bad one": ')
    assert caught.value.scenario == '#2 "bad one"'


def test_load_scenarios_a_missing_name_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[[scenario]]\ntimeout = 1.0\n")
    with pytest.raises(ScenarioFileError, match=f"^{path}: scenario #1: field name is required$"):
        load_scenarios(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[scenario]\nname = 'x'", "cannot read it: "),
        ("", r"no \[\[scenario\]\]; a file holds \[\[scenario\]\] tables"),
        ('[[scenario]]\nname = "x"\n[other]\na = 1\n', "unknown top-level field other"),
        ("scenario = 3\n", r"no \[\[scenario\]\]"),
    ],
)
def test_load_scenarios_a_bad_file_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioFileError, match=problem) as caught:
        load_scenarios(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert caught.value.scenario is None


def test_Expect_failures_compare_times_within_the_tolerance() -> None:
    trace = simulate(
        Scenario(timeout=1.0, interrupt_grace=0.5, child=FakeChild(on_interrupt="ignore"))
    )
    assert Expect({"killed_at": 1.5024}).failures(trace) == []
    assert Expect({"killed_at": 1.501}).failures(trace) == ["expected killed_at = 1.501, got 1.502"]
    assert Expect({"killed_at": 1.501}, tolerance=0.002).failures(trace) == []


def test_Expect_failures_of_a_wait_that_never_returns() -> None:
    trace = simulate(
        Scenario(timeout=0.0, child=FakeChild(on_interrupt="ignore", on_kill="ignore"))
    )
    assert Expect({"returns": False, "termination": "timeout"}).failures(trace) == []
    assert Expect({"returncode": -9, "returns": True}).failures(trace) == [
        "expected returncode = -9, got the wait never returned",
        "expected returns = true, got false",
    ]


def test_Expect_a_returncode_is_not_a_bool_and_none_is_not_zero() -> None:
    trace = simulate(Scenario(child=FakeChild(exit_at=0.1, exit_code=1)))
    assert Expect({"returncode": True}).failures(trace) == ["expected returncode = true, got 1"]
    assert Expect({"interrupted_at": 0.0}).failures(trace) == [
        "expected interrupted_at = 0.000, got none"
    ]


def test_scenario_to_toml_leaves_defaults_out_and_reads_back(tmp_path: Path) -> None:
    scenario = Scenario(
        name='quote " and \\ and \x7f',
        timeout=0.5,
        lateness=(0.002,),
        child=FakeChild(exit_at=1.0, on_kill="ignore"),
    )
    text = scenario_to_toml(scenario, Expect({"termination": "timeout", "returncode": None}))
    assert "interrupt_grace" not in text
    assert "on_interrupt" not in text
    assert 'on_kill = "ignore"' in text
    assert 'returncode = "none"' in text
    (case,) = load_scenarios(write(tmp_path, text))
    assert case.scenario == scenario
    assert case.expect.values == {"termination": "timeout", "returncode": None}
