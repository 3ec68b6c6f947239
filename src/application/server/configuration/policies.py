"""`GET /api/execution-policies`, `/api/result-policies[/{id}]` and
`/api/sql-review-policies` (permission `workflow.read`).

Each listing carries the policy that applies where none matches, with its effective values
(docs/server.md §3.1, §3.2, docs/sql-safety.md §5), so a client never has to know the
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from application.server.settings import ServerSettings
from domain.server.errors import NotFound
from domain.server.execution_policies import (
    DEFAULT_EXECUTION_POLICY,
    ExecutionPolicy,
    ResultPolicy,
)
from domain.server.rbac import Permission, Principal, authorize
from domain.server.sql_review import BUILTIN_REVIEW_POLICY, SqlReviewPolicy

__all__ = ["ExecutionPolicies", "ListPolicies", "ResultPolicies", "ReviewPolicies"]


@dataclass(frozen=True)
class ExecutionPolicies:
    policies: tuple[ExecutionPolicy, ...]
    default: ExecutionPolicy


@dataclass(frozen=True)
class ResultPolicies:
    policies: tuple[ResultPolicy, ...]
    default: ResultPolicy


@dataclass(frozen=True)
class ReviewPolicies:
    policies: tuple[SqlReviewPolicy, ...]
    builtin: SqlReviewPolicy


class ListPolicies:
    def __init__(self, *, settings: ServerSettings) -> None:
        self._settings = settings

    def execution_policies(self, principal: Principal) -> ExecutionPolicies:
        authorize(principal, Permission.WORKFLOW_READ)
        return ExecutionPolicies(self._settings.execution_policies, DEFAULT_EXECUTION_POLICY)

    def result_policies(self, principal: Principal) -> ResultPolicies:
        authorize(principal, Permission.WORKFLOW_READ)
        default = ResultPolicy(retention_days=self._settings.retention.result_ttl_days)
        return ResultPolicies(self._settings.result_policies, default)

    def result_policy(self, principal: Principal, policy_id: str) -> tuple[ResultPolicy, bool]:
        """One result policy by id (`rp:<database>:<environment>`), and whether it is the
        built-in default (`rp:*:*` when no configured entry has that id)."""
        found = self.result_policies(principal)
        for policy in found.policies:
            if policy.id == policy_id:
                return policy, False
        if found.default.id == policy_id:
            return found.default, True
        raise NotFound(f"result policy {policy_id!r} not found", resource="result_policy")

    def review_policies(self, principal: Principal) -> ReviewPolicies:
        authorize(principal, Permission.WORKFLOW_READ)
        return ReviewPolicies(self._settings.sql_review, BUILTIN_REVIEW_POLICY)
