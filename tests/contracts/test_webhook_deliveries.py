"""The webhook outbox (docs/operations.md "Webhooks"): the same claims and outcomes from the
fake, SQLite and PostgreSQL, and two replicas never claiming one row."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, delete

from adapters.store.schema import webhook_deliveries
from adapters.store.sql_store import SqlSession, SqlStore
from application.server.ports.webhooks import (
    DeliveryOutcome,
    WebhookDelivery,
    WebhookDeliveryRepository,
)
from domain.server.webhooks import DeliveryStatus
from tests.fakes.webhook_store import FakeWebhookDeliveryRepository, WebhookState

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def repo(connection: Connection | None) -> WebhookDeliveryRepository:
    if connection is None:
        return FakeWebhookDeliveryRepository(WebhookState())
    return SqlSession(connection).webhooks


def delivery(delivery_id: str, *, due: datetime = NOW) -> WebhookDelivery:
    return WebhookDelivery(
        id=delivery_id,
        webhook_id="ops",
        event_id=f"e-{delivery_id}",
        event_type="request.created",
        request_id="r-1",
        body='{"event":"request.created"}',
        created_at=due,
        next_attempt_at=due,
    )


def outcome(status: DeliveryStatus, attempts: int = 1) -> DeliveryOutcome:
    return DeliveryOutcome(status, attempts, NOW + timedelta(seconds=30), 503, "HTTP 503", None)


def test_due_rows_are_claimed_once_oldest_first(repo: WebhookDeliveryRepository) -> None:
    repo.add(delivery("b", due=NOW - timedelta(seconds=1)))
    repo.add(delivery("a"))
    repo.add(delivery("later", due=NOW + timedelta(seconds=5)))
    until = NOW + timedelta(seconds=60)
    claimed = repo.claim_due(NOW, claim_until=until, claim_token="t1", limit=10)
    assert [d.id for d in claimed] == ["b", "a"]
    assert all(d.claim_token == "t1" and d.claimed_until == until for d in claimed)
    assert repo.claim_due(NOW, claim_until=until, claim_token="t2", limit=10) == []


def test_a_stale_claim_is_taken_over_and_the_old_owner_can_no_longer_record(
    repo: WebhookDeliveryRepository,
) -> None:
    repo.add(delivery("a"))
    repo.claim_due(NOW, claim_until=NOW + timedelta(seconds=10), claim_token="old", limit=10)
    later = NOW + timedelta(seconds=11)
    [taken] = repo.claim_due(later, claim_until=later, claim_token="new", limit=10)
    assert taken.claim_token == "new"
    assert repo.finish_attempt("a", "old", outcome(DeliveryStatus.FAILED)) is False
    assert repo.finish_attempt("a", "new", outcome(DeliveryStatus.PENDING)) is True
    [row] = repo.list(None, limit=10, offset=0)
    assert (row.status, row.attempts, row.claim_token, row.claimed_until) == (
        DeliveryStatus.PENDING,
        1,
        None,
        None,
    )
    assert (row.last_status_code, row.last_error) == (503, "HTTP 503")
    assert row.next_attempt_at == NOW + timedelta(seconds=30)


def test_finished_rows_are_never_claimed_and_list_filters_and_counts(
    repo: WebhookDeliveryRepository,
) -> None:
    for name in ("a", "b", "c"):
        repo.add(delivery(name, due=NOW + timedelta(microseconds=ord(name))))
    later = NOW + timedelta(seconds=1)
    repo.claim_due(later, claim_until=later, claim_token="t", limit=2)
    done = DeliveryOutcome(DeliveryStatus.DELIVERED, 1, later, 200, None, later)
    assert repo.finish_attempt("a", "t", done)
    assert repo.count(None) == 3
    assert repo.count(DeliveryStatus.DELIVERED) == 1
    assert [d.id for d in repo.list(None, limit=2, offset=0)] == ["c", "b"]
    assert [d.id for d in repo.list(None, limit=2, offset=2)] == ["a"]
    assert [d.id for d in repo.list(DeliveryStatus.DELIVERED, limit=5, offset=0)] == ["a"]
    far = NOW + timedelta(days=1)
    assert [d.id for d in repo.claim_due(far, claim_until=far, claim_token="u", limit=10)] == [
        "b",
        "c",
    ]


def test_only_finished_rows_older_than_the_cutoff_are_purged(
    repo: WebhookDeliveryRepository,
) -> None:
    for name in ("old-ok", "old-failed", "new-ok", "waiting"):
        repo.add(delivery(name))
    repo.claim_due(NOW, claim_until=NOW + timedelta(seconds=60), claim_token="t", limit=10)
    day = timedelta(days=1)
    finished = {"old-ok": NOW, "old-failed": NOW + timedelta(seconds=1), "new-ok": NOW + 3 * day}
    for name, at in finished.items():
        status = DeliveryStatus.FAILED if name == "old-failed" else DeliveryStatus.DELIVERED
        assert repo.finish_attempt(name, "t", DeliveryOutcome(status, 1, at, 200, None, at))
    cutoff = NOW + day
    assert repo.purge_finished(cutoff, limit=1) == 1  # the oldest first, batch-bounded
    assert repo.purge_finished(cutoff, limit=10) == 1
    assert repo.purge_finished(cutoff, limit=10) == 0
    assert sorted(d.id for d in repo.list(None, limit=10, offset=0)) == ["new-ok", "waiting"]


@pytest.mark.integration
def test_racing_replicas_split_the_due_rows_and_never_share_one(
    sql_store_engine: Engine,
) -> None:
    """Two stores on one database (two replicas) claim at once: every row goes to one."""
    store_engine = sql_store_engine
    prefix = f"race-{NOW.timestamp()}-{threading.get_ident()}"
    ids = [f"{prefix}-{n:02d}" for n in range(20)]
    with SqlStore(store_engine).write() as session:
        for delivery_id in ids:
            session.webhooks.add(delivery(delivery_id, due=NOW - timedelta(days=3650)))
    barrier = threading.Barrier(2)
    won: dict[str, list[str]] = {}

    def claim(token: str) -> None:
        store = SqlStore(store_engine)
        barrier.wait(10)
        got: list[str] = []
        for _ in range(10):
            with store.write() as session:
                got += [
                    d.id
                    for d in session.webhooks.claim_due(
                        NOW, claim_until=NOW + timedelta(hours=1), claim_token=token, limit=3
                    )
                    if d.id.startswith(prefix)
                ]
        won[token] = got

    threads = [threading.Thread(target=claim, args=(t,)) for t in ("r1", "r2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with store_engine.begin() as conn:  # the database is shared by the session's tests
        conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(ids)))
    claimed = won["r1"] + won["r2"]
    assert sorted(claimed) == ids  # each row once, none twice, none left
