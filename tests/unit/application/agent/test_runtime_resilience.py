"""Runtime resilience (docs/agent.md §2.9; docs/agent.md §5 improvements 1,
2, 8 and 9): server outages, revoked tokens, the version gate, per-database degraded mode,
liveness, and what a poll advertises.

Exact timing is asserted by driving `PollLoop.step()` one iteration at a time with a
`FakeClock`; behaviour over time is checked on the whole agent running on a thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.agent.database_registry import DatabaseRegistry
from application.agent.poll_loop import PollLoop
from application.agent.runner import Agent, AgentPorts
from application.agent.settings import AgentSettings, DatabaseSettings
from application.agent.startup import StartupStatus
from domain.agent.errors import (
    AgentFatalError,
    DatabaseAuthError,
    DatabaseError,
    DatabaseUnavailable,
    ServerUnreachable,
)
from domain.shared.backoff import FullJitterBackoff
from domain.shared.jobs import PollRequest, PollResponse
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from tests.fakes.clock import FakeClock, FixedRandom
from tests.fakes.database import FakeDatabase, FakeDatabaseFactory, connectivity_error
from tests.fakes.probes import FakeProbes
from tests.fakes.server import FakeServer, unauthorized
from tests.unit.conftest import (
    APP_PROD,
    APP_STAGING,
    MY_URL,
    PG_URL,
    Harness,
    build_harness,
    make_settings,
    wait_until,
)

TWO_DATABASES = (DatabaseSettings(APP_PROD, PG_URL), DatabaseSettings(APP_STAGING, MY_URL))
ANALYTICS_STAGING = Scope("analytics", "staging")
#: Enough refused reconnects to keep a database down for the length of any test.
FOREVER = 100_000


# --- step-by-step rig: FakeClock, no agent thread ----------------------------------------


@dataclass
class Stepper:
    agent: Agent
    server: FakeServer
    factory: FakeDatabaseFactory
    probes: FakeProbes
    clock: FakeClock
    random: FixedRandom

    @property
    def loop(self) -> PollLoop:
        return self.agent.loop

    def db(self, url: str = PG_URL) -> FakeDatabase:
        return self.factory(url)


def stepper(
    settings: AgentSettings | None = None,
    *,
    fraction: float = 1.0,
    server: FakeServer | None = None,
    clock: FakeClock | None = None,
) -> Stepper:
    """An agent past startup whose poll loop the test steps by hand."""
    settings = settings or make_settings(startup_max_wait_secs=0)
    clock = clock or FakeClock()
    server = server or FakeServer(clock)
    factory = FakeDatabaseFactory()
    probes = FakeProbes()
    random = FixedRandom(fraction)
    registry = DatabaseRegistry(settings.databases, factory, clock)
    ports = AgentPorts(
        server=server, verifier=Ed25519Verifier(), probes=probes, clock=clock, random=random
    )
    agent = Agent(settings, ports, registry, agent_build="test-build")
    assert agent.startup.run().status is StartupStatus.READY
    return Stepper(agent, server, factory, probes, clock, random)


class CarelessServer(FakeServer):
    """Offers every dispatched job, whatever the poll advertised (a buggy or old server)."""

    def poll(self, request: PollRequest) -> PollResponse:
        response = super().poll(request)
        with self._cond:
            offered = tuple(r.job() for r in self.requests.values() if r.status == "dispatched")
        return PollResponse(
            jobs=offered,
            server_version=response.server_version,
            min_agent_version=response.min_agent_version,
        )


# --- threaded rig ----------------------------------------------------------------------


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    """Started harnesses are forced down at teardown."""
    started: list[Harness] = []
    yield started
    for h in started:
        if h.thread is not None and h.thread.is_alive():
            h.agent.request_shutdown()
            h.agent.request_shutdown()
            h.thread.join(10)


def start(harnesses: list[Harness], h: Harness, *, ready: bool = True) -> Harness:
    harnesses.append(h)
    h.start()
    if ready:
        assert wait_until(lambda: h.probes.ready), "agent never became ready"
    return h


def polls_after(h: Harness, count: int, extra: int = 3) -> list[PollRequest]:
    """Wait for `extra` more polls after the first `count`; returns those."""
    assert wait_until(lambda: len(h.server.polls) >= count + extra)
    return list(h.server.polls)[count:]


# --- server unreachable at runtime -------------------------------------------------------


def test_readiness_is_removed_at_the_third_consecutive_poll_failure() -> None:
    s = stepper()
    s.loop.step()
    assert s.probes.ready
    s.server.fail("poll", ServerUnreachable("connection refused"), times=3)
    s.loop.step()
    s.loop.step()
    assert s.probes.ready
    result = s.loop.step()
    assert isinstance(result.error, ServerUnreachable)
    assert not s.probes.ready
    s.loop.step()
    assert s.probes.ready
    assert s.probes.ready_history == [True, False, True]


def test_server_outage_keeps_the_agent_alive_and_readiness_comes_back(
    harnesses: list[Harness],
) -> None:
    h = start(harnesses, build_harness())
    marks = h.probes.alive_marks
    h.server.fail("poll", ServerUnreachable("down"), times=5)
    assert wait_until(lambda: not h.probes.ready)
    assert h.thread is not None and h.thread.is_alive()
    assert h.probes.alive and h.probes.alive_marks > marks
    assert wait_until(lambda: h.probes.ready)
    assert h.probes.ready_history == [True, False, True]
    request = h.server.dispatch("SELECT 1")
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None)


def test_error_backoff_is_full_jitter_capped_at_15s() -> None:
    s = stepper(fraction=1.0)
    s.loop.step()
    s.server.fail("poll", ServerUnreachable("down"), times=7)
    delays = [s.loop.step().delay_secs for _ in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert s.random.calls == [(0.0, d) for d in delays]


def test_error_backoff_draws_uniformly_below_the_ceiling() -> None:
    s = stepper(fraction=0.25)
    s.loop.step()
    s.server.fail("poll", ServerUnreachable("down"), times=6)
    delays = [s.loop.step().delay_secs for _ in range(6)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 3.75, 3.75]


def test_full_jitter_backoff_ceilings_double_to_the_cap() -> None:
    backoff = FullJitterBackoff(base_secs=1.0)
    assert [backoff.ceiling(n) for n in range(1, 8)] == [1, 2, 4, 8, 15, 15, 15]
    assert backoff.delay(40, FixedRandom(1.0).uniform) == 15.0


def test_error_backoff_restarts_after_a_successful_poll() -> None:
    s = stepper(fraction=1.0)
    s.loop.step()
    s.server.fail("poll", ServerUnreachable("down"), times=3)
    assert [s.loop.step().delay_secs for _ in range(3)] == [1.0, 2.0, 4.0]
    ok = s.loop.step()
    assert ok.error is None and ok.delay_secs == pytest.approx(0.02)  # poll_interval_ms
    s.server.fail("poll", ServerUnreachable("down"))
    assert s.loop.step().delay_secs == 1.0


# --- revoked tokens (improvement 8) ------------------------------------------------------


def test_three_runtime_401_in_a_row_exit_1_naming_the_revoked_token(
    harnesses: list[Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = start(harnesses, build_harness())
    h.server.fail("poll", unauthorized(), times=3)
    assert h.wait_exit() == 1
    assert any("revoked" in r.getMessage() for r in caplog.records)
    assert h.probes.cleared


def test_401s_that_are_not_consecutive_do_not_stop_the_agent() -> None:
    s = stepper()
    s.loop.step()
    s.server.fail("poll", unauthorized(), times=2)
    s.loop.step()
    s.loop.step()
    assert s.loop.step().error is None
    s.server.fail("poll", unauthorized(), times=3)
    s.loop.step()
    s.loop.step()
    with pytest.raises(AgentFatalError, match="revoked"):
        s.loop.step()


# --- version gate -------------------------------------------------------------------------


def test_version_gate_blocks_jobs_and_readiness_until_lowered(harnesses: list[Harness]) -> None:
    h = start(harnesses, build_harness(min_agent_version="9.0.0"), ready=False)
    assert wait_until(lambda: len(h.server.polls) >= 2)
    request = h.server.dispatch("SELECT 1")
    seen = polls_after(h, len(h.server.polls))
    assert all(p.limit == 0 for p in seen)
    assert h.server.claims == []
    assert True not in h.probes.ready_history
    h.server.min_agent_version = "0.2.0"
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None)
    assert wait_until(lambda: h.probes.ready)


@pytest.mark.parametrize(
    ("minimum", "gated"),
    [
        ("0.2.0-rc1", False),  # a release candidate is older than its release
        ("0.2", False),  # a missing component counts as 0
        ("0.1.10", False),
        ("0.2.1-rc1", True),  # but newer than the release before it
        ("0.10.0", True),  # numbers, not text
    ],
)
def test_version_gate_orders_release_candidates_between_releases(minimum: str, gated: bool) -> None:
    """The agent (`AGENT_PROTOCOL_VERSION` 0.2.0) against minimums around its own version."""
    clock = FakeClock()
    s = stepper(server=FakeServer(clock, min_agent_version=minimum), clock=clock)
    s.loop.step()
    s.loop.step()
    assert s.loop.upgrade_required is gated
    assert (s.server.polls[-1].limit == 0) is gated
    assert (True not in s.probes.ready_history[-1:]) is gated


# --- per-database degraded mode (improvement 2) ------------------------------------------


def test_lost_database_leaves_the_advertised_scopes_while_the_other_keeps_working(
    harnesses: list[Harness],
) -> None:
    h = start(harnesses, build_harness(make_settings(databases=TWO_DATABASES)))
    prod = h.db(PG_URL)
    prod.connect_errors.extend([DatabaseUnavailable("connection refused")] * FOREVER)
    prod.fail_next = connectivity_error()
    lost = h.server.dispatch("SELECT 1", scope=APP_PROD)
    assert h.server.wait_for(lambda: h.server.result_for(lost.id) is not None)
    assert wait_until(lambda: h.server.polls[-1].capabilities.scopes == (APP_STAGING,)), (
        "app/production was never dropped from the advertised scopes"
    )
    held = h.server.dispatch("SELECT 2", scope=APP_PROD)
    staging = h.server.dispatch("SELECT 3", scope=APP_STAGING)
    assert h.server.wait_for(lambda: h.server.result_for(staging.id) is not None)
    result = h.server.result_for(staging.id)
    assert result is not None and result.success
    seen = polls_after(h, len(h.server.polls))
    assert all(p.capabilities.scopes == (APP_STAGING,) and p.limit > 0 for p in seen)
    assert held.status == "dispatched"
    assert h.probes.ready_history == [True]


def test_lost_database_is_advertised_again_and_its_jobs_run_once_it_reconnects(
    harnesses: list[Harness],
) -> None:
    h = start(harnesses, build_harness(make_settings(databases=TWO_DATABASES)))
    prod = h.db(PG_URL)
    prod.connect_errors.extend([DatabaseUnavailable("connection refused")] * FOREVER)
    prod.fail_next = connectivity_error()
    h.server.dispatch("SELECT 1", scope=APP_PROD)
    assert wait_until(lambda: h.server.polls[-1].capabilities.scopes == (APP_STAGING,))
    held = h.server.dispatch("SELECT 2", scope=APP_PROD)
    prod.connect_errors.clear()
    assert h.server.wait_for(lambda: h.server.result_for(held.id) is not None)
    result = h.server.result_for(held.id)
    assert result is not None and result.success
    assert h.server.polls[-1].capabilities.scopes == (APP_PROD, APP_STAGING)
    assert h.probes.ready_history == [True]


def test_reconnect_is_tried_about_once_per_poll_interval(harnesses: list[Harness]) -> None:
    h = start(harnesses, build_harness(make_settings(databases=TWO_DATABASES)))
    prod = h.db(PG_URL)
    prod.connect_errors.extend([DatabaseUnavailable("connection refused")] * FOREVER)
    prod.fail_next = connectivity_error()
    h.server.dispatch("SELECT 1", scope=APP_PROD)
    assert wait_until(lambda: h.server.polls[-1].capabilities.scopes == (APP_STAGING,))
    connects, polls = prod.connects, len(h.server.polls)
    assert wait_until(lambda: prod.connects >= connects + 5), "no reconnect attempts"
    new_polls = len(h.server.polls) - polls
    assert prod.connects - connects <= new_polls + 1


def test_reconnect_is_tried_once_per_poll_interval_not_once_per_step() -> None:
    """Stepped with a fake clock: exactly one attempt per `poll_interval_ms` (20 ms)."""
    s = stepper(make_settings(databases=TWO_DATABASES, startup_max_wait_secs=0))
    prod = s.db(PG_URL)
    prod.connect_errors.extend([DatabaseUnavailable("connection refused")] * FOREVER)
    s.agent.registry.report_error(APP_PROD, DatabaseUnavailable("connection reset by peer"))
    base = prod.connects

    def step_until_attempts(count: int) -> bool:
        # Same fake instant each time: a reconnect still finishing may defer the next one.
        return wait_until(lambda: (s.loop.step(), prod.connects == base + count)[1])

    s.loop.step()
    s.loop.step()
    assert prod.connects == base  # the outage just started: not due yet
    for attempt in (1, 2):
        s.clock.advance(0.025)  # one poll interval (20 ms), plus float slack
        assert step_until_attempts(attempt)
        for _ in range(3):
            s.loop.step()
        assert prod.connects == base + attempt
    assert s.server.polls[-1].capabilities.scopes == (APP_STAGING,)


def test_readiness_is_removed_when_no_database_is_usable_and_restored_on_reconnect(
    harnesses: list[Harness],
) -> None:
    h = start(harnesses, build_harness())
    db = h.db()
    db.connect_errors.extend([DatabaseUnavailable("connection refused")] * FOREVER)
    db.fail_next = connectivity_error()
    h.server.dispatch("SELECT 1")
    assert wait_until(lambda: not h.probes.ready)
    assert h.thread is not None and h.thread.is_alive()
    seen = polls_after(h, len(h.server.polls))
    assert all(p.limit == 0 for p in seen)
    db.connect_errors.clear()
    assert wait_until(lambda: h.probes.ready)
    assert h.probes.ready_history == [True, False, True]


def test_database_auth_error_on_reconnect_exits_1(
    harnesses: list[Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = start(harnesses, build_harness())
    db = h.db()
    db.connect_errors.append(DatabaseAuthError("password authentication failed for agent"))
    db.fail_next = connectivity_error()
    h.server.dispatch("SELECT 1")
    assert h.wait_exit() == 1
    assert any("credentials rejected" in r.getMessage() for r in caplog.records)


def test_non_connectivity_job_error_keeps_the_database_advertised(
    harnesses: list[Harness],
) -> None:
    h = start(harnesses, build_harness(make_settings(databases=TWO_DATABASES)))
    h.db(PG_URL).fail_next = DatabaseError('relation "nope" does not exist')
    failed = h.server.dispatch("SELECT * FROM nope", scope=APP_PROD)
    assert h.server.wait_for(lambda: h.server.result_for(failed.id) is not None)
    seen = polls_after(h, len(h.server.polls))
    assert all(p.capabilities.scopes == (APP_PROD, APP_STAGING) for p in seen)


# --- liveness (improvement 9) -----------------------------------------------------------


def test_poll_loop_refreshes_liveness_every_iteration() -> None:
    s = stepper()
    marks = s.probes.alive_marks
    s.server.fail("poll", ServerUnreachable("down"))
    s.loop.step()
    s.loop.step()
    assert s.probes.alive_marks == marks + 2


def test_liveness_keeps_being_refreshed_while_running(harnesses: list[Harness]) -> None:
    h = start(harnesses, build_harness())
    marks = h.probes.alive_marks
    assert wait_until(lambda: h.probes.alive_marks >= marks + 5)


# --- what a poll advertises ---------------------------------------------------------------


def test_poll_advertises_configured_scopes_only_and_configured_operations() -> None:
    settings = make_settings(
        databases=(DatabaseSettings(APP_PROD, PG_URL), DatabaseSettings(ANALYTICS_STAGING, MY_URL)),
        operations=(Operation.EXECUTE_SELECT, Operation.MIGRATE_STATUS),
        operations_configured=True,
        startup_max_wait_secs=0,
    )
    s = stepper(settings)
    s.loop.step()
    capabilities = s.server.polls[-1].capabilities
    assert capabilities.scopes == (APP_PROD, ANALYTICS_STAGING)  # no app/staging cross product
    assert capabilities.operations == (Operation.EXECUTE_SELECT, Operation.MIGRATE_STATUS)


def test_jobs_outside_the_capabilities_are_not_claimed_even_if_offered() -> None:
    settings = make_settings(
        operations=(Operation.EXECUTE_SELECT,), operations_configured=True, startup_max_wait_secs=0
    )
    clock = FakeClock()
    s = stepper(settings, server=CarelessServer(clock), clock=clock)
    s.server.dispatch("SELECT 1", scope=APP_STAGING)
    s.server.dispatch("DELETE FROM t", operation="execute_dml")
    result = s.loop.step()
    assert result.jobs_started == 0
    assert s.server.claims == []
