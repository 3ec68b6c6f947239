"""What the agent's services report to the metrics port (docs/operations.md "Metrics")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from application.agent.job_executor import job_outcome, result_size
from application.agent.metrics import JobOutcome, database_up
from domain.agent.errors import ServerUnreachable
from domain.shared.jobs import JobResult
from tests.fakes.metrics import RecordingAgentMetrics
from tests.unit.conftest import Harness, build_harness


@pytest.fixture
def metrics() -> RecordingAgentMetrics:
    return RecordingAgentMetrics()


@pytest.fixture
def h(metrics: RecordingAgentMetrics) -> Iterator[Harness]:
    harness = build_harness(metrics=metrics).start()
    yield harness
    for db in harness.databases.databases.values():
        db.release.set()
    harness.agent.request_shutdown()
    harness.agent.request_shutdown()
    harness.wait_exit()


def test_a_job_is_counted_with_its_outcome_and_result_size(
    h: Harness, metrics: RecordingAgentMetrics
) -> None:
    request = h.server.dispatch("SELECT 1")
    assert h.server.wait_for(lambda: bool(metrics.jobs))
    result = h.server.result_for(request.id)
    assert result is not None and result.success
    assert metrics.jobs == [(JobOutcome.SUCCEEDED, len(result.result_data or ""))]
    assert True in metrics.polls


def test_a_lost_lease_counts_a_heartbeat_failure_and_a_failed_job(
    h: Harness, metrics: RecordingAgentMetrics
) -> None:
    h.db().hang = True
    request = h.server.dispatch("SELECT pg_sleep(60)")
    assert h.db().running.wait(5)
    h.server.lose_lease(request.id)
    assert h.server.wait_for(lambda: bool(metrics.jobs))
    assert metrics.heartbeat_failures >= 1
    assert metrics.jobs[0][0] is JobOutcome.FAILED


def test_a_failed_poll_is_counted_as_an_error(h: Harness, metrics: RecordingAgentMetrics) -> None:
    assert h.server.wait_for(lambda: True in metrics.polls)
    h.server.fail("poll", ServerUnreachable("connection refused"))
    assert h.server.wait_for(lambda: False in metrics.polls)


def test_an_undelivered_result_wins_over_its_success() -> None:
    ok = JobResult(success=True, result_data='{"rows":[]}')
    assert job_outcome(ok, delivered=True) is JobOutcome.SUCCEEDED
    assert job_outcome(ok, delivered=False) is JobOutcome.UNDELIVERED
    assert job_outcome(JobResult.failure("boom"), delivered=True) is JobOutcome.FAILED


def test_result_size_is_utf8_bytes() -> None:
    assert result_size(JobResult(success=True, result_data="é")) == 2
    assert result_size(JobResult.failure("boom")) == 0


def test_database_up_lists_every_configured_scope(h: Harness) -> None:
    assert h.server.wait_for(lambda: database_up(h.agent.registry) == {"app/production": True})
    h.agent.registry.mark_down(h.agent.registry.scopes[0], "connection lost")
    assert database_up(h.agent.registry) == {"app/production": False}
