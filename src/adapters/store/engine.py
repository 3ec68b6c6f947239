"""The store's SQLAlchemy engine: SQLite (embedded default) or PostgreSQL (scale-out).

SQLite, per connection: `journal_mode=WAL` (readers never block the writer),
`busy_timeout=5000` (a writer waits for the lock instead of failing at once),
`foreign_keys=ON` (off by default in SQLite), `check_same_thread=False` (pooled connections
move between threads). pysqlite's own transaction handling is switched off and SQLAlchemy's
`begin` event issues the BEGIN itself (the recipe from SQLAlchemy's SQLite dialect docs),
so that every transaction is `BEGIN IMMEDIATE`: it takes the write lock up front, which is
what serialises writers (and the audit chain) and what keeps two read-then-write
transactions from deadlocking on a lock upgrade. A connection that only reads can ask for
a plain deferred `BEGIN` with the `READ_ONLY` execution option (`read_only(engine)`), so long
reads such as audit verification do not hold the write lock.

The SQLite pool hands out the connection returned last (LIFO): in WAL mode a connection drops its
whole page cache when another connection committed since its own last transaction, so the
event loop, which runs most store work one session after the other, keeps reusing one
connection whose cache stays warm (about 100 page reads a request fewer).

PostgreSQL: the psycopg 3 driver, `pool_pre_ping`, and READ COMMITTED pinned explicitly:
the audit chain append (`audit_log.append_event`) reads the chain head after taking an
advisory lock, which sees the previous holder's commit only under READ COMMITTED.

Both engines connect with `prepared.PreparedConnection`, which runs the request path's
marked statements (and SQLite's BEGIN) on the DBAPI cursor. Both are created with
`hide_parameters=True`: bound parameters (a request's SQL, token hashes, result keys) never
appear in SQLAlchemy's log lines or exception messages, which end up in the server log.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from adapters.store.prepared import PreparedConnection

#: Execution option: on SQLite, begin with a deferred `BEGIN` instead of `BEGIN IMMEDIATE`.
#: Only for connections that never write. No effect on PostgreSQL.
READ_ONLY = "dbward_read_only"

#: How long an SQLite writer waits for the write lock before `database is locked`.
BUSY_TIMEOUT_MS = 5000
#: Pause between tries of a WAL switch that found the database locked.
_WAL_RETRY_SECS = 0.01

_POSTGRES_DRIVERS = ("postgres", "postgresql", "postgresql+psycopg")
_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")


def create_store_engine(
    url: str, *, background_checkpoints: bool = False, **engine_kwargs: Any
) -> Engine:
    """An engine for `sqlite:///path` or `postgresql://…` (rewritten to psycopg 3).

    `engine_kwargs` go to `sqlalchemy.create_engine` (pool sizes, `echo`, …).
    `background_checkpoints` (SQLite only): no commit copies the WAL back into the
    database (`wal_autocheckpoint = 0`); the caller runs `WalCheckpointer`
    (adapters/store/sqlite_calls.py) instead.
    """
    parsed = make_url(url)
    if parsed.drivername in _SQLITE_DRIVERS:
        engine = _sqlite_engine(parsed, engine_kwargs)
        if background_checkpoints:
            event.listen(engine, "connect", _no_autocheckpoint)
    elif parsed.drivername in _POSTGRES_DRIVERS:
        engine = _postgres_engine(parsed, engine_kwargs)
    else:
        raise ValueError(
            f"unsupported store URL scheme {parsed.drivername!r}: "
            "use sqlite:///<path> or postgresql://user@host/db"
        )
    engine._connection_cls = PreparedConnection
    return engine


def read_only(engine: Engine) -> Engine:
    """The same engine and pool, but its SQLite transactions begin deferred (`BEGIN`)."""
    reader = engine.execution_options(**{READ_ONLY: True})
    reader._connection_cls = engine._connection_cls
    return reader


def _postgres_engine(url: URL, engine_kwargs: dict[str, Any]) -> Engine:
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "isolation_level": "READ COMMITTED",
        "hide_parameters": True,
    }
    options.update(engine_kwargs)
    return create_engine(url.set(drivername="postgresql+psycopg"), **options)


def _sqlite_engine(url: URL, engine_kwargs: dict[str, Any]) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(url.query):
        raise ValueError(
            "the SQLite store needs a file (sqlite:///path/to/dbward.db): an in-memory "
            "database is private to one connection and cannot use WAL"
        )
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    connect_args.update(engine_kwargs.pop("connect_args", {}))
    engine_kwargs.setdefault("hide_parameters", True)
    engine_kwargs.setdefault("pool_use_lifo", True)
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"), connect_args=connect_args, **engine_kwargs
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # Take BEGIN away from pysqlite (it would issue a deferred BEGIN lazily, and COMMIT
    # before DDL); `_sqlite_on_begin` issues it instead. COMMIT/ROLLBACK still work.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys = ON")
        mode = _switch_to_wal(cursor)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL journal mode (got {mode!r})")
        # WAL + NORMAL: commits never corrupt the database and survive a process crash;
        # only a power loss may drop the last transactions. FULL would fsync every claim
        # and heartbeat, the main cost on the dispatch path (SQLite's documented pairing).
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _no_autocheckpoint(dbapi_connection: Any, _connection_record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint = 0")


def _locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


@retry(
    retry=retry_if_exception(_locked),
    wait=wait_fixed(_WAL_RETRY_SECS),
    stop=stop_after_delay(BUSY_TIMEOUT_MS / 1000),
    reraise=True,
)
def _switch_to_wal(cursor: Any) -> Any:
    """`PRAGMA journal_mode = WAL`, retried while another process holds the lock.

    Switching a fresh database to WAL needs an exclusive lock and SQLite reports "database
    is locked" at once, without its busy handler, when two processes open the new file
    together (two servers starting side by side); once in WAL mode the switch is a no-op.
    So the switch is tried again every few milliseconds for as long as a writer would wait
    (`BUSY_TIMEOUT_MS`); then, or on any other error, the error is raised as it is.
    """
    cursor.execute("PRAGMA journal_mode = WAL")
    return cursor.fetchone()[0]


def _sqlite_on_begin(conn: Connection) -> None:
    begin = "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"
    if isinstance(conn, PreparedConnection):
        conn.execute_text(begin)
    else:
        conn.exec_driver_sql(begin)
