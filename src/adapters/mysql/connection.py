"""Connecting to MySQL/MariaDB with PyMySQL: URL parsing, error classification, KILL QUERY.

Shared by the database adapter and the migrations module. Failures are classified by the
driver's error numbers, never by message text (docs/protocol.md §16 item 17): a wrong
password is hard, a refused connection or a lost server is transient.

A few PyMySQL internals are touched here, and only here, because the public API has no
equivalent: abandoning an unbuffered result without draining it (its `close()` reads every
remaining row, PyMySQL#287), resetting a pooled session (COM_RESET_CONNECTION), switching
multi-statement texts off and on (COM_SET_OPTION), the server status flags that end an
unbuffered result set (PyMySQL drops them), and column charsets (not part of
`cursor.description`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import struct
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pymysql
import pymysql.converters
from pymysql.connections import Connection
from pymysql.constants import CLIENT
from pymysql.protocol import EOFPacketWrapper

from adapters.sql_common.errors import only_database_errors_logged_to
from domain.agent.errors import DatabaseAuthError, DatabaseError, DatabaseUnavailable
from domain.shared.errors import ConfigError

log = logging.getLogger("dbward.agent.mysql")

DEFAULT_PORT = 3306
#: Upper bound for the side connection that delivers a KILL QUERY.
KILL_TIMEOUT_SECS = 5.0

# Server error numbers (MySQL and MariaDB share the 1xxx range).
ER_DBACCESS_DENIED = 1044
ER_ACCESS_DENIED = 1045
ER_HOST_NOT_PRIVILEGED = 1130
ER_ACCESS_DENIED_NO_PASSWORD = 1698
ER_MUST_CHANGE_PASSWORD_LOGIN = 1862
ER_CON_COUNT = 1040
ER_SERVER_SHUTDOWN = 1053
ER_NO_SUCH_THREAD = 1094
ER_HOST_IS_BLOCKED = 1129
ER_ABORTING_CONNECTION = 1152
ER_NET_READ_ERROR = 1158
ER_NET_READ_INTERRUPTED = 1159
ER_NET_ERROR_ON_WRITE = 1160
ER_NET_WRITE_INTERRUPTED = 1161
ER_QUERY_INTERRUPTED = 1317
ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792
ER_CONNECTION_KILLED = 1927  # MariaDB: "Connection was killed"
ER_STATEMENT_TIMEOUT = 1969  # MariaDB: max_statement_time exceeded
ER_QUERY_TIMEOUT = 3024  # MySQL: max_execution_time exceeded
ER_CLIENT_INTERACTION_TIMEOUT = 4031  # MySQL 8.0.24+: idle connection closed by the server

#: Credentials or grants are wrong: retrying cannot help, so the agent stops (hard error).
AUTH_ERRORS = frozenset(
    {
        ER_ACCESS_DENIED,
        ER_DBACCESS_DENIED,
        ER_HOST_NOT_PRIVILEGED,
        ER_ACCESS_DENIED_NO_PASSWORD,
        ER_MUST_CHANGE_PASSWORD_LOGIN,
    }
)

#: The connection or the server is gone or refusing for now: transient, feeds degraded mode.
#: Every client-side error (2000-2999: refused, DNS, timeout, lost, SSL) counts as well.
CONNECTIVITY_ERRORS = frozenset(
    {
        ER_CON_COUNT,
        ER_SERVER_SHUTDOWN,
        ER_HOST_IS_BLOCKED,
        ER_ABORTING_CONNECTION,
        ER_NET_READ_ERROR,
        ER_NET_READ_INTERRUPTED,
        ER_NET_ERROR_ON_WRITE,
        ER_NET_WRITE_INTERRUPTED,
        ER_CONNECTION_KILLED,
        ER_CLIENT_INTERACTION_TIMEOUT,
    }
)

#: The server stopped a statement at its own time limit.
SERVER_TIMEOUT_ERRORS = frozenset({ER_STATEMENT_TIMEOUT, ER_QUERY_TIMEOUT})

_SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
#: Options of dbward 0.2's (sqlx) URLs that mean nothing here but must not break a config.
_IGNORED_OPTIONS = frozenset({"statement-cache-capacity"})

#: PyMySQL's escapers without its decoders: values arrive as the server's raw text.
_ENCODERS_ONLY: dict[int | type[Any], Any] = {
    key: value for key, value in pymysql.converters.conversions.items() if not isinstance(key, int)
}

COM_RESET_CONNECTION = 0x1F
COM_SET_OPTION = 0x1B
_MULTI_STATEMENTS_ON = 0
_MULTI_STATEMENTS_OFF = 1

#: Server status flags (every OK and EOF packet carries them).
SERVER_STATUS_IN_TRANS = 0x0001
#: Set inside a READ ONLY transaction (MySQL 5.7+, MariaDB 10.x).
SERVER_STATUS_IN_TRANS_READONLY = 0x2000

MALFORMED_PERCENT_ENCODING = "invalid database URL: malformed percent-encoding"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class Flavour(Enum):
    MYSQL = "mysql"
    MARIADB = "mariadb"


@dataclass(frozen=True)
class MySqlParams:
    """What a `mysql://` URL says, ready for `pymysql.connect`."""

    host: str
    port: int
    user: str
    password: str
    database: str | None
    unix_socket: str | None = None
    ssl_mode: str = "preferred"
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None

    @property
    def where(self) -> str:
        """Where the server is, for messages (never the password)."""
        place = self.unix_socket or f"{self.host}:{self.port}"
        return f"{self.user}@{place}/{self.database or ''}"


def parse_mysql_url(url: str) -> MySqlParams:
    """`mysql://user:pass@host:port/db?ssl-mode=…&ssl-ca=…&socket=…`.

    User and password are percent-decoded (a password may hold `@` or `/`). Unknown options
    are a config error naming the option, so a typo never silently weakens TLS. No error
    message quotes the URL: a malformed one may have the password where the host or port
    should be.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(
            "invalid MySQL URL: malformed host or port (percent-encode '@', '/', ':' and '%'"
            " in the user name and password)"
        ) from None
    if parts.scheme.lower() != "mysql":
        raise ConfigError(f"not a mysql:// URL (scheme {parts.scheme!r})")
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        options[key.lower().replace("_", "-")] = value
    params: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("ssl-mode", "sslmode"):
            mode = value.lower().replace("-", "_")
            if mode not in _SSL_MODES:
                raise ConfigError(
                    f"invalid ssl-mode {value!r} in the MySQL URL: use one of "
                    + ", ".join(m.upper() for m in _SSL_MODES)
                )
            params["ssl_mode"] = mode
        elif key in ("ssl-ca", "ssl-cert", "ssl-key"):
            params[key.replace("-", "_")] = value
        elif key == "socket":
            params["unix_socket"] = value
        elif key not in _IGNORED_OPTIONS:
            raise ConfigError(
                f"unknown option {key!r} in the MySQL URL "
                "(supported: ssl-mode, ssl-ca, ssl-cert, ssl-key, socket)"
            )
    database = _percent_decoded(parts.path.lstrip("/")) or None
    return MySqlParams(
        host=parts.hostname or "localhost",
        port=port or DEFAULT_PORT,
        user=_percent_decoded(parts.username or ""),
        password=_percent_decoded(parts.password or ""),
        database=database,
        **params,
    )


def _percent_decoded(text: str) -> str:
    """A URL component, percent-decoded strictly: a `%` not followed by two hex digits, or
    bytes that are not UTF-8, are an error that never shows the text (it may be the password).
    """
    if _BAD_PERCENT.search(text):
        raise ConfigError(MALFORMED_PERCENT_ENCODING)
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ConfigError(MALFORMED_PERCENT_ENCODING) from None


def _ssl_arguments(params: MySqlParams) -> dict[str, Any]:
    """PyMySQL TLS arguments for the URL's ssl-mode (MySQL client semantics).

    PREFERRED (the default, as in dbward 0.2) is PyMySQL's own: TLS when offered.
    REQUIRED encrypts without verifying; VERIFY_CA checks the chain; VERIFY_IDENTITY also
    the host name, against `ssl-ca` or the system trust store.
    """
    mode = params.ssl_mode
    if mode == "disabled":
        return {"ssl_disabled": True}
    if mode == "preferred" and not (params.ssl_ca or params.ssl_cert):
        return {}
    context = ssl.create_default_context(cafile=params.ssl_ca)
    if mode in ("preferred", "required"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = mode == "verify_identity"
        context.verify_mode = ssl.CERT_REQUIRED
    if params.ssl_cert:
        context.load_cert_chain(params.ssl_cert, keyfile=params.ssl_key)
    return {"ssl": context}


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number carried by a PyMySQL exception, if any."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def error_text(exc: BaseException) -> str:
    """`<message> (error <n>)`: PyMySQL's args without the tuple punctuation."""
    code = error_code(exc)
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if code is not None and len(args) > 1:
        return f"{args[1]} (error {code})"
    return str(exc) or type(exc).__name__


def is_connectivity_error(exc: BaseException) -> bool:
    """True when the connection itself failed, not the statement."""
    if isinstance(exc, OSError | pymysql.err.InterfaceError):
        return True
    code = error_code(exc)
    if code is None:
        return False
    return code in CONNECTIVITY_ERRORS or 2000 <= code < 3000


def classify_connect_error(exc: BaseException, params: MySqlParams) -> DatabaseError:
    """A failed connect as the agent's error types: auth is hard, unreachable is transient."""
    code = error_code(exc)
    text = error_text(exc)
    if code in AUTH_ERRORS:
        return DatabaseAuthError(f"MySQL rejected the agent's credentials ({params.where}): {text}")
    if is_connectivity_error(exc):
        return DatabaseUnavailable(f"cannot reach MySQL ({params.where}): {text}")
    # Reachable but unusable (unknown database, server-side refusal): not connected either.
    return DatabaseError(f"cannot connect to MySQL ({params.where}): {text}", connectivity=True)


def connect(
    params: MySqlParams,
    *,
    timeout_secs: float,
    raw_values: bool = True,
    multi_statements: bool = True,
    io_timeout_secs: float | None = None,
) -> Connection[Any]:
    """Open one connection; raises the classified `DatabaseError`.

    utf8mb4 so every character survives. `raw_values` keeps values as the server's bytes
    (mysql_values encodes them). FOUND_ROWS makes `rows_affected` count matched rows, as
    PostgreSQL and dbward 0.2 (sqlx) do. TCP keepalive lets a silently dropped network
    surface as an error instead of a read that waits forever.
    """
    flags = CLIENT.FOUND_ROWS | (CLIENT.MULTI_STATEMENTS if multi_statements else 0)
    kwargs: dict[str, Any] = {}
    if raw_values:
        kwargs["use_unicode"] = False
        kwargs["conv"] = _ENCODERS_ONLY
    try:
        conn: Connection[Any] = _CheckedMySqlConnection(
            host=params.host,
            port=params.port,
            user=params.user,
            password=params.password,
            database=params.database,
            unix_socket=params.unix_socket,
            charset="utf8mb4",
            connect_timeout=max(timeout_secs, 0.5),
            # The handshake is bounded too: a server that accepts TCP and never greets
            # must not hang a reconnect probe.
            read_timeout=max(timeout_secs, 0.5),
            write_timeout=max(timeout_secs, 0.5),
            autocommit=True,
            client_flag=flags,
            **_ssl_arguments(params),
            **kwargs,
        )
    except (pymysql.err.Error, OSError) as exc:
        raise classify_connect_error(exc, params) from exc
    set_io_timeout(conn, io_timeout_secs)
    _enable_keepalive(conn)
    return conn


def set_io_timeout(conn: Connection[Any], secs: float | None) -> None:
    """Bound (or unbound, with None) each socket read and write of this connection.

    Statements are stopped by KILL QUERY, not by socket timeouts (an unbuffered read that
    times out leaves PyMySQL's stream unusable, PyMySQL#1032), so pooled connections run
    unbounded; short internal exchanges (handshake, liveness checks) are bounded.
    """
    internal: Any = conn
    internal._read_timeout = secs
    internal._write_timeout = secs


def open_mysql_connection(url: str, *, timeout_secs: float) -> Connection[Any]:
    """A connection for the migrations module: PyMySQL's usual Python values, utf8mb4,
    autocommit on, several statements per `execute` allowed (a migration file runs as one
    text, never re-rendered), FOUND_ROWS. Raises `DatabaseAuthError` / `DatabaseUnavailable`
    / `DatabaseError` like the adapter's own connects.
    """
    return connect(parse_mysql_url(url), timeout_secs=timeout_secs, raw_values=False)


def kill_query(url: str, connection_id: int) -> None:
    """`KILL QUERY <id>` from a fresh connection: stops the statement, keeps the session.

    The id was formatted after `int()`, so nothing else can be smuggled into the text (KILL
    takes no bind parameters). An id that no longer exists means the statement already
    ended: that is success. Other failures raise `DatabaseError`.
    """
    kill_query_with(parse_mysql_url(url), connection_id)


def kill_query_with(params: MySqlParams, connection_id: int) -> None:
    statement = f"KILL QUERY {int(connection_id)}"
    conn = connect(
        params,
        timeout_secs=KILL_TIMEOUT_SECS,
        multi_statements=False,
        io_timeout_secs=KILL_TIMEOUT_SECS,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    except pymysql.err.Error as exc:
        if error_code(exc) != ER_NO_SUCH_THREAD:
            raise DatabaseError(f"{statement} failed: {error_text(exc)}") from exc
    finally:
        close_quietly(conn)


def detect_flavour(conn: Connection[Any]) -> Flavour:
    """MariaDB and MySQL differ in timeout variables and catalog tables; ask once."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        row = cursor.fetchone()
    version = row[0] if row else b""
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return Flavour.MARIADB if "mariadb" in str(version).lower() else Flavour.MYSQL


def reset_session(conn: Connection[Any]) -> None:
    """COM_RESET_CONNECTION: roll back, and drop what a job's SQL left in the session.

    A pooled connection runs arbitrary approved SQL; without a reset, a user's
    `SET SESSION foreign_key_checks = 0`, `SET @x`, a temporary table or a GET_LOCK would
    follow the connection into the next job. PyMySQL has no public call for this command
    (MySQL 5.7.3+, MariaDB 10.2.4+); on any failure the caller discards the connection.
    """
    internal: Any = conn
    internal._execute_command(COM_RESET_CONNECTION, b"")
    internal._read_ok_packet()


def result_fields(cursor: Any) -> list[Any]:
    """Column descriptors of the current result set, charset included (`description` lacks it)."""
    result = getattr(cursor, "_result", None)
    return list(getattr(result, "fields", None) or ())


def result_warning_count(cursor: Any) -> int:
    """Warnings of the result just read (an unbuffered result learns them at its end)."""
    result = getattr(cursor, "_result", None)
    count = getattr(result, "warning_count", None)
    if count is None:
        count = getattr(cursor, "warning_count", 0)
    return int(count or 0)


def abandon(conn: Connection[Any], cursor: Any | None = None) -> None:
    """Close a connection whose unbuffered result was not read to the end, without draining.

    PyMySQL's cursor `close()` (also run by `__del__`) reads every remaining row; on a
    killed or truncated million-row result that is the wait this avoids. The server sees
    the socket close and rolls back the open transaction.
    """
    internal: Any = conn
    for owner in (cursor, internal):
        result = getattr(owner, "_result", None) if owner is not None else None
        if result is not None:
            result.unbuffered_active = False
            result.has_next = False
    if cursor is not None:
        cursor.connection = None
    close_quietly(conn)


if TYPE_CHECKING:
    _ConnectionBase = Connection[Any]
else:  # PyMySQL's class is generic only in its stubs
    _ConnectionBase = Connection


class _CheckedMySqlConnection(_ConnectionBase):
    """PyMySQL's connection, refusing SQL it cannot send with an error of its own kind.

    PyMySQL encodes the text with `str.encode`, so a lone surrogate (which the signed JSON
    can carry) would escape as `UnicodeEncodeError` from every path, the migration runner's
    included. Raised as a PyMySQL `DataError` instead, it is reported like any statement
    the server refused, and the connection stays usable (nothing was sent).
    """

    def query(self, sql: Any, unbuffered: bool = False) -> int:
        if isinstance(sql, str):
            sql = encode_sql(sql, self.encoding, self.charset)
        result: int = super().query(sql, unbuffered=unbuffered)
        return result


def encode_sql(sql: str, encoding: str, charset: str) -> bytes:
    try:
        return sql.encode(encoding)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise pymysql.err.DataError(
            f"the SQL cannot be encoded in the database encoding {charset}:"
            f" {bad!r} at position {exc.start}"
        ) from None


def set_multi_statements(conn: Connection[Any], enabled: bool) -> None:
    """COM_SET_OPTION: allow (or refuse) several statements in one query text.

    With multi-statements off the server refuses such a text whole, as a syntax error,
    before running any of it. The setting outlives COM_RESET_CONNECTION, so whoever turns
    it off turns it back on before the connection is reused.
    """
    internal: Any = conn
    option = _MULTI_STATEMENTS_ON if enabled else _MULTI_STATEMENTS_OFF
    internal._execute_command(COM_SET_OPTION, struct.pack("<H", option))
    internal._read_packet()  # EOF (or OK); an ERR packet raises


def server_status(conn: Connection[Any]) -> int:
    """The status flags of the last OK or (see `follow_server_status`) EOF packet."""
    internal: Any = conn
    return int(internal.server_status or 0)


def follow_server_status(cursor: Any) -> None:
    """Keep `conn.server_status` current through the unbuffered result set being read.

    PyMySQL updates it from OK packets only; the EOF packet that ends a result set carries
    the flags too, and it drops them. This hooks the current result object, and only it.
    """
    result = getattr(cursor, "_result", None)
    if result is None or not getattr(result, "unbuffered_active", False):
        return

    def eof_with_status(packet: Any) -> bool:
        if not packet.is_eof_packet():
            return False
        wrapper = EOFPacketWrapper(packet)
        result.warning_count = wrapper.warning_count
        result.has_next = wrapper.has_next
        result.server_status = wrapper.server_status & 0xFFFF
        if result.connection is not None:
            result.connection.server_status = result.server_status
        return True

    result._check_packet_is_eof = eof_with_status


#: The `DatabasePort` contract: callers see `DatabaseError` types and nothing else.
only_database_errors = only_database_errors_logged_to(log)


def shutdown_socket(conn: Connection[Any]) -> None:
    """Wake a thread blocked reading from this connection (it then sees a lost connection).

    The last resort when a KILL QUERY could not be delivered: the reading thread must not
    wait forever on a server that will never answer.
    """
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def close_quietly(conn: Connection[Any]) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _enable_keepalive(conn: Connection[Any]) -> None:
    sock = getattr(conn, "_sock", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # Linux names; other platforms keep their defaults.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
