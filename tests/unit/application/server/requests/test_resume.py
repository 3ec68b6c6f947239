"""Resuming a request (docs/server.md §1.4): who may, from which status, under which policy,
and the idempotent replay of a request stranded by a dispatch timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.server.ports.services import dispatch_topic
from application.server.ports.store import StoreSession
from application.server.ports.work.requests import RequestRecord, RequestUpdate
from application.server.requests.create import CreateRequestInput
from application.server.requests.dispatch import LOST_EXECUTION_WARNING
from application.server.requests.resume import ResumedRequest, ResumeRequest
from domain.server.errors import Conflict, Forbidden, Gone, NotFound, Validation
from domain.server.execution_policies import ExecutionPolicy
from domain.server.rbac import Principal, Role, parse_permissions
from domain.server.request_lifecycle import InvalidTransition, RequestStatus
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    AGENT,
    ALICE,
    APPROVER,
    BOB,
    OPERATOR,
    ServerHarness,
    build_harness,
    default_settings,
    ok,
    user,
)

S = RequestStatus


def harness_with(tmp_path: Path, **policy: Any) -> ServerHarness:
    """A harness whose one execution policy (for every scope) sets `policy`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = default_settings(tmp_path, execution_policies=(ExecutionPolicy(**policy),))
    return build_harness(tmp_path, settings)


@pytest.fixture
def generous(tmp_path: Path) -> Iterator[ServerHarness]:
    """Three executions per request and retries after failure."""
    harness = harness_with(tmp_path, max_executions=3, retry_on_failure=True)
    yield harness
    harness.close()


def record_of(server: ServerHarness, request_id: str) -> RequestRecord:
    with server.store.read() as session:
        record = session.work.get_request(request_id)
    assert record is not None
    return record


def force(server: ServerHarness, request_id: str, status: RequestStatus, **changes: Any) -> None:
    """Put a request straight into `status` (what approve, reject … would have done)."""
    with server.store.write() as session:
        assert session.work.update_request_status(
            request_id,
            allowed_from=set(RequestStatus),
            to=status,
            now=server.clock.now(),
            changes=RequestUpdate(**changes),
        )


def approved(server: ServerHarness, principal: Principal = ALICE) -> str:
    """A request that went through approval: `approved`, resolved now, expiring in 24 h."""
    request_id = server.create(principal, environment="staging")
    now = server.clock.now()
    force(
        server,
        request_id,
        S.APPROVED,
        resolved_at=now,
        expires_at=now + timedelta(seconds=server.settings.retention.approved_ttl_secs),
    )
    return request_id


def run(server: ServerHarness, request_id: str, *, success: bool = True) -> None:
    """An agent claims the dispatched request and reports `success`."""
    scope = record_of(server, request_id).scope
    server.poll(scopes=((scope.database, scope.environment),))
    job = server.claim(request_id)
    result = ok() if success else replace(ok(), success=False, error_message="boom")
    server.agents.submit_result.submit(AGENT, job.execution_id, result)


def lose(server: ServerHarness, request_id: str) -> None:
    """An agent claims the request and vanishes: the lease sweep declares it lost."""
    server.poll()
    server.claim(request_id)
    server.clock.advance(61)
    assert server.sweeps.reclaim_leases(server.clock.now()) == 1


def resume(
    server: ServerHarness, request_id: str, principal: Principal = ALICE, reason: str | None = None
) -> RequestStatus:
    return server.requests.resume_request.resume(principal, request_id, reason).status


# --- the first dispatch of an approved request ---------------------------------------------


def test_owner_resumes_an_approved_request_and_the_agents_see_it(server: ServerHarness) -> None:
    request_id = approved(server)

    async def resume_while_armed() -> tuple[ResumedRequest, bool]:
        scope = record_of(server, request_id).scope
        with server.notifier.arm([dispatch_topic(scope)]) as waiter:
            resumed = await asyncio.to_thread(
                server.requests.resume_request.resume, ALICE, request_id
            )
            return resumed, await waiter.wait(5)

    resumed, woken = asyncio.run(resume_while_armed())
    assert (resumed.id, resumed.status, resumed.resumed_from, resumed.warning) == (
        request_id,
        S.DISPATCHED,
        S.APPROVED,
        None,
    )
    assert woken, "the agents' long-polls of the scope are woken"
    record = record_of(server, request_id)
    assert (record.status, record.pre_dispatch_status) == (S.DISPATCHED, S.APPROVED)
    event = server.audit_rows("request.dispatched")[-1]
    assert (event["actor_id"], event["request_id"]) == ("alice", request_id)
    assert json.loads(event["metadata_json"]) == {
        "from": "approved",
        "via": "resume",
        "executions": 0,
        "max_executions": 1,
    }
    reply = server.poll(scopes=(("app", "staging"),))
    assert [job.id for job in reply.jobs] == [request_id]
    run(server, request_id)
    assert server.status(request_id) is S.EXECUTED


def test_who_may_resume(server: ServerHarness) -> None:
    request_id = approved(server)
    for stranger in (BOB, APPROVER, ADMIN, AGENT):
        with pytest.raises(Forbidden):
            resume(server, request_id, stranger, reason="mine now")
    with pytest.raises(Validation, match="reason required for non-owner resume"):
        resume(server, request_id, OPERATOR)
    with pytest.raises(Validation, match="reason required"):
        resume(server, request_id, OPERATOR, reason="   ")
    assert server.status(request_id) is S.APPROVED
    assert resume(server, request_id, OPERATOR, reason="requester on leave") is S.DISPATCHED
    event = server.audit_rows("request.dispatched")[-1]
    assert (event["actor_id"], event["reason"]) == ("ops", "requester on leave")


def test_resume_any_is_scoped_to_the_requests_database_and_environment(
    server: ServerHarness,
) -> None:
    staging_only = Role(
        "staging-ops",
        parse_permissions(["request.resume:any"]),
        environments=("staging",),
    )
    carol = user("carol", staging_only)
    in_scope = approved(server)  # app/staging
    elsewhere = server.create()  # app/production, stranded below
    server.clock.advance(server.settings.sweeps.dispatch_timeout_secs + 1)
    server.sweeps.time_out_dispatches(server.clock.now())
    with pytest.raises(Forbidden):
        resume(server, elsewhere, carol, reason="not my scope")
    assert resume(server, in_scope, carol, reason="on call") is S.DISPATCHED


def test_unknown_request_and_long_reason(server: ServerHarness) -> None:
    with pytest.raises(NotFound):
        resume(server, "nope")
    with pytest.raises(Validation, match="reason too long"):
        resume(server, approved(server), reason="x" * 1025)


@pytest.mark.parametrize(
    "status",
    [S.PENDING, S.DISPATCHED, S.RUNNING, S.REJECTED, S.CANCELLED, S.EXPIRED],
)
def test_resume_from_a_status_without_dispatch_is_409_naming_both(
    server: ServerHarness, status: RequestStatus
) -> None:
    request_id = server.create(environment="staging")  # pending
    force(server, request_id, status)
    with pytest.raises(InvalidTransition) as refused:
        resume(server, request_id)
    assert refused.value.status == 409
    assert refused.value.message == f"invalid transition: {status.value} + Dispatch"
    assert server.status(request_id) is status
    assert server.audit_rows("request.dispatched") == []


def test_reject_then_resume_is_409(server: ServerHarness) -> None:
    request_id = server.create(environment="staging")
    force(server, request_id, S.REJECTED, resolved_at=server.clock.now())
    with pytest.raises(Conflict, match="invalid transition: rejected \\+ Dispatch"):
        resume(server, request_id)


def test_an_approved_request_past_its_approved_ttl_is_gone(server: ServerHarness) -> None:
    request_id = approved(server)
    server.clock.advance(server.settings.retention.approved_ttl_secs + 1)
    with pytest.raises(Gone, match="request expired"):
        resume(server, request_id)
    assert server.status(request_id) is S.APPROVED  # the expiry sweep ends it
    assert server.sweeps.expire_requests(server.clock.now()) == 1


# --- execution policy ------------------------------------------------------------------------


def test_resume_twice_against_max_executions_1_is_409_the_second_time(
    server: ServerHarness,
) -> None:
    request_id = approved(server)
    assert resume(server, request_id) is S.DISPATCHED
    run(server, request_id)
    with pytest.raises(Conflict, match=r"max executions reached \(1 of 1"):
        resume(server, request_id)
    assert server.status(request_id) is S.EXECUTED


def test_max_executions_counts_runs_without_a_stored_result(tmp_path: Path) -> None:
    """dbward 0.2 counted stored results, so `no_result_store` runs were free (§11.5)."""
    server = harness_with(tmp_path, max_executions=2)
    try:
        request_id = server.create(no_store=True)
        run(server, request_id)
        assert resume(server, request_id) is S.DISPATCHED
        run(server, request_id)
        with pytest.raises(Conflict, match=r"max executions reached \(2 of 2"):
            resume(server, request_id)
    finally:
        server.close()


def test_executed_request_runs_again_within_max_executions(generous: ServerHarness) -> None:
    request_id = generous.create()
    run(generous, request_id)
    resumed = generous.requests.resume_request.resume(ALICE, request_id)
    assert (resumed.resumed_from, resumed.warning) == (S.EXECUTED, None)
    run(generous, request_id)
    with generous.store.read() as session:
        assert session.work.count_executions(request_id) == 2


def test_rerun_after_failure_needs_retry_on_failure(server: ServerHarness, tmp_path: Path) -> None:
    request_id = server.create()
    run(server, request_id, success=False)
    assert server.status(request_id) is S.FAILED
    with pytest.raises(Conflict, match="max executions reached"):
        resume(server, request_id)  # the default policy: one execution
    no_retry = harness_with(tmp_path / "no-retry", max_executions=2)
    retry = harness_with(tmp_path / "retry", max_executions=2, retry_on_failure=True)
    try:
        for harness in (no_retry, retry):
            failed = harness.create()
            run(harness, failed, success=False)
            if harness is no_retry:
                with pytest.raises(Conflict, match="retry on failure disabled"):
                    resume(harness, failed)
                assert harness.status(failed) is S.FAILED
            else:
                assert resume(harness, failed) is S.DISPATCHED
                run(harness, failed)
                assert harness.status(failed) is S.EXECUTED
    finally:
        no_retry.close()
        retry.close()


def test_rerun_after_the_execution_window_is_gone(tmp_path: Path) -> None:
    server = harness_with(tmp_path, max_executions=3, execution_window_secs=600)
    try:
        request_id = server.create()
        run(server, request_id)
        server.clock.advance(600)
        assert resume(server, request_id) is S.DISPATCHED  # at the edge: still inside
        run(server, request_id)  # resolved again now: the window restarts
        server.clock.advance(601)
        with pytest.raises(Gone, match="execution window expired"):
            resume(server, request_id)
    finally:
        server.close()


def test_the_policy_is_resolved_by_database_and_environment(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path,
        execution_policies=(
            ExecutionPolicy(max_executions=2),
            ExecutionPolicy(environment="production", max_executions=1),
        ),
    )
    server = build_harness(tmp_path, settings)
    try:
        prod = server.create()
        run(server, prod)
        with pytest.raises(Conflict, match="max executions"):
            resume(server, prod)
        staging = approved(server)
        resume(server, staging)
        run(server, staging)
        assert resume(server, staging) is S.DISPATCHED  # (*, *) allows two
    finally:
        server.close()


# --- stranded and lost requests ----------------------------------------------------------------


def test_a_stranded_auto_approved_request_is_resumed_after_its_dispatch_timeout(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.clock.advance(server.settings.sweeps.dispatch_timeout_secs + 1)
    assert server.sweeps.time_out_dispatches(server.clock.now()) == 1
    assert server.status(request_id) is S.AUTO_APPROVED
    assert server.poll().jobs == ()
    resumed = server.requests.resume_request.resume(ALICE, request_id)
    assert (resumed.status, resumed.resumed_from) == (S.DISPATCHED, S.AUTO_APPROVED)
    run(server, request_id)
    assert server.status(request_id) is S.EXECUTED


def test_a_stranded_emergency_request_is_resumed_too(server: ServerHarness) -> None:
    request_id = server.create(OPERATOR, emergency=True, reason="incident 7")
    server.clock.advance(server.settings.sweeps.dispatch_timeout_secs + 1)
    server.sweeps.time_out_dispatches(server.clock.now())
    assert server.status(request_id) is S.BREAK_GLASS
    assert resume(server, request_id, OPERATOR) is S.DISPATCHED


def test_an_execution_lost_request_resumes_with_a_warning(generous: ServerHarness) -> None:
    request_id = generous.create()
    lose(generous, request_id)
    assert generous.status(request_id) is S.EXECUTION_LOST
    resumed = generous.requests.resume_request.resume(ALICE, request_id)
    assert (resumed.status, resumed.resumed_from) == (S.DISPATCHED, S.EXECUTION_LOST)
    assert resumed.warning == LOST_EXECUTION_WARNING
    assert "may have run once already" in resumed.warning
    run(generous, request_id)
    assert generous.status(request_id) is S.EXECUTED


def test_a_lost_execution_counts_against_max_executions(server: ServerHarness) -> None:
    request_id = server.create()
    lose(server, request_id)
    with pytest.raises(Conflict, match=r"max executions reached \(1 of 1; a lost execution"):
        resume(server, request_id)


def test_a_late_result_of_a_resumed_lost_execution_is_refused(generous: ServerHarness) -> None:
    request_id = generous.create()
    generous.poll()
    first = generous.claim(request_id)
    generous.clock.advance(61)
    generous.sweeps.reclaim_leases(generous.clock.now())
    resume(generous, request_id)
    with pytest.raises(Conflict):
        generous.agents.submit_result.submit(AGENT, first.execution_id, ok())
    assert generous.status(request_id) is S.DISPATCHED


# --- races -----------------------------------------------------------------------------------


class _StaleReads:
    """A store whose `get_request` answers what a request looked like before a concurrent
    change committed: the conditional update must then match nothing."""

    def __init__(self, server: ServerHarness, stale: RequestRecord) -> None:
        self._server = server
        self._stale = stale

    @contextmanager
    def write(self) -> Iterator[StoreSession]:
        with self._server.store.write() as session:
            stale = self._stale

            class _Work:
                def __getattr__(self, name: str) -> Any:
                    return getattr(session.work, name)

                def get_request(self, request_id: str) -> RequestRecord | None:
                    return stale

            class _Session:
                identity = session.identity
                audit = session.audit
                work = _Work()

            yield _Session()  # type: ignore[misc]

    def read(self) -> Any:
        return self._server.store.read()


def test_a_concurrent_status_change_is_409_and_dispatches_nothing(
    server: ServerHarness,
) -> None:
    request_id = approved(server)
    stale = record_of(server, request_id)
    server.requests.cancel_request.cancel(ALICE, request_id)  # commits first
    racing = ResumeRequest(
        store=_StaleReads(server, stale),  # type: ignore[arg-type]
        settings=server.settings,
        clock=server.clock,
        notifier=server.notifier,
    )
    with pytest.raises(Conflict, match="concurrent status change"):
        racing.resume(ALICE, request_id)
    assert server.status(request_id) is S.CANCELLED
    assert server.audit_rows("request.dispatched") == []


# --- idempotent replay ---------------------------------------------------------------------------


def _replay(server: ServerHarness, principal: Principal = ALICE, **fields: Any) -> Any:
    fields.setdefault("database", "app")
    fields.setdefault("environment", "production")
    body = CreateRequestInput(detail="SELECT 1", idempotency_key="k-1", **fields)
    return server.requests.create_request.create(principal, body)


def test_a_replay_dispatches_a_stranded_request_again(server: ServerHarness) -> None:
    first = _replay(server)
    server.clock.advance(server.settings.sweeps.dispatch_timeout_secs + 1)
    server.sweeps.time_out_dispatches(server.clock.now())
    assert server.status(first.id) is S.AUTO_APPROVED
    again = _replay(server)
    assert (again.id, again.idempotent, again.status) == (first.id, True, S.DISPATCHED)
    assert server.status(first.id) is S.DISPATCHED
    event = server.audit_rows("request.dispatched")[-1]
    assert json.loads(event["metadata_json"])["via"] == "idempotent_replay"
    assert [job.id for job in server.poll().jobs] == [first.id]


def test_a_replay_never_reruns_a_request_that_ran(server: ServerHarness) -> None:
    first = _replay(server)
    run(server, first.id)
    dispatches = len(server.audit_rows("request.dispatched"))
    assert _replay(server).status is S.EXECUTED
    assert len(server.audit_rows("request.dispatched")) == dispatches


def test_a_replay_never_resumes_an_approved_or_lost_request(generous: ServerHarness) -> None:
    pending = _replay(generous, environment="staging")
    force(generous, pending.id, S.APPROVED, resolved_at=generous.clock.now())
    again = _replay(generous, environment="staging")
    assert (again.status, again.approvers) == (S.APPROVED, ())
    request_id = generous.create(idempotency_key="k-2")
    lose(generous, request_id)
    replayed = generous.requests.create_request.create(
        ALICE,
        CreateRequestInput(
            database="app", environment="production", detail="SELECT 1", idempotency_key="k-2"
        ),
    )
    assert replayed.status is S.EXECUTION_LOST
    assert generous.status(request_id) is S.EXECUTION_LOST


def test_a_replay_of_an_expired_stranded_request_answers_expired(server: ServerHarness) -> None:
    first = _replay(server)
    server.clock.advance(server.settings.retention.approved_ttl_secs + 1)
    server.sweeps.run_once(server.clock.now())
    assert server.status(first.id) is S.EXPIRED
    again = _replay(server)
    assert (again.status, again.idempotent) == (S.EXPIRED, True)


def test_a_replay_of_a_stranded_request_past_its_ttl_is_gone(server: ServerHarness) -> None:
    _replay(server)
    server.clock.advance(server.settings.sweeps.dispatch_timeout_secs + 1)
    server.sweeps.time_out_dispatches(server.clock.now())
    server.clock.advance(server.settings.retention.approved_ttl_secs)  # the sweep has not run
    with pytest.raises(Gone, match="request expired"):
        _replay(server)
