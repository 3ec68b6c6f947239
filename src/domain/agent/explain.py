"""EXPLAIN input rules shared by both engines: never ANALYZE, never an EXPLAIN of EXPLAIN.

The adapters wrap the statement as `EXPLAIN (FORMAT JSON) <statement>`. ANALYZE would
execute the statement, so it is refused by name, in every spelling and behind leading
comments, before any database sees it.
"""

from __future__ import annotations

import re

_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(r"^explain\b", re.IGNORECASE)
_ANALYZE = re.compile(r"\banaly[sz]e\b", re.IGNORECASE)


class ExplainRefused(ValueError):
    """The SQL cannot be explained safely."""


def check_explainable(sql: str) -> str:
    """Return the statement to explain, refusing ANALYZE, nested EXPLAIN and empty input."""
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        raise ExplainRefused("nothing to explain")
    head = _LEADING_COMMENTS.sub("", statement, count=1)
    if _EXPLAIN.match(head):
        if _ANALYZE.search(head):
            raise ExplainRefused("EXPLAIN ANALYZE executes the statement and is refused")
        raise ExplainRefused("the statement is already an EXPLAIN")
    return statement
