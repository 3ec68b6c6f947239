"""`GET /metrics`, and the gauges read from the store when metrics are scraped.

Gauges that describe state (agents online, audit chain length) are computed at scrape
time from the store rather than tracked by every writer, so several server replicas
report the same shared truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.server.ports.metrics import MetricsExposition
from application.server.ports.services import ServerClock
from domain.server.agent_registry import DerivedStatus, derived_status
from domain.server.rbac import Permission, Principal, authorize

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["StoreGauges", "ViewMetrics"]


class ViewMetrics:
    """The Prometheus text, for callers with `metrics.view`."""

    def __init__(self, exposition: MetricsExposition) -> None:
        self._exposition = exposition

    def render(self, principal: Principal) -> tuple[bytes, str]:
        authorize(principal, Permission.METRICS_VIEW)
        return self._exposition.render()


class StoreGauges:
    def __init__(self, *, store: Store, clock: ServerClock) -> None:
        self._store = store
        self._clock = clock

    def agents_online(self) -> int:
        """Registered agents whose last poll is recent enough not to count as offline."""
        now = self._clock.now()
        with self._store.read() as session:
            rows = session.work.list_agents()
        return sum(
            1 for row in rows if derived_status(row.record, now) is not DerivedStatus.OFFLINE
        )

    def audit_chain_length(self) -> int:
        """Events ever appended to the audit chain, purged ones included."""
        with self._store.read() as session:
            return session.audit.last_sequence()
