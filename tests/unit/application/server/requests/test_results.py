"""A request's result: who may read it, and what the stream answers for a request that
never ran."""

from __future__ import annotations

import asyncio

import pytest

from domain.server.errors import Forbidden, NotFound
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    ALICE,
    APPROVER,
    BOB,
    ServerHarness,
    ok,
)


def test_result_views_follow_rbac(server: ServerHarness) -> None:
    request_id = server.create(share_with=("user:bob",))
    other = server.create()
    server.poll()
    for rid in (request_id, other):
        server.agents.submit_result(AGENT, server.claim(rid).execution_id, ok())
    assert server.requests.get_result_content.get(BOB, request_id).success
    with pytest.raises(Forbidden):
        server.requests.get_result_content.get(BOB, other)
    assert server.requests.get_result_content.get(ADMIN, other).success  # result.view:any
    with pytest.raises(Forbidden):
        server.requests.get_result_content.get(APPROVER, other)


def test_result_stream_of_a_cancelled_request(server: ServerHarness) -> None:
    request_id = server.create()
    server.requests.cancel_request.cancel(ALICE, request_id)
    envelope = asyncio.run(server.requests.wait_for_result.wait(ALICE, request_id))
    assert envelope is not None
    assert (envelope.success, envelope.error_message) == (False, "request cancelled")
    with pytest.raises(NotFound):
        server.requests.get_result_content.get(ALICE, request_id)
