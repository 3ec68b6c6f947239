"""Webhooks (docs/operations.md "Webhooks"): queued with their event, sent in the background.

`WebhookOutbox` is the store's audit listener: every audit event a write session appends
passes through it, so the one place where request events are recorded is also the one
place where webhook deliveries are queued, in the same transaction (an event rolled back
is never announced, a committed one always is). The body is rendered then, from the
event: SQL appears only as the audit fingerprint, which is literal-redacted whatever
`[audit].redaction` says.

`WebhookSender` claims due deliveries with a lease (`claimed_until`), sends each, and
records the attempt under its claim token; a sender that stalls past its lease loses the
row to another replica and its late outcome is dropped. Failed attempts wait a
full-jitter backoff, up to `[webhook_delivery] max_attempts`, then the row is `failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from application.server.ports.metrics import NO_METRICS, ServerMetrics
from application.server.ports.services import ServerClock
from application.server.ports.webhooks import (
    DeliveryOutcome,
    WebhookDelivery,
    WebhookTransport,
)
from application.server.settings import WebhookSettings
from domain.server.audit import AuditEvent
from domain.server.errors import NotFound
from domain.server.rbac import Permission, Principal, authorize
from domain.server.webhooks import (
    SIGNATURE_HEADER,
    WEBHOOK_EVENTS,
    AttemptResult,
    DeliveryStatus,
    NotificationPolicy,
    Webhook,
    WebhookEvent,
    render_body,
    route,
    signature_header,
)
from domain.shared.timestamps import parse_timestamp

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreSession

__all__ = [
    "DELIVERY_BATCH",
    "SEND_INTERVAL_SECS",
    "ListWebhookDeliveries",
    "ListWebhooks",
    "WebhookDeliveries",
    "WebhookOutbox",
    "WebhookSender",
]

log = logging.getLogger("dbward.server.webhooks")

#: Deliveries one sender claims at a time; the claim lease covers sending all of them.
DELIVERY_BATCH = 10
#: How often the sender looks for due deliveries when the last look found none.
SEND_INTERVAL_SECS = 1.0
#: Added to the batch's worst-case send time to make the claim lease.
CLAIM_MARGIN_SECS = 30.0
_WEBHOOK_EVENTS = frozenset(WEBHOOK_EVENTS)


class WebhookOutbox:
    """Queues the deliveries an audit event causes (an `AuditListener`)."""

    def __init__(self, settings: WebhookSettings, new_id: Callable[[], str]) -> None:
        self._settings = settings
        self._new_id = new_id

    def on_audit(self, session: StoreSession, event: AuditEvent) -> None:
        if event.event_type not in _WEBHOOK_EVENTS or not self._settings.webhooks:
            return
        hooks = route(
            self._settings.webhooks,
            self._settings.notification_policies,
            event.event_type,
            event.database_name or "",
            event.environment or "",
        )
        if not hooks:
            return
        record = None if event.request_id is None else session.work.get_request(event.request_id)
        about = WebhookEvent(
            event_id=event.id,
            event=event.event_type,
            occurred_at=event.created_at,
            actor=event.actor_id,
            request_id=event.request_id,
            database=event.database_name,
            environment=event.environment,
            operation=event.operation,
            requester=None if record is None else record.requester,
            detail=event.detail_fingerprint,
            reason=event.reason,
            outcome=event.outcome,
        )
        at = parse_timestamp(event.created_at)
        for hook in hooks:
            session.webhooks.add(
                WebhookDelivery(
                    id=self._new_id(),
                    webhook_id=hook.id,
                    event_id=event.id,
                    event_type=event.event_type,
                    request_id=event.request_id,
                    body=render_body(about, hook.format),
                    created_at=at,
                    next_attempt_at=at,
                )
            )


class WebhookSender:
    def __init__(
        self,
        *,
        store: Store,
        settings: WebhookSettings,
        transport: WebhookTransport,
        clock: ServerClock,
        new_id: Callable[[], str],
        metrics: ServerMetrics = NO_METRICS,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._store = store
        self._settings = settings
        self._hooks = {hook.id: hook for hook in settings.webhooks}
        self._transport = transport
        self._clock = clock
        self._new_id = new_id
        self._metrics = metrics
        self._uniform = uniform

    @property
    def claim_secs(self) -> float:
        """How long a claim holds: every send of a batch timing out, and a margin."""
        return DELIVERY_BATCH * self._settings.timeout_secs + CLAIM_MARGIN_SECS

    def deliver_due(self, now: datetime) -> int:
        """Claim the deliveries due at `now` and send each once; how many were claimed."""
        token = self._new_id()
        with self._store.write() as session:
            claimed = session.webhooks.claim_due(
                now,
                claim_until=now + timedelta(seconds=self.claim_secs),
                claim_token=token,
                limit=DELIVERY_BATCH,
            )
        for delivery in claimed:
            self._attempt(delivery, token)
        return len(claimed)

    def _attempt(self, delivery: WebhookDelivery, token: str) -> None:
        hook = self._hooks.get(delivery.webhook_id)
        if hook is None:
            result = AttemptResult(error="the webhook is no longer configured", refused=True)
        else:
            result = self._transport.send(hook.url, delivery.body, self._headers(hook, delivery))
        attempts = delivery.attempts + 1
        status = self._settings.retry.next_status(attempts, result)
        done = self._clock.now()
        wait = 0.0
        if status is DeliveryStatus.PENDING:
            wait = self._settings.retry.delay(attempts, self._uniform)
        outcome = DeliveryOutcome(
            status=status,
            attempts=attempts,
            next_attempt_at=done + timedelta(seconds=wait),
            last_status_code=result.status_code,
            last_error=result.error,
            finished_at=None if status is DeliveryStatus.PENDING else done,
        )
        with self._store.write() as session:
            kept = session.webhooks.finish_attempt(delivery.id, token, outcome)
        if not kept:
            log.warning(
                "webhook delivery %s: claim lost before its outcome was recorded", delivery.id
            )
            return
        self._metrics.webhook_attempted(status)
        if status is DeliveryStatus.FAILED:
            log.warning(
                "webhook %s: delivery %s of %s failed after %d attempts (%s)",
                delivery.webhook_id,
                delivery.id,
                delivery.event_type,
                attempts,
                result.error or f"HTTP {result.status_code}",
            )

    def _headers(self, hook: Webhook, delivery: WebhookDelivery) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Dbward-Event": delivery.event_type,
            "X-Dbward-Delivery": delivery.id,
        }
        if hook.secret:
            timestamp = int(self._clock.now().timestamp())
            headers[SIGNATURE_HEADER] = signature_header(hook.secret, timestamp, delivery.body)
        return headers

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until `stop` is set; a full batch is followed at once."""
        while not stop.is_set():
            claimed = 0
            try:
                claimed = await asyncio.to_thread(self.deliver_due, self._clock.now())
            except Exception:  # the store being down must not end the loop
                log.exception("webhook delivery failed")
            if claimed >= DELIVERY_BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SEND_INTERVAL_SECS)


# --- the API's views ---------------------------------------------------------------------------


class ListWebhooks:
    """`GET /api/webhooks[/{id}]` and `/api/notification-policies[/{id}]` (`workflow.read`)."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._settings = settings

    def list(self, principal: Principal) -> tuple[Webhook, ...]:
        authorize(principal, Permission.WORKFLOW_READ)
        return self._settings.webhooks

    def get(self, principal: Principal, webhook_id: str) -> Webhook:
        authorize(principal, Permission.WORKFLOW_READ)
        for hook in self._settings.webhooks:
            if hook.id == webhook_id:
                return hook
        raise NotFound(f"webhook {webhook_id!r} not found", resource="webhook")

    def policies(self, principal: Principal) -> tuple[NotificationPolicy, ...]:
        authorize(principal, Permission.WORKFLOW_READ)
        return self._settings.notification_policies

    def policy(self, principal: Principal, policy_id: str) -> NotificationPolicy:
        """One notification policy by id (`np:<database>:<environment>`)."""
        for policy in self.policies(principal):
            if policy.id == policy_id:
                return policy
        raise NotFound(
            f"notification policy {policy_id!r} not found", resource="notification_policy"
        )


@dataclass(frozen=True)
class WebhookDeliveries:
    deliveries: list[WebhookDelivery]
    total: int


class ListWebhookDeliveries:
    """`GET /api/webhook-deliveries` (`metrics.view`), newest first."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def list(
        self, principal: Principal, status: DeliveryStatus | None, *, limit: int, offset: int
    ) -> WebhookDeliveries:
        authorize(principal, Permission.METRICS_VIEW)
        with self._store.read() as session:
            return WebhookDeliveries(
                session.webhooks.list(status, limit=limit, offset=offset),
                session.webhooks.count(status),
            )
