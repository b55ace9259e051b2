"""Every public entry point refuses wrong types and values with a clear
ValueError or TypeError (exit 125 on the command line), and starts nothing.

Hypothesis draws the wrong values; a command that would create a marker file
proves that no process was started.
"""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import statewait
from statewait import WaitOptions, wait_for_child
from statewait._cli import main

pytestmark = pytest.mark.timeout(300)

DURATIONS = ["timeout", "poll_interval", "interrupt_grace", "abandon_after"]

#: Values no duration field accepts: wrong types, and numbers out of range.
bad_type = st.one_of(
    st.booleans(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
    st.just(object()),
)
bad_number = st.one_of(
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    st.integers(max_value=-1),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
bad_duration = st.one_of(bad_type, bad_number)


@settings(max_examples=150)
@given(field=st.sampled_from(DURATIONS), value=bad_duration)
def test_WaitOptions_refuses_every_bad_duration_naming_the_field(field: str, value: object) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        WaitOptions(**{field: value})  # type: ignore[arg-type]
    assert str(info.value).startswith(f"{field} must be")


@settings(max_examples=50)
@given(value=st.one_of(bad_type.filter(lambda v: not callable(v)), st.integers(), st.floats()))
def test_WaitOptions_refuses_a_cancellation_of_the_wrong_kind(value: object) -> None:
    with pytest.raises(TypeError, match=r"^cancellation must be a CancelToken"):
        WaitOptions(cancellation=value)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sleeping_child() -> Iterator[subprocess.Popen[bytes]]:
    child = statewait.spawn(["sleep", "120"])
    yield child
    statewait.kill_group(child)
    child.wait()


not_callable = st.one_of(bad_type, st.integers(), st.floats(allow_nan=False))


@pytest.mark.real
@settings(max_examples=100)
@given(
    which=st.sampled_from(
        ["child", "options", "backend", "soft_interrupt", "hard_kill", "observer"]
    ),
    value=not_callable,
)
def test_wait_for_child_refuses_bad_arguments_and_touches_nothing(
    sleeping_child: subprocess.Popen[bytes], which: str, value: object
) -> None:
    arguments: dict[str, Any] = {"child": sleeping_child, "options": WaitOptions(timeout=0)}
    arguments[which] = value
    child = arguments.pop("child")
    with pytest.raises((TypeError, ValueError)) as info:
        wait_for_child(child, **arguments)
    assert which in str(info.value)
    assert sleeping_child.poll() is None  # neither signalled nor reaped


RUN_FIELDS: dict[str, st.SearchStrategy[object]] = {
    **dict.fromkeys(DURATIONS, bad_duration),
    "io_drain_timeout": bad_duration,
    "output_limit": st.one_of(bad_type, st.integers(max_value=0), st.floats()),
    "cancellation": bad_type.filter(lambda v: not callable(v)),
    "soft_interrupt": not_callable,
    "hard_kill": not_callable,
    "encoding": st.one_of(st.integers(), st.just("no-such-codec")),
    "errors": st.one_of(st.integers(), st.just("no-such-handler")),
    "input": st.one_of(st.integers(), st.lists(st.integers(), max_size=2), st.just(object())),
}


@pytest.mark.real
@settings(max_examples=150)
@given(data=st.data(), field=st.sampled_from(sorted(RUN_FIELDS)))
def test_run_refuses_bad_arguments_and_starts_nothing(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, field: str
) -> None:
    value = data.draw(RUN_FIELDS[field], label=field)
    marker = tmp_path_factory.mktemp("run") / "started"
    with pytest.raises((TypeError, ValueError)) as info:
        statewait.run(["touch", str(marker)], **{field: value})
    message = str(info.value)
    assert field in message or "encoding or error handler" in message
    assert not marker.exists()


@pytest.mark.real
def test_run_refuses_conflicting_arguments_and_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    cmd = ["touch", str(marker)]
    for kwargs in (
        {"input": b"x", "stdin": subprocess.DEVNULL},
        {"capture_output": True, "stdout": subprocess.PIPE},
        {"text": True, "input": b"bytes in text mode"},
    ):
        with pytest.raises((TypeError, ValueError)):
            statewait.run(cmd, **kwargs)  # type: ignore[arg-type]
    assert not marker.exists()


bad_duration_text = st.one_of(
    st.sampled_from(["-1", "nan", "inf", "1x", "ms", "", "1..5s", "1e999", "--3"]),
    st.text(alphabet="abcxyz-!", min_size=1, max_size=4),
)
bad_signal_text = st.one_of(
    st.sampled_from(["NOPE", "SIG", "0", "-9", "999", "SIGKILLX", "1.5"]),
    st.text(alphabet="QWXZ", min_size=1, max_size=5),
)


@pytest.mark.real
@settings(max_examples=120)
@given(
    data=st.data(),
    option=st.sampled_from(
        ["--timeout", "--grace", "--abandon-after", "--poll-interval", "--signal", "--kill-signal"]
    ),
)
def test_cli_bad_option_values_exit_125_with_one_line_and_start_nothing(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, option: str
) -> None:
    strategy = bad_signal_text if option.endswith("signal") else bad_duration_text
    value = data.draw(strategy, label=option)
    marker = tmp_path_factory.mktemp("cli") / "started"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["run", f"{option}={value}", "--", "touch", str(marker)])
    assert status == 125
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    assert not marker.exists()
