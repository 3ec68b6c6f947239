"""Cancelling a request (`POST /api/requests/{id}/cancel`).

docs/server.md §2.6. Cancelling takes `request.cancel` on the request's scope, for one's
own request, or `request.cancel:any`, and then a reason: whoever cancels someone else's
request must say why. A running request is cancelled too: the agent learns it from its
next heartbeat and stops the statement.

`cancel_all_of` is the system's cancel: when a user is suspended or deleted
(docs/server.md §4.5) nothing they asked for may still run, so every request of theirs that
can still be cancelled is, with the reason `user suspended` / `user deleted`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from application.server.audit_events import SYSTEM_ACTOR, about_request, audit_event
from application.server.ports.services import (
    DispatchNotifier,
    ServerClock,
    request_topic,
    result_topic,
)
from application.server.ports.work.requests import RequestFilters, RequestRecord, RequestUpdate
from application.server.requests.common import MAX_REASON_BYTES, new_uuid
from domain.server.errors import Conflict, NotFound, Validation
from domain.server.rbac import Permission, Principal, RequestMutate, authorize
from domain.server.request_lifecycle import (
    CANCELLABLE_STATUSES,
    RequestStatus,
    Trigger,
    transition,
)
from domain.server.text_limits import utf8_len

if TYPE_CHECKING:
    from datetime import datetime

    from application.server.ports.store import Store, StoreSession

__all__ = ["CancelRequest"]

#: Requests of one user read per page while cancelling them all.
_PAGE = 200


class CancelRequest:
    """Moves a request to `cancelled`, with who did it and why, in one guarded update."""

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

    def cancel(
        self, principal: Principal, request_id: str, reason: str | None = None
    ) -> tuple[str, RequestStatus]:
        """(request id, its new status); Conflict when it can no longer be cancelled."""
        if reason is not None and utf8_len(reason) > MAX_REASON_BYTES:
            raise Validation(f"reason too long (max {MAX_REASON_BYTES} bytes)")
        now = self._clock.now()
        with self._store.write() as session:
            record = session.work.get_request(request_id)
            if record is None:
                raise NotFound("request not found")
            authorize(
                principal,
                Permission.REQUEST_CANCEL,
                RequestMutate(requester=record.requester),
                database=record.database,
                environment=record.environment,
            )
            if principal.subject_id != record.requester and not (reason and reason.strip()):
                raise Validation("reason required for non-owner cancel")
            target = self._cancel_one(session, record, principal, reason, now)
            if target is None:
                raise Conflict("concurrent status change")
        self._notifier.notify(request_topic(record.id))
        self._notifier.notify(result_topic(record.id))
        return record.id, target

    def cancel_all_of(self, requester: str, reason: str) -> list[str]:
        """Cancel, as the system, every request of `requester` still cancellable; their ids."""
        now = self._clock.now()
        cancelled: list[str] = []
        with self._store.write() as session:
            offset = 0
            while True:
                page, _ = session.work.list_requests(
                    RequestFilters(requester=requester), limit=_PAGE, offset=offset
                )
                for record in page:
                    if record.status not in CANCELLABLE_STATUSES:
                        continue
                    if self._cancel_one(session, record, None, reason, now) is not None:
                        cancelled.append(record.id)
                if len(page) < _PAGE:
                    break
                offset += _PAGE
        for request_id in cancelled:
            self._notifier.notify(request_topic(request_id))
            self._notifier.notify(result_topic(request_id))
        return cancelled

    def _cancel_one(
        self,
        session: StoreSession,
        record: RequestRecord,
        principal: Principal | None,
        reason: str | None,
        now: datetime,
    ) -> RequestStatus | None:
        """The guarded update and its audit event; None when the status moved meanwhile."""
        target = transition(record.status, Trigger.CANCEL)
        cancelled_by = principal.subject_id if principal is not None else SYSTEM_ACTOR
        if not session.work.update_request_status(
            record.id,
            allowed_from=CANCELLABLE_STATUSES,
            to=target,
            now=now,
            changes=RequestUpdate(resolved_at=now, cancelled_by=cancelled_by, cancel_reason=reason),
        ):
            return None
        session.audit.append(
            audit_event(
                new_id=self._new_id,
                now=now,
                event_type="request.cancelled",
                category="approval",
                actor=principal,
                reason=reason,
                metadata={"from": record.status.value},
                **about_request(record),
            )
        )
        return target
