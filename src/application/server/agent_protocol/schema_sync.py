"""`POST /api/agent/schema-sync`: an agent's snapshot of one database's schema.

The server keeps the latest snapshot per scope; its dialect decides how submitted SQL is
parsed for that scope, so only an agent serving the scope may replace it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from application.server.agent_protocol.ownership import serving_agent
from application.server.audit_events import audit_event
from application.server.ports.services import ServerClock
from application.server.ports.work.databases import SchemaSnapshot
from application.server.requests.common import new_uuid
from application.server.settings import ServerSettings
from domain.server.errors import Validation
from domain.server.rbac import Permission, Principal, authorize
from domain.shared.jobs import SchemaReport

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["SyncSchema"]

_SCHEMA_DIALECTS = frozenset({"postgresql", "mysql"})
_SCHEMA_STATUSES = frozenset({"ready", "failed", "partial"})


class SyncSchema:
    """Stores a snapshot (or the agent's failure to take one) with its audit event."""

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        new_id: Callable[[], str] = new_uuid,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._new_id = new_id

    def sync(self, principal: Principal, body: SchemaReport) -> None:
        """§3.6: store the snapshot of one scope the agent serves."""
        authorize(principal, Permission.AGENT_OPERATE)
        if body.dialect not in _SCHEMA_DIALECTS:
            raise Validation("invalid dialect")
        if body.status not in _SCHEMA_STATUSES:
            raise Validation("invalid status")
        if body.status == "ready" and body.snapshot is None:
            raise Validation("snapshot is required when status is ready")
        scope = body.scope
        now = self._clock.now()
        with self._store.write() as session:
            serving_agent(session, principal, scope)
            if not self._settings.is_registered(scope.database, scope.environment):
                raise Validation("database/environment not registered")
            session.work.upsert_schema_snapshot(
                SchemaSnapshot(
                    database=scope.database,
                    environment=scope.environment,
                    status=body.status,
                    dialect=body.dialect,
                    collected_at=now,
                    agent_id=principal.subject_id,
                    snapshot_json=None
                    if body.snapshot is None
                    else json.dumps(body.snapshot, separators=(",", ":")),
                    error_message=body.error_message,
                )
            )
            tables = body.snapshot.get("tables") if isinstance(body.snapshot, dict) else None
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="schema.snapshot_failed"
                    if body.status == "failed"
                    else "schema.snapshot_updated",
                    category="agent",
                    actor=principal,
                    outcome="failure" if body.status == "failed" else "success",
                    resource_type="schema",
                    resource_id=f"{scope.database}:{scope.environment}",
                    database=scope.database,
                    environment=scope.environment,
                    reason=body.error_message,
                    metadata={
                        "dialect": body.dialect,
                        "status": body.status,
                        "tables": len(tables) if isinstance(tables, list) else None,
                    },
                )
            )
