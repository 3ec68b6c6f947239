"""`GET /api/groups` and `GET /api/groups/{name}` (permission `user.read`).

A group and its roles come from `[[auth.groups]]`; its members from the store (they are
managed through the user API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.server.settings import AuthSettings
from domain.server.errors import NotFound
from domain.server.rbac import Permission, Principal, authorize

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["GroupView", "ListGroups"]


@dataclass(frozen=True)
class GroupView:
    name: str
    roles: tuple[str, ...]
    members: tuple[str, ...]


class ListGroups:
    def __init__(self, *, store: Store, auth: AuthSettings) -> None:
        self._store = store
        self._groups = {group.name: group.roles for group in auth.groups}

    def list(self, principal: Principal) -> tuple[GroupView, ...]:
        authorize(principal, Permission.USER_READ)
        with self._store.read() as session:
            return tuple(
                GroupView(name, roles, tuple(session.identity.members_of(name)))
                for name, roles in sorted(self._groups.items())
            )

    def get(self, principal: Principal, name: str) -> GroupView:
        authorize(principal, Permission.USER_READ)
        if name not in self._groups:
            raise NotFound(f"group {name!r} is not configured", resource="group")
        with self._store.read() as session:
            members = tuple(session.identity.members_of(name))
        return GroupView(name, self._groups[name], members)
