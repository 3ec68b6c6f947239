"""Request and agent-protocol use cases on a real store (SQLite in tmp_path).

docs/server.md §1.3 (create), §1.5 (claim, heartbeat, result), §1.8 (results); the
docs/protocol.md §3 decisions; and our improvements: exact-source plans signed at claim,
atomic auto-dispatch, late completion, redacted audit SQL, persisted result summaries.

The `ServerHarness` here is shared with `test_sweeps.py`, the request use-case tests in
`requests/`, the agent-protocol use-case tests in `agent_protocol/` and the API
integration tests.
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

from adapters.crypto.ed25519_signer import Ed25519Signer
from adapters.files.result_store import LocalResultStore
from adapters.http_api.notifier import AsyncioNotifier
from adapters.http_api.routes_agent import AgentUseCases
from adapters.http_api.routes_requests import RequestUseCases
from adapters.memory.result_relay import InMemoryResultRelay
from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from adapters.store.engine import create_store_engine
from adapters.store.migrations import migrate
from adapters.store.result_contents import (
    SMALL_RESULT_BYTES,
    SmallResultsInStore,
    StoreResultContents,
)
from adapters.store.schema import audit_events
from adapters.store.sql_store import SqlStore
from application.server.agent_protocol.agents import ListAgents
from application.server.agent_protocol.claim import ClaimJob
from application.server.agent_protocol.explain import (
    ClaimDryRunJob,
    SubmitDryRunResult,
    SubmitPreflightResult,
)
from application.server.agent_protocol.heartbeat import RecordHeartbeat
from application.server.agent_protocol.poll import PollForWork, PollReply
from application.server.agent_protocol.public_key import GetPublicKey
from application.server.agent_protocol.results import SubmitResult
from application.server.agent_protocol.schema_sync import SyncSchema
from application.server.ports.services import ResultContentStore, SqlClassifier
from application.server.ports.store import AuditListener
from application.server.ports.work.requests import RequestRecord
from application.server.requests.cancel import CancelRequest
from application.server.requests.common import new_uuid
from application.server.requests.create import CreateRequest, CreateRequestInput
from application.server.requests.fresh_results import FreshResults
from application.server.requests.queries import GetRequest, ListExecutions, ListRequests
from application.server.requests.results import GetResultContent, WaitForResult
from application.server.requests.resume import ResumeRequest
from application.server.settings import DatabaseRegistration, ServerSettings
from application.server.sweeps import ServerSweeps
from domain.server.api_tokens import SubjectType
from domain.server.errors import PayloadTooLarge
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
from domain.shared.jobs import AgentStatus, ClaimedJob, JobResult, PollRequest
from domain.shared.scopes import Capabilities, Scope
from tests.fakes.metrics import RecordingServerMetrics
from tests.server_keys import signer_from_store

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


def poll_request(scopes: tuple[tuple[str, str], ...], **fields: Any) -> PollRequest:
    """A poll advertising `scopes` (database, environment pairs) and `operations`, if given."""
    operations = fields.pop("operations", ())
    capabilities = Capabilities(tuple(Scope(*scope) for scope in scopes), operations)
    return PollRequest(capabilities=capabilities, **fields)


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
    agents: AgentUseCases
    sweeps: ServerSweeps
    draining: threading.Event = field(default_factory=threading.Event)
    metrics: RecordingServerMetrics = field(default_factory=RecordingServerMetrics)

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
        return asyncio.run(
            self.agents.poll_for_work.poll(principal, poll_request(scopes, **fields))
        )

    def claim(
        self,
        request_id: str,
        principal: Principal = AGENT,
        lease: int | None = None,
        agent_id: str | None = None,
    ) -> ClaimedJob:
        return self.agents.claim_job.claim(principal, request_id, lease, agent_id)

    def get(self, request_id: str) -> RequestRecord:
        with self.store.read() as session:
            record = session.work.get_request(request_id)
        assert record is not None
        return record

    def status(self, request_id: str) -> RequestStatus:
        return self.get(request_id).status

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
    classifier: SqlClassifier | None = None,
    listener: AuditListener | None = None,
    small_results_in_store: bool = False,
    poll_recheck_secs: float = 0.05,
) -> ServerHarness:
    """`small_results_in_store`: bodies up to `SMALL_RESULT_BYTES` go to the store's
    table, as the server's local backend does; by default every body is a file.
    `poll_recheck_secs`: how often a held poll looks in the store unprompted."""
    settings = settings or default_settings(state_dir)
    engine = create_store_engine(settings.store.url)
    migrate(engine)
    metrics = RecordingServerMetrics()
    store = SqlStore(engine, metrics, listener)
    clock = clock or MutableClock()
    notifier = AsyncioNotifier()
    signer = signer or signer_from_store(store)
    results = LocalResultStore(
        settings.result_storage.root_dir, settings.result_storage.max_persist_bytes
    )
    contents: ResultContentStore = results
    if small_results_in_store:
        contents = SmallResultsInStore(
            StoreResultContents(engine, SMALL_RESULT_BYTES, store.transaction),
            results,
            SMALL_RESULT_BYTES,
        )
    relay = InMemoryResultRelay(
        settings.result_channel.max_slots, settings.result_channel.slot_ttl_secs
    )
    draining = threading.Event()
    classifier = classifier or SqlglotClassifier()
    fresh = FreshResults()
    claim_job = ClaimJob(
        store=store,
        settings=settings,
        clock=clock,
        signer=signer,
        notifier=notifier,
        draining=draining.is_set,
        new_id=new_id,
        metrics=metrics,
    )
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
                metrics=metrics,
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
                result_store=contents,
                result_relay=relay,
                draining=draining.is_set,
                wait_secs=result_stream_secs,
                recheck_secs=0.05,
                fresh=fresh,
            ),
            get_result_content=GetResultContent(
                store=store,
                settings=settings,
                clock=clock,
                result_store=contents,
                result_relay=relay,
            ),
            list_executions=ListExecutions(store=store),
            resume_request=ResumeRequest(
                store=store, settings=settings, clock=clock, notifier=notifier, new_id=new_id
            ),
        ),
        agents=AgentUseCases(
            get_public_key=GetPublicKey(signer=signer),
            poll_for_work=PollForWork(
                store=store,
                settings=settings,
                clock=clock,
                notifier=notifier,
                server_version=SERVER_VERSION,
                draining=draining.is_set,
                new_id=new_id,
                recheck_secs=poll_recheck_secs,
                claim_job=claim_job,
            ),
            claim_job=claim_job,
            record_heartbeat=RecordHeartbeat(store=store, clock=clock),
            submit_result=SubmitResult(
                store=store,
                settings=settings,
                clock=clock,
                notifier=notifier,
                result_store=contents,
                result_relay=relay,
                new_id=new_id,
                fresh=fresh,
            ),
            sync_schema=SyncSchema(store=store, settings=settings, clock=clock, new_id=new_id),
            claim_dry_run_job=ClaimDryRunJob(store=store, clock=clock, new_id=new_id),
            submit_dry_run_result=SubmitDryRunResult(store=store, clock=clock, notifier=notifier),
            submit_preflight_result=SubmitPreflightResult(
                store=store, clock=clock, notifier=notifier
            ),
            list_agents=ListAgents(store=store, clock=clock),
        ),
        sweeps=ServerSweeps(
            store=store, settings=settings, notifier=notifier, new_id=new_id, metrics=metrics
        ),
        draining=draining,
        metrics=metrics,
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
    assert server.agents.record_heartbeat.record(AGENT, claim.execution_id) is False
    server.requests.cancel_request.cancel(ALICE, request_id)
    assert server.agents.record_heartbeat.record(AGENT, claim.execution_id) is True
    final = server.agents.submit_result.submit(
        AGENT, claim.execution_id, JobResult(success=False, error_message="query cancelled")
    )
    assert final == (request_id, RequestStatus.CANCELLED)
    assert server.status(request_id) is RequestStatus.CANCELLED


# --- the adapters these use cases stand on -----------------------------------------------------


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


def test_a_waiter_collects_the_jobs_named_until_a_notification_names_none(
    server: ServerHarness,
) -> None:
    notifier = AsyncioNotifier()
    first = server.get(server.create())
    second = server.get(server.create())

    async def scenario() -> list[tuple[str, ...] | None]:
        seen: list[tuple[str, ...] | None] = []

        def named() -> tuple[str, ...] | None:
            jobs = waiter.named_jobs()
            return None if jobs is None else tuple(job.id for job in jobs)

        with notifier.arm(["a"]) as waiter:
            await asyncio.to_thread(notifier.notify, "a", first)
            await asyncio.to_thread(notifier.notify, "a", second)
            await waiter.wait(5)
            seen.append(named())
            await asyncio.to_thread(notifier.notify, "a", first)
            await asyncio.to_thread(notifier.notify, "a")  # names nothing: look
            await waiter.wait(5)
            seen.append(named())
            await asyncio.to_thread(notifier.notify, "a", second)
            await waiter.wait(5)
            seen.append(named())  # a new wait starts a new collection
            await waiter.wait(0.01)
            seen.append(named())  # timed out: nothing named
        return seen

    assert asyncio.run(scenario()) == [(first.id, second.id), None, (second.id,), ()]


def test_draining_releases_held_long_polls(server: ServerHarness) -> None:
    request_id = server.create()

    async def scenario() -> tuple[object, PollReply, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = asyncio.create_task(server.requests.wait_for_result.wait(ALICE, request_id))
        held = asyncio.create_task(
            server.agents.poll_for_work.poll(
                AGENT, poll_request((("app", "staging"),), wait_ms=30_000)
            )
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
