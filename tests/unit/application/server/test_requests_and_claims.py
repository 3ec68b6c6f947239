"""Request and agent-protocol use cases on a real store (SQLite in tmp_path).

spec/server.md §1.3 (create), §1.5 (claim, heartbeat, result), §1.8 (results); the
agent-protocol.md §3 decisions; and our improvements: exact-source plans signed at claim,
atomic auto-dispatch, late completion, redacted audit SQL, persisted result summaries.

The `ServerHarness` here is shared with `test_sweeps.py`, the request use-case tests in
`requests/` and the API integration tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.crypto.ed25519_signer import Ed25519Signer, SigningKeyError
from adapters.crypto.ed25519_verifier import Ed25519Verifier
from adapters.files.result_store import LocalResultStore
from adapters.http_api.notifier import AsyncioNotifier
from adapters.http_api.routes_requests import RequestUseCases
from adapters.memory.result_relay import InMemoryResultRelay
from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from adapters.store.engine import create_store_engine
from adapters.store.migrations import migrate
from adapters.store.schema import audit_events
from adapters.store.sql_store import SqlStore
from application.server.agent_protocol.service import (
    AgentProtocolService,
    PollInput,
    PollReply,
    PreflightResultInput,
    SchemaSyncInput,
    rfc3339_nanos,
    version_lt,
)
from application.server.ports.work.executions import ExecutionStatus
from application.server.ports.work.explain_jobs import (
    DryRunStatus,
    PreflightJobRecord,
    PreflightStatus,
)
from application.server.requests.cancel import CancelRequest
from application.server.requests.common import ServerDraining, new_uuid
from application.server.requests.create import CreateRequest, CreateRequestInput
from application.server.requests.queries import GetRequest, ListExecutions, ListRequests
from application.server.requests.results import GetResultContent, WaitForResult
from application.server.settings import (
    AuditRedaction,
    AuditSettings,
    DatabaseRegistration,
    ServerSettings,
)
from application.server.sweeps import ServerSweeps
from domain.agent.token_verification import verify_execution_token
from domain.server.api_tokens import SubjectType
from domain.server.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServerDomainError,
    Validation,
)
from domain.server.execution_policies import DeliveryMode, ExecutionPolicy, ResultPolicy
from domain.server.rbac import (
    AGENT_DEFAULT,
    BUILT_IN_ROLES,
    Principal,
    Role,
    Selector,
    SelectorKind,
)
from domain.server.request_lifecycle import RequestStatus
from domain.server.workflows import (
    ApprovalStep,
    Approver,
    AutoApprove,
    AutoApproveMode,
    Workflow,
)
from domain.shared.jobs import AgentStatus, ClaimedJob, JobResult
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PROD = Scope("app", "production")
STAGING = Scope("app", "staging")
SERVER_VERSION = "0.3.0"


# --- the harness ------------------------------------------------------------------------------


class MutableClock:
    """A wall clock tests set and advance; thread-safe (API tests read it from threads)."""

    def __init__(self, start: datetime = T0, *, follow_real_time: bool = False) -> None:
        self._lock = threading.Lock()
        self._now = start
        self._real = follow_real_time
        self._origin = datetime.now(UTC)

    def now(self) -> datetime:
        with self._lock:
            if self._real:
                return self._now + (datetime.now(UTC) - self._origin)
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


def user(subject: str, *roles: str | Role) -> Principal:
    resolved = tuple(BUILT_IN_ROLES[r] if isinstance(r, str) else r for r in roles)
    return Principal(subject_id=subject, subject_type=SubjectType.USER, roles=resolved)


def agent(subject: str = "agent") -> Principal:
    return Principal(
        subject_id=subject,
        subject_type=SubjectType.AGENT,
        roles=(BUILT_IN_ROLES[AGENT_DEFAULT],),
        token_id=f"tok-{subject}",
    )


ALICE = user("alice", "requester")
BOB = user("bob", "requester")
ADMIN = user("root", "admin")
OPERATOR = user("ops", "operator")
APPROVER = user("dana", "approver")
AGENT = agent()

ALWAYS = Workflow(
    database="app",
    environment="production",
    auto_approve=AutoApprove(mode=AutoApproveMode.ALWAYS),
)
NEEDS_DBA = Workflow(
    database="app",
    environment="staging",
    steps=(ApprovalStep(approvers=(Approver(Selector(SelectorKind.ROLE, "dba")),)),),
)


def default_settings(state_dir: Path, **overrides: Any) -> ServerSettings:
    base = ServerSettings.for_state_dir(
        state_dir,
        databases=(DatabaseRegistration("app", ("production", "staging", "dev")),),
        workflows=(ALWAYS, NEEDS_DBA),
    )
    return replace(base, **overrides)


@dataclass
class ServerHarness:
    """The server's services wired by hand over a real store, as the composition root does."""

    settings: ServerSettings
    store: SqlStore
    clock: MutableClock
    notifier: AsyncioNotifier
    signer: Ed25519Signer
    results: LocalResultStore
    requests: RequestUseCases
    agents: AgentProtocolService
    sweeps: ServerSweeps
    draining: threading.Event = field(default_factory=threading.Event)

    # --- shortcuts -------------------------------------------------------------------------

    def create(self, principal: Principal = ALICE, detail: str = "SELECT 1", **fields: Any) -> str:
        fields.setdefault("database", "app")
        fields.setdefault("environment", "production")
        request = CreateRequestInput(detail=detail, **fields)
        return self.requests.create_request.create(principal, request).id

    def poll(
        self,
        principal: Principal = AGENT,
        scopes: tuple[tuple[str, str], ...] = (("app", "production"),),
        **fields: Any,
    ) -> PollReply:
        fields.setdefault("agent_version", "0.2.0")
        fields.setdefault(
            "status",
            AgentStatus(
                in_flight=0,
                in_flight_preflight=0,
                max_concurrent=2,
                draining=False,
                uptime_secs=5,
            ),
        )
        return asyncio.run(self.agents.poll(principal, PollInput(scopes=scopes, **fields)))

    def claim(
        self, request_id: str, principal: Principal = AGENT, lease: int | None = None
    ) -> ClaimedJob:
        return self.agents.claim(principal, request_id, lease)

    def status(self, request_id: str) -> RequestStatus:
        with self.store.read() as session:
            record = session.work.get_request(request_id)
        assert record is not None
        return record.status

    def audit_types(self, request_id: str | None = None) -> list[str]:
        with self.store.engine.connect() as conn:
            query = select(audit_events.c.event_type).order_by(audit_events.c.seq)
            if request_id is not None:
                query = query.where(audit_events.c.request_id == request_id)
            return [row[0] for row in conn.execute(query)]

    def audit_rows(self, event_type: str) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                select(audit_events)
                .where(audit_events.c.event_type == event_type)
                .order_by(audit_events.c.seq)
            )
            return [dict(row._mapping) for row in rows]

    def close(self) -> None:
        self.store.close()


def build_harness(
    state_dir: Path,
    settings: ServerSettings | None = None,
    clock: MutableClock | None = None,
    *,
    new_id: Callable[[], str] = new_uuid,
    signer: Ed25519Signer | None = None,
    result_stream_secs: float = 300.0,
) -> ServerHarness:
    settings = settings or default_settings(state_dir)
    engine = create_store_engine(settings.store.url)
    migrate(engine)
    store = SqlStore(engine)
    clock = clock or MutableClock()
    notifier = AsyncioNotifier()
    signer = signer or Ed25519Signer.load_or_create(state_dir)
    results = LocalResultStore(
        settings.result_storage.root_dir, settings.result_storage.max_persist_bytes
    )
    relay = InMemoryResultRelay(
        settings.result_channel.max_slots, settings.result_channel.slot_ttl_secs
    )
    draining = threading.Event()
    classifier = SqlglotClassifier()
    return ServerHarness(
        settings=settings,
        store=store,
        clock=clock,
        notifier=notifier,
        signer=signer,
        results=results,
        requests=RequestUseCases(
            create_request=CreateRequest(
                store=store,
                settings=settings,
                clock=clock,
                classifier=classifier,
                notifier=notifier,
                draining=draining.is_set,
                new_id=new_id,
            ),
            get_request=GetRequest(
                store=store,
                clock=clock,
                notifier=notifier,
                draining=draining.is_set,
                recheck_secs=0.05,
            ),
            list_requests=ListRequests(store=store),
            cancel_request=CancelRequest(
                store=store, clock=clock, notifier=notifier, new_id=new_id
            ),
            wait_for_result=WaitForResult(
                store=store,
                settings=settings,
                notifier=notifier,
                result_store=results,
                result_relay=relay,
                draining=draining.is_set,
                wait_secs=result_stream_secs,
                recheck_secs=0.05,
            ),
            get_result_content=GetResultContent(
                store=store,
                settings=settings,
                clock=clock,
                result_store=results,
                result_relay=relay,
            ),
            list_executions=ListExecutions(store=store),
        ),
        agents=AgentProtocolService(
            store=store,
            settings=settings,
            clock=clock,
            signer=signer,
            notifier=notifier,
            result_store=results,
            server_version=SERVER_VERSION,
            result_slots=relay,
            draining=draining.is_set,
            new_id=new_id,
            recheck_secs=0.05,
        ),
        sweeps=ServerSweeps(store=store, settings=settings, notifier=notifier, new_id=new_id),
        draining=draining,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHarness]:
    harness = build_harness(tmp_path)
    yield harness
    harness.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for `predicate` on the event loop, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out waiting for a state"
        await asyncio.sleep(0.002)


def ok(rows: list[dict[str, Any]] | None = None, **fields: Any) -> JobResult:
    data = json.dumps({"rows": rows or [{"x": 1}], "truncated": False, "truncation_reason": None})
    fields.setdefault("duration_ms", 7)
    return JobResult(success=True, result_data=data, **fields)


# --- cancel, as the agent sees it ----------------------------------------------------------------


def test_cancelling_a_running_request_reaches_the_agent_by_heartbeat(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    assert server.agents.heartbeat(AGENT, claim.execution_id) is False
    server.requests.cancel_request.cancel(ALICE, request_id)
    assert server.agents.heartbeat(AGENT, claim.execution_id) is True
    final = server.agents.submit_result(
        AGENT, claim.execution_id, JobResult(success=False, error_message="query cancelled")
    )
    assert final == (request_id, RequestStatus.CANCELLED)
    assert server.status(request_id) is RequestStatus.CANCELLED


# --- poll ---------------------------------------------------------------------------------------


def test_first_poll_registers_the_agent_once(server: ServerHarness) -> None:
    server.poll(agent_build="1.2.3")
    server.poll()
    assert server.audit_types().count("agent.registered") == 1
    with server.store.read() as session:
        row = session.work.get_agent("agent")
    assert row is not None
    assert row.record.scopes == (PROD,)
    assert row.token_id == "tok-agent"


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
    finally:
        harness.close()
    assert version_lt("0.2.0", "0.2.1")
    assert not version_lt("0.10.0", "0.9.9")
    assert not version_lt("0.2.0-rc1", "0.2.0")
    assert version_lt("0.1", "0.1.0")


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
    server.agents.submit_preflight_result(
        AGENT, PreflightResultInput(job_id="pf-0", claim_token=token, result=[{"Plan": {}}])
    )
    with server.store.read() as session:
        job = session.work.get_preflight_job("pf-0")
    assert job is not None and job.status is PreflightStatus.COMPLETED
    with pytest.raises(Gone):
        server.agents.submit_preflight_result(
            AGENT, PreflightResultInput(job_id="pf-0", claim_token=token, error="again")
        )
    with pytest.raises(Validation, match="exactly one"):
        server.agents.submit_preflight_result(
            AGENT, PreflightResultInput(job_id="pf-1", claim_token=token)
        )
    with pytest.raises(PayloadTooLarge):
        server.agents.submit_preflight_result(
            AGENT, PreflightResultInput(job_id="pf-1", claim_token=token, error="e" * 4097)
        )


def test_long_poll_wakes_on_dispatch(server: ServerHarness) -> None:
    async def scenario() -> tuple[PollReply, float]:
        loop = asyncio.get_running_loop()
        poll = asyncio.create_task(
            server.agents.poll(
                AGENT, PollInput(scopes=(("app", "production"),), wait_ms=20_000, limit=1)
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


# --- claim ------------------------------------------------------------------------------------


def test_claim_signs_a_token_the_agent_verifies(server: ServerHarness) -> None:
    request_id = server.create(detail="SELECT a FROM t WHERE b = 'x';")
    server.poll()
    reply = server.claim(request_id)
    assert reply.execution_plan == ("SELECT a FROM t WHERE b = 'x'",)
    assert reply.execution_plan_json == json.dumps(reply.execution_plan, separators=(",", ":"))
    assert reply.statement_timeout_secs is None  # no [[execution_policies]] entry
    assert reply.max_rows is None
    assert reply.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=60))
    token = json.loads(reply.execution_token)
    assert list(token) == [
        "request_id",
        "operation",
        "environment",
        "database",
        "detail_hash",
        "issued_at",
        "expires_at",
        "signature",
        "requester_role",
        "requester_subject_id",
    ]
    assert token["expires_at"] == "2030-01-01T12:05:00.000000000+00:00"
    assert (token["requester_role"], token["requester_subject_id"]) == ("requester", "alice")
    verifier = Ed25519Verifier()
    verifier.load_public_key(server.agents.public_key(AGENT))
    verified = verify_execution_token(
        reply, now=T0 + timedelta(seconds=1), check_signature=verifier.verify
    )
    assert verified.request_id == request_id
    assert server.status(request_id) is RequestStatus.RUNNING
    assert server.audit_types(request_id)[-1] == "execution.started"


def test_claim_timeout_and_lease_follow_policy_workflow_and_request(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path,
        workflows=(replace(ALWAYS, statement_timeout_secs=45), NEEDS_DBA),
        execution_policies=(
            ExecutionPolicy(environment="production", statement_timeout_secs=20, max_rows=500),
        ),
    )
    harness = build_harness(tmp_path, settings)
    try:
        harness.poll()
        first = harness.claim(harness.create(), lease=300)
        assert first.statement_timeout_secs == 45  # the workflow's override, policy matched
        assert first.max_rows == 500
        assert first.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=300))
        second = harness.claim(harness.create(), lease=5000)
        assert second.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=630))
        third = harness.claim(harness.create())  # a bodiless dbward 0.2 claim
        assert third.lease_expires_at == rfc3339_nanos(T0 + timedelta(seconds=75))
    finally:
        harness.close()


def test_claim_refusals_in_order(server: ServerHarness) -> None:
    request_id = server.create()
    with pytest.raises(NotFound, match="agent not registered"):
        server.claim(request_id)
    server.poll(scopes=(("app", "staging"),))
    with pytest.raises(NotFound, match="request not found"):
        server.claim("missing")
    with pytest.raises(Forbidden):
        server.claim(request_id)  # the agent serves app/staging only
    server.poll()
    server.claim(request_id)
    with pytest.raises(Conflict, match="running \\+ Claim"):
        server.claim(request_id)
    server.draining.set()
    with pytest.raises(ServerDraining):
        server.claim(request_id)


def test_one_migration_at_a_time_per_database(server: ServerHarness) -> None:
    detail = json.dumps({"format": "v2", "direction": "up", "versions": [], "migrations": []})
    first = server.create(detail=detail, operation="migrate_up")
    second = server.create(detail=detail, operation="migrate_up", idempotency_key="b")
    server.poll()
    server.claim(first)  # two dispatched migrations do not block each other
    with pytest.raises(Conflict, match="migration already running"):
        server.claim(second)


# --- heartbeat and result -------------------------------------------------------------------------


def test_heartbeat_extends_the_lease_and_guards_ownership(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    server.poll(agent("other"))
    claim = server.claim(request_id, lease=120)
    server.clock.advance(100)
    assert server.agents.heartbeat(AGENT, claim.execution_id) is False
    with server.store.read() as session:
        execution = session.work.get_execution(claim.execution_id)
    assert execution is not None
    assert execution.lease_expires_at == T0 + timedelta(seconds=220)
    with pytest.raises(Forbidden):
        server.agents.heartbeat(agent("other"), claim.execution_id)
    with pytest.raises(NotFound):
        server.agents.heartbeat(AGENT, "missing")
    server.agents.submit_result(AGENT, claim.execution_id, ok())
    with pytest.raises(Conflict, match="execution is completed, cannot heartbeat"):
        server.agents.heartbeat(AGENT, claim.execution_id)


def test_result_completes_the_request_and_persists_a_summary(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    final = server.agents.submit_result(AGENT, claim.execution_id, ok(rows_affected=None))
    assert final == (request_id, RequestStatus.EXECUTED)
    envelope = server.requests.get_result_content.get(ALICE, request_id)
    assert envelope.success and envelope.execution_id == claim.execution_id
    assert envelope.result_data == {
        "rows": [{"x": 1}],
        "truncated": False,
        "truncation_reason": None,
    }
    assert asyncio.run(server.requests.wait_for_result.wait(ALICE, request_id)) == envelope
    event = server.audit_rows("execution.completed")[0]
    assert json.loads(event["metadata_json"])["duration_ms"] == 7
    with pytest.raises(Conflict, match="execution is completed, cannot submit result"):
        server.agents.submit_result(AGENT, claim.execution_id, ok())
    history = server.requests.list_executions.list(ALICE, request_id)
    assert [(e.execution.status, e.has_stored_result) for e in history] == [
        (ExecutionStatus.COMPLETED, True)
    ]


def test_dml_result_carries_rows_affected_into_the_audit(server: ServerHarness) -> None:
    request_id = server.create(detail="UPDATE t SET a = 1 WHERE id = 1")
    server.poll()
    claim = server.claim(request_id)
    server.agents.submit_result(
        AGENT,
        claim.execution_id,
        JobResult(success=True, result_data='{"rows_affected":3}', rows_affected=3),
    )
    metadata = json.loads(server.audit_rows("execution.completed")[0]["metadata_json"])
    assert metadata["rows_affected"] == 3
    assert server.requests.get_result_content.get(ALICE, request_id).rows_affected == 3


def test_failed_result_keeps_the_error(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    final = server.agents.submit_result(
        AGENT,
        claim.execution_id,
        JobResult(success=False, error_message="driver error: boom", duration_ms=3),
    )
    assert final[1] is RequestStatus.FAILED
    envelope = server.requests.get_result_content.get(ALICE, request_id)
    assert (envelope.success, envelope.error_message, envelope.result_data) == (
        False,
        "driver error: boom",
        None,
    )
    assert server.audit_rows("execution.failed")[0]["outcome"] == "failure"


def test_result_above_the_persist_limit_is_413(tmp_path: Path) -> None:
    base = default_settings(tmp_path)
    settings = replace(base, result_storage=replace(base.result_storage, max_persist_bytes=1000))
    harness = build_harness(tmp_path, settings)
    try:
        request_id = harness.create()
        harness.poll()
        claim = harness.claim(request_id)
        with pytest.raises(PayloadTooLarge, match="result size 1001 exceeds limit 1000"):
            harness.agents.submit_result(
                AGENT, claim.execution_id, JobResult(success=True, result_data="x" * 1001)
            )
        assert harness.status(request_id) is RequestStatus.RUNNING
        assert not [p for p in harness.results.root_dir.rglob("*") if p.is_file()]
    finally:
        harness.close()


def test_late_result_is_accepted_while_no_newer_execution_exists(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    server.clock.advance(61)
    assert server.sweeps.reclaim_leases(server.clock.now()) == 1
    assert server.status(request_id) is RequestStatus.EXECUTION_LOST
    final = server.agents.submit_result(AGENT, claim.execution_id, ok())
    assert final == (request_id, RequestStatus.EXECUTED)
    assert server.audit_types(request_id)[-2:] == ["execution.lost", "execution.completed"]
    assert json.loads(server.audit_rows("execution.completed")[0]["metadata_json"])["late"]
    with pytest.raises(Conflict):
        server.agents.submit_result(AGENT, claim.execution_id, ok())


def test_late_result_is_refused_once_a_newer_execution_exists(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    old = server.claim(request_id)
    server.clock.advance(61)
    server.sweeps.reclaim_leases(server.clock.now())
    # Resume is a later use case: re-dispatch by hand, as it will.
    with server.store.write() as session:
        assert session.work.update_request_status(
            request_id,
            allowed_from={RequestStatus.EXECUTION_LOST},
            to=RequestStatus.DISPATCHED,
            now=server.clock.now(),
        )
    server.clock.advance(1)
    server.poll()
    server.claim(request_id)
    with pytest.raises(Conflict, match="execution is failed, cannot submit result"):
        server.agents.submit_result(AGENT, old.execution_id, ok())


def test_stream_only_results_are_relayed_not_stored(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path, result_policies=(ResultPolicy(delivery_mode=DeliveryMode.STREAM),)
    )
    harness = build_harness(tmp_path, settings)
    try:
        request_id = harness.create()
        harness.poll()
        claim = harness.claim(request_id)
        harness.agents.submit_result(AGENT, claim.execution_id, ok())
        envelope = asyncio.run(harness.requests.wait_for_result.wait(ALICE, request_id))
        assert envelope is not None and envelope.result_data["rows"] == [{"x": 1}]
        assert not [p for p in harness.results.root_dir.rglob("*") if p.is_file()]
        with harness.store.read() as session:
            summary = session.work.latest_result(request_id)
        assert summary is not None and summary.storage_key == ""
    finally:
        harness.close()


# --- schema sync and dry runs ------------------------------------------------------------------


def test_schema_sync_validates_and_stores(server: ServerHarness) -> None:
    body = SchemaSyncInput(
        database="app",
        environment="production",
        dialect="mysql",
        status="ready",
        snapshot={"tables": []},
    )
    with pytest.raises(Forbidden):
        server.agents.schema_sync(AGENT, body)  # not registered yet
    server.poll()
    for bad, message in (
        (replace(body, dialect="oracle"), "invalid dialect"),
        (replace(body, status="done"), "invalid status"),
        (replace(body, snapshot=None), "snapshot is required"),
    ):
        with pytest.raises(Validation, match=message):
            server.agents.schema_sync(AGENT, bad)
    with pytest.raises(Forbidden):
        server.agents.schema_sync(AGENT, replace(body, environment="staging"))
    server.agents.schema_sync(AGENT, body)
    with server.store.read() as session:
        snapshot = session.work.get_schema_snapshot(PROD)
    assert snapshot is not None and snapshot.dialect == "mysql"
    assert "schema.snapshot_updated" in server.audit_types()
    # The snapshot's dialect now drives classification: MySQL backticks parse.
    assert server.create(detail="SELECT `a` FROM `t`")


def test_dry_run_claim_and_result(server: ServerHarness) -> None:
    request_id = server.create(environment="staging")
    reply = server.poll(scopes=(("app", "staging"),))
    (job,) = reply.dry_run_jobs
    with pytest.raises(Validation, match="dry-run job not found"):
        server.agents.claim_dry_run(AGENT, "missing")
    token = server.agents.claim_dry_run(AGENT, job.id)
    with pytest.raises(Conflict, match="already_claimed"):
        server.agents.claim_dry_run(AGENT, job.id)
    from application.server.agent_protocol.service import DryRunResultInput

    with pytest.raises(Conflict):
        server.agents.submit_dry_run_result(
            AGENT, job.id, DryRunResultInput(claim_token="wrong", result={})
        )
    server.agents.submit_dry_run_result(
        AGENT, job.id, DryRunResultInput(claim_token=token, result=[{"Plan": {"Node": "x"}}])
    )
    details = server.requests.get_request.get(ALICE, request_id)
    assert [j.status for j in details.dry_runs] == [DryRunStatus.COMPLETED]


def test_agents_listing(server: ServerHarness) -> None:
    server.poll(agent_build="9.9.9")
    (listing,) = server.agents.list_agents(ADMIN)
    assert listing.view.status.value == "healthy"
    assert listing.agent_build == "9.9.9"
    assert listing.view.scopes == (PROD,)
    with pytest.raises(Forbidden):
        server.agents.list_agents(ALICE)
    server.clock.advance(61)
    assert server.agents.list_agents(ADMIN)[0].view.status.value == "offline"


def test_non_agents_cannot_use_agent_operations(server: ServerHarness) -> None:
    with pytest.raises(Forbidden):
        server.poll(ADMIN)
    with pytest.raises(Forbidden):
        server.agents.public_key(ADMIN)
    with pytest.raises(ServerDomainError):
        server.agents.heartbeat(ALICE, "x")


# --- the adapters these use cases stand on -----------------------------------------------------


def test_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = Ed25519Signer.load_or_create(tmp_path / "state")
    key = tmp_path / "state" / "signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_bytes()) == 32
    again = Ed25519Signer.load_or_create(tmp_path / "state")
    assert again.public_key_hex() == first.public_key_hex()
    verifier = Ed25519Verifier()
    verifier.load_public_key(first.public_key_hex())
    assert verifier.verify(again.sign(b"message"), b"message")


def test_signing_key_that_others_may_read_is_refused(tmp_path: Path) -> None:
    Ed25519Signer.load_or_create(tmp_path)
    key = tmp_path / "signing.key"
    key.chmod(0o640)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        Ed25519Signer.load_or_create(tmp_path)
    key.chmod(0o600)
    key.write_bytes(b"short")
    with pytest.raises(SigningKeyError, match="exactly 32 bytes, found 5"):
        Ed25519Signer.load_or_create(tmp_path)


def test_local_result_store_is_atomic_bounded_and_confined(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path / "results", max_bytes=10)
    store.put("req/exec", b"0123456789")
    assert store.get("req/exec") == b"0123456789"
    store.put("req/exec", b"new")
    assert store.get("req/exec") == b"new"
    assert [p.name for p in (tmp_path / "results" / "req").iterdir()] == ["exec"]
    assert (tmp_path / "results").stat().st_mode & 0o777 == 0o700
    with pytest.raises(PayloadTooLarge, match="result size 11 exceeds limit 10"):
        store.put("req/other", b"x" * 11)
    assert store.get("req/other") is None
    for bad in ("../escape", "req/..", "/abs", "req//x", "a b"):
        with pytest.raises(ValueError, match="invalid result key"):
            store.put(bad, b"x")
    store.delete("req/exec")
    store.delete("req/exec")  # twice is fine
    assert store.get("req/exec") is None


def test_notifier_wakes_from_other_threads_and_loses_nothing() -> None:
    notifier = AsyncioNotifier()

    async def scenario() -> tuple[bool, bool, bool, bool]:
        with notifier.arm(["a", "b"]) as waiter:
            # Before anyone waits: the notification is kept for the next wait.
            await asyncio.to_thread(notifier.notify, "b")
            early = await waiter.wait(5)
            quiet = await waiter.wait(0.01)  # consumed: nothing new since
            await asyncio.to_thread(notifier.notify, "c")
            unrelated = await waiter.wait(0.01)
            threading.Timer(0.02, notifier.notify_all).start()
            woken = await waiter.wait(5)
        assert notifier.waiting == 0
        return early, quiet, unrelated, woken

    assert asyncio.run(scenario()) == (True, False, False, True)
    notifier.notify("a")  # nobody armed: a no-op


def test_draining_releases_held_long_polls(server: ServerHarness) -> None:
    request_id = server.create()

    async def scenario() -> tuple[object, PollReply, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = asyncio.create_task(server.requests.wait_for_result.wait(ALICE, request_id))
        held = asyncio.create_task(
            server.agents.poll(AGENT, PollInput(scopes=(("app", "staging"),), wait_ms=30_000))
        )
        await until(lambda: server.notifier.waiting == 2)
        server.draining.set()
        server.notifier.notify_all()
        envelope, reply = await asyncio.gather(stream, held)
        return envelope, reply, loop.time() - started

    envelope, reply, elapsed = asyncio.run(scenario())
    assert envelope is None  # → 204: the client reconnects to another replica
    assert reply.draining
    assert elapsed < 5


def test_lease_sweep_racing_a_result_still_allows_late_completion(
    server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a result is late is decided in the write transaction: a sweep committing
    after the submission's first read must not turn an acceptable result into a 409."""
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    server.clock.advance(61)
    real_put = server.results.put

    def put_after_the_sweep(key: str, content: bytes) -> None:
        # Runs between the ownership read (execution still claimed) and the write.
        assert server.sweeps.reclaim_leases(server.clock.now()) == 1
        real_put(key, content)

    monkeypatch.setattr(server.results, "put", put_after_the_sweep)
    final = server.agents.submit_result(AGENT, claim.execution_id, ok())
    assert final == (request_id, RequestStatus.EXECUTED)
    assert server.audit_types(request_id)[-2:] == ["execution.lost", "execution.completed"]
    assert json.loads(server.audit_rows("execution.completed")[0]["metadata_json"])["late"]


@pytest.mark.parametrize(
    ("mode", "error", "reason"),
    [
        (
            AuditRedaction.NONE,
            "driver error: duplicate key (email)=(a@b.c)",
            "driver error: duplicate key (email)=(a@b.c)",
        ),
        (AuditRedaction.LITERALS, "driver error: duplicate key (email)=(a@b.c)", "driver error"),
        (AuditRedaction.FULL, "token verification failed: expired", "token verification failed"),
        (AuditRedaction.LITERALS, "no class here, just 'secret' text", "execution failed"),
    ],
)
def test_failed_execution_audit_keeps_only_the_error_class_unless_redaction_is_none(
    tmp_path: Path, mode: AuditRedaction, error: str, reason: str
) -> None:
    harness = build_harness(tmp_path, default_settings(tmp_path, audit=AuditSettings(mode)))
    try:
        request_id = harness.create()
        harness.poll()
        claim = harness.claim(request_id)
        failed = JobResult(success=False, error_message=error, duration_ms=3)
        assert harness.agents.submit_result(AGENT, claim.execution_id, failed)[1] is (
            RequestStatus.FAILED
        )
        [event] = harness.audit_rows("execution.failed")
        assert event["reason"] == reason
        metadata = json.loads(event["metadata_json"])
        if mode is AuditRedaction.NONE:
            assert "error_length" not in metadata
        else:
            assert metadata["error_length"] == len(error)
        # The full text stays with the execution, behind result access.
        with harness.store.read() as session:
            execution = session.work.get_execution(claim.execution_id)
        assert execution is not None and execution.error_message == error
    finally:
        harness.close()
