"""Reading requests: one request (`?wait=` for a change), the list, its executions.

Who may read a request (docs/server.md §4.4): its requester, holders of
`request.view:any`, while it is pending the approvers of its current step (as the
workflow snapshot names them), and whoever approved or rejected it. The list shows the
same requests, and `pending_for_me` those an approval by the caller would be accepted
for right now (docs/server.md §2.5).
`GET /api/requests/{id}?wait=N` is a long-poll: it arms a notifier waiter *before*
reading the store, answers at once for a request in a final status and otherwise as soon
as the status changes, and re-reads at least every second (a notification is a hint;
between replicas it travels by PostgreSQL NOTIFY, docs/server.md §7.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from application.server.ports.services import DispatchNotifier, ServerClock, request_topic
from application.server.ports.work.executions import ExecutionRecord
from application.server.ports.work.explain_jobs import DryRunJobRecord
from application.server.ports.work.requests import RequestFilters, RequestRecord, RequestViewer
from application.server.requests.common import LONG_POLL_RECHECK_SECS
from application.server.requests.snapshots import workflow_from_snapshot
from application.server.store_calls import IN_THREADS
from domain.server.agent_registry import QueueHint, queue_hint
from domain.server.approvals import (
    Approval,
    ApprovalProgress,
    approval_progress,
    awaits_approval_from,
    is_pending_approver,
)
from domain.server.errors import NotFound, Validation
from domain.server.rbac import (
    Ownership,
    Permission,
    Principal,
    RequestView,
    authorize,
    authorize_global,
)
from domain.server.request_lifecycle import RequestStatus, is_terminal, parse_status

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreCalls, StoreSession

__all__ = [
    "MAX_WAIT_SECS",
    "AwaitingApproval",
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
#: `pending_for_me` reads the candidate requests in batches of this many.
_AWAITING_BATCH = 200


@dataclass(frozen=True)
class RequestDetails:
    """`GET /api/requests/{id}`: the row, why it may wait, and its EXPLAIN context."""

    record: RequestRecord
    queue_hint: QueueHint | None
    #: While pending: the current step's selectors that still need approvals.
    approvers: tuple[str, ...]
    dry_runs: tuple[DryRunJobRecord, ...]
    explain_enabled: bool
    #: None for a request created without approval steps.
    approval_progress: ApprovalProgress | None = None


@dataclass(frozen=True)
class AwaitingApproval:
    """Where a pending request of a list stands: its current step (0-based) and who may
    approve it (`request_pending_approvers`)."""

    current_step: int
    total_steps: int
    next_approvers: tuple[str, ...]


@dataclass(frozen=True)
class RequestList:
    """One page of `GET /api/requests`, with the total the filters match."""

    requests: tuple[RequestRecord, ...]
    total: int
    limit: int
    offset: int
    #: For the pending requests of the page, by id.
    awaiting: dict[str, AwaitingApproval] = field(default_factory=dict)


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
        calls: StoreCalls = IN_THREADS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._notifier = notifier
        self._draining = draining
        self._recheck_secs = recheck_secs
        self._calls = calls

    def get(self, principal: Principal, request_id: str) -> RequestDetails:
        now = self._clock.now()
        with self._store.read() as session:
            record, approvals = _visible(session, principal, request_id)
            hint: QueueHint | None = None
            if record.status is RequestStatus.DISPATCHED:
                agents = [row.record for row in session.work.list_agents()]
                hint = queue_hint(agents, record.scope, now)
            dry_runs = tuple(session.work.dry_run_jobs_for_request(record.id))
        workflow = workflow_from_snapshot(record.workflow_snapshot_json)
        progress = (
            approval_progress(workflow, approvals)
            if workflow is not None and workflow.steps
            else None
        )
        return RequestDetails(
            record=record,
            queue_hint=hint,
            approvers=progress.awaiting
            if progress is not None and record.status is RequestStatus.PENDING
            else (),
            dry_runs=dry_runs,
            explain_enabled=bool(dry_runs) or (workflow is not None and workflow.explain),
            approval_progress=progress,
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
            return await self._calls.short(self.get, principal, request_id)
        with self._notifier.arm([request_topic(request_id)]) as waiter:
            details = await self._calls.short(self.get, principal, request_id)
            initial = details.record.status
            if is_terminal(initial):
                return details
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while (remaining := deadline - loop.time()) > 0 and not self._draining():
                await waiter.wait(min(self._recheck_secs, remaining))
                details = await self._calls.short(self.get, principal, request_id)
                if details.record.status is not initial:
                    break
        return details


class ListRequests:
    """`GET /api/requests`: everyone's requests with `request.view:any`; else the caller's
    own, those awaiting the caller's approval and those the caller approved or rejected.

    `pending_for_me` keeps only the pending requests an approval by the caller would be
    accepted for now (eligibility of docs/server.md §2.5, a step already approved by the
    caller excluded), whatever the caller's ownership.
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
        pending_for_me: bool = False,
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
        selectors = _selectors_of(principal)
        with self._store.read() as session:
            if pending_for_me:
                if wanted_status not in (None, RequestStatus.PENDING):
                    return RequestList((), 0, limit, offset)
                found = _awaiting_me(session, principal, selectors, user)
                rows, total = found[offset : offset + limit], len(found)
            else:
                viewer = (
                    None
                    if ownership is Ownership.ANY
                    else RequestViewer(principal.subject_id, selectors)
                )
                rows, total = session.work.list_requests(
                    RequestFilters(requester=user, status=wanted_status, visible_to=viewer),
                    limit=limit,
                    offset=offset,
                )
            awaiting = {
                record.id: _awaiting(record, session.work.pending_approvers(record.id))
                for record in rows
                if record.status is RequestStatus.PENDING
            }
        return RequestList(tuple(rows), total, limit, offset, awaiting)


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
    return _visible(session, principal, request_id)[0]


def _visible(
    session: StoreSession, principal: Principal, request_id: str
) -> tuple[RequestRecord, list[Approval]]:
    record = session.work.get_request(request_id)
    if record is None:
        raise NotFound("request not found")
    approvals = session.work.approvals_for_request(record.id)
    workflow = workflow_from_snapshot(record.workflow_snapshot_json)
    pending_approver = (
        record.status is RequestStatus.PENDING
        and workflow is not None
        and is_pending_approver(principal, record.requester, workflow, approvals)
    )
    authorize(
        principal,
        Permission.REQUEST_VIEW,
        RequestView(
            requester=record.requester,
            is_pending_approver=pending_approver,
            has_approved=any(a.actor_id == principal.subject_id for a in approvals),
        ),
        database=record.database,
        environment=record.environment,
    )
    return record, approvals


def _selectors_of(principal: Principal) -> tuple[str, ...]:
    """Every approver selector naming `principal`: its id, effective roles and groups."""
    return (
        f"user:{principal.subject_id}",
        *(f"role:{name}" for name in sorted(principal.role_names)),
        *(f"group:{name}" for name in sorted(principal.groups)),
    )


def _awaiting_me(
    session: StoreSession, principal: Principal, selectors: tuple[str, ...], user: str | None
) -> list[RequestRecord]:
    """Pending requests (of `user`, when given) whose approval by `principal` would be
    accepted now, newest first. The store narrows them by selector; the rules that need
    the approvals (self, cross-step, already approved) are the domain's."""
    if principal.is_agent:
        return []
    found: list[RequestRecord] = []
    offset = 0
    while True:
        batch, total = session.work.list_requests(
            RequestFilters(requester=user, awaiting_selectors=selectors),
            limit=_AWAITING_BATCH,
            offset=offset,
        )
        for record in batch:
            workflow = workflow_from_snapshot(record.workflow_snapshot_json)
            if workflow is not None and awaits_approval_from(
                principal,
                record.requester,
                workflow,
                session.work.approvals_for_request(record.id),
            ):
                found.append(record)
        offset += len(batch)
        if not batch or offset >= total:
            return found


def _awaiting(record: RequestRecord, pending: list[tuple[int, str]]) -> AwaitingApproval:
    workflow = workflow_from_snapshot(record.workflow_snapshot_json)
    return AwaitingApproval(
        current_step=pending[0][0] if pending else 0,
        total_steps=0 if workflow is None else len(workflow.steps),
        next_approvers=tuple(selector for _, selector in pending),
    )
