"""Cancelling a request: who may, with what reason, from which status."""

from __future__ import annotations

import pytest

from domain.server.errors import Conflict, Forbidden, Validation
from domain.server.request_lifecycle import RequestStatus
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
