"""What an agent may touch: the executions it claimed, and the scopes it serves.

Several endpoints check one or the other before changing anything; the checks and their
refusals (404 / 403, with these messages) live here once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.server.ports.work.agents import AgentRow
from application.server.ports.work.executions import ExecutionRecord
from domain.server.errors import Forbidden, NotFound
from domain.server.rbac import Principal
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import StoreSession

__all__ = ["owned_execution", "serving_agent"]


def owned_execution(
    session: StoreSession, principal: Principal, execution_id: str
) -> ExecutionRecord:
    """The execution, if it exists (else 404) and the calling agent claimed it (else 403)."""
    execution = session.work.get_execution(execution_id)
    if execution is None:
        raise NotFound("execution not found")
    if execution.agent_id != principal.subject_id:
        raise Forbidden("this execution belongs to another agent")
    return execution


def serving_agent(session: StoreSession, principal: Principal, scope: Scope) -> AgentRow:
    """The calling agent's registry row, if it has polled (else 403) and serves `scope`."""
    agent = session.work.get_agent(principal.subject_id)
    if agent is None:
        raise Forbidden("agent not registered")
    if scope not in agent.record.scopes:
        raise Forbidden(f"agent does not serve {scope.database}/{scope.environment}")
    return agent
