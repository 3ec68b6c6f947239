"""A request keeps the workflow it was created under, frozen as JSON in its row.

Configuration may change while a request waits; approvals, visibility and the approvers
shown keep following the workflow as it was when the request was created.
"""

from __future__ import annotations

import json
from typing import Any

from domain.server.rbac import parse_selector
from domain.server.workflows import (
    ApprovalStep,
    Approver,
    AutoApprove,
    AutoApproveMode,
    RiskLevel,
    StepMode,
    Workflow,
)
from domain.shared.operations import Operation

__all__ = ["workflow_from_snapshot", "workflow_snapshot"]


def workflow_as_dict(workflow: Workflow) -> dict[str, Any]:
    """The workflow as plain JSON values: what a request's snapshot freezes and what
    `GET /api/workflows` lists."""
    rule = workflow.auto_approve
    return {
        "id": workflow.id,
        "database": workflow.database,
        "environment": workflow.environment,
        "operations": [op.value for op in workflow.operations],
        "require_reason": workflow.require_reason,
        "allow_self_approve": workflow.allow_self_approve,
        "allow_same_approver_across_steps": workflow.allow_same_approver_across_steps,
        "explain": workflow.explain,
        "pending_ttl_secs": workflow.pending_ttl_secs,
        "approved_ttl_secs": workflow.approved_ttl_secs,
        "statement_timeout_secs": workflow.statement_timeout_secs,
        "auto_approve": None
        if rule is None
        else {
            "mode": rule.mode.value,
            "risk": None if rule.risk is None else rule.risk.value,
            "allow_read_only": rule.allow_read_only,
            "allow_safe_ddl": rule.allow_safe_ddl,
            "max_estimated_rows": rule.max_estimated_rows,
        },
        "steps": [
            {
                "mode": step.mode.value,
                "approvers": [
                    {"selector": str(approver.selector), "min": approver.min}
                    for approver in step.approvers
                ],
            }
            for step in workflow.steps
        ],
    }


def workflow_snapshot(workflow: Workflow) -> str:
    """The matched workflow frozen as JSON in the request row (approvals read it later)."""
    return json.dumps(workflow_as_dict(workflow), separators=(",", ":"), sort_keys=True)


def workflow_from_snapshot(snapshot_json: str | None) -> Workflow | None:
    """The workflow a request was created under, as `workflow_snapshot` froze it."""
    if not snapshot_json:
        return None
    data = json.loads(snapshot_json)
    rule = data.get("auto_approve")
    return Workflow(
        database=data["database"],
        environment=data["environment"],
        operations=tuple(Operation(op) for op in data.get("operations", [])),
        require_reason=bool(data.get("require_reason", False)),
        allow_self_approve=bool(data.get("allow_self_approve", False)),
        allow_same_approver_across_steps=bool(data.get("allow_same_approver_across_steps", False)),
        explain=bool(data.get("explain", True)),
        pending_ttl_secs=data.get("pending_ttl_secs"),
        approved_ttl_secs=data.get("approved_ttl_secs"),
        statement_timeout_secs=data.get("statement_timeout_secs"),
        auto_approve=None
        if rule is None
        else AutoApprove(
            mode=AutoApproveMode(rule["mode"]),
            risk=None if rule.get("risk") is None else RiskLevel(rule["risk"]),
            allow_read_only=bool(rule.get("allow_read_only", True)),
            allow_safe_ddl=bool(rule.get("allow_safe_ddl", True)),
            max_estimated_rows=int(rule.get("max_estimated_rows", 1000)),
        ),
        steps=tuple(
            ApprovalStep(
                mode=StepMode(step.get("mode", "all")),
                approvers=tuple(
                    Approver(parse_selector(a["selector"]), int(a.get("min", 1)))
                    for a in step.get("approvers", [])
                ),
            )
            for step in data.get("steps", [])
        ),
    )
