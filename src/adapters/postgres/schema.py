"""PostgreSQL schema snapshot for schema sync (docs/protocol.md §8.2, docs/agent.md §5).

dbward 0.2 ran three queries per table (§8.3), missed CHECK constraints, index columns
and types, views and partitioned tables. Here four set-based catalog queries cover every
user table at once, so the cost does not grow with the number of round trips per table:
the snapshot of a database with ten thousand tables takes four queries, like one with ten.

`pg_catalog` is read directly rather than `information_schema`: it is faster, and it does
not hide columns the agent's user has no privilege on. `data_type` still follows
`information_schema.columns.data_type` (`integer`, `character varying`, `ARRAY`,
`USER-DEFINED`), which is what dbward 0.2 sent and servers may display or match on.

Requires PostgreSQL 12 or later (`attgenerated`, `indnkeyatts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

#: User relations: ordinary and partitioned tables, views, materialized views, foreign
#: tables. Schemas named `pg_*` (catalog, toast, temp) are reserved, so excluding the prefix
#: plus information_schema leaves exactly the user schemas.
_USER_RELATIONS = sql.SQL("""
    pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND n.nspname NOT LIKE 'pg\\_%'
      AND n.nspname <> 'information_schema'
""")

TABLES_SQL = sql.SQL("""
SELECT c.oid, n.nspname, c.relname, c.relkind,
       CASE WHEN c.relkind IN ('v') OR c.reltuples < 0 THEN NULL
            ELSE c.reltuples::bigint END
FROM {relations}
""").format(relations=_USER_RELATIONS)

COLUMNS_SQL = sql.SQL("""
SELECT a.attrelid, a.attname,
       CASE WHEN t.typtype = 'd' THEN
              CASE WHEN bt.typelem <> 0 AND bt.typlen = -1 THEN 'ARRAY'
                   WHEN nbt.nspname = 'pg_catalog'
                        THEN pg_catalog.format_type(t.typbasetype, NULL)
                   ELSE 'USER-DEFINED' END
            ELSE
              CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN 'ARRAY'
                   WHEN nt.nspname = 'pg_catalog' THEN pg_catalog.format_type(a.atttypid, NULL)
                   ELSE 'USER-DEFINED' END
       END,
       NOT (a.attnotnull OR (t.typtype = 'd' AND t.typnotnull)),
       CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_namespace nt ON nt.oid = t.typnamespace
LEFT JOIN (pg_catalog.pg_type bt JOIN pg_catalog.pg_namespace nbt ON nbt.oid = bt.typnamespace)
       ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND a.attrelid IN (SELECT c.oid FROM {relations})
ORDER BY a.attrelid, a.attnum
""").format(relations=_USER_RELATIONS)

#: A foreign key that references a partitioned table also gets one internal copy per
#: partition, on the same referencing table and under the same name; those copies (whose
#: parent constraint sits on the same table) are left out.
CONSTRAINTS_SQL = sql.SQL("""
SELECT con.conrelid, con.conname, con.contype,
       ARRAY(SELECT a.attname
             FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a
               ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord),
       fc.relname, fn.nspname,
       CASE WHEN con.contype = 'f' THEN
         ARRAY(SELECT a.attname
               FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = con.confrelid AND a.attnum = k.attnum
               ORDER BY k.ord)
       END,
       CASE WHEN con.contype = 'f' THEN con.confdeltype END,
       pg_catalog.pg_get_constraintdef(con.oid, true)
FROM pg_catalog.pg_constraint con
LEFT JOIN pg_catalog.pg_constraint parent ON parent.oid = con.conparentid
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
WHERE con.contype IN ('p', 'u', 'f', 'c')
  AND con.conrelid IN (SELECT c.oid FROM {relations})
  AND (parent.oid IS NULL OR parent.conrelid <> con.conrelid)
""").format(relations=_USER_RELATIONS)

#: Key columns only (INCLUDE columns are not part of the key); an expression column is
#: given as its expression text.
INDEXES_SQL = sql.SQL("""
SELECT i.indrelid, ic.relname, i.indisunique, am.amname,
       ARRAY(SELECT CASE WHEN k.attnum = 0
                         THEN pg_catalog.pg_get_indexdef(i.indexrelid, k.ord::int, true)
                         ELSE a.attname::text END
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_catalog.pg_attribute a
                    ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= i.indnkeyatts
             ORDER BY k.ord)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
WHERE i.indrelid IN (SELECT c.oid FROM {relations})
""").format(relations=_USER_RELATIONS)

SNAPSHOT_QUERIES = (TABLES_SQL, COLUMNS_SQL, CONSTRAINTS_SQL, INDEXES_SQL)

_CONSTRAINT_TYPES = {"p": "primary_key", "u": "unique", "f": "foreign_key", "c": "check"}
_DELETE_RULES = {
    "a": "NO_ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET_NULL",
    "d": "SET_DEFAULT",
}


def collect_schema(connection: psycopg.Connection[Any]) -> dict[str, Any]:
    """Run the snapshot queries on `connection` (the caller owns the transaction)."""
    results: list[list[Any]] = []
    with connection.cursor() as cursor:
        for query in SNAPSHOT_QUERIES:
            cursor.execute(query)
            results.append(cursor.fetchall())
    tables, columns, constraints, indexes = results
    return build_snapshot(tables, columns, constraints, indexes)


def build_snapshot(
    tables: Iterable[Sequence[Any]],
    columns: Iterable[Sequence[Any]],
    constraints: Iterable[Sequence[Any]],
    indexes: Iterable[Sequence[Any]],
) -> dict[str, Any]:
    """Assemble the §8.2 snapshot (plus is_view, is_partitioned, definition) from the rows
    of the four queries. Tables sort by (schema, name), columns by position, constraints
    and indexes by name, so two snapshots of one schema are byte-for-byte equal.
    """
    by_oid: dict[int, dict[str, Any]] = {}
    for oid, schema, name, relkind, estimated_rows in tables:
        is_view = relkind in ("v", "m")
        by_oid[oid] = {
            "name": name,
            "schema_name": schema,
            # dbward 0.2 servers read an integer here: -1 (as PostgreSQL says for a table
            # never analyzed) keeps them working; the additive flag says "unknown".
            "estimated_rows": -1 if estimated_rows is None else estimated_rows,
            "estimated_rows_known": estimated_rows is not None,
            "is_view": is_view,
            "is_partitioned": relkind == "p",
            "columns": [],
            "constraints": [],
            "indexes": [],
        }
    primary_keys: dict[int, set[str]] = {}
    for (
        relid,
        name,
        kind,
        cols,
        ref_table,
        ref_schema,
        ref_cols,
        delete_rule,
        definition,
    ) in constraints:
        table = by_oid.get(relid)
        if table is None or table["is_view"]:
            continue
        constraint_type = _CONSTRAINT_TYPES[kind]
        if constraint_type == "primary_key":
            primary_keys[relid] = set(cols)
        is_foreign = constraint_type == "foreign_key"
        table["constraints"].append(
            {
                "name": name,
                "constraint_type": constraint_type,
                "columns": list(cols),
                "referenced_table": ref_table if is_foreign else None,
                "referenced_columns": list(ref_cols) if is_foreign and ref_cols else None,
                "on_delete": _DELETE_RULES.get(delete_rule) if is_foreign else None,
                "referenced_schema": ref_schema if is_foreign else None,
                "definition": definition,
            }
        )
    for relid, name, data_type, nullable, default_value in columns:
        table = by_oid.get(relid)
        if table is None:
            continue
        table["columns"].append(
            {
                "name": name,
                "data_type": data_type,
                "nullable": bool(nullable),
                "default_value": default_value,
                "is_primary_key": name in primary_keys.get(relid, ()),
            }
        )
    for relid, name, is_unique, method, cols in indexes:
        table = by_oid.get(relid)
        if table is None or table["is_view"]:
            continue
        table["indexes"].append(
            {
                "name": name,
                "columns": list(cols),
                "is_unique": bool(is_unique),
                "index_type": method,
            }
        )
    ordered = sorted(by_oid.values(), key=lambda t: (t["schema_name"], t["name"]))
    for table in ordered:
        table["constraints"].sort(key=lambda c: c["name"])
        table["indexes"].sort(key=lambda i: i["name"])
    return {"tables": ordered}
