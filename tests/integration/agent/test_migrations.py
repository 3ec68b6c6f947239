"""Migrations against real PostgreSQL and MySQL/MariaDB (docs/protocol.md §12).

Every test gets a fresh empty database. The PostgreSQL runner gets a connection factory
as the PostgreSQL adapter passes one; the MySQL runner opens its own connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pymysql
import pytest

from application.agent.cancellation import CancelReason, CancelToken
from domain.agent.errors import MigrationError, PartialMigrationError
from domain.shared.jobs import ExecutionOutput
from domain.shared.operations import Operation

pytestmark = pytest.mark.integration

Entry = tuple[str, str] | tuple[str, str, bool]


@dataclass
class Engine:
    name: str
    url: str
    runner: Callable[[str, Operation, str, int, CancelToken], ExecutionOutput]

    def run(
        self,
        operation: Operation,
        detail: str = "",
        *,
        timeout: int = 0,
        cancel: CancelToken | None = None,
    ) -> ExecutionOutput:
        return self.runner(self.url, operation, detail, timeout, cancel or CancelToken())

    def up(self, *entries: Entry, max_count: int | None = None, **kwargs: Any) -> list[str]:
        output = self.run(Operation.MIGRATE_UP, detail("up", entries, max_count), **kwargs)
        return list(json.loads(output.result_data)["applied"])

    def down(self, *entries: Entry, max_count: int | None = None, **kwargs: Any) -> list[str]:
        output = self.run(Operation.MIGRATE_DOWN, detail("down", entries, max_count), **kwargs)
        return list(json.loads(output.result_data)["reverted"])

    def status(self) -> list[str]:
        output = self.run(Operation.MIGRATE_STATUS)
        return list(json.loads(output.result_data)["applied_versions"])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.name == "postgres":
            with psycopg.connect(self.url, autocommit=True) as pg_conn:
                return list(pg_conn.execute(sql.encode()).fetchall())
        parts = urlsplit(self.url)
        conn = pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.path.lstrip("/"),
            autocommit=True,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def table_exists(self, table: str) -> bool:
        if self.name == "postgres":
            rows = self.query(f"SELECT to_regclass('{table}') IS NOT NULL")
            return bool(rows[0][0])
        rows = self.query(
            "SELECT COUNT(*) FROM information_schema.TABLES "
            f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        )
        return bool(rows[0][0])

    def recorded(self) -> list[str]:
        return [str(r[0]) for r in self.query("SELECT version FROM schema_migrations ORDER BY 1")]

    def lock_held(self) -> bool:
        """Whether some session holds the migration lock of this database."""
        if self.name == "postgres":
            rows = self.query(PG_LOCKS_HERE + " AND granted")
        else:
            rows = self.query(
                "SELECT IS_USED_LOCK(CONCAT('dbward.migrations.', DATABASE())) IS NOT NULL"
            )
        return bool(rows[0][0])

    def wait_for_lock(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.lock_held():
            assert time.monotonic() < deadline, "the migration lock was never taken"
            time.sleep(0.05)

    def sleep(self, secs: float) -> str:
        return f"SELECT pg_sleep({secs})" if self.name == "postgres" else f"DO SLEEP({secs})"


#: Advisory locks of the current database only (pg_locks is cluster-wide).
PG_LOCKS_HERE = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def detail(direction: str, entries: Sequence[Entry], max_count: int | None = None) -> str:
    migrations = [
        {"version": e[0], "sql": e[1], "transactional": e[2] if len(e) > 2 else True}
        for e in entries
    ]
    body: dict[str, Any] = {
        "format": "v2",
        "direction": direction,
        "versions": [e[0] for e in entries],
        "migrations": migrations,
        "dir_sha256": "00" * 32,
    }
    if max_count is not None:
        body["max_count"] = max_count
    return json.dumps(body)


def _postgres_runner(
    url: str, operation: Operation, detail: str, timeout: int, cancel: CancelToken
) -> ExecutionOutput:
    from adapters.postgres.migrations import run_postgres_migration

    return run_postgres_migration(
        lambda: psycopg.connect(url, autocommit=True), operation, detail, timeout, cancel
    )


def _mysql_runner(
    url: str, operation: Operation, detail: str, timeout: int, cancel: CancelToken
) -> ExecutionOutput:
    # Imported here: adapters.mysql.connection comes with the MySQL adapter.
    from adapters.mysql.migrations import run_mysql_migration

    return run_mysql_migration(url, operation, detail, timeout, cancel)


@pytest.fixture(params=["postgres", "mysql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "postgres":
        return Engine("postgres", request.getfixturevalue("pg_database"), _postgres_runner)
    return Engine("mysql", request.getfixturevalue("mysql_database"), _mysql_runner)


@pytest.fixture
def pg(pg_database: str) -> Engine:
    return Engine("postgres", pg_database, _postgres_runner)


@pytest.fixture
def mysql(mysql_database: str) -> Engine:
    return Engine("mysql", mysql_database, _mysql_runner)


CREATE_A: Entry = ("20260101000001", "CREATE TABLE a (x int)")
FILL_A: Entry = ("20260101000002", "INSERT INTO a VALUES (1); INSERT INTO a VALUES (2)")
CREATE_B: Entry = ("20260101000003", "CREATE TABLE b (y int)")
V1, V2, V3 = CREATE_A[0], FILL_A[0], CREATE_B[0]


# --- up, status, down -----------------------------------------------------------------------


def test_up_applies_in_order_and_records_versions(engine: Engine) -> None:
    assert engine.up(CREATE_A, FILL_A, CREATE_B) == [V1, V2, V3]
    assert engine.recorded() == [V1, V2, V3]
    assert sorted(engine.query("SELECT x FROM a")) == [(1,), (2,)]
    assert engine.table_exists("b")


def test_up_again_applies_nothing(engine: Engine) -> None:
    engine.up(CREATE_A, FILL_A)
    assert engine.up(CREATE_A, FILL_A) == []
    output = engine.run(Operation.MIGRATE_UP, detail("up", [CREATE_A, FILL_A]))
    assert output.result_data == '{"applied":[]}'
    assert len(engine.query("SELECT x FROM a")) == 2


def test_up_respects_max_count(engine: Engine) -> None:
    assert engine.up(CREATE_A, FILL_A, CREATE_B, max_count=1) == [V1]
    assert engine.up(CREATE_A, FILL_A, CREATE_B, max_count=1) == [V2]
    assert engine.up(CREATE_A, FILL_A, CREATE_B, max_count=5) == [V3]


def test_status_lists_applied_versions(engine: Engine) -> None:
    assert engine.status() == []
    assert engine.table_exists("schema_migrations")
    engine.up(CREATE_A, FILL_A)
    output = engine.run(Operation.MIGRATE_STATUS)
    assert output.result_data == json.dumps({"applied_versions": [V1, V2]}, separators=(",", ":"))


def test_down_reverts_newest_first_with_max_count(engine: Engine) -> None:
    engine.up(CREATE_A, FILL_A, CREATE_B)
    downs: list[Entry] = [
        (V1, "DROP TABLE a"),
        (V2, "DELETE FROM a"),
        (V3, "DROP TABLE b"),
    ]
    assert engine.down(*downs, max_count=1) == [V3]  # the CLI sends --count, default 1
    assert not engine.table_exists("b")
    assert engine.down(*downs, max_count=5) == [V2, V1]
    assert engine.recorded() == []
    assert not engine.table_exists("a")
    assert engine.down(*downs, max_count=5) == []


def test_down_without_down_sql_reverts_nothing(engine: Engine) -> None:
    engine.up(CREATE_A, FILL_A)
    with pytest.raises(MigrationError, match=f"migration {V1} has no down SQL") as info:
        engine.down((V1, ""), (V2, "DELETE FROM a"), max_count=2)
    assert not isinstance(info.value, PartialMigrationError)
    assert engine.recorded() == [V1, V2]


def test_comments_in_migration_text(engine: Engine) -> None:
    """dbmate sections often end with comments, or hold nothing but a comment."""
    assert engine.up(
        ("1", "-- create it\nCREATE TABLE a (x int);\n-- trailing comment\n"),
        ("2", "/* nothing to do */\n-- really nothing\n"),
        ("3", "   \n"),
    ) == ["1", "2", "3"]
    assert engine.table_exists("a")


def test_sql_is_sent_verbatim(engine: Engine) -> None:
    """No parameter interpolation of the migration text: `%` and `%s` survive."""
    engine.up(("1", "CREATE TABLE p (s varchar(20)); INSERT INTO p VALUES ('50%'), ('%s')"))
    assert sorted(engine.query("SELECT s FROM p")) == [("%s",), ("50%",)]


# --- failures -------------------------------------------------------------------------------


def test_failing_second_migration_is_partial(engine: Engine) -> None:
    # On MySQL the failing version holds no DDL, so its transaction can really roll back.
    failing = (
        "CREATE TABLE b (y int); INSERT INTO a VALUES (9); SELECT * FROM missing_table"
        if engine.name == "postgres"
        else "INSERT INTO a VALUES (9); SELECT * FROM missing_table"
    )
    with pytest.raises(PartialMigrationError) as info:
        engine.up(CREATE_A, (V2, failing), CREATE_B)
    data = json.loads(info.value.result_data)
    assert data["applied_before_failure"] == [V1]
    assert data["error"] == str(info.value)
    assert f"migration {V2} failed" in data["error"]
    assert "missing_table" in data["error"]
    assert engine.recorded() == [V1]
    assert engine.query("SELECT x FROM a") == []  # the failing version's row was rolled back
    if engine.name == "postgres":
        assert not engine.table_exists("b")  # and its DDL too


def test_failing_first_migration_is_a_plain_error(engine: Engine) -> None:
    with pytest.raises(MigrationError) as info:
        engine.up(("1", "SELECT * FROM missing_table"), CREATE_A)
    assert not isinstance(info.value, PartialMigrationError)
    assert str(info.value).startswith("migration 1 failed: ")
    assert engine.recorded() == []


def test_invalid_detail_never_reaches_the_database(engine: Engine) -> None:
    with pytest.raises(MigrationError, match="invalid migration detail JSON"):
        engine.run(Operation.MIGRATE_UP, "{not json")
    with pytest.raises(MigrationError, match="expected direction 'up', got 'down'"):
        engine.run(Operation.MIGRATE_UP, detail("down", [CREATE_A]))
    assert not engine.table_exists("schema_migrations")


def test_versions_with_quotes_are_rejected_before_any_sql(engine: Engine) -> None:
    evil = "1'); DROP TABLE schema_migrations; --"
    with pytest.raises(MigrationError, match="invalid migration version"):
        engine.up((evil, "SELECT 1"))
    with pytest.raises(MigrationError, match="invalid migration version"):
        engine.run(Operation.MIGRATE_REPAIR, json.dumps({"action": "remove", "version": "a'b"}))
    assert not engine.table_exists("schema_migrations")


def test_versions_are_bound_not_interpolated(engine: Engine) -> None:
    odd = "2026-01-01 %s $1 (x)"
    assert engine.up((odd, "SELECT 1")) == [odd]
    assert engine.recorded() == [odd]
    assert engine.down((odd, "SELECT 2")) == [odd]
    assert engine.recorded() == []


def test_lost_connection_is_a_connectivity_error(engine: Engine) -> None:
    suicide = (
        "SELECT pg_terminate_backend(pg_backend_pid())"
        if engine.name == "postgres"
        else "KILL CONNECTION_ID()"
    )
    with pytest.raises(MigrationError) as info:
        engine.up(("1", suicide))
    assert info.value.connectivity
    assert engine.recorded() == []


# --- locking, cancel, timeouts --------------------------------------------------------------


def test_two_concurrent_runs_apply_each_version_once(engine: Engine) -> None:
    entries: list[Entry] = [("1", engine.sleep(1)), ("2", "CREATE TABLE c (z int)")]
    engine.status()  # the tracking table exists before the race, as in production
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(engine.up(*entries))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(results, key=len) == [[], ["1", "2"]]
    assert engine.recorded() == ["1", "2"]
    assert time.monotonic() - started >= 1.0


def test_concurrent_runs_on_a_fresh_database(engine: Engine) -> None:
    """Even the tracking table's creation happens under the lock."""
    entries: list[Entry] = [("1", engine.sleep(0.5))]
    barrier = threading.Barrier(2)
    results: list[list[str]] = []

    def run() -> None:
        barrier.wait()
        results.append(engine.up(*entries))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results, key=len) == [[], ["1"]]


def test_cancel_waits_for_the_running_version(engine: Engine) -> None:
    cancel = CancelToken()
    timer = threading.Timer(0.3, cancel.cancel, args=(CancelReason.SERVER_CANCELLED,))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(PartialMigrationError) as info:
            engine.up(("1", engine.sleep(1)), ("2", "CREATE TABLE c (z int)"), cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started >= 1.0  # the running version was not killed
    data = json.loads(info.value.result_data)
    assert data["applied_before_failure"] == ["1"]
    assert "cancelled" in data["error"]
    assert engine.recorded() == ["1"]
    assert not engine.table_exists("c")


def test_cancel_before_the_first_version(engine: Engine) -> None:
    cancel = CancelToken()
    cancel.cancel(CancelReason.SERVER_CANCELLED)
    with pytest.raises(MigrationError, match="cancelled before applying any migration") as info:
        engine.up(CREATE_A, cancel=cancel)
    assert not isinstance(info.value, PartialMigrationError)
    assert not engine.table_exists("a")


def test_cancel_while_waiting_for_the_lock(engine: Engine) -> None:
    engine.status()
    first_running = threading.Event()
    first_result: list[list[str]] = []

    def first() -> None:
        first_running.set()
        first_result.append(engine.up(("1", engine.sleep(2))))

    thread = threading.Thread(target=first)
    thread.start()
    first_running.wait()
    engine.wait_for_lock()
    cancel = CancelToken()
    threading.Timer(0.5, cancel.cancel, args=(CancelReason.SERVER_CANCELLED,)).start()
    started = time.monotonic()
    with pytest.raises(MigrationError, match="waiting for the migration lock"):
        engine.up(("1", engine.sleep(2)), ("2", "SELECT 1"), cancel=cancel)
    assert time.monotonic() - started < 1.9
    thread.join(30)
    assert first_result == [["1"]]
    assert engine.recorded() == ["1"]


def test_timeout_stops_a_slow_migration(engine: Engine) -> None:
    started = time.monotonic()
    with pytest.raises(MigrationError, match="migration 1 timed out") as info:
        engine.up(("1", engine.sleep(10)), timeout=1)
    assert time.monotonic() - started < 8
    assert not isinstance(info.value, PartialMigrationError)
    assert engine.recorded() == []
    # The session survived: the next run works (and the lock was released).
    assert engine.up(CREATE_A, timeout=5) == [V1]


def test_timeout_after_a_version_is_partial(engine: Engine) -> None:
    with pytest.raises(PartialMigrationError) as info:
        engine.up(CREATE_A, ("2", engine.sleep(10)), timeout=1)
    assert json.loads(info.value.result_data)["applied_before_failure"] == [V1]
    assert "timed out" in str(info.value)
    assert engine.recorded() == [V1]


# --- repair ---------------------------------------------------------------------------------


def test_repair_marks_applied_and_removes(engine: Engine) -> None:
    mark = json.dumps({"action": "mark_applied", "version": "42"})
    remove = json.dumps({"action": "remove", "version": "42"})
    output = engine.run(Operation.MIGRATE_REPAIR, mark)
    assert output.result_data == '{"repaired":"mark_applied","version":"42"}'
    engine.run(Operation.MIGRATE_REPAIR, mark)  # idempotent
    assert engine.recorded() == ["42"]
    assert engine.up(("42", "SELECT * FROM missing_table")) == []  # treated as applied
    output = engine.run(Operation.MIGRATE_REPAIR, remove)
    assert output.result_data == '{"repaired":"remove","version":"42"}'
    engine.run(Operation.MIGRATE_REPAIR, remove)  # idempotent
    assert engine.recorded() == []


# --- engine specifics -----------------------------------------------------------------------


def test_pg_non_transactional_migration(pg: Engine) -> None:
    concurrently = "CREATE INDEX CONCURRENTLY a_x ON a (x)"
    with pytest.raises(MigrationError, match=r"transaction:false"):
        pg.up(CREATE_A, ("2", concurrently))
    assert pg.recorded() == [V1]
    assert pg.up(CREATE_A, ("2", concurrently, False), timeout=5) == ["2"]
    assert pg.query("SELECT indexname FROM pg_indexes WHERE indexname = 'a_x'") == [("a_x",)]
    assert pg.down(("2", "DROP INDEX CONCURRENTLY a_x", False)) == ["2"]
    assert pg.query("SELECT indexname FROM pg_indexes WHERE indexname = 'a_x'") == []
    # The session-level timeout of the non-transactional path was reset afterwards.
    assert pg.up(("3", "SELECT pg_sleep(1.5)"), timeout=0) == ["3"]


def test_pg_accepts_a_connection_not_in_autocommit(pg_database: str) -> None:
    from adapters.postgres.migrations import run_postgres_migration

    output = run_postgres_migration(
        lambda: psycopg.connect(pg_database),
        Operation.MIGRATE_UP,
        detail("up", [CREATE_A, ("2", "CREATE INDEX CONCURRENTLY a_x ON a (x)", False)]),
        0,
        CancelToken(),
    )
    assert json.loads(output.result_data) == {"applied": [V1, "2"]}


def test_pg_non_transactional_timeout(pg: Engine) -> None:
    with pytest.raises(MigrationError, match="migration 1 timed out"):
        pg.up(("1", "SELECT pg_sleep(10)", False), timeout=1)
    assert pg.recorded() == []


def test_pg_unrecorded_non_transactional_version_is_partial(pg: Engine) -> None:
    with pytest.raises(PartialMigrationError) as info:
        pg.up(CREATE_A, ("2", "DROP TABLE schema_migrations", False))
    assert "migrate repair --emergency --action mark-applied --version 2" in str(info.value)
    assert json.loads(info.value.result_data)["applied_before_failure"] == [V1]


def test_pg_holds_the_advisory_lock_during_the_run(pg: Engine) -> None:
    from adapters.postgres.migrations import ADVISORY_LOCK_KEY

    # A bigint advisory key shows in pg_locks as (classid, objid) = (high, low) 32 bits.
    high, low = (ADVISORY_LOCK_KEY >> 32) & 0xFFFFFFFF, ADVISORY_LOCK_KEY & 0xFFFFFFFF
    seen: list[int] = []

    def probe() -> None:
        time.sleep(0.4)
        rows = pg.query(
            PG_LOCKS_HERE + f" AND granted AND classid = {high} AND objid = {low} AND objsubid = 1"
        )
        seen.append(int(rows[0][0]))

    thread = threading.Thread(target=probe)
    thread.start()
    pg.up(("1", "SELECT pg_sleep(1)"))
    thread.join()
    assert seen == [1]
    assert pg.query(PG_LOCKS_HERE) == [(0,)]


def test_mysql_refuses_non_transactional_before_running_anything(mysql: Engine) -> None:
    with pytest.raises(MigrationError, match="non-transactional migrations are not supported"):
        mysql.up(CREATE_A, ("2", "CREATE INDEX a_x ON a (x)", False))
    assert mysql.recorded() == []
    assert not mysql.table_exists("a")


def test_mysql_ddl_migration_and_error_in_a_later_statement(mysql: Engine) -> None:
    """Multi-statement text: an error in statement 3 surfaces, not only in statement 1."""
    with pytest.raises(MigrationError, match="missing_table") as info:
        mysql.up(
            ("1", "CREATE TABLE a (x int); INSERT INTO a VALUES (1); SELECT * FROM missing_table")
        )
    assert "implicit" in str(info.value)
    assert mysql.recorded() == []
    assert mysql.table_exists("a")  # DDL commits implicitly on MySQL: documented, not atomic


def test_mysql_refuses_versions_wider_than_the_column(mysql: Engine) -> None:
    long_version = "9" * 200
    with pytest.raises(MigrationError, match=r"longer than the schema_migrations\.version column"):
        mysql.up(CREATE_A, (long_version, "SELECT 1"))
    assert mysql.recorded() == []
    assert not mysql.table_exists("a")


def test_mysql_lock_name_fits_the_limit() -> None:
    from adapters.mysql.migrations import lock_name

    assert lock_name("app") == "dbward.migrations.app"
    assert len(lock_name("d" * 64)) <= 64
    assert lock_name("d" * 64) != lock_name("e" * 64)
