"""Preflight, policy resolution and schema snapshots through the real app over a real store.

The agent is played by polls with an agent token, so a preflight EXPLAIN job is seen
being handed out and answered on the wire (the real agent process is in
tests/integration/test_end_to_end.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.http_api.app import create_app
from adapters.http_api.routes_agent import agent_body_limit, build_agent_router
from adapters.http_api.routes_preflight import PreflightUseCases, build_preflight_router
from adapters.http_api.routes_requests import build_request_router
from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from application.server.configuration.policy_resolution import ResolvePolicies
from application.server.configuration.schemas import GetSchema
from application.server.ports.store import AuditFilters
from application.server.ports.work.databases import SchemaSnapshot
from application.server.preflight import RunPreflight
from application.server.requests.judgement import JudgeSql
from application.server.settings import PreflightSettings
from domain.server.audit import AuditEvent
from domain.server.execution_policies import ExecutionPolicy
from domain.server.workflows import AutoApprove, AutoApproveMode, RiskLevel, Workflow
from tests.integration.agent_process import wait_until
from tests.integration.server.test_api_work import (
    AGENT_H,
    ALICE_H,
    POLL,
    authenticate,
    bearer,
)
from tests.unit.application.server.test_requests_and_claims import (
    ALWAYS,
    NEEDS_DBA,
    SERVER_VERSION,
    MutableClock,
    ServerHarness,
    build_harness,
    default_settings,
)

pytestmark = pytest.mark.integration

APPROVER_H = bearer("dbw_" + "c3" * 16)  # approver: request.view, no request.preflight
RISKY = Workflow(
    database="app",
    environment="dev",
    auto_approve=AutoApprove(mode=AutoApproveMode.RISK_BASED, risk=RiskLevel.LOW),
)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[ServerHarness]:
    settings = replace(
        default_settings(tmp_path),
        workflows=(ALWAYS, NEEDS_DBA, RISKY),
        execution_policies=(ExecutionPolicy(database="app", statement_timeout_secs=12),),
        preflight=PreflightSettings(max_concurrent_per_user=3, max_explain_timeout_ms=3000),
    )
    built = build_harness(
        tmp_path, settings, clock=MutableClock(datetime.now(UTC), follow_real_time=True)
    )
    yield built
    built.close()


@pytest.fixture
def client(harness: ServerHarness) -> Iterator[TestClient]:
    classifier = SqlglotClassifier()
    judge = JudgeSql(store=harness.store, settings=harness.settings, classifier=classifier)
    preflight = PreflightUseCases(
        run_preflight=RunPreflight(
            store=harness.store,
            settings=harness.settings,
            clock=harness.clock,
            classifier=classifier,
            notifier=harness.notifier,
            judge=judge,
            recheck_secs=0.05,
        ),
        resolve_policies=ResolvePolicies(settings=harness.settings),
        get_schema=GetSchema(store=harness.store),
    )
    app = create_app(
        routers=[
            build_request_router(harness.requests),
            build_agent_router(harness.agents, is_draining=harness.draining.is_set),
            build_preflight_router(preflight),
        ],
        authenticate=authenticate,
        version=SERVER_VERSION,
        body_limit_for=agent_body_limit(harness.settings),
    )
    with TestClient(app) as test_client:
        yield test_client


def preflight(client: TestClient, sql: str, status: int = 200, **fields: Any) -> dict[str, Any]:
    body = {"database": "app", "environment": "production", "sql": sql, **fields}
    response = client.post("/api/preflight", json=body, headers=ALICE_H)
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    return data


def register_agent(client: TestClient, **status: Any) -> dict[str, Any]:
    body = {**POLL, "status": {**POLL["status"], **status}}  # type: ignore[dict-item]
    response = client.post("/api/agent/poll", json=body, headers=AGENT_H)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def audit_types(harness: ServerHarness) -> list[str]:
    with harness.store.read() as session:
        events = session.audit.list(AuditFilters(), limit=100, offset=0)
    return [event.event_type for event in events]


def attempts(harness: ServerHarness) -> list[AuditEvent]:
    with harness.store.read() as session:
        events = session.audit.list(AuditFilters(), limit=100, offset=0)
    return [event for event in events if event.event_type == "preflight.attempted"]


# --- preflight ------------------------------------------------------------------------------


def test_a_read_is_requestable_and_explained_by_the_agent_that_polls(
    client: TestClient, harness: ServerHarness
) -> None:
    register_agent(client)
    answered: dict[str, Any] = {}

    def agent() -> None:
        def handed_out() -> bool:
            jobs = register_agent(client)["preflight_jobs"]
            if jobs:
                answered.update(jobs[0])
            return bool(jobs)

        wait_until(handed_out, 5, "the preflight job in a poll")
        result = client.post(
            "/api/agent/preflight-result",
            json={
                "job_id": answered["id"],
                "claim_token": answered["claim_token"],
                "result": [{"Plan": {"Node Type": "Result"}}],
            },
            headers=AGENT_H,
        )
        assert result.status_code == 200, result.text

    thread = threading.Thread(target=agent)
    thread.start()
    report = preflight(client, "SELECT * FROM t WHERE id = 1", explain_timeout_ms=3000)
    thread.join(10)

    assert report["status"] == "requestable"
    assert report["retryable"] is False
    assert report["classification"]["operation"] == "execute_select"
    assert report["classification"]["mutating"] is False
    assert report["classification"]["statements"] == [{"class": "select", "reason": "query"}]
    assert report["policy"]["decision_preview"] == "auto_approved"
    assert report["policy"]["matched_by"] == "exact"
    assert answered["sql"] == "SELECT * FROM t WHERE id = 1"
    assert report["explain"] == {
        "status": "ok",
        "reason": None,
        "plans": [{"statement": 1, "plan": [{"Plan": {"Node Type": "Result"}}]}],
        "error": None,
    }
    listed = client.get("/api/requests", headers=ALICE_H).json()
    assert listed["requests"] == [] and listed["total"] == 0
    assert audit_types(harness).count("preflight.attempted") == 1


def test_a_write_in_a_scope_with_approvers_is_a_warning_naming_them(client: TestClient) -> None:
    report = preflight(client, "UPDATE t SET a = 1 WHERE id = 2", environment="staging")

    assert report["status"] == "warning"
    assert report["retryable"] is True
    assert report["classification"]["mutating"] is True
    assert report["policy"]["decision_preview"] == "needs_approval"
    assert report["policy"]["approvers"] == ["role:dba"]
    assert report["explain"]["status"] == "unavailable"  # no agent has polled
    assert any("approval by role:dba" in action for action in report["next_actions"])


def test_a_rejected_statement_is_blocked_and_never_explained(
    client: TestClient, harness: ServerHarness
) -> None:
    register_agent(client)
    report = preflight(client, "GRANT ALL ON t TO bob")

    assert report["status"] == "blocked"
    assert [b["code"] for b in report["blockers"]] == ["rejected"]
    assert report["fix_hints"]
    assert report["explain"] == {
        "status": "skipped",
        "reason": "the SQL is blocked",
        "plans": [],
        "error": None,
    }
    with harness.store.read() as session:
        assert session.work.outstanding_preflight_jobs("alice", harness.clock.now()) == 0
    (event,) = attempts(harness)
    assert event.outcome == "denied"
    assert event.detail_raw is not None and "bob" in event.detail_raw  # an identifier, kept


def test_an_unregistered_scope_or_a_scope_without_workflow_is_blocked(client: TestClient) -> None:
    assert [b["code"] for b in preflight(client, "SELECT 1", environment="qa")["blockers"]] == [
        "scope_not_registered"
    ]
    # app/dev has only a risk-based workflow: a write needs approval, a read may go alone.
    assert preflight(client, "SELECT 1", environment="dev")["status"] == "requestable"


def test_audit_keeps_redacted_sql_not_the_literals(
    client: TestClient, harness: ServerHarness
) -> None:
    preflight(client, "SELECT * FROM users WHERE email = 'alice@example.com'")
    (event,) = attempts(harness)
    assert event.detail_raw is not None and "alice@example.com" not in event.detail_raw
    assert "users" in event.detail_raw


def test_a_fourth_outstanding_explain_is_rate_limited(
    client: TestClient, harness: ServerHarness
) -> None:
    register_agent(client)
    for _ in range(3):
        report = preflight(client, "SELECT 1", explain_timeout_ms=20)
        assert report["explain"]["status"] == "timeout"

    refused = preflight(client, "SELECT 1", status=429, explain_timeout_ms=20)

    assert refused["code"] == "rate_limited"
    assert "at most 3" in refused["error"]
    assert audit_types(harness).count("preflight.rate_limited") == 1
    # Without asking for the plan there is nothing to limit.
    assert preflight(client, "SELECT 1", include_explain=False)["explain"]["reason"] == (
        "not requested"
    )


def test_a_saturated_agent_is_not_asked(client: TestClient) -> None:
    register_agent(client, in_flight=2, max_concurrent=2)

    assert preflight(client, "SELECT 1")["explain"]["status"] == "unavailable"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"environment": "production", "sql": "SELECT 1"}, "database"),
        ({"database": "app", "environment": "production", "sql": 5}, "sql"),
        ({"database": "App!", "environment": "production", "sql": "SELECT 1"}, "database"),
        ({"database": "app", "environment": "*", "sql": "SELECT 1"}, "environment"),
        (
            {
                "database": "app",
                "environment": "production",
                "sql": "SELECT 1",
                "include_explain": "yes",
            },
            "include_explain",
        ),
        (
            {
                "database": "app",
                "environment": "production",
                "sql": "SELECT 1",
                "explain_timeout_ms": 0,
            },
            "explain_timeout_ms",
        ),
        (
            {
                "database": "app",
                "environment": "production",
                "sql": "SELECT '" + "x" * 100_001 + "'",
            },
            "too long",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_problem(
    client: TestClient, body: dict[str, Any], needle: str
) -> None:
    response = client.post("/api/preflight", json=body, headers=ALICE_H)

    assert response.status_code == 400, response.text
    assert needle in json.dumps(response.json())


def test_preflight_needs_its_permission(client: TestClient) -> None:
    response = client.post(
        "/api/preflight",
        json={"database": "app", "environment": "production", "sql": "SELECT 1"},
        headers=APPROVER_H,
    )
    assert response.status_code == 403


# --- policy resolution ------------------------------------------------------------------------


def test_policy_resolution_lists_every_operation(client: TestClient) -> None:
    response = client.get(
        "/api/policy-resolution",
        params={"database": "app", "environment": "staging"},
        headers=ALICE_H,
    )
    assert response.status_code == 200, response.text
    body = response.json()

    assert body["registered"] is True
    assert body["execution_policy"]["statement_timeout_secs"] == 12
    assert body["execution_policy"]["matched_by"] == "environment_wildcard"
    assert body["execution_policy"]["explicit"] is True
    assert body["sql_review_policy"]["source"] == "builtin"
    previews = {r["operation"]: r["decision_preview"] for r in body["resolutions"]}
    assert previews["execute_select"] == "needs_approval"
    assert len(previews) == 6
    assert "workflow" not in body


def test_policy_resolution_of_one_operation_shows_its_workflow(client: TestClient) -> None:
    body = client.get(
        "/api/policy-resolution",
        params={"database": "app", "environment": "dev", "operation": "execute_dml"},
        headers=ALICE_H,
    ).json()

    (only,) = body["resolutions"]
    assert only["decision_preview"] == "may_auto_approve"
    assert only["reason_code"] == "risk_based"
    assert body["workflow"]["matched_by"] == "exact"
    assert body["workflow"]["steps"] == [] and body["workflow"]["explain"] is True
    assert body["execution_policy"]["matched_by"] == "environment_wildcard"

    unknown = client.get(
        "/api/policy-resolution",
        params={"database": "app", "environment": "qa"},
        headers=ALICE_H,
    ).json()
    assert unknown["registered"] is False
    assert {r["decision_preview"] for r in unknown["resolutions"]} == {"deny"}
    bad = client.get(
        "/api/policy-resolution",
        params={"database": "app", "environment": "dev", "operation": "drop_everything"},
        headers=ALICE_H,
    )
    assert bad.status_code == 400


# --- schema snapshots -------------------------------------------------------------------------


def test_schema_is_404_until_an_agent_reports_one_then_summarised(
    client: TestClient, harness: ServerHarness
) -> None:
    params = {"environment": "production", "summary": "true"}
    missing = client.get("/api/schemas/app", params=params, headers=ALICE_H)
    assert missing.status_code == 404
    assert missing.json()["code"] == "schema.not_found"
    tables = [
        {
            "name": "users",
            "schema_name": "public",
            "estimated_rows": 5,
            "columns": [{"name": "id"}],
        },
        {"name": "orders", "schema_name": "public", "estimated_rows": 70, "columns": []},
    ]
    with harness.store.write() as session:
        session.work.upsert_schema_snapshot(
            SchemaSnapshot(
                database="app",
                environment="production",
                status="ready",
                dialect="postgresql",
                collected_at=harness.clock.now(),
                agent_id="agent",
                snapshot_json=json.dumps({"tables": tables}),
            )
        )

    summary = client.get("/api/schemas/app", params=params, headers=ALICE_H).json()
    assert summary["status"] == "ready" and summary["dialect"] == "postgresql"
    assert summary["tables"] == [
        {"name": "users", "schema_name": "public", "estimated_rows": 5},
        {"name": "orders", "schema_name": "public", "estimated_rows": 70},
    ]
    one = client.get(
        "/api/schemas/app",
        params={"environment": "production", "table": "public.users"},
        headers=ALICE_H,
    ).json()
    assert one["table"] == tables[0]
    nope = client.get(
        "/api/schemas/app", params={"environment": "production", "table": "x"}, headers=ALICE_H
    )
    assert nope.status_code == 404 and nope.json()["code"] == "table.not_found"
    # The snapshot feeds preflight's impact.
    assert preflight(client, "SELECT * FROM orders")["impact"]["schema_status"] == "ready"
