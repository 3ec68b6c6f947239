"""EXPLAIN input: what the agent refuses to explain."""

from __future__ import annotations

import pytest

from domain.shared.explain import ExplainRefused, check_explainable, has_plan


def test_explain_input_is_trimmed_of_whitespace_and_trailing_semicolons() -> None:
    assert check_explainable("  SELECT * FROM t ;\n") == "SELECT * FROM t"


@pytest.mark.parametrize(
    "sql", ["EXPLAIN ANALYZE SELECT 1", "explain (analyze, format json) select 1"]
)
def test_explain_analyze_is_refused(sql: str) -> None:
    with pytest.raises(ExplainRefused, match="ANALYZE"):
        check_explainable(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYSE SELECT 1",  # PostgreSQL accepts the British spelling too
        "/* note */ EXPLAIN ANALYZE SELECT 1",  # a leading comment hides the keyword
    ],
)
def test_explain_analyze_is_refused_in_every_spelling(sql: str) -> None:
    with pytest.raises(ExplainRefused):
        check_explainable(sql)


def test_empty_explain_input_is_refused() -> None:
    with pytest.raises(ExplainRefused, match="nothing to explain"):
        check_explainable(" ; ")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t",
        "  -- why\n/* note */ select 1",
        "(SELECT 1) UNION (SELECT 2)",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "UPDATE t SET a = 1 WHERE id = 2",
        "delete from t where id = 1",
        "INSERT INTO t VALUES (1)",
    ],
)
def test_queries_and_row_writes_have_a_plan(sql: str) -> None:
    assert has_plan(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN SELECT 1",
        "/* x */ EXPLAIN ANALYZE DELETE FROM t",
        "SHOW TABLES",
        "SET statement_timeout = 5",
        "CREATE TABLE t (id int)",
        "DROP TABLE t",
        "selected",
        "",
    ],
)
def test_explain_show_set_and_ddl_have_no_plan(sql: str) -> None:
    assert not has_plan(sql)
