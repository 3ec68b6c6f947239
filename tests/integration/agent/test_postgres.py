"""PostgresDatabase against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from adapters.postgres.database import (
    PostgresDatabase,
    classify_connect_error,
    classify_error,
)
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

pytestmark = pytest.mark.integration

LIMITS = ResultLimits(max_rows=10_000, max_bytes=10 * 1024 * 1024)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def db(pg_database: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(pg_database)
    database.connect(5)
    yield database
    database.close()


@pytest.fixture
def admin(pg_database: str) -> Iterator[psycopg.Connection[Any]]:
    """A second, ordinary connection to the test database (setup and observation)."""
    with psycopg.connect(pg_database, autocommit=True) as connection:
        yield connection


def select(
    db: PostgresDatabase,
    *statements: str,
    limits: ResultLimits = LIMITS,
    timeout: int = 10,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    output = db.execute_select(list(statements), timeout, limits, cancel or CancelToken())
    data: dict[str, Any] = json.loads(output.result_data)
    assert output.truncated is data["truncated"]
    return data


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition` holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def backends_running(admin: psycopg.Connection[Any], marker: str) -> list[int]:
    """Agent backends whose current statement contains `marker` (and are still at it)."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'dbward-agent'"
        " AND state <> 'idle' AND strpos(query, %s) > 0 AND pid <> pg_backend_pid()",
        (marker,),
    ).fetchall()
    return [row[0] for row in rows]


def agent_backends(admin: psycopg.Connection[Any]) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'dbward-agent'"
    ).fetchall()
    return [row[0] for row in rows]


class Worker(threading.Thread):
    """Runs one call on a worker thread, as the agent's job executor does."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._call = call
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as exc:  # handed over to the test thread
            self.error = exc


# --- value encoding (docs/protocol.md §5.5) ---------------------------------------------------


def test_every_documented_type_round_trips_to_its_json(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    admin.execute("CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0)")
    admin.execute("SET lc_monetary = 'C'")
    data = select(
        db,
        "SET LOCAL TimeZone = 'UTC'",
        """SELECT 1::int2 AS i2, 2147483647::int4 AS i4, 9223372036854775807::int8 AS i8,
                  1.5::float4 AS f4, 0.1::float8 AS f8,
                  'NaN'::float8 AS nan, 'Infinity'::float8 AS inf, '-Infinity'::float4 AS ninf,
                  true AS yes, false AS no,
                  '{"a": [1, 2.5, null], "b": "x"}'::json AS j,
                  '{"k": {"n": 12345678901234567890}}'::jsonb AS jb,
                  '\\x00ff10'::bytea AS raw,
                  123456789012345678901234567890.123456789::numeric(40, 9) AS num,
                  '1.50'::numeric AS scale,
                  '12.34'::money AS cash,
                  'text ü'::text AS t, 'vc'::varchar(5) AS vc,
                  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id,
                  '2024-02-29'::date AS d, '13:45:01.5'::time AS tm, '13:45:01+02'::timetz AS tmz,
                  '2024-01-02 03:04:05.123'::timestamp AS ts,
                  '2024-01-02 03:04:05.123+00'::timestamptz AS tstz,
                  '1 day 02:03:04'::interval AS iv,
                  '192.168.0.1/24'::inet AS ip,
                  'happy'::mood AS m,
                  5::positive_int AS dom,
                  NULL::int4 AS nothing""",
    )
    assert data["rows"] == [
        {
            "i2": 1,
            "i4": 2147483647,
            "i8": 9223372036854775807,
            "f4": 1.5,
            "f8": 0.1,
            "nan": "NaN",
            "inf": "Infinity",
            "ninf": "-Infinity",
            "yes": True,
            "no": False,
            "j": {"a": [1, 2.5, None], "b": "x"},
            "jb": {"k": {"n": 12345678901234567890}},
            "raw": "\\x00ff10",
            "num": "123456789012345678901234567890.123456789",
            "scale": "1.50",
            "cash": "$12.34",
            "t": "text ü",
            "vc": "vc",
            "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "d": "2024-02-29",
            "tm": "13:45:01.5",
            "tmz": "13:45:01+02",
            "ts": "2024-01-02 03:04:05.123",
            "tstz": "2024-01-02 03:04:05.123+00",
            "iv": "1 day 02:03:04",
            "ip": "192.168.0.1/24",
            "m": "happy",
            "dom": 5,
            "nothing": None,
        }
    ]
    types = {column["name"]: column["type"] for column in data["columns"]}
    assert types["i2"] == "int2"
    assert types["num"] == "numeric"
    assert types["tstz"] == "timestamptz"
    assert types["m"] == "mood"
    assert types["dom"] == "int4"  # a domain is its base type


def test_arrays_become_nested_json_arrays(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    admin.execute("CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0)")
    data = select(
        db,
        """SELECT ARRAY[1, NULL, 3]::int4[] AS ints,
                  ARRAY['a', NULL, 'NULL', 'with "quote"', 'back\\slash', '', 'a,b']::text[]
                    AS texts,
                  ARRAY[[1, 2], [3, 4]]::int8[] AS grid,
                  '[0:1]={7,8}'::int4[] AS bounded,
                  ARRAY['NaN', '1.25']::float8[] AS floats,
                  ARRAY[true, false, NULL]::bool[] AS flags,
                  ARRAY['{"a": 1}', '[2]']::jsonb[] AS docs,
                  ARRAY['sad', 'happy']::mood[] AS moods,
                  ARRAY[1, 2]::positive_int[] AS doms,
                  ARRAY['10.50']::numeric[] AS nums,
                  '{}'::int4[] AS empty,
                  ARRAY[[[['x']]]]::text[] AS deep""",
    )
    assert data["rows"] == [
        {
            "ints": [1, None, 3],
            "texts": ["a", None, "NULL", 'with "quote"', "back\\slash", "", "a,b"],
            "grid": [[1, 2], [3, 4]],
            "bounded": "[0:1]={7,8}",
            "floats": ["NaN", 1.25],
            "flags": [True, False, None],
            "docs": [{"a": 1}, [2]],
            "moods": ["sad", "happy"],
            "doms": [1, 2],
            "nums": ["10.50"],
            "empty": [],
            "deep": [[[["x"]]]],
        }
    ]
    types = {column["name"]: column["type"] for column in data["columns"]}
    assert types["ints"] == "_int4"
    assert types["moods"] == "_mood"


def test_text_that_is_not_utf8_goes_out_as_hex(postgres_url: str) -> None:
    name = f"dbward_t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(postgres_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    with psycopg.connect(postgres_url, autocommit=True) as server:
        server.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0"
            " LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    database = PostgresDatabase(url)
    try:
        with psycopg.connect(url, autocommit=True) as raw:
            raw.execute("CREATE TABLE t (v text, n int)")
            raw.execute(b"INSERT INTO t VALUES ('\xffA', 1), ('plain', 2)")
        database.connect(5)
        data = select(database, "SELECT v, n FROM t ORDER BY n")
        assert data["rows"] == [{"v": "\\xff41", "n": 1}, {"v": "plain", "n": 2}]
    finally:
        database.close()
        with psycopg.connect(postgres_url, autocommit=True) as server:
            server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_columns_metadata_keeps_order_and_duplicates(db: PostgresDatabase) -> None:
    data = select(db, "SELECT 1 AS a, 'x'::text AS b, 2.5::numeric AS a")
    assert data["columns"] == [
        {"name": "a", "type": "int4"},
        {"name": "b", "type": "text"},
        {"name": "a", "type": "numeric"},
    ]
    # A JSON object cannot hold a name twice: the last value wins, at the first position.
    assert data["rows"] == [{"a": "2.5", "b": "x"}]
    assert list(data) == ["rows", "truncated", "truncation_reason", "columns"]


def test_an_empty_result_still_describes_its_columns(db: PostgresDatabase) -> None:
    data = select(db, "SELECT 1 AS n, 'x'::text AS s WHERE false")
    assert data == {
        "rows": [],
        "truncated": False,
        "truncation_reason": None,
        "columns": [{"name": "n", "type": "int4"}, {"name": "s", "type": "text"}],
    }


# --- multi-statement plans and read-only ------------------------------------------------------


def test_a_set_then_select_plan_runs_in_one_transaction(db: PostgresDatabase) -> None:
    data = select(
        db, "SET LOCAL work_mem = '1234kB'", "SELECT current_setting('work_mem') AS work_mem"
    )
    assert data["rows"] == [{"work_mem": "1234kB"}]
    # The plan's SET was local to the rolled-back transaction.
    assert select(db, "SHOW work_mem")["rows"] != [{"work_mem": "1234kB"}]


def test_rows_of_every_result_set_are_collected(db: PostgresDatabase) -> None:
    data = select(db, "SELECT 1 AS n", "SELECT 2 AS n UNION ALL SELECT 3")
    assert data["rows"] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_insert_through_the_select_path_is_refused_by_the_database(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    with pytest.raises(DatabaseError, match="read-only transaction"):
        select(db, "INSERT INTO t VALUES (1)")
    with pytest.raises(DatabaseError, match="read-write mode must be set before any query"):
        select(db, "SET TRANSACTION READ WRITE", "INSERT INTO t VALUES (2)")
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (0,)


#: Plans that tried to leave the read-only transaction; each created a table before the fix
#: (a COMMIT, ROLLBACK or chained commit ended `BEGIN READ ONLY`, and the rest of the batch
#: ran read-write).
TRANSACTION_ESCAPES = {
    "commit, then ddl": ["COMMIT", "CREATE TABLE escaped (i int)"],
    "end, then ddl": ["END", "CREATE TABLE escaped (i int)"],
    "abort, then ddl": ["ABORT", "CREATE TABLE escaped (i int)"],
    "rollback, begin, ddl, commit": [
        "ROLLBACK",
        "BEGIN",
        "CREATE TABLE escaped (i int)",
        "COMMIT",
    ],
    "commit and chain": [
        "COMMIT AND CHAIN",
        "SET TRANSACTION READ WRITE",
        "CREATE TABLE escaped (i int)",
    ],
    "rollback and chain": [
        "ROLLBACK AND CHAIN",
        "SET TRANSACTION READ WRITE",
        "CREATE TABLE escaped (i int)",
    ],
    "session default, then commit": [
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "COMMIT",
        "CREATE TABLE escaped (i int)",
    ],
    "read-only default off, then commit": [
        "SET default_transaction_read_only = off",
        "COMMIT",
        "CREATE TABLE escaped (i int)",
    ],
    "begin inside the transaction": ["BEGIN", "CREATE TABLE escaped (i int)"],
    "savepoint": ["SAVEPOINT s", "ROLLBACK TO SAVEPOINT s", "CREATE TABLE escaped (i int)"],
    "commit as the last statement": ["SELECT 1", "COMMIT"],
}

#: The same escapes as one signed text: the extended protocol takes one statement per call,
#: so the server refuses the text before running any of it.
ONE_TEXT_ESCAPES = {
    "select, commit, ddl": ["SELECT 1; COMMIT; CREATE TABLE escaped (i int)"],
    "rollback, begin, ddl, commit": ["ROLLBACK; BEGIN; CREATE TABLE escaped (i int); COMMIT"],
    "commit and chain": [
        "COMMIT AND CHAIN; SET TRANSACTION READ WRITE; CREATE TABLE escaped (i int)"
    ],
}


def _table_exists(admin: psycopg.Connection[Any], name: str) -> bool:
    row = admin.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _assert_no_agent_transaction_left(admin: psycopg.Connection[Any]) -> None:
    """No agent session stays in a transaction. The statistics collector may report a
    backend's new state a moment after its client saw the answer, so this waits briefly."""

    def none_left() -> bool:
        rows = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'dbward-agent' AND state LIKE 'idle in transaction%'"
        ).fetchone()
        return rows == (0,)

    wait_for(none_left, 5, "no agent session left in a transaction")


@pytest.mark.parametrize("plan", TRANSACTION_ESCAPES.values(), ids=TRANSACTION_ESCAPES.keys())
def test_transaction_control_in_a_select_plan_is_refused_and_nothing_is_written(
    db: PostgresDatabase, admin: psycopg.Connection[Any], plan: list[str]
) -> None:
    with pytest.raises(DatabaseError) as failure:
        select(db, *plan)
    assert str(failure.value) == (
        "query failed: transaction control is not allowed in a read-only query"
    )
    assert not failure.value.connectivity
    assert not _table_exists(admin, "escaped")
    _assert_no_agent_transaction_left(admin)
    # The connection that saw it was discarded; the next job works.
    assert select(db, "SELECT 1 AS ok")["rows"] == [{"ok": 1}]
    assert not _table_exists(admin, "escaped")


@pytest.mark.parametrize("plan", ONE_TEXT_ESCAPES.values(), ids=ONE_TEXT_ESCAPES.keys())
def test_one_text_with_several_statements_is_refused_by_the_server(
    db: PostgresDatabase, admin: psycopg.Connection[Any], plan: list[str]
) -> None:
    with pytest.raises(DatabaseError, match="one SQL statement per signed statement"):
        select(db, *plan)
    assert not _table_exists(admin, "escaped")
    _assert_no_agent_transaction_left(admin)


@pytest.mark.parametrize(
    "plan",
    [
        ["DO $$ BEGIN COMMIT; END $$", "CREATE TABLE escaped (i int)"],
        ["CALL commits()", "CREATE TABLE escaped (i int)"],
        ["SET TRANSACTION READ WRITE", "CREATE TABLE escaped (i int)"],
        ["SET transaction_read_only = off", "CREATE TABLE escaped (i int)"],
        ["SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "CREATE TABLE escaped (i int)"],
    ],
    ids=["do commit", "procedure commit", "read write", "read-only off", "isolation"],
)
def test_changes_to_the_transaction_inside_a_statement_are_refused_by_the_server(
    db: PostgresDatabase, admin: psycopg.Connection[Any], plan: list[str]
) -> None:
    """Inside `BEGIN` a procedure or DO block cannot commit, and after the first snapshot
    the transaction's mode and isolation are fixed."""
    admin.execute("CREATE PROCEDURE commits() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$")
    with pytest.raises(DatabaseError):
        select(db, *plan)
    assert not _table_exists(admin, "escaped")
    _assert_no_agent_transaction_left(admin)


def test_a_commit_cannot_let_a_later_insert_write(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    admin.execute("INSERT INTO t VALUES (1)")
    for plan in (
        ["COMMIT", "INSERT INTO t VALUES (2)"],
        ["ROLLBACK", "INSERT INTO t VALUES (2)"],
        ["COMMIT; INSERT INTO t VALUES (2)"],
        ["COMMIT AND CHAIN", "SET TRANSACTION READ WRITE", "DELETE FROM t"],
    ):
        with pytest.raises(DatabaseError):
            select(db, *plan)
    assert admin.execute("SELECT array_agg(n) FROM t").fetchone() == ([1],)


def test_the_select_session_defaults_to_read_only_transactions(db: PostgresDatabase) -> None:
    """A second layer: even a transaction the checks missed would start read-only."""
    data = select(db, "SELECT current_setting('default_transaction_read_only') AS ro")
    assert data["rows"] == [{"ro": "on"}]
    # ... and only for the select: the reset gives DML its usual session back.
    output = db.execute_dml(["CREATE TABLE after_select (i int)"], 10, LIMITS, CancelToken())
    assert output.rows_affected == 0


def test_set_statement_timeout_then_select_still_works(
    db: PostgresDatabase,
) -> None:
    data = select(
        db,
        "SET statement_timeout = '5s'",
        "SELECT 1 AS one, current_setting('statement_timeout') AS st",
    )
    assert data["rows"] == [{"one": 1, "st": "5s"}]
    # The plan's SET ended with the job's transaction.
    after = select(db, "SELECT current_setting('statement_timeout') AS st")
    assert after["rows"] != [{"st": "5s"}]


def test_a_plan_session_set_of_the_timeout_still_stops_at_the_agent_deadline(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        select(db, "SET statement_timeout = 0", "SELECT pg_sleep(30) AS lifted_too", timeout=1)
    assert time.monotonic() - started < 1 + 2 + 2
    wait_for(lambda: not backends_running(admin, "lifted_too"), 2, "the backend to go")


def test_session_state_left_by_a_plan_does_not_reach_the_next_job(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    select(db, "SELECT pg_advisory_lock(4242)")
    db.execute_dml(
        ["SET statement_timeout = '7s'", "SET work_mem = '777kB'"], 10, LIMITS, CancelToken()
    )
    # Only this test's database: other suites may hold advisory locks on the same server.
    locks = admin.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
    ).fetchone()
    assert locks == (0,)
    data = select(
        db, "SELECT current_setting('work_mem') AS w, current_setting('bytea_output') AS b"
    )
    assert data["rows"][0]["w"] != "777kB"
    assert data["rows"][0]["b"] == "hex"


def test_every_session_checks_for_a_dead_client_before_and_after_a_reset(
    db: PostgresDatabase,
) -> None:
    def interval() -> str:
        data = select(db, "SELECT current_setting('client_connection_check_interval') AS i")
        return str(data["rows"][0]["i"])

    first = interval()
    db.execute_dml(["SET client_connection_check_interval = 0"], 10, LIMITS, CancelToken())

    assert first == "2s"
    assert interval() == "2s"  # the job's reset brought it back on the reused connection


# --- exact limits -------------------------------------------------------------------------


def test_exactly_max_rows_is_not_truncated(db: PostgresDatabase) -> None:
    data = select(db, "SELECT g FROM generate_series(1, 5) g", limits=ResultLimits(5, 1024 * 1024))
    assert [row["g"] for row in data["rows"]] == [1, 2, 3, 4, 5]
    assert data["truncated"] is False
    assert data["truncation_reason"] is None


def test_one_row_over_max_rows_is_truncated(db: PostgresDatabase) -> None:
    data = select(db, "SELECT g FROM generate_series(1, 6) g", limits=ResultLimits(5, 1024 * 1024))
    assert [row["g"] for row in data["rows"]] == [1, 2, 3, 4, 5]
    assert data["truncated"] is True
    assert data["truncation_reason"] == "row limit reached (5)"


def test_the_byte_cap_holds_for_the_whole_result(db: PostgresDatabase) -> None:
    limits = ResultLimits(max_rows=10_000, max_bytes=2_000)
    output = db.execute_select(
        ["SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 1000) g"],
        10,
        limits,
        CancelToken(),
    )
    assert len(output.result_data.encode()) <= limits.max_bytes
    data = json.loads(output.result_data)
    assert output.truncated is True
    assert data["truncation_reason"] == "size limit reached (2000 bytes)"
    assert 10 <= len(data["rows"]) < 20
    assert [row["g"] for row in data["rows"]] == list(range(1, len(data["rows"]) + 1))


def test_a_truncated_big_result_is_not_read_to_the_end(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    # PostgreSQL materialises the series before the first row (a few seconds); reading
    # all 20 million rows through the agent would take minutes. The bound separates the
    # two by an order of magnitude, so machine load cannot flip it.
    started = time.monotonic()
    data = select(
        db,
        "SELECT g, md5(g::text) FROM generate_series(1, 20000000) g",
        limits=ResultLimits(100, 1024 * 1024),
    )
    assert len(data["rows"]) == 100
    assert time.monotonic() - started < 30
    wait_for(lambda: not backends_running(admin, "20000000"), 3, "the abandoned query to stop")


# --- timeouts and cancellation ----------------------------------------------------------------


def test_pg_sleep_past_the_timeout_fails_in_time_and_the_backend_is_gone(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        select(db, "SELECT pg_sleep(30) AS timeout_probe", timeout=1)
    assert time.monotonic() - started < 1 + 2
    wait_for(lambda: not backends_running(admin, "timeout_probe"), 2, "the backend to go")


def test_a_plan_that_lifts_the_timeout_still_stops_at_the_agent_deadline(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        select(db, "SET LOCAL statement_timeout = 0", "SELECT pg_sleep(30) AS lifted", timeout=1)
    assert time.monotonic() - started < 1 + 2 + 2
    wait_for(lambda: not backends_running(admin, "lifted"), 2, "the backend to go")


def test_a_cancel_from_another_thread_stops_the_query_within_3_seconds(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    token = CancelToken()
    worker = Worker(lambda: select(db, "SELECT pg_sleep(30) AS cancel_probe", cancel=token))
    worker.start()
    wait_for(lambda: bool(backends_running(admin, "cancel_probe")), 5, "the query to start")
    token.cancel(CancelReason.SERVER_CANCELLED)
    elapsed = wait_for(lambda: not backends_running(admin, "cancel_probe"), 3, "the query to leave")
    assert elapsed < 3
    worker.join(5)
    assert isinstance(worker.error, QueryCancelled)
    assert str(worker.error) == "query cancelled"
    # The connection touched by the cancel was thrown away; the next job gets a clean one.
    assert select(db, "SELECT 1 AS ok")["rows"] == [{"ok": 1}]


def test_a_cancelled_token_runs_nothing(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    token = CancelToken()
    token.cancel(CancelReason.SHUTDOWN)
    with pytest.raises(QueryCancelled):
        db.execute_dml(["INSERT INTO t VALUES (1)"], 10, LIMITS, token)
    with pytest.raises(QueryCancelled):
        select(db, "SELECT 1", cancel=token)
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_cancelled_dml_rolls_back(db: PostgresDatabase, admin: psycopg.Connection[Any]) -> None:
    admin.execute("CREATE TABLE t (n int)")
    token = CancelToken()
    worker = Worker(
        lambda: db.execute_dml(
            ["INSERT INTO t VALUES (1)", "SELECT pg_sleep(30) AS dml_probe"], 10, LIMITS, token
        )
    )
    worker.start()
    wait_for(lambda: bool(backends_running(admin, "dml_probe")), 5, "the batch to start")
    token.cancel(CancelReason.LEASE_LOST)
    worker.join(5)
    assert isinstance(worker.error, QueryCancelled)
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (0,)


# --- DML --------------------------------------------------------------------------------------


def test_dml_rows_affected_are_summed(db: PostgresDatabase, admin: psycopg.Connection[Any]) -> None:
    admin.execute("CREATE TABLE t (n int)")
    output = db.execute_dml(
        ["INSERT INTO t SELECT generate_series(1, 5)", "UPDATE t SET n = n + 1 WHERE n > 2"],
        10,
        LIMITS,
        CancelToken(),
    )
    assert output.rows_affected == 8
    assert json.loads(output.result_data) == {"rows_affected": 8}
    assert admin.execute("SELECT sum(n) FROM t").fetchone() == (18,)


def test_a_failing_second_dml_statement_leaves_no_trace_of_the_first(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int PRIMARY KEY)")
    with pytest.raises(DatabaseError, match="duplicate key") as failure:
        db.execute_dml(
            ["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"], 10, LIMITS, CancelToken()
        )
    assert str(failure.value).startswith("query failed: ")
    assert failure.value.connectivity is False
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_insert_returning_gives_its_rows_with_their_types_beside_the_count(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (id serial PRIMARY KEY, note text, at date)")
    output = db.execute_dml(
        ["INSERT INTO t (note, at) VALUES ('a', '2026-01-02'), (NULL, NULL) RETURNING *"],
        10,
        LIMITS,
        CancelToken(),
    )
    assert output.rows_affected == 2 and output.truncated is False
    assert json.loads(output.result_data) == {
        "rows_affected": 2,
        "rows": [{"id": 1, "note": "a", "at": "2026-01-02"}, {"id": 2, "note": None, "at": None}],
        "truncated": False,
        "truncation_reason": None,
        "columns": [
            {"name": "id", "type": "int4"},
            {"name": "note", "type": "text"},
            {"name": "at", "type": "date"},
        ],
    }
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_an_escalated_select_returns_its_value(db: PostgresDatabase) -> None:
    output = db.execute_dml(["SELECT pg_sleep(0.1), 42 AS answer"], 10, LIMITS, CancelToken())
    data = json.loads(output.result_data)
    assert [row["answer"] for row in data["rows"]] == [42]
    assert data["columns"][1] == {"name": "answer", "type": "int4"}


def test_select_for_update_returns_the_locked_rows(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    admin.execute("INSERT INTO t SELECT generate_series(1, 4)")
    output = db.execute_dml(
        ["SELECT n FROM t WHERE n <= 2 ORDER BY n FOR UPDATE"], 10, LIMITS, CancelToken()
    )
    assert json.loads(output.result_data)["rows"] == [{"n": 1}, {"n": 2}]


def test_a_writable_cte_returns_what_its_outer_query_selects(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    admin.execute("INSERT INTO t SELECT generate_series(1, 4)")
    output = db.execute_dml(
        ["WITH gone AS (DELETE FROM t WHERE n > 2 RETURNING n) SELECT sum(n) AS total FROM gone"],
        10,
        LIMITS,
        CancelToken(),
    )
    assert json.loads(output.result_data)["rows"] == [{"total": 7}]
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_returning_rows_past_the_row_cap_are_cut_but_every_row_is_written(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    output = db.execute_dml(
        ["INSERT INTO t SELECT generate_series(1, 5000) RETURNING n"],
        10,
        ResultLimits(max_rows=3, max_bytes=1024 * 1024),
        CancelToken(),
    )
    data = json.loads(output.result_data)
    assert data["rows"] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert (data["truncated"], data["truncation_reason"]) == (True, "row limit reached (3)")
    assert output.truncated is True and output.rows_affected == 5000
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (5000,)


def test_returning_rows_stop_at_the_byte_cap_and_the_result_stays_within_it(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int, pad text)")
    output = db.execute_dml(
        ["INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 100) g RETURNING *"],
        10,
        ResultLimits(max_rows=10_000, max_bytes=2_000),
        CancelToken(),
    )
    data = json.loads(output.result_data)
    assert len(output.result_data.encode()) <= 2_000
    assert data["truncation_reason"] == "size limit reached (2000 bytes)"
    assert [row["n"] for row in data["rows"]] == list(range(1, len(data["rows"]) + 1))
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (100,)


def test_a_batch_returns_the_rows_of_every_statement_that_returns_some_in_order(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    output = db.execute_dml(
        [
            "INSERT INTO t VALUES (1), (2) RETURNING n",
            "UPDATE t SET n = n * 10",
            "DELETE FROM t WHERE n = 20 RETURNING n",
        ],
        10,
        LIMITS,
        CancelToken(),
    )
    data = json.loads(output.result_data)
    assert data["rows"] == [{"n": 1}, {"n": 2}, {"n": 20}]
    assert data["columns"] == [{"name": "n", "type": "int4"}]
    assert output.rows_affected == 5


def test_dml_statement_timeout(db: PostgresDatabase) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        db.execute_dml(["SELECT pg_sleep(30)"], 1, LIMITS, CancelToken())
    assert time.monotonic() - started < 3


# --- SQL the connection cannot carry, and other failures that must stay DatabaseErrors --------


@pytest.fixture
def latin1_url(postgres_url: str) -> Iterator[str]:
    """A fresh LATIN1 database: '€' has no byte in its client encoding."""
    name = f"dbward_t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(postgres_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    with psycopg.connect(postgres_url, autocommit=True) as server:
        server.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        )
    try:
        with psycopg.connect(url, autocommit=True) as raw:
            raw.execute("CREATE TABLE t (v text)")
            raw.execute("INSERT INTO t VALUES ('café')")
        yield url
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as server:
            server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


NOT_LATIN1 = "query failed: the SQL cannot be encoded in the database encoding LATIN1"


def test_sql_outside_the_database_encoding_is_a_database_error_everywhere(
    latin1_url: str,
) -> None:
    database = PostgresDatabase(latin1_url)
    try:
        database.connect(5)
        assert select(database, "SELECT v FROM t WHERE v <> 'é'")["rows"] == [{"v": "café"}]
        with pytest.raises(DatabaseError) as caught:
            select(database, "SELECT 1 AS n", "SELECT v FROM t WHERE v = '€'")
        assert str(caught.value).startswith(NOT_LATIN1)
        assert "'€'" in str(caught.value)
        with pytest.raises(DatabaseError, match=NOT_LATIN1):
            database.execute_dml(
                ["DELETE FROM t", "INSERT INTO t VALUES ('€')"], 5, LIMITS, CancelToken()
            )
        with pytest.raises(DatabaseError, match=NOT_LATIN1):
            database.explain("SELECT v FROM t WHERE v = '€'", 5)
        # Nothing ran, and the adapter still works.
        assert select(database, "SELECT v FROM t")["rows"] == [{"v": "café"}]
    finally:
        database.close()


def test_a_migration_outside_the_database_encoding_is_a_migration_error(latin1_url: str) -> None:
    database = PostgresDatabase(latin1_url)
    detail = json.dumps(
        {
            "direction": "up",
            "migrations": [
                {"version": "1", "sql": "CREATE TABLE m1 (v text DEFAULT 'é')"},
                {"version": "2", "sql": "CREATE TABLE m2 (v text DEFAULT '€')"},
            ],
        }
    )
    try:
        database.connect(5)
        with pytest.raises(PartialMigrationError) as caught:
            database.run_migration(Operation.MIGRATE_UP, detail, 10, CancelToken())
        assert "cannot be encoded in the database encoding LATIN1" in str(caught.value)
        assert json.loads(caught.value.result_data)["applied_before_failure"] == ["1"]
    finally:
        database.close()


def test_a_lone_surrogate_in_the_sql_is_a_database_error(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (v text)")
    unencodable = "query failed: the SQL cannot be encoded in the database encoding UTF8"
    with pytest.raises(DatabaseError, match=unencodable):
        select(db, "SELECT '\ud800' AS v")
    with pytest.raises(DatabaseError, match=unencodable):
        db.execute_dml(["INSERT INTO t VALUES ('\ud800')"], 5, LIMITS, CancelToken())
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_nul_character_is_refused_instead_of_cutting_the_sql_short(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    """libpq sends C strings: `DELETE FROM t\\0 WHERE n = 1` would run as `DELETE FROM t`."""
    admin.execute("CREATE TABLE t (n int)")
    admin.execute("INSERT INTO t VALUES (1), (2)")
    with pytest.raises(DatabaseError, match="NUL character"):
        db.execute_dml(["DELETE FROM t\x00 WHERE n = 1"], 5, LIMITS, CancelToken())
    with pytest.raises(DatabaseError, match="NUL character"):
        select(db, "SELECT n FROM t\x00 WHERE n = 1")
    with pytest.raises(DatabaseError, match="NUL character"):
        db.explain("DELETE FROM t\x00 WHERE n = 1", 5)
    assert admin.execute("SELECT count(*) FROM t").fetchone() == (2,)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:s3cr%zzet@db.example/app",
        "postgresql://u:s3cr%zzet@db.example:5432/app?sslmode=require",
    ],
)
def test_a_malformed_percent_encoding_never_shows_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresDatabase(url)
    assert str(caught.value) == "invalid database URL: malformed percent-encoding"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cretpw@[::1/app",  # libpq quotes the whole URL back
        "postgresql://u:s3cretpw@db.example/app?nosuchoption=1",
        "host=db.example password=s3cretpw dbname",
        "host=db.example password='s3cretpw' nosuchoption=1",
    ],
)
def test_other_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresDatabase(url)
    assert str(caught.value).startswith("invalid PostgreSQL URL: ")
    assert "s3cretpw" not in str(caught.value)


def test_a_connect_error_never_shows_a_piece_of_a_badly_encoded_password() -> None:
    """An unencoded `/` in the password makes libpq read a piece of it as the port."""
    database = PostgresDatabase("postgresql://127.0.0.1:s3cretpw/x@db.example/app")
    with pytest.raises(DatabaseError) as caught:
        database.connect(2)
    assert "s3cretpw" not in str(caught.value)
    assert "********" in str(caught.value)


def test_no_other_exception_type_leaves_the_adapter(
    db: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DatabasePort contract: an encoder or parser failing unexpectedly is reported as
    a failed query (and logged), never as a stray TypeError/ValueError."""
    import orjson

    from adapters.postgres import schema as pg_schema
    from adapters.postgres import values as pg_values

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise orjson.JSONEncodeError("Type is not JSON serializable: Weird")

    def unparseable(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("unexpected catalog row")

    with monkeypatch.context() as patch:
        patch.setattr(pg_values.RowEncoder, "encode", refuse)
        with pytest.raises(DatabaseError, match="query failed: TypeError: Type is not JSON"):
            select(db, "SELECT 1 AS n")
        patch.setattr(pg_schema, "collect_schema", unparseable)
        with pytest.raises(DatabaseError, match="query failed: ValueError: unexpected catalog"):
            db.collect_schema()
    assert select(db, "SELECT 1 AS n")["rows"] == [{"n": 1}]


def test_a_full_mib_byte_cap_reads_like_the_reference(db: PostgresDatabase) -> None:
    """docs/protocol.md §5.6: `size limit reached (10 MB)` for the 10 MiB cap."""
    data = select(db, "SELECT repeat('x', 1048576) AS v FROM generate_series(1, 12)")
    assert data["truncated"] is True
    assert data["truncation_reason"] == "size limit reached (10 MB)"
    assert len(data["rows"]) == 9


# --- EXPLAIN ----------------------------------------------------------------------------------


def test_explain_returns_the_json_plan(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    plan = db.explain("SELECT * FROM t WHERE n = 1", 5)
    assert isinstance(plan, list)
    assert plan[0]["Plan"]["Relation Name"] == "t"


def test_explain_analyze_and_several_statements_are_refused(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute("CREATE TABLE t (n int)")
    with pytest.raises(DatabaseError, match="explain refused: EXPLAIN ANALYZE"):
        db.explain("EXPLAIN ANALYZE DELETE FROM t", 5)
    with pytest.raises(DatabaseError, match="explain refused: EXPLAIN takes exactly one"):
        db.explain("SELECT 1; DELETE FROM t", 5)
    with pytest.raises(DatabaseError, match=r"query failed: .*syntax error"):
        db.explain("SELEC 1", 5)
    assert db.explain("DELETE FROM t", 5)[0]["Plan"]["Node Type"] == "ModifyTable"


# --- schema -----------------------------------------------------------------------------------

SCHEMA_FIXTURE = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name varchar(100),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    total numeric(10, 2) NOT NULL CONSTRAINT orders_total_positive CHECK (total > 0),
    tags text[],
    status mood
);
CREATE TABLE order_items (
    order_id integer NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line integer NOT NULL,
    sku text NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE INDEX order_items_sku_line_idx ON order_items (sku, line);
CREATE INDEX orders_tags_gin ON orders USING gin (tags);
CREATE TABLE events (
    id bigint NOT NULL, day date NOT NULL, payload jsonb, PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE event_notes (
    id integer PRIMARY KEY, event_id bigint, event_day date,
    FOREIGN KEY (event_id, event_day) REFERENCES events (id, day) ON DELETE SET NULL
);
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
CREATE SCHEMA audit;
CREATE TABLE audit.log (id integer, note text DEFAULT 'none');
INSERT INTO customers (email) VALUES ('a@example.com'), ('b@example.com'), ('c@example.com');
ANALYZE customers;
"""


def _column(
    name: str,
    data_type: str,
    *,
    nullable: bool = True,
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


def _constraint(
    name: str,
    kind: str,
    columns: list[str],
    definition: str,
    *,
    references: tuple[str, list[str], str] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "constraint_type": kind,
        "columns": columns,
        "referenced_table": references[0] if references else None,
        "referenced_columns": references[1] if references else None,
        "on_delete": references[2] if references else None,
        "referenced_schema": "public" if references else None,
        "definition": definition,
    }


def _index(name: str, columns: list[str], *, unique: bool, method: str = "btree") -> dict[str, Any]:
    return {"name": name, "columns": columns, "is_unique": unique, "index_type": method}


def _table(name: str, schema: str = "public", **fields: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": name,
        "schema_name": schema,
        "estimated_rows": None,
        "is_view": False,
        "is_partitioned": False,
        "columns": [],
        "constraints": [],
        "indexes": [],
    }
    table.update(fields)
    known = table["estimated_rows"] is not None
    table["estimated_rows_known"] = known
    table["estimated_rows"] = table["estimated_rows"] if known else -1
    return table


EXPECTED_SNAPSHOT = {
    "tables": [
        _table(
            "log",
            "audit",
            columns=[_column("id", "integer"), _column("note", "text", default="'none'::text")],
        ),
        _table(
            "big_orders",
            is_view=True,
            columns=[_column("id", "integer"), _column("total", "numeric")],
        ),
        _table(
            "customers",
            estimated_rows=3,
            columns=[
                _column("id", "bigint", nullable=False, pk=True),
                _column("email", "text", nullable=False),
                _column("name", "character varying"),
                _column("created_at", "timestamp with time zone", nullable=False, default="now()"),
            ],
            constraints=[
                _constraint("customers_email_key", "unique", ["email"], "UNIQUE (email)"),
                _constraint("customers_pkey", "primary_key", ["id"], "PRIMARY KEY (id)"),
            ],
            indexes=[
                _index("customers_email_key", ["email"], unique=True),
                _index("customers_pkey", ["id"], unique=True),
            ],
        ),
        _table(
            "event_notes",
            columns=[
                _column("id", "integer", nullable=False, pk=True),
                _column("event_id", "bigint"),
                _column("event_day", "date"),
            ],
            constraints=[
                _constraint(
                    "event_notes_event_id_event_day_fkey",
                    "foreign_key",
                    ["event_id", "event_day"],
                    "FOREIGN KEY (event_id, event_day) REFERENCES events(id, day)"
                    " ON DELETE SET NULL",
                    references=("events", ["id", "day"], "SET_NULL"),
                ),
                _constraint("event_notes_pkey", "primary_key", ["id"], "PRIMARY KEY (id)"),
            ],
            indexes=[_index("event_notes_pkey", ["id"], unique=True)],
        ),
        _table(
            "events",
            is_partitioned=True,
            columns=[
                _column("id", "bigint", nullable=False, pk=True),
                _column("day", "date", nullable=False, pk=True),
                _column("payload", "jsonb"),
            ],
            constraints=[
                _constraint("events_pkey", "primary_key", ["id", "day"], "PRIMARY KEY (id, day)")
            ],
            indexes=[_index("events_pkey", ["id", "day"], unique=True)],
        ),
        _table(
            "events_2024",
            columns=[
                _column("id", "bigint", nullable=False, pk=True),
                _column("day", "date", nullable=False, pk=True),
                _column("payload", "jsonb"),
            ],
            constraints=[
                _constraint(
                    "events_2024_pkey", "primary_key", ["id", "day"], "PRIMARY KEY (id, day)"
                )
            ],
            indexes=[_index("events_2024_pkey", ["id", "day"], unique=True)],
        ),
        _table(
            "order_items",
            columns=[
                _column("order_id", "integer", nullable=False, pk=True),
                _column("line", "integer", nullable=False, pk=True),
                _column("sku", "text", nullable=False),
            ],
            constraints=[
                _constraint(
                    "order_items_order_id_fkey",
                    "foreign_key",
                    ["order_id"],
                    "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE",
                    references=("orders", ["id"], "CASCADE"),
                ),
                _constraint(
                    "order_items_pkey",
                    "primary_key",
                    ["order_id", "line"],
                    "PRIMARY KEY (order_id, line)",
                ),
            ],
            indexes=[
                _index("order_items_pkey", ["order_id", "line"], unique=True),
                _index("order_items_sku_line_idx", ["sku", "line"], unique=False),
            ],
        ),
        _table(
            "orders",
            columns=[
                _column(
                    "id",
                    "integer",
                    nullable=False,
                    pk=True,
                    default="nextval('orders_id_seq'::regclass)",
                ),
                _column("customer_id", "bigint", nullable=False),
                _column("total", "numeric", nullable=False),
                _column("tags", "ARRAY"),
                _column("status", "USER-DEFINED"),
            ],
            constraints=[
                _constraint(
                    "orders_customer_id_fkey",
                    "foreign_key",
                    ["customer_id"],
                    "FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE",
                    references=("customers", ["id"], "CASCADE"),
                ),
                _constraint("orders_pkey", "primary_key", ["id"], "PRIMARY KEY (id)"),
                _constraint(
                    "orders_total_positive", "check", ["total"], "CHECK (total > 0::numeric)"
                ),
            ],
            indexes=[
                _index("orders_pkey", ["id"], unique=True),
                _index("orders_tags_gin", ["tags"], unique=False, method="gin"),
            ],
        ),
    ]
}


def test_schema_snapshot_of_a_fixture_with_an_on_delete_cascade_chain(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    admin.execute(SCHEMA_FIXTURE)
    snapshot = db.collect_schema()
    assert snapshot == EXPECTED_SNAPSHOT


def test_schema_collection_takes_a_constant_number_of_queries(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    from adapters.postgres import schema as pg_schema

    for index in range(30):
        admin.execute(f"CREATE TABLE t{index} (id int PRIMARY KEY, ref int REFERENCES t0 (id))")
    executed: list[object] = []
    original = psycopg.Cursor.execute

    def counting(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        executed.append(query)
        return original(self, query, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.Cursor, "execute", counting)
        snapshot = db.collect_schema()
    assert len(snapshot["tables"]) == 30
    assert len([q for q in executed if q in pg_schema.SNAPSHOT_QUERIES]) == 4


# --- connections and failures ---------------------------------------------------------------


def test_an_unknown_role_is_an_authentication_error(pg_database: str) -> None:
    database = PostgresDatabase(_as_role(pg_database, f"no_such_role_{uuid.uuid4().hex[:6]}"))
    with pytest.raises(DatabaseAuthError) as failure:
        database.connect(5)
    assert failure.value.is_hard


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    netloc = f"{role}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def test_a_role_that_may_not_log_in_is_hard_but_a_full_connection_limit_is_not(
    pg_database: str, admin: psycopg.Connection[Any]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    no_login, no_slots = f"dbward_nologin_{suffix}", f"dbward_noslots_{suffix}"
    admin.execute(f"CREATE ROLE {no_login} NOLOGIN")
    admin.execute(f"CREATE ROLE {no_slots} LOGIN CONNECTION LIMIT 0")
    try:
        with pytest.raises(DatabaseAuthError):
            PostgresDatabase(_as_role(pg_database, no_login)).connect(5)
        # "too many connections for role": the database is fine, just busy (53300).
        with pytest.raises(DatabaseUnavailable) as busy:
            PostgresDatabase(_as_role(pg_database, no_slots)).connect(5)
        assert not busy.value.is_hard
    finally:
        admin.execute(f"DROP ROLE {no_login}")
        admin.execute(f"DROP ROLE {no_slots}")


def test_a_least_privileged_role_can_do_everything_the_agent_needs(
    pg_database: str, admin: psycopg.Connection[Any]
) -> None:
    """Reads, writes on granted tables, EXPLAIN, schema sync, cancel and the session reset
    need no privilege beyond the grants on the user's tables."""
    role = f"dbward_agent_{uuid.uuid4().hex[:8]}"
    admin.execute("CREATE TABLE t (n int PRIMARY KEY)")
    admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"GRANT SELECT, INSERT ON t TO {role}")
    database = PostgresDatabase(_as_role(pg_database, role))
    try:
        database.connect(5)
        assert (
            database.execute_dml(
                ["INSERT INTO t VALUES (1)"], 5, LIMITS, CancelToken()
            ).rows_affected
            == 1
        )
        assert select(database, "SELECT n FROM t")["rows"] == [{"n": 1}]
        assert database.explain("SELECT n FROM t", 5)[0]["Plan"]["Node Type"] == "Seq Scan"
        assert [t["name"] for t in database.collect_schema()["tables"]] == ["t"]
        with pytest.raises(DatabaseError, match="permission denied"):
            database.execute_dml(["DELETE FROM t"], 5, LIMITS, CancelToken())
        token = CancelToken()
        token_worker = Worker(lambda: select(database, "SELECT pg_sleep(30) AS priv", cancel=token))
        token_worker.start()
        wait_for(lambda: bool(backends_running(admin, "priv")), 5, "the query to start")
        token.cancel(CancelReason.SERVER_CANCELLED)
        token_worker.join(5)
        assert isinstance(token_worker.error, QueryCancelled)
    finally:
        database.close()
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE {role}")


def test_sqlstates_decide_the_error_class() -> None:
    wrong_password = psycopg.errors.InvalidPassword("password authentication failed")
    assert isinstance(classify_error(wrong_password), DatabaseAuthError)
    assert isinstance(classify_connect_error(wrong_password), DatabaseAuthError)
    assert isinstance(
        classify_error(psycopg.errors.InvalidAuthorizationSpecification("no")), DatabaseAuthError
    )
    shutdown = classify_error(psycopg.errors.AdminShutdown("terminating connection"))
    assert shutdown.connectivity and not shutdown.is_hard
    assert classify_error(psycopg.errors.ConnectionFailure("gone")).connectivity
    assert classify_error(psycopg.OperationalError("server closed the connection")).connectivity
    assert isinstance(classify_error(psycopg.errors.QueryCanceled("x")), QueryTimeout)
    assert isinstance(
        classify_error(psycopg.errors.QueryCanceled("x"), cancelled=True), QueryCancelled
    )
    plain = classify_error(psycopg.errors.UndefinedTable('relation "x" does not exist'))
    assert not plain.connectivity and str(plain).startswith("query failed: ")


def test_a_refused_connection_is_transient(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    user = f"{parts.username}@" if parts.username else ""
    url = urlunsplit((parts.scheme, f"{user}127.0.0.1:1", parts.path, "", ""))
    database = PostgresDatabase(url)
    with pytest.raises(DatabaseUnavailable) as failure:
        database.connect(3)
    assert failure.value.connectivity
    assert not failure.value.is_hard


def test_a_backend_terminated_mid_query_is_a_connectivity_error_then_connect_recovers(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    worker = Worker(lambda: select(db, "SELECT pg_sleep(30) AS terminate_probe"))
    worker.start()
    wait_for(lambda: bool(backends_running(admin, "terminate_probe")), 5, "the query to start")
    for pid in backends_running(admin, "terminate_probe"):
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    worker.join(5)
    assert isinstance(worker.error, DatabaseError)
    assert worker.error.connectivity
    db.connect(5)
    assert select(db, "SELECT 1 AS ok")["rows"] == [{"ok": 1}]


def test_a_pooled_connection_terminated_between_jobs_is_replaced(
    db: PostgresDatabase, admin: psycopg.Connection[Any]
) -> None:
    assert select(db, "SELECT 1 AS ok")["rows"] == [{"ok": 1}]
    victims = agent_backends(admin)
    assert victims
    for pid in victims:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: not agent_backends(admin), 5, "the pooled backends to exit")
    assert select(db, "SELECT 2 AS ok")["rows"] == [{"ok": 2}]
