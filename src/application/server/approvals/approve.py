"""Approving a pending request (`POST /api/requests/{id}/approve`).

docs/server.md §2.4-§2.5. Approval rights come from the workflow the request was created
under (its snapshot), never from a permission. Each approval is one row, recorded with the
selector it counted for and the approver's comment, in the transaction that also moves
the request on and writes the audit event:

* a step approved while more remain: `step.approved`, and the next step's selectors
  become the request's pending approvers (the `pending_for_me` list);
* the last step: `approved` and `request.approved`. An approved request is not dispatched
  by the approval: it waits, until its approved TTL, for its requester (or a holder of
  `request.resume:any`) to run it with resume — dispatch on demand (docs/server.md §1.4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from application.server.approvals.pending import (
    RequestExpired,
    check_comment,
    take_pending,
)
from application.server.audit_events import about_request, audit_event
from application.server.ports.services import (
    DispatchNotifier,
    ServerClock,
    request_topic,
    result_topic,
)
from application.server.ports.work.requests import RequestUpdate
from application.server.requests.common import new_uuid
from application.server.settings import ServerSettings
from domain.server.approvals import Approval, ApprovalAction, decide_approval
from domain.server.errors import Conflict
from domain.server.rbac import Principal
from domain.server.request_lifecycle import RequestStatus, Trigger, transition

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["ApproveRequest", "ApprovedStep"]


@dataclass(frozen=True)
class ApprovedStep:
    """The approve response: `current_step` is the 0-based step now waiting
    (`total_steps` once the request is approved)."""

    id: str
    status: RequestStatus
    approved_by: str
    matched_selector: str
    step_completed: bool
    current_step: int
    total_steps: int


class ApproveRequest:
    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        notifier: DispatchNotifier,
        new_id: Callable[[], str] = new_uuid,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._notifier = notifier
        self._new_id = new_id

    def approve(
        self,
        principal: Principal,
        request_id: str,
        *,
        comment: str | None = None,
        selector: str | None = None,
    ) -> ApprovedStep:
        check_comment(comment)
        now = self._clock.now()
        with self._store.write() as session:
            pending = take_pending(session, request_id, Trigger.APPROVE_STEP, now, self._new_id)
            if pending is not None:
                record, workflow = pending.record, pending.workflow
                outcome = decide_approval(
                    principal,
                    requester=record.requester,
                    workflow=workflow,
                    approvals=pending.approvals,
                    requested_selector=selector,
                )
                if not session.work.insert_approval(
                    Approval(
                        id=self._new_id(),
                        request_id=record.id,
                        action=ApprovalAction.APPROVE,
                        actor_id=principal.subject_id,
                        step_index=outcome.step_index,
                        matched_selector=outcome.matched_selector,
                        comment=comment,
                        created_at=now,
                    )
                ):
                    raise Conflict("already approved this step")
                metadata = {
                    "step_number": outcome.step_index + 1,
                    "total_steps": outcome.total_steps,
                    "matched_selector": outcome.matched_selector,
                    "step_completed": outcome.step_completed,
                    "approval_comment": comment,
                }
                status = RequestStatus.PENDING
                if outcome.final:
                    status = transition(record.status, Trigger.APPROVE_FINAL)
                    if not session.work.update_request_status(
                        record.id,
                        allowed_from={RequestStatus.PENDING},
                        to=status,
                        now=now,
                        changes=RequestUpdate(
                            resolved_at=now,
                            expires_at=now
                            + timedelta(seconds=self._settings.approved_ttl_secs(workflow)),
                        ),
                    ):  # pragma: no cover - the row is locked by take_pending
                        raise Conflict("concurrent status change")
                    session.work.replace_pending_approvers(record.id, outcome.next_step, [])
                elif outcome.step_completed:
                    session.work.replace_pending_approvers(
                        record.id, outcome.next_step, [str(s) for s in outcome.next_selectors]
                    )
                session.audit.append(
                    audit_event(
                        new_id=self._new_id,
                        now=now,
                        event_type="request.approved" if outcome.final else "step.approved",
                        category="approval",
                        actor=principal,
                        metadata=metadata,
                        **about_request(record),
                    )
                )
        if pending is None:
            self._notifier.notify(request_topic(request_id))
            self._notifier.notify(result_topic(request_id))  # found expired
            raise RequestExpired()
        self._notifier.notify(request_topic(request_id))
        return ApprovedStep(
            id=request_id,
            status=status,
            approved_by=principal.subject_id,
            matched_selector=outcome.matched_selector,
            step_completed=outcome.step_completed,
            current_step=outcome.next_step,
            total_steps=outcome.total_steps,
        )
