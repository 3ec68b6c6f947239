"""What risk scoring needs from an agent's schema snapshot: tables, row estimates, cascades.

docs/sql-safety.md §4. Agents upload a snapshot per (database, environment) after they
start and whenever the schema may have changed; the server keeps the latest. This module
reads the parts of it that risk uses, and nothing else: each table's estimated row count
and the foreign keys that delete child rows with their parent (`ON DELETE CASCADE`).

Names are matched as the database resolves them: exactly first, then ignoring case (MySQL
on a case-insensitive file system, or a PostgreSQL name the parser folded differently).
An unqualified name that exists in several schemas matches all of them, and risk takes
the worst: scoring never guesses the cheaper table.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from domain.server.sql_classification import TableRef

__all__ = [
    "CASCADE_DEPTH",
    "CascadeChild",
    "CascadeImpact",
    "SchemaModel",
    "SnapshotTable",
    "UnreadableSnapshot",
]

#: How many levels of ON DELETE CASCADE children a DELETE is followed to.
CASCADE_DEPTH = 3


class UnreadableSnapshot(ValueError):
    """The snapshot does not have the shape agents upload: risk treats it as not synced."""


@dataclass(frozen=True)
class SnapshotTable:
    """One table of a snapshot. `estimated_rows` is None when the database does not know."""

    ref: TableRef
    estimated_rows: int | None
    #: Parent tables whose deletes cascade into this one (one entry per foreign key).
    cascades_from: tuple[TableRef, ...] = ()


@dataclass(frozen=True)
class CascadeChild:
    """A table a DELETE reaches through ON DELETE CASCADE, `depth` foreign keys away."""

    table: SnapshotTable
    depth: int


@dataclass(frozen=True)
class CascadeImpact:
    """The children a DELETE on one table reaches; `truncated` when the walk stopped early."""

    children: tuple[CascadeChild, ...]
    truncated: bool


class SchemaModel:
    """The tables of one snapshot, indexed for lookups by name."""

    def __init__(self, tables: Iterable[SnapshotTable]) -> None:
        self._tables = tuple(tables)
        self._exact: dict[tuple[str, str | None], list[SnapshotTable]] = {}
        self._folded: dict[tuple[str, str | None], list[SnapshotTable]] = {}
        for table in self._tables:
            name, schema = table.ref.name, table.ref.schema
            for key in ((name, schema), (name, None)):
                self._exact.setdefault(key, []).append(table)
            folded_schema = None if schema is None else schema.lower()
            for key in ((name.lower(), folded_schema), (name.lower(), None)):
                self._folded.setdefault(key, []).append(table)
        self._children: dict[TableRef, list[SnapshotTable]] = {}
        for table in self._tables:
            for parent in table.cascades_from:
                for found in self.find(parent):
                    self._children.setdefault(found.ref, []).append(table)

    @property
    def tables(self) -> tuple[SnapshotTable, ...]:
        return self._tables

    @classmethod
    def from_snapshot(cls, snapshot: object) -> SchemaModel:
        """Read the `{"tables": [...]}` document an agent uploads (docs/protocol.md)."""
        if not isinstance(snapshot, Mapping) or not isinstance(snapshot.get("tables"), list):
            raise UnreadableSnapshot("a snapshot is an object with a 'tables' list")
        return cls(_table(entry) for entry in snapshot["tables"])

    def find(self, ref: TableRef) -> tuple[SnapshotTable, ...]:
        """Every table `ref` may name: one, several (an unqualified name in many schemas),
        or none (a table the snapshot does not know)."""
        found = self._exact.get((ref.name, ref.schema))
        if not found:
            schema = None if ref.schema is None else ref.schema.lower()
            found = self._folded.get((ref.name.lower(), schema))
        return tuple(dict.fromkeys(found or ()))

    def cascade(self, table: SnapshotTable, max_depth: int = CASCADE_DEPTH) -> CascadeImpact:
        """Breadth-first over ON DELETE CASCADE children, at most `max_depth` keys deep."""
        seen = {table.ref}
        children: list[CascadeChild] = []
        queue = deque([(table, 0)])
        truncated = False
        while queue:
            current, depth = queue.popleft()
            for child in self._children.get(current.ref, ()):
                if child.ref in seen:
                    continue
                if depth == max_depth:
                    truncated = True
                    continue
                seen.add(child.ref)
                children.append(CascadeChild(child, depth + 1))
                queue.append((child, depth + 1))
        return CascadeImpact(tuple(children), truncated)


def _table(entry: object) -> SnapshotTable:
    if not isinstance(entry, Mapping):
        raise UnreadableSnapshot("each table is an object")
    name, schema = entry.get("name"), entry.get("schema_name")
    if not isinstance(name, str) or not (schema is None or isinstance(schema, str)):
        raise UnreadableSnapshot("a table needs a string 'name' (and 'schema_name')")
    rows = entry.get("estimated_rows")
    known = entry.get("estimated_rows_known", True) is not False
    estimated = rows if isinstance(rows, int) and not isinstance(rows, bool) else None
    if estimated is not None and (estimated < 0 or not known):
        estimated = None  # -1: never analysed (PostgreSQL), or a view
    parents: list[TableRef] = []
    constraints = entry.get("constraints")
    if constraints is None:
        constraints = []  # a view, or a dbward 0.2 agent that sent none
    if not isinstance(constraints, list):
        raise UnreadableSnapshot(f"constraints of table {name!r} are not a list")
    for constraint in constraints:
        if not isinstance(constraint, Mapping):
            raise UnreadableSnapshot(f"a constraint of table {name!r} is not an object")
        on_delete = str(constraint.get("on_delete") or "").replace(" ", "_").upper()
        parent = constraint.get("referenced_table")
        if on_delete == "CASCADE" and isinstance(parent, str):
            parent_schema = constraint.get("referenced_schema")
            parents.append(
                TableRef(parent, parent_schema if isinstance(parent_schema, str) else schema)
            )
    return SnapshotTable(TableRef(name, schema), estimated, tuple(parents))
