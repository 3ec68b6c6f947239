"""The server store on real engines: SQLite (a file in tmp_path) and PostgreSQL.

Every test runs on both; each gets a fresh database (PostgreSQL: `pg_database`).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    CheckConstraint,
    Engine,
    UniqueConstraint,
    delete,
    insert,
    inspect,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from adapters.store import audit_log
from adapters.store.engine import READ_ONLY, create_store_engine, read_only
from adapters.store.migrations import (
    LATEST_VERSION,
    STEPS,
    SchemaVersionError,
    check_version,
    current_version,
    migrate,
    schema_version,
)
from adapters.store.schema import (
    agents,
    audit_events,
    databases,
    executions,
    format_timestamp,
    metadata,
    parse_timestamp,
    requests,
)
from domain.server.audit import AuditEvent, chain
from domain.server.audit_integrity import ChainVerdict, verify_chain

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dbward.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def engines(store_url: str) -> Iterator[Callable[[], Engine]]:
    """Makes engines on the test's database (one per simulated server process)."""
    made: list[Engine] = []

    def make() -> Engine:
        engine = create_store_engine(store_url)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def fresh(engines: Callable[[], Engine]) -> Engine:
    """An engine on an empty, never migrated database."""
    return engines()


@pytest.fixture
def store(fresh: Engine) -> Engine:
    """An engine on a migrated database."""
    migrate(fresh)
    return fresh


def _now(offset_secs: float = 0) -> str:
    return format_timestamp(datetime.now(UTC) + timedelta(seconds=offset_secs))


def _event(n: int = 0, **fields: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "event_type": "request.created",
        "event_category": "request",
        "outcome": "success",
        "actor_id": f"user-{n}",
        "actor_type": "user",
        "created_at": _now(),
        "reason": f"reason {n}",
    }
    values.update(fields)
    return AuditEvent(**values)


def _append(engine: Engine, *events: AuditEvent) -> list[AuditEvent]:
    with engine.begin() as conn:
        return [audit_log.append_event(conn, event) for event in events]


def _verify(engine: Engine) -> ChainVerdict:
    with read_only(engine).begin() as conn:
        return verify_chain(
            audit_log.chain_in_order(conn),
            purge_boundary=lambda last: audit_log.purge_checkpoint_for(conn, last),
        )


def _add_request(conn: Any, request_id: str, *, requester: str = "alice", **extra: Any) -> None:
    if conn.scalar(select(databases.c.id).where(databases.c.id == "app:production")) is None:
        conn.execute(
            insert(databases).values(
                id="app:production", name="app", environment="production", created_at=_now()
            )
        )
    conn.execute(
        insert(requests).values(
            id=request_id,
            requester=requester,
            operation="execute_select",
            database_id="app:production",
            detail="SELECT 1",
            status="dispatched",
            created_at=_now(),
            updated_at=_now(),
            **extra,
        )
    )


def _add_execution(conn: Any, request_id: str, status: str = "claimed") -> str:
    execution_id = str(uuid.uuid4())
    conn.execute(
        insert(executions).values(
            id=execution_id,
            request_id=request_id,
            agent_id="agent",
            status=status,
            token="{}",
            lease_secs=60,
            lease_expires_at=_now(60),
            started_at=_now(),
            created_at=_now(),
        )
    )
    return execution_id


# --- engine -------------------------------------------------------------------------------


def test_urls_are_normalised_and_unknown_schemes_refused(tmp_path: Path) -> None:
    pg = create_store_engine("postgresql://u@127.0.0.1:1/x")
    assert pg.url.drivername == "postgresql+psycopg"
    assert create_store_engine("postgres://u@127.0.0.1:1/x").url.drivername == (
        "postgresql+psycopg"
    )
    lite = create_store_engine(f"sqlite:///{tmp_path / 'a.db'}")
    assert lite.url.drivername == "sqlite+pysqlite"
    for bad in ("mysql://root@localhost/x", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ValueError):
            create_store_engine(bad)
    pg.dispose()
    lite.dispose()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'dbward.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_write_transactions_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    path = tmp_path / "dbward.db"
    engine = create_store_engine(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        # BEGIN IMMEDIATE, before any statement:
        with engine.begin(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        with read_only(engine).begin() as conn:  # deferred BEGIN: no write lock
            assert conn.get_execution_options()[READ_ONLY] is True
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


# --- migrations ---------------------------------------------------------------------------


def test_migrations_apply_on_a_fresh_database_and_are_idempotent(fresh: Engine) -> None:
    assert current_version(fresh) == 0
    with pytest.raises(SchemaVersionError, match="older"):
        check_version(fresh)

    assert migrate(fresh) == LATEST_VERSION
    assert migrate(fresh) == LATEST_VERSION

    assert current_version(fresh) == LATEST_VERSION
    check_version(fresh)
    with fresh.connect() as conn:
        versions = conn.scalars(select(schema_version.c.version)).all()
    assert sorted(versions) == list(range(1, LATEST_VERSION + 1))
    assert set(inspect(fresh).get_table_names()) == {*metadata.tables, "schema_version"}


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_migrated_schema_matches_schema_module(store: Engine) -> None:
    """Drift guard: the migrations produce exactly the tables, columns and names in schema.py."""
    inspector = inspect(store)
    for table in metadata.tables.values():
        reflected = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        assert reflected == {c.name: c.nullable for c in table.columns}, table.name

        checks = {c["name"] for c in inspector.get_check_constraints(table.name)}
        uniques = {c["name"] for c in inspector.get_unique_constraints(table.name)}
        expected_checks = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        expected_uniques = {c.name for c in table.constraints if isinstance(c, UniqueConstraint)}
        assert checks == expected_checks, table.name
        assert uniques == expected_uniques, table.name
        assert _index_names(store, table.name) == {i.name for i in table.indexes}, table.name


def _index_names(engine: Engine, table: str) -> set[str]:
    """Explicit indexes only (not those backing primary keys or unique constraints)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(
                text(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"
                ),
                {"t": table},
            )
            return {row[0] for row in rows}
        rows = conn.execute(
            text(
                "SELECT i.indexname FROM pg_indexes i WHERE i.tablename = :t AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
            ),
            {"t": table},
        )
        return {row[0] for row in rows}


def test_a_newer_schema_version_is_refused(store: Engine) -> None:
    with store.begin() as conn:
        conn.execute(
            insert(schema_version).values(
                version=LATEST_VERSION + 1, description="from the future", applied_at=_now()
            )
        )
    with pytest.raises(SchemaVersionError, match=rf"version {LATEST_VERSION + 1} is newer"):
        migrate(store)
    with pytest.raises(SchemaVersionError, match="newer"):
        check_version(store)


def _migrate_to(engine: Engine, version: int) -> None:
    """Apply the steps up to `version` only, as an older dbward left the database."""
    for step in STEPS[:version]:
        with engine.begin() as conn:
            schema_version.create(conn, checkfirst=True)
            step.apply(conn)
            conn.execute(
                insert(schema_version).values(
                    version=step.version, description=step.description, applied_at=_now()
                )
            )


def test_version_3_keys_agents_by_agent_id_and_keeps_the_rows_of_version_2(
    fresh: Engine,
) -> None:
    _migrate_to(fresh, 2)
    with fresh.begin() as conn:
        for subject, seen in (("named", '["old-name", "new-name"]'), ("nameless", "[]")):
            conn.execute(
                text(
                    "INSERT INTO agents (id, token_id, databases_json, agent_ids_json, "
                    "last_seen_at, created_at) VALUES (:id, 'tok', :scopes, :seen, :at, :at)"
                ),
                {
                    "id": subject,
                    "scopes": '[{"database": "app", "environment": "production"}]',
                    "seen": seen,
                    "at": "2030-01-01T12:00:00.000000Z",
                },
            )

    assert migrate(fresh) == LATEST_VERSION

    with fresh.connect() as conn:
        rows = conn.execute(
            select(
                agents.c.id, agents.c.agent_id, agents.c.token_id, agents.c.databases_json
            ).order_by(agents.c.id)
        ).all()
        assert [tuple(row) for row in rows] == [
            ("named", "new-name", "tok", '[{"database": "app", "environment": "production"}]'),
            ("nameless", "", "tok", '[{"database": "app", "environment": "production"}]'),
        ]
        conn.execute(
            insert(agents).values(
                id="nameless", agent_id="replica-b", created_at="2030-01-01T12:00:00.000000Z"
            )
        )  # a second agent of the same subject is a row of its own
        with pytest.raises(IntegrityError):
            conn.execute(
                insert(agents).values(
                    id="nameless", agent_id="", created_at="2030-01-01T12:00:00.000000Z"
                )
            )


def test_two_processes_migrating_at_once_both_succeed(engines: Callable[[], Engine]) -> None:
    first, second = engines(), engines()
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def run(engine: Engine) -> None:
        barrier.wait()
        try:
            outcomes.append(migrate(engine))
        except Exception as exc:  # reported below
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == [LATEST_VERSION, LATEST_VERSION]
    with first.connect() as conn:
        assert conn.scalar(select(text("count(*)")).select_from(schema_version)) == LATEST_VERSION


# --- constraints --------------------------------------------------------------------------


def test_only_one_claimed_execution_per_request(store: Engine) -> None:
    with store.begin() as conn:
        _add_request(conn, "r1")
        _add_request(conn, "r2")
        first = _add_execution(conn, "r1")
        _add_execution(conn, "r2")  # another request may have its own

    with pytest.raises(IntegrityError), store.begin() as conn:
        _add_execution(conn, "r1")

    # Once the first is no longer claimed, a new claim is allowed, and finished ones pile up.
    with store.begin() as conn:
        conn.execute(update(executions).where(executions.c.id == first).values(status="failed"))
        _add_execution(conn, "r1")
        _add_execution(conn, "r1", status="completed")
    with store.connect() as conn:
        claimed = conn.scalars(
            select(executions.c.id).where(
                executions.c.request_id == "r1", executions.c.status == "claimed"
            )
        ).all()
    assert len(claimed) == 1


def test_idempotency_key_is_unique_per_requester(store: Engine) -> None:
    with store.begin() as conn:
        _add_request(conn, "r1", requester="alice", idempotency_key="k")
        _add_request(conn, "r2", requester="bob", idempotency_key="k")
        _add_request(conn, "r3", requester="alice")  # no key: never collides
        _add_request(conn, "r4", requester="alice")

    with pytest.raises(IntegrityError), store.begin() as conn:
        _add_request(conn, "r5", requester="alice", idempotency_key="k")


def test_status_values_are_checked(store: Engine) -> None:
    with pytest.raises(IntegrityError), store.begin() as conn:
        _add_request(conn, "r1")
        conn.execute(update(requests).values(status="completed"))


def test_foreign_keys_are_enforced(store: Engine) -> None:
    with pytest.raises(IntegrityError), store.begin() as conn:
        _add_execution(conn, "no-such-request")


def test_timestamps_round_trip_and_sort_as_text() -> None:
    early = datetime(2026, 5, 1, 9, 0, 0, tzinfo=UTC)
    late = early + timedelta(microseconds=1)
    assert format_timestamp(early) == "2026-05-01T09:00:00.000000Z"
    assert format_timestamp(early) < format_timestamp(late)
    assert parse_timestamp(format_timestamp(late)) == late
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2026, 5, 1))


# --- audit log ----------------------------------------------------------------------------


def test_appended_events_form_a_valid_chain(store: Engine) -> None:
    first, second = _append(store, _event(1), _event(2))
    (third,) = _append(store, _event(3, request_id="r9", database_name="app"))

    assert first.prev_hash is None
    assert second.prev_hash == first.event_hash
    assert third.prev_hash == second.event_hash
    verdict = _verify(store)
    assert verdict.valid
    assert verdict.total_events == 3

    with store.connect() as conn:
        newest_first = audit_log.list_events(conn)
        assert [e.id for e in newest_first] == [third.id, second.id, first.id]
        assert newest_first[0] == third  # everything round-trips, hashes included
        assert [e.id for e in audit_log.list_events(conn, request_id="r9")] == [third.id]
        assert [e.id for e in audit_log.list_events(conn, database="app")] == [third.id]
        assert [e.id for e in audit_log.list_events(conn, actor_id="user-2")] == [second.id]
        assert [e.id for e in audit_log.list_events(conn, limit=1, offset=1)] == [second.id]


def test_list_events_filters_by_time(store: Engine) -> None:
    base = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    events = _append(
        store,
        *(_event(n, created_at=format_timestamp(base + timedelta(minutes=n))) for n in range(4)),
    )
    with store.connect() as conn:
        found = audit_log.list_events(
            conn, since=base + timedelta(minutes=1), until=base + timedelta(minutes=2)
        )
    assert [e.id for e in found] == [events[2].id, events[1].id]


def test_append_event_requires_the_callers_write_transaction(store: Engine) -> None:
    with store.connect() as conn, pytest.raises(RuntimeError, match="transaction"):
        audit_log.append_event(conn, _event())
    with read_only(store).begin() as conn, pytest.raises(RuntimeError, match="READ_ONLY"):
        audit_log.append_event(conn, _event())


def test_an_event_rolls_back_with_its_transaction(store: Engine) -> None:
    _append(store, _event(1))
    with pytest.raises(ZeroDivisionError), store.begin() as conn:
        audit_log.append_event(conn, _event(2))
        _ = 1 / 0
    (last,) = _append(store, _event(3))
    verdict = _verify(store)
    assert verdict.valid
    assert verdict.total_events == 2
    assert last.prev_hash is not None


def test_tampering_with_a_row_names_that_event(store: Engine) -> None:
    events = _append(store, *(_event(n) for n in range(5)))
    with store.begin() as conn:
        conn.execute(
            update(audit_events)
            .where(audit_events.c.id == events[2].id)
            .values(reason="nothing to see here")
        )
    verdict = _verify(store)
    assert not verdict.valid
    assert verdict.first_broken_id == events[2].id
    assert verdict.total_events == 5


def test_deleting_a_middle_row_names_the_next_event(store: Engine) -> None:
    events = _append(store, *(_event(n) for n in range(5)))
    with store.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.id == events[2].id))
    verdict = _verify(store)
    assert verdict.first_broken_id == events[3].id
    assert verdict.total_events == 4


def test_deleting_the_first_row_names_the_new_first_event(store: Engine) -> None:
    events = _append(store, *(_event(n) for n in range(3)))
    with store.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.id == events[0].id))
    assert _verify(store).first_broken_id == events[1].id


def test_a_forked_chain_is_refused_by_the_database(store: Engine) -> None:
    (first,) = _append(store, _event(1))
    _append(store, _event(2))
    # A writer that skipped the lock and chained after a stale head:
    stale = chain(_event(3), first.event_hash)
    with pytest.raises(IntegrityError), store.begin() as conn:
        conn.execute(insert(audit_events).values(**dataclasses.asdict(stale), chain_version=2))


def test_verify_streams_across_batches(store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_log, "VERIFY_BATCH_ROWS", 7)
    events = _append(store, *(_event(n) for n in range(30)))
    assert _verify(store) == ChainVerdict(total_events=30, first_broken_id=None)
    with store.begin() as conn:
        conn.execute(
            update(audit_events).where(audit_events.c.id == events[22].id).values(outcome="denied")
        )
    assert _verify(store).first_broken_id == events[22].id


def test_concurrent_appends_keep_one_linear_chain(store: Engine) -> None:
    threads_count, per_thread = 8, 10
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with store.begin() as conn:  # each append in its own transaction
                    audit_log.append_event(conn, _event(n * 100 + i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    verdict = _verify(store)
    assert verdict.valid, verdict
    assert verdict.total_events == threads_count * per_thread
    with store.connect() as conn:
        prev = conn.scalars(select(audit_events.c.prev_hash).order_by(audit_events.c.seq)).all()
    assert len(set(prev)) == len(prev)  # nobody shares a predecessor: no fork


def test_bound_parameters_never_reach_errors_or_logs(
    store: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """`hide_parameters=True`: a secret bound into a failing statement, or a statement
    logged with `echo`, shows up as a placeholder only."""
    secret = "dbw_" + "5e" * 16
    assert store.hide_parameters
    with pytest.raises(IntegrityError) as failed, store.begin() as conn:
        _add_request(conn, "r-secret", requester=secret)
        _add_request(conn, "r-secret", requester=secret)  # duplicate primary key
    assert secret not in str(failed.value)
    assert "hidden due to hide_parameters" in str(failed.value)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    store.echo = True
    try:
        with store.connect() as conn:
            conn.execute(select(literal_column("1")).where(literal_column("'x'") != secret))
    finally:
        store.echo = False
    assert caplog.records and secret not in caplog.text
