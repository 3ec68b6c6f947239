"""dbmate-compatible migrations on PostgreSQL (agent-protocol.md §12, DESIGN.md §3 item 11).

Differences from the reference agent, all deliberate:

* A session-level `pg_advisory_lock` serialises migrate_up/down/repair runs on one
  database. It is taken *before* the applied versions are read, so two runs racing past
  the server's claim check still apply each version once: the second one reads the first
  one's versions once it gets the lock.
* Versions travel as bind parameters, never interpolated (they are validated anyway).
* A transactional version runs in one explicit transaction on a dedicated connection:
  `BEGIN`, optional `SET LOCAL statement_timeout`, the migration SQL verbatim (simple
  query protocol, so it may hold many statements), the version row, `COMMIT`. The DDL and
  the row commit together or not at all.
* A non-transactional version (`transaction:false`, for `CREATE INDEX CONCURRENTLY` and
  friends) runs in autocommit; there is no naive "single statement" check, PostgreSQL
  itself refuses what cannot run that way.

Migrations are never killed: cancellation is honoured only between versions (and while
waiting for the lock, when nothing has run yet).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import Any, LiteralString, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from application.agent.cancellation import CancelToken
from domain.agent.errors import (
    DatabaseAuthError,
    DatabaseError,
    DatabaseUnavailable,
    MigrationError,
    PartialMigrationError,
)
from domain.agent.migrations import (
    Direction,
    Migration,
    MigrationDetail,
    RepairAction,
    RepairDetail,
    done_result,
    parse_migration_detail,
    parse_repair_detail,
    plan_for,
    repair_hint,
    repair_result,
    run_plan,
    status_result,
)
from domain.shared.jobs import ExecutionOutput
from domain.shared.operations import Operation

log = logging.getLogger("dbward.agent.migrations")

#: The name the advisory lock key is derived from; documented so operators can find it.
LOCK_NAME = "dbward.migrations"

#: `pg_advisory_lock` key: the first 8 bytes of sha256("dbward.migrations"), signed.
#: Advisory locks are per database, so one constant key serialises runs per database.
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True
)

#: How often a run waiting for the lock re-tries it and looks at its cancel token.
LOCK_POLL_SECS = 0.25

#: dbmate's own definition, so a schema dump is identical whichever tool created it.
CREATE_TABLE_SQL = "CREATE TABLE IF NOT EXISTS schema_migrations (version varchar PRIMARY KEY)"
SELECT_VERSIONS_SQL = "SELECT version FROM schema_migrations ORDER BY version"
INSERT_VERSION_SQL = "INSERT INTO schema_migrations (version) VALUES (%s)"
INSERT_VERSION_IF_ABSENT_SQL = (
    "INSERT INTO schema_migrations (version) VALUES (%s) ON CONFLICT (version) DO NOTHING"
)
DELETE_VERSION_SQL = "DELETE FROM schema_migrations WHERE version = %s"

_QUERY_CANCELED = "57014"
_ACTIVE_SQL_TRANSACTION = "25001"
_AUTH_SQLSTATES = frozenset({"28P01", "28000"})

Connection = psycopg.Connection[Any]


def run_postgres_migration(
    open_connection: Callable[[], Connection],
    operation: Operation,
    detail: str,
    timeout_secs: int,
    cancel: CancelToken,
) -> ExecutionOutput:
    """Run one migrate_* operation on a fresh autocommit connection, which is closed after.

    `timeout_secs` bounds each statement of a migration (0 = unlimited); status and
    repair run without a timeout, as in the reference.
    """
    # Parse before connecting: a malformed detail never touches the database.
    if operation is Operation.MIGRATE_STATUS:
        return _with_connection(open_connection, _status)
    if operation is Operation.MIGRATE_REPAIR:
        repair = parse_repair_detail(detail)
        return _with_connection(open_connection, lambda conn: _repair(conn, repair, cancel))
    if operation in (Operation.MIGRATE_UP, Operation.MIGRATE_DOWN):
        direction = Direction.UP if operation is Operation.MIGRATE_UP else Direction.DOWN
        parsed = parse_migration_detail(detail, direction)
        return _with_connection(
            open_connection,
            lambda conn: _migrate(conn, parsed, timeout_secs, cancel),
        )
    raise MigrationError(f"not a migration operation: {operation.value}")


# --- connection handling --------------------------------------------------------------------


def _with_connection(
    open_connection: Callable[[], Connection], body: Callable[[Connection], str]
) -> ExecutionOutput:
    conn = _open(open_connection)
    try:
        return ExecutionOutput(result_data=body(conn))
    except psycopg.Error as exc:
        # Errors outside a version (lock, tracking table, reads): nothing was applied.
        raise MigrationError(_describe(exc), connectivity=_lost(conn)) from exc
    finally:
        conn.close()


def _open(open_connection: Callable[[], Connection]) -> Connection:
    try:
        conn = open_connection()
    except DatabaseError:
        raise
    except psycopg.Error as exc:
        if exc.sqlstate in _AUTH_SQLSTATES:
            raise DatabaseAuthError(f"cannot connect for migrations: {exc}") from exc
        raise DatabaseUnavailable(f"cannot connect for migrations: {exc}") from exc
    if not conn.autocommit:
        # Transactions are explicit per version; the lock and CONCURRENTLY need none.
        try:
            conn.autocommit = True
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseUnavailable(f"cannot prepare the migration connection: {exc}") from exc
    return conn


def _lost(conn: Connection) -> bool:
    """True when the session itself is gone (feeds degraded mode)."""
    return conn.closed or conn.broken


def _describe(exc: psycopg.Error) -> str:
    return str(exc).strip() or type(exc).__name__


def _verbatim(sql: str) -> Any:
    """The signed migration text, sent as is: no parameters, so no placeholder parsing.

    psycopg types queries as LiteralString to discourage SQL built from data; this text is
    the approved migration itself, executed byte for byte on purpose.
    """
    return cast(Any, sql)


# --- the advisory lock -----------------------------------------------------------------------


class _AdvisoryLock:
    """`pg_advisory_lock` held for the whole run, polled so a cancel can end the wait."""

    def __init__(self, conn: Connection, cancel: CancelToken) -> None:
        self._conn = conn
        self._cancel = cancel

    def __enter__(self) -> None:
        waited = False
        while True:
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)
            ).fetchone()
            if row is not None and row[0]:
                if waited:
                    log.info("migration lock acquired")
                return
            if not waited:
                log.info(
                    "waiting for the migration lock (pg_advisory_lock %d, '%s'): "
                    "another migration is running on this database",
                    ADVISORY_LOCK_KEY,
                    LOCK_NAME,
                )
                waited = True
            if self._cancel.event.wait(LOCK_POLL_SECS):
                raise MigrationError(
                    "cancelled while waiting for the migration lock; nothing was applied"
                )

    def __exit__(self, *exc_info: object) -> None:
        if _lost(self._conn):
            return  # the server released it with the session
        try:
            if self._conn.info.transaction_status is not TransactionStatus.IDLE:
                self._conn.execute("ROLLBACK")
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        except psycopg.Error as exc:
            # Closing the connection (always done next) releases the lock anyway.
            log.warning("could not release the migration lock explicitly: %s", exc)


# --- the tracking table ----------------------------------------------------------------------


def _ensure_table(conn: Connection) -> None:
    # Two sessions can race on IF NOT EXISTS (a status run takes no lock): either way
    # the table exists afterwards.
    with contextlib.suppress(pg_errors.UniqueViolation, pg_errors.DuplicateTable):
        conn.execute(CREATE_TABLE_SQL)


def _applied_versions(conn: Connection) -> list[str]:
    return [str(row[0]) for row in conn.execute(SELECT_VERSIONS_SQL).fetchall()]


# --- operations -------------------------------------------------------------------------------


def _status(conn: Connection) -> str:
    _ensure_table(conn)
    return status_result(_applied_versions(conn))


def _repair(conn: Connection, repair: RepairDetail, cancel: CancelToken) -> str:
    with _AdvisoryLock(conn, cancel):
        _ensure_table(conn)
        if repair.action is RepairAction.MARK_APPLIED:
            cur = conn.execute(INSERT_VERSION_IF_ABSENT_SQL, (repair.version,))
        else:
            cur = conn.execute(DELETE_VERSION_SQL, (repair.version,))
        log.info(
            "migrate repair %s %s: %s",
            repair.action.value,
            repair.version,
            "done" if cur.rowcount else "nothing to change",
        )
    return repair_result(repair)


def _migrate(
    conn: Connection, detail: MigrationDetail, timeout_secs: int, cancel: CancelToken
) -> str:
    direction = detail.direction
    with _AdvisoryLock(conn, cancel):
        _ensure_table(conn)
        plan = plan_for(detail, set(_applied_versions(conn)))
        if not plan:
            log.info("migrate %s: nothing to do", direction.value)
        done = run_plan(
            direction,
            plan,
            lambda migration: _apply(conn, direction, migration, timeout_secs),
            lambda: cancel.cancelled,
        )
    return done_result(direction, done)


def _apply(conn: Connection, direction: Direction, migration: Migration, timeout_secs: int) -> None:
    log.info(
        "migrate %s: %s %s%s",
        direction.value,
        direction.gerund,
        migration.version,
        "" if migration.transactional else " (non-transactional)",
    )
    if migration.transactional:
        _apply_in_transaction(conn, direction, migration, timeout_secs)
    else:
        _apply_without_transaction(conn, direction, migration, timeout_secs)


def _record_sql(direction: Direction) -> LiteralString:
    return INSERT_VERSION_SQL if direction is Direction.UP else DELETE_VERSION_SQL


def _apply_in_transaction(
    conn: Connection, direction: Direction, migration: Migration, timeout_secs: int
) -> None:
    """The SQL and its version row in one transaction: both commit, or neither."""
    committing = False
    try:
        conn.execute("BEGIN")
        if timeout_secs > 0:
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{timeout_secs}s",))
        if migration.sql is not None and migration.has_sql:
            conn.execute(_verbatim(migration.sql))
        if conn.info.transaction_status is not TransactionStatus.INTRANS:
            log.warning(
                "migration %s ended the agent's transaction itself (COMMIT/ROLLBACK in its "
                "SQL): its version row is written separately, not atomically",
                migration.version,
            )
        conn.execute(_record_sql(direction), (migration.version,))
        committing = True
        conn.execute("COMMIT")
    except psycopg.Error as exc:
        _rollback_quietly(conn)
        raise _version_error(conn, exc, direction, migration, timeout_secs, committing) from exc


def _apply_without_transaction(
    conn: Connection, direction: Direction, migration: Migration, timeout_secs: int
) -> None:
    """Autocommit: the SQL, then the row. A failed row write is a partial result."""
    try:
        if timeout_secs > 0:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{timeout_secs}s",))
        try:
            if migration.sql is not None and migration.has_sql:
                conn.execute(_verbatim(migration.sql))
        except psycopg.Error as exc:
            raise _version_error(conn, exc, direction, migration, timeout_secs, False) from exc
        try:
            conn.execute(_record_sql(direction), (migration.version,))
        except psycopg.Error as exc:
            error = PartialMigrationError(
                f"migration {migration.version} was {direction.participle} but "
                f"{'recording' if direction is Direction.UP else 'removing'} its version "
                f"in schema_migrations failed: {_describe(exc)}. "
                f"{repair_hint(direction, migration.version)}",
                "",
            )
            error.connectivity = _lost(conn)
            raise error from exc
    finally:
        if timeout_secs > 0 and not _lost(conn):
            try:
                conn.execute("RESET statement_timeout")
            except psycopg.Error as exc:
                log.warning("could not reset statement_timeout: %s", exc)


def _rollback_quietly(conn: Connection) -> None:
    if _lost(conn) or conn.info.transaction_status is TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error as exc:
        log.warning("rollback after a failed migration failed: %s", exc)


def _version_error(
    conn: Connection,
    exc: psycopg.Error,
    direction: Direction,
    migration: Migration,
    timeout_secs: int,
    committing: bool,
) -> MigrationError:
    version = migration.version
    reason = _describe(exc)
    if _lost(conn):
        outcome = (
            f"whether it was {direction.participle} is unknown (the connection dropped during "
            "COMMIT); check schema_migrations before retrying"
            if committing
            else "it was rolled back"
            if migration.transactional
            else "the schema state is unknown; check it before retrying"
        )
        return MigrationError(
            f"lost the database connection while {direction.gerund} migration {version}: "
            f"{reason}; {outcome}",
            connectivity=True,
        )
    if exc.sqlstate == _QUERY_CANCELED and "statement timeout" in reason:
        undone = (
            "it was rolled back"
            if migration.transactional
            else "the schema state is unknown; check it before retrying"
        )
        return MigrationError(
            f"migration {version} timed out (statement_timeout {timeout_secs}s); {undone}: {reason}"
        )
    hint = ""
    if exc.sqlstate == _ACTIVE_SQL_TRANSACTION and migration.transactional:
        hint = " (mark the migration 'transaction:false' to run it outside a transaction)"
    return MigrationError(f"migration {version} failed: {reason}{hint}")
