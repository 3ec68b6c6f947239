"""Pure ASGI middleware (no BaseHTTPMiddleware: it hides client disconnects from long-polls,
Kludex/starlette#2094): the version header on every response, request body limits and
API metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from application.server.ports.metrics import ServerMetrics


class VersionHeader:
    """Adds `x-dbward-version: <server version>` to every HTTP response."""

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.header = (b"x-dbward-version", version.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], self.header]
            await send(message)

        await self.app(scope, receive, send_with_version)


class _TooLargeError(HTTPException):
    """Raised from `receive` once a (chunked) body passes the limit.

    An `HTTPException` on purpose: FastAPI re-raises those from its body reading (any
    other exception becomes its generic 400 "There was an error parsing the body"), so
    the app's handler answers 413 `payload.too_large`.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"request body exceeds {limit} bytes"


class BodyLimit:
    """Refuses request bodies over the limit for their path with a 413 JSON error.

    Checks `Content-Length` first, then counts streamed bytes, so a chunked upload cannot
    get past it either.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_too_large(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLargeError:
            if not started:
                await _send_too_large(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_too_large(send: Send, limit: int) -> None:
    body: dict[str, Any] = {
        "error": _too_large_message(limit),
        "code": "payload.too_large",
        "hint": None,
    }
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


#: The route label of requests no route matched (404s, 405s): one label, whatever the path.
UNMATCHED_ROUTE = "unmatched"


class ApiMetrics:
    """Reports each HTTP request's duration and status by route *template* (`/api/requests/
    {request_id}`), never the raw path, so the label set stays bounded."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            # The router wrote the matched route into this same scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            self.metrics.api_request(scope["method"], route, status, time.perf_counter() - started)
