"""Who may read a result (docs/server.md §1.8): the requester, `share_with`, the result
policy's `access`, the request's approvers and `result.view:any`; everyone else is refused
as for a request they may not see. And `GET /api/results`, which lists exactly those."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.server.requests.result_list import ListResults
from domain.server.approvals import Approval, ApprovalAction
from domain.server.errors import Forbidden, Validation
from domain.server.execution_policies import ResultPolicy
from domain.server.rbac import Principal, Selector, SelectorKind
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    ALICE,
    APPROVER,
    BOB,
    OPERATOR,
    ServerHarness,
    build_harness,
    default_settings,
    ok,
    user,
)

CAROL = user("carol", "approver")
ERIN = replace(user("erin", "approver"), groups=frozenset({"analysts"}))


def executed(server: ServerHarness, **fields: Any) -> str:
    """A request (by alice) run to a stored, successful result."""
    request_id = server.create(**fields)
    server.poll()
    server.agents.submit_result.submit(AGENT, server.claim(request_id).execution_id, ok())
    return request_id


def record_approval(server: ServerHarness, request_id: str, actor: str, **fields: Any) -> None:
    with server.store.write() as session:
        session.work.insert_approval(
            Approval(
                id=f"ap-{request_id}-{actor}",
                request_id=request_id,
                action=fields.pop("action", ApprovalAction.APPROVE),
                actor_id=actor,
                step_index=0,
                created_at=server.clock.now(),
                matched_selector="role:approver",
                comment=None,
                **fields,
            )
        )


def may_read(server: ServerHarness, principal: Principal, request_id: str) -> bool:
    """Both result routes agree: True when each serves the result, False when each refuses."""
    try:
        content = server.requests.get_result_content.get(principal, request_id)
    except Forbidden:
        content = None
    try:
        streamed = asyncio.run(server.requests.wait_for_result.wait(principal, request_id))
    except Forbidden:
        streamed = None
    assert (content is None) == (streamed is None), "the result routes disagree"
    return content is not None and content.success


def test_the_requester_and_result_view_any_read_the_result(server: ServerHarness) -> None:
    request_id = executed(server)

    assert may_read(server, ALICE, request_id)
    assert may_read(server, ADMIN, request_id)
    assert may_read(server, OPERATOR, request_id)


def test_a_stranger_is_refused_as_for_a_request_they_cannot_see(server: ServerHarness) -> None:
    request_id = executed(server)

    assert not may_read(server, BOB, request_id)
    assert not may_read(server, APPROVER, request_id)
    with pytest.raises(Forbidden) as request_refusal:
        server.requests.get_request.get(BOB, request_id)
    with pytest.raises(Forbidden) as result_refusal:
        server.requests.get_result_content.get(BOB, request_id)
    assert type(result_refusal.value) is type(request_refusal.value)


def test_users_named_by_share_with_read_the_result(server: ServerHarness) -> None:
    by_user = executed(server, share_with=("user:bob",))
    by_role = executed(server, share_with=("role:approver",))
    by_group = executed(server, share_with=("group:analysts",))

    assert may_read(server, BOB, by_user)
    assert not may_read(server, APPROVER, by_user)
    assert may_read(server, APPROVER, by_role)
    assert not may_read(server, BOB, by_role)
    assert may_read(server, ERIN, by_group)
    assert not may_read(server, APPROVER, by_group)


def test_whoever_approved_the_request_reads_its_result(server: ServerHarness) -> None:
    request_id = executed(server)
    other = executed(server)
    record_approval(server, request_id, "dana")
    record_approval(server, request_id, "carol", action=ApprovalAction.REJECT)

    assert may_read(server, APPROVER, request_id)
    assert not may_read(server, APPROVER, other)  # approving one request opens no other
    assert not may_read(server, CAROL, request_id)  # a rejection is no approval


def test_the_result_policys_access_selectors_read_results(tmp_path: Path) -> None:
    policy = ResultPolicy(
        database="app",
        environment="production",
        access=(Selector(SelectorKind.ROLE, "approver"),),
    )
    server = build_harness(tmp_path, default_settings(tmp_path, result_policies=(policy,)))
    try:
        request_id = executed(server)
        assert may_read(server, APPROVER, request_id)
        assert not may_read(server, BOB, request_id)
    finally:
        server.close()


# --- GET /api/results -------------------------------------------------------------------------


def lister(server: ServerHarness) -> ListResults:
    return ListResults(store=server.store, settings=server.settings)


def listed(server: ServerHarness, principal: Principal, **query: Any) -> list[str]:
    return [item.request.id for item in lister(server).list(principal, **query)]


def test_results_listed_are_those_the_caller_may_read_newest_first(
    server: ServerHarness,
) -> None:
    own = executed(server)
    server.clock.advance(1)
    shared = executed(server, share_with=("user:bob",))
    server.clock.advance(1)
    approved = executed(server)
    record_approval(server, approved, "dana")
    server.clock.advance(1)
    by_role = executed(server, share_with=("role:approver",))

    assert listed(server, ALICE) == [by_role, approved, shared, own]
    assert listed(server, ADMIN) == [by_role, approved, shared, own]
    assert listed(server, BOB) == [shared]
    assert listed(server, APPROVER) == [by_role, approved]
    assert listed(server, CAROL) == [by_role]
    for principal in (ALICE, BOB, APPROVER, ADMIN):
        for item in lister(server).list(principal):
            assert may_read(server, principal, item.request.id)


def test_results_listed_by_policy_access_and_scope(tmp_path: Path) -> None:
    policy = ResultPolicy(environment="production", access=(Selector(SelectorKind.USER, "bob"),))
    server = build_harness(tmp_path, default_settings(tmp_path, result_policies=(policy,)))
    try:
        production = executed(server)
        assert listed(server, BOB) == [production]
        assert listed(server, BOB, environment="production") == [production]
        assert listed(server, BOB, environment="staging") == []
        assert listed(server, BOB, database="other") == []
    finally:
        server.close()


def test_results_are_paged(server: ServerHarness) -> None:
    made = []
    for _ in range(3):
        made.append(executed(server))
        server.clock.advance(1)

    assert listed(server, ALICE, limit=2) == [made[2], made[1]]
    assert listed(server, ALICE, limit=2, offset=2) == [made[0]]
    assert listed(server, ALICE, limit=0) == [made[2]]  # at least one
    assert len(lister(server).list(ALICE, limit=1000)) == 3


def test_listing_results_needs_result_view_and_sane_filters(server: ServerHarness) -> None:
    executed(server)
    with pytest.raises(Forbidden):
        lister(server).list(AGENT)
    with pytest.raises(Forbidden):
        lister(server).list(user("nobody"))  # no role grants result.view


def test_a_malformed_filter_is_a_validation_error(server: ServerHarness) -> None:
    for query in ({"database": "a b"}, {"environment": "x\x00"}, {"database": "*"}):
        with pytest.raises(Validation):
            lister(server).list(ALICE, **query)


def test_expired_content_still_lists_with_its_expiry(server: ServerHarness) -> None:
    request_id = executed(server)
    (item,) = lister(server).list(ALICE)
    assert item.request.id == request_id
    assert item.summary.has_stored_content
    assert item.summary.expires_at == item.summary.stored_at + timedelta(days=30)
