"""The decision trace: what create writes, and the requester role the claim reads back."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from application.server.ports.work.requests import RequestRecord
from application.server.requests.decision_trace import decision_trace, requester_role
from domain.server.request_lifecycle import RequestStatus
from domain.server.workflows import (
    AutoApproved,
    DecisionReason,
    NeedsApproval,
    RiskLevel,
)
from domain.shared.operations import Operation
from tests.unit.application.server.test_requests_and_claims import (
    ALICE,
    ALWAYS,
    NEEDS_DBA,
    T0,
    user,
)

RECORD = RequestRecord(
    id="r1",
    requester="alice",
    operation=Operation.EXECUTE_SELECT,
    database="app",
    environment="production",
    detail="SELECT 1",
    status=RequestStatus.DISPATCHED,
    created_at=T0,
    updated_at=T0,
)


def test_the_trace_explains_an_auto_approval() -> None:
    trace = decision_trace(
        operation=Operation.EXECUTE_SELECT,
        workflow=ALWAYS,
        risk=RiskLevel.LOW,
        decision=AutoApproved(DecisionReason.EXPLICIT_ALWAYS),
        emergency=False,
        principal=ALICE,
    )
    assert trace["decision"] == {
        "outcome": "auto_approved",
        "reasons": ["explicit_always"],
        "auto_approve_threshold": None,
    }
    assert trace["risk"] == {
        "level": "low",
        "factors": ["read_only"],
        "schema_status": "not_synced",
    }
    assert trace["workflow"]["matched"]["step_count"] == 0
    assert trace["requester_role"] == "requester"


@pytest.mark.parametrize(
    ("emergency", "decision", "outcome", "reasons"),
    [
        (True, None, "auto_approved", ["break_glass"]),
        (
            False,
            NeedsApproval(DecisionReason.NO_AUTO_APPROVE_RULE),
            "needs_approval",
            ["no_auto_approve_rule"],
        ),
        (False, None, "needs_approval", []),
    ],
)
def test_the_trace_explains_break_glass_and_waiting_for_approval(
    emergency: bool, decision: NeedsApproval | None, outcome: str, reasons: list[str]
) -> None:
    trace = decision_trace(
        operation=Operation.EXECUTE_DML,
        workflow=None if decision is None else NEEDS_DBA,
        risk=RiskLevel.UNKNOWN,
        decision=decision,
        emergency=emergency,
        principal=ALICE,
    )
    assert (trace["decision"]["outcome"], trace["decision"]["reasons"]) == (outcome, reasons)
    assert trace["classification"] == {"resolved_operation": "execute_dml"}


def test_the_requester_role_is_read_back_from_the_trace() -> None:
    trace = decision_trace(
        operation=Operation.EXECUTE_SELECT,
        workflow=ALWAYS,
        risk=RiskLevel.LOW,
        decision=AutoApproved(DecisionReason.EXPLICIT_ALWAYS),
        emergency=False,
        principal=user("ops", "operator", "requester"),
    )
    record = replace(RECORD, decision_trace_json=json.dumps(trace))
    assert requester_role(record) == "operator"


@pytest.mark.parametrize(
    "stored",
    [None, "", "not json", json.dumps({"version": 1}), json.dumps({"requester_role": ""})],
)
def test_a_trace_without_a_role_names_the_role_unknown(stored: str | None) -> None:
    assert requester_role(replace(RECORD, decision_trace_json=stored)) == "unknown"
    nobody = user("nobody")
    trace = decision_trace(
        operation=Operation.EXECUTE_SELECT,
        workflow=None,
        risk=None,
        decision=None,
        emergency=True,
        principal=nobody,
    )
    assert trace["requester_role"] == "unknown"
