"""The poll loop: what a poll advertises, how it paces itself, which jobs it takes.

Most tests drive `PollLoop.step()` one iteration at a time through an agent wired with a
`FakeClock` (a "rig"); the rest run the whole agent on threads to watch slots fill up with
hanging jobs and a long-poll hand a job over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.agent.database_registry import DatabaseRegistry
from application.agent.poll_loop import StepResult
from application.agent.runner import Agent, AgentPorts
from application.agent.settings import AgentSettings, DatabaseSettings
from domain.shared.jobs import (
    ActiveJobStatus,
    ClaimedJob,
    DispatchedJob,
    PollClaim,
    PollRequest,
    PollResponse,
)
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from domain.shared.versions import AGENT_PROTOCOL_VERSION
from tests.fakes.clock import FakeClock, FixedRandom
from tests.fakes.database import FakeDatabaseFactory, connectivity_error
from tests.fakes.probes import FakeProbes
from tests.fakes.server import FakeServer, server_down
from tests.unit.conftest import APP_PROD, APP_STAGING, PG_URL, Harness, build_harness, make_settings

STAGING_URL = "postgres://agent:secret@db.internal:5432/app_staging"
TWO_DATABASES = (DatabaseSettings(APP_PROD, PG_URL), DatabaseSettings(APP_STAGING, STAGING_URL))


# --- test-local servers -------------------------------------------------------------


class CapabilityBlindServer(FakeServer):
    """Offers every dispatched job whatever the poll advertised or its limit (a buggy server)."""

    def poll(self, request: PollRequest) -> PollResponse:
        response = super().poll(request)
        with self._cond:
            jobs = tuple(r.job() for r in self.requests.values() if r.status == "dispatched")
        return replace(response, jobs=jobs)


class SlowClaimServer(FakeServer):
    """Holds every claim until `claims_released` is set: the claim is still in flight."""

    def __init__(self, clock: object, **kwargs: Any) -> None:
        super().__init__(clock, **kwargs)
        self.claims_released = threading.Event()

    def claim(self, request_id: str, lease_duration_secs: int) -> ClaimedJob:
        self.claims_released.wait(5)
        return super().claim(request_id, lease_duration_secs)


# --- a step-by-step rig on a fake clock ---------------------------------------------


@dataclass
class Rig:
    agent: Agent
    server: FakeServer
    clock: FakeClock
    databases: FakeDatabaseFactory

    def step(self) -> StepResult:
        return self.agent.loop.step()

    @property
    def last_poll(self) -> PollRequest:
        return self.server.polls[-1]

    def occupy_slot(self, request_id: str, operation: str = "execute_select") -> None:
        """Put a job in flight without running it, as if its statement were still running."""
        job = DispatchedJob(request_id, operation, APP_PROD.database, APP_PROD.environment)
        assert self.agent.tracker.try_start(job, self.clock.monotonic()) is not None

    def wait_idle(self) -> None:
        assert self.agent.tracker.wait_idle(5), "jobs still in flight"


def make_rig(
    settings: AgentSettings | None = None,
    *,
    server_class: type[FakeServer] = FakeServer,
    down: tuple[Scope, ...] = (),
    **server_kwargs: Any,
) -> Rig:
    """An agent past startup (key loaded, databases connected) whose loop the test steps."""
    settings = settings or make_settings()
    clock = FakeClock()
    server = server_class(clock, **server_kwargs)
    factory = FakeDatabaseFactory()
    registry = DatabaseRegistry(settings.databases, factory, clock)
    verifier = Ed25519Verifier()
    verifier.load_public_key(server.public_key_hex())
    ports = AgentPorts(
        server=server, verifier=verifier, probes=FakeProbes(), clock=clock, random=FixedRandom()
    )
    agent = Agent(settings, ports, registry, agent_build="test-build")
    for db in settings.databases:
        if db.scope in down:
            factory(db.url).connect_errors.extend(connectivity_error() for _ in range(100))
            registry.mark_down(db.scope, "connection refused")
        else:
            registry.connect(db.scope, 1.0)
    return Rig(agent=agent, server=server, clock=clock, databases=factory)


# --- threaded harness -----------------------------------------------------------------


@pytest.fixture
def running() -> Iterator[list[Harness]]:
    """Harnesses started by a test; released and shut down afterwards."""
    started: list[Harness] = []
    yield started
    for h in started:
        for db in h.databases.databases.values():
            db.release.set()
        if h.thread is not None and h.thread.is_alive():
            h.agent.request_shutdown()
            h.agent.request_shutdown()
            h.thread.join(10)


def start(running: list[Harness], settings: AgentSettings, **server_kwargs: Any) -> Harness:
    h = build_harness(settings, **server_kwargs)
    running.append(h)
    return h.start()


# --- the poll body --------------------------------------------------------------------


def test_poll_asks_for_a_long_poll_of_poll_wait_ms_when_slots_are_free() -> None:
    rig = make_rig(make_settings(poll_wait_ms=1500), honour_wait=False)
    rig.step()
    assert rig.last_poll.limit == 2
    assert rig.last_poll.wait_ms == 1500


def test_poll_asks_for_no_wait_when_every_slot_is_taken() -> None:
    rig = make_rig(make_settings(poll_wait_ms=1500), honour_wait=False)
    rig.occupy_slot("r1")
    rig.occupy_slot("r2")
    rig.step()
    assert rig.last_poll.limit == 0
    assert rig.last_poll.wait_ms == 0


def test_poll_limit_is_free_slots_while_hanging_jobs_hold_the_others(
    running: list[Harness],
) -> None:
    h = start(running, make_settings(max_concurrent_tasks=3, poll_wait_ms=30))
    server, db = h.server, h.db()
    db.hang = True
    server.dispatch("SELECT pg_sleep(60)")
    assert server.wait_for(
        lambda: any(p.status.in_flight == 1 and p.limit == 2 for p in server.polls)
    )
    server.dispatch("SELECT pg_sleep(61)")
    server.dispatch("SELECT pg_sleep(62)")
    assert server.wait_for(lambda: any(p.status.in_flight == 3 for p in server.polls))
    full = next(p for p in server.polls if p.status.in_flight == 3)
    assert (full.limit, full.wait_ms) == (0, 0)
    free = next(p for p in server.polls if p.status.in_flight == 1 and p.limit == 2)
    assert free.wait_ms == 30


def test_poll_advertises_only_healthy_scopes() -> None:
    rig = make_rig(make_settings(databases=TWO_DATABASES), down=(APP_STAGING,))
    rig.step()
    assert rig.last_poll.capabilities.scopes == (APP_PROD,)
    assert rig.last_poll.limit == 2


def test_poll_with_no_healthy_database_takes_no_jobs() -> None:
    rig = make_rig(make_settings(poll_wait_ms=1500), down=(APP_PROD,))
    rig.step()
    assert rig.last_poll.limit == 0
    assert rig.last_poll.wait_ms == 0


def test_poll_advertises_the_operations_from_settings() -> None:
    operations = (Operation.EXECUTE_SELECT, Operation.MIGRATE_STATUS)
    rig = make_rig(make_settings(operations=operations))
    rig.step()
    assert rig.last_poll.capabilities.operations == operations


def test_poll_status_block_reports_work_in_flight_and_uptime() -> None:
    rig = make_rig(make_settings(max_concurrent_tasks=3))
    rig.clock.advance(40)
    rig.occupy_slot("r1", "execute_dml")
    rig.agent.tracker.start_explain_unbounded("preflight-1")
    rig.clock.advance(2)
    rig.step()
    status = rig.last_poll.status
    assert status.in_flight == 1
    assert status.in_flight_preflight == 1
    assert status.max_concurrent == 3
    assert status.draining is False
    assert status.uptime_secs == 42
    assert status.active_jobs == (
        ActiveJobStatus(request_id="r1", operation="execute_dml", elapsed_secs=2),
    )


def test_poll_status_lists_a_running_job(running: list[Harness]) -> None:
    h = start(running, make_settings())
    h.db().hang = True
    request = h.server.dispatch("SELECT pg_sleep(60)")
    assert h.server.wait_for(lambda: any(p.status.active_jobs for p in h.server.polls))
    polled = next(p for p in h.server.polls if p.status.active_jobs)
    assert polled.status.in_flight == 1
    (active,) = polled.status.active_jobs
    assert (active.request_id, active.operation) == (request.id, "execute_select")
    assert active.elapsed_secs >= 0


def test_poll_carries_agent_version_and_build() -> None:
    rig = make_rig()
    rig.step()
    assert rig.last_poll.agent_version == AGENT_PROTOCOL_VERSION == "0.2.0"
    assert rig.last_poll.agent_build == "test-build"


# --- pacing ---------------------------------------------------------------------------


def test_after_an_empty_long_poll_the_server_honoured_the_agent_polls_again_at_once() -> None:
    rig = make_rig(make_settings(poll_wait_ms=10, poll_interval_ms=1000), honour_wait=True)
    result = rig.step()
    assert result.error is None
    assert result.jobs_started == 0
    assert result.delay_secs == 0.0


def test_when_the_server_ignores_wait_the_agent_falls_back_to_poll_interval() -> None:
    rig = make_rig(make_settings(poll_wait_ms=20_000, poll_interval_ms=1000), honour_wait=False)
    assert rig.step().delay_secs == 1.0


def test_classic_polling_waits_poll_interval_between_empty_polls() -> None:
    rig = make_rig(make_settings(poll_wait_ms=0, poll_interval_ms=750))
    assert rig.step().delay_secs == 0.75


def test_after_starting_jobs_with_slots_left_the_agent_polls_again_at_once() -> None:
    rig = make_rig(make_settings(poll_interval_ms=1000, max_concurrent_tasks=2), honour_wait=False)
    request = rig.server.dispatch("SELECT 1")
    result = rig.step()
    assert result.jobs_started == 1
    assert result.delay_secs == 0.0
    assert rig.server.wait_for(lambda: rig.server.result_for(request.id) is not None)
    rig.wait_idle()


def test_after_starting_jobs_that_fill_every_slot_the_agent_waits_poll_interval() -> None:
    rig = make_rig(
        make_settings(poll_interval_ms=1000, max_concurrent_tasks=1),
        server_class=SlowClaimServer,
        honour_wait=False,
    )
    server = rig.server
    assert isinstance(server, SlowClaimServer)
    request = server.dispatch("SELECT 1")
    result = rig.step()
    assert (result.jobs_started, result.delay_secs) == (1, 1.0)
    server.claims_released.set()
    assert server.wait_for(lambda: server.result_for(request.id) is not None)
    rig.wait_idle()


def test_after_a_poll_error_the_agent_backs_off_with_full_jitter_capped_at_15s() -> None:
    rig = make_rig()
    rig.server.fail("poll", server_down(), times=8)
    delays = [rig.step() for _ in range(8)]
    assert all(r.error is not None for r in delays)
    # FixedRandom draws the top of the range: the ceilings themselves.
    assert [r.delay_secs for r in delays] == [1, 2, 4, 8, 15, 15, 15, 15]
    assert rig.step().error is None


# --- which jobs are taken -------------------------------------------------------------


def test_a_job_delivered_again_while_its_claim_is_in_flight_is_not_claimed_twice() -> None:
    rig = make_rig(server_class=SlowClaimServer, honour_wait=False)
    server = rig.server
    assert isinstance(server, SlowClaimServer)
    request = server.dispatch("SELECT 1")
    assert rig.step().jobs_started == 1
    assert server.requests[request.id].status == "dispatched"  # so the next poll offers it
    second = rig.step()
    assert [j.request_id for j in server.polls[-1].status.active_jobs] == [request.id]
    assert second.jobs_started == 0
    server.claims_released.set()
    assert server.wait_for(lambda: server.result_for(request.id) is not None)
    rig.wait_idle()
    assert [claimed for claimed, _ in server.claims] == [request.id]
    assert rig.agent.tracker.in_flight == 0


def test_a_job_for_an_operation_not_enabled_here_is_not_claimed() -> None:
    rig = make_rig(
        make_settings(operations=(Operation.EXECUTE_SELECT,)),
        server_class=CapabilityBlindServer,
    )
    rig.server.dispatch("UPDATE t SET x = 1", operation="execute_dml")
    result = rig.step()
    assert len(rig.server.polls[-1].capabilities.operations) == 1
    assert result.jobs_started == 0
    assert rig.server.claims == []
    assert rig.agent.tracker.in_flight == 0


def test_a_job_for_an_unhealthy_database_is_not_claimed() -> None:
    rig = make_rig(
        make_settings(databases=TWO_DATABASES),
        server_class=CapabilityBlindServer,
        down=(APP_STAGING,),
    )
    rig.server.dispatch("SELECT 1", scope=APP_STAGING)
    result = rig.step()
    assert result.jobs_started == 0
    assert rig.server.claims == []


def test_no_more_jobs_are_started_than_the_poll_limit() -> None:
    rig = make_rig(
        make_settings(max_concurrent_tasks=1),
        server_class=CapabilityBlindServer,
        honour_wait=False,
    )
    first = rig.server.dispatch("SELECT 1")
    second = rig.server.dispatch("SELECT 2")
    assert rig.step().jobs_started == 1
    rig.wait_idle()
    assert [claimed for claimed, _ in rig.server.claims] == [first.id]
    assert rig.server.requests[second.id].status == "dispatched"


# --- long-poll dispatch -----------------------------------------------------------------


def test_a_job_dispatched_during_a_held_long_poll_is_claimed_at_once(
    running: list[Harness],
) -> None:
    h = start(running, make_settings(poll_wait_ms=2000, poll_interval_ms=1000), honour_wait=True)
    server = h.server
    assert server.wait_for(lambda: any(p.wait_ms == 2000 for p in server.polls))
    dispatched_at = time.monotonic()
    request = server.dispatch("SELECT 1")
    assert server.wait_for(lambda: any(c[0] == request.id for c in server.claims), timeout=0.5)
    assert time.monotonic() - dispatched_at < 0.5  # well under poll_interval_ms
    assert server.wait_for(lambda: server.result_for(request.id) is not None)


# --- jobs claimed with the poll (docs/protocol.md §3.2 step 9) -------------------------------


def test_a_poll_with_free_slots_asks_the_server_to_claim_its_jobs() -> None:
    rig = make_rig()
    rig.step()
    assert rig.last_poll.limit == 2
    assert rig.last_poll.claim == PollClaim(rig.agent.settings.lease_duration_secs)
    rig.occupy_slot("a")
    rig.occupy_slot("b")
    rig.step()
    assert rig.last_poll.limit == 0
    assert rig.last_poll.claim is None


def test_jobs_the_server_claimed_with_the_poll_run_without_a_claim_call() -> None:
    rig = make_rig(claims_with_poll=True)
    request = rig.server.dispatch("SELECT 1")
    result = rig.step()
    assert result.jobs_started == 1
    rig.wait_idle()
    assert rig.server.claims == []
    assert rig.server.poll_claims == [(request.id, rig.agent.settings.lease_duration_secs)]
    delivered = rig.server.result_for(request.id)
    assert delivered is not None and delivered.success


def test_a_server_that_ignores_the_key_gets_a_claim_call_per_job_as_from_dbward_0_2() -> None:
    rig = make_rig()
    request = rig.server.dispatch("SELECT 1")
    rig.step()
    rig.wait_idle()
    assert rig.server.poll_claims == []
    assert rig.server.claims == [(request.id, rig.agent.settings.lease_duration_secs)]
    delivered = rig.server.result_for(request.id)
    assert delivered is not None and delivered.success


def test_a_job_claimed_in_the_answer_to_an_abandoned_poll_still_runs() -> None:
    """A held poll given up (here: a database came back, so the loop re-polls at once)
    may still come back with a job the server claimed for us: only we can run it."""
    rig = make_rig(make_settings(poll_wait_ms=10_000), claims_with_poll=True)
    outcome: list[StepResult] = []
    stepping = threading.Thread(target=lambda: outcome.append(rig.step()))
    stepping.start()
    assert rig.server.wait_for(lambda: len(rig.server.polls) == 1), "the poll was not sent"
    rig.agent.registry.changed.set()
    stepping.join(5)
    assert outcome[0].polled is False  # the loop gave the held poll up
    request = rig.server.dispatch("SELECT 1")
    assert rig.server.wait_for(lambda: rig.server.result_for(request.id) is not None)
    delivered = rig.server.result_for(request.id)
    assert delivered is not None and delivered.success
    assert rig.server.claims == []
