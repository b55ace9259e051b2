"""The transition table: every (state, trigger) pair follows a row or is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from transitions import MachineError

from statewait import TerminationReason
from statewait._machine import (
    ABANDONED,
    EXITED,
    FINAL_STATES,
    KILLING,
    MACHINE,
    RUNNING,
    TERMINATING,
    TRANSITIONS,
    WaitModel,
    WaitState,
)

S = 1_000_000_000  # one second in ns


class Recorder(WaitModel):
    """A model whose hooks record what the driver would have sent."""

    def __init__(self, **kwargs: object) -> None:
        options: dict[str, object] = {"timeout": None, "grace": 2 * S, "abandon_after": None}
        options.update(kwargs)
        super().__init__(0, **options)  # type: ignore[arg-type]
        self.sent: list[str] = []

    def on_soft_interrupt(self) -> None:
        self.sent.append("soft_interrupt")

    def on_hard_kill(self) -> None:
        self.sent.append("hard_kill")

    def on_end(self) -> None:
        self.sent.append("end")


@pytest.fixture
def model() -> Iterator[Recorder]:
    m = Recorder(timeout=S, abandon_after=3 * S)
    MACHINE.add_model(m, initial=RUNNING)
    yield m
    MACHINE.remove_model(m)


def put(model: Recorder, state: WaitState, at: int = 0) -> None:
    """Place the model in `state` as if it had got there at time `at`."""
    if state in (TERMINATING, KILLING):
        model.reason = TerminationReason.TIMEOUT
        model.interrupted_at = at
    if state is KILLING:
        model.killed_at = at
    if state in FINAL_STATES:
        model.ended_at = at
    MACHINE.set_state(state, model)


def snapshot(model: Recorder) -> tuple[object, ...]:
    return (
        model.state,
        model.reason,
        model.interrupted_at,
        model.killed_at,
        model.ended_at,
        tuple(model.sent),
    )


# -- the table itself


def test_TRANSITIONS_never_leave_a_final_state() -> None:
    assert all(not set(row.source) & set(FINAL_STATES) for row in TRANSITIONS)


def test_TRANSITIONS_enter_KILLING_only_from_TERMINATING_and_leave_it_only_to_the_end() -> None:
    into_killing = {s for row in TRANSITIONS if row.dest is KILLING for s in row.source}
    out_of_killing = {row.dest for row in TRANSITIONS if KILLING in row.source}
    assert into_killing == {TERMINATING}
    assert out_of_killing == {EXITED, ABANDONED}


def test_TRANSITIONS_exit_row_comes_before_every_deadline_row() -> None:
    wakeups = [row for row in TRANSITIONS if row.trigger == "wakeup"]
    assert wakeups[0].conditions == ("exit_observed",)
    assert wakeups[0].source == (RUNNING, TERMINATING, KILLING)


def test_TRANSITIONS_timeout_row_comes_before_cancellation_row() -> None:
    names = [row.conditions for row in TRANSITIONS if row.source == (RUNNING,)]
    assert names.index(("timeout_due",)) < names.index(("cancel_requested",))


def test_WaitState_repr_is_readable() -> None:
    assert repr(WaitState.KILLING) == "WaitState.KILLING"
    assert repr(TerminationReason.TIMEOUT) == "TerminationReason.TIMEOUT"


# -- wakeup in each state


def test_wakeup_in_RUNNING_with_nothing_due_changes_nothing(model: Recorder) -> None:
    model.now = S  # exactly at the timeout: not strictly past it
    assert model.wakeup() is False
    assert snapshot(model) == (RUNNING, None, None, None, None, ())


def test_wakeup_in_RUNNING_past_the_timeout_interrupts_with_TIMEOUT(model: Recorder) -> None:
    model.now = S + 1
    assert model.wakeup() is True
    assert snapshot(model) == (
        TERMINATING,
        TerminationReason.TIMEOUT,
        S + 1,
        None,
        None,
        ("soft_interrupt",),
    )


def test_wakeup_in_RUNNING_on_cancellation_interrupts_with_CANCELLED(model: Recorder) -> None:
    model.cancel_check = lambda: True
    model.now = 5
    model.wakeup()
    assert snapshot(model) == (
        TERMINATING,
        TerminationReason.CANCELLED,
        5,
        None,
        None,
        ("soft_interrupt",),
    )


def test_wakeup_in_RUNNING_with_timeout_and_cancellation_due_together_picks_TIMEOUT(
    model: Recorder,
) -> None:
    model.cancel_check = lambda: True
    model.now = S + 1
    model.wakeup()
    assert (model.state, model.reason) == (TERMINATING, TerminationReason.TIMEOUT)


def test_wakeup_in_RUNNING_with_a_stop_request_interrupts_with_CANCELLED(model: Recorder) -> None:
    model.stop_requested = True
    model.now = 7
    model.wakeup()
    assert (model.state, model.reason, model.interrupted_at) == (
        TERMINATING,
        TerminationReason.CANCELLED,
        7,
    )


def test_wakeup_in_RUNNING_treats_a_truthy_cancel_callable_as_a_request(model: Recorder) -> None:
    model.cancel_check = lambda: 1  # type: ignore[assignment,return-value]
    model.wakeup()
    assert model.state is TERMINATING


@pytest.mark.parametrize("state", [RUNNING, TERMINATING, KILLING])
def test_wakeup_with_an_observed_exit_ends_the_wait_before_any_due_deadline(
    model: Recorder, state: WaitState
) -> None:
    put(model, state, at=0)
    model.cancel_check = lambda: True
    model.now = 10 * S  # every deadline is long past
    model.exit_status = -2
    model.wakeup()
    assert model.state is EXITED
    assert model.ended_at == 10 * S
    assert model.sent == ["end"]  # no signal


def test_wakeup_in_TERMINATING_within_the_grace_changes_nothing(model: Recorder) -> None:
    put(model, TERMINATING, at=S)
    model.now = 3 * S  # interrupted_at + grace exactly: not strictly past
    assert model.wakeup() is False
    assert snapshot(model) == (TERMINATING, TerminationReason.TIMEOUT, S, None, None, ())


def test_wakeup_in_TERMINATING_past_the_grace_sends_the_hard_kill(model: Recorder) -> None:
    put(model, TERMINATING, at=S)
    model.now = 3 * S + 1
    model.wakeup()
    assert snapshot(model) == (
        KILLING,
        TerminationReason.TIMEOUT,
        S,
        3 * S + 1,
        None,
        ("hard_kill",),
    )


def test_wakeup_in_TERMINATING_ignores_a_later_cancellation(model: Recorder) -> None:
    put(model, TERMINATING, at=S)
    model.cancel_check = lambda: True
    model.now = S + 1
    assert model.wakeup() is False
    assert (model.state, model.reason) == (TERMINATING, TerminationReason.TIMEOUT)


def test_wakeup_in_KILLING_never_sends_a_second_hard_kill(model: Recorder) -> None:
    put(model, KILLING, at=S)
    for now in (2 * S, 4 * S):  # up to and exactly at the abandon deadline
        model.now = now
        model.wakeup()
    assert snapshot(model) == (KILLING, TerminationReason.TIMEOUT, S, S, None, ())


def test_wakeup_in_KILLING_past_abandon_after_abandons(model: Recorder) -> None:
    put(model, KILLING, at=S)
    model.now = 4 * S + 1
    model.wakeup()
    assert snapshot(model) == (ABANDONED, TerminationReason.TIMEOUT, S, S, 4 * S + 1, ("end",))


def test_wakeup_in_KILLING_without_abandon_after_waits_for_ever(model: Recorder) -> None:
    model.abandon_after = None
    put(model, KILLING, at=0)
    model.now = 10**15
    model.wakeup()
    assert model.state is KILLING
    assert model.pending_deadline() is None


@pytest.mark.parametrize("state", [EXITED, ABANDONED])
@pytest.mark.parametrize("trigger", ["wakeup", "escalate"])
def test_every_trigger_in_a_final_state_is_refused_and_changes_nothing(
    model: Recorder, state: WaitState, trigger: str
) -> None:
    put(model, state, at=S)
    model.exit_status = 0
    before = snapshot(model)
    with pytest.raises(MachineError):
        getattr(model, trigger)()
    assert snapshot(model) == before


# -- escalate


def test_escalate_in_TERMINATING_kills_at_once(model: Recorder) -> None:
    put(model, TERMINATING, at=S)
    model.now = S + 5  # well within the grace
    assert model.escalate() is True
    assert snapshot(model) == (
        KILLING,
        TerminationReason.TIMEOUT,
        S,
        S + 5,
        None,
        ("hard_kill",),
    )


@pytest.mark.parametrize("state", [RUNNING, KILLING])
def test_escalate_outside_TERMINATING_is_refused_and_changes_nothing(
    model: Recorder, state: WaitState
) -> None:
    put(model, state, at=S)
    before = snapshot(model)
    assert model.may_escalate() is False
    with pytest.raises(MachineError):
        model.escalate()
    assert snapshot(model) == before


def test_every_state_and_trigger_pair_is_covered_above() -> None:
    # The tests above are written per pair; this keeps the list honest if a
    # state or a trigger is added to the table.
    triggers = {row.trigger for row in TRANSITIONS}
    assert triggers == {"wakeup", "escalate"}
    assert set(WaitState) == {RUNNING, TERMINATING, KILLING, EXITED, ABANDONED}


# -- deadlines


def test_pending_deadline_follows_the_state(model: Recorder) -> None:
    assert model.pending_deadline() == S
    put(model, TERMINATING, at=5)
    assert model.pending_deadline() == 5 + 2 * S
    put(model, KILLING, at=7)
    assert model.pending_deadline() == 7 + 3 * S
    put(model, EXITED, at=9)
    assert model.pending_deadline() is None


def test_pending_deadline_in_RUNNING_without_timeout_is_none() -> None:
    m = Recorder(timeout=None)
    MACHINE.add_model(m, initial=RUNNING)
    try:
        assert m.pending_deadline() is None
    finally:
        MACHINE.remove_model(m)
