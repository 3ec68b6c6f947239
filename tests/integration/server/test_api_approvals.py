"""The approval API in-process: the real FastAPI app over a real store (SQLite; the race
tests on PostgreSQL too). docs/server.md §2.4-§2.6, §8.2."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.http_api.app import create_app
from adapters.http_api.routes_agent import agent_body_limit, build_agent_router
from adapters.http_api.routes_approvals import ApprovalUseCases, build_approval_router
from adapters.http_api.routes_requests import build_request_router
from application.server.approvals.approve import ApproveRequest
from application.server.approvals.reject import RejectRequest
from application.server.settings import StoreSettings
from domain.server.audit_integrity import verify_chain
from domain.server.errors import Unauthenticated
from domain.server.rbac import Principal, Selector, SelectorKind, define_role
from domain.server.request_lifecycle import RequestStatus
from domain.server.workflows import ApprovalStep, Approver, StepMode, Workflow
from tests.integration.agent_process import AGENT_TOKEN
from tests.integration.server.test_api_work import LiveServer
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    ALICE,
    ALWAYS,
    SERVER_VERSION,
    MutableClock,
    ServerHarness,
    build_harness,
    default_settings,
    user,
)

pytestmark = pytest.mark.integration

DBA = define_role("dba", [])
DANA = user("dana", "approver", DBA)
FRED = user("fred", "approver", DBA)
ERIN = user("erin", "approver")
SAM = user("sam", "approver")
OMAR = replace(user("omar", "approver", DBA), groups=frozenset({"ops"}))

#: staging: a role, then a named user. dev: a role or a group, in one step.
TWO_STEPS = Workflow(
    database="app",
    environment="staging",
    pending_ttl_secs=600,
    steps=(
        ApprovalStep(approvers=(Approver(Selector(SelectorKind.ROLE, "dba")),)),
        ApprovalStep(approvers=(Approver(Selector(SelectorKind.USER, "erin")),)),
    ),
)
EITHER = Workflow(
    database="app",
    environment="dev",
    steps=(
        ApprovalStep(
            mode=StepMode.ALL,
            approvers=(
                Approver(Selector(SelectorKind.ROLE, "dba")),
                Approver(Selector(SelectorKind.GROUP, "ops")),
            ),
        ),
    ),
)

PEOPLE = (ADMIN, ALICE, DANA, FRED, ERIN, SAM, OMAR)
TOKENS: dict[str, Principal] = {f"dbw_{p.subject_id:0>32}": p for p in PEOPLE}
TOKENS[AGENT_TOKEN] = AGENT


def h(principal: Principal | None) -> dict[str, str]:
    if principal is None:
        return {}
    token = next(t for t, p in TOKENS.items() if p is principal)
    return {"Authorization": f"Bearer {token}"}


def authenticate(header: str | None) -> Principal:
    principal = TOKENS.get((header or "").removeprefix("Bearer "))
    if principal is None:
        raise Unauthenticated()
    return principal


def approval_use_cases(harness: ServerHarness) -> ApprovalUseCases:
    return ApprovalUseCases(
        approve_request=ApproveRequest(
            store=harness.store,
            settings=harness.settings,
            clock=harness.clock,
            notifier=harness.notifier,
        ),
        reject_request=RejectRequest(
            store=harness.store, clock=harness.clock, notifier=harness.notifier
        ),
    )


def make_app(harness: ServerHarness) -> FastAPI:
    return create_app(
        routers=[
            build_request_router(harness.requests),
            build_approval_router(approval_use_cases(harness)),
            build_agent_router(harness.agents, is_draining=harness.draining.is_set),
        ],
        authenticate=authenticate,
        version=SERVER_VERSION,
        body_limit_for=agent_body_limit(harness.settings),
    )


def settings_for(tmp_path: Path, store_url: str | None = None) -> Any:
    settings = default_settings(tmp_path, workflows=(ALWAYS, TWO_STEPS, EITHER))
    if store_url is not None:
        settings = replace(settings, store=StoreSettings(store_url))
    return settings


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[ServerHarness]:
    built = build_harness(tmp_path, settings_for(tmp_path), MutableClock(datetime.now(UTC)))
    yield built
    built.close()


@pytest.fixture
def client(harness: ServerHarness) -> Iterator[TestClient]:
    with TestClient(make_app(harness)) as test_client:
        yield test_client


def create(client: TestClient, environment: str = "staging") -> str:
    response = client.post(
        "/api/requests",
        json={
            "database": "app",
            "environment": environment,
            "detail": "UPDATE accounts SET plan = 'pro' WHERE id = 7",
        },
        headers=h(ALICE),
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"
    request_id: str = response.json()["id"]
    return request_id


def approve(
    client: TestClient, request_id: str, who: Principal | None, **body: Any
) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/api/requests/{request_id}/approve", json=body or None, headers=h(who)
    )
    return response


def reject(
    client: TestClient, request_id: str, who: Principal | None, **body: Any
) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/api/requests/{request_id}/reject", json=body or None, headers=h(who)
    )
    return response


# --- approve ---------------------------------------------------------------------------------


def test_two_step_workflow_approved_by_the_right_people(
    client: TestClient, harness: ServerHarness
) -> None:
    request_id = create(client)
    # Step 1 (role:dba): refused to the requester, an agent token, everyone else.
    for who, status in ((ALICE, 403), (AGENT, 403), (None, 401), (ERIN, 403), (ADMIN, 403)):
        refused = approve(client, request_id, who)
        assert refused.status_code == status, (who, refused.text)
        assert set(refused.json()) >= {"error", "code"}
    first = approve(client, request_id, DANA, comment="WHERE checked")
    assert first.status_code == 200, first.text
    assert first.json() == {
        "id": request_id,
        "status": "pending",
        "approved_by": "dana",
        "matched_selector": "role:dba",
        "step_completed": True,
        "current_step": 1,
        "total_steps": 2,
    }
    # Step 2 (user:erin): not the same approver again, not another dba.
    for who in (DANA, FRED, ALICE, AGENT):
        assert approve(client, request_id, who).status_code == 403
    final = approve(client, request_id, ERIN)
    assert final.status_code == 200, final.text
    assert (final.json()["status"], final.json()["current_step"]) == ("approved", 2)
    # Dispatch on demand: it waits for resume, no agent sees it.
    assert harness.status(request_id) is RequestStatus.APPROVED
    assert harness.audit_types(request_id) == [
        "request.created",
        "step.approved",
        "request.approved",
    ]
    assert approve(client, request_id, ERIN).status_code == 409
    with harness.store.read() as session:
        assert verify_chain(session.audit.chain()).valid


def test_approval_progress_and_who_may_see_it(client: TestClient) -> None:
    request_id = create(client)
    assert client.get(f"/api/requests/{request_id}", headers=h(ERIN)).status_code == 403
    assert client.get(f"/api/requests/{request_id}", headers=h(AGENT)).status_code == 403
    before = client.get(f"/api/requests/{request_id}", headers=h(DANA))
    assert before.status_code == 200
    assert before.json()["approvers"] == ["role:dba"]
    approve(client, request_id, DANA, comment="fine")
    details = client.get(f"/api/requests/{request_id}", headers=h(ERIN)).json()
    assert details["approvers"] == ["user:erin"]
    progress = details["approval_progress"]
    assert (progress["current_step"], progress["total_steps"], progress["awaiting"]) == (
        1,
        2,
        ["user:erin"],
    )
    first, second = progress["steps"]
    assert first["mode"] == "all" and first["satisfied"] is True
    assert first["approvers_required"] == [{"selector": "role:dba", "min": 1, "current": 1}]
    (row,) = first["approvals"]
    assert (row["user"], row["action"], row["selector"], row["comment"]) == (
        "dana",
        "approve",
        "role:dba",
        "fine",
    )
    assert row["at"].endswith("Z")
    assert second["satisfied"] is False and second["approvals"] == []
    assert client.get(f"/api/requests/{request_id}", headers=h(DANA)).status_code == 200
    assert client.get(f"/api/requests/{request_id}", headers=h(SAM)).status_code == 403
    auto = client.post(
        "/api/requests",
        json={"database": "app", "environment": "production", "detail": "SELECT 1"},
        headers=h(ALICE),
    ).json()["id"]
    assert client.get(f"/api/requests/{auto}", headers=h(ALICE)).json()["approval_progress"] is None


def test_pending_for_me(client: TestClient) -> None:
    first = create(client)
    second = create(client)
    approve(client, second, DANA)

    def mine(who: Principal, query: str = "pending_for_me=true") -> list[str]:
        response = client.get(f"/api/requests?{query}", headers=h(who))
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["requests"]]

    assert mine(DANA) == [first]
    assert mine(FRED) == [first]
    assert mine(ERIN) == [second]
    assert mine(SAM) == []
    assert mine(ALICE) == []
    listed = client.get("/api/requests", headers=h(ERIN)).json()["requests"]
    assert [
        (r["id"], r["current_step"], r["total_steps"], r["next_approvers"]) for r in listed
    ] == [(second, 1, 2, ["user:erin"])]
    assert set(mine(DANA, "")) == {first, second}  # awaiting her, and approved by her
    assert client.get("/api/requests?pending_for_me=maybe", headers=h(DANA)).status_code in (
        400,
        422,
    )
    assert client.get("/api/requests?pending_for_me=true", headers=h(AGENT)).status_code == 403


def test_an_ambiguous_approver_names_a_selector(client: TestClient) -> None:
    request_id = create(client, "dev")
    ambiguous = approve(client, request_id, OMAR)
    assert ambiguous.status_code == 400
    assert ambiguous.json()["code"] == "validation.failed"
    assert "ambiguous" in ambiguous.json()["error"]
    assert "role:dba, group:ops" in ambiguous.json()["error"]
    assert approve(client, request_id, OMAR, selector="user:omar").status_code == 400
    chosen = approve(client, request_id, OMAR, selector="group:ops")
    assert (chosen.status_code, chosen.json()["matched_selector"]) == (200, "group:ops")
    assert chosen.json()["status"] == "pending"  # role:dba still needed
    assert approve(client, request_id, DANA).json()["status"] == "approved"


def test_bad_input_is_a_4xx_json_error(client: TestClient) -> None:
    request_id = create(client)
    for body in ({"comment": 5}, {"selector": ["role:dba"]}, {"comment": "x" * 1025}):
        response = client.post(f"/api/requests/{request_id}/approve", json=body, headers=h(DANA))
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"] == "validation.failed"
    garbled = client.post(
        f"/api/requests/{request_id}/approve",
        content=b"{nope",
        headers={**h(DANA), "Content-Type": "application/json"},
    )
    assert garbled.status_code == 400
    assert approve(client, "no-such-request", DANA).status_code == 404
    assert reject(client, "no-such-request", DANA).status_code == 404
    both = reject(client, request_id, DANA, reason="a", comment="b")
    assert both.status_code == 400
    assert reject(client, request_id, DANA, reason=7).status_code == 400


def test_a_pending_request_expires_with_410_on_approve(
    client: TestClient, harness: ServerHarness
) -> None:
    request_id = create(client)
    harness.clock.advance(601)  # the workflow's pending_ttl_secs, before any sweep
    gone = approve(client, request_id, DANA)
    assert gone.status_code == 410
    assert gone.json()["error"] == "gone: request expired"
    assert harness.status(request_id) is RequestStatus.EXPIRED
    assert harness.audit_types(request_id) == ["request.created", "request.expired"]
    assert approve(client, request_id, DANA).status_code == 409


# --- reject ----------------------------------------------------------------------------------


def test_reject_then_approve_or_cancel_is_409(client: TestClient, harness: ServerHarness) -> None:
    request_id = create(client)
    for who, status in ((ALICE, 403), (AGENT, 403), (None, 401), (ERIN, 403), (SAM, 403)):
        assert reject(client, request_id, who).status_code == status
    rejected = reject(client, request_id, DANA, comment="not on a Friday")
    assert rejected.status_code == 200
    assert rejected.json() == {"id": request_id, "status": "rejected"}
    event = harness.audit_rows("request.rejected")[0]
    assert (event["actor_id"], event["reason"]) == ("dana", "not on a Friday")
    again = approve(client, request_id, DANA)
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    assert "rejected + ApproveStep" in again.json()["error"]
    cancel = client.post(f"/api/requests/{request_id}/cancel", headers=h(ALICE))
    assert cancel.status_code == 409
    assert "rejected + Cancel" in cancel.json()["error"]
    progress = client.get(f"/api/requests/{request_id}", headers=h(DANA)).json()
    assert progress["approval_progress"]["awaiting"] == []
    assert progress["approval_progress"]["steps"][0]["approvals"][0]["action"] == "reject"


# --- races, on SQLite and PostgreSQL ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerHarness]:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_database")
    built = build_harness(
        tmp_path,
        settings_for(tmp_path, url),
        MutableClock(datetime.now(UTC), follow_real_time=True),
    )
    yield built
    built.close()


def _race(live: LiveServer, calls: list[tuple[str, Principal, dict[str, Any]]]) -> list[int]:
    barrier = threading.Barrier(len(calls))
    statuses: dict[int, int] = {}

    def run(index: int, path: str, who: Principal, body: dict[str, Any]) -> None:
        with httpx.Client(timeout=30) as http:
            barrier.wait(10)
            statuses[index] = http.post(f"{live.url}{path}", json=body, headers=h(who)).status_code

    threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [statuses[i] for i in range(len(calls))]


def test_concurrent_half_approvals_complete_the_step(any_store: ServerHarness) -> None:
    """Two approvers of one `all` step at once: each must see the other's approval, or
    the request would stay pending with its step satisfied."""
    harness = any_store
    with LiveServer(make_app(harness)) as live:
        for _ in range(5):
            request_id = harness.create(detail="UPDATE t SET x = 1 WHERE id = 1", environment="dev")
            statuses = _race(
                live,
                [
                    (f"/api/requests/{request_id}/approve", DANA, {}),
                    (f"/api/requests/{request_id}/approve", OMAR, {"selector": "group:ops"}),
                ],
            )
            assert statuses == [200, 200]
            assert harness.status(request_id) is RequestStatus.APPROVED


def test_concurrent_approve_and_reject_one_wins(any_store: ServerHarness) -> None:
    harness = any_store
    with LiveServer(make_app(harness)) as live:
        for _ in range(5):
            request_id = harness.create(detail="UPDATE t SET x = 1 WHERE id = 1", environment="dev")
            # omar's approval leaves role:dba: dana's approval would approve the request,
            # fred's rejection (also role:dba) would reject it; they race.
            path = f"/api/requests/{request_id}"
            assert _race(live, [(f"{path}/approve", OMAR, {"selector": "group:ops"})]) == [200]
            statuses = _race(
                live, [(f"{path}/approve", DANA, {}), (f"{path}/reject", FRED, {"reason": "no"})]
            )
            assert sorted(statuses) == [200, 409]
            won = RequestStatus.APPROVED if statuses[0] == 200 else RequestStatus.REJECTED
            assert harness.status(request_id) is won
            events = harness.audit_types(request_id)
            assert events.count("request.approved") + events.count("request.rejected") == 1
