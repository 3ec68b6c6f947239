"""Startup (docs/agent.md §2.1, docs/agent.md §5 improvement 7).

Most tests drive `application.agent.startup.Startup` through an Agent wired to fakes with a
`FakeClock`, so backoff sequences are asserted exactly and no test waits in real time.
Tests that need real concurrency (parallel database connects) use `RealClock`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.agent.database_registry import DatabaseRegistry
from application.agent.runner import Agent, AgentPorts
from application.agent.settings import AgentSettings, DatabaseSettings
from application.agent.startup import StartupOutcome, StartupStatus
from domain.agent.database_health import DatabaseState
from domain.agent.errors import (
    DatabaseAuthError,
    DatabaseUnavailable,
    ServerError,
    ServerUnreachable,
)
from domain.shared.jobs import PollRequest, PollResponse
from domain.shared.versions import AGENT_PROTOCOL_VERSION
from tests.fakes.clock import FakeClock, FixedRandom, RealClock
from tests.fakes.database import FakeDatabase, FakeDatabaseFactory
from tests.fakes.probes import FakeProbes
from tests.fakes.server import FakeServer, server_down, unauthorized
from tests.unit.conftest import APP_PROD, APP_STAGING, MY_URL, PG_URL, make_settings, wait_until

#: The brief's startup backoff with the default settings (1 s doubling, 15 s cap).
BRIEF_BACKOFF = [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
#: How often the database stage re-checks its connect threads (a wait on the clock).
DB_STAGE_TICK = 0.05

TWO_DATABASES = (DatabaseSettings(APP_PROD, PG_URL), DatabaseSettings(APP_STAGING, MY_URL))


# --- hand-written fakes for this file ---------------------------------------------------


class HookedClock(FakeClock):
    """A FakeClock that runs `on_wait` before every wait: a signal arriving mid-backoff."""

    def __init__(self) -> None:
        super().__init__()
        self.on_wait: Callable[[], None] = lambda: None

    def wait(self, event: threading.Event, timeout_secs: float) -> bool:
        self.on_wait()
        return super().wait(event, timeout_secs)


class JournalServer(FakeServer):
    """Writes public-key fetches and polls to a journal shared with the other fakes."""

    def __init__(self, clock: object, journal: list[str], **kwargs: object) -> None:
        super().__init__(clock, **kwargs)  # type: ignore[arg-type]
        self.journal = journal

    def fetch_public_key(self) -> str:
        self.journal.append("fetch_public_key")
        return super().fetch_public_key()

    def poll(self, request: PollRequest) -> PollResponse:
        self.journal.append("poll")
        return super().poll(request)


class JournalProbes(FakeProbes):
    def __init__(self, journal: list[str], *, fail_alive: bool = False) -> None:
        super().__init__(fail_alive=fail_alive)
        self.journal = journal

    def mark_alive(self) -> None:
        super().mark_alive()
        self.journal.append("alive")

    def set_ready(self, ready: bool) -> None:
        super().set_ready(ready)
        self.journal.append(f"ready={ready}")


class ScriptedDatabase(FakeDatabase):
    """A FakeDatabase whose connect can block on a gate, or always fail."""

    def __init__(
        self,
        journal: list[str] | None = None,
        *,
        name: str = "db",
        gate: threading.Event | None = None,
        always_down: bool = False,
    ) -> None:
        super().__init__()
        self.journal = journal
        self.name = name
        self.gate = gate
        self.always_down = always_down
        self.entered = threading.Event()

    def connect(self, timeout_secs: float) -> None:
        self.entered.set()
        if self.journal is not None:
            self.journal.append(f"connect {self.name}")
        if self.gate is not None:
            self.gate.wait(10)
        if self.always_down:
            self.connects += 1
            raise DatabaseUnavailable(f"{self.name}: connection refused")
        super().connect(timeout_secs)


@dataclass
class Rig:
    agent: Agent
    server: JournalServer
    factory: FakeDatabaseFactory
    probes: JournalProbes
    clock: FakeClock | RealClock
    registry: DatabaseRegistry
    journal: list[str]

    def startup(self) -> StartupOutcome:
        return self.agent.startup.run()

    def db(self, url: str = PG_URL) -> FakeDatabase:
        return self.factory(url)

    def backoff_waits(self) -> list[float]:
        """The clock's waits without the database stage's pacing ticks."""
        assert isinstance(self.clock, FakeClock)
        return [w for w in self.clock.waits if w != DB_STAGE_TICK]


def rig(
    settings: AgentSettings | None = None,
    *,
    clock: FakeClock | RealClock | None = None,
    databases: dict[str, FakeDatabase] | None = None,
    fail_alive: bool = False,
    **server_kwargs: object,
) -> Rig:
    """An Agent over fakes with the brief's real startup numbers and a fake clock."""
    settings = settings or brief_settings()
    clock = clock or FakeClock()
    journal: list[str] = []
    server = JournalServer(clock, journal, **server_kwargs)
    factory = FakeDatabaseFactory()
    for db in settings.databases:
        factory.databases[db.url] = ScriptedDatabase(journal, name=str(db.scope))
    factory.databases.update(databases or {})
    probes = JournalProbes(journal, fail_alive=fail_alive)
    registry = DatabaseRegistry(settings.databases, factory, clock)
    ports = AgentPorts(
        server=server, verifier=Ed25519Verifier(), probes=probes, clock=clock, random=FixedRandom()
    )
    agent = Agent(settings, ports, registry, agent_build="test-build")
    return Rig(agent, server, factory, probes, clock, registry, journal)


def brief_settings(**overrides: object) -> AgentSettings:
    """The brief's startup numbers: 1 s initial, 15 s cap, 60 s deadline unless told."""
    values: dict[str, object] = {
        "startup_retry_initial_ms": 1000,
        "startup_retry_max_ms": 15000,
        "startup_max_wait_secs": 60,
    }
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event released at teardown, so a blocked connect thread never outlives a test."""
    event = threading.Event()
    yield event
    event.set()


# --- order and probes -------------------------------------------------------------------


def test_liveness_probe_is_written_before_any_server_call() -> None:
    r = rig()
    assert r.startup().status is StartupStatus.READY
    assert r.journal[0] == "alive"
    assert r.probes.alive


def test_liveness_write_failure_fails_startup_without_calling_the_server() -> None:
    r = rig(fail_alive=True)
    outcome = r.startup()
    assert outcome.status is StartupStatus.FAILED
    assert "liveness probe" in outcome.message
    assert "/tmp/dbward-agent-alive" in outcome.message
    assert r.server.calls == []


def test_liveness_write_failure_makes_run_exit_1() -> None:
    assert rig(fail_alive=True).agent.run() == 1


def test_public_key_then_databases_then_first_poll_in_that_order() -> None:
    r = rig()
    assert r.startup().status is StartupStatus.READY
    assert r.journal == ["alive", "fetch_public_key", "connect app/production", "poll"]
    assert r.server.calls == ["fetch_public_key", "poll"]


def test_first_poll_asks_for_no_jobs_and_does_not_long_poll() -> None:
    r = rig()
    assert r.startup().status is StartupStatus.READY
    (first,) = r.server.polls
    assert first.limit == 0
    assert first.wait_ms == 0
    assert first.status.draining is False
    assert first.status.in_flight == 0
    assert first.agent_version == AGENT_PROTOCOL_VERSION
    assert first.capabilities.scopes == (APP_PROD,)


def test_startup_alone_never_sets_readiness() -> None:
    r = rig()
    assert r.startup().status is StartupStatus.READY
    assert r.probes.ready_history == []


def test_readiness_is_set_only_after_startup_completes_and_liveness_is_marked() -> None:
    clock = HookedClock()
    r = rig(clock=clock)

    def stop_once_ready() -> None:
        # Once ready and the poll loop has turned once (its liveness mark is the second).
        looped = r.probes.alive_marks >= 2
        if "ready=True" in r.journal and looped and not r.agent.signals.drain.is_set():
            r.agent.request_shutdown()

    clock.on_wait = stop_once_ready
    assert r.agent.run() == 0
    first_poll = r.journal.index("poll")
    assert r.journal[:4] == ["alive", "fetch_public_key", "connect app/production", "poll"]
    assert r.journal.index("ready=True") > first_poll
    assert r.probes.ready_history[0] is True
    assert r.probes.alive_marks >= 2  # startup, then the poll loop
    assert r.probes.cleared


# --- transient server errors: the brief's backoff ---------------------------------------


def test_public_key_transient_errors_retry_with_the_brief_backoff() -> None:
    r = rig(brief_settings(startup_max_wait_secs=0))
    r.server.fail("fetch_public_key", ServerUnreachable("connection refused"), times=3)
    r.server.fail("fetch_public_key", server_down(), times=3)
    assert r.startup().status is StartupStatus.READY
    assert r.server.calls.count("fetch_public_key") == 7
    assert r.backoff_waits() == BRIEF_BACKOFF


def test_first_poll_503_is_retried_with_the_brief_backoff() -> None:
    r = rig(brief_settings(startup_max_wait_secs=0))
    r.server.fail("poll", ServerError(503, "service unavailable"), times=6)
    outcome = r.startup()
    assert outcome.status is StartupStatus.READY
    assert r.server.calls.count("poll") == 7
    assert r.backoff_waits() == BRIEF_BACKOFF


def test_backoff_follows_configured_initial_and_cap() -> None:
    settings = brief_settings(
        startup_retry_initial_ms=500, startup_retry_max_ms=3000, startup_max_wait_secs=0
    )
    r = rig(settings)
    r.server.fail("fetch_public_key", ServerUnreachable("dns failure"), times=5)
    assert r.startup().status is StartupStatus.READY
    assert r.backoff_waits() == [0.5, 1.0, 2.0, 3.0, 3.0]


# --- hard errors exit at once -----------------------------------------------------------


def test_401_on_public_key_fails_at_once() -> None:
    r = rig()
    r.server.fail("fetch_public_key", unauthorized())
    outcome = r.startup()
    assert outcome.status is StartupStatus.FAILED
    assert "401" in outcome.message
    assert r.server.calls == ["fetch_public_key"]
    assert r.backoff_waits() == []
    assert r.db().connects == 0


@pytest.mark.parametrize("status", [401, 403, 400, 422])
def test_4xx_on_first_poll_fails_at_once(status: int) -> None:
    r = rig()
    if status == 401:
        r.server.fail("poll", unauthorized())
    else:
        r.server.fail("poll", ServerError(status, "rejected"))
    outcome = r.startup()
    assert outcome.status is StartupStatus.FAILED
    assert str(status) in outcome.message
    assert "first poll" in outcome.message
    assert r.server.calls.count("poll") == 1
    assert r.backoff_waits() == []


def test_hard_error_makes_run_exit_1_without_readiness() -> None:
    r = rig()
    r.server.fail("poll", ServerError(403, "forbidden"))
    assert r.agent.run() == 1
    assert r.probes.ready_history == []
    assert r.probes.cleared


def test_invalid_public_key_fails_at_once() -> None:
    """A key that is not hex is a hard error (docs/protocol.md §11.3 TokenVerification)."""
    r = rig()
    r.server.public_key_override = "zz"
    outcome = r.startup()
    assert outcome.status is StartupStatus.FAILED
    assert "public key" in outcome.message
    assert "timeout" not in outcome.message
    assert r.server.calls == ["fetch_public_key"]
    assert r.backoff_waits() == []


def test_database_auth_failure_fails_at_once_naming_the_database() -> None:
    r = rig()
    r.db().connect_errors.append(DatabaseAuthError("password authentication failed for agent"))
    outcome = r.startup()
    assert outcome.status is StartupStatus.FAILED
    assert "app/production" in outcome.message
    assert "password authentication failed" in outcome.message
    assert r.db().connects == 1
    assert r.server.polls == []


# --- transient database errors, parallel connects ----------------------------------------


def test_transient_database_failures_are_retried_with_backoff_then_succeed() -> None:
    r = rig(brief_settings(startup_max_wait_secs=0))
    r.db().connect_errors.extend([DatabaseUnavailable("connection refused")] * 3)
    outcome = r.startup()
    assert outcome.status is StartupStatus.READY
    assert outcome.down_databases == {}
    assert r.db().connects == 4
    assert r.backoff_waits() == [1.0, 2.0, 4.0]
    assert r.registry.healthy_scopes() == (APP_PROD,)


def test_databases_connect_in_parallel(gate: threading.Event) -> None:
    """A database whose connect hangs does not hold up the others."""
    slow = ScriptedDatabase(name="slow", gate=gate)
    fast = ScriptedDatabase(name="fast")
    settings = make_settings(databases=TWO_DATABASES)  # the slow one is configured first
    r = rig(settings, clock=RealClock(), databases={PG_URL: slow, MY_URL: fast})
    outcomes: list[StartupOutcome] = []
    runner = threading.Thread(target=lambda: outcomes.append(r.startup()), daemon=True)
    runner.start()
    assert wait_until(lambda: fast.connected)
    assert slow.entered.is_set() and not slow.connected
    assert r.server.polls == []
    gate.set()
    runner.join(5)
    assert outcomes and outcomes[0].status is StartupStatus.READY
    assert slow.connected


def test_startup_timeout_with_the_server_down_fails() -> None:
    r = rig()  # 60 s deadline
    r.server.fail("fetch_public_key", ServerUnreachable("connection refused"), times=1000)
    outcome = r.startup()
    assert outcome.status is StartupStatus.FAILED
    assert "startup timeout" in outcome.message
    # 1+2+4+8+15+15 = 45 s, then a last wait clipped to the deadline, then one last try.
    assert r.backoff_waits() == [*BRIEF_BACKOFF, 15.0]
    assert r.server.calls.count("fetch_public_key") == 8
    assert r.db().connects == 0


def test_startup_timeout_makes_run_exit_1() -> None:
    r = rig()
    r.server.fail("fetch_public_key", server_down(), times=1000)
    assert r.agent.run() == 1


def test_deadline_with_one_database_up_starts_degraded() -> None:
    """Improvement 7: the healthy database is served, the other listed as down."""
    down = ScriptedDatabase(name="down", always_down=True)
    r = rig(brief_settings(databases=TWO_DATABASES), databases={MY_URL: down})
    outcome = r.startup()
    assert outcome.status is StartupStatus.READY
    assert set(outcome.down_databases) == {APP_STAGING}
    assert "connection refused" in outcome.down_databases[APP_STAGING]
    assert r.registry.health(APP_STAGING).state is DatabaseState.DOWN
    (first,) = r.server.polls
    assert first.capabilities.scopes == (APP_PROD,)


def test_deadline_with_no_database_up_fails() -> None:
    down = ScriptedDatabase(name="down", always_down=True)
    r = rig(databases={PG_URL: down})
    outcome = r.startup()
    assert outcome.status is StartupStatus.FAILED
    assert "startup timeout" in outcome.message
    assert "app/production" in outcome.message
    assert r.server.polls == []


def test_max_wait_zero_retries_forever() -> None:
    r = rig(brief_settings(startup_max_wait_secs=0))
    r.server.fail("fetch_public_key", ServerUnreachable("connection refused"), times=40)
    r.db().connect_errors.extend([DatabaseUnavailable("connection refused")] * 20)
    assert r.startup().status is StartupStatus.READY
    assert r.server.calls.count("fetch_public_key") == 41
    assert r.db().connects == 21
    assert sum(r.backoff_waits()) > 600  # far past the default 60 s deadline


# --- shutdown signals during startup ----------------------------------------------------


def _signal_during(phase: str) -> Rig:
    """A rig stuck in `phase`, whose clock delivers a shutdown signal mid-backoff."""
    clock = HookedClock()
    r = rig(brief_settings(startup_max_wait_secs=0), clock=clock)
    if phase == "public key":
        r.server.fail("fetch_public_key", ServerUnreachable("refused"), times=1000)
        arrived = lambda: r.server.calls.count("fetch_public_key") >= 3  # noqa: E731
    elif phase == "databases":
        r.db().connect_errors.extend([DatabaseUnavailable("refused")] * 1000)
        arrived = lambda: r.db().connects >= 3  # noqa: E731
    else:
        r.server.fail("poll", server_down(), times=1000)
        arrived = lambda: r.server.calls.count("poll") >= 3  # noqa: E731

    def maybe_signal() -> None:
        if arrived() and not r.agent.signals.drain.is_set():
            r.agent.request_shutdown()

    clock.on_wait = maybe_signal
    return r


@pytest.mark.parametrize("phase", ["public key", "databases", "first poll"])
def test_signal_during_startup_retries_ends_startup_as_shutdown(phase: str) -> None:
    r = _signal_during(phase)
    assert r.startup().status is StartupStatus.SHUTDOWN
    if phase == "public key":
        assert r.db().connects == 0
    if phase != "first poll":
        assert r.server.polls == []


@pytest.mark.parametrize("phase", ["public key", "databases", "first poll"])
def test_signal_during_startup_makes_run_exit_0(phase: str) -> None:
    r = _signal_during(phase)
    assert r.agent.run() == 0
    assert r.probes.ready_history == []
    assert r.probes.cleared
