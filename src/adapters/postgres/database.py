"""PostgreSQL through psycopg 3: the agent's `DatabasePort` for `postgres://` URLs.

What it guarantees, and why (docs/protocol.md §5, §6.3, §8, §9.3, §10; docs/agent.md §5):

* SELECT plans run in a `BEGIN READ ONLY` transaction that has already taken a snapshot, so
  a `SET TRANSACTION READ WRITE` smuggled into the plan fails, and the database itself
  refuses writes. Each signed statement goes alone through the extended protocol, which
  takes exactly one statement per call (a text holding several is refused by the server);
  before each statement and after the last, the session must still be inside that
  transaction, and no statement may be transaction control (COMMIT, ROLLBACK, BEGIN,
  SAVEPOINT, `... AND CHAIN`): a plan that tries is stopped at once, rolled back and its
  connection discarded. As a second layer the select session defaults to read-only
  transactions. Rows are streamed (libpq chunked-rows mode), never loaded whole, and
  collected under exact limits: one row past `max_rows` is read to know truncation for sure,
  and a row that would push `result_data` past the byte cap is refused.
* DML plans run as one simple-protocol batch, which PostgreSQL executes as one implicit
  transaction: a failing statement rolls back the ones before it. Rows the batch returns
  (RETURNING, a SELECT) stream into the same collector as a SELECT plan's, and the rest of
  the batch is read to its end past a limit (docs/protocol.md §5.7).
* Timeouts are enforced twice: by PostgreSQL's `statement_timeout` and by an agent-side
  deadline (timeout + 2 s) that cancels the batch even if the plan changed the setting.
* A killed agent's statement stops on the server: on PostgreSQL 14+ every session sets
  `client_connection_check_interval`, so the backend notices within seconds that its
  client is gone and ends the statement, instead of running it to completion.
* Cancellation comes from another thread (heartbeat, lease loss, shutdown): psycopg's
  `cancel_safe()` runs on a short-lived thread, repeated until the statement ends, so a
  cancel that reaches the server in the instant before the statement starts is not lost.
* A connection that saw an error, a cancel or an unfinished result is closed, never reused.
* SQL that cannot be sent as signed (a character outside the database encoding, or a NUL,
  which libpq would silently treat as the end of the text) is refused before anything runs.
  No exception other than `DatabaseError` leaves a `DatabasePort` method.
* Failures are classified by SQLSTATE: authentication (28P01, 28000) is hard; a lost
  connection (class 08, 57P01-57P03, or a broken socket) feeds degraded mode.
"""

from __future__ import annotations

import logging
import math
import re
import select
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote

import orjson
import psycopg
from psycopg import pq
from psycopg.abc import Params, Query
from psycopg.adapt import AdaptersMap, Transformer
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import error_from_result
from psycopg.generators import fetch, send

from adapters.postgres import schema as pg_schema
from adapters.postgres.values import (
    BUILTIN_TYPES,
    CatalogType,
    PgType,
    RowEncoder,
    catalog_dependencies,
    decode_text,
    resolve_catalog_types,
    select_adapters,
    unknown_type,
)
from adapters.sql_common.envelope import (
    dml_output,
    encode_columns,
    reserved_bytes,
    select_output,
)
from adapters.sql_common.errors import TransactionControlRefused, only_database_errors_logged_to
from adapters.sql_common.pool import DEFAULT_MAX_IDLE, ConnectionPool
from application.agent.cancellation import CancelToken
from application.agent.threads import ScheduledCall, call_later
from domain.agent.errors import (
    DatabaseAuthError,
    DatabaseError,
    DatabaseUnavailable,
    QueryCancelled,
    QueryTimeout,
)
from domain.agent.result_limits import ResultLimits, RowCollector
from domain.shared.errors import ConfigError
from domain.shared.explain import ExplainRefused, check_explainable
from domain.shared.jobs import ExecutionOutput
from domain.shared.operations import Operation

log = logging.getLogger("dbward.agent.postgres")

Connection: TypeAlias = psycopg.Connection[tuple[Any, ...]]

APPLICATION_NAME = "dbward-agent"
#: Rows per libpq chunk: large enough to amortise the per-chunk Python work, small enough
#: that a chunk (and the rows read past a limit) stays a few hundred kilobytes.
CHUNK_ROWS = 1000
#: Connection timeout for connections the pool opens between `connect()` calls.
DEFAULT_CONNECT_TIMEOUT_SECS = 10
#: The agent-side deadline fires this long after the statement timeout (the server's own
#: timeout should have fired first).
DEADLINE_GRACE_SECS = 2.0
#: A cancel request is repeated this often until the statement ends, at most this often.
CANCEL_RETRY_SECS = 1.0
CANCEL_ATTEMPTS = 10
CANCEL_REQUEST_TIMEOUT_SECS = 5.0
SCHEMA_TIMEOUT_SECS = 120
#: `client_connection_check_interval` of every session (PostgreSQL 14+): how often a backend
#: running an agent statement checks that the agent is still connected. The check is one
#: poll() of the socket, so 2 s costs nothing and bounds a dead agent's query to seconds.
CLIENT_CHECK_INTERVAL_MS = 2000
#: The first `server_version_num` that knows `client_connection_check_interval`.
_CLIENT_CHECK_MIN_VERSION = 140000
_INVALID_PARAMETER_VALUE = "22023"
#: Keepalives so that a silently vanished server is noticed in about a minute, not hours.
_KEEPALIVE_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

_AUTH_SQLSTATES = frozenset({"28P01", "28000"})
_SERVER_GONE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
_QUERY_CANCELED = "57014"
_SYNTAX_ERROR = "42601"
ONE_STATEMENT_PER_SIGNED_STATEMENT = (
    "query failed: one SQL statement per signed statement (the server refused a text"
    " holding several)"
)

_TUPLES = frozenset(
    {pq.ExecStatus.TUPLES_OK, pq.ExecStatus.TUPLES_CHUNK, pq.ExecStatus.SINGLE_TUPLE}
)
_COPY = frozenset({pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH})
_END_OF_STATEMENT = frozenset({pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY})

#: Command tags of transaction control (`COMMIT AND CHAIN` reads `COMMIT`, `ROLLBACK TO
#: SAVEPOINT` and `ABORT` read `ROLLBACK`, `END` reads `COMMIT`). None belongs in a SELECT
#: plan; `COMMIT AND CHAIN` even leaves the session "in a transaction", a new one whose
#: access mode the plan could then change, so the status alone would not notice it.
_TRANSACTION_CONTROL_TAGS = frozenset(
    {
        b"BEGIN",
        b"START TRANSACTION",
        b"COMMIT",
        b"ROLLBACK",
        b"SAVEPOINT",
        b"RELEASE",
        b"PREPARE TRANSACTION",
        b"COMMIT PREPARED",
        b"ROLLBACK PREPARED",
    }
)
#: The second layer of the select path: should the plan ever leave `BEGIN READ ONLY`, what
#: starts next is read-only too. A pooled session has it from its first instant and gets it
#: back with every reset (`PostgresDatabase._session_settings`), always outside a
#: transaction, so no ROLLBACK in a plan can undo it; a DML batch turns it off for itself
#: (`_DML_SESSION`), in the round trip that sets its timeout, and the reset after the batch
#: turns it on again. A select therefore needs no round trip of its own for it.
_READ_ONLY_SESSION = "SET default_transaction_read_only = on"
#: What a DML batch's session sets before the batch: writable transactions, and the batch's
#: statement timeout (a literal from `_timeout_setting`: digits and `ms` only).
_DML_SESSION = (
    "SET default_transaction_read_only = off;"
    " SELECT pg_catalog.set_config('statement_timeout', '{timeout}', false)"
)

#: libpq gives no SQLSTATE for a failure while connecting (the server's FATAL error reaches
#: psycopg only as text). These are the server's own messages for 28P01 / 28000 (English
#: `lc_messages`); every error after the connection is up is classified by its SQLSTATE.
_AUTH_FAILURE = re.compile(
    r"password authentication failed"
    r"|authentication failed for user"
    r"|no pg_hba\.conf entry"
    r"|pg_hba\.conf rejects connection"
    r'|^role ".*" (?:does not exist|is not permitted to log in)'
)


# --- error classification -------------------------------------------------------------


def _message(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary if exc.sqlstate else None
    text = primary or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def classify_error(
    exc: psycopg.Error,
    *,
    prefix: str = "query failed",
    cancelled: bool = False,
    broken: bool = False,
) -> DatabaseError:
    """The agent's error for a psycopg error raised on an open connection.

    `cancelled` says the agent itself cancelled the statement (so 57014 means "cancelled",
    not "timed out"); `broken` says psycopg saw the connection die.
    """
    sqlstate = exc.sqlstate
    if sqlstate == _QUERY_CANCELED:
        return QueryCancelled("query cancelled") if cancelled else QueryTimeout("query timed out")
    if sqlstate in _AUTH_SQLSTATES:
        return DatabaseAuthError(f"authentication failed: {_message(exc)}")
    if (
        (sqlstate is not None and (sqlstate.startswith("08") or sqlstate in _SERVER_GONE_SQLSTATES))
        or (sqlstate is None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError))
        or broken
    ):
        return DatabaseError(f"connection lost: {_message(exc)}", connectivity=True)
    return DatabaseError(f"{prefix}: {_message(exc)}")


def classify_connect_error(exc: psycopg.Error, secrets: Sequence[str] = ()) -> DatabaseError:
    """The agent's error for a failed connection attempt: hard for bad credentials,
    transient (degraded mode, retried) for anything that may heal: refused, DNS, timeout,
    server starting or shutting down, too many connections, database missing.

    `secrets` (the forms of the URL's password) are blanked out of the message: libpq may
    quote a host, port or database that is really a piece of a badly encoded password.
    """
    if exc.sqlstate is not None:
        if exc.sqlstate in _AUTH_SQLSTATES:
            return DatabaseAuthError(f"authentication failed: {redact(_message(exc), secrets)}")
        return DatabaseUnavailable(f"cannot connect: {redact(_message(exc), secrets)}")
    pgconn = exc.pgconn
    text = redact(str(exc), secrets)
    if pgconn is not None and pgconn.needs_password:
        return DatabaseAuthError(f"authentication failed: the server requires a password: {text}")
    if pgconn is not None and "FATAL:" in text:
        server_said = text.split("FATAL:", 1)[1].strip()
        if _AUTH_FAILURE.search(server_said):
            return DatabaseAuthError(f"authentication failed: {server_said.splitlines()[0]}")
    return DatabaseUnavailable(f"cannot connect: {text.strip().splitlines()[0]}")


class SqlNotSendable(psycopg.DataError):
    """SQL that cannot reach the server as signed: a character the database encoding lacks,
    or a NUL. A psycopg error, so every path (the migration runner's too) reports it like
    any other failed statement."""


#: The `DatabasePort` contract: callers see `DatabaseError` types and nothing else.
only_database_errors = only_database_errors_logged_to(log)


# --- statement supervision -------------------------------------------------------------


class _StatementGuard:
    """Stops a running statement from other threads: the job's cancel token, or the
    agent-side deadline.

    The cancel request itself runs on its own short-lived thread, so the heartbeat thread
    that fires the token never waits on the database. It is repeated until the statement
    ends: a cancel that arrives while the server is still reading the query is ignored by
    PostgreSQL, and a repeat catches that case.
    """

    def __init__(self, connection: Connection, cancel: CancelToken | None, timeout_secs: int):
        self._connection = connection
        self._cancel = cancel
        self._timeout_secs = timeout_secs
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._stopping = False
        self._unregister: Callable[[], None] | None = None
        self._timer: ScheduledCall | None = None
        self._armed = False
        self.cancelled = False
        self.deadline_passed = False

    @property
    def fired(self) -> bool:
        return self.cancelled or self.deadline_passed

    def arm(self) -> None:
        """Call once the first statement is on its way to the server; later calls (the
        plan's next statements) keep the one deadline, which covers the whole plan."""
        if self._armed:
            return
        self._armed = True
        if self._timeout_secs > 0:
            self._timer = call_later(
                "dbward-pg-deadline", self._timeout_secs + DEADLINE_GRACE_SECS, self._on_deadline
            )
        if self._cancel is not None:
            self._unregister = self._cancel.on_cancel(self._on_cancel)

    def disarm(self) -> None:
        """After this returns no cancel request is in flight and `fired` is final."""
        if self._unregister is not None:
            self._unregister()
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._finished.set()

    def check(self) -> None:
        """Between statements: a cancel or deadline that fired stops the plan here (a cancel
        request that reached an idle session stopped nothing)."""
        if self.cancelled:
            raise QueryCancelled("query cancelled")
        if self.deadline_passed:
            raise QueryTimeout("query timed out")

    def _on_cancel(self) -> None:
        self.cancelled = True
        self._stop()

    def _on_deadline(self) -> None:
        self.deadline_passed = True
        self._stop()

    def _stop(self) -> None:
        with self._lock:
            if self._stopping or self._finished.is_set():
                return
            self._stopping = True
        threading.Thread(target=self._send_cancels, name="dbward-pg-cancel", daemon=True).start()

    def _send_cancels(self) -> None:
        for _ in range(CANCEL_ATTEMPTS):
            with self._lock:
                if self._finished.is_set():
                    return
                try:
                    self._connection.cancel_safe(timeout=CANCEL_REQUEST_TIMEOUT_SECS)
                except Exception as exc:  # best effort: the next attempt may work
                    log.debug("cancel request failed: %s", exc)
            if self._finished.wait(CANCEL_RETRY_SECS):
                return


def _stream_rows(pgconn: pq.abc.PGconn) -> None:
    """Right after sending a query: its rows arrive in chunks, never loaded whole."""
    if psycopg.capabilities.has_stream_chunked():
        pgconn.set_chunked_rows_mode(CHUNK_ROWS)
    else:  # libpq older than 17 (psycopg without its bundled libpq): still streaming
        pgconn.set_single_row_mode()


class _ResultRows:
    """Rows of every result set of a plan into one `RowCollector`, and the `columns` of
    the first result set: what a SELECT plan answers, and a DML plan beside its count.

    Fed each `TUPLES_*` result (a chunk of rows, or the end of a result set) in turn;
    converters are picked once per result set.
    """

    def __init__(
        self,
        column_types: Callable[[pq.abc.PGresult], list[PgType]],
        connection: Connection,
        limits: ResultLimits,
        *,
        dml: bool,
    ) -> None:
        self._column_types = column_types
        self._connection = connection
        self._raw_text = connection.info.encoding == "ascii"  # SQL_ASCII: text arrives as bytes
        self._transformer = Transformer(_SelectContext(connection))
        self._limits = limits
        self._dml = dml
        self._encoder: RowEncoder | None = None
        self._collector: RowCollector | None = None
        self._columns_json = encode_columns([])

    def take(self, result: pq.abc.PGresult) -> bool:
        """Offer the result's rows; False once a limit refused one (nothing more is kept)."""
        encoder = self._encoder
        if encoder is None:  # the first chunk of a result set
            encoder = self._encoder = RowEncoder(
                _field_names(result, self._connection, self._raw_text),
                self._column_types(result),
                raw_text=self._raw_text,
            )
            self._transformer.set_pgresult(result, set_loaders=True)
            if self._collector is None:
                self._columns_json = encode_columns(encoder.columns)
                reserve = reserved_bytes(self._limits, self._columns_json, dml=self._dml)
                self._collector = RowCollector(self._limits, reserved_bytes=reserve)
        else:
            self._transformer.set_pgresult(result, set_loaders=False)
        collector = self._collector
        assert collector is not None
        ntuples = result.ntuples
        if ntuples and not collector.truncated:
            rows = self._transformer.load_rows(0, ntuples, tuple)
            all(map(collector.offer, encoder.encode(rows)))
        if result.status == pq.ExecStatus.TUPLES_OK:
            self._encoder = None
        return not collector.truncated

    def end_of_statement(self) -> None:
        """A statement ended without rows: the next result set picks its own converters."""
        self._encoder = None

    def select_output(self) -> ExecutionOutput:
        return select_output(self._collector, self._columns_json)

    def dml_output(self, rows_affected: int) -> ExecutionOutput:
        return dml_output(rows_affected, self._collector, self._columns_json)


@dataclass
class _Streamed:
    output: ExecutionOutput
    complete: bool  # every result was read: the connection is idle again


class _SelectContext:
    """Adaptation context for result rows: the connection plus the text-first loaders."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def adapters(self) -> AdaptersMap:
        return select_adapters()

    @property
    def connection(self) -> Connection:
        return self._connection


# --- the adapter --------------------------------------------------------------------------


class PostgresDatabase:
    """One PostgreSQL database (`[databases.<db>.<env>]` with a postgres:// URL)."""

    def __init__(self, url: str) -> None:
        try:
            self._params: dict[str, Any] = dict(conninfo_to_dict(url))
        except psycopg.Error as exc:
            raise ConfigError(url_error_message(url, exc)) from None
        self._secrets = password_forms(url)
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._open_connection, _close_quietly
        )
        self._types: dict[int, PgType] = {}
        self._types_lock = threading.Lock()
        #: Cleared for good when the server refuses `client_connection_check_interval`.
        self._client_check = True

    @property
    def dialect(self) -> str:
        return "postgresql"

    # --- connections ------------------------------------------------------------------

    @only_database_errors
    def connect(self, timeout_secs: float) -> None:
        """Open and check one connection; also the reconnect after an outage, so stale
        pooled connections (and cached type oids: a restore may change them) go first."""
        self._pool.clear()
        with self._types_lock:
            self._types.clear()
        connection = self._open_connection(connect_timeout=timeout_secs)
        try:
            connection.execute("SELECT 1")
        except psycopg.Error as exc:
            _close_quietly(connection)
            raise self._failure(exc, connection) from None
        self._pool.release(connection, reusable=True)

    def close(self) -> None:
        self._pool.close()

    def _open_connection(
        self, connect_timeout: float | None = None, *, read_only: bool = True
    ) -> Connection:
        """A new session with `_session_settings`; `read_only=False` only for the migration
        runner's own connection, which runs DDL outside any transaction."""
        params = dict(self._params)
        params.setdefault("application_name", APPLICATION_NAME)
        if connect_timeout is not None:
            params["connect_timeout"] = str(max(2, math.ceil(connect_timeout)))
        else:
            params.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT_SECS))
        for key, value in _KEEPALIVE_DEFAULTS.items():
            params.setdefault(key, value)
        try:
            connection: Connection = _CheckedPgConnection.connect(
                autocommit=True, prepare_threshold=None, **params
            )
        except psycopg.Error as exc:
            raise classify_connect_error(exc, self._secrets) from None
        try:
            connection.execute(self._session_settings(connection, read_only=read_only))
        except psycopg.Error as exc:
            if not self._refused_client_check(exc):
                _close_quietly(connection)
                raise classify_error(exc, broken=connection.broken) from None
            try:
                connection.execute(self._session_settings(connection, read_only=read_only))
            except psycopg.Error as again:
                _close_quietly(connection)
                raise classify_error(again, broken=connection.broken) from None
        return connection

    def _session_settings(self, connection: Connection, *, read_only: bool = True) -> str:
        """The SETs a session starts with, and gets back after each job's reset: hex
        bytea, read-only transactions by default (`_READ_ONLY_SESSION`), and the
        dead-client check where the server has it."""
        settings = "SET bytea_output = 'hex'"
        if read_only:
            settings += "; " + _READ_ONLY_SESSION
        if self._client_check and connection.info.server_version >= _CLIENT_CHECK_MIN_VERSION:
            settings += f"; SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}"
        return settings

    def _refused_client_check(self, exc: psycopg.Error) -> bool:
        """A server on a platform without the check refuses any value but 0: stop asking
        (once, with a warning) rather than fail every connection."""
        if not self._client_check or exc.sqlstate != _INVALID_PARAMETER_VALUE:
            return False
        self._client_check = False
        log.warning(
            "this PostgreSQL cannot check for dead clients (%s); a killed agent's statement"
            " will run until it ends or its statement_timeout",
            exc.diag.message_primary or exc,
        )
        return True

    def _session_reset(self, connection: Connection) -> str:
        return _SESSION_RESET + "; " + self._session_settings(connection)

    def _open_migration_connection(self) -> Connection:
        """A new connection for the migration runner, which owns (and closes) it."""
        return self._open_connection(read_only=False)

    def _acquire(self) -> Connection:
        """A pooled connection known to be alive, or a new one.

        An idle connection whose server ended it (restart, idle timeout, terminate) has
        the server's goodbye waiting on its socket; that is checked without a round trip,
        so a job never fails because of a connection that died while it sat in the pool.
        """
        for _ in range(DEFAULT_MAX_IDLE + 1):
            connection = self._pool.acquire()
            if _still_open(connection):
                return connection
            self._pool.discard(connection)
        return self._open_connection()

    def _release(self, connection: Connection, *, reusable: bool) -> None:
        self._pool.release(connection, reusable=reusable and not connection.broken)

    def _clean_up(self, connection: Connection, statements: str) -> bool:
        """End a job's transaction and reset the session; True if the connection is clean.

        The job's own outcome is settled by then (rows read, batch committed), so a failure
        here only costs the connection: it is dropped, and the result still goes out.
        """
        try:
            connection.execute(statements)
        except psycopg.Error as exc:
            log.warning("could not reset a connection after a job; dropping it: %s", exc)
            if classify_error(exc, broken=connection.broken).connectivity:
                self._pool.clear()
            return False
        return True

    def _failure(
        self,
        exc: psycopg.Error,
        connection: Connection,
        guard: _StatementGuard | None = None,
        prefix: str = "query failed",
    ) -> DatabaseError:
        error = classify_error(
            exc,
            prefix=prefix,
            cancelled=guard is not None and guard.cancelled,
            broken=connection.broken,
        )
        if error.connectivity:
            self._pool.clear()
        return error

    # --- execute_select ---------------------------------------------------------------

    @only_database_errors
    def execute_select(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        """Run a SELECT plan in one read-only transaction; rows of every result set.

        Each signed statement is sent on its own; one that ends or replaces the transaction
        stops the plan (`TransactionControlRefused`) before anything else runs.
        """
        if cancel.cancelled:
            raise QueryCancelled("query cancelled")
        connection = self._acquire()
        try:
            encoded = _encode_statements(statements, connection)
        except SqlNotSendable as exc:
            self._release(connection, reusable=True)
            raise DatabaseError(f"query failed: {exc}") from None
        guard = _StatementGuard(connection, cancel, timeout_secs)
        reusable = False
        try:
            _begin(connection, "BEGIN READ ONLY", timeout_secs)
            streamed = self._stream_select(connection, encoded, limits, guard)
            guard.disarm()
            if streamed.complete and not guard.fired:
                reusable = self._clean_up(
                    connection, "ROLLBACK; " + self._session_reset(connection)
                )
            elif not streamed.complete:
                _stop_quietly(connection)  # rows past the limit are still coming
            return streamed.output
        except TransactionControlRefused:
            _rollback_quietly(connection)
            raise
        except psycopg.Error as exc:
            raise self._failure(exc, connection, guard) from None
        finally:
            guard.disarm()
            self._release(connection, reusable=reusable)

    def _stream_select(
        self,
        connection: Connection,
        statements: Sequence[bytes],
        limits: ResultLimits,
        guard: _StatementGuard,
    ) -> _Streamed:
        """Stream each statement's rows into one collector; stop early at a limit."""
        pgconn = connection.pgconn
        rows = _ResultRows(self._column_types, connection, limits, dml=False)
        for sql in statements:
            _require_read_only_transaction(pgconn)
            guard.check()
            # The extended protocol: exactly one statement per call, by the server's rule.
            pgconn.send_query_params(sql, None)
            _stream_rows(pgconn)
            connection.wait(send(pgconn))
            guard.arm()
            failed: pq.abc.PGresult | None = None
            transaction_control = False
            while True:
                try:
                    result = connection.wait(fetch(pgconn))
                except psycopg.Error:
                    if failed is not None:
                        break  # the server reported why before it hung up
                    raise
                if result is None:
                    break
                status = result.status
                if failed is not None:
                    continue  # drain to the end of the statement, then report
                if status in _TUPLES:
                    if not rows.take(result):
                        return _Streamed(rows.select_output(), complete=False)
                elif status == pq.ExecStatus.FATAL_ERROR:
                    failed = result
                elif status in _END_OF_STATEMENT:
                    rows.end_of_statement()
                    if result.command_status in _TRANSACTION_CONTROL_TAGS:
                        transaction_control = True
                elif status in _COPY:
                    raise DatabaseError("query failed: COPY to or from the client is not supported")
            if failed is not None:
                raise _select_error(failed, connection)
            if transaction_control:
                raise TransactionControlRefused()
        _require_read_only_transaction(pgconn)
        return _Streamed(rows.select_output(), complete=True)

    def _column_types(self, result: pq.abc.PGresult) -> list[PgType]:
        oids = [result.ftype(index) for index in range(result.nfields)]
        with self._types_lock:
            missing = {oid for oid in oids if oid not in BUILTIN_TYPES and oid not in self._types}
        if missing:
            found = self._lookup_types(missing)
            with self._types_lock:
                self._types.update(found)
        with self._types_lock:
            known = self._types
            return [BUILTIN_TYPES.get(oid) or known.get(oid) or unknown_type(oid) for oid in oids]

    def _lookup_types(self, oids: set[int]) -> dict[int, PgType]:
        """Name and kind of user types (enums, domains' arrays, extension types).

        Runs on a second connection, since the first one is busy streaming the rows that
        need them; the answer is cached, so this happens once per type.
        """
        catalog: dict[int, CatalogType] = {}
        connection = self._acquire()
        reusable = False
        try:
            pending = set(oids)
            for _ in range(4):  # array -> domain -> base type: a few levels at most
                rows = connection.execute(_TYPE_LOOKUP_SQL, (sorted(pending),)).fetchall()
                for row in rows:
                    catalog[row[0]] = CatalogType(*row)
                pending = catalog_dependencies(catalog.values()) - set(catalog)
                if not pending:
                    break
            reusable = True
        except psycopg.Error as exc:
            raise self._failure(exc, connection, prefix="type lookup failed") from None
        finally:
            self._release(connection, reusable=reusable)
        return resolve_catalog_types(oids, catalog)

    # --- execute_dml ------------------------------------------------------------------

    @only_database_errors
    def execute_dml(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        """Run a DML plan as one batch: all statements commit, or none. Rows of every
        statement that returns some come back under `limits`, as a SELECT plan's do."""
        if cancel.cancelled:
            raise QueryCancelled("query cancelled")
        connection = self._acquire()
        try:
            batch = b";\n".join(_encode_statements(statements, connection))
        except SqlNotSendable as exc:
            self._release(connection, reusable=True)
            raise DatabaseError(f"query failed: {exc}") from None
        guard = _StatementGuard(connection, cancel, timeout_secs)
        reusable = False
        try:
            connection.execute(_DML_SESSION.format(timeout=_timeout_setting(timeout_secs)))
            rows = _ResultRows(self._column_types, connection, limits, dml=True)
            rows_affected = self._run_batch(connection, batch, guard, rows)
            guard.disarm()
            if not guard.fired:
                reusable = self._clean_up(connection, self._session_reset(connection))
        except psycopg.Error as exc:
            raise self._failure(exc, connection, guard) from None
        finally:
            guard.disarm()
            self._release(connection, reusable=reusable)
        # The batch committed: even a cancel that came too late does not undo that.
        return rows.dml_output(rows_affected)

    def _run_batch(
        self, connection: Connection, sql: bytes, guard: _StatementGuard, rows: _ResultRows
    ) -> int:
        """Send the batch in one simple-protocol message; the sum of the command tags'
        row counts. Rows the statements return (RETURNING, a SELECT) stream into `rows`;
        past a limit they are read and dropped, since the batch must run to its end."""
        pgconn = connection.pgconn
        pgconn.send_query(sql)
        _stream_rows(pgconn)
        connection.wait(send(pgconn))
        guard.arm()
        total = 0
        failed: pq.abc.PGresult | None = None
        while True:
            try:
                result = connection.wait(fetch(pgconn))
            except psycopg.Error:
                if failed is not None:
                    break
                raise
            if result is None:
                break
            status = result.status
            if status == pq.ExecStatus.FATAL_ERROR:
                failed = result
            elif status in _COPY:
                raise DatabaseError("query failed: COPY to or from the client is not supported")
            elif failed is None:
                if status in _TUPLES:
                    rows.take(result)
                else:
                    rows.end_of_statement()
                # Set on the result that ends a statement, None on a chunk of rows.
                total += result.command_tuples or 0
        if failed is not None:
            raise error_from_result(failed, encoding=connection.info.encoding)
        return total

    # --- explain ----------------------------------------------------------------------

    @only_database_errors
    def explain(self, sql: str, timeout_secs: int) -> Any:
        """`EXPLAIN (FORMAT JSON)` of one statement, never executed: ANALYZE is refused by
        name, the statement goes through the extended protocol (which takes exactly one
        statement), inside a read-only transaction with a timeout."""
        try:
            statement = check_explainable(sql)
        except ExplainRefused as exc:
            raise DatabaseError(f"explain refused: {exc}") from None
        connection = self._acquire()
        try:
            encoded = _encode_sql(statement, connection)
        except SqlNotSendable as exc:
            self._release(connection, reusable=True)
            raise DatabaseError(f"query failed: {exc}") from None
        reusable = False
        try:
            _begin(connection, "BEGIN READ ONLY", timeout_secs)
            pgconn = connection.pgconn
            pgconn.send_query_params(b"EXPLAIN (FORMAT JSON) " + encoded, None)
            connection.wait(send(pgconn))
            results: list[pq.abc.PGresult] = []
            while (result := connection.wait(fetch(pgconn))) is not None:
                results.append(result)
            for result in results:
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    raise error_from_result(result, encoding=connection.info.encoding)
            plan_text = next(
                (r.get_value(0, 0) for r in results if r.status in _TUPLES and r.ntuples),
                None,
            )
            if plan_text is None:
                raise DatabaseError("query failed: EXPLAIN returned no plan")
            plan = orjson.loads(plan_text)
            reusable = self._clean_up(connection, "ROLLBACK")
            return plan
        except orjson.JSONDecodeError as exc:
            raise DatabaseError(f"query failed: invalid EXPLAIN JSON: {exc}") from None
        except psycopg.Error as exc:
            if exc.sqlstate == _SYNTAX_ERROR and _is_multi_statement_refusal(exc):
                raise DatabaseError(
                    "explain refused: EXPLAIN takes exactly one statement"
                ) from None
            raise self._failure(exc, connection) from None
        finally:
            self._release(connection, reusable=reusable)

    # --- schema -----------------------------------------------------------------------

    @only_database_errors
    def collect_schema(self) -> dict[str, Any]:
        """The schema snapshot (§8.2 plus views, partitioning, checks, index details), read
        from one consistent snapshot with a constant number of queries."""
        connection = self._acquire()
        reusable = False
        try:
            _begin(
                connection,
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                SCHEMA_TIMEOUT_SECS,
            )
            snapshot = pg_schema.collect_schema(connection)
            reusable = self._clean_up(connection, "ROLLBACK")
            return snapshot
        except psycopg.Error as exc:
            raise self._failure(exc, connection, prefix="schema query failed") from None
        finally:
            self._release(connection, reusable=reusable)

    # --- migrations -------------------------------------------------------------------

    @only_database_errors
    def run_migration(
        self, operation: Operation, detail: str, timeout_secs: int, cancel: CancelToken
    ) -> ExecutionOutput:
        """Migrations live in their own module; it opens its connection through
        `_open_migration_connection` (never a pooled one) and closes it. That connection
        refuses SQL it cannot send (`SqlNotSendable`, a psycopg error), so the runner reports
        it as the failure of that version, with the versions applied before it."""
        from adapters.postgres.migrations import run_postgres_migration  # noqa: PLC0415

        output: ExecutionOutput = run_postgres_migration(
            self._open_migration_connection, operation, detail, timeout_secs, cancel
        )
        return output


# --- helpers ------------------------------------------------------------------------------

_TYPE_LOOKUP_SQL = (
    "SELECT oid::int8, typname::text, typtype::text, typbasetype::int8, typelem::int8,"
    " typcategory::text, typdelim::text"
    " FROM pg_catalog.pg_type WHERE oid = ANY(%s::oid[])"
)


def _timeout_setting(timeout_secs: int) -> str:
    """statement_timeout value; 0 means no timeout, as in PostgreSQL."""
    return f"{max(int(timeout_secs), 0) * 1000}ms"


def _begin(connection: Connection, begin: str, timeout_secs: int) -> None:
    """Open the transaction and set its statement timeout, in one round trip.

    The timeout is set with `set_config(..., true)` (LOCAL to the transaction), which is a
    SELECT: it takes the transaction's first snapshot, after which PostgreSQL refuses
    `SET TRANSACTION READ WRITE`. A plan cannot undo the read-only mode. Both statements
    go in one simple-protocol message, so the value is a literal: digits and `ms` only,
    built from an integer (`_timeout_setting`).
    """
    connection.execute(
        f"{begin}; SELECT pg_catalog.set_config('statement_timeout',"
        f" '{_timeout_setting(timeout_secs)}', true)"
    )


#: Run after user SQL, so that the next job gets a clean session: ROLLBACK undoes the
#: read-only transaction and the SETs inside it, but session advisory locks, prepared
#: statements, LISTEN, temporary tables, `SET ROLE` or settings changed by a DML batch outlive
#: transactions. This is DISCARD ALL spelled out (DISCARD ALL itself cannot share a message
#: with other statements), so the reset, ROLLBACK included, costs one round trip; the
#: session's own settings (`PostgresDatabase._session_settings`) come back last.
_SESSION_RESET = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *;"
    " SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP;"
    " DISCARD SEQUENCES"
)


def _encode_sql(sql: str, connection: Connection, statement: int | None = None) -> bytes:
    """The signed text in the connection's client encoding, or `SqlNotSendable`.

    libpq takes C strings, so a NUL would silently end the SQL early (`DELETE FROM t\\0
    WHERE ...` would delete every row): refused, like a character the encoding lacks.
    """
    where = f" of statement {statement}" if statement is not None else ""
    nul = sql.find("\x00")
    if nul >= 0:
        raise SqlNotSendable(
            f"the SQL contains a NUL character (position {nul}{where}), which PostgreSQL"
            " cannot receive"
        )
    encoding = connection.info.encoding
    try:
        # SQL_ASCII takes any bytes; the signed SQL is UTF-8 text.
        return sql.encode("utf-8" if encoding == "ascii" else encoding)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise SqlNotSendable(
            f"the SQL cannot be encoded in the database encoding {_encoding_name(connection)}:"
            f" {bad!r} at position {exc.start}{where}"
        ) from None


def _encode_statements(statements: Sequence[str], connection: Connection) -> list[bytes]:
    """The plan's non-blank statements, encoded; all of them are checked before any runs."""
    several = len(statements) > 1
    return [
        _encode_sql(sql, connection, index + 1 if several else None)
        for index, sql in enumerate(statements)
        if sql.strip()
    ]


def _encoding_name(connection: Connection) -> str:
    """The server's name of the client encoding (LATIN1, UTF8, ...), for messages."""
    raw = connection.pgconn.parameter_status(b"client_encoding")
    return raw.decode("ascii", "replace") if raw else connection.info.encoding


class _CheckedPgConnection(psycopg.Connection[tuple[Any, ...]]):
    """A psycopg connection whose `execute` refuses text it cannot send as is.

    psycopg would raise `UnicodeEncodeError` (not a psycopg error) for a character outside
    the client encoding, and pass a NUL through to libpq, which cuts the text there. The
    migration runner executes signed SQL this way.
    """

    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool = False,
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        if isinstance(query, str):
            _encode_sql(query, self)
        # `Any`: the base class spells this signature as two overloads (plain, template).
        text: Any = query
        return super().execute(text, params, prepare=prepare, binary=binary)


def _require_read_only_transaction(pgconn: pq.abc.PGconn) -> None:
    """The plan is still inside the agent's `BEGIN READ ONLY`, or it is stopped here."""
    if pgconn.transaction_status != pq.TransactionStatus.INTRANS:
        raise TransactionControlRefused()


def _select_error(failed: pq.abc.PGresult, connection: Connection) -> Exception:
    """The error of a failed SELECT statement; the extended protocol's refusal of a text
    holding several statements is named for what it means here."""
    error = error_from_result(failed, encoding=connection.info.encoding)
    primary = error.diag.message_primary or ""
    if error.sqlstate == _SYNTAX_ERROR and "multiple commands" in primary:
        return DatabaseError(ONE_STATEMENT_PER_SIGNED_STATEMENT)
    return error


def _rollback_quietly(connection: Connection) -> None:
    """Best effort: end whatever transaction a refused plan left open. The connection is
    discarded right after, which ends it anyway."""
    if connection.closed or connection.broken:
        return
    if connection.pgconn.transaction_status == pq.TransactionStatus.IDLE:
        return
    try:
        connection.execute("ROLLBACK")
    except psycopg.Error as exc:
        log.debug("rollback after a refused plan failed: %s", exc)


# --- URL errors ----------------------------------------------------------------------------

_URI_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_KEYWORD_PASSWORD = re.compile(r"password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))", re.IGNORECASE)
#: Where libpq cuts a URL; an unencoded one inside a password leaves pieces of it elsewhere.
_URI_DELIMITERS = re.compile(r"[/@:?#]")
_REDACTED = "********"


def url_error_message(url: str, exc: psycopg.Error) -> str:
    """A URL parse error that never shows the password.

    libpq quotes the offending part back, which may be the password itself (a malformed
    percent-encoding, spaces) or the whole URL (an unclosed IPv6 bracket).
    """
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    if "percent-encod" in text:
        return "invalid database URL: malformed percent-encoding"
    return f"invalid PostgreSQL URL: {redact(text, password_forms(url))}"


def password_forms(url: str) -> list[str]:
    """What the password may look like inside a message, longest first: as written, decoded,
    and (when an unencoded `/`, `@`, `:`, `?` or `#` made libpq read it as host, port or
    database) its pieces."""
    found: list[str] = []
    prefix = _URI_PREFIX.match(url)
    if prefix:
        rest = url[prefix.end() :]
        for end in {rest.find("@"), rest.rfind("@")} - {-1}:
            userinfo = rest[:end]
            if ":" in userinfo:
                password = userinfo.partition(":")[2]
                found.append(password)
                found.extend(p for p in _URI_DELIMITERS.split(password) if len(p) >= 3)
    for match in _KEYWORD_PASSWORD.finditer(url):
        value = match.group(1) if match.group(1) is not None else match.group(2)
        found.append(value)
        found.append(re.sub(r"\\(.)", r"\1", value))
    forms = {form for raw in found for form in (raw, unquote(raw)) if form}
    return sorted(forms, key=len, reverse=True)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


def _field_names(result: pq.abc.PGresult, connection: Connection, raw_text: bool) -> list[str]:
    names: list[str] = []
    for index in range(result.nfields):
        raw = result.fname(index) or b""
        names.append(
            decode_text(raw) if raw_text else raw.decode(connection.info.encoding, "replace")
        )
    return names


def _is_multi_statement_refusal(exc: psycopg.Error) -> bool:
    """The extended protocol's refusal of several statements ("cannot insert multiple
    commands into a prepared statement"), told apart from a syntax error in one statement,
    which always carries a position."""
    primary = exc.diag.message_primary or ""
    return "multiple commands" in primary or exc.diag.statement_position is None


def _still_open(connection: Connection) -> bool:
    """Whether an idle pooled connection can take a job.

    An idle connection hears from the server only when the server is ending it (the FATAL
    of a restart, an idle timeout or pg_terminate_backend, then end of file), so anything
    waiting on the socket means "discard": no round trip needed, and no race with the
    server's exit, which may send the FATAL a moment before it closes the socket.
    """
    if connection.closed or connection.broken:
        return False
    pgconn = connection.pgconn
    if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    try:
        return not _readable(pgconn.socket)
    except (psycopg.Error, OSError, ValueError):
        return False


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _stop_quietly(connection: Connection) -> None:
    """Ask the server to stop a statement whose remaining rows are not wanted; the
    connection is closed right after, so this only spares the server the work."""
    try:
        connection.cancel_safe(timeout=CANCEL_REQUEST_TIMEOUT_SECS)
    except Exception as exc:  # closing the connection stops it anyway
        log.debug("cancel of an abandoned result failed: %s", exc)


def _close_quietly(connection: Connection) -> None:
    try:
        connection.close()
    except Exception as exc:  # the connection is being thrown away
        log.debug("closing a connection failed: %s", exc)
