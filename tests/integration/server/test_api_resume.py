"""`POST /api/requests/{id}/resume` and `GET /api/requests/{id}?wait=` over HTTP: the real
app over a real store (docs/server.md §1.4, §8.2)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domain.server.execution_policies import ExecutionPolicy
from domain.server.request_lifecycle import RequestStatus
from tests.integration.server.test_api_work import (
    AGENT_H,
    ALICE_H,
    POLL,
    ROLE_TOKEN,
    ROLES,
    ROWS,
    bearer,
    make_app,
)
from tests.unit.application.server.requests.test_resume import force
from tests.unit.application.server.test_requests_and_claims import (
    MutableClock,
    ServerHarness,
    build_harness,
    default_settings,
)

pytestmark = pytest.mark.integration

S = RequestStatus


def _harness(tmp_path: Path, *policies: ExecutionPolicy) -> ServerHarness:
    settings = replace(default_settings(tmp_path), execution_policies=policies)
    return build_harness(
        tmp_path,
        settings,
        clock=MutableClock(datetime.now(UTC), follow_real_time=True),
        result_stream_secs=0.3,
    )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[ServerHarness]:
    built = _harness(tmp_path)
    yield built
    built.close()


@pytest.fixture
def client(harness: ServerHarness) -> Iterator[TestClient]:
    with TestClient(make_app(harness)) as test_client:
        yield test_client


def approved(harness: ServerHarness) -> str:
    """A request of alice's that its approvers approved (approval is its own use case)."""
    request_id = harness.create(environment="staging")
    now = harness.clock.now()
    force(harness, request_id, S.APPROVED, resolved_at=now, expires_at=now + timedelta(hours=1))
    return request_id


def run_once(client: TestClient, request_id: str, environment: str = "production") -> None:
    """An agent polls, claims the dispatched request and reports rows."""
    scopes = {"scopes": [{"database": "app", "environment": environment}]}
    polled = client.post("/api/agent/poll", json={**POLL, "capabilities": scopes}, headers=AGENT_H)
    assert request_id in [job["id"] for job in polled.json()["jobs"]], polled.text
    claimed = client.post(f"/api/agent/jobs/{request_id}/claim", headers=AGENT_H)
    assert claimed.status_code == 200, claimed.text
    execution_id = claimed.json()["execution_id"]
    done = client.post(
        f"/api/agent/jobs/{execution_id}/result",
        json={"success": True, "result_data": ROWS},
        headers=AGENT_H,
    )
    assert done.status_code == 200, done.text


def resume(client: TestClient, request_id: str, **body: Any) -> Any:
    return client.post(f"/api/requests/{request_id}/resume", json=body or None, headers=ALICE_H)


def test_resume_authorization_matrix(client: TestClient, harness: ServerHarness) -> None:
    expected = {
        "admin": 403,  # admin may read requests, not run them
        "requester": 200,  # alice, the owner
        "approver": 403,
        "operator": 200,  # request.resume:any, with a reason
        "agent": 403,
        "anonymous": 401,
    }
    failures = []
    for role in ROLES:
        request_id = approved(harness)
        got = client.post(
            f"/api/requests/{request_id}/resume",
            json={"reason": "matrix"},
            headers=bearer(ROLE_TOKEN[role]),
        )
        if got.status_code != expected[role]:
            failures.append(f"resume as {role}: {got.status_code}, expected {expected[role]}")
        want = S.DISPATCHED if expected[role] == 200 else S.APPROVED
        if harness.status(request_id) is not want:
            failures.append(f"resume as {role} left {harness.status(request_id)}")
    assert not failures, "\n".join(failures)
    refused = client.post(
        f"/api/requests/{approved(harness)}/resume", headers=bearer(ROLE_TOKEN["agent"])
    )
    assert refused.json()["error"] == "agent tokens cannot access this endpoint"


def test_resume_answers_and_wakes_the_agents(client: TestClient, harness: ServerHarness) -> None:
    request_id = approved(harness)
    answer = resume(client, request_id)
    assert answer.status_code == 200
    assert answer.json() == {
        "id": request_id,
        "status": "dispatched",
        "resumed_from": "approved",
        "warning": None,
    }
    shown = client.get(f"/api/requests/{request_id}", headers=ALICE_H).json()
    assert (shown["status"], shown["pre_dispatch_status"]) == ("dispatched", "approved")
    run_once(client, request_id, "staging")
    assert harness.status(request_id) is S.EXECUTED


def test_resume_input_errors_are_4xx_json(client: TestClient, harness: ServerHarness) -> None:
    request_id = approved(harness)
    operator = bearer(ROLE_TOKEN["operator"])
    cases = {
        "no reason from a non-owner": (
            client.post(f"/api/requests/{request_id}/resume", headers=operator),
            400,
            "validation: reason required for non-owner resume",
        ),
        "reason not a string": (resume(client, request_id, reason=5), 400, None),
        "reason too long": (
            resume(client, request_id, reason="x" * 1025),
            400,
            "validation: reason too long (max 1024 bytes)",
        ),
        "broken JSON": (
            client.post(
                f"/api/requests/{request_id}/resume",
                content=b"{nope",
                headers={**ALICE_H, "Content-Type": "application/json"},
            ),
            400,
            None,
        ),
        "lone surrogate": (
            client.post(
                f"/api/requests/{request_id}/resume",
                content=b'{"reason": "\\ud800"}',
                headers={**ALICE_H, "Content-Type": "application/json"},
            ),
            400,
            None,
        ),
        "unknown request": (resume(client, "nope"), 404, None),
    }
    for name, (response, status, error) in cases.items():
        assert response.status_code == status, f"{name}: {response.text}"
        body = response.json()
        assert set(body) >= {"error", "code"}, name
        if error is not None:
            assert body["error"] == error, name
    assert harness.status(request_id) is S.APPROVED


def test_resume_refusals_name_the_state_and_the_rule(
    client: TestClient, harness: ServerHarness
) -> None:
    rejected = harness.create(environment="staging")
    force(harness, rejected, S.REJECTED, resolved_at=harness.clock.now())
    refused = resume(client, rejected)
    assert refused.status_code == 409
    assert refused.json()["error"] == "invalid transition: rejected + Dispatch"
    assert refused.json()["code"] == "invalid_transition"
    pending = resume(client, harness.create(environment="staging"))
    assert pending.json()["error"] == "invalid transition: pending + Dispatch"

    request_id = harness.create()
    run_once(client, request_id)
    again = resume(client, request_id)
    assert again.status_code == 409
    assert again.json()["error"].startswith("conflict: max executions reached (1 of 1")

    late = approved(harness)
    harness.clock.advance(3601)
    gone = resume(client, late)
    assert (gone.status_code, gone.json()["error"]) == (410, "gone: request expired")


def test_window_and_retry_over_http(tmp_path: Path) -> None:
    harness = _harness(tmp_path, ExecutionPolicy(max_executions=5, execution_window_secs=600))
    try:
        with TestClient(make_app(harness)) as client:
            executed = harness.create()
            run_once(client, executed)
            harness.clock.advance(601)
            gone = resume(client, executed)
            assert (gone.status_code, gone.json()["error"]) == (
                410,
                "gone: execution window expired",
            )
            failed = harness.create()
            force(harness, failed, S.FAILED, resolved_at=harness.clock.now())
            retry = resume(client, failed)
            assert (retry.status_code, retry.json()["error"]) == (
                409,
                "conflict: retry on failure disabled",
            )
    finally:
        harness.close()


def test_a_stranded_request_resumed_after_its_dispatch_timeout(
    client: TestClient, harness: ServerHarness
) -> None:
    created = client.post(
        "/api/requests",
        json={"database": "app", "environment": "production", "detail": "SELECT 1"},
        headers=ALICE_H,
    ).json()
    harness.clock.advance(harness.settings.sweeps.dispatch_timeout_secs + 1)
    harness.sweeps.run_once(harness.clock.now())
    shown = client.get(f"/api/requests/{created['id']}", headers=ALICE_H).json()
    assert shown["status"] == "auto_approved"
    answer = resume(client, created["id"])
    assert answer.json()["resumed_from"] == "auto_approved"
    run_once(client, created["id"])
    stream = client.get(f"/api/requests/{created['id']}/result/stream", headers=ALICE_H)
    assert stream.json()["result_data"]["rows"] == [{"answer": 42}]


def test_an_idempotent_retry_of_a_stranded_request_dispatches_it(
    client: TestClient, harness: ServerHarness
) -> None:
    body = {
        "database": "app",
        "environment": "production",
        "detail": "SELECT 1",
        "idempotency_key": "retry-me",
    }
    first = client.post("/api/requests", json=body, headers=ALICE_H).json()
    harness.clock.advance(harness.settings.sweeps.dispatch_timeout_secs + 1)
    harness.sweeps.run_once(harness.clock.now())
    again = client.post("/api/requests", json=body, headers=ALICE_H)
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["status"], again.json()["idempotent"]) == (
        first["id"],
        "dispatched",
        True,
    )
    run_once(client, first["id"])


def test_a_lost_request_resumes_with_a_warning(tmp_path: Path) -> None:
    harness = _harness(tmp_path, ExecutionPolicy(max_executions=2))
    try:
        with TestClient(make_app(harness)) as client:
            request_id = harness.create()
            client.post("/api/agent/poll", json=POLL, headers=AGENT_H)
            client.post(f"/api/agent/jobs/{request_id}/claim", headers=AGENT_H)
            harness.clock.advance(61)
            harness.sweeps.run_once(harness.clock.now())
            assert harness.status(request_id) is S.EXECUTION_LOST
            answer = resume(client, request_id)
            assert answer.status_code == 200
            assert answer.json()["resumed_from"] == "execution_lost"
            assert "may have run once already" in answer.json()["warning"]
            run_once(client, request_id)
            executions = client.get(f"/api/requests/{request_id}/executions", headers=ALICE_H)
            assert [e["status"] for e in executions.json()["executions"]] == [
                "completed",
                "failed",
            ]
    finally:
        harness.close()


def test_wait_on_a_finished_request_answers_at_once(
    client: TestClient, harness: ServerHarness
) -> None:
    request_id = harness.create()
    run_once(client, request_id)
    started = time.monotonic()
    shown = client.get(f"/api/requests/{request_id}", params={"wait": 30}, headers=ALICE_H)
    assert shown.json()["status"] == "executed"
    assert time.monotonic() - started < 5
