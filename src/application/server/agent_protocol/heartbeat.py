"""`POST /api/agent/jobs/{execution_id}/heartbeat`: a running job keeps its lease.

The answer is also how a cancellation reaches the agent: `True` tells it to stop the
statement, whether the request was cancelled or the execution can no longer be extended.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from application.server.agent_protocol.ownership import owned_execution
from application.server.ports.services import ServerClock
from application.server.ports.work.executions import ExecutionStatus
from domain.server.errors import Conflict
from domain.server.rbac import Permission, Principal, authorize
from domain.server.request_lifecycle import RequestStatus

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["RecordHeartbeat"]


class RecordHeartbeat:
    """Extends the lease of a claimed execution by its own lease length."""

    def __init__(self, *, store: Store, clock: ServerClock) -> None:
        self._store = store
        self._clock = clock

    def record(self, principal: Principal, execution_id: str) -> bool:
        """§3.4: extend the lease; True tells the agent to cancel."""
        authorize(principal, Permission.AGENT_OPERATE)
        now = self._clock.now()
        with self._store.write() as session:
            execution = owned_execution(session, principal, execution_id)
            if execution.status is not ExecutionStatus.CLAIMED:
                raise Conflict(f"execution is {execution.status.value}, cannot heartbeat")
            record = session.work.get_request(execution.request_id)
            if record is None:
                return True
            if not session.work.extend_lease(
                execution.id, now + timedelta(seconds=execution.lease_secs)
            ):
                return True
            return record.status is RequestStatus.CANCELLED
