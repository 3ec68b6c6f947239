"""The request and agent APIs in-process: the real FastAPI app over a real store (SQLite).

Most tests use FastAPI's TestClient. Where requests must really overlap (twenty racing
claims, a long-poll held while a job is dispatched, our agent's HTTP client, the real
`dbward agent` process) the app runs under uvicorn on 127.0.0.1 in a background thread.
Authentication is a small token table (the identity half provides the real one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from adapters.crypto.ed25519_signer import Ed25519Signer
from adapters.crypto.ed25519_verifier import Ed25519Verifier
from adapters.http_api.app import DEFAULT_BODY_LIMIT, create_app
from adapters.http_api.routes_agent import agent_body_limit, build_agent_router
from adapters.http_api.routes_requests import build_request_router
from adapters.server_client.client import HttpServerClient
from adapters.wire import agent_protocol as wire
from application.server.requests.results import ResultEnvelope
from application.server.settings import StoreSettings
from domain.agent.errors import ServerConflict as AgentConflict
from domain.agent.token_verification import verify_execution_token
from domain.server.audit_integrity import verify_chain
from domain.server.errors import Unauthenticated
from domain.server.rbac import Principal
from domain.server.request_lifecycle import RequestStatus
from domain.shared.jobs import AgentStatus, JobResult, PollClaim, PollRequest
from domain.shared.migration_files import MigrationFile, build_detail, detail_json
from domain.shared.operations import DEFAULT_OPERATIONS
from domain.shared.scopes import Capabilities, Scope
from tests.integration.agent_process import AGENT_TOKEN, AgentProcess, wait_until
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    ALICE,
    APPROVER,
    OPERATOR,
    SERVER_VERSION,
    T0,
    MutableClock,
    ServerHarness,
    build_harness,
    default_settings,
)

pytestmark = pytest.mark.integration

PROD = Scope("app", "production")
TOKENS: dict[str, Principal] = {
    "dbw_" + "a1" * 16: ADMIN,
    "dbw_" + "b2" * 16: ALICE,
    "dbw_" + "c3" * 16: APPROVER,
    "dbw_" + "d4" * 16: OPERATOR,
    AGENT_TOKEN: AGENT,
}
TOKEN_OF = {principal.subject_id: token for token, principal in TOKENS.items()}
ROLES = ("admin", "requester", "approver", "operator", "agent", "anonymous")
ROLE_TOKEN: dict[str, str | None] = {
    "admin": TOKEN_OF["root"],
    "requester": TOKEN_OF["alice"],
    "approver": TOKEN_OF["dana"],
    "operator": TOKEN_OF["ops"],
    "agent": AGENT_TOKEN,
    "anonymous": None,
}
POLL = {
    "agent_id": None,
    "capabilities": {
        "scopes": [{"database": "app", "environment": "production"}],
        "operations": ["execute_select", "execute_dml"],
    },
    "status": {
        "in_flight": 0,
        "in_flight_preflight": 0,
        "max_concurrent": 2,
        "draining": False,
        "uptime_secs": 1,
        "active_jobs": [],
    },
    "limit": 2,
    "agent_version": "0.2.0",
}


def authenticate(header: str | None) -> Principal:
    if not header or not header.startswith("Bearer "):
        raise Unauthenticated()
    principal = TOKENS.get(header.removeprefix("Bearer "))
    if principal is None:
        raise Unauthenticated()
    return principal


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


ALICE_H = bearer(TOKEN_OF["alice"])
AGENT_H = bearer(AGENT_TOKEN)
ADMIN_H = bearer(TOKEN_OF["root"])


def make_app(harness: ServerHarness) -> FastAPI:
    return create_app(
        routers=[
            build_request_router(harness.requests),
            build_agent_router(harness.agents, is_draining=harness.draining.is_set),
        ],
        authenticate=authenticate,
        version=SERVER_VERSION,
        body_limit_for=agent_body_limit(harness.settings),
    )


class LiveServer:
    """The app under uvicorn on 127.0.0.1:<free port>, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 10, "uvicorn to start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[ServerHarness]:
    built = build_harness(
        tmp_path,
        clock=MutableClock(datetime.now(UTC), follow_real_time=True),
        result_stream_secs=0.3,
    )
    yield built
    built.close()


@pytest.fixture
def client(harness: ServerHarness) -> Iterator[TestClient]:
    with TestClient(make_app(harness)) as test_client:
        yield test_client


def create(client: TestClient, detail: str = "SELECT 1", **fields: Any) -> dict[str, Any]:
    body = {"database": "app", "environment": "production", "detail": detail, **fields}
    response = client.post("/api/requests", json=body, headers=ALICE_H)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def poll(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/agent/poll", json={**POLL, **fields}, headers=AGENT_H)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def claim(client: TestClient, request_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/api/agent/jobs/{request_id}/claim", json=body or None, headers=AGENT_H
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def result(client: TestClient, execution_id: str, body: dict[str, Any]) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/api/agent/jobs/{execution_id}/result", json=body, headers=AGENT_H
    )
    return response


ROWS = json.dumps({"rows": [{"answer": 42}], "truncated": False, "truncation_reason": None})


# --- the whole flow --------------------------------------------------------------------------


def test_auto_approved_request_flows_end_to_end(client: TestClient, harness: ServerHarness) -> None:
    created = create(client, "SELECT 42 AS answer")
    assert created["status"] == "dispatched"
    assert created["idempotent"] is False and created["approvers"] == []
    assert set(created) == {"id", "status", "operation", "approvers", "idempotent", "expires_at"}
    offered = poll(client)
    assert [job["id"] for job in offered["jobs"]] == [created["id"]]
    assert offered["jobs"][0] == {
        "id": created["id"],
        "created_by": "alice",
        "operation": "execute_select",
        "environment": "production",
        "database": "app",
        "detail": "SELECT 42 AS answer",
    }
    assert offered["upgrade_required"] is False
    assert offered["server_version"] == SERVER_VERSION
    assert offered["min_agent_version"] == "0.2.0"
    claimed = client.post(f"/api/agent/jobs/{created['id']}/claim", headers=AGENT_H)  # no body
    assert claimed.status_code == 200
    job = claimed.json()
    assert set(job) == {
        "execution_id",
        "request_id",
        "execution_token",
        "operation",
        "database",
        "environment",
        "detail",
        "statement_timeout_secs",
        "max_rows",
        "lease_expires_at",
        "execution_plan",
        "execution_plan_json",
    }
    assert job["statement_timeout_secs"] is None
    beat = client.post(f"/api/agent/jobs/{job['execution_id']}/heartbeat", headers=AGENT_H)
    assert beat.json() == {"cancelled": False}
    done = result(
        client,
        job["execution_id"],
        {"success": True, "result_data": ROWS, "truncated": False, "duration_ms": 12},
    )
    assert done.json() == {"request_id": created["id"], "status": "executed"}
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["status"] == "executed"
    assert shown["decision_trace"]["decision"]["outcome"] == "auto_approved"
    stream = client.get(f"/api/requests/{created['id']}/result/stream", headers=ALICE_H)
    expected = {
        "_dbward_result": True,
        "execution_id": job["execution_id"],
        "success": True,
        "rows_affected": None,
        "truncated": False,
        "error_message": None,
        "result_data": json.loads(ROWS),
    }
    assert stream.json() == expected
    content = client.get(f"/api/requests/{created['id']}/result/content", headers=ALICE_H)
    assert content.json() == expected
    history = client.get(f"/api/requests/{created['id']}/executions", headers=ALICE_H).json()
    assert [(e["id"], e["status"], e["has_stored_result"]) for e in history["executions"]] == [
        (job["execution_id"], "completed", True)
    ]
    assert harness.audit_types(created["id"]) == [
        "request.auto_approved",
        "request.dispatched",
        "execution.started",
        "execution.completed",
    ]
    listing = client.get("/api/requests", headers=ALICE_H).json()
    assert (listing["total"], listing["requests"][0]["id"]) == (1, created["id"])


# --- a poll that claims (docs/protocol.md §3.2 step 9) -----------------------------------------


def test_a_poll_that_asks_answers_its_jobs_claimed_and_ready_to_run(
    client: TestClient, harness: ServerHarness
) -> None:
    created = create(client, "SELECT 42 AS answer")
    raw = client.post(
        "/api/agent/poll",
        json={**POLL, "claim": {"lease_duration_secs": 90}},
        headers=AGENT_H,
    )
    answer = raw.json()
    assert answer["jobs"] == []
    [job] = answer["claimed_jobs"]
    assert job["request_id"] == created["id"]
    assert job["detail"] == "SELECT 42 AS answer"
    # Exactly what a claim call answers, read by the agent with the claim's own decoder.
    [decoded] = wire.decode_poll_response(raw.content).claimed_jobs
    key = client.get("/api/public-key", headers=AGENT_H).json()["public_key"]
    verifier = Ed25519Verifier(pinned_hex=key)
    verifier.load_public_key(key)
    now = harness.clock.now()
    token = verify_execution_token(decoded, now=now, check_signature=verifier.verify)
    assert token.requester_subject_id == "alice"
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["status"] == "running"
    history = client.get(f"/api/requests/{created['id']}/executions", headers=ALICE_H).json()
    [execution] = history["executions"]
    assert (execution["id"], execution["status"]) == (job["execution_id"], "claimed")
    assert harness.audit_types(created["id"])[-1] == "execution.started"
    # The lease the poll asked for, as a claim body's would be.
    lease = datetime.fromisoformat(job["lease_expires_at"]) - now
    assert timedelta(seconds=89) < lease <= timedelta(seconds=90)
    done = result(client, job["execution_id"], {"success": True, "result_data": ROWS})
    assert done.json() == {"request_id": created["id"], "status": "executed"}
    # The job is gone from later polls, claimed or not.
    assert poll(client, claim={})["jobs"] == []


def test_a_poll_without_the_key_leaves_its_jobs_unclaimed_as_dbward_0_2(
    client: TestClient,
) -> None:
    created = create(client)
    answer = poll(client)
    assert [job["id"] for job in answer["jobs"]] == [created["id"]]
    assert "claimed_jobs" not in answer
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["status"] == "dispatched"


def test_a_job_whose_claim_is_refused_stays_offered(client: TestClient) -> None:
    created = create(client)
    # A draining agent gets no claims made for it (§3.2 step 9): the job is offered, and
    # the agent's own claim call would meet the answer and handle it as always.
    answer = poll(
        client,
        claim={"lease_duration_secs": 60},
        status={**POLL["status"], "draining": True},
    )
    assert [job["id"] for job in answer["jobs"]] == [created["id"]]
    assert "claimed_jobs" not in answer
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["status"] == "dispatched"


def test_nothing_is_claimed_for_an_agent_that_went_away(harness: ServerHarness) -> None:
    request_id = harness.create()
    body = replace(wire.decode_poll_request(json.dumps(POLL).encode()), claim=PollClaim(60))

    async def gone() -> bool:
        return False

    reply = asyncio.run(harness.agents.poll_for_work.poll(AGENT, body, gone))
    assert [job.id for job in reply.jobs] == [request_id]
    assert reply.claimed_jobs == ()
    with harness.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None and record.status is RequestStatus.DISPATCHED


def _held_claiming_poll(
    live: LiveServer, poll: dict[str, Any]
) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """`poll` sent once (registering its agent), then again asking for claims, held by
    the server in a thread (its answer lands in the list once the thread ends)."""
    httpx.post(f"{live.url}/api/agent/poll", json=poll, headers=AGENT_H, timeout=10)
    replies: list[dict[str, Any]] = []
    held = {**poll, "wait_ms": 20_000, "claim": {"lease_duration_secs": 60}}

    def held_poll() -> None:
        response = httpx.post(f"{live.url}/api/agent/poll", json=held, headers=AGENT_H, timeout=30)
        replies.append(response.json())

    thread = threading.Thread(target=held_poll)
    thread.start()
    return thread, replies


def _hold_a_claiming_poll(
    live: LiveServer, harness: ServerHarness
) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """A registered agent's poll asking for claims, held by the server (its answer lands
    in the list once the thread ends)."""
    held = _held_claiming_poll(live, POLL)
    wait_until(lambda: harness.notifier.waiting > 0, 10, "the poll to be held")
    return held


def test_a_held_poll_replaced_by_a_newer_one_claims_nothing(harness: ServerHarness) -> None:
    """The agent gave the held poll up (a shutdown signal, a database gone down) and
    polled again: a job dispatched now reaches the held poll unclaimed."""
    with LiveServer(make_app(harness)) as live:
        thread, replies = _hold_a_claiming_poll(live, harness)
        # The newer poll: answered at once (no hold), nothing to take yet.
        newer = httpx.post(
            f"{live.url}/api/agent/poll", json={**POLL, "limit": 0}, headers=AGENT_H, timeout=10
        )
        assert newer.json()["jobs"] == []
        request_id = harness.create()
        thread.join(10)
    assert [job["id"] for job in replies[0]["jobs"]] == [request_id]
    assert "claimed_jobs" not in replies[0]
    with harness.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None and record.status is RequestStatus.DISPATCHED


def test_a_held_poll_whose_agent_hung_up_claims_nothing(harness: ServerHarness) -> None:
    """The agent was killed while its poll was held: the job stays dispatched for the
    next agent, not claimed for one that will never run it."""
    with LiveServer(make_app(harness)) as live:
        httpx.post(f"{live.url}/api/agent/poll", json=POLL, headers=AGENT_H, timeout=10)
        body = json.dumps(
            {**POLL, "wait_ms": 20_000, "claim": {"lease_duration_secs": 60}}
        ).encode()
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as agent:
            agent.sendall(
                b"POST /api/agent/poll HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {AGENT_TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_until(lambda: harness.notifier.waiting > 0, 10, "the poll to be held")
        connections = live.server.server_state.connections
        wait_until(lambda: not connections, 10, "the server to see the agent hang up")
        request_id = harness.create()

        def status() -> RequestStatus | None:
            with harness.store.read() as session:
                record = session.work.get_request(request_id)
            return None if record is None else record.status

        # Whatever the held poll did when the dispatch woke it, it claimed nothing; a
        # poll from a live agent then takes the job.
        wait_until(lambda: harness.notifier.waiting == 0, 10, "the held poll to end")
        assert status() is RequestStatus.DISPATCHED
        taken = httpx.post(
            f"{live.url}/api/agent/poll",
            json={**POLL, "claim": {"lease_duration_secs": 60}},
            headers=AGENT_H,
            timeout=10,
        ).json()
    assert [job["request_id"] for job in taken["claimed_jobs"]] == [request_id]
    assert status() is RequestStatus.RUNNING


def test_a_held_poll_claims_the_job_dispatched_during_the_hold(harness: ServerHarness) -> None:
    with LiveServer(make_app(harness)) as live:
        thread, replies = _hold_a_claiming_poll(live, harness)
        request_id = harness.create()
        thread.join(10)
    assert replies[0]["jobs"] == []
    assert [job["request_id"] for job in replies[0]["claimed_jobs"]] == [request_id]
    with harness.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None and record.status is RequestStatus.RUNNING


def _agent_poll(agent_id: str, operations: list[str] | None = None) -> dict[str, Any]:
    """`POLL` from the agent `agent_id`, taking `operations` if given."""
    capabilities = {**POLL["capabilities"]}
    if operations is not None:
        capabilities["operations"] = operations
    return {**POLL, "agent_id": agent_id, "capabilities": capabilities}


class _Looks:
    """Counts the polls' reads of the dispatched requests, and keeps every statement."""

    def __init__(self, engine: Any) -> None:
        self.statements: list[str] = []
        self._engine = engine

    def __enter__(self) -> _Looks:
        event.listen(self._engine, "before_cursor_execute", self._heard)
        return self

    def __exit__(self, *exc_info: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._heard)

    def _heard(self, _conn: Any, _cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def count(self, since: int = 0) -> int:
        return sum(1 for sql in self.statements[since:] if _is_look(sql))


def _is_look(sql: str) -> bool:
    return sql.startswith("SELECT requests.id") and "ORDER BY requests.updated_at" in sql


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[ServerHarness]:
    """A harness whose workflow runs no EXPLAIN (a creation dispatches its request and
    nothing else a held poll would be offered) and whose held polls never look in the
    store unprompted: every look is a poll's first, so the tests can count them."""
    settings = default_settings(tmp_path)
    workflows = tuple(replace(workflow, explain=False) for workflow in settings.workflows)
    built = build_harness(
        tmp_path,
        replace(settings, workflows=workflows),
        clock=MutableClock(datetime.now(UTC), follow_real_time=True),
        poll_recheck_secs=60.0,
    )
    yield built
    built.close()


def _hold(
    live: LiveServer, harness: ServerHarness, looks: _Looks, poll: dict[str, Any]
) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """`poll`'s agent registered and its claiming poll held, its first look done (each
    poll looks once: the registering one and the held one)."""
    before, waiting = looks.count(), harness.notifier.waiting
    held = _held_claiming_poll(live, poll)
    wait_until(
        lambda: looks.count(before) >= 2 and harness.notifier.waiting > waiting,
        10,
        "the poll to be held",
    )
    return held


def test_a_held_poll_claims_a_created_request_without_looking_for_it(
    quiet: ServerHarness,
) -> None:
    """Creation names the request it dispatched: the woken poll claims it at once, with
    no read of the dispatched requests after the creation."""
    with LiveServer(make_app(quiet)) as live, _Looks(quiet.store.engine) as looks:
        thread, replies = _hold(live, quiet, looks, _agent_poll("agent-a"))
        created = len(looks.statements)
        request_id = quiet.create()
        thread.join(10)
    assert [job["request_id"] for job in replies[0]["claimed_jobs"]] == [request_id]
    assert looks.count(created) == 0
    assert quiet.status(request_id) is RequestStatus.RUNNING


def test_the_poll_that_loses_a_named_request_keeps_holding(quiet: ServerHarness) -> None:
    """Two agents wait; the first creation goes to one of them, and the other, whose
    claim of the same request was refused, stays held for the next."""
    with LiveServer(make_app(quiet)) as live, _Looks(quiet.store.engine) as looks:
        first = _hold(live, quiet, looks, _agent_poll("agent-a"))
        second = _hold(live, quiet, looks, _agent_poll("agent-b"))
        one = quiet.create()
        wait_until(lambda: bool(first[1] or second[1]), 10, "one poll to answer")
        assert quiet.notifier.waiting == 1
        other = quiet.create()
        for thread, _ in (first, second):
            thread.join(10)
    claimed = [
        job["request_id"] for _, replies in (first, second) for job in replies[0]["claimed_jobs"]
    ]
    assert sorted(claimed) == sorted([one, other])


def test_a_named_request_the_poll_cannot_run_leaves_it_held(quiet: ServerHarness) -> None:
    with LiveServer(make_app(quiet)) as live, _Looks(quiet.store.engine) as looks:
        dml_only = _agent_poll("agent-a", operations=["execute_dml"])
        thread, replies = _hold(live, quiet, looks, dml_only)
        select = quiet.create()
        dml = quiet.create(detail="DELETE FROM t WHERE id = 1", operation="execute_dml")
        thread.join(10)
    assert [job["request_id"] for job in replies[0]["claimed_jobs"]] == [dml]
    assert quiet.status(select) is RequestStatus.DISPATCHED


def test_errors_use_the_envelope_and_protocol_codes(client: TestClient) -> None:
    refused = client.post(
        "/api/requests",
        json={"database": "app", "environment": "dev", "detail": "SELECT 1"},
        headers=ALICE_H,
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "validation: no workflow configured for app/dev"
    blocked = client.post(
        "/api/requests",
        json={"database": "app", "environment": "production", "detail": "SELEC 1"},
        headers=ALICE_H,
    )
    assert blocked.json()["error"] == (
        "validation: SQL blocked by review: SQL could not be parsed; cannot verify safety rules"
    )
    alias = client.post(
        "/api/agent/poll",
        json={**POLL, "capabilities": {"scopes": [], "operations": ["execute_query"]}},
        headers=AGENT_H,
    )
    assert alias.status_code == 422
    garbled = client.post(
        "/api/agent/poll",
        content=b"{not json",
        headers={**AGENT_H, "Content-Type": "application/json"},
    )
    assert garbled.status_code == 400
    wildcard = client.post(
        "/api/agent/poll",
        json={**POLL, "capabilities": {"scopes": [{"database": "*", "environment": "x"}]}},
        headers=AGENT_H,
    )
    assert (wildcard.status_code, wildcard.json()["error"]) == (
        400,
        "validation: wildcard '*' is not allowed in scopes",
    )
    missing = client.post("/api/agent/jobs/nope/claim", headers=AGENT_H)
    assert missing.status_code == 404  # the agent never polled
    poll(client)
    assert client.post("/api/agent/jobs/nope/claim", headers=AGENT_H).status_code == 404
    assert client.get("/api/requests/nope", headers=ALICE_H).status_code == 404
    assert client.get("/api/requests", headers=ALICE_H).headers["x-dbward-version"]


def test_idempotent_replay_answers_200(client: TestClient) -> None:
    first = create(client, idempotency_key="abc")
    again = client.post(
        "/api/requests",
        json={
            "database": "app",
            "environment": "production",
            "detail": "SELECT 1",
            "idempotency_key": "abc",
        },
        headers=ALICE_H,
    )
    assert again.status_code == 200
    assert again.json()["idempotent"] is True and again.json()["id"] == first["id"]
    clash = client.post(
        "/api/requests",
        json={
            "database": "app",
            "environment": "production",
            "detail": "SELECT 2",
            "idempotency_key": "abc",
        },
        headers=ALICE_H,
    )
    assert clash.status_code == 409


def test_pending_request_shape(client: TestClient) -> None:
    created = create(client, environment="staging")
    assert created["status"] == "pending"
    assert created["approvers"] == ["role:dba"]
    assert created["expires_at"].endswith("Z")
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["context"]["status"] == "collecting"
    assert shown["context"]["explain"] == [{"sql": "SELECT 1", "status": "pending"}]


def test_draining_server_answers_as_the_reference(
    client: TestClient, harness: ServerHarness
) -> None:
    created = create(client)
    poll(client)
    harness.draining.set()
    assert client.post("/api/agent/poll", json=POLL, headers=AGENT_H).json() == {"jobs": []}
    claimed = client.post(f"/api/agent/jobs/{created['id']}/claim", headers=AGENT_H)
    assert (claimed.status_code, claimed.json()) == (503, {"error": "server_shutting_down"})
    refused = client.post(
        "/api/requests",
        json={"database": "app", "environment": "production", "detail": "SELECT 1"},
        headers=ALICE_H,
    )
    assert (refused.status_code, refused.json()) == (503, {"error": "server_shutting_down"})


# --- authorization matrix ----------------------------------------------------------------------


def test_authorization_matrix(client: TestClient, harness: ServerHarness) -> None:
    executed = create(client)["id"]
    poll(client)
    job = claim(client, executed)
    result(client, job["execution_id"], {"success": True, "result_data": ROWS})
    staging = create(client, environment="staging")["id"]
    both = {
        **POLL,
        "capabilities": {
            "scopes": [
                {"database": "app", "environment": "production"},
                {"database": "app", "environment": "staging"},
            ]
        },
    }
    poll(client, **both)

    def fresh_dispatched() -> str:
        return harness.create()

    def fresh_claimed() -> str:
        return str(claim(client, harness.create())["execution_id"])

    def dry_run_job() -> str:
        with harness.store.read() as session:
            jobs = session.work.dry_run_jobs_for_request(staging)
        return jobs[0].id

    def claimed_dry_run() -> tuple[str, str]:
        job_id = harness.create(environment="staging")
        with harness.store.read() as session:
            dry = session.work.dry_run_jobs_for_request(job_id)[0]
        token = client.post(f"/api/agent/dry-run/{dry.id}/claim", headers=AGENT_H).json()
        return dry.id, str(token["claim_token"])

    def dry_run_result(h: dict[str, str]) -> httpx.Response:
        job_id, token = claimed_dry_run()
        response: httpx.Response = client.post(
            f"/api/agent/dry-run/{job_id}/result",
            json={"claim_token": token, "result": [{"Plan": {}}], "error": None},
            headers=h,
        )
        return response

    schema: dict[str, Any] = {
        "database": "app",
        "environment": "production",
        "dialect": "postgresql",
        "status": "ready",
        "snapshot": {"tables": []},
        "error_message": None,
    }
    cases: dict[str, tuple[Callable[[dict[str, str]], httpx.Response], tuple[int, ...]]] = {
        "create": (
            lambda h: client.post(
                "/api/requests",
                json={"database": "app", "environment": "production", "detail": "SELECT 1"},
                headers=h,
            ),
            (403, 201, 403, 201, 403, 401),
        ),
        "list": (lambda h: client.get("/api/requests", headers=h), (200, 200, 200, 200, 403, 401)),
        "get": (
            lambda h: client.get(f"/api/requests/{executed}", headers=h),
            (200, 200, 403, 200, 403, 401),
        ),
        "executions": (
            lambda h: client.get(f"/api/requests/{executed}/executions", headers=h),
            (200, 200, 403, 200, 403, 401),
        ),
        "result content": (
            lambda h: client.get(f"/api/requests/{executed}/result/content", headers=h),
            (200, 200, 403, 200, 403, 401),
        ),
        "result stream": (
            lambda h: client.get(f"/api/requests/{executed}/result/stream", headers=h),
            (200, 200, 403, 200, 403, 401),
        ),
        "cancel": (
            lambda h: client.post(
                f"/api/requests/{fresh_dispatched()}/cancel", json={"reason": "matrix"}, headers=h
            ),
            (403, 200, 403, 200, 403, 401),
        ),
        "agents": (lambda h: client.get("/api/agents", headers=h), (200, 403, 403, 200, 403, 401)),
        "public key": (
            lambda h: client.get("/api/public-key", headers=h),
            (403, 403, 403, 403, 200, 401),
        ),
        "poll": (
            lambda h: client.post("/api/agent/poll", json=both, headers=h),
            (403, 403, 403, 403, 200, 401),
        ),
        "claim": (
            lambda h: client.post(f"/api/agent/jobs/{fresh_dispatched()}/claim", headers=h),
            (403, 403, 403, 403, 200, 401),
        ),
        "heartbeat": (
            lambda h: client.post(f"/api/agent/jobs/{fresh_claimed()}/heartbeat", headers=h),
            (403, 403, 403, 403, 200, 401),
        ),
        "result": (
            lambda h: client.post(
                f"/api/agent/jobs/{fresh_claimed()}/result", json={"success": True}, headers=h
            ),
            (403, 403, 403, 403, 200, 401),
        ),
        "schema sync": (
            lambda h: client.post("/api/agent/schema-sync", json=schema, headers=h),
            (403, 403, 403, 403, 200, 401),
        ),
        "dry-run claim": (
            lambda h: client.post(f"/api/agent/dry-run/{dry_run_job()}/claim", headers=h),
            (403, 403, 403, 403, 200, 401),
        ),
        "dry-run result": (dry_run_result, (403, 403, 403, 403, 200, 401)),
        "preflight result": (
            lambda h: client.post(
                "/api/agent/preflight-result",
                json={"job_id": "none", "claim_token": "t", "error": "x"},
                headers=h,
            ),
            (403, 403, 403, 403, 410, 401),
        ),
    }
    failures = []
    for name, (call, expected) in cases.items():
        for role, want in zip(ROLES, expected, strict=True):
            got = call(bearer(ROLE_TOKEN[role])).status_code
            if got != want:
                failures.append(f"{name} as {role}: {got}, expected {want}")
    assert not failures, "\n".join(failures)
    user_on_agent = client.post("/api/agent/poll", json=POLL, headers=ALICE_H)
    assert user_on_agent.json()["error"] == "agent token required"
    agent_on_user = client.get("/api/requests", headers=AGENT_H)
    assert agent_on_user.json()["error"] == "agent tokens cannot access this endpoint"


# --- tokens --------------------------------------------------------------------------------------

GOLDEN_TOKEN = (
    '{"request_id":"00000000-0000-4000-8000-000000000001","operation":"execute_select",'
    '"environment":"production","database":"app",'
    '"detail_hash":"cb1d953201c1d0a571859f97231b13af5cf6d75f6c4dea3cd4f7b4c88753453e",'
    '"issued_at":"2030-01-01T12:00:00.000000000+00:00",'
    '"expires_at":"2030-01-01T12:05:00.000000000+00:00",'
    '"signature":"d5bd866768ae10e70f35b227a34d5c7960628a27a1bee1f6529b1a5273f1a716'
    'c1ab809c54835b5664381fb1c453e3241157cf1f61d51f5da0bb848dbb9b0701",'
    '"requester_role":"requester","requester_subject_id":"alice"}'
)
GOLDEN_PUBLIC_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"


def test_golden_execution_token_verifies_in_the_agent_byte_for_byte(tmp_path: Path) -> None:
    counter = itertools.count(1)
    harness = build_harness(
        tmp_path,
        new_id=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
        signer=Ed25519Signer(bytes(range(32))),
    )
    try:
        with TestClient(make_app(harness)) as client:
            created = create(client, "SELECT id, name FROM users WHERE id = 7")
            poll(client)
            raw = client.post(f"/api/agent/jobs/{created['id']}/claim", headers=AGENT_H)
            key = client.get("/api/public-key", headers=AGENT_H).json()["public_key"]
    finally:
        harness.close()
    body = raw.json()
    assert key == GOLDEN_PUBLIC_KEY
    assert body["execution_token"] == GOLDEN_TOKEN
    plan = '["SELECT id, name FROM users WHERE id = 7"]'
    assert body["execution_plan_json"] == plan
    assert json.loads(GOLDEN_TOKEN)["detail_hash"] == hashlib.sha256(plan.encode()).hexdigest()
    job = wire.decode_claimed_job(raw.content)  # as our agent reads it
    verifier = Ed25519Verifier(pinned_hex=GOLDEN_PUBLIC_KEY)
    verifier.load_public_key(key)
    token = verify_execution_token(job, now=T0, check_signature=verifier.verify)
    assert token.requester_subject_id == "alice"


# --- results ------------------------------------------------------------------------------------


def test_late_completion_is_accepted(client: TestClient, harness: ServerHarness) -> None:
    created = create(client)
    poll(client)
    job = claim(client, created["id"], lease_duration_secs=60)
    harness.clock.advance(61)  # the agent went quiet past its lease
    harness.sweeps.run_once(harness.clock.now())
    lost = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert lost["status"] == "execution_lost"
    late = result(client, job["execution_id"], {"success": True, "result_data": ROWS})
    assert late.json() == {"request_id": created["id"], "status": "executed"}
    stream = client.get(f"/api/requests/{created['id']}/result/stream", headers=ALICE_H)
    assert stream.json()["result_data"]["rows"] == [{"answer": 42}]


def test_killed_agents_job_is_lost_within_lease_plus_one_sweep(
    client: TestClient, harness: ServerHarness
) -> None:
    created = create(client)
    poll(client)
    job = claim(client, created["id"])  # a bodiless claim: the 60 s reference lease
    assert job["lease_expires_at"].endswith("+00:00")
    harness.clock.advance(60 + harness.settings.sweeps.lease_reclaim_interval_secs)
    harness.sweeps.run_once(harness.clock.now())
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["status"] == "execution_lost"
    beat = client.post(f"/api/agent/jobs/{job['execution_id']}/heartbeat", headers=AGENT_H)
    assert beat.status_code == 409


def test_dispatch_timeout_returns_to_auto_approved(
    client: TestClient, harness: ServerHarness
) -> None:
    created = create(client)
    harness.clock.advance(harness.settings.sweeps.dispatch_timeout_secs + 1)
    harness.sweeps.run_once(harness.clock.now())
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["status"] == "auto_approved"
    assert poll(client)["jobs"] == []


def test_result_stream_times_out_with_204_and_no_body(client: TestClient) -> None:
    created = create(client)
    stream = client.get(f"/api/requests/{created['id']}/result/stream", headers=ALICE_H)
    assert stream.status_code == 204
    assert stream.content == b""
    assert stream.headers.get("content-length", "0") == "0"
    assert "content-type" not in stream.headers


def test_result_too_large_is_413(tmp_path: Path) -> None:
    base = default_settings(tmp_path)
    settings = replace(base, result_storage=replace(base.result_storage, max_persist_bytes=1000))
    harness = build_harness(
        tmp_path, settings, MutableClock(datetime.now(UTC), follow_real_time=True)
    )
    try:
        with TestClient(make_app(harness)) as client:
            created = create(client)
            poll(client)
            job = claim(client, created["id"])
            too_big = result(
                client, job["execution_id"], {"success": True, "result_data": "x" * 1001}
            )
            assert too_big.status_code == 413
            assert too_big.json()["error"] == "result size 1001 exceeds limit 1000"
            limit = agent_body_limit(settings)(f"/api/agent/jobs/{job['execution_id']}/result")
            assert limit == 2 * 1000 + 2 * 1024 * 1024
            huge = client.post(
                f"/api/agent/jobs/{job['execution_id']}/result",
                content=b'{"success":true,"result_data":"' + b"x" * limit + b'"}',
                headers={**AGENT_H, "Content-Type": "application/json"},
            )
            assert huge.status_code == 413
            fits = result(client, job["execution_id"], {"success": True, "result_data": "x" * 1000})
            assert fits.status_code == 200
    finally:
        harness.close()


def test_body_limits_per_path(harness: ServerHarness) -> None:
    limit_for = agent_body_limit(harness.settings)
    assert limit_for("/api/agent/schema-sync") == 10 * 1024 * 1024
    assert limit_for("/api/agent/preflight-result") == 256 * 1024
    assert limit_for("/api/agent/jobs/x/result") == 22 * 1024 * 1024
    assert limit_for("/api/agent/jobs/x/heartbeat") == DEFAULT_BODY_LIMIT
    assert limit_for("/api/requests") == DEFAULT_BODY_LIMIT


def test_flow_and_sweeps_on_either_store(any_store: ServerHarness) -> None:
    harness = any_store
    with TestClient(make_app(harness)) as client:
        first = create(client, "SELECT 1", idempotency_key="once")
        replay = client.post(
            "/api/requests",
            json={
                "database": "app",
                "environment": "production",
                "detail": "SELECT 1",
                "idempotency_key": "once",
            },
            headers=ALICE_H,
        )
        assert replay.status_code == 200 and replay.json()["id"] == first["id"]
        pending = create(client, "UPDATE t SET a = 1 WHERE id = 1", environment="staging")
        poll(client)
        poll(client)  # a second poll updates the registry row
        job = claim(client, first["id"], lease_duration_secs=60)
        harness.clock.advance(61)
        report = harness.sweeps.run_once(harness.clock.now())
        assert report.leases_lost == 1
        late = result(client, job["execution_id"], {"success": True, "result_data": ROWS})
        assert late.json()["status"] == "executed"
        assert client.get(f"/api/requests/{first['id']}/result/content", headers=ALICE_H).json()[
            "result_data"
        ] == json.loads(ROWS)
        harness.clock.advance(86_401)
        assert harness.sweeps.run_once(harness.clock.now()).requests_expired == 1
        assert harness.status(pending["id"]) is RequestStatus.EXPIRED
        schema = {
            "database": "app",
            "environment": "production",
            "dialect": "postgresql",
            "status": "ready",
            "snapshot": {"tables": []},
        }
        poll(client)
        assert client.post("/api/agent/schema-sync", json=schema, headers=AGENT_H).content == b""
        agents = client.get("/api/agents", headers=ADMIN_H).json()["agents"]
        assert [a["id"] for a in agents] == ["agent"]
    with harness.store.read() as session:
        assert verify_chain(session.audit.chain()).valid


# --- real HTTP: races, long-polls, our agent's client ------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerHarness]:
    """The harness on SQLite, and on PostgreSQL (the scale-out store), in turn."""
    settings = default_settings(tmp_path)
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_database")
        settings = replace(settings, store=StoreSettings(url))
    built = build_harness(
        tmp_path, settings, MutableClock(datetime.now(UTC), follow_real_time=True)
    )
    yield built
    built.close()


def test_twenty_concurrent_claims_one_winner(any_store: ServerHarness) -> None:
    harness = any_store
    with LiveServer(make_app(harness)) as live:
        httpx.post(f"{live.url}/api/agent/poll", json=POLL, headers=AGENT_H, timeout=10)
        request_id = harness.create()
        barrier = threading.Barrier(20)
        statuses: list[int] = []
        lock = threading.Lock()

        def race() -> None:
            with httpx.Client(timeout=30) as http:
                barrier.wait(10)
                response = http.post(
                    f"{live.url}/api/agent/jobs/{request_id}/claim", headers=AGENT_H
                )
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=race) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert sorted(statuses) == [200] + [409] * 19
    with harness.store.read() as session:
        assert len(session.work.list_executions(request_id, 100)) == 1
    assert harness.audit_types(request_id).count("execution.started") == 1


def test_long_poll_returns_a_job_dispatched_during_the_hold(harness: ServerHarness) -> None:
    with LiveServer(make_app(harness)) as live:
        httpx.post(f"{live.url}/api/agent/poll", json=POLL, headers=AGENT_H, timeout=10)
        harness.create(environment="staging")  # warm the classifier up, outside the scope
        answered = threading.Event()
        replies: list[dict[str, Any]] = []
        answered_at: list[float] = []

        # A new agent build: the held poll's first look rewrites the agent's row at once
        # (docs/protocol.md §3.2 step 3), which is how the test sees it happen.
        held = {**POLL, "wait_ms": 20_000, "agent_build": "held"}

        def held_poll() -> None:
            response = httpx.post(
                f"{live.url}/api/agent/poll",
                json=held,
                headers=AGENT_H,
                timeout=30,
            )
            answered_at.append(time.monotonic())
            replies.append(response.json())
            answered.set()

        def last_seen() -> datetime | None:
            with harness.store.read() as session:
                rows = session.work.subject_agents("agent")
            return rows[0].record.last_seen_at if rows else None

        before = last_seen()
        thread = threading.Thread(target=held_poll)
        thread.start()
        # Armed, and past its first look at the store (which re-registered the agent):
        # from here on only the notification can answer it early.
        wait_until(
            lambda: harness.notifier.waiting > 0 and last_seen() != before,
            10,
            "the poll to be held",
        )
        dispatched_at = time.monotonic()
        request_id = harness.create()
        assert answered.wait(0.5), "the held poll did not answer"
        thread.join(5)
    latency = answered_at[0] - dispatched_at
    assert [job["id"] for job in replies[0]["jobs"]] == [request_id]
    assert 0 <= replies[0]["wait_ms"] < 20_000
    print(f"long-poll dispatch latency: {latency * 1000:.1f} ms")
    assert latency < 0.25, f"dispatch reached the held poll after {latency * 1000:.0f} ms"


def test_empty_long_poll_answers_after_the_wait_with_the_echo(harness: ServerHarness) -> None:
    with LiveServer(make_app(harness)) as live:
        started = time.monotonic()
        response = httpx.post(
            f"{live.url}/api/agent/poll", json={**POLL, "wait_ms": 400}, headers=AGENT_H, timeout=10
        )
        elapsed = time.monotonic() - started
    body = response.json()
    assert body["jobs"] == []
    assert 400 <= body["wait_ms"] < 1500
    assert 0.4 <= elapsed < 2.0


def test_our_agents_http_client_round_trip(harness: ServerHarness) -> None:
    with LiveServer(make_app(harness)) as live:
        server = HttpServerClient(live.url, AGENT_TOKEN, agent_build="test-build")
        try:
            verifier = Ed25519Verifier()
            verifier.load_public_key(server.fetch_public_key())
            request = PollRequest(
                capabilities=Capabilities(scopes=(PROD,), operations=DEFAULT_OPERATIONS),
                status=AgentStatus(
                    in_flight=0,
                    in_flight_preflight=0,
                    max_concurrent=2,
                    draining=False,
                    uptime_secs=3,
                ),
                limit=2,
                agent_version="0.2.0",
                agent_build="test-build",
                wait_ms=5_000,
            )
            empty = server.poll(replace(request, wait_ms=100))
            assert empty.jobs == () and empty.held_wait_ms is not None
            request_id = harness.create(detail="SELECT 42 AS answer")
            offered = server.poll(request)
            assert [job.id for job in offered.jobs] == [request_id]
            job = server.claim(request_id, 300)
            verify_execution_token(job, now=datetime.now(UTC), check_signature=verifier.verify)
            with pytest.raises(AgentConflict):
                server.claim(request_id, 300)
            assert server.heartbeat(job.execution_id).cancelled is False
            server.submit_result(
                job.execution_id,
                JobResult(success=True, result_data=ROWS, truncated=False, duration_ms=9),
            )
        finally:
            server.close()
    assert harness.status(request_id) is RequestStatus.EXECUTED
    listing = harness.agents.list_agents.list(ADMIN)
    assert listing[0].agent_build == "test-build"


# --- the real agent process on a real database --------------------------------------------------


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_real_agent_executes_on_a_real_database(
    tmp_path: Path, harness: ServerHarness, engine: str, request: pytest.FixtureRequest
) -> None:
    database_url: str = request.getfixturevalue(f"{engine}_url")
    with LiveServer(make_app(harness)) as live:
        (tmp_path / "agent").mkdir()
        agent = AgentProcess(
            tmp_path / "agent", live.url, {"app.production": database_url}, poll_wait_ms=20_000
        )
        agent.start()
        try:
            wait_until(agent.ready.exists, 30, "the agent to become ready")
            with httpx.Client(base_url=live.url, headers=ALICE_H, timeout=30) as http:
                created = http.post(
                    "/api/requests",
                    json={
                        "database": "app",
                        "environment": "production",
                        "detail": "SELECT 40 + 2 AS answer",
                    },
                ).json()
                deadline = time.monotonic() + 30
                stream = http.get(f"/api/requests/{created['id']}/result/stream")
                while stream.status_code == 204 and time.monotonic() < deadline:
                    stream = http.get(f"/api/requests/{created['id']}/result/stream")

            def explained() -> bool:
                details = harness.requests.get_request.get(ALICE, created["id"])
                return [job.status.value for job in details.dry_runs] == ["completed"]

            # The approvers' EXPLAIN dry-run went through the agent too.
            wait_until(explained, 30, "the dry-run EXPLAIN to complete")
        finally:
            agent.signal()
            agent.wait(30)
            agent.kill()
    envelope = stream.json()
    assert envelope["success"] is True, agent.log()
    assert envelope["result_data"]["rows"] == [{"answer": 42}]
    assert harness.audit_types(created["id"]) == [
        "request.auto_approved",
        "request.dispatched",
        "execution.started",
        "execution.completed",
    ]
    assert "agent.registered" in harness.audit_types()


def test_result_data_reaches_the_client_exactly(client: TestClient) -> None:
    created = create(client)
    poll(client)
    job = claim(client, created["id"])
    exact = '{"rows":[{"n":123456789012345678901234567890,"d":"1.10"}],"truncated":false}'
    result(client, job["execution_id"], {"success": True, "result_data": exact})
    content = client.get(f"/api/requests/{created['id']}/result/content", headers=ALICE_H)
    assert content.content.endswith(b',"result_data":' + exact.encode() + b"}")
    assert json.loads(content.content)["result_data"]["rows"][0]["n"] == (
        123456789012345678901234567890
    )
    second = create(client)
    poll(client)
    job = claim(client, second["id"])
    result(client, job["execution_id"], {"success": True, "result_data": "plain text, NaN"})
    text = client.get(f"/api/requests/{second['id']}/result/content", headers=ALICE_H)
    assert text.json()["result_data"] == "plain text, NaN"


# --- a woken stream answers the result just recorded (docs/server.md §1.8) --------------------


@pytest.mark.parametrize(
    "outcome",
    [
        JobResult(success=True, result_data=ROWS, rows_affected=None, duration_ms=3),
        JobResult(success=True, result_data="plain text, \ud800 NaN"),
        JobResult(success=False, error_message='relation "nope" does not exist'),
        JobResult(success=True, rows_affected=2),
    ],
    ids=["rows", "text-with-a-lone-surrogate", "failure", "no-body"],
)
def test_a_stream_woken_by_a_result_answers_it_without_reading_it_back(
    harness: ServerHarness, outcome: JobResult
) -> None:
    request_id = harness.create()
    harness.poll()
    job = harness.claim(request_id)
    reads: list[None] = []
    read = harness.store.read

    def counted_read() -> Any:
        reads.append(None)
        return read()

    async def scenario() -> ResultEnvelope | None:
        waiting = asyncio.create_task(harness.requests.wait_for_result.wait(ALICE, request_id))
        deadline = time.monotonic() + 10
        while harness.notifier.waiting == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert harness.notifier.waiting > 0, "the stream did not start waiting"
        harness.agents.submit_result.submit(AGENT, job.execution_id, outcome)
        # The stream runs only from here on (the submission ran on this loop's thread).
        harness.store.read = counted_read  # type: ignore[method-assign]
        return await asyncio.wait_for(waiting, 10)

    answered = asyncio.run(scenario())
    assert reads == []
    # What a stream started now reads from the store: the same envelope.
    stored = asyncio.run(harness.requests.wait_for_result.wait(ALICE, request_id))
    assert answered == stored
    assert answered is not None and answered.success is outcome.success


def _race_results(url: str, execution_id: str, payloads: list[str]) -> dict[int, int]:
    """Submit every payload for one execution at once; the status code of each."""
    barrier = threading.Barrier(len(payloads))
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def submit(n: int) -> None:
        with httpx.Client(timeout=60) as http:
            barrier.wait(10)
            response = http.post(
                f"{url}/api/agent/jobs/{execution_id}/result",
                json={"success": True, "result_data": payloads[n]},
                headers=AGENT_H,
            )
        with lock:
            statuses[n] = response.status_code

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_concurrent_duplicate_results_keep_the_winners_content(any_store: ServerHarness) -> None:
    """Each attempt writes its own content key; a losing duplicate deletes only its own
    file, so the winner's content stays readable and matches its recorded checksum."""
    harness = any_store
    submitters = 3
    with LiveServer(make_app(harness)) as live, httpx.Client(timeout=60) as http:
        for trial in range(4):
            http.post(f"{live.url}/api/agent/poll", json=POLL, headers=AGENT_H)
            request_id = harness.create()
            job = http.post(f"{live.url}/api/agent/jobs/{request_id}/claim", headers=AGENT_H)
            payloads = [
                json.dumps({"rows": [{"n": n, "pad": "x" * (2 * 1024 * 1024)}], "trial": trial})
                for n in range(submitters)
            ]
            statuses = _race_results(live.url, job.json()["execution_id"], payloads)
            assert sorted(statuses.values()) == [200] + [409] * (submitters - 1), statuses
            winner = next(n for n, status in statuses.items() if status == 200)
            content = http.get(
                f"{live.url}/api/requests/{request_id}/result/content", headers=ALICE_H
            )
            assert content.status_code == 200, content.text
            assert content.json()["result_data"] == json.loads(payloads[winner])
            with harness.store.read() as session:
                summary = session.work.latest_result(request_id)
            assert summary is not None and summary.storage_key
            stored = harness.results.get(summary.storage_key)
            assert stored == payloads[winner].encode()
            assert summary.checksum_sha256 == hashlib.sha256(stored).hexdigest()
            files = [p for p in harness.results.root_dir.rglob("*") if p.is_file()]
            assert len([p for p in files if request_id in p.parts]) == 1


def test_two_replicas_never_run_two_migrations_of_one_database(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas (two stores on one PostgreSQL) claim two migrate_up requests of one
    database at once: the per-database advisory lock lets exactly one through."""
    from adapters.store.work import SqlWorkRepository

    settings = replace(default_settings(tmp_path), store=StoreSettings(pg_database))
    clock = MutableClock(datetime.now(UTC), follow_real_time=True)
    first, second = (
        build_harness(tmp_path, settings, clock),
        build_harness(tmp_path, settings, clock),
    )
    try:
        detail = detail_json(build_detail([MigrationFile("1_t.sql", "1", "SELECT 1", None)], "up"))
        ids = [
            first.create(detail=detail, operation="migrate_up", idempotency_key=key)
            for key in ("a", "b")
        ]
        first.poll()
        # Hold every claim right after its "is a migration running?" check until the other
        # one has checked too (or a deadline passes, as when the lock keeps it out).
        checked = threading.Barrier(2, timeout=3)
        real_check = SqlWorkRepository.migration_active

        def check_then_wait(self: SqlWorkRepository, scope: Scope, exclude: str) -> bool:
            active = real_check(self, scope, exclude)
            with contextlib.suppress(threading.BrokenBarrierError):
                checked.wait()
            return active

        monkeypatch.setattr(SqlWorkRepository, "migration_active", check_then_wait)
        outcomes: list[str] = []
        lock = threading.Lock()

        def claim_on(harness: ServerHarness, request_id: str) -> None:
            try:
                harness.claim(request_id)
                outcome = "claimed"
            except Exception as exc:
                outcome = type(exc).__name__ + ": " + str(exc)
            with lock:
                outcomes.append(outcome)

        threads = [
            threading.Thread(target=claim_on, args=(harness, request_id))
            for harness, request_id in zip((first, second), ids, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == [
            "Conflict: migration already running for this database",
            "claimed",
        ], outcomes
    finally:
        first.close()
        second.close()


# --- malformed input is a 4xx envelope, never a 500 ---------------------------------------------


def _raw_create(client: TestClient, raw: bytes | Iterator[bytes]) -> httpx.Response:
    response: httpx.Response = client.post(
        "/api/requests", content=raw, headers={**ALICE_H, "Content-Type": "application/json"}
    )
    return response


def _assert_validation(response: httpx.Response, *needles: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation.failed" and body["error"].startswith("validation: ")
    assert body["hint"] == body["error"].removeprefix("validation: ")
    for needle in needles:
        assert needle in body["error"], body


def test_oversized_polls_are_400(client: TestClient) -> None:
    scopes = [{"database": f"db{n}", "environment": "e"} for n in range(1001)]
    many = client.post(
        "/api/agent/poll", json={**POLL, "capabilities": {"scopes": scopes}}, headers=AGENT_H
    )
    _assert_validation(many, "at most 256 scopes")
    degraded = client.post(
        "/api/agent/poll", json={**POLL, "degraded_scopes": scopes}, headers=AGENT_H
    )
    _assert_validation(degraded, "at most 256 scopes")
    version = client.post(
        "/api/agent/poll", json={**POLL, "agent_version": "1" * 4301}, headers=AGENT_H
    )
    _assert_validation(version, "agent_version")
    status = dict(POLL["status"])  # type: ignore[arg-type]
    for field_name in ("request_id", "operation"):
        job = {"request_id": "r", "operation": "execute_select", "elapsed_secs": 1}
        job[field_name] = "x" * 257
        long = client.post(
            "/api/agent/poll",
            json={**POLL, "status": {**status, "active_jobs": [job]}},
            headers=AGENT_H,
        )
        _assert_validation(long, f"active_jobs.{field_name}")
    assert poll(client, capabilities={"scopes": scopes[:256]})["jobs"] == []
    assert poll(client, agent_version="0." + "9" * 200)["upgrade_required"] is False


@pytest.mark.parametrize(
    ("field_name", "name"),
    [("database", "app\n"), ("environment", "production\n"), ("database", "App")],
)
def test_a_scope_name_outside_the_rule_is_400(
    client: TestClient, field_name: str, name: str
) -> None:
    """A name ending in a newline is refused like any other bad name, before any workflow."""
    body = {"database": "app", "environment": "production", "detail": "SELECT 1"}
    body[field_name] = name
    response = client.post("/api/requests", json=body, headers=ALICE_H)
    _assert_validation(response, f"invalid {field_name} name {name!r}")
    assert client.get("/api/requests", headers=ALICE_H).json()["requests"] == []


def test_lone_surrogates_in_a_new_request_are_400(client: TestClient) -> None:
    for field_name in ("detail", "reason", "idempotency_key"):
        fields = {"database": "app", "environment": "production", "detail": "SELECT 1"}
        fields[field_name] = "SELECT \ud800"
        raw = json.dumps(fields).encode()  # ensure_ascii: the surrogate travels as \\ud800
        _assert_validation(_raw_create(client, raw), field_name)


def test_huge_offsets_are_400(client: TestClient) -> None:
    _assert_validation(client.get(f"/api/requests?offset={2**63}", headers=ALICE_H), "offset")
    assert client.get("/api/requests?offset=5", headers=ALICE_H).status_code == 200


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"database":"app","environment":"production","detail":"'
        for _ in range(12):
            yield b"x" * 100_000
        yield b'"}'

    response = _raw_create(client, chunks())
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload.too_large"


def test_deep_or_huge_number_metadata_is_a_clear_400(client: TestClient) -> None:
    head = b'{"database":"app","environment":"production","detail":"SELECT 1","metadata":'
    deep = _raw_create(client, head + b"[" * 3000 + b"]" * 3000 + b"}")
    _assert_validation(deep, "nested too deeply")
    digits = _raw_create(client, head + b'{"n":' + b"1" * 5000 + b"}}")
    _assert_validation(digits, "integer with too many digits")


def test_idempotency_keys_are_capped(client: TestClient) -> None:
    _assert_validation(
        client.post(
            "/api/requests",
            json={
                "database": "app",
                "environment": "production",
                "detail": "SELECT 1",
                "idempotency_key": "k" * 257,
            },
            headers=ALICE_H,
        ),
        "idempotency_key",
    )
    assert create(client, idempotency_key="k" * 256)["status"] == "dispatched"


def test_domain_errors_use_the_protocol_codes(client: TestClient, harness: ServerHarness) -> None:
    """docs/protocol.md §2: the reference's codes, prefixes and hints."""
    poll(client)
    missing = client.post("/api/agent/jobs/nope/claim", headers=AGENT_H)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not found: request not found",
        "code": "request.not_found",
        "hint": None,
    }
    created = create(client)
    job = claim(client, created["id"])
    assert result(client, job["execution_id"], {"success": True}).status_code == 200
    again = result(client, job["execution_id"], {"success": True})
    assert again.status_code == 409
    body = again.json()
    assert body["code"] == "request.conflict" and body["error"].startswith("conflict: ")
    assert body["hint"] == "request may have been modified concurrently"
    refused = client.post(
        "/api/requests",
        json={"database": "app", "environment": "dev", "detail": "SELECT 1"},
        headers=ALICE_H,
    )
    assert refused.json() == {
        "error": "validation: no workflow configured for app/dev",
        "code": "validation.failed",
        "hint": "no workflow configured for app/dev",
    }
    gone = client.post(
        "/api/agent/preflight-result",
        json={"job_id": "none", "claim_token": "t", "error": "x"},
        headers=AGENT_H,
    )
    assert (gone.status_code, gone.json()["code"]) == (410, "request.gone")
    assert gone.json()["error"].startswith("gone: ")
    # Specific codes and the protocol's special bodies stay exactly as they were.
    harness.draining.set()
    draining = client.post(f"/api/agent/jobs/{created['id']}/claim", headers=AGENT_H)
    assert (draining.status_code, draining.json()) == (503, {"error": "server_shutting_down"})
    harness.draining.clear()
    gate = client.get("/api/requests", headers=AGENT_H)
    assert gate.status_code == 403


def test_dry_runs_of_finished_requests_expire_and_polls_hold_again(
    client: TestClient, harness: ServerHarness
) -> None:
    staging = {**POLL, "capabilities": {"scopes": [{"database": "app", "environment": "staging"}]}}
    created = create(client, "UPDATE t SET a = 1 WHERE id = 1", environment="staging")
    offered = client.post("/api/agent/poll", json=staging, headers=AGENT_H).json()
    assert [job["request_id"] for job in offered["dry_run_jobs"]] == [created["id"]]
    cancelled = client.post(f"/api/requests/{created['id']}/cancel", headers=ALICE_H)
    assert cancelled.status_code == 200, cancelled.text
    assert harness.sweeps.run_once(harness.clock.now()).dry_runs_expired == 1
    with harness.store.read() as session:
        jobs = session.work.dry_run_jobs_for_request(created["id"])
    assert [job.status.value for job in jobs] == ["failed"]
    held = client.post("/api/agent/poll", json={**staging, "wait_ms": 200}, headers=AGENT_H).json()
    assert held["dry_run_jobs"] == [] and held["wait_ms"] >= 150


def test_a_second_migration_of_a_database_is_not_claimed_while_one_runs(
    client: TestClient,
) -> None:
    """Through the HTTP API: two auto-approved migrate_up requests of app/production are
    both dispatched, the first claim wins, the second is refused 409 until the first ends."""
    detail = detail_json(build_detail([MigrationFile("1_t.sql", "1", "SELECT 1", None)], "up"))
    first = create(client, detail, operation="migrate_up")["id"]
    second = create(client, detail, operation="migrate_up", idempotency_key="second")["id"]
    migrations = ["migrate_up", "migrate_down", "migrate_status"]
    capabilities = {
        "scopes": [{"database": "app", "environment": "production"}],
        "operations": migrations,
    }
    offered = {job["id"] for job in poll(client, capabilities=capabilities)["jobs"]}
    assert offered == {first, second}
    job = claim(client, first)
    refused = client.post(f"/api/agent/jobs/{second}/claim", headers=AGENT_H)
    assert refused.status_code == 409, refused.text
    assert "migration already running for this database" in refused.text
    # A non-mutating migrate_status of the same database is not held back.
    status = create(client, "", operation="migrate_status")["id"]
    poll(client, capabilities=capabilities)
    claim(client, status)
    result(client, job["execution_id"], {"success": True, "result_data": '{"applied":["1"]}'})
    claim(client, second)
