"""What a submission would meet, told before it is made (docs/preflight.md).

Preflight and policy resolution answer "what would happen if I submitted this?" without
creating anything. The rules here are pure: what the preview of a workflow's decision
is, which statements are worth an EXPLAIN, what the tables a batch names weigh, and how
the blockers and warnings of a judgement add up to one status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from domain.server.schema_model import SchemaModel
from domain.server.sql_classification import Classification, StatementClass, TableRef
from domain.server.workflows import AutoApproved, AutoApproveMode, Decision, Workflow
from domain.shared.explain import has_plan

__all__ = [
    "Blocker",
    "CascadeEntry",
    "DecisionPreview",
    "PreflightStatus",
    "TableImpact",
    "decision_preview",
    "explain_statements",
    "preflight_status",
    "table_impact",
]


class DecisionPreview(StrEnum):
    """What a workflow would decide about a request."""

    #: No workflow matches: the request would be refused.
    DENY = "deny"
    AUTO_APPROVED = "auto_approved"
    #: `risk_based`: approved when the request's risk is known and low enough.
    MAY_AUTO_APPROVE = "may_auto_approve"
    NEEDS_APPROVAL = "needs_approval"


def decision_preview(
    workflow: Workflow | None, decision: Decision | None = None
) -> DecisionPreview:
    """The preview for `workflow`: from its `decision` on a judged request when there is
    one, else from its auto-approve rule alone (policy resolution has no SQL to judge)."""
    if workflow is None:
        return DecisionPreview.DENY
    if decision is not None:
        if isinstance(decision, AutoApproved):
            return DecisionPreview.AUTO_APPROVED
        return DecisionPreview.NEEDS_APPROVAL
    rule = workflow.auto_approve
    if rule is None:
        return DecisionPreview.NEEDS_APPROVAL
    if rule.mode is AutoApproveMode.ALWAYS:
        return DecisionPreview.AUTO_APPROVED
    return DecisionPreview.MAY_AUTO_APPROVE


#: Classes never sent to EXPLAIN: refused or unreadable ones, and dangerous functions
#: (MySQL evaluates constant subqueries while planning, so their calls could run).
_NOT_EXPLAINED = frozenset(
    {
        StatementClass.REJECTED,
        StatementClass.PARSE_FAILURE,
        StatementClass.UNKNOWN,
        StatementClass.DANGEROUS_FUNCTION,
    }
)


def explain_statements(classification: Classification) -> tuple[tuple[int, str], ...]:
    """The statements (1-based number, exact text) a preflight asks an agent to EXPLAIN.

    None of a batch that is rejected or could not be parsed. Of the rest: queries and row
    writes (`has_plan`), never a safe SET, EXPLAIN (so never an EXPLAIN ANALYZE), SHOW or
    DDL, and never a statement of a class in `_NOT_EXPLAINED`.
    """
    if classification.is_rejected or classification.parse_failed:
        return ()
    return tuple(
        (number, statement.text)
        for number, statement in enumerate(classification.statements, 1)
        if not statement.is_safe_set
        and statement.kind not in _NOT_EXPLAINED
        and has_plan(statement.text)
    )


@dataclass(frozen=True)
class CascadeEntry:
    table: TableRef
    estimated_rows: int | None
    depth: int


@dataclass(frozen=True)
class TableImpact:
    """A table the batch names, as the schema snapshot knows it. `found` is False for a
    name the snapshot does not hold; `cascade` lists the ON DELETE CASCADE children a
    DELETE of it reaches (`cascade_truncated`: more beyond the depth followed)."""

    table: TableRef
    found: bool
    estimated_rows: int | None = None
    deleted: bool = False
    cascade: tuple[CascadeEntry, ...] = ()
    cascade_truncated: bool = False


def table_impact(
    classification: Classification, schema: SchemaModel | None
) -> tuple[TableImpact, ...]:
    """Every table the batch names, with row estimates and (for deleted ones) cascades.

    Without a snapshot every table is reported as not found: the impact is unknown.
    """
    deleted = set(classification.delete_targets)
    impacts: list[TableImpact] = []
    for ref in classification.tables:
        found = schema.find(ref) if schema is not None else ()
        if not found:
            impacts.append(TableImpact(ref, found=False, deleted=ref in deleted))
            continue
        for table in found:
            cascade: tuple[CascadeEntry, ...] = ()
            truncated = False
            if ref in deleted and schema is not None:
                reached = schema.cascade(table)
                cascade = tuple(
                    CascadeEntry(c.table.ref, c.table.estimated_rows, c.depth)
                    for c in reached.children
                )
                truncated = reached.truncated
            impacts.append(
                TableImpact(
                    table.ref,
                    found=True,
                    estimated_rows=table.estimated_rows,
                    deleted=ref in deleted,
                    cascade=cascade,
                    cascade_truncated=truncated,
                )
            )
    return tuple(impacts)


class PreflightStatus(StrEnum):
    """`requestable`: a request would be accepted and needs nothing more; `warning`: it
    would be accepted but carries review warnings or waits for approval; `blocked`: it
    would be refused."""

    REQUESTABLE = "requestable"
    WARNING = "warning"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Blocker:
    """Why a request would be refused: a stable `code`, the refusal, and how to fix it."""

    code: str
    message: str
    fix_hint: str


def preflight_status(
    blockers: Sequence[Blocker], *, warnings: int, needs_approval: bool
) -> PreflightStatus:
    """Blocked if anything blocks; a warning when the review warns or approval is needed."""
    if blockers:
        return PreflightStatus.BLOCKED
    if warnings or needs_approval:
        return PreflightStatus.WARNING
    return PreflightStatus.REQUESTABLE
