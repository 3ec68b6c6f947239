"""A claimed job end to end: claim, token verification, execution, heartbeats, cancel,
lease loss, result delivery. The agent runs on threads over the fake server and database;
ResultSubmitter's retry schedule is driven on a fake clock."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.agent.cancellation import CancelToken
from application.agent.claim_backoff import ClaimBackoff
from application.agent.database_registry import DatabaseRegistry
from application.agent.job_executor import JobExecutor
from application.agent.job_tracker import JobTracker
from application.agent.result_submitter import ResultSubmitter
from application.agent.runner import Agent, AgentPorts
from application.agent.settings import AgentSettings
from domain.agent.database_health import DatabaseState
from domain.agent.errors import DatabaseError, ServerConflict, ServerError, ServerUnreachable
from domain.shared.jobs import JobResult, PollRequest, PollResponse
from domain.shared.operations import Operation
from tests.fakes.clock import FakeClock, FixedRandom, RealClock
from tests.fakes.database import FakeDatabaseFactory, connectivity_error
from tests.fakes.probes import FakeProbes
from tests.fakes.server import FakeRequest, FakeServer, rfc3339
from tests.unit.conftest import APP_PROD, Harness, build_harness, make_settings

MIGRATION = json.dumps({"version": 2, "migrations": [{"version": "2", "up": "CREATE TABLE t ()"}]})


# --- rigs -----------------------------------------------------------------------------


class RelabellingServer(FakeServer):
    """Offers every dispatched job, whatever the poll advertised, under the operation name
    `offer_as`; the claim still carries the request's real, signed operation."""

    offer_as: str | None = None

    def poll(self, request: PollRequest) -> PollResponse:
        response = super().poll(request)
        with self._cond:
            jobs = tuple(r.job() for r in self.requests.values() if r.status == "dispatched")
        if self.offer_as is not None:
            jobs = tuple(replace(job, operation=self.offer_as) for job in jobs)
        return replace(response, jobs=jobs[: request.limit])


def harness_with(server: FakeServer, settings: AgentSettings) -> Harness:
    """build_harness, but around a given server."""
    registry = DatabaseRegistry(settings.databases, factory := FakeDatabaseFactory(), RealClock())
    probes = FakeProbes()
    ports = AgentPorts(
        server=server,
        verifier=Ed25519Verifier(),
        probes=probes,
        clock=RealClock(),
        random=FixedRandom(0.01),
    )
    agent = Agent(settings, ports, registry, agent_build="test-build")
    return Harness(agent=agent, server=server, databases=factory, probes=probes)


@pytest.fixture
def agents() -> Iterator[list[Harness]]:
    """Harnesses a test starts; hanging statements are released and agents stopped after."""
    started: list[Harness] = []
    yield started
    for h in started:
        for db in h.databases.databases.values():
            db.release.set()
        if h.thread is not None and h.thread.is_alive():
            h.agent.request_shutdown()
            h.agent.request_shutdown()
            h.thread.join(10)


@pytest.fixture
def run_agent(agents: list[Harness]) -> Callable[..., Harness]:
    def start(settings: AgentSettings | None = None, server: FakeServer | None = None) -> Harness:
        settings = settings or make_settings()
        h = build_harness(settings) if server is None else harness_with(server, settings)
        agents.append(h)
        return h.start()

    return start


def result_of(h: Harness, request: FakeRequest, timeout: float = 5.0) -> JobResult:
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None, timeout), (
        "no result submitted"
    )
    result = h.server.result_for(request.id)
    assert result is not None
    return result


def heartbeat_thread_alive(execution_id: str) -> bool:
    return any(t.name == f"heartbeat-{execution_id}" for t in threading.enumerate())


def execution_of(h: Harness, request: FakeRequest) -> str:
    assert h.server.wait_for(lambda: bool(request.executions))
    return request.executions[0]


# --- claim ----------------------------------------------------------------------------


def test_claim_conflict_is_a_silent_skip(
    run_agent: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = run_agent()
    h.server.conflict_on_claim.add("taken-elsewhere")
    h.server.dispatch("SELECT 1", request_id="taken-elsewhere")
    with caplog.at_level(logging.DEBUG, logger="dbward.agent.jobs"):
        assert h.server.wait_for(lambda: h.server.calls.count("claim") >= 2)
    assert "submit_result" not in h.server.calls
    assert h.db().executed == []
    noisy = [r for r in caplog.records if r.name == "dbward.agent.jobs" and r.levelno > 10]
    assert noisy == []
    later = h.server.dispatch("SELECT 2")
    assert result_of(h, later).success  # the agent carried on


def test_claim_server_error_is_not_retried_by_the_job_but_the_next_poll_offers_it_again(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    h.server.fail("claim", ServerError(503, "service unavailable"))
    request = h.server.dispatch("SELECT 1")
    assert result_of(h, request).success
    calls = h.server.calls
    first_claim = calls.index("claim")
    second_claim = calls.index("claim", first_claim + 1)
    assert "poll" in calls[first_claim:second_claim]
    assert calls.count("claim") == 2


def test_claim_requests_the_configured_lease_duration(run_agent: Callable[..., Harness]) -> None:
    h = run_agent(make_settings(lease_duration_secs=123))
    request = h.server.dispatch("SELECT 1")
    result_of(h, request)
    assert h.server.claims == [(request.id, 123)]


# --- token verification -----------------------------------------------------------------


def _set(field: str, value: str) -> Callable[[dict[str, str]], None]:
    return lambda token: token.__setitem__(field, value)


def _flip_first_signature_byte(token: dict[str, str]) -> None:
    signature = token["signature"]
    token["signature"] = f"{int(signature[:2], 16) ^ 0x01:02x}{signature[2:]}"


PAST = rfc3339(datetime.now(UTC) - timedelta(minutes=1))

TOKEN_TAMPERS = [
    pytest.param(_set("expires_at", PAST), "token expired", id="expired"),
    pytest.param(_set("expires_at", "tomorrow"), "invalid expires_at: ", id="bad-expires_at"),
    pytest.param(_set("request_id", "someone-else"), "request_id mismatch", id="request_id"),
    pytest.param(_set("operation", "execute_dml"), "operation mismatch", id="operation"),
    pytest.param(_set("database", "billing"), "database mismatch", id="database"),
    pytest.param(_set("environment", "staging"), "environment mismatch", id="environment"),
    pytest.param(_set("detail_hash", "0" * 64), "detail_hash mismatch", id="detail_hash"),
    pytest.param(_set("signature", "zz" * 64), "invalid signature hex", id="signature-hex"),
    pytest.param(_set("signature", "ab" * 32), "invalid signature", id="signature-length"),
    pytest.param(
        _flip_first_signature_byte,
        "signature invalid: verification equation was not satisfied",
        id="signature-flipped",
    ),
]


@pytest.mark.parametrize(("tamper", "message"), TOKEN_TAMPERS)
def test_token_that_fails_verification_becomes_a_failed_result(
    run_agent: Callable[..., Harness], tamper: Callable[[dict[str, str]], None], message: str
) -> None:
    h = run_agent()
    request = h.server.dispatch("SELECT 1", request_id="forged")
    h.server.tamper_token(request.id, tamper)
    result = result_of(h, request)
    assert not result.success
    expected = f"token verification failed: {message}"
    assert result.error_message is not None
    if message.endswith(": "):
        assert result.error_message.startswith(expected)
    else:
        assert result.error_message == expected
    assert h.db().executed == []


def test_token_that_is_not_json_becomes_a_failed_result(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch("SELECT 1")
    h.server.tamper_claim(request.id, lambda c: replace(c, execution_token="{not json"))
    result = result_of(h, request)
    assert not result.success
    assert (result.error_message or "").startswith("token verification failed: invalid token JSON:")
    assert h.db().executed == []


def test_token_missing_a_required_field_is_invalid_token_json(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch("SELECT 1")
    h.server.tamper_token(request.id, lambda token: token.pop("detail_hash"))
    result = result_of(h, request)
    assert (result.error_message or "").startswith("token verification failed: invalid token JSON")


def test_a_changed_execution_plan_json_is_a_detail_hash_mismatch(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch("SELECT 1")
    h.server.tamper_claim(
        request.id, lambda c: replace(c, execution_plan_json='["DELETE FROM users"]')
    )
    result = result_of(h, request)
    assert result.error_message == "token verification failed: detail_hash mismatch"
    assert h.db().executed == []


def test_a_changed_migration_detail_is_a_detail_hash_mismatch(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch(MIGRATION, operation="migrate_up")
    h.server.tamper_claim(request.id, lambda c: replace(c, detail=MIGRATION.replace("t ()", "x")))
    result = result_of(h, request)
    assert result.error_message == "token verification failed: detail_hash mismatch"
    assert h.db().executed == []


def test_after_a_forged_token_the_agent_keeps_running_and_takes_the_next_job(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    forged = h.server.dispatch("SELECT 1")
    h.server.tamper_token(forged.id, _flip_first_signature_byte)
    assert not result_of(h, forged).success
    genuine = h.server.dispatch("SELECT 2")
    assert result_of(h, genuine).success
    assert h.thread is not None and h.thread.is_alive()
    assert h.db().executed == [("select", "SELECT 2", 30)]


# --- what is executed -------------------------------------------------------------------


def test_the_signed_plan_is_executed_joined_with_semicolon_newline(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch("SELECT 1; SELECT 2", plan=["SELECT 1", "SELECT 2"])
    assert result_of(h, request).success
    assert [sql for _, sql, _ in h.db().executed] == ["SELECT 1;\nSELECT 2"]


def test_the_unsigned_execution_plan_copy_is_never_executed(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch("SELECT 1", plan=["SELECT 1"])
    h.server.tamper_claim(request.id, lambda c: replace(c, execution_plan=("DROP TABLE users",)))
    assert result_of(h, request).success
    assert [sql for _, sql, _ in h.db().executed] == ["SELECT 1"]


def test_the_detail_is_not_executed_when_a_signed_plan_exists(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch("SELECT 1", plan=["SELECT 1"])
    h.server.tamper_claim(request.id, lambda c: replace(c, detail="DROP TABLE users"))
    assert result_of(h, request).success
    assert [sql for _, sql, _ in h.db().executed] == ["SELECT 1"]


# --- timeouts and limits ----------------------------------------------------------------


def test_the_claim_statement_timeout_wins_over_the_config(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent(make_settings(statement_timeout_secs=42))
    request = h.server.dispatch("SELECT 1", statement_timeout_secs=7)
    result_of(h, request)
    assert h.db().executed == [("select", "SELECT 1", 7)]


def test_the_config_statement_timeout_applies_when_the_claim_has_none(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent(make_settings(statement_timeout_secs=42))
    request = h.server.dispatch("SELECT 1", statement_timeout_secs=None)
    result_of(h, request)
    assert h.db().executed == [("select", "SELECT 1", 42)]


def test_claim_max_rows_caps_the_result_rows(run_agent: Callable[..., Harness]) -> None:
    h = run_agent(make_settings(max_result_rows=10_000))
    h.db().rows = [{"n": n} for n in range(5)]
    request = h.server.dispatch("SELECT n FROM t", max_rows=3)
    result = result_of(h, request)
    assert h.db().last_limits is not None and h.db().last_limits.max_rows == 3
    data = json.loads(result.result_data or "")
    assert (len(data["rows"]), data["truncated"]) == (3, True)
    assert result.truncated is True


def test_claim_max_rows_cannot_raise_the_agent_cap(run_agent: Callable[..., Harness]) -> None:
    h = run_agent(make_settings(max_result_rows=100))
    request = h.server.dispatch("SELECT 1", max_rows=50_000)
    result_of(h, request)
    assert h.db().last_limits is not None and h.db().last_limits.max_rows == 100


def test_a_dml_result_carries_rows_affected(run_agent: Callable[..., Harness]) -> None:
    h = run_agent()
    h.db().rows_affected = 5
    request = h.server.dispatch("UPDATE t SET x = 1", operation="execute_dml")
    result = result_of(h, request)
    assert result.success
    assert result.rows_affected == 5
    assert json.loads(result.result_data or "") == {"rows_affected": 5}
    assert h.db().executed == [("dml", "UPDATE t SET x = 1", 30)]
    assert result.truncated is None


def test_a_dml_that_returns_rows_gets_them_under_the_select_limits(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent(make_settings(max_result_rows=10_000, max_result_bytes=4096))
    h.db().rows_affected = 4
    h.db().dml_rows = [{"id": n} for n in range(4)]
    request = h.server.dispatch(
        "INSERT INTO t SELECT g FROM generate_series(1, 4) g RETURNING id",
        operation="execute_dml",
        max_rows=2,
    )
    result = result_of(h, request)
    limits = h.db().last_limits
    assert limits is not None and (limits.max_rows, limits.max_bytes) == (2, 4096)
    assert result.success and result.rows_affected == 4
    data = json.loads(result.result_data or "")
    assert data["rows"] == [{"id": 0}, {"id": 1}]
    assert data["rows_affected"] == 4
    assert result.truncated is True


# --- heartbeats, cancel, lease loss -------------------------------------------------------


def test_heartbeats_are_sent_while_a_statement_runs(run_agent: Callable[..., Harness]) -> None:
    h = run_agent()
    h.db().hang = True
    request = h.server.dispatch("SELECT pg_sleep(60)")
    execution_id = execution_of(h, request)
    assert h.db().running.wait(5)
    assert h.server.wait_for(lambda: h.server.heartbeats.count(execution_id) >= 3)
    h.db().release.set()
    assert result_of(h, request).success


def test_heartbeats_run_on_their_own_thread_while_the_database_is_hung(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    h.db().hang = True
    request = h.server.dispatch("SELECT pg_sleep(60)")
    execution_id = execution_of(h, request)
    assert h.db().running.wait(5)
    before = h.server.heartbeats.count(execution_id)
    assert h.server.wait_for(lambda: h.server.heartbeats.count(execution_id) >= before + 3)
    assert h.db().running.is_set()  # the statement never returned meanwhile
    assert heartbeat_thread_alive(execution_id)


def test_a_server_cancel_kills_the_statement_and_reports_query_cancelled(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    h.db().hang = True
    request = h.server.dispatch("SELECT pg_sleep(60)")
    assert h.db().running.wait(5)
    h.server.cancel(request.id)
    result = result_of(h, request)
    assert not result.success
    assert result.error_message == "driver error: query cancelled"
    assert h.db().kills == 1


def test_a_lost_lease_cancels_the_statement_and_success_is_not_reported(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    h.db().hang = True
    request = h.server.dispatch("SELECT pg_sleep(60)")
    execution_of(h, request)
    assert h.db().running.wait(5)
    h.server.lose_lease(request.id)
    result = result_of(h, request)
    assert not result.success
    assert result.error_message == "driver error: query cancelled (lease lost)"
    assert h.db().kills == 1


def test_a_cancelled_migration_is_never_killed(run_agent: Callable[..., Harness]) -> None:
    h = run_agent()
    h.db().hang = True
    request = h.server.dispatch(MIGRATION, operation="migrate_up")
    execution_id = execution_of(h, request)
    assert h.db().running.wait(5)
    h.server.cancel(request.id)
    seen = h.server.heartbeats.count(execution_id)
    # A few more beats: the cancel has been seen by now, and the migration goes on.
    assert h.server.wait_for(lambda: h.server.heartbeats.count(execution_id) >= seen + 3)
    assert h.db().running.is_set()
    assert h.db().kills == 0
    h.db().release.set()
    assert result_of(h, request).success


def test_a_migration_that_lost_its_lease_is_never_killed(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    h.db().hang = True
    request = h.server.dispatch(MIGRATION, operation="migrate_up")
    execution_id = execution_of(h, request)
    assert h.db().running.wait(5)
    h.server.lose_lease(request.id)
    # The next beat is answered 409 and heartbeating stops: the lease loss has been seen.
    assert h.server.wait_for(lambda: not heartbeat_thread_alive(execution_id))
    polls = len(h.server.polls)
    assert h.server.wait_for(lambda: len(h.server.polls) >= polls + 3)
    assert h.db().running.is_set()
    assert h.db().kills == 0
    h.db().release.set()
    assert result_of(h, request).success  # the migration finished; its outcome is reported


def test_a_successful_migrate_up_syncs_that_schema_even_with_schema_sync_disabled(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()  # make_settings() disables schema sync
    h.db().schema = {"tables": [{"name": "t"}]}
    request = h.server.dispatch(MIGRATION, operation="migrate_up")
    assert result_of(h, request).success
    assert h.server.wait_for(lambda: bool(h.server.schema_reports))
    (report,) = h.server.schema_reports
    assert (report.scope, report.status, report.dialect) == (APP_PROD, "ready", "postgresql")
    assert report.snapshot == {"tables": [{"name": "t"}]}


def test_migrate_status_does_not_trigger_a_schema_sync(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    request = h.server.dispatch("", operation="migrate_status")
    assert result_of(h, request).success
    follow_up = h.server.dispatch("SELECT 1")
    result_of(h, follow_up)
    assert h.server.schema_reports == []


# --- failures on the database side --------------------------------------------------------


def test_a_connectivity_error_marks_the_database_down_until_it_reconnects(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    db = h.db()
    assert h.server.wait_for(lambda: bool(h.server.polls))  # connected at startup
    db.connect_errors.extend(connectivity_error() for _ in range(10_000))
    db.fail_next = connectivity_error("server closed the connection unexpectedly")
    request = h.server.dispatch("SELECT 1")
    result = result_of(h, request)
    assert result.error_message == "driver error: server closed the connection unexpectedly"
    assert h.agent.registry.health(APP_PROD).state is DatabaseState.DOWN
    polls = len(h.server.polls)
    assert h.server.wait_for(lambda: len(h.server.polls) >= polls + 3)
    assert all(p.limit == 0 for p in h.server.polls[polls + 1 :])  # no intake while down
    db.connect_errors.clear()
    assert h.server.wait_for(lambda: h.server.polls[-1].limit == 2)  # reconnected


def test_a_query_error_does_not_mark_the_database_down(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent()
    h.db().fail_next = DatabaseError('relation "nope" does not exist')
    request = h.server.dispatch("SELECT * FROM nope")
    result = result_of(h, request)
    assert result.error_message == 'driver error: relation "nope" does not exist'
    assert h.agent.registry.health(APP_PROD).state is DatabaseState.UP


# --- operations -------------------------------------------------------------------------


def test_an_unsupported_operation_becomes_a_failed_result(
    run_agent: Callable[..., Harness],
) -> None:
    h = run_agent(server=RelabellingServer(RealClock()))
    request = h.server.dispatch("SELECT 1", operation="drop_everything")
    result = result_of(h, request)
    assert not result.success
    assert result.error_message == "unsupported operation: drop_everything"
    assert h.db().executed == []


def test_a_claimed_operation_not_enabled_here_becomes_a_failed_result(
    run_agent: Callable[..., Harness],
) -> None:
    # The poll offered a select; the signed claim turned out to be a DML.
    server = RelabellingServer(RealClock())
    server.offer_as = "execute_select"
    h = run_agent(make_settings(operations=(Operation.EXECUTE_SELECT,)), server)
    request = h.server.dispatch("DELETE FROM users", operation="execute_dml")
    result = result_of(h, request)
    assert not result.success
    assert result.error_message == "operation execute_dml is not enabled on this agent"
    assert h.db().executed == []


# --- result delivery ------------------------------------------------------------------------


@dataclass
class SubmitRig:
    server: FakeServer
    clock: FakeClock
    submitter: ResultSubmitter
    execution_id: str
    abort: threading.Event


def submit_rig() -> SubmitRig:
    clock = FakeClock()
    server = FakeServer(clock)
    request = server.dispatch("SELECT 1")
    claim = server.claim(request.id, 300)
    abort = threading.Event()
    return SubmitRig(
        server, clock, ResultSubmitter(server, clock, abort), claim.execution_id, abort
    )


OK = JobResult(success=True, result_data='{"rows":[]}', duration_ms=3)


@pytest.mark.parametrize(
    "error",
    [ServerError(503, "service unavailable"), ServerUnreachable("connection refused")],
    ids=["503", "unreachable"],
)
def test_result_submission_retries_transient_failures_until_it_succeeds(error: Exception) -> None:
    rig = submit_rig()
    rig.server.fail("submit_result", error, times=3)  # type: ignore[arg-type]
    assert rig.submitter.submit(rig.execution_id, OK, budget_secs=300) is True
    assert rig.clock.waits == [1, 2, 4]
    assert rig.server.results[rig.execution_id] == [OK]


def test_result_submission_retries_429() -> None:
    rig = submit_rig()
    rig.server.fail("submit_result", ServerError(429, "slow down"))
    assert rig.submitter.submit(rig.execution_id, OK, budget_secs=300) is True
    assert rig.clock.waits == [1]


@pytest.mark.parametrize("status", [400, 403, 404, 413, 422])
def test_result_submission_stops_at_a_client_error(status: int) -> None:
    rig = submit_rig()
    rig.server.fail("submit_result", ServerError(status, "refused"))
    assert rig.submitter.submit(rig.execution_id, OK, budget_secs=300) is False
    assert rig.clock.waits == []
    assert rig.server.calls.count("submit_result") == 1


def test_result_submission_stops_when_the_server_already_has_a_result() -> None:
    rig = submit_rig()
    rig.server.fail("submit_result", ServerConflict(409, "execution already completed"))
    assert rig.submitter.submit(rig.execution_id, OK, budget_secs=300) is False
    assert rig.clock.waits == []


def test_result_submission_backs_off_1_2_4_8_15_and_gives_up_only_after_the_budget() -> None:
    rig = submit_rig()
    rig.server.fail("submit_result", ServerError(503, "down"), times=1000)
    assert rig.submitter.submit(rig.execution_id, OK, budget_secs=300) is False
    waits = rig.clock.waits
    assert waits[:6] == [1, 2, 4, 8, 15, 15]
    assert set(waits[4:]) == {15}
    assert sum(waits) <= 300 < sum(waits) + 15  # it kept going as long as the budget allowed
    assert rig.server.calls.count("submit_result") == len(waits) + 1


def test_result_submission_is_abandoned_on_a_forced_shutdown() -> None:
    rig = submit_rig()
    rig.server.fail("submit_result", ServerError(503, "down"), times=1000)
    rig.abort.set()
    assert rig.submitter.submit(rig.execution_id, OK, budget_secs=300) is False
    assert rig.server.calls.count("submit_result") == 1


class RecordingSubmitter:
    """Stands in for ResultSubmitter: records what would be sent and with which budget."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, JobResult, float]] = []

    def submit(self, execution_id: str, result: JobResult, budget_secs: float) -> bool:
        self.sent.append((execution_id, result, budget_secs))
        return True


@pytest.mark.parametrize(("lease", "budget"), [(60, 300.0), (600, 660.0)])
def test_the_result_budget_is_the_granted_lease_plus_grace_and_at_least_300s(
    lease: int, budget: float
) -> None:
    clock = FakeClock()
    server = FakeServer(clock)
    settings = make_settings(lease_duration_secs=600)
    registry = DatabaseRegistry(settings.databases, FakeDatabaseFactory(), clock)
    registry.connect(APP_PROD, 1.0)
    verifier = Ed25519Verifier()
    verifier.load_public_key(server.public_key_hex())
    submitter = RecordingSubmitter()
    tracker = JobTracker()
    executor = JobExecutor(
        settings=settings,
        server=server,
        registry=registry,
        tracker=tracker,
        verifier=verifier,
        clock=clock,
        submitter=submitter,  # type: ignore[arg-type]
        after_migration=lambda scope: None,
        on_finished=threading.Event(),
        claim_backoff=ClaimBackoff(clock),
    )
    request = server.dispatch("SELECT 1", lease_secs=lease)
    executor.run(request.job(), CancelToken())
    ((_, result, budget_secs),) = submitter.sent
    assert result.success
    assert budget_secs == pytest.approx(budget, abs=0.5)
