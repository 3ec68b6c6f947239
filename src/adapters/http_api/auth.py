"""Who is calling: the bearer token becomes a Principal, and agent tokens stay on agent paths.

The token check itself is the application's `authenticate(authorization_header)` (it reads
the store), installed on `app.state.authenticate` by the composition root, so routes only
declare `Depends(current_principal)`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from domain.server.errors import Forbidden
from domain.server.rbac import Principal

#: `(Authorization header or None) -> Principal`; raises `Unauthenticated`.
Authenticate = Callable[[str | None], Principal]


class PublicForbidden(Forbidden):
    """A refusal whose reason the protocol spells out to the caller (not hidden)."""

    public = True


def _agent_path(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/agent/") or (path == "/api/public-key" and request.method == "GET")


def current_principal(request: Request) -> Principal:
    authenticate: Authenticate = request.app.state.authenticate
    principal = authenticate(request.headers.get("authorization"))
    if principal.is_agent and not _agent_path(request):
        raise PublicForbidden("agent tokens cannot access this endpoint")
    return principal


def current_agent(request: Request) -> Principal:
    """For agent endpoints: only agent tokens."""
    principal = current_principal(request)
    if not principal.is_agent:
        raise PublicForbidden("agent token required")
    return principal
