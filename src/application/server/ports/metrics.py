"""The server's metrics port: use cases say what happened, an adapter counts it.

The use cases never import a metrics library; the composition root hands them the
Prometheus adapter (docs/operations.md "Metrics") and tests a fake or `NO_METRICS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from domain.server.request_lifecycle import RequestStatus
from domain.server.webhooks import DeliveryStatus
from domain.shared.operations import Operation

__all__ = ["NO_METRICS", "MetricsExposition", "NoServerMetrics", "ServerMetrics"]


class ServerMetrics(Protocol):
    def request_created(self, status: RequestStatus, operation: Operation) -> None:
        """A new request was committed, resting in `status` (idempotent replays are not)."""
        ...

    def requests_transitioned(self, statuses: Sequence[RequestStatus]) -> None:
        """Committed status changes, by the status each request moved to."""
        ...

    def job_claimed(self, operation: Operation, waited_secs: float) -> None:
        """An agent claimed a dispatched request `waited_secs` after its dispatch."""
        ...

    def leases_expired(self, count: int) -> None:
        """The lease sweep gave up `count` executions (their request became execution_lost)."""
        ...

    def api_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        """One HTTP request answered; `route` is the path template, never the raw path."""
        ...

    def webhook_attempted(self, status: DeliveryStatus) -> None:
        """One webhook send recorded, by the delivery's status after it (pending = will retry)."""
        ...


class MetricsExposition(Protocol):
    def render(self) -> tuple[bytes, str]:
        """The current metrics in the Prometheus text format, and its content type."""
        ...


class NoServerMetrics:
    """Counts nothing: the default of use cases built without metrics."""

    def request_created(self, status: RequestStatus, operation: Operation) -> None:
        pass

    def requests_transitioned(self, statuses: Sequence[RequestStatus]) -> None:
        pass

    def job_claimed(self, operation: Operation, waited_secs: float) -> None:
        pass

    def leases_expired(self, count: int) -> None:
        pass

    def api_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        pass

    def webhook_attempted(self, status: DeliveryStatus) -> None:
        pass


NO_METRICS: ServerMetrics = NoServerMetrics()
