"""The audit API: list events (permission `audit.read`). Head and verify: `audit_integrity`."""

from __future__ import annotations

from application.server.ports.store import AuditFilters, Store
from domain.server.audit import AuditEvent
from domain.server.errors import Validation
from domain.server.rbac import Permission, Principal, authorize

__all__ = ["AuditQueries"]

AUDIT_DEFAULT_LIMIT = 50
AUDIT_MAX_LIMIT = 200


class AuditQueries:
    """`GET /api/audit/events` (permission `audit.read`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def list(
        self,
        principal: Principal,
        filters: AuditFilters,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[AuditEvent]:
        authorize(principal, Permission.AUDIT_READ)
        wanted = AUDIT_DEFAULT_LIMIT if limit is None else limit
        if wanted < 1:
            raise Validation("limit must be at least 1")
        if offset < 0:
            raise Validation("offset must not be negative")
        if filters.since and filters.until and filters.since > filters.until:
            raise Validation("since must not be after until")
        with self._store.read() as session:
            return session.audit.list(filters, limit=min(wanted, AUDIT_MAX_LIMIT), offset=offset)
