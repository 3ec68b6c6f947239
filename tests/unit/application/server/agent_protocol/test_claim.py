"""Claim: the signed execution token, statement timeout and lease, and the refusals in
their order."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.server.requests.common import ServerDraining
from domain.agent.token_verification import verify_execution_token
from domain.server.errors import Conflict, Forbidden, NotFound
from domain.server.execution_policies import ExecutionPolicy
from domain.server.request_lifecycle import RequestStatus
from domain.shared.migration_files import MigrationFile, build_detail, detail_json
from domain.shared.timestamps import rfc3339_nanos
from tests.unit.application.server.test_requests_and_claims import (
    AGENT,
    ALWAYS,
    NEEDS_DBA,
    T0,
    ServerHarness,
    build_harness,
    default_settings,
)


def test_claim_signs_a_token_the_agent_verifies(server: ServerHarness) -> None:
    request_id = server.create(detail="SELECT a FROM t WHERE b = 'x';")
    server.poll()
    reply = server.claim(request_id)
    assert reply.execution_plan == ("SELECT a FROM t WHERE b = 'x'",)
    assert reply.execution_plan_json == json.dumps(reply.execution_plan, separators=(",", ":"))
    assert reply.statement_timeout_secs is None  # no [[execution_policies]] entry
    assert reply.max_rows is None
    assert reply.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=60))
    token = json.loads(reply.execution_token)
    assert list(token) == [
        "request_id",
        "operation",
        "environment",
        "database",
        "detail_hash",
        "issued_at",
        "expires_at",
        "signature",
        "requester_role",
        "requester_subject_id",
    ]
    assert token["expires_at"] == "2030-01-01T12:05:00.000000000+00:00"
    assert (token["requester_role"], token["requester_subject_id"]) == ("requester", "alice")
    verifier = Ed25519Verifier()
    verifier.load_public_key(server.agents.get_public_key.get(AGENT))
    verified = verify_execution_token(
        reply, now=T0 + timedelta(seconds=1), check_signature=verifier.verify
    )
    assert verified.request_id == request_id
    assert server.status(request_id) is RequestStatus.RUNNING
    assert server.audit_types(request_id)[-1] == "execution.started"


def test_claim_timeout_and_lease_follow_policy_workflow_and_request(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path,
        workflows=(replace(ALWAYS, statement_timeout_secs=45), NEEDS_DBA),
        execution_policies=(
            ExecutionPolicy(environment="production", statement_timeout_secs=20, max_rows=500),
        ),
    )
    harness = build_harness(tmp_path, settings)
    try:
        harness.poll()
        first = harness.claim(harness.create(), lease=300)
        assert first.statement_timeout_secs == 45  # the workflow's override, policy matched
        assert first.max_rows == 500
        assert first.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=300))
        second = harness.claim(harness.create(), lease=5000)
        assert second.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=630))
        third = harness.claim(harness.create())  # a bodiless dbward 0.2 claim
        assert third.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=75))
    finally:
        harness.close()


def test_claim_refusals_in_order(server: ServerHarness) -> None:
    request_id = server.create()
    with pytest.raises(NotFound, match="agent not registered"):
        server.claim(request_id)
    server.poll(scopes=(("app", "staging"),))
    with pytest.raises(NotFound, match="request not found"):
        server.claim("missing")
    with pytest.raises(Forbidden):
        server.claim(request_id)  # the agent serves app/staging only
    server.poll()
    server.claim(request_id)
    with pytest.raises(Conflict, match="running \\+ Claim"):
        server.claim(request_id)
    server.draining.set()
    with pytest.raises(ServerDraining):
        server.claim(request_id)


def test_a_named_claim_is_checked_against_that_agents_own_last_poll(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.poll(agent_id="replica-prod", scopes=(("app", "production"),))
    server.poll(agent_id="replica-staging", scopes=(("app", "staging"),))  # polled last

    with pytest.raises(Forbidden, match="agent agent/replica-staging does not serve app/prod"):
        server.claim(request_id, agent_id="replica-staging")
    with pytest.raises(NotFound, match="agent not registered"):
        server.claim(request_id, agent_id="never-polled")
    claimed = server.claim(request_id, agent_id="replica-prod")

    assert claimed.request_id == request_id
    assert server.status(request_id) is RequestStatus.RUNNING


def test_a_nameless_claim_may_take_what_any_agent_of_its_token_serves(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.poll(agent_id="replica-prod", scopes=(("app", "production"),))
    server.poll(agent_id="replica-staging", scopes=(("app", "staging"),))

    server.claim(request_id)  # a bodiless dbward 0.2 claim

    assert server.status(request_id) is RequestStatus.RUNNING


def test_a_nameless_claim_is_refused_when_no_agent_of_its_token_serves_the_scope(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.poll(agent_id="replica-staging", scopes=(("app", "staging"),))
    server.poll(scopes=(("app", "staging"),))

    with pytest.raises(Forbidden, match="agent agent does not serve app/production"):
        server.claim(request_id)


def test_one_migration_at_a_time_per_database(server: ServerHarness) -> None:
    detail = detail_json(build_detail([MigrationFile("1_t.sql", "1", "SELECT 1", None)], "up"))
    first = server.create(detail=detail, operation="migrate_up")
    second = server.create(detail=detail, operation="migrate_up", idempotency_key="b")
    server.poll()
    server.claim(first)  # two dispatched migrations do not block each other
    with pytest.raises(Conflict, match="migration already running"):
        server.claim(second)
