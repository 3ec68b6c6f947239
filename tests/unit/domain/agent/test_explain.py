"""EXPLAIN input: what the agent refuses to explain."""

from __future__ import annotations

import pytest

from domain.agent.explain import ExplainRefused, check_explainable


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
