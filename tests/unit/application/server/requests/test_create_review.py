"""Create with SQL review and risk: blocks, warnings that travel, break-glass `allow_ddl`
bypasses (allowed and denied, with their audit events), `risk_based` auto-approval decided
by the schema snapshot, and the decision trace (docs/sql-safety.md §4-§6).

The classifier is scripted with the facts a parser reports, so these tests name exactly
the tables and rule hits they are about.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from application.server.ports.work.databases import SchemaSnapshot
from application.server.ports.work.requests import RequestFilters
from application.server.requests.create import CreateRequestInput
from application.server.requests.decision_trace import judged_context
from application.server.settings import AuditRedaction, AuditSettings
from domain.server.errors import Forbidden, Validation
from domain.server.rbac import Selector, SelectorKind
from domain.server.request_lifecycle import RequestStatus
from domain.server.review_rules import ReviewRule, RuleAction
from domain.server.sql_classification import StatementClass
from domain.server.sql_review import SqlReviewPolicy
from domain.server.workflows import (
    ApprovalStep,
    Approver,
    AutoApprove,
    AutoApproveMode,
    RiskLevel,
    Workflow,
)
from domain.shared.scopes import Scope
from tests.fakes.sql_classifier import ScriptedClassifier, hit, statement
from tests.unit.application.server.test_requests_and_claims import (
    ALICE,
    ALWAYS,
    NEEDS_DBA,
    OPERATOR,
    T0,
    ServerHarness,
    build_harness,
    default_settings,
    user,
)

R = ReviewRule
#: app/dev: risk_based, low, 1000 rows; approvers are dbas.
RISK_BASED = Workflow(
    database="app",
    environment="dev",
    auto_approve=AutoApprove(AutoApproveMode.RISK_BASED, RiskLevel.LOW, max_estimated_rows=1000),
    steps=(ApprovalStep(approvers=(Approver(Selector(SelectorKind.ROLE, "dba")),)),),
)
DEV = Scope("app", "dev")
DBA_REQUESTER = user("rita", "requester")


def snapshot_json(*tables: tuple[str, int, tuple[str, ...]]) -> str:
    """A PostgreSQL agent's snapshot: (name, estimated rows, ON DELETE CASCADE parents)."""
    return json.dumps(
        {
            "tables": [
                {
                    "name": name,
                    "schema_name": "public",
                    "estimated_rows": rows,
                    "estimated_rows_known": True,
                    "columns": [],
                    "constraints": [
                        {
                            "referenced_table": p,
                            "referenced_schema": "public",
                            "on_delete": "CASCADE",
                        }
                        for p in parents
                    ],
                }
                for name, rows, parents in tables
            ]
        }
    )


@pytest.fixture
def classifier() -> ScriptedClassifier:
    return ScriptedClassifier(SqlglotClassifier())


def harness(
    tmp_path: Path, classifier: ScriptedClassifier, **settings: Any
) -> Iterator[ServerHarness]:
    built = build_harness(
        tmp_path,
        default_settings(tmp_path, workflows=(ALWAYS, NEEDS_DBA, RISK_BASED), **settings),
        classifier=classifier,
    )
    yield built
    built.close()


@pytest.fixture
def server(tmp_path: Path, classifier: ScriptedClassifier) -> Iterator[ServerHarness]:
    yield from harness(tmp_path, classifier)


def sync_schema(
    server: ServerHarness, scope: Scope, snapshot: str | None, status: str = "ready"
) -> None:
    with server.store.write() as session:
        session.work.upsert_schema_snapshot(
            SchemaSnapshot(
                database=scope.database,
                environment=scope.environment,
                status=status,
                dialect="postgresql",
                collected_at=T0,
                agent_id="agent-1",
                snapshot_json=snapshot,
            )
        )


def create(
    server: ServerHarness,
    sql: str,
    environment: str = "production",
    principal: Any = ALICE,
    **fields: Any,
) -> Any:
    return server.requests.create_request.create(
        principal, CreateRequestInput(database="app", environment=environment, detail=sql, **fields)
    )


def trace_of(server: ServerHarness, request_id: str) -> dict[str, Any]:
    with server.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None and record.decision_trace_json is not None
    trace: dict[str, Any] = json.loads(record.decision_trace_json)
    return trace


def record_of(server: ServerHarness, request_id: str) -> Any:
    with server.store.read() as session:
        return session.work.get_request(request_id)


def count_requests(server: ServerHarness) -> int:
    with server.store.read() as session:
        return session.work.list_requests(RequestFilters(), limit=100, offset=0)[1]


# --- blocks -----------------------------------------------------------------------------


def test_a_review_block_is_refused_naming_every_blocking_finding_and_audited(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    sql = "DELETE FROM a; UPDATE b SET x = 1; SELECT 1"
    classifier.script(
        sql,
        statement(
            tables=("a",), hits=(hit(R.NO_WHERE_DELETE, "DELETE FROM a has no WHERE clause"),)
        ),
        statement(tables=("b",), hits=(hit(R.NO_WHERE_UPDATE, "UPDATE b has no WHERE clause"),)),
        statement(tables=("c",), hits=(hit(R.LARGE_IN_LIST, "IN list of 300 items"),)),
    )
    with pytest.raises(Validation) as caught:
        create(server, sql)
    assert caught.value.message == (
        "SQL blocked by review: statement 1: DELETE FROM a has no WHERE clause; "
        "statement 2: UPDATE b has no WHERE clause"
    )
    (event,) = server.audit_rows("request.blocked_by_review")
    assert json.loads(event["metadata_json"]) == {
        "blocked_rules": ["no_where_delete", "no_where_update"]
    }
    assert event["reason"] == caught.value.message
    assert event["database_name"] == "app" and event["request_id"] is None
    assert server.audit_types() == ["request.blocked_by_review"]


def test_the_scope_s_review_policy_decides_what_blocks(
    tmp_path: Path, classifier: ScriptedClassifier
) -> None:
    relaxed = SqlReviewPolicy(
        "app", "production", {R.NO_WHERE_DELETE: RuleAction.WARN, R.LARGE_IN_LIST: RuleAction.BLOCK}
    )
    for server in harness(tmp_path, classifier, sql_review=(relaxed,)):
        classifier.script("DELETE FROM a", statement(tables=("a",), hits=(hit(R.NO_WHERE_DELETE),)))
        created = create(server, "DELETE FROM a")
        assert created.status is RequestStatus.DISPATCHED  # `always`: warnings do not stop it
        trace = trace_of(server, created.id)
        assert trace["sql_review"]["policy_id"] == "sr:app:production"
        assert trace["sql_review"]["findings"][0]["action"] == "warn"
        classifier.script(
            "SELECT 1 IN (2)", statement(StatementClass.SELECT, hits=(hit(R.LARGE_IN_LIST),))
        )
        with pytest.raises(Validation):
            create(server, "SELECT 1 IN (2)")


def test_a_warning_travels_with_the_request_to_its_context_and_trace(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    sql = "ALTER TABLE t DROP COLUMN c"
    classifier.script(
        sql,
        statement(
            StatementClass.DDL,
            tables=("t",),
            hits=(hit(R.DROP_COLUMN, "ALTER TABLE t drops column c"),),
        ),
    )
    created = create(server, sql, environment="staging")
    assert created.status is RequestStatus.PENDING
    context = judged_context(record_of(server, created.id))
    assert context["tables"] == ["t"]
    assert context["sql_review"] == {
        "policy_id": "builtin-default",
        "findings": [
            {
                "code": "drop_column",
                "action": "warn",
                "message": "ALTER TABLE t drops column c",
                "statement": 1,
            }
        ],
        "blocked": False,
    }
    assert context["risk"] == {
        "level": "unknown",
        "factors": [{"code": "schema_not_synced", "detail": "not_synced"}],
    }


def test_a_rejected_text_is_refused_with_its_reason_and_no_audit(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    classifier.script("CREATE SCHEMA s", statement(StatementClass.REJECTED, break_glass_ddl=True))
    with pytest.raises(Validation) as caught:
        create(server, "CREATE SCHEMA s")
    assert caught.value.message == "rejected"
    assert server.audit_types() == []


# --- break-glass allow_ddl --------------------------------------------------------------


def emergency(server: ServerHarness, sql: str, principal: Any = OPERATOR, **fields: Any) -> Any:
    return create(
        server,
        sql,
        principal=principal,
        emergency=True,
        allow_ddl=True,
        reason="incident 42",
        **fields,
    )


def test_allow_ddl_passes_a_schema_change_block_with_a_bypass_event_in_the_create(
    tmp_path: Path, classifier: ScriptedClassifier
) -> None:
    full = AuditSettings(AuditRedaction.LITERALS)
    for server in harness(tmp_path, classifier, audit=full):
        sql = "DROP TABLE old_t"
        classifier.script(
            sql,
            statement(StatementClass.DESTRUCTIVE_DDL, tables=("old_t",), hits=(hit(R.DROP_TABLE),)),
        )
        created = emergency(server, sql)
        assert created.status is RequestStatus.DISPATCHED
        assert server.audit_types(created.id) == [
            "request.break_glass",
            "ddl.break_glass_bypass",
            "request.dispatched",
        ]
        (event,) = server.audit_rows("ddl.break_glass_bypass")
        assert json.loads(event["metadata_json"]) == {
            "request_id": created.id,
            "statement_count": 1,
            "reason": "incident 42",
            "classifier_bypassed": False,
            "reviewer_bypassed": True,
            "sql_redacted": "DROP TABLE old_t",
        }
        trace = trace_of(server, created.id)
        assert trace["decision"]["rule"] == "break_glass"
        assert trace["decision"]["ddl_bypass"] == {
            "classifier_bypassed": False,
            "reviewer_bypassed": True,
        }
        assert judged_context(record_of(server, created.id))["sql_review"]["blocked"] is True


def test_the_bypass_event_keeps_no_sql_under_full_redaction(
    tmp_path: Path, classifier: ScriptedClassifier
) -> None:
    for server in harness(tmp_path, classifier, audit=AuditSettings(AuditRedaction.FULL)):
        classifier.script(
            "TRUNCATE t",
            statement(StatementClass.DESTRUCTIVE_DDL, tables=("t",), hits=(hit(R.TRUNCATE),)),
        )
        emergency(server, "TRUNCATE t")
        (event,) = server.audit_rows("ddl.break_glass_bypass")
        assert json.loads(event["metadata_json"])["sql_redacted"] is None


def test_allow_ddl_passes_a_classifier_rejection_of_break_glass_ddl_only(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    classifier.script(
        "CREATE SCHEMA s; CREATE TABLE s.t (id int)",
        statement(StatementClass.REJECTED, break_glass_ddl=True, text="CREATE SCHEMA s"),
        statement(StatementClass.DDL, text="CREATE TABLE s.t (id int)"),
    )
    created = emergency(server, "CREATE SCHEMA s; CREATE TABLE s.t (id int)")
    assert created.status is RequestStatus.DISPATCHED
    metadata = json.loads(server.audit_rows("ddl.break_glass_bypass")[0]["metadata_json"])
    assert (metadata["classifier_bypassed"], metadata["reviewer_bypassed"]) == (True, False)
    assert metadata["statement_count"] == 2
    assert record_of(server, created.id).execution_plan_json == json.dumps(
        ["CREATE SCHEMA s", "CREATE TABLE s.t (id int)"], separators=(",", ":")
    )


def test_allow_ddl_never_passes_a_rejection_that_is_not_schema_ddl(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    classifier.script("GRANT ALL ON t TO x", statement(StatementClass.REJECTED))
    with pytest.raises(Validation) as caught:
        emergency(server, "GRANT ALL ON t TO x")
    assert caught.value.message == "rejected"
    (event,) = server.audit_rows("request.blocked_by_review")
    assert json.loads(event["metadata_json"]) == {
        "blocked_rules": ["classifier_rejection"],
        "break_glass_attempted": True,
    }
    assert server.audit_types() == ["request.blocked_by_review"]


def test_allow_ddl_never_passes_a_data_safety_block(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    sql = "DROP TABLE a; DELETE FROM b"
    classifier.script(
        sql,
        statement(StatementClass.DESTRUCTIVE_DDL, hits=(hit(R.DROP_TABLE, "DROP TABLE a"),)),
        statement(
            tables=("b",), hits=(hit(R.NO_WHERE_DELETE, "DELETE FROM b has no WHERE clause"),)
        ),
    )
    with pytest.raises(Validation) as caught:
        emergency(server, sql)
    assert caught.value.message == (
        "SQL blocked by review: statement 1: DROP TABLE a; "
        "statement 2: DELETE FROM b has no WHERE clause"
    )
    (event,) = server.audit_rows("request.blocked_by_review")
    assert json.loads(event["metadata_json"]) == {
        "blocked_rules": ["drop_table", "no_where_delete"],
        "break_glass_attempted": True,
    }
    assert server.audit_rows("ddl.break_glass_bypass") == []


def test_an_emergency_without_allow_ddl_is_blocked_like_anyone(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    classifier.script(
        "DROP TABLE t", statement(StatementClass.DESTRUCTIVE_DDL, hits=(hit(R.DROP_TABLE),))
    )
    with pytest.raises(Validation):
        create(server, "DROP TABLE t", principal=OPERATOR, emergency=True, reason="now")
    (event,) = server.audit_rows("request.blocked_by_review")
    assert json.loads(event["metadata_json"]) == {"blocked_rules": ["drop_table"]}


def test_allow_ddl_still_needs_its_permission(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    classifier.script(
        "DROP TABLE t", statement(StatementClass.DESTRUCTIVE_DDL, hits=(hit(R.DROP_TABLE),))
    )
    with pytest.raises(Forbidden):
        emergency(server, "DROP TABLE t", principal=ALICE)
    assert server.audit_rows("ddl.break_glass_bypass") == []
    assert count_requests(server) == 0


# --- risk-based auto-approval -------------------------------------------------------------


def script_dml(
    classifier: ScriptedClassifier, sql: str, table: str, *, delete: bool = True
) -> None:
    classifier.script(sql, statement(tables=(table,), deletes=(table,) if delete else ()))


def test_risk_based_approves_a_low_risk_delete_and_waits_on_a_large_table(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    sync_schema(server, DEV, snapshot_json(("small_t", 10, ()), ("big_t", 5000, ())))
    script_dml(classifier, "DELETE FROM small_t WHERE id = 1", "small_t")
    script_dml(classifier, "DELETE FROM big_t WHERE id = 1", "big_t")
    small = create(server, "DELETE FROM small_t WHERE id = 1", environment="dev")
    assert small.status is RequestStatus.DISPATCHED
    trace = trace_of(server, small.id)
    assert trace["risk"] == {
        "level": "low",
        "factors": [],
        "factor_details": [],
        "schema_status": "ready",
    }
    assert trace["decision"]["rule"] == "risk_based: low <= low"
    assert trace["decision"]["reasons"] == ["risk_below_threshold"]
    big = create(server, "DELETE FROM big_t WHERE id = 1", environment="dev")
    assert big.status is RequestStatus.PENDING
    assert big.approvers == ("role:dba",)
    trace = trace_of(server, big.id)
    assert trace["risk"]["level"] == "medium"
    assert trace["risk"]["factors"] == ["large_table"]
    assert trace["risk"]["factor_details"] == [
        {"code": "large_table", "detail": "public.big_t ~5000 rows"}
    ]
    assert trace["decision"]["rule"] == "risk_based: medium > low"
    assert trace["decision"]["reasons"] == ["risk_above_threshold"]


def test_risk_based_waits_on_a_delete_that_cascades(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    sync_schema(server, DEV, snapshot_json(("p", 5, ()), ("c", 5000, ("p",))))
    script_dml(classifier, "DELETE FROM p WHERE id = 1", "p")
    created = create(server, "DELETE FROM p WHERE id = 1", environment="dev")
    assert created.status is RequestStatus.PENDING
    (factor,) = trace_of(server, created.id)["risk"]["factor_details"]
    assert factor == {"code": "cascade_delete", "detail": "public.p → public.c (depth 1)"}


@pytest.mark.parametrize(
    ("snapshot", "status"), [(None, None), ("{not json", "ready"), (None, "failed")]
)
def test_risk_based_never_approves_without_a_usable_snapshot(
    server: ServerHarness, classifier: ScriptedClassifier, snapshot: str | None, status: str | None
) -> None:
    if status is not None:
        sync_schema(server, DEV, snapshot, status)
    script_dml(classifier, "DELETE FROM small_t WHERE id = 1", "small_t")
    created = create(server, "DELETE FROM small_t WHERE id = 1", environment="dev")
    assert created.status is RequestStatus.PENDING
    trace = trace_of(server, created.id)
    assert trace["risk"]["level"] == "unknown"
    assert trace["risk"]["schema_status"] == ("not_synced" if status is None else "failed")
    assert trace["decision"]["rule"] == "risk_based: unknown is not a known risk"


def test_the_max_estimated_rows_of_the_workflow_applies(
    tmp_path: Path, classifier: ScriptedClassifier
) -> None:
    rule = replace(RISK_BASED.auto_approve, max_estimated_rows=10_000)  # type: ignore[type-var]
    roomy = replace(RISK_BASED, auto_approve=rule)
    built = build_harness(
        tmp_path,
        default_settings(tmp_path, workflows=(ALWAYS, NEEDS_DBA, roomy)),
        classifier=classifier,
    )
    try:
        sync_schema(built, DEV, snapshot_json(("big_t", 5000, ())))
        script_dml(classifier, "DELETE FROM big_t WHERE id = 1", "big_t")
        assert create(built, "DELETE FROM big_t WHERE id = 1", environment="dev").status is (
            RequestStatus.DISPATCHED
        )
    finally:
        built.close()


# --- the trace ------------------------------------------------------------------------------


def test_the_trace_records_classes_findings_tables_and_the_deciding_rule(
    server: ServerHarness, classifier: ScriptedClassifier
) -> None:
    sql = "UPDATE t SET a = 1 WHERE id IN (1); UPDATE u SET b = 2 WHERE id = 3"
    classifier.script(
        sql,
        statement(
            tables=("t",), hits=(hit(R.LARGE_IN_LIST, "IN list of 200 items"),), text="UPDATE t"
        ),
        statement(tables=("u", "t"), text="UPDATE u"),
    )
    created = create(server, sql)
    trace = trace_of(server, created.id)
    assert trace["version"] == 1
    assert trace["classification"] == {
        "resolved_operation": "execute_dml",
        "class": "dml",
        "statement_count": 2,
        "statements": [{"class": "dml", "reason": "dml"}, {"class": "dml", "reason": "dml"}],
        "tables": ["t", "u"],
    }
    assert trace["sql_review"] == {
        "policy_id": "builtin-default",
        "findings_count": 1,
        "parse_failed": False,
        "findings": [
            {
                "code": "large_in_list",
                "action": "warn",
                "message": "statement 1: IN list of 200 items",
                "statement": 1,
            }
        ],
    }
    assert trace["decision"] == {
        "outcome": "auto_approved",
        "reasons": ["explicit_always"],
        "auto_approve_threshold": None,
        "rule": "always",
        "ddl_bypass": None,
    }
    assert trace["workflow"]["matched"]["id"] == ALWAYS.id
    assert trace["requester_role"] == "requester"
