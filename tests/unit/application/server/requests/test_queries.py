"""Reading requests: one request (and `?wait=` for a change), the list, visibility."""

from __future__ import annotations

import asyncio

import pytest

from domain.server.errors import Forbidden, NotFound, Validation
from domain.server.request_lifecycle import RequestStatus
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    ALICE,
    BOB,
    OPERATOR,
    ServerHarness,
    ok,
    until,
)


def test_get_shows_queue_hint_and_respects_visibility(server: ServerHarness) -> None:
    get = server.requests.get_request.get
    request_id = server.create()
    details = get(ALICE, request_id)
    assert details.queue_hint is not None and details.queue_hint.value == "no_agents"
    server.poll()
    assert get(ALICE, request_id).queue_hint is None
    with pytest.raises(Forbidden):
        get(BOB, request_id)
    assert get(ADMIN, request_id).record.id == request_id  # view:any
    assert get(OPERATOR, request_id).record.id == request_id
    with pytest.raises(NotFound):
        get(ALICE, "nope")


def test_list_shows_own_requests_or_everyones_with_view_any(server: ServerHarness) -> None:
    list_requests = server.requests.list_requests.list
    mine = server.create(ALICE)
    theirs = server.create(BOB)
    assert [r.id for r in list_requests(ALICE).requests] == [mine]
    assert {r.id for r in list_requests(ADMIN).requests} == {mine, theirs}
    assert [r.id for r in list_requests(ADMIN, user="bob").requests] == [theirs]
    assert list_requests(ALICE, user="bob").requests == ()
    assert list_requests(ADMIN, status="dispatched").total == 2
    with pytest.raises(Validation):
        list_requests(ADMIN, status="bogus")


def test_get_waiting_returns_on_change_not_on_timeout(server: ServerHarness) -> None:
    request_id = server.create()
    get_request, cancel_request = server.requests.get_request, server.requests.cancel_request

    async def scenario() -> tuple[RequestStatus, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(get_request.get_waiting(ALICE, request_id, 30))
        await until(lambda: server.notifier.waiting > 0)
        await asyncio.to_thread(cancel_request.cancel, ALICE, request_id, None)
        details = await waiting
        return details.record.status, loop.time() - started

    status, elapsed = asyncio.run(scenario())
    assert status is RequestStatus.CANCELLED
    assert elapsed < 5


def test_get_waiting_on_a_finished_request_answers_at_once(server: ServerHarness) -> None:
    """`?wait=30` on a request in a final status: nothing will change it, so no wait."""
    request_id = server.create()
    server.requests.cancel_request.cancel(ALICE, request_id)
    get_request = server.requests.get_request

    async def scenario() -> tuple[RequestStatus, float, int]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        details = await get_request.get_waiting(ALICE, request_id, 30)
        return details.record.status, loop.time() - started, server.notifier.waiting

    status, elapsed, still_waiting = asyncio.run(scenario())
    assert status is RequestStatus.CANCELLED
    assert elapsed < 2
    assert still_waiting == 0


def test_get_waiting_answers_as_soon_as_the_request_finishes(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    job = server.claim(request_id)
    get_request = server.requests.get_request

    async def scenario() -> tuple[RequestStatus, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(get_request.get_waiting(ALICE, request_id, 30))
        await until(lambda: server.notifier.waiting > 0)
        await asyncio.to_thread(server.agents.submit_result.submit, AGENT, job.execution_id, ok())
        details = await waiting
        return details.record.status, loop.time() - started

    status, elapsed = asyncio.run(scenario())
    assert status is RequestStatus.EXECUTED
    assert elapsed < 5
