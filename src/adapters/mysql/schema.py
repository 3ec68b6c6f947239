"""Schema snapshot of the connection's current database (docs/protocol.md §8.2).

Set-based: six queries on information_schema for the whole database, however many tables
it holds (dbward 0.2 ran three more queries per table, §16 item 12). Unlike the
reference it also reports views, partitioning, PRIMARY KEY / UNIQUE / CHECK constraints,
index columns and index types.

The connection returns raw bytes (see mysql_connection); catalog text is decoded as UTF-8,
replacing what does not decode, because MySQL 8 reports some catalog columns as VARBINARY.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql
from pymysql.connections import Connection

from adapters.mysql.connection import Flavour, error_code

_ER_BAD_FIELD = 1054
_ER_UNKNOWN_TABLE = 1109

_TABLES = """
SELECT TABLE_NAME, TABLE_TYPE, TABLE_ROWS, CREATE_OPTIONS
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE()
  AND TABLE_TYPE IN ('BASE TABLE', 'VIEW', 'SYSTEM VERSIONED')
"""

_COLUMNS = """
SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, IS_NULLABLE, COLUMN_DEFAULT
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, ORDINAL_POSITION
"""

# Constraint names are unique per table in MySQL (every primary key is called PRIMARY),
# so every join also matches the table.
_CONSTRAINTS = """
SELECT tc.TABLE_NAME, tc.CONSTRAINT_NAME, tc.CONSTRAINT_TYPE,
       kcu.COLUMN_NAME, kcu.REFERENCED_TABLE_SCHEMA, kcu.REFERENCED_TABLE_NAME,
       kcu.REFERENCED_COLUMN_NAME, rc.DELETE_RULE
FROM information_schema.TABLE_CONSTRAINTS tc
LEFT JOIN information_schema.KEY_COLUMN_USAGE kcu
  ON kcu.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA
 AND kcu.TABLE_NAME = tc.TABLE_NAME
 AND kcu.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
LEFT JOIN information_schema.REFERENTIAL_CONSTRAINTS rc
  ON rc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA
 AND rc.TABLE_NAME = tc.TABLE_NAME
 AND rc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
WHERE tc.TABLE_SCHEMA = DATABASE()
ORDER BY tc.TABLE_NAME, tc.CONSTRAINT_NAME, kcu.ORDINAL_POSITION
"""

# MariaDB names CHECK constraints per table (a column-level CHECK is named after the column);
# MySQL names them per schema and its CHECK_CONSTRAINTS has no TABLE_NAME.
_CHECKS = {
    Flavour.MARIADB: """
SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE
FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = DATABASE()
""",
    Flavour.MYSQL: """
SELECT NULL, CONSTRAINT_NAME, CHECK_CLAUSE
FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = DATABASE()
""",
}

_INDEXES = """
SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, INDEX_TYPE
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""

# MySQL 8.0.13+ functional key parts have no COLUMN_NAME, only an EXPRESSION.
_INDEXES_WITH_EXPRESSIONS = """
SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE,
       COALESCE(COLUMN_NAME, CONCAT('(', EXPRESSION, ')')), INDEX_TYPE
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""

_CONSTRAINT_TYPES = {
    "PRIMARY KEY": "primary_key",
    "FOREIGN KEY": "foreign_key",
    "UNIQUE": "unique",
    "CHECK": "check",
}

_DELETE_RULES = {
    "CASCADE": "CASCADE",
    "SET NULL": "SET_NULL",
    "RESTRICT": "RESTRICT",
    "NO ACTION": "NO_ACTION",
    "SET DEFAULT": "SET_DEFAULT",
}

#: MariaDB reports spatial indexes as RTREE, MySQL as SPATIAL.
_INDEX_TYPES = {
    "BTREE": "btree",
    "HASH": "hash",
    "FULLTEXT": "fulltext",
    "SPATIAL": "spatial",
    "RTREE": "spatial",
}


def collect_schema(conn: Connection[Any], flavour: Flavour) -> dict[str, Any]:
    """The snapshot: tables (and views) sorted by name, with columns, constraints, indexes."""
    schema_rows = _query(conn, "SELECT DATABASE()")
    schema_name = _text(schema_rows[0][0]) if schema_rows else None
    tables: dict[str, dict[str, Any]] = {}
    for name, table_type, table_rows, options in _query(conn, _TABLES):
        is_view = _text(table_type) == "VIEW"
        tables[_text(name)] = {
            "name": _text(name),
            "schema_name": schema_name,
            # An integer for dbward 0.2 servers (-1 = unknown); the additive flag says so.
            "estimated_rows": -1 if is_view or table_rows is None else int(table_rows),
            "estimated_rows_known": not (is_view or table_rows is None),
            "is_view": is_view,
            "is_partitioned": "partitioned" in _text(options).lower(),
            "columns": [],
            "constraints": [],
            "indexes": [],
        }

    constraints = _constraints(conn, flavour)
    primary_keys = {
        table: set(c["columns"])
        for (table, _), c in constraints.items()
        if c["constraint_type"] == "primary_key"
    }
    for table, column, data_type, nullable, default in _query(conn, _COLUMNS):
        entry = tables.get(_text(table))
        if entry is None:
            continue
        entry["columns"].append(
            {
                "name": _text(column),
                "data_type": _text(data_type),
                "nullable": _text(nullable) == "YES",
                "default_value": _default(default, flavour),
                "is_primary_key": _text(column) in primary_keys.get(entry["name"], ()),
            }
        )
    for (table, _), constraint in sorted(constraints.items()):
        if table in tables:
            tables[table]["constraints"].append(constraint)
    for (table, _), index in sorted(_indexes(conn, flavour).items()):
        if table in tables:
            tables[table]["indexes"].append(index)
    return {"tables": [tables[name] for name in sorted(tables)]}


def _constraints(conn: Connection[Any], flavour: Flavour) -> dict[tuple[str, str], dict[str, Any]]:
    checks = _check_clauses(conn, flavour)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _query(conn, _CONSTRAINTS):
        table, name, kind, column, ref_schema, ref_table, ref_column, delete_rule = row
        key = (_text(table), _text(name))
        constraint_type = _CONSTRAINT_TYPES.get(_text(kind))
        if constraint_type is None:
            continue
        entry = found.get(key)
        if entry is None:
            is_fk = constraint_type == "foreign_key"
            entry = {
                "name": key[1],
                "constraint_type": constraint_type,
                "columns": [],
                "referenced_table": _text(ref_table) if is_fk and ref_table is not None else None,
                "referenced_columns": [] if is_fk else None,
                "on_delete": (
                    _DELETE_RULES.get(_text(delete_rule), "NO_ACTION") if is_fk else None
                ),
                "referenced_schema": (
                    _text(ref_schema) if is_fk and ref_schema is not None else None
                ),
                "definition": (
                    checks.get(key, checks.get(("", key[1])))
                    if constraint_type == "check"
                    else None
                ),
            }
            found[key] = entry
        if column is not None and _text(column) not in entry["columns"]:
            entry["columns"].append(_text(column))
        if entry["referenced_columns"] is not None and ref_column is not None:
            entry["referenced_columns"].append(_text(ref_column))
    return found


def _check_clauses(conn: Connection[Any], flavour: Flavour) -> dict[tuple[str, str], str]:
    """CHECK definitions; empty where the server predates CHECK_CONSTRAINTS."""
    try:
        rows = _query(conn, _CHECKS[flavour])
    except pymysql.err.Error as exc:
        if error_code(exc) in (_ER_UNKNOWN_TABLE, _ER_BAD_FIELD):
            return {}
        raise
    return {
        ("" if table is None else _text(table), _text(name)): _text(clause)
        for table, name, clause in rows
    }


def _indexes(conn: Connection[Any], flavour: Flavour) -> dict[tuple[str, str], dict[str, Any]]:
    rows: Sequence[Sequence[Any]]
    if flavour is Flavour.MYSQL:
        try:
            rows = _query(conn, _INDEXES_WITH_EXPRESSIONS)
        except pymysql.err.Error as exc:
            if error_code(exc) != _ER_BAD_FIELD:  # before 8.0.13: no EXPRESSION column
                raise
            rows = _query(conn, _INDEXES)
    else:
        rows = _query(conn, _INDEXES)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for table, name, non_unique, column, index_type in rows:
        key = (_text(table), _text(name))
        entry = found.get(key)
        if entry is None:
            kind = _text(index_type).upper()
            entry = {
                "name": key[1],
                "columns": [],
                "is_unique": int(non_unique) == 0,
                "index_type": _INDEX_TYPES.get(kind, kind.lower()),
            }
            found[key] = entry
        if column is not None:
            entry["columns"].append(_text(column))
    return found


def _default(value: Any, flavour: Flavour) -> str | None:
    """COLUMN_DEFAULT as SQL text. MariaDB writes "no default / DEFAULT NULL" as the bare
    word NULL (a string default shows quoted), so there it means SQL NULL.
    """
    if value is None:
        return None
    text = _text(value)
    if flavour is Flavour.MARIADB and text == "NULL":
        return None
    return text


def _query(conn: Connection[Any], sql: str) -> Sequence[Sequence[Any]]:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        rows: Sequence[Sequence[Any]] = cursor.fetchall()
    return rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
