"""Who is calling: the bearer token becomes a Principal, and agent tokens stay on agent paths.

The token check itself is the application's `authenticate(authorization_header)` (it reads
the store), installed on `app.state.authenticate` by the composition root, so routes only
declare `Depends(current_principal)`. The dependency is `async`: a token the application
has just resolved (`app.state.authenticate_cached`, memory only) costs no store read; any
other goes to `authenticate`, which may read the store, as short store work
(`app.state.store_calls`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fastapi import Request

from application.server.ports.store import StoreCalls
from domain.server.channels import parse_channel
from domain.server.errors import Forbidden
from domain.server.rbac import Principal

#: Names the channel a call came through (docs/mcp.md); absent for the plain API.
CHANNEL_HEADER = "x-dbward-channel"

#: `(Authorization header or None) -> Principal`; raises `Unauthenticated`.
Authenticate = Callable[[str | None], Principal]
#: `(Authorization header or None) -> Principal or None`: answers from memory, never
#: blocks and never raises; None sends the call to `Authenticate`.
AuthenticateCached = Callable[[str | None], Principal | None]


def no_cache(_authorization: str | None) -> None:
    """The `AuthenticateCached` of an app without a cache: every call authenticates."""
    return None


class PublicForbidden(Forbidden):
    """A refusal whose reason the protocol spells out to the caller (not hidden)."""

    public = True


def _agent_path(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/agent/") or (path == "/api/public-key" and request.method == "GET")


async def current_principal(request: Request) -> Principal:
    authorization = request.headers.get("authorization")
    cached: AuthenticateCached = request.app.state.authenticate_cached
    principal = cached(authorization)
    if principal is None:
        authenticate: Authenticate = request.app.state.authenticate
        calls: StoreCalls = request.app.state.store_calls
        principal = await calls.short(authenticate, authorization)
    if principal.is_agent and not _agent_path(request):
        raise PublicForbidden("agent tokens cannot access this endpoint")
    channel = request.headers.get(CHANNEL_HEADER)
    if channel is not None:
        # The header only narrows what a call may do and labels its audit events.
        principal = replace(principal, channel=parse_channel(channel))
    return principal


async def current_agent(request: Request) -> Principal:
    """For agent endpoints: only agent tokens."""
    principal = await current_principal(request)
    if not principal.is_agent:
        raise PublicForbidden("agent token required")
    return principal
