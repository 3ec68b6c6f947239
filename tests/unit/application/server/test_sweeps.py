"""Background sweeps with a fake clock (docs/server.md §1.6, §7.2; §11 items 3 and 4).

Each sweep is a guarded update: it changes only what is still due when it runs, and
writes one audit event per change in the same transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from application.server.audit_maintenance import AuditMaintenance
from application.server.ports.work.executions import LEASE_EXPIRED_MESSAGE, ExecutionStatus
from application.server.ports.work.explain_jobs import (
    DryRunStatus,
    PreflightJobRecord,
    PreflightStatus,
)
from application.server.settings import SweepSettings
from application.server.sweeps import SweepReport, SweepRunner
from domain.server.request_lifecycle import RequestStatus
from tests.unit.application.server.test_requests_and_claims import (
    AGENT,
    ALICE,
    T0,
    MutableClock,
    ServerHarness,
    build_harness,
    default_settings,
    ok,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHarness]:
    harness = build_harness(tmp_path)
    yield harness
    harness.close()


def running(server: ServerHarness, lease: int | None = None) -> tuple[str, str]:
    request_id = server.create()
    server.poll()
    return request_id, server.claim(request_id, lease=lease).execution_id


# --- lease_reclaim -----------------------------------------------------------------------------


def test_expired_lease_loses_the_execution(server: ServerHarness) -> None:
    request_id, execution_id = running(server)  # 60 s lease
    server.clock.advance(60)
    assert server.sweeps.reclaim_leases(server.clock.now()) == 0  # not yet past it
    server.clock.advance(1)
    assert server.sweeps.run_once(server.clock.now()).leases_lost == 1
    assert server.status(request_id) is RequestStatus.EXECUTION_LOST
    with server.store.read() as session:
        execution = session.work.get_execution(execution_id)
    assert execution is not None
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error_message == LEASE_EXPIRED_MESSAGE
    event = server.audit_rows("execution.lost")[0]
    assert (event["actor_type"], event["event_category"], event["resource_id"]) == (
        "system",
        "agent",
        execution_id,
    )
    assert json.loads(event["metadata_json"])["agent_id"] == "agent"
    assert server.sweeps.reclaim_leases(server.clock.now()) == 0  # nothing twice


def test_heartbeats_keep_the_lease(server: ServerHarness) -> None:
    request_id, execution_id = running(server)
    for _ in range(5):
        server.clock.advance(50)
        assert server.agents.record_heartbeat.record(AGENT, execution_id) is False
        server.sweeps.run_once(server.clock.now())
    assert server.status(request_id) is RequestStatus.RUNNING


def test_requested_lease_is_honoured_by_the_sweep(server: ServerHarness) -> None:
    request_id, _ = running(server, lease=300)
    server.clock.advance(299)
    server.sweeps.run_once(server.clock.now())
    assert server.status(request_id) is RequestStatus.RUNNING
    server.clock.advance(2)
    server.sweeps.run_once(server.clock.now())
    assert server.status(request_id) is RequestStatus.EXECUTION_LOST


def test_a_cancelled_requests_lost_execution_only_fails_the_execution(
    server: ServerHarness,
) -> None:
    request_id, execution_id = running(server)
    server.requests.cancel_request.cancel(ALICE, request_id)
    server.clock.advance(61)
    assert server.sweeps.reclaim_leases(server.clock.now()) == 0
    assert server.status(request_id) is RequestStatus.CANCELLED
    with server.store.read() as session:
        execution = session.work.get_execution(execution_id)
    assert execution is not None and execution.status is ExecutionStatus.FAILED
    assert "execution.lost" not in server.audit_types()


def test_a_result_that_beats_the_sweep_wins(server: ServerHarness) -> None:
    request_id, execution_id = running(server)
    server.clock.advance(61)
    server.agents.submit_result.submit(AGENT, execution_id, ok())
    assert server.sweeps.reclaim_leases(server.clock.now()) == 0
    assert server.status(request_id) is RequestStatus.EXECUTED


# --- dispatch_timeout --------------------------------------------------------------------------


def test_dispatch_timeout_returns_an_auto_approved_request_to_auto_approved(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.clock.advance(299)
    assert server.sweeps.time_out_dispatches(server.clock.now()) == 0
    server.clock.advance(2)
    assert server.sweeps.run_once(server.clock.now()).dispatches_timed_out == 1
    with server.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None
    assert record.status is RequestStatus.AUTO_APPROVED
    assert record.pre_dispatch_status is None
    event = server.audit_rows("request.dispatch_timeout")[0]
    assert json.loads(event["metadata_json"]) == {"returned_to": "auto_approved"}
    assert server.poll().jobs == ()


def test_dispatch_timeout_is_configurable(tmp_path: Path) -> None:
    settings = default_settings(tmp_path, sweeps=SweepSettings(dispatch_timeout_secs=10))
    harness = build_harness(tmp_path, settings)
    try:
        request_id = harness.create()
        harness.clock.advance(11)
        harness.sweeps.run_once(harness.clock.now())
        assert harness.status(request_id) is RequestStatus.AUTO_APPROVED
    finally:
        harness.close()


def test_claimed_requests_do_not_time_out(server: ServerHarness) -> None:
    request_id, _ = running(server, lease=600)
    server.clock.advance(400)
    assert server.sweeps.time_out_dispatches(server.clock.now()) == 0
    assert server.status(request_id) is RequestStatus.RUNNING


# --- ttl_expiry ---------------------------------------------------------------------------------


def test_pending_requests_expire_after_the_pending_ttl(server: ServerHarness) -> None:
    request_id = server.create(environment="staging")
    server.clock.advance(86_399)
    assert server.sweeps.expire_requests(server.clock.now()) == 0
    server.clock.advance(2)
    assert server.sweeps.run_once(server.clock.now()).requests_expired == 1
    assert server.status(request_id) is RequestStatus.EXPIRED
    assert server.audit_types(request_id) == ["request.created", "request.expired"]


def test_a_timed_out_auto_approved_request_still_expires(server: ServerHarness) -> None:
    request_id = server.create()
    server.clock.advance(301)
    server.sweeps.run_once(server.clock.now())
    assert server.status(request_id) is RequestStatus.AUTO_APPROVED
    server.clock.advance(86_400 - 301 + 1)
    server.sweeps.run_once(server.clock.now())
    assert server.status(request_id) is RequestStatus.EXPIRED


def test_approved_requests_expire_after_the_approved_ttl(server: ServerHarness) -> None:
    request_id = server.create(environment="staging")
    # Approval is a later use case: approve by hand the way it will (expiry reset).
    with server.store.write() as session:
        from application.server.ports.work.requests import RequestUpdate

        assert session.work.update_request_status(
            request_id,
            allowed_from={RequestStatus.PENDING},
            to=RequestStatus.APPROVED,
            now=server.clock.now(),
            changes=RequestUpdate(
                resolved_at=server.clock.now(),
                expires_at=server.clock.now() + timedelta(hours=1),
            ),
        )
    server.clock.advance(3601)
    server.sweeps.run_once(server.clock.now())
    assert server.status(request_id) is RequestStatus.EXPIRED


def test_a_lost_request_nobody_resumes_expires_the_approved_ttl_after_its_loss(
    server: ServerHarness,
) -> None:
    request_id, _ = running(server)  # auto-approved: its first expiry is creation + 24 h
    server.clock.advance(3600)  # the agent died; the sweep ran late
    assert server.sweeps.reclaim_leases(server.clock.now()) == 1
    lost_at = server.clock.now()
    with server.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None
    assert record.status is RequestStatus.EXECUTION_LOST
    assert record.expires_at == lost_at + timedelta(seconds=86_400)
    server.clock.advance(86_400)
    assert server.sweeps.expire_requests(server.clock.now()) == 0
    server.clock.advance(1)
    assert server.sweeps.run_once(server.clock.now()).requests_expired == 1
    assert server.status(request_id) is RequestStatus.EXPIRED
    event = server.audit_rows("request.expired")[0]
    assert json.loads(event["metadata_json"]) == {"from": "execution_lost"}
    assert event["reason"] == "execution_lost TTL passed"


def test_a_lost_request_takes_its_workflows_approved_ttl(tmp_path: Path) -> None:
    settings = default_settings(tmp_path)
    short = replace(settings.workflows[0], approved_ttl_secs=600)
    harness = build_harness(tmp_path, replace(settings, workflows=(short, *settings.workflows[1:])))
    try:
        request_id, _ = running(harness)
        harness.clock.advance(61)
        harness.sweeps.reclaim_leases(harness.clock.now())
        harness.clock.advance(601)
        harness.sweeps.expire_requests(harness.clock.now())
        assert harness.status(request_id) is RequestStatus.EXPIRED
    finally:
        harness.close()


def test_dispatched_and_finished_requests_never_expire(server: ServerHarness) -> None:
    dispatched = server.create()
    done, execution_id = running(server)
    server.agents.submit_result.submit(AGENT, execution_id, ok())
    server.clock.advance(10 * 86_400)
    assert server.sweeps.expire_requests(server.clock.now()) == 0
    assert server.status(done) is RequestStatus.EXECUTED
    assert server.status(dispatched) is RequestStatus.DISPATCHED


# --- EXPLAIN jobs --------------------------------------------------------------------------------


def test_stale_dry_run_claims_are_released(server: ServerHarness) -> None:
    server.create(environment="staging")
    reply = server.poll(scopes=(("app", "staging"),))
    job_id = reply.dry_run_jobs[0].id
    server.agents.claim_dry_run_job.claim(AGENT, job_id)
    server.clock.advance(59)
    assert server.sweeps.release_dry_runs(server.clock.now()) == 0
    server.clock.advance(2)
    assert server.sweeps.release_dry_runs(server.clock.now()) == 1
    with server.store.read() as session:
        job = session.work.get_dry_run_job(job_id)
    assert job is not None and job.status is DryRunStatus.PENDING and job.claimed_by is None


def test_preflight_jobs_expire(server: ServerHarness) -> None:
    with server.store.write() as session:
        session.work.insert_preflight_job(
            PreflightJobRecord(
                id="pf",
                requester="alice",
                database="app",
                environment="production",
                sql="SELECT 1",
                expires_at=T0 + timedelta(seconds=10),
                created_at=T0,
            )
        )
    server.clock.advance(10)
    assert server.sweeps.run_once(server.clock.now()).preflights_expired == 1
    with server.store.read() as session:
        job = session.work.get_preflight_job("pf")
    assert job is not None and job.status is PreflightStatus.EXPIRED


def test_nothing_due_reports_nothing(server: ServerHarness) -> None:
    assert server.sweeps.run_once(server.clock.now()) == SweepReport()


# --- the runner -----------------------------------------------------------------------------


def test_runner_sweeps_on_its_interval_until_stopped(tmp_path: Path) -> None:
    clock = MutableClock(follow_real_time=True)
    settings = replace(
        default_settings(tmp_path),
        sweeps=SweepSettings(
            lease_reclaim_interval_secs=1,
            dispatch_timeout_interval_secs=1,
            ttl_expiry_interval_secs=1,
            dispatch_timeout_secs=0,
        ),
    )
    harness = build_harness(tmp_path, settings, clock)
    try:
        request_id = harness.create()

        async def scenario() -> None:
            stop = asyncio.Event()
            runner = asyncio.create_task(SweepRunner(harness.sweeps, settings, clock).run(stop))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while harness.status(request_id) is not RequestStatus.AUTO_APPROVED:
                assert loop.time() < deadline, "the runner never swept"
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(runner, 5)

        asyncio.run(scenario())
    finally:
        harness.close()


def test_runner_writes_signed_audit_checkpoints(tmp_path: Path) -> None:
    clock = MutableClock(follow_real_time=True)
    settings = default_settings(tmp_path)
    harness = build_harness(tmp_path, settings, clock)
    audit = AuditMaintenance(store=harness.store, settings=settings, signer=harness.signer)
    try:
        harness.create()

        def checkpointed() -> bool:
            with harness.store.read() as session:
                return session.audit.checkpoint_progress().last_checkpoint_at is not None

        async def scenario() -> None:
            stop = asyncio.Event()
            runner = asyncio.create_task(
                SweepRunner(harness.sweeps, settings, clock, extra_jobs=audit.schedule).run(stop)
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not await asyncio.to_thread(checkpointed):
                assert loop.time() < deadline, "the runner never wrote a checkpoint"
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(runner, 5)

        asyncio.run(scenario())
    finally:
        harness.close()
