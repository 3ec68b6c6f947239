"""What the console's pages show, shaped from records (docs/console.md §3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.http_api.console import views
from adapters.http_api.console.rendering import render_fragment


def test_highlighting_keeps_the_statement_exactly_and_classes_its_parts() -> None:
    sql = "SELECT 'it''s', \"Name\", 42 FROM t -- done\nWHERE x = 1"
    tokens = views.highlight_sql(sql)
    assert "".join(t.text for t in tokens) == sql
    kinds = {t.text.strip(): t.kind for t in tokens if t.kind}
    assert kinds["SELECT"] == "kw"
    assert kinds["'it''s'"] == "str"
    assert kinds['"Name"'] == "id"
    assert kinds["-- done"] == "com"


def test_every_value_in_a_live_region_is_escaped() -> None:
    record = {
        "id": "r1",
        "detail": "SELECT '<script>alert(1)</script>'",
        "operation": {"value": "execute_select"},
        "database": "<b>db</b>",
        "environment": "prod",
        "requester": "<i>ann</i>",
    }
    html = render_fragment(
        "_inbox_live.html",
        {"rows": [{"record": record, "age": "1s", "risk": "low", "awaiting": None}], "total": 1},
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>" not in html and "<i>" not in html


def _pg_plan() -> list[dict[str, object]]:
    return [
        {
            "Plan": {
                "Node Type": "Hash Join",
                "Total Cost": 1000.0,
                "Plan Rows": 50,
                "Hash Cond": "(o.customer_id = c.id)",
                "Plans": [
                    {
                        "Node Type": "Seq Scan",
                        "Relation Name": "orders",
                        "Alias": "o",
                        "Total Cost": 900.0,
                        "Plan Rows": 50000,
                    },
                    {
                        "Node Type": "Index Scan",
                        "Relation Name": "customers",
                        "Index Name": "customers_pkey",
                        "Total Cost": 8.0,
                        "Plan Rows": 1,
                    },
                ],
            }
        }
    ]


def test_a_postgres_plan_becomes_a_tree_with_the_costly_nodes_marked() -> None:
    trees = views.plan_trees(_pg_plan())
    assert trees is not None
    root = trees[0]
    assert root.label == "Hash Join" and not root.costly
    scan, index = root.children
    assert scan.costly and "on orders o" in scan.details
    assert not index.costly and "using customers_pkey" in index.details


def test_any_other_plan_shape_is_shown_as_json() -> None:
    assert views.plan_trees({"query_block": {"select_id": 1}}) is None
    assert views.plan_trees("text") is None
    assert '"select_id": 1' in views.plan_json({"query_block": {"select_id": 1}})


def test_results_are_paged_with_column_types_and_nulls_shown() -> None:
    data = {
        "columns": [{"name": "id", "type": "int4"}, {"name": "note", "type": "text"}],
        "rows": [{"id": n, "note": None if n % 2 else f"n{n}"} for n in range(250)],
    }
    first = views.result_page(data, 1)
    assert first.columns == [("id", "int4"), ("note", "text")]
    assert (first.total_rows, first.pages, len(first.rows)) == (250, 3, views.PAGE_ROWS)
    assert first.rows[1] == ["1", "NULL"]
    last = views.result_page(data, 99)  # past the end: the last page
    assert (last.page, last.first_row, len(last.rows)) == (3, 201, 50)


def test_csv_export_has_a_header_and_empty_cells_for_null() -> None:
    data = {"columns": [{"name": "a", "type": ""}, {"name": "b", "type": ""}], "rows": [[1, None]]}
    assert views.result_csv(data).splitlines() == ["a,b", "1,"]


def test_ages_are_short() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert views.age(now - timedelta(seconds=5), now) == "5s"
    assert views.age(now - timedelta(hours=3, minutes=5), now) == "3h"
    assert views.age(None, now) == "—"
