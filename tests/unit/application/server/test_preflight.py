"""`RunPreflight` with fakes: the EXPLAIN handed to an agent, or why it was not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from application.server.ports.services import NotificationWaiter, dispatch_topic
from application.server.ports.work.agents import AgentUpsert
from application.server.ports.work.explain_jobs import PreflightOutcome, PreflightStatus
from application.server.preflight import (
    ExplainStatus,
    PreflightInput,
    PreflightReport,
    RunPreflight,
)
from application.server.requests.judgement import JudgeSql
from application.server.settings import DatabaseRegistration, ServerSettings
from domain.server.agent_registry import record_from_poll
from domain.server.errors import RateLimited
from domain.server.preflight import PreflightStatus as Status
from domain.server.rbac import BUILT_IN_ROLES, Grant, Permission, Principal, Role, SubjectType
from domain.server.sql_classification import ClassifiedStatement, StatementClass, classify_batch
from domain.server.workflows import AutoApprove, AutoApproveMode, Workflow
from domain.shared.jobs import AgentStatus
from domain.shared.scopes import Scope
from tests.fakes.clock import FakeClock
from tests.fakes.store import FakeServerStore

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PROD = Scope("app", "production")
ALICE = Principal("alice", SubjectType.USER, (BUILT_IN_ROLES["requester"],))


class OneQueryClassifier:
    def classify(self, sql: str, dialect: str) -> object:
        return classify_batch([ClassifiedStatement(sql, StatementClass.SELECT, "query")])

    def redact(self, sql: str, dialect: str) -> str:
        return "<redacted>"


class Waiter:
    def __init__(self, on_wait: Callable[[], None]) -> None:
        self._on_wait = on_wait

    async def wait(self, timeout_secs: float) -> bool:
        self._on_wait()
        await asyncio.sleep(0)
        return True

    def named_jobs(self) -> None:
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> NotificationWaiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


@dataclass
class Notifier:
    """Plays the agent: on the first wait it answers every claimed-or-pending job."""

    answer: Callable[[], None] = lambda: None
    topics: list[str] = field(default_factory=list)

    def arm(self, topics: Iterable[str]) -> NotificationWaiter:
        return Waiter(self.answer)

    def notify(self, topic: str, job: object = None) -> None:
        self.topics.append(topic)

    def notify_all(self) -> None:
        pass


@dataclass
class World:
    store: FakeServerStore = field(default_factory=FakeServerStore)
    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    notifier: Notifier = field(default_factory=Notifier)

    def __post_init__(self) -> None:
        settings = ServerSettings.for_state_dir(
            Path("/nonexistent"),
            databases=(DatabaseRegistration("app", ("production",)),),
            workflows=(Workflow(auto_approve=AutoApprove(AutoApproveMode.ALWAYS)),),
        )
        classifier = OneQueryClassifier()
        self.preflight = RunPreflight(
            store=self.store,
            settings=settings,
            clock=self.clock,
            classifier=classifier,  # type: ignore[arg-type]
            notifier=self.notifier,
            judge=JudgeSql(store=self.store, settings=settings, classifier=classifier),  # type: ignore[arg-type]
            recheck_secs=0.01,
        )

    def agent_polls(self) -> None:
        status = AgentStatus(
            in_flight=0, in_flight_preflight=0, max_concurrent=2, draining=False, uptime_secs=1
        )
        with self.store.write() as session:
            session.work.upsert_agent(
                AgentUpsert(record_from_poll("agent", (PROD,), status, self.clock.now())),
                self.clock.now(),
            )

    def run(
        self, sql: str = "SELECT 1", principal: Principal = ALICE, **fields: object
    ) -> PreflightReport:
        body = PreflightInput(database="app", environment="production", sql=sql, **fields)  # type: ignore[arg-type]
        return asyncio.run(self.preflight.run(principal, body))

    def jobs(self) -> list[object]:
        return list(self.store.work_state.preflights.values())


def test_the_plan_of_the_agent_is_the_answer(world: World) -> None:
    world.agent_polls()

    def answer() -> None:
        with world.store.write() as session:
            for job_id in list(world.store.work_state.preflights):
                session.work.claim_preflight_jobs([PROD], "agent", "tok", world.clock.now(), 5)
                session.work.finish_preflight_job(
                    job_id,
                    "agent",
                    "tok",
                    PreflightOutcome(PreflightStatus.COMPLETED, world.clock.now(), '[{"Plan":{}}]'),
                )

    world.notifier.answer = answer
    report = world.run()

    assert report.status is Status.REQUESTABLE
    assert report.explain.status is ExplainStatus.OK
    assert report.explain.plans == ((1, [{"Plan": {}}]),)
    assert dispatch_topic(PROD) in world.notifier.topics
    assert [e.event_type for e in world.store.events()] == ["preflight.attempted"]


def test_without_a_healthy_agent_nothing_is_queued(world: World) -> None:
    report = world.run()

    assert report.explain.status is ExplainStatus.UNAVAILABLE
    assert world.jobs() == []


def test_an_unanswered_job_times_out(world: World) -> None:
    world.agent_polls()

    report = world.run(explain_timeout_ms=5)

    assert report.explain.status is ExplainStatus.TIMEOUT
    assert len(world.jobs()) == 1


def test_a_user_with_three_outstanding_jobs_is_rate_limited(world: World) -> None:
    world.agent_polls()
    for _ in range(3):
        world.run(explain_timeout_ms=5)

    with pytest.raises(RateLimited):
        world.run(explain_timeout_ms=5)

    assert len(world.jobs()) == 3
    assert [e.event_type for e in world.store.events("preflight.rate_limited")] == [
        "preflight.rate_limited"
    ]


def test_a_caller_without_the_permission_create_needs_is_told_it_would_be_refused(
    world: World,
) -> None:
    preflight_only = Role("preflight-only", (Grant(Permission.REQUEST_PREFLIGHT),))
    auditor = Principal("avery", SubjectType.USER, (preflight_only,))

    report = world.run(principal=auditor, include_explain=False)

    assert report.status is Status.BLOCKED
    assert [b.code for b in report.blockers] == ["missing_permission"]
    assert "request.query" in report.blockers[0].message
    assert world.run(include_explain=False).status is Status.REQUESTABLE  # alice may query


@pytest.fixture
def world() -> World:
    return World()
