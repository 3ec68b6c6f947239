"""`prepared` statements on the DBAPI cursor give what SQLAlchemy's own path gives, on
SQLite and PostgreSQL: the same rows and values, the same errors, the same events; and
what the prepared path cannot take goes to SQLAlchemy unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, CursorResult, Engine, event, select
from sqlalchemy.exc import IntegrityError

from adapters.store import audit_log
from adapters.store.prepared import _PLANS, PreparedConnection, PreparedResult
from adapters.store.schema import requests
from adapters.store.sql_store import SqlAuditRepository
from adapters.store.work import SqlWorkRepository
from adapters.store.work import executions as execution_statements
from adapters.store.work import requests as request_statements
from application.server.ports.work.executions import ExecutionRecord, ExecutionStatus
from domain.server.audit import AuditEvent
from domain.server.request_lifecycle import RequestStatus
from tests.contracts.conftest import rolled_back
from tests.contracts.work_store.records import PROD, add_request, at

pytestmark = pytest.mark.integration

_GET = request_statements._GET_REQUEST
_UPDATE = request_statements._UPDATE_STATUS


@pytest.fixture
def conn(sql_store_engine: Engine) -> Iterator[Connection]:
    with rolled_back(sql_store_engine) as connection:
        yield connection


def _sqlalchemy_path(conn: Connection, statement: Any, params: dict[str, Any]) -> Any:
    """The same statement through SQLAlchemy's own `Connection.execute`."""
    return Connection.execute(conn, statement, params)


class TestSameAsSqlAlchemy:
    def test_the_store_connects_with_the_prepared_connection(self, conn: Connection) -> None:
        assert isinstance(conn, PreparedConnection)

    def test_a_row_has_the_same_values_by_position_name_and_attribute(
        self, conn: Connection
    ) -> None:
        add_request(SqlWorkRepository(conn), "r1", emergency=True, reason="because")
        prepared = conn.execute(_GET, {"_id": "r1"})
        assert isinstance(prepared, PreparedResult)
        expected = _sqlalchemy_path(conn, _GET, {"_id": "r1"}).one()
        row = prepared.one()
        assert tuple(row) == tuple(expected)
        assert row._mapping == dict(expected._mapping)
        assert (row.id, row.reason, row.status) == ("r1", "because", "pending")
        # The result processors run: SQLite stores the flag as 1, both give a bool.
        assert row.emergency is True and expected.emergency is True

    def test_no_row_is_none_and_scalars_read_the_first_column(self, conn: Connection) -> None:
        assert conn.execute(_GET, {"_id": "absent"}).first() is None
        add_request(SqlWorkRepository(conn), "r1")
        assert conn.scalar(_GET, {"_id": "r1"}) == "r1"
        assert conn.execute(_GET, {"_id": "r1"}).scalar_one() == "r1"

    def test_an_expanding_in_list_and_the_rowcount(self, conn: Connection) -> None:
        add_request(SqlWorkRepository(conn), "r1", status=RequestStatus.APPROVED)
        params = {
            "status": "dispatched",
            "updated_at": "2030-01-01T00:00:00.000000Z",
            "_id": "r1",
            "_from": ["approved", "pending"],
        }
        assert conn.execute(_UPDATE, params).rowcount == 1
        assert conn.execute(_UPDATE, params).rowcount == 0  # no longer approved
        assert conn.execute(_GET, {"_id": "r1"}).one().status == "dispatched"

    def test_a_unique_violation_is_sqlalchemys_integrity_error(self, conn: Connection) -> None:
        work = SqlWorkRepository(conn)
        add_request(work, "r1")
        row = dict(_sqlalchemy_path(conn, _GET, {"_id": "r1"}).one()._mapping)
        with pytest.raises(IntegrityError), conn.begin_nested():
            conn.execute(request_statements._INSERT_REQUEST, row)
        assert conn.execute(_GET, {"_id": "r1"}).one().id == "r1"  # the session goes on

    def test_a_missing_parameter_is_refused_as_by_sqlalchemy(self, conn: Connection) -> None:
        with pytest.raises(Exception, match="_id"):
            conn.execute(_GET, {})

    def test_cursor_listeners_hear_prepared_statements(
        self, conn: Connection, sql_store_engine: Engine
    ) -> None:
        heard: list[str] = []

        def listen(_conn: Any, _cursor: Any, statement: str, *args: Any) -> None:
            heard.append(statement)

        event.listen(sql_store_engine, "before_cursor_execute", listen)
        try:
            conn.execute(_GET, {"_id": "r1"})
        finally:
            event.remove(sql_store_engine, "before_cursor_execute", listen)
        assert len(heard) == 1 and heard[0].startswith("SELECT requests.id")


class TestWhatTakesSqlAlchemysPath:
    def test_an_unmarked_statement(self, conn: Connection) -> None:
        result = conn.execute(select(requests.c.id).where(requests.c.id == "r1"))
        assert isinstance(result, CursorResult)

    def test_several_parameter_sets(self, conn: Connection) -> None:
        result = conn.execute(_GET, [{"_id": "r1"}])
        assert isinstance(result, CursorResult)

    def test_execution_options(self, conn: Connection) -> None:
        result = conn.execute(_GET, {"_id": "r1"}, execution_options={"yield_per": 1})
        assert isinstance(result, CursorResult)

    def test_a_statement_outside_a_transaction(self, sql_store_engine: Engine) -> None:
        with sql_store_engine.connect() as connection:
            result = connection.execute(_GET, {"_id": "r1"})
            assert isinstance(result, CursorResult)
            connection.rollback()


def test_the_request_paths_statements_all_compile_for_the_prepared_path(
    conn: Connection,
) -> None:
    """A marked statement that falls back to SQLAlchemy is a plan of None: the request
    path (create, dispatch, claim, result, audit) leaves none."""
    work = SqlWorkRepository(conn)
    audit = SqlAuditRepository(conn, lambda event: None)
    add_request(work, "r1", status=RequestStatus.APPROVED)
    work.update_request_status(
        "r1", allowed_from={RequestStatus.APPROVED}, to=RequestStatus.DISPATCHED, now=at(1)
    )
    assert [r.id for r in work.dispatched_requests([PROD], (), 10)] == ["r1"]
    work.subject_agents("agent-1")
    work.pending_dry_run_jobs([PROD], 10)
    work.has_pending_preflight([PROD], at(1))
    work.get_schema_snapshot(PROD)
    execution = ExecutionRecord(
        id="e1",
        request_id="r1",
        agent_id="agent-1",
        status=ExecutionStatus.CLAIMED,
        token="token",
        lease_secs=60,
        lease_expires_at=at(62),
        started_at=at(2),
        created_at=at(2),
    )
    work.insert_execution(execution)
    assert work.get_execution("e1") is not None
    audit.append(
        AuditEvent(
            id="a1",
            event_type="request.dispatched",
            event_category="approval",
            outcome="success",
            actor_id="alice",
            actor_type="user",
            created_at="2030-01-01T00:00:00.000000Z",
        )
    )
    plans = _PLANS[conn.dialect]
    used = {statement_id for statement_id, _ in plans}
    claim_insert = execution_statements._INSERT_EXECUTION_UNLESS_CLAIMED[conn.dialect.name]
    for statement in (
        _GET,
        _UPDATE,
        request_statements._DISPATCHED,
        claim_insert,
        audit_log._INSERT,
    ):
        assert id(statement) in used
    assert all(plan is not None for plan in plans.values())
