"""`WebhookDeliveryRepository` over SQLAlchemy Core: the `webhook_deliveries` outbox.

A claim is a conditional update per row (`… WHERE id = ? AND status = 'pending' AND
(claimed_until IS NULL OR claimed_until < now)`, rowcount checked), so two replicas
claiming the same due rows split them and never share one; a claim that went stale is
taken over the same way. Timestamps are TEXT in one fixed format, so they compare as
strings on both engines.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, delete, func, insert, or_, select, update

from adapters.store.schema import format_timestamp, parse_timestamp, webhook_deliveries
from application.server.ports.webhooks import DeliveryOutcome, WebhookDelivery
from domain.server.webhooks import DeliveryStatus

__all__ = ["SqlWebhookDeliveryRepository"]

_t = webhook_deliveries.c


class SqlWebhookDeliveryRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, delivery: WebhookDelivery) -> None:
        self._conn.execute(
            insert(webhook_deliveries).values(
                id=delivery.id,
                webhook_id=delivery.webhook_id,
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                request_id=delivery.request_id,
                body=delivery.body,
                status=delivery.status.value,
                attempts=delivery.attempts,
                next_attempt_at=format_timestamp(delivery.next_attempt_at),
                claimed_until=_ts(delivery.claimed_until),
                claim_token=delivery.claim_token,
                last_status_code=delivery.last_status_code,
                last_error=delivery.last_error,
                created_at=format_timestamp(delivery.created_at),
                finished_at=_ts(delivery.finished_at),
            )
        )

    def claim_due(
        self, now: datetime, *, claim_until: datetime, claim_token: str, limit: int
    ) -> list[WebhookDelivery]:
        at = format_timestamp(now)
        candidates = self._conn.scalars(
            select(_t.id)
            .where(
                _t.status == DeliveryStatus.PENDING.value,
                _t.next_attempt_at <= at,
                _claim_free(at),
            )
            .order_by(_t.next_attempt_at, _t.id)
            .limit(limit)
        ).all()
        won: list[str] = []
        for delivery_id in candidates:
            claimed = self._conn.execute(
                update(webhook_deliveries)
                .where(
                    _t.id == delivery_id,
                    _t.status == DeliveryStatus.PENDING.value,
                    _claim_free(at),
                )
                .values(claimed_until=format_timestamp(claim_until), claim_token=claim_token)
            )
            if claimed.rowcount == 1:
                won.append(delivery_id)
        if not won:
            return []
        rows = self._conn.execute(
            select(webhook_deliveries).where(_t.id.in_(won)).order_by(_t.next_attempt_at, _t.id)
        ).all()
        return [_record(row) for row in rows]

    def finish_attempt(self, delivery_id: str, claim_token: str, outcome: DeliveryOutcome) -> bool:
        changed = self._conn.execute(
            update(webhook_deliveries)
            .where(_t.id == delivery_id, _t.claim_token == claim_token)
            .values(
                status=outcome.status.value,
                attempts=outcome.attempts,
                next_attempt_at=format_timestamp(outcome.next_attempt_at),
                last_status_code=outcome.last_status_code,
                last_error=outcome.last_error,
                finished_at=_ts(outcome.finished_at),
                claimed_until=None,
                claim_token=None,
            )
        )
        return bool(changed.rowcount == 1)

    def list(
        self, status: DeliveryStatus | None, *, limit: int, offset: int
    ) -> list[WebhookDelivery]:
        query = select(webhook_deliveries).order_by(_t.created_at.desc(), _t.id.desc())
        if status is not None:
            query = query.where(_t.status == status.value)
        rows = self._conn.execute(query.limit(limit).offset(offset)).all()
        return [_record(row) for row in rows]

    def count(self, status: DeliveryStatus | None) -> int:
        query = select(func.count()).select_from(webhook_deliveries)
        if status is not None:
            query = query.where(_t.status == status.value)
        return int(self._conn.scalar(query) or 0)

    def purge_finished(self, finished_before: datetime, limit: int) -> int:
        # A sub-select bounds the batch: DELETE … LIMIT is not portable.
        batch = (
            select(_t.id)
            .where(
                _t.status.in_([DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value]),
                _t.finished_at < format_timestamp(finished_before),
            )
            .order_by(_t.finished_at)
            .limit(limit)
        )
        ids = [row[0] for row in self._conn.execute(batch)]
        if not ids:
            return 0
        gone = self._conn.execute(delete(webhook_deliveries).where(_t.id.in_(ids)))
        return int(gone.rowcount)


def _claim_free(at: str) -> ColumnElement[bool]:
    return or_(_t.claimed_until.is_(None), _t.claimed_until < at)


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _record(row: Row[Any]) -> WebhookDelivery:
    m = row._mapping
    return WebhookDelivery(
        id=m["id"],
        webhook_id=m["webhook_id"],
        event_id=m["event_id"],
        event_type=m["event_type"],
        request_id=m["request_id"],
        body=m["body"],
        status=DeliveryStatus(m["status"]),
        attempts=int(m["attempts"]),
        next_attempt_at=parse_timestamp(m["next_attempt_at"]),
        claimed_until=None if m["claimed_until"] is None else parse_timestamp(m["claimed_until"]),
        claim_token=m["claim_token"],
        last_status_code=m["last_status_code"],
        last_error=m["last_error"],
        created_at=parse_timestamp(m["created_at"]),
        finished_at=None if m["finished_at"] is None else parse_timestamp(m["finished_at"]),
    )
