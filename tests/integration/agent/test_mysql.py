"""MySqlDatabase against a real MySQL/MariaDB (docs/protocol.md §5.3-§5.6, §8, §9.3, §16).

Each test gets a fresh database (the `mysql_database` fixture). Tests wait for states by
polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import pymysql
import pytest
from pymysql.constants import CLIENT
from pymysql.cursors import SSCursor

from adapters.mysql.connection import (
    SERVER_STATUS_IN_TRANS,
    Flavour,
    connect,
    follow_server_status,
    parse_mysql_url,
    server_status,
)
from adapters.mysql.database import MySqlDatabase
from adapters.mysql.lexer import has_multiple_statements, statements
from adapters.sql_common.errors import TRANSACTION_CONTROL_REFUSED
from application.agent.cancellation import CancelReason, CancelToken
from domain.agent.errors import (
    DatabaseAuthError,
    DatabaseError,
    DatabaseUnavailable,
    PartialMigrationError,
    QueryCancelled,
    QueryTimeout,
)
from domain.agent.result_limits import ResultLimits
from domain.shared.errors import ConfigError
from domain.shared.operations import Operation
from tests.integration.agent_process import wait_until

pytestmark = pytest.mark.integration

LIMITS = ResultLimits(max_rows=10_000, max_bytes=10 * 1024 * 1024)
SERVER_QUERY_NO_INDEX_USED = 0x0020


# --- helpers -------------------------------------------------------------------------------


def _admin(url: str, *, database: bool = True) -> pymysql.connections.Connection[Any]:
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=(parts.path.lstrip("/") or None) if database else None,
        autocommit=True,
        charset="utf8mb4",
    )


class Admin:
    """A plain side connection to set up fixtures and watch the server."""

    def __init__(self, url: str) -> None:
        self.conn = _admin(url)

    def run(self, *statements: str) -> None:
        with self.conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def rows(self, sql: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def running(self, marker: str) -> list[int]:
        """Connection ids whose current statement contains `marker`."""
        rows = self.rows(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
            (f"%{marker}%",),
        )
        return [int(row[0]) for row in rows]

    def close(self) -> None:
        self.conn.close()


def result(output_data: str) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(output_data)
    return parsed


def marker() -> str:
    return f"mk_{uuid.uuid4().hex[:10]}"


class Background:
    """Runs a call on a thread and keeps its outcome."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.value = call()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call did not return"


@pytest.fixture
def admin(mysql_database: str) -> Iterator[Admin]:
    side = Admin(mysql_database)
    yield side
    side.close()


@pytest.fixture
def db(mysql_database: str) -> Iterator[MySqlDatabase]:
    database = MySqlDatabase(mysql_database)
    database.connect(5)
    yield database
    database.close()


def select(db: MySqlDatabase, *statements: str, limits: ResultLimits = LIMITS) -> dict[str, Any]:
    output = db.execute_select(list(statements), 10, limits, CancelToken())
    data = result(output.result_data)
    assert output.truncated is data["truncated"]
    return data


def _lift_server_limit(db: MySqlDatabase) -> str:
    if db.flavour is Flavour.MARIADB:
        return "SET SESSION max_statement_time = 0"
    return "SET SESSION max_execution_time = 0"


# --- value encoding ------------------------------------------------------------------------

TYPES_DDL = """
CREATE TABLE types (
  id INT PRIMARY KEY,
  ti TINYINT, si SMALLINT, mi MEDIUMINT, i INT, bi BIGINT, bu BIGINT UNSIGNED,
  f FLOAT, d DOUBLE, dec30 DECIMAL(30,10),
  dt DATE, dtm DATETIME(6), ts TIMESTAMP NULL, tm TIME, yr YEAR,
  c CHAR(5), vc VARCHAR(50), tx TEXT, en ENUM('small','large'), st SET('a','b','c'),
  js JSON, bl BLOB, vb VARBINARY(8), bn BINARY(3), bt BIT(8), bo BOOLEAN, nul INT NULL
)
"""


def test_every_documented_type_round_trips_to_its_json(db: MySqlDatabase, admin: Admin) -> None:
    admin.run(
        TYPES_DDL,
        "INSERT INTO types VALUES (1, -128, -32768, -8388608, -2147483648, "
        "-9223372036854775808, 18446744073709551615, 1.5, 0.1, "
        "12345678901234567890.0123456789, '2024-02-29', '2024-01-02 03:04:05.123456', "
        "'2024-01-02 03:04:05', '-838:59:59', 2024, 'héllo', '日本語 ✓', 'emoji 😀', "
        "'large', 'a,c', '{\"a\": [1, 2.5, \"x\"], \"b\": null}', x'00ff80', x'c328', x'01', "
        "b'10100101', TRUE, NULL)",
        "INSERT INTO types VALUES (2, 127, 32767, 8388607, 2147483647, 9223372036854775807, "
        "9223372036854775808, -0.25, 1e300, -0.0000000001, '1000-01-01', "
        "'9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', '838:59:59', 1901, '', '', '', "
        "'small', '', '[]', x'', x'', x'000000', b'0', FALSE, NULL)",
        "INSERT INTO types (id, bo) VALUES (3, 5)",
    )
    data = select(db, "SELECT * FROM types ORDER BY id")
    json_value: Any = (
        '{"a": [1, 2.5, "x"], "b": null}'  # MariaDB: JSON is LONGTEXT on the wire
        if db.flavour is Flavour.MARIADB
        else {"a": [1, 2.5, "x"], "b": None}
    )
    assert data["rows"][0] == {
        "id": 1,
        "ti": -128,
        "si": -32768,
        "mi": -8388608,
        "i": -2147483648,
        "bi": -9223372036854775808,
        "bu": "18446744073709551615",
        "f": 1.5,
        "d": 0.1,
        "dec30": "12345678901234567890.0123456789",
        "dt": "2024-02-29",
        "dtm": "2024-01-02 03:04:05.123456",
        "ts": "2024-01-02 03:04:05",
        "tm": "-838:59:59",
        "yr": "2024",
        "c": "héllo",
        "vc": "日本語 ✓",
        "tx": "emoji 😀",
        "en": "large",
        "st": "a,c",
        "js": json_value,
        "bl": "\\x00ff80",
        "vb": "\\xc328",
        "bn": "\\x010000",
        "bt": "\\xa5",
        "bo": True,
        "nul": None,
    }
    assert data["rows"][1] == {
        "id": 2,
        "ti": 127,
        "si": 32767,
        "mi": 8388607,
        "i": 2147483647,
        "bi": 9223372036854775807,
        "bu": "9223372036854775808",
        "f": -0.25,
        "d": 1e300,
        "dec30": "-0.0000000001",
        "dt": "1000-01-01",
        "dtm": "9999-12-31 23:59:59.999999",
        "ts": "2038-01-19 03:14:07",
        "tm": "838:59:59",
        "yr": "1901",
        "c": "",
        "vc": "",
        "tx": "",
        "en": "small",
        "st": "",
        "js": "[]" if db.flavour is Flavour.MARIADB else [],
        "bl": "\\x",
        "vb": "\\x",
        "bn": "\\x000000",
        "bt": "\\x00",
        "bo": False,
        "nul": None,
    }
    # TINYINT(1) is only a display width: a stored 5 stays 5, never silently false.
    assert data["rows"][2]["bo"] == 5
    assert all(value is None for key, value in data["rows"][2].items() if key not in ("id", "bo"))
    assert [c["type"] for c in data["columns"]] == [
        "LONG", "TINY", "SHORT", "INT24", "LONG", "LONGLONG", "LONGLONG",
        "FLOAT", "DOUBLE", "NEWDECIMAL",
        "DATE", "DATETIME", "TIMESTAMP", "TIME", "YEAR",
        "STRING", "VAR_STRING", "BLOB", "STRING", "STRING",
        "BLOB" if db.flavour is Flavour.MARIADB else "JSON",
        "BLOB", "VAR_STRING", "STRING", "BIT", "TINY", "LONG",
    ]  # fmt: skip


def test_columns_metadata_is_ordered_and_keeps_duplicates(db: MySqlDatabase) -> None:
    data = select(db, "SELECT 1 AS a, 'x' AS b, 2.5 AS a, NULL AS n")
    assert data["columns"] == [
        {"name": "a", "type": "LONG"},
        {"name": "b", "type": "VAR_STRING"},
        {"name": "a", "type": "NEWDECIMAL"},
        {"name": "n", "type": "NULL"},
    ]
    # Rows are objects: the last duplicate wins, at the first one's position.
    assert data["rows"] == [{"a": "2.5", "b": "x", "n": None}]
    assert list(orjson.loads(orjson.dumps(data))) == [
        "rows",
        "truncated",
        "truncation_reason",
        "columns",
    ]


def test_empty_result_still_describes_its_columns(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT, name VARCHAR(10))")
    data = select(db, "SELECT id, name FROM t")
    assert data == {
        "rows": [],
        "truncated": False,
        "truncation_reason": None,
        "columns": [{"name": "id", "type": "LONG"}, {"name": "name", "type": "VAR_STRING"}],
    }


# --- row and byte limits -------------------------------------------------------------------


@pytest.fixture
def five_rows(admin: Admin) -> None:
    admin.run(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100))",
        "INSERT INTO t VALUES (1,'a'),(2,'b'),(3,'c'),(4,'d'),(5,'e')",
    )


@pytest.mark.usefixtures("five_rows")
def test_exactly_max_rows_is_not_truncated(db: MySqlDatabase) -> None:
    data = select(db, "SELECT id FROM t ORDER BY id", limits=ResultLimits(5, 1_000_000))
    assert [row["id"] for row in data["rows"]] == [1, 2, 3, 4, 5]
    assert data["truncated"] is False
    assert data["truncation_reason"] is None


@pytest.mark.usefixtures("five_rows")
def test_one_row_more_than_max_rows_is_truncated(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("INSERT INTO t VALUES (6, 'f')")
    data = select(db, "SELECT id FROM t ORDER BY id", limits=ResultLimits(5, 1_000_000))
    assert [row["id"] for row in data["rows"]] == [1, 2, 3, 4, 5]
    assert data["truncated"] is True
    assert data["truncation_reason"] == "row limit reached (5)"


def test_byte_cap_is_never_exceeded_and_is_used(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100))")
    admin.run(*(f"INSERT INTO t VALUES ({n}, REPEAT('x', 50))" for n in range(1, 101)))
    max_bytes = 2000
    output = db.execute_select(
        ["SELECT id, v FROM t ORDER BY id"], 10, ResultLimits(1000, max_bytes), CancelToken()
    )
    encoded = output.result_data.encode()
    data = result(output.result_data)
    assert output.truncated is True
    assert data["truncation_reason"] == f"size limit reached ({max_bytes} bytes)"
    assert len(encoded) <= max_bytes
    n = len(data["rows"])
    assert [row["id"] for row in data["rows"]] == list(range(1, n + 1))
    next_row = orjson.dumps({"id": n + 1, "v": "x" * 50})
    # The next row would have crossed the cap (one byte of slack: "false" was reserved).
    assert len(encoded) + 1 + len(next_row) > max_bytes - 1


def test_a_cap_too_small_for_any_row_returns_no_rows(db: MySqlDatabase) -> None:
    output = db.execute_select(
        ["SELECT REPEAT('x', 500) AS v"], 10, ResultLimits(10, 200), CancelToken()
    )
    data = result(output.result_data)
    assert data["rows"] == []
    assert data["truncation_reason"] == "size limit reached (200 bytes)"
    assert len(output.result_data.encode()) <= 200


def test_truncation_does_not_drain_a_huge_result(db: MySqlDatabase, admin: Admin) -> None:
    admin.run(
        "CREATE TABLE d (n INT)",
        "INSERT INTO d VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)",
    )
    tag = marker()
    sql = (
        f"SELECT a.n + 10*b.n + 100*c.n + 1000*e.n + 10000*f.n + 100000*g.n AS n, '{tag}' AS m "
        "FROM d a, d b, d c, d e, d f, d g"
    )  # a million rows
    started = time.monotonic()
    output = db.execute_select([sql], 30, ResultLimits(10, 10_000_000), CancelToken())
    elapsed = time.monotonic() - started
    data = result(output.result_data)
    assert len(data["rows"]) == 10
    assert data["truncation_reason"] == "row limit reached (10)"
    assert elapsed < 2.0, f"took {elapsed:.2f}s: the rest of the result was drained"
    wait_until(lambda: not admin.running(tag), 3, "the truncated query to stop")


# --- multi-statement rules and read-only ----------------------------------------------------


def test_signed_statements_run_in_order_in_one_session(db: MySqlDatabase) -> None:
    data = select(db, "SET @x = 5", "SELECT @x + 1 AS x")
    assert data["rows"] == [{"x": 6}]


def test_one_text_with_several_statements_is_refused_in_the_select_path(
    db: MySqlDatabase, admin: Admin
) -> None:
    """Multi-statement texts are off for SELECT plans: the server refuses the text whole, so
    a statement inside it can never run after a COMMIT before the agent could check."""
    with pytest.raises(DatabaseError, match="one SQL statement per signed statement"):
        select(db, "SELECT 1 AS a; SELECT 'b' AS b")
    # Multi-statement support is back for the next DML job on the same pooled connection.
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)")
    output = db.execute_dml(
        ["INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"], 10, LIMITS, CancelToken()
    )
    assert output.rows_affected == 2


#: Plans that tried to leave the read-only transaction or the read-only session. Before the
#: fix, those marked "wrote" inserted a row or created a table.
MYSQL_TRANSACTION_ESCAPES = {
    "commit, read write, insert": [
        "COMMIT",
        "SET SESSION TRANSACTION READ WRITE",
        "INSERT INTO t VALUES (9, 'z')",
    ],
    "commit, read write, ddl": [
        "COMMIT",
        "SET SESSION TRANSACTION READ WRITE",
        "CREATE TABLE leaked (a INT)",
    ],
    # (wrote) DDL commits the read-only transaction implicitly, then runs read-write.
    "read write session, ddl": [
        "SET SESSION TRANSACTION READ WRITE",
        "CREATE TABLE leaked (a INT)",
    ],
    "rollback, read write, new transaction": [
        "ROLLBACK",
        "SET SESSION TRANSACTION READ WRITE",
        "START TRANSACTION",
        "INSERT INTO t VALUES (9, 'z')",
        "COMMIT",
    ],
    "start transaction read write": [
        "START TRANSACTION READ WRITE",
        "INSERT INTO t VALUES (9, 'z')",
        "COMMIT",
    ],
    "commit and chain, read write, ddl": [
        "COMMIT AND CHAIN",
        "SET SESSION TRANSACTION READ WRITE",
        "CREATE TABLE leaked (a INT)",
    ],
    "commit as the last statement": ["SELECT 1", "COMMIT"],
    "commit, insert": ["COMMIT", "INSERT INTO t VALUES (9, 'z')"],
}


@pytest.mark.parametrize(
    "plan", MYSQL_TRANSACTION_ESCAPES.values(), ids=MYSQL_TRANSACTION_ESCAPES.keys()
)
@pytest.mark.usefixtures("five_rows")
def test_transaction_control_in_a_select_plan_is_refused_and_nothing_is_written(
    db: MySqlDatabase, admin: Admin, plan: list[str]
) -> None:
    with pytest.raises(DatabaseError) as caught:
        db.execute_select(plan, 10, LIMITS, CancelToken())
    assert str(caught.value) == (
        "query failed: transaction control is not allowed in a read-only query"
    )
    assert not caught.value.connectivity
    assert admin.rows("SELECT COUNT(*) FROM t") == [(5,)]
    assert admin.rows("SHOW TABLES LIKE 'leaked'") == []
    # The next job gets a clean, read-only session.
    assert select(db, "SELECT COUNT(*) AS n FROM t")["rows"] == [{"n": 5}]
    with pytest.raises(DatabaseError, match="READ ONLY"):
        db.execute_select(["INSERT INTO t VALUES (10, 'y')"], 10, LIMITS, CancelToken())


@pytest.mark.parametrize(
    "plan",
    [
        ["COMMIT; SET SESSION TRANSACTION READ WRITE; INSERT INTO t VALUES (9, 'z')"],
        ["SELECT 1; COMMIT; SET SESSION TRANSACTION READ WRITE; CREATE TABLE leaked (a INT)"],
        ["SET SESSION TRANSACTION READ WRITE; CREATE TABLE leaked (a INT)"],
    ],
    ids=["commit, read write, insert", "select, commit, read write, ddl", "read write, ddl"],
)
@pytest.mark.usefixtures("five_rows")
def test_the_same_escapes_in_one_text_are_refused_by_the_server(
    db: MySqlDatabase, admin: Admin, plan: list[str]
) -> None:
    with pytest.raises(DatabaseError, match="one SQL statement per signed statement"):
        db.execute_select(plan, 10, LIMITS, CancelToken())
    assert admin.rows("SELECT COUNT(*) FROM t") == [(5,)]
    assert admin.rows("SHOW TABLES LIKE 'leaked'") == []


@pytest.mark.parametrize(
    "statement",
    [
        "SET STATEMENT tx_read_only = 0 FOR CREATE TABLE leaked (a INT)",
        "SET STATEMENT `tx_read_only`=0 FOR CREATE TABLE leaked (a INT)",
        "/*!SET STATEMENT tx_read_only=0 FOR*/ CREATE TABLE leaked (a INT)",
        "set statement transaction_read_only=0 for create table leaked (a INT)",
    ],
)
def test_a_statement_that_lifts_read_only_for_itself_is_refused(
    db: MySqlDatabase, admin: Admin, statement: str
) -> None:
    """MariaDB's `SET STATEMENT tx_read_only=0 FOR <DDL>` writes in one statement, before any
    check after it could run: refused before it is sent."""
    with pytest.raises(DatabaseError, match="read-only mode cannot be changed"):
        db.execute_select([statement], 10, LIMITS, CancelToken())
    assert admin.rows("SHOW TABLES LIKE 'leaked'") == []


@pytest.mark.usefixtures("five_rows")
def test_a_procedure_that_commits_is_caught_before_the_next_statement(
    db: MySqlDatabase, admin: Admin
) -> None:
    """The flags come from the packet that ends the CALL: out of our transaction, stop.

    (What a procedure does inside itself cannot be checked from outside; a read-only
    account is the only guard against a procedure that writes.)
    """
    admin.run("CREATE PROCEDURE ends_the_transaction() BEGIN COMMIT; SELECT 1 AS one; END")
    with pytest.raises(DatabaseError) as caught:
        db.execute_select(
            [
                "CALL ends_the_transaction()",
                "SET SESSION TRANSACTION READ WRITE",
                "INSERT INTO t VALUES (9, 'z')",
            ],
            10,
            LIMITS,
            CancelToken(),
        )
    assert str(caught.value) == TRANSACTION_CONTROL_REFUSED
    assert admin.rows("SELECT COUNT(*) FROM t") == [(5,)]


def test_the_status_flags_follow_the_end_of_an_unbuffered_result_set(
    mysql_database: str, admin: Admin
) -> None:
    """PyMySQL drops the flags of the EOF packet that ends a result set; the adapter keeps
    them (here: "no index used", which only a table scan's EOF carries)."""
    admin.run("CREATE TABLE scan (a INT)", "INSERT INTO scan VALUES (1), (2)")
    conn = connect(parse_mysql_url(mysql_database), timeout_secs=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute("START TRANSACTION READ ONLY")
        before = server_status(conn)
        streaming = conn.cursor(SSCursor)
        streaming.execute("SELECT a FROM scan")
        follow_server_status(streaming)
        assert [row for row in streaming.fetchall_unbuffered()] == [(b"1",), (b"2",)]
        after = server_status(conn)
        assert not before & SERVER_QUERY_NO_INDEX_USED
        assert after & SERVER_QUERY_NO_INDEX_USED
        assert after & SERVER_STATUS_IN_TRANS
    finally:
        conn.close()


def test_set_then_select_plans_still_work(db: MySqlDatabase) -> None:
    limit = _lift_server_limit(db).replace("= 0", "= 5")
    data = select(db, limit, "SET @x = 1", "SELECT @x AS x, @@SESSION.sql_mode IS NOT NULL AS i")
    assert data["rows"] == [{"x": 1, "i": 1}]


@pytest.mark.parametrize(
    "statements",
    [
        ["INSERT INTO t VALUES (9, 'z')"],
        ["SELECT 1", "INSERT INTO t VALUES (9, 'z')"],
        ["DELETE FROM t"],
    ],
)
@pytest.mark.usefixtures("five_rows")
def test_writes_through_the_select_path_are_refused_by_the_database(
    db: MySqlDatabase, admin: Admin, statements: list[str]
) -> None:
    with pytest.raises(DatabaseError, match="READ ONLY") as caught:
        db.execute_select(statements, 10, LIMITS, CancelToken())
    assert not caught.value.connectivity
    assert admin.rows("SELECT COUNT(*) FROM t") == [(5,)]


def test_ddl_through_the_select_path_is_refused(db: MySqlDatabase, admin: Admin) -> None:
    # DDL commits a read-only *transaction* implicitly and would then run: the session is
    # read-only as well, so the server refuses it.
    with pytest.raises(DatabaseError, match="READ ONLY"):
        db.execute_select(["CREATE TABLE sneaky (a INT)"], 10, LIMITS, CancelToken())
    assert admin.rows("SHOW TABLES LIKE 'sneaky'") == []


def test_session_state_does_not_leak_into_the_next_job(db: MySqlDatabase) -> None:
    first = select(
        db, "SET @leak = 42", "SET SESSION sql_mode = ''", "SELECT CONNECTION_ID() AS id"
    )
    second = select(db, "SELECT @leak AS leak, @@SESSION.sql_mode AS mode, CONNECTION_ID() AS id")
    row = second["rows"][0]
    assert row["id"] == first["rows"][0]["id"], "the pooled connection was reused"
    assert row["leak"] is None
    assert row["mode"] != ""


# --- DML --------------------------------------------------------------------------------------


def test_dml_rows_affected_are_summed(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    output = db.execute_dml(
        ["INSERT INTO t VALUES (1, 0), (2, 0), (3, 0)", "UPDATE t SET v = v + 1 WHERE id >= 2"],
        10,
        LIMITS,
        CancelToken(),
    )
    assert output.rows_affected == 5
    assert result(output.result_data) == {"rows_affected": 5}
    assert admin.rows("SELECT id, v FROM t ORDER BY id") == [(1, 0), (2, 1), (3, 1)]


def test_dml_counts_matched_rows_like_postgresql(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1,0),(2,0)")
    output = db.execute_dml(["UPDATE t SET v = 0"], 10, LIMITS, CancelToken())
    assert output.rows_affected == 2  # matched, though none changed


def test_one_dml_text_with_several_statements_is_summed(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)")
    output = db.execute_dml(
        ["INSERT INTO t VALUES (1); INSERT INTO t VALUES (2), (3)"], 10, LIMITS, CancelToken()
    )
    assert output.rows_affected == 3


def test_insert_returning_gives_its_rows_beside_the_count(db: MySqlDatabase, admin: Admin) -> None:
    # MariaDB 10.5+ has INSERT … RETURNING and DELETE … RETURNING.
    admin.run("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(10))")
    output = db.execute_dml(
        ["INSERT INTO t (note) VALUES ('a'), (NULL) RETURNING id, note"], 10, LIMITS, CancelToken()
    )
    assert output.rows_affected == 2 and output.truncated is False
    data = result(output.result_data)
    assert list(data) == ["rows_affected", "rows", "truncated", "truncation_reason", "columns"]
    assert data["rows"] == [{"id": 1, "note": "a"}, {"id": 2, "note": None}]
    assert [column["name"] for column in data["columns"]] == ["id", "note"]
    assert admin.rows("SELECT COUNT(*) FROM t") == [(2,)]


def test_delete_returning_gives_the_deleted_rows(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1), (2), (3)")
    output = db.execute_dml(["DELETE FROM t WHERE id >= 2 RETURNING id"], 10, LIMITS, CancelToken())
    assert result(output.result_data)["rows"] == [{"id": 2}, {"id": 3}]
    assert output.rows_affected == 2
    assert admin.rows("SELECT id FROM t") == [(1,)]


def test_an_escalated_select_returns_its_value(db: MySqlDatabase) -> None:
    output = db.execute_dml(["SELECT SLEEP(0), 42 AS answer"], 10, LIMITS, CancelToken())
    assert [row["answer"] for row in result(output.result_data)["rows"]] == [42]


def test_select_for_update_returns_the_locked_rows(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1), (2), (3)")
    output = db.execute_dml(
        ["SELECT id FROM t WHERE id <= 2 ORDER BY id FOR UPDATE"], 10, LIMITS, CancelToken()
    )
    assert result(output.result_data)["rows"] == [{"id": 1}, {"id": 2}]


def test_returning_rows_past_the_row_cap_are_cut_but_every_row_is_written(
    db: MySqlDatabase, admin: Admin
) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)")
    values = ", ".join(f"({n})" for n in range(1, 2001))
    output = db.execute_dml(
        [f"INSERT INTO t VALUES {values} RETURNING id"],
        10,
        ResultLimits(max_rows=3, max_bytes=1024 * 1024),
        CancelToken(),
    )
    data = result(output.result_data)
    assert data["rows"] == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert (data["truncated"], data["truncation_reason"]) == (True, "row limit reached (3)")
    assert output.truncated is True and output.rows_affected == 2000
    assert admin.rows("SELECT COUNT(*) FROM t") == [(2000,)]


def test_returning_rows_stop_at_the_byte_cap_and_the_result_stays_within_it(
    db: MySqlDatabase, admin: Admin
) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200))")
    values = ", ".join(f"({n}, REPEAT('x', 100))" for n in range(1, 101))
    output = db.execute_dml(
        [f"INSERT INTO t VALUES {values} RETURNING id, pad"],
        10,
        ResultLimits(max_rows=10_000, max_bytes=2_000),
        CancelToken(),
    )
    data = result(output.result_data)
    assert len(output.result_data.encode()) <= 2_000
    assert data["truncation_reason"] == "size limit reached (2000 bytes)"
    assert [row["id"] for row in data["rows"]] == list(range(1, len(data["rows"]) + 1))
    assert admin.rows("SELECT COUNT(*) FROM t") == [(100,)]


@pytest.mark.parametrize(
    "statements",
    [
        ["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"],
        ["INSERT INTO t VALUES (1); INSERT INTO t VALUES (1)"],
        ["INSERT INTO t VALUES (1)", "UPDATE no_such_table SET x = 1"],
    ],
)
def test_a_failing_second_statement_leaves_no_trace_of_the_first(
    db: MySqlDatabase, admin: Admin, statements: list[str]
) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)")
    with pytest.raises(DatabaseError, match=r"^query failed: ") as caught:
        db.execute_dml(statements, 10, LIMITS, CancelToken())
    assert not caught.value.connectivity
    assert admin.rows("SELECT COUNT(*) FROM t") == [(0,)]
    # The adapter still works afterwards.
    assert (
        db.execute_dml(["INSERT INTO t VALUES (7)"], 10, LIMITS, CancelToken()).rows_affected == 1
    )


# --- timeouts and cancellation --------------------------------------------------------------


def _assert_times_out(call: Callable[[], Any], admin: Admin, tag: str, timeout_secs: int) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        call()
    elapsed = time.monotonic() - started
    assert elapsed < timeout_secs + 2, f"took {elapsed:.2f}s"
    wait_until(lambda: not admin.running(tag), 2, "the statement to leave the process list")


def test_select_past_the_timeout_fails_and_the_query_is_gone(
    db: MySqlDatabase, admin: Admin
) -> None:
    tag = marker()
    _assert_times_out(
        lambda: db.execute_select([f"SELECT SLEEP(5), '{tag}'"], 1, LIMITS, CancelToken()),
        admin,
        tag,
        1,
    )


def test_select_timeout_holds_even_when_the_sql_lifts_the_server_limit(
    db: MySqlDatabase, admin: Admin
) -> None:
    """The client deadline and KILL QUERY stop what the server's own limit no longer would."""
    tag = marker()
    lift = _lift_server_limit(db)
    _assert_times_out(
        lambda: db.execute_select([lift, f"SELECT SLEEP(5), '{tag}'"], 1, LIMITS, CancelToken()),
        admin,
        tag,
        1,
    )


@pytest.mark.parametrize(
    "template",
    [
        "DO SLEEP(5), '{tag}'",
        "UPDATE t SET v = SLEEP(5) WHERE '{tag}' <> ''",
        # No server-side limit at all (as DML on MySQL): only the client deadline stops it.
        "SET SESSION max_statement_time = 0; DO SLEEP(5), '{tag}'",
    ],
)
def test_dml_past_the_timeout_fails_and_the_statement_is_gone(
    db: MySqlDatabase, admin: Admin, template: str
) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 0)")
    tag = marker()
    sql = template.format(tag=tag)
    if db.flavour is Flavour.MYSQL:
        sql = sql.replace("SET SESSION max_statement_time = 0; ", "")
    _assert_times_out(lambda: db.execute_dml([sql], 1, LIMITS, CancelToken()), admin, tag, 1)
    assert admin.rows("SELECT v FROM t") == [(0,)]


def test_timeout_zero_means_no_limit(db: MySqlDatabase) -> None:
    output = db.execute_select(["SELECT SLEEP(1.2) AS s"], 0, LIMITS, CancelToken())
    assert result(output.result_data)["rows"] == [{"s": 0}]


@pytest.mark.parametrize("path", ["select", "dml"])
def test_cancel_while_running_removes_the_query_within_3s(
    db: MySqlDatabase, admin: Admin, path: str
) -> None:
    tag = marker()
    cancel = CancelToken()
    if path == "select":
        job = Background(
            lambda: db.execute_select([f"SELECT SLEEP(30), '{tag}'"], 60, LIMITS, cancel)
        )
    else:
        job = Background(lambda: db.execute_dml([f"DO SLEEP(30), '{tag}'"], 60, LIMITS, cancel))
    wait_until(lambda: bool(admin.running(tag)), 5, "the statement to start")
    cancelled_at = time.monotonic()
    cancel.cancel(CancelReason.SERVER_CANCELLED)
    wait_until(lambda: not admin.running(tag), 3, "the cancelled statement to stop")
    job.join(3)
    assert isinstance(job.error, QueryCancelled)
    assert job.finished_at is not None and job.finished_at - cancelled_at < 3


def test_an_already_cancelled_token_runs_nothing(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)")
    cancel = CancelToken()
    cancel.cancel(CancelReason.SHUTDOWN)
    with pytest.raises(QueryCancelled):
        db.execute_dml(["INSERT INTO t VALUES (1)"], 10, LIMITS, cancel)
    with pytest.raises(QueryCancelled):
        db.execute_select(["SELECT 1"], 10, LIMITS, cancel)
    assert admin.rows("SELECT COUNT(*) FROM t") == [(0,)]


# --- connectivity and authentication -------------------------------------------------------


def test_wrong_password_is_a_hard_auth_error(mysql_url: str) -> None:
    user = f"dbward_{uuid.uuid4().hex[:8]}"
    password = "p@ss/w:rd#1"
    root = _admin(mysql_url, database=False)
    parts = urlsplit(mysql_url)
    netloc_host = f"{parts.hostname}:{parts.port or 3306}"

    def url_with(secret: str) -> str:
        netloc = f"{user}:{quote(secret, safe='')}@{netloc_host}"
        return urlunsplit(("mysql", netloc, "/", "", ""))

    try:
        with root.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        wrong = MySqlDatabase(url_with("not-the-password"))
        with pytest.raises(DatabaseAuthError) as caught:
            wrong.connect(5)
        assert caught.value.is_hard
        assert "not-the-password" not in str(caught.value)
        right = MySqlDatabase(url_with(password))  # percent-decoded: the user really exists
        right.connect(5)
        right.close()
    finally:
        with root.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        root.close()


def test_connection_refused_is_transient_unavailability() -> None:
    database = MySqlDatabase("mysql://root@127.0.0.1:1/test")
    with pytest.raises(DatabaseUnavailable) as caught:
        database.connect(2)
    assert not caught.value.is_hard
    assert caught.value.connectivity


def test_a_connection_killed_mid_query_is_a_connectivity_error_then_connect_recovers(
    db: MySqlDatabase, admin: Admin
) -> None:
    tag = marker()
    job = Background(
        lambda: db.execute_select([f"SELECT SLEEP(30), '{tag}'"], 60, LIMITS, CancelToken())
    )
    wait_until(lambda: bool(admin.running(tag)), 5, "the statement to start")
    (victim,) = admin.running(tag)
    admin.run(f"KILL CONNECTION {victim}")
    job.join(5)
    assert isinstance(job.error, DatabaseError)
    assert not isinstance(job.error, QueryCancelled | QueryTimeout)
    assert job.error.connectivity
    db.connect(5)
    assert select(db, "SELECT 1 AS one")["rows"] == [{"one": 1}]


def test_an_idle_pooled_connection_that_died_is_replaced_transparently(
    db: MySqlDatabase, admin: Admin
) -> None:
    first = select(db, "SELECT CONNECTION_ID() AS id")["rows"][0]["id"]
    admin.run(f"KILL CONNECTION {int(first)}")
    wait_until(
        lambda: (
            not admin.rows("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", (first,))
        ),
        3,
        "the killed connection to go",
    )
    second = select(db, "SELECT CONNECTION_ID() AS id")["rows"][0]["id"]
    assert second != first


# --- schema ---------------------------------------------------------------------------------

SCHEMA_DDL = [
    """CREATE TABLE customers (
         id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
         email VARCHAR(255) NOT NULL,
         name VARCHAR(100) NULL DEFAULT 'anon',
         CONSTRAINT uq_customers_email UNIQUE (email)
       ) ENGINE=InnoDB""",
    """CREATE TABLE orders (
         id INT NOT NULL PRIMARY KEY,
         customer_id INT NOT NULL,
         region CHAR(2) NOT NULL,
         created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
         qty INT NOT NULL DEFAULT 1,
         CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id)
           REFERENCES customers (id) ON DELETE CASCADE,
         CONSTRAINT chk_orders_qty CHECK (qty > 0),
         INDEX idx_orders_region_created (region, created_at)
       ) ENGINE=InnoDB""",
    """CREATE TABLE order_items (
         order_id INT NOT NULL,
         line INT NOT NULL,
         sku VARCHAR(20) NOT NULL,
         PRIMARY KEY (order_id, line),
         CONSTRAINT fk_items_order FOREIGN KEY (order_id)
           REFERENCES orders (id) ON DELETE CASCADE
       ) ENGINE=InnoDB""",
    "CREATE TABLE events (id INT NOT NULL, PRIMARY KEY (id)) PARTITION BY HASH (id) PARTITIONS 2",
    "CREATE VIEW big_orders AS SELECT id, qty FROM orders WHERE qty > 10",
]


def _column(
    name: str,
    data_type: str,
    *,
    nullable: bool = False,
    default: str | None = None,
    pk: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "data_type": data_type,
        "nullable": nullable,
        "default_value": default,
        "is_primary_key": pk,
    }


def _constraint(name: str, kind: str, columns: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "constraint_type": kind,
        "columns": columns,
        "referenced_table": extra.get("referenced_table"),
        "referenced_columns": extra.get("referenced_columns"),
        "on_delete": extra.get("on_delete"),
        "referenced_schema": extra.get("referenced_schema"),
        "definition": extra.get("definition"),
    }


def _index(name: str, columns: list[str], *, unique: bool) -> dict[str, Any]:
    return {"name": name, "columns": columns, "is_unique": unique, "index_type": "btree"}


def test_schema_snapshot_of_a_cascade_chain(
    db: MySqlDatabase, admin: Admin, mysql_database: str
) -> None:
    admin.run(*SCHEMA_DDL)
    schema = urlsplit(mysql_database).path.lstrip("/")
    mariadb = db.flavour is Flavour.MARIADB

    def table(name: str, **fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "name": name,
            "schema_name": schema,
            "estimated_rows": 0,
            "is_view": False,
            "is_partitioned": False,
            "constraints": [],
            "indexes": [],
        }
        base.update(fields)
        base["estimated_rows_known"] = base["estimated_rows"] is not None
        if base["estimated_rows"] is None:
            base["estimated_rows"] = -1
        return {key: base[key] for key in (
            "name", "schema_name", "estimated_rows", "estimated_rows_known", "is_view",
            "is_partitioned", "columns", "constraints", "indexes",
        )}  # fmt: skip

    expected = {
        "tables": [
            table(
                "big_orders",
                estimated_rows=None,
                is_view=True,
                columns=[_column("id", "int"), _column("qty", "int", default="1")],
            ),
            table(
                "customers",
                columns=[
                    _column("id", "int", pk=True),
                    _column("email", "varchar"),
                    _column("name", "varchar", nullable=True,
                            default="'anon'" if mariadb else "anon"),
                ],
                constraints=[
                    _constraint("PRIMARY", "primary_key", ["id"]),
                    _constraint("uq_customers_email", "unique", ["email"]),
                ],
                indexes=[
                    _index("PRIMARY", ["id"], unique=True),
                    _index("uq_customers_email", ["email"], unique=True),
                ],
            ),
            table(
                "events",
                is_partitioned=True,
                columns=[_column("id", "int", pk=True)],
                constraints=[_constraint("PRIMARY", "primary_key", ["id"])],
                indexes=[_index("PRIMARY", ["id"], unique=True)],
            ),
            table(
                "order_items",
                columns=[
                    _column("order_id", "int", pk=True),
                    _column("line", "int", pk=True),
                    _column("sku", "varchar"),
                ],
                constraints=[
                    _constraint("PRIMARY", "primary_key", ["order_id", "line"]),
                    _constraint(
                        "fk_items_order", "foreign_key", ["order_id"],
                        referenced_table="orders", referenced_columns=["id"],
                        on_delete="CASCADE", referenced_schema=schema,
                    ),
                ],
                indexes=[_index("PRIMARY", ["order_id", "line"], unique=True)],
            ),
            table(
                "orders",
                columns=[
                    _column("id", "int", pk=True),
                    _column("customer_id", "int"),
                    _column("region", "char"),
                    _column("created_at", "datetime",
                            default="current_timestamp()" if mariadb else "CURRENT_TIMESTAMP"),
                    _column("qty", "int", default="1"),
                ],
                constraints=[
                    _constraint("PRIMARY", "primary_key", ["id"]),
                    _constraint("chk_orders_qty", "check", [],
                                definition="`qty` > 0" if mariadb else "(`qty` > 0)"),
                    _constraint(
                        "fk_orders_customer", "foreign_key", ["customer_id"],
                        referenced_table="customers", referenced_columns=["id"],
                        on_delete="CASCADE", referenced_schema=schema,
                    ),
                ],
                indexes=[
                    _index("PRIMARY", ["id"], unique=True),
                    _index("fk_orders_customer", ["customer_id"], unique=False),
                    _index("idx_orders_region_created", ["region", "created_at"], unique=False),
                ],
            ),
        ]
    }  # fmt: skip
    snapshot = db.collect_schema()
    # InnoDB's row estimate for an empty partitioned table counts a row per partition.
    events = next(t for t in snapshot["tables"] if t["name"] == "events")
    assert isinstance(events["estimated_rows"], int)
    expected["tables"][2]["estimated_rows"] = events["estimated_rows"]
    assert snapshot == expected
    # Sorted by name, as the server diffs snapshots.
    for entry in snapshot["tables"]:
        assert [c["name"] for c in entry["constraints"]] == sorted(
            c["name"] for c in entry["constraints"]
        )


def test_schema_of_an_empty_database(db: MySqlDatabase) -> None:
    assert db.collect_schema() == {"tables": []}


# --- SQL that cannot be sent, URL errors, failures that must stay DatabaseErrors --------------

NOT_UTF8MB4 = "query failed: the SQL cannot be encoded in the database encoding utf8mb4"


def test_a_lone_surrogate_in_the_sql_is_a_database_error_everywhere(
    db: MySqlDatabase, admin: Admin
) -> None:
    admin.run("CREATE TABLE t (v VARCHAR(10))")
    with pytest.raises(DatabaseError, match=NOT_UTF8MB4) as caught:
        db.execute_select(["SELECT 1", "SELECT '\ud800' AS v"], 10, LIMITS, CancelToken())
    assert "'\\ud800'" in str(caught.value)
    with pytest.raises(DatabaseError, match=NOT_UTF8MB4):
        db.execute_dml(
            ["INSERT INTO t VALUES ('a')", "INSERT INTO t VALUES ('\ud800')"],
            10,
            LIMITS,
            CancelToken(),
        )
    with pytest.raises(DatabaseError, match=NOT_UTF8MB4):
        db.explain("SELECT '\ud800'", 5)
    assert admin.rows("SELECT COUNT(*) FROM t") == [(0,)]
    assert select(db, "SELECT 'ok' AS v")["rows"] == [{"v": "ok"}]


def test_a_migration_with_a_lone_surrogate_is_a_migration_error(
    db: MySqlDatabase, admin: Admin
) -> None:
    # JSON's \\ud800 escape decodes to a lone surrogate, which no UTF-8 text can hold.
    detail = (
        '{"direction":"up","migrations":[{"version":"1","sql":"CREATE TABLE m1 (a INT)"},'
        '{"version":"2","sql":"CREATE TABLE m2 (a VARCHAR(3) DEFAULT \'\\ud800\')"}]}'
    )
    with pytest.raises(PartialMigrationError) as caught:
        db.run_migration(Operation.MIGRATE_UP, detail, 10, CancelToken())
    assert "cannot be encoded in the database encoding utf8mb4" in str(caught.value)
    assert orjson.loads(caught.value.result_data)["applied_before_failure"] == ["1"]
    assert admin.rows("SHOW TABLES LIKE 'm2'") == []


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:s3cr%zzet@db.example/app",
        "mysql://u:s3cr%zet@db.example:3306/app",
        "mysql://u:s3cr%ffet@db.example/app",  # not UTF-8 once decoded
        "mysql://u%zz:pw@db.example/app",
        "mysql://u:pw@db.example/a%zzpp",
    ],
)
def test_a_malformed_percent_encoding_never_shows_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mysql_url(url)
    assert str(caught.value) == "invalid database URL: malformed percent-encoding"


def test_a_well_formed_percent_encoding_is_decoded() -> None:
    params = parse_mysql_url("mysql://us%40er:p%25w%2Fd@db.example/app%2Dx")
    assert (params.user, params.password, params.database) == ("us@er", "p%w/d", "app-x")


def test_no_other_exception_type_leaves_the_adapter(
    db: MySqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DatabasePort contract: an encoder or parser failing unexpectedly is reported as
    a failed query (and logged), never as a stray TypeError/KeyError."""
    from adapters.mysql import database as mysql_database
    from adapters.mysql import schema as mysql_schema

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("Type is not JSON serializable: Weird")

    def unparseable(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("TABLE_NAME")

    with monkeypatch.context() as patch:
        patch.setattr(mysql_database, "encode_row", refuse)
        with pytest.raises(DatabaseError, match="query failed: TypeError: Type is not JSON"):
            select(db, "SELECT 1 AS n")
        patch.setattr(mysql_schema, "collect_schema", unparseable)
        with pytest.raises(DatabaseError, match="query failed: KeyError: 'TABLE_NAME'"):
            db.collect_schema()
    assert select(db, "SELECT 1 AS n")["rows"] == [{"n": 1}]


def test_a_full_mib_byte_cap_reads_like_the_reference(db: MySqlDatabase) -> None:
    """docs/protocol.md §5.6: `size limit reached (10 MB)` for the 10 MiB cap."""
    data = select(
        db,
        "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12)"
        " SELECT i, REPEAT('x', 1048576) AS v FROM n",
    )
    assert data["truncated"] is True
    assert data["truncation_reason"] == "size limit reached (10 MB)"
    assert [row["i"] for row in data["rows"]] == list(range(1, 10))


# --- EXPLAIN --------------------------------------------------------------------------------


def test_explain_returns_the_json_plan(db: MySqlDatabase, admin: Admin) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    plan = db.explain("SELECT * FROM t WHERE id = 1;", 5)
    assert isinstance(plan, dict)
    assert "query_block" in plan
    # A semicolon inside a string is not a second statement.
    assert "query_block" in db.explain("SELECT ';' AS s FROM t", 5)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE t SET v = 2 WHERE id = 1",
        "DELETE FROM t WHERE id = 1",
        "INSERT INTO t VALUES (2, 2)",
    ],
)
def test_explain_of_dml_returns_a_plan_and_changes_nothing(
    db: MySqlDatabase, admin: Admin, sql: str
) -> None:
    """DML plans are what approvers need most; EXPLAIN never executes the statement."""
    admin.run("CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1)")
    plan = db.explain(sql, 5)
    assert isinstance(plan, dict) and "query_block" in plan
    assert admin.rows("SELECT id, v FROM t ORDER BY id") == [(1, 1)]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("EXPLAIN ANALYZE SELECT 1", "ANALYZE"),
        ("explain analyze select 1", "ANALYZE"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT 1; DELETE FROM t", "exactly one statement"),
        ("SELECT 1; /*! DELETE FROM t */", "exactly one statement"),
    ],
)
def test_explain_refuses_analyze_and_several_statements(
    db: MySqlDatabase, admin: Admin, sql: str, message: str
) -> None:
    admin.run("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    with pytest.raises(DatabaseError, match=message) as caught:
        db.explain(sql, 5)
    assert str(caught.value).startswith("explain refused: ")
    assert admin.rows("SELECT COUNT(*) FROM t") == [(1,)]


@pytest.mark.parametrize(
    ("sql", "values"),
    [
        ("SELECT 1 --1", [2]),  # `--` before a digit is two minus signs
        ("SELECT 1 --x FROM (SELECT 1 AS x) AS t", [2]),
        ("SELECT 1 -- 1; SELECT 2", [1]),
        ("SELECT 1 --\t1; SELECT 2", [1]),
        ("SELECT 1 --\x01; SELECT 2", [1]),
        ("SELECT 1 #; SELECT 2\n+1", [2]),
        ("SELECT 1 /* ; SELECT 2 */ + 1", [2]),
        ("SELECT 1 /*! + 1 */; SELECT 3", [2, 3]),
        ("SELECT 1 /*M! + 1 */", [2]),
        ("SELECT 1; /*!40101 SELECT 2 */", [1, 2]),
        ("SELECT 1; -- trailing comment", [1]),
        ("SELECT 1; # trailing comment\n", [1]),
        ("SELECT 'a;--b' = 'a;--b' AS `e;--f`; SELECT 2", [1, 2]),
        ("SELECT 'it\\'s; x' = \"it's; x\"", [1]),
        ("SELECT 'y''z;' = \"y'z;\"; SELECT 2", [1, 2]),
        ("SELECT `a``;b` FROM (SELECT 7 AS `a``;b`) AS t", [7]),
    ],
)
def test_the_lexer_finds_the_statements_the_server_runs(
    mysql_database: str, sql: str, values: list[int]
) -> None:
    """The server's own reading of the tricky inputs: as many row sets as `statements`."""
    parts = urlsplit(mysql_database)
    conn = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/"),
        client_flag=CLIENT.MULTI_STATEMENTS,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            seen = [cursor.fetchone()[0]] if cursor.description else []
            while cursor.nextset():
                if cursor.description:
                    seen.append(cursor.fetchone()[0])
    finally:
        conn.close()
    assert seen == values
    assert len(statements(sql)) == len(values)
    assert has_multiple_statements(sql) is (len(values) > 1)


def test_close_closes_idle_connections(mysql_database: str, admin: Admin) -> None:
    database = MySqlDatabase(mysql_database)
    database.connect(5)
    conn_id = select(database, "SELECT CONNECTION_ID() AS id")["rows"][0]["id"]
    database.close()
    wait_until(
        lambda: (
            not admin.rows("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,))
        ),
        3,
        "the pooled connection to close",
    )


# --- when KILL QUERY cannot be delivered ---------------------------------------------------


@pytest.mark.parametrize("kill_outcome", ["lost", "fails"])
def test_a_statement_the_kill_cannot_reach_is_cut_off_at_the_socket(
    db: MySqlDatabase, monkeypatch: pytest.MonkeyPatch, kill_outcome: str
) -> None:
    """A KILL that never arrives (server unreachable) must not leave the job waiting forever."""
    from adapters.mysql import database as mysql_database

    def undelivered_kill(params: object, connection_id: int) -> None:
        if kill_outcome == "fails":
            raise DatabaseError("cannot reach MySQL")

    monkeypatch.setattr(mysql_database, "kill_query_with", undelivered_kill)
    monkeypatch.setattr(mysql_database, "HARD_STOP_GRACE_SECS", 0.5)
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        db.execute_select([_lift_server_limit(db), "SELECT SLEEP(10)"], 1, LIMITS, CancelToken())
    assert time.monotonic() - started < 4
    monkeypatch.undo()
    # The connection cut off was discarded; the next job gets a working one.
    assert select(db, "SELECT 2 AS two")["rows"] == [{"two": 2}]
