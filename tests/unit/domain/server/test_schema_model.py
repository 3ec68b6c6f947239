"""The schema model of an agent's snapshot: reading it, name lookups, cascade walks."""

from __future__ import annotations

from typing import Any

import pytest

from domain.server.schema_model import CASCADE_DEPTH, SchemaModel, UnreadableSnapshot
from domain.server.sql_classification import TableRef


def table(
    name: str,
    rows: int | None = 10,
    *,
    schema: str = "public",
    cascades_from: tuple[str, ...] = (),
    restricts_from: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A table as the PostgreSQL agent uploads it (None rows: never analysed)."""
    constraints = [
        {
            "name": f"{name}_{parent}_fk",
            "type": "foreign_key",
            "referenced_table": parent,
            "referenced_schema": schema,
            "on_delete": "CASCADE",
        }
        for parent in cascades_from
    ] + [
        {"name": f"{name}_{p}_fk", "referenced_table": p, "on_delete": "NO_ACTION"}
        for p in restricts_from
    ]
    return {
        "name": name,
        "schema_name": schema,
        "estimated_rows": -1 if rows is None else rows,
        "estimated_rows_known": rows is not None,
        "columns": [],
        "constraints": constraints,
        **extra,
    }


def model(*tables: dict[str, Any]) -> SchemaModel:
    return SchemaModel.from_snapshot({"tables": list(tables)})


def test_row_estimates_are_read_and_unknown_ones_are_none() -> None:
    schema = model(
        table("a", 5), table("never_analysed", None), table("v", 7, estimated_rows_known=False)
    )
    rows = {t.ref.name: t.estimated_rows for t in schema.tables}
    assert rows == {"a": 5, "never_analysed": None, "v": None}


def test_a_dbward_02_snapshot_without_the_known_flag_reads_minus_one_as_unknown() -> None:
    schema = SchemaModel.from_snapshot(
        {"tables": [{"name": "a", "schema_name": "public", "estimated_rows": -1}]}
    )
    assert schema.tables[0].estimated_rows is None


@pytest.mark.parametrize(
    "snapshot",
    [
        None,
        [],
        {"tables": {}},
        {"tables": ["a"]},
        {"tables": [{"name": 3}]},
        {"tables": [{"name": "a", "constraints": {}}]},
        {"tables": [{"name": "a", "constraints": ["x"]}]},
    ],
)
def test_a_snapshot_of_another_shape_is_unreadable(snapshot: object) -> None:
    with pytest.raises(UnreadableSnapshot):
        SchemaModel.from_snapshot(snapshot)


def test_lookup_is_exact_first_then_case_insensitive() -> None:
    schema = model(table("Orders", 1), table("orders", 2))
    assert [t.estimated_rows for t in schema.find(TableRef("Orders"))] == [1]
    assert [t.estimated_rows for t in schema.find(TableRef("orders", "public"))] == [2]
    folded = model(table("Items", 3))
    assert [t.estimated_rows for t in folded.find(TableRef("items"))] == [3]
    assert [t.estimated_rows for t in folded.find(TableRef("ITEMS", "PUBLIC"))] == [3]


def test_an_unqualified_name_in_several_schemas_finds_them_all() -> None:
    schema = model(table("t", 1, schema="a"), table("t", 2, schema="b"))
    assert sorted(t.estimated_rows or 0 for t in schema.find(TableRef("t"))) == [1, 2]
    assert [t.estimated_rows for t in schema.find(TableRef("t", "b"))] == [2]


def test_an_unknown_name_finds_nothing() -> None:
    schema = model(table("t"))
    assert schema.find(TableRef("missing")) == ()
    assert schema.find(TableRef("t", "other")) == ()


def test_only_on_delete_cascade_keys_are_followed() -> None:
    schema = model(
        table("p"),
        table("c", 50, cascades_from=("p",)),
        table("r", 60, restricts_from=("p",)),
    )
    (parent,) = schema.find(TableRef("p"))
    impact = schema.cascade(parent)
    assert [(c.table.ref.name, c.depth) for c in impact.children] == [("c", 1)]
    assert not impact.truncated


def test_the_on_delete_rule_is_read_in_either_spelling() -> None:
    child = table("c")
    child["constraints"] = [{"referenced_table": "p", "on_delete": "cascade"}]
    schema = model(table("p"), child)
    assert [c.table.ref.name for c in schema.cascade(schema.find(TableRef("p"))[0]).children] == [
        "c"
    ]


def test_the_cascade_walk_is_breadth_first_to_depth_three_and_says_when_it_stopped() -> None:
    chain = [table("t0")] + [table(f"t{i}", cascades_from=(f"t{i - 1}",)) for i in range(1, 5)]
    schema = model(*chain)
    impact = schema.cascade(schema.find(TableRef("t0"))[0])
    assert [(c.table.ref.name, c.depth) for c in impact.children] == [
        ("t1", 1),
        ("t2", 2),
        ("t3", 3),
    ]
    assert CASCADE_DEPTH == 3
    assert impact.truncated


def test_a_chain_that_ends_at_depth_three_is_not_truncated() -> None:
    chain = [table("t0")] + [table(f"t{i}", cascades_from=(f"t{i - 1}",)) for i in range(1, 4)]
    schema = model(*chain)
    impact = schema.cascade(schema.find(TableRef("t0"))[0])
    assert len(impact.children) == 3
    assert not impact.truncated


def test_cycles_and_self_references_are_visited_once() -> None:
    schema = model(
        table("a", cascades_from=("b", "a")),
        table("b", cascades_from=("a",)),
    )
    impact = schema.cascade(schema.find(TableRef("a"))[0])
    assert [(c.table.ref.name, c.depth) for c in impact.children] == [("b", 1)]
    assert not impact.truncated


def test_a_key_to_another_schema_reaches_that_schema_s_table() -> None:
    child = table("c", schema="sales")
    child["constraints"] = [
        {"referenced_table": "p", "referenced_schema": "core", "on_delete": "CASCADE"}
    ]
    schema = model(table("p", schema="core"), table("p", schema="sales"), child)
    core = schema.find(TableRef("p", "core"))[0]
    sales = schema.find(TableRef("p", "sales"))[0]
    assert [c.table.ref for c in schema.cascade(core).children] == [TableRef("c", "sales")]
    assert schema.cascade(sales).children == ()
