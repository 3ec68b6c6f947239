"""`DatabaseRepository` over SQLAlchemy Core: `databases` and `schema_snapshots`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, update

from adapters.store.prepared import prepared
from adapters.store.schema import databases, schema_snapshots
from adapters.store.work.base import SqlRepository, database_id
from application.server.ports.work.databases import SchemaSnapshot
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp, parse_timestamp


def _snapshot(row: Row[Any]) -> SchemaSnapshot:
    m = row._mapping
    return SchemaSnapshot(
        database=m["database_name"],
        environment=m["environment"],
        status=m["status"],
        dialect=m["dialect"],
        collected_at=parse_timestamp(m["collected_at"]),
        agent_id=m["agent_id"],
        snapshot_json=m["snapshot_json"],
        error_message=m["error_message"],
    )


#: Built once: every request's creation looks up its database and its schema snapshot.
_DATABASE_ID = prepared(select(databases.c.id).where(databases.c.id == bindparam("_id")))
_SCHEMA_SNAPSHOT = prepared(
    select(schema_snapshots).where(
        schema_snapshots.c.database_name == bindparam("_database"),
        schema_snapshots.c.environment == bindparam("_environment"),
    )
)


class SqlDatabaseRepository(SqlRepository):
    def ensure_database(self, scope: Scope, now: datetime) -> None:
        row_id = database_id(scope)
        present = self._conn.scalar(_DATABASE_ID, {"_id": row_id})
        if present is not None:
            return
        self._insert_or_conflict(
            insert(databases).values(
                id=row_id,
                name=scope.database,
                environment=scope.environment,
                created_at=format_timestamp(now),
            )
        )

    def upsert_schema_snapshot(self, snapshot: SchemaSnapshot) -> None:
        values = {
            "status": snapshot.status,
            "snapshot_json": snapshot.snapshot_json,
            "error_message": snapshot.error_message,
            "dialect": snapshot.dialect,
            "collected_at": format_timestamp(snapshot.collected_at),
            "agent_id": snapshot.agent_id,
        }
        where = (
            schema_snapshots.c.database_name == snapshot.database,
            schema_snapshots.c.environment == snapshot.environment,
        )
        if self._conn.execute(update(schema_snapshots).where(*where).values(**values)).rowcount:
            return
        inserted = self._insert_or_conflict(
            insert(schema_snapshots).values(
                database_name=snapshot.database, environment=snapshot.environment, **values
            )
        )
        if not inserted:  # another writer inserted it meanwhile: ours is newer
            self._conn.execute(update(schema_snapshots).where(*where).values(**values))

    def get_schema_snapshot(self, scope: Scope) -> SchemaSnapshot | None:
        return self._first(
            _SCHEMA_SNAPSHOT,
            _snapshot,
            {"_database": scope.database, "_environment": scope.environment},
        )
