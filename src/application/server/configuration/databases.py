"""`GET /api/databases` (permission `request.view`): where requests may go, and who runs them.

Every registered (database, environment) of `[[databases]]`, with the agents of the
registry that serve it and their status derived as of now (docs/server.md §7.3), so a
client can tell before submitting whether anything will pick its request up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.server.ports.services import ServerClock
from application.server.settings import ServerSettings
from domain.server.agent_registry import AgentView, agent_view
from domain.server.rbac import Permission, Principal, authorize
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["DatabaseView", "ListDatabases"]


@dataclass(frozen=True)
class DatabaseView:
    scope: Scope
    agents: tuple[AgentView, ...]


class ListDatabases:
    def __init__(self, *, store: Store, settings: ServerSettings, clock: ServerClock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    def list(self, principal: Principal) -> tuple[DatabaseView, ...]:
        authorize(principal, Permission.REQUEST_VIEW)
        now = self._clock.now()
        with self._store.read() as session:
            rows = session.work.list_agents()
        views = [agent_view(row.record, now) for row in rows]
        return tuple(
            DatabaseView(scope, tuple(view for view in views if scope in view.scopes))
            for registration in self._settings.databases
            for scope in registration.scopes
        )
