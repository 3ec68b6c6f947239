"""Schema sync: validation, the serving agent, the stored snapshot and its dialect."""

from __future__ import annotations

from dataclasses import replace

import pytest

from domain.server.errors import Forbidden, Validation
from domain.shared.jobs import SchemaReport
from domain.shared.scopes import Scope
from tests.unit.application.server.test_requests_and_claims import AGENT, PROD, ServerHarness


def test_schema_sync_validates_and_stores(server: ServerHarness) -> None:
    body = SchemaReport(
        scope=Scope("app", "production"),
        dialect="mysql",
        status="ready",
        snapshot={"tables": []},
    )
    with pytest.raises(Forbidden):
        server.agents.sync_schema.sync(AGENT, body)  # not registered yet
    server.poll()
    for bad, message in (
        (replace(body, dialect="oracle"), "invalid dialect"),
        (replace(body, status="done"), "invalid status"),
        (replace(body, snapshot=None), "snapshot is required"),
    ):
        with pytest.raises(Validation, match=message):
            server.agents.sync_schema.sync(AGENT, bad)
    with pytest.raises(Forbidden):
        server.agents.sync_schema.sync(AGENT, replace(body, scope=Scope("app", "staging")))
    server.agents.sync_schema.sync(AGENT, body)
    with server.store.read() as session:
        snapshot = session.work.get_schema_snapshot(PROD)
    assert snapshot is not None and snapshot.dialect == "mysql"
    assert "schema.snapshot_updated" in server.audit_types()
    # The snapshot's dialect now drives classification: MySQL backticks parse.
    assert server.create(detail="SELECT `a` FROM `t`")
