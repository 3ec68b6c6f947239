"""Poll: the registry update, scope validation, the version gate, the jobs handed out
within limits and the preflight budget, and the long-poll hold."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.server.agent_protocol.poll import REGISTRY_REFRESH_SECS, PollReply
from application.server.ports.work.explain_jobs import PreflightJobRecord
from domain.server.agent_registry import AgentRecord
from domain.server.errors import Forbidden, Validation
from domain.shared.jobs import ActiveJobStatus, AgentStatus
from domain.shared.operations import Operation
from domain.shared.versions import version_lt
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    PROD,
    SERVER_VERSION,
    STAGING,
    T0,
    ServerHarness,
    build_harness,
    default_settings,
    poll_request,
    until,
)


def test_first_poll_registers_the_agent_once(server: ServerHarness) -> None:
    server.poll(agent_build="1.2.3")
    server.poll()
    assert server.audit_types().count("agent.registered") == 1
    with server.store.read() as session:
        (row,) = session.work.subject_agents("agent")
    assert row.record.scopes == (PROD,)
    assert row.record.agent_id == ""  # it sent none, as dbward 0.2 agents do
    assert row.token_id == "tok-agent"


def test_agents_sharing_a_token_register_and_keep_their_own_rows(
    server: ServerHarness,
) -> None:
    server.poll(agent_id="replica-a", scopes=(("app", "production"),))
    server.poll(agent_id="replica-b", scopes=(("app", "staging"),))
    server.poll(agent_id="replica-a", scopes=(("app", "production"),))

    assert server.audit_types().count("agent.registered") == 2
    with server.store.read() as session:
        rows = session.work.subject_agents("agent")
    assert [(row.record.agent_id, row.record.scopes) for row in rows] == [
        ("replica-a", (PROD,)),
        ("replica-b", (STAGING,)),
    ]


def _row(server: ServerHarness) -> AgentRecord:
    with server.store.read() as session:
        (row,) = session.work.subject_agents("agent")
    return row.record


def _status(in_flight: int, max_concurrent: int = 4) -> AgentStatus:
    return AgentStatus(
        in_flight=in_flight,
        in_flight_preflight=0,
        max_concurrent=max_concurrent,
        draining=False,
        uptime_secs=5,
    )


def test_polls_that_change_only_the_load_rewrite_the_row_every_few_seconds(
    server: ServerHarness,
) -> None:
    server.poll(status=_status(0))
    first_seen = _row(server).last_seen_at
    server.clock.advance(1)
    server.poll(status=_status(1))
    assert _row(server).last_seen_at == first_seen
    assert _row(server).in_flight == 0  # not yet rewritten: only the load changed

    server.clock.advance(REGISTRY_REFRESH_SECS)
    server.poll(status=_status(1))
    assert _row(server).last_seen_at == T0 + timedelta(seconds=1 + REGISTRY_REFRESH_SECS)
    assert _row(server).in_flight == 1


@pytest.mark.parametrize(
    "change",
    [
        {"scopes": (("app", "production"), ("app", "staging"))},
        {"status": _status(4)},  # saturated
        {"status": replace(_status(0), draining=True)},
        {"agent_build": "9.9.9"},
        {"operations": (Operation.EXECUTE_SELECT,)},
    ],
)
def test_a_poll_that_changes_what_the_server_acts_on_rewrites_the_row_at_once(
    server: ServerHarness, change: dict[str, Any]
) -> None:
    server.poll(status=_status(0))
    server.clock.advance(1)
    server.poll(**{"status": _status(0), **change})
    assert _row(server).last_seen_at == T0 + timedelta(seconds=1)


def test_a_poll_leaves_out_the_jobs_the_agent_says_it_is_running(
    server: ServerHarness,
) -> None:
    first, second = server.create(detail="SELECT 1"), server.create(detail="SELECT 2")
    running = replace(
        _status(1),
        active_jobs=(
            ActiveJobStatus(request_id=first, operation="execute_select", elapsed_secs=0),
        ),
    )
    reply = server.poll(status=running, limit=1)
    assert [job.id for job in reply.jobs] == [second]
    server.claim(second)
    assert server.poll(status=running, limit=1).jobs == ()  # only its own is dispatched


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ((("*", "production"),), "wildcard '*' is not allowed in scopes"),
        ((("App", "production"),), "invalid database in scope: App"),
        ((("app", "9x"),), "invalid environment in scope: 9x"),
    ],
)
def test_poll_scope_validation(
    server: ServerHarness, scopes: tuple[tuple[str, str], ...], message: str
) -> None:
    with pytest.raises(Validation) as caught:
        server.poll(scopes=scopes)
    assert caught.value.message == message


def test_poll_returns_dispatched_jobs_by_scope_operation_and_limit(
    server: ServerHarness,
) -> None:
    ids = []
    for n in range(3):
        ids.append(server.create(detail=f"SELECT {n}"))
        server.clock.advance(1)  # oldest first
    dml = server.create(detail="UPDATE t SET a = 1 WHERE id = 1")
    server.create(environment="staging")  # pending: never offered
    reply = server.poll()
    assert [job.id for job in reply.jobs] == [*ids, dml]
    assert reply.server_version == SERVER_VERSION
    assert reply.min_agent_version == "0.2.0"
    assert reply.upgrade_required is False and reply.wait_ms is None
    only_selects = server.poll(operations=(Operation.EXECUTE_SELECT,), limit=2)
    assert [job.id for job in only_selects.jobs] == ids[:2]
    assert len(server.poll(limit=50).jobs) == 4  # capped at 20, not refused
    assert server.poll(scopes=(("app", "staging"),)).jobs == ()


def test_version_gate_uses_the_configured_minimum(tmp_path: Path) -> None:
    harness = build_harness(tmp_path, default_settings(tmp_path, min_agent_version="0.3.0"))
    try:
        harness.create()
        old = harness.poll(agent_version="0.2.9")
        assert old.upgrade_required is True and old.jobs == ()
        assert len(harness.poll(agent_version="0.3.0").jobs) == 1
        assert len(harness.poll(agent_version="").jobs) == 1  # no version: no gate
        # A release candidate is older than its release, newer than the one before.
        assert harness.poll(agent_version="0.3.0-rc1").upgrade_required is True
        assert harness.poll(agent_version="0.3.1-rc1").upgrade_required is False
    finally:
        harness.close()
    # The gate compares by the one version rule the agent uses too.
    assert version_lt("0.2.0", "0.2.1")
    assert not version_lt("0.10.0", "0.9.9")
    assert version_lt("0.2.0-rc1", "0.2.0")
    assert not version_lt("0.1", "0.1.0")  # a missing component counts as 0


def test_draining_server_poll_answers_empty(server: ServerHarness) -> None:
    server.create()
    server.draining.set()
    reply = server.poll()
    assert reply.draining is True


def test_preflight_jobs_are_claimed_within_the_budget(server: ServerHarness) -> None:
    with server.store.write() as session:
        for n in range(3):
            session.work.insert_preflight_job(
                PreflightJobRecord(
                    id=f"pf-{n}",
                    requester="alice",
                    database="app",
                    environment="production",
                    sql=f"SELECT {n}",
                    expires_at=T0 + timedelta(seconds=10),
                    created_at=T0 + timedelta(microseconds=n),
                )
            )
    server.create()  # one dispatched job takes one of the two slots
    reply = server.poll()
    assert len(reply.jobs) == 1
    assert [job.id for job in reply.preflight_jobs] == ["pf-0"]
    token = reply.preflight_jobs[0].claim_token
    assert token


def test_long_poll_wakes_on_dispatch(server: ServerHarness) -> None:
    async def scenario() -> tuple[PollReply, float]:
        loop = asyncio.get_running_loop()
        poll = asyncio.create_task(
            server.agents.poll_for_work.poll(
                AGENT, poll_request((("app", "production"),), wait_ms=20_000, limit=1)
            )
        )
        await until(lambda: server.notifier.waiting > 0)
        started = loop.time()
        await asyncio.to_thread(server.create)
        reply = await poll
        return reply, loop.time() - started

    reply, latency = asyncio.run(scenario())
    assert len(reply.jobs) == 1
    assert reply.wait_ms is not None and reply.wait_ms < 20_000
    assert latency < 1.0


def test_empty_long_poll_echoes_the_hold(server: ServerHarness) -> None:
    reply = server.poll(wait_ms=150)
    assert reply.jobs == ()
    assert reply.wait_ms is not None and 150 <= reply.wait_ms < 2000


def test_non_agents_cannot_poll(server: ServerHarness) -> None:
    with pytest.raises(Forbidden):
        server.poll(ADMIN)
