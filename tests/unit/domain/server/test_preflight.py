"""The pure rules of preflight: decision previews, what is explained, status, impact."""

from __future__ import annotations

from domain.server.preflight import (
    Blocker,
    DecisionPreview,
    PreflightStatus,
    decision_preview,
    explain_statements,
    preflight_status,
    table_impact,
)
from domain.server.schema_model import SchemaModel, SnapshotTable
from domain.server.sql_classification import (
    ClassifiedStatement,
    StatementClass,
    StatementFacts,
    TableRef,
    classify_batch,
)
from domain.server.workflows import (
    AutoApprove,
    AutoApproved,
    AutoApproveMode,
    DecisionReason,
    NeedsApproval,
    RiskLevel,
    Workflow,
)

ALWAYS = Workflow(auto_approve=AutoApprove(AutoApproveMode.ALWAYS))
RISKY = Workflow(auto_approve=AutoApprove(AutoApproveMode.RISK_BASED, RiskLevel.LOW))
MANUAL = Workflow()


def statement(
    text: str, kind: StatementClass = StatementClass.SELECT, **facts: object
) -> ClassifiedStatement:
    return ClassifiedStatement(text, kind, "test", facts=StatementFacts(**facts))  # type: ignore[arg-type]


def test_the_preview_without_sql_follows_the_auto_approve_rule() -> None:
    assert decision_preview(None) is DecisionPreview.DENY
    assert decision_preview(ALWAYS) is DecisionPreview.AUTO_APPROVED
    assert decision_preview(RISKY) is DecisionPreview.MAY_AUTO_APPROVE
    assert decision_preview(MANUAL) is DecisionPreview.NEEDS_APPROVAL


def test_the_preview_of_a_judged_request_is_its_decision() -> None:
    approved = AutoApproved(DecisionReason.RISK_BELOW_THRESHOLD)
    waiting = NeedsApproval(DecisionReason.RISK_UNAVAILABLE)
    assert decision_preview(RISKY, approved) is DecisionPreview.AUTO_APPROVED
    assert decision_preview(RISKY, waiting) is DecisionPreview.NEEDS_APPROVAL
    assert decision_preview(None, waiting) is DecisionPreview.DENY


def test_only_queries_and_row_writes_are_explained_numbered_as_submitted() -> None:
    batch = classify_batch(
        [
            statement("UPDATE t SET a = 1 WHERE id = 1", StatementClass.DML),
            statement("CREATE TABLE x (id int)", StatementClass.DDL),
            statement("DELETE FROM t WHERE id = 2", StatementClass.DML),
            statement("SELECT pg_sleep(5)", StatementClass.DANGEROUS_FUNCTION),
        ]
    )
    assert explain_statements(batch) == (
        (1, "UPDATE t SET a = 1 WHERE id = 1"),
        (3, "DELETE FROM t WHERE id = 2"),
    )


def test_safe_sets_and_explain_analyze_are_never_explained() -> None:
    batch = classify_batch(
        [
            ClassifiedStatement("SET statement_timeout = 5", StatementClass.SELECT, "SET", True),
            statement("SELECT 1"),
        ]
    )
    assert explain_statements(batch) == ((2, "SELECT 1"),)
    analyze = classify_batch([statement("EXPLAIN ANALYZE DELETE FROM t", StatementClass.DML)])
    assert explain_statements(analyze) == ()


def test_a_rejected_batch_has_nothing_to_explain() -> None:
    batch = classify_batch([statement("SELECT 1"), statement("GRANT x", StatementClass.REJECTED)])
    assert explain_statements(batch) == ()


def test_status_is_blocked_then_warning_then_requestable() -> None:
    blocker = Blocker("rejected", "no", "fix it")
    assert preflight_status([blocker], warnings=0, needs_approval=False) is PreflightStatus.BLOCKED
    assert preflight_status([], warnings=1, needs_approval=False) is PreflightStatus.WARNING
    assert preflight_status([], warnings=0, needs_approval=True) is PreflightStatus.WARNING
    assert preflight_status([], warnings=0, needs_approval=False) is PreflightStatus.REQUESTABLE


def test_impact_reports_rows_and_the_cascade_of_a_delete() -> None:
    parent, child = TableRef("users", "public"), TableRef("orders", "public")
    schema = SchemaModel(
        [SnapshotTable(parent, 10), SnapshotTable(child, 500, cascades_from=(parent,))]
    )
    batch = classify_batch(
        [
            statement(
                "DELETE FROM users WHERE id = 1",
                StatementClass.DML,
                tables=(TableRef("users"), TableRef("ghost")),
                delete_targets=(TableRef("users"),),
            )
        ]
    )

    users, ghost = table_impact(batch, schema)

    assert users.table == parent and users.estimated_rows == 10 and users.deleted
    assert [(c.table, c.estimated_rows, c.depth) for c in users.cascade] == [(child, 500, 1)]
    assert not ghost.found
    assert [t.found for t in table_impact(batch, None)] == [False, False]
