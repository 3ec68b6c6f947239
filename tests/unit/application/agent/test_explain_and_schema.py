"""Dry-run and preflight EXPLAIN jobs, and schema sync (startup, periodic, failures)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.agent.database_registry import DatabaseRegistry
from application.agent.explain_jobs import ExplainRunner
from application.agent.job_tracker import JobTracker
from application.agent.runner import Agent, AgentPorts
from application.agent.schema_sync import SchemaSync
from application.agent.settings import AgentSettings, DatabaseSettings, SchemaSyncSettings
from domain.agent.errors import DatabaseError, ServerConflict, ServerError, ServerNotFound
from domain.shared.jobs import ExplainOutcome
from tests.fakes.clock import FakeClock, FixedRandom, RealClock
from tests.fakes.database import FakeDatabase, FakeDatabaseFactory, connectivity_error
from tests.fakes.probes import FakeProbes
from tests.fakes.server import FakeServer
from tests.unit.conftest import (
    APP_PROD,
    APP_STAGING,
    MY_URL,
    PG_URL,
    Harness,
    build_harness,
    make_settings,
)

STAGING_URL = "postgres://agent:secret@db.internal:5432/app_staging"


# --- test-local servers -----------------------------------------------------------------


class GatedServer(FakeServer):
    """Holds dry-run claims and preflight answers until the test opens the gate, so EXPLAIN
    jobs stay in flight for as long as the test needs."""

    def __init__(self, clock: object, **kwargs: Any) -> None:
        super().__init__(clock, **kwargs)
        self.gate = threading.Event()

    def claim_dry_run(self, job_id: str) -> str:
        self.gate.wait(5)
        return super().claim_dry_run(job_id)

    def submit_preflight_result(
        self, job_id: str, claim_token: str, outcome: ExplainOutcome
    ) -> None:
        self.gate.wait(5)
        super().submit_preflight_result(job_id, claim_token, outcome)


# --- rigs -------------------------------------------------------------------------------


@pytest.fixture
def agents() -> Iterator[list[Harness]]:
    started: list[Harness] = []
    yield started
    for h in started:
        if isinstance(h.server, GatedServer):
            h.server.gate.set()
        if h.thread is not None and h.thread.is_alive():
            h.agent.request_shutdown()
            h.agent.request_shutdown()
            h.thread.join(10)


@pytest.fixture
def run_agent(agents: list[Harness]) -> Callable[..., Harness]:
    def start(settings: AgentSettings | None = None, server: FakeServer | None = None) -> Harness:
        settings = settings or make_settings()
        if server is None:
            h = build_harness(settings)
        else:
            factory = FakeDatabaseFactory()
            probes = FakeProbes()
            ports = AgentPorts(
                server=server,
                verifier=Ed25519Verifier(),
                probes=probes,
                clock=RealClock(),
                random=FixedRandom(0.01),
            )
            registry = DatabaseRegistry(settings.databases, factory, RealClock())
            agent = Agent(settings, ports, registry, agent_build="test-build")
            h = Harness(agent=agent, server=server, databases=factory, probes=probes)
        agents.append(h)
        return h.start()

    return start


@dataclass
class ExplainRig:
    server: FakeServer
    registry: DatabaseRegistry
    tracker: JobTracker
    runner: ExplainRunner
    databases: FakeDatabaseFactory

    def db(self, url: str = PG_URL) -> FakeDatabase:
        return self.databases(url)


def explain_rig(
    *, max_parallel: int = 2, server: FakeServer | None = None, down: bool = False
) -> ExplainRig:
    """An ExplainRunner over app/production (up) and app/staging (down if `down`)."""
    clock = RealClock()
    server = server or FakeServer(clock)
    factory = FakeDatabaseFactory()
    databases = (DatabaseSettings(APP_PROD, PG_URL), DatabaseSettings(APP_STAGING, STAGING_URL))
    registry = DatabaseRegistry(databases, factory, clock)
    registry.connect(APP_PROD, 1.0)
    if down:
        registry.mark_down(APP_STAGING, "connection refused")
    else:
        registry.connect(APP_STAGING, 1.0)
    tracker = JobTracker()
    runner = ExplainRunner(server, registry, tracker, max_parallel=max_parallel)
    return ExplainRig(server, registry, tracker, runner, factory)


def down_forever(h: Harness) -> None:
    """Take app/production out of service and keep every reconnect failing."""
    h.db().connect_errors.extend(connectivity_error() for _ in range(10_000))
    h.agent.registry.mark_down(APP_PROD, "server closed the connection unexpectedly")


# --- dry-run ----------------------------------------------------------------------------


def test_dry_run_is_claimed_explained_and_answered_with_its_claim_token(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    job = h.server.add_dry_run("SELECT * FROM users WHERE id = 1")
    # The fake refuses an answer whose claim token is not the one it handed out (409).
    assert h.server.wait_for(lambda: job.id in h.server.dry_run_results)
    outcome = h.server.dry_run_results[job.id]
    assert outcome == ExplainOutcome(plan=h.db().plan)
    assert h.db().explained == ["SELECT * FROM users WHERE id = 1"]
    assert h.db().executed == []
    assert "claim_dry_run" in h.server.calls


def test_dry_run_claim_conflict_is_skipped_quietly(run_agent: Callable[..., Harness]) -> None:
    h = run_agent()
    h.server.fail("claim_dry_run", ServerConflict(409, "already_claimed"), times=10_000)
    h.server.add_dry_run("SELECT 1")
    assert h.server.wait_for(lambda: h.server.calls.count("claim_dry_run") >= 3)
    assert h.server.dry_run_results == {}
    assert h.db().explained == []
    assert "submit_dry_run_result" not in h.server.calls
    assert h.thread is not None and h.thread.is_alive()


@pytest.mark.parametrize(
    "error", [ServerNotFound(404, "gone"), ServerError(400, "dry-run job not found")]
)
def test_dry_run_that_cannot_be_claimed_is_skipped_quietly(error: ServerError) -> None:
    rig = explain_rig()
    rig.server.fail("claim_dry_run", error)
    job = rig.server.add_dry_run("SELECT 1")
    assert rig.runner.offer_dry_run(job)
    assert rig.tracker.wait_idle(5)
    assert rig.server.dry_run_results == {}
    assert rig.db().explained == []


def test_dry_run_explain_analyze_is_refused_without_touching_the_database(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    job = h.server.add_dry_run("EXPLAIN ANALYZE DELETE FROM users")
    assert h.server.wait_for(lambda: job.id in h.server.dry_run_results)
    outcome = h.server.dry_run_results[job.id]
    assert outcome.plan is None
    assert (outcome.error or "").startswith("explain refused: ")
    assert "ANALYZE" in (outcome.error or "")
    assert h.db().explained == []


def test_dry_run_explain_error_is_sent_as_the_answer() -> None:
    rig = explain_rig()
    rig.db().fail_next = DatabaseError("permission denied for table users")
    job = rig.server.add_dry_run("SELECT * FROM users")
    assert rig.runner.offer_dry_run(job)
    assert rig.server.wait_for(lambda: job.id in rig.server.dry_run_results)
    assert rig.server.dry_run_results[job.id] == ExplainOutcome(
        error="permission denied for table users"
    )


def test_dry_run_for_an_unavailable_database_is_left_for_other_agents() -> None:
    rig = explain_rig(down=True)
    job = rig.server.add_dry_run("SELECT 1", scope=APP_STAGING)
    assert rig.runner.offer_dry_run(job) is False
    assert "claim_dry_run" not in rig.server.calls
    assert rig.tracker.in_flight_explains == 0


def test_dry_runs_in_flight_are_bounded_by_max_concurrent_tasks() -> None:
    server = GatedServer(RealClock())
    rig = explain_rig(max_parallel=2, server=server)
    jobs = [server.add_dry_run(f"SELECT {n}") for n in range(3)]
    assert [rig.runner.offer_dry_run(job) for job in jobs] == [True, True, False]
    assert rig.tracker.in_flight_explains == 2
    server.gate.set()
    assert rig.tracker.wait_idle(5)
    assert set(server.dry_run_results) == {jobs[0].id, jobs[1].id}
    assert rig.runner.offer_dry_run(jobs[2])  # a slot is free again
    assert rig.server.wait_for(lambda: jobs[2].id in server.dry_run_results)


def test_dry_run_bound_is_one_when_max_concurrent_tasks_is_zero() -> None:
    server = GatedServer(RealClock())
    rig = explain_rig(max_parallel=0, server=server)
    first, second = server.add_dry_run("SELECT 1"), server.add_dry_run("SELECT 2")
    assert rig.runner.offer_dry_run(first)
    assert not rig.runner.offer_dry_run(second)
    server.gate.set()
    assert rig.tracker.wait_idle(5)


def test_the_same_dry_run_offered_twice_runs_once() -> None:
    server = GatedServer(RealClock())
    rig = explain_rig(max_parallel=2, server=server)
    job = server.add_dry_run("SELECT 1")
    assert rig.runner.offer_dry_run(job)
    assert not rig.runner.offer_dry_run(job)
    server.gate.set()
    assert rig.tracker.wait_idle(5)
    assert server.calls.count("claim_dry_run") == 1


# --- preflight ----------------------------------------------------------------------------


def test_preflight_is_answered_with_a_plan(run_agent: Callable[..., Harness]) -> None:
    h = run_agent()
    job = h.server.add_preflight("SELECT * FROM orders")
    assert h.server.wait_for(lambda: job.id in h.server.preflight_results)
    assert h.server.preflight_results[job.id] == ExplainOutcome(plan=h.db().plan)
    assert h.db().explained == ["SELECT * FROM orders"]


def test_preflight_gets_an_error_answer_when_its_database_is_down(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    assert h.server.wait_for(lambda: len(h.server.polls) >= 2)  # past startup
    down_forever(h)
    job = h.server.add_preflight("SELECT * FROM orders")
    assert h.server.wait_for(lambda: job.id in h.server.preflight_results)
    outcome = h.server.preflight_results[job.id]
    assert outcome.plan is None
    assert outcome.error == "database app/production is unavailable on this agent"
    assert h.db().explained == []


def test_preflight_is_answered_even_when_every_explain_slot_is_taken() -> None:
    server = GatedServer(RealClock())
    rig = explain_rig(max_parallel=1, server=server)
    assert rig.runner.offer_dry_run(server.add_dry_run("SELECT 1"))
    preflight = server.add_preflight("SELECT 2")
    assert rig.runner.accept_preflight(preflight)
    assert rig.tracker.in_flight_explains == 2
    server.gate.set()
    assert server.wait_for(lambda: preflight.id in server.preflight_results)
    assert rig.tracker.wait_idle(5)


def test_preflights_in_flight_are_reported_in_the_poll_status(
    run_agent: Callable[..., Harness],
) -> None:
    server = GatedServer(RealClock())
    h = run_agent(server=server)
    job = server.add_preflight("SELECT * FROM orders")
    assert server.wait_for(lambda: any(p.status.in_flight_preflight == 1 for p in server.polls))
    assert job.id not in server.preflight_results
    server.gate.set()
    assert server.wait_for(lambda: job.id in server.preflight_results)
    assert server.wait_for(lambda: server.polls[-1].status.in_flight_preflight == 0)
    assert h.agent.tracker.in_flight_explains == 0


# --- schema sync --------------------------------------------------------------------------


def sync_settings(**overrides: Any) -> SchemaSyncSettings:
    return SchemaSyncSettings(**{"enabled": True, "sync_on_startup": True, **overrides})


def test_schema_is_synced_on_startup_when_enabled(run_agent: Callable[..., Harness]) -> None:
    h = run_agent(make_settings(schema_sync=sync_settings()))
    h.db().schema = {"tables": [{"name": "users"}]}
    assert h.server.wait_for(lambda: bool(h.server.schema_reports))
    (report,) = h.server.schema_reports
    assert (report.scope, report.status, report.dialect) == (APP_PROD, "ready", "postgresql")
    assert report.error_message is None
    assert report.snapshot is not None


def test_schema_sync_reports_the_mysql_dialect_for_a_mysql_url(
    run_agent: Callable[..., Harness],
) -> None:
    settings = make_settings(
        databases=(DatabaseSettings(APP_PROD, MY_URL),), schema_sync=sync_settings()
    )
    h = run_agent(settings)
    assert h.server.wait_for(lambda: bool(h.server.schema_reports))
    assert h.server.schema_reports[0].dialect == "mysql"


@pytest.mark.parametrize(
    "settings",
    [
        SchemaSyncSettings(enabled=False, sync_on_startup=True),
        SchemaSyncSettings(enabled=True, sync_on_startup=False, interval_secs=0),
    ],
    ids=["disabled", "no-startup-sync"],
)
def test_schema_is_not_synced_on_startup_unless_enabled_with_sync_on_startup(
    settings: SchemaSyncSettings,
) -> None:
    server, registry = FakeServer(FakeClock()), _registry()
    sync = SchemaSync(server, registry, FakeClock(), FixedRandom(), settings, threading.Event())
    assert sync.start_background() is None
    assert server.schema_reports == []


def test_disabled_schema_sync_sends_nothing_while_the_agent_runs(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent(make_settings(schema_sync=SchemaSyncSettings(enabled=False)))
    assert h.server.wait_for(lambda: len(h.server.polls) >= 5)
    assert h.server.schema_reports == []


def _registry() -> DatabaseRegistry:
    registry = DatabaseRegistry(
        (DatabaseSettings(APP_PROD, PG_URL),), FakeDatabaseFactory(), RealClock()
    )
    registry.connect(APP_PROD, 1.0)
    return registry


def _sync(server: FakeServer, registry: DatabaseRegistry, **settings: Any) -> SchemaSync:
    return SchemaSync(
        server, registry, FakeClock(), FixedRandom(), sync_settings(**settings), threading.Event()
    )


def test_schema_collection_failure_is_reported_as_failed_with_its_error() -> None:
    server = FakeServer(FakeClock())
    factory = FakeDatabaseFactory()
    registry = DatabaseRegistry((DatabaseSettings(APP_PROD, PG_URL),), factory, RealClock())
    registry.connect(APP_PROD, 1.0)
    factory(PG_URL).schema_error = DatabaseError("permission denied for schema private")
    assert _sync(server, registry).sync_scope(APP_PROD) is True
    (report,) = server.schema_reports
    assert (report.status, report.snapshot) == ("failed", None)
    assert report.error_message == "permission denied for schema private"
    assert report.dialect == "postgresql"


@pytest.mark.parametrize(
    "error",
    [ServerNotFound(404, "not found"), ServerError(501, "not implemented")],
    ids=["404", "501"],
)
def test_schema_sync_unsupported_by_the_server_is_logged_once_and_not_fatal(
    error: ServerError, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer(FakeClock())
    server.fail("submit_schema", error, times=3)
    sync = _sync(server, _registry())
    with caplog.at_level(logging.INFO, logger="dbward.agent.schema"):
        results = [sync.sync_scope(APP_PROD) for _ in range(3)]
    assert results == [False, False, False]
    unsupported = [r for r in caplog.records if "not supported" in r.getMessage()]
    assert len(unsupported) == 1
    assert sync.sync_scope(APP_PROD) is True  # and later syncs still go out


def test_schema_sync_other_server_errors_are_not_fatal() -> None:
    server = FakeServer(FakeClock())
    server.fail("submit_schema", ServerError(503, "unavailable"))
    sync = _sync(server, _registry())
    assert sync.sync_scope(APP_PROD) is False
    assert sync.sync_scope(APP_PROD) is True


def test_schema_sync_skips_a_database_that_is_down() -> None:
    server = FakeServer(FakeClock())
    registry = _registry()
    registry.mark_down(APP_PROD, "connection refused")
    assert _sync(server, registry).sync_scope(APP_PROD) is False
    assert server.schema_reports == []


class StopAfterWaits(FakeClock):
    """A fake clock whose `limit`-th wait reports the stop event: ends a background loop."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def wait(self, event: threading.Event, timeout_secs: float) -> bool:
        if len(self.waits) >= self.limit:
            event.set()
        return super().wait(event, timeout_secs)


@pytest.mark.parametrize(("fraction", "expected_wait"), [(0.0, 600.0), (1.0, 660.0)])
def test_periodic_schema_sync_waits_the_interval_plus_up_to_ten_percent_jitter(
    fraction: float, expected_wait: float
) -> None:
    server = FakeServer(FakeClock())
    clock = StopAfterWaits(limit=3)
    random = FixedRandom(fraction)
    settings = sync_settings(sync_on_startup=False, interval_secs=600)
    sync = SchemaSync(server, _registry(), clock, random, settings, threading.Event())
    thread = sync.start_background()
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    assert clock.waits == [expected_wait] * 3
    assert all(600.0 <= wait <= 660.0 for wait in clock.waits)
    assert random.calls == [(0.0, 60.0)] * 4
    assert len(server.schema_reports) == 3  # one sync after each completed wait


def test_periodic_schema_sync_also_syncs_at_startup_when_asked() -> None:
    server = FakeServer(FakeClock())
    clock = StopAfterWaits(limit=1)
    settings = sync_settings(sync_on_startup=True, interval_secs=60)
    sync = SchemaSync(server, _registry(), clock, FixedRandom(0.5), settings, threading.Event())
    thread = sync.start_background()
    assert thread is not None
    thread.join(5)
    assert clock.waits == [63.0]
    assert len(server.schema_reports) == 2  # at startup, then after the first interval
