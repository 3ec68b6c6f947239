"""`GET /api/agents`: who polls this server, from which scopes, and how healthy they are:
one entry per (token subject, `agent_id`) (docs/server.md §7.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.server.ports.services import ServerClock
from domain.server.agent_registry import AgentView, agent_view
from domain.server.rbac import Permission, Principal, authorize
from domain.shared.operations import Operation

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["AgentListing", "ListAgents"]


@dataclass(frozen=True)
class AgentListing:
    """One `GET /api/agents` entry: the derived view plus what only the store knows."""

    view: AgentView
    agent_version: str | None
    agent_build: str | None
    operations: tuple[Operation, ...]


class ListAgents:
    """Every registered agent, with its status derived from its last poll as of now."""

    def __init__(self, *, store: Store, clock: ServerClock) -> None:
        self._store = store
        self._clock = clock

    def list(self, principal: Principal) -> tuple[AgentListing, ...]:
        authorize(principal, Permission.METRICS_VIEW)
        now = self._clock.now()
        with self._store.read() as session:
            rows = session.work.list_agents()
        return tuple(
            AgentListing(
                view=agent_view(row.record, now),
                agent_version=row.record.agent_version,
                agent_build=row.record.agent_build,
                operations=row.operations,
            )
            for row in rows
        )
