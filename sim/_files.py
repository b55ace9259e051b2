# Scenario files: TOML in, Cases out, and a Scenario back to TOML.
#
# This module owns the file format of docs/simulator.md ("Scenario files"):
# what a [[scenario]] table may hold, its [scenario.expect] block and how an
# expectation is checked against a Trace. Every field is validated by the same
# checks as the Scenario dataclass (sim/_scenario.py), called with the field's
# dotted name, so an error names the file, the scenario and the field. An
# unknown key is an error too: a typo must not silently mean "default".

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from statewait._options import NS_PER_SECOND, check_duration, to_ns

from ._format import seconds
from ._scenario import CHILD_CHECKS, SCENARIO_CHECKS, FakeChild, Reaction, Scenario
from ._simulate import Trace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFAULT_TOLERANCE",
    "Case",
    "Expect",
    "ScenarioFileError",
    "load_scenarios",
    "scenario_to_toml",
]

#: How far an expected time may be from the simulated one, in seconds:
#: tighter than the 1 ms floor, so an off-by-one-slice is always caught.
DEFAULT_TOLERANCE = 0.0005

_DEFAULT_CODES = {"on_interrupt": -2, "on_kill": -9}
_TIMES = ("interrupted_at", "killed_at", "elapsed")
_EXPECT_KEYS = {
    "termination",
    "returncode",
    "abandoned",
    "wakeups",
    "returns",
    "tolerance",
    *_TIMES,
}


class ScenarioFileError(ValueError):
    """A scenario file that cannot be used.

    Attributes:
        path: the file.
        scenario: which scenario ('#2 "name"'), or None for the whole file.
        problem: what is wrong; it names the field.
    """

    def __init__(self, path: Path, scenario: str | None, problem: str) -> None:
        self.path = path
        self.scenario = scenario
        self.problem = problem
        where = str(path) if scenario is None else f"{path}: scenario {scenario}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Expect:
    """What a scenario file expects of its trace; each key present is checked.

    Attributes:
        values: the expected values, by key: termination ("timeout",
            "cancelled" or None), returncode (int or None), abandoned (bool),
            interrupted_at / killed_at / elapsed (seconds or None: absent),
            wakeups (int), returns (bool: False for a wait that never ends).
        tolerance: how far an expected time may be from the simulated one.
    """

    values: Mapping[str, object] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE

    def failures(self, trace: Trace) -> list[str]:
        """What in `trace` differs from the expectations, one phrase each."""
        actual = observed(trace)
        found = []
        for key, expected in self.values.items():
            got = actual[key]
            if key in _TIMES and isinstance(expected, float) and isinstance(got, float):
                same = abs(got - expected) <= self.tolerance
            else:
                same = got == expected and type(got) is type(expected)
            if not same:
                found.append(f"expected {key} = {_show(expected)}, got {_show(got)}")
        return found


def observed(trace: Trace) -> dict[str, object]:
    """The values an expectation can name, as the trace has them."""
    out = trace.outcome
    reason = next((e.detail for e in trace.timeline if e.kind == "soft_interrupt"), None)
    never = "the wait never returned"
    soft = [s.at for s in trace.signals if s.kind == "soft_interrupt"]
    hard = [s.at for s in trace.signals if s.kind == "hard_kill"]
    return {
        "termination": None if reason is None else reason.value,  # type: ignore[attr-defined]
        "returncode": never if out is None else out.returncode,
        "abandoned": never if out is None else out.abandoned,
        "interrupted_at": soft[0] / NS_PER_SECOND if soft else None,
        "killed_at": hard[0] / NS_PER_SECOND if hard else None,
        "elapsed": never if out is None else out.elapsed,
        "wakeups": trace.wakeups,
        "returns": trace.end in ("returned", "raised"),
    }


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return seconds(to_ns(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


class Case(NamedTuple):
    """One scenario of a file, with its expectations."""

    scenario: Scenario
    expect: Expect
    path: Path
    #: Its place in the file, from 1.
    number: int

    @property
    def label(self) -> str:
        """'#2 "name"': how reports name it."""
        return f'#{self.number} "{self.scenario.name}"'


class _Malformed(Exception):
    """A field's problem, before the loader knows the file and scenario."""


def _checked(name: str, check: Callable[[str, object], object], value: object) -> object:
    try:
        return check(name, value)
    except (TypeError, ValueError) as exc:
        raise _Malformed(str(exc)) from None


def _keys(table: object, prefix: str, allowed: set[str] | Mapping[str, object]) -> dict[str, Any]:
    """`table` as a dict, if it is a table with no key outside `allowed`."""
    if not isinstance(table, dict):
        raise _Malformed(f"{prefix.rstrip('.') or 'a scenario'} must be a table, got {table!r}")
    for key in table:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise _Malformed(f"unknown field {prefix}{key} (known: {known})")
    return table


def load_scenarios(path: str | Path) -> list[Case]:
    """Read the scenarios of one TOML file.

    Args:
        path: the file.

    Returns:
        Its scenarios, in file order.

    Raises:
        ScenarioFileError: the file cannot be read or parsed, or a scenario
            has an unknown, missing or invalid field; the message names the
            file, the scenario and the field.
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioFileError(path, None, f"cannot read it: {exc}") from None
    extra = set(document) - {"scenario"}
    tables = document.get("scenario")
    if extra or not isinstance(tables, list) or not tables:
        problem = f"unknown top-level field {sorted(extra)[0]}" if extra else "no [[scenario]]"
        raise ScenarioFileError(path, None, f"{problem}; a file holds [[scenario]] tables")
    cases = []
    for index, table in enumerate(tables, start=1):
        name = table.get("name") if isinstance(table, dict) else None
        label = f"#{index}" + (f' "{name}"' if isinstance(name, str) else "")
        try:
            cases.append(_case(table, path, index))
        except _Malformed as exc:
            raise ScenarioFileError(path, label, str(exc)) from None
    return cases


def _case(table: object, path: Path, index: int) -> Case:
    fields = _keys(table, "", {*SCENARIO_CHECKS, "expect"})
    if "name" not in fields:
        raise _Malformed("field name is required")
    kwargs: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "child":
            kwargs[key] = _child(value)
        elif key != "expect":
            kwargs[key] = _checked(key, SCENARIO_CHECKS[key], value)
    return Case(Scenario(**kwargs), _expect(fields.get("expect", {})), path, index)


def _child(table: object) -> FakeChild:
    kwargs: dict[str, Any] = {}
    for key, value in _keys(table, "child.", CHILD_CHECKS).items():
        name = f"child.{key}"
        if key in _DEFAULT_CODES and isinstance(value, dict):
            value = _reaction_table(name, value, _DEFAULT_CODES[key])
        kwargs[key] = _checked(name, CHILD_CHECKS[key], value)
    return FakeChild(**kwargs)


def _reaction_table(name: str, table: dict[str, Any], default_code: int) -> Reaction:
    _keys(table, f"{name}.", {"exit_after", "exit_code"})
    delay = _checked(f"{name}.exit_after", _duration, table.get("exit_after", 0.0))
    code = _checked(
        f"{name}.exit_code", CHILD_CHECKS["exit_code"], table.get("exit_code", default_code)
    )
    return ("exit", delay, code)  # type: ignore[return-value]


def _duration(name: str, value: object) -> float | None:
    return check_duration(name, value)


def _expect(table: object) -> Expect:
    fields = _keys(table, "expect.", _EXPECT_KEYS)
    values: dict[str, object] = {}
    tolerance = DEFAULT_TOLERANCE
    for key, value in fields.items():
        name = f"expect.{key}"
        if key == "tolerance":
            tolerance = _checked(name, _duration, value)  # type: ignore[assignment]
        elif key == "termination":
            if value not in ("timeout", "cancelled", "none"):
                raise _Malformed(f'{name} must be "timeout", "cancelled" or "none", got {value!r}')
            values[key] = None if value == "none" else value
        elif key in ("abandoned", "returns"):
            if not isinstance(value, bool):
                raise _Malformed(f"{name} must be true or false, got {value!r}")
            values[key] = value
        elif value == "none" and key in ("returncode", *_TIMES):
            values[key] = None
        elif key in _TIMES:
            values[key] = _checked(name, _duration, value)
        elif (
            not isinstance(value, int)
            or isinstance(value, bool)
            or (key == "wakeups" and value < 0)
        ):
            kind = "an int >= 0" if key == "wakeups" else 'an int or "none"'
            raise _Malformed(f"{name} must be {kind}, got {value!r}")
        else:
            values[key] = value
    return Expect(values, tolerance)


def scenario_to_toml(scenario: Scenario, expect: Expect | None = None) -> str:
    """One [[scenario]] table that `load_scenarios` reads back as `scenario`.

    Fields at their default value are left out.
    """
    default = Scenario()
    lines = ["[[scenario]]", f"name = {_toml_string(scenario.name or 'unnamed')}"]
    for key in SCENARIO_CHECKS:
        value = getattr(scenario, key)
        if key in ("name", "child") or value == getattr(default, key) or value is None:
            continue
        lines.append(f"{key} = {_toml(value)}")
    child = {
        key: getattr(scenario.child, key)
        for key in CHILD_CHECKS
        if getattr(scenario.child, key) != getattr(default.child, key)
        and getattr(scenario.child, key) is not None
    }
    if child:
        parts = [
            f"{key} = {_reaction_toml(value) if key.startswith('on_') else _toml(value)}"
            for key, value in child.items()
        ]
        lines.append(f"child = {{ {', '.join(parts)} }}")
    if expect is not None and expect.values:
        lines.append("")
        lines.append("[scenario.expect]")
        for key, value in expect.values.items():
            lines.append(f"{key} = {_toml('none' if value is None else value)}")
        if expect.tolerance != DEFAULT_TOLERANCE:
            lines.append(f"tolerance = {_toml(expect.tolerance)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        assert math.isfinite(value), "durations are finite"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return _toml_string(value)
    return str(value)


def _toml_string(text: str) -> str:
    # A TOML basic string: escape the quote, the backslash and the control
    # characters (TOML wants DEL escaped too, which json.dumps would not do).
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _reaction_toml(reaction: Reaction) -> str:
    if reaction == "ignore":
        return '"ignore"'
    _, delay, code = reaction
    return f"{{ exit_after = {_toml(delay)}, exit_code = {code} }}"
