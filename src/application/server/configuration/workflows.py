"""`GET /api/workflows` (permission `workflow.read`): the configured approval workflows."""

from __future__ import annotations

from application.server.settings import ServerSettings
from domain.server.rbac import Permission, Principal, authorize
from domain.server.workflows import Workflow

__all__ = ["ListWorkflows"]


class ListWorkflows:
    def __init__(self, *, settings: ServerSettings) -> None:
        self._settings = settings

    def list(self, principal: Principal) -> tuple[Workflow, ...]:
        """In configuration order: matching (§2.2) does not depend on it."""
        authorize(principal, Permission.WORKFLOW_READ)
        return self._settings.workflows
