"""`decision_trace_json`: why a request was auto-approved or waits for approval.

Written once when the request is created and shown with it (`GET /api/requests/{id}`);
the claim reads the requester's role back from it, to sign it into the execution token.
Writer and reader live here together so the two cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from application.server.ports.work.requests import RequestRecord
from domain.server.rbac import Principal
from domain.server.workflows import AutoApproved, Decision, RiskLevel, Workflow
from domain.shared.operations import Operation

__all__ = ["decision_trace", "requester_role"]

#: The role recorded, and signed into the token, when the requester's cannot be told.
UNKNOWN_ROLE = "unknown"


def decision_trace(
    *,
    operation: Operation,
    workflow: Workflow | None,
    risk: RiskLevel | None,
    decision: Decision | None,
    emergency: bool,
    principal: Principal,
) -> dict[str, Any]:
    """`decision_trace_json` v1 (§1.3), plus the requester role the execution token names.

    `decision` is None when no workflow matched (only break-glass gets that far).
    """
    if emergency:
        outcome, reasons = "auto_approved", ["break_glass"]
    elif isinstance(decision, AutoApproved):
        outcome, reasons = "auto_approved", [decision.reason.value]
    else:
        outcome = "needs_approval"
        reasons = [] if decision is None else [decision.reason.value]
    rule = workflow.auto_approve if workflow is not None else None
    return {
        "version": 1,
        "classification": {"resolved_operation": operation.value},
        "sql_review": {
            "policy_id": None,
            "findings_count": 0,
            "parse_failed": False,
        },
        "risk": {
            "level": None if risk is None else risk.value,
            "factors": ["read_only"] if risk is RiskLevel.LOW else [],
            "schema_status": "not_synced",
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
        },
        "requester_role": principal.roles[0].name if principal.roles else UNKNOWN_ROLE,
    }


def requester_role(record: RequestRecord) -> str:
    """The requester's first role when the request was created (signed into the token)."""
    if record.decision_trace_json:
        try:
            role = json.loads(record.decision_trace_json).get("requester_role")
        except ValueError:
            role = None
        if isinstance(role, str) and role:
            return role
    return UNKNOWN_ROLE
