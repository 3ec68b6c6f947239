"""Dispatching a request that rests: the one path for resume and for an idempotent replay.

docs/server.md §1.4. A request that is `approved`, `auto_approved`, `break_glass`,
`executed`, `failed` or `execution_lost` goes back to the agents only through
`dispatch_resting`, inside the caller's write transaction, so the checks, the conditional
update and the `request.dispatched` event commit together:

1. the state machine (`Dispatch` from the current status, else 409 naming both);
2. the approved TTL for a request still waiting for its first run (410 `request expired`
   even if the expiry sweep has not run yet, §11.3);
3. the execution policy (`check_dispatch_allowed`: max executions, the window, retry);
4. `UPDATE … WHERE status IN (<the status checked>)`: a concurrent change (a cancel, an
   expiry, another resume) makes it match nothing, and that is 409 `concurrent status
   change`, never a second dispatch.

The caller notifies after commit (`notify_dispatched`): the request's waiters and the
agents' long-polls of its scope wake at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from application.server.audit_events import about_request, audit_event
from application.server.ports.services import DispatchNotifier, dispatch_topic, request_topic
from application.server.ports.work.requests import RequestRecord, RequestUpdate
from application.server.settings import ServerSettings
from domain.server.errors import Conflict, Gone
from domain.server.execution_policies import check_dispatch_allowed
from domain.server.rbac import Principal
from domain.server.request_lifecycle import RequestStatus, Trigger, is_expirable, transition

if TYPE_CHECKING:
    from application.server.ports.store import StoreSession

__all__ = ["LOST_EXECUTION_WARNING", "Dispatch", "dispatch_resting", "notify_dispatched"]

#: Said to whoever resumes an `execution_lost` request: its agent vanished mid-run.
LOST_EXECUTION_WARNING = (
    "the previous execution was lost while running: the statement may have run once already"
)


@dataclass(frozen=True)
class Dispatch:
    """What `dispatch_resting` did: the request, dispatched from `from_status`."""

    record: RequestRecord
    from_status: RequestStatus
    executions: int
    warning: str | None


def dispatch_resting(
    session: StoreSession,
    record: RequestRecord,
    *,
    settings: ServerSettings,
    actor: Principal,
    now: datetime,
    new_id: Callable[[], str],
    reason: str | None = None,
    via: str = "resume",
) -> Dispatch:
    """Dispatch `record` (read in this session) under every rule above, or raise."""
    transition(record.status, Trigger.DISPATCH)
    if is_expirable(record.status) and record.expires_at is not None and record.expires_at <= now:
        raise Gone("request expired")
    executions = session.work.count_executions(record.id)
    policy = settings.execution_policy_for(record.database, record.environment)
    check_dispatch_allowed(
        policy,
        status=record.status,
        executions=executions,
        resolved_at=record.resolved_at,
        now=now,
    )
    if not session.work.update_request_status(
        record.id,
        allowed_from={record.status},
        to=RequestStatus.DISPATCHED,
        now=now,
        changes=RequestUpdate(pre_dispatch_status=record.status),
    ):
        raise Conflict("concurrent status change")
    session.audit.append(
        audit_event(
            new_id=new_id,
            now=now,
            event_type="request.dispatched",
            category="approval",
            actor=actor,
            reason=reason,
            metadata={
                "from": record.status.value,
                "via": via,
                "executions": executions,
                "max_executions": policy.max_executions,
            },
            **about_request(record),
        )
    )
    lost = record.status is RequestStatus.EXECUTION_LOST
    return Dispatch(
        record=record,
        from_status=record.status,
        executions=executions,
        warning=LOST_EXECUTION_WARNING if lost else None,
    )


def notify_dispatched(notifier: DispatchNotifier, record: RequestRecord) -> None:
    """After commit: wake the request's waiters and the agents polling its scope."""
    notifier.notify(request_topic(record.id))
    notifier.notify(dispatch_topic(record.scope))
