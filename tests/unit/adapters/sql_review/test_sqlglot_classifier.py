"""SQL classification and redaction: docs/server.md §5.1-§5.3 and §6.5, with the sqlglot
sharp edges of docs/server.md §5.4, the exact-source execution plan of
§11.12, and the lexer differentials the classifier refuses to guess at."""

from __future__ import annotations

import json

import pytest

from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from application.server.ports.services import SqlClassifier
from domain.server.sql_classification import (
    DANGEROUS_FUNCTIONS,
    EMPTY_QUERY,
    ESCALATION_ORDER,
    MAX_SQL_BYTES,
    REDACTION_FAILED,
    SAFE_SET_VARIABLES,
    Classification,
    ClassifiedStatement,
    StatementClass,
    classify_batch,
    execution_plan_json,
    pre_parse_rejection,
)
from domain.shared.operations import Operation

PG = "postgresql"
MY = "mysql"
SELECT = StatementClass.SELECT
DML = StatementClass.DML
DDL = StatementClass.DDL
DESTRUCTIVE = StatementClass.DESTRUCTIVE_DDL
UNKNOWN = StatementClass.UNKNOWN
REJECTED = StatementClass.REJECTED
PARSE_FAILURE = StatementClass.PARSE_FAILURE
DANGEROUS = StatementClass.DANGEROUS_FUNCTION
SEMANTIC = StatementClass.SEMANTIC_ESCALATION

classifier: SqlClassifier = SqlglotClassifier()  # the adapter satisfies the port


def classify(sql: str, dialect: str = PG) -> Classification:
    return classifier.classify(sql, dialect)


def texts(result: Classification) -> tuple[str, ...]:
    return tuple(s.text for s in result.statements)


# --- §5.2: one row per statement class, PostgreSQL and MySQL ---------------------------

ROWS: list[tuple[str, str, StatementClass]] = [
    # Select: queries, EXPLAIN without ANALYZE, EXPLAIN TABLE, SHOW, safe SETs
    (PG, "SELECT 1", SELECT),
    (PG, "select id, name from users where id = 42", SELECT),
    (PG, "WITH a AS (SELECT 1) SELECT * FROM a", SELECT),
    (PG, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r", SELECT),
    (PG, "TABLE t", SELECT),
    (PG, "VALUES (1), (2)", SELECT),
    (PG, "(SELECT 1) UNION (SELECT 2)", SELECT),
    (PG, "SELECT count(*), max(a), upper(b) FROM t", SELECT),
    (PG, "EXPLAIN SELECT * FROM t", SELECT),
    (PG, "EXPLAIN (FORMAT JSON, COSTS false) SELECT * FROM t", SELECT),
    (PG, "EXPLAIN VERBOSE DELETE FROM t", SELECT),  # plan only: nothing runs
    (PG, "SHOW search_path", SELECT),
    (PG, "SHOW ALL", SELECT),
    (PG, "SET statement_timeout = 5000", SELECT),
    (PG, "SET LOCAL lock_timeout TO '1s'", SELECT),
    (PG, "SET SESSION idle_in_transaction_session_timeout = 0", SELECT),
    (PG, "SET timezone = 'UTC'", SELECT),
    (PG, "SET \"TimeZone\" = 'UTC'", SELECT),
    (PG, "SET TIME ZONE 'UTC'", SELECT),
    (PG, "SET datestyle = iso, mdy", SELECT),
    (PG, "SET client_encoding TO 'UTF8'", SELECT),
    (PG, "SET application_name = 'report'", SELECT),
    (PG, "SET extra_float_digits = 3", SELECT),
    (PG, "SET statement_timeout = DEFAULT", SELECT),
    (PG, "SET NAMES 'UTF8'", SELECT),
    (MY, "SELECT 1", SELECT),
    (MY, "SELECT /*+ MAX_EXECUTION_TIME(100) */ * FROM t", SELECT),
    (MY, "SHOW TABLES", SELECT),
    (MY, "SHOW CREATE TABLE t", SELECT),
    (MY, "SHOW DATABASES", SELECT),
    (MY, "SHOW VARIABLES LIKE 'max%'", SELECT),
    (MY, "DESCRIBE t", SELECT),
    (MY, "DESC t", SELECT),
    (MY, "EXPLAIN t", SELECT),
    (MY, "EXPLAIN FORMAT=JSON SELECT * FROM t", SELECT),
    (MY, "SET NAMES utf8mb4", SELECT),
    (MY, "SET CHARACTER SET utf8mb4", SELECT),
    (MY, "SET @@session.sql_mode = ''", SELECT),
    (MY, "SET SESSION wait_timeout = 5, autocommit = 1", SELECT),
    (MY, "SET character_set_client = utf8mb4", SELECT),
    # DML(Statement)
    (PG, "INSERT INTO t VALUES (1)", DML),
    (PG, "UPDATE t SET a = 1 WHERE id = 2", DML),
    (PG, "DELETE FROM t WHERE id = 2", DML),
    (PG, "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", DML),
    (PG, "WITH x AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM x", DML),
    (PG, "COPY t TO STDOUT", DML),
    (PG, "CALL p(1)", DML),
    (PG, "NOTIFY ch, 'payload'", DML),
    (PG, "LISTEN ch", DML),
    (PG, "UNLISTEN ch", DML),
    (PG, "INSERT INTO t SELECT pg_sleep(1)", DML),  # DML outranks DangerousFunction
    (MY, "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 1", DML),
    (MY, "REPLACE INTO t VALUES (1)", DML),
    (MY, "UPDATE t SET a = 1", DML),
    (MY, "DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id", DML),
    (MY, "CALL p()", DML),
    # DML(Ddl): the safe-DDL candidates
    (PG, "CREATE TABLE t (id int PRIMARY KEY, name text)", DDL),
    (PG, "CREATE TEMPORARY TABLE t (id int)", DDL),
    (PG, "CREATE TABLE t2 AS SELECT * FROM t", DDL),
    (PG, "CREATE TABLE c (id int REFERENCES p(id) ON DELETE CASCADE)", DDL),
    (PG, "CREATE VIEW v AS SELECT 1", DDL),
    (PG, "CREATE OR REPLACE VIEW v AS SELECT 1", DDL),
    (PG, "CREATE MATERIALIZED VIEW v AS SELECT 1", DDL),
    (PG, "CREATE INDEX CONCURRENTLY i ON t (a)", DDL),
    (PG, "CREATE UNIQUE INDEX i ON t (a)", DDL),
    (PG, "ALTER TABLE t ADD COLUMN b int", DDL),
    (MY, "CREATE TABLE t (id int, FOREIGN KEY (id) REFERENCES p(id) ON DELETE CASCADE)", DDL),
    (MY, "CREATE ALGORITHM=MERGE VIEW v AS SELECT 1", DDL),
    (MY, "CREATE INDEX i ON t (a)", DDL),
    (MY, "ALTER TABLE t ADD COLUMN b int", DDL),
    # DML(DestructiveDdl)
    (PG, "DROP TABLE t", DESTRUCTIVE),
    (PG, "DROP TABLE IF EXISTS t, u CASCADE", DESTRUCTIVE),
    (PG, "DROP VIEW v", DESTRUCTIVE),
    (PG, "DROP MATERIALIZED VIEW v", DESTRUCTIVE),
    (PG, "DROP INDEX CONCURRENTLY i", DESTRUCTIVE),
    (PG, "DROP SEQUENCE s", DESTRUCTIVE),
    (PG, "TRUNCATE t", DESTRUCTIVE),
    (PG, "CREATE SEQUENCE s", DESTRUCTIVE),
    (MY, "DROP TABLE t", DESTRUCTIVE),
    (MY, "DROP INDEX i ON t", DESTRUCTIVE),
    (MY, "TRUNCATE TABLE t", DESTRUCTIVE),
    # DML(UnknownStatement): fail closed, needs approval
    (PG, "EXECUTE stmt(1)", UNKNOWN),
    (PG, "PREPARE p AS SELECT 1", UNKNOWN),
    (PG, "DEALLOCATE p", UNKNOWN),
    (PG, "VACUUM t", UNKNOWN),
    (PG, "ANALYZE t", UNKNOWN),
    (PG, "REFRESH MATERIALIZED VIEW v", UNKNOWN),
    (PG, "COMMENT ON TABLE t IS 'x'", UNKNOWN),
    (PG, "RESET ALL", UNKNOWN),
    (PG, "DISCARD ALL", UNKNOWN),
    (PG, "CHECKPOINT", UNKNOWN),
    (PG, "foo bar", UNKNOWN),
    (MY, "USE db", UNKNOWN),
    (MY, "KILL 5", UNKNOWN),
    (MY, "RENAME TABLE a TO b", UNKNOWN),
    (MY, "SET sql_mode = 'x', session.y = 1", UNKNOWN),  # unparsed SET: the tail is opaque
    (PG, "SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE", UNKNOWN),
    # Rejected
    (PG, "BEGIN", REJECTED),
    (PG, "START TRANSACTION", REJECTED),
    (PG, "COMMIT", REJECTED),
    (PG, "END", REJECTED),
    (PG, "ROLLBACK", REJECTED),
    (PG, "ABORT", REJECTED),
    (PG, "SAVEPOINT s", REJECTED),
    (PG, "RELEASE SAVEPOINT s", REJECTED),
    (PG, "ROLLBACK TO SAVEPOINT s", REJECTED),
    (PG, "PREPARE TRANSACTION 'x'", REJECTED),
    (PG, "COMMIT PREPARED 'x'", REJECTED),
    (PG, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", REJECTED),
    (PG, "CREATE SCHEMA s", REJECTED),
    (PG, "CREATE DATABASE d", REJECTED),
    (PG, "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", REJECTED),
    (PG, "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", REJECTED),
    (PG, "CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$", REJECTED),
    (PG, "CREATE TYPE ty AS (a int)", REJECTED),
    (PG, "CREATE ROLE r", REJECTED),
    (PG, "CREATE EXTENSION dblink", REJECTED),
    (PG, "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", REJECTED),
    (PG, "CREATE FOREIGN TABLE ft (a int) SERVER s", REJECTED),
    (PG, "ALTER INDEX i RENAME TO j", REJECTED),
    (PG, "ALTER VIEW v RENAME TO w", REJECTED),
    (PG, "ALTER ROLE r SUPERUSER", REJECTED),
    (PG, "ALTER SCHEMA s RENAME TO s2", REJECTED),
    (PG, "ALTER SYSTEM SET work_mem = '1GB'", REJECTED),
    (PG, "ALTER SEQUENCE s RESTART", REJECTED),
    (PG, "GRANT SELECT ON t TO u", REJECTED),
    (PG, "REVOKE SELECT ON t FROM u", REJECTED),
    (PG, "DROP SCHEMA s", REJECTED),
    (PG, "DROP DATABASE d", REJECTED),
    (PG, "DROP ROLE r", REJECTED),
    (PG, "DROP FUNCTION f", REJECTED),
    (PG, "DROP TRIGGER tr ON t", REJECTED),
    (PG, "LOAD 'auto_explain'", REJECTED),
    (PG, "DO $$ BEGIN PERFORM 1; END $$", REJECTED),
    (PG, "SET ROLE admin", REJECTED),
    (PG, "SET LOCAL ROLE admin", REJECTED),
    (PG, "SET SESSION AUTHORIZATION admin", REJECTED),
    (PG, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", REJECTED),
    (PG, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", REJECTED),
    (PG, "SET search_path = evil, public", REJECTED),
    (PG, "SET a.b = 1", REJECTED),
    (PG, "SET work_mem = '1GB'", REJECTED),
    (MY, "START TRANSACTION", REJECTED),
    (MY, "BEGIN", REJECTED),
    (MY, "XA START 'x'", REJECTED),
    (MY, "LOCK TABLES t WRITE", REJECTED),
    (MY, "UNLOCK TABLES", REJECTED),
    (MY, "LOAD DATA INFILE '/etc/passwd' INTO TABLE t", REJECTED),
    (MY, "DO SLEEP(1)", REJECTED),
    (MY, "GRANT ALL ON *.* TO u", REJECTED),
    (MY, "CREATE USER u", REJECTED),
    (MY, "DROP USER u", REJECTED),
    (MY, "CREATE PROCEDURE p() SELECT 1", REJECTED),
    (MY, "SET @x = 1", REJECTED),
    (MY, "SET GLOBAL wait_timeout = 5", REJECTED),
    (MY, "SET @@global.wait_timeout = 5", REJECTED),
    (MY, "SET PERSIST wait_timeout = 5", REJECTED),
    (MY, "SET PASSWORD = 'x'", REJECTED),
    (MY, "SET ROLE r", REJECTED),
    (MY, "SET DEFAULT ROLE ALL TO u", REJECTED),
    (MY, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", REJECTED),
    (MY, "SET time_zone = '+00:00'", REJECTED),  # not on the §5.2 safe list
]


@pytest.mark.parametrize(("dialect", "sql", "expected"), ROWS)
def test_statement_class(dialect: str, sql: str, expected: StatementClass) -> None:
    result = classify(sql, dialect)
    assert result.kind is expected, result
    assert [s.kind for s in result.statements] == [expected]
    expected_op = Operation.EXECUTE_SELECT if expected is SELECT else Operation.EXECUTE_DML
    assert result.operation == expected_op
    assert (result.rejected_reason is not None) == (expected is REJECTED)
    assert not result.parse_failed
    assert result.statements[0].reason


def test_rejection_reasons_say_why() -> None:
    assert classify("BEGIN").rejected_reason == "transaction control is not allowed (BEGIN)"
    assert classify("DROP SCHEMA s").rejected_reason == "DROP SCHEMA is not allowed"
    assert classify("SET ROLE admin").rejected_reason == "SET ROLE is not allowed"
    reason = classify("SET search_path = evil").rejected_reason
    assert reason is not None
    assert reason.startswith("SET search_path is not allowed")
    assert "statement_timeout" in reason
    assert classify("DO $$ BEGIN END $$").rejected_reason == (
        "DO blocks are not allowed: their body cannot be inspected"
    )
    batch = classify("UPDATE t SET a = 1; GRANT SELECT ON t TO u")
    assert batch.rejected_reason == "statement 2: privilege changes are not allowed (GRANT)"


def test_safe_sets_are_marked_and_other_selects_are_not() -> None:
    assert classify("SET statement_timeout = 5").statements[0].is_safe_set
    assert classify("SET NAMES utf8mb4", MY).statements[0].is_safe_set
    assert classify("SET TIME ZONE 'UTC'").statements[0].is_safe_set
    assert not classify("SELECT 1").statements[0].is_safe_set
    assert not classify("SHOW search_path").statements[0].is_safe_set


@pytest.mark.parametrize("variable", sorted(SAFE_SET_VARIABLES))
@pytest.mark.parametrize("dialect", [PG, MY])
def test_every_safe_variable_may_be_set(dialect: str, variable: str) -> None:
    result = classify(f"SET {variable} = 1", dialect)
    assert result.kind is SELECT
    assert result.statements[0].is_safe_set


def test_unsupported_dialect_is_an_error() -> None:
    with pytest.raises(ValueError, match="unsupported SQL dialect"):
        classify("SELECT 1", "oracle")
    with pytest.raises(ValueError, match="unsupported SQL dialect"):
        classifier.redact("SELECT 1", "sqlite")


# --- §5.2 escalations -----------------------------------------------------------------

ESCALATIONS: list[tuple[str, str, StatementClass, str]] = [
    # SELECT … INTO
    (PG, "SELECT * INTO new_t FROM t", SEMANTIC, "INTO"),
    (PG, "SELECT * INTO TEMP new_t FROM t", SEMANTIC, "INTO"),
    (MY, "SELECT a INTO @v FROM t", SEMANTIC, "INTO"),
    # writable CTEs, anywhere in the tree
    (PG, "WITH x AS (DELETE FROM t RETURNING id) SELECT * FROM x", DML, "DELETE"),
    (PG, "WITH x AS (UPDATE t SET a = 1 RETURNING id) SELECT * FROM x", DML, "UPDATE"),
    (PG, "WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x", DML, "INSERT"),
    (PG, "SELECT * FROM (WITH x AS (DELETE FROM t RETURNING id) SELECT * FROM x) s", DML, "DELETE"),
    (
        PG,
        "CREATE TABLE t2 AS WITH x AS (DELETE FROM t RETURNING id) SELECT * FROM x",
        DML,
        "DELETE",
    ),
    # lock clauses, anywhere
    (PG, "SELECT * FROM t FOR UPDATE", SEMANTIC, "lock"),
    (PG, "SELECT * FROM t FOR NO KEY UPDATE NOWAIT", SEMANTIC, "lock"),
    (PG, "SELECT * FROM t FOR SHARE", SEMANTIC, "lock"),
    (PG, "SELECT * FROM t FOR KEY SHARE SKIP LOCKED", SEMANTIC, "lock"),
    (PG, "SELECT * FROM (SELECT * FROM t FOR UPDATE) s", SEMANTIC, "lock"),
    (MY, "SELECT * FROM t FOR UPDATE", SEMANTIC, "lock"),
    (MY, "SELECT * FROM t LOCK IN SHARE MODE", SEMANTIC, "lock"),
    # dangerous functions, anywhere, matched on the last name part, lower-cased
    (PG, "SELECT pg_terminate_backend(1)", DANGEROUS, "pg_terminate_backend"),
    (PG, "SELECT pg_catalog.pg_sleep(1)", DANGEROUS, "pg_sleep"),
    (PG, 'SELECT "pg_sleep"(1)', DANGEROUS, "pg_sleep"),
    (PG, "SELECT PG_SLEEP(1)", DANGEROUS, "pg_sleep"),
    (PG, "SELECT * FROM pg_sleep(1)", DANGEROUS, "pg_sleep"),
    (PG, "SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)", DANGEROUS, "dblink"),
    (PG, "SELECT 1 WHERE EXISTS (SELECT pg_advisory_lock(1))", DANGEROUS, "pg_advisory_lock"),
    (PG, "SELECT nextval('s')", DANGEROUS, "nextval"),
    (PG, "SET statement_timeout = 5; SELECT set_config('role', 'x', false)", DANGEROUS, "set"),
    (MY, "SELECT SLEEP(1)", DANGEROUS, "sleep"),
    (MY, "SELECT `sleep`(1)", DANGEROUS, "sleep"),
    (MY, "SELECT BENCHMARK(1000000, MD5('a'))", DANGEROUS, "benchmark"),
    (MY, "SELECT * FROM t WHERE a = (SELECT LOAD_FILE('/etc/passwd'))", DANGEROUS, "load_file"),
    (MY, "SET wait_timeout = (SELECT SLEEP(5))", DANGEROUS, "sleep"),
    (PG, "ALTER TABLE t ADD COLUMN c boolean DEFAULT pg_terminate_backend(1)", DANGEROUS, "pg_"),
    # EXPLAIN ANALYZE x is classified as x
    (PG, "EXPLAIN ANALYZE DELETE FROM t", DML, "ANALYZE"),
    (PG, "EXPLAIN ANALYSE VERBOSE UPDATE t SET a = 1", DML, "ANALYZE"),
    (PG, "EXPLAIN (ANALYZE, BUFFERS) INSERT INTO t VALUES (1)", DML, "ANALYZE"),
    (PG, "EXPLAIN (ANALYZE false) DELETE FROM t", DML, "ANALYZE"),  # any ANALYZE counts
    (PG, 'EXPLAIN ("analyze") DELETE FROM t', DML, "ANALYZE"),  # a quoted option name runs it
    (PG, "EXPLAIN ANALYZE SELECT pg_sleep(10)", DANGEROUS, "pg_sleep"),
    (PG, "EXPLAIN ANALYZE DROP TABLE t", DESTRUCTIVE, "DROP"),
    (MY, "EXPLAIN ANALYZE FORMAT=TREE UPDATE t SET a = 1", DML, "ANALYZE"),
    (MY, "EXPLAIN ANALYZE SELECT SLEEP(1)", DANGEROUS, "sleep"),
    # EXPLAIN without ANALYZE still escalates a dangerous call (evaluated while planning)
    (PG, "EXPLAIN SELECT pg_sleep(1)", DANGEROUS, "pg_sleep"),
]


@pytest.mark.parametrize(("dialect", "sql", "expected", "in_reason"), ESCALATIONS)
def test_escalation(dialect: str, sql: str, expected: StatementClass, in_reason: str) -> None:
    result = classify(sql, dialect)
    assert result.kind is expected, result
    assert result.operation == Operation.EXECUTE_DML
    worst = max(result.statements, key=lambda s: s.kind.rank)
    assert in_reason.lower() in worst.reason.lower()


def test_explain_analyze_of_a_query_is_a_query() -> None:
    result = classify("EXPLAIN ANALYZE SELECT * FROM t")
    assert result.kind is SELECT
    assert result.operation == Operation.EXECUTE_SELECT
    assert classify("EXPLAIN (ANALYZE) SELECT 1").kind is SELECT
    assert classify("EXPLAIN ANALYZE SELECT * FROM t", MY).kind is SELECT


@pytest.mark.parametrize("name", sorted(DANGEROUS_FUNCTIONS))
@pytest.mark.parametrize("dialect", [PG, MY])
def test_every_dangerous_function_escalates(dialect: str, name: str) -> None:
    for sql in (f"SELECT {name}(1, 2)", f"SELECT {name.upper()}()", f"SELECT s.{name}('x')"):
        result = classify(sql, dialect)
        assert result.kind is DANGEROUS, sql
        assert result.statements[0].reason == f"query that calls {name}()"


def test_ddl_with_a_dangerous_default_is_not_ddl_only() -> None:
    result = classify("CREATE TABLE t (id int DEFAULT nextval('s'))")
    assert result.kind is DANGEROUS
    assert not result.is_ddl_only
    assert not result.contains_ddl


# --- §5.2 batch result: the escalation order ------------------------------------------


def statement(kind: StatementClass, is_safe_set: bool = False) -> ClassifiedStatement:
    return ClassifiedStatement(f"-- {kind}", kind, str(kind), is_safe_set=is_safe_set)


def test_escalation_order_is_the_spec_order() -> None:
    assert [k.value for k in ESCALATION_ORDER] == [
        "rejected",
        "dml",
        "dangerous_function",
        "semantic_escalation",
        "unknown",
        "parse_failure",
        "destructive_ddl",
        "ddl",
        "select",
    ]
    assert set(ESCALATION_ORDER) == set(StatementClass)


@pytest.mark.parametrize(
    ("higher", "lower"),
    [(h, lo) for i, h in enumerate(ESCALATION_ORDER) for lo in ESCALATION_ORDER[i + 1 :]],
)
def test_a_batch_takes_its_worst_statement(higher: StatementClass, lower: StatementClass) -> None:
    for statements in (
        [statement(lower), statement(higher)],
        [statement(higher), statement(lower)],
    ):
        result = classify_batch(statements)
        assert result.kind is higher
        assert result.operation == Operation.EXECUTE_DML  # two statements, one not SELECT


def test_batch_ddl_flags() -> None:
    only_ddl = classify("CREATE TABLE t (a int); DROP TABLE u")
    assert only_ddl.kind is DESTRUCTIVE
    assert only_ddl.is_ddl_only
    assert only_ddl.contains_ddl
    mixed = classify("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
    assert mixed.kind is DML
    assert not mixed.is_ddl_only
    assert mixed.contains_ddl
    assert [s.kind for s in mixed.statements] == [DDL, DML]
    plain = classify("UPDATE t SET a = 1")
    assert not plain.is_ddl_only
    assert not plain.contains_ddl
    assert classify("CREATE INDEX i ON t (a)").is_ddl_only


def test_parse_failure_ranks_below_unknown_but_always_flags_the_batch() -> None:
    result = classify("VACUUM t; SELEC 1")
    assert result.kind is UNKNOWN
    assert result.parse_failed
    assert [s.kind for s in result.statements] == [UNKNOWN, PARSE_FAILURE]


def test_a_safe_set_must_be_a_select() -> None:
    with pytest.raises(ValueError, match="safe SET"):
        ClassifiedStatement("SET x = 1", DML, "x", is_safe_set=True)


# --- §5.3 multi-statement rules -------------------------------------------------------

MULTI: list[tuple[str, str, StatementClass, str | None]] = [
    (PG, "SET statement_timeout = 5; SELECT 1", SELECT, None),
    (PG, "SET statement_timeout = 5; SET lock_timeout = 1; SELECT * FROM t", SELECT, None),
    (PG, "SET TIME ZONE 'UTC'; SHOW timezone", SELECT, None),
    (PG, "SET statement_timeout = 5; EXPLAIN SELECT 1", SELECT, None),
    (MY, "SET NAMES utf8mb4; SET @@session.sql_mode = ''; SELECT 1", SELECT, None),
    (PG, "SELECT 1; SELECT 2", REJECTED, "submit each query separately"),
    (PG, "SHOW search_path; SELECT 1", REJECTED, "submit each query separately"),
    (PG, "SET statement_timeout = 5; SELECT 1; SELECT 2", REJECTED, "submit each query"),
    (PG, "SELECT 1; SET statement_timeout = 5", REJECTED, "after the query"),
    (PG, "SET statement_timeout = 5; SET lock_timeout = 1", REJECTED, "needs a query"),
    (MY, "SELECT 1; SELECT 2", REJECTED, "submit each query separately"),
    # DML batches may mix anything that is not rejected
    (PG, "UPDATE t SET a = 1; DELETE FROM u WHERE id = 2", DML, None),
    (PG, "SELECT 1; UPDATE t SET a = 1; SELECT 2", DML, None),
    (PG, "SET statement_timeout = 5; UPDATE t SET a = 1", DML, None),
    (MY, "INSERT INTO t VALUES (1); REPLACE INTO t VALUES (2)", DML, None),
]


@pytest.mark.parametrize(("dialect", "sql", "expected", "reason"), MULTI)
def test_multi_statement_rules(
    dialect: str, sql: str, expected: StatementClass, reason: str | None
) -> None:
    result = classify(sql, dialect)
    assert result.kind is expected, result
    if reason is None:
        assert result.rejected_reason is None
    else:
        assert result.rejected_reason is not None
        assert reason in result.rejected_reason
        assert result.operation == Operation.EXECUTE_DML


def test_dml_batches_of_up_to_100_statements() -> None:
    hundred = ";\n".join(f"UPDATE t SET a = {i} WHERE id = {i}" for i in range(100))
    result = classify(hundred)
    assert result.kind is DML
    assert result.statement_count == 100
    too_many = classify(hundred + "; DELETE FROM t")
    assert too_many.kind is REJECTED
    assert too_many.rejected_reason == "too many statements (101; at most 100)"
    assert too_many.statements == ()


# --- §5.1 pre-parse limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", EMPTY_QUERY),
        ("   \n\t ", EMPTY_QUERY),
        ("-- only a comment", EMPTY_QUERY),
        ("/* nothing */ ;; ;", EMPTY_QUERY),
        ("SELECT 1\x00", "SQL contains a NUL byte"),
        ("SELECT '" + "x" * MAX_SQL_BYTES + "'", f"SQL is larger than {MAX_SQL_BYTES} bytes"),
        ("SELECT 1 /*! ; DROP TABLE t */", "MySQL executable comments"),
        ("SELECT 1 /*!50000 , 2 */", "MySQL executable comments"),
        ("SELECT 1 /*M!100100 ; DROP TABLE t */", "MariaDB executable comments"),
        ("SELECT 1 {# ; DROP TABLE t; #}", "'{#' is not allowed"),
    ],
)
@pytest.mark.parametrize("dialect", [PG, MY])
def test_pre_parse_rejections(dialect: str, sql: str, reason: str) -> None:
    result = classify(sql, dialect)
    assert result.kind is REJECTED
    assert result.rejected_reason is not None
    assert result.rejected_reason.startswith(reason)
    assert result.statements == ()
    assert not result.parse_failed


def test_size_limit_counts_bytes_not_characters() -> None:
    payload = "é" * (MAX_SQL_BYTES // 2)  # 2 bytes each: exactly at the limit
    assert pre_parse_rejection(f"{payload}") is None
    assert pre_parse_rejection(f"{payload}é") == f"SQL is larger than {MAX_SQL_BYTES} bytes"


def test_do_and_load_are_rejected_even_when_unparseable() -> None:
    assert (
        classify("DO $$ unterminated").rejected_reason == "DO and LOAD statements are not allowed"
    )
    assert classify("SELECT 1; do $$ x").kind is REJECTED
    assert classify("LOAD DATA INFILE 'x' INTO TABLE t", MY).rejected_reason == (
        "LOAD DATA is not allowed"
    )


def test_parse_failures_are_flagged_not_guessed() -> None:
    for dialect, sql in [
        (PG, "SELEC 1"),
        (PG, "SELECT 'unterminated"),
        (PG, "SELECT $$unterminated"),
        (PG, "SELECT 1 /* unterminated"),
        (PG, "SELECT " + "(" * 3000 + "1" + ")" * 3000),  # recursion depth
        (MY, "HANDLER t OPEN"),
        (MY, "INSTALL PLUGIN x SONAME 'x.so'"),
        (PG, "EXPLAIN"),
    ]:
        result = classify(sql, dialect)
        assert result.parse_failed, sql
        assert result.operation == Operation.EXECUTE_DML
        assert result.rejected_reason is None
        with pytest.raises(ValueError, match="could not be parsed"):
            execution_plan_json(result)


def test_parse_failure_reasons_do_not_quote_the_sql() -> None:
    result = classify("SELECT * FROM t INTO @secret, @other", MY)
    assert "secret" not in result.statements[0].reason
    assert result.statements[0].reason.startswith("could not be parsed: ")
    unterminated = classify("SELECT 'secret")
    assert "secret" not in unterminated.statements[0].reason


# --- sqlglot's sharp edges (docs/server.md §5.4) ------------------------------------


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        (PG, "WITH x AS (DELETE FROM t RETURNING id) SELECT * FROM x", DML),  # top node Select
        (PG, "SHOW search_path", SELECT),  # a Command in sqlglot
        (PG, "EXPLAIN ANALYZE DELETE FROM t", DML),  # a Command in sqlglot
        (PG, "DO $$ BEGIN DELETE FROM t; END $$", REJECTED),  # a Command in sqlglot
        (PG, "SELECT pg_terminate_backend(1)", DANGEROUS),  # a plain Select in sqlglot
        (PG, "SELECT 1; DROP TABLE t", DESTRUCTIVE),
        (MY, "SELECT 1 /*! ; DROP TABLE t */", REJECTED),  # sqlglot: just a comment
        (PG, "SELECT 1 /*! ; DROP TABLE t */", REJECTED),  # refused in PostgreSQL too
        (MY, "REPLACE INTO t VALUES (1)", DML),  # a Command in sqlglot
        (MY, "SELECT * FROM t INTO OUTFILE '/tmp/x'", REJECTED),  # a ParseError in sqlglot
        (MY, "LOAD DATA INFILE '/x' INTO TABLE t", REJECTED),
        (MY, "LISTEN ch", DML),  # sqlglot: an alias expression
        (PG, "SAVEPOINT s", REJECTED),  # sqlglot: an alias expression
        (MY, "LOCK TABLES t READ", REJECTED),  # sqlglot: one multi-word token
    ],
)
def test_sharp_edges(dialect: str, sql: str, expected: StatementClass) -> None:
    result = classify(sql, dialect)
    assert result.operation == (
        Operation.EXECUTE_SELECT if expected is SELECT else Operation.EXECUTE_DML
    )
    assert result.kind is expected


# --- lexer differentials: refuse what two lexers could read differently ---------------


@pytest.mark.parametrize(
    ("dialect", "sql", "setting"),
    [
        # PostgreSQL with standard_conforming_strings=off reads \' as a quote: the DROP runs.
        (PG, "SELECT 'a\\'; DROP TABLE t; --'", "standard_conforming_strings"),
        (PG, "SELECT 'C:\\'", "standard_conforming_strings"),
        # MySQL with NO_BACKSLASH_ESCAPES (settable by the "safe" sql_mode!) reads it the
        # other way round.
        (MY, "SELECT 'it\\'s'", "NO_BACKSLASH_ESCAPES"),
        (
            MY,
            "SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\\'; DROP TABLE t; -- '",
            "NO_BACKSLASH_ESCAPES",
        ),
        (MY, 'SELECT "a\\"; DROP TABLE t; -- "', "NO_BACKSLASH_ESCAPES"),
    ],
)
def test_ambiguous_backslashes_are_rejected(dialect: str, sql: str, setting: str) -> None:
    result = classify(sql, dialect)
    assert result.kind is REJECTED
    assert result.rejected_reason is not None
    assert setting in result.rejected_reason


def test_mysql_dashes_before_a_unicode_space_are_rejected() -> None:
    # sqlglot reads `--` + NBSP as a comment, MySQL as two minus signs and a name: the
    # DROP below would run in MySQL while sqlglot saw one SELECT.
    sql = "SELECT --\u00a0x FROM (SELECT 1 AS `\u00a0x`) s; DROP TABLE t; SELECT 1\n 1"
    result = classify(sql, MY)
    assert result.kind is REJECTED
    assert result.rejected_reason is not None
    assert "non-ASCII space" in result.rejected_reason
    assert classify("SELECT ---\u2003x\n1", MY).kind is REJECTED  # overlapping dashes
    assert classify("SELECT 1 -- note\n", MY).kind is SELECT
    assert classify("SELECT --\u00a0x\n 1", PG).kind is SELECT  # always a comment there


def test_dollar_tags_postgresql_would_not_read_as_quotes_are_rejected() -> None:
    # PostgreSQL reads `$1a$` as the parameter $1 and the name a$: three statements, all
    # valid, where sqlglot saw one PREPARE holding a string.
    sql = "PREPARE p AS SELECT $1a$; DROP TABLE t; PREPARE q AS SELECT $1a$"
    result = classify(sql)
    assert result.kind is REJECTED
    assert result.rejected_reason is not None
    assert "dollar-quote tag" in result.rejected_reason
    assert classify("SELECT $a;b$ x $a;b$").kind is REJECTED
    assert classify("SELECT $tag$x$tag$, $$y$$, $_t1$z$_t1$, $é$w$é$").kind is SELECT
    assert classify("SELECT $1, $2").kind is SELECT


def test_ansi_quotes_cannot_hide_a_call() -> None:
    # With sql_mode ANSI_QUOTES "sleep" is a name and this calls it: fail closed.
    result = classify("SET sql_mode = 'ANSI_QUOTES'; SELECT \"sleep\"(5)", MY)
    assert result.parse_failed
    assert classify("SELECT sleep (5)", MY).kind is DANGEROUS


def test_unambiguous_backslashes_are_fine() -> None:
    assert classify("SELECT 'C:\\\\temp', '\\d+'", MY).kind is SELECT
    assert classify("SELECT '\\d+', E'it\\'s'").kind is SELECT  # E'' always escapes
    assert classify("SELECT 'it''s'", MY).kind is SELECT


def test_mysql_dash_comment_needs_a_space_as_mysql_says() -> None:
    # MySQL reads `--1` as minus minus one, so the DROP is a real second statement.
    result = classify("SELECT 1 --1; DROP TABLE t", MY)
    assert texts(result) == ("SELECT 1 --1", "DROP TABLE t")
    assert result.kind is DESTRUCTIVE
    hidden = classify("SELECT 1 -- c; DROP TABLE t", MY)
    assert texts(hidden) == ("SELECT 1",)
    assert hidden.kind is SELECT


def test_comment_syntax_follows_each_database() -> None:
    # `#` is a comment in MySQL only; PostgreSQL nests block comments, MySQL does not.
    assert texts(classify("SELECT 1 # c ; x\n, 2", MY)) == ("SELECT 1 # c ; x\n, 2",)
    assert classify("SELECT 1 # 2", PG).kind is SELECT  # an operator in PostgreSQL
    nested = classify("SELECT /* a /* b */ ; */ 1")
    assert texts(nested) == ("SELECT /* a /* b */ ; */ 1",)
    flat = classify("SELECT /* a /* b */ 1; DROP TABLE t", MY)
    assert texts(flat) == ("SELECT /* a /* b */ 1", "DROP TABLE t")
    # PostgreSQL ends a line comment at \r too.
    assert classify("UPDATE t SET a = 1 -- c\rWHERE id = 2").statements[0].text == (
        "UPDATE t SET a = 1 -- c\rWHERE id = 2"
    )


# --- exact-source slicing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        (PG, "UPDATE t SET a = 1;", ("UPDATE t SET a = 1",)),
        (
            PG,
            "UPDATE t SET a = 1 ;  \n\n DELETE  FROM   u ;;  ",
            ("UPDATE t SET a = 1", "DELETE  FROM   u"),
        ),
        (
            PG,
            "/* lead */ UPDATE t /* mid */ SET a = 1 -- tail\n; -- next\nDELETE FROM u -- end",
            ("/* lead */ UPDATE t /* mid */ SET a = 1", "-- next\nDELETE FROM u"),
        ),
        (
            PG,
            "UPDATE t SET a = 'x;y', b = $$p;q$$, c = $tag$ ; $$ ; $tag$ /* ; */ "
            "WHERE \"we;ird\" = 1 -- ;\n AND d = E'\\';'",
            (
                "UPDATE t SET a = 'x;y', b = $$p;q$$, c = $tag$ ; $$ ; $tag$ /* ; */ "
                "WHERE \"we;ird\" = 1 -- ;\n AND d = E'\\';'",
            ),
        ),
        (
            MY,
            "UPDATE t SET a = 'x;y', b = \"p;q\" WHERE `we;ird` = 1 # ;\n AND c = 2;",
            ("UPDATE t SET a = 'x;y', b = \"p;q\" WHERE `we;ird` = 1 # ;\n AND c = 2",),
        ),
        (
            PG,
            "UPDATE t\r\nSET a = 'é ☃'\r\n;\r\nDELETE FROM u",
            ("UPDATE t\r\nSET a = 'é ☃'", "DELETE FROM u"),
        ),
        (PG, "INSERT INTO t VALUES (1); -- done", ("INSERT INTO t VALUES (1)",)),
        (PG, "SELECT    1   AS   spaced", ("SELECT    1   AS   spaced",)),
        (MY, "SELECT /*+ BKA(t) */ * FROM t", ("SELECT /*+ BKA(t) */ * FROM t",)),
        (PG, "EXECUTE p('a;b'); VACUUM t", ("EXECUTE p('a;b')", "VACUUM t")),
        (PG, "SHOW search_path ; SET x = 1", ("SHOW search_path", "SET x = 1")),
    ],
)
def test_statements_keep_their_exact_source(
    dialect: str, sql: str, expected: tuple[str, ...]
) -> None:
    result = classify(sql, dialect)
    assert texts(result) == expected
    for text in expected:
        assert text in sql  # a slice of the input, never a re-serialisation


def test_a_trailing_line_comment_cannot_swallow_the_join() -> None:
    result = classify("UPDATE t SET a = 1 -- note\n; DELETE FROM u")
    joined = ";\n".join(texts(result))
    assert joined == "UPDATE t SET a = 1;\nDELETE FROM u"


# --- the execution plan -----------------------------------------------------------------


def test_execution_plan_json_is_the_exact_statements_compact() -> None:
    sql = "UPDATE t SET a = 'é;\"x\"'  ;\n/* why */ DELETE FROM u\nWHERE id = 1 -- bye"
    plan = execution_plan_json(classify(sql))
    assert plan == '["UPDATE t SET a = \'é;\\"x\\"\'","/* why */ DELETE FROM u\\nWHERE id = 1"]'
    assert plan.encode() == (
        b'["UPDATE t SET a = \'\xc3\xa9;\\"x\\"\'","/* why */ DELETE FROM u\\nWHERE id = 1"]'
    )
    executed = ";\n".join(json.loads(plan))
    assert executed == "UPDATE t SET a = 'é;\"x\"';\n/* why */ DELETE FROM u\nWHERE id = 1"


def test_execution_plan_of_a_single_select() -> None:
    assert execution_plan_json(classify("select  *  from t;")) == '["select  *  from t"]'


def test_no_execution_plan_without_statements() -> None:
    with pytest.raises(ValueError, match="without statements"):
        execution_plan_json(classify(""))


def test_rejected_batches_still_have_a_plan_for_break_glass() -> None:
    plan = execution_plan_json(classify("CREATE SCHEMA s; CREATE TABLE s.t (a int)"))
    assert json.loads(plan) == ["CREATE SCHEMA s", "CREATE TABLE s.t (a int)"]


# --- §6.5 redaction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        (
            PG,
            "UPDATE users SET password = 'hunter2', n = 3 WHERE id IN (1, 2) AND a IS NULL",
            "UPDATE users SET password = ?, n = ? WHERE id IN (?, ?) AND a IS NULL",
        ),
        (PG, "SELECT * FROM t WHERE a = $1 AND b = 'x'", "SELECT * FROM t WHERE a = $1 AND b = ?"),
        (
            PG,
            "SELECT DATE '2020-01-01', INTERVAL '1 day', $$dollar$$, E'esc', X'ff', TRUE, -5",
            "SELECT CAST(? AS DATE), ?, ?, ?, ?, ?, -?",
        ),
        (PG, "SELECT 'x'::varchar(10)", "SELECT CAST(? AS VARCHAR(10))"),
        (PG, "SELECT 1 /* secret */ -- secret", "SELECT ?"),
        (PG, "INSERT INTO t (a) VALUES ('x'), ('y')", "INSERT INTO t (a) VALUES (?), (?)"),
        (PG, "SELECT 1; SELECT 'a'", "SELECT ?; SELECT ?"),
        (PG, "SHOW search_path", "SHOW search_path"),
        (PG, "CREATE USER u WITH PASSWORD 'secret'", "CREATE USER u WITH PASSWORD ?"),
        (PG, "SET TIME ZONE 'UTC'", "SET TIME ZONE ?"),
        (
            PG,
            "EXPLAIN ANALYZE SELECT * FROM t WHERE b = 'x' AND c = $2",
            "EXPLAIN ANALYZE SELECT * FROM t WHERE b = ? AND c = $2",
        ),
        (PG, "DO $$ BEGIN PERFORM 1; END $$", "DO ?"),
        (PG, "NOTIFY ch, 'payload'", "NOTIFY ch, ?"),
        (
            MY,
            'SELECT * FROM t WHERE a = ? AND b = 0x1F AND c = "dq"',
            "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?",
        ),
        (MY, "SET @@session.sql_mode = 'ANSI'", "SET @@session.sql_mode = ?"),
        (MY, "REPLACE INTO t VALUES (1, 'x')", "REPLACE INTO t VALUES (?, ?)"),
        (PG, "", ""),
    ],
)
def test_redaction(dialect: str, sql: str, expected: str) -> None:
    assert classifier.redact(sql, dialect) == expected


@pytest.mark.parametrize(
    "sql",
    ["SELECT 'unterminated", "SELEC 1 'secret'", "SELECT 1 /*! 'secret' */", "SELECT 1\x00"],
)
def test_unparseable_sql_is_never_leaked(sql: str) -> None:
    assert classifier.redact(sql, PG) == REDACTION_FAILED


@pytest.mark.parametrize(
    ("sql", "eligible"),
    [
        ("CREATE SCHEMA reporting", True),
        ("DROP FUNCTION refresh_totals()", True),
        ("ALTER VIEW v RENAME TO w", True),
        ("CREATE TABLE t (a int); CREATE SCHEMA s", True),
        ("CREATE ROLE intruder", False),
        ("DROP DATABASE app", False),
        ("GRANT ALL ON t TO x", False),
        ("BEGIN", False),
        ("SET ROLE admin", False),
        ("CREATE SCHEMA s; GRANT ALL ON t TO x", False),
    ],
)
def test_only_schema_ddl_refused_for_its_object_kind_is_break_glass_eligible(
    sql: str, eligible: bool
) -> None:
    classification = SqlglotClassifier().classify(sql, "postgresql")
    assert classification.kind is StatementClass.REJECTED
    assert classification.break_glass_ddl_only is eligible


def test_a_short_text_is_judged_once_and_a_long_one_every_time() -> None:
    classifier = SqlglotClassifier()
    short = "SELECT id FROM remembered_verdicts WHERE id = 1"
    assert classifier.classify(short, "postgresql") is classifier.classify(short, "postgresql")
    assert (
        classifier.redact(short, "postgresql") == "SELECT id FROM remembered_verdicts WHERE id = ?"
    )
    assert classifier.classify(short, "mysql") is not classifier.classify(short, "postgresql")
    long = "SELECT 1 AS x" + " " * 5000
    first, second = classifier.classify(long, "postgresql"), classifier.classify(long, "postgresql")
    assert first == second and first is not second


def test_a_classifier_told_not_to_remember_judges_every_text_afresh() -> None:
    fresh = SqlglotClassifier(remember=False)
    short = "SELECT id FROM remembered_verdicts WHERE id = 1"
    first, second = fresh.classify(short, "postgresql"), fresh.classify(short, "postgresql")
    assert first == second and first is not second
