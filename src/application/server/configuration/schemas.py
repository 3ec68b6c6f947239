"""`GET /api/schemas/{database}`: the schema snapshot an agent last reported for a scope.

docs/server.md §8.2. The snapshot is what risk scoring and preflight impact read, so a
requester can see the row estimates and cascades their request will be judged by. A
summary lists table names and row estimates; `table=` gives one table's whole entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from domain.server.errors import NotFound, Validation
from domain.server.rbac import Permission, Principal, authorize
from domain.server.workflows import scope_name_problem
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["GetSchema"]


class GetSchema:
    """Permission `request.view` on the scope."""

    def __init__(self, *, store: Store) -> None:
        self._store = store

    def get(
        self,
        principal: Principal,
        database: str,
        environment: str | None,
        *,
        summary: bool = False,
        table: str | None = None,
    ) -> dict[str, Any]:
        if not environment:
            raise Validation("environment is required")
        for kind, name in (("database", database), ("environment", environment)):
            problem = scope_name_problem(kind, name, wildcard=False)
            if problem is not None:
                raise Validation(problem)
        authorize(principal, Permission.REQUEST_VIEW, database=database, environment=environment)
        with self._store.read() as session:
            snapshot = session.work.get_schema_snapshot(Scope(database, environment))
        if snapshot is None:
            raise NotFound(f"no schema snapshot for {database}/{environment}", resource="schema")
        tables = _tables(snapshot.snapshot_json)
        body: dict[str, Any] = {
            "database": snapshot.database,
            "environment": snapshot.environment,
            "status": snapshot.status,
            "dialect": snapshot.dialect,
            "collected_at": format_timestamp(snapshot.collected_at),
            "agent_id": snapshot.agent_id,
            "error_message": snapshot.error_message,
        }
        if table is not None:
            found = [entry for entry in tables if _names(entry, table)]
            if not found:
                raise NotFound(
                    f"no table {table!r} in the schema snapshot of {database}/{environment}",
                    resource="table",
                )
            return {**body, "table": found[0], "matches": len(found)}
        if summary:
            return {
                **body,
                "tables": [
                    {
                        "name": entry.get("name"),
                        "schema_name": entry.get("schema_name"),
                        "estimated_rows": entry.get("estimated_rows"),
                    }
                    for entry in tables
                ],
            }
        return {**body, "tables": tables}


def _tables(snapshot_json: str | None) -> list[Mapping[str, Any]]:
    """The snapshot's table entries; none for a failed or unreadable snapshot."""
    if not snapshot_json:
        return []
    try:
        document = json.loads(snapshot_json)
    except ValueError:
        return []
    tables = document.get("tables") if isinstance(document, dict) else None
    if not isinstance(tables, list):
        return []
    return [entry for entry in tables if isinstance(entry, dict)]


def _names(entry: Mapping[str, Any], wanted: str) -> bool:
    """`wanted` is the table's name, or `schema.name`."""
    name, schema = entry.get("name"), entry.get("schema_name")
    return wanted == name or (schema is not None and wanted == f"{schema}.{name}")
