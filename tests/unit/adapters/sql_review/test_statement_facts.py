"""What the classifier reports about each statement for review and risk (docs/sql-safety.md §3).

The corpus (tests/data/sql_corpus.yaml) checks the rule names per batch; these tests pin
the rest of `StatementFacts`: which tables, which delete targets, the hit messages, writes
and safe DDL, and what a statement sqlglot could not fully parse still reports.
"""

from __future__ import annotations

import pytest

from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from domain.server.review_rules import ReviewRule
from domain.server.sql_classification import (
    Classification,
    StatementClass,
    StatementFacts,
    TableRef,
)

PG = "postgresql"
MY = "mysql"
classifier = SqlglotClassifier()


def facts(sql: str, dialect: str = PG) -> StatementFacts:
    result = classifier.classify(sql, dialect)
    assert len(result.statements) == 1, result.rejected_reason
    return result.statements[0].facts


def batch(sql: str, dialect: str = PG) -> Classification:
    return classifier.classify(sql, dialect)


def refs(*names: str) -> tuple[TableRef, ...]:
    return tuple(TableRef(*reversed(n.split(".", 1))) if "." in n else TableRef(n) for n in names)


@pytest.mark.parametrize(
    ("dialect", "sql", "tables"),
    [
        (PG, "SELECT * FROM users u JOIN orders o ON o.user_id = u.id", ("users", "orders")),
        (PG, "SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)", ("users", "orders")),
        (
            PG,
            "WITH x AS (SELECT * FROM users) SELECT * FROM x JOIN orders ON true",
            ("users", "orders"),
        ),
        (PG, "SELECT * FROM public.Users", ("public.users",)),  # unquoted: folded
        (PG, 'SELECT * FROM "Public"."Users"', ("Public.Users",)),  # quoted: as written
        (MY, "SELECT * FROM Test.Users", ("Test.Users",)),  # MySQL: as written
        (MY, "SELECT * FROM `Users`", ("Users",)),
        (MY, "SELECT 1 FROM dual", ()),
        (PG, "SELECT * FROM generate_series(1, 3) g", ()),  # a table function
        (PG, "DELETE FROM orders USING users WHERE orders.user_id = users.id", ("orders", "users")),
        (
            PG,
            "UPDATE orders SET total = 0 FROM users WHERE users.id = orders.user_id",
            ("orders", "users"),
        ),
        (PG, "INSERT INTO audit_log (msg) SELECT name FROM users", ("audit_log", "users")),
        (
            PG,
            "MERGE INTO users u USING countries c ON u.c = c.code WHEN MATCHED THEN DELETE",
            ("users", "countries"),
        ),
        (PG, "CREATE INDEX i ON s.orders (total)", ("s.orders",)),  # the index is not a table
        (PG, "DROP INDEX i", ()),
        (PG, "DROP SEQUENCE s", ()),
        (PG, "CREATE VIEW v AS SELECT * FROM users", ("v", "users")),
        (
            PG,
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES users (id)",
            ("orders", "users"),
        ),
        (PG, "TRUNCATE orders, order_items", ("orders", "order_items")),
        (
            MY,
            "DELETE a FROM orders AS a JOIN users u ON u.id = a.user_id WHERE u.x = 1",
            ("orders", "users"),
        ),
        (PG, "EXPLAIN SELECT * FROM orders", ("orders",)),
    ],
)
def test_tables_are_the_real_tables_named_folded_as_the_database_does(
    dialect: str, sql: str, tables: tuple[str, ...]
) -> None:
    assert facts(sql, dialect).tables == refs(*tables)


@pytest.mark.parametrize(
    ("dialect", "sql", "targets"),
    [
        (PG, "DELETE FROM orders WHERE id = 1", ("orders",)),
        (PG, "DELETE FROM orders USING users WHERE orders.user_id = users.id", ("orders",)),
        (
            MY,
            "DELETE o, i FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.id = 1",
            ("orders", "order_items"),
        ),
        (
            MY,
            "DELETE FROM orders USING orders JOIN users ON users.id = orders.user_id "
            "WHERE users.x = 1",
            ("orders",),
        ),
        (
            PG,
            "WITH d AS (DELETE FROM public.orders WHERE id = 1 RETURNING id) SELECT * FROM d",
            ("public.orders",),
        ),
        (PG, "TRUNCATE orders, order_items", ("orders", "order_items")),
        (
            PG,
            "MERGE INTO orders o USING users u ON o.user_id = u.id WHEN MATCHED THEN DELETE",
            ("orders",),
        ),
        (MY, "REPLACE INTO countries (code) VALUES ('x')", ("countries",)),  # deletes collisions
        (PG, "EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1", ("orders",)),  # it runs
        (PG, "EXPLAIN DELETE FROM orders", ()),  # it does not
        (PG, "UPDATE orders SET total = 0 WHERE id = 1", ()),
        (
            PG,
            "MERGE INTO users u USING countries c ON u.c = c.code "
            "WHEN MATCHED THEN UPDATE SET x = 1",
            (),
        ),
    ],
)
def test_delete_targets_are_the_tables_rows_are_deleted_from(
    dialect: str, sql: str, targets: tuple[str, ...]
) -> None:
    assert facts(sql, dialect).delete_targets == refs(*targets)


@pytest.mark.parametrize(
    ("sql", "rule", "message"),
    [
        ("DELETE FROM orders", ReviewRule.NO_WHERE_DELETE, "DELETE FROM orders without a WHERE"),
        (
            "UPDATE users SET x = 'secret' WHERE 1 = 1",
            ReviewRule.NO_WHERE_UPDATE,
            "UPDATE users without",
        ),
        ("DROP TABLE a, s.b", ReviewRule.DROP_TABLE, "DROP TABLE a, s.b"),
        ("TRUNCATE orders", ReviewRule.TRUNCATE, "TRUNCATE orders"),
        (
            "ALTER TABLE users DROP COLUMN email",
            ReviewRule.DROP_COLUMN,
            "ALTER TABLE users drops column email",
        ),
        (
            "ALTER TABLE users ADD COLUMN n int NOT NULL",
            ReviewRule.NOT_NULL_WITHOUT_DEFAULT,
            "adds NOT NULL column n",
        ),
        (
            "ALTER TABLE users ALTER COLUMN n SET NOT NULL",
            ReviewRule.NOT_NULL_WITHOUT_DEFAULT,
            "sets column n NOT NULL",
        ),
        (
            "CREATE INDEX i ON orders (total)",
            ReviewRule.CREATE_INDEX_NOT_CONCURRENTLY,
            "on orders without CONCURRENTLY",
        ),
        (
            "ALTER TABLE orders ALTER COLUMN total TYPE bigint",
            ReviewRule.ALTER_COLUMN_TYPE,
            "type of column total",
        ),
        ("DROP INDEX orders_idx", ReviewRule.DROP_INDEX, "DROP INDEX orders_idx"),
        ("DROP MATERIALIZED VIEW mv", ReviewRule.DROP_VIEW, "DROP MATERIALIZED VIEW mv"),
        ("DROP SEQUENCE seq", ReviewRule.DROP_SEQUENCE, "DROP SEQUENCE seq"),
        ("CREATE SEQUENCE seq", ReviewRule.CREATE_SEQUENCE, "CREATE SEQUENCE seq"),
        (
            "SELECT * FROM users WHERE email IN (" + ", ".join(f"'s{i}'" for i in range(101)) + ")",
            ReviewRule.LARGE_IN_LIST,
            "IN list on email with 101 items",
        ),
    ],
)
def test_a_hit_names_the_object_and_never_a_literal(
    sql: str, rule: ReviewRule, message: str
) -> None:
    (hit,) = facts(sql).hits
    assert hit.rule is rule
    assert message in hit.message
    assert "secret" not in hit.message and "'" not in hit.message


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t WHERE 1 = 1",
        "DELETE FROM t WHERE true",
        "DELETE FROM t WHERE NOT false",
        "DELETE FROM t WHERE (1 = 1) AND true",
        "DELETE FROM t WHERE id = 5 OR 1 = 1",
        "DELETE FROM t WHERE 'a' = 'a'",
        "DELETE FROM t WHERE id = id",
        "DELETE FROM t WHERE now() > '2000-01-01'",  # the same for every row
    ],
)
def test_a_where_that_does_not_limit_rows_counts_as_none(sql: str) -> None:
    assert [h.rule for h in facts(sql).hits] == [ReviewRule.NO_WHERE_DELETE]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t WHERE id = 5",
        "DELETE FROM t WHERE 1 = 0",  # touches no row
        "DELETE FROM t WHERE id = 5 AND 1 = 1",
        "DELETE FROM t WHERE id = $1",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
    ],
)
def test_a_where_that_limits_rows_is_not_reported(sql: str) -> None:
    assert facts(sql).hits == ()


def test_mysql_multi_table_delete_without_where_is_reported_with_its_resolved_targets() -> None:
    (hit,) = facts("DELETE o FROM orders o JOIN users u ON u.id = o.user_id", MY).hits
    assert hit.rule is ReviewRule.NO_WHERE_DELETE
    assert "orders" in hit.message


def test_a_delete_without_where_inside_a_writable_cte_is_reported() -> None:
    found = facts("WITH d AS (DELETE FROM orders RETURNING id) SELECT * FROM d")
    assert [h.rule for h in found.hits] == [ReviewRule.NO_WHERE_DELETE]
    assert found.writes_rows


@pytest.mark.parametrize(
    ("dialect", "sql", "writes"),
    [
        (PG, "INSERT INTO t VALUES (1)", True),
        (PG, "UPDATE t SET a = 1 WHERE id = 1", True),
        (PG, "DELETE FROM t WHERE id = 1", True),
        (PG, "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", True),
        (MY, "REPLACE INTO t VALUES (1)", True),
        (PG, "WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x", True),
        (PG, "COPY t FROM STDIN", True),
        (PG, "COPY t TO STDOUT", False),
        (PG, "EXPLAIN INSERT INTO t VALUES (1)", False),
        (PG, "SELECT * FROM t", False),
        (PG, "CREATE TABLE t (id int)", False),
        (PG, "TRUNCATE t", False),
    ],
)
def test_writes_rows_marks_statements_that_insert_update_or_delete(
    dialect: str, sql: str, writes: bool
) -> None:
    assert facts(sql, dialect).writes_rows is writes


@pytest.mark.parametrize(
    ("dialect", "sql", "safe"),
    [
        (PG, "CREATE TABLE t (id int PRIMARY KEY)", True),
        (MY, "CREATE TABLE t (id int PRIMARY KEY)", True),
        (PG, "CREATE OR REPLACE TABLE t (id int)", False),
        (PG, "CREATE TABLE t AS SELECT * FROM users", False),
        (PG, "CREATE VIEW v AS SELECT 1", True),
        (PG, "CREATE OR REPLACE VIEW v AS SELECT 1", False),
        (PG, "CREATE MATERIALIZED VIEW v AS SELECT 1", False),
        (PG, "CREATE INDEX CONCURRENTLY i ON t (a)", True),
        (PG, "CREATE INDEX i ON t (a)", False),
        (MY, "CREATE INDEX i ON t (a)", False),  # CONCURRENTLY is PostgreSQL's
        (PG, "ALTER TABLE t ADD COLUMN a int, ADD COLUMN b text DEFAULT 'x'", True),
        (MY, "ALTER TABLE t ADD COLUMN a int", False),  # PostgreSQL only
        (PG, "ALTER TABLE t ADD COLUMN a int NOT NULL", False),  # a hit: never safe
        (PG, "ALTER TABLE t ADD COLUMN a int, DROP COLUMN b", False),
        (PG, "ALTER TABLE t RENAME TO u", False),
        (PG, "DROP TABLE t", False),
        (PG, "SELECT 1", False),
        (MY, "CREATE TABLE t (id int) PARTITION BY HASH(id) PARTITIONS 4", False),  # unparsed
    ],
)
def test_safe_ddl_is_only_claimed_for_the_documented_forms(
    dialect: str, sql: str, safe: bool
) -> None:
    assert facts(sql, dialect).safe_ddl is safe
    assert batch(sql, dialect).is_safe_ddl_candidate is safe


def test_a_safe_statement_in_a_batch_does_not_make_the_batch_a_safe_candidate() -> None:
    result = batch("CREATE TABLE a (id int); CREATE TABLE b (id int)")
    assert all(s.facts.safe_ddl for s in result.statements)
    assert not result.is_safe_ddl_candidate


def test_an_index_on_a_table_the_same_batch_creates_is_not_reported() -> None:
    result = batch("CREATE TABLE tags (id int); CREATE INDEX tags_idx ON tags (id)")
    assert [s.facts.hits for s in result.statements] == [(), ()]
    later = batch("CREATE INDEX tags_idx ON tags (id); CREATE TABLE tags (id int)")
    assert later.statements[0].facts.hits[0].rule is ReviewRule.CREATE_INDEX_NOT_CONCURRENTLY


def test_the_batch_reports_tables_deletes_and_mixed_ddl_and_dml() -> None:
    result = batch(
        "ALTER TABLE users ADD COLUMN x int; "
        "DELETE FROM orders WHERE id = 1; DELETE FROM users WHERE id = 2"
    )
    assert result.tables == refs("users", "orders")
    assert result.delete_targets == refs("orders", "users")
    assert result.writes_rows and result.mixes_ddl_and_dml
    assert not batch(
        "CREATE TABLE a (id int); CREATE INDEX CONCURRENTLY i ON a (id)"
    ).mixes_ddl_and_dml


@pytest.mark.parametrize(
    ("dialect", "sql", "rule"),
    [
        (PG, "CREATE SEQUENCE s SEQUENCE NAME x", ReviewRule.CREATE_SEQUENCE),
        (MY, "TRUNCATE t WAIT 5", ReviewRule.TRUNCATE),
    ],
)
def test_ddl_sqlglot_cannot_parse_still_trips_its_rule_and_needs_approval(
    dialect: str, sql: str, rule: ReviewRule
) -> None:
    result = batch(sql, dialect)
    assert result.kind is StatementClass.UNKNOWN
    (hit,) = result.statements[0].facts.hits
    assert hit.rule is rule
    assert not result.statements[0].facts.safe_ddl


def test_unparsed_statements_claim_nothing_they_cannot_read() -> None:
    result = batch("ALTER TABLE t ALTER COLUMN c SET STATISTICS 100")
    assert result.kind is StatementClass.UNKNOWN
    assert result.statements[0].facts == StatementFacts()
