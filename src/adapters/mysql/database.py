"""MySQL and MariaDB behind `DatabasePort`, with PyMySQL (docs/protocol.md §5.3-§5.6, §9.3).

What this adds over the dbward 0.2 agent (§16 items 7, 8, 9, 12, 17):

* Read-only SELECTs on both engines: the session *and* the transaction are READ ONLY, so a
  DDL statement (which would implicitly commit a read-only transaction and then run) is
  refused by the server as well. Multi-statement texts are off for the plan (the server
  refuses a text holding several statements), so each signed statement runs alone; after
  each one the server status flags must still say "in our read-only transaction", and
  before the next one the session must still be read-only. A plan that ends or replaces
  the transaction (COMMIT, ROLLBACK, START TRANSACTION READ WRITE) or lifts the session's
  read-only mode is stopped there, rolled back and its connection closed. A statement that
  names the read-only variables (`SET STATEMENT tx_read_only=0 FOR <DDL>` would write in
  one statement) is refused before it is sent.
* One timeout model for SELECT and DML: the server's own limit where the engine has one
  (MariaDB `max_statement_time`, every statement; MySQL `max_execution_time`, SELECT only)
  plus a client deadline at timeout + 1 s that sends `KILL QUERY` from a second connection,
  so DML on MySQL is bounded too. Timeout 0 means no limit, as the server's policy says.
* Signed statements run exactly as signed, one by one in one transaction (never re-rendered).
* Rows stream from an unbuffered cursor into the exact row and byte limits, with column
  metadata; a truncated result is stopped with KILL QUERY rather than drained.
* Errors are classified by error number; a connection that saw an error, a cancel or a
  timeout is closed, and a clean one is reset (COM_RESET_CONNECTION) before reuse.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import orjson
import pymysql
from pymysql.connections import Connection
from pymysql.cursors import SSCursor

from adapters.mysql import schema as mysql_schema
from adapters.mysql.connection import (
    ER_QUERY_INTERRUPTED,
    SERVER_STATUS_IN_TRANS,
    SERVER_STATUS_IN_TRANS_READONLY,
    SERVER_TIMEOUT_ERRORS,
    Flavour,
    MySqlParams,
    abandon,
    classify_connect_error,
    close_quietly,
    connect,
    detect_flavour,
    error_code,
    error_text,
    follow_server_status,
    is_connectivity_error,
    kill_query_with,
    only_database_errors,
    parse_mysql_url,
    reset_session,
    result_fields,
    result_warning_count,
    server_status,
    set_io_timeout,
    set_multi_statements,
    shutdown_socket,
)
from adapters.mysql.lexer import has_multiple_statements
from adapters.mysql.values import (
    Encoder,
    encode_row,
    encoder_for,
    type_name,
)
from adapters.sql_common.envelope import (
    dml_output,
    encode_columns,
    reserved_bytes,
    select_output,
)
from adapters.sql_common.errors import TransactionControlRefused
from adapters.sql_common.pool import ConnectionPool
from application.agent.cancellation import CancelToken
from application.agent.threads import ScheduledCall, call_later
from domain.agent.errors import DatabaseError, QueryCancelled, QueryTimeout
from domain.agent.result_limits import ResultLimits, RowCollector
from domain.shared.explain import ExplainRefused, check_explainable
from domain.shared.jobs import ExecutionOutput
from domain.shared.operations import Operation

log = logging.getLogger("dbward.agent.mysql")

DEFAULT_CONNECT_TIMEOUT_SECS = 10.0
#: The client deadline fires this long after the server's own limit should have.
CLIENT_DEADLINE_MARGIN_SECS = 1.0
#: After a KILL QUERY, how long the statement may take to notice before its socket is shut.
HARD_STOP_GRACE_SECS = 5.0
#: Bound on each socket read while collecting the schema (a few catalog queries).
SCHEMA_IO_TIMEOUT_SECS = 300.0

_TIMEOUT = "timeout"
_CANCEL = "cancel"


#: ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: EXPLAIN of DML inside a read-only transaction.
_READ_ONLY_TRANSACTION = 1792
#: ER_PARSE_ERROR: also how a server with multi-statements off refuses a text holding several.
_PARSE_ERROR = 1064

ONE_STATEMENT_PER_SIGNED_STATEMENT = (
    "query failed: one SQL statement per signed statement (the server refused a text"
    " holding several)"
)
READ_ONLY_OVERRIDE_REFUSED = (
    "query failed: the read-only mode cannot be changed in a read-only query"
    " (the statement names tx_read_only / transaction_read_only)"
)
#: The variables behind a session's or a statement's read-only mode, however they are
#: spelled (`@@tx_read_only`, `` `tx_read_only` ``, inside an executable comment, any case).
#: Matched in the raw text, quotes and comments included: a false positive costs an explicit
#: refusal, a false negative could cost a write.
_READ_ONLY_VARIABLE = re.compile(r"(?:tx|transaction)_read_only", re.IGNORECASE)


class _ReadOnlyRefusedError(Exception):
    """The server refused to EXPLAIN this statement inside a read-only transaction."""


class MySqlDatabase:
    """One `mysql://` database (MySQL 8 or MariaDB 10.x), safe to call from many threads."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._params: MySqlParams = parse_mysql_url(url)
        self._connect_timeout = DEFAULT_CONNECT_TIMEOUT_SECS
        self._flavour: Flavour | None = None
        self._pool: ConnectionPool[Connection[Any]] = ConnectionPool(
            self._open_pooled, close_quietly
        )

    @property
    def dialect(self) -> str:
        return "mysql"

    @property
    def flavour(self) -> Flavour | None:
        """MySQL or MariaDB, known after the first connection."""
        return self._flavour

    # --- connecting ------------------------------------------------------------------

    @only_database_errors
    def connect(self, timeout_secs: float) -> None:
        """Prove the database answers; also the reconnect after an outage.

        Idle connections from before the outage are dropped first. The flavour is detected
        again, since the server behind the URL may have been replaced.
        """
        self._pool.clear()
        self._connect_timeout = max(float(timeout_secs), 0.5)
        conn = connect(self._params, timeout_secs=self._connect_timeout)
        try:
            set_io_timeout(conn, self._connect_timeout)
            self._flavour = detect_flavour(conn)
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchall()
            set_io_timeout(conn, None)
        except (pymysql.err.Error, OSError) as exc:
            close_quietly(conn)
            raise classify_connect_error(exc, self._params) from exc
        self._pool.release(conn, reusable=True)

    def _open_pooled(self) -> Connection[Any]:
        conn = connect(self._params, timeout_secs=self._connect_timeout)
        if self._flavour is None:
            try:
                set_io_timeout(conn, self._connect_timeout)
                self._flavour = detect_flavour(conn)
                set_io_timeout(conn, None)
            except (pymysql.err.Error, OSError) as exc:
                close_quietly(conn)
                raise classify_connect_error(exc, self._params) from exc
        return conn

    # --- SELECT ----------------------------------------------------------------------

    @only_database_errors
    def execute_select(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        """Run the statements in one read-only transaction; rows of every result set.

        Each signed statement runs alone (multi-statement texts are off); one that leaves
        the read-only transaction or session stops the plan before the next one runs.
        """
        if cancel.cancelled:
            raise QueryCancelled("query cancelled before it started")
        plan = list(_non_blank(statements))
        for statement in plan:
            if _READ_ONLY_VARIABLE.search(statement):
                raise DatabaseError(READ_ONLY_OVERRIDE_REFUSED)
        flavour = self._known_flavour()
        setup = ["SET NAMES utf8mb4"]
        args: list[int | float] = []
        if timeout_secs > 0:
            if flavour is Flavour.MARIADB:
                setup.append("SET SESSION max_statement_time = %s")
                args.append(timeout_secs)
            else:
                setup.append("SET SESSION max_execution_time = %s")
                args.append(timeout_secs * 1000)
        setup += ["SET SESSION TRANSACTION READ ONLY", "START TRANSACTION READ ONLY"]
        builder = _ResultBuilder(limits)
        with self._run(setup, args, timeout_secs, cancel) as run:
            run.single_statements()
            read_only_flag = run.require_read_only_transaction(None)
            for index, statement in enumerate(plan):
                run.check()
                if index:
                    run.require_read_only_session(flavour)
                cursor = run.stream(statement)
                if not builder.consume(cursor):
                    run.stop_stream()
                    return builder.output()
                run.end_stream(warned=builder.take_warned())
                run.require_read_only_transaction(read_only_flag)
            run.finish()
            run.release_clean()
        return builder.output()

    # --- DML -------------------------------------------------------------------------

    @only_database_errors
    def execute_dml(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        """Run the statements atomically: all of them commit, or none. Rows of every
        statement that returns some come back under `limits`, as a SELECT plan's do.

        Atomic for transactional tables; DDL or a COMMIT inside the SQL commits implicitly
        on MySQL, which no client can prevent.
        """
        if cancel.cancelled:
            raise QueryCancelled("query cancelled before it started")
        setup = ["SET NAMES utf8mb4"]
        args: list[int | float] = []
        if timeout_secs > 0 and self._known_flavour() is Flavour.MARIADB:
            setup.append("SET SESSION max_statement_time = %s")
            args.append(timeout_secs)
        setup.append("START TRANSACTION")
        builder = _ResultBuilder(limits, dml=True)
        with self._run(setup, args, timeout_secs, cancel) as run:
            total = 0
            for statement in _non_blank(statements):
                run.check()
                total += run.execute_counting(statement, builder)
            # Disarm before COMMIT: a KILL landing on the COMMIT would leave its outcome unknown.
            run.finish()
            run.commit()
            run.release_clean()
        return builder.dml_output(total)

    # --- EXPLAIN ---------------------------------------------------------------------

    @only_database_errors
    def explain(self, sql: str, timeout_secs: int) -> Any:
        """`EXPLAIN FORMAT=JSON` of one statement, in a read-only transaction with a timeout.

        A dedicated connection without multi-statement support: even if the check below
        missed a second statement, the server would refuse it as a syntax error. MySQL and
        MariaDB refuse to EXPLAIN an INSERT/UPDATE/DELETE inside a read-only transaction
        (error 1792), yet those plans matter most to approvers; such a statement is
        explained again in a transaction that is always rolled back. EXPLAIN without
        ANALYZE never executes the statement.
        """
        try:
            statement = check_explainable(sql)
        except ExplainRefused as exc:
            raise DatabaseError(f"explain refused: {exc}") from None
        statement = statement.rstrip("; \t\r\n")
        if has_multiple_statements(statement):
            raise DatabaseError("explain refused: EXPLAIN takes exactly one statement")
        try:
            return self._explain_once(statement, timeout_secs, read_only=True)
        except _ReadOnlyRefusedError:
            return self._explain_once(statement, timeout_secs, read_only=False)

    def _explain_once(self, statement: str, timeout_secs: int, *, read_only: bool) -> Any:
        conn = connect(self._params, timeout_secs=self._connect_timeout, multi_statements=False)
        flavour = self._flavour
        interrupter: _Interrupter | None = None
        try:
            with conn.cursor() as cursor:
                if flavour is None:
                    flavour = self._flavour = detect_flavour(conn)
                cursor.execute("SELECT CONNECTION_ID()")
                row = cursor.fetchone()
                connection_id = int(row[0]) if row else 0
                if timeout_secs > 0:
                    if flavour is Flavour.MARIADB:
                        cursor.execute("SET SESSION max_statement_time = %s", (timeout_secs,))
                    else:
                        cursor.execute(
                            "SET SESSION max_execution_time = %s", (timeout_secs * 1000,)
                        )
                if read_only:
                    cursor.execute("SET SESSION TRANSACTION READ ONLY")
                    cursor.execute("START TRANSACTION READ ONLY")
                else:
                    cursor.execute("START TRANSACTION")
                interrupter = self._interrupter(conn, connection_id)
                interrupter.arm(timeout_secs, None)
                try:
                    cursor.execute("EXPLAIN FORMAT=JSON " + statement)
                except pymysql.err.Error as exc:
                    if read_only and error_code(exc) == _READ_ONLY_TRANSACTION:
                        raise _ReadOnlyRefusedError from exc
                    raise
                rows = cursor.fetchall()
                cursor.execute("ROLLBACK")
            reason = interrupter.finish()
            if reason is not None:
                raise _interrupted(reason, timeout_secs)
        except (pymysql.err.Error, OSError) as exc:
            reason = interrupter.finish() if interrupter is not None else None
            raise self._translate(exc, reason, timeout_secs, None) from exc
        finally:
            if interrupter is not None:
                interrupter.finish()
            close_quietly(conn)
        if not rows or not rows[0]:
            raise DatabaseError("query failed: EXPLAIN returned no plan")
        plan = rows[0][0]
        try:
            return orjson.loads(plan)
        except orjson.JSONDecodeError as exc:
            raise DatabaseError(f"query failed: invalid EXPLAIN JSON: {exc}") from None

    # --- schema, migrations, close ---------------------------------------------------

    @only_database_errors
    def collect_schema(self) -> dict[str, Any]:
        conn = self._start(["SET NAMES utf8mb4"], [])[0]
        try:
            set_io_timeout(conn, SCHEMA_IO_TIMEOUT_SECS)
            snapshot = mysql_schema.collect_schema(conn, self._known_flavour())
            set_io_timeout(conn, None)
        except (pymysql.err.Error, OSError) as exc:
            self._pool.discard(conn)
            raise self._translate(exc, None, 0, None, what="schema query failed") from exc
        except BaseException:
            self._pool.discard(conn)
            raise
        self._pool.release(conn, reusable=True)
        return snapshot

    @only_database_errors
    def run_migration(
        self, operation: Operation, detail: str, timeout_secs: int, cancel: CancelToken
    ) -> ExecutionOutput:
        """Migrations live in their own module; imported on use, so SELECT/DML never need it."""
        from adapters.mysql.migrations import run_mysql_migration  # noqa: PLC0415

        return run_mysql_migration(self._url, operation, detail, timeout_secs, cancel)

    def close(self) -> None:
        self._pool.close()

    # --- internals -------------------------------------------------------------------

    def _known_flavour(self) -> Flavour:
        if self._flavour is None:
            # Opening a connection detects it; hand the connection to the pool afterwards.
            conn = self._pool.acquire()
            self._pool.release(conn, reusable=True)
        return self._flavour or Flavour.MYSQL

    def _start(self, setup: list[str], args: list[int | float]) -> tuple[Connection[Any], int]:
        """A connection with the setup done, and its id for KILL QUERY.

        The setup and `CONNECTION_ID()` go in one round trip. An idle pooled connection may
        have died (server restart, wait_timeout): then the setup fails with a connectivity
        error, and it is retried once on a brand-new connection before anyone is told.
        """
        sql = "; ".join([*setup, "SELECT CONNECTION_ID()"])
        params = tuple(args) if args else None
        conn = self._pool.acquire()
        try:
            return conn, _run_setup(conn, sql, params)
        except (pymysql.err.Error, OSError) as exc:
            self._pool.discard(conn)
            if not is_connectivity_error(exc):
                raise self._translate(exc, None, 0, None) from exc
        self._pool.clear()
        conn = self._open_pooled()
        try:
            return conn, _run_setup(conn, sql, params)
        except (pymysql.err.Error, OSError) as exc:
            self._pool.discard(conn)
            raise self._translate(exc, None, 0, None) from exc

    def _interrupter(self, conn: Connection[Any], connection_id: int) -> _Interrupter:
        params = self._params

        def kill() -> None:
            kill_query_with(params, connection_id)

        return _Interrupter(kill=kill, hard_stop=lambda: shutdown_socket(conn))

    @contextmanager
    def _run(
        self,
        setup: list[str],
        args: list[int | float],
        timeout_secs: int,
        cancel: CancelToken,
    ) -> Iterator[_Run]:
        """One execution: set up, armed against timeout and cancel, then released or closed."""
        conn, connection_id = self._start(setup, args)
        interrupter = self._interrupter(conn, connection_id)
        run = _Run(conn, connection_id, interrupter, cancel, timeout_secs)
        interrupter.arm(timeout_secs, cancel)
        try:
            yield run
        except BaseException as exc:
            reason = interrupter.finish()
            translated = (
                self._translate(exc, reason, timeout_secs, cancel)
                if isinstance(exc, pymysql.err.Error | OSError | DatabaseError)
                else None
            )
            run.discard(rollback=translated is not None and _is_statement_error(translated))
            if translated is None:
                raise
            if translated is exc:
                raise
            raise translated from exc
        else:
            interrupter.finish()
        finally:
            if run.clean:
                self._pool.release(conn, reusable=True)
            else:
                run.discard(rollback=False)

    def _translate(
        self,
        exc: BaseException,
        reason: str | None,
        timeout_secs: int,
        cancel: CancelToken | None,
        *,
        what: str = "query failed",
    ) -> DatabaseError:
        """The agent's error for a driver failure; our own timeout or cancel explains it first."""
        if reason is not None:
            return _interrupted(reason, timeout_secs)
        if cancel is not None and cancel.cancelled:
            return QueryCancelled("query cancelled")
        if isinstance(exc, DatabaseError):
            if exc.connectivity:
                self._pool.clear()
            return exc
        if error_code(exc) in SERVER_TIMEOUT_ERRORS:
            return QueryTimeout(f"query timed out after {timeout_secs}s: {error_text(exc)}")
        if is_connectivity_error(exc):
            # The server or the network went away: idle connections are suspect too.
            self._pool.clear()
            return DatabaseError(f"connection lost: {error_text(exc)}", connectivity=True)
        return DatabaseError(f"{what}: {error_text(exc)}")


class _Run:
    """The connection of one execution and what may still be done with it."""

    def __init__(
        self,
        conn: Connection[Any],
        connection_id: int,
        interrupter: _Interrupter,
        cancel: CancelToken,
        timeout_secs: int,
    ) -> None:
        self.conn = conn
        self.connection_id = connection_id
        self._interrupter = interrupter
        self._cancel = cancel
        self._timeout_secs = timeout_secs
        self._cursor: SSCursor | None = None
        self.clean = False
        self._closed = False
        self._single_statements = False

    def check(self) -> None:
        """Before each statement: a cancel or deadline that already fired stops here.

        A KILL QUERY that lands between statements would be lost (nothing to kill), so the
        next statement must not start.
        """
        reason = self._interrupter.reason
        if reason is not None:
            raise _interrupted(reason, self._timeout_secs)
        if self._cancel.cancelled:
            raise QueryCancelled("query cancelled")

    def finish(self) -> None:
        """Disarm the deadline and cancel; raise if either fired meanwhile.

        `SELECT SLEEP(n)` or `DO SLEEP(n)` hit by KILL QUERY may return normally: the
        interrupter, not the server's answer, says whether the statement was stopped.
        """
        reason = self._interrupter.finish()
        if reason is not None:
            raise _interrupted(reason, self._timeout_secs)

    def single_statements(self) -> None:
        """From here on the server refuses a query text holding several statements."""
        set_multi_statements(self.conn, False)
        self._single_statements = True

    def require_read_only_transaction(self, read_only_flag: bool | None) -> bool:
        """The session is still inside the read-only transaction it started with.

        `read_only_flag` says whether the server flags read-only transactions (None at the
        start, when that is learnt: the return value). The flags come with every OK and EOF
        packet, so this costs no round trip. A COMMIT, ROLLBACK, or START TRANSACTION [READ
        WRITE] in the plan ends that transaction, and is caught here, before the next
        statement.
        """
        status = server_status(self.conn)
        flagged = bool(status & SERVER_STATUS_IN_TRANS_READONLY)
        if not status & SERVER_STATUS_IN_TRANS or (read_only_flag and not flagged):
            raise TransactionControlRefused()
        return flagged if read_only_flag is None else read_only_flag

    def require_read_only_session(self, flavour: Flavour) -> None:
        """The session's own read-only mode is still on: a DDL statement commits the
        transaction implicitly and then runs with the session's mode, so a plan's `SET
        SESSION TRANSACTION READ WRITE` must not reach the next statement."""
        variable = "tx_read_only" if flavour is Flavour.MARIADB else "transaction_read_only"
        with self.conn.cursor() as cursor:
            cursor.execute(f"SELECT @@session.{variable}")
            row = cursor.fetchone()
        if not row or int(row[0]) != 1:
            raise TransactionControlRefused()

    def stream(self, statement: str) -> SSCursor:
        cursor = self.conn.cursor(SSCursor)
        self._cursor = cursor
        try:
            cursor.execute(statement)
        except pymysql.err.ProgrammingError as exc:
            if error_code(exc) == _PARSE_ERROR and has_multiple_statements(statement):
                raise DatabaseError(ONE_STATEMENT_PER_SIGNED_STATEMENT) from exc
            raise
        return cursor

    def end_stream(self, *, warned: bool) -> None:
        """The cursor was read to its end: nothing left to drain."""
        self._cursor = None
        if warned:
            self.check_warnings()

    def check_warnings(self) -> None:
        """Fail a statement the server cut short without an error.

        MariaDB ends `DO SLEEP(n)` at max_statement_time with success and an error-level
        *warning* 1969; the statement was stopped, so the job did not do what was approved.
        Only run when the statement reported warnings (the count comes with each result).
        """
        with self.conn.cursor() as cursor:
            cursor.execute("SHOW WARNINGS")
            rows = cursor.fetchall()
        for _level, code, message in rows:
            number = int(code)
            if number in SERVER_TIMEOUT_ERRORS or number == ER_QUERY_INTERRUPTED:
                self.check()
                text = bytes(message).decode("utf-8", "replace")
                if number == ER_QUERY_INTERRUPTED:
                    raise DatabaseError(f"query failed: {text} (error {number})")
                raise QueryTimeout(
                    f"query timed out after {self._timeout_secs}s: {text} (error {number})"
                )

    def stop_stream(self) -> None:
        """Truncated: kill the statement and close the connection instead of draining it."""
        self.finish()
        try:
            self._interrupter.kill_now()
        finally:
            abandon(self.conn, self._cursor)
            self._closed = True

    def execute_counting(self, statement: str, builder: _ResultBuilder) -> int:
        """Run one signed statement (it may hold several); rows affected by all of them.

        Rows a statement returns (INSERT … RETURNING, a SELECT) go to `builder` and count
        as its rows affected, as PostgreSQL's command tags count them.
        """
        total = 0
        warned = False
        # No `with`: closing an unbuffered cursor drains it, even over a dead socket.
        cursor = self.conn.cursor(SSCursor)
        self._cursor = cursor
        cursor.execute(statement)
        while True:
            if cursor.description is None:
                total += max(cursor.rowcount, 0)
            else:
                total += builder.read_all(cursor)
            warned = warned or result_warning_count(cursor) > 0
            if not cursor.nextset():
                break
        self._cursor = None
        if warned:
            self.check_warnings()
        return total

    def commit(self) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute("COMMIT")
        except (pymysql.err.Error, OSError) as exc:
            if is_connectivity_error(exc):
                raise DatabaseError(
                    f"connection lost during COMMIT, the outcome is unknown: {error_text(exc)}",
                    connectivity=True,
                ) from exc
            raise

    def release_clean(self) -> None:
        """Reset the session so the next job starts from the server's defaults."""
        try:
            if self._single_statements:
                set_multi_statements(self.conn, True)  # COM_RESET_CONNECTION keeps it off
            reset_session(self.conn)
        except (pymysql.err.Error, OSError) as exc:
            log.debug("session reset failed, closing the connection: %s", exc)
            return
        self.clean = True

    def discard(self, *, rollback: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if rollback:
            try:
                set_io_timeout(self.conn, HARD_STOP_GRACE_SECS)
                self.conn.rollback()
            except (pymysql.err.Error, OSError) as exc:
                log.debug("rollback after a failed statement failed: %s", exc)
        abandon(self.conn, self._cursor)


class _Interrupter:
    """Stops the running statement from another thread, once, for a timeout or a cancel.

    The kill is `KILL QUERY` on a fresh connection; if the statement has still not returned
    after a grace period (the server unreachable, the kill lost), the socket is shut down so
    the reading thread wakes with a lost connection. `finish()` disarms it; whichever comes
    first wins, under a lock, and the connection of a fired run is never reused.
    """

    def __init__(self, *, kill: Callable[[], None], hard_stop: Callable[[], None]) -> None:
        self._kill = kill
        self._hard_stop = hard_stop
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._done = threading.Event()
        self._timer: ScheduledCall | None = None
        self._unregister: Callable[[], None] | None = None

    @property
    def reason(self) -> str | None:
        return self._reason

    def arm(self, timeout_secs: int, cancel: CancelToken | None) -> None:
        if timeout_secs > 0:
            self._timer = call_later(
                "mysql-deadline",
                timeout_secs + CLIENT_DEADLINE_MARGIN_SECS,
                partial(self._fire, _TIMEOUT),
            )
        if cancel is not None:
            self._unregister = cancel.on_cancel(self._on_cancel)

    def _on_cancel(self) -> None:
        # Runs on the canceller's thread (the heartbeat): never make it wait on the database.
        threading.Thread(
            target=self._fire, args=(_CANCEL,), name="mysql-cancel", daemon=True
        ).start()

    def _fire(self, reason: str) -> None:
        with self._lock:
            if self._done.is_set() or self._reason is not None:
                return
            self._reason = reason
        try:
            self._kill()
        except Exception as exc:
            log.warning("could not stop the statement with KILL QUERY: %s", exc)
            self._hard_stop()
            return
        if not self._done.wait(HARD_STOP_GRACE_SECS):
            log.warning("statement still running %.0fs after KILL QUERY", HARD_STOP_GRACE_SECS)
            self._hard_stop()

    def kill_now(self) -> None:
        """Stop a statement we no longer want (a truncated result); best effort."""
        try:
            self._kill()
        except Exception as exc:
            log.debug("KILL QUERY of a truncated result failed: %s", exc)

    def finish(self) -> str | None:
        with self._lock:
            self._done.set()
            reason = self._reason
        if self._timer is not None:
            self._timer.cancel()
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        return reason


class _ResultBuilder:
    """Rows of every result set into one RowCollector, and the `columns` metadata: what a
    SELECT plan answers, and a DML plan (`dml`) beside its count.

    `columns` lists the columns of each distinct result shape, in order, duplicates within
    a shape kept; the usual plan has one row-returning statement, so one shape. When a new
    shape adds columns, the envelope grows and the rows so far are re-checked against the
    smaller row budget, so `result_data` never exceeds the byte cap.
    """

    def __init__(self, limits: ResultLimits, *, dml: bool = False) -> None:
        self._limits = limits
        self._dml = dml
        self.columns: list[dict[str, str]] = []
        self._shapes: list[list[dict[str, str]]] = []
        self._collector: RowCollector | None = None
        self._warned = False

    def take_warned(self) -> bool:
        """Whether a result set read since the last call reported warnings."""
        warned, self._warned = self._warned, False
        return warned

    def consume(self, cursor: SSCursor) -> bool:
        """Read every result set of the cursor; False when a limit stopped the reading."""
        while True:
            if cursor.description is not None:
                follow_server_status(cursor)
                names, encoders = self._start_result_set(cursor)
                collector = self._collector
                assert collector is not None
                if collector.truncated:
                    return False
                offer = collector.offer
                read = cursor.read_next
                while (row := read()) is not None:
                    if not offer(encode_row(names, encoders, row)):
                        return False
            if result_warning_count(cursor) > 0:
                self._warned = True
            if not cursor.nextset():
                return True

    def read_all(self, cursor: SSCursor) -> int:
        """Read the cursor's current result set to its end (a DML batch must run on);
        rows past a limit are read and dropped. How many rows it had."""
        names, encoders = self._start_result_set(cursor)
        collector = self._collector
        assert collector is not None
        count = 0
        read = cursor.read_next
        while (row := read()) is not None:
            count += 1
            if not collector.truncated:
                collector.offer(encode_row(names, encoders, row))
        return count

    def _start_result_set(self, cursor: SSCursor) -> tuple[list[str], list[Encoder]]:
        fields = result_fields(cursor)
        shape = [{"name": f.name, "type": type_name(f.type_code)} for f in fields]
        if shape not in self._shapes:
            self._shapes.append(shape)
            self.columns.extend(shape)
            reserved = reserved_bytes(self._limits, encode_columns(self.columns), dml=self._dml)
            previous = self._collector
            self._collector = RowCollector(self._limits, reserved_bytes=reserved)
            if previous is not None:
                for encoded in previous.rows:
                    if not self._collector.offer(encoded):
                        break
        names = [f.name for f in fields]
        encoders = [encoder_for(f.type_code, f.charsetnr, f.length) for f in fields]
        return names, encoders

    def output(self) -> ExecutionOutput:
        """The result of the SELECT plan; the collected rows are consumed."""
        return select_output(self._collector, encode_columns(self.columns))

    def dml_output(self, rows_affected: int) -> ExecutionOutput:
        """The result of the committed DML plan; the collected rows are consumed."""
        return dml_output(rows_affected, self._collector, encode_columns(self.columns))


def _run_setup(conn: Connection[Any], sql: str, args: tuple[int | float, ...] | None) -> int:
    """Run the setup batch; the last result set holds `CONNECTION_ID()`."""
    last: Sequence[Sequence[Any]] = ()
    with conn.cursor() as cursor:
        cursor.execute(sql, args)
        while True:
            if cursor.description is not None:
                last = cursor.fetchall()
            if not cursor.nextset():
                break
    return int(last[0][0])


def _non_blank(statements: Sequence[str]) -> Iterator[str]:
    """The statements to send; an empty one (a plan's trailing `;`) is not an error."""
    return (statement for statement in statements if statement.strip())


def _interrupted(reason: str, timeout_secs: int) -> DatabaseError:
    if reason == _TIMEOUT:
        return QueryTimeout(f"query timed out after {timeout_secs}s")
    return QueryCancelled("query cancelled")


def _is_statement_error(error: DatabaseError) -> bool:
    """A plain SQL error: the connection still works, so an explicit ROLLBACK is worth it."""
    return not (error.connectivity or isinstance(error, QueryTimeout | QueryCancelled))
