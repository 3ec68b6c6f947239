"""Creating a request: checks, classification, workflow, idempotent replay, auto-dispatch.

docs/server.md §1.3, and our improvements: exact-source plans, atomic auto-dispatch,
redacted audit SQL, EXPLAIN dry-run jobs queued with the request.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.server.ports.work.requests import RequestFilters
from application.server.requests.common import ServerDraining
from application.server.requests.create import CreateRequestInput
from application.server.requests.snapshots import workflow_from_snapshot
from application.server.settings import AuditRedaction, AuditSettings
from domain.server.errors import Conflict, Forbidden, Validation
from domain.server.rbac import define_role
from domain.server.request_lifecycle import RequestStatus
from domain.shared.migration_files import MigrationFile, build_detail, detail_json
from domain.shared.operations import Operation
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    ALICE,
    ALWAYS,
    APPROVER,
    BOB,
    NEEDS_DBA,
    OPERATOR,
    T0,
    ServerHarness,
    build_harness,
    default_settings,
    user,
)


def test_auto_approved_request_is_dispatched_atomically_with_both_events(
    server: ServerHarness,
) -> None:
    created = server.requests.create_request.create(
        ALICE,
        CreateRequestInput(
            database="app", environment="production", detail="SELECT * FROM t WHERE id = 42"
        ),
    )
    assert created.status is RequestStatus.DISPATCHED
    assert created.http_status == 201
    assert created.operation is Operation.EXECUTE_SELECT
    assert created.approvers == ()
    assert created.expires_at is None
    with server.store.read() as session:
        record = session.work.get_request(created.id)
    assert record is not None
    assert record.pre_dispatch_status is RequestStatus.AUTO_APPROVED
    assert record.detail == "SELECT * FROM t WHERE id = 42"  # the raw SQL stays here
    assert record.execution_plan_json == '["SELECT * FROM t WHERE id = 42"]'
    assert record.resolved_at == T0
    assert server.audit_types(created.id) == ["request.auto_approved", "request.dispatched"]
    event = server.audit_rows("request.auto_approved")[0]
    assert event["detail_fingerprint"] == "SELECT * FROM t WHERE id = ?"
    assert event["detail_raw"] == "SELECT * FROM t WHERE id = ?"
    assert "42" not in (event["detail_raw"] or "")


def test_request_needing_approval_is_pending_with_expiry_and_approvers(
    server: ServerHarness,
) -> None:
    created = server.requests.create_request.create(
        ALICE, CreateRequestInput(database="app", environment="staging", detail="SELECT 1")
    )
    assert created.status is RequestStatus.PENDING
    assert created.approvers == ("role:dba",)
    assert created.expires_at == T0 + timedelta(seconds=86400)
    assert server.audit_types(created.id) == ["request.created"]
    with server.store.read() as session:
        record = session.work.get_request(created.id)
    assert record is not None and record.resolved_at is None
    with server.store.read() as session:
        assert session.work.pending_approvers(created.id) == [(0, "role:dba")]
    snapshot = workflow_from_snapshot(record.workflow_snapshot_json)
    assert snapshot == NEEDS_DBA


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"environment": "dev"}, "no workflow configured for app/dev"),
        ({"database": "other"}, "database 'other' not registered in environment 'production'"),
        ({"database": "App"}, "invalid database name"),
        ({"environment": "*"}, "invalid environment name"),
        ({"operation": "drop_everything"}, "unsupported operation: drop_everything"),
        ({"detail": "x" * 100_001}, "query too long (max 100KB)"),
        ({"reason": "r" * 1025}, "reason too long"),
        ({"detail": "   "}, "empty query"),
        ({"detail": "BEGIN"}, "transaction control"),
        ({"allow_ddl": True}, "--allow-ddl requires --emergency"),
        ({"share_with": ("nobody",)}, "invalid selector"),
    ],
)
def test_create_refusals(server: ServerHarness, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(Validation) as caught:
        server.create(**fields)
    assert message.lower() in caught.value.message.lower()


def test_unparseable_sql_is_blocked_fail_closed_and_audited(server: ServerHarness) -> None:
    with pytest.raises(Validation) as caught:
        server.create(detail="SELEC * FRM t WHERE x = 'secret'")
    assert caught.value.message == (
        "SQL blocked by review: SQL could not be parsed; cannot verify safety rules"
    )
    event = server.audit_rows("request.blocked_by_review")[0]
    assert "secret" not in (event["detail_fingerprint"] or "")
    with server.store.read() as session:
        assert session.work.list_requests(RequestFilters(), limit=10, offset=0)[1] == 0


def test_classifier_operation_overrides_the_clients(server: ServerHarness) -> None:
    created = server.requests.create_request.create(
        ALICE,
        CreateRequestInput(
            database="app",
            environment="production",
            operation="execute_select",
            detail="DELETE FROM t WHERE id = 1",
        ),
    )
    assert created.operation is Operation.EXECUTE_DML
    alias = server.requests.create_request.create(
        ALICE,
        CreateRequestInput(
            database="app", environment="production", operation="query", detail="SELECT 2"
        ),
    )
    assert alias.operation is Operation.EXECUTE_SELECT


def test_permissions_are_checked_per_operation_and_scope(server: ServerHarness) -> None:
    with pytest.raises(Forbidden):
        server.create(APPROVER)
    with pytest.raises(Forbidden):
        server.create(ADMIN)
    dml_only = user("carol", define_role("dml-only", ["request.dml", "request.query"]))
    with pytest.raises(Forbidden):
        server.create(dml_only, detail="CREATE TABLE t (id int)")
    server.create(dml_only, detail="UPDATE t SET a = 1 WHERE id = 2")
    staging_only = user(
        "erin", define_role("staging-q", ["request.query"], environments=["staging"])
    )
    with pytest.raises(Forbidden):
        server.create(staging_only)
    assert server.create(OPERATOR)


def test_idempotency_replays_and_conflicts(server: ServerHarness) -> None:
    first = server.requests.create_request.create(
        ALICE,
        CreateRequestInput(
            database="app", environment="production", detail="SELECT 1", idempotency_key="k1"
        ),
    )
    again = server.requests.create_request.create(
        ALICE,
        CreateRequestInput(
            database="app", environment="production", detail="SELECT 1", idempotency_key="k1"
        ),
    )
    assert (again.id, again.idempotent, again.http_status) == (first.id, True, 200)
    with pytest.raises(Conflict, match="idempotency key conflict"):
        server.create(detail="SELECT 2", idempotency_key="k1")
    other = server.requests.create_request.create(
        BOB,
        CreateRequestInput(
            database="app", environment="production", detail="SELECT 1", idempotency_key="k1"
        ),
    )
    assert other.id != first.id and not other.idempotent


def test_break_glass_dispatches_at_once_even_without_a_workflow(server: ServerHarness) -> None:
    with pytest.raises(Forbidden):
        server.create(ALICE, emergency=True, reason="outage", environment="dev")
    with pytest.raises(Validation, match="reason is required"):
        server.create(OPERATOR, emergency=True, environment="dev")
    created = server.requests.create_request.create(
        OPERATOR,
        CreateRequestInput(
            database="app",
            environment="dev",
            detail="UPDATE t SET a = 1 WHERE id = 1",
            emergency=True,
            reason="outage",
        ),
    )
    assert created.status is RequestStatus.DISPATCHED
    assert server.audit_types(created.id) == ["request.break_glass", "request.dispatched"]
    with server.store.read() as session:
        record = session.work.get_request(created.id)
    assert record is not None and record.pre_dispatch_status is RequestStatus.BREAK_GLASS
    with pytest.raises(Validation, match="migrate_repair requires --emergency"):
        server.create(
            OPERATOR, detail='{"action":"remove","version":"1"}', operation="migrate_repair"
        )


def test_draining_server_refuses_new_requests(server: ServerHarness) -> None:
    server.draining.set()
    with pytest.raises(ServerDraining) as caught:
        server.create()
    assert caught.value.status == 503


def test_dry_run_jobs_per_statement_unless_explain_is_off(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path,
        workflows=(
            replace(ALWAYS, explain=False),
            replace(NEEDS_DBA, operations=(Operation.EXECUTE_DML,)),
            replace(NEEDS_DBA, operations=(Operation.EXECUTE_SELECT,), explain=False),
        ),
    )
    harness = build_harness(tmp_path, settings)
    try:
        pending = harness.create(
            detail="UPDATE t SET a = 1 WHERE id = 1; DELETE FROM t WHERE id = 2",
            environment="staging",
        )
        quiet = harness.create(detail="SELECT 1")
        with harness.store.read() as session:
            jobs = session.work.dry_run_jobs_for_request(pending)
            assert session.work.dry_run_jobs_for_request(quiet) == []
        assert [job.sql for job in jobs] == [
            "UPDATE t SET a = 1 WHERE id = 1",
            "DELETE FROM t WHERE id = 2",
        ]
        reply = harness.poll(scopes=(("app", "staging"),))
        assert [job.id for job in reply.dry_run_jobs] == [job.id for job in jobs]
    finally:
        harness.close()


@pytest.mark.parametrize(
    ("mode", "raw"),
    [
        (AuditRedaction.NONE, "SELECT 'secret'"),
        (AuditRedaction.LITERALS, "SELECT ?"),
        (AuditRedaction.FULL, None),
    ],
)
def test_audit_redaction_modes(tmp_path: Path, mode: AuditRedaction, raw: str | None) -> None:
    harness = build_harness(tmp_path, default_settings(tmp_path, audit=AuditSettings(mode)))
    try:
        harness.create(detail="SELECT 'secret'")
        event = harness.audit_rows("request.auto_approved")[0]
        assert event["detail_fingerprint"] == "SELECT ?"
        assert event["detail_raw"] == raw
    finally:
        harness.close()


def test_migrations_are_summarised_not_classified(server: ServerHarness) -> None:
    files = [
        MigrationFile("1_s.sql", "1", "CREATE TABLE s (v text DEFAULT 'x')", None),
        MigrationFile("2_t.sql", "2", "CREATE TABLE t (v text)", None),
    ]
    detail = detail_json(build_detail(files, "up"))
    request_id = server.create(detail=detail, operation="migrate_up")
    with server.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None and record.execution_plan_json is None
    assert record.operation is Operation.MIGRATE_UP
    event = server.audit_rows("request.auto_approved")[0]
    assert event["detail_raw"] == "migrate_up: versions=[1,2]"


def test_a_migration_detail_that_does_not_hold_is_refused_before_anything_is_stored(
    server: ServerHarness,
) -> None:
    files = [MigrationFile("1_s.sql", "1", "CREATE TABLE s (v text)", None)]
    tampered = build_detail(files, "up")
    tampered["migrations"] = [{"version": "1", "sql": "DROP TABLE s", "transactional": True}]
    with pytest.raises(Validation, match="invalid migration detail: dir_sha256 does not match"):
        server.create(detail=detail_json(tampered), operation="migrate_up")
    with pytest.raises(Validation, match="migrate_down needs direction 'down'"):
        server.create(detail=detail_json(build_detail(files, "up")), operation="migrate_down")
    with pytest.raises(Validation, match="migrate_status takes an empty detail"):
        server.create(detail="SELECT 1", operation="migrate_status")
    assert server.audit_rows("request.auto_approved") == []
