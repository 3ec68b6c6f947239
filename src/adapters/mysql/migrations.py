"""dbmate-compatible migrations on MySQL/MariaDB (docs/protocol.md §12, docs/agent.md §5 item 11).

Differences from the dbward 0.2 agent, all deliberate:

* `GET_LOCK('dbward.migrations.<database>')` serialises migrate_up/down/repair runs on one
  database. It is taken before the applied versions are read and held on the one
  connection the whole run uses (GET_LOCK belongs to a session).
* The migration text is executed exactly as approved, in one multi-statement query
  (CLIENT.MULTI_STATEMENTS), never split and re-rendered; every result set is consumed so
  an error in any statement surfaces.
* Versions travel as bind parameters.
* A timeout runs `KILL QUERY` (not `KILL`): the session, its lock and its transaction
  survive, so the agent rolls back what it can and releases the lock itself.
* Non-transactional entries and versions too long for the tracking column are refused
  before anything runs, instead of failing half way.

MySQL commits implicitly around DDL (CREATE/ALTER/DROP/TRUNCATE/RENAME), so a migration
holding DDL is not atomic: the agent warns in the log, and a failure or timeout says the
schema state must be checked. Migrations are never killed on cancel: cancellation is
honoured only between versions (and while waiting for the lock).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pymysql
from pymysql.connections import Connection
from pymysql.constants import CLIENT
from pymysql.cursors import Cursor

from adapters.mysql.connection import (
    close_quietly,
    error_code,
    error_text,
    is_connectivity_error,
    kill_query,
    open_mysql_connection,
)
from adapters.mysql.lexer import implicit_commit_keywords, statements
from adapters.sql_common.migration_runner import (
    MigrationLock,
    rollback_quietly,
    run_migration,
)
from application.agent.cancellation import CancelToken
from domain.agent.errors import (
    DatabaseUnavailable,
    MigrationError,
)
from domain.agent.migrations import (
    Direction,
    Migration,
    RepairAction,
    RepairDetail,
)
from domain.shared.jobs import ExecutionOutput
from domain.shared.operations import Operation

log = logging.getLogger("dbward.agent.migrations")

#: Prefix of the GET_LOCK name; the database name follows (locks are server-wide).
LOCK_PREFIX = "dbward.migrations."
#: MySQL 5.7+ refuses user-lock names longer than 64 characters.
MAX_LOCK_NAME = 64
#: Seconds one GET_LOCK call waits before the run looks at its cancel token again.
LOCK_WAIT_SECS = 1

#: How long opening the migration connection may take.
CONNECT_TIMEOUT_SECS = 10.0

#: dbmate's own definition, so a schema dump is identical whichever tool created it.
CREATE_TABLE_SQL = "CREATE TABLE IF NOT EXISTS schema_migrations (version VARCHAR(128) PRIMARY KEY)"
SELECT_VERSIONS_SQL = "SELECT version FROM schema_migrations ORDER BY version"
VERSION_WIDTH_SQL = (
    "SELECT CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'schema_migrations' "
    "AND COLUMN_NAME = 'version'"
)
INSERT_VERSION_SQL = "INSERT INTO schema_migrations (version) VALUES (%s)"
INSERT_VERSION_IF_ABSENT_SQL = "INSERT IGNORE INTO schema_migrations (version) VALUES (%s)"
DELETE_VERSION_SQL = "DELETE FROM schema_migrations WHERE version = %s"

#: "Query was empty": what MySQL may answer for a text holding only comments.
ER_EMPTY_QUERY = 1065

NON_TRANSACTIONAL_UNSUPPORTED = "non-transactional migrations are not supported for MySQL"


def run_mysql_migration(
    url: str,
    operation: Operation,
    detail: str,
    timeout_secs: int,
    cancel: CancelToken,
) -> ExecutionOutput:
    """Run one migrate_* operation on one dedicated connection, closed afterwards.

    `timeout_secs` bounds each version (0 = unlimited); status and repair run without a
    timeout, as in dbward 0.2.
    """
    return run_migration(
        operation, detail, cancel, lambda: _MySQLSession(_open(url), url, timeout_secs)
    )


# --- connection handling --------------------------------------------------------------------


def _open(url: str) -> Connection[Any]:
    """The run's one connection; connect failures arrive already classified."""
    conn = open_mysql_connection(url, timeout_secs=CONNECT_TIMEOUT_SECS)
    if not conn.client_flag & CLIENT.MULTI_STATEMENTS:
        close_quietly(conn)
        # The migration text must run as one query, never split and re-rendered.
        raise MigrationError("the MySQL connection does not allow multi-statement queries")
    try:
        # Explicit START TRANSACTION/COMMIT per version; everything else autocommits.
        conn.autocommit(True)
    except pymysql.Error as exc:
        close_quietly(conn)
        raise DatabaseUnavailable(f"cannot prepare the migration connection: {exc}") from exc
    return conn


def _lost(conn: Connection[Any], exc: Exception) -> bool:
    """True when the session itself is gone (feeds degraded mode)."""
    return not conn.open or is_connectivity_error(exc)


def _describe(exc: Exception) -> str:
    return error_text(exc)


def _scalar(conn: Connection[Any], sql: str, args: tuple[Any, ...] | None = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return None if row is None else row[0]


# --- the lock -------------------------------------------------------------------------------


def lock_name(database: str) -> str:
    """`dbward.migrations.<database>`, hashed when it would pass MySQL's 64-char limit."""
    name = LOCK_PREFIX + database
    if len(name) <= MAX_LOCK_NAME:
        return name
    return LOCK_PREFIX + hashlib.sha256(database.encode()).hexdigest()[:40]


class _GetLock:
    """GET_LOCK held for the whole run, re-tried each second so a cancel can end the wait."""

    # Each attempt waits LOCK_WAIT_SECS on the server, so none is needed between them.
    poll_secs = 0.0

    def __init__(self, conn: Connection[Any], name: str) -> None:
        self._conn = conn
        self._name = name

    @property
    def description(self) -> str:
        return f"GET_LOCK('{self._name}')"

    def try_acquire(self) -> bool:
        got = _scalar(self._conn, "SELECT GET_LOCK(%s, %s)", (self._name, LOCK_WAIT_SECS))
        if got is None:
            raise MigrationError(f"GET_LOCK('{self._name}') failed")
        return bool(got == 1)

    def release(self) -> None:
        _scalar(self._conn, "SELECT RELEASE_LOCK(%s)", (self._name,))


# --- the tracking table ----------------------------------------------------------------------


def _check_width(conn: Connection[Any], versions: list[str]) -> None:
    """Refuse versions the column cannot hold before anything runs.

    dbmate's column is VARCHAR(128) while versions may be 255 long; a too-long row would
    fail (or, outside strict mode, be truncated) after DDL had already committed.
    """
    width = _scalar(conn, VERSION_WIDTH_SQL)
    if width is None:
        return
    too_long = [v for v in versions if len(v) > int(width)]
    if too_long:
        raise MigrationError(
            f"migration version {too_long[0][:40]}... is longer than the "
            f"schema_migrations.version column ({width} characters)"
        )


# --- the run ---------------------------------------------------------------------------------


class _MySQLSession:
    """The run's one connection: how MySQL does each step of a run."""

    driver_error = pymysql.Error

    def __init__(self, conn: Connection[Any], url: str, timeout_secs: int) -> None:
        self._conn = conn
        self._url = url
        self._timeout_secs = timeout_secs

    def describe(self, error: Exception) -> str:
        return _describe(error)

    def lost(self, error: Exception | None = None) -> bool:
        if error is None:
            return not self._conn.open
        return _lost(self._conn, error)

    def close(self) -> None:
        close_quietly(self._conn)

    def lock(self) -> MigrationLock:
        database = _scalar(self._conn, "SELECT DATABASE()")
        if not database:
            raise MigrationError("the database URL selects no database; migrations need one")
        return _GetLock(self._conn, lock_name(str(database)))

    def rollback(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute("ROLLBACK")

    def ensure_table(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute(CREATE_TABLE_SQL)

    def applied_versions(self) -> list[str]:
        with self._conn.cursor() as cur:
            cur.execute(SELECT_VERSIONS_SQL)
            return [str(row[0]) for row in cur.fetchall()]

    def repair(self, repair: RepairDetail) -> bool:
        with self._conn.cursor() as cur:
            if repair.action is RepairAction.MARK_APPLIED:
                _check_width(self._conn, [repair.version])
                changed = cur.execute(INSERT_VERSION_IF_ABSENT_SQL, (repair.version,))
            else:
                changed = cur.execute(DELETE_VERSION_SQL, (repair.version,))
        return bool(changed)

    def prepare_plan(
        self, direction: Direction, plan: Sequence[Migration]
    ) -> Callable[[Migration], None]:
        # Refuse what would fail half way before anything runs.
        for migration in plan:
            if not migration.transactional:
                raise MigrationError(NON_TRANSACTIONAL_UNSUPPORTED)
        if direction is Direction.UP:
            _check_width(self._conn, [m.version for m in plan])
        connection_id = int(_scalar(self._conn, "SELECT CONNECTION_ID()"))
        return lambda migration: self._apply(connection_id, direction, migration)

    def _apply(self, connection_id: int, direction: Direction, migration: Migration) -> None:
        """START TRANSACTION; the exact SQL; the version row; COMMIT."""
        conn, timeout_secs = self._conn, self._timeout_secs
        version = migration.version
        sql = migration.sql if migration.has_sql else None
        ddl = sorted(set(implicit_commit_keywords(sql))) if sql else []
        log.info("migrate %s: %s %s", direction.value, direction.gerund, version)
        if ddl:
            log.warning(
                "migration %s contains %s statements: MySQL commits implicitly around them, "
                "so this migration is not atomic (a failure can leave it partly applied)",
                version,
                "/".join(ddl),
            )
        record = INSERT_VERSION_SQL if direction is Direction.UP else DELETE_VERSION_SQL
        deadline = (
            _Deadline(self._url, connection_id, timeout_secs, version) if timeout_secs > 0 else None
        )
        committing = False
        try:
            with conn.cursor() as cur:
                cur.execute("START TRANSACTION")
                if deadline is not None:
                    deadline.start()
                if sql is not None:
                    _execute_verbatim(cur, sql)
                cur.execute(record, (version,))
                if deadline is not None and deadline.disarm():
                    raise _timed_out(version, timeout_secs)
                committing = True
                cur.execute("COMMIT")
        except pymysql.Error as exc:
            fired = deadline.disarm() if deadline is not None else False
            rollback_quietly(self)
            if fired:
                raise _timed_out(version, timeout_secs) from exc
            raise _version_error(conn, exc, direction, version, bool(ddl), committing) from exc
        except MigrationError:
            rollback_quietly(self)
            raise


class _Deadline:
    """A client-side timer that stops the running statement with KILL QUERY.

    `disarm()` waits for a kill in progress, so once it returns no kill can land later on a
    statement it was not meant for. It reports whether the deadline fired.
    """

    def __init__(self, url: str, connection_id: int, timeout_secs: int, version: str) -> None:
        self._url = url
        self._connection_id = connection_id
        self._version = version
        self._lock = threading.Lock()
        self._armed = False
        self._fired = False
        self._timer = threading.Timer(timeout_secs, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        with self._lock:
            self._armed = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self._armed = False
            self._fired = True
            log.warning(
                "migration %s passed its timeout: KILL QUERY %d",
                self._version,
                self._connection_id,
            )
            try:
                kill_query(self._url, self._connection_id)
            except Exception as exc:
                log.warning("KILL QUERY %d failed: %s", self._connection_id, exc)

    def disarm(self) -> bool:
        self._timer.cancel()
        with self._lock:
            self._armed = False
            return self._fired


def _execute_verbatim(cur: Cursor, sql: str) -> None:
    """The approved text as one multi-statement query, every result set consumed."""
    try:
        cur.execute(sql)  # no args: the text is sent verbatim, `%` untouched
        while cur.nextset():  # an error in statement k is raised here
            pass
    except pymysql.Error as exc:
        if error_code(exc) == ER_EMPTY_QUERY and not statements(sql):
            return  # only comments: some servers call that an empty query
        raise


def _timed_out(version: str, timeout_secs: int) -> MigrationError:
    return MigrationError(
        f"migration {version} timed out after {timeout_secs}s; the schema state is unknown, "
        "check it before retrying"
    )


def _version_error(
    conn: Connection[Any],
    exc: pymysql.Error,
    direction: Direction,
    version: str,
    has_ddl: bool,
    committing: bool,
) -> MigrationError:
    reason = _describe(exc)
    if _lost(conn, exc):
        outcome = (
            f"whether it was {direction.participle} is unknown (the connection dropped during "
            "COMMIT)"
            if committing
            else "its statements up to an implicit commit (DDL) may have been applied"
            if has_ddl
            else "it was rolled back"
        )
        return MigrationError(
            f"lost the database connection while {direction.gerund} migration {version}: "
            f"{reason}; {outcome}; check schema_migrations before retrying",
            connectivity=True,
        )
    suffix = (
        "; statements before the failure that commit implicitly (DDL) stay applied, "
        "check the schema before retrying"
        if has_ddl
        else ""
    )
    return MigrationError(f"migration {version} failed: {reason}{suffix}")
