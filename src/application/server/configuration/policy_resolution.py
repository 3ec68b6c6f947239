"""`GET /api/policy-resolution`: which policies and workflows a (database, environment) gets.

docs/server.md §8.2, docs/preflight.md. The answer uses the very matching rules a request
meets (`match_workflow`, `resolve_scoped`), so it cannot drift from what create decides;
only the decision is a preview, since without SQL there is no risk to judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from application.server.settings import ServerSettings
from domain.server.errors import Validation
from domain.server.execution_policies import DEFAULT_EXECUTION_POLICY, ExecutionPolicy
from domain.server.policy_matching import matched_by, resolve_scoped
from domain.server.preflight import DecisionPreview, decision_preview
from domain.server.rbac import Permission, Principal, authorize
from domain.server.sql_review import SqlReviewPolicy
from domain.server.workflows import Workflow, scope_name_problem
from domain.shared.operations import Operation, UnsupportedOperationError, parse_canonical_operation

__all__ = [
    "OperationResolution",
    "PolicyResolution",
    "ResolvePolicies",
    "reason_code",
    "workflow_summary",
]


def reason_code(preview: DecisionPreview, *, registered: bool = True) -> str:
    """Why a preview is what it is, as a stable code."""
    if not registered:
        return "scope_not_registered"
    return {
        DecisionPreview.DENY: "no_workflow",
        DecisionPreview.AUTO_APPROVED: "explicit_always",
        DecisionPreview.MAY_AUTO_APPROVE: "risk_based",
        DecisionPreview.NEEDS_APPROVAL: "no_auto_approve_rule",
    }[preview]


@dataclass(frozen=True)
class OperationResolution:
    operation: Operation
    workflow: Workflow | None
    registered: bool

    @property
    def preview(self) -> DecisionPreview:
        if not self.registered:
            return DecisionPreview.DENY
        return decision_preview(self.workflow)

    def to_json(self) -> dict[str, Any]:
        rule = None if self.workflow is None else self.workflow.auto_approve
        return {
            "operation": self.operation.value,
            "workflow_id": None if self.workflow is None else self.workflow.id,
            "matched_by": None if self.workflow is None else matched_by(self.workflow).value,
            "auto_approve": None
            if rule is None
            else {"mode": rule.mode.value, "risk": None if rule.risk is None else rule.risk.value},
            "decision_preview": self.preview.value,
            "reason_code": reason_code(self.preview, registered=self.registered),
        }


def workflow_summary(workflow: Workflow) -> dict[str, Any]:
    """The single-operation form's `workflow`: who approves, and what it asks for."""
    return {
        "id": workflow.id,
        "matched_by": matched_by(workflow).value,
        "steps": [
            {
                "approvers": [str(approver.selector) for approver in step.approvers],
                "mode": step.mode.value,
                "min": [approver.min for approver in step.approvers],
            }
            for step in workflow.steps
        ],
        "require_reason": workflow.require_reason,
        "explain": workflow.explain,
    }


@dataclass(frozen=True)
class PolicyResolution:
    database: str
    environment: str
    registered: bool
    execution_policy: ExecutionPolicy | None
    review_policy: SqlReviewPolicy
    resolutions: tuple[OperationResolution, ...]
    #: Set for the single-operation form.
    operation: Operation | None = None

    def to_json(self) -> dict[str, Any]:
        policy = self.execution_policy or DEFAULT_EXECUTION_POLICY
        body: dict[str, Any] = {
            "database": self.database,
            "environment": self.environment,
            "registered": self.registered,
            "execution_policy": {
                "id": None if self.execution_policy is None else policy.id,
                "statement_timeout_secs": policy.statement_timeout_secs,
                "migration_statement_timeout_secs": policy.migration_statement_timeout_secs,
                "max_rows": policy.max_rows,
                "matched_by": matched_by(self.execution_policy).value,
                "explicit": self.execution_policy is not None,
            },
            "sql_review_policy": {
                "id": self.review_policy.id,
                "database": self.review_policy.database,
                "environment": self.review_policy.environment,
                "source": self.review_policy.source,
            },
            "resolutions": [resolution.to_json() for resolution in self.resolutions],
        }
        if self.operation is not None:
            workflow = self.resolutions[0].workflow
            body["operation"] = self.operation.value
            body["workflow"] = None if workflow is None else workflow_summary(workflow)
        return body


class ResolvePolicies:
    """Permission `request.view` on the scope asked about."""

    def __init__(self, *, settings: ServerSettings) -> None:
        self._settings = settings

    def resolve(
        self, principal: Principal, database: str, environment: str, operation: str | None = None
    ) -> PolicyResolution:
        for kind, name in (("database", database), ("environment", environment)):
            problem = scope_name_problem(kind, name, wildcard=False)
            if problem is not None:
                raise Validation(problem)
        operations = tuple(Operation)
        wanted: Operation | None = None
        if operation is not None:
            try:
                wanted = parse_canonical_operation(operation)
            except UnsupportedOperationError as exc:
                raise Validation(str(exc)) from None
            operations = (wanted,)
        authorize(principal, Permission.REQUEST_VIEW, database=database, environment=environment)
        settings = self._settings
        registered = settings.is_registered(database, environment)
        return PolicyResolution(
            database=database,
            environment=environment,
            registered=registered,
            execution_policy=resolve_scoped(settings.execution_policies, database, environment),
            review_policy=settings.review_policy_for(database, environment),
            resolutions=tuple(
                OperationResolution(
                    op, settings.workflow_for(database, environment, op), registered
                )
                for op in operations
            ),
            operation=wanted,
        )
