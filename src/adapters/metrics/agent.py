"""The agent's metrics (docs/operations.md "Metrics"), fed through `AgentMetrics`; the
database health gauge is read from the registry when scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from application.agent.metrics import JobOutcome

__all__ = ["DatabaseHealthGauge", "PrometheusAgentMetrics"]

#: Statement runs from milliseconds to the longest migrations.
EXECUTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class PrometheusAgentMetrics:
    """`AgentMetrics` into `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._jobs = Counter(
            "dbward_agent_jobs",
            "Claimed jobs, by outcome (succeeded, failed, undelivered)",
            ("outcome",),
            registry=registry,
        )
        self._execution = Histogram(
            "dbward_agent_job_duration_seconds",
            "From claim to the result handed over, per claimed job",
            buckets=EXECUTION_BUCKETS,
            registry=registry,
        )
        self._result_bytes = Counter(
            "dbward_agent_result_bytes",
            "Bytes of result data sent to the server",
            registry=registry,
        )
        self._heartbeat_failures = Counter(
            "dbward_agent_heartbeat_failures",
            "Heartbeats that failed or found the lease lost",
            registry=registry,
        )
        self._polls = Counter(
            "dbward_agent_polls", "Polls answered by the server", registry=registry
        )
        self._poll_errors = Counter(
            "dbward_agent_poll_errors", "Polls that failed", registry=registry
        )
        for outcome in JobOutcome:
            self._jobs.labels(outcome.value)

    def job_finished(self, outcome: JobOutcome, seconds: float, result_bytes: int) -> None:
        self._jobs.labels(outcome.value).inc()
        self._execution.observe(max(seconds, 0.0))
        self._result_bytes.inc(result_bytes)

    def heartbeat_failed(self) -> None:
        self._heartbeat_failures.inc()

    def poll_finished(self, *, ok: bool) -> None:
        (self._polls if ok else self._poll_errors).inc()


class DatabaseHealthGauge(Collector):
    """`dbward_agent_database_up{scope="db/env"}`: 1 when the database is usable, else 0."""

    NAME = "dbward_agent_database_up"
    HELP = "Whether each configured database is usable (1) or down (0)"

    def __init__(self, read: Callable[[], Mapping[str, bool]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=("scope",))
        for scope, up in sorted(self._read().items()):
            family.add_metric((scope,), 1.0 if up else 0.0)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=("scope",))]
