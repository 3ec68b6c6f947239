"""Graceful shutdown and escalating signals (docs/agent.md §2.10,
docs/agent.md §5 improvement 10), on the whole agent running on a thread over fakes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.agent.cancellation import CancelToken
from application.agent.database_registry import DatabaseRegistry
from application.agent.runner import Agent, AgentPorts
from application.agent.settings import AgentSettings
from domain.agent.errors import ServerUnreachable
from domain.shared.jobs import ExecutionOutput, PollRequest, PollResponse, PreflightJob
from domain.shared.operations import Operation
from tests.fakes.clock import FixedRandom, RealClock
from tests.fakes.database import FakeDatabase, FakeDatabaseFactory
from tests.fakes.probes import FakeProbes
from tests.fakes.server import FakeServer
from tests.unit.conftest import PG_URL, Harness, make_settings, wait_until

MIGRATION = '{"migrations":[{"version":"20240101000000","name":"add_index"}]}'


# --- hand-written fakes for this file ---------------------------------------------------


class CancelWatchingDatabase(FakeDatabase):
    """Also lets the agent kill *migrations*, and counts it: a migration must never be."""

    def __init__(self) -> None:
        super().__init__()
        self.migration_kills = 0

    def run_migration(
        self, operation: Operation, detail: str, timeout_secs: int, cancel: CancelToken
    ) -> ExecutionOutput:
        def kill() -> None:
            self.migration_kills += 1

        unregister = cancel.on_cancel(kill)
        try:
            return super().run_migration(operation, detail, timeout_secs, cancel)
        finally:
            unregister()


class SlowExplainDatabase(FakeDatabase):
    """EXPLAIN blocks until `release` is set, like a planner on a busy database."""

    def explain(self, sql: str, timeout_secs: int) -> Any:
        self.running.set()
        self.release.wait(10)
        return super().explain(sql, timeout_secs)


class PreflightOnDrainServer(FakeServer):
    """Hands the agent a preflight job in its draining poll (the server claims it for us)."""

    def __init__(self, clock: object) -> None:
        super().__init__(clock)
        self.drain_preflight: PreflightJob | None = None

    def poll(self, request: PollRequest) -> PollResponse:
        if request.status.draining and self.drain_preflight is None:
            self.drain_preflight = self.add_preflight("SELECT * FROM orders")
        return super().poll(request)


class HookedPollServer(FakeServer):
    """Runs `before_poll(request)` as each poll arrives, atomically with its answer."""

    def __init__(self, clock: object) -> None:
        super().__init__(clock)
        self.before_poll: Callable[[PollRequest], None] = lambda request: None

    def poll(self, request: PollRequest) -> PollResponse:
        with self._cond:  # re-entrant: no dispatch can slip between the hook and the answer
            self.before_poll(request)
            return super().poll(request)


def wire(
    settings: AgentSettings | None = None,
    *,
    server: FakeServer | None = None,
    database: FakeDatabase | None = None,
) -> Harness:
    """Like conftest.build_harness, with a server or database of the test's choosing."""
    settings = settings or make_settings()
    clock = RealClock()
    server = server or FakeServer(clock)
    factory = FakeDatabaseFactory()
    if database is not None:
        factory.databases[PG_URL] = database
    probes = FakeProbes()
    registry = DatabaseRegistry(settings.databases, factory, clock)
    ports = AgentPorts(
        server=server,
        verifier=Ed25519Verifier(),
        probes=probes,
        clock=clock,
        random=FixedRandom(0.01),
    )
    agent = Agent(settings, ports, registry, agent_build="test-build")
    return Harness(agent=agent, server=server, databases=factory, probes=probes)


def draining_polls(h: Harness) -> list[PollRequest]:
    return [p for p in list(h.server.polls) if p.status.draining]


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    """Started harnesses are forced down and their hanging databases released at teardown."""
    started: list[Harness] = []
    yield started
    for h in started:
        for db in h.databases.databases.values():
            db.release.set()
        if h.thread is not None and h.thread.is_alive():
            h.agent.request_shutdown()
            h.agent.request_shutdown()
            h.thread.join(10)


def start(harnesses: list[Harness], h: Harness) -> Harness:
    harnesses.append(h)
    h.start()
    assert wait_until(lambda: h.probes.ready), "agent never became ready"
    return h


def start_hanging_job(h: Harness, operation: str = "execute_select", sql: str = "SELECT 1") -> str:
    h.db().hang = True
    request = h.server.dispatch(sql, operation=operation)
    assert h.db().running.wait(5), "the job never started"
    return request.id


# --- first signal: drain --------------------------------------------------------------


def test_first_signal_stops_intake_and_waits_for_the_job_in_flight(
    harnesses: list[Harness],
) -> None:
    h = start(harnesses, wire())
    running = start_hanging_job(h)
    h.agent.request_shutdown()
    assert wait_until(lambda: bool(draining_polls(h)))
    late = h.server.dispatch("SELECT 2")
    assert h.thread is not None and h.thread.is_alive()
    h.db().release.set()
    assert h.wait_exit() == 0
    result = h.server.result_for(running)
    assert result is not None and result.success
    assert late.id not in [request_id for request_id, _ in h.server.claims]
    assert late.status == "dispatched"


def test_draining_poll_says_draining_and_asks_for_no_jobs(harnesses: list[Harness]) -> None:
    h = start(harnesses, wire())
    start_hanging_job(h)
    h.agent.request_shutdown()
    assert wait_until(lambda: bool(draining_polls(h)))
    first = draining_polls(h)[0]
    assert first.limit == 0
    assert first.wait_ms == 0
    assert first.status.in_flight == 1
    assert len(first.status.active_jobs) == 1
    h.db().release.set()
    assert h.wait_exit() == 0
    after = h.server.polls[h.server.polls.index(first) :]
    assert all(p.status.draining and p.limit == 0 for p in after)
    assert after[-1].status.in_flight == 0  # the final "all done" poll


def test_clean_drain_exits_0_and_clears_both_probes(harnesses: list[Harness]) -> None:
    h = start(harnesses, wire())
    start_hanging_job(h)
    h.agent.request_shutdown()
    assert wait_until(lambda: h.probes.ready is False)
    h.db().release.set()
    assert h.wait_exit() == 0
    assert h.probes.ready_history == [True, False]
    assert h.probes.cleared and not h.probes.alive


def test_job_arriving_in_a_poll_answered_after_the_signal_is_not_claimed(
    harnesses: list[Harness],
) -> None:
    """A signal that lands while a poll is in flight: its jobs are left for other agents."""
    server = HookedPollServer(RealClock())
    h = start(harnesses, wire(server=server))

    def signal_while_answering(request: PollRequest) -> None:
        if "late" in server.requests and not h.agent.signals.drain.is_set():
            h.agent.request_shutdown()  # SIGTERM arrives while the server answers

    server.before_poll = signal_while_answering
    late = server.dispatch("SELECT 2", request_id="late")
    assert h.wait_exit() == 0
    assert late.id not in [request_id for request_id, _ in h.server.claims]
    assert late.status == "dispatched"


# --- escalation: drain timeout, second signal ---------------------------------------------


def test_drain_timeout_cancels_the_statement_and_exits_1(harnesses: list[Harness]) -> None:
    h = start(harnesses, wire(make_settings(drain_timeout_secs=1)))
    running = start_hanging_job(h)
    h.agent.request_shutdown()
    assert h.wait_exit() == 1
    assert h.db().kills == 1
    result = h.server.result_for(running)
    assert result is not None and not result.success
    assert "query cancelled" in (result.error_message or "")


def test_second_signal_during_drain_cancels_in_flight_and_exits_1(
    harnesses: list[Harness],
) -> None:
    h = start(harnesses, wire())  # drain_timeout_secs=5: the second signal comes first
    running = start_hanging_job(h)
    h.agent.request_shutdown()
    assert wait_until(lambda: bool(draining_polls(h)))
    h.agent.request_shutdown()
    assert h.wait_exit(4) == 1
    assert h.db().kills == 1
    result = h.server.result_for(running)
    assert result is not None and not result.success
    assert "query cancelled" in (result.error_message or "")


def test_second_signal_never_cancels_a_migration(
    harnesses: list[Harness], caplog: pytest.LogCaptureFixture
) -> None:
    db = CancelWatchingDatabase()
    h = start(harnesses, wire(database=db))
    running = start_hanging_job(h, operation="migrate_up", sql=MIGRATION)
    h.agent.request_shutdown()
    assert wait_until(lambda: bool(draining_polls(h)))
    h.agent.request_shutdown()
    assert wait_until(lambda: any("forced shutdown" in r.message for r in caplog.records))
    assert db.running.is_set()  # still migrating
    db.release.set()
    assert h.wait_exit() == 1
    assert db.kills == 0
    assert db.migration_kills == 0
    result = h.server.result_for(running)
    assert result is not None and result.success


# --- signals outside a job; EXPLAIN work ---------------------------------------------------


def test_signal_during_startup_retries_exits_0(harnesses: list[Harness]) -> None:
    h = wire()
    harnesses.append(h)
    h.server.fail("fetch_public_key", ServerUnreachable("connection refused"), times=10_000)
    h.start()
    assert wait_until(lambda: h.server.calls.count("fetch_public_key") >= 2)
    h.agent.request_shutdown()
    assert h.wait_exit() == 0
    assert h.server.polls == []
    assert h.probes.ready_history == []
    assert h.probes.cleared


def test_preflight_received_in_the_draining_poll_is_answered_with_an_error(
    harnesses: list[Harness],
) -> None:
    server = PreflightOnDrainServer(RealClock())
    h = start(harnesses, wire(server=server))
    h.agent.request_shutdown()
    assert h.wait_exit() == 0
    preflight = server.drain_preflight
    assert preflight is not None
    outcome = server.preflight_results.get(preflight.id)
    assert outcome is not None, "the preflight was dropped"
    assert outcome.plan is None
    assert outcome.error and "shutting down" in outcome.error


def test_drain_waits_for_a_dry_run_explain_in_flight(harnesses: list[Harness]) -> None:
    db = SlowExplainDatabase()
    h = start(harnesses, wire(database=db))
    job = h.server.add_dry_run("SELECT * FROM orders")
    assert db.running.wait(5), "the EXPLAIN never started"
    h.agent.request_shutdown()
    assert wait_until(lambda: bool(draining_polls(h)))
    assert draining_polls(h)[0].status.in_flight_preflight == 1
    assert h.thread is not None and h.thread.is_alive()
    assert job.id not in h.server.dry_run_results
    db.release.set()
    assert h.wait_exit() == 0
    assert h.server.dry_run_results[job.id].plan == db.plan
