"""The request state machine against docs/server.md §1.1 and §1.2, row by row.

The expected table is written out here by hand (not derived from the module), so a change
to the module's table has to be a deliberate change to this file too.
"""

from __future__ import annotations

import itertools

import pytest

from domain.server.errors import Conflict
from domain.server.request_lifecycle import (
    CANCELLABLE_STATUSES,
    REDISPATCH_STATUSES,
    TERMINAL_STATUSES,
    InvalidTransition,
    RequestStatus,
    Trigger,
    allowed_from,
    can_transition,
    dispatch_timeout_target,
    is_cancellable,
    is_dispatchable,
    is_expirable,
    is_terminal,
    parse_status,
    publishes_completion,
    transition,
)

S = RequestStatus
T = Trigger

#: docs/server.md §1.2, plus our two documented changes (marked "ours").
EXPECTED: dict[tuple[RequestStatus, Trigger], RequestStatus] = {
    (S.PENDING, T.APPROVE_STEP): S.PENDING,
    (S.PENDING, T.APPROVE_FINAL): S.APPROVED,
    (S.PENDING, T.REJECT): S.REJECTED,
    (S.PENDING, T.EXPIRE): S.EXPIRED,
    (S.APPROVED, T.EXPIRE): S.EXPIRED,
    (S.AUTO_APPROVED, T.EXPIRE): S.EXPIRED,  # ours: a reverted auto-approval still expires
    (S.BREAK_GLASS, T.EXPIRE): S.EXPIRED,  # ours: same for break-glass
    (S.EXECUTION_LOST, T.EXPIRE): S.EXPIRED,  # ours: a lost request nobody resumes ends
    (S.PENDING, T.CANCEL): S.CANCELLED,
    (S.APPROVED, T.CANCEL): S.CANCELLED,
    (S.AUTO_APPROVED, T.CANCEL): S.CANCELLED,
    (S.BREAK_GLASS, T.CANCEL): S.CANCELLED,
    (S.DISPATCHED, T.CANCEL): S.CANCELLED,
    (S.RUNNING, T.CANCEL): S.CANCELLED,
    (S.EXECUTION_LOST, T.CANCEL): S.CANCELLED,
    (S.APPROVED, T.DISPATCH): S.DISPATCHED,
    (S.AUTO_APPROVED, T.DISPATCH): S.DISPATCHED,
    (S.BREAK_GLASS, T.DISPATCH): S.DISPATCHED,
    (S.EXECUTED, T.DISPATCH): S.DISPATCHED,
    (S.FAILED, T.DISPATCH): S.DISPATCHED,
    (S.EXECUTION_LOST, T.DISPATCH): S.DISPATCHED,
    (S.DISPATCHED, T.DISPATCH_TIMEOUT): S.APPROVED,
    (S.DISPATCHED, T.CLAIM): S.RUNNING,
    (S.RUNNING, T.COMPLETE_SUCCESS): S.EXECUTED,
    (S.RUNNING, T.COMPLETE_FAILURE): S.FAILED,
    (S.RUNNING, T.LEASE_EXPIRED): S.EXECUTION_LOST,
    (S.CANCELLED, T.COMPLETE_SUCCESS): S.CANCELLED,
    (S.CANCELLED, T.COMPLETE_FAILURE): S.CANCELLED,
    (S.EXECUTION_LOST, T.COMPLETE_SUCCESS): S.EXECUTED,
    (S.EXECUTION_LOST, T.COMPLETE_FAILURE): S.FAILED,
}

CREATE = {
    T.CREATE_EMERGENCY: S.BREAK_GLASS,
    T.CREATE_AUTO_APPROVED: S.AUTO_APPROVED,
    T.CREATE_NEEDS_APPROVAL: S.PENDING,
}


def test_twelve_statuses_with_their_stored_strings() -> None:
    assert [status.value for status in RequestStatus] == [
        "pending",
        "approved",
        "auto_approved",
        "break_glass",
        "dispatched",
        "running",
        "executed",
        "failed",
        "execution_lost",
        "rejected",
        "cancelled",
        "expired",
    ]


@pytest.mark.parametrize(("pair", "target"), EXPECTED.items(), ids=str)
def test_every_row_of_the_table(pair: tuple[RequestStatus, Trigger], target: RequestStatus) -> None:
    current, trigger = pair
    assert transition(current, trigger) is target
    assert can_transition(current, trigger)


@pytest.mark.parametrize(("trigger", "created"), CREATE.items())
def test_creation(trigger: Trigger, created: RequestStatus) -> None:
    assert transition(None, trigger) is created


def test_create_helper_lets_emergency_win() -> None:
    assert Trigger.create(emergency=True, needs_approval=True) is T.CREATE_EMERGENCY
    assert Trigger.create(emergency=True, needs_approval=False) is T.CREATE_EMERGENCY
    assert Trigger.create(emergency=False, needs_approval=True) is T.CREATE_NEEDS_APPROVAL
    assert Trigger.create(emergency=False, needs_approval=False) is T.CREATE_AUTO_APPROVED
    assert Trigger.complete(success=True) is T.COMPLETE_SUCCESS
    assert Trigger.complete(success=False) is T.COMPLETE_FAILURE


def test_auto_approved_and_break_glass_are_dispatched_at_creation() -> None:
    for trigger in (T.CREATE_EMERGENCY, T.CREATE_AUTO_APPROVED):
        assert transition(transition(None, trigger), T.DISPATCH) is S.DISPATCHED


def test_every_other_pair_is_invalid() -> None:
    for current, trigger in itertools.product(RequestStatus, Trigger):
        if (current, trigger) in EXPECTED:
            continue
        with pytest.raises(InvalidTransition) as caught:
            transition(current, trigger)
        assert caught.value.current is current
        assert caught.value.trigger is trigger
        assert not can_transition(current, trigger)


def test_non_create_trigger_without_a_status_is_invalid() -> None:
    with pytest.raises(InvalidTransition, match=r"^invalid transition: none \+ Dispatch$"):
        transition(None, T.DISPATCH)


@pytest.mark.parametrize(
    ("current", "trigger", "message"),
    [
        (S.EXECUTED, T.CANCEL, "invalid transition: executed + Cancel"),
        (S.PENDING, T.DISPATCH, "invalid transition: pending + Dispatch"),
        (S.APPROVED, T.APPROVE_FINAL, "invalid transition: approved + ApproveFinal"),
        (
            S.DISPATCHED,
            T.COMPLETE_SUCCESS,
            "invalid transition: dispatched + Complete { success: true }",
        ),
        (S.RUNNING, T.CLAIM, "invalid transition: running + Claim"),
        (S.REJECTED, T.DISPATCH, "invalid transition: rejected + Dispatch"),
        (S.EXPIRED, T.CANCEL, "invalid transition: expired + Cancel"),
        (S.EXECUTION_LOST, T.LEASE_EXPIRED, "invalid transition: execution_lost + LeaseExpired"),
        (
            S.PENDING,
            T.CREATE_NEEDS_APPROVAL,
            "invalid transition: pending + Create { emergency: false, needs_approval: true }",
        ),
    ],
)
def test_invalid_pairs_name_status_and_trigger(
    current: RequestStatus, trigger: Trigger, message: str
) -> None:
    with pytest.raises(InvalidTransition) as caught:
        transition(current, trigger)
    assert str(caught.value) == message
    assert caught.value.message == message


def test_invalid_transition_is_a_409_conflict() -> None:
    with pytest.raises(Conflict) as caught:
        transition(S.EXECUTED, T.CANCEL)
    assert caught.value.status == 409
    assert caught.value.code == "invalid_transition"


# --- late completion (§11.6) -----------------------------------------------


def test_late_completion_after_lease_loss() -> None:
    lost = transition(transition(S.DISPATCHED, T.CLAIM), T.LEASE_EXPIRED)
    assert lost is S.EXECUTION_LOST
    assert transition(lost, T.COMPLETE_SUCCESS) is S.EXECUTED
    assert transition(lost, T.COMPLETE_FAILURE) is S.FAILED
    assert publishes_completion(lost)


def test_result_for_a_cancelled_request_is_kept_quiet() -> None:
    assert transition(S.CANCELLED, T.COMPLETE_SUCCESS) is S.CANCELLED
    assert not publishes_completion(S.CANCELLED)
    assert publishes_completion(S.RUNNING)
    assert not publishes_completion(S.DISPATCHED)


# --- dispatch timeout provenance (§11.4) --------------------------------------


@pytest.mark.parametrize(
    "before",
    [S.APPROVED, S.AUTO_APPROVED, S.BREAK_GLASS, S.EXECUTED, S.FAILED, S.EXECUTION_LOST],
)
def test_dispatch_timeout_returns_to_the_status_before_dispatch(before: RequestStatus) -> None:
    dispatched = transition(before, T.DISPATCH)
    assert dispatch_timeout_target(before) is before
    assert transition(dispatched, T.DISPATCH_TIMEOUT, pre_dispatch_status=before) is before


@pytest.mark.parametrize("before", [None, S.PENDING, S.RUNNING, S.DISPATCHED, S.CANCELLED])
def test_dispatch_timeout_falls_back_to_approved(before: RequestStatus | None) -> None:
    assert dispatch_timeout_target(before) is S.APPROVED
    assert transition(S.DISPATCHED, T.DISPATCH_TIMEOUT, pre_dispatch_status=before) is S.APPROVED


def test_pre_dispatch_status_does_not_widen_the_table() -> None:
    with pytest.raises(InvalidTransition):
        transition(S.RUNNING, T.DISPATCH_TIMEOUT, pre_dispatch_status=S.AUTO_APPROVED)
    assert transition(S.APPROVED, T.CANCEL, pre_dispatch_status=S.BREAK_GLASS) is S.CANCELLED


def test_reverted_auto_approval_can_expire_and_be_resumed() -> None:
    back = transition(S.DISPATCHED, T.DISPATCH_TIMEOUT, pre_dispatch_status=S.AUTO_APPROVED)
    assert transition(back, T.EXPIRE) is S.EXPIRED
    assert transition(back, T.DISPATCH) is S.DISPATCHED


# --- helpers (§1.1 columns) ----------------------------------------------------------


def test_terminal_column() -> None:
    assert {s for s in RequestStatus if is_terminal(s)} == {
        S.EXECUTED,
        S.FAILED,
        S.REJECTED,
        S.CANCELLED,
        S.EXPIRED,
    }
    assert not is_terminal(S.EXECUTION_LOST)
    assert frozenset(s for s in RequestStatus if is_terminal(s)) == TERMINAL_STATUSES


def test_cancellable_column() -> None:
    expected = {
        S.PENDING,
        S.APPROVED,
        S.AUTO_APPROVED,
        S.BREAK_GLASS,
        S.DISPATCHED,
        S.RUNNING,
        S.EXECUTION_LOST,
    }
    assert {s for s in RequestStatus if is_cancellable(s)} == expected == CANCELLABLE_STATUSES


def test_dispatchable_column() -> None:
    assert {s for s in RequestStatus if is_dispatchable(s)} == {
        S.APPROVED,
        S.AUTO_APPROVED,
        S.BREAK_GLASS,
        S.EXECUTED,
        S.FAILED,
        S.EXECUTION_LOST,
    }


def test_expirable_statuses() -> None:
    assert {s for s in RequestStatus if is_expirable(s)} == {
        S.PENDING,
        S.APPROVED,
        S.AUTO_APPROVED,
        S.BREAK_GLASS,
        S.EXECUTION_LOST,
    }


def test_redispatch_statuses_are_those_that_ran_before() -> None:
    assert {S.EXECUTED, S.FAILED, S.EXECUTION_LOST} == REDISPATCH_STATUSES
    assert all(is_dispatchable(s) for s in REDISPATCH_STATUSES)


def test_allowed_from_gives_the_conditional_update_sets() -> None:
    assert allowed_from(T.CLAIM) == {S.DISPATCHED}
    assert allowed_from(T.LEASE_EXPIRED) == {S.RUNNING}
    assert allowed_from(T.COMPLETE_SUCCESS) == {S.RUNNING, S.EXECUTION_LOST, S.CANCELLED}
    assert allowed_from(T.DISPATCH) == {
        S.APPROVED,
        S.AUTO_APPROVED,
        S.BREAK_GLASS,
        S.EXECUTED,
        S.FAILED,
        S.EXECUTION_LOST,
    }
    assert allowed_from(T.CANCEL) == CANCELLABLE_STATUSES
    for trigger in Trigger:
        assert allowed_from(trigger) == {s for (s, t) in EXPECTED if t is trigger}


def test_parse_status_accepts_the_legacy_completed() -> None:
    assert parse_status("completed") is S.EXECUTED
    assert parse_status("execution_lost") is S.EXECUTION_LOST
    with pytest.raises(ValueError, match="unknown request status"):
        parse_status("done")
