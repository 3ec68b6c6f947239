"""Result access and retention over HTTP: the real FastAPI app over a real store (SQLite).

Who may read a result through `…/result/content` and `…/result/stream`, `GET /api/results`
with its authorization matrix and input errors, and what the routes answer once the
retention purge has deleted a result's content (410) or a whole request (404).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.http_api.app import create_app
from adapters.http_api.routes_agent import agent_body_limit, build_agent_router
from adapters.http_api.routes_approvals import build_approval_router
from adapters.http_api.routes_requests import build_request_router
from adapters.http_api.routes_results import build_result_router
from application.server.ports.work.requests import RequestUpdate
from application.server.requests.result_list import ListResults
from application.server.retention import RetentionSweeps
from domain.server.approvals import Approval, ApprovalAction
from domain.server.errors import Unauthenticated
from domain.server.rbac import Principal
from domain.server.request_lifecycle import RequestStatus
from tests.integration.server import test_api_approvals as approvals_api
from tests.integration.server.test_api_work import (
    ROLE_TOKEN,
    ROLES,
    ROWS,
    TOKENS,
    bearer,
    claim,
    create,
    poll,
    result,
)
from tests.unit.application.server.test_requests_and_claims import (
    SERVER_VERSION,
    MutableClock,
    ServerHarness,
    build_harness,
    user,
)

pytestmark = pytest.mark.integration

DAY = 86400
BOB_TOKEN = "dbw_" + "e5" * 16
CAROL_TOKEN = "dbw_" + "f6" * 16
ALL_TOKENS: dict[str, Principal] = {
    **TOKENS,
    BOB_TOKEN: user("bob", "requester"),
    CAROL_TOKEN: user("carol", "requester"),
}
ALICE_H = bearer(ROLE_TOKEN["requester"])
DANA_H = bearer(ROLE_TOKEN["approver"])
BOB_H = bearer(BOB_TOKEN)
CAROL_H = bearer(CAROL_TOKEN)


def authenticate(header: str | None) -> Principal:
    principal = ALL_TOKENS.get((header or "").removeprefix("Bearer "))
    if principal is None:
        raise Unauthenticated()
    return principal


def make_app(harness: ServerHarness) -> FastAPI:
    return create_app(
        routers=[
            build_request_router(harness.requests),
            build_result_router(ListResults(store=harness.store, settings=harness.settings)),
            build_agent_router(harness.agents, is_draining=harness.draining.is_set),
        ],
        authenticate=authenticate,
        version=SERVER_VERSION,
        body_limit_for=agent_body_limit(harness.settings),
    )


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


def executed(client: TestClient, **fields: Any) -> str:
    """A request by alice, run to a stored successful result."""
    request_id = str(create(client, **fields)["id"])
    poll(client)
    execution_id = claim(client, request_id)["execution_id"]
    assert result(client, execution_id, {"success": True, "result_data": ROWS}).status_code == 200
    return request_id


def approved_by(harness: ServerHarness, request_id: str, actor: str) -> None:
    with harness.store.write() as session:
        session.work.insert_approval(
            Approval(
                id=f"ap-{request_id}-{actor}",
                request_id=request_id,
                action=ApprovalAction.APPROVE,
                actor_id=actor,
                step_index=0,
                created_at=harness.clock.now(),
                matched_selector="role:approver",
                comment=None,
            )
        )


def result_routes(client: TestClient, request_id: str, headers: dict[str, str]) -> list[int]:
    return [
        client.get(f"/api/requests/{request_id}/result/{route}", headers=headers).status_code
        for route in ("content", "stream")
    ]


# --- who may read a result --------------------------------------------------------------------


def test_requester_shared_user_and_approver_read_the_result_a_stranger_does_not(
    client: TestClient, harness: ServerHarness
) -> None:
    request_id = executed(client, share_with=["user:bob"])
    approved_by(harness, request_id, "dana")

    assert result_routes(client, request_id, ALICE_H) == [200, 200]
    assert result_routes(client, request_id, BOB_H) == [200, 200]
    assert result_routes(client, request_id, DANA_H) == [200, 200]
    assert result_routes(client, request_id, CAROL_H) == [403, 403]
    content = client.get(f"/api/requests/{request_id}/result/content", headers=BOB_H).json()
    assert content["success"] is True and content["result_data"]["rows"] == [{"answer": 42}]
    # A stranger learns no more than for a request they cannot see.
    refused = client.get(f"/api/requests/{request_id}/result/content", headers=CAROL_H)
    hidden = client.get(f"/api/requests/{request_id}", headers=CAROL_H)
    assert (
        refused.json()
        == hidden.json()
        == {
            "error": "forbidden",
            "code": "forbidden",
            "hint": "check your role permissions",
        }
    )


def test_an_approval_opens_only_the_approved_requests_result(
    client: TestClient, harness: ServerHarness
) -> None:
    approved = executed(client)
    other = executed(client)
    approved_by(harness, approved, "dana")

    assert result_routes(client, approved, DANA_H) == [200, 200]
    assert result_routes(client, other, DANA_H) == [403, 403]


# --- GET /api/results -------------------------------------------------------------------------


def test_get_results_authorization_matrix(client: TestClient, harness: ServerHarness) -> None:
    own = executed(client)
    shared = executed(client, share_with=["user:bob"])
    approved_by(harness, own, "dana")

    expected: dict[str, tuple[int, set[str] | None]] = {
        "admin": (200, {own, shared}),
        "requester": (200, {own, shared}),
        "approver": (200, {own}),
        "operator": (200, {own, shared}),
        "agent": (403, None),
        "anonymous": (401, None),
    }
    failures = []
    for role in ROLES:
        response = client.get("/api/results", headers=bearer(ROLE_TOKEN[role]))
        status, ids = expected[role]
        got = (
            {row["request_id"] for row in response.json()["results"]}
            if response.status_code == 200
            else None
        )
        if (response.status_code, got) != (status, ids):
            failures.append(f"{role}: {response.status_code} {got}, expected {status} {ids}")
    assert not failures, "\n".join(failures)
    assert {
        row["request_id"] for row in client.get("/api/results", headers=BOB_H).json()["results"]
    } == {shared}
    assert client.get("/api/results", headers=CAROL_H).json()["results"] == []
    agent = client.get("/api/results", headers=bearer(ROLE_TOKEN["agent"]))
    assert agent.json()["error"] == "agent tokens cannot access this endpoint"


def test_get_results_rows_filters_and_pages(client: TestClient, harness: ServerHarness) -> None:
    first = executed(client)
    harness.clock.advance(1)
    second = executed(client)

    page = client.get("/api/results?limit=1", headers=ALICE_H).json()
    assert (page["limit"], page["offset"]) == (1, 0)
    (row,) = page["results"]
    assert row["request_id"] == second
    assert set(row) >= {
        "request_id",
        "execution_id",
        "database",
        "environment",
        "operation",
        "stored_at",
        "content_length",
        "success",
        "purged",
    }
    assert (row["database"], row["environment"], row["operation"]) == (
        "app",
        "production",
        "execute_select",
    )
    assert row["content_length"] == len(ROWS) and row["has_stored_content"] is True
    rest = client.get("/api/results?limit=1&offset=1", headers=ALICE_H).json()["results"]
    assert [r["request_id"] for r in rest] == [first]
    assert client.get("/api/results?limit=500", headers=ALICE_H).json()["limit"] == 100
    for query, count in (("database=app", 2), ("environment=staging", 0), ("database=x", 0)):
        rows = client.get(f"/api/results?{query}", headers=ALICE_H).json()["results"]
        assert len(rows) == count, query


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=abc",
        "offset=-1",
        "offset=99999999999999999999",
        "database=a%20b",
        "environment=%00",
        "database=*",
        "database=" + "d" * 300,
    ],
)
def test_get_results_refuses_bad_input_with_a_400(client: TestClient, query: str) -> None:
    response = client.get(f"/api/results?{query}", headers=ALICE_H)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation.failed" and body["error"].startswith("validation: ")


# --- retention --------------------------------------------------------------------------------


def purger(harness: ServerHarness) -> RetentionSweeps:
    return RetentionSweeps(
        store=harness.store, settings=harness.settings, result_store=harness.results
    )


def test_a_result_purged_after_its_retention_answers_410(
    client: TestClient, harness: ServerHarness
) -> None:
    request_id = executed(client)
    harness.clock.advance(31 * DAY)  # the default retention is 30 days
    assert purger(harness).purge_results(harness.clock.now()) == 1

    for route in ("content", "stream"):
        gone = client.get(f"/api/requests/{request_id}/result/{route}", headers=ALICE_H)
        assert gone.status_code == 410, route
        assert gone.json()["code"] == "request.gone"
        assert "purged after its retention period (30 days)" in gone.json()["error"]
    shown = client.get(f"/api/requests/{request_id}", headers=ALICE_H)
    assert (shown.status_code, shown.json()["status"]) == (200, "executed")
    (row,) = client.get("/api/results", headers=ALICE_H).json()["results"]
    assert (row["purged"], row["has_stored_content"], row["success"]) == (True, False, True)
    history = client.get(f"/api/requests/{request_id}/executions", headers=ALICE_H).json()
    assert [e["has_stored_result"] for e in history["executions"]] == [False]
    assert harness.audit_types(request_id)[-1] == "result.purged"


def test_a_request_purged_after_request_ttl_days_is_gone_but_its_audit_stays(
    client: TestClient, harness: ServerHarness
) -> None:
    request_id = executed(client)
    before = harness.audit_types(request_id)
    harness.clock.advance(91 * DAY)  # request_ttl_days defaults to 90
    assert purger(harness).purge_requests(harness.clock.now()) == 1

    for path in ("", "/result/content", "/result/stream", "/executions"):
        response: httpx.Response = client.get(f"/api/requests/{request_id}{path}", headers=ALICE_H)
        assert response.status_code == 404, path
    assert client.get("/api/results", headers=ALICE_H).json()["results"] == []
    assert harness.audit_types(request_id) == [*before, "request.purged"]


# --- approvers through the approve endpoint ---------------------------------------------------


def test_approvers_who_approved_through_the_api_read_the_result(tmp_path: Path) -> None:
    harness = build_harness(
        tmp_path, approvals_api.settings_for(tmp_path), MutableClock(datetime.now(UTC))
    )
    app = create_app(
        routers=[
            build_request_router(harness.requests),
            build_approval_router(approvals_api.approval_use_cases(harness)),
            build_agent_router(harness.agents, is_draining=harness.draining.is_set),
        ],
        authenticate=approvals_api.authenticate,
        version=SERVER_VERSION,
        body_limit_for=agent_body_limit(harness.settings),
    )
    h = approvals_api.h
    try:
        with TestClient(app) as client:
            request_id = approvals_api.create(client)  # staging: role:dba, then user:erin
            assert approvals_api.approve(client, request_id, approvals_api.DANA).status_code == 200
            assert approvals_api.approve(client, request_id, approvals_api.ERIN).status_code == 200
            # Resume is not served by this router set: dispatch the approved request in the
            # store, as resume does, and let the agent run it.
            with harness.store.write() as session:
                assert session.work.update_request_status(
                    request_id,
                    allowed_from={RequestStatus.APPROVED},
                    to=RequestStatus.DISPATCHED,
                    now=harness.clock.now(),
                    changes=RequestUpdate(pre_dispatch_status=RequestStatus.APPROVED),
                )
            harness.poll(scopes=(("app", "staging"),))
            execution_id = harness.claim(request_id).execution_id
            client.post(
                f"/api/agent/jobs/{execution_id}/result",
                json={"success": True, "result_data": ROWS},
                headers=bearer(ROLE_TOKEN["agent"]),
            ).raise_for_status()

            for who, status in (
                (approvals_api.ALICE, 200),
                (approvals_api.DANA, 200),
                (approvals_api.ERIN, 200),
                (approvals_api.FRED, 403),  # a dba too, but he approved nothing
                (approvals_api.SAM, 403),
            ):
                got = client.get(f"/api/requests/{request_id}/result/content", headers=h(who))
                assert got.status_code == status, (who.subject_id, got.text)
    finally:
        harness.close()
