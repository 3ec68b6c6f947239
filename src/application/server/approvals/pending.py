"""What approve and reject share: taking a pending request for a decision.

docs/server.md §2.4, §1.7. A decision reads the request's approvals and then writes one
more, so two approvers deciding at once must not both decide on the same picture (two
"half" approvals of one step would each see the step unsatisfied and the request would
never advance). The first statement of the transaction is therefore the conditional
update `pending → pending` (`UPDATE requests … WHERE id = ? AND status = 'pending'`): it
takes the request's row lock on PostgreSQL (SQLite's single writer already serialises),
so everything read after it is the latest committed state, and a request that is no
longer pending is refused there with a 409 naming its status.

A request past its `expires_at` is expired on the spot, whether or not the expiry sweep
has run, and the caller answers 410.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from application.server.audit_events import about_request, audit_event
from application.server.ports.work.requests import RequestRecord, RequestUpdate
from application.server.requests.snapshots import workflow_from_snapshot
from domain.server.approvals import Approval
from domain.server.errors import Conflict, Gone, NotFound, Validation
from domain.server.request_lifecycle import InvalidTransition, RequestStatus, Trigger, transition
from domain.server.text_limits import utf8_len
from domain.server.workflows import Workflow

if TYPE_CHECKING:
    from application.server.ports.store import StoreSession

__all__ = [
    "MAX_COMMENT_BYTES",
    "PendingDecision",
    "RequestExpired",
    "check_comment",
    "take_pending",
]

#: An approval comment or a rejection reason is limited to this many UTF-8 bytes.
MAX_COMMENT_BYTES = 1024


class RequestExpired(Gone):
    """The request's pending time ran out (410); it is now `expired`."""

    def __init__(self) -> None:
        super().__init__("request expired")


@dataclass(frozen=True)
class PendingDecision:
    """A pending request locked for a decision, with what the decision reads."""

    record: RequestRecord
    workflow: Workflow
    approvals: list[Approval]


def check_comment(comment: str | None, name: str = "comment") -> None:
    if comment is not None and utf8_len(comment) > MAX_COMMENT_BYTES:
        raise Validation(f"{name} too long (max {MAX_COMMENT_BYTES} bytes)")


def take_pending(
    session: StoreSession,
    request_id: str,
    trigger: Trigger,
    now: datetime,
    new_id: Callable[[], str],
) -> PendingDecision | None:
    """Lock the pending request for `trigger`; None when it has just been expired.

    Raises NotFound, or InvalidTransition (409 `invalid transition: <status> + <trigger>`)
    when the request is not pending. On None the caller must let the session commit (the
    expiry and its audit event) and then raise `RequestExpired`.
    """
    locked = session.work.update_request_status(
        request_id,
        allowed_from={RequestStatus.PENDING},
        to=transition(RequestStatus.PENDING, Trigger.APPROVE_STEP),
        now=now,
    )
    record = session.work.get_request(request_id)
    if record is None:
        raise NotFound("request not found")
    if not locked:
        raise InvalidTransition(record.status, trigger)
    if record.expires_at is not None and now >= record.expires_at:
        _expire(session, record, now, new_id)
        return None
    workflow = workflow_from_snapshot(record.workflow_snapshot_json)
    if workflow is None or not workflow.steps:
        raise Conflict("request has no approval steps to decide")
    return PendingDecision(record, workflow, session.work.approvals_for_request(record.id))


def _expire(
    session: StoreSession, record: RequestRecord, now: datetime, new_id: Callable[[], str]
) -> None:
    """What the expiry sweep would have done (docs/server.md §1.6), done now."""
    target = transition(RequestStatus.PENDING, Trigger.EXPIRE)
    if not session.work.update_request_status(
        record.id,
        allowed_from={RequestStatus.PENDING},
        to=target,
        now=now,
        changes=RequestUpdate(resolved_at=now),
    ):  # pragma: no cover - the row is locked by take_pending
        raise Conflict("concurrent status change")
    session.work.replace_pending_approvers(record.id, 0, [])
    session.audit.append(
        audit_event(
            new_id=new_id,
            now=now,
            event_type="request.expired",
            category="approval",
            actor=None,
            reason="pending TTL passed",
            metadata={"from": RequestStatus.PENDING.value},
            **about_request(record),
        )
    )
