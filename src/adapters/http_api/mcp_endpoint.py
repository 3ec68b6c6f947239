"""`/mcp` on the API (docs/mcp.md §2.2): the MCP endpoint behind the API's own token check.

Before any MCP message is read, the bearer token is checked by `current_principal`, the
dependency every API route uses: a missing, unknown, expired or revoked token is the API's
401, an agent token the API's 403, each in the API's error envelope and audited as the API
audits them. The tools then call the API with the same token, which authorizes each call.

The MCP session manager is built and started on the first `/mcp` call, not with the
server: importing the MCP SDK is most of a second, paid on every server start by
deployments that never use `/mcp` otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from fastapi import FastAPI, Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http_api.auth import current_principal
from adapters.http_api.errors import domain_envelope
from domain.server.errors import ServerDomainError

__all__ = ["MCP_PATH", "McpSessions", "StartedOnFirstCall", "mount_mcp"]

MCP_PATH = "/mcp"


class McpSessions(Protocol):
    """What `/mcp` needs of the MCP SDK's session manager."""

    def run(self) -> AbstractAsyncContextManager[None]: ...

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class StartedOnFirstCall:
    """An ASGI app serving `/mcp` with sessions built by `build` on the first call.

    `build` runs on a worker thread (it imports the SDK); the sessions then run in a task
    of their own for the rest of the app's life, stopped by `close` from the lifespan.
    """

    def __init__(self, build: Callable[[], McpSessions]) -> None:
        self._build = build
        self._sessions: McpSessions | None = None
        self._starting = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sessions = self._sessions or await self._start()
        await sessions.handle_request(scope, receive, send)

    async def _start(self) -> McpSessions:
        async with self._starting:
            if self._sessions is None:
                sessions = await asyncio.to_thread(self._build)
                started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._task = asyncio.create_task(self._serve(sessions, started))
                await started
                self._sessions = sessions
            return self._sessions

    async def _serve(self, sessions: McpSessions, started: asyncio.Future[None]) -> None:
        try:
            async with sessions.run():
                started.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    async def close(self) -> None:
        """Stops the sessions if a call ever started them."""
        self._stop.set()
        if self._task is not None:
            await self._task


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
