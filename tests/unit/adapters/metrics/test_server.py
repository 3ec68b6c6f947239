"""The server's Prometheus adapter: what each `ServerMetrics` call adds to the exposition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics.exposition import RegistryExposition
from adapters.metrics.server import PrometheusServerMetrics, register_state_gauges
from domain.server.request_lifecycle import RequestStatus
from domain.shared.operations import Operation


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = RegistryExposition(registry).render()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_created_requests_count_by_status_and_operation() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusServerMetrics(registry)
    metrics.request_created(RequestStatus.DISPATCHED, Operation.EXECUTE_SELECT)
    metrics.request_created(RequestStatus.DISPATCHED, Operation.EXECUTE_SELECT)
    metrics.request_created(RequestStatus.PENDING, Operation.EXECUTE_DML)
    found = samples(registry)
    key = "dbward_requests_created_total"
    assert found[(key, (("operation", "execute_select"), ("status", "dispatched")))] == 2
    assert found[(key, (("operation", "execute_dml"), ("status", "pending")))] == 1


def test_transitions_count_by_target_status() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusServerMetrics(registry)
    metrics.requests_transitioned([RequestStatus.DISPATCHED, RequestStatus.RUNNING])
    metrics.requests_transitioned([RequestStatus.RUNNING])
    found = samples(registry)
    assert found[("dbward_request_transitions_total", (("to", "running"),))] == 2
    assert found[("dbward_request_transitions_total", (("to", "dispatched"),))] == 1


def test_dispatch_latency_is_a_histogram_per_operation() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusServerMetrics(registry)
    metrics.job_claimed(Operation.EXECUTE_SELECT, 0.02)
    metrics.job_claimed(Operation.EXECUTE_SELECT, 3.0)
    found = samples(registry)
    labels = (("operation", "execute_select"),)
    assert found[("dbward_dispatch_latency_seconds_count", labels)] == 2
    assert found[("dbward_dispatch_latency_seconds_sum", labels)] == 3.02
    bucket = (("le", "0.025"), ("operation", "execute_select"))
    assert found[("dbward_dispatch_latency_seconds_bucket", bucket)] == 1


def test_lease_expiries_add_up_and_zero_adds_nothing() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusServerMetrics(registry)
    metrics.leases_expired(0)
    assert samples(registry)[("dbward_lease_expiries_total", ())] == 0
    metrics.leases_expired(2)
    assert samples(registry)[("dbward_lease_expiries_total", ())] == 2


def test_api_requests_count_by_route_template_and_status_class() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusServerMetrics(registry)
    metrics.api_request("GET", "/api/requests/{request_id}", 200, 0.01)
    metrics.api_request("GET", "/api/requests/{request_id}", 404, 0.01)
    metrics.api_request("GET", "/api/requests/{request_id}", 403, 0.01)
    found = samples(registry)
    route = ("route", "/api/requests/{request_id}")
    assert found[("dbward_http_responses_total", (route, ("status_class", "4xx")))] == 2
    assert found[("dbward_http_responses_total", (route, ("status_class", "2xx")))] == 1
    histogram = (("method", "GET"), route)
    assert found[("dbward_http_request_duration_seconds_count", histogram)] == 3


def test_state_gauges_are_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    agents = [0]
    register_state_gauges(
        registry,
        held_polls=lambda: 4,
        agents_online=lambda: agents[0],
        audit_chain_length=lambda: 17,
    )
    agents[0] = 2
    found = samples(registry)
    assert found[("dbward_held_long_polls", ())] == 4
    assert found[("dbward_agents_online", ())] == 2
    assert found[("dbward_audit_chain_length", ())] == 17
    assert ("dbward_wake_listener_connected", ()) not in found  # no PostgreSQL store


def test_the_wake_listener_gauge_follows_the_listener() -> None:
    registry = CollectorRegistry()
    listening = [True]
    register_state_gauges(
        registry,
        held_polls=lambda: 0,
        agents_online=lambda: 0,
        audit_chain_length=lambda: 0,
        wake_listener_connected=lambda: float(listening[0]),
    )
    assert samples(registry)[("dbward_wake_listener_connected", ())] == 1
    listening[0] = False
    assert samples(registry)[("dbward_wake_listener_connected", ())] == 0


def test_a_gauge_that_cannot_be_read_is_left_out_of_the_scrape() -> None:
    def store_down() -> int:
        raise OSError("store unreachable")

    registry = CollectorRegistry()
    register_state_gauges(
        registry, held_polls=lambda: 1, agents_online=store_down, audit_chain_length=store_down
    )
    found = samples(registry)
    assert found[("dbward_held_long_polls", ())] == 1
    assert ("dbward_agents_online", ()) not in found


def test_registries_are_independent() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    PrometheusServerMetrics(first).leases_expired(1)
    PrometheusServerMetrics(second)
    assert samples(second)[("dbward_lease_expiries_total", ())] == 0
