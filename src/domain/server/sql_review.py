"""`[[sql_review]]` policies and the review of a classified batch.

docs/sql-safety.md §3. The parser reports which rules each statement trips
(`StatementFacts.hits`); the policy for the request's (database, environment) turns each
hit into a finding that blocks the request, warns its approvers, or is dropped. One rule
is about the batch rather than a statement: `mixed_ddl_dml`.

Policies match like the other non-workflow policies (environment exact 2, database exact
1, the highest wins); with none matching, the built-in policy applies the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from domain.server.policy_matching import resolve_scoped, scope_problems
from domain.server.review_rules import (
    BYPASSABLE_BY_ALLOW_DDL,
    DEFAULT_RULE_ACTIONS,
    ReviewRule,
    RuleAction,
)
from domain.server.sql_classification import Classification
from domain.server.workflows import WILDCARD, KeyPath, ValidationProblem

__all__ = [
    "BUILTIN_REVIEW_POLICY",
    "BUILTIN_REVIEW_POLICY_ID",
    "Finding",
    "Review",
    "SqlReviewPolicy",
    "resolve_review_policy",
    "review",
    "validate_review_policies",
]

BUILTIN_REVIEW_POLICY_ID = "builtin-default"
#: `any` reads like a wildcard but is not one; refused so nobody relies on it.
_RESERVED_SCOPE_NAME = "any"


@dataclass(frozen=True)
class SqlReviewPolicy:
    """One `[[sql_review]]` entry; `rules` holds only what the entry sets."""

    database: str = WILDCARD
    environment: str = WILDCARD
    rules: Mapping[ReviewRule, RuleAction] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "config"

    @property
    def id(self) -> str:
        if self.source == "builtin":
            return BUILTIN_REVIEW_POLICY_ID
        return f"sr:{self.database}:{self.environment}"

    def action(self, rule: ReviewRule) -> RuleAction:
        """The entry's action for `rule`, else the built-in default."""
        return self.rules.get(rule, DEFAULT_RULE_ACTIONS[rule])

    def effective_rules(self) -> dict[ReviewRule, RuleAction]:
        """Every rule with the action it has under this policy (for listings)."""
        return {rule: self.action(rule) for rule in ReviewRule}


BUILTIN_REVIEW_POLICY = SqlReviewPolicy(source="builtin")


def resolve_review_policy(
    policies: Sequence[SqlReviewPolicy], database: str, environment: str
) -> SqlReviewPolicy:
    """The most specific entry for (database, environment), else the built-in policy."""
    return resolve_scoped(policies, database, environment) or BUILTIN_REVIEW_POLICY


@dataclass(frozen=True)
class Finding:
    """A rule the request trips under its policy. `statement` is 1-based; None for the batch."""

    rule: ReviewRule
    action: RuleAction
    message: str
    statement: int | None

    @property
    def bypassable_by_allow_ddl(self) -> bool:
        return self.rule in BYPASSABLE_BY_ALLOW_DDL

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.rule.value,
            "action": self.action.value,
            "message": self.message,
            "statement": self.statement,
        }


@dataclass(frozen=True)
class Review:
    """The findings of one policy on one batch (`off` rules never appear)."""

    policy_id: str
    findings: tuple[Finding, ...]

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.action is RuleAction.BLOCK)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.action is RuleAction.WARN)

    @property
    def blocked(self) -> bool:
        return bool(self.blocking)

    def blocked_under_allow_ddl(self) -> tuple[Finding, ...]:
        """The blocking findings a break-glass request with `allow_ddl` still cannot pass."""
        return tuple(f for f in self.blocking if not f.bypassable_by_allow_ddl)

    def block_message(self) -> str:
        """`SQL blocked by review: …`, every blocking finding named (the 400 on create)."""
        return "SQL blocked by review: " + "; ".join(f.message for f in self.blocking)


def review(classification: Classification, policy: SqlReviewPolicy) -> Review:
    """Apply `policy` to the hits of every statement and to the batch as a whole."""
    findings: list[Finding] = []
    many = classification.statement_count > 1
    for index, statement in enumerate(classification.statements, 1):
        for hit in statement.facts.hits:
            action = policy.action(hit.rule)
            if action is RuleAction.OFF:
                continue
            message = f"statement {index}: {hit.message}" if many else hit.message
            findings.append(Finding(hit.rule, action, message, index))
    if classification.mixes_ddl_and_dml:
        action = policy.action(ReviewRule.MIXED_DDL_DML)
        if action is not RuleAction.OFF:
            findings.append(
                Finding(
                    ReviewRule.MIXED_DDL_DML,
                    action,
                    "schema changes and row changes in one batch: submit them separately",
                    None,
                )
            )
    return Review(policy_id=policy.id, findings=tuple(findings))


def validate_review_policies(
    policies: Sequence[SqlReviewPolicy], key: KeyPath = ("sql_review",)
) -> tuple[ValidationProblem, ...]:
    """Errors in a `[[sql_review]]` list: names, the reserved `any`, one entry per scope."""
    problems = scope_problems(policies, key)
    for index, policy in enumerate(policies):
        for name in ("database", "environment"):
            if getattr(policy, name) == _RESERVED_SCOPE_NAME:
                problems.append(
                    ValidationProblem(
                        (*key, index, name),
                        f"'{_RESERVED_SCOPE_NAME}' is reserved; use \"*\" for any {name}",
                    )
                )
    return tuple(problems)
