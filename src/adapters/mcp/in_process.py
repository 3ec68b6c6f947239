"""The server's `/mcp`: the tools call the server's own API in-process (docs/mcp.md §2.2).

Each tool call gets an `ApiClient` whose transport hands the HTTP request to the same
FastAPI app, on the server's event loop, with the bearer token of the MCP request the call
arrived on. So `/mcp` authenticates, authorizes, validates, reviews and audits exactly as
the API does, because it *is* the API: no rule is written twice, and an assistant's token
can do through MCP only what it could do with curl (and less: the channel header, set here
and out of the assistant's reach, refuses break-glass).

Streamable HTTP runs stateless with JSON answers: every POST stands alone, so replicas
behind a load balancer need no sticky sessions, and no state outlives a call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio.from_thread
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from adapters.cli_client.api_client import ApiClient
from adapters.mcp.server import OpenApi
from adapters.mcp.tools import DbwardApi

__all__ = ["InProcessTransport", "in_process_api", "streamable_http_sessions"]

#: The base URL of in-process calls; never resolved, only the path reaches the app.
_IN_PROCESS_URL = "http://dbward.in-process"
_NO_PEER = ("127.0.0.1", 0)


class InProcessTransport(httpx.BaseTransport):
    """A blocking httpx transport that serves each request with an ASGI app on the event
    loop of the worker thread it is called from (an `anyio.to_thread` worker)."""

    def __init__(self, app: ASGIApp, client: tuple[str, int]) -> None:
        self._asgi = httpx.ASGITransport(app=app, client=client)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()

        async def serve() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers, content=content, request=request
            )

        return anyio.from_thread.run(serve)


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def in_process_api(app: ASGIApp, *, user_agent: str) -> OpenApi:
    """Opens, for each call, an API client carrying the MCP request's own bearer token and
    peer address (so audit events name the assistant's address, not the loopback)."""

    @contextmanager
    def open_api(ctx: Context) -> Iterator[DbwardApi]:
        request = ctx.request_context.request
        headers = getattr(request, "headers", {})
        peer = getattr(request, "client", None)
        client = (peer.host, peer.port) if peer is not None else _NO_PEER
        with ApiClient(
            _IN_PROCESS_URL,
            _bearer(headers.get("authorization")),
            transport=InProcessTransport(app, client),
            user_agent=user_agent,
            channel="mcp",
        ) as api:
            yield api

    return open_api


def streamable_http_sessions(server: MCPServer) -> StreamableHTTPSessionManager:
    """The session manager whose `handle_request` serves `/mcp`; run it for the app's life.

    DNS-rebinding protection (Host/Origin allow-lists) is off: it guards servers that trust
    the browser's network position, and `/mcp` trusts only the bearer token, which a page
    on another origin cannot read.
    """
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server.session_manager
