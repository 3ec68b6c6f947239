"""`decision_trace_json`: why a request was auto-approved or waits for approval.

Written once when the request is created and shown with it (`GET /api/requests/{id}`);
the claim reads the requester's role back from it, to sign it into the execution token,
and the request's `context` (tables, review findings, risk) is read from it, so what the
approvers see is what the decision was made on. Writer and readers live here together so
they cannot drift apart.

The shape is version 1, as dbward 0.2 readers know it, extended only by new keys: the
classes of the statements, the findings, the risk factors' details, the tables, and which
rule decided (docs/sql-safety.md §4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from application.server.ports.work.requests import RequestRecord
from application.server.requests.judgement import Judgement
from domain.server.rbac import Principal
from domain.server.workflows import (
    AutoApproved,
    AutoApproveMode,
    Decision,
    DecisionReason,
    RiskLevel,
    Workflow,
)

__all__ = ["DdlBypass", "decision_trace", "judged_context", "requester_role"]

#: The role recorded, and signed into the token, when the requester's cannot be told.
UNKNOWN_ROLE = "unknown"


@dataclass(frozen=True)
class DdlBypass:
    """What a break-glass request with `allow_ddl` let through (docs/sql-safety.md §6)."""

    classifier_bypassed: bool
    reviewer_bypassed: bool


def decision_trace(
    *,
    judgement: Judgement,
    emergency: bool,
    principal: Principal,
    bypass: DdlBypass | None = None,
) -> dict[str, Any]:
    """`decision_trace_json` v1 plus our additions, and the requester role the token names.

    `judgement.decision` is None when no workflow matched (only break-glass gets that far).
    """
    decision = judgement.decision
    if emergency:
        outcome, reasons = "auto_approved", ["break_glass"]
    elif isinstance(decision, AutoApproved):
        outcome, reasons = "auto_approved", [decision.reason.value]
    else:
        outcome = "needs_approval"
        reasons = [] if decision is None else [decision.reason.value]
    workflow = judgement.workflow
    rule = workflow.auto_approve if workflow is not None else None
    classification = judgement.classification
    review = judgement.review
    risk = judgement.risk
    return {
        "version": 1,
        "classification": {
            "resolved_operation": judgement.operation.value,
            "class": None if classification is None else classification.kind.value,
            "statement_count": 0 if classification is None else classification.statement_count,
            "statements": []
            if classification is None
            else [{"class": s.kind.value, "reason": s.reason} for s in classification.statements],
            "tables": []
            if classification is None
            else [str(table) for table in classification.tables],
        },
        "sql_review": {
            "policy_id": None if classification is None else judgement.review_policy.id,
            "findings_count": 0 if review is None else len(review.findings),
            "parse_failed": classification is not None and classification.parse_failed,
            "findings": [] if review is None else [f.to_json() for f in review.findings],
        },
        "risk": {
            "level": None if risk is None else risk.level.value,
            "factors": [] if risk is None else [f.code for f in risk.factors],
            "factor_details": [] if risk is None else [f.to_json() for f in risk.factors],
            "schema_status": judgement.schema_status.value,
        },
        "workflow": {
            "matched": None
            if workflow is None
            else {
                "id": workflow.id,
                "database": workflow.database,
                "environment": workflow.environment,
                "step_count": len(workflow.steps),
            }
        },
        "decision": {
            "outcome": outcome,
            "reasons": reasons,
            "auto_approve_threshold": None
            if rule is None or rule.risk is None
            else rule.risk.value,
            "rule": _deciding_rule(
                emergency, workflow, decision, None if risk is None else risk.level
            ),
            "ddl_bypass": None
            if bypass is None
            else {
                "classifier_bypassed": bypass.classifier_bypassed,
                "reviewer_bypassed": bypass.reviewer_bypassed,
            },
        },
        "requester_role": principal.roles[0].name if principal.roles else UNKNOWN_ROLE,
    }


def _deciding_rule(
    emergency: bool, workflow: Workflow | None, decision: Decision | None, risk: RiskLevel | None
) -> str:
    """Which rule decided, in words: `always`, `risk_based: low <= medium`, `break_glass`…"""
    if emergency:
        return "break_glass"
    if workflow is None or decision is None:
        return "no workflow"
    rule = workflow.auto_approve
    if rule is None:
        return "no auto_approve: approval steps"
    if rule.mode is AutoApproveMode.ALWAYS:
        return "always"
    threshold = "none" if rule.risk is None else rule.risk.value
    if risk is None:
        return "risk_based: not assessed (migration)"
    if decision.reason is DecisionReason.RISK_UNAVAILABLE:
        return f"risk_based: {risk.value} is not a known risk"
    if decision.reason is DecisionReason.RISK_BELOW_THRESHOLD:
        return f"risk_based: {risk.value} <= {threshold}"
    return f"risk_based: {risk.value} > {threshold}"


def _trace(record: RequestRecord) -> dict[str, Any]:
    if not record.decision_trace_json:
        return {}
    try:
        trace = json.loads(record.decision_trace_json)
    except ValueError:
        return {}
    return trace if isinstance(trace, dict) else {}


def requester_role(record: RequestRecord) -> str:
    """The requester's first role when the request was created (signed into the token)."""
    role = _trace(record).get("requester_role")
    if isinstance(role, str) and role:
        return role
    return UNKNOWN_ROLE


def judged_context(record: RequestRecord) -> dict[str, Any]:
    """The `context` of `GET /api/requests/{id}` that the create-time judgement wrote:
    `tables`, `sql_review{policy_id, findings, blocked}` and `risk{level, factors}`.

    `sql_review` and `risk` are None where nothing was reviewed or assessed (migrations,
    or a request created before the trace held them). `blocked` is true only for a
    break-glass request that passed a blocking finding.
    """
    trace = _trace(record)
    classification = _object(trace.get("classification"))
    review = _object(trace.get("sql_review"))
    risk = _object(trace.get("risk"))
    findings = _list(review.get("findings"))
    return {
        "tables": _list(classification.get("tables")),
        "sql_review": None
        if review.get("policy_id") is None
        else {
            "policy_id": review.get("policy_id"),
            "findings": findings,
            "blocked": any(_object(f).get("action") == "block" for f in findings),
        },
        "risk": None
        if risk.get("level") is None
        else {"level": risk.get("level"), "factors": _list(risk.get("factor_details"))},
    }


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
