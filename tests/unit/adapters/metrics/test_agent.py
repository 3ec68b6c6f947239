"""The agent's Prometheus adapter and its database health gauge."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from adapters.metrics.agent import DatabaseHealthGauge, PrometheusAgentMetrics
from application.agent.metrics import JobOutcome
from tests.unit.adapters.metrics.test_server import samples


def test_jobs_count_by_outcome_with_duration_and_result_bytes() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusAgentMetrics(registry)
    metrics.job_finished(JobOutcome.SUCCEEDED, 0.2, 100)
    metrics.job_finished(JobOutcome.SUCCEEDED, 0.3, 50)
    metrics.job_finished(JobOutcome.FAILED, 1.0, 0)
    found = samples(registry)
    assert found[("dbward_agent_jobs_total", (("outcome", "succeeded"),))] == 2
    assert found[("dbward_agent_jobs_total", (("outcome", "failed"),))] == 1
    assert found[("dbward_agent_jobs_total", (("outcome", "undelivered"),))] == 0
    assert found[("dbward_agent_job_duration_seconds_count", ())] == 3
    assert found[("dbward_agent_result_bytes_total", ())] == 150


def test_polls_poll_errors_and_heartbeat_failures_count() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusAgentMetrics(registry)
    metrics.poll_finished(ok=True)
    metrics.poll_finished(ok=True)
    metrics.poll_finished(ok=False)
    metrics.heartbeat_failed()
    found = samples(registry)
    assert found[("dbward_agent_polls_total", ())] == 2
    assert found[("dbward_agent_poll_errors_total", ())] == 1
    assert found[("dbward_agent_heartbeat_failures_total", ())] == 1


def test_database_health_is_one_per_usable_scope_and_zero_per_down_one() -> None:
    registry = CollectorRegistry()
    health = {"app/production": True, "app/staging": True}
    registry.register(DatabaseHealthGauge(lambda: health))
    health["app/staging"] = False
    found = samples(registry)
    assert found[("dbward_agent_database_up", (("scope", "app/production"),))] == 1
    assert found[("dbward_agent_database_up", (("scope", "app/staging"),))] == 0
