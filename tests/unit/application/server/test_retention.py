"""The retention purge (docs/server.md §7.2): result content after the result policy's
retention (then 410, the summary kept), whole requests after `request_ttl_days` (their
audit events kept), agents silent for `agent_ttl_days` (§7.3), each purge audited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from application.server.ports.webhooks import DeliveryOutcome, WebhookDelivery
from application.server.retention import RetentionSweeps
from application.server.settings import RetentionSettings, SweepSettings
from application.server.sweeps import SweepRunner
from domain.server.approvals import Approval, ApprovalAction
from domain.server.errors import Gone, NotFound
from domain.server.execution_policies import ResultPolicy
from domain.server.request_lifecycle import RequestStatus
from domain.server.webhooks import DeliveryStatus
from tests.unit.application.server.test_requests_and_claims import (
    AGENT,
    ALICE,
    MutableClock,
    ServerHarness,
    build_harness,
    default_settings,
    ok,
)

DAY = 86400


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHarness]:
    settings = default_settings(
        tmp_path,
        result_policies=(ResultPolicy(environment="production", retention_days=2),),
        retention=RetentionSettings(request_ttl_days=10),
    )
    harness = build_harness(tmp_path, settings)
    yield harness
    harness.close()


def purger(server: ServerHarness) -> RetentionSweeps:
    return RetentionSweeps(
        store=server.store, settings=server.settings, result_store=server.results
    )


def executed(server: ServerHarness, **fields: Any) -> str:
    request_id = server.create(**fields)
    server.poll()
    server.agents.submit_result.submit(AGENT, server.claim(request_id).execution_id, ok())
    return request_id


def stored_key(server: ServerHarness, request_id: str) -> str:
    with server.store.read() as session:
        summary = session.work.latest_result(request_id)
    assert summary is not None and summary.storage_key
    return summary.storage_key


def later(server: ServerHarness, seconds: float) -> datetime:
    server.clock.advance(seconds)
    return server.clock.now()


# --- result content ---------------------------------------------------------------------------


def test_result_content_is_purged_after_its_retention_then_gone(server: ServerHarness) -> None:
    request_id = executed(server)
    key = stored_key(server, request_id)
    assert server.results.get(key) is not None

    assert purger(server).purge_results(later(server, 2 * DAY - 60)) == 0
    assert server.requests.get_result_content.get(ALICE, request_id).success
    assert purger(server).purge_results(later(server, 120)) == 1

    assert server.results.get(key) is None
    assert not any((server.results.root_dir / request_id).parent.glob(f"{request_id}*"))
    with pytest.raises(Gone, match="purged after its retention period \\(2 days\\)"):
        server.requests.get_result_content.get(ALICE, request_id)
    with pytest.raises(Gone, match="purged"):
        asyncio.run(server.requests.wait_for_result.wait(ALICE, request_id))
    # The request and its outcome stay.
    details = server.requests.get_request.get(ALICE, request_id)
    assert details.record.status is RequestStatus.EXECUTED
    with server.store.read() as session:
        summary = session.work.latest_result(request_id)
    assert summary is not None and summary.success and summary.purged
    (history,) = server.requests.list_executions.list(ALICE, request_id)
    assert not history.has_stored_result
    assert purger(server).purge_results(later(server, DAY)) == 0  # once


def test_each_result_purge_is_audited(server: ServerHarness) -> None:
    request_id = executed(server)
    purger(server).purge_results(later(server, 3 * DAY))

    (event,) = server.audit_rows("result.purged")
    assert (event["request_id"], event["actor_type"], event["resource_type"]) == (
        request_id,
        "system",
        "result",
    )
    assert event["resource_id"].startswith("res-")
    assert '"retention_days":2' in event["metadata_json"]
    assert server.audit_types(request_id)[-1] == "result.purged"


def test_only_results_past_their_own_retention_are_purged(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path,
        result_policies=(ResultPolicy(environment="production", retention_days=5),),
        retention=RetentionSettings(result_ttl_days=1),
    )
    server = build_harness(tmp_path, settings)
    try:
        production = executed(server)
        assert purger(server).purge_results(later(server, 2 * DAY)) == 0
        assert server.results.get(stored_key(server, production)) is not None
        assert purger(server).purge_results(later(server, 4 * DAY)) == 1
    finally:
        server.close()


def test_a_result_with_no_stored_content_has_nothing_to_purge(server: ServerHarness) -> None:
    request_id = executed(server, no_store=True)
    assert purger(server).purge_results(later(server, 30 * DAY)) == 0
    with pytest.raises(Gone, match="not stored"):
        server.requests.get_result_content.get(ALICE, request_id)


# --- requests ---------------------------------------------------------------------------------


def test_a_final_request_is_purged_after_request_ttl_days(server: ServerHarness) -> None:
    request_id = executed(server)
    key = stored_key(server, request_id)
    with server.store.write() as session:
        session.work.insert_approval(
            Approval(
                id="ap-1",
                request_id=request_id,
                action=ApprovalAction.APPROVE,
                actor_id="dana",
                step_index=0,
                matched_selector="role:approver",
                comment=None,
                created_at=server.clock.now(),
            )
        )
    events_before = server.audit_types(request_id)

    assert purger(server).purge_requests(later(server, 10 * DAY - 60)) == 0
    assert purger(server).purge_requests(later(server, 120)) == 1

    with pytest.raises(NotFound):
        server.requests.get_request.get(ALICE, request_id)
    with pytest.raises(NotFound):
        server.requests.get_result_content.get(ALICE, request_id)
    assert server.results.get(key) is None
    assert not (server.results.root_dir / request_id).exists()
    with server.store.read() as session:
        assert session.work.approvals_for_request(request_id) == []
        assert session.work.results_of_request(request_id) == []
    # Its audit events stay, and the purge is one more.
    assert server.audit_types(request_id) == [*events_before, "request.purged"]
    (event,) = server.audit_rows("request.purged")
    assert (event["actor_id"], event["event_category"]) == ("system", "request")
    assert '"status":"executed"' in event["metadata_json"]
    assert '"stored_results_deleted":1' in event["metadata_json"]


def test_requests_still_moving_or_recently_changed_are_kept(server: ServerHarness) -> None:
    dispatched = server.create()
    pending = server.create(environment="staging")
    cancelled = server.create()
    server.requests.cancel_request.cancel(ALICE, cancelled)
    later(server, 5 * DAY)
    recent = server.create()
    server.requests.cancel_request.cancel(ALICE, recent)

    assert purger(server).purge_requests(later(server, 5 * DAY + 60)) == 1
    assert server.audit_rows("request.purged")[0]["request_id"] == cancelled
    for kept in (dispatched, pending, recent):
        assert server.requests.get_request.get(ALICE, kept).record.id == kept


def test_request_ttl_days_is_the_configured_one(tmp_path: Path) -> None:
    settings = default_settings(tmp_path, retention=RetentionSettings(request_ttl_days=3))
    server = build_harness(tmp_path, settings)
    try:
        request_id = server.create()
        server.requests.cancel_request.cancel(ALICE, request_id)
        assert purger(server).purge_requests(later(server, 3 * DAY - 60)) == 0
        assert purger(server).purge_requests(later(server, 120)) == 1
    finally:
        server.close()


# --- schedule ---------------------------------------------------------------------------------


def test_the_purges_run_on_the_sweep_loop_every_record_purge_interval(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path,
        sweeps=SweepSettings(record_purge_interval_secs=7),
        retention=RetentionSettings(request_ttl_days=1),
    )
    clock = MutableClock()
    server = build_harness(tmp_path, settings, clock)
    try:
        purge = purger(server)
        assert [interval for interval, _ in purge.schedule] == [7.0] * 4
        request_id = server.create()
        server.requests.cancel_request.cancel(ALICE, request_id)
        clock.advance(2 * DAY)

        async def scenario() -> None:
            stop = asyncio.Event()
            runner = SweepRunner(server.sweeps, settings, clock, extra_jobs=purge.schedule)
            task = asyncio.create_task(runner.run(stop))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not server.audit_rows("request.purged"):
                assert loop.time() < deadline, "the runner never purged"
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(task, 5)

        asyncio.run(scenario())
    finally:
        server.close()


# --- webhook deliveries -----------------------------------------------------------------------


def test_finished_webhook_deliveries_are_purged_after_request_ttl_days(
    server: ServerHarness,
) -> None:
    now = server.clock.now()
    with server.store.write() as session:
        for name in ("sent", "waiting"):
            session.webhooks.add(
                WebhookDelivery(name, "ops", f"e-{name}", "request.created", "{}", now, now)
            )
        session.webhooks.claim_due(now, claim_until=now, claim_token="t", limit=1)
        done = DeliveryOutcome(DeliveryStatus.DELIVERED, 1, now, 200, None, now)
        assert session.webhooks.finish_attempt("sent", "t", done)

    assert purger(server).purge_webhook_deliveries(later(server, 10 * DAY - 60)) == 0
    assert purger(server).purge_webhook_deliveries(later(server, 120)) == 1
    with server.store.read() as session:
        assert [d.id for d in session.webhooks.list(None, limit=5, offset=0)] == ["waiting"]


# --- agents -----------------------------------------------------------------------------------


def registered(server: ServerHarness) -> list[str]:
    with server.store.read() as session:
        return [row.record.agent_id for row in session.work.list_agents()]


def test_an_agent_silent_for_agent_ttl_days_leaves_the_registry_and_may_come_back(
    tmp_path: Path,
) -> None:
    settings = default_settings(tmp_path, retention=RetentionSettings(agent_ttl_days=2))
    server = build_harness(tmp_path, settings)
    try:
        server.poll(agent_id="pod-old")
        later(server, DAY)
        server.poll(agent_id="pod-new")
        assert registered(server) == ["pod-new", "pod-old"]

        assert purger(server).purge_agents(later(server, DAY - 60)) == 0
        assert purger(server).purge_agents(later(server, 120)) == 1

        assert registered(server) == ["pod-new"]
        (event,) = server.audit_rows("agent.purged")
        assert (event["actor_id"], event["event_category"]) == ("system", "agent")
        assert '"agent_name":"pod-old"' in event["metadata_json"]
        assert '"scopes":["app/production"]' in event["metadata_json"]

        # Polling again is a first poll: registered again, audited again.
        server.poll(agent_id="pod-old")
        assert registered(server) == ["pod-new", "pod-old"]
        assert len(server.audit_rows("agent.registered")) == 3
    finally:
        server.close()
