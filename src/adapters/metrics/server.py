"""The server's metrics (docs/operations.md "Metrics"): counters and histograms fed by the
use cases through `ServerMetrics`, and state gauges read when the registry is scraped."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.server.request_lifecycle import RequestStatus
from domain.server.webhooks import DeliveryStatus
from domain.shared.operations import Operation

__all__ = ["PrometheusServerMetrics", "StateGauges", "register_state_gauges"]

log = logging.getLogger("dbward.server.metrics")

#: Dispatch waits from milliseconds (a held long-poll) to minutes (no agent around).
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: API latencies; long-polls land in the top buckets.
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
#: A webhook attempt's `result` label, by the delivery's status after it.
WEBHOOK_RESULTS = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.PENDING: "retrying",
    DeliveryStatus.FAILED: "failed",
}


class PrometheusServerMetrics:
    """`ServerMetrics` into `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._created = Counter(
            "dbward_requests_created",
            "Requests created, by the status they rested in after creation and operation",
            ("status", "operation"),
            registry=registry,
        )
        self._transitions = Counter(
            "dbward_request_transitions",
            "Committed request status changes, by the status moved to",
            ("to",),
            registry=registry,
        )
        self._dispatch = Histogram(
            "dbward_dispatch_latency_seconds",
            "From a request's dispatch (create or final approval) to an agent's claim",
            ("operation",),
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self._leases = Counter(
            "dbward_lease_expiries",
            "Executions whose lease expired without a result (request became execution_lost)",
            registry=registry,
        )
        self._api_latency = Histogram(
            "dbward_http_request_duration_seconds",
            "API request duration, by method and route template",
            ("method", "route"),
            buckets=API_BUCKETS,
            registry=registry,
        )
        self._responses = Counter(
            "dbward_http_responses",
            "API responses, by route template and status class (2xx, 4xx, ...)",
            ("route", "status_class"),
            registry=registry,
        )
        self._webhooks = Counter(
            "dbward_webhook_attempts",
            "Webhook sends, by result: delivered, retrying (will be sent again) or failed "
            "(given up)",
            ("result",),
            registry=registry,
        )

    def request_created(self, status: RequestStatus, operation: Operation) -> None:
        self._created.labels(status.value, operation.value).inc()

    def requests_transitioned(self, statuses: Sequence[RequestStatus]) -> None:
        for status in statuses:
            self._transitions.labels(status.value).inc()

    def job_claimed(self, operation: Operation, waited_secs: float) -> None:
        self._dispatch.labels(operation.value).observe(max(waited_secs, 0.0))

    def leases_expired(self, count: int) -> None:
        if count:
            self._leases.inc(count)

    def api_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        self._api_latency.labels(method, route).observe(seconds)
        self._responses.labels(route, f"{status_code // 100}xx").inc()

    def webhook_attempted(self, status: DeliveryStatus) -> None:
        self._webhooks.labels(WEBHOOK_RESULTS[status]).inc()


class StateGauges(Collector):
    """Gauges computed at scrape time; one that cannot be read (store down) is left out
    of that scrape instead of failing it."""

    def __init__(self, gauges: Iterable[tuple[str, str, Callable[[], float]]]) -> None:
        self._gauges = tuple(gauges)

    def collect(self) -> Iterable[Metric]:
        for name, documentation, read in self._gauges:
            try:
                value = read()
            except Exception:
                log.warning("metric %s could not be read", name, exc_info=True)
                continue
            yield GaugeMetricFamily(name, documentation, value=value)

    def describe(self) -> Iterable[Metric]:
        """Names only, so registering does not read the store."""
        return [GaugeMetricFamily(name, documentation) for name, documentation, _ in self._gauges]


def register_state_gauges(
    registry: CollectorRegistry,
    *,
    held_polls: Callable[[], float],
    agents_online: Callable[[], float],
    audit_chain_length: Callable[[], float],
    wake_listener_connected: Callable[[], float] | None = None,
) -> CollectorRegistry:
    """`registry` with the server's scrape-time gauges registered; the wake listener's
    only where there is one (a PostgreSQL store)."""
    listener = (
        ()
        if wake_listener_connected is None
        else (
            (
                "dbward_wake_listener_connected",
                "1 while this replica LISTENs for the other replicas' wake-ups, 0 while it "
                "reconnects",
                wake_listener_connected,
            ),
        )
    )
    registry.register(
        StateGauges(
            (
                *listener,
                (
                    "dbward_held_long_polls",
                    "Long-polls held open now (agent polls, request and result waits)",
                    held_polls,
                ),
                (
                    "dbward_agents_online",
                    "Registered agents that polled within the last 60 seconds",
                    agents_online,
                ),
                (
                    "dbward_audit_chain_length",
                    "Events ever appended to the audit chain (its last sequence number)",
                    audit_chain_length,
                ),
            )
        )
    )
    return registry
