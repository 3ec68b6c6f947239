"""Who is calling: the bearer token becomes a Principal, and agent tokens stay on agent paths.

The token check itself is the application's `authenticate(authorization_header)` (it reads
the store), installed on `app.state.authenticate` by the composition root, so routes only
declare `Depends(current_principal)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fastapi import Request

from domain.server.channels import parse_channel
from domain.server.errors import Forbidden
from domain.server.rbac import Principal

#: Names the channel a call came through (docs/mcp.md); absent for the plain API.
CHANNEL_HEADER = "x-dbward-channel"

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
    channel = request.headers.get(CHANNEL_HEADER)
    if channel is not None:
        # The header only narrows what a call may do and labels its audit events.
        principal = replace(principal, channel=parse_channel(channel))
    return principal


def current_agent(request: Request) -> Principal:
    """For agent endpoints: only agent tokens."""
    principal = current_principal(request)
    if not principal.is_agent:
        raise PublicForbidden("agent token required")
    return principal
