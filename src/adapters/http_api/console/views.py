"""What the console's templates show, shaped from the use cases' own records.

Nothing here decides anything: these functions only turn records (a statement, an EXPLAIN
plan, a result body, a moment) into plain values a template prints. Every string goes
through Jinja2's autoescape on its way out.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "PlanNode",
    "ResultPage",
    "SqlToken",
    "age",
    "highlight_sql",
    "plan_trees",
    "result_csv",
    "result_page",
]

# --- SQL highlighting -------------------------------------------------------------------

_KEYWORDS = frozenset(
    """select from where and or not insert into values update set delete create alter drop
    table index view join left right inner outer full cross on as group by order having
    limit offset union all distinct case when then else end is null in exists between like
    ilike returning with primary key references foreign default begin commit rollback
    truncate grant revoke merge using desc asc true false""".split()  # noqa: SIM905
)
_SQL_TOKEN = re.compile(
    r"(?P<comment>--[^\n]*|/\*.*?(?:\*/|$))"
    r"|(?P<string>'(?:[^']|'')*'?)"
    r'|(?P<ident>"(?:[^"]|"")*"?|`[^`]*`?)'
    r"|(?P<number>\b\d+(?:\.\d+)?\b)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)"
    r"|(?P<other>\s+|.)",
    re.DOTALL,
)


@dataclass(frozen=True)
class SqlToken:
    """One run of statement text and its class (`kw`, `str`, `num`, `com`, `id` or "")."""

    kind: str
    text: str


def highlight_sql(sql: str) -> list[SqlToken]:
    """Splits a statement into classed runs; the text of the runs is the statement exactly."""
    tokens: list[SqlToken] = []
    for match in _SQL_TOKEN.finditer(sql):
        kind = match.lastgroup or "other"
        text = match.group()
        css = {"comment": "com", "string": "str", "ident": "id", "number": "num"}.get(kind, "")
        if kind == "word" and text.lower() in _KEYWORDS:
            css = "kw"
        if tokens and tokens[-1].kind == css:
            tokens[-1] = SqlToken(css, tokens[-1].text + text)
        else:
            tokens.append(SqlToken(css, text))
    return tokens


# --- EXPLAIN plans ----------------------------------------------------------------------

#: A node whose own cost (its total less its children's) is at least this share of the
#: whole plan's cost is marked as costly.
COSTLY_SHARE = 0.3
#: A sequential scan expected to read at least this many rows is marked as costly too.
COSTLY_SEQ_SCAN_ROWS = 10_000


@dataclass
class PlanNode:
    label: str
    details: list[str]
    total_cost: float | None
    rows: float | None
    costly: bool = False
    children: list[PlanNode] = field(default_factory=list)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pg_node(plan: dict[str, Any]) -> PlanNode:
    label = str(plan.get("Node Type", "node"))
    details: list[str] = []
    relation = plan.get("Relation Name")
    if relation:
        details.append(f"on {relation}" + (f" {plan['Alias']}" if plan.get("Alias") else ""))
    if plan.get("Index Name"):
        details.append(f"using {plan['Index Name']}")
    for key in ("Filter", "Index Cond", "Hash Cond", "Join Filter", "Sort Key"):
        if plan.get(key):
            value = plan[key]
            details.append(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    children = [_pg_node(child) for child in plan.get("Plans") or [] if isinstance(child, dict)]
    return PlanNode(
        label,
        details,
        _number(plan.get("Total Cost")),
        _number(plan.get("Plan Rows")),
        False,
        children,
    )


def _mark_costly(node: PlanNode, whole: float) -> None:
    own = (node.total_cost or 0.0) - sum(child.total_cost or 0.0 for child in node.children)
    big_scan = node.label == "Seq Scan" and (node.rows or 0) >= COSTLY_SEQ_SCAN_ROWS
    node.costly = big_scan or (
        whole > 0 and own / whole >= COSTLY_SHARE and len(node.children) == 0
    )
    for child in node.children:
        _mark_costly(child, whole)


def plan_trees(plan: Any) -> list[PlanNode] | None:
    """PostgreSQL's `EXPLAIN (FORMAT JSON)` as trees with the costly nodes marked; None for
    any other shape (the page then shows the plan as JSON)."""
    roots: list[Any]
    if isinstance(plan, list):
        roots = plan
    elif isinstance(plan, dict):
        roots = [plan]
    else:
        return None
    trees: list[PlanNode] = []
    for root in roots:
        if not isinstance(root, dict) or not isinstance(root.get("Plan"), dict):
            return None
        node = _pg_node(root["Plan"])
        _mark_costly(node, node.total_cost or 0.0)
        trees.append(node)
    return trees or None


def plan_json(plan: Any) -> str:
    return json.dumps(plan, indent=2, ensure_ascii=False)


# --- results ----------------------------------------------------------------------------

#: Rows on one page of the Result page.
PAGE_ROWS = 100


@dataclass(frozen=True)
class ResultPage:
    columns: list[tuple[str, str]]
    rows: list[list[str]]
    total_rows: int
    page: int
    pages: int
    first_row: int


def _columns_and_rows(data: Any) -> tuple[list[tuple[str, str]], list[list[Any]]]:
    """The result body's columns (name, type) and rows as lists, in column order."""
    if not isinstance(data, dict):
        return [], []
    raw_rows = data.get("rows") if isinstance(data.get("rows"), list) else []
    columns = [
        (str(column.get("name", "")), str(column.get("type") or ""))
        for column in data.get("columns") or []
        if isinstance(column, dict)
    ]
    if not columns and raw_rows and isinstance(raw_rows[0], dict):
        columns = [(str(name), "") for name in raw_rows[0]]
    rows: list[list[Any]] = []
    for row in raw_rows or []:
        if isinstance(row, dict):
            rows.append([row.get(name) for name, _ in columns])
        elif isinstance(row, list):
            rows.append(list(row))
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def result_page(data: Any, page: int) -> ResultPage:
    columns, rows = _columns_and_rows(data)
    pages = max(1, -(-len(rows) // PAGE_ROWS))
    page = min(max(page, 1), pages)
    start = (page - 1) * PAGE_ROWS
    shown = [[_cell(value) for value in row] for row in rows[start : start + PAGE_ROWS]]
    return ResultPage(columns, shown, len(rows), page, pages, start + 1)


def result_csv(data: Any) -> str:
    columns, rows = _columns_and_rows(data)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([name for name, _ in columns])
    for row in rows:
        writer.writerow(["" if value is None else _cell(value) for value in row])
    return out.getvalue()


# --- moments ----------------------------------------------------------------------------


def age(moment: datetime | None, now: datetime) -> str:
    """`42s`, `5m`, `3h`, `2d`: how long ago."""
    if moment is None:
        return "—"
    seconds = max(int((now - moment).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
