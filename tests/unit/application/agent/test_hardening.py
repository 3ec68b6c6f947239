"""Edge cases found in review: the agent never spins, never goes silent, never crashes on
a probe, tells the truth about committed writes, and keeps its timing promises."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from application.agent import poll_loop
from application.agent.claim_backoff import ClaimBackoff
from application.agent.settings import DatabaseSettings, SchemaSyncSettings
from domain.agent.errors import DatabaseUnavailable, ServerConflict
from domain.shared.jobs import PollRequest, PollResponse
from domain.shared.scopes import Scope
from tests.fakes.clock import FakeClock, RealClock
from tests.fakes.database import FakeDatabase, connectivity_error
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
    wait_until,
)


def _stop(h: Harness) -> None:
    h.agent.request_shutdown()
    h.agent.request_shutdown()
    h.wait_exit()


def test_a_job_whose_claim_keeps_failing_is_not_claimed_in_a_tight_loop() -> None:
    """A migration lock (409) can keep a job dispatched: claims back off 1 s, 2 s, 4 s…"""
    h = build_harness(make_settings(poll_interval_ms=20, poll_wait_ms=2000)).start()
    request = h.server.dispatch("SELECT 1")
    h.server.conflict_on_claim.add(request.id)
    assert wait_until(lambda: len(h.server.claims) >= 1)
    polls_at_first_claim = len(h.server.polls)
    assert wait_until(lambda: len(h.server.polls) >= polls_at_first_claim + 10)
    claims = [rid for rid, _ in h.server.claims if rid == request.id]
    assert len(claims) <= 2  # the first, and at most one retry after 1 s
    _stop(h)


def test_claim_backoff_doubles_to_fifteen_seconds_and_clears_on_success() -> None:
    clock = FakeClock()
    backoff = ClaimBackoff(clock)
    assert [backoff.record_failure("r") for _ in range(6)] == [1, 2, 4, 8, 15, 15]
    assert backoff.should_skip("r")
    clock.advance(15.01)
    assert not backoff.should_skip("r")
    backoff.clear("r")
    assert backoff.record_failure("r") == 1


class ExplodingDatabase(FakeDatabase):
    def execute_select(self, *args: Any, **kwargs: Any) -> Any:
        raise UnicodeEncodeError("latin-1", "€", 0, 1, "ordinal not in range(256)")

    def explain(self, sql: str, timeout_secs: int) -> Any:
        raise TypeError("unexpected adapter failure")


def test_an_unexpected_adapter_error_still_reports_a_failed_result() -> None:
    h = build_harness(databases={PG_URL: ExplodingDatabase()}).start()
    request = h.server.dispatch("SELECT '€'")
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None)
    result = h.server.result_for(request.id)
    assert result is not None and not result.success
    assert (result.error_message or "").startswith("agent error: UnicodeEncodeError")
    assert h.thread is not None and h.thread.is_alive()
    _stop(h)


def test_an_unexpected_explain_error_still_answers_the_preflight() -> None:
    h = build_harness(databases={PG_URL: ExplodingDatabase()}).start()
    job = h.server.add_preflight("SELECT 1")
    assert h.server.wait_for(lambda: job.id in h.server.preflight_results)
    assert "agent error: TypeError" in (h.server.preflight_results[job.id].error or "")
    _stop(h)


class FlakyProbes(FakeProbes):
    """Probe writes start failing at runtime (disk full, read-only remount)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def mark_alive(self) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        super().mark_alive()

    def set_ready(self, ready: bool) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        super().set_ready(ready)


def test_probe_write_failures_at_runtime_do_not_stop_the_agent() -> None:
    probes = FlakyProbes()
    h = build_harness(probes=probes).start()
    assert wait_until(lambda: probes.ready)
    probes.broken = True
    request = h.server.dispatch("SELECT 1")
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None)
    assert h.thread is not None and h.thread.is_alive()
    probes.broken = False
    assert h.stop() == 0


def test_a_dml_that_committed_after_the_lease_was_lost_reports_its_real_outcome() -> None:
    h = build_harness().start()
    db = h.db()
    db.hang = True
    db.rows_affected = 42
    request = h.server.dispatch("UPDATE t SET x = 1", operation="execute_dml")
    assert wait_until(db.running.is_set)
    h.server.lose_lease(request.id)
    h.server.lost_leases.update(h.server.requests[request.id].executions)
    # The statement cannot be stopped any more (it commits): the fake ignores the kill.
    db.release.set()
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None)
    result = h.server.result_for(request.id)
    assert result is not None
    if result.success:
        assert result.rows_affected == 42
    else:  # the kill won the race: then nothing committed and a failure is the truth
        assert "cancelled" in (result.error_message or "")
    _stop(h)


def test_a_lost_database_is_retried_while_a_long_poll_is_held() -> None:
    """Reconnects run on their own timer, not between polls."""
    settings = make_settings(
        poll_interval_ms=30,
        poll_wait_ms=60000,
        databases=(DatabaseSettings(APP_PROD, PG_URL), DatabaseSettings(APP_STAGING, MY_URL)),
    )
    h = build_harness(settings).start()
    prod = h.db(PG_URL)
    assert wait_until(lambda: len(h.server.polls) >= 2)
    prod.fail_next = connectivity_error()
    prod.connect_errors.extend([DatabaseUnavailable("still down")] * 1000)
    request = h.server.dispatch("SELECT 1")
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None)
    connects = prod.connects
    assert wait_until(lambda: prod.connects >= connects + 5, timeout=3)
    _stop(h)


def test_a_held_poll_is_redone_with_the_new_scopes_when_a_database_comes_back() -> None:
    settings = make_settings(
        poll_interval_ms=30,
        poll_wait_ms=60000,
        databases=(DatabaseSettings(APP_PROD, PG_URL), DatabaseSettings(APP_STAGING, MY_URL)),
    )
    h = build_harness(settings).start()
    prod = h.db(PG_URL)
    assert wait_until(lambda: len(h.server.polls) >= 2)
    prod.fail_next = connectivity_error()
    prod.connect_errors.extend([DatabaseUnavailable("down")] * 3)
    h.server.dispatch("SELECT 1")
    assert wait_until(lambda: h.server.polls[-1].capabilities.scopes == (APP_STAGING,))
    # Recovery ends the held poll at once: the next one advertises production again.
    later = h.server.dispatch("SELECT 2")
    assert h.server.wait_for(lambda: h.server.result_for(later.id) is not None, timeout=5)
    assert APP_PROD in h.server.polls[-1].capabilities.scopes
    _stop(h)


class HangingDrainServer(FakeServer):
    """Answers polls normally until the agent drains, then never answers."""

    def poll(self, request: PollRequest) -> PollResponse:
        if request.status.draining:
            threading.Event().wait(60)
        return super().poll(request)


def test_a_server_that_hangs_the_draining_poll_does_not_stretch_the_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poll_loop, "DRAINING_POLL_TIMEOUT_SECS", 0.5)
    server = HangingDrainServer(RealClock())
    h = build_harness(make_settings(drain_timeout_secs=1), server=server).start()
    assert wait_until(lambda: len(server.polls) >= 2)
    started = time.monotonic()
    h.agent.request_shutdown()
    assert h.wait_exit(timeout=20) == 0
    assert time.monotonic() - started < 4  # two draining polls cut at 0.5 s each


def test_periodic_schema_sync_survives_an_unexpected_error() -> None:
    settings = make_settings(
        schema_sync=SchemaSyncSettings(enabled=True, sync_on_startup=True, interval_secs=1)
    )
    h = build_harness(settings)
    db = h.db()
    db.schema_error = TypeError("not JSON serializable")
    h.start()
    assert h.server.wait_for(lambda: len(h.server.schema_reports) >= 1)
    report = h.server.schema_reports[0]
    assert report.status == "failed" and "agent error: TypeError" in (report.error_message or "")
    db.schema_error = None
    assert h.server.wait_for(
        lambda: any(r.status == "ready" for r in h.server.schema_reports), timeout=5
    )
    _stop(h)


def test_a_409_after_a_retried_submission_counts_as_delivered() -> None:
    """The first attempt reached the server but its answer was lost; the retry gets 409."""
    from application.agent.result_submitter import ResultSubmitter
    from domain.agent.errors import ServerUnreachable
    from domain.shared.jobs import JobResult

    class LostAnswerServer(FakeServer):
        attempts = 0

        def submit_result(self, execution_id: str, result: JobResult) -> None:
            self.attempts += 1
            if self.attempts == 1:
                raise ServerUnreachable("read timeout (the server stored it)")
            raise ServerConflict(409, "conflict: execution already completed")

    clock = FakeClock()
    submitter = ResultSubmitter(LostAnswerServer(clock), clock, threading.Event())
    assert submitter.submit("e-1", JobResult(success=True), budget_secs=300)


def test_jobs_are_not_claimed_for_a_scope_that_went_down_during_the_poll() -> None:
    h = build_harness()
    h.start()
    assert wait_until(lambda: len(h.server.polls) >= 2)
    h.db().connect_errors.extend([DatabaseUnavailable("down")] * 1000)
    h.agent.registry.mark_down(APP_PROD, "lost")
    h.server.dispatch("SELECT 1", scope=Scope("app", "production"))
    polls = len(h.server.polls)
    assert wait_until(lambda: len(h.server.polls) >= polls + 3)
    assert h.server.claims == []
    _stop(h)


def test_result_data_of_the_fake_stays_json() -> None:
    """Guard for the fakes used above: select output is JSON with rows."""
    h = build_harness().start()
    request = h.server.dispatch("SELECT 1")
    assert h.server.wait_for(lambda: h.server.result_for(request.id) is not None)
    result = h.server.result_for(request.id)
    assert result is not None and json.loads(result.result_data or "")["rows"] == [{"n": 1}]
    _stop(h)


def test_a_token_with_a_trailing_newline_is_a_config_error_that_hides_it(tmp_path: Path) -> None:
    from adapters.config.agent import load_agent_settings
    from domain.shared.errors import ConfigError

    secret = "dbw_" + "a" * 32
    config = tmp_path / "agent.toml"
    config.write_text(
        '[server]\nurl = "http://127.0.0.1:3000"\nagent_token = "${TOKEN}"\n'
        '[databases.app.production]\nurl = "postgres://h/app"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_agent_settings(config, {"TOKEN": secret + "\n"})
    assert "server.agent_token" in str(caught.value)
    assert secret not in str(caught.value)


def test_an_unsendable_header_is_a_hard_error_that_does_not_echo_the_token() -> None:
    from adapters.server_client.client import HttpServerClient
    from domain.shared.errors import ConfigError
    from tests.fakes.http_server import FakeHttpServer

    secret = "dbw_" + "b" * 32 + "\n"
    http = FakeHttpServer(FakeServer(RealClock()), agent_token="x").start()
    try:
        client = HttpServerClient(http.url, secret, agent_build="t")
        with pytest.raises(ConfigError) as caught:
            client.fetch_public_key()
    finally:
        http.stop()
    assert caught.value.is_hard
    assert "b" * 32 not in str(caught.value)
