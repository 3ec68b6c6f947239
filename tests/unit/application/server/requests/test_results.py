"""A request's result: who may read it, what the stream answers, and why content is gone."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.server.ports.result_relay import ResultRelay
from application.server.ports.services import request_topic, result_topic
from application.server.requests.results import GetResultContent
from domain.server.errors import Forbidden, Gone, NotFound
from domain.server.execution_policies import DeliveryMode, ResultPolicy
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    ALICE,
    APPROVER,
    BOB,
    ServerHarness,
    build_harness,
    default_settings,
    ok,
)


def test_result_views_follow_rbac(server: ServerHarness) -> None:
    request_id = server.create(share_with=("user:bob",))
    other = server.create()
    server.poll()
    for rid in (request_id, other):
        server.agents.submit_result.submit(AGENT, server.claim(rid).execution_id, ok())
    assert server.requests.get_result_content.get(BOB, request_id).success
    with pytest.raises(Forbidden):
        server.requests.get_result_content.get(BOB, other)
    assert server.requests.get_result_content.get(ADMIN, other).success  # result.view:any
    with pytest.raises(Forbidden):
        server.requests.get_result_content.get(APPROVER, other)


def test_result_stream_of_a_cancelled_request(server: ServerHarness) -> None:
    request_id = server.create()
    server.requests.cancel_request.cancel(ALICE, request_id)
    envelope = asyncio.run(server.requests.wait_for_result.wait(ALICE, request_id))
    assert envelope is not None
    assert (envelope.success, envelope.error_message) == (False, "request cancelled")
    with pytest.raises(NotFound):
        server.requests.get_result_content.get(ALICE, request_id)


def test_only_what_can_end_a_result_stream_wakes_it(
    server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics: list[str] = []
    notify = server.notifier.notify

    def recorded(topic: str, job: Any = None) -> None:
        topics.append(topic)
        notify(topic, job)

    monkeypatch.setattr(server.notifier, "notify", recorded)
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    assert request_topic(request_id) in topics
    assert result_topic(request_id) not in topics  # a claim cannot end the stream

    async def wait_for_the_result() -> float:
        loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(server.requests.wait_for_result.wait(ALICE, request_id))

        async def armed() -> None:
            while server.notifier.waiting == 0:
                await asyncio.sleep(0.001)

        # Armed once the stream's first look found no result.
        await asyncio.wait_for(armed(), 5)
        submitted = loop.time()
        await asyncio.to_thread(server.agents.submit_result.submit, AGENT, claim.execution_id, ok())
        envelope = await waiting
        assert envelope is not None and envelope.success
        return loop.time() - submitted

    # Woken by the result's notification, not found by the once-a-second recheck.
    assert asyncio.run(wait_for_the_result()) < 0.5
    cancelled = server.create()
    server.requests.cancel_request.cancel(ALICE, cancelled)
    assert result_topic(cancelled) in topics


class ForgetfulRelay:
    """A result relay whose bodies are always gone by the time anyone asks."""

    def put(self, execution_id: str, result_data: str) -> None:
        pass

    def get(self, execution_id: str) -> str | None:
        return None


def finished(server: ServerHarness, **fields: Any) -> tuple[str, str]:
    """A request that ran and succeeded: (request id, execution id)."""
    request_id = server.create(**fields)
    server.poll()
    execution_id = server.claim(request_id).execution_id
    server.agents.submit_result.submit(AGENT, execution_id, ok())
    return request_id, execution_id


def test_stream_only_content_is_read_from_the_relay_until_it_lets_go(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path, result_policies=(ResultPolicy(delivery_mode=DeliveryMode.STREAM),)
    )
    harness = build_harness(tmp_path, settings)
    try:
        request_id, _ = finished(harness)
        envelope = harness.requests.get_result_content.get(ALICE, request_id)
        assert envelope.result_data["rows"] == [{"x": 1}]
        forgetful: ResultRelay = ForgetfulRelay()
        relay_let_go = GetResultContent(
            store=harness.store,
            settings=settings,
            clock=harness.clock,
            result_store=harness.results,
            result_relay=forgetful,
        )
        with pytest.raises(Gone, match="delivered by stream only and is not stored"):
            relay_let_go.get(ALICE, request_id)
    finally:
        harness.close()


def test_a_no_store_result_reaches_the_waiting_client_and_is_never_stored(
    server: ServerHarness,
) -> None:
    request_id, _ = finished(server, no_store=True)
    envelope = asyncio.run(server.requests.wait_for_result.wait(ALICE, request_id))
    assert envelope is not None and envelope.result_data["rows"] == [{"x": 1}]
    with pytest.raises(Gone, match="the results of this request are not stored"):
        server.requests.get_result_content.get(ALICE, request_id)


def test_content_of_one_execution_and_of_none_that_belongs(server: ServerHarness) -> None:
    content = server.requests.get_result_content
    request_id, execution_id = finished(server)
    _, other_execution = finished(server)
    assert content.get(ALICE, request_id, execution_id).execution_id == execution_id
    for wrong in ("missing", other_execution):
        with pytest.raises(NotFound, match="execution not found"):
            content.get(ALICE, request_id, wrong)


def test_a_running_request_has_no_content_yet(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    server.claim(request_id)
    with pytest.raises(NotFound, match="no result: the request is running"):
        server.requests.get_result_content.get(ALICE, request_id)


def test_stored_content_expires_with_the_retention(server: ServerHarness) -> None:
    request_id, _ = finished(server)
    server.clock.advance(timedelta(days=30).total_seconds() + 1)
    with pytest.raises(Gone, match="the stored result has expired"):
        server.requests.get_result_content.get(ALICE, request_id)


def test_stored_content_that_went_missing_is_gone_never_a_success_without_rows(
    server: ServerHarness,
) -> None:
    request_id, _ = finished(server)
    for stored in [p for p in server.results.root_dir.rglob("*") if p.is_file()]:
        stored.unlink()
    with pytest.raises(Gone, match="content is missing from the result storage"):
        server.requests.get_result_content.get(ALICE, request_id)
    with pytest.raises(Gone, match="content is missing from the result storage"):
        asyncio.run(server.requests.wait_for_result.wait(ALICE, request_id))
