"""EXPLAIN input rules: never ANALYZE, never an EXPLAIN of EXPLAIN, only statements with a plan.

The agent's adapters wrap the statement as `EXPLAIN (FORMAT JSON) <statement>`. ANALYZE
would execute the statement, so the agent refuses it by name, in every spelling and behind
leading comments, before any database sees it. The server asks for plans (preflight) only
of statements that `has_plan` accepts, so it never even sends an EXPLAIN, SHOW or DDL.
"""

from __future__ import annotations

import re

_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(r"^explain\b", re.IGNORECASE)
_ANALYZE = re.compile(r"\banaly[sz]e\b", re.IGNORECASE)
#: Statements both engines plan with EXPLAIN without running them: queries and row writes.
_PLANNED = re.compile(
    r"^\(*\s*(?:select|with|values|table|insert|update|delete|merge|replace)\b", re.IGNORECASE
)


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


def has_plan(sql: str) -> bool:
    """Whether a plain EXPLAIN of `sql` shows a plan: a query or a row write (INSERT,
    UPDATE, DELETE, MERGE, REPLACE), behind any leading comments. EXPLAIN itself, SHOW,
    SET, DDL and the rest have no plan to show."""
    head = _LEADING_COMMENTS.sub("", sql.strip(), count=1)
    return bool(_PLANNED.match(head))
