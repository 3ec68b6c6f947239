"""`/mcp`'s session manager is built on the first call, once, and stopped with the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from starlette.types import Message, Receive, Scope, Send

from adapters.http_api.mcp_endpoint import McpSessions, StartedOnFirstCall


class RecordingSessions:
    def __init__(self) -> None:
        self.running = False
        self.stopped = False
        self.handled: list[str] = []

    def run(self) -> AbstractAsyncContextManager[None]:
        @asynccontextmanager
        async def running() -> AsyncIterator[None]:
            self.running = True
            try:
                yield
            finally:
                self.running = False
                self.stopped = True

        return running()

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.running, "a call was served before the sessions ran"
        self.handled.append(scope["path"])


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


def _scope(path: str) -> Scope:
    return {"type": "http", "path": path}


def test_nothing_is_built_until_the_first_call_and_close_is_then_a_no_op() -> None:
    builds: list[int] = []

    def build() -> McpSessions:
        builds.append(1)
        return RecordingSessions()

    endpoint = StartedOnFirstCall(build)
    asyncio.run(endpoint.close())
    assert builds == []


def test_concurrent_first_calls_build_once_and_close_stops_the_sessions() -> None:
    sessions = RecordingSessions()
    builds: list[int] = []

    def build() -> McpSessions:
        builds.append(1)
        return sessions

    async def scenario() -> None:
        endpoint = StartedOnFirstCall(build)
        await asyncio.gather(*(endpoint(_scope(f"/mcp/{n}"), _receive, _send) for n in range(5)))
        assert sessions.running
        await endpoint(_scope("/mcp/again"), _receive, _send)
        await endpoint.close()

    asyncio.run(scenario())
    assert builds == [1]
    assert sorted(sessions.handled) == [*(f"/mcp/{n}" for n in range(5)), "/mcp/again"]
    assert sessions.stopped and not sessions.running


def test_a_build_that_fails_fails_the_call_and_the_next_call_tries_again() -> None:
    attempts: list[int] = []
    sessions = RecordingSessions()

    def build() -> McpSessions:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("SDK missing")
        return sessions

    async def scenario() -> None:
        endpoint = StartedOnFirstCall(build)
        with pytest.raises(RuntimeError, match="SDK missing"):
            await endpoint(_scope("/mcp"), _receive, _send)
        await endpoint(_scope("/mcp"), _receive, _send)
        await endpoint.close()

    asyncio.run(scenario())
    assert len(attempts) == 2
    assert sessions.handled == ["/mcp"] and sessions.stopped
