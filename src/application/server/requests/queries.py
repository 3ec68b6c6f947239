"""Reading requests: one request (`?wait=` for a change), the list, its executions.

Who may read a request: its requester, holders of `request.view:any`, and while it is
pending, the approvers of its first step (as the workflow snapshot names them).
`GET /api/requests/{id}?wait=N` is a long-poll: it arms a notifier waiter *before*
reading the store, answers at once for a request in a final status and otherwise as soon
as the status changes, and re-reads at least every second (replicas on a shared
PostgreSQL do not share notifications).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.server.ports.services import DispatchNotifier, ServerClock, request_topic
from application.server.ports.work.executions import ExecutionRecord
from application.server.ports.work.explain_jobs import DryRunJobRecord
from application.server.ports.work.requests import RequestFilters, RequestRecord
from application.server.requests.common import (
    LONG_POLL_RECHECK_SECS,
    first_step_approvers,
    first_step_selectors,
)
from application.server.requests.snapshots import workflow_from_snapshot
from domain.server.agent_registry import QueueHint, queue_hint
from domain.server.errors import NotFound, Validation
from domain.server.rbac import (
    Ownership,
    Permission,
    Principal,
    RequestView,
    authorize,
    authorize_global,
    matched_selectors,
)
from domain.server.request_lifecycle import RequestStatus, is_terminal, parse_status

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreSession

__all__ = [
    "MAX_WAIT_SECS",
    "ExecutionHistoryEntry",
    "GetRequest",
    "ListExecutions",
    "ListRequests",
    "RequestDetails",
    "RequestList",
]

#: `GET /api/requests/{id}?wait=` is capped at this many seconds.
MAX_WAIT_SECS = 120
#: Lists answer at most this many rows per page.
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class RequestDetails:
    """`GET /api/requests/{id}`: the row, why it may wait, and its EXPLAIN context."""

    record: RequestRecord
    queue_hint: QueueHint | None
    approvers: tuple[str, ...]
    dry_runs: tuple[DryRunJobRecord, ...]
    explain_enabled: bool


@dataclass(frozen=True)
class RequestList:
    """One page of `GET /api/requests`, with the total the filters match."""

    requests: tuple[RequestRecord, ...]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class ExecutionHistoryEntry:
    """One attempt at running a request, and whether its result body is stored."""

    execution: ExecutionRecord
    has_stored_result: bool


class GetRequest:
    """`GET /api/requests/{id}`, answered at once or when the status changes."""

    def __init__(
        self,
        *,
        store: Store,
        clock: ServerClock,
        notifier: DispatchNotifier,
        draining: Callable[[], bool] = lambda: False,
        recheck_secs: float = LONG_POLL_RECHECK_SECS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._notifier = notifier
        self._draining = draining
        self._recheck_secs = recheck_secs

    def get(self, principal: Principal, request_id: str) -> RequestDetails:
        now = self._clock.now()
        with self._store.read() as session:
            record = visible_request(session, principal, request_id)
            hint: QueueHint | None = None
            if record.status is RequestStatus.DISPATCHED:
                agents = [row.record for row in session.work.list_agents()]
                hint = queue_hint(agents, record.scope, now)
            dry_runs = tuple(session.work.dry_run_jobs_for_request(record.id))
        workflow = workflow_from_snapshot(record.workflow_snapshot_json)
        return RequestDetails(
            record=record,
            queue_hint=hint,
            approvers=first_step_approvers(workflow)
            if record.status is RequestStatus.PENDING
            else (),
            dry_runs=dry_runs,
            explain_enabled=bool(dry_runs) or (workflow is not None and workflow.explain),
        )

    async def get_waiting(
        self, principal: Principal, request_id: str, wait_secs: float
    ) -> RequestDetails:
        """`?wait=N`: answer when the status changes, or after N seconds (≤ 120).

        A request already in a final status answers at once: nothing but an explicit
        resume will change it, so waiting would only hold the client. A draining server
        stops waiting and answers what it has.
        """
        wait = min(max(wait_secs, 0.0), MAX_WAIT_SECS)
        if wait <= 0:
            return await asyncio.to_thread(self.get, principal, request_id)
        with self._notifier.arm([request_topic(request_id)]) as waiter:
            details = await asyncio.to_thread(self.get, principal, request_id)
            initial = details.record.status
            if is_terminal(initial):
                return details
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while (remaining := deadline - loop.time()) > 0 and not self._draining():
                await waiter.wait(min(self._recheck_secs, remaining))
                details = await asyncio.to_thread(self.get, principal, request_id)
                if details.record.status is not initial:
                    break
        return details


class ListRequests:
    """`GET /api/requests`: everyone's requests with `request.view:any`, else the caller's own.

    Requests the caller may see as an approver (pending or past) join this list with the
    approval endpoints.
    """

    def __init__(self, *, store: Store) -> None:
        self._store = store

    def list(
        self,
        principal: Principal,
        *,
        limit: int = 50,
        offset: int = 0,
        status: str | None = None,
        user: str | None = None,
    ) -> RequestList:
        ownership = authorize_global(principal, Permission.REQUEST_VIEW)
        limit = min(max(limit, 1), MAX_PAGE_SIZE)
        offset = max(offset, 0)
        wanted_status: RequestStatus | None = None
        if status is not None:
            try:
                wanted_status = parse_status(status)
            except ValueError:
                raise Validation(f"unknown status: {status}") from None
        if ownership is Ownership.ANY:
            requester = user
        else:
            if user is not None and user != principal.subject_id:
                return RequestList((), 0, limit, offset)
            requester = principal.subject_id
        with self._store.read() as session:
            rows, total = session.work.list_requests(
                RequestFilters(requester=requester, status=wanted_status),
                limit=limit,
                offset=offset,
            )
        return RequestList(tuple(rows), total, limit, offset)


class ListExecutions:
    """`GET /api/requests/{id}/executions`: its attempts, newest first, for whoever may
    read the request."""

    def __init__(self, *, store: Store) -> None:
        self._store = store

    def list(
        self, principal: Principal, request_id: str, limit: int = 20
    ) -> tuple[ExecutionHistoryEntry, ...]:
        limit = min(max(limit, 1), MAX_PAGE_SIZE)
        with self._store.read() as session:
            record = visible_request(session, principal, request_id)
            rows = session.work.list_executions(record.id, limit)
            stored = session.work.executions_with_results([row.id for row in rows])
        return tuple(ExecutionHistoryEntry(row, row.id in stored) for row in rows)


def visible_request(session: StoreSession, principal: Principal, request_id: str) -> RequestRecord:
    """The request, if `principal` may read it: else NotFound or Forbidden."""
    record = session.work.get_request(request_id)
    if record is None:
        raise NotFound("request not found")
    workflow = workflow_from_snapshot(record.workflow_snapshot_json)
    pending_approver = record.status is RequestStatus.PENDING and bool(
        matched_selectors(principal, first_step_selectors(workflow), record.requester)
    )
    authorize(
        principal,
        Permission.REQUEST_VIEW,
        RequestView(requester=record.requester, is_pending_approver=pending_approver),
        database=record.database,
        environment=record.environment,
    )
    return record
