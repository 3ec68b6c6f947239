"""What an agent may touch: the executions it claimed, and the scopes it serves.

Several endpoints check one or the other before changing anything; the checks and their
refusals (404 / 403, with these messages) live here once. Executions belong to the token
(its subject claimed them); scopes belong to each agent of the token (docs/server.md §7.3):
a call naming its agent is checked against that agent's scopes, one naming none against
the union of the token's agents' scopes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.server.ports.work.executions import ExecutionRecord
from domain.server.agent_registry import AgentRecord, advertises, speaking_agents
from domain.server.errors import Forbidden, NotFound
from domain.server.rbac import Principal
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import StoreSession

__all__ = ["calling_agents", "owned_execution", "serving_agent"]


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


def calling_agents(
    session: StoreSession, principal: Principal, agent_id: str | None
) -> tuple[AgentRecord, ...]:
    """The registered agents the call speaks for: the one named `agent_id`, or every agent
    of the token when the call names none. Empty when none of them has polled."""
    rows = session.work.subject_agents(principal.subject_id)
    return speaking_agents((row.record for row in rows), agent_id)


def serving_agent(
    session: StoreSession, principal: Principal, scope: Scope, agent_id: str | None = None
) -> tuple[AgentRecord, ...]:
    """The calling agents, if they have polled (else 403) and one of them serves `scope`."""
    agents = calling_agents(session, principal, agent_id)
    if not agents:
        raise Forbidden("agent not registered")
    if not advertises(agents, scope):
        raise Forbidden(f"agent does not serve {scope.database}/{scope.environment}")
    return agents
