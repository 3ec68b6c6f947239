"""dbmate-compatible migrations on PostgreSQL (docs/protocol.md §12, docs/agent.md §5 item 11).

Differences from the dbward 0.2 agent, all deliberate:

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
from collections.abc import Callable, Sequence
from typing import Any, LiteralString, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from adapters.sql_common.migration_runner import (
    MigrationLock,
    rollback_quietly,
    run_migration,
)
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
    RepairAction,
    RepairDetail,
    repair_hint,
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
    repair run without a timeout, as in dbward 0.2.
    """
    return run_migration(
        operation,
        detail,
        cancel,
        lambda: _PostgresSession(_open(open_connection), timeout_secs),
    )


# --- connection handling --------------------------------------------------------------------


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


def _describe(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


def _verbatim(sql: str) -> Any:
    """The signed migration text, sent as is: no parameters, so no placeholder parsing.

    psycopg types queries as LiteralString to discourage SQL built from data; this text is
    the approved migration itself, executed byte for byte on purpose.
    """
    return cast(Any, sql)


def _end_transaction(conn: Connection) -> None:
    if conn.info.transaction_status is not TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


# --- the advisory lock -----------------------------------------------------------------------


class _AdvisoryLock:
    """`pg_advisory_lock` held for the whole run, polled so a cancel can end the wait."""

    description = f"(pg_advisory_lock {ADVISORY_LOCK_KEY}, '{LOCK_NAME}')"
    poll_secs = LOCK_POLL_SECS

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def try_acquire(self) -> bool:
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
        return row is not None and bool(row[0])

    def release(self) -> None:
        # An aborted transaction would refuse the unlock.
        _end_transaction(self._conn)
        self._conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


# --- the run ---------------------------------------------------------------------------------


class _PostgresSession:
    """The run's one autocommit connection: how PostgreSQL does each step of a run."""

    driver_error = psycopg.Error

    def __init__(self, conn: Connection, timeout_secs: int) -> None:
        self._conn = conn
        self._timeout_secs = timeout_secs

    def describe(self, error: Exception) -> str:
        return _describe(error)

    def lost(self, error: Exception | None = None) -> bool:
        return _lost(self._conn)

    def close(self) -> None:
        self._conn.close()

    def lock(self) -> MigrationLock:
        return _AdvisoryLock(self._conn)

    def rollback(self) -> None:
        _end_transaction(self._conn)

    def ensure_table(self) -> None:
        # Two sessions can race on IF NOT EXISTS (a status run takes no lock): either way
        # the table exists afterwards.
        with contextlib.suppress(pg_errors.UniqueViolation, pg_errors.DuplicateTable):
            self._conn.execute(CREATE_TABLE_SQL)

    def applied_versions(self) -> list[str]:
        return [str(row[0]) for row in self._conn.execute(SELECT_VERSIONS_SQL).fetchall()]

    def repair(self, repair: RepairDetail) -> bool:
        if repair.action is RepairAction.MARK_APPLIED:
            cur = self._conn.execute(INSERT_VERSION_IF_ABSENT_SQL, (repair.version,))
        else:
            cur = self._conn.execute(DELETE_VERSION_SQL, (repair.version,))
        return bool(cur.rowcount)

    def prepare_plan(
        self, direction: Direction, plan: Sequence[Migration]
    ) -> Callable[[Migration], None]:
        # Nothing to refuse up front: PostgreSQL itself refuses what cannot run in a
        # transaction, before anything of that version is applied.
        return lambda migration: self._apply(direction, migration)

    def _apply(self, direction: Direction, migration: Migration) -> None:
        log.info(
            "migrate %s: %s %s%s",
            direction.value,
            direction.gerund,
            migration.version,
            "" if migration.transactional else " (non-transactional)",
        )
        if migration.transactional:
            self._apply_in_transaction(direction, migration)
        else:
            self._apply_without_transaction(direction, migration)

    def _apply_in_transaction(self, direction: Direction, migration: Migration) -> None:
        """The SQL and its version row in one transaction: both commit, or neither."""
        conn, timeout_secs = self._conn, self._timeout_secs
        committing = False
        try:
            conn.execute("BEGIN")
            if timeout_secs > 0:
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)", (f"{timeout_secs}s",)
                )
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
            rollback_quietly(self)
            raise _version_error(conn, exc, direction, migration, timeout_secs, committing) from exc

    def _apply_without_transaction(self, direction: Direction, migration: Migration) -> None:
        """Autocommit: the SQL, then the row. A failed row write is a partial result."""
        conn, timeout_secs = self._conn, self._timeout_secs
        try:
            if timeout_secs > 0:
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, false)", (f"{timeout_secs}s",)
                )
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


def _record_sql(direction: Direction) -> LiteralString:
    return INSERT_VERSION_SQL if direction is Direction.UP else DELETE_VERSION_SQL


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
