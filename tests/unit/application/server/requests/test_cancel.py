"""Cancelling a request: who may, with what reason, from which status."""

from __future__ import annotations

import json

import pytest

from domain.server.errors import Conflict, Forbidden, Validation
from domain.server.request_lifecycle import RequestStatus
from tests.unit.application.server.requests.test_resume import force
from tests.unit.application.server.test_requests_and_claims import (
    ALICE,
    BOB,
    OPERATOR,
    ServerHarness,
)


def test_cancel_rules(server: ServerHarness) -> None:
    cancel = server.requests.cancel_request.cancel
    request_id = server.create()
    with pytest.raises(Forbidden):
        cancel(BOB, request_id)
    with pytest.raises(Validation, match="reason required"):
        cancel(OPERATOR, request_id)
    assert cancel(OPERATOR, request_id, "wrong db")[1] is RequestStatus.CANCELLED
    with pytest.raises(Conflict, match="invalid transition: cancelled \\+ Cancel"):
        cancel(ALICE, request_id)
    event = server.audit_rows("request.cancelled")[0]
    assert (event["actor_id"], event["reason"]) == ("ops", "wrong db")


@pytest.mark.parametrize(
    "status",
    [
        RequestStatus.PENDING,
        RequestStatus.APPROVED,
        RequestStatus.AUTO_APPROVED,
        RequestStatus.BREAK_GLASS,
        RequestStatus.DISPATCHED,
        RequestStatus.RUNNING,
        RequestStatus.EXECUTION_LOST,
    ],
)
def test_cancel_from_every_cancellable_status_writes_its_event(
    server: ServerHarness, status: RequestStatus
) -> None:
    request_id = server.create(environment="staging")  # pending
    force(server, request_id, status)
    assert server.requests.cancel_request.cancel(ALICE, request_id, "changed my mind") == (
        request_id,
        RequestStatus.CANCELLED,
    )
    with server.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None
    assert (record.status, record.cancelled_by, record.cancel_reason) == (
        RequestStatus.CANCELLED,
        "alice",
        "changed my mind",
    )
    assert record.resolved_at == server.clock.now()
    event = server.audit_rows("request.cancelled")[-1]
    assert (event["request_id"], event["actor_id"]) == (request_id, "alice")
    assert json.loads(event["metadata_json"]) == {"from": status.value}


@pytest.mark.parametrize(
    "status",
    [
        RequestStatus.EXECUTED,
        RequestStatus.FAILED,
        RequestStatus.REJECTED,
        RequestStatus.CANCELLED,
        RequestStatus.EXPIRED,
    ],
)
def test_cancel_from_a_final_status_is_409_naming_it(
    server: ServerHarness, status: RequestStatus
) -> None:
    request_id = server.create(environment="staging")
    force(server, request_id, status)
    with pytest.raises(Conflict, match=f"invalid transition: {status.value} \\+ Cancel"):
        server.requests.cancel_request.cancel(ALICE, request_id)
    assert server.audit_rows("request.cancelled") == []
