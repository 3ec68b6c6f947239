"""`Store` over SQLAlchemy Core: a session is one connection in one transaction."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine

from adapters.store import audit_log
from adapters.store.engine import read_only
from adapters.store.identity_repo import SqlIdentityRepository
from adapters.store.result_contents import SqlResultContentRepository
from adapters.store.secrets_repo import SqlSecretRepository
from adapters.store.webhook_deliveries import SqlWebhookDeliveryRepository
from adapters.store.work import SqlWorkRepository
from application.server.ports.metrics import NO_METRICS, ServerMetrics
from application.server.ports.store import AuditFilters, AuditListener
from domain.server.audit import AuditEvent
from domain.server.audit_integrity import ChainHead, CheckpointProgress, PurgeCheckpoint


class SqlAuditRepository:
    def __init__(self, conn: Connection, on_append: Callable[[AuditEvent], None]) -> None:
        self._conn = conn
        self._on_append = on_append
        #: The hash of the event this session appended last: the chain's head until the
        #: session ends (it holds the chain), so the next append need not read it again.
        #: Forgotten by anything else that changes the chain.
        self._appended_head: str | None = None

    def append(self, event: AuditEvent) -> AuditEvent:
        chained = audit_log.append_event(self._conn, event, head_hash=self._appended_head)
        self._appended_head = chained.event_hash
        self._on_append(chained)
        return chained

    def list(self, filters: AuditFilters, *, limit: int, offset: int) -> list[AuditEvent]:
        return audit_log.list_events(
            self._conn,
            actor_id=filters.actor_id,
            event_type=filters.event_type,
            event_category=filters.event_category,
            outcome=filters.outcome,
            database=filters.database,
            environment=filters.environment,
            request_id=filters.request_id,
            operation=filters.operation,
            since=filters.since,
            until=filters.until,
            limit=limit,
            offset=offset,
        )

    def chain(self) -> Iterator[AuditEvent]:
        return audit_log.chain_in_order(self._conn)

    def head(self) -> ChainHead | None:
        return audit_log.head(self._conn)

    def last_sequence(self) -> int:
        return audit_log.last_sequence(self._conn)

    def checkpoint_progress(self) -> CheckpointProgress:
        return audit_log.checkpoint_progress(self._conn)

    def newest_checkpoint_before(self, cutoff: datetime) -> ChainHead | None:
        return audit_log.newest_checkpoint_before(self._conn, cutoff)

    def purge_through(self, event_id: str) -> int:
        self._appended_head = None
        return audit_log.purge_through(self._conn, event_id)

    def add_purge_checkpoint(self, checkpoint: PurgeCheckpoint) -> None:
        self._appended_head = None
        audit_log.add_purge_checkpoint(self._conn, checkpoint)

    def purge_checkpoint_for(self, last_purged_hash: str) -> PurgeCheckpoint | None:
        return audit_log.purge_checkpoint_for(self._conn, last_purged_hash)


class SqlSession:
    def __init__(self, conn: Connection, listener: AuditListener | None = None) -> None:
        self.identity = SqlIdentityRepository(conn)
        self.work = SqlWorkRepository(conn)
        self.audit = SqlAuditRepository(conn, self._appended)
        self.secrets = SqlSecretRepository(conn)
        self.webhooks = SqlWebhookDeliveryRepository(conn)
        self.result_contents = SqlResultContentRepository(conn)
        self._listener = listener

    def _appended(self, event: AuditEvent) -> None:
        if self._listener is not None:
            self._listener.on_audit(self, event)


class SqlStore:
    """Write sessions take the database's write lock (BEGIN IMMEDIATE on SQLite, row locks
    and the audit advisory lock on PostgreSQL); read sessions never do. `listener` hears
    every audit event a write session appends, inside that session."""

    def __init__(
        self,
        engine: Engine,
        metrics: ServerMetrics = NO_METRICS,
        listener: AuditListener | None = None,
        on_identity_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self._metrics = metrics
        self._listener = listener
        # Called after a commit that revoked a token or changed a user's status, roles or
        # groups: the authentication cache forgets what it knew (principal_cache.py).
        self._on_identity_change = on_identity_change
        self._reader = read_only(engine)
        # SQLite has one writer; when writers of this process queue on a Python lock
        # instead of SQLite's busy-retry backoff, a write waits microseconds, not the
        # backoff's tens of milliseconds. PostgreSQL writers run concurrently.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    def writer_busy(self) -> bool:
        """Whether a thread of this process holds the write lock now (SQLite only; on
        PostgreSQL writers do not queue here, so never)."""
        return self._write_lock is not None and self._write_lock.locked()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A bare write transaction, queued with `write`'s (the result-content table's
        writes use it, so they never fall back on SQLite's busy backoff either)."""
        lock = self._write_lock if self._write_lock is not None else contextlib.nullcontext()
        with lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[SqlSession]:
        with self.transaction() as conn:
            session = SqlSession(conn, self._listener)
            yield session
        # Only committed status changes count (docs/operations.md "Metrics").
        if session.work.status_changes:
            self._metrics.requests_transitioned(session.work.status_changes)
        if session.identity.changed:
            self._on_identity_change()

    @contextmanager
    def read(self) -> Iterator[SqlSession]:
        with self._reader.begin() as conn:
            yield SqlSession(conn)

    def close(self) -> None:
        self.engine.dispose()
