"""`WebhookDeliveryRepository` in memory, with the SQL store's claim rules."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from application.server.ports.webhooks import DeliveryOutcome, WebhookDelivery
from domain.server.webhooks import DeliveryStatus


@dataclass
class WebhookState:
    deliveries: dict[str, WebhookDelivery] = field(default_factory=dict)


class FakeWebhookDeliveryRepository:
    def __init__(self, state: WebhookState) -> None:
        self.state = state

    def add(self, delivery: WebhookDelivery) -> None:
        if delivery.id in self.state.deliveries:
            raise RuntimeError(f"duplicate delivery id {delivery.id}")
        self.state.deliveries[delivery.id] = delivery

    def claim_due(
        self, now: datetime, *, claim_until: datetime, claim_token: str, limit: int
    ) -> list[WebhookDelivery]:
        due = sorted(
            (
                d
                for d in self.state.deliveries.values()
                if d.status is DeliveryStatus.PENDING
                and d.next_attempt_at <= now
                and (d.claimed_until is None or d.claimed_until < now)
            ),
            key=lambda d: (d.next_attempt_at, d.id),
        )[:limit]
        claimed = [replace(d, claimed_until=claim_until, claim_token=claim_token) for d in due]
        for delivery in claimed:
            self.state.deliveries[delivery.id] = delivery
        return claimed

    def finish_attempt(self, delivery_id: str, claim_token: str, outcome: DeliveryOutcome) -> bool:
        current = self.state.deliveries.get(delivery_id)
        if current is None or current.claim_token != claim_token:
            return False
        self.state.deliveries[delivery_id] = replace(
            current,
            status=outcome.status,
            attempts=outcome.attempts,
            next_attempt_at=outcome.next_attempt_at,
            last_status_code=outcome.last_status_code,
            last_error=outcome.last_error,
            finished_at=outcome.finished_at,
            claimed_until=None,
            claim_token=None,
        )
        return True

    def list(
        self, status: DeliveryStatus | None, *, limit: int, offset: int
    ) -> list[WebhookDelivery]:
        found = [d for d in self.state.deliveries.values() if status is None or d.status is status]
        found.sort(key=lambda d: (d.created_at, d.id), reverse=True)
        return found[offset : offset + limit]

    def count(self, status: DeliveryStatus | None) -> int:
        return len([d for d in self.state.deliveries.values() if status in (None, d.status)])

    def purge_finished(self, finished_before: datetime, limit: int) -> int:
        done = sorted(
            (
                d
                for d in self.state.deliveries.values()
                if d.status is not DeliveryStatus.PENDING
                and d.finished_at is not None
                and d.finished_at < finished_before
            ),
            key=lambda d: d.finished_at or finished_before,
        )[:limit]
        for gone in done:
            del self.state.deliveries[gone.id]
        return len(done)
