"""`SecretRepository` over SQLAlchemy Core: the `server_secrets` table (docs/server.md §7.4).

`add_if_absent` is `INSERT … ON CONFLICT DO NOTHING` on both engines, so two replicas
creating the signing key at once cannot both win, and neither transaction aborts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from adapters.store.schema import format_timestamp, server_secrets

__all__ = ["SqlSecretRepository"]


class SqlSecretRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, name: str) -> bytes | None:
        sealed = self._conn.scalar(
            select(server_secrets.c.sealed).where(server_secrets.c.name == name)
        )
        return None if sealed is None else bytes(sealed)

    def add_if_absent(self, name: str, sealed: bytes, now: datetime) -> bool:
        values = {"name": name, "sealed": sealed, "updated_at": format_timestamp(now)}
        dialect = postgresql if self._conn.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(server_secrets)
            .values(values)
            .on_conflict_do_nothing()
            .returning(server_secrets.c.name)
        )
        # RETURNING, not rowcount: psycopg's rowcount after ON CONFLICT is not reliable.
        inserted = self._conn.execute(statement).first()
        return inserted is not None

    def put(self, name: str, sealed: bytes, now: datetime) -> None:
        if self.add_if_absent(name, sealed, now):
            return
        self._conn.execute(
            update(server_secrets)
            .where(server_secrets.c.name == name)
            .values(sealed=sealed, updated_at=format_timestamp(now))
        )
