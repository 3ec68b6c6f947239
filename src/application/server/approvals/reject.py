"""Rejecting a pending request (`POST /api/requests/{id}/reject`).

docs/server.md §2.4. Whoever may approve the current step may reject the request instead,
with an optional reason (`reason`, or `comment` as dbward 0.2 clients send it). The
request becomes `rejected`, final: it can be neither approved, resumed nor cancelled
afterwards. The rejection is an approval row with action `reject` (for the record and
`approval_progress`) and the audit event `request.rejected`, in one transaction. A
requester who wants to withdraw their own request cancels it instead (§2.6, §11.7).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from application.server.approvals.pending import RequestExpired, check_comment, take_pending
from application.server.audit_events import about_request, audit_event
from application.server.ports.services import (
    DispatchNotifier,
    ServerClock,
    request_topic,
    result_topic,
)
from application.server.ports.work.requests import RequestUpdate
from application.server.requests.common import new_uuid
from domain.server.approvals import Approval, ApprovalAction, rejection_selector
from domain.server.errors import Conflict
from domain.server.rbac import Principal
from domain.server.request_lifecycle import RequestStatus, Trigger, transition

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["RejectRequest"]


class RejectRequest:
    def __init__(
        self,
        *,
        store: Store,
        clock: ServerClock,
        notifier: DispatchNotifier,
        new_id: Callable[[], str] = new_uuid,
    ) -> None:
        self._store = store
        self._clock = clock
        self._notifier = notifier
        self._new_id = new_id

    def reject(
        self, principal: Principal, request_id: str, reason: str | None = None
    ) -> tuple[str, RequestStatus]:
        """(request id, `rejected`)."""
        check_comment(reason, "reason")
        now = self._clock.now()
        with self._store.write() as session:
            pending = take_pending(session, request_id, Trigger.REJECT, now, self._new_id)
            if pending is not None:
                record = pending.record
                step, selector = rejection_selector(
                    principal,
                    requester=record.requester,
                    workflow=pending.workflow,
                    approvals=pending.approvals,
                )
                session.work.insert_approval(
                    Approval(
                        id=self._new_id(),
                        request_id=record.id,
                        action=ApprovalAction.REJECT,
                        actor_id=principal.subject_id,
                        step_index=step,
                        matched_selector=selector,
                        comment=reason,
                        created_at=now,
                    )
                )
                target = transition(record.status, Trigger.REJECT)
                if not session.work.update_request_status(
                    record.id,
                    allowed_from={RequestStatus.PENDING},
                    to=target,
                    now=now,
                    changes=RequestUpdate(resolved_at=now),
                ):  # pragma: no cover - the row is locked by take_pending
                    raise Conflict("concurrent status change")
                session.work.replace_pending_approvers(record.id, step, [])
                session.audit.append(
                    audit_event(
                        new_id=self._new_id,
                        now=now,
                        event_type="request.rejected",
                        category="approval",
                        actor=principal,
                        reason=reason,
                        metadata={"step_number": step + 1, "matched_selector": selector},
                        **about_request(record),
                    )
                )
        self._notifier.notify(request_topic(request_id))
        self._notifier.notify(result_topic(request_id))  # rejected, or found expired
        if pending is None:
            raise RequestExpired()
        return request_id, target
