"""Resuming a request (`POST /api/requests/{id}/resume`): run it now, or run it again.

docs/server.md §1.4. An approval only moves a request to `approved`; it runs when its
requester (or an operator with `request.resume:any`) resumes it. Resume also re-runs a
request that ran (`executed`, `failed` under `retry_on_failure`), one whose agent vanished
mid-run (`execution_lost`: the answer warns the statement may have run once already), and
one whose dispatch timed out and went back to where it came from. Whoever resumes
someone else's request must say why. The rules themselves live in `dispatch.py`, shared
with an idempotent replay of create.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.server.ports.services import DispatchNotifier, ServerClock
from application.server.requests.common import MAX_REASON_BYTES, new_uuid
from application.server.requests.dispatch import dispatch_resting, notify_dispatched
from application.server.settings import ServerSettings
from domain.server.errors import NotFound, Validation
from domain.server.rbac import Permission, Principal, RequestMutate, authorize
from domain.server.request_lifecycle import RequestStatus
from domain.server.text_limits import utf8_len

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["ResumeRequest", "ResumedRequest"]


@dataclass(frozen=True)
class ResumedRequest:
    """The resume response: `{"id","status":"dispatched","resumed_from","warning"}`."""

    id: str
    status: RequestStatus
    resumed_from: RequestStatus
    warning: str | None


class ResumeRequest:
    """Dispatches a resting request for its owner or an operator, under its policy."""

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

    def resume(
        self, principal: Principal, request_id: str, reason: str | None = None
    ) -> ResumedRequest:
        if reason is not None and utf8_len(reason) > MAX_REASON_BYTES:
            raise Validation(f"reason too long (max {MAX_REASON_BYTES} bytes)")
        now = self._clock.now()
        with self._store.write() as session:
            record = session.work.get_request(request_id)
            if record is None:
                raise NotFound("request not found")
            authorize(
                principal,
                Permission.REQUEST_RESUME,
                RequestMutate(requester=record.requester),
                database=record.database,
                environment=record.environment,
            )
            if principal.subject_id != record.requester and not (reason and reason.strip()):
                raise Validation("reason required for non-owner resume")
            dispatched = dispatch_resting(
                session,
                record,
                settings=self._settings,
                actor=principal,
                now=now,
                new_id=self._new_id,
                reason=reason,
            )
        notify_dispatched(self._notifier, record)
        return ResumedRequest(
            id=record.id,
            status=RequestStatus.DISPATCHED,
            resumed_from=dispatched.from_status,
            warning=dispatched.warning,
        )
