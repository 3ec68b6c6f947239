"""The databases port: the databases requests run against, as the store knows them.

A database gets its row when the first request for it is created (requests refer to it),
and its schema snapshot from the agents that serve it; request creation reads the
snapshot's dialect to classify the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.shared.scopes import Scope

__all__ = ["DatabaseRepository", "SchemaSnapshot"]


@dataclass(frozen=True)
class SchemaSnapshot:
    database: str
    environment: str
    status: str  # ready | failed | partial
    dialect: str  # postgresql | mysql
    collected_at: datetime
    agent_id: str
    snapshot_json: str | None = None
    error_message: str | None = None


class DatabaseRepository(Protocol):
    def ensure_database(self, scope: Scope, now: datetime) -> None:
        """Make sure the `databases` row for a registered scope exists (idempotent)."""
        ...

    def upsert_schema_snapshot(self, snapshot: SchemaSnapshot) -> None:
        """Replace the scope's snapshot (one per scope: the latest report wins)."""
        ...

    def get_schema_snapshot(self, scope: Scope) -> SchemaSnapshot | None: ...
