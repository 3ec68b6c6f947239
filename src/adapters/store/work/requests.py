"""`RequestRepository` over SQLAlchemy Core: `requests` and `request_pending_approvers`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)

from adapters.store.prepared import prepared
from adapters.store.schema import approvals, request_pending_approvers, requests
from adapters.store.work.base import (
    SqlRepository,
    database_id,
    optional_timestamp,
    parse_optional_timestamp,
    status_values,
)
from application.server.ports.work.requests import (
    NO_CHANGES,
    DuplicateIdempotencyKey,
    RequestFilters,
    RequestRecord,
    RequestUpdate,
    RequestViewer,
)
from domain.server.execution_policies import MIGRATION_MUTATIONS
from domain.server.request_lifecycle import RequestStatus, parse_status
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp, parse_timestamp

#: Prefix of the `pg_advisory_xact_lock` name that serialises migration claims per database.
MIGRATION_LOCK_PREFIX = "dbward.migrate:"


def migration_lock_key(scope: Scope) -> int:
    """The signed 64-bit advisory-lock key for `scope`: the first 8 bytes of
    sha256("dbward.migrate:" + "<database>:<environment>")."""
    name = MIGRATION_LOCK_PREFIX + f"{scope.database}:{scope.environment}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _awaiting(selectors: Sequence[str]) -> ColumnElement[bool]:
    """Pending, with a current-step approver among `selectors`."""
    if not selectors:
        return false()
    return and_(
        requests.c.status == RequestStatus.PENDING.value,
        requests.c.id.in_(
            select(request_pending_approvers.c.request_id).where(
                request_pending_approvers.c.selector.in_(sorted(set(selectors)))
            )
        ),
    )


def _visible_to(viewer: RequestViewer) -> ColumnElement[bool]:
    return or_(
        requests.c.requester == viewer.subject_id,
        _awaiting(viewer.selectors),
        requests.c.id.in_(
            select(approvals.c.request_id).where(approvals.c.actor_id == viewer.subject_id)
        ),
    )


def _request(row: Row[Any]) -> RequestRecord:
    return request_from_row(row._mapping)


def request_from_row(m: Mapping[Any, Any]) -> RequestRecord:
    """A `requests` row, given as a mapping of its column names, as a record."""
    database, _, environment = m["database_id"].partition(":")
    pre = m["pre_dispatch_status"]
    return RequestRecord(
        id=m["id"],
        requester=m["requester"],
        operation=Operation(m["operation"]),
        database=database,
        environment=environment,
        detail=m["detail"],
        status=parse_status(m["status"]),
        pre_dispatch_status=None if pre is None else parse_status(pre),
        emergency=bool(m["emergency"]),
        reason=m["reason"],
        idempotency_key=m["idempotency_key"],
        idempotency_fingerprint=m["idempotency_fingerprint"],
        metadata_json=m["metadata_json"],
        share_with=tuple(json.loads(m["share_with_json"] or "[]")),
        no_store=bool(m["no_store"]),
        workflow_snapshot_json=m["workflow_snapshot_json"],
        decision_trace_json=m["decision_trace_json"],
        execution_plan_json=m["execution_plan_json"],
        cancelled_by=m["cancelled_by"],
        cancel_reason=m["cancel_reason"],
        audit_incomplete=bool(m["audit_incomplete"]),
        created_at=parse_timestamp(m["created_at"]),
        updated_at=parse_timestamp(m["updated_at"]),
        resolved_at=parse_optional_timestamp(m["resolved_at"]),
        expires_at=parse_optional_timestamp(m["expires_at"]),
    )


#: Built once, executed with a parameter dict (see `executions._INSERT_EXECUTION`).
_INSERT_REQUEST = prepared(insert(requests))
#: A conditional status change: SET takes the parameter keys that name columns, WHERE the
#: `_`-prefixed ones (the request, its allowed current statuses, optionally a cutoff).
_UPDATE_STATUS = prepared(
    update(requests).where(
        requests.c.id == bindparam("_id"),
        requests.c.status.in_(bindparam("_from", expanding=True)),
    )
)
_UPDATE_STATUS_IF_OLDER = prepared(
    _UPDATE_STATUS.where(requests.c.updated_at < bindparam("_before"))
)
_GET_REQUEST = prepared(select(requests).where(requests.c.id == bindparam("_id")))
#: The poll's query (docs/protocol.md §3.2 step 4), with and without an operations filter.
_DISPATCHED = prepared(
    select(requests)
    .where(
        requests.c.status == RequestStatus.DISPATCHED.value,
        requests.c.database_id.in_(bindparam("_databases", expanding=True)),
    )
    .order_by(requests.c.updated_at, requests.c.id)
    .limit(bindparam("_limit"))
)
_DISPATCHED_FOR_OPERATIONS = prepared(
    _DISPATCHED.where(requests.c.operation.in_(bindparam("_operations", expanding=True)))
)


class SqlRequestRepository(SqlRepository):
    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        #: The statuses this session's won updates moved requests to, for the metrics the
        #: store records once the session commits.
        self.status_changes: list[RequestStatus] = []

    def insert_request(self, record: RequestRecord) -> None:
        values = {
            "id": record.id,
            "requester": record.requester,
            "operation": record.operation.value,
            "database_id": record.database_id,
            "detail": record.detail,
            "status": record.status.value,
            "pre_dispatch_status": None
            if record.pre_dispatch_status is None
            else record.pre_dispatch_status.value,
            "emergency": record.emergency,
            "reason": record.reason,
            "idempotency_key": record.idempotency_key,
            "idempotency_fingerprint": record.idempotency_fingerprint,
            "metadata_json": record.metadata_json,
            "share_with_json": json.dumps(list(record.share_with)),
            "no_store": record.no_store,
            "workflow_snapshot_json": record.workflow_snapshot_json,
            "decision_trace_json": record.decision_trace_json,
            "execution_plan_json": record.execution_plan_json,
            "cancelled_by": record.cancelled_by,
            "cancel_reason": record.cancel_reason,
            "audit_incomplete": record.audit_incomplete,
            "created_at": format_timestamp(record.created_at),
            "updated_at": format_timestamp(record.updated_at),
            "resolved_at": optional_timestamp(record.resolved_at),
            "expires_at": optional_timestamp(record.expires_at),
        }
        if record.idempotency_key is None:
            self._conn.execute(_INSERT_REQUEST, values)
        elif not self._insert_or_conflict(_INSERT_REQUEST, values):
            raise DuplicateIdempotencyKey(record.idempotency_key)
        if record.pre_dispatch_status is not None:
            # Written past its first status (resolved and dispatched at creation): the
            # move to its status counts as the update would have.
            self.status_changes.append(record.status)

    def get_request(self, request_id: str) -> RequestRecord | None:
        return self._first(_GET_REQUEST, _request, {"_id": request_id})

    def find_idempotent(self, requester: str, idempotency_key: str) -> RequestRecord | None:
        return self._first(
            select(requests).where(
                requests.c.requester == requester,
                requests.c.idempotency_key == idempotency_key,
            ),
            _request,
        )

    def list_requests(
        self, filters: RequestFilters, *, limit: int, offset: int
    ) -> tuple[list[RequestRecord], int]:
        conditions: list[ColumnElement[bool]] = []
        if filters.requester is not None:
            conditions.append(requests.c.requester == filters.requester)
        if filters.status is not None:
            conditions.append(requests.c.status == filters.status.value)
        if filters.visible_to is not None:
            conditions.append(_visible_to(filters.visible_to))
        if filters.awaiting_selectors is not None:
            conditions.append(_awaiting(filters.awaiting_selectors))
        total = self._conn.scalar(select(func.count()).select_from(requests).where(*conditions))
        page = self._all(
            select(requests)
            .where(*conditions)
            .order_by(requests.c.created_at.desc(), requests.c.id.desc())
            .limit(limit)
            .offset(offset),
            _request,
        )
        return page, int(total or 0)

    def update_request_status(
        self,
        request_id: str,
        *,
        allowed_from: Collection[RequestStatus],
        to: RequestStatus,
        now: datetime,
        changes: RequestUpdate = NO_CHANGES,
        updated_before: datetime | None = None,
    ) -> bool:
        if not allowed_from:
            return False
        values: dict[str, Any] = {"status": to.value, "updated_at": format_timestamp(now)}
        if changes.pre_dispatch_status is not None:
            values["pre_dispatch_status"] = changes.pre_dispatch_status.value
        elif changes.clear_pre_dispatch_status:
            values["pre_dispatch_status"] = None
        if changes.resolved_at is not None:
            values["resolved_at"] = format_timestamp(changes.resolved_at)
        if changes.expires_at is not None:
            values["expires_at"] = format_timestamp(changes.expires_at)
        if changes.cancelled_by is not None:
            values["cancelled_by"] = changes.cancelled_by
        if changes.cancel_reason is not None:
            values["cancel_reason"] = changes.cancel_reason
        values["_id"] = request_id
        values["_from"] = list(status_values(allowed_from))
        statement = _UPDATE_STATUS
        if updated_before is not None:
            statement = _UPDATE_STATUS_IF_OLDER
            values["_before"] = format_timestamp(updated_before)
        won: bool = self._conn.execute(statement, values).rowcount == 1
        if won:
            self.status_changes.append(to)
        return won

    def replace_pending_approvers(
        self, request_id: str, step_index: int, selectors: Sequence[str]
    ) -> None:
        self._conn.execute(
            delete(request_pending_approvers).where(
                request_pending_approvers.c.request_id == request_id
            )
        )
        unique = list(dict.fromkeys(selectors))
        if unique:
            self._conn.execute(
                insert(request_pending_approvers),
                [
                    {"request_id": request_id, "selector": selector, "step_index": step_index}
                    for selector in unique
                ],
            )

    def pending_approvers(self, request_id: str) -> list[tuple[int, str]]:
        rows = self._conn.execute(
            select(request_pending_approvers.c.step_index, request_pending_approvers.c.selector)
            .where(request_pending_approvers.c.request_id == request_id)
            .order_by(request_pending_approvers.c.step_index, request_pending_approvers.c.selector)
        )
        return [(row[0], row[1]) for row in rows]

    def dispatched_requests(
        self, scopes: Collection[Scope], operations: Collection[Operation], limit: int
    ) -> list[RequestRecord]:
        if not scopes or limit <= 0:
            return []
        params: dict[str, Any] = {
            "_databases": sorted(database_id(s) for s in scopes),
            "_limit": limit,
        }
        query = _DISPATCHED
        if operations:
            query = _DISPATCHED_FOR_OPERATIONS
            params["_operations"] = sorted(op.value for op in operations)
        return self._all(query, _request, params)

    def lock_migrations(self, scope: Scope) -> None:
        # PostgreSQL: a transaction-scoped advisory lock per database, so two replicas'
        # READ COMMITTED `migration_active` checks cannot both see "none running". SQLite
        # needs nothing: BEGIN IMMEDIATE already serialises every writer.
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(select(func.pg_advisory_xact_lock(migration_lock_key(scope))))

    def migration_active(self, scope: Scope, exclude_request_id: str) -> bool:
        query = select(
            exists().where(
                requests.c.database_id == database_id(scope),
                requests.c.id != exclude_request_id,
                requests.c.status == RequestStatus.RUNNING.value,
                requests.c.operation.in_(sorted(op.value for op in MIGRATION_MUTATIONS)),
            )
        )
        return bool(self._conn.scalar(query))

    def stale_dispatched(self, updated_before: datetime, limit: int) -> list[RequestRecord]:
        return self._all(
            select(requests)
            .where(
                requests.c.status == RequestStatus.DISPATCHED.value,
                requests.c.updated_at < format_timestamp(updated_before),
            )
            .order_by(requests.c.updated_at)
            .limit(limit),
            _request,
        )

    def expirable_requests(
        self, statuses: Collection[RequestStatus], now: datetime, limit: int
    ) -> list[RequestRecord]:
        if not statuses:
            return []
        return self._all(
            select(requests)
            .where(
                requests.c.status.in_(status_values(statuses)),
                requests.c.expires_at.is_not(None),
                requests.c.expires_at < format_timestamp(now),
            )
            .order_by(requests.c.expires_at)
            .limit(limit),
            _request,
        )

    def purgeable_requests(
        self, statuses: Collection[RequestStatus], updated_before: datetime, limit: int
    ) -> list[RequestRecord]:
        if not statuses:
            return []
        return self._all(
            select(requests)
            .where(
                requests.c.status.in_(status_values(statuses)),
                requests.c.updated_at < format_timestamp(updated_before),
            )
            .order_by(requests.c.updated_at, requests.c.id)
            .limit(limit),
            _request,
        )

    def delete_request(
        self,
        request_id: str,
        *,
        allowed_from: Collection[RequestStatus],
        updated_before: datetime,
    ) -> bool:
        if not allowed_from:
            return False
        # The rows that refer to the request go with it (ON DELETE CASCADE).
        result = self._conn.execute(
            delete(requests).where(
                requests.c.id == request_id,
                requests.c.status.in_(status_values(allowed_from)),
                requests.c.updated_at < format_timestamp(updated_before),
            )
        )
        return result.rowcount == 1
