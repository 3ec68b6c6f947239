"""`/mcp` on the API (docs/mcp.md §4): the MCP endpoint behind the API's own token check.

Before any MCP message is read, the bearer token is checked by `current_principal`, the
dependency every API route uses: a missing, unknown, expired or revoked token is the API's
401, an agent token the API's 403, each in the API's error envelope and audited as the API
audits them. The tools then call the API with the same token, which authorizes each call.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http_api.auth import current_principal
from adapters.http_api.errors import domain_envelope
from domain.server.errors import ServerDomainError

__all__ = ["MCP_PATH", "mount_mcp"]

MCP_PATH = "/mcp"


class _TokenGuard:
    """An ASGI app (not a function, so Starlette routes it as one) that authenticates first."""

    def __init__(self, endpoint: ASGIApp) -> None:
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await current_principal(Request(scope))
            except ServerDomainError as exc:
                await domain_envelope(exc)(scope, receive, send)
                return
        await self._endpoint(scope, receive, send)


def mount_mcp(app: FastAPI, endpoint: ASGIApp) -> None:
    route = Route(MCP_PATH, endpoint=_TokenGuard(endpoint), include_in_schema=False)
    app.router.routes.append(route)
