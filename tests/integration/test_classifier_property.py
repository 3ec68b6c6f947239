"""The classifier never calls a write a read, as judged by the real databases.

Statements come from a small grammar (queries calling harmless and dangerous functions,
writable CTEs, lock clauses, SELECT … INTO, SETs, EXPLAIN variants, DML, and batches of
them). Each one is classified, then run statement by statement (the slices the agent would
run) inside a read-only transaction on a scratch table set that is rolled back afterwards:
PostgreSQL `BEGIN READ ONLY` with a statement timeout, MariaDB `START TRANSACTION READ
ONLY` with `max_statement_time`. Whatever the database refuses as a write (PostgreSQL
SQLSTATE 25006, MariaDB error 1792), and whatever changes the scratch data, must not be
classified SELECT (docs/sql-safety.md §2). Examples are derandomized: CI sees the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
import pymysql
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from domain.server.sql_classification import Classification, StatementClass

PG_READ_ONLY = "25006"  # read_only_sql_transaction
MY_READ_ONLY = 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
EXAMPLES = 1000

classifier = SqlglotClassifier()

# --- the grammar ----------------------------------------------------------------------

TABLES = st.sampled_from(["prop_a", "prop_b"])
PG_HARMLESS = ["upper(v)", "length(v)", "abs(-1)", "coalesce(NULL, 1)", "now()", "md5('x')"]
PG_DANGEROUS = [
    "nextval('prop_seq')",
    "setval('prop_seq', 5)",
    "pg_sleep(0)",
    "pg_advisory_xact_lock(7)",
    "set_config('application_name', 'p', true)",
    "pg_notify('prop', 'x')",
    "lo_create(0)",
    "lo_from_bytea(0, 'x')",
    "pg_ls_dir('.')",
    "pg_cancel_backend(0)",
    "pg_catalog.pg_terminate_backend(0)",
]
MY_HARMLESS = ["UPPER(v)", "LENGTH(v)", "ABS(-1)", "COALESCE(NULL, 1)", "NOW()", "MD5('x')"]
MY_DANGEROUS = [
    "SLEEP(0)",
    "BENCHMARK(1, 1)",
    "GET_LOCK('prop', 0)",
    "RELEASE_LOCK('prop')",
    "IS_FREE_LOCK('prop')",
    "IS_USED_LOCK('prop')",
    "RELEASE_ALL_LOCKS()",
    "NEXTVAL(prop_seq)",
    "SETVAL(prop_seq, 50)",
]
PG_LOCKS = ["", "", " FOR UPDATE", " FOR SHARE", " FOR NO KEY UPDATE", " FOR KEY SHARE"]
MY_LOCKS = ["", "", " FOR UPDATE", " LOCK IN SHARE MODE", " FOR UPDATE SKIP LOCKED"]
WHERES = ["", " WHERE id = 1", " WHERE id IN (SELECT id FROM prop_b)", " WHERE 1 = 1"]


def _dml(dialect: str) -> st.SearchStrategy[str]:
    forms = [
        st.builds("INSERT INTO {} (id, v) VALUES (90, 'n')".format, TABLES),
        st.builds("UPDATE {} SET v = 'u'{}".format, TABLES, st.sampled_from(WHERES)),
        st.builds("DELETE FROM {}{}".format, TABLES, st.sampled_from(WHERES)),
    ]
    if dialect == "mysql":
        forms.append(st.builds("REPLACE INTO {} (id, v) VALUES (1, 'r')".format, TABLES))
    else:
        forms.append(
            st.builds(
                "MERGE INTO {} t USING prop_b s ON t.id = s.id WHEN MATCHED THEN DELETE".format,
                TABLES,
            )
        )
    return st.one_of(forms)


def _query(dialect: str) -> st.SearchStrategy[str]:
    pg = dialect == "postgresql"
    function = st.sampled_from((PG_HARMLESS + PG_DANGEROUS) if pg else (MY_HARMLESS + MY_DANGEROUS))
    plain = st.builds(
        "SELECT {} FROM {}{}{}".format,
        function,
        TABLES,
        st.sampled_from(WHERES),
        st.sampled_from(PG_LOCKS if pg else MY_LOCKS),
    )
    forms = [
        plain,
        st.builds("SELECT {}".format, function),
        st.builds("SELECT * FROM ({}) s".format, plain),
        st.builds("WITH c AS ({}) SELECT * FROM c".format, plain),
    ]
    if pg:
        returning = st.builds(
            "{} RETURNING id".format, _dml(dialect).filter(lambda s: "MERGE" not in s)
        )
        forms += [
            st.builds("WITH c AS ({}) SELECT count(*) FROM c".format, returning),
            st.builds("SELECT * INTO prop_new FROM {}".format, TABLES),
            st.builds("SELECT id INTO TEMP prop_tmp FROM {}".format, TABLES),
        ]
    else:
        forms += [
            st.builds("SELECT id INTO @x FROM {} LIMIT 1".format, TABLES),
            st.builds("SELECT id FROM {} LIMIT 1 INTO @x".format, TABLES),
        ]
    return st.one_of(forms)


def _set(dialect: str) -> st.SearchStrategy[str]:
    if dialect == "postgresql":
        return st.sampled_from(
            [
                "SET statement_timeout = 2000",
                "SET application_name = 'prop'",
                "SET TIME ZONE 'UTC'",
                "SET LOCAL lock_timeout = '1s'",
                "SET search_path = public",
                "SET work_mem = '64MB'",
                "SET SESSION AUTHORIZATION DEFAULT",
                "SET ROLE NONE",
            ]
        )
    return st.sampled_from(
        ["SET wait_timeout = 100", "SET NAMES utf8mb4", "SET @x = 1", "SET foreign_key_checks = 1"]
    )


def _explain(dialect: str, inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    if dialect == "postgresql":
        prefixes = [
            "EXPLAIN ",
            "EXPLAIN ANALYZE ",
            "EXPLAIN (ANALYZE, COSTS off) ",
            "EXPLAIN VERBOSE ",
        ]
    else:
        prefixes = ["EXPLAIN ", "ANALYZE ", "EXPLAIN FORMAT=JSON ", "EXPLAIN EXTENDED "]
    return st.builds("{}{}".format, st.sampled_from(prefixes), inner)


def statements(dialect: str) -> st.SearchStrategy[str]:
    query, dml = _query(dialect), _dml(dialect)
    single = st.one_of(query, dml, _set(dialect), _explain(dialect, st.one_of(query, dml)))
    batch = st.lists(single, min_size=1, max_size=3).map("; ".join)
    with_set = st.builds("{}; {}".format, _set(dialect), query)
    return st.one_of(single, single, batch, with_set)


# --- running a batch read-only --------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    refused_as_write: bool
    changed_data: bool


def _slices(sql: str, result: Classification) -> list[str]:
    return [s.text for s in result.statements] or [sql]


PG_SCRATCH = [
    "CREATE TABLE prop_a (id int PRIMARY KEY, v text)",
    "CREATE TABLE prop_b (id int PRIMARY KEY, v text)",
    "INSERT INTO prop_a VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    "INSERT INTO prop_b VALUES (1, 'x'), (3, 'y')",
    "CREATE SEQUENCE prop_seq",
]
PG_CHECKSUM = (
    "SELECT (SELECT string_agg(id || v, ',' ORDER BY id) FROM prop_a) || '|' || "
    "(SELECT string_agg(id || v, ',' ORDER BY id) FROM prop_b) || '|' || "
    "(SELECT last_value || ':' || is_called FROM prop_seq) || '|' || "
    "coalesce(to_regclass('prop_new')::text, '-') || '|' || "
    "(SELECT count(*) FROM pg_largeobject_metadata)"
)


def _pg_runner(url: str) -> Iterator[Callable[[str, Classification], Outcome]]:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in PG_SCRATCH:
            conn.execute(statement)

        def checksum() -> str:
            row = conn.execute(PG_CHECKSUM).fetchone()
            return str(row[0] if row else None)

        def run(sql: str, result: Classification) -> Outcome:
            before = checksum()
            refused = False
            conn.execute("BEGIN READ ONLY")
            conn.execute("SET LOCAL statement_timeout = '2s'")
            try:
                for text in _slices(sql, result):
                    conn.execute(text)
            except psycopg.Error as exc:
                refused = exc.sqlstate == PG_READ_ONLY
            finally:
                conn.execute("ROLLBACK")
            return Outcome(refused, checksum() != before)

        yield run


MY_SCRATCH = [
    "CREATE TABLE prop_a (id int PRIMARY KEY, v varchar(10)) ENGINE=InnoDB",
    "CREATE TABLE prop_b (id int PRIMARY KEY, v varchar(10)) ENGINE=InnoDB",
    "INSERT INTO prop_a VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    "INSERT INTO prop_b VALUES (1, 'x'), (3, 'y')",
    "CREATE SEQUENCE prop_seq NOCACHE",
    "SET SESSION max_statement_time = 2",
]
MY_CHECKSUM = (
    "SELECT CONCAT((SELECT GROUP_CONCAT(id, v ORDER BY id) FROM prop_a), '|', "
    "(SELECT GROUP_CONCAT(id, v ORDER BY id) FROM prop_b), '|', "
    "(SELECT next_not_cached_value FROM prop_seq))"
)


def _my_runner(url: str) -> Iterator[Callable[[str, Classification], Outcome]]:
    parts = urlsplit(url)
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
            for statement in MY_SCRATCH:
                cur.execute(statement)

        def checksum() -> str:
            with conn.cursor() as cur:
                cur.execute(MY_CHECKSUM)
                row = cur.fetchone()
            return str(row[0] if row else None)

        def run(sql: str, result: Classification) -> Outcome:
            before = checksum()
            refused = False
            with conn.cursor() as cur:
                cur.execute("START TRANSACTION READ ONLY")
                try:
                    for text in _slices(sql, result):
                        cur.execute(text)
                        cur.fetchall()
                except pymysql.MySQLError as exc:
                    refused = bool(exc.args) and exc.args[0] == MY_READ_ONLY
                finally:
                    cur.execute("ROLLBACK")
            return Outcome(refused, checksum() != before)

        yield run
    finally:
        conn.close()


@pytest.fixture
def pg_run(pg_database: str) -> Iterator[Callable[[str, Classification], Outcome]]:
    yield from _pg_runner(pg_database)


@pytest.fixture
def my_run(mysql_database: str) -> Iterator[Callable[[str, Classification], Outcome]]:
    yield from _my_runner(mysql_database)


PROPERTY = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(sql: str, dialect: str, run: Callable[[str, Classification], Outcome]) -> None:
    result = classifier.classify(sql, dialect)
    outcome = run(sql, result)
    event(f"class {result.kind}, refused as a write: {outcome.refused_as_write}")
    if outcome.refused_as_write or outcome.changed_data:
        assert result.kind is not StatementClass.SELECT, (sql, outcome)


@PROPERTY
@given(sql=statements("postgresql"))
def test_nothing_postgresql_refuses_as_a_write_is_classified_select(
    pg_run: Callable[[str, Classification], Outcome], sql: str
) -> None:
    _check(sql, "postgresql", pg_run)


@PROPERTY
@given(sql=statements("mysql"))
def test_nothing_mariadb_refuses_as_a_write_is_classified_select(
    my_run: Callable[[str, Classification], Outcome], sql: str
) -> None:
    _check(sql, "mysql", my_run)


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgresql", "DELETE FROM prop_a WHERE id = 1"),
        ("postgresql", "SELECT nextval('prop_seq')"),
        ("postgresql", "WITH c AS (DELETE FROM prop_a RETURNING id) SELECT count(*) FROM c"),
        ("postgresql", "SELECT * INTO prop_new FROM prop_a"),
        ("mysql", "DELETE FROM prop_a WHERE id = 1"),
        ("mysql", "REPLACE INTO prop_a (id, v) VALUES (1, 'r')"),
    ],
)
def test_the_oracle_sees_the_writes_the_grammar_makes(
    request: pytest.FixtureRequest, dialect: str, sql: str
) -> None:
    """Without this the property could pass because the databases never refuse anything."""
    run = request.getfixturevalue("pg_run" if dialect == "postgresql" else "my_run")
    outcome = run(sql, classifier.classify(sql, dialect))
    assert outcome.refused_as_write
    assert not outcome.changed_data  # and the rollback left the scratch data as it was
