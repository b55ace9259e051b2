"""WaitOptions validation and the outcome value."""

from __future__ import annotations

import datetime
import math
import re
import threading

import pytest

from statewait import CancelToken, TerminationReason, WaitOptions, WaitOutcome
from statewait._options import to_ns

DURATIONS = ["timeout", "poll_interval", "interrupt_grace", "abandon_after"]


def test_WaitOptions_defaults() -> None:
    assert WaitOptions() == WaitOptions(None, None, 0.05, 2.0, None)


def test_WaitOptions_accepts_timedelta_and_int_and_stores_float_seconds() -> None:
    options = WaitOptions(
        timeout=datetime.timedelta(milliseconds=1500),
        poll_interval=1,
        interrupt_grace=datetime.timedelta(0),
        abandon_after=datetime.timedelta(microseconds=1),
    )
    assert options == WaitOptions(1.5, None, 1.0, 0.0, 1e-06)
    assert type(options.poll_interval) is float


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize("value", [-1, -0.001, datetime.timedelta(seconds=-1)])
def test_WaitOptions_negative_duration_raises_ValueError_naming_field_and_value(
    field: str, value: object
) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be .*{re.escape(repr(value))}"):
        WaitOptions(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_WaitOptions_nan_or_infinite_duration_raises_ValueError(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be a finite number of seconds, got"):
        WaitOptions(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize("value", [True, False, "1", b"1", [1], 1j])
def test_WaitOptions_non_numeric_duration_raises_TypeError(field: str, value: object) -> None:
    expected = rf"^{field} must be seconds .*got {re.escape(repr(value))}"
    with pytest.raises(TypeError, match=expected):
        WaitOptions(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["poll_interval", "interrupt_grace"])
def test_WaitOptions_required_duration_refuses_None(field: str) -> None:
    with pytest.raises(TypeError, match=rf"^{field} must be a duration in seconds, got None"):
        WaitOptions(**{field: None})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 0.0, datetime.timedelta(0)])
def test_WaitOptions_zero_poll_interval_raises_ValueError(value: object) -> None:
    with pytest.raises(ValueError, match=r"^poll_interval must be > 0 seconds, got"):
        WaitOptions(poll_interval=value)  # type: ignore[arg-type]


def test_WaitOptions_zero_timeout_grace_and_abandon_are_allowed() -> None:
    options = WaitOptions(timeout=0, interrupt_grace=0, abandon_after=0)
    assert (options.timeout, options.interrupt_grace, options.abandon_after) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "cancellation", [None, CancelToken(), threading.Event(), lambda: False, bool]
)
def test_WaitOptions_accepts_every_kind_of_cancellation(cancellation: object) -> None:
    assert WaitOptions(cancellation=cancellation).cancellation is cancellation  # type: ignore[arg-type]


@pytest.mark.parametrize("cancellation", [True, 1, "yes", object()])
def test_WaitOptions_bad_cancellation_raises_TypeError(cancellation: object) -> None:
    with pytest.raises(TypeError, match=r"^cancellation must be a CancelToken"):
        WaitOptions(cancellation=cancellation)  # type: ignore[arg-type]


def test_WaitOptions_is_frozen() -> None:
    with pytest.raises(AttributeError):
        WaitOptions().timeout = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("seconds", "ns"),
    [(0.0, 0), (1.001, 1_001_000_000), (0.1, 100_000_000), (1e-9, 1), (2.5e-10, 0)],
)
def test_to_ns_rounds_to_the_nearest_nanosecond(seconds: float, ns: int) -> None:
    assert to_ns(seconds) == ns


def test_WaitOutcome_predicates() -> None:
    timed_out = WaitOutcome(-2, TerminationReason.TIMEOUT, 1.0, 0.5, None)
    cancelled = WaitOutcome(-2, TerminationReason.CANCELLED, 1.0, 0.5, None)
    plain = WaitOutcome(0, None, 1.0, None, None)
    assert (timed_out.timed_out, timed_out.cancelled) == (True, False)
    assert (cancelled.timed_out, cancelled.cancelled) == (False, True)
    assert (plain.timed_out, plain.cancelled, plain.abandoned) == (False, False, False)


def test_ints_past_floats_range_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^abandon_after must be a finite number of seconds"):
        WaitOptions(abandon_after=10**400)


def test_to_ns_is_exact_for_durations_whose_nanoseconds_overflow_a_float() -> None:
    assert to_ns(1e300) == int(1e300) * 1_000_000_000
