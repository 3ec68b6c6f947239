"""How `dbward execute` and `dbward request result` print a result (docs/server.md §8.4).

A result as the server sends it (`…/result/stream`, `…/result/content`) carries the agent's
`result_data`: `{"rows", "columns", "truncated", "truncation_reason"}` for a SELECT,
`{"rows_affected"}` for a write, both for a write that returned rows (RETURNING, docs/protocol.md
§5.1), or plain text. `--result-format` picks one of four
renderings: `table` (the default, fitted to the terminal, at most `TABLE_ROW_LIMIT` rows
shown with a note saying how many were left out), `json` (one object per row), `csv` and
`vertical` (one `name | value` block per row, for wide rows). A file given with `--output`
always receives every row: the row limit is for eyes, not for files.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Rows a terminal table shows before it stops and says how many it left out.
TABLE_ROW_LIMIT = 200


class ResultFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    VERTICAL = "vertical"


@dataclass(frozen=True)
class ResultRows:
    """A SELECT's rows, or (when `columns` is None) a write's count or a plain text; a
    write that returned rows has both its rows and its count."""

    columns: list[str] | None
    rows: list[list[Any]]
    truncated_by_agent: str | None
    rows_affected: int | None
    text: str | None


def result_rows(result: dict[str, Any]) -> ResultRows:
    """Read a result envelope, whatever shape its `result_data` has."""
    data = result.get("result_data")
    affected = result.get("rows_affected")
    if isinstance(data, dict) and isinstance(data.get("rows_affected"), int):
        affected = data["rows_affected"]
    if not isinstance(affected, int):
        affected = None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        columns = [
            str(column.get("name")) if isinstance(column, dict) else str(column)
            for column in data.get("columns") or []
        ]
        raw_rows: list[Any] = data["rows"]
        if not columns and raw_rows and isinstance(raw_rows[0], dict):
            columns = [str(name) for name in raw_rows[0]]
        rows = [_row_values(row, columns) for row in raw_rows]
        if not columns and rows:
            columns = [f"column{i + 1}" for i in range(len(rows[0]))]
        reason = data.get("truncation_reason") if data.get("truncated") else None
        if reason is None and (data.get("truncated") or result.get("truncated")):
            reason = "the agent's result limit"
        return ResultRows(columns, rows, reason, affected, None)
    text = data if isinstance(data, str) else None
    if data is not None and not isinstance(data, str | dict):
        text = json.dumps(data, ensure_ascii=False)
    return ResultRows(None, [], None, affected, text)


def _row_values(row: object, columns: list[str]) -> list[Any]:
    """A row as values in column order: the agent sends `{column: value}` objects."""
    if isinstance(row, dict):
        return [row.get(name) for name in columns]
    return list(row) if isinstance(row, list) else [row]


def cell_text(value: object) -> str:
    """A value as a terminal or CSV shows it: NULL for None, JSON for nested values."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def render_result(
    result: dict[str, Any],
    result_format: ResultFormat,
    *,
    row_limit: int | None = TABLE_ROW_LIMIT,
    width: int | None = None,
) -> tuple[str, list[str]]:
    """The rendered result and the notes that go to stderr (truncations, counts).

    `row_limit` applies to `table` and `vertical` only; None shows every row (files).
    `width` is the table's width; None means the terminal's.

    A write that returned rows prints them like a SELECT's, then its count: on stdout after
    a `table` or `vertical`, as a note for `json` and `csv`, whose output stays the rows.
    """
    view = result_rows(result)
    notes: list[str] = []
    if view.truncated_by_agent:
        notes.append(f"note: the result was truncated by the agent ({view.truncated_by_agent})")
    if view.columns is None:
        if view.text is not None:
            return view.text + "\n", notes
        count = view.rows_affected if view.rows_affected is not None else 0
        if result_format is ResultFormat.JSON:
            return json.dumps({"rows_affected": count}) + "\n", notes
        return _affected(count) + "\n", notes

    rows = view.rows
    if result_format in (ResultFormat.JSON, ResultFormat.CSV) and view.rows_affected is not None:
        notes.append(f"note: {_affected(view.rows_affected)}")
    if result_format is ResultFormat.JSON:
        objects = [dict(zip(view.columns, row, strict=False)) for row in rows]
        return json.dumps(objects, ensure_ascii=False, default=str) + "\n", notes
    if result_format is ResultFormat.CSV:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(view.columns)
        writer.writerows([cell_text(cell) for cell in row] for row in rows)
        return buffer.getvalue(), notes

    shown = rows if row_limit is None else rows[:row_limit]
    if len(shown) < len(rows):
        notes.append(
            f"note: showing {len(shown)} of {len(rows)} rows; "
            "use --output FILE or --result-format csv|json for all of them"
        )
    text = (
        _vertical(view.columns, shown)
        if result_format is ResultFormat.VERTICAL
        else _table(view.columns, shown, width)
    )
    if view.rows_affected is not None:
        text += _affected(view.rows_affected) + "\n"
    return text, notes


def _affected(count: int) -> str:
    return f"{count} row{'s' if count != 1 else ''} affected"


def _vertical(columns: list[str], rows: list[list[Any]]) -> str:
    """psql's `\\x` layout: one block per row, column names aligned."""
    width = max((len(name) for name in columns), default=0)
    lines: list[str] = []
    for number, row in enumerate(rows, start=1):
        lines.append(f"-[ RECORD {number} ]" + "-" * max(width - 8, 4))
        lines.extend(
            f"{name:<{width}} | {cell_text(value)}"
            for name, value in zip(columns, row, strict=False)
        )
    return "\n".join(lines) + ("\n" if lines else "")


def _table(columns: list[str], rows: list[list[Any]], width: int | None) -> str:
    """A table folded to the terminal's width (240 columns when not on a terminal)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell_text(cell)) for cell in row))
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width or _terminal_width(), highlight=False, color_system=None
    )
    console.print(table)
    count = len(rows)
    return buffer.getvalue() + f"({count} row{'s' if count != 1 else ''})\n"


def _terminal_width() -> int:
    """The terminal's width, or 240 off a terminal so piped tables are not folded at 80."""
    console = Console()
    return console.width if console.is_terminal else 240
