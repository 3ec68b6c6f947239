"""How a result is printed: table, json, csv, vertical, and the notes about what was cut."""

from __future__ import annotations

import json
from typing import Any

from entrypoints.admin.result_view import ResultFormat, render_result

COLUMNS = [{"name": "id", "type": "int4"}, {"name": "note", "type": "text"}]


def _select(rows: list[dict[str, Any]], truncated: str | None = None) -> dict[str, Any]:
    return {
        "success": True,
        "rows_affected": None,
        "result_data": {
            "rows": rows,
            "truncated": truncated is not None,
            "truncation_reason": truncated,
            "columns": COLUMNS,
        },
    }


ROWS = [{"id": 1, "note": "a,b"}, {"id": 2, "note": None}]


def test_table_shows_columns_rows_nulls_and_a_row_count() -> None:
    text, notes = render_result(_select(ROWS), ResultFormat.TABLE, width=80)
    lines = text.splitlines()
    assert lines[0].split() == ["id", "note"]
    assert lines[2].split() == ["1", "a,b"]
    assert lines[3].split() == ["2", "NULL"]
    assert lines[-1] == "(2 rows)"
    assert notes == []


def test_json_is_one_object_per_row() -> None:
    text, _ = render_result(_select(ROWS), ResultFormat.JSON)
    assert json.loads(text) == [{"id": 1, "note": "a,b"}, {"id": 2, "note": None}]


def test_csv_quotes_what_needs_quoting() -> None:
    text, _ = render_result(_select(ROWS), ResultFormat.CSV)
    assert text == 'id,note\n1,"a,b"\n2,NULL\n'


def test_vertical_prints_one_block_per_row() -> None:
    text, _ = render_result(_select(ROWS), ResultFormat.VERTICAL)
    assert text.splitlines() == [
        "-[ RECORD 1 ]----",
        "id   | 1",
        "note | a,b",
        "-[ RECORD 2 ]----",
        "id   | 2",
        "note | NULL",
    ]


def test_a_large_table_stops_at_the_row_limit_and_says_so() -> None:
    many = [{"id": i, "note": "x"} for i in range(10)]
    text, notes = render_result(_select(many), ResultFormat.TABLE, row_limit=3, width=80)
    assert text.splitlines()[-1] == "(3 rows)"
    assert notes == [
        "note: showing 3 of 10 rows; use --output FILE or --result-format csv|json for all of them"
    ]
    unlimited, _ = render_result(_select(many), ResultFormat.CSV, row_limit=3)
    assert len(unlimited.splitlines()) == 11  # csv and files are never cut


def test_a_table_folds_to_the_given_width() -> None:
    wide = [{"id": 1, "note": "word " * 40}]
    text, _ = render_result(_select(wide), ResultFormat.TABLE, width=40)
    assert max(len(line) for line in text.splitlines()) <= 40


def test_the_agent_s_truncation_is_noted() -> None:
    _, notes = render_result(_select(ROWS, truncated="max_rows 2 reached"), ResultFormat.TABLE)
    assert notes == ["note: the result was truncated by the agent (max_rows 2 reached)"]


def test_a_write_prints_its_count_and_text_stays_text() -> None:
    write = {"success": True, "rows_affected": 3, "result_data": {"rows_affected": 3}}
    assert render_result(write, ResultFormat.TABLE)[0] == "3 rows affected\n"
    assert json.loads(render_result(write, ResultFormat.JSON)[0]) == {"rows_affected": 3}
    one = {"success": True, "rows_affected": 1, "result_data": None}
    assert render_result(one, ResultFormat.VERTICAL)[0] == "1 row affected\n"
    text = {"success": True, "result_data": "applied 2 migrations"}
    assert render_result(text, ResultFormat.TABLE)[0] == "applied 2 migrations\n"


def _returning(rows: list[dict[str, Any]], affected: int, truncated: str | None = None) -> Any:
    """A write whose statements returned rows: the select envelope behind the count."""
    result = _select(rows, truncated)
    result["rows_affected"] = affected
    result["result_data"] = {"rows_affected": affected, **result["result_data"]}
    return result


def test_a_write_that_returned_rows_prints_them_then_its_count() -> None:
    text, notes = render_result(_returning(ROWS, 5), ResultFormat.TABLE, width=80)
    assert text.splitlines()[0].split() == ["id", "note"]
    assert "a,b" in text and "NULL" in text
    assert text.endswith("(2 rows)\n5 rows affected\n")
    assert notes == []
    vertical, _ = render_result(_returning(ROWS[:1], 1), ResultFormat.VERTICAL)
    assert vertical.endswith("note | a,b\n1 row affected\n")


def test_a_write_s_rows_as_json_and_csv_stay_rows_and_the_count_is_a_note() -> None:
    as_json, json_notes = render_result(_returning(ROWS, 7), ResultFormat.JSON)
    assert json.loads(as_json) == ROWS
    assert json_notes == ["note: 7 rows affected"]
    as_csv, csv_notes = render_result(_returning(ROWS, 7), ResultFormat.CSV)
    assert as_csv == 'id,note\n1,"a,b"\n2,NULL\n'
    assert csv_notes == ["note: 7 rows affected"]


def test_a_write_s_truncated_rows_are_noted() -> None:
    result = _returning(ROWS[:1], 9, truncated="row limit reached (1)")
    text, notes = render_result(result, ResultFormat.TABLE, width=80)
    assert text.endswith("(1 row)\n9 rows affected\n")
    assert notes == ["note: the result was truncated by the agent (row limit reached (1))"]


def test_a_write_s_count_inside_result_data_wins_when_the_envelope_lacks_it() -> None:
    result = _returning(ROWS[:1], 4)
    result["rows_affected"] = None
    assert render_result(result, ResultFormat.TABLE, width=80)[0].endswith("4 rows affected\n")
