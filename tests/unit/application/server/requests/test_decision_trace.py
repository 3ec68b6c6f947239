"""The decision trace: what create writes, the requester role the claim reads back, and the
request context read from it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from application.server.ports.work.requests import RequestRecord
from application.server.requests.decision_trace import (
    decision_trace,
    judged_context,
    requester_role,
)
from application.server.requests.judgement import Judgement
from domain.server.request_lifecycle import RequestStatus
from domain.server.risk import RiskAssessment, RiskFactor, SchemaStatus
from domain.server.sql_review import BUILTIN_REVIEW_POLICY
from domain.server.workflows import (
    AutoApprove,
    AutoApproved,
    AutoApproveMode,
    Decision,
    DecisionReason,
    NeedsApproval,
    RiskLevel,
    Workflow,
)
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from tests.unit.application.server.test_requests_and_claims import (
    ALICE,
    ALWAYS,
    NEEDS_DBA,
    T0,
    user,
)

APPROVED_ALWAYS = AutoApproved(DecisionReason.EXPLICIT_ALWAYS)


def judgement(
    operation: Operation = Operation.EXECUTE_SELECT,
    *,
    workflow: Workflow | None = ALWAYS,
    risk: RiskLevel | None = RiskLevel.LOW,
    decision: Decision | None = APPROVED_ALWAYS,
    factors: tuple[RiskFactor, ...] = (),
) -> Judgement:
    """A judgement of SQL nobody classified (the trace's own fields are tested here)."""
    return Judgement(
        scope=Scope("app", "production"),
        operation=operation,
        dialect="postgresql",
        classification=None,
        review_policy=BUILTIN_REVIEW_POLICY,
        review=None,
        schema_status=SchemaStatus.NOT_SYNCED,
        risk=None if risk is None else RiskAssessment(risk, factors),
        workflow=workflow,
        decision=decision,
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
        judgement=judgement(factors=(RiskFactor("read_only"),)),
        emergency=False,
        principal=ALICE,
    )
    assert trace["decision"] == {
        "outcome": "auto_approved",
        "reasons": ["explicit_always"],
        "auto_approve_threshold": None,
        "rule": "always",
        "ddl_bypass": None,
    }
    assert trace["risk"] == {
        "level": "low",
        "factors": ["read_only"],
        "factor_details": [{"code": "read_only", "detail": ""}],
        "schema_status": "not_synced",
    }
    assert trace["workflow"]["matched"]["step_count"] == 0
    assert trace["requester_role"] == "requester"


@pytest.mark.parametrize(
    ("emergency", "decision", "outcome", "reasons", "rule"),
    [
        (True, None, "auto_approved", ["break_glass"], "break_glass"),
        (
            False,
            NeedsApproval(DecisionReason.NO_AUTO_APPROVE_RULE),
            "needs_approval",
            ["no_auto_approve_rule"],
            "no auto_approve: approval steps",
        ),
        (False, None, "needs_approval", [], "no workflow"),
    ],
)
def test_the_trace_explains_break_glass_and_waiting_for_approval(
    emergency: bool, decision: NeedsApproval | None, outcome: str, reasons: list[str], rule: str
) -> None:
    trace = decision_trace(
        judgement=judgement(
            Operation.EXECUTE_DML,
            workflow=None if decision is None else NEEDS_DBA,
            risk=RiskLevel.UNKNOWN,
            decision=decision,
        ),
        emergency=emergency,
        principal=ALICE,
    )
    assert (trace["decision"]["outcome"], trace["decision"]["reasons"]) == (outcome, reasons)
    assert trace["decision"]["rule"] == rule
    assert trace["classification"]["resolved_operation"] == "execute_dml"


def test_the_requester_role_is_read_back_from_the_trace() -> None:
    trace = decision_trace(
        judgement=judgement(), emergency=False, principal=user("ops", "operator", "requester")
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
        judgement=judgement(workflow=None, risk=None, decision=None),
        emergency=True,
        principal=nobody,
    )
    assert trace["requester_role"] == "unknown"


RISK_BASED = Workflow(
    database="app",
    environment="production",
    auto_approve=AutoApprove(AutoApproveMode.RISK_BASED, RiskLevel.MEDIUM),
)


@pytest.mark.parametrize(
    ("risk", "decision", "rule"),
    [
        (
            RiskLevel.LOW,
            AutoApproved(DecisionReason.RISK_BELOW_THRESHOLD),
            "risk_based: low <= medium",
        ),
        (
            RiskLevel.HIGH,
            NeedsApproval(DecisionReason.RISK_ABOVE_THRESHOLD),
            "risk_based: high > medium",
        ),
        (
            RiskLevel.UNKNOWN,
            NeedsApproval(DecisionReason.RISK_UNAVAILABLE),
            "risk_based: unknown is not a known risk",
        ),
        (
            None,
            NeedsApproval(DecisionReason.RISK_UNAVAILABLE),
            "risk_based: not assessed (migration)",
        ),
    ],
)
def test_the_trace_names_the_risk_based_comparison_that_decided(
    risk: RiskLevel | None, decision: Decision, rule: str
) -> None:
    trace = decision_trace(
        judgement=judgement(workflow=RISK_BASED, risk=risk, decision=decision),
        emergency=False,
        principal=ALICE,
    )
    assert trace["decision"]["rule"] == rule
    assert trace["decision"]["auto_approve_threshold"] == "medium"


def test_a_migration_trace_has_no_review_and_no_risk() -> None:
    trace = decision_trace(
        judgement=judgement(Operation.MIGRATE_UP, risk=None), emergency=False, principal=ALICE
    )
    assert trace["classification"] == {
        "resolved_operation": "migrate_up",
        "class": None,
        "statement_count": 0,
        "statements": [],
        "tables": [],
    }
    assert trace["sql_review"]["policy_id"] is None
    record = replace(RECORD, decision_trace_json=json.dumps(trace))
    assert judged_context(record) == {"tables": [], "sql_review": None, "risk": None}


@pytest.mark.parametrize(
    "stored", [None, "not json", "[]", json.dumps({"version": 1, "sql_review": "x", "risk": 3})]
)
def test_the_context_of_an_old_or_odd_trace_is_empty(stored: Any) -> None:
    record = replace(RECORD, decision_trace_json=stored)
    assert judged_context(record) == {"tables": [], "sql_review": None, "risk": None}
