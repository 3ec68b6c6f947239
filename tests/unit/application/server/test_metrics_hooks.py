"""What the server's use cases report to the metrics port (docs/operations.md "Metrics"),
and `GET /metrics`'s permission and scrape-time gauges."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from application.server.metrics_view import StoreGauges, ViewMetrics
from domain.server.errors import Forbidden
from domain.server.request_lifecycle import RequestStatus
from domain.shared.operations import Operation
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    ALICE,
    OPERATOR,
    ServerHarness,
    build_harness,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHarness]:
    harness = build_harness(tmp_path)
    yield harness
    harness.close()


def test_a_create_counts_the_status_it_rests_in(server: ServerHarness) -> None:
    server.create(environment="production")  # auto-approved
    server.create(environment="staging")  # waits for a DBA
    assert server.metrics.created == [
        (RequestStatus.DISPATCHED, Operation.EXECUTE_SELECT),
        (RequestStatus.PENDING, Operation.EXECUTE_SELECT),
    ]


def test_an_idempotent_replay_is_not_counted_again(server: ServerHarness) -> None:
    server.create(idempotency_key="k-1")
    server.create(idempotency_key="k-1")
    assert len(server.metrics.created) == 1


def test_committed_transitions_are_counted_by_target_status(server: ServerHarness) -> None:
    server.poll()  # registers the agent
    request_id = server.create()
    server.claim(request_id)
    assert server.metrics.transitions == [RequestStatus.DISPATCHED, RequestStatus.RUNNING]


def test_a_rolled_back_transition_is_not_counted(server: ServerHarness) -> None:
    request_id = server.create()
    server.metrics.transitions.clear()
    with pytest.raises(RuntimeError), server.store.write() as session:
        assert session.work.update_request_status(
            request_id,
            allowed_from={RequestStatus.DISPATCHED},
            to=RequestStatus.CANCELLED,
            now=server.clock.now(),
        )
        raise RuntimeError("the audit append failed")
    assert server.metrics.transitions == []
    assert server.status(request_id) is RequestStatus.DISPATCHED


def test_a_claim_reports_how_long_the_request_waited_since_dispatch(
    server: ServerHarness,
) -> None:
    server.poll()
    request_id = server.create()
    server.clock.advance(2.5)
    server.claim(request_id)
    assert server.metrics.claims == [(Operation.EXECUTE_SELECT, 2.5)]


def test_the_lease_sweep_reports_lost_executions(server: ServerHarness) -> None:
    server.poll()
    request_id = server.create()
    server.claim(request_id, lease=60)
    server.clock.advance(61)
    assert server.sweeps.reclaim_leases(server.clock.now()) == 1
    assert server.metrics.lease_expiries == 1


class _Exposition:
    def render(self) -> tuple[bytes, str]:
        return b"dbward_x 1\n", "text/plain"


def test_metrics_need_the_metrics_view_permission() -> None:
    view = ViewMetrics(_Exposition())
    assert view.render(ADMIN) == (b"dbward_x 1\n", "text/plain")
    assert view.render(OPERATOR)[0] == b"dbward_x 1\n"
    with pytest.raises(Forbidden):
        view.render(ALICE)


def test_store_gauges_count_online_agents_and_audit_events(server: ServerHarness) -> None:
    gauges = StoreGauges(store=server.store, clock=server.clock)
    assert gauges.agents_online() == 0
    server.poll()
    assert gauges.agents_online() == 1
    server.clock.advance(61)
    assert gauges.agents_online() == 0
    assert gauges.audit_chain_length() == len(server.audit_types())
