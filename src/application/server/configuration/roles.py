"""`GET /api/roles` (permission `workflow.read`): the built-in and `[[auth.roles]]` roles."""

from __future__ import annotations

from application.server.identity.roles import RoleDirectory
from domain.server.rbac import Permission, Principal, Role, authorize

__all__ = ["ListRoles"]


class ListRoles:
    def __init__(self, *, roles: RoleDirectory) -> None:
        self._roles = roles

    def list(self, principal: Principal) -> tuple[Role, ...]:
        """Built-in roles first, then the configured ones, in catalog order."""
        authorize(principal, Permission.WORKFLOW_READ)
        return tuple(self._roles.catalog.values())
