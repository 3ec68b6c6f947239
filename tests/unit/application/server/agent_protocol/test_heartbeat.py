"""Heartbeat: the lease extended by the execution's own lease, only for its agent."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.server.errors import Conflict, Forbidden, NotFound, ServerDomainError
from tests.unit.application.server.test_requests_and_claims import (
    AGENT,
    ALICE,
    T0,
    ServerHarness,
    agent,
    ok,
)


def test_heartbeat_extends_the_lease_and_guards_ownership(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    server.poll(agent("other"))
    claim = server.claim(request_id, lease=120)
    server.clock.advance(100)
    assert server.agents.record_heartbeat.record(AGENT, claim.execution_id) is False
    with server.store.read() as session:
        execution = session.work.get_execution(claim.execution_id)
    assert execution is not None
    assert execution.lease_expires_at == T0 + timedelta(seconds=220)
    with pytest.raises(Forbidden):
        server.agents.record_heartbeat.record(agent("other"), claim.execution_id)
    with pytest.raises(NotFound):
        server.agents.record_heartbeat.record(AGENT, "missing")
    server.agents.submit_result.submit(AGENT, claim.execution_id, ok())
    with pytest.raises(Conflict, match="execution is completed, cannot heartbeat"):
        server.agents.record_heartbeat.record(AGENT, claim.execution_id)


def test_non_agents_cannot_heartbeat(server: ServerHarness) -> None:
    with pytest.raises(ServerDomainError):
        server.agents.record_heartbeat.record(ALICE, "x")
