"""The requests port: the request rows, their pending approvers, and the sweeps' lookups
(expiry, dispatch timeout, and the retention purge).

A request's status changes only through `update_request_status`, a conditional update
that returns whether it won: two replicas approving, an agent claiming and a sweep
expiring the same request never all succeed, and nobody has to read first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.server.request_lifecycle import RequestStatus
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

__all__ = [
    "NO_CHANGES",
    "DuplicateIdempotencyKey",
    "RequestFilters",
    "RequestRecord",
    "RequestRepository",
    "RequestUpdate",
    "RequestViewer",
]


class DuplicateIdempotencyKey(Exception):
    """`insert_request` lost a race on UNIQUE(requester, idempotency_key)."""


@dataclass(frozen=True)
class RequestRecord:
    """One row of `requests`. JSON columns stay raw strings: they are signed or frozen."""

    id: str
    requester: str
    operation: Operation
    database: str
    environment: str
    detail: str
    status: RequestStatus
    created_at: datetime
    updated_at: datetime
    #: The status a dispatch came from, so an unclaimed dispatch can go back to it.
    pre_dispatch_status: RequestStatus | None = None
    emergency: bool = False
    reason: str | None = None
    idempotency_key: str | None = None
    #: sha256 hex of `detail`: a replay with another detail is a 409.
    idempotency_fingerprint: str | None = None
    metadata_json: str = "{}"
    share_with: tuple[str, ...] = ()
    no_store: bool = False
    workflow_snapshot_json: str | None = None
    decision_trace_json: str | None = None
    #: The exact statement texts, a compact JSON array: hashed byte for byte into the
    #: execution token. None for migrations.
    execution_plan_json: str | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    audit_incomplete: bool = False
    resolved_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)

    @property
    def database_id(self) -> str:
        return f"{self.database}:{self.environment}"


@dataclass(frozen=True)
class RequestUpdate:
    """Columns a status change may also set; None leaves a column as it is.

    `clear_pre_dispatch_status` sets that column to NULL (a dispatch timeout returns).
    """

    pre_dispatch_status: RequestStatus | None = None
    clear_pre_dispatch_status: bool = False
    resolved_at: datetime | None = None
    expires_at: datetime | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None


#: `update_request_status` with nothing but the status (and `updated_at`).
NO_CHANGES = RequestUpdate()


@dataclass(frozen=True)
class RequestViewer:
    """Someone without `request.view:any` (docs/server.md §4.4): they see the requests they
    made, the pending ones whose current step names one of their `selectors`
    (`request_pending_approvers`), and those they approved or rejected."""

    subject_id: str
    selectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestFilters:
    """`GET /api/requests`: every given field must match."""

    requester: str | None = None
    status: RequestStatus | None = None
    visible_to: RequestViewer | None = None
    #: Pending requests whose current step names one of these selectors (`pending_for_me`
    #: before the finer eligibility rules of docs/server.md §2.5).
    awaiting_selectors: tuple[str, ...] | None = None


class RequestRepository(Protocol):
    def insert_request(self, record: RequestRecord) -> None:
        """Raises `DuplicateIdempotencyKey` when (requester, key) is taken already.

        The request's database must exist (`DatabaseRepository.ensure_database`).
        """
        ...

    def get_request(self, request_id: str) -> RequestRecord | None: ...

    def find_idempotent(self, requester: str, idempotency_key: str) -> RequestRecord | None: ...

    def list_requests(
        self, filters: RequestFilters, *, limit: int, offset: int
    ) -> tuple[list[RequestRecord], int]:
        """Newest first, and the total count of matching rows."""
        ...

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
        """`UPDATE requests SET status = to … WHERE id = ? AND status IN allowed_from`.

        `updated_before` adds `AND updated_at < ?` (a sweep's guard). True if it won.
        """
        ...

    def replace_pending_approvers(
        self, request_id: str, step_index: int, selectors: Sequence[str]
    ) -> None:
        """`request_pending_approvers`: the selectors that may approve the current step."""
        ...

    def pending_approvers(self, request_id: str) -> list[tuple[int, str]]:
        """(step_index, selector) rows of a request."""
        ...

    def dispatched_requests(
        self, scopes: Collection[Scope], operations: Collection[Operation], limit: int
    ) -> list[RequestRecord]:
        """`dispatched` requests in `scopes` (and `operations`, when given), oldest first."""
        ...

    def lock_migrations(self, scope: Scope) -> None:
        """Serialise migration claims of `scope` until the transaction ends.

        Call before `migration_active`: without it two replicas on PostgreSQL (READ
        COMMITTED) could each see no running migration and both claim one.
        """
        ...

    def migration_active(self, scope: Scope, exclude_request_id: str) -> bool:
        """Another migrate_up/down/repair of `scope` is running.

        dbward 0.2 also counts *dispatched* ones, so two dispatched migrations refuse
        each other until a dispatch timeout; only a running one excludes here.
        """
        ...

    def stale_dispatched(self, updated_before: datetime, limit: int) -> list[RequestRecord]: ...

    def expirable_requests(
        self, statuses: Collection[RequestStatus], now: datetime, limit: int
    ) -> list[RequestRecord]:
        """Requests in `statuses` whose `expires_at` is before `now`."""
        ...

    def purgeable_requests(
        self, statuses: Collection[RequestStatus], updated_before: datetime, limit: int
    ) -> list[RequestRecord]:
        """Requests in `statuses` last changed before `updated_before`, oldest change first."""
        ...

    def delete_request(
        self,
        request_id: str,
        *,
        allowed_from: Collection[RequestStatus],
        updated_before: datetime,
    ) -> bool:
        """`DELETE … WHERE id = ? AND status IN allowed_from AND updated_at < ?`, with its
        approvals, pending approvers, executions, results and dry-run jobs (never its audit
        events, which live apart). True if it won: a request resumed meanwhile stays."""
        ...
