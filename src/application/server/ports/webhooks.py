"""Ports of webhook delivery (docs/operations.md "Webhooks"): the outbox table and the HTTP send.

A delivery row is written in the transaction of the event it announces, so an event is
announced if and only if it committed; a sender then claims due rows with a lease
(`claimed_until`) so two replicas never send one row at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.server.webhooks import AttemptResult, DeliveryStatus

__all__ = ["DeliveryOutcome", "WebhookDelivery", "WebhookDeliveryRepository", "WebhookTransport"]


@dataclass(frozen=True)
class WebhookDelivery:
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    #: The exact JSON body, built when the event was recorded; signed at each send.
    body: str
    created_at: datetime
    next_attempt_at: datetime
    request_id: str | None = None
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    claimed_until: datetime | None = None
    claim_token: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one attempt leaves on its row."""

    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None


class WebhookDeliveryRepository(Protocol):
    def add(self, delivery: WebhookDelivery) -> None:
        """Queue `delivery` inside the session's transaction."""
        ...

    def claim_due(
        self, now: datetime, *, claim_until: datetime, claim_token: str, limit: int
    ) -> list[WebhookDelivery]:
        """Pending deliveries due at `now` whose claim is free or stale, now claimed with
        `claim_token` until `claim_until`; the oldest due first. Each row is claimed with a
        conditional update, so of two replicas claiming at once each row goes to one."""
        ...

    def finish_attempt(self, delivery_id: str, claim_token: str, outcome: DeliveryOutcome) -> bool:
        """Record an attempt and release the claim; False when the claim was lost (it went
        stale and another sender took the row), in which case nothing changes."""
        ...

    def list(
        self, status: DeliveryStatus | None, *, limit: int, offset: int
    ) -> list[WebhookDelivery]:
        """Newest first."""
        ...

    def count(self, status: DeliveryStatus | None) -> int: ...

    def purge_finished(self, finished_before: datetime, limit: int) -> int:
        """Delete up to `limit` delivered or failed rows finished before `finished_before`
        (pending rows are never purged); how many went."""
        ...


class WebhookTransport(Protocol):
    def send(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        """POST `body` to `url`, never following redirects. A URL whose host resolves to a
        private address is refused (`AttemptResult.refused`) unless the transport allows
        private networks; errors come back as results, never raised."""
        ...
