"""EXPLAIN input rules shared by both engines: one statement, never ANALYZE."""

from __future__ import annotations

import re

_ANALYZE = re.compile(r"^\s*explain\b.*\banalyze\b", re.IGNORECASE | re.DOTALL)


class ExplainRefused(ValueError):
    """The SQL cannot be explained safely."""


def check_explainable(sql: str) -> str:
    """Return the statement to explain, refusing `EXPLAIN ANALYZE` and empty input.

    A user-supplied `EXPLAIN ...` would become `EXPLAIN (FORMAT JSON) EXPLAIN ...`, which
    both engines reject; ANALYZE would execute the statement, so it is refused by name.
    """
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        raise ExplainRefused("nothing to explain")
    if _ANALYZE.match(statement):
        raise ExplainRefused("EXPLAIN ANALYZE executes the statement and is refused")
    return statement
